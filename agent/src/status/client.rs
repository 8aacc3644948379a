//! Reading the status of a running agent (`sealwatch status`), or, when none answers, of its
//! database.
//!
//! The agent's API is plain HTTP/1.1 on a local address, so a minimal blocking client over
//! `std::net::TcpStream` is enough: one `GET`, `Connection: close`, the body read to the end.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::clock::now_ms;
use crate::config::SiteConfig;
use crate::model::{PointId, Reading};
use crate::rules::SealState;
use crate::state::{DeviceHealth, PlantState};
use crate::store::{Store, StoreError};

use super::StatusView;

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host:port[/]`.
    #[error(
        "'{0}' is not a status address; expected http://host:port, e.g. http://127.0.0.1:8080"
    )]
    Url(String),
    /// No connection, or the connection broke.
    #[error("cannot reach the agent at {url}: {source}")]
    Io {
        /// Where.
        url: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The agent answered something else than the document.
    #[error("unexpected answer from {url}: {why}")]
    Answer {
        /// Where.
        url: String,
        /// What was wrong.
        why: String,
    },
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Splits `http://host:port[/...]` into the socket address and `host:port`.
fn parse_url(url: &str) -> Result<(SocketAddr, String), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    Ok((addr, hostport.to_owned()))
}

/// The longest answer read from the agent (the state of a large site is a few MB).
pub const MAX_ANSWER_BYTES: u64 = 32 << 20;

/// `GET base + path`; returns the status code and body.
pub fn http_get(base: &str, path: &str, timeout: Duration) -> Result<(u16, String), ClientError> {
    http_request("GET", base, path, None, timeout)
}

/// One request to the agent (`body`: JSON to send), `Connection: close`; returns the status
/// code and the body, read to at most [`MAX_ANSWER_BYTES`].
pub fn http_request(
    method: &str,
    base: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    http_request_with(method, base, path, body, &[], timeout)
}

/// [`http_request`] with extra headers (name, value), e.g. the control token.
pub fn http_request_with(
    method: &str,
    base: &str,
    path: &str,
    body: Option<&str>,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let (addr, host) = parse_url(base)?;
    let io = |source| ClientError::Io {
        url: base.to_owned(),
        source,
    };
    let answer = |why: String| ClientError::Answer {
        url: base.to_owned(),
        why,
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = body.unwrap_or("");
    let extra: String = extra
        .iter()
        .filter(|(k, v)| !(k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n'])))
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    // Each read waits at most `timeout`, and the whole answer must come within a few of them:
    // a server trickling a byte at a time is cut off, not waited for.
    let deadline = std::time::Instant::now() + timeout * 4;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if std::time::Instant::now() > deadline {
            return Err(answer(format!(
                "no complete answer within {:?}",
                timeout * 4
            )));
        }
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() as u64 > MAX_ANSWER_BYTES {
            return Err(answer(format!("longer than {MAX_ANSWER_BYTES} bytes")));
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| answer("no HTTP header".to_owned()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            answer(format!(
                "bad status line '{}'",
                head.lines().next().unwrap_or("").escape_debug()
            ))
        })?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    // Chunks are joined as bytes before the text is decoded: a chunk boundary may fall inside
    // a character.
    let bytes = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((code, String::from_utf8_lossy(&bytes).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The live status document of the agent at `base` (`http://host:port`).
pub fn fetch_state(base: &str) -> Result<StatusView, ClientError> {
    let (code, body) = http_get(base, "/api/state", Duration::from_secs(3))?;
    if code != 200 {
        return Err(ClientError::Answer {
            url: base.to_owned(),
            why: format!("HTTP {code}"),
        });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::Answer {
        url: base.to_owned(),
        why: format!("not a status document: {e}"),
    })
}

/// How far back the database view looks for the latest readings.
const DB_LOOKBACK_MS: i64 = 15 * 60_000;

/// A status document built from the database alone (no agent running): the latest reading of
/// each point in the last 15 minutes and the last judged state of each bin.
pub fn view_from_database(config: &SiteConfig) -> Result<StatusView, ClientError> {
    let points = config.point_table();
    let store = Store::open_read_only(&config.store.path)?;
    let now = now_ms();
    let mut snap = PlantState::new(Vec::new(), points.points.len(), 0).snapshot();
    for (i, p) in points.points.iter().enumerate() {
        // A point whose readings were in a row set aside (quarantined) shows no value; the
        // rest of the view stands.
        let last = match store.readings(&p.key, now - DB_LOOKBACK_MS, now) {
            Ok(mut readings) => readings.pop(),
            Err(crate::store::StoreError::Quarantined { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(s) = last {
            snap.latest[i] = Some(Reading {
                at_ms: s.at_ms,
                point: PointId(i as u32),
                outcome: s.outcome,
                flag: s.flag,
            });
        }
    }
    let transitions: Vec<serde_json::Value> = store
        .outputs(i64::MIN, now, Some("seal_state"))?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for f in &config.furnaces {
        for b in &f.bins {
            let key = format!("{}/{}", f.name, b.name);
            let last = transitions.iter().rev().find(|o| o["bin"] == key.as_str());
            snap.bins.push(match last {
                Some(o) => (
                    o["to"]
                        .as_str()
                        .and_then(SealState::parse)
                        .unwrap_or(SealState::Unknown),
                    o["at_ms"].as_i64(),
                ),
                None => (SealState::Unknown, None),
            });
        }
    }
    let cycles: Vec<serde_json::Value> = store
        .outputs(now - 24 * 3_600_000, now, Some("charging_cycle"))?
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    snap.devices = config
        .devices
        .iter()
        .map(|d| DeviceHealth {
            name: d.name.clone(),
            bus: config.buses[d.bus].name.clone(),
            unit: d.unit.get(),
            ..DeviceHealth::default()
        })
        .collect();
    let mut view = super::view_of_snapshot(config, &points, snap, now, "database");
    for bin in view.furnaces.iter_mut().flat_map(|f| f.bins.iter_mut()) {
        let last = cycles.iter().rev().find(|o| o["bin"] == bin.key.as_str());
        bin.last_cycle = last.and_then(|o| {
            Some(super::CycleView {
                started_ms: o["started_ms"].as_i64()?,
                ended_ms: o["ended_ms"].as_i64()?,
                level_at_gate_open_mm: o["level_at_gate_open_mm"].as_f64(),
                seal_held: o["seal_held"].as_bool()?,
                interrupted: o["interrupted"].as_bool().unwrap_or(false),
            })
        });
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    #[test]
    fn a_chunk_boundary_inside_a_character_is_joined_not_a_panic() {
        // "炉" is e7 82 89: the first chunk ends after its first byte.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let peer = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"\xe7\r\n4\r\n\x82\x89\"}\r\n0\r\n\r\n")
                .unwrap();
        });
        let (code, body) =
            super::http_get(&base, "/api/state", std::time::Duration::from_secs(5)).unwrap();
        peer.join().unwrap();
        assert_eq!((code, body.as_str()), (200, "{\"炉\"}"));
    }

    #[test]
    fn a_server_trickling_its_answer_is_cut_off_at_the_deadline() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            // One byte every 50 ms, for ever (until the client hangs up).
            while s.write_all(b"x").is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let started = std::time::Instant::now();
        let e = super::http_get(&base, "/api/state", std::time::Duration::from_millis(200))
            .unwrap_err();
        assert!(e.to_string().contains("no complete answer"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
