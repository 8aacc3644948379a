//! Integrity of the stored data, checked by the writer as it goes:
//!
//! - **The file is still the one opened.** Before every commit the path's device and inode are
//!   compared with those at open: a database deleted or replaced while the agent runs would
//!   otherwise swallow every later commit into an unlinked file. At each compaction the file's
//!   `application_id` and chain head are compared with what the writer sealed, which catches a
//!   file overwritten in place.
//! - **Rows that do not decode are set aside, not fatal.** Every length and count read back is
//!   bounded before use; a reading frame or block whose body does not decode, or holds another
//!   number of readings than its row says, is moved whole into `quarantine` (bytes kept, with
//!   the error), reported once as a [`Corruption`] (the writer seals it as a `store_corruption`
//!   evidence record and logs it at ERROR), and readers of its time range are told. A scrub
//!   reads a slice of the compacted blocks at every compaction, so damage to old rows is found
//!   too, at a pace of real time (a background trickle, not a cost of every compaction).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::chunk::{self, Sample};
use super::frame;
use super::{sql_err, StoreError};
use crate::evidence::Head;

/// Device and inode of an open database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
}

/// The identity of the file at `path` now.
pub(crate) fn identity(path: &Path) -> std::io::Result<FileIdentity> {
    let meta = std::fs::metadata(path)?;
    Ok(FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Fails with [`StoreError::Replaced`] unless `path` is still the file that was opened.
pub(crate) fn check_identity(path: &Path, opened: Option<FileIdentity>) -> Result<(), StoreError> {
    let Some(opened) = opened else {
        return Ok(());
    };
    let why = match identity(path) {
        Ok(now) if now == opened => return Ok(()),
        Ok(_) => "another file now has its name (it was replaced)".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "the file was deleted".to_owned(),
        Err(e) => format!("the file cannot be examined ({e})"),
    };
    Err(StoreError::Replaced {
        path: path.to_owned(),
        why,
    })
}

/// Fails with [`StoreError::Replaced`] unless the file is ours and its chain ends at `head`.
pub(crate) fn check_content(
    conn: &Connection,
    path: &Path,
    head: Option<Head>,
) -> Result<(), StoreError> {
    let replaced = |why: String| StoreError::Replaced {
        path: path.to_owned(),
        why,
    };
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_err(path, "checking the database file"))?;
    if app_id != super::schema::APPLICATION_ID {
        return Err(replaced(format!(
            "its application id is now 0x{app_id:08X} (it was overwritten)"
        )));
    }
    let Some(head) = head else { return Ok(()) };
    let found: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err(path, "checking the database file"))?;
    let expected = (head.seq as i64, hex::encode(head.hash));
    match found {
        None if head.seq == 0 => Ok(()),
        Some(found) if found == expected => Ok(()),
        other => Err(replaced(format!(
            "its evidence chain now ends at {:?}, but the agent sealed up to record {} (it was overwritten)",
            other.map(|(seq, _)| seq),
            head.seq
        ))),
    }
}

/// A stored row that does not decode, set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Table it was in.
    pub table: &'static str,
    /// Its row id there.
    pub row: i64,
    /// Block group (blocks only).
    pub group: Option<i64>,
    /// Time range the row claimed, ms.
    pub first_ms: i64,
    /// Time range the row claimed, ms.
    pub last_ms: i64,
    /// Readings the row claimed.
    pub count: i64,
    /// What is wrong.
    pub error: String,
}

impl Corruption {
    /// The body of its `store_corruption` evidence record.
    pub fn evidence_body(&self) -> serde_json::Value {
        serde_json::json!({
            "table": self.table,
            "row": self.row,
            "group": self.group,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "claimed_readings": self.count,
            "error": self.error,
            "kept_in": "quarantine",
        })
    }
}

/// Decodes every entry of a frame or block body into `out` (cleared first), checking that it
/// holds the `count` readings its row claims. Bounded by the body: nothing is reserved from a
/// count read back.
pub(crate) fn decode_row(
    first_ms: i64,
    count: i64,
    body: &[u8],
    out: &mut Vec<(i64, Sample)>,
    scratch: &mut Vec<Sample>,
) -> Result<(), String> {
    out.clear();
    for entry in frame::entries(first_ms, body) {
        let entry = entry.map_err(|e| e.to_string())?;
        scratch.clear();
        chunk::decode_into(entry.first_ms, entry.count, entry.body, scratch)
            .map_err(|e| e.to_string())?;
        out.extend(scratch.iter().map(|s| (entry.point_id, *s)));
    }
    if out.len() as i64 != count {
        return Err(format!(
            "the row says it holds {count} readings, its body holds {}",
            out.len()
        ));
    }
    Ok(())
}

/// Moves a row into `quarantine` (bytes and error kept) and out of its table.
pub(crate) fn quarantine(
    tx: &Transaction<'_>,
    path: &Path,
    c: &Corruption,
    now_ms: i64,
) -> Result<(), StoreError> {
    let sql = sql_err(path, "setting a corrupt row aside");
    let select = match c.table {
        "reading_frames" => "SELECT body FROM reading_frames WHERE id = ?1",
        _ => "SELECT body FROM reading_blocks WHERE rowid = ?1",
    };
    let body: Option<Vec<u8>> = tx
        .query_row(select, [c.row], |r| {
            r.get_ref(0)
                .map(|v| v.as_bytes_or_null().ok().flatten().map(<[u8]>::to_vec))
        })
        .optional()
        .map_err(&sql)?
        .flatten();
    tx.execute(
        "INSERT INTO quarantine(source, source_id, group_id, first_ms, last_ms, count, body, error, found_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![c.table, c.row, c.group, c.first_ms, c.last_ms, c.count, body, c.error, now_ms],
    )
    .map_err(&sql)?;
    let delete = match c.table {
        "reading_frames" => "DELETE FROM reading_frames WHERE id = ?1",
        _ => "DELETE FROM reading_blocks WHERE rowid = ?1",
    };
    tx.execute(delete, [c.row]).map_err(&sql)?;
    Ok(())
}

/// Most blocks the scrub reads at one compaction.
pub(crate) const SCRUB_BLOCKS: i64 = 2_000;

/// Blocks the scrub reads per second of running time (about 2,000 a minute: a year of a
/// 1,000-point site, some 16 million blocks, in under a week), at least a few per compaction.
pub(crate) fn scrub_budget(since_last: std::time::Duration) -> i64 {
    ((since_last.as_secs_f64() * 33.0) as i64).clamp(16, SCRUB_BLOCKS)
}

/// Reads up to `budget` compacted blocks after row `after`, sets aside those that do not
/// decode, and returns them with the row to continue after (0 once the end is reached).
pub(crate) fn scrub_blocks(
    tx: &Transaction<'_>,
    path: &Path,
    after: i64,
    budget: i64,
    now_ms: i64,
) -> Result<(Vec<Corruption>, i64), StoreError> {
    let sql = sql_err(path, "scrubbing stored readings");
    let mut found = Vec::new();
    let mut last = after;
    let mut seen = 0;
    {
        let mut select = tx
            .prepare_cached("SELECT rowid, group_id, first_ms, last_ms, count, body FROM reading_blocks WHERE rowid > ?1 ORDER BY rowid LIMIT ?2")
            .map_err(&sql)?;
        let mut rows = select.query(params![after, budget]).map_err(&sql)?;
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        while let Some(row) = rows.next().map_err(&sql)? {
            seen += 1;
            let columns = (|| -> rusqlite::Result<(i64, i64, i64, i64, i64)> {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })();
            let (rowid, group, first_ms, last_ms, count) = columns.map_err(&sql)?;
            last = rowid;
            let body = row.get_ref(5).map_err(&sql)?;
            let checked = match body.as_blob() {
                Ok(bytes) => decode_row(first_ms, count, bytes, &mut out, &mut scratch),
                Err(_) => Err("the body is not a blob".to_owned()),
            };
            if let Err(error) = checked {
                found.push(Corruption {
                    table: "reading_blocks",
                    row: rowid,
                    group: Some(group),
                    first_ms,
                    last_ms,
                    count,
                    error,
                });
            }
        }
    }
    for c in &found {
        quarantine(tx, path, c, now_ms)?;
    }
    let next = if seen < budget { 0 } else { last };
    Ok((found, next))
}

/// Whether a row set aside may hold readings of block group `group` in `[from_ms, to_ms]`: a
/// frame may hold any point's, a block only its group's.
pub(crate) fn quarantined_overlap(
    conn: &Connection,
    path: &Path,
    group: i64,
    from_ms: i64,
    to_ms: i64,
) -> Result<Option<(String, i64, String)>, StoreError> {
    conn.prepare_cached("SELECT source, first_ms, error FROM quarantine WHERE last_ms >= ?2 AND first_ms <= ?3 AND (group_id IS NULL OR group_id = ?1) ORDER BY first_ms LIMIT 1")
        .and_then(|mut s| {
            s.query_row(params![group, from_ms, to_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(sql_err(path, "reading readings"))
}
