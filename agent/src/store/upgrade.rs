//! Conversions of stored data between schema versions (run inside their migration's
//! transaction, so an upgrade either happens whole or not at all).

use std::path::Path;

use rusqlite::{params, Transaction};
use sealwatch_firmware::modbus::ExceptionCode;

use super::chunk::{self, fault_from_code, Sample};
use super::{insert_blocks, sql_err, StoreError};
use crate::model::{Flag, Outcome};

/// Readings converted per batch of blocks (bounds the memory of an upgrade).
const BATCH: usize = 1_000_000;

/// Version 3 kept one `readings_recent` row per reading and one `reading_chunks` row per point
/// and minute; version 4 keeps blocks of 32 points. Converts both and drops the old tables. A
/// chunk that does not decode stops the upgrade with an error naming it (the file is left at
/// version 3, untouched).
pub(super) fn v3_readings_to_blocks(tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    let sql = |context| sql_err(path, context);
    let mut pending: Vec<(i64, Sample)> = Vec::new();
    let mut converted = 0usize;
    {
        let mut select = tx
            .prepare("SELECT point_id, first_ms, count, body FROM reading_chunks ORDER BY point_id, first_ms")
            .map_err(sql("converting version-3 chunks"))?;
        let mut rows = select
            .query([])
            .map_err(sql("converting version-3 chunks"))?;
        while let Some(row) = rows.next().map_err(sql("converting version-3 chunks"))? {
            let columns = (|| -> rusqlite::Result<(i64, i64, i64, Vec<u8>)> {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })();
            let (id, first_ms, count, body) =
                columns.map_err(sql("converting version-3 chunks"))?;
            // Flush only between points, so a point's samples stay in one block per batch.
            if pending.len() >= BATCH && pending.last().is_some_and(|(p, _)| *p != id) {
                converted += flush(tx, path, &mut pending)?;
            }
            let samples = chunk::decode(first_ms, usize::try_from(count).unwrap_or(0), &body)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    point: point_key(tx, id),
                    first_ms,
                    source,
                })?;
            pending.extend(samples.into_iter().map(|s| (id, s)));
        }
    }
    converted += flush(tx, path, &mut pending)?;
    {
        let mut select = tx
            .prepare(
                "SELECT point_id, at_ms, value, outcome, flag FROM readings_recent ORDER BY rowid",
            )
            .map_err(sql("converting version-3 rows"))?;
        let rows = select
            .query_map([], |r| {
                let value: Option<f64> = r.get(2)?;
                let code: i64 = r.get(3)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    Sample {
                        at_ms: r.get(1)?,
                        outcome: outcome_from_columns(value, code),
                        flag: Flag::from_code(r.get::<_, i64>(4)? as u8),
                    },
                ))
            })
            .map_err(sql("converting version-3 rows"))?;
        for row in rows {
            pending.push(row.map_err(sql("converting version-3 rows"))?);
        }
    }
    converted += flush(tx, path, &mut pending)?;
    tx.execute_batch("DROP TABLE readings_recent; DROP TABLE reading_chunks;")
        .map_err(sql("dropping version-3 tables"))?;
    if converted > 0 {
        tracing::info!(path = %path.display(), readings = converted, "converted version-3 readings into blocks");
    }
    Ok(())
}

/// Writes `pending` as blocks and empties it.
fn flush(
    tx: &Transaction<'_>,
    path: &Path,
    pending: &mut Vec<(i64, Sample)>,
) -> Result<usize, StoreError> {
    let n = pending.len();
    insert_blocks(tx, path, pending)?;
    pending.clear();
    Ok(n)
}

fn point_key(tx: &Transaction<'_>, id: i64) -> String {
    tx.query_row("SELECT key FROM points WHERE id = ?1", params![id], |r| {
        r.get(0)
    })
    .unwrap_or_else(|_| format!("#{id}"))
}

/// Outcome columns of a version-3 row: 0 value, 0x100 | code exception, 0x200 | code fault.
/// Anything else (never written) reads as exception 0.
fn outcome_from_columns(value: Option<f64>, code: i64) -> Outcome {
    let decoded = match code >> 8 {
        0 => value.map(Outcome::Value),
        1 => Some(Outcome::Exception(ExceptionCode::from_code(
            (code & 0xFF) as u8,
        ))),
        2 => fault_from_code((code & 0xFF) as u8).map(Outcome::Fault),
        _ => None,
    };
    decoded.unwrap_or(Outcome::Exception(ExceptionCode::from_code(0)))
}
