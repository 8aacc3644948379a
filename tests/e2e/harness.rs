//! A small harness: builds and starts the real binaries as processes, waits on conditions with
//! deadlines, and reads what the agent stored.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sealwatch_agent::store::{Store, StoredReading};

/// The workspace root.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary, built once per test run (same profile as this test).
pub(crate) fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/e2e-…  →  target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace()).args([
            "build",
            "--quiet",
            "-p",
            "sealwatch-agent",
            "-p",
            "sealwatch-sim",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        let out = cmd
            .output()
            .expect("cannot run cargo to build the binaries");
        assert!(
            out.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The Python of the venv with pymodbus (`SEALWATCH_PYTHON`, or `target/venv`); fails, never
/// skips, when it is missing.
pub(crate) fn python() -> PathBuf {
    let path = std::env::var_os("SEALWATCH_PYTHON")
        .map_or_else(|| workspace().join("target/venv/bin/python"), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: run scripts/setup.sh (it makes the venv with pymodbus)",
        path.display()
    );
    path
}

/// Waits until `probe` gives a value, checking every 50 ms; panics after `timeout`.
pub(crate) fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Milliseconds since the epoch, as the agent stamps readings.
pub(crate) fn now_ms() -> i64 {
    sealwatch_agent::clock::now_ms()
}

/// A child process whose output is collected; killed when dropped.
pub(crate) struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Proc {
    /// Starts `cmd` with piped stdio.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env("SEALWATCH_LOG", "info");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Proc {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// All stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// All stdout so far, as lines.
    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Writes a line to its stdin.
    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot write stdin: {e}", self.name));
    }

    /// Starts a stand-in that writes a JSON ready file once listening; returns it and the file.
    pub(crate) fn spawn_ready(name: &str, cmd: Command, ready: &Path) -> (Proc, serde_json::Value) {
        let mut proc = Proc::spawn(name, cmd);
        let doc = wait_until(
            Duration::from_secs(20),
            &format!("{name}'s ready file"),
            || {
                if let Some(status) = proc.try_exit() {
                    panic!("{name} exited with {status}:\n{}", proc.stderr());
                }
                std::fs::read(ready)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
            },
        );
        (proc, doc)
    }

    /// Sends a command line and waits for its `ok …` answer; panics on `error …` or silence.
    pub(crate) fn command(&mut self, line: &str) -> String {
        let before = self.stdout_lines().len();
        self.send_line(line);
        let name = self.name.clone();
        let answer = wait_until(
            Duration::from_secs(10),
            &format!("{name} to answer '{line}'"),
            || {
                self.stdout_lines()
                    .into_iter()
                    .skip(before)
                    .find(|l| l.starts_with("ok ") || l.starts_with("error"))
            },
        );
        assert!(
            answer.starts_with("ok "),
            "{name} refused '{line}': {answer}"
        );
        answer
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, with its status.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit by itself.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        wait_until(timeout, &format!("{name} to exit"), || self.try_exit())
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.name);
        self.wait_exit(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulated plant, running as `sealwatch-sim serve`.
pub(crate) struct Sim {
    /// The process.
    pub(crate) proc: Proc,
    /// Bus name → `host:port`.
    pub(crate) buses: BTreeMap<String, String>,
    /// RTU bus name → the serial device path the agent opens.
    pub(crate) ports: BTreeMap<String, String>,
}

impl Sim {
    /// Starts the plant of `config` on free ports and waits until it listens.
    pub(crate) fn start(dir: &Path, config: &Path, extra: &[&str]) -> Sim {
        let ready = dir.join("sim-ready.json");
        let mut cmd = Command::new(binary("sealwatch-sim"));
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra);
        let (proc, doc) = Proc::spawn_ready("sealwatch-sim", cmd, &ready);
        let buses = doc["buses"]
            .as_object()
            .expect("buses in ready file")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("address").to_owned()))
            .collect();
        let ports = doc["ports"]
            .as_object()
            .map(|ports| {
                ports
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("port path").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Sim { proc, buses, ports }
    }

    /// Runs a sim command and waits for its answer; panics if the sim refuses it.
    pub(crate) fn command(&mut self, line: &str) {
        self.proc.command(line);
    }
}

/// The agent, running as `sealwatch run`.
pub(crate) fn start_agent(config: &Path) -> Proc {
    let mut cmd = Command::new(binary("sealwatch"));
    cmd.arg("run").arg("--config").arg(config);
    Proc::spawn("sealwatch", cmd)
}

/// The agent under a stand-in service manager: `NOTIFY_SOCKET` bound in `dir`, a watchdog of
/// 1 s, and `env` besides; returns the agent and the socket it notifies (reads time out after
/// 100 ms).
pub(crate) fn start_agent_notifying(
    dir: &Path,
    config: &Path,
    env: &[(&str, &str)],
) -> (Proc, std::os::unix::net::UnixDatagram) {
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut cmd = Command::new(binary("sealwatch"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .envs(env.iter().copied());
    (Proc::spawn("sealwatch", cmd), socket)
}

/// Everything stored for one point (empty while the database does not exist yet).
pub(crate) fn stored(db: &Path, point: &str) -> Vec<StoredReading> {
    if !db.exists() {
        return Vec::new();
    }
    match Store::open_read_only(db) {
        Ok(store) => store.readings(point, 0, i64::MAX).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Waits until `point` has a reading after `since` that satisfies `test`; fails at once if the
/// agent exits meanwhile.
pub(crate) fn wait_for_reading(
    agent: &mut Proc,
    db: &Path,
    point: &str,
    since: i64,
    what: &str,
    test: impl Fn(&sealwatch_agent::model::Outcome, sealwatch_agent::model::Flag) -> bool,
) {
    wait_until(Duration::from_secs(20), &format!("{point}: {what}"), || {
        if let Some(status) = agent.try_exit() {
            panic!("agent exited with {status}:\n{}", agent.stderr());
        }
        stored(db, point)
            .iter()
            .any(|r| r.at_ms > since && test(&r.outcome, r.flag))
            .then_some(())
    });
}

/// Every point key the agent registered.
pub(crate) fn stored_points(db: &Path) -> Vec<String> {
    if !db.exists() {
        return Vec::new();
    }
    Store::open_read_only(db)
        .and_then(|s| s.point_keys())
        .map(|keys| keys.into_iter().map(|(_, k)| k).collect())
        .unwrap_or_default()
}

/// The site config used by most tests: one furnace with two bins behind a gateway bus and an
/// analyzer on its own bus, using the repository's profiles. `buses` maps bus names to addresses
/// (any valid address before the sim has bound).
pub(crate) fn small_site(dir: &Path, buses: &BTreeMap<String, String>) -> PathBuf {
    let addr = |name: &str| {
        buses
            .get(name)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:1".to_owned())
    };
    let text = format!(
        r#"profiles_dir = "{profiles}"

[site]
id = "e2e"
name = "End-to-end plant"
permit_number = "E2E-1"
permit_class = "key"

[store]
path = "site.db"
commit_interval_ms = 200

[status]
listen = "127.0.0.1:0"

[[buses]]
name = "furnace-top"
type = "tcp"
address = "{top}"
timeout_ms = 300
probe_interval_ms = 1000

[[buses]]
name = "nmhc-1"
type = "tcp"
address = "{nmhc}"
timeout_ms = 300
probe_interval_ms = 1000

[[devices]]
name = "f1-b1-node"
bus = "furnace-top"
unit_id = 1
profile = "seal-node"
poll_interval_ms = 250

[[devices]]
name = "f1-b2-node"
bus = "furnace-top"
unit_id = 2
profile = "seal-node"
poll_interval_ms = 250

[[devices]]
name = "f1-nmhc"
bus = "nmhc-1"
unit_id = 1
profile = "nmhc-analyzer"
poll_interval_ms = 250

[[furnaces]]
name = "F1"

[[furnaces.bins]]
name = "B1"
device = "f1-b1-node"
seal_level_min_mm = 800
max_open_s = 120

[[furnaces.bins]]
name = "B2"
device = "f1-b2-node"
seal_level_min_mm = 800
max_open_s = 120

[[furnaces.analyzers]]
name = "NMHC"
device = "f1-nmhc"
"#,
        profiles = workspace().join("config/profiles").display(),
        top = addr("furnace-top"),
        nmhc = addr("nmhc-1"),
    );
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("write site config");
    ensure_key(dir);
    path
}

/// The signing key a site config in `dir` uses by default (`sealwatch.key`), made once.
pub(crate) fn ensure_key(dir: &Path) -> PathBuf {
    let key = dir.join("sealwatch.key");
    if !key.exists() {
        sealwatch_agent::evidence::sign::generate(&key).expect("make a signing key");
    }
    key
}

/// The stand-in audit system, running as `sealwatch-sim audit`.
pub(crate) struct Audit {
    /// The process.
    pub(crate) proc: Proc,
    /// Its base URL.
    pub(crate) url: String,
    /// Its database.
    pub(crate) db: PathBuf,
}

impl Audit {
    /// Starts an audit system for site `e2e` with the public key of the key in `dir`.
    pub(crate) fn start(dir: &Path) -> Audit {
        let key = ensure_key(dir);
        let ready = dir.join("audit-ready.json");
        let db = dir.join("audit.db");
        let mut cmd = Command::new(binary("sealwatch-sim"));
        cmd.arg("audit")
            .arg("--db")
            .arg(&db)
            .args(["--site", "e2e", "--token", "t0k3n"])
            .arg("--public-key");
        cmd.arg(sealwatch_agent::evidence::sign::public_path(&key))
            .arg("--ready-file")
            .arg(&ready);
        let (proc, doc) = Proc::spawn_ready("audit system", cmd, &ready);
        Audit {
            proc,
            url: doc["url"].as_str().expect("url").to_owned(),
            db,
        }
    }

    /// Runs a fault command and waits for its answer.
    pub(crate) fn command(&mut self, line: &str) {
        self.proc.command(line);
    }

    /// The records it holds, in order.
    pub(crate) fn records(&self) -> Vec<sealwatch_agent::evidence::EvidenceRecord> {
        let Ok(conn) = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        ) else {
            return Vec::new();
        };
        let Ok(mut stmt) = conn.prepare("SELECT record FROM records ORDER BY seq") else {
            return Vec::new();
        };
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map(|rows| rows.filter_map(Result::ok).collect::<Vec<_>>())
            .unwrap_or_default();
        rows.iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect()
    }

    /// The `[uplink.audit]` section pointing at it.
    pub(crate) fn uplink_toml(&self) -> String {
        format!("\n[uplink.audit]\nurl = \"{}\"\ntoken = \"t0k3n\"\nbatch_records = 50\ntimeout_ms = 2000\nretry_max_ms = 1000\n", self.url)
    }
}

/// Every evidence record in an agent database.
pub(crate) fn evidence_of(db: &Path) -> Vec<sealwatch_agent::evidence::EvidenceRecord> {
    if !db.exists() {
        return Vec::new();
    }
    Store::open_read_only(db)
        .and_then(|s| s.evidence_range(1, 1 << 40))
        .unwrap_or_default()
}

// ---- small HTTP client (the agent's API and chromedriver's WebDriver API) ----

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub(crate) fn http(method: &str, url: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // Read the header, then exactly the body (servers may keep the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break raw.len();
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..header_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[header_end..];
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = String::from_utf8_lossy(&raw[header_end..]).into_owned();
    let body = if chunked { dechunk(&body) } else { body };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn get_json(url: &str) -> serde_json::Value {
    let (code, body) = http("GET", url, None).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// The status page address the agent logged.
pub(crate) fn status_url(agent: &mut Proc) -> String {
    wait_until(Duration::from_secs(30), "the agent's status page", || {
        if let Some(status) = agent.try_exit() {
            panic!("agent exited with {status}:\n{}", agent.stderr());
        }
        let err = agent.stderr();
        let at = err.find("status page: http://")?;
        let rest = &err[at + "status page: ".len()..];
        let url = rest.split_whitespace().next()?;
        Some(url.trim_end_matches('/').to_owned())
    })
}

/// A plant (at 4× speed, for more events to seal), an audit system, and the site config pointing
/// at both.
pub(crate) fn site_with_audit(dir: &Path) -> (Sim, Audit, PathBuf) {
    let placeholder = small_site(dir, &BTreeMap::new());
    let sim = Sim::start(dir, &placeholder, &["--speed", "4"]);
    let audit = Audit::start(dir);
    let config = small_site(dir, &sim.buses);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&audit.uplink_toml());
    std::fs::write(&config, text).unwrap();
    (sim, audit, config)
}
