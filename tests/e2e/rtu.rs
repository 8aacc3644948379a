//! Modbus RTU end to end: the sim serves firmware seal nodes on pseudo-terminals, the agent polls
//! them through tokio-serial; faults are injected on the line.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealwatch_agent::model::{Fault, Flag, Outcome};

use crate::harness::{
    ensure_key, get_json, now_ms, python, start_agent, status_url, stored, wait_for_reading,
    wait_until, workspace, Proc, Sim,
};

const TIMEOUT_MS: u64 = 200;
const PROBE_MS: u64 = 1000;
const INTERVAL_MS: u64 = 250;

/// Two RTU lines: `line-1` (115200 baud) with the seal nodes of bins B1–B3 (units 1–3), `line-2`
/// (19200 baud, even parity) with bin B4's node (unit 1) and an NMHC analyzer (unit 5). The
/// ports are paths in `dir`: the sim puts its ptys behind them (`--fixed-ports`).
fn rtu_site(dir: &Path) -> PathBuf {
    let line = |name: &str, baud: u32, parity: &str| {
        format!(
            "[[buses]]\nname = \"{name}\"\ntype = \"rtu\"\nport = \"{}\"\nbaud = {baud}\nparity = \"{parity}\"\ntimeout_ms = {TIMEOUT_MS}\nprobe_interval_ms = {PROBE_MS}\n\n",
            dir.join(name).display()
        )
    };
    let device = |name: &str, bus: &str, unit: u8, profile: &str| {
        format!("[[devices]]\nname = \"{name}\"\nbus = \"{bus}\"\nunit_id = {unit}\nprofile = \"{profile}\"\npoll_interval_ms = {INTERVAL_MS}\n\n")
    };
    let bin = |name: &str, device: &str| {
        format!("[[furnaces.bins]]\nname = \"{name}\"\ndevice = \"{device}\"\nseal_level_min_mm = 800\nmax_open_s = 120\n\n")
    };
    let text = format!(
        "profiles_dir = \"{profiles}\"\n\n[site]\nid = \"rtu\"\nname = \"RTU plant\"\npermit_number = \"E2E-RTU\"\npermit_class = \"key\"\n\n[store]\npath = \"site.db\"\ncommit_interval_ms = 200\n\n[status]\nlisten = \"127.0.0.1:0\"\n\n{l1}{l2}{d1}{d2}{d3}{d4}{d5}[[furnaces]]\nname = \"F1\"\n\n{b1}{b2}{b3}{b4}[[furnaces.analyzers]]\nname = \"NMHC\"\ndevice = \"f1-nmhc\"\n",
        profiles = workspace().join("config/profiles").display(),
        l1 = line("line-1", 115_200, "none"),
        l2 = line("line-2", 19_200, "even"),
        d1 = device("b1-node", "line-1", 1, "seal-node"),
        d2 = device("b2-node", "line-1", 2, "seal-node"),
        d3 = device("b3-node", "line-1", 3, "seal-node"),
        d4 = device("b4-node", "line-2", 1, "seal-node"),
        d5 = device("f1-nmhc", "line-2", 5, "nmhc-analyzer"),
        b1 = bin("B1", "b1-node"),
        b2 = bin("B2", "b2-node"),
        b3 = bin("B3", "b3-node"),
        b4 = bin("B4", "b4-node"),
    );
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("write site config");
    ensure_key(dir);
    path
}

/// The sim on ptys and the agent polling them, in a temp dir.
struct Line {
    dir: tempfile::TempDir,
    sim: Sim,
    agent: Proc,
}

impl Line {
    fn start() -> Line {
        let dir = tempfile::tempdir().unwrap();
        let config = rtu_site(dir.path());
        let sim = Sim::start(dir.path(), &config, &["--fixed-ports"]);
        for bus in ["line-1", "line-2"] {
            assert_eq!(
                sim.ports.get(bus).map(PathBuf::from),
                Some(dir.path().join(bus)),
                "ready file names the port of {bus}"
            );
        }
        let agent = start_agent(&config);
        Line { dir, sim, agent }
    }

    fn db(&self) -> PathBuf {
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

    /// The agent's `/api/state` document.
    fn api_state(&self) -> serde_json::Value {
        let stderr = self.agent.stderr();
        let addr = stderr
            .split("status page: http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("the agent names its status page:\n{stderr}"))
            .to_owned();
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /api/state HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").expect("HTTP response").1;
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// Health of device `name` from the status API.
    fn health(&self, name: &str) -> serde_json::Value {
        self.api_state()["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no device {name}"))
    }
}

fn values(db: &Path, point: &str, since: i64) -> Vec<(i64, f64)> {
    stored(db, point)
        .iter()
        .filter(|r| r.at_ms > since)
        .filter_map(|r| match r.outcome {
            Outcome::Value(v) => Some((r.at_ms, v)),
            _ => None,
        })
        .collect()
}

#[test]
fn rtu_two_lines_deliver_normal_readings_for_every_node() {
    let mut run = Line::start();
    for point in [
        "b1-node/level_mm",
        "b2-node/lid_closed",
        "b3-node/uptime_s",
        "b4-node/level_raw_ua",
        "b4-node/seal_state",
        "f1-nmhc/nmhc",
    ] {
        run.wait_for(point, 0, "a normal reading", |o, f| {
            matches!(o, Outcome::Value(_)) && f == Flag::N
        });
    }
    let db = run.db();
    // The firmware's conditioning: idle bins sit at 1100 mm (4000 + 1100/4000 × 16000 µA).
    for node in ["b1-node", "b2-node", "b3-node", "b4-node"] {
        let raw = values(&db, &format!("{node}/level_raw_ua"), 0);
        assert!(
            raw.iter().all(|(_, ua)| (4000.0..=20000.0).contains(ua)),
            "{node}: {raw:?}"
        );
    }
    let nmhc = values(&db, "f1-nmhc/nmhc", 0);
    assert!(
        nmhc.iter().all(|(_, v)| (0.5..5.0).contains(v)),
        "baseline NMHC: {nmhc:?}"
    );
    assert!(
        run.agent.stderr().contains("polling Modbus RTU"),
        "{}",
        run.agent.stderr()
    );
    let status = run.agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", run.agent.stderr());
}

#[test]
fn rtu_a_silenced_node_degrades_alone_and_its_neighbours_keep_their_cadence() {
    let mut run = Line::start();
    run.wait_for("b2-node/level_mm", 0, "a first reading", |_, f| {
        f == Flag::N
    });
    let silenced_at = now_ms();
    run.sim.command("silence b2-node");
    run.wait_for("b2-node/level_mm", silenced_at, "a timeout", |o, f| {
        *o == Outcome::Fault(Fault::Timeout) && f == Flag::B
    });
    run.wait_for("b2-node/level_mm", silenced_at, "degraded", |o, _| {
        *o == Outcome::Fault(Fault::Degraded)
    });
    // Over four probe periods, the silent node costs at most one timeout per period: its line
    // neighbours are polled on cadence, never waiting more than one timeout extra.
    let window_start = now_ms();
    let db = run.db();
    let window = 4 * PROBE_MS as i64;
    wait_until(
        Duration::from_secs(20),
        "four probe periods of readings",
        || (now_ms() > window_start + window + 500).then_some(()),
    );
    for node in ["b1-node", "b3-node"] {
        let times: Vec<i64> = values(&db, &format!("{node}/level_mm"), window_start)
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| *t <= window_start + window)
            .collect();
        assert!(
            times.len() as i64 >= window / INTERVAL_MS as i64 - 2,
            "{node}: {} readings in {window} ms",
            times.len()
        );
        let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            worst <= (INTERVAL_MS + TIMEOUT_MS + 150) as i64,
            "{node}: a gap of {worst} ms"
        );
    }
    let probes = stored(&db, "b2-node/level_mm")
        .iter()
        .filter(|r| {
            r.at_ms > window_start
                && r.at_ms <= window_start + window
                && r.outcome == Outcome::Fault(Fault::Timeout)
        })
        .count();
    assert!(
        probes <= (window / PROBE_MS as i64) as usize + 1,
        "{probes} timeouts in {window} ms"
    );
    // The other line never noticed.
    let faults = stored(&db, "b4-node/level_mm")
        .iter()
        .filter(|r| r.at_ms > silenced_at && r.flag != Flag::N)
        .count();
    assert_eq!(faults, 0);
    let restored_at = now_ms();
    run.sim.command("restore b2-node");
    run.wait_for("b2-node/level_mm", restored_at, "normal again", |o, f| {
        matches!(o, Outcome::Value(_)) && f == Flag::N
    });
}

#[test]
fn rtu_corrupt_crcs_and_late_replies_are_counted_and_never_taken_for_another_node() {
    let mut run = Line::start();
    let db = run.db();
    run.wait_for("b1-node/level_raw_ua", 0, "a first reading", |_, f| {
        f == Flag::N
    });
    // B2's transmitter loses its loop current (0 µA, level fault) and B2 answers late, after the
    // agent's timeout: its replies arrive while the agent waits for B1 and B3, with the same
    // function and length as theirs. B3 corrupts the CRC of every third reply.
    run.sim.command("level-wire-broken F1/B2");
    wait_until(Duration::from_secs(10), "B2's broken wire to show", || {
        values(&db, "b2-node/level_raw_ua", 0)
            .iter()
            .any(|(_, v)| *v == 0.0)
            .then_some(())
    });
    let faults_at = now_ms();
    run.sim
        .command(&format!("late b2-node {}", TIMEOUT_MS + 60));
    run.sim.command("corrupt-crc b3-node 3");
    run.wait_for("b2-node/level_raw_ua", faults_at, "a timeout", |o, _| {
        *o == Outcome::Fault(Fault::Timeout)
    });
    run.wait_for("b3-node/level_raw_ua", faults_at, "a bad frame", |o, f| {
        *o == Outcome::Fault(Fault::BadFrame) && f == Flag::B
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (b2, b3) = (run.health("b2-node"), run.health("b3-node"));
        if b2["late_replies"].as_u64() >= Some(3) && b3["crc_errors"].as_u64() >= Some(3) {
            break;
        }
        seen = format!("{b2}\n{b3}");
        assert!(
            std::time::Instant::now() < deadline,
            "late replies and CRC errors not counted:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(seen);
    wait_until(
        Duration::from_secs(20),
        "B1 and B3 to be read meanwhile",
        || {
            ["b1-node", "b3-node"]
                .iter()
                .all(|node| values(&db, &format!("{node}/level_raw_ua"), faults_at).len() >= 8)
                .then_some(())
        },
    );
    // Every value stored for B1 and B3 is theirs: a live loop current and no level fault. B2's
    // late replies (0 µA, fault bit set) were never taken as their answers.
    for node in ["b1-node", "b3-node"] {
        let raw = values(&db, &format!("{node}/level_raw_ua"), faults_at);
        assert!(
            raw.iter().all(|(_, ua)| *ua >= 4000.0),
            "{node} took a reply of B2: {raw:?}"
        );
        let fault = values(&db, &format!("{node}/level_fault"), faults_at);
        assert!(fault.iter().all(|(_, v)| *v == 0.0), "{node}: {fault:?}");
    }
    let b1 = run.health("b1-node");
    assert_eq!(b1["crc_errors"], 0, "{b1}");
    assert!(
        run.agent.stderr().contains("CRC expected 0x")
            || run.health("b3-node")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("CRC")),
        "CRC errors named"
    );
}

#[test]
fn rtu_an_adapter_that_vanishes_and_returns_is_reopened_and_polling_resumes() {
    let mut run = Line::start();
    run.wait_for("b4-node/level_mm", 0, "a first reading", |_, f| {
        f == Flag::N
    });
    let unplugged_at = now_ms();
    run.sim.command("unplug line-2");
    assert!(
        !run.dir.path().join("line-2").exists(),
        "the port's path is gone"
    );
    run.wait_for(
        "b4-node/level_mm",
        unplugged_at,
        "a communication fault",
        |o, f| matches!(o, Outcome::Fault(Fault::Io | Fault::NotConnected)) && f == Flag::B,
    );
    run.wait_for(
        "f1-nmhc/nmhc",
        unplugged_at,
        "not connected while unplugged",
        |o, _| *o == Outcome::Fault(Fault::NotConnected),
    );
    let replugged_at = now_ms();
    run.sim.command("replug line-2");
    run.wait_for(
        "b4-node/level_mm",
        replugged_at,
        "normal readings again",
        |o, f| matches!(o, Outcome::Value(_)) && f == Flag::N,
    );
    run.wait_for(
        "f1-nmhc/nmhc",
        replugged_at,
        "normal readings again",
        |o, f| matches!(o, Outcome::Value(_)) && f == Flag::N,
    );
    // The other line kept going throughout.
    let db = run.db();
    let faults = stored(&db, "b1-node/level_mm")
        .iter()
        .filter(|r| r.at_ms > unplugged_at && r.flag != Flag::N)
        .count();
    assert_eq!(faults, 0);
    assert!(run.agent.try_exit().is_none(), "the agent kept running");
}

/// A socat pty pair in `dir`: (socat, the peer's end, the agent's end).
fn pty_pair(dir: &Path) -> (Proc, PathBuf, PathBuf) {
    let (server_tty, agent_tty) = (dir.join("ttyS"), dir.join("ttyA"));
    let mut socat = std::process::Command::new("socat");
    socat
        .arg("-d")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", server_tty.display()))
        .arg(format!("pty,raw,echo=0,link={}", agent_tty.display()));
    let socat = Proc::spawn("socat", socat);
    wait_until(Duration::from_secs(10), "socat's pty pair", || {
        (server_tty.exists() && agent_tty.exists()).then_some(())
    });
    (socat, server_tty, agent_tty)
}

/// Starts `tests/peers/<script>` on `tty` and waits for the JSON line it prints once serving.
fn pymodbus_peer(script: &str, tty: &Path, args: &[&str]) -> (Proc, serde_json::Value) {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(workspace().join("tests/peers").join(script))
        .arg(tty)
        .args(args);
    let peer = Proc::spawn(script, cmd);
    let hello = wait_until(Duration::from_secs(30), "pymodbus to serve", || {
        peer.stdout_lines()
            .first()
            .and_then(|l| serde_json::from_str(l).ok())
    });
    (peer, hello)
}

/// A site in `dir` with one RTU bus `peer` on `tty` (19200 8N1 plus `bus_extra`), the profile
/// `peer` made of `points`, and `devices`.
fn peer_site(dir: &Path, points: &str, tty: &Path, bus_extra: &str, devices: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("profiles/peer.toml"),
        format!("description = \"pymodbus peer\"\n{points}"),
    )
    .unwrap();
    let config = dir.join("site.toml");
    ensure_key(dir);
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"interop\"\nname = \"Interop\"\npermit_number = \"X\"\npermit_class = \"key\"\n\n[store]\npath = \"site.db\"\ncommit_interval_ms = 200\n\n[status]\nlisten = \"127.0.0.1:0\"\n\n[[buses]]\nname = \"peer\"\ntype = \"rtu\"\nport = \"{}\"\nbaud = 19200\nparity = \"none\"\n{bus_extra}\n{devices}",
            tty.display()
        ),
    )
    .unwrap();
    config
}

// Interoperability: an independent Modbus RTU server (pymodbus) on a socat pty pair.

#[test]
fn rtu_the_agent_reads_exactly_what_a_pymodbus_rtu_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, server_tty, agent_tty) = pty_pair(dir.path());
    let (_peer, hello) = pymodbus_peer("pymodbus_rtu_server.py", &server_tty, &[]);
    let devices: String = [(1, "good"), (2, "refusing"), (3, "other")]
        .iter()
        .map(|(unit, name)| format!("[[devices]]\nname = \"{name}\"\nbus = \"peer\"\nunit_id = {unit}\nprofile = \"peer\"\npoll_interval_ms = 300\n\n"))
        .collect();
    let config = peer_site(
        dir.path(),
        "[[points]]\nname = \"f32_cdab\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\nword_order = \"CDAB\"\n[[points]]\nname = \"i32_abcd\"\ntable = \"holding\"\naddress = 2\ntype = \"i32\"\nword_order = \"ABCD\"\n[[points]]\nname = \"u16\"\ntable = \"holding\"\naddress = 4\n",
        &agent_tty,
        "timeout_ms = 500\n",
        &devices,
    );
    let mut agent = start_agent(&config);
    let db = dir.path().join("site.db");
    let value_of = |point: &str| -> Option<f64> {
        stored(&db, point)
            .iter()
            .find_map(|r| match (r.outcome, r.flag) {
                (Outcome::Value(v), Flag::N) => Some(v),
                _ => None,
            })
    };
    let f32v = wait_until(Duration::from_secs(20), "the f32 CDAB value", || {
        if let Some(status) = agent.try_exit() {
            panic!("agent exited with {status}:\n{}", agent.stderr());
        }
        value_of("good/f32_cdab")
    });
    assert_eq!(f32v, hello["f32"].as_f64().unwrap());
    assert_eq!(value_of("good/i32_abcd"), hello["i32"].as_f64());
    assert_eq!(value_of("good/u16"), hello["u16"].as_f64());
    // Unit 3 holds other values: each unit's readings are its own.
    let other = wait_until(Duration::from_secs(20), "unit 3's u16", || {
        value_of("other/u16")
    });
    assert_eq!(other, hello["u16_unit3"].as_f64().unwrap());
    // An exception over RTU is an exception outcome (flag D), not a communication fault.
    wait_until(
        Duration::from_secs(20),
        "exception 04 from the refusing unit",
        || {
            stored(&db, "refusing/u16")
                .iter()
                .any(|r| {
                    r.outcome
                        == Outcome::Exception(
                            sealwatch_firmware::modbus::ExceptionCode::ServerDeviceFailure,
                        )
                        && r.flag == Flag::D
                })
                .then_some(())
        },
    );
    let good: Vec<f64> = stored(&db, "good/u16")
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Value(v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(
        good.iter().all(|v| Some(*v) == hello["u16"].as_f64()),
        "{good:?}"
    );
}

/// An independent slave (pymodbus) answers reads of register 100 after 500 ms, more than two of
/// the agent's 200 ms timeouts, while the agent polls every 100 ms; register 0, read first, is
/// answered at once. Every register holds 1000 plus its address, so a late answer taken for the
/// next request would show as a value of 1100 for register 0. None may: the late answers are
/// heard, counted and thrown away.
#[test]
fn rtu_an_answer_later_than_two_timeouts_is_never_stored_for_another_request() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, server_tty, agent_tty) = pty_pair(dir.path());
    let (_peer, hello) = pymodbus_peer("pymodbus_late_slave.py", &server_tty, &["500"]);
    let base = hello["base"].as_f64().unwrap();
    assert_eq!(hello["late_register"].as_u64(), Some(100));
    let config = peer_site(
        dir.path(),
        "[[points]]\nname = \"prompt\"\ntable = \"holding\"\naddress = 0\n[[points]]\nname = \"late\"\ntable = \"holding\"\naddress = 100\n",
        &agent_tty,
        "timeout_ms = 200\nmax_gap = 0\ndegrade_after = 100\n",
        "[[devices]]\nname = \"slave\"\nbus = \"peer\"\nunit_id = 1\nprofile = \"peer\"\npoll_interval_ms = 100\n",
    );
    let mut agent = start_agent(&config);
    let url = status_url(&mut agent);
    let db = dir.path().join("site.db");
    // Run until register 100 has timed out many times and register 0 has been read many times.
    wait_until(Duration::from_secs(60), "12 reads of register 0", || {
        if let Some(status) = agent.try_exit() {
            panic!("agent exited with {status}:\n{}", agent.stderr());
        }
        let prompt = stored(&db, "slave/prompt").len();
        let timeouts = stored(&db, "slave/late")
            .iter()
            .filter(|r| r.outcome == Outcome::Fault(Fault::Timeout))
            .count();
        (prompt >= 12 && timeouts >= 6).then_some(())
    });
    for (point, address) in [("slave/prompt", 0.0), ("slave/late", 100.0)] {
        let wrong: Vec<(i64, f64)> = values(&db, point, 0)
            .into_iter()
            .filter(|(_, v)| *v != base + address)
            .collect();
        assert!(
            wrong.is_empty(),
            "{} values stored for {point} that are not its register's, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
    // Register 0 was read, and the late answers were heard and counted as such.
    assert!(values(&db, "slave/prompt", 0).len() >= 10);
    let health = wait_until(Duration::from_secs(20), "late replies counted", || {
        let state = get_json(&format!("{url}/api/state"));
        let device = state["devices"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == "slave")?
            .clone();
        (device["late_replies"].as_u64() > Some(0)).then_some(device)
    });
    assert_eq!(health["bad_frames"].as_u64(), Some(0), "{health}");
}
