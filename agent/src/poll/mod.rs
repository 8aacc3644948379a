//! Polling field devices: request plans, decoding, and one task per bus that runs its devices'
//! schedule over the bus's Modbus link.
//!
//! ```text
//! spawn_buses ──> schedule::BusPoller<L: Link> ──> crate::modbus::{TcpLink, RtuLink}
//!                     ├── plan (which reads cover a profile)
//!                     └── decode (registers → engineering values)
//! ```

pub mod decode;
pub mod plan;
pub mod schedule;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SiteConfig, Transport};
use crate::modbus::{serial_link, TcpLink};
use crate::model::{PointTable, Reading};
use crate::state::PlantState;
use schedule::{BusPoller, Scheduled};

/// Runs every bus of `config` until `stop` is cancelled. Readings go to `out`.
///
/// Each bus watches its own child of `stop`: a token's state sits behind a mutex, and a bus
/// behind schedule checks it once a poll, so one shared token would have every bus contend.
pub fn spawn_buses(
    config: &SiteConfig,
    points: &Arc<PointTable>,
    state: &PlantState,
    out: &mpsc::Sender<Vec<Reading>>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (b, bus) in config.buses.iter().enumerate() {
        let devices: Vec<Scheduled> = config
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.bus == b)
            .map(|(i, d)| {
                Scheduled::new(
                    i,
                    &d.name,
                    d.unit,
                    d.profile.clone(),
                    d.poll_interval,
                    bus.max_gap,
                )
                .with_timeout(d.timeout)
            })
            .collect();
        if devices.is_empty() {
            continue;
        }
        let task = match &bus.transport {
            Transport::Tcp { address } => {
                let link = TcpLink::new(address);
                let poller = BusPoller::new(bus.clone(), link, devices, points, state, out);
                tokio::spawn(poller.run(stop.child_token()))
            }
            Transport::Rtu(serial) => {
                let link = serial_link(serial, bus.quiet_after_timeout);
                let poller = BusPoller::new(bus.clone(), link, devices, points, state, out);
                tokio::spawn(poller.run(stop.child_token()))
            }
        };
        tasks.push(task);
    }
    tasks
}
