//! Model test of evidence delivery: random appends, uploads (with refused connections, lost
//! answers and a receiver that forgets its last records), cursor persistence and crash-reopen,
//! run against the real store, the real delivery decision (`next_acked`) and the real receiver,
//! compared with a plain model: the chain is everything appended, in order; the receiver always
//! holds a prefix of it; and once faults stop, it ends up holding all of it.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use sealwatch_agent::evidence::Draft;
use sealwatch_agent::store::Store;
use sealwatch_agent::uplink::audit::{next_acked, Delivery, UploadBatch};
use sealwatch_sim::audit::Receiver;

#[derive(Debug, Clone)]
enum Fault {
    None,
    Refused,
    AnswerLost,
    Forget(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Upload {
        batch: usize,
        fault: Fault,
        persist: bool,
    },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let fault = prop_oneof![
        4 => Just(Fault::None),
        1 => Just(Fault::Refused),
        1 => Just(Fault::AnswerLost),
        1 => (1u64..6).prop_map(Fault::Forget),
    ];
    prop_oneof![
        3 => (1usize..6).prop_map(Op::Append),
        4 => (1usize..5, fault, any::<bool>()).prop_map(|(batch, fault, persist)| Op::Upload { batch, fault, persist }),
        1 => Just(Op::Crash),
    ]
}

const SITE: &str = "model";

fn drafts(from: usize, n: usize) -> Vec<Draft> {
    (from..from + n)
        .map(|i| {
            Draft::new(
                i as i64,
                "seal_state",
                "F1/B1",
                &serde_json::json!({ "i": i }),
            )
        })
        .collect()
}

fn open(path: &std::path::Path, key: &SigningKey) -> Store {
    let mut store = Store::open(path).unwrap();
    store.enable_evidence(SITE, key.clone()).unwrap();
    store
}

fn upload(
    store: &Store,
    receiver: &mut Receiver,
    key: &SigningKey,
    acked: u64,
    batch: usize,
    fault: &Fault,
) -> (u64, bool) {
    let head = store.evidence_head().unwrap().seq;
    let records = store.evidence_range(acked + 1, batch).unwrap();
    if records.is_empty() {
        return (acked, false);
    }
    if let Fault::Forget(n) = fault {
        receiver.forget(*n).unwrap();
    }
    let delivery = if matches!(fault, Fault::Refused) {
        Delivery::Failed("refused".into())
    } else {
        let body = UploadBatch {
            site: SITE.into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            records,
        };
        let (status, answer) = receiver.receive(&body);
        match (status.as_u16(), fault) {
            (_, Fault::AnswerLost) => Delivery::Failed("answer lost".into()),
            (200, _) => Delivery::Stored(answer.stored_through),
            (409, _) => Delivery::OutOfStep(answer.stored_through),
            (422, _) => Delivery::Rejected(answer),
            (code, _) => Delivery::Failed(format!("HTTP {code}")),
        }
    };
    assert!(
        !matches!(delivery, Delivery::Rejected(_)),
        "an untampered chain is never refused: {delivery:?}"
    );
    (next_acked(acked, head, &delivery), true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn delivery_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agent.db");
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut store = open(&db, &key);
        let mut receiver = Receiver::open(&dir.path().join("audit.db"), SITE, key.verifying_key(), None).unwrap();
        let mut acked = 0u64;
        let mut model: Vec<usize> = Vec::new();
        for op in ops {
            match op {
                Op::Append(n) => {
                    store.append(&[], &[], &drafts(model.len(), n)).unwrap();
                    model.extend(model.len()..model.len() + n);
                }
                Op::Upload { batch, fault, persist } => {
                    acked = upload(&store, &mut receiver, &key, acked, batch, &fault).0;
                    if persist {
                        store.set_uplink_cursor("audit", acked, 0).unwrap();
                    }
                }
                Op::Crash => {
                    drop(store);
                    store = open(&db, &key);
                    acked = store.uplink_cursor("audit").unwrap();
                }
            }
            let head = store.evidence_head().unwrap().seq;
            prop_assert_eq!(head, model.len() as u64, "the chain is everything appended");
            prop_assert!(acked <= head);
            let held = receiver.records();
            prop_assert!(held.len() as u64 <= head);
            prop_assert_eq!(&held, &store.evidence_range(1, held.len()).unwrap(), "the receiver holds a prefix of the chain");
        }
        // Faults stop: everything arrives, in order, exactly once.
        let mut rounds = 0;
        loop {
            let (next, sent) = upload(&store, &mut receiver, &key, acked, 4, &Fault::None);
            acked = next;
            if !sent {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 1000, "delivery never finishes");
        }
        prop_assert_eq!(receiver.records(), store.evidence_range(1, usize::MAX >> 1).unwrap());
        prop_assert_eq!(receiver.head().seq, model.len() as u64);
    }
}
