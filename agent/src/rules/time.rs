//! Local-time alignment of minutes and hours, as pure functions of a UTC timestamp and a zone.

use chrono::{TimeZone, Timelike};
use chrono_tz::Tz;

/// One minute, ms.
pub const MINUTE_MS: i64 = 60_000;

/// Start of the minute holding `t` (ms since epoch). Every IANA zone in use today is offset from
/// UTC by whole minutes, so local and UTC minutes coincide.
pub fn minute_start(t: i64) -> i64 {
    t - t.rem_euclid(MINUTE_MS)
}

/// Start of the local hour holding `t`, as ms since epoch.
pub fn hour_start(tz: Tz, t: i64) -> i64 {
    let Some(local) = tz.timestamp_millis_opt(t).single() else {
        return t - t.rem_euclid(3_600_000);
    };
    let truncated = local
        .with_minute(0)
        .and_then(|l| l.with_second(0))
        .and_then(|l| l.with_nanosecond(0));
    match truncated {
        Some(l) => l.timestamp_millis(),
        None => t - t.rem_euclid(3_600_000),
    }
}

/// Start of the local hour after the one starting at `hour`.
pub fn next_hour(tz: Tz, hour: i64) -> i64 {
    // An hour later, or more where a zone's offset changes; never less.
    let mut candidate = hour + 3_600_000;
    while hour_start(tz, candidate) <= hour {
        candidate += MINUTE_MS;
    }
    hour_start(tz, candidate)
}

/// Local `YYYY-MM-DDTHH:MM±hh:mm` of a timestamp, for people.
pub fn local_text(tz: Tz, t: i64) -> String {
    match tz.timestamp_millis_opt(t).single() {
        Some(l) => l.format("%Y-%m-%dT%H:%M%:z").to_string(),
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
    fn minutes() {
        assert_eq!(minute_start(T0 + 61_234), T0 + 60_000);
        assert_eq!(minute_start(-1), -60_000);
    }
}
