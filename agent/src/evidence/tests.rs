//! The canonical encoding's golden vector, and tamper detection.

use ed25519_dalek::SigningKey;

use super::verify::{check_chain, ChainError};
use super::*;
use crate::model::canonical_json;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn drafts(n: usize) -> Vec<Draft> {
    (0..n)
        .map(|i| {
            Draft::new(
                1_767_225_600_000 + i as i64 * 1000,
                "breach_started",
                "F1/B2",
                &serde_json::json!({ "signature": "level_below_seal", "level_mm": 612.5, "i": i }),
            )
        })
        .collect()
}

/// Golden vector: key seed 07×32, site `demo-01`, one record.
#[test]
fn golden_vector() {
    let draft = Draft::new(
        1_767_225_600_000,
        "breach_started",
        "F1/B2",
        &serde_json::json!({ "signature": "level_below_seal", "level_mm": 612.5, "at_ms": 1_767_225_600_000i64 }),
    );
    assert_eq!(
        draft.body,
        r#"{"at_ms":1767225600000,"level_mm":"612.500","signature":"level_below_seal"}"#
    );
    assert_eq!(
        String::from_utf8(canonical_bytes("demo-01", 1, &draft)).unwrap(),
        "sealwatch-evidence-v1\nsite=demo-01\nseq=1\nat_ms=1767225600000\nkind=breach_started\nsubject=F1/B2\nbody={\"at_ms\":1767225600000,\"level_mm\":\"612.500\",\"signature\":\"level_below_seal\"}\n"
    );
    let (records, head) = seal("demo-01", &key(), Head::EMPTY, &[draft]).unwrap();
    assert_eq!(records[0].prev_hash, "0".repeat(64));
    assert_eq!(records[0].hash, GOLDEN_HASH);
    assert_eq!(records[0].signature, GOLDEN_SIGNATURE);
    assert_eq!(hex::encode(head.hash), GOLDEN_HASH);
}

const GOLDEN_HASH: &str = "30cab26b632bf331045cee60419e5a46b54c768e8f7cbb7b83a4785363ad18cf";
const GOLDEN_SIGNATURE: &str = "b0e775c2884a279e11289fc1860f209b2038cc914867a5e575239158959399df318a888a1b610fbce2443ba2f1e2dffe610a738c673094fbc383afb05c758b0f";

#[test]
fn a_whole_chain_verifies() {
    let (records, head) = seal("s", &key(), Head::EMPTY, &drafts(20)).unwrap();
    assert_eq!(
        check_chain("s", &key().verifying_key(), Head::EMPTY, &records),
        Ok(head)
    );
    // Sealing in two steps gives the same chain.
    let (a, mid) = seal("s", &key(), Head::EMPTY, &drafts(20)[..7]).unwrap();
    let (b, _) = seal("s", &key(), mid, &drafts(20)[7..]).unwrap();
    assert_eq!([a, b].concat(), records);
}

#[test]
fn every_kind_of_tampering_is_found_at_its_record() {
    let (records, _) = seal("s", &key(), Head::EMPTY, &drafts(10)).unwrap();
    let vk = key().verifying_key();
    let check = |v: &[EvidenceRecord]| check_chain("s", &vk, Head::EMPTY, v).unwrap_err();

    let mut changed = records.clone();
    changed[4].body = changed[4].body.replace("612.500", "912.500");
    assert!(
        matches!(check(&changed), ChainError::Hash { seq: 5, .. }),
        "a changed byte"
    );

    let mut deleted = records.clone();
    deleted.remove(6);
    assert!(
        matches!(
            check(&deleted),
            ChainError::Sequence {
                expected: 7,
                found: 8
            }
        ),
        "a deleted record"
    );

    let mut reordered = records.clone();
    reordered.swap(2, 3);
    assert!(
        matches!(
            check(&reordered),
            ChainError::Sequence {
                expected: 3,
                found: 4
            }
        ),
        "a reordered pair"
    );

    let (foreign, _) = seal(
        "s",
        &SigningKey::from_bytes(&[8; 32]),
        Head::EMPTY,
        &drafts(10),
    )
    .unwrap();
    assert!(
        matches!(check(&foreign), ChainError::Signature { seq: 1, .. }),
        "another key"
    );

    let mut resealed = records.clone();
    // Re-hashing an altered record still breaks the next record's link.
    resealed[4].body = resealed[4].body.replace("612.500", "912.500");
    let new_hash = chain_hash(
        &hex::decode(&resealed[4].prev_hash)
            .unwrap()
            .try_into()
            .unwrap(),
        &canonical_bytes("s", 5, &resealed[4].draft()),
    );
    resealed[4].hash = hex::encode(new_hash);
    let err = check(&resealed);
    assert!(matches!(err, ChainError::Signature { seq: 5, .. }), "{err}");
}

#[test]
fn line_breaks_cannot_enter_the_canonical_bytes() {
    let mut d = drafts(1);
    d[0].subject = "F1/B1\nkind=forged".into();
    assert!(matches!(
        seal("s", &key(), Head::EMPTY, &d),
        Err(SealError::LineBreak {
            field: "subject",
            ..
        })
    ));
}

#[test]
fn canonical_json_sorts_keys_and_fixes_decimals() {
    let v = serde_json::json!({ "b": [1.25, 2, -0.5], "a": { "z": null, "y": true } });
    assert_eq!(
        canonical_json(&v),
        r#"{"a":{"y":true,"z":null},"b":["1.250",2,"-0.500"]}"#
    );
}

#[test]
fn batched_checking_agrees_with_one_by_one_checking() {
    use super::verify::check_chain_batched;
    let (records, head) = seal("s", &key(), Head::EMPTY, &drafts(50)).unwrap();
    let vk = key().verifying_key();
    assert_eq!(
        check_chain_batched("s", &vk, Head::EMPTY, &records),
        Ok(head)
    );
    let mut forged = records.clone();
    let (other, _) = seal(
        "s",
        &SigningKey::from_bytes(&[8; 32]),
        Head::EMPTY,
        &drafts(50),
    )
    .unwrap();
    forged[30].signature = other[30].signature.clone();
    assert_eq!(
        check_chain_batched("s", &vk, Head::EMPTY, &forged),
        check_chain("s", &vk, Head::EMPTY, &forged)
    );
    assert!(matches!(
        check_chain_batched("s", &vk, Head::EMPTY, &forged),
        Err(ChainError::Signature { seq: 31, .. })
    ));
    let mut changed = records.clone();
    changed[10].body = changed[10].body.replace("612.500", "912.500");
    assert!(matches!(
        check_chain_batched("s", &vk, Head::EMPTY, &changed),
        Err(ChainError::Hash { seq: 11, .. })
    ));
}
