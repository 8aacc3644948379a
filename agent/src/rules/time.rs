//! Local-time alignment of minutes and hours, as pure functions of a UTC timestamp and a zone.

use chrono::{Datelike, Offset, TimeZone};
use chrono_tz::Tz;

/// One minute, ms.
pub const MINUTE_MS: i64 = 60_000;

/// Start of the minute holding `t` (ms since epoch). Every IANA zone in use today is offset from
/// UTC by whole minutes, so local and UTC minutes coincide.
pub fn minute_start(t: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(MINUTE_MS))
}

/// The earliest reading time the rules judge: 2000-01-01T00:00:00Z. Earlier times come from a
/// clock that was never set (a gateway without a battery-backed clock boots in 1970).
pub const PLAUSIBLE_FROM_MS: i64 = 946_684_800_000;

/// The first reading time the rules no longer judge: 2100-01-01T00:00:00Z.
pub const PLAUSIBLE_UNTIL_MS: i64 = 4_102_444_800_000;

/// Whether the rules judge a reading taken at `t`.
pub fn plausible(t: i64) -> bool {
    (PLAUSIBLE_FROM_MS..PLAUSIBLE_UNTIL_MS).contains(&t)
}

/// The local UTC offset at `t`, ms (0 where the zone cannot say).
fn offset_ms(tz: Tz, t: i64) -> i64 {
    tz.timestamp_millis_opt(t).single().map_or(0, |local| {
        i64::from(local.offset().fix().local_minus_utc()) * 1000
    })
}

/// Start of the local hour holding `t`, as ms since epoch: `t` truncated to the hour on the
/// local clock in force at `t`. Where clocks go back, the repeated hour is two hours, one under
/// each offset, and each holds its own instants. Never overflows.
pub fn hour_start(tz: Tz, t: i64) -> i64 {
    t.saturating_sub(t.saturating_add(offset_ms(tz, t)).rem_euclid(3_600_000))
}

/// Start of the local hour after the one starting at `hour` (at the end of time, `hour` + 1 h
/// saturated).
pub fn next_hour(tz: Tz, hour: i64) -> i64 {
    // An hour later, or more where a zone's offset changes (by at most a few hours); never less.
    let mut candidate = hour.saturating_add(3_600_000);
    for _ in 0..6 * 60 {
        let start = hour_start(tz, candidate);
        if start > hour {
            return start;
        }
        candidate = candidate.saturating_add(MINUTE_MS);
    }
    hour.saturating_add(3_600_000)
}

/// Start of the local day holding `t` (local midnight, or the first instant of the day where
/// midnight does not exist).
pub fn day_start(tz: Tz, t: i64) -> i64 {
    let Some(local) = tz.timestamp_millis_opt(t).single() else {
        return t.saturating_sub(t.rem_euclid(86_400_000));
    };
    let date = local.date_naive();
    first_instant(tz, date).unwrap_or(t.saturating_sub(t.rem_euclid(86_400_000)))
}

/// The first instant of a local date.
fn first_instant(tz: Tz, date: chrono::NaiveDate) -> Option<i64> {
    (0..24).find_map(|h| {
        tz.from_local_datetime(&date.and_hms_opt(h, 0, 0)?)
            .earliest()
            .map(|t| t.timestamp_millis())
    })
}

/// Start of the local day after the one starting at `day`.
pub fn next_day(tz: Tz, day: i64) -> i64 {
    tz.timestamp_millis_opt(day)
        .single()
        .and_then(|l| l.date_naive().succ_opt())
        .and_then(|d| first_instant(tz, d))
        .unwrap_or(day.saturating_add(86_400_000))
}

/// Start of the local month holding `t`.
pub fn month_start(tz: Tz, t: i64) -> i64 {
    tz.timestamp_millis_opt(t)
        .single()
        .and_then(|l| l.date_naive().with_day(1))
        .and_then(|d| first_instant(tz, d))
        .unwrap_or_else(|| day_start(tz, t))
}

/// Start of the local month after the one starting at `month`.
pub fn next_month(tz: Tz, month: i64) -> i64 {
    tz.timestamp_millis_opt(month)
        .single()
        .and_then(|l| {
            let d = l.date_naive();
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            chrono::NaiveDate::from_ymd_opt(y, m, 1)
        })
        .and_then(|d| first_instant(tz, d))
        .unwrap_or(month.saturating_add(31 * 86_400_000))
}

/// Whether the local month starting at `month` is a February (whose valid month needs fewer
/// valid days, HJ 76 annex B).
pub fn is_february(tz: Tz, month: i64) -> bool {
    tz.timestamp_millis_opt(month)
        .single()
        .is_some_and(|l| l.month() == 2)
}

/// The local hours of a zone, remembering the last one looked up: almost every timestamp falls
/// in the same hour as the one before, and the zone arithmetic is the costly part.
#[derive(Debug, Clone, Copy)]
pub struct HourCalendar {
    tz: Tz,
    start: i64,
    end: i64,
}

impl HourCalendar {
    /// Hours of `tz`.
    pub fn new(tz: Tz) -> HourCalendar {
        HourCalendar {
            tz,
            start: 0,
            end: 0,
        }
    }

    /// Start and end of the local hour holding `t`: the same as [`hour_start`] and
    /// [`next_hour`].
    pub fn of(&mut self, t: i64) -> (i64, i64) {
        if t < self.start || t >= self.end {
            let start = hour_start(self.tz, t);
            let end = next_hour(self.tz, start);
            // Remember the hour only where every instant in it maps back to its start (zone
            // transitions may not).
            if hour_start(self.tz, end - 1) == start {
                (self.start, self.end) = (start, end);
            } else {
                return (start, end);
            }
        }
        (self.start, self.end)
    }

    /// Start of the local hour holding `t`.
    pub fn start_of(&mut self, t: i64) -> i64 {
        self.of(t).0
    }
}

/// Local `YYYY-MM-DDTHH:MM±hh:mm` of a timestamp, for people.
pub fn local_text(tz: Tz, t: i64) -> String {
    match tz.timestamp_millis_opt(t).single() {
        Some(l) => l.format("%Y-%m-%dT%H:%M%:z").to_string(),
        None => t.to_string(),
    }
}

/// Local `YYYY-MM-DDTHH:MM:SS±hh:mm` (RFC 3339, to the second) of a timestamp.
pub fn local_seconds(tz: Tz, t: i64) -> String {
    match tz.timestamp_millis_opt(t).single() {
        Some(l) => l.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        None => t.to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 in UTC, to the second) of a timestamp.
pub fn utc_text(t: i64) -> String {
    match chrono::Utc.timestamp_millis_opt(t).single() {
        Some(u) => u.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z is 08:00 in Asia/Shanghai (UTC+8, no DST).
    const T0: i64 = 1_767_225_600_000;

    #[test]
    fn shanghai_hours_start_on_the_local_hour() {
        let tz = chrono_tz::Asia::Shanghai;
        assert_eq!(hour_start(tz, T0 + 59 * 60_000 + 59_999), T0);
        assert_eq!(hour_start(tz, T0 + 3_600_000), T0 + 3_600_000);
        assert_eq!(next_hour(tz, T0), T0 + 3_600_000);
        assert_eq!(local_text(tz, T0), "2026-01-01T08:00+08:00");
        assert_eq!(local_seconds(tz, T0 + 7_900), "2026-01-01T08:00:07+08:00");
        assert_eq!(utc_text(T0 + 61_000), "2026-01-01T00:01:01Z");
        assert_eq!(utc_text(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn half_hour_zones_align_to_their_own_hours() {
        // India is UTC+5:30: local hours start at hh:30 UTC.
        let tz = chrono_tz::Asia::Kolkata;
        let h = hour_start(tz, T0 + 10 * 60_000);
        assert_eq!(h, T0 - 30 * 60_000);
        assert_eq!(next_hour(tz, h), T0 + 30 * 60_000);
    }

    #[test]
    fn days_and_months_are_local() {
        let tz = chrono_tz::Asia::Shanghai;
        // 2026-01-01T00:00+08:00 is 2025-12-31T16:00Z.
        let midnight = T0 - 8 * 3_600_000;
        assert_eq!(day_start(tz, T0 + 3_600_000), midnight);
        assert_eq!(next_day(tz, midnight), midnight + 86_400_000);
        assert_eq!(month_start(tz, T0 + 20 * 86_400_000), midnight);
        let feb = next_month(tz, midnight);
        assert_eq!(feb, midnight + 31 * 86_400_000);
        assert!(is_february(tz, feb));
        assert_eq!(
            next_month(tz, feb),
            feb + 28 * 86_400_000,
            "2026 is no leap year"
        );
    }

    #[test]
    fn extreme_times_neither_overflow_nor_loop() {
        let tz = chrono_tz::Asia::Shanghai;
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let h = hour_start(tz, t);
            assert!(h <= t);
            let _ = next_hour(tz, h);
            let _ = next_day(tz, day_start(tz, t));
            let _ = next_month(tz, month_start(tz, t));
        }
        assert!(!plausible(i64::MAX) && !plausible(0) && plausible(T0));
    }

    #[test]
    fn minutes() {
        assert_eq!(minute_start(T0 + 61_234), T0 + 60_000);
        assert_eq!(minute_start(-1), -60_000);
    }

    #[test]
    fn the_calendar_answers_as_the_functions_do_across_a_year_of_zone_changes() {
        // 17-minute steps through 2026, forward then back, in zones with daylight saving
        // (Berlin), half hours (Kolkata) and both (St John's).
        let zones = [
            chrono_tz::Europe::Berlin,
            chrono_tz::Asia::Kolkata,
            chrono_tz::America::St_Johns,
        ];
        for tz in zones {
            let mut calendar = HourCalendar::new(tz);
            let times: Vec<i64> = (0..31_000)
                .map(|k| T0 + k * 17 * 60_000 + k % 1000)
                .collect();
            for &t in times.iter().chain(times.iter().rev()) {
                let hour = hour_start(tz, t);
                let end = next_hour(tz, hour);
                assert!(
                    hour <= t && t < end,
                    "{tz}: {t} outside its hour {hour}..{end}"
                );
                assert_eq!(calendar.of(t), (hour, end), "{tz} at {t}");
            }
        }
    }
}
