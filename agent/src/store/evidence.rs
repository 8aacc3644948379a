//! The evidence chain in the database: sealing inside a commit, reading ranges, uplink cursors.

use std::path::Path;

use ed25519_dalek::SigningKey;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{sql_err, Store, StoreError};
use crate::evidence::{seal, Draft, EvidenceRecord, Head};

/// Seals records for one site with one key, from the head stored in the database.
#[derive(Debug)]
pub(crate) struct Sealer {
    site: String,
    key: SigningKey,
    pub(crate) head: Head,
}

impl Sealer {
    /// The site it seals for.
    pub(crate) fn site(&self) -> &str {
        &self.site
    }
}

fn hash_bytes(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Seals `drafts` after the sealer's head and inserts them; returns the head after them.
pub(crate) fn insert_sealed(
    tx: &Transaction<'_>,
    path: &Path,
    sealer: &Sealer,
    drafts: &[Draft],
) -> Result<Head, StoreError> {
    if drafts.is_empty() {
        return Ok(sealer.head);
    }
    let (records, head) =
        seal(&sealer.site, &sealer.key, sealer.head, drafts).map_err(|e| StoreError::Evidence {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    let mut insert = tx
        .prepare_cached("INSERT INTO evidence(seq, site, at_ms, kind, subject, body, prev_hash, hash, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        .map_err(sql_err(path, "sealing evidence"))?;
    for r in &records {
        insert
            .execute(params![
                r.seq as i64,
                r.site,
                r.at_ms,
                r.kind,
                r.subject,
                r.body,
                r.prev_hash,
                r.hash,
                r.signature
            ])
            .map_err(sql_err(path, "sealing evidence"))?;
    }
    Ok(head)
}

/// Deletes the oldest evidence records that are past `retention` at `now_ms` and acknowledged
/// by the audit system — only ever a prefix of the chain, and never its head. Returns how many
/// went and the last one deleted with its hash (for the `data_pruned` record, which is what
/// `evidence verify` accepts as the explanation of the gap). Without an audit uplink nothing is
/// acknowledged, so nothing is deleted. (The HJ 212 cursors count rule outputs, not evidence.)
pub(crate) fn prune_acknowledged(
    tx: &Transaction<'_>,
    path: &Path,
    now_ms: i64,
    retention: std::time::Duration,
) -> Result<(usize, Option<(u64, String)>), StoreError> {
    let sql = sql_err(path, "pruning acknowledged evidence past its retention");
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    // The last record that may go: before the first one still within its retention, no later
    // than the acknowledged position, and before the head.
    let through: Option<i64> = tx
        .query_row(
            "SELECT min(
                 coalesce((SELECT min(seq) FROM evidence WHERE at_ms >= ?1), (SELECT max(seq) FROM evidence) + 1) - 1,
                 (SELECT coalesce(max(acked_seq), 0) FROM uplink_cursors WHERE uplink = 'audit'),
                 (SELECT max(seq) FROM evidence) - 1)",
            params![cutoff],
            |r| r.get(0),
        )
        .map_err(&sql)?;
    let Some(through) = through.filter(|t| *t >= 1) else {
        return Ok((0, None));
    };
    let hash: Option<String> = tx
        .query_row(
            "SELECT hash FROM evidence WHERE seq = ?1",
            params![through],
            |r| r.get(0),
        )
        .optional()
        .map_err(&sql)?;
    let Some(hash) = hash else {
        // Already gone (pruned before): nothing new to delete.
        return Ok((0, None));
    };
    let deleted = tx
        .execute("DELETE FROM evidence WHERE seq <= ?1", params![through])
        .map_err(&sql)?;
    Ok((deleted, Some((through as u64, hash))))
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<EvidenceRecord> {
    Ok(EvidenceRecord {
        // A sequence number below 1 is not one the chain can hold; read it as 0, which every
        // check names as out of order.
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        site: row.get(1)?,
        at_ms: row.get(2)?,
        kind: row.get(3)?,
        subject: row.get(4)?,
        body: row.get(5)?,
        prev_hash: row.get(6)?,
        hash: row.get(7)?,
        signature: row.get(8)?,
    })
}

const COLUMNS: &str = "seq, site, at_ms, kind, subject, body, prev_hash, hash, signature";

impl Store {
    /// Turns on evidence sealing for `site` with `key`, continuing the stored chain. A database
    /// whose chain belongs to another site is refused.
    pub fn enable_evidence(&mut self, site: &str, key: SigningKey) -> Result<Head, StoreError> {
        let head = self.evidence_head()?;
        if let Some(last) = self.evidence_range(head.seq.max(1), 1)?.first() {
            if last.site != site {
                return Err(StoreError::Evidence {
                    path: self.path.clone(),
                    why: format!("its evidence chain belongs to site '{}', not '{site}'; use a new database for a new site", last.site),
                });
            }
        }
        self.sealer = Some(Sealer {
            site: site.to_owned(),
            key,
            head,
        });
        Ok(head)
    }

    /// The last record's sequence number and hash.
    pub fn evidence_head(&self) -> Result<Head, StoreError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql("reading the evidence head"))?;
        match row {
            None => Ok(Head::EMPTY),
            Some((seq, hash)) => {
                let hash = hash_bytes(&hash).ok_or_else(|| StoreError::Evidence {
                    path: self.path.clone(),
                    why: format!("record {seq} has a malformed hash"),
                })?;
                Ok(Head {
                    seq: seq as u64,
                    hash,
                })
            }
        }
    }

    /// Up to `limit` records from `from_seq` on, in order.
    pub fn evidence_range(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM evidence WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(self.sql("reading evidence"))?;
        let rows = stmt
            .query_map(params![from_seq as i64, limit as i64], record)
            .map_err(self.sql("reading evidence"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("reading evidence"))
    }

    /// Records with `at_ms` in `[from_ms, to_ms]`, in chain order.
    pub fn evidence_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM evidence WHERE seq BETWEEN (SELECT coalesce(min(seq), 0) FROM evidence WHERE at_ms >= ?1) AND (SELECT coalesce(max(seq), -1) FROM evidence WHERE at_ms <= ?2) ORDER BY seq"))
            .map_err(self.sql("reading evidence"))?;
        let rows = stmt
            .query_map(params![from_ms, to_ms], record)
            .map_err(self.sql("reading evidence"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("reading evidence"))
    }

    /// The first and last sequence numbers of the records with `at_ms` in `[from_ms, to_ms]`
    /// (the run of the chain between the first record at or after `from_ms` and the last at or
    /// before `to_ms`), if there are any.
    pub fn evidence_seq_bounds(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT (SELECT min(seq) FROM evidence WHERE at_ms >= ?1), (SELECT max(seq) FROM evidence WHERE at_ms <= ?2)",
                params![from_ms, to_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql("reading evidence"))?;
        Ok(match (first, last) {
            (Some(f), Some(l)) if f >= 1 && l >= f => Some((f as u64, l as u64)),
            _ => None,
        })
    }

    /// The `data_pruned` record that says evidence was deleted up to record `through` (the
    /// explanation a gap at the start of the chain needs).
    pub fn pruning_record_for(&self, through: u64) -> Result<Option<EvidenceRecord>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM evidence WHERE kind = 'data_pruned' AND json_valid(body) AND json_extract(body, '$.evidence_pruned_through_seq') = ?1 ORDER BY seq LIMIT 1"),
                params![through as i64],
                record,
            )
            .optional()
            .map_err(self.sql("reading evidence"))
    }

    /// The hash of record `seq` if it is still held; for 0 (the chain's start) the genesis
    /// hash, if record 1 is still held (what the chain can be sent again from).
    pub fn evidence_hash_at(&self, seq: u64) -> Result<Option<String>, StoreError> {
        let wanted = seq.max(1);
        let held = self
            .evidence_range(wanted, 1)?
            .into_iter()
            .find(|r| r.seq == wanted);
        Ok(held.map(|r| if seq == 0 { r.prev_hash } else { r.hash }))
    }

    /// The newest record of a kind.
    pub fn last_evidence_of(&self, kind: &str) -> Result<Option<EvidenceRecord>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM evidence WHERE kind = ?1 ORDER BY seq DESC LIMIT 1"
                ),
                params![kind],
                record,
            )
            .optional()
            .map_err(self.sql("reading evidence"))
    }

    /// The sequence number an uplink has acknowledged (0 if none).
    pub fn uplink_cursor(&self, uplink: &str) -> Result<u64, StoreError> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT acked_seq FROM uplink_cursors WHERE uplink = ?1",
                params![uplink],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql("reading an uplink cursor"))?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Stores an uplink's acknowledged position.
    pub fn set_uplink_cursor(
        &mut self,
        uplink: &str,
        acked_seq: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        super::integrity::check_identity(&self.path, self.identity)?;
        self.conn
            .execute(
                "INSERT INTO uplink_cursors(uplink, acked_seq, updated_ms) VALUES (?1, ?2, ?3) ON CONFLICT(uplink) DO UPDATE SET acked_seq = excluded.acked_seq, updated_ms = excluded.updated_ms",
                params![uplink, acked_seq as i64, now_ms],
            )
            .map(|_| ())
            .map_err(self.sql("storing an uplink cursor"))
    }
}
