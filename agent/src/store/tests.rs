use std::time::Duration;

use super::*;
use crate::model::{Fault, Flag, Outcome, PointId};
use sealwatch_firmware::modbus::ExceptionCode;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn limits() -> Limits {
    Limits {
        raw_retention: Duration::from_secs(90 * 86_400),
        disk_budget_bytes: 1 << 30,
        evidence_retention: Duration::from_secs(1095 * 86_400),
        compact_every: crate::store::COMPACT_EVERY,
        disk_reserve_bytes: 0,
    }
}

fn reading(point: u32, at_ms: i64, outcome: Outcome) -> Reading {
    Reading::new(at_ms, PointId(point), outcome, (None, Some(100.0)))
}

/// 5000 readings of point 0 from `from_ms`, one a millisecond, that do not compress.
fn noisy(from_ms: i64) -> Vec<Reading> {
    (from_ms..from_ms + 5000)
        .map(|t| reading(0, t, Outcome::Value(fastrand::f64())))
        .collect()
}

/// A database in `dir` with the point `a/x` (its ids), on a disk that is full: the file may
/// not grow.
fn store_on_a_full_disk(dir: &std::path::Path) -> (Store, Vec<i64>) {
    let mut store = Store::open(&dir.join("site.db")).unwrap();
    store
        .enable_evidence("s", ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
        .unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    let_the_file_grow_by(&store, 0);
    (store, ids)
}

/// Lets the file grow by at most `pages` pages from its size now (0: a full disk).
fn let_the_file_grow_by(store: &Store, pages: i64) {
    let now: i64 = store
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store
        .conn
        .pragma_update(None, "max_page_count", now + pages)
        .unwrap();
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
            Outcome::Exception(ExceptionCode::IllegalDataAddress)
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
        vec![
            Outcome::Fault(Fault::Timeout),
            Outcome::Exception(ExceptionCode::IllegalDataAddress)
        ]
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
fn retention_prunes_old_blocks() {
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
    assert_eq!(stats.pruned_blocks, 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_during_a_slow_commit_holds_the_senders_back_and_drops_nothing() {
    let t0 = crate::clock::now_ms() - 60_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let mut store = Store::open(&path).unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    // Another writer holds the database: the next commit waits for it (up to the busy timeout).
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let max_buffered = 100;
    let (handle, task) = spawn_writer_buffering(
        store,
        ids,
        Duration::from_secs(3600),
        limits(),
        max_buffered,
    );
    // One reading and a flush start the commit that now waits.
    handle
        .send(vec![reading(0, t0, Outcome::Value(0.0))])
        .await
        .unwrap();
    let flushing = tokio::spawn({
        let handle = handle.clone();
        async move { handle.flush().await }
    });
    // Far more readings than the buffer holds arrive while that commit waits.
    let sent = 3000;
    let sender = tokio::spawn({
        let handle = handle.clone();
        async move {
            for i in 1..=sent {
                handle
                    .send(vec![reading(0, t0 + i, Outcome::Value(i as f64))])
                    .await
                    .unwrap();
            }
        }
    });
    // Back-pressure: the writer stops taking readings, the channel fills and the sender waits.
    // (Without it, the sender finishes and the buffer drops the oldest readings.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while handle.tx.capacity() > 0 && !sender.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel never filled"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        !sender.is_finished(),
        "the sender was never held back: the writer took every reading while its commit waited"
    );
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    flushing.await.unwrap().unwrap();
    sender.await.unwrap();
    drop(handle);
    let store = task.await.unwrap();
    assert_eq!(store.reading_count().unwrap(), sent as u64 + 1);
}

#[tokio::test]
async fn a_full_disk_is_retried_once_an_interval_however_often_a_commit_is_asked_for() {
    let t0 = crate::clock::now_ms() - 60_000;
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = store_on_a_full_disk(dir.path());
    let interval = Duration::from_millis(600);
    let (handle, _task) = spawn_writer(store, ids, interval, limits());
    handle.send(noisy(t0)).await.unwrap();
    // Evidence too: without raw readings to prune, the readings are set aside, but the
    // evidence must be stored, and cannot be.
    handle
        .send_evidence(vec![crate::evidence::Draft::new(
            t0,
            "test",
            "",
            &serde_json::json!({ "pad": "x".repeat(20_000) }),
        )])
        .await
        .unwrap();
    let first = handle.flush().await.unwrap_err();
    assert!(first.to_string().contains("full"), "{first}");
    // Asking again at once (a flush, evidence, a verdict) does not hammer the broken disk.
    let asked = std::time::Instant::now();
    let second = handle.flush().await.unwrap_err();
    assert!(second.to_string().contains("full"), "{second}");
    assert!(
        asked.elapsed() >= interval / 2,
        "retried after {:?}, before the interval ({interval:?})",
        asked.elapsed()
    );
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
    let stats = store.compact(now, short).unwrap();
    assert_eq!(stats.pruned_evidence, 3);
    let kept = store.evidence_range(0, 100).unwrap();
    assert_eq!(
        stats.pruned_evidence_through,
        Some((3, kept[0].prev_hash.clone())),
        "names the last record deleted, with the hash the next one links to"
    );
    assert_eq!(kept.first().map(|r| r.seq), Some(4));
    let start = verify::head_before(&kept[0]).unwrap();
    let head = verify::check_chain("s", &key.verifying_key(), start, &kept).unwrap();
    assert_eq!(head, store.evidence_head().unwrap());
    assert_ne!(head, Head::EMPTY);
    // The compaction sealed the pruning record that names the gap, in its own transaction.
    use crate::ledger::{check_database, DbCheck};
    let pruning = store.last_evidence_of("data_pruned").unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_str(&pruning.body).unwrap();
    assert_eq!(body["evidence_pruned_through_seq"], 3);
    assert_eq!(
        body["evidence_pruned_through_hash"],
        kept[0].prev_hash.as_str()
    );
    match check_database(&store, &key.verifying_key(), Some("s")).unwrap() {
        DbCheck::Intact {
            records,
            pruned_through,
            ..
        } => assert_eq!((records, pruned_through), (8, Some(3))),
        other => panic!("{other:?}"),
    }
    // The same gap made by hand (no pruning record of the chain names it) is a deletion.
    let mut other = Store::open(&dir.path().join("other.db")).unwrap();
    other.enable_evidence("s", key.clone()).unwrap();
    other.append(&[], &[], &drafts).unwrap();
    other
        .conn
        .execute("DELETE FROM evidence WHERE seq <= 3", [])
        .unwrap();
    assert!(matches!(
        check_database(&other, &key.verifying_key(), Some("s")).unwrap(),
        DbCheck::Broken(why) if why.contains("records 1–3 are missing")
    ));
}

fn frame_rows(store: &Store) -> i64 {
    store
        .conn
        .query_row("SELECT count(*) FROM reading_frames", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_commit_is_one_frame_and_compaction_splits_frames_into_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let keys: Vec<(String, Option<String>)> = (0..3).map(|p| (format!("a/{p}"), None)).collect();
    let ids = store.register_points(&keys).unwrap();
    let mut expected: Vec<Vec<Outcome>> = vec![Vec::new(); 3];
    for commit in 0..4i64 {
        let mut batch = Vec::new();
        for i in 0..20i64 {
            for (p, id) in ids.iter().enumerate() {
                let outcome = Outcome::Value((commit * 100 + i + p as i64) as f64);
                expected[p].push(outcome);
                batch.push((
                    *id,
                    reading(p as u32, T0 + (commit * 20 + i) * 1000, outcome),
                ));
            }
        }
        store.append_readings(&batch).unwrap();
    }
    // One row a commit, whatever the number of points and readings.
    assert_eq!(frame_rows(&store), 4);
    assert_eq!(store.reading_count().unwrap(), 240);
    // Readable before compaction…
    let before = store.readings("a/1", T0, T0 + 100_000).unwrap();
    assert_eq!(
        before.iter().map(|s| s.outcome).collect::<Vec<_>>(),
        expected[1]
    );
    // …and after: one block for the three points, no frame left.
    let stats = store.compact(T0 + 100_000, limits()).unwrap();
    assert_eq!((stats.blocks, stats.readings), (1, 240));
    assert_eq!(frame_rows(&store), 0);
    for (p, want) in expected.iter().enumerate() {
        let got = store.readings(&format!("a/{p}"), T0, T0 + 100_000).unwrap();
        assert_eq!(&got.iter().map(|s| s.outcome).collect::<Vec<_>>(), want);
        assert!(got.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    }
}

fn quarantined(store: &Store) -> Vec<(String, i64, Option<Vec<u8>>)> {
    let mut stmt = store
        .conn
        .prepare("SELECT source, count, body FROM quarantine ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_frame_that_does_not_decode_is_set_aside_reported_once_and_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let ids = store
        .register_points(&[("a/good".into(), None), ("a/bad".into(), None)])
        .unwrap();
    let later = T0 + 10_000;
    store
        .append_readings(&[(ids[0], reading(0, T0, Outcome::Value(1.0)))])
        .unwrap();
    store
        .append_readings(&[
            (ids[0], reading(0, later, Outcome::Value(1.0))),
            (ids[1], reading(1, later, Outcome::Value(2.0))),
        ])
        .unwrap();
    store
        .conn
        .execute(
            "UPDATE reading_frames SET body = x'FF' WHERE first_ms = ?1",
            [later],
        )
        .unwrap();
    let stats = store.compact(T0, limits()).unwrap();
    assert_eq!(stats.readings, 1);
    assert_eq!(stats.corruptions.len(), 1, "{stats:?}");
    assert_eq!(stats.corruptions[0].table, "reading_frames");
    assert_eq!(frame_rows(&store), 0, "set aside, so compaction goes on");
    assert_eq!(
        quarantined(&store),
        vec![("reading_frames".to_owned(), 2, Some(vec![0xFF]))],
        "bytes kept"
    );
    // Reported once: the next compaction finds nothing new.
    assert!(store.compact(T0, limits()).unwrap().corruptions.is_empty());
    assert_eq!(store.readings("a/good", T0, T0).unwrap().len(), 1);
    // Readers of its time range are told, for any point (a frame may hold any).
    for point in ["a/bad", "a/good"] {
        let err = store.readings(point, T0, later).unwrap_err();
        assert!(matches!(err, StoreError::Quarantined { .. }), "{err}");
        assert!(err.to_string().contains(point), "{err}");
    }
}

#[test]
fn a_row_with_an_absurd_count_is_set_aside_instead_of_exhausting_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    for i in 0..3 {
        store
            .append_readings(&[(ids[0], reading(0, T0 + i * 1000, Outcome::Value(1.0)))])
            .unwrap();
    }
    // The crash of the issue: a count that made `Vec::reserve` abort at every compaction.
    store
        .conn
        .execute(
            "UPDATE reading_frames SET count = 9223372036854775807 WHERE first_ms = ?1",
            [T0 + 1000],
        )
        .unwrap();
    let stats = store.compact(T0, limits()).unwrap();
    assert_eq!(stats.readings, 2);
    assert_eq!(stats.corruptions.len(), 1);
    assert!(
        stats.corruptions[0].error.contains("9223372036854775807"),
        "{:?}",
        stats.corruptions[0]
    );
}

#[test]
fn the_scrub_finds_a_damaged_block_sets_it_aside_and_tells_its_readers() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    let keys: Vec<(String, Option<String>)> = (0..40).map(|p| (format!("a/{p}"), None)).collect();
    let ids = store.register_points(&keys).unwrap();
    let batch: Vec<(i64, Reading)> = ids
        .iter()
        .enumerate()
        .map(|(p, id)| (*id, reading(p as u32, T0, Outcome::Value(p as f64))))
        .collect();
    store.append_readings(&batch).unwrap();
    assert!(store.compact(T0, limits()).unwrap().corruptions.is_empty());
    // Two blocks (points 1–31 and 32–40); damage the second one's count.
    store
        .conn
        .execute(
            "UPDATE reading_blocks SET count = count + 1 WHERE group_id = 1",
            [],
        )
        .unwrap();
    let stats = store.compact(T0, limits()).unwrap();
    assert_eq!(stats.corruptions.len(), 1, "{stats:?}");
    assert_eq!(stats.corruptions[0].group, Some(1));
    assert_eq!(
        store.readings("a/1", T0, T0).unwrap().len(),
        1,
        "other blocks read on"
    );
    let err = store.readings("a/39", T0, T0).unwrap_err();
    assert!(matches!(err, StoreError::Quarantined { .. }), "{err}");
}

#[test]
fn a_database_deleted_or_replaced_under_the_writer_takes_no_more_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let mut store = Store::open(&path).unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    let one = |t: i64| [(ids[0], reading(0, t, Outcome::Value(1.0)))];
    store.append_readings(&one(T0)).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = store.append_readings(&one(T0 + 1)).unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
    assert!(err.to_string().contains("deleted"), "{err}");
    // Another file under the name: still not the one opened.
    Store::open(&path).unwrap();
    let err = store.append_readings(&one(T0 + 2)).unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
    let err = store.compact(T0, limits()).unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
}

#[test]
fn a_database_overwritten_in_place_is_noticed_at_compaction() {
    use crate::evidence::Draft;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let mut store = Store::open(&path).unwrap();
    store
        .enable_evidence("s", ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
        .unwrap();
    store
        .append(
            &[],
            &[],
            &[Draft::new(T0, "test", "", &serde_json::json!({}))],
        )
        .unwrap();
    // Another connection changes the chain under the writer (as a copy written over it would).
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute("DELETE FROM evidence", []).unwrap();
    // The next commit that would seal notices it (it would otherwise continue a chain the file
    // no longer holds), and so does the next compaction.
    let err = store
        .append(
            &[],
            &[],
            &[Draft::new(T0 + 1, "test", "", &serde_json::json!({}))],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
    assert!(err.to_string().contains("overwritten"), "{err}");
    let err = store.compact(T0, limits()).unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
}

#[test]
fn a_version_3_database_is_converted_to_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    // A version-3 file: one chunk of two readings for point 1, and one row a reading for point 2.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for m in &schema::MIGRATIONS[..3] {
        conn.execute_batch(m.sql).unwrap();
    }
    let chunk = chunk::encode(&[
        Sample {
            at_ms: T0,
            outcome: Outcome::Value(1.5),
            flag: Flag::N,
        },
        Sample {
            at_ms: T0 + 1000,
            outcome: Outcome::Value(2.5),
            flag: Flag::T,
        },
    ]);
    conn.execute(
        "INSERT INTO reading_chunks(point_id, first_ms, last_ms, count, body) VALUES (1, ?1, ?2, 2, ?3)",
        rusqlite::params![T0, T0 + 1000, chunk],
    )
    .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA application_id = {app}; PRAGMA user_version = 3;
         INSERT INTO points(id, key) VALUES (1, 'a/x'), (2, 'a/y');
         INSERT INTO readings_recent(point_id, at_ms, value, outcome, flag) VALUES
           (2, {T0}, 5.5, 0, 0),
           (2, {t1}, NULL, 258, 4),
           (2, {t2}, NULL, 513, 1);",
        app = schema::APPLICATION_ID,
        t1 = T0 + 1000,
        t2 = T0 + 2000,
    ))
    .unwrap();
    drop(conn);

    // Read without converting (an archived copy), its evidence and outputs read as they are;
    // its readings are refused with what to do, not with a missing table.
    let unconverted = Store::open_read_only(&path).unwrap();
    assert_eq!(unconverted.evidence_head().unwrap().seq, 0);
    assert!(unconverted
        .outputs(i64::MIN, i64::MAX, None)
        .unwrap()
        .is_empty());
    let err = unconverted.readings("a/x", T0, T0 + 2000).unwrap_err();
    assert!(
        matches!(err, StoreError::NotUpgraded { found: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("site.db") && err.to_string().contains("converts the file"),
        "{err}"
    );
    assert!(matches!(
        unconverted.reading_count(),
        Err(StoreError::NotUpgraded { .. })
    ));
    drop(unconverted);

    let store = Store::open(&path).unwrap();
    let x = store.readings("a/x", T0, T0 + 2000).unwrap();
    assert_eq!(
        x.iter()
            .map(|s| (s.at_ms, s.outcome, s.flag))
            .collect::<Vec<_>>(),
        vec![
            (T0, Outcome::Value(1.5), Flag::N),
            (T0 + 1000, Outcome::Value(2.5), Flag::T),
        ]
    );
    let y = store.readings("a/y", T0, T0 + 2000).unwrap();
    assert_eq!(
        y.iter().map(|s| (s.at_ms, s.outcome)).collect::<Vec<_>>(),
        vec![
            (T0, Outcome::Value(5.5)),
            (
                T0 + 1000,
                Outcome::Exception(ExceptionCode::IllegalDataAddress)
            ),
            (T0 + 2000, Outcome::Fault(Fault::Timeout)),
        ]
    );
    let old_tables: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('readings_recent', 'reading_chunks')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_tables, 0);
}

#[test]
fn a_version_3_chunk_that_does_not_decode_stops_the_upgrade_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    for m in &schema::MIGRATIONS[..3] {
        conn.execute_batch(m.sql).unwrap();
    }
    conn.execute_batch(&format!(
        "PRAGMA application_id = {app}; PRAGMA user_version = 3;
         INSERT INTO points(id, key) VALUES (1, 'a/x');
         INSERT INTO reading_chunks(point_id, first_ms, last_ms, count, body) VALUES (1, {T0}, {T0}, 1, x'FF');",
        app = schema::APPLICATION_ID,
    ))
    .unwrap();
    drop(conn);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("a/x") && err.to_string().contains("site.db"),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
}

#[test]
fn a_full_disk_keeps_the_batch_for_the_next_commit_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.db");
    let (mut store, ids) = store_on_a_full_disk(dir.path());
    let mut report = Report::new(store.health().clone());
    let mut pending = Pending::default();
    pending.readings.extend(noisy(T0));
    pending.drafts.push(crate::evidence::Draft::new(
        T0,
        "test",
        "",
        &serde_json::json!({ "pad": "x".repeat(20_000) }),
    ));
    let (ack, mut told) = oneshot::channel();
    pending.flushes.push(ack);
    let batch = std::mem::take(&mut pending);
    let committed = commit_batch(&mut store, &batch, &ids, false, limits());
    // Meanwhile newer readings arrived.
    pending.readings.extend(noisy(T0 + 5000));
    assert!(finish_commit(
        &path,
        &mut pending,
        batch,
        committed,
        &mut Compaction::new(),
        &mut report,
    ));
    let message = told.try_recv().unwrap().unwrap_err();
    assert!(
        message.contains("site.db") && message.contains("full"),
        "{message}"
    );
    assert_eq!(store.reading_count().unwrap(), 0);
    // The failed batch is back, in front of the newer readings.
    assert_eq!(pending.readings.len(), 10_000);
    assert_eq!(pending.readings[0].at_ms, T0);
    let health = store.health().get();
    assert_eq!(health.commits_failed, 1);
    assert!(health.failing_since_ms.is_some() && !health.committing());

    // Space again: one commit stores everything once.
    store
        .conn
        .pragma_update(None, "max_page_count", 1 << 30)
        .unwrap();
    let batch = std::mem::take(&mut pending);
    let committed = commit_batch(&mut store, &batch, &ids, false, limits());
    assert!(!finish_commit(
        &path,
        &mut pending,
        batch,
        committed,
        &mut Compaction::new(),
        &mut report,
    ));
    assert!(pending.is_empty());
    assert!(store.health().get().committing(), "commits succeed again");
    let stored = store.readings("a/x", T0, T0 + 10_000).unwrap();
    assert_eq!(stored.len(), 10_000);
    assert!(stored.windows(2).all(|w| w[0].at_ms + 1 == w[1].at_ms));
}

#[test]
fn evidence_pruning_deletes_only_a_prefix_of_the_chain_whatever_the_record_times() {
    use crate::evidence::Draft;
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    store
        .enable_evidence("s", ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
        .unwrap();
    // Records 1 and 2 old, 3 recent, 4 and 5 old again (the clock was set back).
    let day = 86_400_000;
    let times = [T0, T0 + day, T0 + 20 * day, T0 + 2 * day, T0 + 3 * day];
    let drafts: Vec<Draft> = times
        .iter()
        .map(|t| Draft::new(*t, "test", "", &serde_json::json!({})))
        .collect();
    store.append(&[], &[], &drafts).unwrap();
    store.set_uplink_cursor("audit", 5, 0).unwrap();
    let short = Limits {
        evidence_retention: Duration::from_secs(5 * 86_400),
        ..limits()
    };
    let stats = store.compact(T0 + 21 * day, short).unwrap();
    assert_eq!(
        stats.pruned_evidence, 2,
        "records 1–2 only: 4 and 5 stay behind 3"
    );
    let kept: Vec<u64> = store
        .evidence_range(0, 10)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(kept, vec![3, 4, 5, 6], "6 is the data_pruned record");
}

/// The store against a model: random appends, compactions, reopenings (the process gone at a
/// commit boundary) and prunings, checked after every step against a map of what was
/// appended. Within the raw retention nothing is lost, changed or invented; older readings are
/// a subset of what was appended (pruning goes by whole blocks).
mod model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const POINTS: [&str; 3] = ["m/a", "m/b", "m/c"];
    const RETENTION_MS: i64 = 3_600_000;

    #[derive(Debug, Clone)]
    enum Op {
        /// Readings: (point, ms after the previous reading of that point, value or fault).
        Append(Vec<(usize, i64, Option<f64>)>),
        /// Compaction at the current time.
        Compact,
        /// The process ends and the database is opened again.
        Reopen,
        /// Time passes (ms), then a compaction prunes what is older than the retention.
        PruneAfter(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec(
                (0..POINTS.len(), 1i64..5_000, prop::option::weighted(0.9, -50.0f64..150.0)),
                1..80
            )
            .prop_map(Op::Append),
            2 => Just(Op::Compact),
            1 => Just(Op::Reopen),
            1 => (60_000i64..2 * RETENTION_MS).prop_map(Op::PruneAfter),
        ]
    }

    fn retention() -> Limits {
        Limits {
            raw_retention: Duration::from_millis(RETENTION_MS as u64),
            ..limits()
        }
    }

    /// What the store holds of `point`, in time order.
    fn stored(store: &Store, point: &str) -> Vec<(i64, Outcome, Flag)> {
        store
            .readings(point, i64::MIN / 2, i64::MAX / 2)
            .unwrap()
            .into_iter()
            .map(|s| (s.at_ms, s.outcome, s.flag))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn the_store_keeps_what_the_model_keeps(ops in prop::collection::vec(op(), 1..25)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("site.db");
            let mut store = Store::open(&path).unwrap();
            let keys: Vec<(String, Option<String>)> =
                POINTS.iter().map(|p| ((*p).to_owned(), None)).collect();
            let ids = store.register_points(&keys).unwrap();
            let mut model: Vec<BTreeMap<i64, (Outcome, Flag)>> = vec![BTreeMap::new(); POINTS.len()];
            let mut last = [T0; POINTS.len()];
            let mut now = T0;
            // Readings older than this may have been pruned.
            let mut cutoff = i64::MIN;
            for op in ops {
                match op {
                    Op::Append(batch) => {
                        let rows: Vec<(i64, Reading)> = batch
                            .iter()
                            .map(|&(p, dt, value)| {
                                last[p] += dt;
                                now = now.max(last[p]);
                                let outcome = value.map_or(Outcome::Fault(Fault::Timeout), Outcome::Value);
                                let r = reading(p as u32, last[p], outcome);
                                model[p].insert(r.at_ms, (r.outcome, r.flag));
                                (ids[p], r)
                            })
                            .collect();
                        store.append_readings(&rows).unwrap();
                    }
                    Op::Compact => {
                        // Compaction applies the retention too (counted from the newest
                        // reading, which is at most `now`).
                        store.compact(now, retention()).unwrap();
                        cutoff = cutoff.max(now - RETENTION_MS);
                    }
                    Op::Reopen => {
                        drop(store);
                        store = Store::open(&path).unwrap();
                        prop_assert_eq!(store.register_points(&keys).unwrap(), ids.clone());
                    }
                    Op::PruneAfter(ms) => {
                        now += ms;
                        for l in &mut last {
                            *l = (*l).max(now);
                        }
                        store.compact(now, retention()).unwrap();
                        cutoff = now - RETENTION_MS;
                    }
                }
                for (p, point) in POINTS.iter().enumerate() {
                    let got = stored(&store, point);
                    let kept: Vec<(i64, Outcome, Flag)> = model[p]
                        .range(cutoff..)
                        .map(|(t, (o, f))| (*t, *o, *f))
                        .collect();
                    let recent: Vec<(i64, Outcome, Flag)> =
                        got.iter().copied().filter(|r| r.0 >= cutoff).collect();
                    prop_assert_eq!(&recent, &kept, "{} within the retention", point);
                    for old in got.iter().filter(|r| r.0 < cutoff) {
                        prop_assert_eq!(
                            model[p].get(&old.0).copied(),
                            Some((old.1, old.2)),
                            "{} kept a reading it was never given", point
                        );
                    }
                }
            }
            drop(store);
            let store = Store::open_read_only(&path).unwrap();
            let total: usize = POINTS.iter().map(|p| stored(&store, p).len()).sum();
            prop_assert_eq!(store.reading_count().unwrap(), total as u64);
        }
    }
}

#[test]
fn a_full_file_system_prunes_the_oldest_raw_readings_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, ids) = store_on_a_full_disk(dir.path());
    store
        .conn
        .pragma_update(None, "max_page_count", 1 << 30)
        .unwrap();
    for minute in 0..20 {
        let batch: Vec<(i64, Reading)> = noisy(T0 + minute * 60_000)
            .into_iter()
            .map(|r| (ids[0], r))
            .collect();
        store.append_readings(&batch).unwrap();
        store.compact(T0 + minute * 60_000, limits()).unwrap();
    }
    let records_before = store.evidence_range(0, 1000).unwrap().len();
    // The disk is full now: no free pages inside the file, and the file may not grow.
    store.conn.execute_batch("VACUUM").unwrap();
    let_the_file_grow_by(&store, 0);
    let later = T0 + 3_600_000;
    let fresh = noisy(later);
    let rows = fresh.iter().map(|r| (ids[0], Sample::from(r)));
    let draft = crate::evidence::Draft::new(later, "test", "", &serde_json::json!({}));
    store
        .append_within_space(rows, &[], &[draft], later, limits())
        .expect("space made by pruning raw readings, then committed");
    assert_eq!(
        store.readings("a/x", later, later + 5000).unwrap().len(),
        5000
    );
    assert!(
        store.readings("a/x", T0, T0 + 60_000).unwrap().is_empty(),
        "the oldest raw readings went first"
    );
    let records = store.evidence_range(0, 1000).unwrap();
    assert_eq!(
        records.len(),
        records_before + 2,
        "the test record and one data_pruned record"
    );
    let pruned = store.last_evidence_of("data_pruned").unwrap().unwrap();
    assert!(
        pruned.body.contains("\"reason\":\"disk_space\""),
        "{}",
        pruned.body
    );
    assert!(store.health().get().pruned_for_space > 0);
    assert_eq!(store.health().get().readings_refused, 0);
}

#[test]
fn with_only_evidence_left_readings_are_refused_and_counted_while_evidence_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, ids) = store_on_a_full_disk(dir.path());
    let_the_file_grow_by(&store, 2);
    let rows = noisy(T0).into_iter().map(|r| (ids[0], Sample::from(&r)));
    let draft = crate::evidence::Draft::new(T0, "breach_started", "F1/B1", &serde_json::json!({}));
    store
        .append_within_space(rows, &[], &[draft], T0, limits())
        .expect("the evidence is stored without the readings");
    assert_eq!(store.reading_count().unwrap(), 0);
    assert!(store.last_evidence_of("breach_started").unwrap().is_some());
    let health = store.health().get();
    assert_eq!(health.readings_refused, 5000);
    assert_eq!(health.space_exhausted_since_ms, Some(T0));
    // Space again: readings are stored again.
    store
        .conn
        .pragma_update(None, "max_page_count", 1 << 30)
        .unwrap();
    let rows = noisy(T0 + 10_000)
        .into_iter()
        .map(|r| (ids[0], Sample::from(&r)));
    store
        .append_within_space(rows, &[], &[], T0 + 10_000, limits())
        .unwrap();
    assert_eq!(store.reading_count().unwrap(), 5000);
    assert_eq!(store.health().get().space_exhausted_since_ms, None);
}

#[test]
fn a_wall_clock_set_forward_by_years_prunes_no_reading_and_no_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("site.db")).unwrap();
    store
        .enable_evidence("s", ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
        .unwrap();
    let ids = store.register_points(&[("a/x".into(), None)]).unwrap();
    store.watch_clock(T0, std::time::Instant::now());
    // Acknowledged evidence, which a clock four years on would otherwise prune.
    let drafts: Vec<crate::evidence::Draft> = (0..3)
        .map(|i| crate::evidence::Draft::new(T0 + i, "test", "", &serde_json::json!({})))
        .collect();
    store.append(&[], &[], &drafts).unwrap();
    store.set_uplink_cursor("audit", 3, T0).unwrap();
    store
        .append_readings(&[(ids[0], reading(0, T0, Outcome::Value(1.0)))])
        .unwrap();
    store.compact(T0, limits()).unwrap();
    // The wall clock now says four years later, a moment after the monotonic clock started; a
    // reading is stamped with the wrong time too.
    let jumped = T0 + 4 * 365 * 86_400_000;
    store
        .append_readings(&[(ids[0], reading(0, jumped, Outcome::Value(2.0)))])
        .unwrap();
    let stats = store.compact(jumped, limits()).unwrap();
    assert_eq!((stats.pruned_blocks, stats.pruned_evidence), (0, 0));
    assert_eq!(store.reading_count().unwrap(), 2);
    assert_eq!(store.evidence_range(0, 100).unwrap().len(), 3);
    let why = store.health().get().retention_paused.expect("said why");
    assert!(why.contains("+1460.0 days"), "{why}");
}
