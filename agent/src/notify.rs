//! The service manager's side of a run: systemd `Type=notify` readiness, the watchdog, and the
//! stop notice.
//!
//! - `READY=1` is sent once the database is open, the buses are polling and the status page
//!   listens (so `systemctl start` returns when the agent really works).
//! - With `WatchdogSec=` set, systemd passes `WATCHDOG_USEC`; the agent then sends `WATCHDOG=1`
//!   every half of it — but only while the pipeline shows signs of life (it took a batch of
//!   readings recently). A stalled pipeline stops feeding the watchdog, and systemd restarts the
//!   agent: a hung agent must not look healthy. Nor is it fed while the store cannot commit
//!   (a full or broken disk, a database file deleted or replaced): an agent that cannot keep
//!   what it polls is not healthy either, and the service manager restarts or alarms.
//! - `STOPPING=1` is sent when a stop signal arrives, before the store is flushed.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::SiteConfig;
use crate::state::PlantState;

/// Tells systemd the agent is ready (no-op outside systemd).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the agent is stopping (no-op outside systemd).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The watchdog interval systemd asked for, if any (and meant for this process).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Whether a pipeline whose last batch was at `last_batch_ms` is alive at `now_ms`, given it
/// may legitimately be quiet for `stall_after`.
pub fn alive(last_batch_ms: i64, now_ms: i64, stall_after: Duration) -> bool {
    now_ms - last_batch_ms <= stall_after.as_millis() as i64
}

/// How long the pipeline of `config` may legitimately go without a batch: twice the slowest
/// device's poll interval plus its bus timeout, and at least 10 s. (Every device yields a batch
/// on schedule, even a disconnected or degraded one.)
pub fn stall_after(config: &SiteConfig) -> Duration {
    let slowest = config
        .devices
        .iter()
        .map(|d| d.poll_interval + config.buses[d.bus].timeout)
        .max()
        .unwrap_or_default();
    (slowest * 2).max(Duration::from_secs(10))
}

/// Feeds the watchdog every `interval / 2` while the pipeline is alive, until `stop`.
/// `stall_after` is how long the pipeline may go without a batch (longer than the slowest poll
/// interval of the site).
pub fn spawn_watchdog(
    interval: Duration,
    stall_after: Duration,
    state: PlantState,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    // A site without devices has no batches: nothing can stall.
    let always = state.snapshot().devices.is_empty();
    tokio::spawn(async move {
        let period = (interval / 2).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled = false;
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "feeding the systemd watchdog"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let snap = state.snapshot();
            let last = snap.last_batch_ms;
            let moving = always || alive(last, now_ms(), stall_after);
            let committing = snap.store.committing();
            if moving && committing {
                if stalled {
                    tracing::info!(
                        "pipeline moves and the store commits again; feeding the watchdog"
                    );
                    stalled = false;
                }
                send(&[NotifyState::Watchdog]);
            } else if !stalled {
                if moving {
                    tracing::error!(
                        error = snap.store.last_error.as_deref().unwrap_or(""),
                        "the store cannot commit; not feeding the watchdog, systemd will restart the agent"
                    );
                } else {
                    tracing::error!(
                        last_batch_ms = last,
                        "pipeline stalled: no readings for longer than expected; not feeding the watchdog, systemd will restart the agent"
                    );
                }
                stalled = true;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_is_alive_within_its_stall_time() {
        let stall = Duration::from_secs(10);
        assert!(alive(1_000, 11_000, stall));
        assert!(!alive(1_000, 11_001, stall));
    }
}
