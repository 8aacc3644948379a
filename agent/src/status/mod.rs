//! The local status page and its JSON API, served on 127.0.0.1 by default.
//!
//! Routes (documented field by field in the README, "Status page and JSON API"):
//! - `GET /` — the page (HTML, CSS and JS embedded in the binary; no build step, no CDN);
//! - `GET /api/state` — the live [`StatusView`];
//! - `GET /api/events` — server-sent events: the same document as event `state`, once a second
//!   and at once when the rules conclude something;
//! - `GET /api/history?hours=N` — seal timeline per bin and NMHC minute trend ([`history`]);
//! - `GET /metrics` — Prometheus text format ([`crate::telemetry::metrics_text`]);
//! - `GET /healthz` — `ok`.
//!
//! Invariants: handlers only read a [`PlantState`] snapshot or open the database read-only on a
//! blocking thread; they never touch the pipeline, so a slow browser cannot stall polling. Every
//! event stream ends when the agent stops, so shutdown never waits on a browser.

pub mod client;
pub mod control;
pub mod history;
pub mod listener;
pub mod table;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::SiteConfig;
use crate::model::PointTable;
use crate::model::{Flag, Outcome, Reading};
use crate::rules::{Output, SealState};
use crate::state::{AuditHealth, DeviceHealth, PlantSnapshot, PlantState};
use crate::store::StoreHealth;

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
    /// Too few file descriptors are left for the page.
    #[error("status page has no file descriptors to serve with: the open-file limit is {soft}, {open} are open and {reserve} are kept for the buses, the database and the uplinks (raise LimitNOFILE= in the unit, or `ulimit -n`)")]
    NoDescriptors {
        /// Soft `RLIMIT_NOFILE`.
        soft: u64,
        /// Open at start.
        open: u64,
        /// Kept back.
        reserve: u64,
    },
    /// The control token could not be written.
    #[error("cannot write the control token {}: {source}", path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

struct Shared {
    /// The control token of this run (see [`control`]).
    token: String,
    config: SiteConfig,
    points: Arc<PointTable>,
    state: PlantState,
    windows: tokio::sync::mpsc::Sender<WindowRequest>,
    stop: CancellationToken,
    /// One permit per open event stream ([`MAX_EVENT_STREAMS`]).
    streams: Arc<tokio::sync::Semaphore>,
}

/// A window command for the pipeline, with where to send what became of it (the outputs
/// sealed, or why not).
pub type WindowRequest = (
    crate::rules::WindowCommand,
    tokio::sync::oneshot::Sender<Result<Vec<Output>, String>>,
);

/// A point's latest value as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// The last completed charging cycle of a bin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CycleView {
    /// First opening, ms.
    pub started_ms: i64,
    /// Everything closed again, ms.
    pub ended_ms: i64,
    /// Material level when the gate opened, mm.
    pub level_at_gate_open_mm: Option<f64>,
    /// No breach during the cycle.
    pub seal_held: bool,
    /// Data was unknown during part of the cycle.
    pub interrupted: bool,
}

/// One coal bin as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinView {
    /// `furnace/bin`, as in rule outputs and sim commands.
    pub key: String,
    /// Bin name.
    pub name: String,
    /// Seal node device.
    pub device: String,
    /// Lid position from its two switches: `closed`, `open`, `travelling`, `fault` (both on) or
    /// `unknown` (no valid reading).
    pub lid: String,
    /// Charging gate: `open`, `closed` or `unknown`.
    pub gate: String,
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
    /// Seal state as the agent's rules judge it (`sealed`, `charging`, `breach`, `unknown`).
    pub seal_state: String,
    /// Since when, ms.
    pub seal_state_since_ms: Option<i64>,
    /// The last completed charging cycle.
    pub last_cycle: Option<CycleView>,
}

/// An NMHC minute value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinuteView {
    /// Minute start, ms.
    pub minute_ms: i64,
    /// Mean of the valid samples, mg/m³.
    pub avg: Option<f64>,
    /// Largest valid sample, mg/m³.
    pub max: Option<f64>,
    /// HJ 212 flag (N or D).
    pub flag: char,
}

/// A closed NMHC hour.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HourView {
    /// Hour start, ms.
    pub hour_ms: i64,
    /// Mean of the valid minutes (valid hours only), mg/m³.
    pub avg: Option<f64>,
    /// Valid minutes.
    pub valid_minutes: u32,
    /// N for a valid hour, else D.
    pub flag: char,
    /// Valid hour above the hourly limit.
    pub exceeded: bool,
}

/// One analyzer as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalyzerView {
    /// `furnace/analyzer`.
    pub key: String,
    /// Name.
    pub name: String,
    /// Device.
    pub device: String,
    /// NMHC now, mg/m³.
    pub nmhc: Option<PointView>,
    /// Start of the current local hour, ms.
    pub hour_start_ms: i64,
    /// Running average of this hour's valid minutes so far, mg/m³.
    pub hour_avg: Option<f64>,
    /// Valid minutes so far this hour.
    pub hour_valid_minutes: u32,
    /// The last closed minute.
    pub last_minute: Option<MinuteView>,
    /// The last closed hour.
    pub last_hour: Option<HourView>,
    /// What its status register says it is doing (`normal`, `calibration` …), once known.
    #[serde(default)]
    pub state: Option<String>,
    /// Its limits in force, mg/m³: (hourly, single value).
    #[serde(default)]
    pub limits: Option<(f64, f64)>,
}

/// One furnace as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FurnaceView {
    /// Name.
    pub name: String,
    /// Bins.
    pub bins: Vec<BinView>,
    /// Analyzers.
    pub analyzers: Vec<AnalyzerView>,
}

/// NMHC limits in force.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LimitsView {
    /// 1-hour average limit, mg/m³.
    pub nmhc_hourly_mg_m3: f64,
    /// Single-value limit, mg/m³.
    pub nmhc_single_mg_m3: f64,
}

/// The whole `/api/state` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// Where this came from: `agent` (live) or `database` (`sealwatch status` without an agent).
    pub source: String,
    /// Site id.
    pub site: String,
    /// Plant name.
    pub plant: String,
    /// When the document was made, ms since epoch.
    pub now_ms: i64,
    /// Start time, ms since epoch.
    pub started_ms: i64,
    /// NMHC limits.
    pub limits: LimitsView,
    /// Furnaces.
    pub furnaces: Vec<FurnaceView>,
    /// Device health.
    pub devices: Vec<DeviceHealth>,
    /// Devices now degraded or disconnected.
    pub degraded_devices: u32,
    /// Readings since start.
    pub readings_total: u64,
    /// Readings per second lately.
    pub readings_per_s: f64,
    /// Evidence records waiting for the audit system; `null` while no uploader runs.
    pub evidence_backlog: Option<u64>,
    /// The audit uplink's answers.
    #[serde(default)]
    pub audit: AuditHealth,
    /// The store.
    #[serde(default)]
    pub store: StoreHealth,
    /// What an operator must look at now, most serious first.
    #[serde(default)]
    pub alarms: Vec<Alarm>,
    /// Calibration, maintenance and shutdown windows open now.
    #[serde(default)]
    pub windows: Vec<crate::state::WindowView>,
}

/// Something an operator must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// `store_replaced`, `store_failing`, `store_full`, `store_corruption`,
    /// `retention_paused`, `anchor_unwritable`, `audit_answers`, …
    pub kind: String,
    /// What, in words.
    pub message: String,
    /// Since when, ms, if known.
    pub since_ms: Option<i64>,
}

/// The alarms a snapshot raises at `now` (a clock jump is shown for an hour).
pub fn alarms(snap: &PlantSnapshot, now: i64) -> Vec<Alarm> {
    let mut out = Vec::new();
    let store = &snap.store;
    if let Some(why) = &store.replaced {
        out.push(Alarm {
            kind: "store_replaced".into(),
            message: format!("the database file was deleted or replaced while the agent ran ({why}); nothing more is written — restart the agent and restore the database"),
            since_ms: store.failing_since_ms,
        });
    } else if let Some(since) = store.failing_since_ms {
        out.push(Alarm {
            kind: "store_failing".into(),
            message: format!(
                "commits fail: {}",
                store.last_error.as_deref().unwrap_or("unknown error")
            ),
            since_ms: Some(since),
        });
    }
    if store.corrupt_rows > 0 || store.sqlite_corrupt > 0 {
        out.push(Alarm {
            kind: "store_corruption".into(),
            message: format!(
                "{} stored rows did not decode (set aside, each on the record); SQLite reported the file damaged {} times",
                store.corrupt_rows, store.sqlite_corrupt
            ),
            since_ms: None,
        });
    }
    if let Some(since) = store.space_exhausted_since_ms {
        out.push(Alarm {
            kind: "store_full".into(),
            message: format!(
                "the disk is full and only evidence and rule outputs are left to keep: readings are not stored ({} so far), judgements and evidence still are — free space on the disk",
                store.readings_refused
            ),
            since_ms: Some(since),
        });
    }
    if let Some(why) = &store.retention_paused {
        out.push(Alarm {
            kind: "retention_paused".into(),
            message: why.clone(),
            since_ms: None,
        });
    }
    if let Some(why) = &store.anchor_error {
        out.push(Alarm {
            kind: "anchor_unwritable".into(),
            message: format!("the chain anchor cannot be written ({why}); a deleted or replaced database would be noticed later"),
            since_ms: None,
        });
    }
    for w in snap.windows.iter().filter(|w| w.overdue) {
        out.push(Alarm {
            kind: "window_overdue".into(),
            message: format!(
                "the {} window on {} (opened by {}: {}) is open longer than its maximum; its data is still kept out of compliance figures — end it with sealwatch maintenance end",
                w.kind, w.target, w.by, w.reason
            ),
            since_ms: Some(w.since_ms),
        });
    }
    if let Some(Output::ClockJump {
        from_ms,
        to_ms,
        size_ms,
        ..
    }) = &snap
        .last_clock_jump
        .as_ref()
        .filter(|o| now.saturating_sub(o.at_ms()) <= 3_600_000)
    {
        out.push(Alarm {
            kind: "clock_jump".into(),
            message: format!(
                "the clock jumped by {} s (from {from_ms} to {to_ms} ms); the open minute and hour ended as interrupted",
                size_ms / 1000
            ),
            since_ms: Some(*to_ms),
        });
    }
    if let Some(problem) = &snap.audit.problem {
        out.push(Alarm {
            kind: "audit_answers".into(),
            message: format!("audit system: {problem}"),
            since_ms: snap.audit.problem_since_ms,
        });
    }
    out
}

fn point_view(reading: Option<Reading>) -> Option<PointView> {
    let r = reading?;
    let problem = match r.outcome {
        Outcome::Value(_) => None,
        Outcome::Exception(code) => Some(format!("exception {:02X}", code.code())),
        Outcome::Fault(fault) => Some(format!("{fault:?}")),
    };
    Some(PointView {
        value: r.value(),
        flag: r.flag.letter(),
        problem,
        at_ms: r.at_ms,
    })
}

fn switch(p: &Option<PointView>) -> Option<bool> {
    p.as_ref()
        .filter(|p| p.flag == 'N')
        .and_then(|p| p.value)
        .map(|v| v != 0.0)
}

fn lid_text(closed: Option<bool>, open: Option<bool>) -> &'static str {
    match (closed, open) {
        (Some(true), Some(false)) => "closed",
        (Some(false), Some(true)) => "open",
        (Some(false), Some(false)) => "travelling",
        (Some(true), Some(true)) => "fault",
        _ => "unknown",
    }
}

fn cycle_view(o: &Output) -> Option<CycleView> {
    match o {
        Output::ChargingCycle {
            started_ms,
            ended_ms,
            level_at_gate_open_mm,
            seal_held,
            interrupted,
            ..
        } => Some(CycleView {
            started_ms: *started_ms,
            ended_ms: *ended_ms,
            level_at_gate_open_mm: *level_at_gate_open_mm,
            seal_held: *seal_held,
            interrupted: *interrupted,
        }),
        _ => None,
    }
}

pub(crate) fn minute_view(o: &Output) -> Option<MinuteView> {
    match o {
        Output::NmhcMinute {
            minute_ms,
            avg,
            max,
            flag,
            ..
        } => Some(MinuteView {
            minute_ms: *minute_ms,
            avg: *avg,
            max: *max,
            flag: flag.letter(),
        }),
        _ => None,
    }
}

pub(crate) fn hour_view(o: &Output) -> Option<HourView> {
    match o {
        Output::NmhcHour {
            hour_ms,
            avg,
            valid_minutes,
            flag,
            exceeded,
            ..
        } => Some(HourView {
            hour_ms: *hour_ms,
            avg: *avg,
            valid_minutes: *valid_minutes,
            flag: flag.letter(),
            exceeded: *exceeded,
        }),
        _ => None,
    }
}

/// Builds the status document from the live state.
pub fn status_view(config: &SiteConfig, points: &PointTable, state: &PlantState) -> StatusView {
    view_of_snapshot(config, points, state.snapshot(), now_ms(), "agent")
}

/// Builds the status document from a snapshot taken at `now`.
pub fn view_of_snapshot(
    config: &SiteConfig,
    points: &PointTable,
    snap: PlantSnapshot,
    now: i64,
    source: &str,
) -> StatusView {
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
    let hour_start = crate::rules::time::hour_start(config.site.time_zone, now);
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
                    let key = format!("{}/{}", f.name, b.name);
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
                        .unwrap_or((SealState::Unknown, None));
                    bin_index += 1;
                    let lid_closed = point_view(latest(b.device, "lid_closed"));
                    let lid_open = point_view(latest(b.device, "lid_open"));
                    let gate_open = point_view(latest(b.device, "gate_open"));
                    let gate = match switch(&gate_open) {
                        Some(true) => "open",
                        Some(false) => "closed",
                        None => "unknown",
                    };
                    BinView {
                        lid: lid_text(switch(&lid_closed), switch(&lid_open)).to_owned(),
                        gate: gate.to_owned(),
                        seal_state: judged.name().to_owned(),
                        seal_state_since_ms: since,
                        last_cycle: snap.last_cycle.get(&key).and_then(cycle_view),
                        key,
                        name: b.name.clone(),
                        device: config.devices[b.device].name.clone(),
                        lid_closed,
                        lid_open,
                        gate_open,
                        level_mm: point_view(latest(b.device, "level_mm")),
                        seal_level_min_mm: b.seal_level_min_mm,
                        node_seal_state: node_seal_state.to_owned(),
                    }
                })
                .collect(),
            analyzers: f
                .analyzers
                .iter()
                .map(|a| {
                    let key = format!("{}/{}", f.name, a.name);
                    let minutes = snap.nmhc_minutes.get(&key);
                    let this_hour: Vec<f64> = minutes
                        .into_iter()
                        .flatten()
                        .filter_map(minute_view)
                        .filter(|m| m.minute_ms >= hour_start && m.flag == 'N')
                        .filter_map(|m| m.avg)
                        .collect();
                    let hour_avg = (!this_hour.is_empty())
                        .then(|| this_hour.iter().sum::<f64>() / this_hour.len() as f64);
                    AnalyzerView {
                        name: a.name.clone(),
                        device: config.devices[a.device].name.clone(),
                        nmhc: point_view(latest(a.device, &a.nmhc_point)),
                        hour_start_ms: hour_start,
                        hour_avg,
                        hour_valid_minutes: this_hour.len() as u32,
                        last_minute: minutes.and_then(|m| m.back()).and_then(minute_view),
                        last_hour: snap.nmhc_last_hour.get(&key).and_then(hour_view),
                        state: snap.analyzer_states.get(&key).map(|s| s.name().to_owned()),
                        limits: Some((a.hourly_limit, a.single_limit)),
                        key,
                    }
                })
                .collect(),
        })
        .collect();
    let degraded_devices = snap
        .devices
        .iter()
        .filter(|d| d.degraded || !d.connected)
        .count() as u32;
    let alarms = alarms(&snap, now);
    let windows = snap.windows.clone();
    StatusView {
        source: source.to_owned(),
        site: config.site.id.clone(),
        plant: config.site.name.clone(),
        now_ms: now,
        started_ms: snap.started_ms,
        limits: LimitsView {
            nmhc_hourly_mg_m3: config.rules.nmhc_hourly_limit,
            nmhc_single_mg_m3: config.rules.nmhc_single_limit,
        },
        furnaces,
        devices: snap.devices,
        degraded_devices,
        readings_total: snap.readings_total,
        readings_per_s: snap.readings_per_s,
        evidence_backlog: snap.evidence_backlog,
        audit: snap.audit,
        store: snap.store,
        alarms,
        windows,
    }
}

async fn api_state(State(shared): State<Arc<Shared>>) -> Json<StatusView> {
    Json(status_view(&shared.config, &shared.points, &shared.state))
}

/// How often the event stream sends the state without a change.
const EVENT_PERIOD: Duration = Duration::from_secs(1);

/// Event streams open at once (each holds a connection for as long as the page is open).
pub const MAX_EVENT_STREAMS: usize = 16;

async fn api_events(State(shared): State<Arc<Shared>>) -> Response {
    let Ok(slot) = shared.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_EVENT_STREAMS} event streams are open already; close a page or use /api/state"),
        )
            .into_response();
    };
    let changes = shared.state.subscribe();
    let stream = futures_util::stream::unfold(
        (shared, changes, true, slot),
        |(shared, mut changes, first, slot)| async move {
            if !first {
                tokio::select! {
                    () = shared.stop.cancelled() => return None,
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(EVENT_PERIOD) => {}
                }
            }
            if shared.stop.is_cancelled() {
                return None;
            }
            changes.borrow_and_update();
            let view = status_view(&shared.config, &shared.points, &shared.state);
            let event = Event::default()
                .event("state")
                .json_data(&view)
                .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
            Some((Ok::<_, Infallible>(event), (shared, changes, false, slot)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Query of `/api/history`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    hours: Option<f64>,
}

async fn api_history(State(shared): State<Arc<Shared>>, Query(q): Query<HistoryQuery>) -> Response {
    let hours = q.hours.unwrap_or(6.0);
    if !(hours.is_finite() && hours > 0.0 && hours <= history::MAX_HOURS) {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "hours={hours} is out of range; expected 0 < hours <= {}",
                history::MAX_HOURS
            ),
        )
            .into_response();
    }
    let snap_bins = shared.state.snapshot().bins;
    let shared2 = shared.clone();
    let now = now_ms();
    let result = tokio::task::spawn_blocking(move || {
        history::history(&shared2.config, &snap_bins, now, hours)
    })
    .await;
    match result {
        Ok(Ok(view)) => Json(view).into_response(),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /api/maintenance`: opens or closes a window (a [`crate::rules::WindowCommand`] as
/// JSON). Taken only from this machine with the control token (the `sealwatch maintenance`
/// command; see [`control`]); answers the sealed outputs, or 400 with why.
async fn api_maintenance(
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(why) = control::check(peer.ip().is_loopback(), &headers, &shared.token) {
        return (StatusCode::FORBIDDEN, why.to_string()).into_response();
    }
    if body.len() > 16 * 1024 {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "a window command is at most 16 KiB",
        )
            .into_response();
    }
    let command: crate::rules::WindowCommand = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a window command: {e}"),
            )
                .into_response()
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if shared.windows.send((command, reply)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping").into_response();
    }
    match answer.await {
        Ok(Ok(outputs)) => Json(outputs).into_response(),
        Ok(Err(why)) => (StatusCode::BAD_REQUEST, why).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping").into_response(),
    }
}

/// Size of the database file and its write-ahead log, bytes.
pub fn store_file_bytes(path: &std::path::Path) -> Option<u64> {
    let main = std::fs::metadata(path).ok()?.len();
    let mut wal = PathBuf::from(path);
    wal.as_mut_os_string().push("-wal");
    Some(main + std::fs::metadata(&wal).map_or(0, |m| m.len()))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let snap = shared.state.snapshot();
    let bytes = store_file_bytes(&shared.config.store.path);
    let text = crate::telemetry::metrics_text(&snap, bytes, now_ms());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
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
    windows: tokio::sync::mpsc::Sender<WindowRequest>,
    descriptors: (crate::limits::FdBudget, u64),
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), StatusError> {
    let (budget, reserve) = descriptors;
    let max_connections = crate::limits::listener_share(budget, reserve, listener::MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(StatusError::NoDescriptors {
            soft: budget.soft,
            open: budget.open,
            reserve,
        });
    }
    if max_connections < listener::MAX_CONNECTIONS {
        tracing::warn!(
            max_connections,
            soft = budget.soft,
            reserve,
            "few file descriptors: the status page serves fewer connections at once"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StatusError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StatusError::Bind { addr, source })?;
    let token = control::write_token(&config.store.path).map_err(|source| StatusError::Token {
        path: control::token_path(&config.store.path),
        source,
    })?;
    let shared = Arc::new(Shared {
        token,
        config,
        points,
        state,
        windows,
        stop: stop.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/api/state", get(api_state))
        .route("/api/events", get(api_events))
        .route("/api/history", get(api_history))
        .route("/api/maintenance", axum::routing::post(api_maintenance))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(
            listener::MAX_BODY_BYTES,
        ))
        .with_state(shared);
    let bounds = listener::Bounds::for_address(bound, max_connections);
    let task = tokio::spawn(listener::serve(listener, app, bounds, stop));
    Ok((bound, task))
}
