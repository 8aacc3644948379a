//! Agent footprint: peak resident memory and CPU of the real `sealwatch` process polling 1,000
//! points at 1 Hz from the simulated plant (in this process), read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealwatch_sim::scenario::Scenario;
use sealwatch_sim::serve::{self, SimOptions};

use crate::site::seal_node_site;

pub(crate) struct Footprint {
    pub(crate) points: usize,
    pub(crate) seconds: u64,
    pub(crate) peak_rss_kib: u64,
    pub(crate) cpu_percent: f64,
}

/// Builds (if needed) and finds the release `sealwatch` binary next to this one.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no folder for {}", exe.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "sealwatch-agent",
            "--bins",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "building the agent failed");
    Ok(dir.join("sealwatch"))
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) async fn measure(window: Duration) -> anyhow::Result<Footprint> {
    let binary = agent_binary()?;
    let dir = tempfile::tempdir()?;
    let per_node = sealwatch_agent::config::profile::Profile::seal_node()
        .points
        .len();
    let nodes = 1000 / per_node;
    let placeholder = seal_node_site(dir.path(), 1, nodes, 0, 1000, &[])?;
    let sim = serve::start(&placeholder, Scenario::default(), SimOptions::default()).await?;
    let address = sim.addresses["bus0"].to_string();
    let config = seal_node_site(dir.path(), 1, nodes, 0, 1000, &[address])?;
    let points: usize = config.devices.iter().map(|d| d.profile.points.len()).sum();
    let mut child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(&config.file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Warm up, then measure CPU over the window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = cpu_ticks(pid).unwrap_or(0);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let t1 = cpu_ticks(pid).unwrap_or(0);
    let elapsed = started.elapsed().as_secs_f64();
    let peak_rss_kib = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.wait();
    sim.stop();
    let cpu_percent = (t1.saturating_sub(t0)) as f64 / clock_ticks_per_second() / elapsed * 100.0;
    Ok(Footprint {
        points,
        seconds: window.as_secs(),
        peak_rss_kib,
        cpu_percent,
    })
}

/// `.text`, `.data`, `.bss` of the seal-node image (built here), or why not.
pub(crate) fn firmware_size() -> Result<(u64, u64, u64), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", root.join("target/mcu"))
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--target",
            "thumbv7em-none-eabihf",
            "--manifest-path",
            "firmware/mcu/Cargo.toml",
        ])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("the image did not build (rustup target add thumbv7em-none-eabihf)".to_owned());
    }
    let out = Command::new("size")
        .arg(root.join("target/mcu/thumbv7em-none-eabihf/release/sealwatch-seal-node"))
        .output()
        .map_err(|e| format!("size: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    match numbers.as_slice() {
        [t, d, b] => Ok((*t, *d, *b)),
        _ => Err(format!("cannot read size output: {text}")),
    }
}
