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

    // A keep-alive connection that asked once and then went quiet.
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = [0u8; 256];
    let n = kept.read(&mut first).unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let asked_once = Instant::now();

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
    let deadline = Instant::now() + Duration::from_secs(15);
    let closed = flood
        .iter_mut()
        .take(40)
        .map(|s| {
            let left = deadline.saturating_duration_since(Instant::now());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 512];
            // 0 bytes (closed) or an answer: not left hanging.
            s.read(&mut buf).is_ok()
        })
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed, 40, "connections left open past the header timeout");
    drop(flood);
    // The quiet keep-alive connection was closed by the header deadline (10 s), not kept.
    kept.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = [0u8; 64];
    assert_eq!(
        kept.read(&mut rest).ok(),
        Some(0),
        "the idle keep-alive connection is still open"
    );
    assert!(
        asked_once.elapsed() >= Duration::from_secs(9),
        "closed before its deadline"
    );
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

/// Removes the tmpfs mounted for a test (also when it fails).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the file system of `dir` (`stat -f`).
fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(dir)
        .output()
        .expect("stat runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

fn alarm_kinds(url: &str) -> Vec<String> {
    crate::harness::get_json(&format!("{url}/api/state"))["alarms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Promised: on a 16 MiB file system filled until its free space is below the reserve, the
/// agent prunes the oldest raw readings first (sealed as `data_pruned`, reason `disk_space`),
/// never evidence; when only evidence is left it refuses readings with an ERROR and a
/// `store_full` alarm while judgements and evidence are still sealed; once space is back it
/// stores readings again. Evidence lost: 0; the agent stays up throughout.
#[test]
fn a_disk_filled_to_the_brim_is_cleared_of_raw_readings_and_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    let _mounted = Mounted(disk.clone());
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let sim = Sim::start(dir.path(), &placeholder, &[]);
    let config = small_site(dir.path(), &sim.buses);
    let db = disk.join("site.db");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "path = \"site.db\"",
        &format!(
            "path = \"{}\"\ndisk_reserve_mib = 4\ncompact_interval_ms = 1000",
            db.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut agent = crate::harness::start_agent(&config);
    let url = status_url(&mut agent);
    wait_until(
        Duration::from_secs(20),
        "readings on the small disk",
        || (levels_after(&db, 0) > 20).then_some(()),
    );
    let before = crate::harness::evidence_of(&db);

    // Fill the disk until 3 MiB are free (below the 4 MiB reserve).
    let filler = disk.join("filler");
    let fill = free_bytes(&disk).saturating_sub(3 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    wait_until(Duration::from_secs(30), "the store_full alarm", || {
        alarm_kinds(&url)
            .iter()
            .any(|k| k == "store_full")
            .then_some(())
    });
    let err = agent.stderr();
    assert!(err.contains("pruned the oldest raw readings"), "{err}");
    assert!(err.contains("readings are no longer stored"), "{err}");
    assert!(agent.try_exit().is_none(), "the agent stopped: {err}");
    let during = crate::harness::evidence_of(&db);
    assert!(
        during
            .iter()
            .any(|r| r.kind == "data_pruned" && r.body.contains("disk_space")),
        "no data_pruned record for space"
    );
    // Every record sealed before is still there, in order, and the chain went on.
    assert_eq!(&during[..before.len()], &before[..], "evidence lost");
    assert!(during.windows(2).all(|w| w[0].seq + 1 == w[1].seq));

    // Space again: readings are stored again, the alarm goes.
    std::fs::remove_file(&filler).unwrap();
    let since = now_ms();
    wait_until(Duration::from_secs(30), "readings stored again", || {
        (levels_after(&db, since) > 5).then_some(())
    });
    wait_until(
        Duration::from_secs(10),
        "the store_full alarm to clear",
        || (!alarm_kinds(&url).iter().any(|k| k == "store_full")).then_some(()),
    );
    let status = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let after = crate::harness::evidence_of(&db);
    assert_eq!(&after[..during.len()], &during[..], "evidence lost");
    drop(sim);
}

/// The agent's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Promised: a platform that floods the connection — 200 time-set (1012) requests in a burst,
/// 30 kB of garbage, acknowledgements with a wrong PW or MN — gets its requests answered
/// within the budget (burst 20, 2/s), its time-set evidence coalesced (one record at once,
/// the rest counted in one more record), one warning line about the garbage, no
/// acknowledgement taken from a forged 9014; the agent stays up with bounded memory.
#[test]
fn a_flooding_platform_cannot_grow_the_chain_flood_the_log_or_forge_acknowledgements() {
    use sealwatch_agent::uplink::hj212::codec::{
        build, Cp, Flags, Frame, FrameReader, VERSION_2017,
    };
    const MN: &str = "010000A8900016F000169DC0";
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let sim = Sim::start(dir.path(), &placeholder, &[]);
    let config = small_site(dir.path(), &sim.buses);
    let platform = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[uplink.hj212]]\nname = \"prov\"\naddress = \"{}\"\npw = \"123456\"\ntimeout_s = 30\nretries = 2\nmn = {{ \"F1/NMHC\" = \"{MN}\" }}\n",
        platform.local_addr().unwrap()
    ));
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("site.db");
    let mut agent = crate::harness::start_agent(&config);
    let (mut conn, _) = platform.accept().unwrap();
    // What the agent sends, read on a thread so its writes never block.
    let mut reading = conn.try_clone().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Frame>::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        let mut frames = FrameReader::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = reading.read(&mut buf) {
            if n == 0 {
                break;
            }
            frames.push(&buf[..n]);
            while let Some(f) = frames.next_frame() {
                if let Ok(f) = f {
                    sink.lock().unwrap().push(f);
                }
            }
        }
    });
    let frame = |cn: &str, qn: String, pw: &str, mn: &str, cp: Cp| Frame {
        qn,
        st: "91".into(),
        cn: cn.into(),
        pw: pw.into(),
        mn: mn.into(),
        flag: Flags::upload(VERSION_2017),
        packet: None,
        cp,
    };
    let mut burst = String::new();
    for i in 0..200 {
        let f = frame(
            "1012",
            format!("20261202100000{i:03}"),
            "123456",
            MN,
            Cp::new().with_item([("SystemTime", "20261202100000")]),
        );
        burst.extend(build(&f).unwrap());
    }
    conn.write_all(burst.as_bytes()).unwrap();
    let garbage: Vec<u8> = (0..30_000u32)
        .map(|i| b"##0099QN=;x\r\n"[(i % 13) as usize])
        .collect();
    conn.write_all(&garbage).unwrap();
    // Wait for the first upload, then acknowledge it only with forged 9014s.
    let upload = wait_until(Duration::from_secs(150), "an NMHC minute upload", || {
        received
            .lock()
            .unwrap()
            .iter()
            .find(|f| f.cn == "2051")
            .cloned()
    });
    for (pw, mn) in [("WRONG", MN), ("123456", "NOTMINE")] {
        let mut ack = Frame::data_response(&upload, VERSION_2017);
        ack.pw = pw.into();
        ack.mn = mn.into();
        conn.write_all(build(&ack).unwrap().concat().as_bytes())
            .unwrap();
    }
    let refused = || {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.cn == "9011" && f.qn == upload.qn)
            .filter_map(|f| f.cp.get("QnRtn").map(str::to_owned))
            .collect::<Vec<_>>()
    };
    wait_until(
        Duration::from_secs(10),
        "both forged 9014s answered",
        || (refused().len() >= 2).then_some(()),
    );
    let rss = rss_kib(agent.pid());
    let status = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let err = agent.stderr();
    let records = crate::harness::evidence_of(&db);
    let time_sets: Vec<&sealwatch_agent::evidence::EvidenceRecord> = records
        .iter()
        .filter(|r| r.kind == "platform_time_set")
        .collect();
    assert!(
        (1..=2).contains(&time_sets.len()),
        "{} platform_time_set records",
        time_sets.len()
    );
    let counted: u64 = time_sets
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["requests"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let answered = received
        .lock()
        .unwrap()
        .iter()
        .filter(|f| f.cn == "9012" && f.qn.starts_with("20261202100000"))
        .count() as u64;
    assert_eq!(
        counted, answered,
        "every answered time-set request is counted"
    );
    assert!(
        answered < 200,
        "the burst was not bounded: {answered} answered"
    );
    let garbage_lines = err.matches("unreadable frame").count();
    assert!(garbage_lines <= 2, "{garbage_lines} lines about garbage");
    assert_eq!(refused(), ["3", "4"], "forged acknowledgements answered");
    let cursor = sealwatch_agent::store::Store::open_read_only(&db)
        .unwrap()
        .uplink_cursor("hj212:prov")
        .unwrap();
    assert_eq!(cursor, 0, "a forged 9014 moved the position");
    assert!(rss < 200 * 1024, "RSS {rss} KiB");
    drop(sim);
}

/// Promised: a wall clock set forward by 100 days while the agent runs (libfaketime, the
/// monotonic clock left alone) deletes no raw reading: retention pruning pauses, says why
/// (`retention_paused` alarm) and the agent goes on. (Acknowledged evidence under a jump of
/// years is the store's unit test `a_wall_clock_set_forward_by_years_prunes_no_reading_and_no_evidence`.)
#[test]
fn a_wall_clock_set_forward_by_months_deletes_nothing() {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} is missing: scripts/setup.sh installs the faketime package"
    );
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let sim = Sim::start(dir.path(), &placeholder, &[]);
    let config = small_site(dir.path(), &sim.buses);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "commit_interval_ms = 200",
        "commit_interval_ms = 200\ncompact_interval_ms = 1000",
    );
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("site.db");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut cmd = Command::new(binary("sealwatch"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut agent = Proc::spawn("sealwatch", cmd);
    let url = status_url(&mut agent);
    wait_until(Duration::from_secs(20), "readings before the jump", || {
        (levels_after(&db, 0) > 20).then_some(())
    });
    // Wait for a compaction to move readings into blocks (what retention deletes), then jump.
    wait_until(
        Duration::from_secs(10),
        "the readings compacted into blocks",
        || {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?;
            let blocks: i64 = conn
                .query_row("SELECT count(*) FROM reading_blocks", [], |r| r.get(0))
                .ok()?;
            (blocks > 0).then_some(())
        },
    );
    // What was stored before the jump, by time.
    let old: Vec<i64> = stored(&db, "f1-b1-node/level_mm")
        .iter()
        .map(|r| r.at_ms)
        .collect();
    let last_before = *old.last().expect("readings before the jump");
    std::fs::write(&offset, "+100d\n").unwrap();
    wait_until(
        Duration::from_secs(30),
        "the retention_paused alarm",
        || {
            alarm_kinds(&url)
                .iter()
                .any(|k| k == "retention_paused")
                .then_some(())
        },
    );
    // The alarm is raised by a compaction at the jumped clock: the one that would have pruned.
    assert!(agent.try_exit().is_none(), "{}", agent.stderr());
    let kept = stored(&db, "f1-b1-node/level_mm")
        .iter()
        .filter(|r| r.at_ms <= last_before)
        .count();
    assert_eq!(
        kept,
        old.len(),
        "raw readings from before the jump were deleted"
    );
    assert!(agent.stderr().contains("retention pruning is paused"));
    drop(sim);
}
