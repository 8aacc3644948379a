//! What an answer of the audit system proves, decided without I/O.
//!
//! The agent's acknowledged position (the cursor) says "the audit system holds every record up
//! to here". It is the only thing that decides whether a record is ever sent again, so it must
//! never move on the receiver's word alone. An answer moves it only to a record whose hash the
//! receiver echoes and the agent itself knows:
//!
//! - a record of the batch just sent (the receiver stored it), or
//! - the record just before the batch, or an earlier one (the receiver holds less than the
//!   cursor said: it lost records, so they are sent again).
//!
//! and only by an answer to the request just sent (each request carries a fresh id the answer
//! must echo, so an answer replayed, cached or meant for another batch moves nothing).
//!
//! Anything else — a position beyond the batch, a hash that is not the agent's, an answer that
//! contradicts its own status code, no hash at all, another request's id — is a
//! [`ProtocolError`]: logged at ERROR, counted, shown on the status page, and the cursor stays
//! where it was. A lying receiver can make the agent send records again, never stop sending
//! them. (What a hash proves is that the receiver was given the record; that it keeps it is its
//! own duty — the agent keeps every record for the evidence retention in any case.)

use super::UploadAnswer;
use crate::evidence::EvidenceRecord;

/// The status of an answer, as far as delivery is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `200`: the batch is stored.
    Stored,
    /// `409`: the batch does not continue what the receiver holds.
    OutOfStep,
    /// `422`: the receiver refused a record.
    Refused,
}

impl Status {
    /// The status of an HTTP code, if it is one the protocol defines.
    pub fn of_code(code: u16) -> Option<Status> {
        match code {
            200 => Some(Status::Stored),
            409 => Some(Status::OutOfStep),
            422 => Some(Status::Refused),
            _ => None,
        }
    }
}

/// An answer that proves nothing, or proves something false.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The receiver claims records the agent never sent it.
    #[error("the audit system claims to hold records up to {claimed}, but this batch ended at {sent_through}: records never sent cannot be stored")]
    ClaimsUnsent {
        /// Claimed position.
        claimed: u64,
        /// Last record of the batch.
        sent_through: u64,
    },
    /// The answer names no hash for its position.
    #[error("the audit system's answer names record {claimed} without its hash (head_hash); nothing is acknowledged without it")]
    NoHash {
        /// Claimed position.
        claimed: u64,
    },
    /// The echoed hash is not the agent's hash of that record.
    #[error("the audit system says it holds record {claimed} with hash {theirs}, but that record's hash is {ours}: it holds another chain")]
    HashMismatch {
        /// Claimed position.
        claimed: u64,
        /// Hash it echoed.
        theirs: String,
        /// The agent's hash of that record.
        ours: String,
    },
    /// The answer contradicts its status code.
    #[error("the audit system answered {status:?} holding record {claimed}, which that answer cannot mean for a batch of records {first}–{last}")]
    Contradiction {
        /// Status.
        status: Status,
        /// Claimed position.
        claimed: u64,
        /// First record of the batch.
        first: u64,
        /// Last record of the batch.
        last: u64,
    },
    /// The answer is not to the request just sent (replayed, cached or out of turn).
    #[error("the answer echoes request '{answered}', not the request just sent ('{sent}'): an answer replayed, cached or meant for another batch")]
    OtherRequest {
        /// Request id sent.
        sent: String,
        /// Request id echoed.
        answered: String,
    },
    /// It says it lost records this agent no longer holds (pruned after retention).
    #[error("the audit system holds records only up to {claimed}, and record {claimed} is no longer kept here to compare with; it cannot be given the records it lost")]
    LostBeyondRetention {
        /// Claimed position.
        claimed: u64,
    },
    /// Not an answer of the protocol at all (too long, a redirect, unreadable, another status).
    #[error("{0}")]
    Unusable(String),
}

/// What to do with the cursor after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver proved it holds every record up to this one: the new cursor (it may be
    /// below the old one when the receiver lost records).
    Holds(u64),
    /// The receiver names a record before the batch; its hash must be compared with the
    /// agent's copy before the cursor goes back there ([`confirm_earlier`]).
    Earlier {
        /// Claimed position.
        through: u64,
        /// Hash it echoed.
        hash: String,
    },
    /// A lie or a broken receiver: the cursor stays.
    Protocol(ProtocolError),
}

/// The hash of record `seq` as the batch knows it: a record of the batch, or (through the
/// first record's `prev_hash`) the record just before it.
fn hash_in_batch(batch: &[EvidenceRecord], seq: u64) -> Option<&str> {
    let first = batch.first()?;
    if seq.checked_add(1) == Some(first.seq) {
        return Some(first.prev_hash.as_str());
    }
    let index = usize::try_from(seq.checked_sub(first.seq)?).ok()?;
    batch
        .get(index)
        .filter(|r| r.seq == seq)
        .map(|r| r.hash.as_str())
}

/// Judges an answer with a protocol `status` to the request `request` that carried `batch`
/// (consecutive records, not empty).
pub fn judge(
    status: Status,
    answer: &UploadAnswer,
    request: &str,
    batch: &[EvidenceRecord],
) -> Verdict {
    let answered = answer.request.as_deref().unwrap_or("");
    if answered != request {
        return Verdict::Protocol(ProtocolError::OtherRequest {
            sent: request.to_owned(),
            answered: answered.escape_debug().to_string(),
        });
    }
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Verdict::Protocol(ProtocolError::Unusable(
            "an answer to an empty batch".to_owned(),
        ));
    };
    let (first, last) = (first.seq, last.seq);
    let claimed = answer.stored_through;
    if claimed > last {
        return Verdict::Protocol(ProtocolError::ClaimsUnsent {
            claimed,
            sent_through: last,
        });
    }
    let Some(theirs) = answer.head_hash.as_deref() else {
        return Verdict::Protocol(ProtocolError::NoHash { claimed });
    };
    let contradiction = || {
        Verdict::Protocol(ProtocolError::Contradiction {
            status,
            claimed,
            first,
            last,
        })
    };
    // What each status may claim: a 200 stored part of the batch; a 409 holds less than what
    // the batch continues; a 422 may have stored some of the batch before the refused record.
    let allowed = match status {
        Status::Stored => claimed >= first,
        Status::OutOfStep => claimed.saturating_add(1) < first,
        Status::Refused => true,
    };
    if !allowed {
        return contradiction();
    }
    match hash_in_batch(batch, claimed) {
        Some(ours) => compare(claimed, theirs, ours),
        None => Verdict::Earlier {
            through: claimed,
            hash: theirs.to_owned(),
        },
    }
}

fn compare(claimed: u64, theirs: &str, ours: &str) -> Verdict {
    if theirs.eq_ignore_ascii_case(ours) {
        Verdict::Holds(claimed)
    } else {
        Verdict::Protocol(ProtocolError::HashMismatch {
            claimed,
            theirs: theirs.to_owned(),
            ours: ours.to_owned(),
        })
    }
}

/// Settles [`Verdict::Earlier`] with the agent's own hash of that record (`None` when it is no
/// longer kept). For record 0, the chain's start, that is [`GENESIS`] — as long as the agent
/// still holds record 1 to send again.
pub fn confirm_earlier(through: u64, theirs: &str, ours: Option<&str>) -> Verdict {
    match ours {
        Some(ours) => compare(through, theirs, ours),
        None => Verdict::Protocol(ProtocolError::LostBeyondRetention { claimed: through }),
    }
}

/// The acknowledged position after an answer with a protocol `status` to `batch`: [`judge`],
/// then [`confirm_earlier`] with `ours`, the agent's own hash of an earlier record the answer
/// names (asked only then). `Err`: the answer proved nothing; the cursor stays.
pub fn settle(
    status: Status,
    answer: &UploadAnswer,
    request: &str,
    batch: &[EvidenceRecord],
    ours: impl FnOnce(u64) -> Option<String>,
) -> Result<u64, ProtocolError> {
    let verdict = match judge(status, answer, request, batch) {
        Verdict::Earlier { through, hash } => {
            confirm_earlier(through, &hash, ours(through).as_deref())
        }
        verdict => verdict,
    };
    match verdict {
        Verdict::Holds(n) => Ok(n),
        Verdict::Protocol(e) => Err(e),
        Verdict::Earlier { through, .. } => Err(ProtocolError::Unusable(format!(
            "an unconfirmed claim of record {through}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{seal, Draft, Head, GENESIS};
    use ed25519_dalek::SigningKey;

    /// Records 1..=n of a chain.
    fn chain(n: usize) -> Vec<EvidenceRecord> {
        let drafts: Vec<Draft> = (0..n)
            .map(|i| Draft::new(i as i64, "test", "", &serde_json::json!({ "i": i })))
            .collect();
        seal("s", &SigningKey::from_bytes(&[1; 32]), Head::EMPTY, &drafts)
            .unwrap()
            .0
    }

    const REQUEST: &str = "r1";

    fn answer(through: u64, hash: Option<&str>) -> UploadAnswer {
        UploadAnswer {
            stored_through: through,
            head_hash: hash.map(str::to_owned),
            request: Some(REQUEST.to_owned()),
            ..UploadAnswer::default()
        }
    }

    fn judge(status: Status, answer: &UploadAnswer, batch: &[EvidenceRecord]) -> Verdict {
        super::judge(status, answer, REQUEST, batch)
    }

    #[test]
    fn an_answer_to_another_request_moves_nothing() {
        let all = chain(4);
        let mut stale = answer(4, Some(&all[3].hash));
        stale.request = Some("r0".into());
        assert!(matches!(
            judge(Status::Stored, &stale, &all),
            Verdict::Protocol(ProtocolError::OtherRequest { .. })
        ));
        stale.request = None;
        assert!(matches!(
            judge(Status::Stored, &stale, &all),
            Verdict::Protocol(ProtocolError::OtherRequest { .. })
        ));
    }

    #[test]
    fn a_stored_batch_moves_the_cursor_to_the_record_whose_hash_is_echoed() {
        let all = chain(10);
        let batch = &all[4..8]; // records 5–8
        let verdict = judge(
            Status::Stored,
            &answer(8, Some(&all[7].hash.to_uppercase())),
            batch,
        );
        assert_eq!(verdict, Verdict::Holds(8));
        // Part of the batch stored.
        assert_eq!(
            judge(Status::Stored, &answer(6, Some(&all[5].hash)), batch),
            Verdict::Holds(6)
        );
    }

    #[test]
    fn a_claim_beyond_the_batch_is_a_protocol_error_not_an_acknowledgement() {
        let all = chain(10);
        let batch = &all[0..3];
        for status in [Status::Stored, Status::OutOfStep, Status::Refused] {
            assert_eq!(
                judge(
                    status,
                    &answer(1_000_000_000_000, Some(&all[9].hash)),
                    batch
                ),
                Verdict::Protocol(ProtocolError::ClaimsUnsent {
                    claimed: 1_000_000_000_000,
                    sent_through: 3
                }),
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_wrong_or_missing_hash_acknowledges_nothing() {
        let all = chain(5);
        let batch = &all[..];
        assert!(matches!(
            judge(Status::Stored, &answer(5, Some(&all[3].hash)), batch),
            Verdict::Protocol(ProtocolError::HashMismatch { claimed: 5, .. })
        ));
        assert_eq!(
            judge(Status::Stored, &answer(5, None), batch),
            Verdict::Protocol(ProtocolError::NoHash { claimed: 5 })
        );
    }

    #[test]
    fn a_refusal_proves_only_what_it_echoes() {
        let all = chain(10);
        let batch = &all[4..8];
        // Stored 5 and 6, refused 7.
        assert_eq!(
            judge(Status::Refused, &answer(6, Some(&all[5].hash)), batch),
            Verdict::Holds(6)
        );
        // Refused the first record: holds what was before the batch.
        assert_eq!(
            judge(Status::Refused, &answer(4, Some(&all[4].prev_hash)), batch),
            Verdict::Holds(4)
        );
    }

    #[test]
    fn answers_that_contradict_their_status_are_protocol_errors() {
        let all = chain(10);
        let batch = &all[4..8];
        // 200 but holds nothing of the batch.
        assert!(matches!(
            judge(Status::Stored, &answer(4, Some(&all[3].hash)), batch),
            Verdict::Protocol(ProtocolError::Contradiction { .. })
        ));
        // 409 while holding the batch's own records.
        assert!(matches!(
            judge(Status::OutOfStep, &answer(6, Some(&all[5].hash)), batch),
            Verdict::Protocol(ProtocolError::Contradiction { .. })
        ));
    }

    #[test]
    fn a_receiver_that_lost_records_is_sent_them_again_once_its_hash_checks() {
        let all = chain(10);
        let batch = &all[6..9];
        let verdict = judge(Status::OutOfStep, &answer(2, Some(&all[1].hash)), batch);
        assert_eq!(
            verdict,
            Verdict::Earlier {
                through: 2,
                hash: all[1].hash.clone()
            }
        );
        assert_eq!(
            confirm_earlier(2, &all[1].hash, Some(&all[1].hash)),
            Verdict::Holds(2)
        );
        assert!(matches!(
            confirm_earlier(2, &all[1].hash, Some(&all[2].hash)),
            Verdict::Protocol(ProtocolError::HashMismatch { .. })
        ));
        assert_eq!(
            confirm_earlier(2, &all[1].hash, None),
            Verdict::Protocol(ProtocolError::LostBeyondRetention { claimed: 2 })
        );
        // Lost everything: record 0 is the chain's start, while record 1 is still kept here.
        let genesis = hex::encode(GENESIS);
        assert_eq!(
            confirm_earlier(0, &genesis, Some(&genesis)),
            Verdict::Holds(0)
        );
        assert!(matches!(
            confirm_earlier(0, &all[0].hash, Some(&genesis)),
            Verdict::Protocol(ProtocolError::HashMismatch { .. })
        ));
        assert_eq!(
            confirm_earlier(0, &genesis, None),
            Verdict::Protocol(ProtocolError::LostBeyondRetention { claimed: 0 })
        );
    }
}
