//! `/api/history`: the last hours as the charts draw them — a seal-state timeline per bin, the
//! charging cycles, and the NMHC minute and hour values per analyzer — read from the rule outputs
//! the store keeps (`rule_outputs`), on a read-only connection.
//!
//! Invariant: the segments of a bin's timeline are contiguous, ordered, and cover exactly
//! `[from_ms, to_ms]`; time before the first known state is `unknown`.

use serde::{Deserialize, Serialize};

use crate::config::SiteConfig;
use crate::rules::SealState;
use crate::store::{Store, StoreError};

use super::{HourView, LimitsView, MinuteView};

/// Longest history served, hours.
pub const MAX_HOURS: f64 = 72.0;

/// A stretch of time in one seal state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, ms.
    pub from_ms: i64,
    /// End, ms.
    pub to_ms: i64,
    /// `sealed`, `charging`, `breach` or `unknown`.
    pub state: String,
}

/// A charging cycle on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleMark {
    /// First opening, ms.
    pub started_ms: i64,
    /// Closed again, ms.
    pub ended_ms: i64,
    /// No breach during the cycle.
    pub seal_held: bool,
}

/// One bin's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinTimeline {
    /// `furnace/bin`.
    pub key: String,
    /// Contiguous segments covering the window.
    pub segments: Vec<Segment>,
    /// Cycles that ended in the window.
    pub cycles: Vec<CycleMark>,
}

/// One analyzer's trend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NmhcTrend {
    /// `furnace/analyzer`.
    pub key: String,
    /// Minute values, oldest first.
    pub minutes: Vec<MinuteView>,
    /// Closed hours, oldest first.
    pub hours: Vec<HourView>,
}

/// The `/api/history` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryView {
    /// Window start, ms.
    pub from_ms: i64,
    /// Window end (now), ms.
    pub to_ms: i64,
    /// NMHC limits.
    pub limits: LimitsView,
    /// Bins, in config order.
    pub bins: Vec<BinTimeline>,
    /// Analyzers, in config order.
    pub analyzers: Vec<NmhcTrend>,
}

fn parse(lines: Vec<String>) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The last `hours` before `now`, read from the site's database. `current` is the live state of
/// each bin (config order), which closes each timeline.
pub fn history(
    config: &SiteConfig,
    current: &[(SealState, Option<i64>)],
    now: i64,
    hours: f64,
) -> Result<HistoryView, StoreError> {
    let from = now - (hours * 3_600_000.0) as i64;
    let store = Store::open_read_only(&config.store.path)?;
    let transitions = parse(store.outputs(from, now, Some("seal_state"))?);
    let cycles = parse(store.outputs(from, now, Some("charging_cycle"))?);
    let minutes = parse(store.outputs(from, now, Some("nmhc_minute"))?);
    let hours_out = parse(store.outputs(from, now, Some("nmhc_hour"))?);
    let mut bins = Vec::new();
    let mut index = 0usize;
    for f in &config.furnaces {
        for b in &f.bins {
            let key = format!("{}/{}", f.name, b.name);
            let mine: Vec<(i64, String, String)> = transitions
                .iter()
                .filter(|o| o["bin"] == key.as_str())
                .filter_map(|o| {
                    Some((
                        o["at_ms"].as_i64()?,
                        o["from"].as_str()?.to_owned(),
                        o["to"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            let live = current.get(index).copied();
            index += 1;
            bins.push(BinTimeline {
                segments: timeline(from, now, &mine, live),
                cycles: cycles
                    .iter()
                    .filter(|o| o["bin"] == key.as_str())
                    .filter_map(|o| {
                        Some(CycleMark {
                            started_ms: o["started_ms"].as_i64()?,
                            ended_ms: o["ended_ms"].as_i64()?,
                            seal_held: o["seal_held"].as_bool()?,
                        })
                    })
                    .collect(),
                key,
            });
        }
    }
    let flag = |o: &serde_json::Value| {
        o["flag"]
            .as_str()
            .and_then(|s| s.chars().next())
            .unwrap_or('D')
    };
    let analyzers = config
        .furnaces
        .iter()
        .flat_map(|f| {
            f.analyzers
                .iter()
                .map(move |a| format!("{}/{}", f.name, a.name))
        })
        .map(|key| NmhcTrend {
            minutes: minutes
                .iter()
                .filter(|o| o["analyzer"] == key.as_str())
                .filter_map(|o| {
                    Some(MinuteView {
                        minute_ms: o["minute_ms"].as_i64()?,
                        avg: o["avg"].as_f64(),
                        max: o["max"].as_f64(),
                        flag: flag(o),
                    })
                })
                .collect(),
            hours: hours_out
                .iter()
                .filter(|o| o["analyzer"] == key.as_str())
                .filter_map(|o| {
                    Some(HourView {
                        hour_ms: o["hour_ms"].as_i64()?,
                        avg: o["avg"].as_f64(),
                        valid_minutes: o["valid_minutes"].as_u64()? as u32,
                        flag: flag(o),
                        exceeded: o["exceeded"].as_bool()?,
                    })
                })
                .collect(),
            key,
        })
        .collect();
    Ok(HistoryView {
        from_ms: from,
        to_ms: now,
        limits: LimitsView {
            nmhc_hourly_mg_m3: config.rules.nmhc_hourly_limit,
            nmhc_single_mg_m3: config.rules.nmhc_single_limit,
        },
        bins,
        analyzers,
    })
}

/// Segments covering `[from, to]` from the transitions `(at, from_state, to_state)` in the
/// window (time order) and the live state with its start.
pub fn timeline(
    from: i64,
    to: i64,
    transitions: &[(i64, String, String)],
    live: Option<(SealState, Option<i64>)>,
) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let push = |segments: &mut Vec<Segment>, a: i64, b: i64, state: &str| {
        let (a, b) = (a.clamp(from, to), b.clamp(from, to));
        if b <= a {
            return;
        }
        match segments.last_mut() {
            Some(last) if last.state == state && last.to_ms == a => last.to_ms = b,
            _ => segments.push(Segment {
                from_ms: a,
                to_ms: b,
                state: state.to_owned(),
            }),
        }
    };
    let mut at = from;
    let mut state = match (transitions.first(), live) {
        (Some((_, before, _)), _) => before.clone(),
        (None, Some((s, Some(since)))) if since <= from => s.name().to_owned(),
        _ => SealState::Unknown.name().to_owned(),
    };
    for (t, _, next) in transitions {
        push(&mut segments, at, *t, &state);
        at = (*t).max(at);
        state = next.clone();
    }
    // The live state may be newer than the last stored transition (not yet committed).
    if let Some((s, Some(since))) = live {
        if since > at && s.name() != state {
            push(&mut segments, at, since, &state);
            at = since;
            state = s.name().to_owned();
        }
    }
    push(&mut segments, at, to, &state);
    if segments.is_empty() {
        segments.push(Segment {
            from_ms: from,
            to_ms: to.max(from),
            state,
        });
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at: i64, a: &str, b: &str) -> (i64, String, String) {
        (at, a.to_owned(), b.to_owned())
    }

    fn covers(segments: &[Segment], from: i64, to: i64) {
        assert_eq!(segments.first().unwrap().from_ms, from);
        assert_eq!(segments.last().unwrap().to_ms, to);
        for w in segments.windows(2) {
            assert_eq!(w[0].to_ms, w[1].from_ms, "{segments:?}");
        }
    }

    #[test]
    fn a_timeline_covers_the_window_with_the_states_between_transitions() {
        let s = timeline(
            0,
            100,
            &[t(10, "unknown", "sealed"), t(40, "sealed", "breach")],
            Some((SealState::Breach, Some(40))),
        );
        covers(&s, 0, 100);
        let states: Vec<&str> = s.iter().map(|s| s.state.as_str()).collect();
        assert_eq!(states, ["unknown", "sealed", "breach"]);
        assert_eq!((s[2].from_ms, s[2].to_ms), (40, 100));
    }

    #[test]
    fn without_transitions_the_live_state_fills_the_window_from_its_start() {
        let s = timeline(0, 100, &[], Some((SealState::Sealed, Some(-50))));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].state, "sealed");
        let s = timeline(0, 100, &[], Some((SealState::Charging, Some(60))));
        covers(&s, 0, 100);
        assert_eq!(s[0].state, "unknown");
        assert_eq!(s[1].state, "charging");
    }

    #[test]
    fn a_live_state_newer_than_the_stored_transitions_closes_the_timeline() {
        let s = timeline(
            0,
            100,
            &[t(10, "unknown", "sealed")],
            Some((SealState::Breach, Some(90))),
        );
        covers(&s, 0, 100);
        assert_eq!(s.last().unwrap().state, "breach");
        assert_eq!(s.last().unwrap().from_ms, 90);
    }
}
