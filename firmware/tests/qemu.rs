//! End to end on an emulated MCU: builds the `sealwatch-seal-node` image for thumbv7em, boots it
//! under QEMU (mps2-an386), commissions it over Modbus RTU through a pty with mbpoll (an
//! independent master), drives a lid opening and a level drop from the host through the second
//! UART, and reads the results back. Fails (never skips) without qemu-system-arm or mbpoll.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::procs::*;

fn build_image() -> PathBuf {
    let root = workspace_root();
    let target_dir = root.join("target/mcu");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "thumbv7em-none-eabihf",
            "--manifest-path",
        ])
        .arg(root.join("firmware/mcu/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cannot run cargo");
    assert!(
        out.status.success(),
        "building the MCU image failed (is the thumbv7em-none-eabihf target installed? scripts/setup.sh adds it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elf = target_dir.join("thumbv7em-none-eabihf/release/sealwatch-seal-node");
    assert!(elf.is_file(), "no image at {}", elf.display());
    elf
}

fn mbpoll(port: &Path, unit: u8, args: &[&str], values: &[&str]) -> Output {
    let tool = require_tool("mbpoll", "apt-get install mbpoll");
    Command::new(tool)
        .args([
            "-m",
            "rtu",
            "-b",
            "115200",
            "-P",
            "none",
            "-a",
            &unit.to_string(),
            "-0",
            "-1",
            "-o",
            "1",
        ])
        .args(args)
        .arg(port)
        .args(values)
        .output()
        .expect("cannot run mbpoll")
}

fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads `count` registers of `table` (mbpoll's -t: 1 discrete, 3 input, 4 holding).
fn read(port: &Path, unit: u8, table: &str, start: u16, count: u16) -> Result<Vec<u32>, String> {
    let out = mbpoll(
        port,
        unit,
        &[
            "-t",
            table,
            "-r",
            &start.to_string(),
            "-c",
            &count.to_string(),
        ],
        &[],
    );
    if !out.status.success() {
        return Err(show(&out));
    }
    let values: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('[')?
                .split_once("]:")?
                .1
                .trim()
                .parse()
                .ok()
        })
        .collect();
    if values.len() == usize::from(count) {
        Ok(values)
    } else {
        Err(show(&out))
    }
}

/// Polls until `read` returns `want` (or panics at the deadline with the last answer).
fn wait_for(port: &Path, unit: u8, table: &str, start: u16, want: &[u32], what: &str) {
    let mut last = Err(String::new());
    let deadline = Duration::from_secs(20);
    let end = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < end {
        last = read(port, unit, table, start, want.len() as u16);
        if last.as_deref() == Ok(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: wanted {want:?} at {table}/{start} within {deadline:?}, last answer {last:?}");
}

#[test]
fn seal_node_image_under_qemu() {
    let qemu = require_tool(
        "qemu-system-arm",
        "install qemu-system-arm from bookworm-backports (TESTING.md)",
    );
    require_tool("mbpoll", "apt-get install mbpoll");
    let elf = build_image();
    let dir = tempfile::tempdir().unwrap();
    let modbus = dir.path().join("modbus");
    let inputs = dir.path().join("inputs");
    let _qemu = spawn(
        "qemu-system-arm",
        Command::new(qemu)
            .args(["-M", "mps2-an386", "-display", "none", "-monitor", "none"])
            .args(["-chardev", &format!("pty,id=u0,path={}", modbus.display())])
            .args(["-serial", "chardev:u0"])
            .args(["-chardev", &format!("pty,id=u1,path={}", inputs.display())])
            .args(["-serial", "chardev:u1"])
            .arg("-kernel")
            .arg(&elf)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    wait_until("QEMU's ptys", Duration::from_secs(20), || {
        modbus.exists() && inputs.exists()
    });
    // QEMU drops guest output while nobody holds a pty open: hold both for the test's life.
    let _modbus_holder = std::fs::OpenOptions::new()
        .write(true)
        .open(&modbus)
        .unwrap();
    let mut samples = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&inputs)
        .unwrap();
    // The image reports its stack high-water mark on the samples line every 500 ms.
    let (peak_tx, peak_rx) = std::sync::mpsc::channel::<usize>();
    let reader = samples.try_clone().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line
                .trim()
                .strip_prefix("stack-peak ")
                .and_then(|n| n.parse().ok())
            {
                if peak_tx.send(n).is_err() {
                    return;
                }
            }
        }
    });
    let mut drive = |line: &str| {
        writeln!(samples, "{line}").unwrap();
        samples.flush().unwrap();
    };

    // Boots uncommissioned as unit 1: firmware version answers, seal state unknown; fault bits say
    // settings defaulted (8) and no loop current yet (2: below 3.8 mA).
    wait_for(&modbus, 1, "3", 10, &[0x0001], "the node to boot");
    wait_for(
        &modbus,
        1,
        "3",
        2,
        &[0, 8 | 2],
        "uncommissioned: unknown, settings defaulted",
    );

    // A technician commissions it: unit 17, 19200 8E1, 50 ms, span 5000 mm, seal minimum 1000 mm,
    // travel 8000 ms, commit — in one write-multiple-registers request.
    let out = mbpoll(
        &modbus,
        1,
        &["-t", "4", "-r", "0"],
        &["17", "192", "2", "50", "5000", "1000", "8000", "49374"],
    );
    assert!(
        out.status.success(),
        "commissioning failed:\n{}",
        show(&out)
    );
    let unit = 17;
    wait_for(
        &modbus,
        unit,
        "4",
        0,
        &[17, 192, 2, 50, 5000, 1000, 8000],
        "settings committed",
    );

    // Lid closed, gate shut, 12 mA: sealed, 2500 mm.
    drive("S 1 0 0 12000");
    wait_for(&modbus, unit, "3", 0, &[2500, 12000, 1, 0], "sealed");
    // The lid opens: charging, lid-open input on.
    drive("S 0 1 0 12000");
    wait_for(
        &modbus,
        unit,
        "3",
        2,
        &[2],
        "charging while the lid is open",
    );
    wait_for(&modbus, unit, "1", 0, &[0, 1, 0, 0, 0], "lid-open switch");
    // It closes again: one lid cycle.
    drive("S 1 0 0 12000");
    wait_for(
        &modbus,
        unit,
        "3",
        2,
        &[1, 0, 0, 1],
        "sealed after one lid cycle",
    );
    // The gate opens, then the level drops to 6 mA = 625 mm, below the 1000 mm seal minimum.
    drive("S 1 0 1 12000");
    wait_for(&modbus, unit, "3", 2, &[2], "charging through the gate");
    drive("S 1 0 1 6000");
    wait_for(
        &modbus,
        unit,
        "3",
        0,
        &[625, 6000, 3, 0],
        "breach: level below the seal",
    );
    wait_for(&modbus, unit, "3", 6, &[0, 1], "one breach counted");
    // The event latch: newest is the breach (state 3, cause 1 = level below seal), seq 5.
    let latch = read(&modbus, unit, "3", 11, 6).unwrap();
    assert_eq!(latch[0], 5, "event seq: {latch:?}");
    assert_eq!(latch[1], 5, "newest slot seq: {latch:?}");
    assert_eq!(latch[2], 3 | (1 << 8), "newest slot kind: {latch:?}");
    let at_ms = (latch[3] << 16) | latch[4];
    let uptime = read(&modbus, unit, "3", 44, 2).unwrap();
    let uptime_ms = (uptime[0] << 16) | uptime[1];
    assert!(
        at_ms > 0 && at_ms <= uptime_ms,
        "event at {at_ms} ms, uptime {uptime_ms} ms"
    );

    // RAM: static data plus the deepest stack seen during all of the above stays within 8 KiB.
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut peak = None;
    while std::time::Instant::now() < end {
        match peak_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(n) => peak = Some(peak.map_or(n, |p: usize| p.max(n))),
            Err(_) if peak.is_some() => break,
            Err(_) => {}
        }
    }
    let peak = peak.expect("the image never reported its stack high-water mark");
    eprintln!("stack high-water mark under QEMU: {peak} bytes");
    assert!(peak > 0 && peak < 8 * 1024 - 64, "stack peak {peak} bytes");
}
