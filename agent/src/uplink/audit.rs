//! The audit uplink: delivers the evidence chain to the audit system over HTTPS.
//!
//! # Protocol (version 1)
//!
//! `POST {url}/v1/sites/{site}/evidence` with `Authorization: Bearer <token>` and a JSON body
//! [`UploadBatch`] (gzip-compressed with `Content-Encoding: gzip` unless turned off): the site,
//! its public key (hex) and consecutive records in chain order. The receiver answers with an
//! [`UploadAnswer`]:
//!
//! - `200`: it now holds every record up to `stored_through`. Records it already held are
//!   ignored, so a repeated batch is harmless (idempotent by site + seq).
//! - `409`: the batch does not continue what it holds; it holds up to `stored_through` and
//!   expects the next one — the agent resends from there (also after the receiver lost records).
//! - `422`: a record fails verification (`seq`, `error` say which and why). The agent cannot
//!   repair the past: it logs an ERROR (an operator must act) and retries slowly.
//! - anything else (connection refused, 5xx, timeout, a cut-off answer): retried with capped,
//!   jittered backoff.
//!
//! # Guarantees
//!
//! At least once and in order: the acknowledged position (cursor) is stored in the database only
//! after an answer, so after a crash the agent resends from the last stored position at worst. A
//! down audit system means a growing backlog (shown on the status page), never a lost record:
//! records are kept after acknowledgement for the evidence retention period.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::AuditUplinkConfig;
use crate::evidence::EvidenceRecord;
use crate::poll::bus::Backoff;
use crate::state::PlantState;
use crate::store::{SharedReader, Store, StoreError, StoreHandle};

/// The name of this uplink's cursor in the store.
pub const CURSOR: &str = "audit";

/// A request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadBatch {
    /// Site id.
    pub site: String,
    /// The site's public key, hex.
    pub public_key: String,
    /// Consecutive records.
    pub records: Vec<EvidenceRecord>,
}

/// An answer body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadAnswer {
    /// The receiver holds every record up to this one.
    pub stored_through: u64,
    /// Hash of that record, hex.
    #[serde(default)]
    pub head_hash: Option<String>,
    /// What was wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// The record that was wrong.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Stored (200).
    Stored(u64),
    /// Out of step (409): resend after `stored_through`.
    OutOfStep(u64),
    /// Refused a record (422).
    Rejected(UploadAnswer),
    /// No usable answer.
    Failed(String),
}

/// The acknowledged position after a delivery, from the position before and our chain head.
/// Pure, so the model test can drive it.
pub fn next_acked(acked: u64, head: u64, delivery: &Delivery) -> u64 {
    match delivery {
        // The receiver is the judge of what it holds: above our position (a cursor lost in a
        // crash) or below it (the receiver lost records) alike. Never beyond our own chain.
        Delivery::Stored(through) | Delivery::OutOfStep(through) => (*through).min(head),
        Delivery::Rejected(answer) => answer.stored_through.min(head),
        Delivery::Failed(_) => acked,
    }
}

/// Why the uplink could not start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The HTTP client could not be built.
    #[error("audit uplink: cannot set up HTTPS: {0}")]
    Client(String),
}

/// Delivers the chain until `stop`; finishes a batch in flight before stopping.
pub struct AuditUplink {
    config: AuditUplinkConfig,
    site: String,
    public_key: String,
    store: StoreHandle,
    state: PlantState,
    client: reqwest::Client,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    reader: SharedReader,
}

impl AuditUplink {
    /// An uplink for `site` reading records from the database at `db`.
    pub fn new(
        config: AuditUplinkConfig,
        site: String,
        public_key: String,
        db: PathBuf,
        store: StoreHandle,
        state: PlantState,
    ) -> Result<Self, UplinkError> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &config.client_identity_file {
            let pem = std::fs::read(path).map_err(|e| {
                UplinkError::Client(format!(
                    "cannot read client certificate {}: {e}",
                    path.display()
                ))
            })?;
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                UplinkError::Client(format!("client certificate {}: {e}", path.display()))
            })?;
            builder = builder.identity(identity);
        }
        let client = builder
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("sealwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UplinkError::Client(e.to_string()))?;
        Ok(AuditUplink {
            config,
            site,
            public_key,
            store,
            state,
            client,
            acked: Default::default(),
            reader: SharedReader::new(&db),
        })
    }

    /// The position the audit system has acknowledged, as it changes.
    pub fn acked(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.acked.clone()
    }

    fn endpoint(&self) -> String {
        format!("{}/v1/sites/{}/evidence", self.config.url, self.site)
    }

    /// Reads (acked cursor, head seq, next batch) from the database.
    async fn load(&self, acked: Option<u64>) -> Result<(u64, u64, Vec<EvidenceRecord>), String> {
        let batch = self.config.batch_records;
        // One read-only connection, kept across loads (the idle loop asks three times a second).
        self.reader
            .read(move |store| read_batch(store, acked, batch))
            .await
            .map_err(|e| e.to_string())
    }

    async fn deliver(&self, records: Vec<EvidenceRecord>) -> Delivery {
        let body = UploadBatch {
            site: self.site.clone(),
            public_key: self.public_key.clone(),
            records,
        };
        let json = match serde_json::to_vec(&body) {
            Ok(j) => j,
            Err(e) => return Delivery::Failed(format!("cannot encode the batch: {e}")),
        };
        let mut request = self
            .client
            .post(self.endpoint())
            .header("content-type", "application/json");
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let request = if self.config.gzip {
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            match gz.write_all(&json).and_then(|()| gz.finish()) {
                Ok(bytes) => request.header("content-encoding", "gzip").body(bytes),
                Err(e) => return Delivery::Failed(format!("cannot compress the batch: {e}")),
            }
        } else {
            request.body(json)
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Delivery::Failed(format!("{}: {e}", self.config.url)),
        };
        let status = response.status();
        let answer: Result<UploadAnswer, String> = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("unreadable answer ({status}): {e}")),
            Err(e) => Err(format!("answer cut off ({status}): {e}")),
        };
        match (status.as_u16(), answer) {
            (200, Ok(a)) => Delivery::Stored(a.stored_through),
            (409, Ok(a)) => Delivery::OutOfStep(a.stored_through),
            (422, Ok(a)) => Delivery::Rejected(a),
            (code, Ok(a)) => {
                Delivery::Failed(format!("HTTP {code}: {}", a.error.unwrap_or_default()))
            }
            (_, Err(e)) => Delivery::Failed(e),
        }
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), self.config.retry_max);
        let mut acked: Option<u64> = None;
        let mut failing = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let (cursor, head, records) = match self.load(acked).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "audit uplink cannot read the evidence");
                    if sleep_or_stop(&stop, backoff.next_wait()).await {
                        return;
                    }
                    continue;
                }
            };
            acked = Some(cursor);
            self.acked
                .store(cursor, std::sync::atomic::Ordering::Relaxed);
            self.state
                .set_evidence_backlog(Some(head.saturating_sub(cursor)));
            if records.is_empty() {
                if sleep_or_stop(&stop, Duration::from_millis(300)).await {
                    return;
                }
                continue;
            }
            let last = records.last().map_or(cursor, |r| r.seq);
            let started = Instant::now();
            let delivery = self.deliver(records).await;
            let next = next_acked(cursor, head, &delivery);
            match &delivery {
                Delivery::Stored(_) | Delivery::OutOfStep(_) => {
                    if failing {
                        tracing::info!(url = %self.config.url, acked = next, "audit system reachable again");
                        failing = false;
                    }
                    if matches!(delivery, Delivery::OutOfStep(_)) || next < cursor {
                        tracing::warn!(
                            acked_before = cursor,
                            receiver_holds = next,
                            "audit system is out of step; resending from what it holds"
                        );
                    }
                    self.state.set_upload_latency(started.elapsed());
                    backoff.reset();
                }
                Delivery::Rejected(answer) => {
                    tracing::error!(seq = ?answer.seq, error = ?answer.error, "audit system refused evidence; an operator must look at the chain (sealwatch evidence verify)");
                }
                Delivery::Failed(why) => {
                    if !failing {
                        tracing::warn!(url = %self.config.url, error = %why, backlog = head - cursor, "audit system unreachable; evidence is kept and retried");
                        failing = true;
                    }
                }
            }
            if next != cursor {
                if self.store.set_cursor(CURSOR, next).await.is_err() {
                    return;
                }
                acked = Some(next);
                self.acked.store(next, std::sync::atomic::Ordering::Relaxed);
                self.state
                    .set_evidence_backlog(Some(head.saturating_sub(next)));
            }
            let progressed = next >= last;
            let resend_now = matches!(delivery, Delivery::OutOfStep(_)) && next != cursor;
            if !progressed && !resend_now && sleep_or_stop(&stop, backoff.next_wait()).await {
                return;
            }
        }
    }
}

/// (acked cursor, head seq, next batch) from an open database.
fn read_batch(
    store: &Store,
    acked: Option<u64>,
    batch: usize,
) -> Result<(u64, u64, Vec<EvidenceRecord>), StoreError> {
    let acked = match acked {
        Some(a) => a,
        None => store.uplink_cursor(CURSOR)?,
    };
    let head = store.evidence_head()?.seq;
    let records = store.evidence_range(acked + 1, batch)?;
    Ok((acked, head, records))
}

/// Sleeps; true if `stop` came first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
