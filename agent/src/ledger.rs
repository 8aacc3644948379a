//! What people do with the stored evidence chain, offline: check a database's chain, export an
//! audit bundle of a period, and declare a new chain after the old one's database was lost.
//!
//! These run from the command line while the agent may be running (checking and exporting only
//! read the database) or stopped (a new chain is sealed into an empty database).

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::config::SiteConfig;
use crate::evidence::anchor::{self, Anchor, AnchorError, NEW_CHAIN};
use crate::evidence::bundle::{self, BundleError, ExportHeader, Manifest};
use crate::evidence::sign::{self, KeyError};
use crate::evidence::verify::{check_chain_batched, head_before};
use crate::evidence::{Draft, EvidenceRecord, Head};
use crate::store::{Store, StoreError};

/// Why an operation on the chain could not be done.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The chain anchor.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    /// The database already holds a chain.
    #[error("database {path} already holds a chain (up to record {seq}); a new chain starts only in an empty database. Keep that file (it is evidence) and move it aside first, or restore it and start the agent on it")]
    NotEmpty {
        /// File.
        path: PathBuf,
        /// Its head.
        seq: u64,
    },
    /// A required text is missing.
    #[error("{0}")]
    Input(String),
}

/// What the check of a database's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbCheck {
    /// Every record kept verifies and links to the next; a gap at the start is explained by a
    /// `data_pruned` record of the chain.
    Intact {
        /// Records checked.
        records: u64,
        /// The site they belong to.
        site: String,
        /// The head.
        head: Head,
        /// Records up to this one were pruned after their retention (a record says so).
        pruned_through: Option<u64>,
    },
    /// The first thing wrong.
    Broken(String),
}

/// Checks the chain held by `store` against `key`: sequence, links, hashes and signatures of
/// every record, from the first kept one. A gap before it is accepted only when the chain holds
/// the `data_pruned` record that names it (deleted up to that record, with its hash); any other
/// gap is named as deleted.
pub fn check_database(
    store: &Store,
    key: &VerifyingKey,
    site: Option<&str>,
) -> Result<DbCheck, StoreError> {
    let Some(first) = store.evidence_range(0, 1)?.into_iter().next() else {
        return Ok(DbCheck::Intact {
            records: 0,
            site: site.unwrap_or_default().to_owned(),
            head: Head::EMPTY,
            pruned_through: None,
        });
    };
    let site = site.unwrap_or(&first.site).to_owned();
    let mut pruned_through = None;
    let mut head = Head::EMPTY;
    if first.seq > 1 {
        let through = first.seq - 1;
        let explained = store.pruning_record_for(through)?.is_some_and(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).is_ok_and(|b| {
                b["evidence_pruned_through_hash"].as_str() == Some(first.prev_hash.as_str())
            })
        });
        if !explained {
            return Ok(DbCheck::Broken(format!(
                "records 1–{through} are missing and no data_pruned record of the chain names them: they were deleted, not pruned after their retention"
            )));
        }
        let Some(start) = head_before(&first) else {
            return Ok(DbCheck::Broken(format!(
                "record {} has a malformed prev_hash",
                first.seq
            )));
        };
        head = start;
        pruned_through = Some(through);
    }
    let mut records = 0u64;
    loop {
        let batch = store.evidence_range(head.seq + 1, 10_000)?;
        if batch.is_empty() {
            break;
        }
        match check_chain_batched(&site, key, head, &batch) {
            Ok(h) => head = h,
            Err(e) => return Ok(DbCheck::Broken(format!("at record {}: {e}", e.seq()))),
        }
        records += batch.len() as u64;
    }
    let total = store.evidence_head()?;
    if total.seq != head.seq {
        return Ok(DbCheck::Broken(format!(
            "the chain stops at record {} but the database holds records up to {}",
            head.seq, total.seq
        )));
    }
    Ok(DbCheck::Intact {
        records,
        site,
        head,
        pruned_through,
    })
}

/// Writes the audit bundle of `[from_ms, to_ms]` of `config`'s site into `out`, signed with the
/// site key; `progress` is told how many records were written.
pub fn export_period(
    config: &SiteConfig,
    (from_ms, to_ms): (i64, i64),
    out: &Path,
    now_ms: i64,
    progress: &dyn Fn(u64),
) -> Result<Manifest, LedgerError> {
    let key = sign::load(&config.evidence.key_file)?;
    let store = Store::open_read_only(&config.store.path)?;
    let mut header = export_header(config, from_ms, to_ms);
    header.chain_head = store.evidence_head()?;
    header.exported_at_ms = now_ms;
    let bounds = store.evidence_seq_bounds(from_ms, to_ms)?.unwrap_or((0, 0));
    let manifest = bundle::export(
        &header,
        &key,
        bounds,
        &mut |seq| store.evidence_range(seq, 10_000).map_err(|e| e.to_string()),
        out,
        progress,
    )?;
    Ok(manifest)
}

/// A declared new chain.
#[derive(Debug, Clone)]
pub struct NewChain {
    /// Its first record.
    pub record: EvidenceRecord,
    /// The previous chain's head as the anchor knew it (`None`: lost).
    pub previous: Option<Anchor>,
}

/// Declares a new chain in `config`'s (empty) database: seals record 1, kind [`NEW_CHAIN`],
/// naming the previous chain's head from the anchor (or saying it is lost), what the audit
/// system acknowledged and holds, who and why; resets the audit cursor to the new chain; and
/// anchors the new chain.
pub fn declare_new_chain(
    config: &SiteConfig,
    reason: &str,
    by: &str,
    receiver_holds: Option<u64>,
    now_ms: i64,
) -> Result<NewChain, LedgerError> {
    let (reason, by) = (reason.trim(), by.trim());
    if reason.is_empty() || by.is_empty() {
        return Err(LedgerError::Input(
            "a new chain needs --reason (why the old one was lost) and --by (who declares it)"
                .to_owned(),
        ));
    }
    let key = sign::load(&config.evidence.key_file)?;
    let previous = anchor::read(&config.evidence.anchor_file)?;
    let mut store = Store::open(&config.store.path)?;
    let head = store.enable_evidence(&config.site.id, key)?;
    let anchor_new_chain = |store: &Store| -> Result<(), LedgerError> {
        let head = store.evidence_head()?;
        anchor::write(
            &config.evidence.anchor_file,
            &Anchor::new(&config.site.id, head, &config.store.path, now_ms),
        )?;
        Ok(())
    };
    if head.seq == 1 {
        // Declared before, and the anchor perhaps not written then: anchor it now.
        if let Some(record) = store.evidence_range(1, 1)?.into_iter().next() {
            if record.kind == NEW_CHAIN {
                anchor_new_chain(&store)?;
                return Ok(NewChain { record, previous });
            }
        }
    }
    if head.seq != 0 {
        return Err(LedgerError::NotEmpty {
            path: config.store.path.clone(),
            seq: head.seq,
        });
    }
    let acked = store.uplink_cursor(crate::uplink::audit::CURSOR)?;
    let body = serde_json::json!({
        "reason": reason,
        "by": by,
        "previous_chain": previous.as_ref().map(|a| serde_json::json!({
            "last_seq": a.seq,
            "last_hash": a.hash,
            "anchored_ms": a.updated_ms,
            "database": a.database,
        })),
        "previous_chain_lost": previous.is_none(),
        "audit_system_acknowledged": acked,
        "audit_system_holds": receiver_holds,
        "database": config.store.path.display().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    store.set_uplink_cursor(crate::uplink::audit::CURSOR, 0, now_ms)?;
    store.append(&[], &[], &[Draft::new(now_ms, NEW_CHAIN, "", &body)])?;
    let record = store
        .evidence_range(1, 1)?
        .into_iter()
        .next()
        .ok_or_else(|| LedgerError::Input("the new chain's first record was not stored".into()))?;
    anchor_new_chain(&store)?;
    Ok(NewChain { record, previous })
}

/// The header of a bundle of `config`'s site for `[from_ms, to_ms]` (chain head and export time
/// filled in at export).
fn export_header(config: &SiteConfig, from_ms: i64, to_ms: i64) -> ExportHeader {
    ExportHeader {
        site: config.site.id.clone(),
        plant: config.site.name.clone(),
        permit_number: config.site.permit_number.clone(),
        permit_class: format!("{:?}", config.site.permit_class).to_lowercase(),
        time_zone: config.site.time_zone,
        from_ms,
        to_ms,
        chain_head: crate::evidence::Head::EMPTY,
        exported_at_ms: 0,
    }
}
