//! Checking a chain of evidence records offline: sequence, links, hashes and signatures. The
//! audit stand-in runs the same checks on receipt.

use ed25519_dalek::{Signature, VerifyingKey};

use super::{canonical_bytes, chain_hash, EvidenceRecord, Head};

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A record of another site.
    #[error("record {seq}: site '{found}', expected '{expected}'")]
    WrongSite {
        /// Record.
        seq: u64,
        /// Site found.
        found: String,
        /// Site expected.
        expected: String,
    },
    /// A missing, repeated or reordered record.
    #[error("record {found} where record {expected} was expected (a record is missing, repeated or out of order)")]
    Sequence {
        /// Seq expected.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// The link to the previous record is broken.
    #[error(
        "record {seq}: prev_hash {found} does not match the previous record's hash {expected}"
    )]
    Link {
        /// Record.
        seq: u64,
        /// Expected prev hash.
        expected: String,
        /// Found prev hash.
        found: String,
    },
    /// The content does not hash to the stored hash: it was altered.
    #[error("record {seq}: content hashes to {computed}, but the record says {stored} (the record was altered)")]
    Hash {
        /// Record.
        seq: u64,
        /// Computed hash.
        computed: String,
        /// Stored hash.
        stored: String,
    },
    /// The signature does not verify with the site's key.
    #[error("record {seq}: signature does not verify with the site's public key ({why})")]
    Signature {
        /// Record.
        seq: u64,
        /// Why.
        why: String,
    },
}

impl ChainError {
    /// The record the problem was found at.
    pub fn seq(&self) -> u64 {
        match self {
            ChainError::WrongSite { seq, .. }
            | ChainError::Link { seq, .. }
            | ChainError::Hash { seq, .. }
            | ChainError::Signature { seq, .. } => *seq,
            ChainError::Sequence { found, .. } => *found,
        }
    }
}

/// Checks one record as the successor of `head`; returns the new head.
pub fn check_next(
    site: &str,
    key: &VerifyingKey,
    head: Head,
    r: &EvidenceRecord,
) -> Result<Head, ChainError> {
    if r.site != site {
        return Err(ChainError::WrongSite {
            seq: r.seq,
            found: r.site.clone(),
            expected: site.to_owned(),
        });
    }
    // A chain ends at u64::MAX: nothing follows it.
    let expected = head.seq.checked_add(1);
    if expected != Some(r.seq) {
        return Err(ChainError::Sequence {
            expected: expected.unwrap_or(u64::MAX),
            found: r.seq,
        });
    }
    let expected_prev = hex::encode(head.hash);
    if r.prev_hash != expected_prev {
        return Err(ChainError::Link {
            seq: r.seq,
            expected: expected_prev,
            found: r.prev_hash.clone(),
        });
    }
    let computed = chain_hash(&head.hash, &canonical_bytes(site, r.seq, &r.draft()));
    let computed_hex = hex::encode(computed);
    if computed_hex != r.hash {
        return Err(ChainError::Hash {
            seq: r.seq,
            computed: computed_hex,
            stored: r.hash.clone(),
        });
    }
    let sig_bytes: [u8; 64] = hex::decode(&r.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ChainError::Signature {
            seq: r.seq,
            why: "not 64 hex bytes".to_owned(),
        })?;
    key.verify_strict(&computed, &Signature::from_bytes(&sig_bytes))
        .map_err(|e| ChainError::Signature {
            seq: r.seq,
            why: e.to_string(),
        })?;
    Ok(Head {
        seq: r.seq,
        hash: computed,
    })
}

/// Checks records in order from `start` (the head before the first record); returns the final
/// head. `start` is [`Head::EMPTY`] for a whole chain, or the head a bundle's manifest names.
pub fn check_chain<'a>(
    site: &str,
    key: &VerifyingKey,
    start: Head,
    records: impl IntoIterator<Item = &'a EvidenceRecord>,
) -> Result<Head, ChainError> {
    records
        .into_iter()
        .try_fold(start, |head, r| check_next(site, key, head, r))
}

/// The head a record's `prev_hash` names (to start checking an excerpt of a chain).
pub fn head_before(r: &EvidenceRecord) -> Option<Head> {
    let hash: [u8; 32] = hex::decode(&r.prev_hash).ok()?.try_into().ok()?;
    Some(Head {
        seq: r.seq.checked_sub(1)?,
        hash,
    })
}

/// The same check as [`check_chain`], with the signatures verified together in one batch
/// (about twice as fast for long runs). On any failure it falls back to [`check_chain`], so the
/// error names the first broken record exactly as the one-by-one check would.
pub fn check_chain_batched(
    site: &str,
    key: &VerifyingKey,
    start: Head,
    records: &[EvidenceRecord],
) -> Result<Head, ChainError> {
    let mut head = start;
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(records.len());
    let mut signatures: Vec<Signature> = Vec::with_capacity(records.len());
    for r in records {
        let hash = chain_hash(&head.hash, &canonical_bytes(site, r.seq, &r.draft()));
        let signature = hex::decode(&r.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok());
        let linked = r.site == site
            && head.seq.checked_add(1) == Some(r.seq)
            && r.prev_hash == hex::encode(head.hash)
            && hex::encode(hash) == r.hash;
        match (linked, signature) {
            (true, Some(sig)) => {
                hashes.push(hash);
                signatures.push(Signature::from_bytes(&sig));
                head = Head { seq: r.seq, hash };
            }
            _ => return check_chain(site, key, start, records),
        }
    }
    let messages: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
    let keys = vec![*key; messages.len()];
    match ed25519_dalek::verify_batch(&messages, &signatures, &keys) {
        Ok(()) => Ok(head),
        Err(_) => check_chain(site, key, start, records),
    }
}
