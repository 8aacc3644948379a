//! Golden scenarios worked out by hand, and proptest invariants.

use proptest::prelude::*;

use super::*;
use crate::poll::reading::{Fault, Outcome, PointId};

/// 2026-01-01T00:00:00Z = 08:00 in Asia/Shanghai: a local hour boundary.
const T0: i64 = 1_767_225_600_000;
const S: i64 = 1000;

fn config() -> RulesConfig {
    RulesConfig {
        tz: chrono_tz::Asia::Shanghai,
        settings: RuleSettings::default(),
        bins: vec![BinRules {
            key: "F1/B1".into(),
            seal_level_min_mm: 800.0,
            max_open_ms: 120 * S,
        }],
        analyzers: vec!["F1/NMHC".into()],
        roles: vec![
            Some(Role::Bin {
                bin: 0,
                signal: Signal::LidClosed,
            }),
            Some(Role::Bin {
                bin: 0,
                signal: Signal::LidOpen,
            }),
            Some(Role::Bin {
                bin: 0,
                signal: Signal::GateOpen,
            }),
            Some(Role::Bin {
                bin: 0,
                signal: Signal::LevelMm,
            }),
            Some(Role::Nmhc { analyzer: 0 }),
        ],
    }
}

fn value(at: i64, point: u32, v: f64) -> Reading {
    Reading::new(at, PointId(point), Outcome::Value(v), (None, None))
}

/// One poll of the seal node: (lid closed, lid open, gate open, level).
fn node(at: i64, lid_closed: bool, lid_open: bool, gate: bool, level: f64) -> Vec<Reading> {
    vec![
        value(at, 0, f64::from(u8::from(lid_closed))),
        value(at, 1, f64::from(u8::from(lid_open))),
        value(at, 2, f64::from(u8::from(gate))),
        value(at, 3, level),
    ]
}

/// A bin's polls, once a second, described per second by a function.
fn run_bin(
    seconds: std::ops::Range<i64>,
    at: impl Fn(i64) -> (bool, bool, bool, f64),
) -> Vec<Output> {
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for s in seconds {
        let (c, o, g, l) = at(s);
        out.extend(engine.ingest_poll(&node(T0 + s * S, c, o, g, l)));
    }
    out
}

fn states(out: &[Output]) -> Vec<(i64, SealState)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SealState { at_ms, to, .. } => Some(((at_ms - T0) / S, *to)),
            _ => None,
        })
        .collect()
}

fn breaches(out: &[Output]) -> Vec<(i64, i64, Signature)> {
    out.iter()
        .filter_map(|o| match o {
            Output::BreachEnded {
                started_ms,
                at_ms,
                signature,
                ..
            } => Some(((started_ms - T0) / S, (at_ms - T0) / S, *signature)),
            _ => None,
        })
        .collect()
}

fn cycles(out: &[Output]) -> Vec<&Output> {
    out.iter()
        .filter(|o| matches!(o, Output::ChargingCycle { .. }))
        .collect()
}

/// A normal charging cycle: lid travels open (10–12 s), fill, lid travels closed (20–22 s), gate
/// open from 25 s with the level falling from 2500 to 1100 mm, gate closed at 40 s.
fn normal(s: i64) -> (bool, bool, bool, f64) {
    match s {
        0..=9 => (true, false, false, 1000.0),
        10..=11 => (false, false, false, 1000.0),
        12..=19 => (false, true, false, 1000.0 + 150.0 * (s - 11) as f64),
        20..=21 => (false, false, false, 2500.0),
        22..=24 => (true, false, false, 2500.0),
        25..=39 => (true, false, true, 2500.0 - 100.0 * (s - 25) as f64),
        _ => (true, false, false, 1100.0),
    }
}

#[test]
fn a_normal_cycle_holds_the_seal() {
    let out = run_bin(0..60, normal);
    // Between lid and gate the bin is sealed; the cycle spans both.
    assert_eq!(
        states(&out),
        vec![
            (0, SealState::Sealed),
            (10, SealState::Charging),
            (22, SealState::Sealed),
            (25, SealState::Charging),
            (40, SealState::Sealed)
        ]
    );
    assert!(breaches(&out).is_empty());
    let c = cycles(&out);
    assert_eq!(c.len(), 1);
    let Output::ChargingCycle {
        started_ms,
        ended_ms,
        lid_opened_ms,
        lid_closed_ms,
        gate_opened_ms,
        gate_closed_ms,
        level_at_gate_open_mm,
        seal_held,
        interrupted,
        ..
    } = c[0]
    else {
        unreachable!()
    };
    assert_eq!((started_ms - T0, ended_ms - T0), (10 * S, 40 * S));
    assert_eq!(
        *lid_opened_ms,
        Some(T0 + 10 * S),
        "travelling counts as open"
    );
    assert_eq!(*lid_closed_ms, Some(T0 + 22 * S));
    assert_eq!(
        (*gate_opened_ms, *gate_closed_ms),
        (Some(T0 + 25 * S), Some(T0 + 40 * S))
    );
    assert_eq!(*level_at_gate_open_mm, Some(2500.0));
    assert!(*seal_held && !interrupted);
}

#[test]
fn level_below_seal_height_with_the_gate_open_is_a_breach_from_when_it_began() {
    // The lid phase as usual; gate open from 25 s with too little coal: the level crosses below
    // 800 mm at 28 s (700) and the gate closes at 40 s.
    let out = run_bin(0..60, |s| match s {
        25..=39 => (true, false, true, 1000.0 - 100.0 * (s - 25) as f64),
        40.. => (true, false, false, 900.0),
        _ => normal(s),
    });
    // Signature from 28 s, grace of 3 s elapses at 31 s: breach dated 28 s, ends at 40 s.
    assert_eq!(breaches(&out), vec![(28, 40, Signature::LevelBelowSeal)]);
    assert_eq!(
        states(&out),
        vec![
            (0, SealState::Sealed),
            (10, SealState::Charging),
            (22, SealState::Sealed),
            (25, SealState::Charging),
            (28, SealState::Breach),
            (40, SealState::Sealed)
        ]
    );
    let Output::ChargingCycle { seal_held, .. } = cycles(&out)[0] else {
        unreachable!()
    };
    assert!(!seal_held);
}

#[test]
fn a_dip_shorter_than_the_grace_period_is_not_a_breach() {
    let out = run_bin(0..60, |s| match s {
        25..=27 => (true, false, true, 700.0), // 3 polls: 25, 26, 27 → 2 s < 3 s grace
        28..=39 => (true, false, true, 1500.0),
        _ => (true, false, false, 1500.0),
    });
    assert!(breaches(&out).is_empty(), "{out:#?}");
}

#[test]
fn level_breach_ends_only_above_the_hysteresis() {
    let out = run_bin(0..60, |s| match s {
        20..=29 => (true, false, true, 700.0),
        30..=34 => (true, false, true, 820.0), // above 800 but below 850: still a breach
        35..=44 => (true, false, true, 900.0),
        _ => (true, false, false, 900.0),
    });
    assert_eq!(breaches(&out), vec![(20, 35, Signature::LevelBelowSeal)]);
}

#[test]
fn lid_and_gate_open_together_is_an_interlock_breach() {
    let out = run_bin(0..60, |s| match s {
        10..=24 => (false, true, false, 2000.0),
        25..=29 => (false, true, true, 2000.0), // gate opened with the lid still open
        30..=39 => (true, false, true, 1900.0),
        _ => (true, false, false, 1500.0),
    });
    assert_eq!(breaches(&out), vec![(25, 30, Signature::LidAndGateOpen)]);
    assert_eq!(
        states(&out),
        vec![
            (0, SealState::Sealed),
            (10, SealState::Charging),
            (25, SealState::Breach),
            (30, SealState::Charging),
            (40, SealState::Sealed)
        ]
    );
    let Output::ChargingCycle {
        started_ms,
        ended_ms,
        seal_held,
        ..
    } = cycles(&out)[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (started_ms - T0, ended_ms - T0, *seal_held),
        (10 * S, 40 * S, false)
    );
}

#[test]
fn a_lid_open_longer_than_max_open_is_a_breach() {
    // Lid open from 10 s; max_open 120 s: the signature appears at 131 s (open 121 s).
    let out = run_bin(0..330, |s| match s {
        10..=199 => (false, true, false, 2000.0),
        _ => (true, false, false, 2000.0),
    });
    assert_eq!(breaches(&out), vec![(131, 200, Signature::OpenTooLong)]);
    // A lid-only cycle ends once everything stayed closed longer than max_open (at 321 s),
    // dated when it closed.
    let Output::ChargingCycle {
        started_ms,
        ended_ms,
        gate_opened_ms,
        ..
    } = cycles(&out)[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (started_ms - T0, ended_ms - T0, *gate_opened_ms),
        (10 * S, 200 * S, None)
    );
}

#[test]
fn implausible_lid_switches_are_unknown_never_sealed_or_breach() {
    let out = run_bin(0..60, |s| match s {
        10..=14 => (true, true, false, 1000.0), // both on: switch fault
        15..=19 => (true, false, false, 1000.0), // fine again
        20..=39 => (false, false, false, 1000.0), // both off for 20 s > 10 s travel time
        _ => (true, false, false, 1000.0),
    });
    assert_eq!(
        states(&out),
        vec![
            (0, SealState::Sealed),
            (10, SealState::Unknown),
            (15, SealState::Sealed),
            (20, SealState::Charging),
            (31, SealState::Unknown),
            (40, SealState::Sealed)
        ]
    );
    assert!(breaches(&out).is_empty());
}

#[test]
fn comms_loss_across_a_cycle_makes_it_unknown_and_interrupted() {
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for s in 0..60 {
        let t = T0 + s * S;
        let group: Vec<Reading> = if (15..30).contains(&s) {
            (0..4)
                .map(|p| Reading::new(t, PointId(p), Outcome::Fault(Fault::Timeout), (None, None)))
                .collect()
        } else {
            let (c, o, g, l) = normal(s);
            node(t, c, o, g, l)
        };
        out.extend(engine.ingest_poll(&group));
    }
    assert_eq!(
        states(&out),
        vec![
            (0, SealState::Sealed),
            (10, SealState::Charging),
            (15, SealState::Unknown),
            (30, SealState::Charging),
            (40, SealState::Sealed)
        ]
    );
    let Output::ChargingCycle {
        seal_held,
        interrupted,
        ..
    } = cycles(&out)[0]
    else {
        unreachable!()
    };
    assert!(
        *interrupted && !seal_held,
        "a cycle not fully seen is judged neither held nor breached"
    );
}

#[test]
fn silence_longer_than_the_stale_limit_is_unknown_from_when_it_went_stale() {
    let mut engine = Engine::new(&config());
    let mut out = engine.ingest_poll(&node(T0, true, false, false, 1000.0));
    out.extend(engine.ingest_poll(&node(T0 + 60 * S, true, false, false, 1000.0)));
    assert_eq!(
        states(&out),
        vec![
            (0, SealState::Sealed),
            (10, SealState::Unknown),
            (60, SealState::Sealed)
        ]
    );
}

/// NMHC samples every 5 s over the hour 08:00–09:00 local; minutes listed in `faulty` get
/// communication faults instead. Then polls into the next hour close it.
fn nmhc_hour(faulty: impl Fn(i64) -> bool, value_at: impl Fn(i64) -> f64) -> Vec<Output> {
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for k in 0..(3600 / 5 + 60) {
        let t = T0 + k * 5 * S;
        let minute = k * 5 / 60;
        let r = if minute < 60 && faulty(minute) {
            Reading::new(t, PointId(4), Outcome::Fault(Fault::Timeout), (None, None))
        } else {
            value(t, 4, value_at(k * 5))
        };
        out.extend(engine.ingest_poll(&[r]));
    }
    out
}

fn the_hour(out: &[Output]) -> (u32, Option<f64>, Flag, bool) {
    out.iter()
        .find_map(|o| match o {
            Output::NmhcHour {
                hour_ms,
                valid_minutes,
                avg,
                flag,
                exceeded,
                ..
            } if *hour_ms == T0 => Some((*valid_minutes, *avg, *flag, *exceeded)),
            _ => None,
        })
        .expect("hour summary")
}

#[test]
fn an_hour_with_45_valid_minutes_is_valid_and_44_is_not() {
    let out = nmhc_hour(|m| m >= 45, |_| 12.0);
    assert_eq!(
        the_hour(&out),
        (45, Some(12.0), Flag::N, true),
        "12 mg/m3 over the 10 mg/m3 hourly limit"
    );
    let out = nmhc_hour(|m| m >= 44, |_| 12.0);
    assert_eq!(
        the_hour(&out),
        (44, None, Flag::D, false),
        "44 valid minutes: no valid average, no verdict"
    );
    let minutes: Vec<&Output> = out
        .iter()
        .filter(
            |o| matches!(o, Output::NmhcMinute { minute_ms, .. } if *minute_ms < T0 + 3_600_000),
        )
        .collect();
    assert_eq!(minutes.len(), 60);
    assert!(matches!(
        minutes[50],
        Output::NmhcMinute {
            flag: Flag::D,
            avg: None,
            samples: 12,
            ..
        }
    ));
}

#[test]
fn a_minute_needs_75_percent_normal_samples() {
    // Minute 0: 9 of 12 samples valid (75 %): N. Minute 1: 8 of 12: D.
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for k in 0..40 {
        let t = T0 + k * 5 * S;
        let bad = (9..12).contains(&k) || (20..24).contains(&k);
        let r = if bad {
            Reading::new(t, PointId(4), Outcome::Exception(4), (None, None))
        } else {
            value(t, 4, 2.0 + k as f64)
        };
        out.extend(engine.ingest_poll(&[r]));
    }
    let flags: Vec<Flag> = out
        .iter()
        .filter_map(|o| {
            if let Output::NmhcMinute { flag, .. } = o {
                Some(*flag)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(&flags[..2], &[Flag::N, Flag::D]);
    let Some(Output::NmhcMinute { avg, min, max, .. }) =
        out.iter().find(|o| matches!(o, Output::NmhcMinute { .. }))
    else {
        unreachable!()
    };
    assert_eq!(
        (*avg, *min, *max),
        (Some(6.0), Some(2.0), Some(10.0)),
        "over the 9 valid samples 2..=10"
    );
}

#[test]
fn single_value_exceedance_has_start_peak_and_end() {
    let values = [5.0, 31.0, 40.0, 35.0, 29.0, 5.0];
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for (k, v) in values.iter().enumerate() {
        out.extend(engine.ingest_poll(&[value(T0 + k as i64 * 5 * S, 4, *v)]));
    }
    let events: Vec<&Output> = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::NmhcExceedanceStarted { .. } | Output::NmhcExceedanceEnded { .. }
            )
        })
        .collect();
    assert_eq!(events.len(), 2);
    assert!(
        matches!(events[0], Output::NmhcExceedanceStarted { at_ms, value, .. } if *at_ms == T0 + 5 * S && *value == 31.0)
    );
    assert!(
        matches!(events[1], Output::NmhcExceedanceEnded { at_ms, started_ms, duration_ms, peak, ended_by_invalid_data: false, .. }
        if *at_ms == T0 + 20 * S && *started_ms == T0 + 5 * S && *duration_ms == 15 * S && *peak == 40.0)
    );
}

#[test]
fn hours_are_local_shanghai_hours_and_add_up() {
    // From 08:59:00 to 10:00:30 local: the 08:00 hour (partly unknown before the first poll)
    // and the full 09:00 hour close.
    let start = T0 - 60 * S;
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for s in 0..(3600 + 90) {
        out.extend(engine.ingest_poll(&node(start + s * S, true, false, false, 1000.0)));
    }
    let hours: Vec<(i64, i64, i64, bool)> = out
        .iter()
        .filter_map(|o| match o {
            Output::BinHour {
                hour_ms,
                sealed_ms,
                unknown_ms,
                valid,
                ..
            } => Some((*hour_ms, *sealed_ms, *unknown_ms, *valid)),
            _ => None,
        })
        .collect();
    assert_eq!(
        hours,
        vec![
            (T0 - 3_600_000, 60 * S, 3540 * S, false),
            (T0, 3_600_000, 0, true)
        ]
    );
    assert_eq!(
        time::local_text(chrono_tz::Asia::Shanghai, hours[1].0),
        "2026-01-01T08:00+08:00"
    );
}

#[test]
fn the_ruleset_version_changes_with_any_threshold() {
    let a = config().version();
    let mut c = config();
    c.bins[0].seal_level_min_mm = 801.0;
    assert_ne!(a, c.version());
    let mut c = config();
    c.settings.nmhc_hourly_limit = 6.0;
    assert_ne!(a, c.version());
    assert_eq!(a, config().version());
    assert_eq!(a.len(), 16);
}

// ---- invariants ----------------------------------------------------------------------------

/// A random poll: time step, switches, level, whether it failed.
fn polls() -> impl Strategy<Value = Vec<(i64, bool, bool, bool, f64, bool)>> {
    prop::collection::vec(
        (
            500i64..30_000,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0.0f64..3000.0,
            prop::bool::weighted(0.1),
        ),
        1..400,
    )
}

fn readings_of(polls: &[(i64, bool, bool, bool, f64, bool)]) -> Vec<Reading> {
    let mut t = T0 - 1_800_000;
    let mut all = Vec::new();
    for &(step, c, o, g, l, failed) in polls {
        t += step;
        if failed {
            all.extend((0..4).map(|p| {
                Reading::new(t, PointId(p), Outcome::Fault(Fault::Timeout), (None, None))
            }));
        } else {
            all.extend(node(t, c, o, g, l));
        }
        all.push(value(t, 4, l / 50.0));
    }
    all
}

fn replay(all: &[Reading], cuts: &[usize]) -> Vec<Output> {
    // Points 0..3 belong to device 0, point 4 to device 1.
    let mut replay = Replay::new(Engine::new(&config()), vec![0, 0, 0, 0, 1]);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.min(all.len()).max(start);
        out.extend(replay.push(&all[start..cut]));
        start = cut;
    }
    out.extend(replay.push(&all[start..]));
    out.extend(replay.finish());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hours_add_up_breaches_never_overlap_ratios_stay_in_range(polls in polls()) {
        let out = replay(&readings_of(&polls), &[]);
        let mut open_breach: Option<i64> = None;
        let mut last_end = i64::MIN;
        for o in &out {
            match o {
                Output::BinHour { hour_ms, sealed_ms, charging_ms, breach_ms, unknown_ms, cycle_compliance, time_compliance, completeness, .. } => {
                    prop_assert_eq!(sealed_ms + charging_ms + breach_ms + unknown_ms, time::next_hour(chrono_tz::Asia::Shanghai, *hour_ms) - hour_ms);
                    for r in [*cycle_compliance, *time_compliance, Some(*completeness)].into_iter().flatten() {
                        prop_assert!((0.0..=1.0).contains(&r), "ratio {}", r);
                    }
                }
                Output::BreachStarted { at_ms, .. } => {
                    prop_assert!(open_breach.is_none(), "breach started while one is open");
                    prop_assert!(*at_ms >= last_end, "breach starts before the previous ended");
                    open_breach = Some(*at_ms);
                }
                Output::BreachEnded { at_ms, started_ms, duration_ms, .. } => {
                    prop_assert_eq!(open_breach.take(), Some(*started_ms));
                    prop_assert_eq!(*duration_ms, at_ms - started_ms);
                    last_end = *at_ms;
                }
                _ => {}
            }
        }
    }

    #[test]
    fn replay_is_deterministic_and_insensitive_to_chunking(polls in polls(), cuts in prop::collection::vec(0usize..2000, 0..20)) {
        let all = readings_of(&polls);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let whole: Vec<String> = replay(&all, &[]).iter().map(Output::to_json).collect();
        let chunked: Vec<String> = replay(&all, &cuts).iter().map(Output::to_json).collect();
        prop_assert_eq!(&whole, &chunked);
        let again: Vec<String> = replay(&all, &[]).iter().map(Output::to_json).collect();
        prop_assert_eq!(whole, again);
    }

    #[test]
    fn a_view_kept_from_bin_changes_equals_the_bin_states(polls in polls()) {
        // A second bin with no sensors changes only when hours close.
        let mut two_bins = config();
        two_bins.bins.push(BinRules { key: "F1/B2".into(), ..two_bins.bins[0].clone() });
        let mut engine = Engine::new(&two_bins);
        let mut view: Vec<(SealState, Option<i64>)> = Vec::new();
        let seen = |engine: &mut Engine, view: &mut Vec<(SealState, Option<i64>)>| {
            for (bin, judged) in engine.take_bin_changes() {
                if bin >= view.len() {
                    view.resize(bin + 1, (SealState::Unknown, None));
                }
                view[bin] = judged;
            }
            let mut shown = view.clone();
            shown.resize(engine.bin_states().len(), (SealState::Unknown, None));
            shown == engine.bin_states()
        };
        let all = readings_of(&polls);
        let mut last_at = T0;
        for group in all.chunk_by(|a, b| a.at_ms == b.at_ms && (a.point.0 < 4) == (b.point.0 < 4)) {
            engine.ingest_poll(group);
            last_at = group[0].at_ms;
            prop_assert!(seen(&mut engine, &mut view), "after the poll at {}", group[0].at_ms);
        }
        engine.finish(last_at + 3_600_000);
        prop_assert!(seen(&mut engine, &mut view), "after finishing");
    }
}

// ---- event latch reconciliation ------------------------------------------------------------

/// Points 0–4 as in `config()`; then newest seq (5), uptime ms (6), and per slot i: seq (7+3i),
/// kind (8+3i), at ms (9+3i).
fn latch_config() -> RulesConfig {
    let mut c = config();
    c.roles.push(Some(Role::Latch {
        bin: 0,
        field: LatchField::NewestSeq,
    }));
    c.roles.push(Some(Role::Latch {
        bin: 0,
        field: LatchField::UptimeMs,
    }));
    for i in 0..8 {
        c.roles.push(Some(Role::Latch {
            bin: 0,
            field: LatchField::Seq(i),
        }));
        c.roles.push(Some(Role::Latch {
            bin: 0,
            field: LatchField::Kind(i),
        }));
        c.roles.push(Some(Role::Latch {
            bin: 0,
            field: LatchField::AtMs(i),
        }));
    }
    c
}

/// A poll with the latch holding `events` (seq, seal state, wall time); the node booted at `boot`.
fn node_with_latch(at: i64, sealed: bool, boot: i64, events: &[(u16, u16, i64)]) -> Vec<Reading> {
    let mut group = node(at, sealed, !sealed, false, 1500.0);
    group.push(value(
        at,
        5,
        f64::from(events.iter().map(|e| e.0).max().unwrap_or(0)),
    ));
    group.push(value(at, 6, (at - boot) as f64));
    for i in 0..8 {
        let (seq, kind, when) = events.get(i).copied().unwrap_or((0, 0, boot));
        group.push(value(at, 7 + 3 * i as u32, f64::from(seq)));
        group.push(value(at, 8 + 3 * i as u32, f64::from(kind)));
        group.push(value(at, 9 + 3 * i as u32, (when - boot) as f64));
    }
    group
}

fn latch_run(boot_after_gap: i64) -> Vec<Output> {
    const SEALED: u16 = 1;
    const CHARGING: u16 = 2;
    const BREACH: u16 = 3 | (1 << 8); // breach, cause level below seal
    let boot = T0 - 100 * S;
    let before = [(4, CHARGING, T0 - 50 * S), (5, SEALED, T0 - 20 * S)];
    // While the agent could not see: lid phase 15–27 s, gate phase 30–45 s with a breach at 38 s.
    let during = [
        (6, CHARGING, T0 + 15 * S),
        (7, SEALED, T0 + 27 * S),
        (8, CHARGING, T0 + 30 * S),
        (9, BREACH, T0 + 38 * S),
        (10, SEALED, T0 + 45 * S),
    ];
    let mut engine = Engine::new(&latch_config());
    let mut out = Vec::new();
    for s in 0..80 {
        let t = T0 + s * S;
        let group = match s {
            0..=9 => node_with_latch(t, true, boot, &before),
            10..=59 => (0..4)
                .map(|p| Reading::new(t, PointId(p), Outcome::Fault(Fault::Timeout), (None, None)))
                .collect(),
            _ => {
                let all: Vec<(u16, u16, i64)> =
                    before.iter().chain(during.iter()).copied().collect();
                node_with_latch(t, true, boot_after_gap, &all)
            }
        };
        out.extend(engine.ingest_poll(&group));
    }
    out
}

#[test]
fn cycles_missed_during_a_comms_loss_are_reconciled_from_the_event_latch() {
    let out = latch_run(T0 - 100 * S);
    let c = cycles(&out);
    assert_eq!(c.len(), 1, "{out:#?}");
    let Output::ChargingCycle {
        started_ms,
        ended_ms,
        seal_held,
        interrupted,
        reconciled,
        ..
    } = c[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (started_ms - T0, ended_ms - T0),
        (15 * S, 45 * S),
        "lid and gate phases 3 s apart are one cycle"
    );
    assert!(*reconciled && !interrupted);
    assert!(!seal_held, "the latched breach at 38 s");
}

#[test]
fn a_node_that_restarted_during_the_gap_reconciles_nothing() {
    // Its boot time moved: the volatile latch was lost with the restart.
    let out = latch_run(T0 + 50 * S);
    assert!(cycles(&out).is_empty(), "{out:#?}");
}

#[test]
fn methane_and_thc_are_aggregated_with_nmhc_in_the_same_minute_and_hour() {
    let mut c = config();
    c.roles.push(Some(Role::Pollutant {
        analyzer: 0,
        code: "a05002",
    }));
    c.roles.push(Some(Role::Pollutant {
        analyzer: 0,
        code: "a24087",
    }));
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    for k in 0..(3600 / 5 + 60) {
        let t = T0 + k * 5 * S;
        // Methane before NMHC in the group: the minute still rolls over once, for both.
        let mut group = vec![value(t, 5, 2.0 + (k % 2) as f64 * 0.2)];
        group.push(value(t, 4, 1.5));
        // THC fails in the last quarter of the hour: its hour is not valid.
        let thc = if (45 * 60 / 5..3600 / 5).contains(&k) {
            Reading::new(t, PointId(6), Outcome::Fault(Fault::Timeout), (None, None))
        } else {
            value(t, 6, 3.6)
        };
        group.push(thc);
        out.extend(engine.ingest_poll(&group));
    }
    let Some(Output::NmhcMinute {
        others, samples, ..
    }) = out.iter().find(|o| matches!(o, Output::NmhcMinute { .. }))
    else {
        unreachable!()
    };
    assert_eq!(*samples, 12);
    assert_eq!(others.len(), 2);
    assert_eq!(
        (
            others[0].code.as_str(),
            others[0].avg,
            others[0].min,
            others[0].max,
            others[0].flag
        ),
        ("a05002", Some(2.1), Some(2.0), Some(2.2), Flag::N)
    );
    let hour = out.iter().find_map(|o| match o {
        Output::NmhcHour {
            hour_ms, others, ..
        } if *hour_ms == T0 => Some(others.clone()),
        _ => None,
    });
    let others = hour.expect("hour summary");
    let methane = others.iter().find(|o| o.code == "a05002").unwrap();
    let thc = others.iter().find(|o| o.code == "a24087").unwrap();
    assert_eq!((methane.valid, methane.flag), (60, Flag::N));
    assert!((methane.avg.unwrap() - 2.1).abs() < 1e-9);
    assert_eq!(
        (thc.valid, thc.flag),
        (45, Flag::N),
        "exactly 45 valid minutes is a valid hour"
    );
    assert!((thc.avg.unwrap() - 3.6).abs() < 1e-9);
}
