//! The stand-in audit system: receives evidence uploads like the real one would, verifies chain
//! continuity and every signature against the site's registered public key, stores what it
//! accepts in its own SQLite database, and can misbehave on command so the agent's delivery
//! guarantees can be tested.
//!
//! Protocol: see `sealwatch_agent::uplink::audit`. Faults (stdin commands of
//! `sealwatch-sim audit`): `refuse` (stop listening: connections are refused), `accept`
//! (listen again), `fail N` (answer the next N requests with 500), `slow MS` (delay every answer),
//! `cut N` (cut the next N answers off mid-body), `forget N` (lose the last N records), and
//! lies that a broken or hostile audit system could tell: `lie-through N` (claim to hold up to
//! record N), `lie-hash` (echo a wrong hash), `lie-refuse N` (answer 422 claiming record N),
//! `huge MB` (answer with a body of that many MiB), `redirect URL` (answer 307 to URL) — each
//! lie replaces the one before; `ok` (no faults).
//!
//! A batch whose records differ from ones already held is a fork and refused (422), unless its
//! record 1 is a signed `new_chain` declaration: then the chain held so far is archived and the
//! declared chain is taken from record 1.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::VerifyingKey;
use rusqlite::{params, Connection, OptionalExtension};
use sealwatch_agent::evidence::anchor::NEW_CHAIN;
use sealwatch_agent::evidence::verify::{check_chain_batched, check_next};
use sealwatch_agent::evidence::{EvidenceRecord, Head};
use sealwatch_agent::uplink::audit::{UploadAnswer, UploadBatch};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Audit system failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Its database.
    #[error("audit database {path}: {source}")]
    Db {
        /// File.
        path: String,
        /// Cause.
        source: rusqlite::Error,
    },
    /// Listening.
    #[error("audit system cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Injected misbehaviour.
#[derive(Debug, Default, Clone)]
struct Faults {
    fail: u32,
    cut: u32,
    slow_ms: u64,
    lie: Option<Lie>,
}

/// How the answers lie (one at a time: a new lie replaces the one before).
#[derive(Debug, Clone)]
enum Lie {
    /// Claims to hold up to this record.
    Through(u64),
    /// Echoes a wrong hash.
    Hash,
    /// Answers 422 claiming this record.
    Refuse(u64),
    /// Answers with a body of this many MiB.
    Huge(u64),
    /// Answers 307 to this URL.
    Redirect(String),
}

/// The receiving side: registered site and key, stored chain.
pub struct Receiver {
    conn: Connection,
    site: String,
    key: VerifyingKey,
    head: Head,
    faults: Faults,
    token: Option<String>,
}

fn head_of(conn: &Connection) -> rusqlite::Result<Head> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => Head::EMPTY,
        Some((seq, hash)) => Head {
            seq: seq as u64,
            hash: hex::decode(hash)
                .ok()
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 32]),
        },
    })
}

impl Receiver {
    /// Opens (creating) the audit database for one registered site.
    pub fn open(
        path: &Path,
        site: &str,
        key: VerifyingKey,
        token: Option<String>,
    ) -> Result<Receiver, AuditError> {
        let db = |source| AuditError::Db {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, site TEXT NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL); CREATE TABLE IF NOT EXISTS archived_records (chain INTEGER NOT NULL, seq INTEGER NOT NULL, site TEXT NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (chain, seq));")
            .map_err(db)?;
        let head = head_of(&conn).map_err(db)?;
        Ok(Receiver {
            conn,
            site: site.to_owned(),
            key,
            head,
            faults: Faults::default(),
            token,
        })
    }

    /// What it holds.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The hash of a stored record (the genesis hash for 0).
    fn hash_at(&self, seq: u64) -> Option<String> {
        if seq == 0 {
            return Some(hex::encode(Head::EMPTY.hash));
        }
        self.conn
            .query_row(
                "SELECT hash FROM records WHERE seq = ?1",
                params![seq as i64],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }

    /// Archives the chain held so far and starts from nothing (a declared new chain).
    fn archive(&mut self) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let chain: i64 = tx.query_row(
            "SELECT coalesce(max(chain), 0) + 1 FROM archived_records",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO archived_records(chain, seq, site, hash, record) SELECT ?1, seq, site, hash, record FROM records",
            params![chain],
        )?;
        tx.execute("DELETE FROM records", [])?;
        tx.commit()?;
        self.head = Head::EMPTY;
        Ok(chain as u64)
    }

    /// Chains archived after a declared new chain.
    pub fn archived_chains(&self) -> u64 {
        self.conn
            .query_row(
                "SELECT coalesce(max(chain), 0) FROM archived_records",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_or(0, |n| n as u64)
    }

    /// Whether `batch` opens with a valid declaration of a new chain that differs from the
    /// chain held: record 1 of kind `new_chain`, signed with the site key, the batch a valid
    /// chain from there, never taken before, and naming as the previous chain the one held here
    /// (its last record and hash, as far as the agent knew it) or saying it is lost.
    fn declares_new_chain(&self, batch: &UploadBatch) -> bool {
        let Some(first) = batch.records.first() else {
            return false;
        };
        if first.seq != 1
            || first.kind != NEW_CHAIN
            || self.head.seq == 0
            || self.hash_at(1).as_deref() == Some(first.hash.as_str())
            || check_chain_batched(&self.site, &self.key, Head::EMPTY, &batch.records).is_err()
        {
            return false;
        }
        let taken_before: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM archived_records WHERE seq = 1 AND hash = ?1",
                params![first.hash],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|n| n > 0);
        if taken_before {
            return false;
        }
        let body: serde_json::Value = serde_json::from_str(&first.body).unwrap_or_default();
        if body["previous_chain_lost"] == serde_json::Value::Bool(true) {
            return true;
        }
        let previous = &body["previous_chain"];
        match (
            previous["last_seq"].as_u64(),
            previous["last_hash"].as_str(),
        ) {
            (Some(seq), Some(hash)) => {
                seq <= self.head.seq && self.hash_at(seq).as_deref() == Some(hash)
            }
            _ => false,
        }
    }

    /// Handles one upload; returns the HTTP status and answer. The answer names the last record
    /// of the batch it holds (or, holding none of it, its head) with that record's hash.
    pub fn receive(&mut self, batch: &UploadBatch) -> (StatusCode, UploadAnswer) {
        if self.declares_new_chain(batch) {
            match self.archive() {
                Ok(chain) => tracing::info!(
                    chain,
                    "a new chain was declared; the previous one is archived"
                ),
                Err(e) => {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        UploadAnswer {
                            error: Some(format!("cannot archive the previous chain: {e}")),
                            ..UploadAnswer::default()
                        },
                    )
                }
            }
        }
        let (status, mut answer) = self.receive_records(batch);
        answer.request = Some(batch.request.clone());
        // Name the batch's last record it holds, not records beyond what was sent.
        if let Some(last) = batch.records.last().map(|r| r.seq) {
            if answer.stored_through > last {
                answer.stored_through = last;
                answer.head_hash = self.hash_at(last);
            }
        }
        (status, answer)
    }

    fn receive_records(&mut self, batch: &UploadBatch) -> (StatusCode, UploadAnswer) {
        let answer = |head: Head, error: Option<String>, seq: Option<u64>| UploadAnswer {
            stored_through: head.seq,
            head_hash: Some(hex::encode(head.hash)),
            error,
            seq,
            request: Some(batch.request.clone()),
        };
        if batch.site != self.site {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                answer(
                    self.head,
                    Some(format!("site '{}' is not registered here", batch.site)),
                    None,
                ),
            );
        }
        if batch.public_key != hex::encode(self.key.to_bytes()) {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                answer(
                    self.head,
                    Some(
                        "the batch names a public key other than the one registered for this site"
                            .to_owned(),
                    ),
                    None,
                ),
            );
        }
        // Fast path: the batch continues the chain exactly; verify it with one batched
        // signature check and store it whole. Anything else takes the record-by-record path
        // below, which names the first problem.
        let new: Vec<EvidenceRecord> = batch
            .records
            .iter()
            .filter(|r| r.seq > self.head.seq)
            .cloned()
            .collect();
        let contiguous = new.first().is_some_and(|r| r.seq == self.head.seq + 1)
            && new
                .windows(2)
                .all(|w| w[0].seq.checked_add(1) == Some(w[1].seq));
        if contiguous && batch.records.iter().all(|r| r.seq > self.head.seq) {
            if let Ok(head) = check_chain_batched(&self.site, &self.key, self.head, &new) {
                if let Ok(tx) = self.conn.transaction() {
                    let stored = new.iter().all(|r| {
                        let json = serde_json::to_string(r).unwrap_or_default();
                        tx.execute(
                            "INSERT INTO records(seq, site, hash, record) VALUES (?1, ?2, ?3, ?4)",
                            params![r.seq as i64, r.site, r.hash, json],
                        )
                        .is_ok()
                    });
                    if stored && tx.commit().is_ok() {
                        self.head = head;
                        return (StatusCode::OK, answer(head, None, None));
                    }
                }
            }
        }
        let Ok(tx) = self.conn.transaction() else {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                answer(self.head, Some("storage unavailable".to_owned()), None),
            );
        };
        let mut head = self.head;
        let mut result = (StatusCode::OK, None, None);
        for r in &batch.records {
            if r.seq <= head.seq {
                let stored: Option<String> = tx
                    .query_row(
                        "SELECT hash FROM records WHERE seq = ?1",
                        params![r.seq as i64],
                        |row| row.get(0),
                    )
                    .optional()
                    .unwrap_or(None);
                if stored.as_deref() != Some(r.hash.as_str()) {
                    result = (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(format!(
                            "record {} differs from the one already stored: this is a fork of the chain held here (a database deleted or replaced?); a new chain must be declared (sealwatch evidence new-chain), not started silently",
                            r.seq
                        )),
                        Some(r.seq),
                    );
                    break;
                }
                continue; // a duplicate: harmless
            }
            if r.seq != head.seq + 1 {
                result = (
                    StatusCode::CONFLICT,
                    Some(format!("expected record {}, got {}", head.seq + 1, r.seq)),
                    None,
                );
                break;
            }
            match check_next(&self.site, &self.key, head, r) {
                Ok(next) => {
                    let json = serde_json::to_string(r).unwrap_or_default();
                    if tx
                        .execute(
                            "INSERT INTO records(seq, site, hash, record) VALUES (?1, ?2, ?3, ?4)",
                            params![r.seq as i64, r.site, r.hash, json],
                        )
                        .is_err()
                    {
                        result = (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            Some("storage failed".to_owned()),
                            None,
                        );
                        break;
                    }
                    head = next;
                }
                Err(e) => {
                    result = (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(e.to_string()),
                        Some(e.seq()),
                    );
                    break;
                }
            }
        }
        if tx.commit().is_err() {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                answer(self.head, Some("storage failed".to_owned()), None),
            );
        }
        self.head = head;
        (result.0, answer(head, result.1, result.2))
    }

    /// Loses the last `n` records.
    pub fn forget(&mut self, n: u64) -> Result<Head, rusqlite::Error> {
        self.conn.execute(
            "DELETE FROM records WHERE seq > ?1",
            params![self.head.seq.saturating_sub(n) as i64],
        )?;
        self.head = head_of(&self.conn)?;
        Ok(self.head)
    }

    /// Every stored record, in order.
    pub fn records(&self) -> Vec<EvidenceRecord> {
        let Ok(mut stmt) = self.conn.prepare("SELECT record FROM records ORDER BY seq") else {
            return Vec::new();
        };
        let rows = stmt.query_map([], |r| r.get::<_, String>(0));
        rows.map(|rows| {
            rows.filter_map(|r| r.ok())
                .filter_map(|j| serde_json::from_str(&j).ok())
                .collect()
        })
        .unwrap_or_default()
    }
}

type Shared = Arc<Mutex<Receiver>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Receiver> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn json_response(status: StatusCode, answer: &UploadAnswer) -> Response {
    (status, Json(answer.clone())).into_response()
}

async fn upload(
    State(shared): State<Shared>,
    UrlPath(site): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (faults, token) = {
        let mut r = lock(&shared);
        let f = r.faults.clone();
        if r.faults.fail > 0 {
            r.faults.fail -= 1;
        }
        if r.faults.cut > 0 {
            r.faults.cut -= 1;
        }
        (f, r.token.clone())
    };
    if faults.slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
    }
    if faults.fail > 0 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    if let Some(token) = token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(UploadAnswer {
                    error: Some("bad or missing token".to_owned()),
                    ..UploadAnswer::default()
                }),
            )
                .into_response();
        }
    }
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    let raw = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return (StatusCode::BAD_REQUEST, "body is not gzip").into_response();
        }
        out
    } else {
        body.to_vec()
    };
    let batch: UploadBatch = match serde_json::from_slice(&raw) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("body is not an upload batch: {e}"),
            )
                .into_response()
        }
    };
    if batch.site != site {
        return (
            StatusCode::BAD_REQUEST,
            "site in the URL and the body differ",
        )
            .into_response();
    }
    let (status, mut answer) = lock(&shared).receive(&batch);
    match &faults.lie {
        Some(Lie::Redirect(url)) => {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", url.as_str())
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
        Some(Lie::Huge(mib)) => {
            // A body far larger than any answer, streamed so this side stays small.
            let chunk = Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures_util::stream::iter(
                (0..*mib).map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone())),
            );
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
        Some(Lie::Through(n)) => answer.stored_through = *n,
        Some(Lie::Hash) => answer.head_hash = Some("ab".repeat(32)),
        Some(Lie::Refuse(n)) => {
            answer.stored_through = *n;
            answer.error = Some("refused (a lie told on command)".to_owned());
            return json_response(StatusCode::UNPROCESSABLE_ENTITY, &answer);
        }
        None => {}
    }
    if faults.cut > 0 {
        // Cut the answer off mid-body: a length promised and never delivered.
        let text = serde_json::to_vec(&answer).unwrap_or_default();
        let half = Bytes::copy_from_slice(&text[..text.len() / 2]);
        let stream = futures_util::stream::iter(vec![
            Ok::<Bytes, std::io::Error>(half),
            Err(std::io::Error::other("cut")),
        ]);
        return Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    json_response(status, &answer)
}

async fn status(State(shared): State<Shared>) -> Response {
    let head = lock(&shared).head();
    json_response(
        StatusCode::OK,
        &UploadAnswer {
            stored_through: head.seq,
            head_hash: Some(hex::encode(head.hash)),
            error: None,
            seq: None,
            request: None,
        },
    )
}

/// A running audit system.
pub struct AuditServer {
    shared: Shared,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
    /// While refusing: a socket bound to the address but not listening, so connections are
    /// refused and no other program is given the port meanwhile.
    placeholder: Option<tokio::net::TcpSocket>,
}

/// A socket bound to `addr` that other sockets of this process may share (SO_REUSEPORT).
fn shared_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

async fn listen(shared: Shared, listener: TcpListener) -> JoinHandle<()> {
    let app = Router::new()
        .route("/v1/sites/{site}/evidence", post(upload))
        .route("/v1/sites/{site}/status", get(status))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "audit system stopped");
        }
    })
}

impl AuditServer {
    /// Starts listening on `addr`.
    pub async fn start(receiver: Receiver, addr: &str) -> Result<AuditServer, AuditError> {
        let bind_error = |source| AuditError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let wanted: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(bind_error)?
            .next()
            .ok_or_else(|| bind_error(std::io::Error::other("no such address")))?;
        let listener = shared_socket(wanted)
            .and_then(|s| s.listen(64))
            .map_err(bind_error)?;
        let bound = listener.local_addr().map_err(|source| AuditError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let shared = Arc::new(Mutex::new(receiver));
        let task = listen(shared.clone(), listener).await;
        Ok(AuditServer {
            shared,
            addr: bound,
            task: Some(task),
            placeholder: None,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs a fault command; returns what was done.
    pub async fn command(&mut self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        let word = words.next().unwrap_or("");
        if word == "redirect" {
            let url = words.next().ok_or("redirect needs a URL")?;
            lock(&self.shared).faults.lie = Some(Lie::Redirect(url.to_owned()));
            return Ok(format!("answers 307 to {url}"));
        }
        let n: Option<u64> = words
            .next()
            .map(|w| w.parse().map_err(|_| format!("'{w}' is not a number")))
            .transpose()?;
        match (word, n) {
            ("refuse", None) => {
                if self.placeholder.is_none() {
                    self.placeholder = Some(shared_socket(self.addr).map_err(|e| {
                        format!("cannot keep {} while refusing: {e}", self.addr)
                    })?);
                }
                if let Some(task) = self.task.take() {
                    task.abort();
                    let _ = task.await;
                }
                Ok("refusing connections".to_owned())
            }
            ("accept", None) => {
                if self.task.is_none() {
                    let listener = shared_socket(self.addr)
                        .and_then(|s| s.listen(64))
                        .map_err(|e| format!("cannot listen on {} again: {e}", self.addr))?;
                    self.placeholder = None;
                    self.task = Some(listen(self.shared.clone(), listener).await);
                }
                Ok("accepting connections".to_owned())
            }
            ("fail", Some(n)) => {
                lock(&self.shared).faults.fail = n as u32;
                Ok(format!("next {n} requests fail with 500"))
            }
            ("cut", Some(n)) => {
                lock(&self.shared).faults.cut = n as u32;
                Ok(format!("next {n} answers are cut off"))
            }
            ("slow", Some(ms)) => {
                lock(&self.shared).faults.slow_ms = ms;
                Ok(format!("answers delayed {ms} ms"))
            }
            ("forget", Some(n)) => {
                let head = lock(&self.shared).forget(n).map_err(|e| e.to_string())?;
                Ok(format!("forgot records after {}", head.seq))
            }
            ("lie-through", Some(n)) => {
                lock(&self.shared).faults.lie = Some(Lie::Through(n));
                Ok(format!("answers claim to hold up to record {n}"))
            }
            ("lie-hash", None) => {
                lock(&self.shared).faults.lie = Some(Lie::Hash);
                Ok("answers echo a wrong hash".to_owned())
            }
            ("lie-refuse", Some(n)) => {
                lock(&self.shared).faults.lie = Some(Lie::Refuse(n));
                Ok(format!("answers 422 claiming record {n}"))
            }
            ("huge", Some(mib)) => {
                lock(&self.shared).faults.lie = Some(Lie::Huge(mib));
                Ok(format!("answers with {mib} MiB bodies"))
            }
            ("ok", None) => {
                lock(&self.shared).faults = Faults::default();
                Ok("no faults".to_owned())
            }
            _ => Err(format!("cannot understand '{line}'; expected refuse, accept, fail N, cut N, slow MS, forget N, lie-through N, lie-hash, lie-refuse N, huge MIB, redirect URL or ok")),
        }
    }
}

#[cfg(test)]
mod tests;
