//! `PlantState`: the live picture for the status page and CLI.
//!
//! Written by the bus tasks (device health) and the pipeline (latest reading per point), read by
//! the status page as a snapshot. Critical sections are a few field updates; readers never block
//! the pipeline for longer than a copy.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::poll::reading::{Fault, Reading};
use crate::rules::SealState;

/// Communication health of one device.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// Replies that did not fit the request.
    pub bad_frames: u64,
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
}

/// Shared live state; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PlantState {
    inner: Arc<Mutex<PlantSnapshot>>,
}

impl PlantState {
    /// A state for these devices and `points` points.
    pub fn new(devices: Vec<DeviceHealth>, points: usize, started_ms: i64) -> Self {
        PlantState {
            inner: Arc::new(Mutex::new(PlantSnapshot {
                devices,
                latest: vec![None; points],
                bins: Vec::new(),
                readings_total: 0,
                started_ms,
            })),
        }
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

    /// Records the latest readings.
    pub fn record(&self, readings: &[Reading]) {
        let mut s = self.lock();
        s.readings_total += readings.len() as u64;
        for r in readings {
            if let Some(slot) = s.latest.get_mut(r.point.0 as usize) {
                *slot = Some(*r);
            }
        }
    }

    /// Records the bins' judged states.
    pub fn set_bins(&self, bins: Vec<(SealState, Option<i64>)>) {
        self.lock().bins = bins;
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> PlantSnapshot {
        self.lock().clone()
    }
}
