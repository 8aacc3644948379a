//! Model test of evidence delivery against a receiver that fails, forgets, lies, duplicates and
//! answers out of turn: random appends, uploads, cursor persistence and crash-reopen, run
//! against the real store, the real delivery decision (`settle`) and the real receiver, compared
//! with what the receiver truly holds. The cursor never moves past what the receiver truly held
//! when it moved; the chain is everything appended, in order; the receiver always holds a prefix
//! of it; and once faults stop, it ends up holding all of it, each record once.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use sealwatch_agent::evidence::Draft;
use sealwatch_agent::store::Store;
use sealwatch_agent::uplink::audit::delivery::{settle, Status};
use sealwatch_agent::uplink::audit::{UploadAnswer, UploadBatch};
use sealwatch_sim::audit::Receiver;

#[derive(Debug, Clone)]
enum Fault {
    None,
    /// No connection.
    Refused,
    /// Stored, but the answer never arrived.
    AnswerLost,
    /// Lost its last records first.
    Forget(u64),
    /// Claims to hold far more than it was sent.
    LieThrough(u64),
    /// Echoes a hash that is not the record's.
    LieHash,
    /// Answers 422 claiming far more than it was sent.
    LieRefuse(u64),
    /// Answers with an answer it gave before (to another request).
    Stale,
    /// Receives the batch twice; the second answer comes back.
    Duplicate,
    /// Receives an older batch instead and answers that.
    Reorder,
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
        1 => (0u64..2_000_000_000_000).prop_map(Fault::LieThrough),
        1 => Just(Fault::LieHash),
        1 => (0u64..2_000_000_000_000).prop_map(Fault::LieRefuse),
        1 => Just(Fault::Stale),
        1 => Just(Fault::Duplicate),
        1 => Just(Fault::Reorder),
    ];
    prop_oneof![
        3 => (1usize..6).prop_map(Op::Append),
        5 => (1usize..5, fault, any::<bool>()).prop_map(|(batch, fault, persist)| Op::Upload { batch, fault, persist }),
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

struct Harness {
    key: SigningKey,
    receiver: Receiver,
    /// Answers given so far, for stale replays.
    answers: Vec<(u16, UploadAnswer)>,
}

impl Harness {
    fn body(
        &self,
        request: &str,
        records: Vec<sealwatch_agent::evidence::EvidenceRecord>,
    ) -> UploadBatch {
        UploadBatch {
            request: request.to_owned(),
            site: SITE.into(),
            public_key: hex::encode(self.key.verifying_key().to_bytes()),
            records,
        }
    }

    /// One upload from `acked`; returns the new position and whether anything was sent.
    fn upload(&mut self, store: &Store, acked: u64, batch: usize, fault: &Fault) -> (u64, bool) {
        let records = store.evidence_range(acked + 1, batch).unwrap();
        if records.is_empty() {
            return (acked, false);
        }
        if let Fault::Forget(n) = fault {
            self.receiver.forget(*n).unwrap();
        }
        let request = format!("r{}", self.answers.len());
        let answer: Option<(u16, UploadAnswer)> = match fault {
            Fault::Refused => None,
            Fault::Stale => self.answers.first().cloned(),
            Fault::Reorder => {
                let older = store.evidence_range(1, batch).unwrap();
                // An earlier request's batch, answered now.
                let (s, a) = self.receiver.receive(&self.body("earlier", older));
                Some((s.as_u16(), a))
            }
            _ => {
                let body = self.body(&request, records.clone());
                if matches!(fault, Fault::Duplicate) {
                    self.receiver.receive(&body);
                }
                let (s, mut a) = self.receiver.receive(&body);
                let mut code = s.as_u16();
                match fault {
                    Fault::LieThrough(n) => a.stored_through = *n,
                    Fault::LieHash => a.head_hash = Some("ab".repeat(32)),
                    Fault::LieRefuse(n) => {
                        code = 422;
                        a.stored_through = *n;
                    }
                    _ => {}
                }
                Some((code, a))
            }
        };
        if let Some(a) = &answer {
            self.answers.push(a.clone());
        }
        let next = match (answer, fault) {
            (None, _) | (_, Fault::AnswerLost) => acked,
            (Some((code, a)), _) => match Status::of_code(code) {
                None => acked,
                Some(status) => settle(status, &a, &request, &records, |seq| {
                    store.evidence_hash_at(seq).unwrap()
                })
                .unwrap_or(acked),
            },
        };
        (next, true)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn delivery_matches_the_model(ops in prop::collection::vec(op(), 1..48)) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agent.db");
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut store = open(&db, &key);
        let receiver = Receiver::open(&dir.path().join("audit.db"), SITE, key.verifying_key(), None).unwrap();
        let mut h = Harness { key: key.clone(), receiver, answers: Vec::new() };
        let mut acked = 0u64;
        let mut model: Vec<usize> = Vec::new();
        for op in ops {
            match op {
                Op::Append(n) => {
                    store.append(&[], &[], &drafts(model.len(), n)).unwrap();
                    model.extend(model.len()..model.len() + n);
                }
                Op::Upload { batch, fault, persist } => {
                    let before = acked;
                    acked = h.upload(&store, acked, batch, &fault).0;
                    let truly = h.receiver.head().seq;
                    prop_assert!(
                        acked <= before || acked <= truly,
                        "{fault:?}: the cursor moved from {before} to {acked}, but the receiver holds only {truly}"
                    );
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
            let held = h.receiver.records();
            prop_assert!(held.len() as u64 <= head);
            prop_assert_eq!(&held, &store.evidence_range(1, held.len()).unwrap(), "the receiver holds a prefix of the chain");
        }
        // Faults stop: everything arrives, in order, exactly once.
        let mut rounds = 0;
        loop {
            let (next, sent) = h.upload(&store, acked, 4, &Fault::None);
            acked = next;
            if !sent {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 1000, "delivery never finishes");
        }
        prop_assert_eq!(h.receiver.records(), store.evidence_range(1, usize::MAX >> 1).unwrap());
        prop_assert_eq!(h.receiver.head().seq, model.len() as u64);
        prop_assert_eq!(acked, model.len() as u64);
    }
}
