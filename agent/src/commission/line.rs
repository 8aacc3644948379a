//! The line a technician's command talks on: the agent's one Modbus client ([`Link`]) with the
//! command's response timeout. Polling uses the same links, so a device that passes `commission
//! verify` is read the same way by the poller, and the reverse.
//!
//! The link is opened on the first request and again after a failure that closed it. Frames the
//! link heard and threw away (late replies, wrong units, bad CRCs) are logged, so a technician
//! sees a line out of step.

use std::time::Duration;

use sealwatch_firmware::modbus::{Request, UnitId};

use crate::modbus::{Answer, AnyLink, Link, LinkError};

/// A Modbus line for commissioning commands.
pub struct Line<L = AnyLink> {
    link: L,
    timeout: Duration,
}

impl<L: Link> Line<L> {
    /// Commands on `link`, each request waiting at most `timeout`.
    pub fn new(link: L, timeout: Duration) -> Self {
        Line { link, timeout }
    }

    /// The line, for messages (`10.0.0.5:502`, `/dev/ttyUSB0`).
    pub fn target(&self) -> &str {
        self.link.target()
    }

    /// The response timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` to `unit` and waits for its answer (a Modbus exception is
    /// [`LinkError::Exception`]).
    pub async fn call(&mut self, unit: UnitId, request: &Request<'_>) -> Result<Answer, LinkError> {
        if !self.link.is_open() {
            self.link.open(self.timeout).await?;
        }
        let result = self.link.call(unit, request, self.timeout).await;
        for heard in self.link.take_heard() {
            tracing::warn!(line = %self.link.target(), "heard and discarded: {}", heard.why);
        }
        if let Err(e) = &result {
            if !e.survives() {
                self.link.close();
            }
        }
        result
    }
}
