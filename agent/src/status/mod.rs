//! The local status page and its JSON API (`GET /api/state`), served on 127.0.0.1 by default.
//!
//! Handlers only read a [`PlantState`] snapshot; they never touch the pipeline or the database,
//! so a slow browser cannot stall polling.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::SiteConfig;
use crate::poll::reading::{Flag, Outcome, Reading};
use crate::poll::PointTable;
use crate::state::{DeviceHealth, PlantState};

/// Why the status page could not start.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The address could not be bound.
    #[error("status page cannot listen on {addr}: {source} (set [status].listen to a free address, or \"\" to turn it off)")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

struct Shared {
    config: SiteConfig,
    points: Arc<PointTable>,
    state: PlantState,
}

/// A point's latest value as shown.
#[derive(Debug, Clone, Serialize)]
pub struct PointView {
    /// Value, if the last reading had one.
    pub value: Option<f64>,
    /// HJ 212 flag letter.
    pub flag: char,
    /// What went wrong, if no value.
    pub problem: Option<String>,
    /// When, ms since epoch.
    pub at_ms: i64,
}

/// One coal bin as shown.
#[derive(Debug, Clone, Serialize)]
pub struct BinView {
    /// Bin name.
    pub name: String,
    /// Seal node device.
    pub device: String,
    /// Lid-closed switch.
    pub lid_closed: Option<PointView>,
    /// Lid-open switch.
    pub lid_open: Option<PointView>,
    /// Gate-open switch.
    pub gate_open: Option<PointView>,
    /// Material level, mm.
    pub level_mm: Option<PointView>,
    /// Seal level threshold, mm.
    pub seal_level_min_mm: u32,
    /// Seal state reported by the node (`sealed`, `charging`, `breach`, `unknown`).
    pub node_seal_state: String,
    /// Seal state as the agent's rules judge it.
    pub seal_state: String,
    /// Since when, ms.
    pub seal_state_since_ms: Option<i64>,
}

/// One analyzer as shown.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzerView {
    /// Name.
    pub name: String,
    /// Device.
    pub device: String,
    /// NMHC, mg/m³.
    pub nmhc: Option<PointView>,
}

/// One furnace as shown.
#[derive(Debug, Clone, Serialize)]
pub struct FurnaceView {
    /// Name.
    pub name: String,
    /// Bins.
    pub bins: Vec<BinView>,
    /// Analyzers.
    pub analyzers: Vec<AnalyzerView>,
}

/// The whole `/api/state` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// Site id.
    pub site: String,
    /// Plant name.
    pub plant: String,
    /// Furnaces.
    pub furnaces: Vec<FurnaceView>,
    /// Device health.
    pub devices: Vec<DeviceHealth>,
    /// Readings since start.
    pub readings_total: u64,
    /// Start time, ms since epoch.
    pub started_ms: i64,
}

fn point_view(reading: Option<Reading>) -> Option<PointView> {
    let r = reading?;
    let problem = match r.outcome {
        Outcome::Value(_) => None,
        Outcome::Exception(code) => Some(format!("exception {code:02X}")),
        Outcome::Fault(fault) => Some(format!("{fault:?}")),
    };
    Some(PointView {
        value: r.value(),
        flag: r.flag.letter(),
        problem,
        at_ms: r.at_ms,
    })
}

/// Builds the status document from a snapshot.
pub fn status_view(config: &SiteConfig, points: &PointTable, state: &PlantState) -> StatusView {
    let snap = state.snapshot();
    let latest = |device: usize, name: &str| -> Option<Reading> {
        let index = config.devices[device]
            .profile
            .points
            .iter()
            .position(|p| p.name == name)?;
        snap.latest
            .get(points.id(device, index).0 as usize)
            .copied()
            .flatten()
    };
    let mut bin_index = 0usize;
    let furnaces = config
        .furnaces
        .iter()
        .map(|f| FurnaceView {
            name: f.name.clone(),
            bins: f
                .bins
                .iter()
                .map(|b| {
                    let seal = latest(b.device, "seal_state");
                    let node_seal_state = match seal {
                        Some(r) if r.flag == Flag::N => match r.value().map(|v| v as u16) {
                            Some(1) => "sealed",
                            Some(2) => "charging",
                            Some(3) => "breach",
                            _ => "unknown",
                        },
                        _ => "unknown",
                    };
                    let (judged, since) = snap
                        .bins
                        .get(bin_index)
                        .copied()
                        .unwrap_or((crate::rules::SealState::Unknown, None));
                    bin_index += 1;
                    BinView {
                        seal_state: judged.name().to_owned(),
                        seal_state_since_ms: since,
                        name: b.name.clone(),
                        device: config.devices[b.device].name.clone(),
                        lid_closed: point_view(latest(b.device, "lid_closed")),
                        lid_open: point_view(latest(b.device, "lid_open")),
                        gate_open: point_view(latest(b.device, "gate_open")),
                        level_mm: point_view(latest(b.device, "level_mm")),
                        seal_level_min_mm: b.seal_level_min_mm,
                        node_seal_state: node_seal_state.to_owned(),
                    }
                })
                .collect(),
            analyzers: f
                .analyzers
                .iter()
                .map(|a| AnalyzerView {
                    name: a.name.clone(),
                    device: config.devices[a.device].name.clone(),
                    nmhc: point_view(latest(a.device, &a.nmhc_point)),
                })
                .collect(),
        })
        .collect();
    StatusView {
        site: config.site.id.clone(),
        plant: config.site.name.clone(),
        furnaces,
        devices: snap.devices,
        readings_total: snap.readings_total,
        started_ms: snap.started_ms,
    }
}

async fn api_state(State(shared): State<Arc<Shared>>) -> Json<StatusView> {
    Json(status_view(&shared.config, &shared.points, &shared.state))
}

async fn page() -> impl IntoResponse {
    Html(include_str!("page.html"))
}

/// Binds the status page and serves it until `stop`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    config: SiteConfig,
    points: Arc<PointTable>,
    state: PlantState,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), StatusError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StatusError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StatusError::Bind { addr, source })?;
    let shared = Arc::new(Shared {
        config,
        points,
        state,
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/api/state", get(api_state))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "status page stopped");
        }
    });
    Ok((bound, task))
}
