//! The audit uplink: delivers the evidence chain to the audit system over HTTPS.
//!
//! # Protocol (version 1)
//!
//! `POST {url}/v1/sites/{site}/evidence` with `Authorization: Bearer <token>` and a JSON body
//! [`UploadBatch`] (gzip-compressed with `Content-Encoding: gzip` unless turned off): the site,
//! its public key (hex), a fresh request id and consecutive records in chain order. The
//! receiver answers with an [`UploadAnswer`] that echoes the request id and names a record it
//! holds (`stored_through`) **with that record's hash** (`head_hash`), which is its proof:
//!
//! - `200`: it holds every record of the batch up to `stored_through` (the batch's last record
//!   when all went well). Records it already held are ignored, so a repeated batch is harmless
//!   (idempotent by site + seq).
//! - `409`: the batch does not continue what it holds; it holds up to `stored_through`, before
//!   the batch, and expects the next one — the agent resends from there (after the receiver lost
//!   records).
//! - `422`: a record fails verification (`seq`, `error` say which and why); `stored_through`
//!   names what it holds. The agent cannot repair the past: it logs an ERROR (an operator must
//!   act) and retries slowly.
//! - anything else (connection refused, 5xx, timeout, a cut-off answer): retried with capped,
//!   jittered backoff. Redirects are not followed; an answer body longer than
//!   [`MAX_ANSWER_BYTES`] is not read.
//!
//! `GET {url}/v1/sites/{site}/status` answers an [`UploadAnswer`] with the receiver's head; the
//! agent asks it before it starts a chain at record 1 ([`receiver_head`]).
//!
//! # Guarantees
//!
//! At least once and in order: the acknowledged position (cursor) is stored in the database only
//! after an answer, so after a crash the agent resends from the last stored position at worst.
//! The cursor moves only to a record the receiver proves it holds ([`delivery`]): a receiver
//! that claims more than it was sent, echoes a wrong hash or contradicts itself is reported (an
//! ERROR, `sealwatch_audit_protocol_errors_total`, an alarm on the status page) and moves
//! nothing. A down audit system means a growing backlog (shown on the status page), never a lost
//! record: records are kept after acknowledgement for the evidence retention period.

pub mod delivery;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AuditUplinkConfig;
use crate::evidence::EvidenceRecord;
use crate::state::PlantState;
use crate::store::{SharedReader, Store, StoreError, StoreHandle};
use delivery::{settle, ProtocolError, Status};

/// The name of this uplink's cursor in the store.
pub const CURSOR: &str = "audit";

/// The longest answer body read; a longer one is a protocol error (an answer is a few hundred
/// bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadBatch {
    /// A fresh id for this request, which the answer echoes.
    #[serde(default)]
    pub request: String,
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
    /// Hash of that record, hex: the receiver's proof that it holds it.
    #[serde(default)]
    pub head_hash: Option<String>,
    /// What was wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// The record that was wrong.
    #[serde(default)]
    pub seq: Option<u64>,
    /// The id of the request answered.
    #[serde(default)]
    pub request: Option<String>,
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// An answer of the protocol.
    Answered(Status, UploadAnswer),
    /// No answer (connection, timeout, 5xx, a cut-off body): retried with backoff.
    Failed(String),
    /// Something that is not an answer of the protocol.
    Unusable(String),
}

/// Why the uplink could not start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The HTTP client could not be built.
    #[error("audit uplink: cannot set up HTTPS: {0}")]
    Client(String),
}

/// The HTTP client of the uplink: its TLS identity, timeouts, and no redirects.
fn http_client(config: &AuditUplinkConfig) -> Result<reqwest::Client, UplinkError> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &config.client_identity_file {
        let pem = crate::bounded::read(path, crate::bounded::SECRET_BYTES).map_err(|e| {
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
    builder
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sealwatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UplinkError::Client(e.to_string()))
}

/// Reads an answer body of at most `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Attempt> {
    let status = response.status();
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Attempt::Unusable(format!(
            "the answer ({status}) announces {} bytes, more than the {limit} an answer may have; not read",
            response.content_length().unwrap_or_default()
        )));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(Attempt::Unusable(format!(
                        "the answer ({status}) is longer than the {limit} bytes an answer may have; not read further"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(Attempt::Failed(format!("answer cut off ({status}): {e}"))),
        }
    }
}

/// Turns a response into an attempt.
async fn attempt_of(response: reqwest::Response) -> Attempt {
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.escape_debug().to_string())
            .unwrap_or_default();
        return Attempt::Unusable(format!(
            "the audit system redirects ({status}) to '{to}'; redirects are not followed — set [uplink.audit].url to the address that answers"
        ));
    }
    let bytes = match read_limited(response, MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(attempt) => return attempt,
    };
    let parsed = serde_json::from_slice::<UploadAnswer>(&bytes);
    match (Status::of_code(status.as_u16()), parsed) {
        (Some(s), Ok(answer)) => Attempt::Answered(s, answer),
        (Some(_), Err(e)) => Attempt::Unusable(format!("unreadable answer ({status}): {e}")),
        (None, parsed) => {
            let why = parsed.ok().and_then(|a| a.error).unwrap_or_default();
            Attempt::Failed(format!("HTTP {status} {}", why.escape_debug()))
        }
    }
}

/// What the audit system holds of `site`'s chain (`GET …/status`): its head, if it answers.
pub async fn receiver_head(config: &AuditUplinkConfig, site: &str) -> Result<UploadAnswer, String> {
    let client = http_client(config).map_err(|e| e.to_string())?;
    let mut request = client.get(format!("{}/v1/sites/{site}/status", config.url));
    if let Some(token) = &config.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{}: {e}", config.url))?;
    match attempt_of(response).await {
        Attempt::Answered(Status::Stored, answer) => Ok(answer),
        Attempt::Answered(status, _) => Err(format!("unexpected answer {status:?}")),
        Attempt::Failed(why) | Attempt::Unusable(why) => Err(why),
    }
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
        let client = http_client(&config)?;
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

    /// The agent's own hash of record `seq` ([`Store::evidence_hash_at`]).
    async fn hash_of(&self, seq: u64) -> Result<Option<String>, String> {
        self.reader
            .read(move |store| store.evidence_hash_at(seq))
            .await
            .map_err(|e: StoreError| e.to_string())
    }

    async fn send(&self, request: &str, records: &[EvidenceRecord]) -> Attempt {
        let body = UploadBatch {
            request: request.to_owned(),
            site: self.site.clone(),
            public_key: self.public_key.clone(),
            records: records.to_vec(),
        };
        let json = match serde_json::to_vec(&body) {
            Ok(j) => j,
            Err(e) => return Attempt::Failed(format!("cannot encode the batch: {e}")),
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
                Err(e) => return Attempt::Failed(format!("cannot compress the batch: {e}")),
            }
        } else {
            request.body(json)
        };
        match request.send().await {
            Ok(response) => attempt_of(response).await,
            Err(e) => Attempt::Failed(format!("{}: {e}", self.config.url)),
        }
    }

    /// Sends one batch and settles the answer: `None` (and `Err` with why) when nothing came
    /// back; `Some(status)` and the new position, or the protocol error, otherwise.
    async fn deliver(
        &self,
        records: &[EvidenceRecord],
    ) -> (Option<Status>, Result<Result<u64, ProtocolError>, String>) {
        let request = format!("{:016x}", fastrand::u64(..));
        match self.send(&request, records).await {
            Attempt::Failed(why) => (None, Err(why)),
            Attempt::Unusable(why) => (None, Ok(Err(ProtocolError::Unusable(why)))),
            Attempt::Answered(status, answer) => {
                if status == Status::Refused {
                    tracing::error!(seq = ?answer.seq, error = ?answer.error.as_deref().map(str::escape_debug).map(|e| e.to_string()), "audit system refused evidence; an operator must look at the chain (sealwatch evidence verify)");
                    self.state.note_audit_problem(format!(
                        "audit system refused record {}: {}",
                        answer.seq.map_or("?".to_owned(), |s| s.to_string()),
                        answer.error.as_deref().unwrap_or("").escape_debug()
                    ));
                }
                // The agent's own hash of an earlier record the answer names, read only then.
                let first = records.first().map_or(0, |r| r.seq);
                let through = answer.stored_through;
                let ours = if through.saturating_add(1) < first {
                    match self.hash_of(through).await {
                        Ok(h) => h,
                        Err(e) => return (Some(status), Err(e)),
                    }
                } else {
                    None
                };
                (
                    Some(status),
                    Ok(settle(status, &answer, &request, records, |_| ours)),
                )
            }
        }
    }

    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), self.config.retry_max);
        let mut acked: Option<u64> = None;
        let mut failing = false;
        let mut last_protocol: Option<(ProtocolError, Instant)> = None;
        loop {
            if stop.is_cancelled() {
                return;
            }
            // A database file replaced under the agent is not its chain: send nothing from it.
            if self.state.store_health().get().replaced.is_some() {
                if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
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
            let Some(last) = records.last().map(|r| r.seq) else {
                if sleep_or_stop(&stop, Duration::from_millis(300)).await {
                    return;
                }
                continue;
            };
            let started = Instant::now();
            let (status, verdict) = self.deliver(&records).await;
            let next = match verdict {
                Err(why) => {
                    if !failing {
                        tracing::warn!(url = %self.config.url, error = %why.escape_debug(), backlog = head.saturating_sub(cursor), "audit system unreachable; evidence is kept and retried");
                        failing = true;
                    }
                    cursor
                }
                Ok(Err(error)) => {
                    self.state.note_audit_protocol_error(error.to_string());
                    // One ERROR per kind of lie a minute; every one is counted.
                    let repeat = last_protocol.as_ref().is_some_and(|(e, at)| {
                        e == &error && at.elapsed() < Duration::from_secs(60)
                    });
                    if !repeat {
                        tracing::error!(url = %self.config.url, error = %error, cursor, "audit system's answer proves nothing; the acknowledged position stays and the records are sent again");
                        last_protocol = Some((error, Instant::now()));
                    }
                    cursor
                }
                Ok(Ok(next)) => {
                    if failing {
                        tracing::info!(url = %self.config.url, acked = next, "audit system reachable again");
                        failing = false;
                    }
                    if next < cursor {
                        tracing::warn!(
                            acked_before = cursor,
                            receiver_holds = next,
                            "audit system holds less than it acknowledged before; resending from what it holds"
                        );
                    }
                    if status == Some(Status::Stored) {
                        self.state.set_upload_latency(started.elapsed());
                        self.state.clear_audit_problem();
                        backoff.reset();
                    }
                    next
                }
            };
            if next != cursor {
                if self.store.set_cursor(CURSOR, next).await.is_err() {
                    return;
                }
                acked = Some(next);
                self.acked.store(next, std::sync::atomic::Ordering::Relaxed);
                self.state
                    .set_evidence_backlog(Some(head.saturating_sub(next)));
            }
            // Straight on after a batch fully stored or a rewind; otherwise wait.
            let progressed = status == Some(Status::Stored) && next >= last;
            let rewound = next < cursor;
            if !progressed && !rewound && sleep_or_stop(&stop, backoff.next_wait()).await {
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
    let mut records = store.evidence_range(acked + 1, batch)?;
    // Only consecutive records from the cursor on: a gap (a record deleted from the database)
    // ends the batch, and one at the start sends nothing (the receiver could not take it).
    let run = records
        .iter()
        .zip(acked + 1..)
        .take_while(|(r, expected)| r.seq == *expected)
        .count();
    if run < records.len() {
        tracing::error!(
            missing = acked + 1 + run as u64,
            "an evidence record is missing from the database; delivery stops before it (sealwatch evidence verify names the gap)"
        );
        records.truncate(run);
    }
    Ok((acked, head, records))
}

/// Sleeps; true if `stop` came first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
