//! The audit system refuses tampered, reordered, foreign-key and out-of-step uploads, naming the
//! record, and takes duplicates calmly.

use super::*;
use ed25519_dalek::SigningKey;
use sealwatch_agent::evidence::{seal, Draft, Head};

fn chain(key: &SigningKey, n: usize) -> Vec<EvidenceRecord> {
    let drafts: Vec<Draft> = (0..n)
        .map(|i| {
            Draft::new(
                1_767_225_600_000 + i as i64 * 1000,
                "seal_state",
                "F1/B1",
                &serde_json::json!({ "i": i }),
            )
        })
        .collect();
    seal("site-a", key, Head::EMPTY, &drafts).unwrap().0
}

fn receiver(dir: &tempfile::TempDir, key: &SigningKey) -> Receiver {
    Receiver::open(
        &dir.path().join("audit.db"),
        "site-a",
        key.verifying_key(),
        None,
    )
    .unwrap()
}

fn batch(key: &SigningKey, records: &[EvidenceRecord]) -> UploadBatch {
    UploadBatch {
        request: "t".into(),
        site: "site-a".into(),
        public_key: hex::encode(key.verifying_key().to_bytes()),
        records: records.to_vec(),
    }
}

#[test]
fn accepts_in_order_and_ignores_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let records = chain(&key, 10);
    let mut r = receiver(&dir, &key);
    assert_eq!(r.receive(&batch(&key, &records[..6])).1.stored_through, 6);
    let (status, answer) = r.receive(&batch(&key, &records[3..]));
    assert_eq!(
        (status, answer.stored_through),
        (StatusCode::OK, 10),
        "overlap is harmless"
    );
    assert_eq!(r.records(), records);
}

#[test]
fn a_gap_answers_409_with_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let records = chain(&key, 10);
    let mut r = receiver(&dir, &key);
    r.receive(&batch(&key, &records[..4]));
    let (status, answer) = r.receive(&batch(&key, &records[6..]));
    assert_eq!((status, answer.stored_through), (StatusCode::CONFLICT, 4));
}

#[test]
fn tampering_is_refused_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let records = chain(&key, 6);
    let cases: Vec<(&str, Vec<EvidenceRecord>, u64)> = vec![
        (
            "changed byte",
            {
                let mut v = records.clone();
                v[3].body = v[3].body.replace("3", "4");
                v
            },
            4,
        ),
        (
            "deleted record",
            {
                let mut v = records.clone();
                v.remove(2);
                v
            },
            0,
        ),
        (
            "reordered pair",
            {
                let mut v = records.clone();
                v.swap(1, 2);
                v
            },
            0,
        ),
        (
            "another key",
            chain(&SigningKey::from_bytes(&[2; 32]), 6),
            1,
        ),
    ];
    for (what, tampered, seq) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::open(
            &dir.path().join("audit.db"),
            "site-a",
            key.verifying_key(),
            None,
        )
        .unwrap();
        let (status, answer) = r.receive(&batch(&key, &tampered));
        assert_ne!(status, StatusCode::OK, "{what}");
        if seq > 0 {
            assert_eq!(answer.seq, Some(seq), "{what}: {answer:?}");
        }
        assert!(answer.error.is_some(), "{what}");
    }
    drop(dir);
}

#[test]
fn a_record_differing_from_a_stored_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let records = chain(&key, 5);
    let mut r = receiver(&dir, &key);
    r.receive(&batch(&key, &records));
    let mut altered = records.clone();
    altered[2].hash = "00".repeat(32);
    let (status, answer) = r.receive(&batch(&key, &altered[..3]));
    assert_eq!(
        (status, answer.seq),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(3))
    );
}

#[test]
fn forgetting_lowers_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let records = chain(&key, 8);
    let mut r = receiver(&dir, &key);
    r.receive(&batch(&key, &records));
    assert_eq!(r.forget(3).unwrap().seq, 5);
    assert_eq!(r.receive(&batch(&key, &records[5..])).1.stored_through, 8);
}

#[test]
fn an_answer_names_only_records_of_the_batch_with_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let records = chain(&key, 10);
    let mut r = receiver(&dir, &key);
    r.receive(&batch(&key, &records));
    // A batch of records it already holds: it names the batch's last one, not its own head.
    let (status, answer) = r.receive(&batch(&key, &records[2..5]));
    assert_eq!((status, answer.stored_through), (StatusCode::OK, 5));
    assert_eq!(answer.head_hash.as_deref(), Some(records[4].hash.as_str()));
    assert_eq!(
        answer.request.as_deref(),
        Some("t"),
        "the request is echoed"
    );
}

#[test]
fn a_silent_second_chain_is_refused_as_a_fork_and_a_declared_one_is_taken() {
    use sealwatch_agent::evidence::anchor::NEW_CHAIN;
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let old = chain(&key, 6);
    let mut r = receiver(&dir, &key);
    r.receive(&batch(&key, &old));
    // The agent lost its database and started again at record 1 from the zero hash.
    let restart = seal(
        "site-a",
        &key,
        Head::EMPTY,
        &[Draft::new(9, "agent_started", "", &serde_json::json!({}))],
    )
    .unwrap()
    .0;
    let (status, answer) = r.receive(&batch(&key, &restart));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.error.unwrap().contains("fork"));
    assert_eq!(r.records(), old, "the chain held is untouched");
    // A declared new chain: record 1 says so, signed with the site key.
    let declared = seal(
        "site-a",
        &key,
        Head::EMPTY,
        &[
            Draft::new(
                10,
                NEW_CHAIN,
                "",
                &serde_json::json!({ "reason": "disk failed", "previous_chain": { "last_seq": 5, "last_hash": old[4].hash } }),
            ),
            Draft::new(11, "agent_started", "", &serde_json::json!({})),
        ],
    )
    .unwrap()
    .0;
    let (status, answer) = r.receive(&batch(&key, &declared));
    assert_eq!((status, answer.stored_through), (StatusCode::OK, 2));
    assert_eq!(r.records(), declared);
    assert_eq!(r.archived_chains(), 1);
    // Sending the declaration again is a duplicate, not a third chain.
    assert_eq!(r.receive(&batch(&key, &declared)).0, StatusCode::OK);
    assert_eq!(r.archived_chains(), 1);
    // A declaration signed with another key is refused.
    let forged = seal(
        "site-a",
        &SigningKey::from_bytes(&[2; 32]),
        Head::EMPTY,
        &[Draft::new(12, NEW_CHAIN, "", &serde_json::json!({}))],
    )
    .unwrap()
    .0;
    assert_ne!(r.receive(&batch(&key, &forged)).0, StatusCode::OK);
    assert_eq!(r.records(), declared);
    // A declaration naming a previous chain that is not the one held is refused.
    let stray = seal(
        "site-a",
        &key,
        Head::EMPTY,
        &[Draft::new(
            13,
            NEW_CHAIN,
            "",
            &serde_json::json!({ "previous_chain": { "last_seq": 1, "last_hash": "00".repeat(32) } }),
        )],
    )
    .unwrap()
    .0;
    assert_ne!(r.receive(&batch(&key, &stray)).0, StatusCode::OK);
    assert_eq!(r.records(), declared);
}
