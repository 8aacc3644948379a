//! Switch debouncing.
//!
//! A [`Debouncer`] reports a new state only after the raw sample has held it continuously for the
//! debounce time. Before the first stable period it reports `None` (unknown): a node that just
//! booted does not claim a lid is closed until the switch has said so for long enough.
//! Invariant: pure — fed `(sample, now)`, no clock, no sleep; `now` going backwards only delays.

use core::time::Duration;

use crate::time::Instant;

/// Debounces one switch input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debouncer {
    stable: Option<bool>,
    candidate: bool,
    candidate_since: Option<Instant>,
}

impl Default for Debouncer {
    fn default() -> Self {
        Self::new()
    }
}

impl Debouncer {
    /// A debouncer with no stable state yet.
    pub const fn new() -> Self {
        Debouncer {
            stable: None,
            candidate: false,
            candidate_since: None,
        }
    }

    /// Feeds the raw `sample` taken at `now`; returns the debounced state (`None` until a sample
    /// has held for `hold`).
    pub fn update(&mut self, sample: bool, now: Instant, hold: Duration) -> Option<bool> {
        match self.candidate_since {
            Some(_) if sample == self.candidate => {}
            _ => {
                self.candidate = sample;
                self.candidate_since = Some(now);
            }
        }
        if self.stable != Some(self.candidate) {
            if let Some(since) = self.candidate_since {
                if now.saturating_since(since) >= hold {
                    self.stable = Some(self.candidate);
                }
            }
        }
        self.stable
    }

    /// The debounced state, `None` while unknown.
    pub const fn state(&self) -> Option<bool> {
        self.stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(50);

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    /// (sample, at ms, expected debounced state after it)
    fn run(table: &[(bool, u64, Option<bool>)]) {
        let mut d = Debouncer::new();
        for (i, &(sample, at, want)) in table.iter().enumerate() {
            assert_eq!(
                d.update(sample, ms(at), HOLD),
                want,
                "row {i}: {sample} at {at} ms"
            );
        }
    }

    #[test]
    fn table_settles_after_hold() {
        run(&[
            (true, 0, None),
            (true, 49, None),
            (true, 50, Some(true)),
            (false, 60, Some(true)),
            (false, 109, Some(true)),
            (false, 110, Some(false)),
        ]);
    }

    #[test]
    fn table_bounces_are_ignored() {
        run(&[
            (false, 0, None),
            (false, 100, Some(false)),
            (true, 110, Some(false)),
            (false, 120, Some(false)),
            (true, 130, Some(false)),
            (true, 179, Some(false)),
            (true, 180, Some(true)),
            (false, 185, Some(true)),
            (true, 190, Some(true)),
            (true, 400, Some(true)),
        ]);
    }

    #[test]
    fn zero_hold_follows_sample() {
        let mut d = Debouncer::new();
        assert_eq!(d.update(true, ms(0), Duration::ZERO), Some(true));
        assert_eq!(d.update(false, ms(0), Duration::ZERO), Some(false));
    }

    #[test]
    fn time_going_backwards_does_not_settle_early() {
        let mut d = Debouncer::new();
        d.update(true, ms(100), HOLD);
        assert_eq!(d.update(true, ms(10), HOLD), None);
        assert_eq!(d.update(true, ms(150), HOLD), Some(true));
    }
}
