//! The local database: the only writer of the SQLite file.
//!
//! # Contract
//!
//! - **One writer.** Only the writer task ([`spawn_writer`]) writes; readers (status, CLI, tests)
//!   open the file read-only and see committed data (WAL mode).
//! - **When a reading is durable.** Polled readings are buffered in memory and committed in one
//!   transaction at least every `commit_interval` (default 1 s) or every 20,000 readings, with
//!   `synchronous=FULL`: once committed it survives a crash or power cut. A crash loses at most the
//!   readings of the last interval, which were never acknowledged to anyone.
//! - **Compact raw readings.** Committed readings land in `readings_recent` (one row each); once a
//!   minute the writer moves them into per-point `reading_chunks` (see [`chunk`]) in one
//!   transaction, so a crash during compaction leaves either the rows or the chunk, never both or
//!   neither. Each chunk row carries the count and time range of its readings; a chunk that fails
//!   to decode is reported as corrupt, never silently skipped.
//! - **Size bound.** Raw readings are kept for `raw_retention` (default 90 days). When the file
//!   would exceed `disk_budget_bytes`, the oldest raw chunks are deleted first (and logged); the
//!   space is reused by later writes. Evidence (a later schema version) is never pruned for space.
//! - **When the disk is full or the file breaks.** A failed commit keeps the readings in memory and
//!   is retried every interval; the error names the file and the cause. If the buffer reaches
//!   [`MAX_BUFFERED`] readings, the oldest are dropped and counted (logged at ERROR: data loss).
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
mod schema;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::poll::reading::{Flag, Outcome, Reading};
use crate::rules::Output;
use chunk::{fault_code, fault_from_code, Sample};

/// Readings held in memory at most while commits fail.
pub const MAX_BUFFERED: usize = 2_000_000;

/// Readings that trigger a commit before the interval is up.
const COMMIT_BATCH: usize = 20_000;

/// Longest a rule output (a verdict) waits before its commit; outputs within it share one.
const VERDICT_DELAY: Duration = Duration::from_millis(20);

/// How often committed readings are compacted into chunks.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

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
    /// A stored chunk does not decode.
    #[error("database {path}: chunk of point {point} starting at {first_ms}: {source}")]
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

/// A reading read back from the store.
pub type StoredReading = Sample;

/// Outcome column encoding: 0 value, 0x100 | code exception, 0x200 | code fault.
fn outcome_column(outcome: Outcome) -> (Option<f64>, i64) {
    match outcome {
        Outcome::Value(v) => (Some(v), 0),
        Outcome::Exception(code) => (None, 0x100 | i64::from(code)),
        Outcome::Fault(f) => (None, 0x200 | i64::from(fault_code(f))),
    }
}

fn outcome_from_columns(value: Option<f64>, code: i64) -> Option<Outcome> {
    match code >> 8 {
        0 => value.map(Outcome::Value),
        1 => Some(Outcome::Exception((code & 0xFF) as u8)),
        2 => fault_from_code((code & 0xFF) as u8).map(Outcome::Fault),
        _ => None,
    }
}

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Readings moved into chunks.
    pub readings: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Chunks deleted for retention or the disk budget.
    pub pruned_chunks: usize,
    /// Evidence records deleted after their retention (acknowledged ones only).
    pub pruned_evidence: usize,
}

/// Limits applied by [`Store::compact`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Raw readings older than this are deleted.
    pub raw_retention: Duration,
    /// File size above which the oldest raw chunks are deleted.
    pub disk_budget_bytes: u64,
    /// Evidence older than this is deleted, but only once every uplink has acknowledged it.
    pub evidence_retention: Duration,
}

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    sealer: Option<evidence::Sealer>,
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
        schema::check_ours(&conn, path)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            sealer: None,
        })
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
        let Store { conn, path, sealer } = self;
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
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO readings_recent(point_id, at_ms, value, outcome, flag) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(sql("committing readings"))?;
            for (id, r) in readings {
                let (value, outcome) = outcome_column(r.outcome);
                insert
                    .execute(params![id, r.at_ms, value, outcome, r.flag.code()])
                    .map_err(sql("committing readings"))?;
            }
        }
        tx.commit().map_err(sql("committing readings"))?;
        if let (Some(sealer), Some(head)) = (sealer, new_head) {
            sealer.head = head;
        }
        Ok(())
    }

    /// Moves committed rows into chunks, then applies retention and the disk budget.
    pub fn compact(&mut self, now_ms: i64, limits: Limits) -> Result<CompactStats, StoreError> {
        let Store { conn, path, .. } = self;
        let sql = |context| sql_err(path, context);
        let mut stats = CompactStats::default();
        let tx = conn.transaction().map_err(sql("compacting readings"))?;
        let max_rowid: Option<i64> = tx
            .query_row("SELECT max(rowid) FROM readings_recent", [], |r| r.get(0))
            .map_err(sql("compacting readings"))?;
        if let Some(max_rowid) = max_rowid {
            let mut rows: Vec<(i64, Sample)> = Vec::new();
            {
                let mut select = tx
                    // In insertion order: no SQL sort (it dominated compaction); grouped and
                    // ordered in memory below.
                    .prepare("SELECT point_id, at_ms, value, outcome, flag FROM readings_recent WHERE rowid <= ?1")
                    .map_err(sql("compacting readings"))?;
                let mut cursor = select
                    .query(params![max_rowid])
                    .map_err(sql("compacting readings"))?;
                while let Some(row) = cursor.next().map_err(sql("compacting readings"))? {
                    let columns = (|| -> rusqlite::Result<(i64, i64, Option<f64>, i64, i64)> {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    })();
                    let (id, at_ms, value, code, flag) =
                        columns.map_err(sql("compacting readings"))?;
                    let outcome =
                        outcome_from_columns(value, code).unwrap_or(Outcome::Exception(0));
                    rows.push((
                        id,
                        Sample {
                            at_ms,
                            outcome,
                            flag: Flag::from_code(flag as u8),
                        },
                    ));
                }
            }
            // By point, then time; the sort is stable, so equal times keep their commit order.
            rows.sort_by_key(|(id, s)| (*id, s.at_ms));
            let mut insert = tx
                .prepare("INSERT INTO reading_chunks(point_id, first_ms, last_ms, count, body) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(sql("compacting readings"))?;
            let mut start = 0;
            while start < rows.len() {
                let id = rows[start].0;
                let end = rows[start..]
                    .iter()
                    .position(|(p, _)| *p != id)
                    .map_or(rows.len(), |n| start + n);
                let samples: Vec<Sample> = rows[start..end].iter().map(|(_, s)| *s).collect();
                let body = chunk::encode(&samples);
                insert
                    .execute(params![
                        id,
                        samples[0].at_ms,
                        samples[samples.len() - 1].at_ms,
                        samples.len() as i64,
                        body
                    ])
                    .map_err(sql("compacting readings"))?;
                stats.chunks += 1;
                stats.readings += samples.len();
                start = end;
            }
            drop(insert);
            tx.execute(
                "DELETE FROM readings_recent WHERE rowid <= ?1",
                params![max_rowid],
            )
            .map_err(sql("compacting readings"))?;
        }
        let cutoff = now_ms - limits.raw_retention.as_millis() as i64;
        stats.pruned_chunks += tx
            .execute(
                "DELETE FROM reading_chunks WHERE last_ms < ?1",
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
        stats.pruned_chunks += self.enforce_budget(limits.disk_budget_bytes)?;
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
                .execute("DELETE FROM reading_chunks WHERE rowid IN (SELECT rowid FROM reading_chunks ORDER BY first_ms LIMIT 1000)", [])
                .map_err(self.sql("pruning readings for the disk budget"))?;
            if deleted == 0 {
                tracing::error!(path = %self.path.display(), budget, "database is over its disk budget with no raw readings left to prune");
                break;
            }
            pruned += deleted;
        }
        if pruned > 0 {
            tracing::warn!(path = %self.path.display(), chunks = pruned, budget, "pruned the oldest raw readings to stay within the disk budget");
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
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT first_ms, count, body FROM reading_chunks WHERE point_id = ?1 AND last_ms >= ?2 AND first_ms <= ?3 ORDER BY first_ms")
            .map_err(self.sql("reading readings"))?;
        let chunks = stmt
            .query_map(params![id, from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(self.sql("reading readings"))?;
        for c in chunks {
            let (first_ms, count, body) = c.map_err(self.sql("reading readings"))?;
            let samples = chunk::decode(first_ms, usize::try_from(count).unwrap_or(0), &body)
                .map_err(|source| StoreError::Corrupt {
                    path: self.path.clone(),
                    point: point_key.to_owned(),
                    first_ms,
                    source,
                })?;
            out.extend(
                samples
                    .into_iter()
                    .filter(|s| (from_ms..=to_ms).contains(&s.at_ms)),
            );
        }
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, value, outcome, flag FROM readings_recent WHERE point_id = ?1 AND at_ms BETWEEN ?2 AND ?3")
            .map_err(self.sql("reading readings"))?;
        let recent = stmt
            .query_map(params![id, from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<f64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(self.sql("reading readings"))?;
        for row in recent {
            let (at_ms, value, code, flag) = row.map_err(self.sql("reading readings"))?;
            let outcome = outcome_from_columns(value, code).unwrap_or(Outcome::Exception(0));
            out.push(Sample {
                at_ms,
                outcome,
                flag: Flag::from_code(flag as u8),
            });
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

    /// Total readings stored (chunks and recent rows).
    pub fn reading_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT (SELECT coalesce(sum(count), 0) FROM reading_chunks) + (SELECT count(*) FROM readings_recent)", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.sql("counting readings"))
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
            Ok(Err(message)) => {
                tracing::error!(%message, "flush failed");
                Err(StoreError::WriterGone)
            }
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
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(writer_loop(
        store,
        point_ids.into(),
        commit_interval,
        limits,
        rx,
    ));
    (StoreHandle { tx }, task)
}

struct Pending {
    readings: VecDeque<Reading>,
    outputs: Vec<Output>,
    drafts: Vec<crate::evidence::Draft>,
    cursors: std::collections::BTreeMap<String, u64>,
    dropped: u64,
}

async fn writer_loop(
    mut store: Store,
    point_ids: std::sync::Arc<[i64]>,
    commit_interval: Duration,
    limits: Limits,
    mut rx: mpsc::Receiver<Command>,
) -> Store {
    let mut pending = Pending {
        readings: VecDeque::new(),
        outputs: Vec::new(),
        drafts: Vec::new(),
        cursors: std::collections::BTreeMap::new(),
        dropped: 0,
    };
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut last_compact = Instant::now();
    let mut waiting_flushes: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    loop {
        let sleep_until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let mut closed = false;
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::Readings(batch, outputs)) => {
                    pending.readings.extend(batch);
                    // Rule outputs are never dropped: they are few, and they are the verdicts.
                    pending.outputs.extend(outputs);
                    while pending.readings.len() > MAX_BUFFERED {
                        pending.readings.pop_front();
                        pending.dropped += 1;
                    }
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + commit_interval);
                    }
                    // Verdicts are committed (and so sealed as evidence) within
                    // VERDICT_DELAY, together with whatever else came meanwhile; plain readings
                    // wait for the interval or a full batch.
                    if !pending.outputs.is_empty() {
                        let soon = tokio::time::Instant::now() + VERDICT_DELAY;
                        deadline = Some(deadline.map_or(soon, |d| d.min(soon)));
                    }
                    if pending.readings.len() < COMMIT_BATCH {
                        continue;
                    }
                }
                Some(Command::Evidence(drafts)) => pending.drafts.extend(drafts),
                Some(Command::Cursor(uplink, seq)) => {
                    pending.cursors.insert(uplink, seq);
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + commit_interval);
                    }
                    continue;
                }
                Some(Command::Flush(ack)) => waiting_flushes.push(ack),
                None => closed = true,
            },
            () = tokio::time::sleep_until(sleep_until) => {}
        }
        if pending.dropped > 0 {
            tracing::error!(path = %store.path().display(), dropped = pending.dropped, "readings dropped: commits kept failing and the buffer is full");
            pending.dropped = 0;
        }
        let batch: Vec<(i64, Reading)> = pending
            .readings
            .iter()
            .filter_map(|r| point_ids.get(r.point.0 as usize).map(|id| (*id, *r)))
            .collect();
        let compact_now = last_compact.elapsed() >= COMPACT_EVERY || closed;
        let outputs = pending.outputs.clone();
        let drafts = pending.drafts.clone();
        let cursors = pending.cursors.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut outcome = if batch.is_empty() && outputs.is_empty() && drafts.is_empty() {
                Ok(())
            } else {
                store.append(&batch, &outputs, &drafts)
            };
            for (uplink, seq) in &cursors {
                if outcome.is_ok() {
                    outcome = store.set_uplink_cursor(uplink, *seq, crate::clock::now_ms());
                }
            }
            let mut pruned = None;
            if outcome.is_ok() && compact_now {
                outcome = store.compact(crate::clock::now_ms(), limits).map(|stats| {
                    tracing::debug!(?stats, "compacted readings");
                    if stats.pruned_chunks > 0 || stats.pruned_evidence > 0 {
                        pruned = Some(stats);
                    }
                });
            }
            (store, outcome.map(|()| pruned))
        })
        .await;
        let (returned, outcome) = match result {
            Ok(pair) => pair,
            Err(join) => {
                tracing::error!(error = %join, "store writer crashed");
                std::process::abort();
            }
        };
        store = returned;
        match outcome {
            Ok(pruned) => {
                pending.readings.clear();
                pending.outputs.clear();
                pending.drafts.clear();
                pending.cursors.clear();
                deadline = None;
                if let Some(stats) = pruned {
                    // Pruning is itself on the record, sealed in the next commit.
                    tracing::info!(
                        chunks = stats.pruned_chunks,
                        evidence = stats.pruned_evidence,
                        "pruned stored data"
                    );
                    let body = serde_json::json!({
                        "raw_reading_chunks": stats.pruned_chunks,
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
                    deadline = Some(tokio::time::Instant::now() + commit_interval);
                }
                if compact_now {
                    last_compact = Instant::now();
                }
                for ack in waiting_flushes.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, buffered = pending.readings.len(), "commit failed; readings kept in memory and retried");
                deadline = Some(tokio::time::Instant::now() + commit_interval);
                for ack in waiting_flushes.drain(..) {
                    let _ = ack.send(Err(err.to_string()));
                }
            }
        }
        if closed {
            return store;
        }
    }
}

#[cfg(test)]
mod tests;
