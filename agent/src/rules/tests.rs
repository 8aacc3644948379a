//! Golden scenarios worked out by hand, and proptest invariants.

use proptest::prelude::*;

use super::*;
use crate::model::{Fault, Outcome, PointId};
use sealwatch_firmware::modbus::ExceptionCode;

/// 2026-01-01T00:00:00Z = 08:00 in Asia/Shanghai: a local hour boundary.
const T0: i64 = 1_767_225_600_000;
const S: i64 = 1000;

fn config() -> RulesConfig {
    let settings = RuleSettings::default();
    RulesConfig {
        bins: vec![BinRules {
            key: "F1/B1".into(),
            device: "f1-b1-node".into(),
            seal_level_min_mm: 800.0,
            max_open_ms: 120 * S,
        }],
        // Sampled every 5 s, as the NMHC scenarios here are.
        analyzers: vec![AnalyzerRules {
            samples_per_minute: 12,
            ..AnalyzerRules::with_defaults("F1/NMHC", &settings)
        }],
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
        ..RulesConfig::empty(chrono_tz::Asia::Shanghai, settings)
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
        (44, None, Flag::B, false),
        "44 valid minutes: no valid average, no verdict; flagged with what made it invalid (communication faults)"
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
            flag: Flag::B,
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
            Reading::new(
                t,
                PointId(4),
                Outcome::Exception(ExceptionCode::ServerDeviceFailure),
                (None, None),
            )
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
        // A live transmitter flickers by a millimetre; a frozen one would be suspect.
        let level = 1000.0 + (s % 2) as f64;
        out.extend(engine.ingest_poll(&node(start + s * S, true, false, false, level)));
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

// ---- truthful judgements: faults, plausibility, states, windows, saturation, clocks ---------

use crate::config::profile::{FaultBit, FaultIndicator, StatusMap};
use crate::model::{InstrumentState, SensorPart};

/// `config()` plus the seal node's `level_fault` (5), `lid_fault` (6) and `fault_bits` (7), and
/// the analyzer's `status` register (8, the shipped mapping).
fn faulty_config() -> RulesConfig {
    let mut c = config();
    for (name, indicator) in [
        ("level_fault", FaultIndicator::Flag(SensorPart::Level)),
        ("lid_fault", FaultIndicator::Flag(SensorPart::Lid)),
        (
            "fault_bits",
            FaultIndicator::Bits(vec![FaultBit {
                mask: 2,
                part: SensorPart::Level,
                meaning: "level loop current below 3.8 mA".into(),
            }]),
        ),
    ] {
        c.roles.push(Some(Role::BinFault {
            bin: 0,
            indicator: c.indicators.len(),
        }));
        c.indicators.push((name.into(), indicator));
    }
    c.roles.push(Some(Role::AnalyzerStatus {
        analyzer: 0,
        map: 0,
    }));
    c.status_maps.push((
        "status".into(),
        StatusMap {
            entries: vec![
                (vec![0], InstrumentState::Normal),
                (vec![1, 2], InstrumentState::Calibration),
                (vec![3], InstrumentState::Maintenance),
            ],
            otherwise: InstrumentState::Fault,
        },
    ));
    c
}

/// One poll of the seal node with its fault points.
fn node_with_faults(
    at: i64,
    (c, o, g, l): (bool, bool, bool, f64),
    (level_fault, lid_fault, bits): (bool, bool, u16),
) -> Vec<Reading> {
    let mut polls = node(at, c, o, g, l);
    polls.push(value(at, 5, f64::from(u8::from(level_fault))));
    polls.push(value(at, 6, f64::from(u8::from(lid_fault))));
    polls.push(value(at, 7, f64::from(bits)));
    polls
}

fn run_faulty(
    seconds: std::ops::Range<i64>,
    at: impl Fn(i64) -> ((bool, bool, bool, f64), (bool, bool, u16)),
) -> (Vec<Output>, Vec<Vec<Reading>>) {
    let mut engine = Engine::new(&faulty_config());
    let (mut out, mut stored) = (Vec::new(), Vec::new());
    for s in seconds {
        let (inputs, faults) = at(s);
        let mut group = node_with_faults(T0 + s * S, inputs, faults);
        out.extend(engine.ingest(&mut group));
        stored.push(group);
    }
    (out, stored)
}

fn reasons(out: &[Output]) -> Vec<(i64, SealState, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::SealState {
                at_ms, to, reason, ..
            } => Some(((at_ms - T0) / S, *to, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_broken_level_loop_in_a_cycle_is_unknown_with_its_reason_never_a_breach() {
    // The normal cycle, but the loop breaks as the gate opens (25 s): the node reports level 0
    // and sets level_fault and the low-current bit until 45 s. The gate opening was not seen:
    // the cycle ends once everything stayed closed for max_open_s.
    let (out, stored) = run_faulty(0..200, |s| {
        let broken = (25..45).contains(&s);
        let (c, o, g, l) = normal(s);
        (
            (c, o, g, if broken { 0.0 } else { l }),
            (broken, false, if broken { 2 } else { 0 }),
        )
    });
    assert!(breaches(&out).is_empty(), "{out:#?}");
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::BreachStarted { .. })));
    let unknown = reasons(&out)
        .into_iter()
        .find(|(at, s, _)| *at == 25 && *s == SealState::Unknown)
        .expect("unknown from the fault");
    assert!(
        unknown.2.contains("level fault (level_fault = 1)")
            && unknown.2.contains("level loop current below 3.8 mA"),
        "{unknown:?}"
    );
    let c = cycles(&out);
    assert_eq!(c.len(), 1);
    assert!(matches!(
        c[0],
        Output::ChargingCycle {
            seal_held: false,
            interrupted: true,
            outcome: CycleOutcome::Interrupted,
            ..
        }
    ));
    // The level readings during the fault are stored flagged D; the switches stay N.
    assert_eq!(stored[30][3].flag, Flag::D);
    assert_eq!(stored[30][0].flag, Flag::N);
    assert_eq!(stored[50][3].flag, Flag::N);
}

#[test]
fn a_stuck_lid_switch_pair_reported_by_the_node_is_unknown() {
    let (out, _) = run_faulty(0..30, |s| {
        let stuck = (10..20).contains(&s);
        (
            (true, stuck, false, 1000.0 + (s % 2) as f64),
            (false, stuck, 0),
        )
    });
    let r = reasons(&out);
    assert!(
        r.iter()
            .any(|(at, s, why)| *at == 10 && *s == SealState::Unknown && why.contains("lid fault")),
        "{r:?}"
    );
    assert!(breaches(&out).is_empty());
}

#[test]
fn a_level_that_does_not_move_through_a_cycle_makes_it_suspect_not_held() {
    // The normal cycle, but the level reads 2500 all through the gate opening.
    let out = run_bin(0..60, |s| match normal(s) {
        (c, o, g, _) if (22..45).contains(&s) => (c, o, g, 2500.0),
        other => other,
    });
    let c = cycles(&out);
    assert_eq!(c.len(), 1);
    let Output::ChargingCycle {
        seal_held,
        suspect,
        outcome,
        level_change_mm,
        ..
    } = c[0]
    else {
        unreachable!()
    };
    assert_eq!(*outcome, CycleOutcome::Suspect);
    assert!(!seal_held);
    assert_eq!(*level_change_mm, Some(0.0));
    assert!(
        suspect.as_deref().unwrap().contains("moved only 0 mm"),
        "{suspect:?}"
    );
}

#[test]
fn a_level_frozen_longer_than_the_limit_is_suspect_and_starts_no_level_breach() {
    let mut c = config();
    c.settings.level_frozen_ms = 60 * S;
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    // Sealed, level stuck at 700 mm (below the 800 mm seal level) for two minutes, then the
    // gate opens: a live level would be a level breach; a frozen one is no evidence of it.
    for s in 0..180 {
        let gate = s >= 120;
        out.extend(engine.ingest_poll(&node(T0 + s * S, true, false, gate, 700.0)));
    }
    let r = reasons(&out);
    assert!(
        r.iter().any(|(at, state, why)| *at == 61
            && *state == SealState::Suspect
            && why.contains("frozen at 700")),
        "{r:?}"
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::BreachStarted { .. })),
        "{r:?}"
    );
}

/// An analyzer sampled every 5 s for `minutes`: `(status, nmhc)` at each second.
fn analyzer_run(
    config: &RulesConfig,
    minutes: i64,
    at: impl Fn(i64) -> (u16, f64),
) -> (Engine, Vec<Output>, Vec<Reading>) {
    let mut engine = Engine::new(config);
    let (mut out, mut stored) = (Vec::new(), Vec::new());
    for k in 0..minutes * 12 {
        let s = k * 5;
        let (status, nmhc) = at(s);
        let mut group = vec![
            value(T0 + s * S, 4, nmhc),
            value(T0 + s * S, 8, f64::from(status)),
        ];
        out.extend(engine.ingest(&mut group));
        stored.extend(group);
    }
    (engine, out, stored)
}

fn minute_flags(out: &[Output]) -> Vec<(i64, Flag)> {
    out.iter()
        .filter_map(|o| match o {
            Output::NmhcMinute {
                minute_ms, flag, ..
            } => Some(((minute_ms - T0) / 60_000, *flag)),
            _ => None,
        })
        .collect()
}

#[test]
fn span_gas_during_a_calibration_is_flagged_c_and_raises_no_exceedance() {
    // Calibration with 80 mg/m³ span gas (status 2) from minute 10 to minute 20 of 70.
    let c = faulty_config();
    let (_, out, stored) = analyzer_run(&c, 70, |s| {
        if (600..1200).contains(&s) {
            (2, 80.0)
        } else {
            (0, 2.0)
        }
    });
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::NmhcExceedanceStarted { .. })),
        "span gas is no exceedance"
    );
    let flags = minute_flags(&out);
    assert!(
        flags
            .iter()
            .filter(|(m, _)| (10..20).contains(m))
            .all(|(_, f)| *f == Flag::C),
        "{flags:?}"
    );
    assert_eq!(flags.iter().find(|(m, _)| *m == 9).unwrap().1, Flag::N);
    let nmhc: Vec<Flag> = stored
        .iter()
        .filter(|r| r.point.0 == 4)
        .map(|r| r.flag)
        .collect();
    assert_eq!(nmhc[150], Flag::C, "stored flagged C");
    // The hour: 50 valid minutes of 2 mg/m³; the calibration is not in its average.
    let hour = out.iter().find_map(|o| match o {
        Output::NmhcHour {
            hour_ms,
            valid_minutes,
            avg,
            flags,
            ..
        } if *hour_ms == T0 => Some((*valid_minutes, *avg, flags.get(Flag::C))),
        _ => None,
    });
    assert_eq!(hour, Some((50, Some(2.0), 120)));
    // Both changes of state are on the record.
    let states: Vec<(i64, InstrumentState)> = out
        .iter()
        .filter_map(|o| match o {
            Output::AnalyzerState { at_ms, to, .. } => Some(((at_ms - T0) / S, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (600, InstrumentState::Calibration),
            (1200, InstrumentState::Normal)
        ]
    );
}

#[test]
fn an_unmapped_or_unreadable_status_makes_the_values_d() {
    let c = faulty_config();
    let (_, _, stored) = analyzer_run(&c, 2, |s| if s < 60 { (9, 2.0) } else { (0, 2.0) });
    let nmhc: Vec<Flag> = stored
        .iter()
        .filter(|r| r.point.0 == 4)
        .map(|r| r.flag)
        .collect();
    assert_eq!((nmhc[0], nmhc[20]), (Flag::D, Flag::N));
}

#[test]
fn a_maintenance_window_opened_by_a_person_flags_m_and_keeps_the_data_out() {
    let mut engine = Engine::new(&config());
    let window = Window {
        target: "F1/NMHC".into(),
        kind: WindowKind::Maintenance,
        reason: "replace the sample pump".into(),
        by: "Li Na".into(),
    };
    let mut out = Vec::new();
    let mut flags = Vec::new();
    for k in 0..(70 * 12) {
        let t = T0 + k * 5 * S;
        if k == 10 * 12 {
            out.extend(engine.open_window(&window, t, true).unwrap());
            // A second window on the same analyzer is refused.
            assert!(matches!(
                engine.open_window(&window, t, true),
                Err(WindowError::AlreadyOpen { .. })
            ));
        }
        if k == 30 * 12 {
            out.extend(engine.close_window("F1/NMHC", t, "Li Na").unwrap());
        }
        let mut group = vec![value(
            t,
            4,
            if (10 * 12..30 * 12).contains(&k) {
                99.0
            } else {
                3.0
            },
        )];
        out.extend(engine.ingest(&mut group));
        flags.push(group[0].flag);
    }
    assert_eq!(
        (flags[0], flags[150], flags[400]),
        (Flag::N, Flag::M, Flag::N)
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::NmhcExceedanceStarted { .. })));
    assert!(out.iter().any(|o| matches!(o, Output::WindowStarted { by, reason, .. } if by == "Li Na" && reason == "replace the sample pump")));
    assert!(out.iter().any(
        |o| matches!(o, Output::WindowEnded { started_ms, .. } if *started_ms == T0 + 600 * S)
    ));
    let hour = out.iter().find_map(|o| match o {
        Output::NmhcHour {
            hour_ms,
            valid_minutes,
            avg,
            ..
        } if *hour_ms == T0 => Some((*valid_minutes, *avg)),
        _ => None,
    });
    assert_eq!(
        hour,
        Some((40, None)),
        "40 valid minutes: the window's 20 are not data"
    );
    // Bad commands are refused and change nothing.
    let now = T0 + (70 * 12 - 1) * 5 * S;
    assert!(matches!(
        engine.close_window("F1/NMHC", now, "x"),
        Err(WindowError::NotOpen(_))
    ));
    assert!(matches!(
        engine.open_window(
            &Window {
                target: "F9/X".into(),
                ..window.clone()
            },
            now,
            true
        ),
        Err(WindowError::UnknownTarget(_))
    ));
    assert!(matches!(
        engine.open_window(
            &Window {
                reason: " ".into(),
                ..window.clone()
            },
            now,
            true
        ),
        Err(WindowError::Missing(_))
    ));
    // A window can neither reach back into what was judged long ago, nor start at a time the
    // clock cannot have.
    for at in [T0, now + 3_600 * S, i64::MIN, 0] {
        assert!(
            matches!(
                engine.open_window(&window, at, true),
                Err(WindowError::Time { .. })
            ),
            "a window at {at}"
        );
    }
}

#[test]
fn readings_stamped_inside_a_window_that_has_ended_are_still_flagged_by_it() {
    let mut engine = Engine::new(&config());
    let window = Window {
        target: "F1/NMHC".into(),
        kind: WindowKind::Calibration,
        reason: "span gas".into(),
        by: "Li Na".into(),
    };
    let mut out = Vec::new();
    for s in 0..60 {
        out.extend(engine.ingest_poll(&[value(T0 + s * S, 4, 3.0)]));
    }
    out.extend(engine.open_window(&window, T0 + 60 * S, true).unwrap());
    for s in 60..70 {
        out.extend(engine.ingest_poll(&[value(T0 + s * S, 4, 3.0)]));
    }
    out.extend(
        engine
            .close_window("F1/NMHC", T0 + 80 * S, "Li Na")
            .unwrap(),
    );
    // Span gas stamped before the end, delivered after it (polls in flight).
    let mut late = vec![value(T0 + 75 * S, 4, 80.0)];
    out.extend(engine.ingest(&mut late));
    assert_eq!(late[0].flag, Flag::C);
    let mut after = vec![value(T0 + 81 * S, 4, 3.0)];
    out.extend(engine.ingest(&mut after));
    assert_eq!(after[0].flag, Flag::N);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::NmhcExceedanceStarted { .. })),
        "span gas judged as data: {out:?}"
    );
}

#[test]
fn a_window_on_a_bin_is_maintenance_and_one_left_open_too_long_is_reported() {
    let mut c = config();
    c.settings.window_max_ms = [60 * S, 60 * S, 60 * S];
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    for s in 0..200 {
        if s == 5 {
            out.extend(
                engine
                    .open_window(
                        &Window {
                            target: "f1-b1-node".into(),
                            kind: WindowKind::Calibration,
                            reason: "level transmitter zero".into(),
                            by: "Wang".into(),
                        },
                        T0 + s * S,
                        true,
                    )
                    .unwrap(),
            );
        }
        // Lid and gate open together while in the window: not judged, not a breach.
        let open = (20..40).contains(&s);
        out.extend(engine.ingest_poll(&node(
            T0 + s * S,
            !open,
            open,
            open,
            1000.0 + (s % 2) as f64,
        )));
    }
    assert!(
        states(&out).contains(&(5, SealState::Maintenance)),
        "{:?}",
        states(&out)
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::BreachStarted { .. })));
    let overdue: Vec<&Output> = out
        .iter()
        .filter(|o| matches!(o, Output::WindowOverdue { .. }))
        .collect();
    assert_eq!(overdue.len(), 1, "reported once");
}

#[test]
fn saturated_values_count_at_the_top_of_the_range_and_keep_an_exceedance_going() {
    let mut c = config();
    c.analyzers[0].range_max = Some(50.0);
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    let range = (None, Some(50.0));
    for k in 0..(3 * 12) {
        let t = T0 + k * 5 * S;
        // 40 (over the 30 limit), then pinned at full scale (9999 from the analyzer), then 40.
        let v = if (12..24).contains(&k) { 9999.0 } else { 40.0 };
        out.extend(engine.ingest_poll(&[Reading::new(t, PointId(4), Outcome::Value(v), range)]));
    }
    let starts = out
        .iter()
        .filter(|o| matches!(o, Output::NmhcExceedanceStarted { .. }))
        .count();
    let ends = out
        .iter()
        .filter(|o| matches!(o, Output::NmhcExceedanceEnded { .. }))
        .count();
    assert_eq!(
        (starts, ends),
        (1, 0),
        "saturation neither ends nor restarts it"
    );
    let minute = out.iter().find_map(|o| match o {
        Output::NmhcMinute {
            minute_ms,
            avg,
            flag,
            saturated,
            ..
        } if *minute_ms == T0 + 60_000 => Some((*avg, *flag, *saturated)),
        _ => None,
    });
    assert_eq!(
        minute,
        Some((Some(50.0), Flag::T, 12)),
        "at least the top of the range, flagged T"
    );
}

#[test]
fn a_minute_with_one_sample_of_sixty_is_not_valid() {
    let mut c = config();
    c.analyzers[0].samples_per_minute = 60;
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    // One sample in minute 0, then a full minute 1 (60 samples), then minute 2 starts.
    out.extend(engine.ingest_poll(&[value(T0 + 30 * S, 4, 5.0)]));
    for s in 60..121 {
        out.extend(engine.ingest_poll(&[value(T0 + s * S, 4, 5.0)]));
    }
    let flags: Vec<(i64, Flag, u32, u32)> = out
        .iter()
        .filter_map(|o| match o {
            Output::NmhcMinute {
                minute_ms,
                flag,
                samples,
                expected,
                ..
            } => Some(((minute_ms - T0) / 60_000, *flag, *samples, *expected)),
            _ => None,
        })
        .collect();
    assert_eq!(flags, vec![(0, Flag::D, 1, 60), (1, Flag::N, 60, 60)]);
}

/// A day of NMHC minute values, one sample a minute; hour `h` is valid when `valid(h)`.
fn a_day(valid: impl Fn(i64) -> bool) -> Vec<Output> {
    let mut c = config();
    c.analyzers[0].samples_per_minute = 1;
    let mut engine = Engine::new(&c);
    let midnight = T0 - 8 * 3_600_000; // 2026-01-01T00:00+08:00
    let mut out = Vec::new();
    for m in 0..(25 * 60) {
        let t = midnight + m * 60_000;
        let r = if valid(m / 60) {
            value(t, 4, 2.0)
        } else {
            Reading::new(t, PointId(4), Outcome::Fault(Fault::Timeout), (None, None))
        };
        out.extend(engine.ingest_poll(&[r]));
    }
    out
}

#[test]
fn a_day_needs_twenty_valid_hours() {
    let day = |out: &[Output]| {
        out.iter().find_map(|o| match o {
            Output::NmhcDay {
                valid_hours,
                avg,
                flag,
                ..
            } => Some((*valid_hours, *avg, *flag)),
            _ => None,
        })
    };
    assert_eq!(day(&a_day(|h| h < 20)), Some((20, Some(2.0), Flag::N)));
    assert_eq!(day(&a_day(|h| h < 19)), Some((19, None, Flag::D)));
}

/// Readings every second from `T0`; the clock jumps by `jump_ms` at second 600, for 1200 s.
fn jumped(jump_ms: i64) -> Vec<Output> {
    let mut c = config();
    c.analyzers[0].samples_per_minute = 60;
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    for s in 0..1200 {
        let t = T0 + s * S + if s >= 600 { jump_ms } else { 0 };
        let mut group = node(t, true, false, false, 1000.0 + (s % 2) as f64);
        group.push(value(t, 4, 2.0));
        out.extend(engine.ingest(&mut group));
    }
    out.extend(engine.finish(T0 + 1200 * S + jump_ms));
    out
}

#[test]
fn a_clock_set_a_year_forward_and_back_gives_bounded_outputs_and_clock_jump_records() {
    let year = 365 * 86_400_000;
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for s in 0..1800 {
        let t = T0 + s * S + if (600..1200).contains(&s) { year } else { 0 };
        let mut group = node(t, true, false, false, 1000.0 + (s % 2) as f64);
        group.push(value(t, 4, 2.0));
        out.extend(engine.ingest(&mut group));
    }
    let hours = out
        .iter()
        .filter(|o| matches!(o, Output::NmhcHour { .. } | Output::BinHour { .. }))
        .count();
    assert!(hours <= 8, "{hours} hour outputs for half an hour of data");
    let jumps: Vec<i64> = out
        .iter()
        .filter_map(|o| match o {
            Output::ClockJump { size_ms, .. } => Some(*size_ms),
            _ => None,
        })
        .collect();
    assert_eq!(jumps.len(), 2, "{jumps:?}");
    assert!(
        jumps[0] > year - 2 * S && jumps[1] < -year + 2 * S,
        "{jumps:?}"
    );
    // Back in the hour that was summarised when the clock ran ahead: nothing of it is judged
    // again, no hour twice.
    let after = out
        .iter()
        .filter(|o| matches!(o, Output::NmhcMinute { minute_ms, .. } if *minute_ms >= T0 + 1200 * S && *minute_ms < T0 + year))
        .count();
    assert_eq!(after, 0, "minutes of time already summarised");
    assert!(engine.skipped_after_jump() >= 2 * 590);
    let mut keys: Vec<(&str, i64)> = out
        .iter()
        .filter(|o| matches!(o, Output::NmhcHour { .. } | Output::BinHour { .. }))
        .map(|o| (o.kind(), o.at_ms()))
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), all, "an hour summarised twice: {keys:?}");
    assert!(out.iter().any(
        |o| matches!(o, Output::ClockJump { resumes_ms: Some(r), .. } if *r == T0 + 3_600 * S)
    ));
}

#[test]
fn a_clock_set_back_half_an_hour_never_merges_readings_into_an_earlier_minute() {
    let out = jumped(-30 * 60_000);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ClockJump { size_ms, .. } if *size_ms < -29 * 60_000)));
    for o in &out {
        if let Output::NmhcMinute {
            samples, expected, ..
        } = o
        {
            assert!(samples <= expected, "a minute of {samples} samples: merged");
        }
    }
    // Every sample after the jump is in some minute (none silently discarded, but for the
    // minute the jump interrupted).
    let taken: u32 = out
        .iter()
        .filter_map(|o| match o {
            Output::NmhcMinute { samples, .. } => Some(*samples),
            _ => None,
        })
        .sum();
    assert!(taken >= 1200 - 120, "{taken} of 1200 samples in minutes");
}

#[test]
fn extreme_timestamps_neither_loop_nor_panic() {
    let started = std::time::Instant::now();
    let mut engine = Engine::new(&config());
    let mut out = Vec::new();
    for t in [T0, i64::MAX, i64::MIN, 0, -1, i64::MAX - 1, T0 + S] {
        out.extend(engine.ingest_poll(&node(t, true, false, false, 1000.0)));
        out.extend(engine.ingest_poll(&[value(t, 4, 1.0)]));
    }
    out.extend(engine.finish(i64::MAX));
    out.extend(engine.clock_jump(T0, i64::MAX));
    assert!(out.len() < 100, "{} outputs", out.len());
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::ClockImplausible { .. })));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // And in replay, with every chunking.
    let all: Vec<Reading> = [i64::MIN, T0, i64::MAX]
        .iter()
        .flat_map(|&t| node(t, true, false, false, 1000.0))
        .collect();
    let mut replay = Replay::new(Engine::new(&config()), vec![0, 0, 0, 0, 1]);
    let mut n = replay.push(&all).len();
    n += replay.finish().len();
    assert!(n < 100);
}

#[test]
fn the_values_in_force_are_written_out_and_hashed() {
    let c = faulty_config();
    let values = c.values_in_force();
    assert_eq!(values["analyzers"][0]["single_limit_mg_m3"], 30.0);
    assert_eq!(values["bins"][0]["seal_level_min_mm"], 800.0);
    let mut other = c.clone();
    other.analyzers[0].hourly_limit = 6.0;
    assert_ne!(
        c.version(),
        other.version(),
        "a per-analyzer limit changes the rule set"
    );
}

/// A day of the bin and the analyzer, a poll each minute from local midnight for `hours`
/// hours, fed to `engine` from minute `from` on.
fn day_of_polls(engine: &mut Engine, from: i64, to: i64) -> Vec<Output> {
    let midnight = T0 - 8 * 3_600_000;
    let mut out = Vec::new();
    for m in from..to {
        let t = midnight + m * 60_000;
        let mut group = node(t, true, false, false, 1000.0 + (m % 2) as f64);
        group.push(value(t, 4, 2.0 + (m % 3) as f64));
        out.extend(engine.ingest(&mut group));
    }
    out
}

fn summaries(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter(|o| {
            matches!(
                o,
                Output::NmhcDay { .. } | Output::BinDay(_) | Output::NmhcMonth { .. }
            )
        })
        .map(|o| {
            let mut v: serde_json::Value = serde_json::from_str(&o.to_json()).unwrap();
            v.as_object_mut().unwrap().remove("ruleset");
            v.to_string()
        })
        .collect()
}

#[test]
fn a_restart_mid_day_loses_no_hour_of_the_day() {
    let mut c = config();
    c.analyzers[0].samples_per_minute = 1;
    // Without a restart.
    let mut whole = Engine::new(&c);
    let uninterrupted = day_of_polls(&mut whole, 0, 25 * 60);
    // Stopped at 10:00; started again with the record's hours; the same polls from then on.
    let mut first = Engine::new(&c);
    let before = day_of_polls(&mut first, 0, 10 * 60);
    let seeds: Vec<resume::Seed> = before
        .iter()
        .filter_map(|o| resume::Seed::from_stored(o.kind(), &o.to_json()).unwrap())
        .collect();
    assert!(seeds.len() >= 18, "{} seeds", seeds.len());
    let mut second = Engine::new(&c);
    let due = second.resume(&seeds);
    assert!(due.is_empty(), "{due:?}");
    // The restart lost the readings of the open hour, 09:00 on (the pipeline replays them
    // from the store; here they are fed again).
    let open_hour_start = 9 * 60;
    let after = day_of_polls(&mut second, open_hour_start, 25 * 60);
    let day = summaries(&after);
    assert_eq!(day, summaries(&uninterrupted), "the day after a restart");
    // What a restart cost before: a fresh engine has only the hours since it started.
    let mut fresh = Engine::new(&c);
    let alone = summaries(&day_of_polls(&mut fresh, open_hour_start, 25 * 60));
    assert!(
        alone.iter().any(|d| d.contains("\"valid_hours\":15")),
        "{alone:?}"
    );
    assert!(
        day.iter().any(|d| d.contains("\"valid_hours\":24")),
        "{day:?}"
    );
}

#[test]
fn a_clock_set_back_within_the_day_never_summarises_an_hour_or_the_day_twice() {
    let mut c = config();
    c.analyzers[0].samples_per_minute = 1;
    let mut engine = Engine::new(&c);
    let midnight = T0 - 8 * 3_600_000;
    let mut out = day_of_polls(&mut engine, 0, 10 * 60 + 45);
    // 10:45 → 08:30, and on for the rest of the day.
    for m in (8 * 60 + 30)..(25 * 60 + 2 * 60) {
        let t = midnight + m * 60_000;
        let mut group = node(t, true, false, false, 1000.0);
        group.push(value(t, 4, 2.0));
        out.extend(engine.ingest(&mut group));
    }
    let mut keys: Vec<(&str, String, i64)> = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::NmhcHour { .. }
                    | Output::BinHour { .. }
                    | Output::NmhcDay { .. }
                    | Output::BinDay(_)
            )
        })
        .map(|o| (o.kind(), o.subject().to_owned(), o.at_ms()))
        .collect();
    let all = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), all, "a period summarised twice");
    let days: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::NmhcDay { valid_hours, .. } => Some(*valid_hours),
            _ => None,
        })
        .collect();
    assert_eq!(days.len(), 1, "the day split in two: {days:?}");
    assert!(days[0] <= 24, "{days:?}");
    let bin_day = out.iter().find_map(|o| match o {
        Output::BinDay(s) => Some(s.clone()),
        _ => None,
    });
    let d = bin_day.expect("a bin day");
    let total = d.sealed_ms
        + d.charging_ms
        + d.breach_ms
        + d.unknown_ms
        + d.suspect_ms
        + d.maintenance_ms
        + d.no_data_ms;
    assert!(total <= 24 * 3_600_000, "{d:?}");
}

#[test]
fn a_saturated_sample_never_ends_an_exceedance_as_under_the_limit() {
    let mut c = config();
    // A range whose top is the single-value limit: saturated means "at least the limit".
    c.analyzers[0].range_max = Some(c.analyzers[0].single_limit);
    let limit = c.analyzers[0].single_limit;
    let mut engine = Engine::new(&c);
    let mut out = Vec::new();
    for s in 0..30 {
        let t = T0 + s * 5 * S;
        let r = if s < 5 {
            value(t, 4, limit + 5.0)
        } else {
            Reading::new(t, PointId(4), Outcome::Value(limit), (None, Some(limit)))
        };
        out.extend(engine.ingest_poll(&[r]));
    }
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::NmhcExceedanceStarted { .. })));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::NmhcExceedanceEnded { .. })),
        "ended by a saturated sample: {out:?}"
    );
}

#[test]
fn a_bin_day_with_one_hour_of_data_is_not_complete() {
    let mut engine = Engine::new(&config());
    let midnight = T0 - 8 * 3_600_000;
    let mut out = Vec::new();
    for m in (10 * 60)..(11 * 60 + 5) {
        out.extend(engine.ingest_poll(&node(midnight + m * 60_000, true, false, false, 1000.0)));
    }
    out.extend(engine.finish(midnight + 24 * 3_600_000 + 60_000));
    let day = out
        .iter()
        .find_map(|o| match o {
            Output::BinDay(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a bin day");
    let completeness = day.completeness.unwrap_or(1.0);
    assert!(completeness < 0.1, "{day:?}");
}
