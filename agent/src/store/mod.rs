//! The local database: the only writer of the SQLite file.
//!
//! # Contract
//!
//! - **One writer.** Only the writer task ([`spawn_writer`]) writes; readers (status, CLI, tests)
//!   open the file read-only and see committed data (WAL mode).
//! - **When a reading is durable.** Polled readings are buffered in memory and committed in one
//!   transaction at least every `commit_interval` (default 1 s) or every 1,000,000 readings, with
//!   `synchronous=FULL`: once committed it survives a crash or power cut. A crash loses at most the
//!   readings of the last interval, which were never acknowledged to anyone.
//! - **Compact raw readings.** A commit stores all its readings as one encoded frame
//!   (`reading_frames`, see [`frame`]): one row per commit, however many points. Once a minute (or
//!   sooner when frames hold [`COMPACT_READINGS`]) the writer splits the frames by point and
//!   writes them as blocks (`reading_blocks`), one per group of [`frame::GROUP_SIZE`] points, in
//!   one transaction, so a crash during compaction leaves either the frames or the blocks, never
//!   both or neither. Each row carries the count and time range of its readings; a body that
//!   fails to decode is reported as corrupt, never silently skipped.
//! - **Size bound.** Raw readings are kept for `raw_retention` (default 90 days). When the file
//!   would exceed `disk_budget_bytes`, the oldest raw blocks are deleted first (and logged); the
//!   space is reused by later writes. Evidence (a later schema version) is never pruned for space.
//! - **When the disk is full or the file breaks.** A failed commit keeps the readings in memory and
//!   is retried every interval; the error names the file and the cause. If the buffer reaches
//!   [`MAX_BUFFERED`] readings while commits fail, the oldest are dropped and counted (logged at
//!   ERROR: data loss). A buffer that fills while commits succeed but lag (overload) is never
//!   dropped from: the writer stops taking readings until a commit has taken them, and polling
//!   waits (back-pressure).
//! - **Rule outputs** (seal states, breaches, cycles, NMHC minutes and hours, summaries) are
//!   committed in the same transaction as the readings they came from, and never dropped or
//!   pruned for space.
//! - **Evidence** records are sealed (numbered, hash-chained, signed) inside the same commit as the
//!   readings and outputs they come from, with `synchronous=FULL`: a record exists durably before
//!   anyone is told about it, and a crash can lose only records never sealed. The chain head
//!   advances only after the commit. Records are never pruned for space; after an uplink has
//!   acknowledged them they are still kept for the evidence retention (3 years by default).
//! - **Schema.** Versioned migrations (`PRAGMA user_version`); the file is marked with
//!   `application_id` "SEAL" so another program's database is refused by name, not damaged.

pub mod chunk;
mod evidence;
pub mod frame;
mod schema;
mod upgrade;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::poll::reading::Reading;
use crate::rules::Output;
use chunk::Sample;

/// Readings held in memory at most while commits fail.
pub const MAX_BUFFERED: usize = 2_000_000;

/// Readings that trigger a commit before the interval is up. It bounds the memory of one commit
/// (about 32 MB); a real site (thousands of points at 1 Hz) never reaches it and commits once per
/// interval.
const COMMIT_BATCH: usize = 1_000_000;

/// Longest a rule output (a verdict) waits before its commit; outputs within it share one.
const VERDICT_DELAY: Duration = Duration::from_millis(20);

/// How often committed frames are compacted into blocks.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// Committed readings that trigger a compaction before the minute is up: bounds the memory a
/// compaction needs (about 50 MB) when polling is very fast.
pub const COMPACT_READINGS: usize = 2_000_000;

/// Store failures. Every message names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite could not open the file.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// File.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The file is a database of another program, or not a database.
    #[error("{path} is not a sealwatch database ({why}); refusing to touch it — point [store].path at a new file")]
    NotOurs {
        /// File.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// The file was written by a newer sealwatch.
    #[error("database {path} has schema version {found}, newer than this sealwatch understands ({known}); upgrade sealwatch")]
    TooNew {
        /// File.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version known.
        known: i64,
    },
    /// The readings of a file the agent has not yet converted (its evidence and rule outputs are
    /// read as they are).
    #[error("database {path} has schema version {found}, whose readings this sealwatch does not read (it reads version {known}); the agent converts the file in place when it starts on it (convert a copy to keep the original)")]
    NotUpgraded {
        /// File.
        path: PathBuf,
        /// Version in the file (0: no sealwatch tables yet).
        found: i64,
        /// Version this sealwatch reads.
        known: i64,
    },
    /// A statement failed.
    #[error("database {path}: {context}: {source}")]
    Sql {
        /// File.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// Cause.
        source: rusqlite::Error,
    },
    /// Stored readings do not decode.
    #[error(
        "database {path}: readings of point {point} in the row starting at {first_ms}: {source}"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Point key.
        point: String,
        /// Chunk start.
        first_ms: i64,
        /// Cause.
        source: chunk::ChunkError,
    },
    /// The evidence chain cannot be continued.
    #[error("database {path}: {why}")]
    Evidence {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The writer task is gone (the agent is stopping).
    #[error("the store writer has stopped")]
    WriterGone,
    /// A commit asked for by a flush failed (the writer keeps the data and retries).
    #[error("commit failed: {0}")]
    CommitFailed(String),
}

impl StoreError {
    /// Whether retrying later may succeed (disk full, busy, I/O), as opposed to a broken setup.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Sql { .. })
    }
}

/// Maps a SQLite error to [`StoreError::Sql`] naming the file and what was being done.
fn sql_err<'a>(
    path: &'a Path,
    context: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_owned(),
        context,
        source,
    }
}

/// Inserts `readings` as one frame (one row, whatever the number of points).
fn insert_frame(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    readings: &[(i64, Sample)],
) -> Result<(), StoreError> {
    let order = frame::order_by_point(readings);
    let Some((_, frame)) = frame::encode_groups(readings, &order, |_| 0).pop() else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT INTO reading_frames(first_ms, last_ms, count, body) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            frame.first_ms,
            frame.last_ms,
            frame.count as i64,
            frame.body
        ])
    })
    .map_err(sql_err(path, "committing readings"))?;
    Ok(())
}

/// Inserts readings as one block per group of points.
fn insert_blocks(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    rows: &[(i64, Sample)],
) -> Result<usize, StoreError> {
    let mut insert = tx
        .prepare_cached("INSERT INTO reading_blocks(group_id, first_ms, last_ms, count, body) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sql_err(path, "writing reading blocks"))?;
    let blocks = frame::encode_groups(rows, &frame::order_by_point(rows), frame::group_of);
    for (group, block) in &blocks {
        insert
            .execute(params![
                group,
                block.first_ms,
                block.last_ms,
                block.count as i64,
                block.body
            ])
            .map_err(sql_err(path, "writing reading blocks"))?;
    }
    Ok(blocks.len())
}

/// Splits every committed frame by point and writes the readings as blocks. A frame that does
/// not decode stays where it is (readers of its time range report it as corrupt; the retention
/// window removes it in the end) and is logged at every compaction; its readings are never
/// silently dropped.
fn merge_frames(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    readings: &mut Vec<(i64, Sample)>,
    stats: &mut CompactStats,
) -> Result<(), StoreError> {
    let sql = |context| sql_err(path, context);
    let total: i64 = tx
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM reading_frames",
            [],
            |r| r.get(0),
        )
        .map_err(sql("compacting readings"))?;
    readings.clear();
    readings.reserve(usize::try_from(total).unwrap_or(0));
    let mut merged: Vec<i64> = Vec::new();
    let mut scratch: Vec<Sample> = Vec::new();
    {
        let mut select = tx
            .prepare("SELECT id, first_ms, body FROM reading_frames ORDER BY id")
            .map_err(sql("compacting readings"))?;
        let mut frames = select.query([]).map_err(sql("compacting readings"))?;
        while let Some(row) = frames.next().map_err(sql("compacting readings"))? {
            let columns = (|| -> rusqlite::Result<(i64, i64, &[u8])> {
                Ok((row.get(0)?, row.get(1)?, row.get_ref(2)?.as_blob()?))
            })();
            let (id, first_ms, body) = columns.map_err(sql("compacting readings"))?;
            let kept = readings.len();
            let decoded = frame::entries(first_ms, body).try_for_each(|entry| {
                let entry = entry?;
                scratch.clear();
                chunk::decode_into(entry.first_ms, entry.count, entry.body, &mut scratch)?;
                readings.extend(scratch.iter().map(|s| (entry.point_id, *s)));
                Ok::<(), chunk::ChunkError>(())
            });
            match decoded {
                Ok(()) => merged.push(id),
                Err(e) => {
                    readings.truncate(kept);
                    tracing::error!(path = %path.display(), frame = id, first_ms, error = %e, "a committed reading frame does not decode; it is kept as it is and readers of its time range report it");
                }
            }
        }
    }
    stats.readings += readings.len();
    stats.blocks += insert_blocks(tx, path, readings)?;
    let mut delete = tx
        .prepare("DELETE FROM reading_frames WHERE id = ?1")
        .map_err(sql("compacting readings"))?;
    for id in merged {
        delete.execute([id]).map_err(sql("compacting readings"))?;
    }
    Ok(())
}

/// A reading read back from the store.
pub type StoredReading = Sample;

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Readings moved from frames into blocks.
    pub readings: usize,
    /// Blocks written.
    pub blocks: usize,
    /// Blocks (and frames) deleted for retention or the disk budget.
    pub pruned_blocks: usize,
    /// Evidence records deleted after their retention (acknowledged ones only).
    pub pruned_evidence: usize,
}

/// Limits applied by [`Store::compact`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Raw readings older than this are deleted.
    pub raw_retention: Duration,
    /// File size above which the oldest raw blocks are deleted.
    pub disk_budget_bytes: u64,
    /// Evidence older than this is deleted, but only once every uplink has acknowledged it.
    pub evidence_retention: Duration,
}

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    sealer: Option<evidence::Sealer>,
    /// Kept between commits and compactions: under heavy load they need tens of MB, and asking
    /// the system for it afresh each time costs more than the work.
    buffer: Vec<(i64, Sample)>,
    /// The file's schema version: [`schema::SCHEMA_VERSION`], unless opened read-only unconverted.
    version: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            sealer: None,
            buffer: Vec::new(),
            version: schema::SCHEMA_VERSION,
        };
        schema::migrate(&mut store.conn, path)?;
        Ok(store)
    }

    /// Opens an existing database read-only (status, CLI, tests).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let version = schema::check_ours(&conn, path)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            sealer: None,
            buffer: Vec::new(),
            version,
        })
    }

    /// Refuses to read readings from a file older than the reading tables this sealwatch knows.
    fn check_readings_layout(&self) -> Result<(), StoreError> {
        if self.version < schema::READINGS_LAYOUT_SINCE {
            return Err(StoreError::NotUpgraded {
                path: self.path.clone(),
                found: self.version,
                known: schema::SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sql_err(&self.path, context)
    }

    /// Database ids of the points with these keys, creating rows for new keys.
    pub fn register_points(
        &mut self,
        points: &[(String, Option<String>)],
    ) -> Result<Vec<i64>, StoreError> {
        let Store { conn, path, .. } = self;
        let sql = |context| sql_err(path, context);
        let tx = conn.transaction().map_err(sql("registering points"))?;
        let mut ids = Vec::with_capacity(points.len());
        {
            let mut insert = tx
                .prepare("INSERT INTO points(key, unit) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET unit = excluded.unit RETURNING id")
                .map_err(sql("registering points"))?;
            for (key, unit) in points {
                let id: i64 = insert
                    .query_row(params![key, unit], |r| r.get(0))
                    .map_err(sql("registering points"))?;
                ids.push(id);
            }
        }
        tx.commit().map_err(sql("registering points"))?;
        Ok(ids)
    }

    /// Commits readings (with their database point ids) in one transaction.
    pub fn append_readings(&mut self, readings: &[(i64, Reading)]) -> Result<(), StoreError> {
        self.append(readings, &[], &[])
    }

    /// Commits readings, rule outputs and evidence in one transaction. With evidence enabled
    /// ([`Store::enable_evidence`]), every output and every draft becomes a sealed record of the
    /// chain; the chain head advances only once the commit succeeded.
    pub fn append(
        &mut self,
        readings: &[(i64, Reading)],
        outputs: &[Output],
        drafts: &[crate::evidence::Draft],
    ) -> Result<(), StoreError> {
        self.append_rows(
            readings.iter().map(|(id, r)| (*id, Sample::from(r))),
            outputs,
            drafts,
        )
    }

    /// [`Store::append`] of `(point id, sample)` rows, gathered in the kept buffer.
    fn append_rows(
        &mut self,
        rows: impl Iterator<Item = (i64, Sample)>,
        outputs: &[Output],
        drafts: &[crate::evidence::Draft],
    ) -> Result<(), StoreError> {
        let mut buffer = self.take_buffer();
        buffer.extend(rows);
        let result = self.append_samples(&buffer, outputs, drafts);
        self.give_back(buffer);
        result
    }

    /// The reading buffer, empty.
    fn take_buffer(&mut self) -> Vec<(i64, Sample)> {
        let mut rows = std::mem::take(&mut self.buffer);
        rows.clear();
        rows
    }

    /// Keeps `rows`' memory for the next use, unless it is far larger than what was used.
    fn give_back(&mut self, mut rows: Vec<(i64, Sample)>) {
        if rows.capacity() > 4 * rows.len() + 65_536 {
            rows.shrink_to(2 * rows.len());
        }
        rows.clear();
        self.buffer = rows;
    }

    /// [`Store::append`] of readings already in their stored form.
    fn append_samples(
        &mut self,
        samples: &[(i64, Sample)],
        outputs: &[Output],
        drafts: &[crate::evidence::Draft],
    ) -> Result<(), StoreError> {
        let Store {
            conn, path, sealer, ..
        } = self;
        let sql = |context| sql_err(path, context);
        let tx = conn.transaction().map_err(sql("committing readings"))?;
        let new_head = match sealer {
            Some(sealer) => {
                let all: Vec<crate::evidence::Draft> = outputs
                    .iter()
                    .map(crate::evidence::Draft::from_output)
                    .chain(drafts.iter().cloned())
                    .collect();
                Some(evidence::insert_sealed(&tx, path, sealer, &all)?)
            }
            None => None,
        };
        if !outputs.is_empty() {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO rule_outputs(at_ms, kind, subject, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql("committing rule outputs"))?;
            for o in outputs {
                insert
                    .execute(params![o.at_ms(), o.kind(), o.subject(), o.to_json()])
                    .map_err(sql("committing rule outputs"))?;
            }
        }
        insert_frame(&tx, path, samples)?;
        tx.commit().map_err(sql("committing readings"))?;
        if let (Some(sealer), Some(head)) = (sealer, new_head) {
            sealer.head = head;
        }
        Ok(())
    }

    /// Moves committed frames into blocks, then applies retention and the disk budget.
    pub fn compact(&mut self, now_ms: i64, limits: Limits) -> Result<CompactStats, StoreError> {
        let mut rows = self.take_buffer();
        let result = self.compact_with(now_ms, limits, &mut rows);
        self.give_back(rows);
        result
    }

    fn compact_with(
        &mut self,
        now_ms: i64,
        limits: Limits,
        rows: &mut Vec<(i64, Sample)>,
    ) -> Result<CompactStats, StoreError> {
        let Store { conn, path, .. } = self;
        let sql = |context| sql_err(path, context);
        let mut stats = CompactStats::default();
        let tx = conn.transaction().map_err(sql("compacting readings"))?;
        merge_frames(&tx, path, rows, &mut stats)?;
        let cutoff = now_ms - limits.raw_retention.as_millis() as i64;
        stats.pruned_blocks += tx
            .execute(
                "DELETE FROM reading_blocks WHERE last_ms < ?1",
                params![cutoff],
            )
            .map_err(sql("pruning old readings"))?;
        // Only a frame that did not decode is left after merging; it too ends with the window.
        stats.pruned_blocks += tx
            .execute(
                "DELETE FROM reading_frames WHERE last_ms < ?1",
                params![cutoff],
            )
            .map_err(sql("pruning old readings"))?;
        // Evidence past its retention, acknowledged by the audit system, and never the chain
        // head. Without an audit uplink nothing is acknowledged, so nothing is deleted. (The
        // HJ 212 cursors count rule outputs, not evidence.)
        let evidence_cutoff = now_ms - limits.evidence_retention.as_millis() as i64;
        stats.pruned_evidence += tx
            .execute(
                "DELETE FROM evidence WHERE at_ms < ?1 AND seq <= (SELECT coalesce(max(acked_seq), 0) FROM uplink_cursors WHERE uplink = 'audit') AND seq < (SELECT max(seq) FROM evidence)",
                params![evidence_cutoff],
            )
            .map_err(sql("pruning acknowledged evidence past its retention"))?;
        tx.commit().map_err(sql("compacting readings"))?;
        stats.pruned_blocks += self.enforce_budget(limits.disk_budget_bytes)?;
        Ok(stats)
    }

    /// Bytes in use by the database (pages in use, not free pages).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let (pages, free, size): (i64, i64, i64) = self
            .conn
            .query_row("SELECT (SELECT page_count FROM pragma_page_count), (SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.sql("measuring the database"))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    fn enforce_budget(&mut self, budget: u64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        while self.used_bytes()? > budget {
            let deleted = self
                .conn
                .execute("DELETE FROM reading_blocks WHERE rowid IN (SELECT rowid FROM reading_blocks ORDER BY last_ms LIMIT 100)", [])
                .map_err(self.sql("pruning readings for the disk budget"))?;
            if deleted == 0 {
                tracing::error!(path = %self.path.display(), budget, "database is over its disk budget with no raw readings left to prune");
                break;
            }
            pruned += deleted;
        }
        if pruned > 0 {
            tracing::warn!(path = %self.path.display(), blocks = pruned, budget, "pruned the oldest raw readings to stay within the disk budget");
        }
        Ok(pruned)
    }

    /// Every point key with its database id.
    pub fn point_keys(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, key FROM points ORDER BY id")
            .map_err(self.sql("listing points"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.sql("listing points"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("listing points"))
    }

    /// Readings of one point between `from_ms` and `to_ms` (inclusive), in time order.
    pub fn readings(
        &self,
        point_key: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredReading>, StoreError> {
        self.check_readings_layout()?;
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM points WHERE key = ?1",
                params![point_key],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("reading readings"))?;
        let Some(id) = id else { return Ok(Vec::new()) };
        // Compacted blocks of the point's group, then frames not yet compacted.
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT first_ms, body FROM reading_blocks WHERE group_id = ?1 AND last_ms >= ?2 AND first_ms <= ?3 UNION ALL SELECT first_ms, body FROM reading_frames WHERE last_ms >= ?2 AND first_ms <= ?3")
            .map_err(self.sql("reading readings"))?;
        let rows = stmt
            .query_map(params![frame::group_of(id), from_ms, to_ms], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(self.sql("reading readings"))?;
        for row in rows {
            let (first_ms, body) = row.map_err(self.sql("reading readings"))?;
            frame::point_samples(first_ms, &body, id, (from_ms, to_ms), &mut out).map_err(
                |source| StoreError::Corrupt {
                    path: self.path.clone(),
                    point: point_key.to_owned(),
                    first_ms,
                    source,
                },
            )?;
        }
        out.sort_by_key(|s| s.at_ms);
        Ok(out)
    }

    /// Rule outputs (JSON, as emitted) with `at_ms` in `[from_ms, to_ms]`, optionally of one kind,
    /// in the order they were emitted.
    pub fn outputs(
        &self,
        from_ms: i64,
        to_ms: i64,
        kind: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM rule_outputs WHERE at_ms BETWEEN ?1 AND ?2 AND (?3 IS NULL OR kind = ?3) ORDER BY id")
            .map_err(self.sql("reading rule outputs"))?;
        let rows = stmt
            .query_map(params![from_ms, to_ms, kind], |r| r.get(0))
            .map_err(self.sql("reading rule outputs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("reading rule outputs"))
    }

    /// Rule outputs of these kinds after `after_id`, in id order: `(id, kind, body)`.
    pub fn outputs_after(
        &self,
        after_id: i64,
        kinds: &[&str],
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".to_owned());
        self.output_rows(
            "SELECT id, kind, body FROM rule_outputs WHERE id > ?1 AND kind IN (SELECT value FROM json_each(?2)) ORDER BY id LIMIT ?3",
            params![after_id, kinds, limit as i64],
        )
    }

    /// Rule outputs of one kind and subject with `at_ms` in `[from_ms, to_ms]`, in time order:
    /// `(id, kind, body)`.
    pub fn outputs_of(
        &self,
        kind: &str,
        subject: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.output_rows(
            "SELECT id, kind, body FROM rule_outputs WHERE kind = ?1 AND subject = ?2 AND at_ms BETWEEN ?3 AND ?4 ORDER BY at_ms, id",
            params![kind, subject, from_ms, to_ms],
        )
    }

    /// Runs a `SELECT id, kind, body FROM rule_outputs …` query (statement kept cached).
    fn output_rows(
        &self,
        query: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let sql = self.sql("reading rule outputs");
        let mut stmt = self.conn.prepare_cached(query).map_err(&sql)?;
        let rows = stmt
            .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(&sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }

    /// Total readings stored (blocks and frames).
    pub fn reading_count(&self) -> Result<u64, StoreError> {
        self.check_readings_layout()?;
        self.conn
            .query_row("SELECT (SELECT coalesce(sum(count), 0) FROM reading_blocks) + (SELECT coalesce(sum(count), 0) FROM reading_frames)", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.sql("counting readings"))
    }
}

/// A read-only connection for a reader task (an uplink), kept across reads, opened on first use
/// and again after any error; reads run on a blocking thread.
#[derive(Clone, Debug)]
pub struct SharedReader {
    path: PathBuf,
    slot: std::sync::Arc<std::sync::Mutex<Option<Store>>>,
}

impl SharedReader {
    /// A reader of the database at `path` (not opened yet).
    pub fn new(path: &Path) -> SharedReader {
        SharedReader {
            path: path.to_owned(),
            slot: Default::default(),
        }
    }

    /// Runs `read` against the connection (dropped after any error).
    pub async fn read<T, E>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (path, slot) = (self.path.clone(), self.slot.clone());
        tokio::task::spawn_blocking(move || {
            let mut slot = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let store = match slot.take() {
                Some(store) => store,
                None => Store::open_read_only(&path)?,
            };
            let result = read(&store);
            if result.is_ok() {
                *slot = Some(store);
            }
            result
        })
        .await
        .map_err(|_| E::from(StoreError::WriterGone))?
    }
}

/// Commands to the writer task.
enum Command {
    Readings(Vec<Reading>, Vec<Output>),
    Evidence(Vec<crate::evidence::Draft>),
    Cursor(String, u64),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
}

impl StoreHandle {
    /// Queues readings for the next commit (waits if the writer is far behind).
    pub async fn send(&self, readings: Vec<Reading>) -> Result<(), StoreError> {
        self.send_with_outputs(readings, Vec::new()).await
    }

    /// Queues readings and the rule outputs they led to, for the same commit.
    pub async fn send_with_outputs(
        &self,
        readings: Vec<Reading>,
        outputs: Vec<Output>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Command::Readings(readings, outputs))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Queues evidence drafts (agent start and stop, device faults …) for sealing in the next
    /// commit, which happens at once.
    pub async fn send_evidence(
        &self,
        drafts: Vec<crate::evidence::Draft>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Command::Evidence(drafts))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Records that `uplink` has delivered every record up to `acked_seq`.
    pub async fn set_cursor(&self, uplink: &str, acked_seq: u64) -> Result<(), StoreError> {
        self.tx
            .send(Command::Cursor(uplink.to_owned(), acked_seq))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Commits everything queued so far; returns the commit's error message if it failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::CommitFailed(message)),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}

/// Starts the writer task. `point_ids[p]` is the database id of `PointId(p)`. The task ends, after
/// a last commit, when every [`StoreHandle`] is dropped.
pub fn spawn_writer(
    store: Store,
    point_ids: Vec<i64>,
    commit_interval: Duration,
    limits: Limits,
) -> (StoreHandle, tokio::task::JoinHandle<Store>) {
    spawn_writer_buffering(store, point_ids, commit_interval, limits, MAX_BUFFERED)
}

/// [`spawn_writer`] with the buffer bounded at `max_buffered` readings instead of [`MAX_BUFFERED`].
fn spawn_writer_buffering(
    store: Store,
    point_ids: Vec<i64>,
    commit_interval: Duration,
    limits: Limits,
    max_buffered: usize,
) -> (StoreHandle, tokio::task::JoinHandle<Store>) {
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(writer_loop(
        store,
        point_ids.into(),
        commit_interval,
        limits,
        max_buffered,
        rx,
    ));
    (StoreHandle { tx }, task)
}

/// What the next commit carries.
#[derive(Default)]
struct Pending {
    readings: VecDeque<Reading>,
    outputs: Vec<Output>,
    drafts: Vec<crate::evidence::Draft>,
    cursors: std::collections::BTreeMap<String, u64>,
    flushes: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.outputs.is_empty()
            && self.drafts.is_empty()
            && self.cursors.is_empty()
            && self.flushes.is_empty()
    }

    /// Puts the content of a commit that failed back in front of what arrived since.
    fn restore(&mut self, mut failed: Pending) {
        failed.readings.extend(self.readings.drain(..));
        self.readings = failed.readings;
        failed.outputs.append(&mut self.outputs);
        self.outputs = failed.outputs;
        failed.drafts.append(&mut self.drafts);
        self.drafts = failed.drafts;
        for (uplink, seq) in failed.cursors {
            // A newer position of the same uplink wins.
            self.cursors.entry(uplink).or_insert(seq);
        }
    }
}

/// What a commit job did: whether the batch is durable, and what compaction did (if it ran).
struct Committed {
    batch: Result<(), StoreError>,
    compaction: Option<Result<CompactStats, StoreError>>,
}

/// One commit, on a blocking thread: cursors, then readings, outputs and evidence in one
/// transaction, then (if due and the batch is durable) compaction. A failed compaction does not
/// undo the batch; it is tried again at the next commit.
fn commit_batch(
    store: &mut Store,
    batch: &Pending,
    point_ids: &[i64],
    compact: bool,
    limits: Limits,
) -> Committed {
    let mut result: Result<(), StoreError> = Ok(());
    for (uplink, seq) in &batch.cursors {
        if result.is_ok() {
            result = store.set_uplink_cursor(uplink, *seq, crate::clock::now_ms());
        }
    }
    if result.is_ok()
        && !(batch.readings.is_empty() && batch.outputs.is_empty() && batch.drafts.is_empty())
    {
        let rows = batch.readings.iter().filter_map(|r| {
            point_ids
                .get(r.point.0 as usize)
                .map(|id| (*id, Sample::from(r)))
        });
        result = store.append_rows(rows, &batch.outputs, &batch.drafts);
    }
    let compaction =
        (result.is_ok() && compact).then(|| store.compact(crate::clock::now_ms(), limits));
    Committed {
        batch: result,
        compaction,
    }
}

/// The writer task. Commands keep being taken while a commit runs on a blocking thread, so a slow
/// commit (an fsync, a compaction) never stalls the bus tasks; what arrives meanwhile goes into
/// the next commit.
async fn writer_loop(
    store: Store,
    point_ids: std::sync::Arc<[i64]>,
    commit_interval: Duration,
    limits: Limits,
    max_buffered: usize,
    mut rx: mpsc::Receiver<Command>,
) -> Store {
    type Job = tokio::task::JoinHandle<(Store, Pending, Committed)>;
    let path = store.path().to_owned();
    let mut idle: Option<Store> = Some(store);
    let mut running: Option<Job> = None;
    let mut pending = Pending::default();
    let mut dropped: u64 = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut compaction = Compaction::new();
    let mut closed = false;
    // Set while commits fail: no commit is tried before then, whatever asks for one (a full
    // buffer, a verdict, a flush), so a broken disk costs one attempt an interval; meanwhile a
    // full buffer overflows, oldest first.
    let mut retry_at: Option<tokio::time::Instant> = None;
    let batch_size = COMMIT_BATCH.min(max_buffered);
    loop {
        let now = tokio::time::Instant::now();
        let failing = retry_at.is_some();
        // When the next commit is due by the clock.
        let wake = deadline.map(|d| retry_at.map_or(d, |r| d.max(r)));
        let due = closed
            || wake.is_some_and(|d| d <= now)
            || (!failing && pending.readings.len() >= batch_size);
        if due {
            if let Some(mut store) = idle.take() {
                if dropped > 0 {
                    tracing::error!(path = %path.display(), dropped, "readings dropped: commits kept failing and the buffer is full");
                    dropped = 0;
                }
                let compact = closed || compaction.due();
                let batch = std::mem::take(&mut pending);
                let ids = point_ids.clone();
                deadline = None;
                running = Some(tokio::task::spawn_blocking(move || {
                    let committed = commit_batch(&mut store, &batch, &ids, compact, limits);
                    (store, batch, committed)
                }));
            }
        }
        let timer_armed = running.is_none();
        // While the buffer is full and a commit runs or is about to, stop taking readings: the
        // bus tasks wait (back-pressure). Only while commits fail does the buffer overflow.
        let full = pending.readings.len() >= max_buffered;
        let overflowing = failing && running.is_none();
        let receiving = !(closed || (full && !overflowing));
        let job = async {
            match running.as_mut() {
                Some(job) => job.await,
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match wake {
                Some(d) if timer_armed => tokio::time::sleep_until(d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv(), if receiving => {
                // The wait may have been long: deadlines count from now.
                let now = tokio::time::Instant::now();
                match cmd {
                Some(Command::Readings(batch, outputs)) => {
                    pending.readings.extend(batch);
                    // Rule outputs are never dropped: they are few, and they are the verdicts.
                    pending.outputs.extend(outputs);
                    // Dropped only while commits fail; otherwise a full buffer means
                    // back-pressure instead (see `receiving`).
                    while overflowing && pending.readings.len() > max_buffered {
                        pending.readings.pop_front();
                        dropped += 1;
                    }
                    sooner(&mut deadline, now + commit_interval);
                    // Verdicts are committed (and so sealed as evidence) within VERDICT_DELAY,
                    // together with whatever else came meanwhile; plain readings wait for the
                    // interval or a full batch.
                    if !pending.outputs.is_empty() {
                        sooner(&mut deadline, now + VERDICT_DELAY);
                    }
                }
                Some(Command::Evidence(drafts)) => {
                    pending.drafts.extend(drafts);
                    deadline = Some(now);
                }
                Some(Command::Cursor(uplink, seq)) => {
                    pending.cursors.insert(uplink, seq);
                    sooner(&mut deadline, now + commit_interval);
                }
                Some(Command::Flush(ack)) => {
                    pending.flushes.push(ack);
                    deadline = Some(now);
                }
                None => closed = true,
                }
            },
            joined = job => {
                running = None;
                let (store, batch, committed) = match joined {
                    Ok(done) => done,
                    Err(join) => {
                        tracing::error!(error = %join, "store writer crashed");
                        std::process::abort();
                    }
                };
                idle = Some(store);
                let compacted = committed.compaction.is_some();
                let failed = finish_commit(&path, &mut pending, batch, committed, &mut compaction, limits);
                retry_at = failed.then(|| tokio::time::Instant::now() + commit_interval);
                if failed || !pending.is_empty() {
                    sooner(&mut deadline, tokio::time::Instant::now() + commit_interval);
                }
                // The agent is stopping: done once a commit that included compaction left
                // nothing behind (or failed; its error is logged and the flushes were told).
                if closed && (failed || (compacted && pending.is_empty())) {
                    if let Some(store) = idle.take() {
                        return store;
                    }
                }
            },
            () = timer => {}
        }
    }
}

/// Moves `deadline` to `at` if that is sooner (or there is none).
fn sooner(deadline: &mut Option<tokio::time::Instant>, at: tokio::time::Instant) {
    *deadline = Some(deadline.map_or(at, |d| d.min(at)));
}

/// When the writer last compacted, and what it committed since.
struct Compaction {
    last: Instant,
    uncompacted: usize,
}

impl Compaction {
    fn new() -> Compaction {
        Compaction {
            last: Instant::now(),
            uncompacted: 0,
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= COMPACT_EVERY || self.uncompacted >= COMPACT_READINGS
    }
}

/// Settles a finished commit: answers its flushes, puts a failed batch back into `pending`, and
/// queues the record of anything compaction pruned. Returns whether the batch failed.
fn finish_commit(
    path: &Path,
    pending: &mut Pending,
    mut batch: Pending,
    committed: Committed,
    compaction: &mut Compaction,
    limits: Limits,
) -> bool {
    let flushes = std::mem::take(&mut batch.flushes);
    if let Err(err) = committed.batch {
        tracing::error!(path = %path.display(), error = %err, buffered = batch.readings.len() + pending.readings.len(), "commit failed; readings kept in memory and retried");
        for ack in flushes {
            let _ = ack.send(Err(err.to_string()));
        }
        pending.restore(batch);
        return true;
    }
    for ack in flushes {
        let _ = ack.send(Ok(()));
    }
    compaction.uncompacted += batch.readings.len();
    match committed.compaction {
        Some(Ok(stats)) => {
            tracing::debug!(?stats, "compacted readings");
            *compaction = Compaction::new();
            if stats.pruned_blocks > 0 || stats.pruned_evidence > 0 {
                // Pruning is itself on the record, sealed in the next commit.
                tracing::info!(
                    blocks = stats.pruned_blocks,
                    evidence = stats.pruned_evidence,
                    "pruned stored data"
                );
                let body = serde_json::json!({
                    "raw_reading_blocks": stats.pruned_blocks,
                    "evidence_records": stats.pruned_evidence,
                    "raw_retention_days": limits.raw_retention.as_secs() / 86_400,
                    "disk_budget_bytes": limits.disk_budget_bytes,
                    "evidence_retention_days": limits.evidence_retention.as_secs() / 86_400,
                });
                pending.drafts.push(crate::evidence::Draft::new(
                    crate::clock::now_ms(),
                    "data_pruned",
                    "",
                    &body,
                ));
            }
        }
        Some(Err(err)) => {
            tracing::error!(path = %path.display(), error = %err, "compaction failed; the committed readings are safe, compaction is tried again at the next commit");
        }
        None => {}
    }
    false
}

#[cfg(test)]
mod tests;
