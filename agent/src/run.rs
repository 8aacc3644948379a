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
use crate::evidence::anchor::{AnchorError, ForkError, StartFacts};
use crate::evidence::{self, sign::KeyError, Draft, EvidenceRecord};
use crate::model::PointTable;
use crate::model::Reading;
use crate::pipeline::Pipeline;
use crate::poll::spawn_buses;
use crate::rules::{Engine, Window};
use crate::state::{DeviceHealth, PlantState};
use crate::status::{self, StatusError};
use crate::store::{spawn_writer, Limits, Store, StoreError, StoreHandle};
use crate::uplink::audit::{AuditUplink, UplinkError};
use crate::uplink::hj212::Hj212Uplink;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The status page.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The signing key.
    #[error("{0}; make one with `sealwatch keygen --out <path>` and set [evidence].key_file")]
    Key(#[from] KeyError),
    /// The audit uplink.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    /// Continuing would fork the evidence chain.
    #[error("refusing to start: {0}. {help}", help = evidence::anchor::FORK_HELP)]
    Fork(#[from] ForkError),
    /// The chain anchor cannot be read.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
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
    uplink: Option<AuditTask>,
    db_path: std::path::PathBuf,
    hj212: Vec<Hj212Task>,
}

/// Opens the store, starts polling and the status page. Returns once everything runs.
pub async fn start(config: SiteConfig, stop: CancellationToken) -> Result<RunningAgent, RunError> {
    let points = Arc::new(config.point_table());
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
    let (store, ids, last_start, open_windows, public_key) =
        open_store(&config, &points, &state).await?;

    let limits = Limits {
        raw_retention: config.store.raw_retention,
        disk_budget_bytes: config.store.disk_budget_bytes,
        evidence_retention: config.evidence.retention,
        compact_every: config.store.compact_interval,
        disk_reserve_bytes: config.store.disk_reserve_bytes,
    };
    let rules = config.rules_config(&points);
    let mut engine = Engine::new(&rules).live();
    // Windows open at the last stop first: the warm-up replays readings they covered.
    for (window, since) in &open_windows {
        match engine.open_window(window, *since, false) {
            Ok(_) => {
                tracing::info!(target = %window.target, kind = window.kind.name(), since_ms = since, "a window open at the last stop is open again")
            }
            Err(e) => {
                tracing::warn!(target = %window.target, error = %e, "a window open at the last stop cannot be opened again")
            }
        }
    }
    let (store, engine, resumed) = {
        let (points, ids, tz) = (points.clone(), ids.clone(), config.site.time_zone);
        tokio::task::spawn_blocking(move || {
            let (engine, resumed) =
                crate::restart::resume(engine, &store, &points, &ids, tz, now_ms());
            (store, engine, resumed)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    for problem in &resumed.problems {
        tracing::warn!("picking up the last run: {problem}");
    }
    tracing::info!(
        hours_and_days = resumed.seeds,
        readings_replayed = resumed.replayed,
        summaries_due = resumed.due.len(),
        "picked up the open days and months and the open hour from the record"
    );
    let (store_handle, writer) = spawn_writer(store, ids, config.store.commit_interval, limits);
    if !resumed.due.is_empty() {
        let _ = store_handle
            .send_with_outputs(Vec::new(), resumed.due)
            .await;
    }
    let _ = store_handle
        .send_evidence(vec![
            started_evidence(&config, &rules.version(), last_start.as_ref()),
            Draft::new(
                now_ms(),
                "rule_set",
                "",
                &serde_json::json!({
                    "ruleset": rules.version(),
                    "values": rules.values_in_force(),
                }),
            ),
        ])
        .await;

    let (command_tx, commands) = mpsc::channel::<crate::status::WindowRequest>(16);
    let descriptors = crate::limits::raise_nofile();
    let reserve = crate::limits::reserve_for(
        config.devices.len(),
        config.buses.len(),
        usize::from(config.audit_uplink.is_some()) + config.hj212_uplinks.len(),
    );
    tracing::info!(
        soft = descriptors.soft,
        hard = descriptors.hard,
        open = descriptors.open,
        reserve,
        "open-file budget"
    );
    let status = match config.status_listen {
        Some(addr) => {
            let (bound, task) = status::serve(
                addr,
                config.clone(),
                points.clone(),
                state.clone(),
                command_tx,
                (descriptors, reserve),
                stop.clone(),
            )
            .await?;
            Some((bound, task))
        }
        None => None,
    };

    let (tx, rx) = mpsc::channel::<Vec<Reading>>(4096);
    let bus_stop = stop.child_token();
    let buses = spawn_buses(&config, &points, &state, &tx, &bus_stop);
    drop(tx);
    for bus in &config.buses {
        match &bus.transport {
            Transport::Tcp { address } => {
                tracing::info!(bus = %bus.name, %address, "polling Modbus TCP")
            }
            Transport::Rtu(serial) => {
                tracing::info!(bus = %bus.name, port = %serial.port, baud = serial.baud.bits_per_second(), "polling Modbus RTU")
            }
        }
    }
    let pipeline = Pipeline::new(
        engine,
        points.clone(),
        state.clone(),
        config.devices.iter().map(|d| d.name.clone()).collect(),
        config
            .devices
            .iter()
            .map(|d| config.buses[d.bus].degrade_after)
            .collect(),
        config.rules.clock_jump_tolerance_ms,
    );
    let (uplink, hj212) = spawn_uplinks(&config, &points, &state, &store_handle, public_key)?;
    tracing::info!(
        ruleset = pipeline.engine().ruleset(),
        bins = rules.bins.len(),
        analyzers = rules.analyzers.len(),
        "rules engine ready"
    );
    let pipeline = tokio::spawn(drive_pipeline(pipeline, rx, commands, store_handle));

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
        uplink,
        db_path: config.store.path.clone(),
        hj212,
    })
}

/// What a start finds in the database: the store (evidence enabled, checked against the chain
/// anchor and the audit system), the point ids, the last `agent_started` record, the windows
/// open at the last stop, and the public key (hex).
type Opened = (
    Store,
    Vec<i64>,
    Option<EvidenceRecord>,
    Vec<(Window, i64)>,
    String,
);

/// Opens the database, enables evidence with the site's key and checks, before anything is
/// sealed, that this is the chain the anchor and the audit system know.
async fn open_store(
    config: &SiteConfig,
    points: &PointTable,
    state: &PlantState,
) -> Result<Opened, RunError> {
    let db_path = config.store.path.clone();
    let keys: Vec<(String, Option<String>)> = points
        .points
        .iter()
        .map(|p| (p.key.clone(), p.unit.clone()))
        .collect();
    let key = evidence::sign::load(&config.evidence.key_file)?;
    let public_key = evidence::sign::public_hex(&key.verifying_key());
    let site_id = config.site.id.clone();
    let anchor = evidence::anchor::read(&config.evidence.anchor_file)?;
    let store_health = state.store_health();
    let anchor_file = config.evidence.anchor_file.clone();
    let anchored = anchor.as_ref().map(|a| a.seq);
    let (mut store, ids, last_start, mut facts, open_windows) =
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut store = Store::open(&db_path)?;
            store.report_health_to(store_health);
            let ids = store.register_points(&keys)?;
            let head = store.enable_evidence(&site_id, key)?;
            let last_start = store.last_evidence_of("agent_started")?;
            let open_windows = open_windows_of(&store)?;
            let first = store.evidence_range(0, 1)?.into_iter().next();
            let facts = StartFacts {
                db_hash_at_anchor: match anchored {
                    Some(seq) => store.evidence_hash_at(seq)?,
                    None => None,
                },
                db_head: Some(head),
                db_first_seq: first.as_ref().map(|r| r.seq),
                new_chain_declared: first
                    .as_ref()
                    .is_some_and(|r| r.seq == 1 && r.kind == evidence::anchor::NEW_CHAIN),
                site: site_id,
                anchor,
                cursor: store.uplink_cursor(crate::uplink::audit::CURSOR)?,
                receiver: None,
                db_hash_at_receiver: None,
            };
            Ok((store, ids, last_start, facts, open_windows))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    // Before sealing anything, ask the audit system what it holds of this site's chain.
    if let Some(cfg) = &config.audit_uplink {
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            crate::uplink::audit::receiver_head(cfg, &config.site.id),
        )
        .await;
        match asked {
            Ok(Ok(answer)) => {
                facts.db_hash_at_receiver = store.evidence_hash_at(answer.stored_through)?;
                facts.receiver = Some((answer.stored_through, answer.head_hash));
            }
            Ok(Err(e)) => tracing::warn!(error = %e.escape_debug(), "cannot ask the audit system what it holds of the chain; relying on the chain anchor and the uplink cursor"),
            Err(_) => tracing::warn!("the audit system did not say within 5 s what it holds of the chain; relying on the chain anchor and the uplink cursor"),
        }
    }
    evidence::anchor::check_start(&facts)?;
    store.keep_anchor(anchor_file);
    tracing::info!(path = %store.path().display(), points = ids.len(), "database open");
    Ok((store, ids, last_start, open_windows, public_key))
}

/// The audit uplink's task: its stop token, the task, and its acknowledged position.
type AuditTask = (
    CancellationToken,
    JoinHandle<()>,
    Arc<std::sync::atomic::AtomicU64>,
);

/// An HJ 212 uplink's task: its stop token and the task.
type Hj212Task = (CancellationToken, JoinHandle<()>);

/// The audit uplink and one HJ 212 uplink per platform, started.
fn spawn_uplinks(
    config: &SiteConfig,
    points: &Arc<PointTable>,
    state: &PlantState,
    store_handle: &StoreHandle,
    public_key: String,
) -> Result<(Option<AuditTask>, Vec<Hj212Task>), RunError> {
    let uplink = match &config.audit_uplink {
        Some(cfg) => {
            let token = CancellationToken::new();
            let uplink = AuditUplink::new(
                cfg.clone(),
                config.site.id.clone(),
                public_key,
                config.store.path.clone(),
                store_handle.clone(),
                state.clone(),
            )?;
            tracing::info!(url = %cfg.url, "delivering evidence to the audit system");
            let acked = uplink.acked();
            Some((token.clone(), tokio::spawn(uplink.run(token)), acked))
        }
        None => {
            tracing::warn!("no [uplink.audit] configured: evidence is kept locally only");
            None
        }
    };
    let hj212: Vec<Hj212Task> = config
        .hj212_uplinks
        .iter()
        .map(|cfg| {
            tracing::info!(platform = %cfg.name, address = %cfg.address, analyzers = cfg.mn.len(), "delivering NMHC values to an HJ 212 platform");
            let token = CancellationToken::new();
            let uplink = Hj212Uplink::new(
                cfg.clone(),
                config.site.time_zone,
                &config.store.path,
                store_handle.clone(),
            )
            .with_live_values(live_values(config, points, state));
            (token.clone(), tokio::spawn(uplink.run(token)))
        })
        .collect();
    Ok((uplink, hj212))
}

/// The pipeline's loop: takes the polls the bus tasks hand over (whatever is waiting, at most
/// [`POLLS_PER_HANDOVER`] at once) and the window commands of the status page, and gives the
/// store what the pipeline concluded. Ends when every bus task has ended and the channel is
/// drained (or the store writer is gone), sealing `agent_stopped`.
async fn drive_pipeline(
    mut pipeline: Pipeline,
    mut rx: mpsc::Receiver<Vec<Reading>>,
    mut commands: mpsc::Receiver<crate::status::WindowRequest>,
    store_handle: StoreHandle,
) {
    // Ends when every bus task has ended and the channel is drained. Each batch is one poll
    // group (one device, one time): exactly the engine's unit of input.
    // Whatever polls are waiting are taken together: one hand-over to the store for all.
    let mut polls: Vec<Vec<Reading>> = Vec::with_capacity(POLLS_PER_HANDOVER);
    let started = std::time::Instant::now();
    let mut commands_open = true;
    loop {
        let command = tokio::select! {
            n = rx.recv_many(&mut polls, POLLS_PER_HANDOVER) => {
                if n == 0 {
                    break;
                }
                None
            }
            command = commands.recv(), if commands_open => match command {
                Some(c) => Some(c),
                None => {
                    commands_open = false;
                    None
                }
            },
        };
        if let Some((command, reply)) = command {
            let _ = reply.send(apply_window(&mut pipeline, &command, &store_handle).await);
            continue;
        }
        let handover = pipeline.handover(&mut polls, now_ms(), started.elapsed());
        if !handover.drafts.is_empty() && store_handle.send_evidence(handover.drafts).await.is_err()
        {
            break;
        }
        if store_handle
            .send_with_outputs(handover.readings, handover.outputs)
            .await
            .is_err()
        {
            tracing::error!("store writer stopped; readings can no longer be stored");
            break;
        }
    }
    let stopped = Draft::new(
        now_ms(),
        "agent_stopped",
        "",
        &serde_json::json!({ "clean": true }),
    );
    let _ = store_handle.send_evidence(vec![stopped]).await;
    if let Err(e) = store_handle.flush().await {
        tracing::error!(error = %e, "final commit failed");
    }
}

/// Opens or closes a window the status page asked for; its outputs are committed before the
/// answer (so a caller that is told "done" finds them in the record).
async fn apply_window(
    pipeline: &mut Pipeline,
    command: &crate::rules::WindowCommand,
    store: &StoreHandle,
) -> Result<Vec<crate::rules::Output>, String> {
    let outputs = pipeline
        .window(command, now_ms())
        .map_err(|e| e.to_string())?;
    store
        .send_with_outputs(Vec::new(), outputs.clone())
        .await
        .map_err(|e| e.to_string())?;
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(outputs)
}

/// Polls the pipeline takes from the bus tasks at most at once.
const POLLS_PER_HANDOVER: usize = 64;

/// Each analyzer's live points with their HJ 212 codes (NMHC first), for real-time frames.
fn live_values(
    config: &SiteConfig,
    points: &PointTable,
    state: &PlantState,
) -> crate::uplink::hj212::LiveValues {
    let mut analyzers = Vec::new();
    for f in &config.furnaces {
        for a in &f.analyzers {
            let profile = &config.devices[a.device].profile;
            let mut list = Vec::new();
            let names = std::iter::once((a.nmhc_point.as_str(), crate::uplink::hj212::NMHC))
                .chain(crate::rules::OTHER_POLLUTANTS);
            for (name, code) in names {
                if let Some(i) = profile.points.iter().position(|p| p.name == name) {
                    list.push((code, points.id(a.device, i)));
                }
            }
            analyzers.push((format!("{}/{}", f.name, a.name), list));
        }
    }
    crate::uplink::hj212::LiveValues {
        state: state.clone(),
        analyzers,
    }
}

/// The windows open when the agent last stopped: the last `window_started` of each target not
/// followed by its `window_ended`, with when it began.
fn open_windows_of(store: &Store) -> Result<Vec<(Window, i64)>, StoreError> {
    let mut open: std::collections::BTreeMap<String, (Window, i64)> = Default::default();
    let rows = store.outputs_after(0, &["window_started", "window_ended"], usize::MAX >> 1)?;
    for (_, kind, body) in rows {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        let target = v["target"].as_str().unwrap_or_default().to_owned();
        if kind == "window_ended" {
            open.remove(&target);
            continue;
        }
        let window =
            crate::rules::WindowKind::parse(v["window"].as_str().unwrap_or_default()).map(|kind| {
                Window {
                    target: target.clone(),
                    kind,
                    reason: v["reason"].as_str().unwrap_or_default().to_owned(),
                    by: v["by"].as_str().unwrap_or_default().to_owned(),
                }
            });
        if let (Some(w), Some(at)) = (window, v["at_ms"].as_i64()) {
            open.insert(target, (w, at));
        }
    }
    Ok(open.into_values().collect())
}

/// The `agent_started` record: version, configuration fingerprint, rule set, and whether the
/// configuration changed since the last start; the gap since the previous record is visible
/// from the chain itself.
fn started_evidence(
    config: &SiteConfig,
    ruleset: &str,
    last_start: Option<&EvidenceRecord>,
) -> Draft {
    use sha2::{Digest as _, Sha256};
    let text = crate::bounded::read(&config.file, crate::bounded::CONFIG_BYTES).unwrap_or_default();
    let config_sha256 = hex::encode(Sha256::digest(&text));
    let previous = last_start.and_then(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok());
    let changed = previous
        .as_ref()
        .map(|p| p["config_sha256"] != config_sha256.as_str() || p["ruleset"] != ruleset);
    Draft::new(
        now_ms(),
        "agent_started",
        "",
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "site": config.site.id,
            "site_name": config.site.name,
            "permit_number": config.site.permit_number,
            "config_file": config.file.display().to_string(),
            "config_sha256": config_sha256,
            "ruleset": ruleset,
            "config_changed": changed,
        }),
    )
}

impl RunningAgent {
    /// Waits for the stop signal, then shuts down in order and returns once all is committed.
    pub async fn finished(self) {
        self.stop.cancelled().await;
        for bus in self.buses {
            let _ = bus.await;
        }
        let _ = self.pipeline.await;
        if let Some((token, task, acked)) = self.uplink {
            // Give the uplink a moment to deliver the last records (agent_stopped among them);
            // whatever is left goes out at the next start.
            let db = self.db_path.clone();
            let head = tokio::task::spawn_blocking(move || {
                Store::open_read_only(&db)
                    .and_then(|s| s.evidence_head())
                    .map(|h| h.seq)
                    .unwrap_or(0)
            })
            .await
            .unwrap_or(0);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
            while tokio::time::Instant::now() < deadline
                && acked.load(std::sync::atomic::Ordering::Relaxed) < head
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            token.cancel();
            let _ = task.await;
        }
        // HJ 212 uplinks stop at once: what is unacknowledged is resent at the next start.
        for (token, task) in self.hj212 {
            token.cancel();
            let _ = task.await;
        }
        match self.writer.await {
            Ok(store) => tracing::info!(path = %store.path().display(), "database closed"),
            Err(e) => tracing::error!(error = %e, "store writer failed"),
        }
        if let Some(status) = self.status {
            let _ = status.await;
        }
    }
}
