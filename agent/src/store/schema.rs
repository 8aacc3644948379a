//! Schema and versioned migrations of the database.
//!
//! `PRAGMA user_version` is the schema version; each migration runs in its own transaction and
//! bumps it. `PRAGMA application_id` marks the file as ours ("SEAL").

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// "SEAL" in ASCII.
pub(crate) const APPLICATION_ID: i64 = 0x5345_414C;

/// Converts stored data to a new schema version, inside its migration's transaction.
type Conversion = fn(&rusqlite::Transaction<'_>, &Path) -> Result<(), StoreError>;

/// One schema step: SQL, then (if any) a conversion of the stored data, in one transaction.
pub(crate) struct Migration {
    pub(crate) sql: &'static str,
    convert: Option<Conversion>,
}

const fn sql_only(sql: &'static str) -> Migration {
    Migration { sql, convert: None }
}

/// Migrations, in order; migration `i` brings the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    // 1: points and raw readings.
    sql_only(
        "CREATE TABLE points (
         id   INTEGER PRIMARY KEY,
         key  TEXT NOT NULL UNIQUE,
         unit TEXT
     );
     CREATE TABLE readings_recent (
         point_id INTEGER NOT NULL,
         at_ms    INTEGER NOT NULL,
         value    REAL,
         outcome  INTEGER NOT NULL,
         flag     INTEGER NOT NULL
     );
     CREATE TABLE reading_chunks (
         point_id INTEGER NOT NULL,
         first_ms INTEGER NOT NULL,
         last_ms  INTEGER NOT NULL,
         count    INTEGER NOT NULL,
         body     BLOB NOT NULL
     );
     CREATE INDEX reading_chunks_by_point ON reading_chunks(point_id, first_ms);
     CREATE INDEX reading_chunks_by_age ON reading_chunks(first_ms);",
    ),
    // 2: what the rules engine concluded.
    sql_only(
        "CREATE TABLE rule_outputs (
         id      INTEGER PRIMARY KEY,
         at_ms   INTEGER NOT NULL,
         kind    TEXT NOT NULL,
         subject TEXT NOT NULL,
         body    TEXT NOT NULL
     );
     CREATE INDEX rule_outputs_by_time ON rule_outputs(at_ms);",
    ),
    // 3: the evidence chain and the uplinks' acknowledged positions.
    sql_only(
        "CREATE TABLE evidence (
         seq       INTEGER PRIMARY KEY,
         site      TEXT NOT NULL,
         at_ms     INTEGER NOT NULL,
         kind      TEXT NOT NULL,
         subject   TEXT NOT NULL,
         body      TEXT NOT NULL,
         prev_hash TEXT NOT NULL,
         hash      TEXT NOT NULL,
         signature TEXT NOT NULL
     );
     CREATE INDEX evidence_by_time ON evidence(at_ms);
     CREATE TABLE uplink_cursors (
         uplink     TEXT PRIMARY KEY,
         acked_seq  INTEGER NOT NULL,
         updated_ms INTEGER NOT NULL
     ) WITHOUT ROWID;",
    ),
    // 4: a commit stores all its readings as one frame (one row however many points);
    // compaction splits frames into blocks, one per group of 32 points. Version-3 rows and
    // per-point chunks are converted.
    Migration {
        sql: "CREATE TABLE reading_frames (
         id       INTEGER PRIMARY KEY,
         first_ms INTEGER NOT NULL,
         last_ms  INTEGER NOT NULL,
         count    INTEGER NOT NULL,
         body     BLOB NOT NULL
     );
     CREATE TABLE reading_blocks (
         group_id INTEGER NOT NULL,
         first_ms INTEGER NOT NULL,
         last_ms  INTEGER NOT NULL,
         count    INTEGER NOT NULL,
         body     BLOB NOT NULL
     );
     CREATE INDEX reading_blocks_by_group ON reading_blocks(group_id, first_ms);
     CREATE INDEX reading_blocks_by_age ON reading_blocks(last_ms);",
        convert: Some(super::upgrade::v3_readings_to_blocks),
    },
    // 5: rows that do not decode are set aside here, bytes and error kept, instead of being
    // reported at every compaction or stopping it.
    sql_only(
        "CREATE TABLE quarantine (
         id        INTEGER PRIMARY KEY,
         source    TEXT NOT NULL,
         source_id INTEGER NOT NULL,
         group_id  INTEGER,
         first_ms  INTEGER NOT NULL,
         last_ms   INTEGER NOT NULL,
         count     INTEGER NOT NULL,
         body      BLOB,
         error     TEXT NOT NULL,
         found_ms  INTEGER NOT NULL
     );
     CREATE INDEX quarantine_by_age ON quarantine(last_ms);",
    ),
    // 6: rule outputs found by kind (open windows at start, history answers).
    sql_only("CREATE INDEX rule_outputs_by_kind ON rule_outputs(kind, id);"),
];

/// Newest schema version.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn sql<'a>(path: &'a Path, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_owned(),
        context,
        source,
    }
}

/// The schema version that introduced the reading tables read today (frames and blocks).
pub(crate) const READINGS_LAYOUT_SINCE: i64 = 4;

/// The schema version that introduced the `quarantine` table.
pub(crate) const QUARANTINE_SINCE: i64 = 5;

/// The file's schema version.
fn version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql(path, "reading the schema version"))
}

/// Refuses files that are not sealwatch databases; returns the schema version of one that is
/// (0 for an empty file).
pub(crate) fn check_ours(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let not_ours = |why: String| StoreError::NotOurs {
        path: path.to_owned(),
        why,
    };
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| not_ours(format!("SQLite cannot read it: {e}")))?;
    if app_id == APPLICATION_ID {
        let version = version(conn, path)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        return Ok(version);
    }
    if app_id != 0 {
        return Err(not_ours(format!("application id 0x{app_id:08X}")));
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| not_ours(format!("SQLite cannot read it: {e}")))?;
    if tables > 0 {
        return Err(not_ours(format!(
            "it holds {tables} schema objects of another program"
        )));
    }
    version(conn, path)
}

/// Brings a database to [`SCHEMA_VERSION`] and sets the connection's pragmas.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql(path, "setting the busy timeout"))?;
    let version = check_ours(conn, path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql(path, "switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "database could not switch to WAL; readers may block the writer");
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(sql(path, "setting pragmas"))?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn
            .transaction()
            .map_err(sql(path, "migrating the schema"))?;
        tx.execute_batch(migration.sql)
            .map_err(sql(path, "migrating the schema"))?;
        if let Some(convert) = migration.convert {
            convert(&tx, path)?;
        }
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            i + 1
        ))
        .map_err(sql(path, "migrating the schema"))?;
        tx.commit().map_err(sql(path, "migrating the schema"))?;
        tracing::info!(path = %path.display(), version = i + 1, "database schema migrated");
    }
    Ok(())
}
