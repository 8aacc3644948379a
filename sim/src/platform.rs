//! The stand-in HJ 212 platform: a TCP server that reads frames with the agent's codec, checks
//! length and CRC, acknowledges uploads with 9014 echoing their QN, records everything it gets,
//! and misbehaves on command so the uplink's guarantees can be tested.
//!
//! Record: one JSON object per line in the record file (`--record`): `at_ms`, `kind` (`data` for
//! an upload that wants an answer, `reply` for frames that do not — answers to its own requests —
//! and `bad` for a frame that did not parse, with `error`), and for frames `qn`, `cn`, `mn`,
//! `flag`, `cp` (name → value, in order), `acked` (whether a correct 9014 went back) and `raw`.
//!
//! Commands (stdin of `sealwatch-sim platform`): `no-ack N` (ignore the next N uploads),
//! `bad-crc N` (answer the next N uploads with a 9014 whose CRC is wrong), `disconnect` (drop
//! every connection), `down` (drop connections and stop listening), `up` (listen again),
//! `history CN BEGIN END` (ask the connected agent for minute (2051) or hourly (2061) history),
//! `time-set YYYYMMDDhhmmss` (ask it to set its clock), `ok` (no faults).
//!
//! Invariant: an upload is acknowledged only after it has been written to the record file.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sealwatch_agent::uplink::hj212::codec::{self, Cp, Flags, Frame, FrameReader};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Platform failures.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Listening.
    #[error("platform cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The record file.
    #[error("platform cannot write its record {path}: {source}")]
    Record {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Faults {
    no_ack: u32,
    bad_crc: u32,
}

enum ToConn {
    Send(Frame),
    Close,
}

struct State {
    record: PathBuf,
    faults: Faults,
    conns: Vec<mpsc::Sender<ToConn>>,
    /// PW and MN of the last upload: who to address requests to.
    last_peer: Option<(String, String)>,
    qn_seq: u64,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    sealwatch_agent::clock::now_ms()
}

fn record(shared: &Shared, entry: serde_json::Value) {
    let path = lock(shared).record.clone();
    let line = format!("{entry}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "platform cannot write its record");
    }
}

fn frame_json(kind: &str, f: &Frame, acked: bool, raw: &str) -> serde_json::Value {
    let cp: Vec<serde_json::Value> =
        f.cp.items
            .iter()
            .flatten()
            .map(|(n, v)| serde_json::json!([n, v]))
            .collect();
    serde_json::json!({
        "at_ms": now_ms(),
        "kind": kind,
        "qn": f.qn,
        "st": f.st,
        "cn": f.cn,
        "mn": f.mn,
        "flag": f.flag.bits(),
        "cp": cp,
        "acked": acked,
        "raw": raw,
    })
}

async fn connection(shared: Shared, mut sock: TcpStream, mut commands: mpsc::Receiver<ToConn>) {
    let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%peer, "platform: agent connected");
    let mut reader = FrameReader::new();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(ToConn::Send(frame)) => {
                    for p in codec::build(&frame).unwrap_or_default() {
                        if sock.write_all(p.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                Some(ToConn::Close) | None => {
                    tracing::info!(%peer, "platform: dropping the connection");
                    return;
                }
            },
            read = sock.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        tracing::info!(%peer, "platform: agent disconnected");
                        return;
                    }
                    Ok(n) => n,
                };
                reader.push(&buf[..n]);
                while let Some(result) = reader.next_frame() {
                    let frame = match result {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "platform: bad frame");
                            record(&shared, serde_json::json!({ "at_ms": now_ms(), "kind": "bad", "error": e.to_string() }));
                            continue;
                        }
                    };
                    let raw = codec::build(&frame).map(|p| p.concat()).unwrap_or_default();
                    if !frame.flag.ack {
                        // Real-time values ask for no answer; anything else without the A bit
                        // answers one of our requests.
                        let kind = if frame.cn == codec::cn::REALTIME { "realtime" } else { "reply" };
                        record(&shared, frame_json(kind, &frame, false, &raw));
                        continue;
                    }
                    let (ignore, corrupt) = {
                        let mut s = lock(&shared);
                        s.last_peer = Some((frame.pw.clone(), frame.mn.clone()));
                        if s.faults.no_ack > 0 {
                            s.faults.no_ack -= 1;
                            (true, false)
                        } else if s.faults.bad_crc > 0 {
                            s.faults.bad_crc -= 1;
                            (false, true)
                        } else {
                            (false, false)
                        }
                    };
                    record(&shared, frame_json("data", &frame, !ignore && !corrupt, &raw));
                    if ignore {
                        continue;
                    }
                    let ack = Frame::data_response(&frame, frame.flag.version);
                    let mut text = codec::build(&ack).map(|p| p.concat()).unwrap_or_default();
                    if corrupt {
                        // Flip the CRC's first hex digit.
                        let at = text.len() - 6;
                        let digit = if text.as_bytes()[at] == b'0' { "1" } else { "0" };
                        text.replace_range(at..at + 1, digit);
                    }
                    if sock.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn accept_loop(shared: Shared, listener: TcpListener) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (tx, rx) = mpsc::channel(16);
        lock(&shared).conns.push(tx);
        tokio::spawn(connection(shared.clone(), sock, rx));
    }
}

/// A running platform.
pub struct Platform {
    shared: Shared,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Platform {
    /// Starts listening on `addr`, recording into `record` (created or appended to).
    pub async fn start(addr: &str, record: &Path) -> Result<Platform, PlatformError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)
            .map_err(|source| PlatformError::Record {
                path: record.to_owned(),
                source,
            })?;
        let bind = |source| PlatformError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind)?;
        let bound = listener.local_addr().map_err(bind)?;
        let shared = Arc::new(Mutex::new(State {
            record: record.to_owned(),
            faults: Faults::default(),
            conns: Vec::new(),
            last_peer: None,
            qn_seq: 0,
        }));
        let task = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Platform {
            shared,
            addr: bound,
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn close_all(&self) {
        let conns = std::mem::take(&mut lock(&self.shared).conns);
        for c in conns {
            let _ = c.try_send(ToConn::Close);
        }
    }

    fn request(&self, cn: &str, cp: Cp) -> Result<String, String> {
        let mut s = lock(&self.shared);
        let Some((pw, mn)) = s.last_peer.clone() else {
            return Err(
                "no upload received yet: the platform does not know the agent's PW and MN"
                    .to_owned(),
            );
        };
        s.qn_seq += 1;
        // 17 digits, unique: the ms clock with a sequence in the last digits.
        let qn = format!(
            "{:013}{:04}",
            now_ms().rem_euclid(10_i64.pow(13)),
            s.qn_seq % 10_000
        );
        let frame = Frame {
            qn: qn.clone(),
            st: "27".to_owned(),
            cn: cn.to_owned(),
            pw,
            mn,
            flag: Flags::upload(codec::VERSION_2017),
            packet: None,
            cp,
        };
        s.conns.retain(|c| !c.is_closed());
        if s.conns.is_empty() {
            return Err("no agent is connected".to_owned());
        }
        for c in &s.conns {
            let _ = c.try_send(ToConn::Send(frame.clone()));
        }
        Ok(qn)
    }

    /// Runs a command; returns what was done.
    pub async fn command(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let count = |w: &str| {
            w.parse::<u32>()
                .map_err(|_| format!("'{w}' is not a number"))
        };
        match words.as_slice() {
            ["no-ack", n] => {
                let n = count(n)?;
                lock(&self.shared).faults.no_ack = n;
                Ok(format!("ignoring the next {n} uploads"))
            }
            ["bad-crc", n] => {
                let n = count(n)?;
                lock(&self.shared).faults.bad_crc = n;
                Ok(format!("next {n} answers carry a bad CRC"))
            }
            ["ok"] => {
                lock(&self.shared).faults = Faults::default();
                Ok("no faults".to_owned())
            }
            ["disconnect"] => {
                self.close_all();
                Ok("connections dropped".to_owned())
            }
            ["down"] => {
                if let Some(task) = self.task.take() {
                    task.abort();
                    let _ = task.await;
                }
                self.close_all();
                Ok("down: not listening".to_owned())
            }
            ["up"] => {
                if self.task.is_none() {
                    let listener = TcpListener::bind(self.addr)
                        .await
                        .map_err(|e| format!("cannot listen on {} again: {e}", self.addr))?;
                    self.task = Some(tokio::spawn(accept_loop(self.shared.clone(), listener)));
                }
                Ok(format!("up: listening on {}", self.addr))
            }
            ["history", cn @ ("2051" | "2061"), begin, end] => {
                for (name, t) in [("BeginTime", begin), ("EndTime", end)] {
                    codec::parse_time(name, t).map_err(|e| e.to_string())?;
                }
                let qn = self.request(
                    cn,
                    Cp::new().with_item([("BeginTime", *begin), ("EndTime", *end)]),
                )?;
                Ok(format!("history {cn} requested, QN {qn}"))
            }
            ["time-set", t] => {
                codec::parse_time("SystemTime", t).map_err(|e| e.to_string())?;
                let qn = self.request(
                    codec::cn::SET_TIME,
                    Cp::new().with_item([("SystemTime", *t)]),
                )?;
                Ok(format!("time set requested, QN {qn}"))
            }
            _ => Err(format!("cannot understand '{line}'; expected no-ack N, bad-crc N, ok, disconnect, down, up, history 2051|2061 BEGIN END, or time-set YYYYMMDDhhmmss")),
        }
    }
}

/// Every entry of a record file, in order (unreadable lines skipped).
pub fn read_record(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn upload(qn: &str) -> Frame {
        Frame {
            qn: qn.to_owned(),
            st: "27".to_owned(),
            cn: "2051".to_owned(),
            pw: "123456".to_owned(),
            mn: "MN1".to_owned(),
            flag: Flags::upload(codec::VERSION_2017),
            packet: None,
            cp: Cp::new()
                .with_item([("DataTime", "20260101080000")])
                .with_item([("a24088-Avg", "1.500"), ("a24088-Flag", "N")]),
        }
    }

    async fn next(
        sock: &mut TcpStream,
        reader: &mut FrameReader,
    ) -> Option<Result<Frame, codec::CodecError>> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(f) = reader.next_frame() {
                return Some(f);
            }
            match tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => reader.push(&buf[..n]),
                _ => return None,
            }
        }
    }

    async fn send(sock: &mut TcpStream, f: &Frame) {
        sock.write_all(codec::build(f).unwrap().concat().as_bytes())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn acks_records_and_misbehaves_on_command() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("record.jsonl");
        let mut platform = Platform::start("127.0.0.1:0", &rec).await.unwrap();
        assert!(platform
            .command("history 2051 20260101080000 20260101090000")
            .await
            .is_err());
        let mut sock = TcpStream::connect(platform.addr()).await.unwrap();
        let mut reader = FrameReader::new();
        send(&mut sock, &upload("20260101080100001")).await;
        let ack = next(&mut sock, &mut reader).await.unwrap().unwrap();
        assert_eq!(
            (ack.cn.as_str(), ack.qn.as_str(), ack.flag.bits()),
            ("9014", "20260101080100001", 4)
        );

        platform.command("no-ack 1").await.unwrap();
        send(&mut sock, &upload("20260101080100002")).await;
        assert!(next(&mut sock, &mut reader).await.is_none(), "ignored");

        platform.command("bad-crc 1").await.unwrap();
        send(&mut sock, &upload("20260101080100003")).await;
        assert!(matches!(
            next(&mut sock, &mut reader).await,
            Some(Err(codec::CodecError::BadCrc { .. }))
        ));

        let answer = platform
            .command("history 2061 20260101080000 20260101090000")
            .await
            .unwrap();
        let req = next(&mut sock, &mut reader).await.unwrap().unwrap();
        assert_eq!(
            (req.cn.as_str(), req.mn.as_str(), req.pw.as_str()),
            ("2061", "MN1", "123456")
        );
        assert!(answer.contains(&req.qn));
        assert_eq!(req.cp.get("BeginTime"), Some("20260101080000"));
        let mut reply = Frame::data_response(&req, 1);
        reply.cn = "9011".to_owned();
        send(&mut sock, &reply).await;
        for _ in 0..100 {
            if read_record(&rec).len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        platform.command("disconnect").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "dropped");

        platform.command("down").await.unwrap();
        assert!(TcpStream::connect(platform.addr()).await.is_err());
        platform.command("up").await.unwrap();
        assert!(TcpStream::connect(platform.addr()).await.is_ok());
        assert!(platform.command("fly").await.is_err());

        let entries = read_record(&rec);
        let kinds: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap(),
                    e["acked"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("data", true),
                ("data", false),
                ("data", false),
                ("reply", false)
            ]
        );
        assert_eq!(
            entries[0]["cp"][1],
            serde_json::json!(["a24088-Avg", "1.500"])
        );
    }
}
