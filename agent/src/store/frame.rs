//! Many points' readings in one blob: the body of a `reading_frames` row (one commit, every
//! point) and of a `reading_blocks` row (one compaction, one group of [`GROUP_SIZE`] points).
//!
//! One row per commit instead of one per reading or per point is what makes a commit cheap; one
//! row per group of points instead of per point is what makes compaction cheap and the file
//! small.
//!
//! ```text
//! frame  entry*
//! entry  point id · sample count · first sample's time − row time · byte length · chunk body
//!        (each a zigzag LEB128 varint; the chunk body is the `chunk` encoding of the samples)
//! ```
//!
//! The row time (`first_ms` column) is the earliest sample of the row. Entries are in ascending
//! point id, one per point. Decoding checks every length against what is left and rejects
//! anything malformed with an error; it never panics.

use super::chunk::{self, put_varint, ChunkError, Cursor, Sample};

/// Points per block: ids `g·GROUP_SIZE … (g+1)·GROUP_SIZE − 1` share block group `g`. A
/// device's points are registered together, so a block holds about one device.
pub const GROUP_SIZE: i64 = 32;

/// The block group of a point.
pub fn group_of(point_id: i64) -> i64 {
    point_id.div_euclid(GROUP_SIZE)
}

/// One point's part of a frame, still encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Database id of the point.
    pub point_id: i64,
    /// Time of the first sample, ms since the Unix epoch.
    pub first_ms: i64,
    /// Samples in `body`.
    pub count: usize,
    /// The samples, in the chunk encoding.
    pub body: &'a [u8],
}

impl Entry<'_> {
    /// The samples.
    pub fn samples(&self) -> Result<Vec<Sample>, ChunkError> {
        chunk::decode(self.first_ms, self.count, self.body)
    }
}

/// An encoded frame and what its row records about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Earliest sample time (the row time).
    pub first_ms: i64,
    /// Latest sample time.
    pub last_ms: i64,
    /// Samples in all entries.
    pub count: usize,
    /// The entries.
    pub body: Vec<u8>,
}

/// The order of `rows` by point id, keeping their order within a point: positions into `rows`
/// (a counting sort when ids are dense, as database ids are; a stable sort otherwise). The rows
/// themselves are not moved.
pub fn order_by_point(rows: &[(i64, Sample)]) -> Vec<u32> {
    let (Some(min), Some(max)) = (
        rows.iter().map(|(id, _)| *id).min(),
        rows.iter().map(|(id, _)| *id).max(),
    ) else {
        return Vec::new();
    };
    let span = max.abs_diff(min);
    // u32 positions: a commit or compaction holds far fewer than 4 billion readings.
    debug_assert!(rows.len() < u32::MAX as usize);
    if span > 4 * rows.len() as u64 + 4096 {
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        order.sort_by_key(|&i| rows[i as usize].0);
        return order;
    }
    let slot = |id: i64| id.abs_diff(min) as usize;
    let mut starts = vec![0u32; span as usize + 2];
    for (id, _) in rows {
        starts[slot(*id) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut order = vec![0u32; rows.len()];
    for (i, (id, _)) in rows.iter().enumerate() {
        let at = &mut starts[slot(*id)];
        order[*at as usize] = i as u32;
        *at += 1;
    }
    order
}

/// Encodes `rows` taken in `order` ([`order_by_point`]) as one frame per group of points, where
/// `group` maps a point id to its group and never decreases with the id. Each point's samples
/// are put in time order (stably). Returns `(group, frame)` in ascending group.
pub fn encode_groups(
    rows: &[(i64, Sample)],
    order: &[u32],
    group: impl Fn(i64) -> i64,
) -> Vec<(i64, Frame)> {
    let id_at = |k: usize| rows[order[k] as usize].0;
    let mut frames = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut part: Vec<u8> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let g = group(id_at(start));
        let end = (start..order.len())
            .find(|&k| group(id_at(k)) != g)
            .unwrap_or(order.len());
        let base = order[start..end]
            .iter()
            .map(|&i| rows[i as usize].1.at_ms)
            .min()
            .unwrap_or(0);
        let mut frame = Frame {
            first_ms: base,
            last_ms: base,
            count: 0,
            body: Vec::new(),
        };
        let mut k = start;
        while k < end {
            let id = id_at(k);
            let n = (k..end).find(|&j| id_at(j) != id).unwrap_or(end) - k;
            samples.clear();
            samples.extend(order[k..k + n].iter().map(|&i| rows[i as usize].1));
            samples.sort_by_key(|s| s.at_ms);
            part.clear();
            chunk::encode_into(&mut part, &samples);
            put_varint(&mut frame.body, id);
            put_varint(&mut frame.body, n as i64);
            put_varint(&mut frame.body, samples[0].at_ms.wrapping_sub(base));
            put_varint(&mut frame.body, part.len() as i64);
            frame.body.extend_from_slice(&part);
            frame.last_ms = frame.last_ms.max(samples[n - 1].at_ms);
            frame.count += n;
            k += n;
        }
        frames.push((g, frame));
        start = end;
    }
    frames
}

/// The entries of a frame whose row time is `first_ms`, one by one.
pub fn entries(first_ms: i64, body: &[u8]) -> Entries<'_> {
    Entries {
        first_ms,
        cur: Cursor {
            bytes: body,
            pos: 0,
        },
        failed: false,
    }
}

/// Iterator over a frame's entries; after an error it ends.
pub struct Entries<'a> {
    first_ms: i64,
    cur: Cursor<'a>,
    failed: bool,
}

impl<'a> Entries<'a> {
    fn entry(&mut self) -> Result<Entry<'a>, ChunkError> {
        let cur = &mut self.cur;
        let at = cur.pos;
        let bad = |reason| ChunkError { offset: at, reason };
        let point_id = cur.varint()?;
        let count = usize::try_from(cur.varint()?).map_err(|_| bad("negative sample count"))?;
        let first = self.first_ms.wrapping_add(cur.varint()?);
        let len = usize::try_from(cur.varint()?).map_err(|_| bad("negative entry length"))?;
        let body = cur.bytes;
        let left = body.len() - cur.pos;
        if len > left {
            return Err(bad("entry longer than the frame"));
        }
        // Every sample takes at least its header byte.
        if count == 0 || count > len {
            return Err(bad("sample count does not fit the entry"));
        }
        let entry = Entry {
            point_id,
            first_ms: first,
            count,
            body: &body[cur.pos..cur.pos + len],
        };
        cur.pos += len;
        Ok(entry)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.cur.pos >= self.cur.bytes.len() {
            return None;
        }
        let entry = self.entry();
        self.failed = entry.is_err();
        Some(entry)
    }
}

/// All entries of a frame whose row time is `first_ms` (tests; the store walks [`entries`]).
#[cfg(test)]
pub fn decode(first_ms: i64, body: &[u8]) -> Result<Vec<Entry<'_>>, ChunkError> {
    entries(first_ms, body).collect()
}

/// Appends to `out` the samples of `point_id` in a frame, within `[from_ms, to_ms]`.
pub fn point_samples(
    first_ms: i64,
    body: &[u8],
    point_id: i64,
    (from_ms, to_ms): (i64, i64),
    out: &mut Vec<Sample>,
) -> Result<(), ChunkError> {
    // Entries are in ascending point id, one per point: stop at or past the point.
    for entry in entries(first_ms, body) {
        let entry = entry?;
        if entry.point_id > point_id {
            break;
        }
        if entry.point_id == point_id {
            out.extend(
                entry
                    .samples()?
                    .into_iter()
                    .filter(|s| (from_ms..=to_ms).contains(&s.at_ms)),
            );
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flag, Outcome};
    use proptest::prelude::*;

    fn sample(at_ms: i64, v: f64) -> Sample {
        Sample {
            at_ms,
            outcome: Outcome::Value(v),
            flag: Flag::N,
        }
    }

    fn flat(points: &[(i64, Vec<Sample>)]) -> Vec<(i64, Sample)> {
        points
            .iter()
            .flat_map(|(id, s)| s.iter().map(move |s| (*id, *s)))
            .collect()
    }

    fn one_frame(points: &[(i64, Vec<Sample>)]) -> Option<Frame> {
        let rows = flat(points);
        encode_groups(&rows, &order_by_point(&rows), |_| 0)
            .pop()
            .map(|(_, f)| f)
    }

    #[test]
    fn entries_come_back_per_point_in_time_order() {
        let frame = one_frame(&[
            (7, vec![sample(1_000, 1.0), sample(500, 0.5)]),
            (3, vec![sample(600, 3.0)]),
            (9, vec![]),
        ])
        .unwrap();
        assert_eq!(
            (frame.first_ms, frame.last_ms, frame.count),
            (500, 1_000, 3)
        );
        let entries = decode(frame.first_ms, &frame.body).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.point_id).collect::<Vec<_>>(),
            vec![3, 7]
        );
        assert_eq!(
            entries[1].samples().unwrap(),
            vec![sample(500, 0.5), sample(1_000, 1.0)]
        );
        assert_eq!(entries[0].samples().unwrap(), vec![sample(600, 3.0)]);
        let mut got = Vec::new();
        point_samples(frame.first_ms, &frame.body, 7, (600, 2_000), &mut got).unwrap();
        assert_eq!(got, vec![sample(1_000, 1.0)]);
        assert_eq!(one_frame(&[(1, vec![])]), None);
    }

    #[test]
    fn groups_split_points_into_blocks() {
        let points: Vec<(i64, Vec<Sample>)> = (0..100)
            .map(|id| (id, vec![sample(id * 10, id as f64)]))
            .collect();
        let rows = flat(&points);
        let blocks = encode_groups(&rows, &order_by_point(&rows), group_of);
        assert_eq!(
            blocks
                .iter()
                .map(|(g, f)| (*g, f.count))
                .collect::<Vec<_>>(),
            vec![(0, 32), (1, 32), (2, 32), (3, 4)]
        );
        let (_, last) = &blocks[3];
        assert_eq!((last.first_ms, last.last_ms), (960, 990));
    }

    #[test]
    fn sorting_by_point_keeps_commit_order_within_a_point() {
        let rows = vec![
            (5, sample(2, 0.0)),
            (3, sample(1, 0.0)),
            (5, sample(1, 1.0)),
            (3, sample(0, 1.0)),
        ];
        assert_eq!(order_by_point(&rows), vec![1, 3, 0, 2]);
        // Sparse ids take the other path, with the same result.
        let sparse: Vec<(i64, Sample)> = rows.iter().map(|(id, s)| (id << 40, *s)).collect();
        assert_eq!(order_by_point(&sparse), vec![1, 3, 0, 2]);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let frame = one_frame(&[(1, vec![sample(5, 2.5)])]).unwrap();
        let cut = &frame.body[..frame.body.len() - 1];
        assert!(decode(frame.first_ms, cut).is_err(), "cut short");
        let mut zero = frame.body.clone();
        zero[1] = 0; // sample count 0
        assert!(decode(frame.first_ms, &zero).is_err());
        assert!(
            decode(0, &[0x02, 0x02, 0x00, 0x7E]).is_err(),
            "negative length"
        );
    }

    fn bits(s: &Sample) -> (i64, u64) {
        match s.outcome {
            Outcome::Value(v) => (s.at_ms, v.to_bits()),
            _ => (s.at_ms, 0),
        }
    }

    proptest! {
        #[test]
        fn round_trips(points in prop::collection::btree_map(-100i64..1000, prop::collection::vec((any::<i32>(), any::<f64>()), 1..20), 0..40)) {
            let input: Vec<(i64, Vec<Sample>)> = points.iter().map(|(id, s)| {
                (*id, s.iter().map(|(at, v)| sample(i64::from(*at), *v)).collect())
            }).collect();
            let rows = flat(&input);
            let blocks = encode_groups(&rows, &order_by_point(&rows), group_of);
            let mut entries = Vec::new();
            for (g, frame) in &blocks {
                for e in decode(frame.first_ms, &frame.body).unwrap() {
                    prop_assert_eq!(group_of(e.point_id), *g);
                    entries.push((e.point_id, e.samples().unwrap()));
                }
            }
            prop_assert_eq!(entries.len(), input.len());
            for ((id, got), (want_id, want)) in entries.iter().zip(&input) {
                prop_assert_eq!(id, want_id);
                let mut want = want.clone();
                want.sort_by_key(|s| s.at_ms);
                prop_assert_eq!(
                    got.iter().map(bits).collect::<Vec<_>>(),
                    want.iter().map(bits).collect::<Vec<_>>()
                );
            }
        }

        #[test]
        fn garbage_never_panics(first in any::<i64>(), body in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(entries) = decode(first, &body) {
                for e in entries {
                    let _ = e.samples();
                }
            }
        }
    }
}
