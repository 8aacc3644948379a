//! The per-bin judge: seal state, breaches and charging cycles, from the lid, gate and level,
//! the seal node's fault indicators, and the windows people open.
//!
//! - A fault indicator that is set (a broken level loop, disagreeing lid switches, settings not
//!   commissioned), unreadable or stale makes the bin `unknown` with the indicator and the fault
//!   named: never `sealed`, never a breach.
//! - A level that reads exactly the same value longer than `level_frozen_ms` makes the bin
//!   `suspect` (no level breach can start; a switch-based one still can); a cycle whose level
//!   fell less than `level_min_change_mm` while the gate was open is suspect. Suspect cycles are
//!   never counted as held.
//! - A window makes the bin `maintenance`: not judged, kept out of compliance figures.
//!
//! Cycles count in exactly one outcome (held, lost, interrupted, suspect, reconciled); hours,
//! days and months add up their times in the six states to their length.

use chrono_tz::Tz;

use super::output::{BinSummary, CycleOutcome};
use super::time::HourCalendar;
use super::windows::Windows;
use super::{
    BinRules, FlagCounts, Hours, LatchField, Output, RuleSettings, SealState, Signal, Signature,
};
use crate::model::{FaultIndicator, Flag, Reading, SensorPart};

/// The latest reading of one input.
#[derive(Debug, Clone, Copy)]
struct Input {
    value: Option<f64>,
    flag: Flag,
    at: i64,
}

/// What one hour of a bin adds up to, so far.
#[derive(Debug, Default, Clone)]
struct HourAcc {
    state_ms: [i64; 6],
    /// Cycles by outcome: held, lost, interrupted, suspect, reconciled.
    outcomes: [u32; 5],
    breaches: u32,
    flags: FlagCounts,
    interrupted: bool,
}

fn outcome_index(o: CycleOutcome) -> usize {
    match o {
        CycleOutcome::Held => 0,
        CycleOutcome::Lost => 1,
        CycleOutcome::Interrupted => 2,
        CycleOutcome::Suspect => 3,
        CycleOutcome::Reconciled => 4,
    }
}

/// What a closed hour of a bin adds to its day and month. Days and months keep their hours by
/// start time, so an hour counted again (taken from the record at a restart) replaces itself
/// instead of adding up twice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BinHourSeed {
    /// Time in each state, ms: sealed, charging, breach, unknown, suspect, maintenance.
    pub state_ms: [i64; 6],
    /// Cycles by outcome: held, lost, interrupted, suspect, reconciled.
    pub outcomes: [u32; 5],
    /// Breaches that started in it.
    pub breaches: u32,
    /// Whether the hour was valid.
    pub valid: bool,
    /// A clock jump or a restart cut it.
    pub interrupted: bool,
}

/// A day or month of a bin, summed from its hours.
#[derive(Debug, Clone, Default)]
struct PeriodAcc {
    state_ms: [i64; 6],
    outcomes: [u32; 5],
    breaches: u32,
    valid_hours: u32,
    /// Summarised hours' length, ms (the rest of the period had no data).
    covered_ms: i64,
    interrupted: bool,
}

impl PeriodAcc {
    fn of(hours: &Hours<BinHourSeed>, calendar: &mut HourCalendar) -> PeriodAcc {
        let mut acc = PeriodAcc::default();
        for (&start, hour) in hours {
            for (a, b) in acc.state_ms.iter_mut().zip(hour.state_ms) {
                *a += b;
            }
            for (a, b) in acc.outcomes.iter_mut().zip(hour.outcomes) {
                *a += b;
            }
            acc.breaches += hour.breaches;
            acc.valid_hours += u32::from(hour.valid);
            let (_, end) = calendar.of(start);
            acc.covered_ms += end - start;
            acc.interrupted |= hour.interrupted;
        }
        acc
    }
}

/// The latest reading of one fault indicator: the faults it says, or the flag it came with
/// when it said nothing.
#[derive(Debug, Clone)]
struct IndicatorState {
    at: i64,
    faults: Result<Vec<(SensorPart, String)>, Flag>,
}

/// A charging cycle in progress.
#[derive(Debug, Clone)]
struct Cycle {
    started: i64,
    lid_opened: Option<i64>,
    lid_closed: Option<i64>,
    gate_opened: Option<i64>,
    gate_closed: Option<i64>,
    level_at_gate_open: Option<f64>,
    /// Lowest and highest level while the gate was open.
    gate_levels: Option<(f64, f64)>,
    held: bool,
    interrupted: bool,
    suspect: Option<String>,
}

/// What the inputs say at one moment.
enum Assessment {
    Unknown(String),
    Known {
        lid_open: bool,
        gate_open: bool,
        level: f64,
        /// The level cannot be trusted (frozen), and why.
        level_suspect: Option<String>,
    },
}

#[derive(Debug)]
pub(super) struct BinTracker {
    rules: BinRules,
    settings: RuleSettings,
    calendar: HourCalendar,
    inputs: [Option<Input>; 4],
    state: SealState,
    since: Option<i64>,
    last_judged: Option<i64>,
    lid_moving_since: Option<i64>,
    open_since: Option<i64>,
    level_latched: bool,
    candidate: Option<(Signature, i64)>,
    breach: Option<(Signature, i64)>,
    cycle: Option<Cycle>,
    prev_open: Option<(bool, bool)>,
    closed_since: Option<i64>,
    hours: Hours<HourAcc>,
    closed_until: i64,
    latch: Latch,
    /// Newest latch sequence and node boot time (wall ms) at the last known judgement.
    observed: Option<(u16, i64)>,
    /// State before the bin last became unknown.
    before_unknown: SealState,
    /// The fault indicators of this bin's node ([`super::RulesConfig::indicators`] indexes).
    indicators: Vec<(usize, String, FaultIndicator)>,
    /// Their latest readings, by indicator index.
    indicator_states: std::collections::BTreeMap<usize, IndicatorState>,
    /// The level's current value and since when it has read exactly that.
    level_since: Option<(f64, i64)>,
    /// The window open on this bin.
    pub(super) window: Windows,
    /// Whether a state was put on the record yet.
    announced: bool,
    /// Day and month being summed, by start.
    days: Hours<Hours<BinHourSeed>>,
    months: Hours<Hours<BinHourSeed>>,
    tz: Tz,
}

/// Slots in the seal node's event latch.
pub(super) const LATCH_SLOTS: usize = sealwatch_firmware::registers::EVENT_LATCH_LEN as usize;

/// Latest values of the seal node's event latch.
#[derive(Debug, Clone, Default)]
struct Latch {
    newest_seq: Option<u16>,
    uptime_ms: Option<(i64, u32)>,
    seq: [Option<u16>; LATCH_SLOTS],
    kind: [Option<u16>; LATCH_SLOTS],
    at_ms: [Option<u32>; LATCH_SLOTS],
}

impl Latch {
    /// Wall time (ms) at which the node booted, from the latest uptime reading.
    fn boot_ms(&self) -> Option<i64> {
        self.uptime_ms.map(|(at, up)| at - i64::from(up))
    }
}

/// Distance from sequence number `from` to `to` (1 … 65535, wrapping, 0 never used).
fn seq_distance(from: u16, to: u16) -> u32 {
    let (from, to) = (u32::from(from), u32::from(to));
    if to >= from {
        to - from
    } else {
        to + 65_535 - from
    }
}

impl BinTracker {
    pub(super) fn new(
        rules: BinRules,
        settings: RuleSettings,
        tz: Tz,
        indicators: Vec<(usize, String, FaultIndicator)>,
    ) -> Self {
        BinTracker {
            rules,
            settings,
            calendar: HourCalendar::new(tz),
            inputs: [None; 4],
            state: SealState::Unknown,
            since: None,
            last_judged: None,
            lid_moving_since: None,
            open_since: None,
            level_latched: false,
            candidate: None,
            breach: None,
            cycle: None,
            prev_open: None,
            closed_since: None,
            hours: Hours::new(),
            closed_until: i64::MIN,
            latch: Latch::default(),
            observed: None,
            before_unknown: SealState::Unknown,
            indicators,
            indicator_states: std::collections::BTreeMap::new(),
            level_since: None,
            window: Windows::default(),
            announced: false,
            days: Hours::new(),
            months: Hours::new(),
            tz,
        }
    }

    /// Takes a reading of fault indicator `indicator`.
    pub(super) fn apply_indicator(&mut self, indicator: usize, r: &Reading) {
        let Some((_, name, def)) = self.indicators.iter().find(|(i, _, _)| *i == indicator) else {
            return;
        };
        let faults = match (r.value(), r.flag) {
            (Some(v), Flag::N | Flag::T) if v.is_finite() && v >= 0.0 => {
                Ok(def.faults(name, v as u64))
            }
            (_, flag) => Err(flag),
        };
        self.indicator_states.insert(
            indicator,
            IndicatorState {
                at: r.at_ms,
                faults,
            },
        );
    }

    /// Whether the latest indicator readings say `part` (or the node) is faulted: what a
    /// reading of that sensor is flagged D for.
    pub(super) fn faulted(&self, part: SensorPart) -> bool {
        self.indicator_states.values().any(|s| {
            s.faults
                .as_ref()
                .is_ok_and(|f| f.iter().any(|(p, _)| *p == part || *p == SensorPart::Node))
        })
    }

    /// Starts the timeline at `hour` (unknown until the first judgement).
    pub(super) fn start(&mut self, hour: i64) {
        if self.since.is_none() {
            self.since = Some(hour);
            self.closed_until = hour;
        }
    }

    pub(super) fn key(&self) -> &str {
        &self.rules.key
    }

    pub(super) fn state(&self) -> (SealState, Option<i64>) {
        (self.state, self.since)
    }

    pub(super) fn apply_latch(&mut self, field: LatchField, r: &Reading) {
        let value = match (r.value(), r.flag) {
            (Some(v), Flag::N) if v.is_finite() && v >= 0.0 => v,
            _ => return,
        };
        let word = || u16::try_from(value as u64).ok();
        match field {
            LatchField::NewestSeq => self.latch.newest_seq = word(),
            LatchField::UptimeMs => {
                self.latch.uptime_ms = u32::try_from(value as u64).ok().map(|u| (r.at_ms, u))
            }
            LatchField::Seq(i) => self.latch.seq[i] = word(),
            LatchField::Kind(i) => self.latch.kind[i] = word(),
            LatchField::AtMs(i) => self.latch.at_ms[i] = u32::try_from(value as u64).ok(),
        }
    }

    /// After unknown time, recovers the charging cycles that the seal node latched meanwhile and
    /// emits them marked `reconciled`. Nothing is recovered when the node restarted in between
    /// (its latch is volatile) or when it had no events.
    fn reconcile(&mut self, ruleset: &str, out: &mut Vec<Output>) {
        let (Some((seen, boot_before)), Some(newest), Some(boot_now)) =
            (self.observed, self.latch.newest_seq, self.latch.boot_ms())
        else {
            return;
        };
        if (boot_now - boot_before).abs() > 5_000 {
            return;
        }
        let missed = seq_distance(seen, newest);
        if missed == 0 {
            return;
        }
        let mut events: Vec<(u32, i64, u16)> = (0..LATCH_SLOTS)
            .filter_map(|i| {
                let (seq, kind, at) = (
                    self.latch.seq[i]?,
                    self.latch.kind[i]?,
                    self.latch.at_ms[i]?,
                );
                let d = seq_distance(seen, seq);
                (seq != 0 && (1..=missed).contains(&d)).then_some((
                    d,
                    boot_now + i64::from(at),
                    kind & 0xFF,
                ))
            })
            .collect();
        events.sort_unstable();
        // Events lost to latch overflow make the first recovered cycle's beginning unseen.
        let mut lost_some = (events.len() as u32) < missed;
        // If the bin was open when we lost sight of it, its first events close that cycle.
        let mut skipping = matches!(self.before_unknown, SealState::Charging | SealState::Breach);
        let mut open: Option<(i64, bool, bool, Option<i64>)> = None; // (start, held, interrupted, closed_at)
        const SEALED: u16 = 1;
        const CHARGING: u16 = 2;
        const BREACH: u16 = 3;
        for (_, at, state) in events {
            if skipping {
                if state == SEALED {
                    skipping = false;
                }
                continue;
            }
            match state {
                CHARGING | BREACH => {
                    let cycle = match open.take() {
                        // Closed only briefly: the same cycle (lid phase, then gate phase).
                        Some((start, held, interrupted, Some(closed)))
                            if at - closed <= self.rules.max_open_ms =>
                        {
                            (start, held, interrupted, None)
                        }
                        Some(done @ (_, _, _, Some(_))) => {
                            self.emit_reconciled(done, ruleset, out);
                            (at, true, std::mem::take(&mut lost_some), None)
                        }
                        Some(still_open) => still_open,
                        None => (at, true, std::mem::take(&mut lost_some), None),
                    };
                    open = Some((cycle.0, cycle.1 && state != BREACH, cycle.2, None));
                }
                SEALED => {
                    if let Some(c) = &mut open {
                        c.3.get_or_insert(at);
                    }
                }
                _ => {
                    if let Some(c) = &mut open {
                        c.2 = true;
                    }
                }
            }
        }
        if let Some(done @ (_, _, _, Some(_))) = open {
            self.emit_reconciled(done, ruleset, out);
        }
    }

    fn emit_reconciled(
        &mut self,
        (started, held, interrupted, closed): (i64, bool, bool, Option<i64>),
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        let ended = closed.unwrap_or(started);
        self.hour(ended).outcomes[outcome_index(CycleOutcome::Reconciled)] += 1;
        out.push(Output::ChargingCycle {
            bin: self.rules.key.clone(),
            started_ms: started,
            ended_ms: ended,
            lid_opened_ms: None,
            lid_closed_ms: None,
            gate_opened_ms: None,
            gate_closed_ms: None,
            level_at_gate_open_mm: None,
            level_change_mm: None,
            seal_held: held && !interrupted,
            interrupted,
            reconciled: true,
            suspect: None,
            outcome: CycleOutcome::Reconciled,
            ruleset: ruleset.to_owned(),
        });
    }

    pub(super) fn apply(&mut self, signal: Signal, r: &Reading) {
        self.inputs[signal as usize] = Some(Input {
            value: r.value(),
            flag: r.flag,
            at: r.at_ms,
        });
        if r.at_ms >= self.closed_until {
            self.hours
                .entry(self.calendar.start_of(r.at_ms))
                .or_default()
                .flags
                .add(r.flag);
        }
    }

    fn assess(&mut self, t: i64) -> Assessment {
        const NAMES: [&str; 4] = [
            "lid-closed switch",
            "lid-open switch",
            "gate switch",
            "level",
        ];
        let mut values = [0.0; 4];
        for (i, input) in self.inputs.iter().enumerate() {
            let Some(input) = input else {
                return Assessment::Unknown(format!("no {} reading yet", NAMES[i]));
            };
            if t - input.at > self.settings.stale_after_ms {
                return Assessment::Unknown(format!(
                    "{} reading is {} s old",
                    NAMES[i],
                    (t - input.at) / 1000
                ));
            }
        }
        // The node's own word on its sensors comes before what their readings are flagged (a
        // faulted sensor's readings are flagged D for that reason).
        let mut reasons: Vec<String> = Vec::new();
        for (index, name, _) in &self.indicators {
            let reason = match self.indicator_states.get(index) {
                None => format!("no {name} reading yet"),
                Some(s) if t - s.at > self.settings.stale_after_ms => {
                    format!("{name} reading is {} s old", (t - s.at) / 1000)
                }
                Some(IndicatorState {
                    faults: Err(flag), ..
                }) => format!("{name} flagged {flag}"),
                Some(IndicatorState { faults: Ok(f), .. }) if !f.is_empty() => f
                    .iter()
                    .map(|(_, why)| why.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                Some(_) => continue,
            };
            reasons.push(reason);
        }
        if !reasons.is_empty() {
            return Assessment::Unknown(reasons.join("; "));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            match input.map(|input| (input.value, input.flag)) {
                Some((Some(v), Flag::N)) if v.is_finite() => values[i] = v,
                Some((_, flag)) => {
                    return Assessment::Unknown(format!("{} flagged {flag}", NAMES[i]))
                }
                None => return Assessment::Unknown(format!("no {} reading yet", NAMES[i])),
            }
        }
        let level_suspect = self.level_frozen(t, values[3]);
        let (closed, open) = (values[0] != 0.0, values[1] != 0.0);
        let lid_open = match (closed, open) {
            (true, true) => {
                self.lid_moving_since = None;
                return Assessment::Unknown("lid switches both on (switch fault)".to_owned());
            }
            (false, false) => {
                let since = *self.lid_moving_since.get_or_insert(t);
                if t - since > self.settings.lid_travel_ms {
                    return Assessment::Unknown(
                        "lid switches both off longer than the travel time (switch fault)"
                            .to_owned(),
                    );
                }
                true
            }
            (true, false) => {
                self.lid_moving_since = None;
                false
            }
            (false, true) => {
                self.lid_moving_since = None;
                true
            }
        };
        Assessment::Known {
            lid_open,
            gate_open: values[2] != 0.0,
            level: values[3],
            level_suspect,
        }
    }

    /// Whether the level has read exactly `level` for longer than the frozen limit, and why.
    fn level_frozen(&mut self, t: i64, level: f64) -> Option<String> {
        let (value, since) = match self.level_since {
            Some((v, since)) if v == level => (v, since.min(t)),
            _ => (level, t),
        };
        self.level_since = Some((value, since));
        let limit = self.settings.level_frozen_ms;
        (limit > 0 && t - since > limit).then(|| {
            format!(
                "level frozen at {value} mm for {} s (more than {} s)",
                (t - since) / 1000,
                limit / 1000
            )
        })
    }

    /// Judges the bin at time `t`, after a poll group was applied.
    pub(super) fn judge(&mut self, t: i64, ruleset: &str, out: &mut Vec<Output>) {
        if self.since.is_none() {
            let hour = self.calendar.start_of(t);
            self.start(hour);
        }
        // A gap in judgements longer than the stale limit is unknown time from when it went stale.
        if let Some(prev) = self.last_judged {
            let stale_at = prev.saturating_add(self.settings.stale_after_ms);
            if t > stale_at {
                // After a gap, how long the level has stood still or the lid has been moving
                // starts again: the gap is not time observed.
                self.level_since = None;
                self.lid_moving_since = None;
                if self.state != SealState::Unknown {
                    self.go_unknown(stale_at, "no data".to_owned(), ruleset, out);
                }
            }
        }
        self.last_judged = Some(t.max(self.last_judged.unwrap_or(t)));
        if let Some((_, reason)) = self.window.covering(t) {
            self.go_unknown_as(SealState::Maintenance, t, reason, ruleset, out);
            return;
        }
        let (lid_open, gate_open, level, level_suspect) = match self.assess(t) {
            Assessment::Unknown(reason) => {
                self.go_unknown(t, reason, ruleset, out);
                return;
            }
            Assessment::Known {
                lid_open,
                gate_open,
                level,
                level_suspect,
            } => (lid_open, gate_open, level, level_suspect),
        };
        if self.state == SealState::Unknown {
            self.reconcile(ruleset, out);
        }
        if self.state == SealState::Maintenance {
            // Out of a window: what happened during it is not judged afterwards either.
            self.cycle = None;
            self.prev_open = None;
        }
        if let (Some(seq), Some(boot)) = (self.latch.newest_seq, self.latch.boot_ms()) {
            self.observed = Some((seq, boot));
        }
        let any_open = lid_open || gate_open;
        self.open_since = if any_open {
            Some(self.open_since.unwrap_or(t))
        } else {
            None
        };
        // Level breach with hysteresis: it ends only once the level is back above min + hysteresis.
        let min = self.rules.seal_level_min_mm;
        // A level that cannot be trusted starts no level breach.
        self.level_latched = level_suspect.is_none()
            && gate_open
            && (level < min
                || (self.level_latched && level < min + self.settings.level_hysteresis_mm));
        let signature = if lid_open && gate_open {
            Some(Signature::LidAndGateOpen)
        } else if self.level_latched {
            Some(Signature::LevelBelowSeal)
        } else if self
            .open_since
            .is_some_and(|s| t - s > self.rules.max_open_ms)
        {
            Some(Signature::OpenTooLong)
        } else {
            None
        };

        self.track_cycle_inputs(t, lid_open, gate_open, level);
        if let (Some(why), Some(c)) = (&level_suspect, &mut self.cycle) {
            c.suspect.get_or_insert_with(|| why.clone());
        }

        match signature {
            Some(sig) => {
                let (_, first_seen) = *self.candidate.get_or_insert((sig, t));
                if self.breach.is_none() && t - first_seen >= self.settings.breach_grace_ms {
                    // The breach began when its signature first appeared.
                    let start = first_seen.max(self.since.unwrap_or(first_seen));
                    let sig = self.candidate.map_or(sig, |c| c.0);
                    self.set_state(SealState::Breach, start, format!("{sig:?}"), ruleset, out);
                    out.push(Output::BreachStarted {
                        bin: self.rules.key.clone(),
                        at_ms: start,
                        signature: sig,
                        ruleset: ruleset.to_owned(),
                    });
                    self.hour(start).breaches += 1;
                    self.breach = Some((sig, start));
                    if let Some(c) = &mut self.cycle {
                        c.held = false;
                    }
                }
            }
            None => {
                self.candidate = None;
                self.end_breach(t, false, ruleset, out);
            }
        }
        if self.breach.is_none() {
            let (new, reason) = match &level_suspect {
                Some(why) => (SealState::Suspect, why.clone()),
                None if lid_open && gate_open => (SealState::Charging, "lid and gate open".into()),
                None if lid_open => (SealState::Charging, "lid open".into()),
                None if gate_open => (SealState::Charging, "gate open".into()),
                None => (SealState::Sealed, "lid and gate closed".into()),
            };
            self.set_state(new, t, reason, ruleset, out);
        }
        // A cycle is complete once lid and gate have both opened and everything is closed again;
        // one that stays closed longer than `max_open_s` without completing ends there too.
        if any_open {
            self.closed_since = None;
        } else {
            let closed_at = *self.closed_since.get_or_insert(t);
            let complete = self
                .cycle
                .as_ref()
                .is_some_and(|c| c.lid_opened.is_some() && c.gate_opened.is_some());
            if complete || t - closed_at > self.rules.max_open_ms {
                if let Some(c) = self.cycle.take() {
                    self.emit_cycle(c, closed_at, ruleset, out);
                }
            }
        }
    }

    fn track_cycle_inputs(&mut self, t: i64, lid_open: bool, gate_open: bool, level: f64) {
        let (was_lid, was_gate) = self.prev_open.unwrap_or((false, false));
        if (lid_open || gate_open) && self.cycle.is_none() {
            self.cycle = Some(Cycle {
                started: self.open_since.unwrap_or(t),
                lid_opened: None,
                lid_closed: None,
                gate_opened: None,
                gate_closed: None,
                level_at_gate_open: None,
                gate_levels: None,
                held: true,
                // Opened while we could not see: its beginning is not observed.
                interrupted: matches!(self.state, SealState::Unknown | SealState::Maintenance)
                    || self.prev_open.is_none(),
                suspect: None,
            });
        }
        if let Some(c) = &mut self.cycle {
            if lid_open && c.lid_opened.is_none() {
                c.lid_opened = Some(t);
            }
            if was_lid && !lid_open {
                c.lid_closed = Some(t);
            }
            if gate_open && c.gate_opened.is_none() {
                c.gate_opened = Some(t);
                c.level_at_gate_open = Some(level);
            }
            if gate_open || was_gate {
                // The level at the gate's closing counts too: it is where the fall ended.
                let (lo, hi) = c.gate_levels.unwrap_or((level, level));
                c.gate_levels = Some((lo.min(level), hi.max(level)));
            }
            if was_gate && !gate_open {
                c.gate_closed = Some(t);
            }
        }
        self.prev_open = Some((lid_open, gate_open));
    }

    fn emit_cycle(&mut self, mut c: Cycle, t: i64, ruleset: &str, out: &mut Vec<Output>) {
        let change = c.gate_levels.map(|(lo, hi)| hi - lo);
        let min_change = self.settings.level_min_change_mm;
        if let Some(change) = change.filter(|ch| min_change > 0.0 && *ch < min_change) {
            c.suspect.get_or_insert_with(|| {
                format!("the level moved only {change} mm while the gate was open (less than {min_change} mm): no coal flowed, or the level did not see it")
            });
        }
        let outcome = if c.interrupted {
            CycleOutcome::Interrupted
        } else if !c.held {
            CycleOutcome::Lost
        } else if c.suspect.is_some() {
            CycleOutcome::Suspect
        } else {
            CycleOutcome::Held
        };
        self.hour(t).outcomes[outcome_index(outcome)] += 1;
        out.push(Output::ChargingCycle {
            bin: self.rules.key.clone(),
            started_ms: c.started,
            ended_ms: t,
            lid_opened_ms: c.lid_opened,
            lid_closed_ms: c.lid_closed,
            gate_opened_ms: c.gate_opened,
            gate_closed_ms: c.gate_closed,
            level_at_gate_open_mm: c.level_at_gate_open,
            level_change_mm: change,
            seal_held: outcome == CycleOutcome::Held,
            interrupted: c.interrupted,
            reconciled: false,
            suspect: c.suspect,
            outcome,
            ruleset: ruleset.to_owned(),
        });
    }

    fn go_unknown(&mut self, at: i64, reason: String, ruleset: &str, out: &mut Vec<Output>) {
        self.go_unknown_as(SealState::Unknown, at, reason, ruleset, out);
    }

    /// Leaves judged time for a state where nothing is judged (unknown, maintenance): any
    /// breach ends there, a cycle in progress is interrupted.
    fn go_unknown_as(
        &mut self,
        state: SealState,
        at: i64,
        reason: String,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        if !matches!(self.state, SealState::Unknown | SealState::Maintenance) {
            self.before_unknown = self.state;
        }
        self.candidate = None;
        self.level_latched = false;
        self.open_since = None;
        self.prev_open = None;
        self.end_breach(at, true, ruleset, out);
        self.closed_since = None;
        if let Some(c) = &mut self.cycle {
            c.interrupted = true;
        }
        self.set_state(state, at, reason, ruleset, out);
    }

    fn end_breach(&mut self, at: i64, by_unknown: bool, ruleset: &str, out: &mut Vec<Output>) {
        if let Some((signature, started)) = self.breach.take() {
            let at = at.max(started);
            out.push(Output::BreachEnded {
                bin: self.rules.key.clone(),
                at_ms: at,
                started_ms: started,
                duration_ms: at - started,
                signature,
                ended_by_unknown: by_unknown,
                ruleset: ruleset.to_owned(),
            });
        }
    }

    fn hour(&mut self, t: i64) -> &mut HourAcc {
        let h = self.calendar.start_of(t.max(self.closed_until));
        self.hours.entry(h).or_default()
    }

    /// Adds the time in the current state up to `to` to the hours it spans.
    fn accumulate(&mut self, to: i64) {
        let Some(mut from) = self.since else { return };
        let index = self.state.index();
        while from < to {
            let (h, end) = self.calendar.of(from);
            let end = end.min(to);
            self.hours.entry(h).or_default().state_ms[index] += end - from;
            from = end;
        }
        self.since = Some(from.max(self.since.unwrap_or(from)));
    }

    fn set_state(
        &mut self,
        new: SealState,
        at: i64,
        reason: String,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        // The first judgement is always on the record, so a bin unknown from the start says why.
        if new == self.state && self.announced {
            return;
        }
        self.announced = true;
        let at = at.max(self.since.unwrap_or(at)).max(self.closed_until);
        self.accumulate(at);
        out.push(Output::SealState {
            bin: self.rules.key.clone(),
            at_ms: at,
            from: self.state,
            to: new,
            reason,
            ruleset: ruleset.to_owned(),
        });
        self.state = new;
        self.since = Some(at);
    }

    /// Closes the hour `[hour, end)`: brings the timeline to `end` and emits its summary.
    pub(super) fn close_hour(&mut self, hour: i64, end: i64, ruleset: &str, out: &mut Vec<Output>) {
        self.start(hour);
        if let Some(prev) = self.last_judged {
            let stale_at = prev.saturating_add(self.settings.stale_after_ms);
            if stale_at < end && self.state != SealState::Unknown {
                self.go_unknown(stale_at, "no data".to_owned(), ruleset, out);
            }
        }
        self.accumulate(end);
        self.closed_until = end;
        let acc = self.hours.remove(&hour).unwrap_or_default();
        // Anything older (there should be none) is dropped with this hour.
        self.hours.retain(|&h, _| h >= end);
        let [sealed, charging, breach, unknown, suspect, maintenance] = acc.state_ms;
        let known = sealed + charging + breach;
        let length = end - hour;
        let judgeable = length - maintenance;
        let [held, lost, interrupted, suspect_cycles, reconciled] = acc.outcomes;
        let valid = judgeable > 0 && known * 4 >= judgeable * 3;
        self.seed_hour(
            hour,
            BinHourSeed {
                state_ms: acc.state_ms,
                outcomes: acc.outcomes,
                breaches: acc.breaches,
                valid,
                interrupted: acc.interrupted,
            },
        );
        out.push(Output::BinHour {
            bin: self.rules.key.clone(),
            hour_ms: hour,
            sealed_ms: sealed,
            charging_ms: charging,
            breach_ms: breach,
            unknown_ms: unknown,
            suspect_ms: suspect,
            maintenance_ms: maintenance,
            cycles: acc.outcomes.iter().sum(),
            cycles_held: held,
            cycles_lost: lost,
            cycles_interrupted: interrupted,
            cycles_suspect: suspect_cycles,
            cycles_reconciled: reconciled,
            breaches: acc.breaches,
            cycle_compliance: (held + lost > 0).then(|| f64::from(held) / f64::from(held + lost)),
            time_compliance: (known > 0).then(|| (sealed + charging) as f64 / known as f64),
            completeness: if judgeable > 0 {
                known as f64 / judgeable as f64
            } else {
                1.0
            },
            valid,
            flags: acc.flags,
            interrupted: acc.interrupted,
            ruleset: ruleset.to_owned(),
        });
    }

    /// Adds a closed hour to its day and month (again: it replaces itself).
    pub(super) fn seed_hour(&mut self, hour: i64, seed: BinHourSeed) {
        self.days
            .entry(super::time::day_start(self.tz, hour))
            .or_default()
            .insert(hour, seed);
        self.months
            .entry(super::time::month_start(self.tz, hour))
            .or_default()
            .insert(hour, seed);
        let (_, end) = self.calendar.of(hour);
        if end > self.closed_until {
            self.closed_until = end;
            self.hours.retain(|&h, _| h >= end);
            if self.since.is_some_and(|s| s < end) {
                self.since = Some(end);
            }
        }
    }

    /// Forgets the day or month starting at `start`: the record already has its summary.
    pub(super) fn forget_period(&mut self, month: bool, start: i64) {
        if month {
            self.months.remove(&start);
        } else {
            self.days.remove(&start);
        }
    }

    /// Summarises the days starting before `day` and the months starting before `month` that
    /// were never summarised (the agent stopped before their end).
    pub(super) fn close_due(&mut self, day: i64, month: i64, ruleset: &str, out: &mut Vec<Output>) {
        let days: Vec<i64> = self.days.range(..day).map(|(&d, _)| d).collect();
        for d in days {
            let end = super::time::next_day(self.tz, d);
            self.close_period(false, d, end, ruleset, out);
        }
        let months: Vec<i64> = self.months.range(..month).map(|(&m, _)| m).collect();
        for m in months {
            let end = super::time::next_month(self.tz, m);
            self.close_period(true, m, end, ruleset, out);
        }
    }

    /// Emits the summary of the day or month starting at `start` and ending at `end`, summed
    /// from the hours closed in it (`month`: a month, else a day).
    pub(super) fn close_period(
        &mut self,
        month: bool,
        start: i64,
        end: i64,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        let map = if month {
            &mut self.months
        } else {
            &mut self.days
        };
        let Some(hours) = map.remove(&start) else {
            return;
        };
        map.retain(|&s, _| s >= end);
        let acc = PeriodAcc::of(&hours, &mut self.calendar);
        let [sealed, charging, breach, unknown, suspect, maintenance] = acc.state_ms;
        let [held, lost, interrupted, suspect_cycles, reconciled] = acc.outcomes;
        let known = sealed + charging + breach;
        // Of the whole period, not only of the hours with data: a day with one hour of data
        // is not complete.
        let judgeable = (end - start) - maintenance;
        let summary = BinSummary {
            bin: self.rules.key.clone(),
            start_ms: start,
            end_ms: end,
            sealed_ms: sealed,
            charging_ms: charging,
            breach_ms: breach,
            unknown_ms: unknown,
            suspect_ms: suspect,
            maintenance_ms: maintenance,
            no_data_ms: (end - start - acc.covered_ms).max(0),
            cycles: acc.outcomes.iter().sum(),
            cycles_held: held,
            cycles_lost: lost,
            cycles_interrupted: interrupted,
            cycles_suspect: suspect_cycles,
            cycles_reconciled: reconciled,
            breaches: acc.breaches,
            valid_hours: acc.valid_hours,
            completeness: (judgeable > 0).then(|| known as f64 / judgeable as f64),
            cycle_compliance: (held + lost > 0).then(|| f64::from(held) / f64::from(held + lost)),
            interrupted: acc.interrupted,
            ruleset: ruleset.to_owned(),
        };
        out.push(if month {
            Output::BinMonth(summary)
        } else {
            Output::BinDay(summary)
        });
    }

    /// A clock jump at `from`: the bin is unknown from there, the hour holding it is marked
    /// interrupted.
    pub(super) fn interrupt(&mut self, from: i64, ruleset: &str, out: &mut Vec<Output>) {
        if self.state != SealState::Unknown {
            self.go_unknown(from, "clock jump".to_owned(), ruleset, out);
        }
        self.hour(from).interrupted = true;
        self.level_since = None;
        self.lid_moving_since = None;
    }

    /// After a clock jump whose hour was closed: the timeline begins again at `to`, unknown
    /// until judged; the part of its hour before `to` was not observed.
    pub(super) fn restart_at(&mut self, to: i64) {
        let hour = self.calendar.start_of(to);
        self.hours.clear();
        self.since = Some(to);
        self.closed_until = hour;
        self.last_judged = None;
        let acc = self.hours.entry(hour).or_default();
        acc.interrupted = true;
        acc.state_ms[SealState::Unknown.index()] += to - hour;
    }
}
