//! Store ingest (durable) and disk bytes per reading, for one hour of 1,000 points at 1 Hz from
//! the plant model, against naive one-row-per-reading rusqlite inserts.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;
use sealwatch_agent::model::PointTable;
use sealwatch_agent::model::{Outcome, PointId, Reading};
use sealwatch_agent::store::{Limits, Store};
use sealwatch_sim::plant::Plant;

use crate::site::seal_node_site;

pub(crate) struct StoreFigures {
    pub(crate) readings: usize,
    pub(crate) points: usize,
    pub(crate) ours_rate: f64,
    pub(crate) naive_rate: f64,
    pub(crate) ours_bytes: f64,
    pub(crate) naive_bytes: f64,
}

/// One second of readings for every point, from the plant model.
fn second(plant: &mut Plant, table: &PointTable, t0: i64, s: i64) -> Vec<Reading> {
    plant.advance_to(s as f64);
    table
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = &plant.devices[p.device].profile.points[p.index].name;
            let v = plant.value(p.device, name);
            // Requests go out a few ms apart and wander a little, as on a real bus.
            let at = t0 + s * 1000 + (p.device as i64 * 7) % 400 + (s * 13 + p.device as i64) % 5;
            Reading::new(at, PointId(i as u32), Outcome::Value(v), (None, None))
        })
        .collect()
}

fn used_bytes(path: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(path)?;
    let (pages, free, size): (i64, i64, i64) = conn.query_row(
        "SELECT (SELECT page_count FROM pragma_page_count), (SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(((pages - free) * size) as u64)
}

pub(crate) fn measure(seconds: i64) -> anyhow::Result<StoreFigures> {
    let dir = tempfile::tempdir()?;
    let per_node = sealwatch_firmware_points();
    let nodes = (1000 - 16) / per_node;
    let config = seal_node_site(dir.path(), 1, nodes, 4, 1000, &[])?;
    let table = config.point_table();
    let t0 = sealwatch_agent::clock::now_ms() - seconds * 1000;
    let limits = Limits {
        raw_retention: Duration::from_secs(90 * 86_400),
        disk_budget_bytes: 1 << 40,
        evidence_retention: Duration::from_secs(1095 * 86_400),
        compact_every: sealwatch_agent::store::COMPACT_EVERY,
        // As the agent runs by default: free space read before every commit.
        disk_reserve_bytes: 64 << 20,
    };

    // Ours: commits of 20 s of data (20,000 readings), compacted every minute of data, as the
    // writer does under load (through the same space-checking commit).
    let ours_path = dir.path().join("ours.db");
    let mut store = Store::open(&ours_path)?;
    let keys: Vec<(String, Option<String>)> = table
        .points
        .iter()
        .map(|p| (p.key.clone(), p.unit.clone()))
        .collect();
    let ids = store.register_points(&keys)?;
    let mut plant = Plant::from_config(&config);
    let mut batches: Vec<Vec<(i64, Reading)>> = Vec::new();
    let mut current = Vec::new();
    for s in 0..seconds {
        current.extend(
            second(&mut plant, &table, t0, s)
                .into_iter()
                .map(|r| (ids[r.point.0 as usize], r)),
        );
        if (s + 1) % 20 == 0 {
            batches.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    let total: usize = batches.iter().map(Vec::len).sum();
    let started = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        let at = t0 + (i as i64 + 1) * 20_000;
        store.append_within_space(
            batch
                .iter()
                .map(|(id, r)| (*id, sealwatch_agent::store::StoredReading::from(r))),
            &[],
            &[],
            at,
            limits,
        )?;
        if (i + 1) % 3 == 0 {
            store.compact(t0 + (i as i64 + 1) * 20_000, limits)?;
        }
    }
    store.compact(t0 + seconds * 1000, limits)?;
    let ours_rate = total as f64 / started.elapsed().as_secs_f64();
    drop(store);
    let ours_bytes = used_bytes(&ours_path)? as f64 / total as f64;

    // Naive: one row per reading, WAL, synchronous=FULL, each insert its own transaction.
    let naive_path = dir.path().join("naive.db");
    let conn = rusqlite::Connection::open(&naive_path)?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL; CREATE TABLE readings(point_id INTEGER, at_ms INTEGER, value REAL, flag INTEGER);")?;
    let all: Vec<&(i64, Reading)> = batches.iter().flatten().collect();
    let started = Instant::now();
    let mut n = 0usize;
    {
        let mut insert = conn.prepare("INSERT INTO readings VALUES (?1, ?2, ?3, ?4)")?;
        for (id, r) in &all {
            insert.execute(params![id, r.at_ms, r.value(), r.flag.code()])?;
            n += 1;
            if n >= 20_000 || started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
    }
    let naive_rate = n as f64 / started.elapsed().as_secs_f64();
    // The rest in large transactions, only to measure the size of a full hour of naive rows.
    conn.execute_batch("BEGIN")?;
    {
        let mut insert = conn.prepare("INSERT INTO readings VALUES (?1, ?2, ?3, ?4)")?;
        for (id, r) in all.iter().skip(n) {
            insert.execute(params![id, r.at_ms, r.value(), r.flag.code()])?;
        }
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")?;
    drop(conn);
    let naive_bytes = used_bytes(&naive_path)? as f64 / total as f64;
    Ok(StoreFigures {
        readings: total,
        points: table.points.len(),
        ours_rate,
        naive_rate,
        ours_bytes,
        naive_bytes,
    })
}

fn sealwatch_firmware_points() -> usize {
    sealwatch_agent::config::profile::Profile::seal_node()
        .points
        .len()
}
