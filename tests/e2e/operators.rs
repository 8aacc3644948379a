//! Operators and technicians: the status page (JSON API, events, history, metrics, and the page
//! itself in a real headless browser), `sealwatch status`, `sealwatch commission` against the sim
//! and against pymodbus (TCP and RTU), and the systemd side (unit file, notify and watchdog).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    binary, get_json, http, python, small_site, start_agent, start_agent_notifying, status_url,
    wait_until, workspace, Proc, Sim,
};

/// A sim and an agent on the small site, with the status page's URL.
struct Plant {
    dir: tempfile::TempDir,
    sim: Sim,
    agent: Proc,
    url: String,
    config: PathBuf,
}

impl Plant {
    fn start(sim_args: &[&str], before_agent: &[&str]) -> Plant {
        let dir = tempfile::tempdir().unwrap();
        let placeholder = small_site(dir.path(), &BTreeMap::new());
        let mut sim = Sim::start(dir.path(), &placeholder, sim_args);
        let config = small_site(dir.path(), &sim.buses);
        for line in before_agent {
            sim.command(line);
        }
        let mut agent = start_agent(&config);
        let url = status_url(&mut agent);
        Plant {
            dir,
            sim,
            agent,
            url,
            config,
        }
    }
}

fn bin_of<'a>(state: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    state["furnaces"]
        .as_array()?
        .iter()
        .flat_map(|f| f["bins"].as_array().into_iter().flatten())
        .find(|b| b["key"] == key)
}

#[test]
fn the_status_api_serves_state_events_history_and_metrics() {
    let mut plant = Plant::start(&[], &[]);
    let url = plant.url.clone();
    // The state: the grid with every field the page shows, filled once readings come.
    let state = wait_until(
        Duration::from_secs(30),
        "bins judged and levels read",
        || {
            let s = get_json(&format!("{url}/api/state"));
            let b1 = bin_of(&s, "F1/B1")?;
            // The sim charges bins on its own schedule: wait for a moment the lid is shut (a
            // loaded machine may judge the first time mid-charge).
            (b1["seal_state"] != "unknown"
                && b1["level_mm"]["value"].is_number()
                && b1["lid"] == "closed")
                .then_some(s)
        },
    );
    assert_eq!(state["source"], "agent");
    assert_eq!(state["site"], "e2e");
    assert_eq!(state["limits"]["nmhc_hourly_mg_m3"], 10.0);
    let b1 = bin_of(&state, "F1/B1").unwrap();
    for field in [
        "lid",
        "gate",
        "seal_level_min_mm",
        "seal_state_since_ms",
        "node_seal_state",
        "last_cycle",
    ] {
        assert!(b1.get(field).is_some(), "bin lacks {field}: {b1}");
    }
    assert_eq!(b1["lid"], "closed", "{b1}");
    let analyzer = &state["furnaces"][0]["analyzers"][0];
    assert_eq!(analyzer["key"], "F1/NMHC");
    assert!(analyzer["nmhc"]["value"].is_number(), "{analyzer}");
    assert!(analyzer.get("hour_avg").is_some());
    assert!(state["evidence_backlog"].is_null() || state["evidence_backlog"].is_u64());
    assert_eq!(state["devices"].as_array().unwrap().len(), 3);

    // Server-sent events: a `state` event at once, and more without asking again.
    let host = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut got = String::new();
    let started = Instant::now();
    while got.matches("event: state").count() < 2 {
        let mut buf = [0u8; 8192];
        let n = s.read(&mut buf).expect("events keep coming");
        assert!(n > 0, "event stream closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(started.elapsed() < Duration::from_secs(10), "{got}");
    }
    assert!(got.contains("content-type: text/event-stream"), "{got}");
    let data = got
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let event: serde_json::Value = serde_json::from_str(data).expect("event data is JSON");
    assert_eq!(event["site"], "e2e");

    // History from the database: a timeline per bin covering the window.
    let history = wait_until(Duration::from_secs(20), "a stored seal state", || {
        let h = get_json(&format!("{url}/api/history?hours=1"));
        let segments = h["bins"][0]["segments"].as_array()?;
        segments
            .iter()
            .any(|s| s["state"] != "unknown")
            .then_some(h)
    });
    let segments = history["bins"][0]["segments"].as_array().unwrap();
    assert_eq!(segments[0]["from_ms"], history["from_ms"]);
    assert_eq!(segments.last().unwrap()["to_ms"], history["to_ms"]);
    assert_eq!(history["bins"].as_array().unwrap().len(), 2);
    assert_eq!(history["analyzers"][0]["key"], "F1/NMHC");
    let (code, body) = http("GET", &format!("{url}/api/history?hours=1000"), None).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("out of range"), "{body}");

    // Metrics in Prometheus text format.
    let (code, metrics) = http("GET", &format!("{url}/metrics"), None).unwrap();
    assert_eq!(code, 200);
    for needle in [
        "# TYPE sealwatch_polls_total counter",
        "sealwatch_polls_total{device=\"f1-b1-node\",bus=\"furnace-top\"}",
        "sealwatch_request_errors_total{device=\"f1-nmhc\",kind=\"timeout\"}",
        "sealwatch_devices_degraded 0",
        "sealwatch_readings_total",
        "sealwatch_store_bytes",
    ] {
        assert!(metrics.contains(needle), "no {needle} in:\n{metrics}");
    }

    // `sealwatch status` from the running agent (the config says port 0: give the real one)…
    let out = Command::new(binary("sealwatch"))
        .args(["status", "--url", &url, "--config"])
        .arg(&plant.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("agent up"), "{text}");
    assert!(text.contains("F1       B1"), "{text}");
    assert!(text.contains("F1/NMHC"), "{text}");
    assert!(text.contains("f1-b2-node"), "{text}");
    // …and from its database once it has stopped.
    assert!(plant.agent.terminate(Duration::from_secs(10)).success());
    let out = Command::new(binary("sealwatch"))
        .args(["status", "--config"])
        .arg(&plant.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("from the database"), "{text}");
    assert!(text.contains("F1       B1"), "{text}");
    drop(plant.sim);
}

// ---- the page in a real browser (chromium through chromedriver's WebDriver API) ----

fn chromedriver() -> PathBuf {
    for p in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("chromedriver not found: run scripts/setup.sh (it installs Debian's chromium and chromium-driver)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Browser {
    _driver: Proc,
    base: String,
    session: String,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let port = free_port();
        let mut cmd = Command::new(chromedriver());
        cmd.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", cmd);
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "chromedriver to listen", || {
            http("GET", &format!("{base}/status"), None)
                .ok()
                .filter(|(c, b)| *c == 200 && b.contains("\"ready\":true"))
        });
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let (code, body) =
            http("POST", &format!("{base}/session"), Some(&caps.to_string())).expect("new session");
        assert_eq!(code, 200, "cannot start chromium: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Browser {
            _driver: driver,
            base,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let body = body.to_string();
        let (code, text) = http(method, &url, (method == "POST").then_some(body.as_str()))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert_eq!(code, 200, "{method} {path}: {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["value"].take()
    }

    fn js(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": script, "args": []}),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn the_status_page_in_a_browser_turns_a_bin_to_breach_without_reloading() {
    // Twice as fast: F1/B1's breached cycle is judged about 17 s after the sim starts.
    let plant = Plant::start(&["--speed", "2"], &["breach F1/B1"]);
    let profile = plant.dir.path().join("chromium-profile");
    let browser = Browser::start(&profile);
    browser.call(
        "POST",
        "/url",
        serde_json::json!({"url": format!("{}/", plant.url)}),
    );
    // The grid is there, live (server-sent events), before the breach.
    let before = wait_until(Duration::from_secs(30), "the grid in the page", || {
        let v = browser.js(
            "const b = document.querySelector('[data-bin=\"F1/B1\"]'); \
             return b ? [b.dataset.state, document.querySelectorAll('[data-bin]').length, document.body.dataset.transport || ''] : null;",
        );
        v.as_array().filter(|a| a[0] != "unknown").cloned()
    });
    assert_eq!(before[1], 2, "two bins in the grid");
    assert_eq!(before[2], "sse", "the page listens to server-sent events");
    assert_ne!(before[0], "breach", "the breach comes later");
    // A mark that a reload would wipe out.
    browser.js("window.__sealwatchTest = 'same page'; return true;");
    let updates_before = browser
        .js("return +document.body.dataset.updates;")
        .as_f64()
        .unwrap();
    wait_until(
        Duration::from_secs(90),
        "F1/B1 to turn to breach in the open page",
        || {
            (browser.js("return document.querySelector('[data-bin=\"F1/B1\"]').dataset.state;")
                == "breach")
                .then_some(())
        },
    );
    let after = browser.js(
        "const b = document.querySelector('[data-bin=\"F1/B1\"]'); \
         return [window.__sealwatchTest || null, b.dataset.history, +document.body.dataset.updates, \
                 getComputedStyle(b).borderLeftColor, document.querySelectorAll('#timeline svg rect').length];",
    );
    assert_eq!(after[0], "same page", "the page was not reloaded");
    let history = after[1].as_str().unwrap();
    assert!(
        history.ends_with(",breach") && history.split(',').count() >= 2,
        "the page saw the bin before and in breach: {history}"
    );
    assert!(after[2].as_f64().unwrap() > updates_before);
    assert_eq!(after[3], "rgb(211, 47, 47)", "breach is drawn red");
    assert!(
        after[4].as_u64().unwrap() >= 2,
        "the seal timeline is drawn"
    );
    // F1/B2 had no breach.
    assert_ne!(
        browser.js("return document.querySelector('[data-bin=\"F1/B2\"]').dataset.state;"),
        "breach"
    );
    let png = base64_decode(
        browser
            .call("GET", "/screenshot", serde_json::json!({}))
            .as_str()
            .unwrap(),
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    let artifacts = workspace().join("target/e2e-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("status-page-breach.png"), &png).unwrap();
}

// ---- commissioning ----

fn sealwatch(args: &[&str]) -> Output {
    Command::new(binary("sealwatch"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sealwatch runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn found_units(out: &Output) -> Vec<u8> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("found "))
        .unwrap_or_else(|| panic!("no summary: {}", text(out)));
    line.rsplit(": ")
        .next()
        .unwrap()
        .split(", ")
        .map(|u| u.trim().parse().unwrap())
        .collect()
}

#[test]
fn commission_against_the_sim_scans_reads_verifies_and_refuses_unconfirmed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let sim = Sim::start(dir.path(), &placeholder, &["--speed", "2"]);
    let config = small_site(dir.path(), &sim.buses);
    let config = config.to_str().unwrap();
    let top = sim.buses["furnace-top"].clone();

    // Scan: exactly the two seal nodes, each identifying itself: behind the sim's Modbus TCP
    // endpoint runs the firmware's seal node, as on its RTU lines.
    let out = sealwatch(&[
        "commission",
        "--tcp",
        &top,
        "scan",
        "--units",
        "1-6",
        "--timeout-ms",
        "200",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(found_units(&out), vec![1, 2], "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("vendor sealwatch, product SW-SN1")
            .count(),
        2,
        "{}",
        text(&out)
    );

    // Read decoded with the device's profile.
    let out = sealwatch(&[
        "commission",
        "--config",
        config,
        "--device",
        "f1-b1-node",
        "read",
        "--point",
        "level_mm",
        "--point",
        "lid_closed",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("level_mm") && stdout.contains(" mm"),
        "{}",
        text(&out)
    );

    // Watch, twice, without a terminal: two reads.
    let out = sealwatch(&[
        "commission",
        "--tcp",
        &top,
        "watch",
        "--unit",
        "2",
        "--profile",
        "seal-node",
        "--point",
        "level_mm",
        "--interval-ms",
        "200",
        "--times",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("level_mm")
            .count(),
        2,
        "{}",
        text(&out)
    );

    // A write without a terminal and without --yes is refused before anything is sent.
    let out = sealwatch(&[
        "commission",
        "--config",
        config,
        "--device",
        "f1-b1-node",
        "write",
        "--address",
        "3",
        "250",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to write without confirmation"),
        "{}",
        text(&out)
    );

    // Settings written and committed over TCP take effect, as on RTU: the debounce time
    // (holding 3) is staged, committed with the magic word at holding 7, and read back.
    for (address, value) in [("3", "60"), ("7", "0xC0DE")] {
        let out = sealwatch(&[
            "commission",
            "--config",
            config,
            "--device",
            "f1-b2-node",
            "write",
            "--address",
            address,
            value,
            "--yes",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = sealwatch(&[
        "commission",
        "--config",
        config,
        "--device",
        "f1-b2-node",
        "read",
        "--table",
        "holding",
        "--address",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0x003C"),
        "debounce not committed: {}",
        text(&out)
    );

    // Verify the seal node, switch tests included: the plant's charging cycle opens and closes
    // the lid and then the gate.
    let out = sealwatch(&[
        "commission",
        "--config",
        config,
        "--device",
        "f1-b1-node",
        "verify",
        "--switch-timeout-s",
        "90",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    for step in [
        "[PASS] reachable",
        "[PASS] registers",
        "[PASS] values",
        "[PASS] lid switches",
        "[PASS] gate switch",
        "[PASS] identification",
    ] {
        assert!(report.contains(step), "no {step}: {}", text(&out));
    }
    assert!(
        report.contains("PASS: 6 passed, 0 failed"),
        "{}",
        text(&out)
    );
    drop(sim);
}

fn peer(args: &[&str]) -> (Proc, serde_json::Value) {
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("tests/peers/pymodbus_commission_peer.py"))
        .args(args);
    let mut peer = Proc::spawn("pymodbus peer", cmd);
    let hello = wait_until(Duration::from_secs(30), "the pymodbus peer", || {
        if let Some(status) = peer.try_exit() {
            panic!("pymodbus peer exited with {status}:\n{}", peer.stderr());
        }
        peer.stdout_lines()
            .first()
            .and_then(|l| serde_json::from_str(l).ok())
    });
    (peer, hello)
}

#[test]
fn commission_against_pymodbus_finds_its_units_and_fails_a_device_whose_profile_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let (_tcp_peer, hello) = peer(&["tcp", "3", "17"]);
    let addr = format!("127.0.0.1:{}", hello["port"]);

    let out = sealwatch(&[
        "commission",
        "--tcp",
        &addr,
        "scan",
        "--units",
        "1-20",
        "--timeout-ms",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(found_units(&out), vec![3, 17], "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vendor pymodbus-peer, product PEER"),
        "{}",
        text(&out)
    );

    // A site config that claims unit 3 is a seal node.
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"c\"\nname = \"C\"\npermit_number = \"X\"\npermit_class = \"key\"\n\n[[buses]]\nname = \"peer\"\ntype = \"tcp\"\naddress = \"{addr}\"\n\n[[devices]]\nname = \"not-a-node\"\nbus = \"peer\"\nunit_id = 3\nprofile = \"seal-node\"\n"
        ),
    )
    .unwrap();
    crate::harness::ensure_key(dir.path());
    let config = config.to_str().unwrap();
    let out = sealwatch(&[
        "commission",
        "--config",
        config,
        "--device",
        "not-a-node",
        "verify",
        "--no-switch-test",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("[FAIL] identification"), "{}", text(&out));
    assert!(
        report.contains("product code is 'PEER', expected 'SW-SN1'"),
        "{}",
        text(&out)
    );
    assert!(report.contains("[FAIL] registers"), "{}", text(&out));
    assert!(report.contains("FAIL:"), "{}", text(&out));

    // Writes: refused without confirmation, done with --yes, read back.
    let out = sealwatch(&[
        "commission",
        "--tcp",
        &addr,
        "write",
        "--unit",
        "17",
        "--address",
        "4",
        "4242",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = sealwatch(&[
        "commission",
        "--tcp",
        &addr,
        "read",
        "--unit",
        "17",
        "--table",
        "holding",
        "--address",
        "4",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 274 "),
        "unchanged: {}",
        text(&out)
    );
    let out = sealwatch(&[
        "commission",
        "--tcp",
        &addr,
        "write",
        "--unit",
        "17",
        "--address",
        "4",
        "4242",
        "--yes",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = sealwatch(&[
        "commission",
        "--tcp",
        &addr,
        "read",
        "--unit",
        "17",
        "--table",
        "holding",
        "--address",
        "4",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4242"),
        "{}",
        text(&out)
    );

    // The same over RTU on a virtual serial line: exactly the served units, identified.
    let a = dir.path().join("ttyA");
    let b = dir.path().join("ttyB");
    let mut socat = Command::new("socat");
    socat
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()));
    let _socat = Proc::spawn("socat", socat);
    wait_until(Duration::from_secs(10), "the virtual serial line", || {
        (a.exists() && b.exists()).then_some(())
    });
    let (_rtu_peer, _) = peer(&["rtu", b.to_str().unwrap(), "4", "9"]);
    let out = sealwatch(&[
        "commission",
        "--rtu",
        a.to_str().unwrap(),
        "--baud",
        "19200",
        "scan",
        "--units",
        "1-10",
        "--timeout-ms",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(found_units(&out), vec![4, 9], "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vendor pymodbus-peer"),
        "{}",
        text(&out)
    );
}

// ---- service: systemd unit, notify protocol, watchdog, log formats ----

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(workspace().join("config/sealwatch.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "ExecStart=/usr/local/bin/sealwatch run --config /etc/sealwatch/site.toml",
        "User=sealwatch",
        "StateDirectory=sealwatch",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sealwatch",
        "SupplementaryGroups=dialout",
        "DeviceAllow=char-ttyUSB rw",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line}"
        );
    }
    // systemd-analyze checks that ExecStart's program exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sealwatch.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/sealwatch",
            binary("sealwatch").to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (Debian package systemd)");
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "warnings: {}", text(&out));
}

#[test]
fn the_agent_notifies_systemd_feeds_the_watchdog_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let sim = Sim::start(dir.path(), &placeholder, &[]);
    let config = small_site(dir.path(), &sim.buses);
    let (mut agent, socket) =
        start_agent_notifying(dir.path(), &config, &[("SEALWATCH_LOG_FORMAT", "json")]);
    let mut messages: Vec<String> = Vec::new();
    let receive = |messages: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    wait_until(
        Duration::from_secs(30),
        "READY=1 and two WATCHDOG=1",
        || {
            if let Some(status) = agent.try_exit() {
                panic!("agent exited with {status}:\n{}", agent.stderr());
            }
            receive(&mut messages);
            let ready = messages
                .iter()
                .position(|m| m.lines().any(|l| l == "READY=1"))?;
            (messages[ready..]
                .iter()
                .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
                .count()
                >= 2)
                .then_some(())
        },
    );
    assert!(
        messages.iter().any(|m| m.contains("STATUS=polling")),
        "{messages:?}"
    );
    let exit = agent.terminate(Duration::from_secs(10));
    assert!(exit.success(), "{}", agent.stderr());
    // The datagrams sent while stopping wait in the socket.
    wait_until(Duration::from_secs(5), "STOPPING=1", || {
        receive(&mut messages);
        messages
            .iter()
            .any(|m| m.lines().any(|l| l == "STOPPING=1"))
            .then_some(())
    });
    // Logs were JSON lines, as asked.
    let stderr = agent.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(stderr.contains("database closed"), "{stderr}");
    drop(sim);
}
