//! Time as the firmware sees it: a monotonic [`Instant`] in microseconds, passed in by the caller.
//!
//! Nothing in this crate reads a clock or sleeps. The board (SysTick), the simulator (its plant
//! clock) and tests (plain numbers) hand `now` to every function that needs it, so every decision
//! is reproducible. Invariant: an `Instant` only ever grows; if a caller passes an earlier one, all
//! elapsed-time computations saturate at zero instead of wrapping.

use core::time::Duration;

/// A point on the node's monotonic time line, microseconds since an arbitrary origin (power-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1000))
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the origin (truncated).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// This instant moved forward by `d` (saturating).
    pub fn plus(self, d: Duration) -> Instant {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(micros))
    }
}
