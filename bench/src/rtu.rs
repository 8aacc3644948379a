//! Modbus RTU bus efficiency: the agent polling seal nodes on an emulated line (the sim paces
//! every byte at the baud and keeps t3.5 and a 1 ms turnaround), against the physical model of
//! DOMAIN.md: one read of N registers takes T = (13 + 2N)·t_char + 2·t3.5 + t_turn (request 8
//! bytes, reply 5 + 2N; for bits, 5 + ⌈N/8⌉), t_char = 11 bits / baud.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sealwatch_agent::config::{self, SiteConfig};
use sealwatch_agent::poll::plan::{plan_reads, ReadRequest};
use sealwatch_agent::run;
use sealwatch_sim::scenario::Scenario;
use sealwatch_sim::serve::LineOptions;
use sealwatch_sim::serve::{self, SimOptions};
use tokio_util::sync::CancellationToken;

/// Device turnaround of the emulated nodes.
pub(crate) const TURNAROUND: Duration = Duration::from_millis(1);
/// Seal nodes on the line.
pub(crate) const NODES: usize = 10;

/// One line speed's figures.
pub(crate) struct RtuFigures {
    pub(crate) baud: u32,
    pub(crate) nodes: usize,
    /// Reads per second the agent achieved.
    pub(crate) measured: f64,
    /// Reads per second the physical model allows.
    pub(crate) model: f64,
    /// Requests that failed during the window.
    pub(crate) failures: u64,
}

fn line_site(dir: &Path, baud: u32) -> anyhow::Result<SiteConfig> {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/profiles");
    let mut text = format!(
        "profiles_dir = \"{}\"\n[site]\nid = \"bench\"\nname = \"Bench\"\npermit_number = \"B\"\npermit_class = \"key\"\n[store]\npath = \"{}\"\n[status]\nlisten = \"\"\n[[buses]]\nname = \"line\"\ntype = \"rtu\"\nport = \"{}\"\nbaud = {baud}\ntimeout_ms = 1000\nmax_gap = 8\n",
        profiles.display(),
        dir.join("bench.db").display(),
        dir.join("line").display(),
    );
    for n in 0..NODES {
        writeln!(text, "[[devices]]\nname = \"n{n}\"\nbus = \"line\"\nunit_id = {}\nprofile = \"seal-node\"\npoll_interval_ms = 100", n + 1)?;
    }
    writeln!(text, "[[furnaces]]\nname = \"F\"")?;
    for n in 0..NODES {
        writeln!(text, "[[furnaces.bins]]\nname = \"B{n}\"\ndevice = \"n{n}\"\nseal_level_min_mm = 800\nmax_open_s = 120")?;
    }
    let path = dir.join("bench.toml");
    std::fs::write(&path, text)?;
    sealwatch_agent::evidence::sign::generate(&dir.join("sealwatch.key"))?;
    Ok(config::load(&path)?)
}

/// Seconds one read takes on the wire, by the physical model.
fn model_seconds(read: &ReadRequest, baud: u32) -> f64 {
    let t_char = 11.0 / f64::from(baud);
    let t35 = if baud > 19_200 { 0.00175 } else { 3.5 * t_char };
    let data = if read.table.is_bits() {
        usize::from(read.count()).div_ceil(8)
    } else {
        2 * usize::from(read.count())
    };
    (8 + 5 + data) as f64 * t_char + 2.0 * t35 + TURNAROUND.as_secs_f64()
}

pub(crate) async fn measure(baud: u32, window: Duration) -> anyhow::Result<RtuFigures> {
    let dir = tempfile::tempdir()?;
    let config = line_site(dir.path(), baud)?;
    let sim = serve::start(
        &config,
        Scenario::default(),
        SimOptions {
            fixed_ports: true,
            line: LineOptions {
                emulate: true,
                turnaround: TURNAROUND,
            },
            ..SimOptions::default()
        },
    )
    .await?;
    let plan = plan_reads(&config.devices[0].profile.points, config.buses[0].max_gap);
    let per_poll: f64 = plan.iter().map(|r| model_seconds(r, baud)).sum();
    let stop = CancellationToken::new();
    let agent = run::start(config, stop.clone()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = |agent: &run::RunningAgent| {
        let snap = agent.state.snapshot();
        let polls: u64 = snap.devices.iter().map(|d| d.polls).sum();
        let failed: u64 = snap
            .devices
            .iter()
            .map(|d| d.timeouts + d.bad_frames + d.io_errors + d.crc_errors)
            .sum();
        (polls, failed)
    };
    let (polls0, failed0) = count(&agent);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let (polls1, failed1) = count(&agent);
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    agent.finished().await;
    sim.stop();
    Ok(RtuFigures {
        baud,
        nodes: NODES,
        measured: (polls1 - polls0) as f64 * plan.len() as f64 / elapsed,
        model: plan.len() as f64 / per_poll,
        failures: failed1 - failed0,
    })
}
