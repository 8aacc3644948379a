//! What retention pruning measures age against. Never the wall clock alone: a clock set
//! forward by months would otherwise delete every raw reading (and, past the evidence
//! retention, acknowledged evidence) at the next compaction. Pure: clocks are passed in.

use std::time::Duration;

/// A wall clock further than this from where the monotonic clock says it should be has jumped.
pub const JUMP_LIMIT_MS: i64 = 86_400_000;

/// Where the wall clock should be now: where it was when read with the monotonic clock, plus
/// the monotonic time since.
pub fn expected_wall(wall_then_ms: i64, elapsed: Duration) -> i64 {
    wall_then_ms.saturating_add(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// The instant retention counts back from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// Delete what is older than the retention before this, ms.
    At(i64),
    /// The wall clock jumped by this much (ms, + forward) since the writer started: no pruning
    /// by age until it keeps pace again (or the agent restarts).
    Paused {
        /// Wall clock minus where it should be, ms.
        jump_ms: i64,
    },
}

/// The reference at `wall_now_ms`: paused when the wall clock is more than a day from
/// `expected_ms` (when known); else the earlier of now and the newest time stored, so data is
/// only ever aged by data newer than it.
pub fn reference(wall_now_ms: i64, expected_ms: Option<i64>, newest_ms: Option<i64>) -> Reference {
    if let Some(expected) = expected_ms {
        let jump_ms = wall_now_ms.saturating_sub(expected);
        if jump_ms.unsigned_abs() > JUMP_LIMIT_MS.unsigned_abs() {
            return Reference::Paused { jump_ms };
        }
    }
    Reference::At(newest_ms.map_or(wall_now_ms, |n| n.min(wall_now_ms)))
}

/// What the status page and the log say while pruning is paused.
pub fn paused_text(jump_ms: i64) -> String {
    let days = jump_ms as f64 / 86_400_000.0;
    format!("the wall clock is {days:+.1} days from where the monotonic clock says it should be; retention pruning is paused (nothing is deleted for age) while it stays so; once the clock is right, it resumes — if the new clock is the right one (set after start), restart the agent to take it")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_clock_set_forward_by_months_pauses_pruning() {
        let t0 = 1_767_225_600_000;
        assert_eq!(
            reference(t0 + 100 * DAY, Some(t0 + 1000), Some(t0)),
            Reference::Paused {
                jump_ms: 100 * DAY - 1000
            }
        );
        assert!(matches!(
            reference(t0 - 2 * DAY, Some(t0), Some(t0)),
            Reference::Paused { .. }
        ));
    }

    #[test]
    fn age_counts_from_the_newest_data_not_from_a_later_clock() {
        let t0 = 1_767_225_600_000;
        // Within a day of the monotonic clock, but no data since t0: nothing is aged past t0.
        assert_eq!(
            reference(t0 + DAY / 2, Some(t0 + DAY / 2), Some(t0)),
            Reference::At(t0)
        );
        // Data stamped ahead of the clock does not age the rest either.
        assert_eq!(reference(t0, None, Some(t0 + DAY)), Reference::At(t0));
        assert_eq!(reference(t0, None, None), Reference::At(t0));
        assert_eq!(expected_wall(t0, Duration::from_secs(2)), t0 + 2000);
    }
}
