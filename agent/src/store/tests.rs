use std::time::Duration;

use super::*;
use crate::poll::reading::{Fault, PointId};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn limits() -> Limits {
    Limits {
        raw_retention: Duration::from_secs(90 * 86_400),
        disk_budget_bytes: 1 << 30,
        evidence_retention: Duration::from_secs(1095 * 86_400),
    }
}

fn reading(point: u32, at_ms: i64, outcome: Outcome) -> Reading {
    Reading::new(at_ms, PointId(point), outcome, (None, Some(100.0)))
}

#[test]
fn readings_survive_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let mut store = Store::open(&path).unwrap();
    let ids = store
        .register_points(&[
            ("a/level".into(), Some("mm".into())),
            ("a/lid".into(), None),
        ])
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..120 {
        let at = T0 + i * 1000 + (i % 7);
        batch.push((ids[0], reading(0, at, Outcome::Value(800.0 - i as f64))));
        let lid = if i == 50 {
            Outcome::Fault(Fault::Timeout)
        } else if i == 51 {
            Outcome::Exception(2)
        } else {
            Outcome::Value((i % 2) as f64)
        };
        batch.push((ids[1], reading(1, at, lid)));
    }
    batch.push((ids[0], reading(0, T0 + 200_000, Outcome::Value(150.0)))); // above range: T
    store.append_readings(&batch[..100]).unwrap();
    let stats = store.compact(T0 + 300_000, limits()).unwrap();
    assert_eq!(stats.readings, 100);
    store.append_readings(&batch[100..]).unwrap();
    drop(store);

    let store = Store::open_read_only(&path).unwrap();
    assert_eq!(store.reading_count().unwrap(), batch.len() as u64);
    let level = store.readings("a/level", T0, T0 + 1_000_000).unwrap();
    assert_eq!(level.len(), 121);
    assert_eq!(level[10].at_ms, T0 + 10_000 + 3);
    assert_eq!(level[10].outcome, Outcome::Value(790.0));
    assert_eq!(level[120].flag, Flag::T);
    let lid = store.readings("a/lid", T0 + 50_000, T0 + 51_999).unwrap();
    assert_eq!(
        lid.iter().map(|s| s.outcome).collect::<Vec<_>>(),
        vec![Outcome::Fault(Fault::Timeout), Outcome::Exception(2)]
    );
    assert_eq!(lid[0].flag, Flag::B);
    assert_eq!(lid[1].flag, Flag::D);

    // Reopening for writing keeps point ids.
    drop(store);
    let mut store = Store::open(&path).unwrap();
    let again = store
        .register_points(&[
            ("a/lid".into(), None),
            ("a/level".into(), Some("mm".into())),
        ])
        .unwrap();
    assert_eq!(again, vec![ids[1], ids[0]]);
}

#[test]
fn retention_prunes_old_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    store
        .append_readings(&[(ids[0], reading(0, T0, Outcome::Value(1.0)))])
        .unwrap();
    store.compact(T0, limits()).unwrap();
    let later = T0 + 91 * 86_400_000;
    store
        .append_readings(&[(ids[0], reading(0, later, Outcome::Value(2.0)))])
        .unwrap();
    let stats = store.compact(later, limits()).unwrap();
    assert_eq!(stats.pruned_chunks, 1);
    assert_eq!(store.reading_count().unwrap(), 1);
}

#[test]
fn disk_budget_prunes_oldest_raw_readings_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    // Noisy values compress poorly: about 9 bytes a reading.
    for minute in 0..40i64 {
        let batch: Vec<(i64, Reading)> = (0..2000)
            .map(|i| {
                (
                    ids[0],
                    reading(0, T0 + minute * 60_000 + i, Outcome::Value(fastrand::f64())),
                )
            })
            .collect();
        store.append_readings(&batch).unwrap();
        store
            .compact(
                T0 + minute * 60_000,
                Limits {
                    disk_budget_bytes: 256 * 1024,
                    ..limits()
                },
            )
            .unwrap();
    }
    assert!(store.used_bytes().unwrap() <= 256 * 1024);
    let kept = store.readings("a/x", T0, T0 + 40 * 60_000).unwrap();
    assert!(!kept.is_empty());
    // What is left is the newest.
    assert_eq!(kept.last().unwrap().at_ms, T0 + 39 * 60_000 + 1999);
    assert!(kept[0].at_ms > T0 + 60_000, "oldest kept {}", kept[0].at_ms);
}

#[test]
fn a_foreign_database_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE invoices(id INTEGER)")
        .unwrap();
    drop(conn);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotOurs { .. }), "{err}");
    assert!(err.to_string().contains("other.db"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5Au8; 8192]).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(err.to_string().contains("garbage.db"), "{err}");
}

#[test]
fn an_unwritable_place_is_a_clear_error() {
    let err = Store::open(std::path::Path::new("/proc/sealwatch/site.db")).unwrap_err();
    assert!(err.to_string().contains("/proc/sealwatch/site.db"), "{err}");
}

#[tokio::test]
async fn the_writer_commits_on_flush_and_on_close() {
    // Recent times: closing compacts, and compaction applies the retention window.
    let t0 = crate::clock::now_ms() - 60_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let mut store = Store::open(&path).unwrap();
    let ids = store
        .register_points(&[("a/x".into(), None), ("a/y".into(), None)])
        .unwrap();
    let (handle, task) = spawn_writer(store, ids, Duration::from_secs(3600), limits());
    handle
        .send(vec![
            reading(0, t0, Outcome::Value(1.0)),
            reading(1, t0, Outcome::Value(2.0)),
        ])
        .await
        .unwrap();
    handle.flush().await.unwrap();
    assert_eq!(
        Store::open_read_only(&path)
            .unwrap()
            .reading_count()
            .unwrap(),
        2
    );
    handle
        .send(vec![reading(1, t0 + 1000, Outcome::Value(3.0))])
        .await
        .unwrap();
    drop(handle);
    let store = task.await.unwrap();
    assert_eq!(store.reading_count().unwrap(), 3);
    assert_eq!(store.readings("a/y", t0, t0 + 1000).unwrap().len(), 2);
}

#[test]
fn acknowledged_evidence_past_its_retention_is_pruned_and_the_rest_still_verifies() {
    use crate::evidence::{verify, Draft, Head};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    store.enable_evidence("s", key.clone()).unwrap();
    let drafts: Vec<Draft> = (0..10)
        .map(|i| {
            Draft::new(
                T0 + i * 86_400_000,
                "seal_state",
                "F1/B1",
                &serde_json::json!({ "i": i }),
            )
        })
        .collect();
    store.append(&[], &[], &drafts).unwrap();
    let now = T0 + 10 * 86_400_000;
    let short = Limits {
        evidence_retention: Duration::from_secs(5 * 86_400),
        ..limits()
    };
    // Nothing acknowledged yet: nothing goes.
    assert_eq!(store.compact(now, short).unwrap().pruned_evidence, 0);
    store.set_uplink_cursor("audit", 3, now).unwrap();
    // Older than 5 days (records 1–5) and acknowledged (1–3): records 1–3 go.
    assert_eq!(store.compact(now, short).unwrap().pruned_evidence, 3);
    let kept = store.evidence_range(0, 100).unwrap();
    assert_eq!(kept.first().map(|r| r.seq), Some(4));
    let start = verify::head_before(&kept[0]).unwrap();
    let head = verify::check_chain("s", &key.verifying_key(), start, &kept).unwrap();
    assert_eq!(head, store.evidence_head().unwrap());
    assert_ne!(head, Head::EMPTY);
}
