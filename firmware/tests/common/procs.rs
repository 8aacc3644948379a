//! Process harness for the interoperability and QEMU tests: children that die with the test,
//! waiting on conditions with deadlines (never bare sleeps), finding the workspace's tools.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when dropped.
pub struct Guard {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd`, naming it in the panic message if it cannot start.
pub fn spawn(name: &'static str, cmd: &mut Command) -> Guard {
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    Guard { name, child }
}

/// Waits until `cond` holds, polling every 10 ms, panicking with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads lines of `stdout` on a thread; returns a receiver of them.
pub fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(_) => panic!("timed out after {deadline:?} waiting for a line with {needle:?}"),
        }
    }
}

/// Path of `tool` on PATH, or a panic that says how to install it.
pub fn require_tool(tool: &str, hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not installed: {hint} (scripts/setup.sh installs it)"))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python with pymodbus: `$SEALWATCH_PYTHON`, else `target/venv/bin/python`.
pub fn python() -> PathBuf {
    let p = std::env::var_os("SEALWATCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/python"));
    assert!(
        p.is_file(),
        "no Python with pymodbus at {} (set SEALWATCH_PYTHON or run scripts/setup.sh)",
        p.display()
    );
    p
}

/// A socat pty pair in `dir`: returns the guard and the two link paths.
pub fn socat_pair(dir: &Path) -> (Guard, PathBuf, PathBuf) {
    let socat = require_tool("socat", "apt-get install socat");
    let a = dir.join("node");
    let b = dir.join("client");
    let guard = spawn(
        "socat",
        Command::new(socat)
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until("socat's pty links", Duration::from_secs(10), || {
        a.exists() && b.exists()
    });
    (guard, a, b)
}
