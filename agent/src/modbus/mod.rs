//! The agent's one Modbus client: a [`Link`] over TCP ([`TcpLink`]) or an RTU serial line
//! ([`RtuLink`]), with the firmware crate's codec for every byte. Polling and every
//! commissioning command use it.
//!
//! ```text
//! poll::schedule ──┐                       ┌── tcp.rs  (MBAP framing, transaction ids)
//!                  ├── Link::call ─────────┤
//! commission ──────┘   (Answer / LinkError)└── rtu.rs  (RTU framing, quiet line) ── serial.rs
//! ```

mod link;
mod rtu;
mod serial;
mod tcp;
#[cfg(test)]
pub(crate) mod testing;

use std::time::Duration;

pub use link::{Answer, BadFrame, Heard, HeardKind, Link, LinkError};
pub use rtu::{line_timing, Opener, RtuLink, QUIET_AFTER_TIMEOUT_DEFAULT, RECEIVE_GAP_MIN};
pub use serial::{open_serial, serial_link, DataBits, SerialSettings, StopBits};
pub use tcp::TcpLink;

use sealwatch_firmware::modbus::{Request, UnitId};
use tokio::time::Instant;

/// A link of either kind, for callers that pick the transport at run time (commissioning).
pub enum AnyLink {
    /// Modbus TCP.
    Tcp(TcpLink),
    /// Modbus RTU on a serial port.
    Rtu(Box<RtuLink<tokio_serial::SerialStream>>),
}

impl Link for AnyLink {
    fn target(&self) -> &str {
        match self {
            AnyLink::Tcp(l) => l.target(),
            AnyLink::Rtu(l) => l.target(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            AnyLink::Tcp(l) => l.is_open(),
            AnyLink::Rtu(l) => l.is_open(),
        }
    }

    async fn open(&mut self, timeout: Duration) -> Result<(), LinkError> {
        match self {
            AnyLink::Tcp(l) => l.open(timeout).await,
            AnyLink::Rtu(l) => l.open(timeout).await,
        }
    }

    fn close(&mut self) {
        match self {
            AnyLink::Tcp(l) => l.close(),
            AnyLink::Rtu(l) => l.close(),
        }
    }

    async fn call(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<Answer, LinkError> {
        match self {
            AnyLink::Tcp(l) => l.call(unit, request, timeout).await,
            AnyLink::Rtu(l) => l.call(unit, request, timeout).await,
        }
    }

    fn take_heard(&mut self) -> Vec<Heard> {
        match self {
            AnyLink::Tcp(l) => l.take_heard(),
            AnyLink::Rtu(l) => l.take_heard(),
        }
    }

    fn quiet_until(&self, unit: UnitId) -> Option<Instant> {
        match self {
            AnyLink::Tcp(l) => l.quiet_until(unit),
            AnyLink::Rtu(l) => l.quiet_until(unit),
        }
    }
}
