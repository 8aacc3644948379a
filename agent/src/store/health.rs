//! How the store is doing, for the status page, `/metrics` and the systemd watchdog: failing
//! commits (and whether SQLite called the file corrupt), rows that did not decode, readings
//! dropped, and a database file that was deleted or replaced under the agent.
//!
//! The writer task updates a [`HealthHandle`]; readers take a copy ([`HealthHandle::get`]).

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// A copy of the store's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreHealth {
    /// Commits that failed since start.
    pub commits_failed: u64,
    /// Failures SQLite reported as a damaged file (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
    pub sqlite_corrupt: u64,
    /// Stored rows that did not decode (set aside, each sealed as a `store_corruption` record).
    pub corrupt_rows: u64,
    /// Readings dropped because commits kept failing and the buffer was full.
    pub readings_dropped: u64,
    /// Since when commits fail, ms; `None` while they succeed.
    pub failing_since_ms: Option<i64>,
    /// The last commit error, in words.
    pub last_error: Option<String>,
    /// Set when the database file was deleted or replaced while the agent ran: why. The agent
    /// writes nothing more until it is restarted (and then refuses a silent new chain).
    pub replaced: Option<String>,
    /// Why the chain anchor cannot be written, while it cannot.
    pub anchor_error: Option<String>,
    /// Why retention pruning is paused (the wall clock jumped), while it is.
    pub retention_paused: Option<String>,
    /// Raw-reading rows pruned because the file system ran short of space.
    pub pruned_for_space: u64,
    /// Readings not stored because the file system was full with only evidence and rule
    /// outputs left to keep (nothing more may be pruned).
    pub readings_refused: u64,
    /// Since when readings are refused for space, ms; `None` while they are stored.
    pub space_exhausted_since_ms: Option<i64>,
}

impl StoreHealth {
    /// Whether the store takes commits now.
    pub fn committing(&self) -> bool {
        self.failing_since_ms.is_none() && self.replaced.is_none()
    }
}

/// Shared store health; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HealthHandle(Arc<Mutex<StoreHealth>>);

impl HealthHandle {
    fn lock(&self) -> MutexGuard<'_, StoreHealth> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy.
    pub fn get(&self) -> StoreHealth {
        self.lock().clone()
    }

    /// Changes it.
    pub fn update<R>(&self, f: impl FnOnce(&mut StoreHealth) -> R) -> R {
        f(&mut self.lock())
    }
}
