//! Evidence: the tamper-evident record of everything sealwatch concludes and does.
//!
//! Every rule output (seal states, breaches, charging cycles, NMHC minutes, hours and
//! exceedances, hourly summaries), agent start and stop, configuration load, device fault and
//! recovery, and pruning of raw data is an [`EvidenceRecord`]. Records of a site form a hash
//! chain — `hash = SHA-256(prev_hash ‖ canonical bytes)`, the first record's `prev_hash` being 32
//! zero bytes — and each hash is signed with the agent's Ed25519 key.
//!
//! # Canonical bytes (version 1)
//!
//! UTF-8 text, seven lines, each ending in `\n`, in this order:
//!
//! ```text
//! sealwatch-evidence-v1
//! site=<site id>
//! seq=<sequence number, decimal, from 1>
//! at_ms=<ms since 1970-01-01T00:00:00Z, decimal, may be negative>
//! kind=<kind, e.g. breach_started>
//! subject=<bin, analyzer or device, e.g. F1/B2; may be empty>
//! body=<canonical JSON>
//! ```
//!
//! Canonical JSON: compact (no spaces), object keys sorted by their UTF-8 bytes, and no floating
//! point numbers — a non-integer number is written as a string with exactly three decimals
//! (`812.5` → `"812.500"`); integers stay integers. So the text of a record never depends on a
//! float printer. Site, kind and subject never contain a newline (checked when sealing).
//!
//! The functions here are pure: they take the previous head and the time as values.

pub mod anchor;
pub mod bundle;
pub mod sign;
pub mod verify;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::canonical_json;

/// The hash a chain starts from.
pub const GENESIS: [u8; 32] = [0; 32];

/// An evidence record before it is sealed into the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// When it happened, ms.
    pub at_ms: i64,
    /// Kind, e.g. `breach_started`, `agent_started`.
    pub kind: String,
    /// Bin, analyzer or device it is about (may be empty).
    pub subject: String,
    /// Canonical JSON body (see the module docs).
    pub body: String,
}

impl Draft {
    /// A draft whose body is the canonical form of `body`.
    pub fn new(at_ms: i64, kind: &str, subject: &str, body: &serde_json::Value) -> Draft {
        Draft {
            at_ms,
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            body: canonical_json(body),
        }
    }

    /// The evidence draft of a rule output.
    pub fn from_output(output: &crate::rules::Output) -> Draft {
        let value = serde_json::to_value(output).unwrap_or(serde_json::Value::Null);
        Draft::new(output.at_ms(), output.kind(), output.subject(), &value)
    }
}

/// One sealed record of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// Site id.
    pub site: String,
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// When it happened, ms.
    pub at_ms: i64,
    /// Kind.
    pub kind: String,
    /// Subject.
    pub subject: String,
    /// Canonical JSON body.
    pub body: String,
    /// Hash of the previous record, hex.
    pub prev_hash: String,
    /// SHA-256(prev_hash ‖ canonical bytes), hex.
    pub hash: String,
    /// Ed25519 signature of the 32 hash bytes, hex.
    pub signature: String,
}

/// The head of a chain: the last sequence number and hash (0 and [`GENESIS`] when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Last sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty chain.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

/// The canonical bytes of a record (see the module docs).
pub fn canonical_bytes(site: &str, seq: u64, draft: &Draft) -> Vec<u8> {
    format!(
        "sealwatch-evidence-v1\nsite={site}\nseq={seq}\nat_ms={}\nkind={}\nsubject={}\nbody={}\n",
        draft.at_ms, draft.kind, draft.subject, draft.body
    )
    .into_bytes()
}

/// `SHA-256(prev_hash ‖ canonical bytes)`.
pub fn chain_hash(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// Why a draft cannot be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A field holds a newline, which would make the canonical bytes ambiguous.
    #[error("evidence field {field} of a {kind} record contains a line break")]
    LineBreak {
        /// Field.
        field: &'static str,
        /// Kind of the record.
        kind: String,
    },
}

/// Seals drafts after `head`: numbers, chains and signs them. Returns the records and the new
/// head; `head` itself is not changed (the caller adopts the new head once the records are
/// durably stored).
pub fn seal(
    site: &str,
    key: &SigningKey,
    head: Head,
    drafts: &[Draft],
) -> Result<(Vec<EvidenceRecord>, Head), SealError> {
    let mut head = head;
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        for (field, text) in [
            ("site", site),
            ("kind", d.kind.as_str()),
            ("subject", d.subject.as_str()),
            ("body", d.body.as_str()),
        ] {
            if text.contains('\n') {
                return Err(SealError::LineBreak {
                    field,
                    kind: d.kind.clone(),
                });
            }
        }
        let seq = head.seq + 1;
        let hash = chain_hash(&head.hash, &canonical_bytes(site, seq, d));
        let signature = key.sign(&hash);
        out.push(EvidenceRecord {
            site: site.to_owned(),
            seq,
            at_ms: d.at_ms,
            kind: d.kind.clone(),
            subject: d.subject.clone(),
            body: d.body.clone(),
            prev_hash: hex::encode(head.hash),
            hash: hex::encode(hash),
            signature: hex::encode(signature.to_bytes()),
        });
        head = Head { seq, hash };
    }
    Ok((out, head))
}

impl EvidenceRecord {
    /// The draft this record sealed.
    pub fn draft(&self) -> Draft {
        Draft {
            at_ms: self.at_ms,
            kind: self.kind.clone(),
            subject: self.subject.clone(),
            body: self.body.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
