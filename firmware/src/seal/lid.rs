//! Lid position from its two limit switches, with the plausibility check.
//!
//! The lid has a lid-closed and a lid-open switch so that a broken wire or a stuck switch shows:
//! both on is impossible (fault at once); both off is normal only while the lid travels, and a
//! fault once it lasts longer than the travel time. Invariant: pure, fed debounced states and
//! `now`; the travel time is a technician setting, never a constant here.

use core::time::Duration;

use crate::time::Instant;

/// What is wrong with the lid switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LidFault {
    /// Lid-closed and lid-open switches both on.
    BothSwitchesOn,
    /// Neither switch on for longer than the travel time (broken wire, stuck lid, lost switch).
    NeitherSwitchTooLong,
}

/// Where the lid is, as far as its switches tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LidPosition {
    /// A switch has not settled yet.
    Unknown,
    /// Lid-closed switch on, lid-open off.
    Closed,
    /// Lid-open switch on, lid-closed off.
    Open,
    /// Neither switch on, for less than the travel time.
    Travelling,
    /// The switches contradict each other.
    Fault(LidFault),
}

impl LidPosition {
    /// True if the lid is known not to be closed (open or on its way).
    pub const fn is_not_closed(self) -> bool {
        matches!(self, LidPosition::Open | LidPosition::Travelling)
    }
}

/// Tracks how long neither switch has been on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LidMonitor {
    neither_since: Option<Instant>,
}

impl LidMonitor {
    /// A monitor that has seen nothing yet.
    pub const fn new() -> Self {
        LidMonitor {
            neither_since: None,
        }
    }

    /// Lid position from the debounced switch states (`None` = not settled) at `now`.
    pub fn update(
        &mut self,
        closed: Option<bool>,
        open: Option<bool>,
        now: Instant,
        travel_time: Duration,
    ) -> LidPosition {
        let (Some(closed), Some(open)) = (closed, open) else {
            self.neither_since = None;
            return LidPosition::Unknown;
        };
        if closed || open {
            self.neither_since = None;
        }
        match (closed, open) {
            (true, true) => LidPosition::Fault(LidFault::BothSwitchesOn),
            (true, false) => LidPosition::Closed,
            (false, true) => LidPosition::Open,
            (false, false) => {
                let since = *self.neither_since.get_or_insert(now);
                if now.saturating_since(since) > travel_time {
                    LidPosition::Fault(LidFault::NeitherSwitchTooLong)
                } else {
                    LidPosition::Travelling
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAVEL: Duration = Duration::from_millis(8_000);

    /// (closed, open, at ms, expected position)
    #[test]
    fn plausibility_table() {
        use LidPosition::*;
        let rows: &[(Option<bool>, Option<bool>, u64, LidPosition)] = &[
            (None, Some(false), 0, Unknown),
            (Some(true), None, 0, Unknown),
            (Some(true), Some(false), 0, Closed),
            (Some(false), Some(false), 1_000, Travelling),
            (Some(false), Some(false), 9_000, Travelling), // exactly the travel time: still moving
            (
                Some(false),
                Some(false),
                9_001,
                Fault(LidFault::NeitherSwitchTooLong),
            ),
            (Some(false), Some(true), 9_500, Open),
            (Some(false), Some(false), 10_000, Travelling), // the clock restarts per travel
            (Some(true), Some(false), 12_000, Closed),
            (
                Some(true),
                Some(true),
                13_000,
                Fault(LidFault::BothSwitchesOn),
            ),
            (Some(true), Some(false), 13_100, Closed),
        ];
        let mut m = LidMonitor::new();
        for (i, &(c, o, at, want)) in rows.iter().enumerate() {
            assert_eq!(
                m.update(c, o, Instant::from_millis(at), TRAVEL),
                want,
                "row {i}"
            );
        }
    }
}
