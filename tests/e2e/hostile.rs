//! The fault matrix: each case is a careless or hostile peer, or a failing disk, against the real
//! binaries, and each states what is promised and asserts it (readings and evidence not lost,
//! the agent alive, memory bounded).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{binary, http, now_ms, small_site, status_url, stored, wait_until, Proc, Sim};

/// The agent under `prlimit --nofile=N:N` (both limits, as `ulimit -n` sets them).
fn start_agent_with_nofile(config: &std::path::Path, nofile: u32) -> Proc {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg(binary("sealwatch"))
        .arg("run")
        .arg("--config")
        .arg(config);
    Proc::spawn("sealwatch", cmd)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Readings of the seal node's level stored after `since`.
fn levels_after(db: &std::path::Path, since: i64) -> usize {
    stored(db, "f1-b1-node/level_mm")
        .iter()
        .filter(|r| r.at_ms > since)
        .count()
}

/// Promised: with `ulimit -n 256`, 240 idle and half-sent connections to the status page do not
/// take the descriptors polling needs (readings keep being stored, no "Too many open files"),
/// the page answers again once they go, a request with a foreign `Host` is refused (DNS
/// rebinding), and a half-sent request does not hold the agent past SIGTERM (it exits within
/// a few seconds, well inside systemd's 30 s).
#[test]
fn a_slow_loris_flood_on_the_status_port_starves_nothing_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let sim = Sim::start(dir.path(), &placeholder, &[]);
    let config = small_site(dir.path(), &sim.buses);
    let db = dir.path().join("site.db");
    let mut agent = start_agent_with_nofile(&config, 256);
    let url = status_url(&mut agent);
    let addr = host_port(&url);
    wait_until(Duration::from_secs(20), "first readings", || {
        (levels_after(&db, 0) > 0).then_some(())
    });

    let mut flood: Vec<TcpStream> = Vec::new();
    for i in 0..240 {
        let mut s = TcpStream::connect(&addr).expect("connect (the kernel's backlog takes it)");
        if i % 2 == 0 {
            // Half a request header, never finished.
            let _ = s.write_all(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        }
        flood.push(s);
    }
    let since = now_ms();
    wait_until(
        Duration::from_secs(20),
        "readings stored during the flood",
        || (levels_after(&db, since) >= 10).then_some(()),
    );
    // The page closed the connections it took once their header time ran out.
    let closed = flood
        .iter_mut()
        .take(40)
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut buf = [0u8; 512];
            // 0 bytes (closed) or an answer: not left hanging.
            s.read(&mut buf).is_ok()
        })
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed, 40, "connections left open past the header timeout");
    drop(flood);
    let (code, _) = wait_until(Duration::from_secs(30), "the page answering again", || {
        http("GET", &format!("{url}/healthz"), None).ok()
    });
    assert_eq!(code, 200);
    let err = agent.stderr();
    assert!(!err.contains("Too many open files"), "{err}");

    // DNS rebinding: a foreign Host is refused while bound to loopback.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        b"GET /api/state HTTP/1.1\r\nHost: attacker.example:8080\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");

    // A half-sent request does not hold the agent past SIGTERM.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(
        b"POST /api/maintenance HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let status = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}: {}", agent.stderr());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        asked.elapsed()
    );
    drop(half);
    drop(sim);
}
