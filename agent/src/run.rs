//! The daemon: wires config, store, bus tasks, pipeline and status page, and shuts down cleanly.
//!
//! Shutdown order (on cancel): bus tasks stop polling → the pipeline drains what they sent →
//! the store commits everything → the status page closes. Nothing polled before the stop is lost.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::{SiteConfig, Transport};
use crate::poll::bus::spawn_buses;
use crate::poll::reading::Reading;
use crate::poll::PointTable;
use crate::rules::{Engine, Output, RulesConfig};
use crate::state::{DeviceHealth, PlantState};
use crate::status::{self, StatusError};
use crate::store::{spawn_writer, Limits, Store, StoreError};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The status page.
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// A started agent.
pub struct RunningAgent {
    /// Where the status page listens, if it is on.
    pub status_addr: Option<SocketAddr>,
    /// Live state.
    pub state: PlantState,
    /// Point numbering.
    pub points: Arc<PointTable>,
    stop: CancellationToken,
    buses: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    writer: JoinHandle<Store>,
    status: Option<JoinHandle<()>>,
}

/// Opens the store, starts polling and the status page. Returns once everything runs.
pub async fn start(config: SiteConfig, stop: CancellationToken) -> Result<RunningAgent, RunError> {
    let points = Arc::new(PointTable::new(&config));
    let db_path = config.store.path.clone();
    let keys: Vec<(String, Option<String>)> = points
        .points
        .iter()
        .map(|p| (p.key.clone(), p.unit.clone()))
        .collect();
    let (store, ids) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let mut store = Store::open(&db_path)?;
        let ids = store.register_points(&keys)?;
        Ok((store, ids))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    tracing::info!(path = %store.path().display(), points = ids.len(), "database open");

    let health = config
        .devices
        .iter()
        .map(|d| {
            let bus = &config.buses[d.bus];
            DeviceHealth {
                name: d.name.clone(),
                bus: bus.name.clone(),
                unit: d.unit.get(),
                connected: false,
                ..DeviceHealth::default()
            }
        })
        .collect();
    let state = PlantState::new(health, points.points.len(), now_ms());
    let limits = Limits {
        raw_retention: config.store.raw_retention,
        disk_budget_bytes: config.store.disk_budget_bytes,
    };
    let (store_handle, writer) = spawn_writer(store, ids, config.store.commit_interval, limits);

    let status = match config.status_listen {
        Some(addr) => {
            let (bound, task) = status::serve(
                addr,
                config.clone(),
                points.clone(),
                state.clone(),
                stop.clone(),
            )
            .await?;
            Some((bound, task))
        }
        None => None,
    };

    let (tx, mut rx) = mpsc::channel::<Vec<Reading>>(4096);
    let bus_stop = stop.child_token();
    let buses = spawn_buses(&config, &points, &state, &tx, &bus_stop);
    drop(tx);
    for bus in &config.buses {
        if let Transport::Tcp { address } = &bus.transport {
            tracing::info!(bus = %bus.name, %address, "polling Modbus TCP");
        }
    }
    let pipeline_state = state.clone();
    let rules = RulesConfig::new(&config, &points);
    let mut engine = Engine::new(&rules);
    tracing::info!(
        ruleset = engine.ruleset(),
        bins = rules.bins.len(),
        analyzers = rules.analyzers.len(),
        "rules engine ready"
    );
    let pipeline = tokio::spawn(async move {
        // Ends when every bus task has ended and the channel is drained. Each batch is one poll
        // group (one device, one time): exactly the engine's unit of input.
        while let Some(batch) = rx.recv().await {
            pipeline_state.record(&batch);
            let outputs = engine.ingest_poll(&batch);
            if !outputs.is_empty() {
                log_outputs(&outputs);
                pipeline_state.set_bins(engine.bin_states());
            }
            if store_handle
                .send_with_outputs(batch, outputs)
                .await
                .is_err()
            {
                tracing::error!("store writer stopped; readings can no longer be stored");
                break;
            }
        }
        if let Err(e) = store_handle.flush().await {
            tracing::error!(error = %e, "final commit failed");
        }
    });

    let (status_addr, status) = match status {
        Some((addr, task)) => (Some(addr), Some(task)),
        None => (None, None),
    };
    Ok(RunningAgent {
        status_addr,
        state,
        points,
        stop,
        buses,
        pipeline,
        writer,
        status,
    })
}

/// Logs what operators should hear about at once.
fn log_outputs(outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::BreachStarted { bin, signature, .. } => {
                tracing::warn!(%bin, ?signature, "seal breach")
            }
            Output::BreachEnded {
                bin, duration_ms, ..
            } => tracing::warn!(%bin, duration_s = duration_ms / 1000, "seal breach ended"),
            Output::NmhcExceedanceStarted {
                analyzer,
                value,
                limit,
                ..
            } => tracing::warn!(%analyzer, value, limit, "NMHC above the single-value limit"),
            Output::NmhcHour {
                analyzer,
                avg: Some(avg),
                exceeded: true,
                hourly_limit,
                ..
            } => {
                tracing::warn!(%analyzer, avg, hourly_limit, "NMHC hourly average above the limit")
            }
            Output::SealState {
                bin,
                from,
                to,
                reason,
                ..
            } => tracing::debug!(%bin, %from, %to, %reason, "seal state"),
            _ => {}
        }
    }
}

impl RunningAgent {
    /// Waits for the stop signal, then shuts down in order and returns once all is committed.
    pub async fn finished(self) {
        self.stop.cancelled().await;
        for bus in self.buses {
            let _ = bus.await;
        }
        let _ = self.pipeline.await;
        match self.writer.await {
            Ok(store) => tracing::info!(path = %store.path().display(), "database closed"),
            Err(e) => tracing::error!(error = %e, "store writer failed"),
        }
        if let Some(status) = self.status {
            let _ = status.await;
        }
    }
}
