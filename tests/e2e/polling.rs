//! Polling the simulated plant over Modbus TCP, through the real binaries.

use std::collections::BTreeMap;
use std::time::Duration;

use sealwatch_agent::model::{Fault, Flag, Outcome};

use crate::harness::{
    now_ms, small_site, start_agent, stored, stored_points, wait_for_reading, wait_until, Sim,
};

/// A plant and an agent polling it, in a temp dir.
struct Running {
    dir: tempfile::TempDir,
    sim: Sim,
    agent: crate::harness::Proc,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let placeholder = small_site(dir.path(), &BTreeMap::new());
        let sim = Sim::start(dir.path(), &placeholder, &[]);
        let config = small_site(dir.path(), &sim.buses);
        let agent = start_agent(&config);
        Running { dir, sim, agent }
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("site.db")
    }

    /// Waits until `point` has a reading after `since` that satisfies `test`.
    fn wait_for(
        &mut self,
        point: &str,
        since: i64,
        what: &str,
        test: impl Fn(&Outcome, Flag) -> bool,
    ) {
        let db = self.db();
        wait_for_reading(&mut self.agent, &db, point, since, what, test);
    }
}

#[test]
fn readings_for_every_point_land_in_sqlite() {
    let mut run = Running::start();
    let db = run.db();
    let expected = 2 * sealwatch_agent::config::profile::Profile::seal_node()
        .points
        .len()
        + 4;
    let points = wait_until(
        Duration::from_secs(20),
        "the agent to register its points",
        || {
            let p = stored_points(&db);
            (p.len() == expected).then_some(p)
        },
    );
    // Every point, including the analyzer's (whose merged read the sim refuses with exception 02,
    // so the agent must fall back to reading point by point), gets a normal reading.
    for point in &points {
        run.wait_for(point, 0, "a normal reading", |o, f| {
            matches!(o, Outcome::Value(_)) && f == Flag::N
        });
    }
    let nmhc = stored(&db, "f1-nmhc/nmhc");
    let v = nmhc
        .iter()
        .rev()
        .find_map(|r| match r.outcome {
            Outcome::Value(v) => Some(v),
            _ => None,
        })
        .unwrap();
    assert!(
        (0.5..5.0).contains(&v),
        "baseline NMHC should be a few mg/m3, got {v}"
    );
    let level = stored(&db, "f1-b1-node/level_mm");
    assert!(
        level
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Value(v) if (0.0..=4000.0).contains(&v))),
        "levels within the span"
    );
    assert!(
        run.agent.stderr().contains("reading its points one by one"),
        "fallback logged:\n{}",
        run.agent.stderr()
    );
    // A clean stop commits and exits 0.
    let status = run.agent.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        run.agent.stderr()
    );
}

#[test]
fn a_silenced_device_degrades_alone_and_recovers_without_restarting_the_agent() {
    let mut run = Running::start();
    run.wait_for(
        "f1-b1-node/level_mm",
        0,
        "a first normal reading",
        |_, f| f == Flag::N,
    );
    let silenced_at = now_ms();
    run.sim.command("silence f1-b1-node");
    run.wait_for(
        "f1-b1-node/level_mm",
        silenced_at,
        "a timeout (flag B)",
        |o, f| *o == Outcome::Fault(Fault::Timeout) && f == Flag::B,
    );
    run.wait_for("f1-b1-node/lid_closed", silenced_at, "degraded", |o, _| {
        *o == Outcome::Fault(Fault::Degraded)
    });
    // The other node on the same bus and the analyzer keep flowing normally meanwhile.
    let window_start = now_ms();
    let db = run.db();
    wait_until(
        Duration::from_secs(20),
        "the other devices to keep delivering",
        || {
            let count = |p: &str| {
                stored(&db, p)
                    .iter()
                    .filter(|r| r.at_ms > window_start && r.flag == Flag::N)
                    .count()
            };
            (count("f1-b2-node/level_mm") >= 8 && count("f1-nmhc/nmhc") >= 8).then_some(())
        },
    );
    let restored_at = now_ms();
    run.sim.command("restore f1-b1-node");
    run.wait_for(
        "f1-b1-node/level_mm",
        restored_at,
        "normal readings again",
        |o, f| matches!(o, Outcome::Value(_)) && f == Flag::N,
    );
    assert!(run.agent.try_exit().is_none(), "the agent kept running");
}

#[test]
fn an_analyzer_endpoint_that_goes_away_and_comes_back_is_reconnected() {
    let mut run = Running::start();
    run.wait_for("f1-nmhc/nmhc", 0, "a first normal reading", |_, f| {
        f == Flag::N
    });
    let down_at = now_ms();
    run.sim.command("bus-down nmhc-1");
    run.wait_for("f1-nmhc/nmhc", down_at, "a communication fault", |o, f| {
        matches!(o, Outcome::Fault(Fault::Io | Fault::NotConnected)) && f == Flag::B
    });
    let up_at = now_ms();
    run.sim.command("bus-up nmhc-1");
    run.wait_for(
        "f1-nmhc/nmhc",
        up_at,
        "normal readings after reconnecting",
        |o, f| matches!(o, Outcome::Value(_)) && f == Flag::N,
    );
    // The seal nodes on the other bus never noticed.
    let db = run.db();
    let faults = stored(&db, "f1-b2-node/level_mm")
        .iter()
        .filter(|r| r.at_ms > down_at && r.flag != Flag::N)
        .count();
    assert_eq!(faults, 0);
}

#[test]
fn a_restarted_seal_node_is_read_again_with_its_uptime_reset() {
    let mut run = Running::start();
    let db = run.db();
    run.wait_for(
        "f1-b2-node/uptime_s",
        0,
        "uptime of at least 2 s",
        |o, _| matches!(o, Outcome::Value(v) if *v >= 2.0),
    );
    let restart_at = now_ms();
    run.sim.command("restart f1-b2-node 2");
    run.wait_for(
        "f1-b2-node/uptime_s",
        restart_at,
        "a timeout while it is off",
        |o, _| *o == Outcome::Fault(Fault::Timeout),
    );
    wait_until(Duration::from_secs(20), "uptime to restart from 0", || {
        stored(&db, "f1-b2-node/uptime_s")
            .iter()
            .any(|r| r.at_ms > restart_at && matches!(r.outcome, Outcome::Value(v) if v < 2.0))
            .then_some(())
    });
}

#[test]
fn an_unreachable_device_at_start_is_retried_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    // Free ports with nothing listening on them yet.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let buses: BTreeMap<String, String> = [
        ("furnace-top".to_owned(), free()),
        ("nmhc-1".to_owned(), free()),
    ]
    .into();
    let config = small_site(dir.path(), &buses);
    let mut agent = start_agent(&config);
    let db = dir.path().join("site.db");
    wait_until(
        Duration::from_secs(20),
        "fault readings while nothing answers",
        || {
            stored(&db, "f1-b1-node/level_mm")
                .iter()
                .any(|r| r.outcome == Outcome::Fault(Fault::NotConnected))
                .then_some(())
        },
    );
    assert!(
        agent.stderr().contains("cannot connect"),
        "says so:\n{}",
        agent.stderr()
    );
    assert!(agent.try_exit().is_none(), "keeps running");
    // Now the plant appears on exactly those ports.
    let _sim = Sim::start(dir.path(), &config, &["--fixed-ports"]);
    let since = now_ms();
    wait_until(
        Duration::from_secs(40),
        "normal readings once the plant is up",
        || {
            stored(&db, "f1-b1-node/level_mm")
                .iter()
                .any(|r| r.at_ms > since && r.flag == Flag::N)
                .then_some(())
        },
    );
}

#[test]
fn check_config_reports_problems_with_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_site(dir.path(), &BTreeMap::new());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("unit_id = 2", "unit_id = 250");
    std::fs::write(&config, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("unit_id = 250"))
        .unwrap()
        + 1;
    let out = std::process::Command::new(crate::harness::binary("sealwatch"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "site.toml:{line}: devices[1].unit_id: unit id 250 is outside 1–247"
        )),
        "{stderr}"
    );
    // The shipped configurations are valid.
    for shipped in ["config/demo.toml", "config/site-example.toml"] {
        let out = std::process::Command::new(crate::harness::binary("sealwatch"))
            .arg("check-config")
            .arg(crate::harness::workspace().join(shipped))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shipped}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_database_that_is_not_ours_stops_the_agent_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_site(dir.path(), &BTreeMap::new());
    let conn = rusqlite::Connection::open(dir.path().join("site.db")).unwrap();
    conn.execute_batch("CREATE TABLE ledger(x)").unwrap();
    drop(conn);
    let mut agent = start_agent(&config);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let stderr = agent.stderr();
    assert!(
        stderr.contains("site.db is not a sealwatch database"),
        "{stderr}"
    );
}

/// A "device" that answers every request with garbage bytes.
fn garbage_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 260];
                let mut n: u8 = 0;
                while let Ok(len) = stream.read(&mut buf) {
                    if len == 0 {
                        return;
                    }
                    // Same transaction id, then nonsense: wrong protocol id and a short length.
                    let reply = [buf[0], buf[1], 0xDE, 0xAD, 0x00, 0x03, buf[6], 0x83, n];
                    n = n.wrapping_add(1);
                    if stream.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_device_answering_garbage_is_a_communication_fault_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = garbage_server();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let buses: BTreeMap<String, String> = [
        ("furnace-top".to_owned(), garbage),
        ("nmhc-1".to_owned(), free),
    ]
    .into();
    let config = small_site(dir.path(), &buses);
    let mut agent = start_agent(&config);
    let db = dir.path().join("site.db");
    wait_until(
        Duration::from_secs(20),
        "garbage replies recorded as communication faults",
        || {
            let readings = stored(&db, "f1-b1-node/level_mm");
            (readings.len() >= 5
                && readings
                    .iter()
                    .all(|r| r.flag == Flag::B && matches!(r.outcome, Outcome::Fault(_))))
            .then_some(())
        },
    );
    assert!(
        agent.try_exit().is_none(),
        "agent still running:\n{}",
        agent.stderr()
    );
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status}\n{}", agent.stderr());
}
