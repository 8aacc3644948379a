//! Seal-state change at the sim → evidence committed: a lid is forced open in the simulated
//! plant, and the time until the agent's `seal_state` evidence record for that bin is in the
//! database is measured, against the poll interval (the physical lower bound of polling).

use std::time::{Duration, Instant};

use sealwatch_agent::rules::SealState;
use sealwatch_agent::run;
use sealwatch_agent::store::Store;
use sealwatch_sim::scenario::Scenario;
use sealwatch_sim::serve::{self, SimOptions};
use tokio_util::sync::CancellationToken;

use crate::site::seal_node_site;

pub(crate) struct Latency {
    pub(crate) samples: usize,
    pub(crate) interval_ms: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) async fn measure(samples: usize) -> anyhow::Result<Latency> {
    const INTERVAL_MS: u64 = 1000;
    let dir = tempfile::tempdir()?;
    let placeholder = seal_node_site(dir.path(), 1, 1, 0, INTERVAL_MS, &[])?;
    let sim = serve::start(&placeholder, Scenario::default(), SimOptions::default()).await?;
    let address = sim.addresses["bus0"].to_string();
    let mut config = seal_node_site(dir.path(), 1, 1, 0, INTERVAL_MS, &[address])?;
    config.store.path = dir.path().join("latency.db");
    let db = config.store.path.clone();
    let bin = format!(
        "{}/{}",
        config.furnaces[0].name, config.furnaces[0].bins[0].name
    );
    let stop = CancellationToken::new();
    let agent = run::start(config, stop.clone()).await?;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while latencies.len() < samples {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} latency samples in 10 minutes",
            latencies.len()
        );
        // Wait for the bin to be sealed (the plant also runs its own charging cycles).
        if agent.state.snapshot().bins.first().map(|b| b.0) != Some(SealState::Sealed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        // Let the poll phase drift relative to the change.
        tokio::time::sleep(Duration::from_millis(fastrand_ms())).await;
        let before = Store::open_read_only(&db)?.evidence_head()?.seq;
        let changed = Instant::now();
        let _ = sim.command(&format!("lid-stuck-open {bin} 2")).await;
        let found = loop {
            if changed.elapsed() > Duration::from_secs(5) {
                break None;
            }
            let store = Store::open_read_only(&db)?;
            let fresh = store.evidence_range(before + 1, 100)?;
            if fresh.iter().any(|r| {
                r.kind == "seal_state" && r.subject == bin && r.body.contains("\"to\":\"charging\"")
            }) {
                break Some(changed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if let Some(l) = found {
            latencies.push(l.as_secs_f64() * 1000.0);
        }
        // The lid closes again after 2 s; give the bin time to be sealed again.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    stop.cancel();
    agent.finished().await;
    sim.stop();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        samples: latencies.len(),
        interval_ms: INTERVAL_MS,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

/// A pseudo-random pause of 0–999 ms from the clock's low bits.
fn fastrand_ms() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % 1000,
    )
}
