//! `PlantState`: the live picture for the status page and CLI.
//!
//! Written by the bus tasks (device health) and the pipeline (latest reading per point, judged
//! bin states, the latest rule outputs), read by the status page, `/metrics` and the CLI as a
//! snapshot. Critical sections are a few field updates; readers never block the pipeline for
//! longer than a copy. Every change that operators must see at once (a rule output) bumps a
//! [`tokio::sync::watch`] version, which the status page's event stream waits on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::model::{Fault, Reading};
use crate::rules::{Output, SealState};
use crate::store::{HealthHandle, StoreHealth};

/// NMHC minute values kept per analyzer for this hour's running average (one hour and a margin).
pub const KEPT_MINUTES: usize = 90;

/// Communication health of one device.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceHealth {
    /// Device name.
    pub name: String,
    /// Bus name.
    pub bus: String,
    /// Unit id.
    pub unit: u8,
    /// Whether its bus is connected.
    pub connected: bool,
    /// Whether it is degraded (only probed now and then).
    pub degraded: bool,
    /// Failed polls in a row.
    pub consecutive_failures: u32,
    /// Last poll that got an answer, ms since epoch.
    pub last_ok_ms: Option<i64>,
    /// Polls attempted (not counting skipped degraded ones).
    pub polls: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Modbus exceptions received.
    pub exceptions: u64,
    /// Connection failures and breaks.
    pub io_errors: u64,
    /// Replies that did not fit the request: requests that failed on a bad reply, and every
    /// discarded frame that was not the answer (wrong unit, function or length).
    pub bad_frames: u64,
    /// Late replies thrown away: answers to earlier requests (flushed, heard while the unit was
    /// quieted, with an old transaction id) and answers discarded because more followed them.
    pub late_replies: u64,
    /// Frames whose CRC did not check (serial lines).
    pub crc_errors: u64,
    /// Last problem, in words.
    pub last_error: Option<String>,
}

impl DeviceHealth {
    /// Counts a failed request.
    pub fn count_fault(&mut self, fault: Fault) {
        match fault {
            Fault::Timeout => self.timeouts += 1,
            Fault::Io | Fault::NotConnected => self.io_errors += 1,
            Fault::BadFrame => self.bad_frames += 1,
            Fault::Degraded => {}
        }
    }
}

/// How the audit uplink's answers have been.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditHealth {
    /// Answers that proved nothing or something false (a claim beyond what was sent, a wrong
    /// hash, a redirect, an oversized body …) since start.
    pub protocol_errors: u64,
    /// What is wrong now (the last protocol error or refusal), until a batch is stored again.
    pub problem: Option<String>,
    /// Since when, ms.
    pub problem_since_ms: Option<i64>,
}

/// A window open now, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowView {
    /// Bin or analyzer.
    pub target: String,
    /// `calibration`, `maintenance` or `shutdown`.
    pub kind: String,
    /// Since, ms.
    pub since_ms: i64,
    /// Why.
    pub reason: String,
    /// Who opened it.
    pub by: String,
    /// Open longer than its kind's maximum.
    pub overdue: bool,
}

/// The snapshot behind [`PlantState`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlantSnapshot {
    /// Health per device, in config order.
    pub devices: Vec<DeviceHealth>,
    /// Latest reading per point, by point id.
    pub latest: Vec<Option<Reading>>,
    /// Seal state of each bin (config order) as the rules judge it, with when it began.
    pub bins: Vec<(SealState, Option<i64>)>,
    /// Readings received since start.
    pub readings_total: u64,
    /// When the agent started, ms since epoch.
    pub started_ms: i64,
    /// Last completed charging cycle per bin (`furnace/bin` → a `charging_cycle` output).
    pub last_cycle: BTreeMap<String, Output>,
    /// Recent NMHC minute values per analyzer (`furnace/analyzer` → `nmhc_minute` outputs,
    /// oldest first, at most [`KEPT_MINUTES`]).
    pub nmhc_minutes: BTreeMap<String, VecDeque<Output>>,
    /// Last closed hour per analyzer (an `nmhc_hour` output).
    pub nmhc_last_hour: BTreeMap<String, Output>,
    /// Evidence records not yet acknowledged by the audit system; `None` while no uploader runs.
    pub evidence_backlog: Option<u64>,
    /// How long the last upload batch took to be acknowledged, seconds; `None` before the first.
    pub upload_latency_s: Option<f64>,
    /// When the pipeline last took a batch of readings, ms since epoch (the watchdog's sign of
    /// life).
    pub last_batch_ms: i64,
    /// Readings per second over the last few seconds.
    pub readings_per_s: f64,
    /// The audit uplink's answers.
    pub audit: AuditHealth,
    /// The store (copied from its [`HealthHandle`] at each snapshot).
    pub store: StoreHealth,
    /// Windows open now.
    pub windows: Vec<WindowView>,
    /// The last clock jump the rules saw (a `clock_jump` output).
    pub last_clock_jump: Option<Output>,
    /// Each analyzer's state from its status register (`furnace/analyzer` → state), once known.
    pub analyzer_states: BTreeMap<String, crate::rules::InstrumentState>,
    #[serde(skip)]
    rate_window: (i64, u64),
}

/// Shared live state; cheap to clone.
#[derive(Debug, Clone)]
pub struct PlantState {
    inner: Arc<Mutex<PlantSnapshot>>,
    version: Arc<watch::Sender<u64>>,
    store: HealthHandle,
}

impl Default for PlantState {
    fn default() -> Self {
        PlantState::new(Vec::new(), 0, 0)
    }
}

impl PlantState {
    /// A state for these devices and `points` points.
    pub fn new(devices: Vec<DeviceHealth>, points: usize, started_ms: i64) -> Self {
        PlantState {
            inner: Arc::new(Mutex::new(PlantSnapshot {
                devices,
                latest: vec![None; points],
                started_ms,
                last_batch_ms: started_ms,
                rate_window: (started_ms, 0),
                ..PlantSnapshot::default()
            })),
            version: Arc::new(watch::channel(0).0),
            store: HealthHandle::default(),
        }
    }

    /// The handle the store writer reports its health to (give it to
    /// [`crate::store::Store::report_health_to`]).
    pub fn store_health(&self) -> HealthHandle {
        self.store.clone()
    }

    /// A receiver that sees the version change whenever a rule output arrived.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, PlantSnapshot> {
        // A writer that panicked left plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Updates one device's health.
    pub fn with_device<R>(
        &self,
        device: usize,
        f: impl FnOnce(&mut DeviceHealth) -> R,
    ) -> Option<R> {
        self.lock().devices.get_mut(device).map(f)
    }

    /// Records the latest readings of some polls (one lock for all) and returns each poll's
    /// device health as `(connected, degraded)`, read in the same lock.
    pub fn record_polls(
        &self,
        polls: &[Vec<Reading>],
        device_of: impl Fn(&Reading) -> Option<usize>,
    ) -> Vec<Option<(bool, bool)>> {
        let now = crate::clock::now_ms();
        let mut s = self.lock();
        let readings = polls.iter().map(Vec::len).sum::<usize>();
        s.readings_total += readings as u64;
        s.last_batch_ms = now;
        let (since, count) = s.rate_window;
        if now - since >= 5_000 {
            s.readings_per_s = (s.readings_total - count) as f64 * 1000.0 / (now - since) as f64;
            s.rate_window = (now, s.readings_total);
        }
        let mut health = Vec::with_capacity(polls.len());
        for poll in polls {
            for r in poll {
                if let Some(slot) = s.latest.get_mut(r.point.0 as usize) {
                    *slot = Some(*r);
                }
            }
            health.push(
                poll.first()
                    .and_then(&device_of)
                    .and_then(|d| s.devices.get(d))
                    .map(|h| (h.connected, h.degraded)),
            );
        }
        health
    }

    /// Records what the rules judged since the last call, under one lock: the bins whose state
    /// may have changed (by index, with their state; see `Engine::take_bin_changes`) and the
    /// outputs the status page shows (last cycle, NMHC minutes and hours). Wakes the status
    /// page's event streams if anything changed.
    pub fn note_judgements(&self, bins: &[(usize, (SealState, Option<i64>))], outputs: &[Output]) {
        if bins.is_empty() && outputs.is_empty() {
            return;
        }
        let mut changed = !outputs.is_empty();
        {
            let mut s = self.lock();
            for &(bin, judged) in bins {
                if bin >= s.bins.len() {
                    s.bins.resize(bin + 1, (SealState::Unknown, None));
                }
                changed |= std::mem::replace(&mut s.bins[bin], judged) != judged;
            }
            for o in outputs {
                match o {
                    Output::ChargingCycle { bin, .. } => {
                        s.last_cycle.insert(bin.clone(), o.clone());
                    }
                    Output::NmhcMinute { analyzer, .. } => {
                        let kept = s.nmhc_minutes.entry(analyzer.clone()).or_default();
                        kept.push_back(o.clone());
                        while kept.len() > KEPT_MINUTES {
                            kept.pop_front();
                        }
                    }
                    Output::NmhcHour { analyzer, .. } => {
                        s.nmhc_last_hour.insert(analyzer.clone(), o.clone());
                    }
                    Output::ClockJump { .. } => s.last_clock_jump = Some(o.clone()),
                    Output::AnalyzerState { analyzer, to, .. } => {
                        s.analyzer_states.insert(analyzer.clone(), *to);
                    }
                    Output::WindowOverdue { target, .. } => {
                        for w in s.windows.iter_mut().filter(|w| &w.target == target) {
                            w.overdue = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        if changed {
            self.bump();
        }
    }

    /// Sets the evidence backlog (records not yet acknowledged by the audit system).
    pub fn set_evidence_backlog(&self, backlog: Option<u64>) {
        self.lock().evidence_backlog = backlog;
    }

    /// Records how long the last upload batch took to be acknowledged.
    pub fn set_upload_latency(&self, latency: std::time::Duration) {
        self.lock().upload_latency_s = Some(latency.as_secs_f64());
    }

    /// The windows open now: (target, kind, since, reason, by).
    pub fn set_open_windows(
        &self,
        open: Vec<(String, crate::rules::WindowKind, i64, String, String)>,
    ) {
        let mut s = self.lock();
        let overdue: Vec<String> = s
            .windows
            .iter()
            .filter(|w| w.overdue)
            .map(|w| w.target.clone())
            .collect();
        s.windows = open
            .into_iter()
            .map(|(target, kind, since_ms, reason, by)| WindowView {
                overdue: overdue.contains(&target),
                target,
                kind: kind.name().to_owned(),
                since_ms,
                reason,
                by,
            })
            .collect();
        drop(s);
        self.bump();
    }

    /// Counts an audit answer that proved nothing and shows why.
    pub fn note_audit_protocol_error(&self, why: String) {
        let mut s = self.lock();
        s.audit.protocol_errors += 1;
        Self::set_audit_problem(&mut s, why);
    }

    /// Shows a problem with the audit system (a refusal) until a batch is stored again.
    pub fn note_audit_problem(&self, why: String) {
        Self::set_audit_problem(&mut self.lock(), why);
    }

    fn set_audit_problem(s: &mut PlantSnapshot, why: String) {
        if s.audit.problem.is_none() {
            s.audit.problem_since_ms = Some(crate::clock::now_ms());
        }
        s.audit.problem = Some(why);
    }

    /// A batch was stored: the audit system works again.
    pub fn clear_audit_problem(&self) {
        let mut s = self.lock();
        s.audit.problem = None;
        s.audit.problem_since_ms = None;
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> PlantSnapshot {
        let mut snap = self.lock().clone();
        snap.store = self.store.get();
        snap
    }
}
