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
//!   both or neither. Each row carries the count and time range of its readings.
//! - **Rows read back are outside input.** Every length and count read from the file is bounded
//!   before use; a row that does not decode (or holds another count than it says) is moved whole
//!   into `quarantine` (bytes and error kept), reported once as a `store_corruption` evidence
//!   record and an ERROR, and its readers are told — never a crash, never silently skipped. Each
//!   compaction also scrubs a slice of the blocks ([`integrity`]).
//! - **The file stays the file.** Before every commit the writer checks that the path is still
//!   the file it opened, and at each compaction that the file's chain head is what it sealed; a
//!   file deleted or replaced under it gets no more commits ([`StoreError::Replaced`]), which the
//!   status page, `/metrics` and the watchdog show.
//! - **Size bound.** Raw readings are kept for `raw_retention` (default 90 days). When the file
//!   would exceed `disk_budget_bytes`, the oldest raw blocks are deleted first (and logged); the
//!   space is reused by later writes. Evidence (a later schema version) is never pruned for space.
//!   Retention counts back from the newest stored data and pauses while the wall clock is more
//!   than a day off the monotonic clock ([`retention`]).
//! - **Disk space.** Below `disk_reserve_bytes` free on the file system (statvfs, before each
//!   commit) or when SQLite reports the disk full, the oldest raw readings are pruned in a
//!   transaction that deletes before it writes (sealed as `data_pruned`, reason `disk_space`) and
//!   the commit is tried again; with only evidence and rule outputs left, readings are refused
//!   and counted while outputs and evidence are still committed ([`Store::append_within_space`]).
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
//!   acknowledged them they are still kept for the evidence retention (5 years by default), and
//!   then only a prefix of the chain goes, named with its last hash in a `data_pruned` record.
//! - **Schema.** Versioned migrations (`PRAGMA user_version`); the file is marked with
//!   `application_id` "SEAL" so another program's database is refused by name, not damaged.

pub mod chunk;
mod evidence;
pub mod frame;
pub mod health;
mod integrity;
pub mod retention;
mod schema;
mod upgrade;

pub use health::{HealthHandle, StoreHealth};
pub use integrity::Corruption;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::model::Reading;
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

/// How often committed frames are compacted into blocks, unless configured otherwise.
pub const COMPACT_EVERY: Duration = Duration::from_secs(60);

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
    /// Readings of the range were in a row that did not decode; it was set aside.
    #[error("database {path}: readings of point {point} near {first_ms} were in a {table} row that did not decode ({error}); it was set aside into the quarantine table and sealed as a store_corruption record")]
    Quarantined {
        /// File.
        path: PathBuf,
        /// Point key.
        point: String,
        /// Table the row was in.
        table: String,
        /// Row start.
        first_ms: i64,
        /// What was wrong.
        error: String,
    },
    /// The evidence chain cannot be continued.
    #[error("database {path}: {why}")]
    Evidence {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The database file was deleted or replaced while the agent had it open: nothing more is
    /// written to it (a commit would vanish with the unlinked file, or fork the chain).
    #[error("database {path} is no longer the file the agent opened: {why}. Nothing more is written; restart the agent (it refuses to start a second chain silently)")]
    Replaced {
        /// File.
        path: PathBuf,
        /// What was found.
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

    /// Whether SQLite reported the file as damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
    pub fn is_corruption(&self) -> bool {
        let code = match self {
            StoreError::Sql { source, .. } | StoreError::Open { source, .. } => {
                source.sqlite_error_code()
            }
            _ => None,
        };
        matches!(
            code,
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
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
/// not decode (or holds another number of readings than its row says) is set aside into
/// `quarantine`, bytes and error kept, and returned in `stats.corruptions`; its readings are
/// never silently dropped, and readers of its time range are told.
fn merge_frames(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    readings: &mut Vec<(i64, Sample)>,
    stats: &mut CompactStats,
    now_ms: i64,
) -> Result<(), StoreError> {
    let sql = |context| sql_err(path, context);
    // Reserve from what the rows really hold, never from a count read back: every reading
    // takes at least one byte of its body.
    let expected: i64 = tx
        .query_row(
            "SELECT coalesce(sum(min(max(count, 0), length(body))), 0) FROM reading_frames",
            [],
            |r| r.get(0),
        )
        .map_err(sql("compacting readings"))?;
    readings.clear();
    readings.reserve(usize::try_from(expected).unwrap_or(0));
    let mut merged: Vec<i64> = Vec::new();
    let mut corrupt: Vec<Corruption> = Vec::new();
    let (mut rows, mut scratch) = (Vec::new(), Vec::new());
    {
        let mut select = tx
            .prepare("SELECT id, first_ms, last_ms, count, body FROM reading_frames ORDER BY id")
            .map_err(sql("compacting readings"))?;
        let mut frames = select.query([]).map_err(sql("compacting readings"))?;
        while let Some(row) = frames.next().map_err(sql("compacting readings"))? {
            let columns = (|| -> rusqlite::Result<(i64, i64, i64, i64)> {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })();
            let (id, first_ms, last_ms, count) = columns.map_err(sql("compacting readings"))?;
            let body = row.get_ref(4).map_err(sql("compacting readings"))?;
            let decoded = match body.as_blob() {
                Ok(bytes) => integrity::decode_row(first_ms, count, bytes, &mut rows, &mut scratch),
                Err(_) => Err("the body is not a blob".to_owned()),
            };
            match decoded {
                Ok(()) => {
                    readings.extend_from_slice(&rows);
                    merged.push(id);
                }
                Err(error) => corrupt.push(Corruption {
                    table: "reading_frames",
                    row: id,
                    group: None,
                    first_ms,
                    last_ms,
                    count,
                    error,
                }),
            }
        }
    }
    for c in &corrupt {
        integrity::quarantine(tx, path, c, now_ms)?;
    }
    stats.corruptions.extend(corrupt);
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

/// Free pages the file keeps ready for commits while the file system is below its reserve;
/// when fewer are left, the oldest raw readings make more.
pub const SPACE_HEADROOM: u64 = 1 << 20;

/// The newest time stored: the last raw reading or evidence record, ms.
fn newest_stored_ms(conn: &Connection, path: &Path) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(last_ms) FROM reading_blocks), 0),
                    coalesce((SELECT max(last_ms) FROM reading_frames), 0),
                    coalesce((SELECT max(at_ms) FROM evidence), 0))",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|ms| (ms > 0).then_some(ms))
    .map_err(sql_err(path, "reading the newest stored time"))
}

/// Bytes of free pages inside the file as `conn` sees it.
fn free_bytes(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT (SELECT freelist_count FROM pragma_freelist_count) * (SELECT page_size FROM pragma_page_size)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|b| b.max(0) as u64)
    .map_err(sql_err(path, "measuring free pages"))
}

/// Bytes the file system holding `path` has free for this process (`statvfs`).
fn disk_available(path: &Path) -> Option<u64> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    rustix::fs::statvfs(dir)
        .ok()
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
}

/// Whether a failed commit failed for space (`SQLITE_FULL`, or the OS's "no space left").
fn out_of_space(err: &StoreError) -> bool {
    match err {
        StoreError::Sql { source, .. } => {
            source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
                || source.to_string().contains("No space left")
        }
        _ => false,
    }
}

/// Bytes in use by the database as `conn` sees it (inside its transaction, if one is open).
fn used_bytes(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    let (pages, free, size): (i64, i64, i64) = conn
        .query_row("SELECT (SELECT page_count FROM pragma_page_count), (SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_err(path, "measuring the database"))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// Deletes the oldest raw blocks, 100 at a time, until the file is within `budget`; returns
/// how many went.
fn prune_for_budget(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    budget: u64,
) -> Result<usize, StoreError> {
    let mut pruned = 0;
    while used_bytes(tx, path)? > budget {
        let deleted = delete_oldest_raw(
            tx,
            path,
            &["reading_blocks"],
            "pruning readings for the disk budget",
        )?;
        if deleted == 0 {
            tracing::error!(path = %path.display(), budget, "database is over its disk budget with no raw readings left to prune");
            break;
        }
        pruned += deleted;
    }
    if pruned > 0 {
        tracing::warn!(path = %path.display(), blocks = pruned, budget, "pruned the oldest raw readings to stay within the disk budget");
    }
    Ok(pruned)
}

/// Deletes the 100 oldest rows (by `last_ms`) of the first of `tables` that has any; returns
/// how many went (0: all are empty).
fn delete_oldest_raw(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    tables: &[&str],
    context: &'static str,
) -> Result<usize, StoreError> {
    for table in tables {
        let deleted = tx
            .execute(&format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY last_ms LIMIT 100)"), [])
            .map_err(sql_err(path, context))?;
        if deleted > 0 {
            return Ok(deleted);
        }
    }
    Ok(0)
}

/// What [`Store::free_space`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    /// Whether the free pages asked for are there now (false: no raw readings are left).
    pub enough: bool,
    /// Raw-reading rows deleted.
    pub rows: usize,
}

/// A reading read back from the store.
pub type StoredReading = Sample;

/// What a compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactStats {
    /// Readings moved from frames into blocks.
    pub readings: usize,
    /// Blocks written.
    pub blocks: usize,
    /// Blocks (and frames) deleted for retention or the disk budget.
    pub pruned_blocks: usize,
    /// Evidence records deleted after their retention (acknowledged ones only).
    pub pruned_evidence: usize,
    /// The last evidence record deleted, with its hash (records 1 to it, or to the previous
    /// pruning, are gone; the next record's `prev_hash` is this hash).
    pub pruned_evidence_through: Option<(u64, String)>,
    /// Rows that did not decode, set aside into `quarantine`.
    pub corruptions: Vec<Corruption>,
    /// The blocks went because the file system ran short of space (not for age or budget).
    pub for_space: bool,
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
    /// How often the writer compacts (and applies these limits).
    pub compact_every: Duration,
    /// Free space the file system must keep: below it, raw readings are pruned (oldest first)
    /// before a commit; 0 turns the check off.
    pub disk_reserve_bytes: u64,
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
    /// Device and inode of the file opened for writing (checked before every commit).
    identity: Option<integrity::FileIdentity>,
    /// The chain anchor file to keep up to date, and the head last written to it.
    anchor: Option<(PathBuf, Option<u64>)>,
    /// Where the block scrub goes on (a row id of `reading_blocks`), and when it last ran.
    scrub_after: i64,
    scrub_last: Option<Instant>,
    /// What the writer reports about itself.
    health: HealthHandle,
    /// The wall clock and the monotonic clock read together when the writer started: the
    /// wall clock is trusted for retention only while it keeps pace with the monotonic one.
    clock: Option<(i64, Instant)>,
    /// Set while the file system has no space and no raw readings are left to prune: readings
    /// are not stored (counted), rule outputs and evidence still are.
    space_exhausted: bool,
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
            identity: None,
            anchor: None,
            scrub_after: 0,
            scrub_last: None,
            health: HealthHandle::default(),
            clock: None,
            space_exhausted: false,
        };
        schema::migrate(&mut store.conn, path)?;
        store.identity = integrity::identity(path).ok();
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
            identity: None,
            anchor: None,
            scrub_after: 0,
            scrub_last: None,
            health: HealthHandle::default(),
            clock: None,
            space_exhausted: false,
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

    /// Where the writer reports its health (commit failures, corruption, a replaced file).
    pub fn report_health_to(&mut self, health: HealthHandle) {
        self.health = health;
    }

    /// The store's health as reported so far.
    pub fn health(&self) -> &HealthHandle {
        &self.health
    }

    /// Keeps the chain anchor at `path` up to date with the sealed head: after the first commit
    /// that seals evidence, at every compaction, and at close ([`crate::evidence::anchor`]).
    pub fn keep_anchor(&mut self, path: PathBuf) {
        self.anchor = Some((path, None));
    }

    /// Writes the chain anchor if one is kept and the head moved (`force`: at a compaction) or
    /// it was never written. A failure is logged, not fatal: the anchor is a second witness.
    fn refresh_anchor(&mut self, force: bool) {
        let (Some((path, written)), Some(sealer)) = (self.anchor.as_mut(), self.sealer.as_ref())
        else {
            return;
        };
        let head = sealer.head;
        if head.seq == 0 || *written == Some(head.seq) || (written.is_some() && !force) {
            return;
        }
        let anchor = crate::evidence::anchor::Anchor::new(
            sealer.site(),
            head,
            &self.path,
            crate::clock::now_ms(),
        );
        match crate::evidence::anchor::write(path, &anchor) {
            Ok(()) => {
                *written = Some(head.seq);
                self.health.update(|h| h.anchor_error = None);
            }
            Err(e) => {
                if written.is_none() {
                    tracing::error!(error = %e, "cannot write the chain anchor; a deleted or replaced database would then be noticed only by the uplink cursor and the audit system");
                }
                *written = Some(0);
                self.health.update(|h| h.anchor_error = Some(e.to_string()));
            }
        }
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
        integrity::check_identity(&self.path, self.identity)?;
        let Store {
            conn, path, sealer, ..
        } = self;
        let sql = |context| sql_err(path, context);
        let tx = conn.transaction().map_err(sql("committing readings"))?;
        // The file still holds the chain the writer sealed (not a copy written over it).
        if let Some(sealer) = sealer.as_ref() {
            integrity::check_content(&tx, path, Some(sealer.head))?;
        }
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
        self.refresh_anchor(false);
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
        integrity::check_identity(&self.path, self.identity)?;
        let Store {
            conn,
            path,
            sealer,
            scrub_after,
            scrub_last,
            clock,
            health,
            ..
        } = self;
        let clock = *clock;
        let sql = |context| sql_err(path, context);
        integrity::check_content(conn, path, sealer.as_ref().map(|s| s.head))?;
        let mut stats = CompactStats::default();
        let tx = conn.transaction().map_err(sql("compacting readings"))?;
        // Deletes come before writes: on a file system near full, what the deletes free is what
        // the merge and the records reuse.
        let reference = retention::reference(
            now_ms,
            clock.map(|(wall, mono)| retention::expected_wall(wall, mono.elapsed())),
            newest_stored_ms(&tx, path)?,
        );
        let paused = match reference {
            retention::Reference::At(at_ms) => {
                let cutoff = at_ms.saturating_sub(limits.raw_retention.as_millis() as i64);
                // Raw readings and what was set aside end with the window.
                for table in ["reading_blocks", "reading_frames", "quarantine"] {
                    stats.pruned_blocks += tx
                        .execute(
                            &format!("DELETE FROM {table} WHERE last_ms < ?1"),
                            params![cutoff],
                        )
                        .map_err(sql("pruning old readings"))?;
                }
                (stats.pruned_evidence, stats.pruned_evidence_through) =
                    evidence::prune_acknowledged(&tx, path, at_ms, limits.evidence_retention)?;
                None
            }
            retention::Reference::Paused { jump_ms } => Some(jump_ms),
        };
        stats.pruned_blocks += prune_for_budget(&tx, path, limits.disk_budget_bytes)?;
        merge_frames(&tx, path, rows, &mut stats, now_ms)?;
        let budget = integrity::scrub_budget(scrub_last.map_or(Duration::ZERO, |t| t.elapsed()));
        *scrub_last = Some(Instant::now());
        let (found, next) = integrity::scrub_blocks(&tx, path, *scrub_after, budget, now_ms)?;
        stats.corruptions.extend(found);
        *scrub_after = next;
        // What was set aside or pruned is on the record in the same transaction: a crash keeps
        // both or neither.
        let drafts = compaction_drafts(&stats, limits, now_ms);
        let new_head = match sealer.as_ref() {
            Some(s) if !drafts.is_empty() => Some(evidence::insert_sealed(&tx, path, s, &drafts)?),
            _ => None,
        };
        tx.commit().map_err(sql("compacting readings"))?;
        if let (Some(s), Some(head)) = (sealer.as_mut(), new_head) {
            s.head = head;
        }
        let why = paused.map(retention::paused_text);
        let was = health.update(|h| std::mem::replace(&mut h.retention_paused, why.clone()));
        if was != why {
            match &why {
                Some(w) => tracing::warn!(path = %path.display(), "{w}"),
                None => {
                    tracing::info!(path = %path.display(), "the wall clock keeps pace again; retention pruning resumed")
                }
            }
        }
        self.refresh_anchor(true);
        Ok(stats)
    }

    /// Trusts the wall clock for retention only while it keeps pace with the monotonic clock
    /// read at the same moment (the writer calls this as it starts).
    pub fn watch_clock(&mut self, wall_ms: i64, at: Instant) {
        self.clock = Some((wall_ms, at));
    }

    /// Makes room for a commit: checkpoints the write-ahead log (so its file is reused rather
    /// than grown), then deletes the oldest raw readings (blocks, then uncompacted frames),
    /// 100 rows at a time, until `want` bytes of pages inside the file are free, and seals a
    /// `data_pruned` record saying so — in one transaction that deletes before it writes.
    /// Evidence and rule outputs are never deleted for space.
    pub fn free_space(
        &mut self,
        want: u64,
        now_ms: i64,
        limits: Limits,
    ) -> Result<Freed, StoreError> {
        integrity::check_identity(&self.path, self.identity)?;
        if free_bytes(&self.conn, &self.path)? >= want {
            return Ok(Freed {
                enough: true,
                rows: 0,
            });
        }
        self.checkpoint();
        let Store {
            conn, path, sealer, ..
        } = self;
        let sql = |context| sql_err(path, context);
        let tx = conn.transaction().map_err(sql("freeing space"))?;
        // The file still holds the chain the writer sealed (not a copy written over it).
        integrity::check_content(&tx, path, sealer.as_ref().map(|s| s.head))?;
        let mut stats = CompactStats {
            for_space: true,
            ..CompactStats::default()
        };
        let mut enough = false;
        loop {
            if free_bytes(&tx, path)? >= want {
                enough = true;
                break;
            }
            let deleted = delete_oldest_raw(
                &tx,
                path,
                &["reading_blocks", "reading_frames"],
                "pruning readings for space",
            )?;
            if deleted == 0 {
                break;
            }
            stats.pruned_blocks += deleted;
        }
        let new_head = match sealer.as_ref() {
            Some(s) if stats.pruned_blocks > 0 => Some(evidence::insert_sealed(
                &tx,
                path,
                s,
                &compaction_drafts(&stats, limits, now_ms),
            )?),
            _ => None,
        };
        tx.commit().map_err(sql("freeing space"))?;
        if let (Some(s), Some(head)) = (sealer.as_mut(), new_head) {
            s.head = head;
        }
        self.checkpoint();
        let pruned = stats.pruned_blocks;
        if pruned > 0 {
            tracing::warn!(path = %self.path.display(), rows = pruned, "the file system is short of space: pruned the oldest raw readings (sealed as a data_pruned record)");
        }
        self.health.update(|h| h.pruned_for_space += pruned as u64);
        Ok(Freed {
            enough,
            rows: pruned,
        })
    }

    /// Copies the write-ahead log into the file as far as readers allow (never waits for
    /// them), so the log's file is reused rather than grown.
    fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }

    /// A commit of `readings` with what it comes with, kept within the file system's space:
    /// below `limits.disk_reserve_bytes` free (or when SQLite reports the disk full) the oldest
    /// raw readings are pruned first and the commit tried again; when none are left, the
    /// readings are not stored (counted, ERROR, `store_full` alarm) while rule outputs and
    /// evidence still are, until space returns.
    pub fn append_within_space(
        &mut self,
        readings: impl Iterator<Item = (i64, Sample)>,
        outputs: &[Output],
        drafts: &[crate::evidence::Draft],
        now_ms: i64,
        limits: Limits,
    ) -> Result<(), StoreError> {
        let mut buffer = self.take_buffer();
        buffer.extend(readings);
        let result = self.append_buffer_within_space(&buffer, outputs, drafts, now_ms, limits);
        self.give_back(buffer);
        result
    }

    fn append_buffer_within_space(
        &mut self,
        readings: &[(i64, Sample)],
        outputs: &[Output],
        drafts: &[crate::evidence::Draft],
        now_ms: i64,
        limits: Limits,
    ) -> Result<(), StoreError> {
        let reserve = limits.disk_reserve_bytes;
        let short = reserve > 0 && disk_available(&self.path).is_some_and(|free| free < reserve);
        // Below the reserve the file must not grow: later commits reuse free pages inside it,
        // and when fewer than SPACE_HEADROOM are left the oldest raw readings make more.
        if short && !self.free_space(SPACE_HEADROOM, now_ms, limits)?.enough {
            self.set_exhausted(true, now_ms);
        }
        // While refusing readings, they are tried again whenever the reserve is met.
        let with_readings = !self.space_exhausted || !short;
        let attempt = |store: &mut Store, with_readings: bool| {
            let rows = if with_readings { readings } else { &[][..] };
            store.append_samples(rows, outputs, drafts)
        };
        let (result, stored_readings) = match attempt(self, with_readings) {
            Err(e) if out_of_space(&e) => {
                // Full with nothing left to delete: keep the evidence, refuse the readings.
                if self.free_space(SPACE_HEADROOM, now_ms, limits)?.rows == 0 {
                    self.set_exhausted(true, now_ms);
                }
                let again = with_readings && !self.space_exhausted;
                (attempt(self, again), again)
            }
            other => (other, with_readings),
        };
        if result.is_ok() {
            if stored_readings {
                self.set_exhausted(false, now_ms);
            } else if !readings.is_empty() {
                let n = readings.len() as u64;
                self.health.update(|h| h.readings_refused += n);
            }
        }
        result
    }

    fn set_exhausted(&mut self, exhausted: bool, now_ms: i64) {
        if exhausted == self.space_exhausted {
            return;
        }
        self.space_exhausted = exhausted;
        let path = self.path.display().to_string();
        self.health.update(|h| {
            h.space_exhausted_since_ms = exhausted.then_some(now_ms);
        });
        if exhausted {
            tracing::error!(%path, "the file system is full and only evidence and rule outputs are left in the database (they are never pruned for space): readings are no longer stored, judgements and evidence still are — free space on the disk");
        } else {
            tracing::info!(%path, "space is available again; readings are stored again");
        }
    }

    /// Bytes in use by the database (pages in use, not free pages).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        used_bytes(&self.conn, &self.path)
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
        if self.version >= schema::QUARANTINE_SINCE {
            let group = frame::group_of(id);
            if let Some((table, first_ms, error)) =
                integrity::quarantined_overlap(&self.conn, &self.path, group, from_ms, to_ms)?
            {
                return Err(StoreError::Quarantined {
                    path: self.path.clone(),
                    point: point_key.to_owned(),
                    table,
                    first_ms,
                    error,
                });
            }
        }
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

    /// Every point's readings with `at_ms` in `[from_ms, to_ms]`, as `(database point id,
    /// sample)` in time order (the engine's warm-up after a restart). Keep the span short: all
    /// of it is held in memory.
    pub fn readings_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, chunk::Sample)>, StoreError> {
        self.check_readings_layout()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT first_ms, body FROM reading_blocks WHERE last_ms >= ?1 AND first_ms <= ?2 UNION ALL SELECT first_ms, body FROM reading_frames WHERE last_ms >= ?1 AND first_ms <= ?2")
            .map_err(self.sql("reading readings"))?;
        let rows = stmt
            .query_map(params![from_ms, to_ms], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(self.sql("reading readings"))?;
        let mut out = Vec::new();
        for row in rows {
            let (first_ms, body) = row.map_err(self.sql("reading readings"))?;
            let corrupt = |source| StoreError::Corrupt {
                path: self.path.clone(),
                point: "(all points)".to_owned(),
                first_ms,
                source,
            };
            for entry in frame::entries(first_ms, &body) {
                let entry = entry.map_err(corrupt)?;
                let samples = entry.samples().map_err(corrupt)?;
                out.extend(
                    samples
                        .into_iter()
                        .filter(|s| (from_ms..=to_ms).contains(&s.at_ms))
                        .map(|s| (entry.point_id, s)),
                );
            }
        }
        out.sort_by_key(|(id, s)| (s.at_ms, *id));
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

    /// Rule outputs of these kinds with `at_ms >= from_ms`, in the order they were emitted:
    /// `(id, kind, body)`.
    pub fn outputs_since(
        &self,
        from_ms: i64,
        kinds: &[&str],
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".to_owned());
        self.output_rows(
            "SELECT id, kind, body FROM rule_outputs WHERE at_ms >= ?1 AND kind IN (SELECT value FROM json_each(?2)) ORDER BY id LIMIT ?3",
            params![from_ms, kinds, i64::MAX],
        )
    }

    /// The latest `at_ms` of an output of these kinds.
    pub fn latest_output_at(&self, kinds: &[&str]) -> Result<Option<i64>, StoreError> {
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".to_owned());
        self.conn
            .query_row(
                "SELECT MAX(at_ms) FROM rule_outputs WHERE kind IN (SELECT value FROM json_each(?1))",
                params![kinds],
                |r| r.get(0),
            )
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
            .query_row("SELECT (SELECT coalesce(sum(min(max(count, 0), length(body))), 0) FROM reading_blocks) + (SELECT coalesce(sum(min(max(count, 0), length(body))), 0) FROM reading_frames)", [], |r| r.get::<_, i64>(0))
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
    let mut store = store;
    store.watch_clock(crate::clock::now_ms(), Instant::now());
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
        result = store.append_within_space(
            rows,
            &batch.outputs,
            &batch.drafts,
            crate::clock::now_ms(),
            limits,
        );
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
    let mut report = Report::new(store.health().clone());
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
                    report.health.update(|h| h.readings_dropped += dropped);
                    dropped = 0;
                }
                let compact = closed || compaction.due(limits.compact_every);
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
                let failed = finish_commit(&path, &mut pending, batch, committed, &mut compaction, &mut report);
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

    fn due(&self, every: Duration) -> bool {
        self.last.elapsed() >= every || self.uncompacted >= COMPACT_READINGS
    }
}

/// What the writer tells about its commits: the shared [`HealthHandle`], and logs that say a
/// failure once (and again when it changes or a minute passed), not at every retry.
struct Report {
    health: HealthHandle,
    logged: Option<(String, Instant)>,
    unlogged: u64,
}

impl Report {
    fn new(health: HealthHandle) -> Report {
        Report {
            health,
            logged: None,
            unlogged: 0,
        }
    }

    /// A commit (or compaction) failed.
    /// A commit failed (`commit`), or a compaction did (which leaves commits alone).
    fn failed(&mut self, path: &Path, err: &StoreError, what: &str, buffered: usize, commit: bool) {
        let text = err.to_string();
        self.health.update(|h| {
            h.sqlite_corrupt += u64::from(err.is_corruption());
            if commit {
                h.commits_failed += 1;
                h.failing_since_ms.get_or_insert_with(crate::clock::now_ms);
            }
            h.last_error = Some(text.clone());
            if let StoreError::Replaced { why, .. } = err {
                h.replaced.get_or_insert_with(|| why.clone());
            }
        });
        let quiet = self
            .logged
            .as_ref()
            .is_some_and(|(last, at)| *last == text && at.elapsed() < Duration::from_secs(60));
        if quiet {
            self.unlogged += 1;
            return;
        }
        if err.is_corruption() {
            tracing::error!(path = %path.display(), error = %err, "SQLite reports the database file as damaged; {what}");
        } else {
            tracing::error!(path = %path.display(), error = %err, buffered, failures_since_last_line = self.unlogged, "{what}");
        }
        self.logged = Some((text, Instant::now()));
        self.unlogged = 0;
    }

    /// A commit succeeded.
    fn committed(&mut self, path: &Path) {
        let was = self.health.update(|h| {
            let was = h.failing_since_ms.take();
            if h.replaced.is_none() {
                h.last_error = None;
            }
            was
        });
        if let Some(since) = was {
            tracing::info!(path = %path.display(), failing_since_ms = since, "commits succeed again");
        }
        self.logged = None;
        self.unlogged = 0;
    }
}

/// The records of what a compaction did: a `store_corruption` record for each row it set aside,
/// and a `data_pruned` record if it pruned anything (what went, up to which evidence record
/// with its hash — the explanation `evidence verify` accepts for the gap — and the limits that
/// made it go).
pub fn compaction_drafts(
    stats: &CompactStats,
    limits: Limits,
    now_ms: i64,
) -> Vec<crate::evidence::Draft> {
    let mut drafts: Vec<crate::evidence::Draft> = stats
        .corruptions
        .iter()
        .map(|c| crate::evidence::Draft::new(now_ms, "store_corruption", "", &c.evidence_body()))
        .collect();
    if stats.pruned_blocks > 0 || stats.pruned_evidence > 0 {
        let (through_seq, through_hash) = stats
            .pruned_evidence_through
            .clone()
            .map_or((None, None), |(seq, hash)| (Some(seq), Some(hash)));
        let body = serde_json::json!({
            "raw_reading_blocks": stats.pruned_blocks,
            "evidence_records": stats.pruned_evidence,
            "evidence_pruned_through_seq": through_seq,
            "evidence_pruned_through_hash": through_hash,
            "raw_retention_days": limits.raw_retention.as_secs() / 86_400,
            "disk_budget_bytes": limits.disk_budget_bytes,
            "evidence_retention_days": limits.evidence_retention.as_secs() / 86_400,
        });
        let mut body = body;
        if stats.for_space {
            body["reason"] = "disk_space".into();
            body["disk_reserve_bytes"] = limits.disk_reserve_bytes.into();
        }
        drafts.push(crate::evidence::Draft::new(
            now_ms,
            "data_pruned",
            "",
            &body,
        ));
    }
    drafts
}

/// Settles a finished commit: answers its flushes, puts a failed batch back into `pending`, and
/// queues the records of anything compaction pruned or set aside. Returns whether the batch
/// failed.
fn finish_commit(
    path: &Path,
    pending: &mut Pending,
    mut batch: Pending,
    committed: Committed,
    compaction: &mut Compaction,
    report: &mut Report,
) -> bool {
    let flushes = std::mem::take(&mut batch.flushes);
    if let Err(err) = committed.batch {
        let buffered = batch.readings.len() + pending.readings.len();
        let what = match err {
            StoreError::Replaced { .. } => "the database file was deleted or replaced; nothing more is written (readings kept in memory until the buffer is full) — restart the agent",
            _ => "commit failed; readings kept in memory and retried",
        };
        report.failed(path, &err, what, buffered, true);
        for ack in flushes {
            let _ = ack.send(Err(err.to_string()));
        }
        pending.restore(batch);
        return true;
    }
    report.committed(path);
    for ack in flushes {
        let _ = ack.send(Ok(()));
    }
    compaction.uncompacted += batch.readings.len();
    match committed.compaction {
        Some(Ok(stats)) => {
            tracing::debug!(?stats, "compacted readings");
            *compaction = Compaction::new();
            for c in &stats.corruptions {
                tracing::error!(path = %path.display(), table = c.table, row = c.row, first_ms = c.first_ms, last_ms = c.last_ms, error = %c.error, "a stored row does not decode; it was set aside into the quarantine table (bytes kept) and sealed as a store_corruption record");
            }
            report
                .health
                .update(|h| h.corrupt_rows += stats.corruptions.len() as u64);
            if stats.pruned_blocks > 0 || stats.pruned_evidence > 0 {
                tracing::info!(
                    blocks = stats.pruned_blocks,
                    evidence = stats.pruned_evidence,
                    "pruned stored data (sealed as a data_pruned record)"
                );
            }
        }
        Some(Err(err)) => {
            report.failed(path, &err, "compaction failed; the committed readings are safe, compaction is tried again at the next commit", 0, false);
        }
        None => {}
    }
    false
}

#[cfg(test)]
mod tests;
