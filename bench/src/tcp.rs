//! Modbus TCP readings/s through the whole agent (poll → decode → store) against the simulated
//! plant, and a bare tokio-modbus loop reading the same registers over as many connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealwatch_agent::config::profile::{Profile, Table};
use sealwatch_agent::config::SiteConfig;
use sealwatch_agent::poll::plan::plan_reads;
use sealwatch_agent::run;
use sealwatch_agent::store::Store;
use sealwatch_sim::scenario::Scenario;
use sealwatch_sim::serve::{self, SimOptions};
use tokio_modbus::client::Reader;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;

use crate::site::seal_node_site;

/// Readings per second of the bare loop and of the agent, in alternating rounds (the machine's
/// speed drifts; alternating keeps both sides under the same conditions).
pub(crate) struct TcpFigures {
    /// Mean of the rounds.
    pub(crate) bare: f64,
    /// Mean of the rounds.
    pub(crate) agent: f64,
    /// Agent ÷ bare loop, per round.
    pub(crate) round_ratios: Vec<f64>,
    pub(crate) connections: usize,
    pub(crate) devices: usize,
    /// How long the sim's devices take to answer.
    pub(crate) reply_delay: Duration,
    /// Readings the agent counted that are not in its database after it stopped.
    pub(crate) lost: u64,
}

const BUSES: usize = 32;
const NODES: usize = 240;

/// Both loops against the sim, whose devices answer after `reply_delay`: with none, both are
/// bound by the CPU they share with the sim; with a device-like delay, by the round trips.
pub(crate) async fn measure(
    window: Duration,
    rounds: usize,
    reply_delay: Duration,
) -> anyhow::Result<TcpFigures> {
    let dir = tempfile::tempdir()?;
    // The agent's fastest poll interval (100 ms) × 7,680 seal nodes asks for more than the
    // connections can carry (about 3 million readings/s), so the agent runs saturated.
    let placeholder = seal_node_site(dir.path(), BUSES, NODES, 0, 100, &[])?;
    let options = SimOptions {
        reply_delay,
        ..SimOptions::default()
    };
    let sim = serve::start(&placeholder, Scenario::default(), options).await?;
    let addresses: Vec<String> = (0..BUSES)
        .map(|b| sim.addresses[&format!("bus{b}")].to_string())
        .collect();
    let mut config = seal_node_site(dir.path(), BUSES, NODES, 0, 100, &addresses)?;
    config.store.path = dir.path().join("bench.db");

    let (mut bare, mut agent, mut lost) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        bare.push(bare_loop(&addresses, window).await?);
        let (rate, missing) = agent_window(&config, window).await?;
        agent.push(rate);
        lost += missing;
    }
    sim.stop();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(TcpFigures {
        bare: mean(&bare),
        agent: mean(&agent),
        round_ratios: agent.iter().zip(&bare).map(|(a, b)| a / b).collect(),
        lost,
        connections: BUSES,
        devices: BUSES * NODES,
        reply_delay,
    })
}

/// Readings/s through a freshly started agent, after 2 s of warm-up, and how many of the readings
/// it counted did not reach the database (none, unless it dropped some under load).
async fn agent_window(config: &SiteConfig, window: Duration) -> anyhow::Result<(f64, u64)> {
    let stored = |path: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                return Ok(0);
            }
            Store::open_read_only(&path).and_then(|s| s.reading_count())
        })
        .await?
        .map_err(anyhow::Error::from)
    };
    let before_run = stored(config.store.path.clone()).await?;
    let stop = CancellationToken::new();
    let agent = run::start(config.clone(), stop.clone()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = agent.state.snapshot().readings_total;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = agent.state.snapshot().readings_total;
    let rate = (after - before) as f64 / started.elapsed().as_secs_f64();
    let state = agent.state.clone();
    stop.cancel();
    agent.finished().await;
    let counted = state.snapshot().readings_total;
    let landed = stored(config.store.path.clone()).await? - before_run;
    Ok((rate, counted.saturating_sub(landed)))
}

/// One tokio-modbus connection per bus, each cycling through its units reading exactly the
/// agent's request plan for a seal node; a reading is one point delivered.
async fn bare_loop(addresses: &[String], window: Duration) -> anyhow::Result<f64> {
    let profile = Profile::seal_node();
    let plan = plan_reads(&profile.points, 8);
    let readings = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for addr in addresses {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(1));
        let plan = plan.clone();
        let readings = readings.clone();
        tasks.push(tokio::spawn(async move {
            let mut unit = 0u8;
            while Instant::now() < deadline {
                unit = unit % NODES as u8 + 1;
                ctx.set_slave(Slave(unit));
                for read in &plan {
                    let ok = match read.table {
                        Table::DiscreteInput => ctx
                            .read_discrete_inputs(read.start(), read.count())
                            .await
                            .map(|r| r.is_ok()),
                        Table::Input => ctx
                            .read_input_registers(read.start(), read.count())
                            .await
                            .map(|r| r.is_ok()),
                        Table::Holding => ctx
                            .read_holding_registers(read.start(), read.count())
                            .await
                            .map(|r| r.is_ok()),
                        Table::Coil => ctx
                            .read_coils(read.start(), read.count())
                            .await
                            .map(|r| r.is_ok()),
                    };
                    if matches!(ok, Ok(true)) {
                        readings.fetch_add(read.points.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    Ok(readings.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
