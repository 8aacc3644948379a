//! Interoperability: independent Modbus masters — pymodbus and mbpoll (libmodbus) — against the
//! seal node served on a pty by `sealwatch-pty-slave`. Every function code, the exceptions, and
//! device identification. Fails (does not skip) when a tool is missing.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::procs::*;

const UNIT: u8 = 17;

struct Bench {
    /// Keeps the client side of the pty pair open between client runs: otherwise socat sees end
    /// of file when a client closes it and exits.
    _holder: std::fs::File,
    _socat: Guard,
    slave: Guard,
    client_port: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn bench(extra: &[&str]) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let (socat, node_port, client_port) = socat_pair(dir.path());
    let mut slave = spawn(
        "sealwatch-pty-slave",
        Command::new(env!("CARGO_BIN_EXE_sealwatch-pty-slave"))
            .arg(&node_port)
            .args(["--unit", &UNIT.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let rx = lines(slave.child.stdout.take().unwrap());
    wait_line(&rx, "ready", Duration::from_secs(10));
    // Lid closed, gate shut, 12 mA; then wait until the node has debounced it (via Modbus is the
    // client's job, so give the node a line and let the clients check the result).
    let stdin = slave.child.stdin.as_mut().unwrap();
    writeln!(stdin, "S 1 0 0 12000").unwrap();
    stdin.flush().unwrap();
    let holder = std::fs::OpenOptions::new()
        .write(true)
        .open(&client_port)
        .unwrap();
    Bench {
        _holder: holder,
        _socat: socat,
        slave,
        client_port,
        _dir: dir,
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pymodbus_client_against_the_node() {
    let python = python();
    let b = bench(&["--storage-fails-after", "1"]);
    // The sample needs 50 ms of debounce: the client retries its first check until it settles.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/pymodbus_client.py"
    );
    let mut last = None;
    for _ in 0..20 {
        let out = Command::new(&python)
            .arg(script)
            .arg(&b.client_port)
            .arg(UNIT.to_string())
            .output()
            .expect("cannot run python");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // Only the very first check may fail, while the inputs settle.
        if !out.status.success() && text.starts_with("ok 01 read coils\nFAIL 02") {
            std::thread::sleep(Duration::from_millis(50));
            last = Some(out);
            continue;
        }
        assert!(
            out.status.success(),
            "pymodbus client failed:\n{}",
            show(&out)
        );
        assert!(
            text.contains("pymodbus: 23 checks passed"),
            "{}",
            show(&out)
        );
        return;
    }
    panic!("inputs never settled:\n{}", show(&last.unwrap()));
}

/// mbpoll's command line: options, the device, then the values to write (if any).
fn mbpoll_write(port: &std::path::Path, args: &[&str], values: &[&str]) -> Output {
    let tool = require_tool("mbpoll", "apt-get install mbpoll");
    Command::new(tool)
        .args([
            "-m",
            "rtu",
            "-b",
            "19200",
            "-P",
            "even",
            "-a",
            &UNIT.to_string(),
            "-0",
            "-1",
            "-o",
            "2",
        ])
        .args(args)
        .arg(port)
        .args(values)
        .output()
        .expect("cannot run mbpoll")
}

fn mbpoll(port: &std::path::Path, args: &[&str]) -> Output {
    mbpoll_write(port, args, &[])
}

/// `[address]: value` lines of mbpoll's output.
fn values(out: &Output) -> Vec<(u16, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix('[')?;
            let (addr, value) = rest.split_once("]:")?;
            Some((addr.trim().parse().ok()?, value.trim().to_string()))
        })
        .collect()
}

fn read(port: &std::path::Path, table: &str, start: u16, count: u16) -> Vec<String> {
    let out = mbpoll(
        port,
        &[
            "-t",
            table,
            "-r",
            &start.to_string(),
            "-c",
            &count.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "mbpoll -t {table} failed:\n{}",
        show(&out)
    );
    let v = values(&out);
    assert_eq!(
        v.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        (start..start + count).collect::<Vec<_>>(),
        "{}",
        show(&out)
    );
    v.into_iter().map(|(_, v)| v).collect()
}

fn write(port: &std::path::Path, table: &str, start: u16, vals: &[&str]) {
    let out = mbpoll_write(port, &["-t", table, "-r", &start.to_string()], vals);
    assert!(
        out.status.success(),
        "mbpoll write -t {table} {vals:?} failed:\n{}",
        show(&out)
    );
}

fn exception(port: &std::path::Path, args: &[&str], values: &[&str], message: &str) {
    let out = mbpoll_write(port, args, values);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.to_lowercase().contains(&message.to_lowercase()),
        "mbpoll {args:?}: expected {message:?}:\n{}",
        show(&out)
    );
}

#[test]
fn mbpoll_against_the_node() {
    let b = bench(&[]);
    let p = b.client_port.as_path();
    wait_until(
        "the lid-closed input to settle",
        Duration::from_secs(10),
        || read(p, "1", 0, 5) == ["1", "0", "0", "0", "0"],
    );
    assert_eq!(read(p, "0", 0, 2), ["0", "0"]);
    assert_eq!(
        read(p, "4", 0, 8),
        ["17", "192", "2", "50", "5000", "1000", "8000", "0"]
    );
    assert_eq!(read(p, "3", 0, 4), ["2500", "12000", "1", "0"]);
    write(p, "0", 1, &["1"]); // 05
    assert_eq!(read(p, "0", 0, 2), ["0", "1"]);
    write(p, "0", 0, &["1", "0"]); // 0F
    assert_eq!(read(p, "0", 0, 2), ["1", "0"]);
    write(p, "4", 3, &["100"]); // 06
    write(p, "4", 4, &["6000", "1200"]); // 10
    assert_eq!(read(p, "4", 3, 3), ["100", "6000", "1200"]);
    write(p, "4", 7, &["49374"]); // 0xC0DE: commit
    assert_eq!(read(p, "3", 0, 1), ["3000"]);
    exception(
        p,
        &["-t", "4", "-r", "0", "-c", "9"],
        &[],
        "Illegal data address",
    );
    exception(
        p,
        &["-t", "3", "-r", "46", "-c", "1"],
        &[],
        "Illegal data address",
    );
    exception(p, &["-t", "4", "-r", "0"], &["0"], "Illegal data value");
    drop(b.slave);
}
