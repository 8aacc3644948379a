//! What the engine concludes: [`Output`], one variant per kind of conclusion, each sealed as an
//! evidence record of the same kind (`kind` in the JSON).

use serde::Serialize;

use super::{InstrumentState, SealState, Signature, WindowKind};
use crate::model::Flag;

/// Count of values by HJ 212 flag, in the order N F M S D C T B.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlagCounts(pub [u32; 8]);

impl FlagCounts {
    pub(super) fn add(&mut self, flag: Flag) {
        self.0[usize::from(flag.code())] += 1;
    }

    /// Count of one flag.
    pub fn get(&self, flag: Flag) -> u32 {
        self.0[usize::from(flag.code())]
    }

    /// The flag of a period that is not valid: the most frequent flag among its values that
    /// were neither N nor T (ties go to C, M, F, S, D, B in that order), or D when there were
    /// none (too few values).
    pub fn dominant_invalid(&self) -> Flag {
        [Flag::C, Flag::M, Flag::F, Flag::S, Flag::D, Flag::B]
            .into_iter()
            .filter(|f| self.get(*f) > 0)
            .fold(None, |best: Option<Flag>, f| match best {
                Some(b) if self.get(b) >= self.get(f) => Some(b),
                _ => Some(f),
            })
            .unwrap_or(Flag::D)
    }
}

/// How a charging cycle came out; the categories are exclusive and add up to the cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleOutcome {
    /// Observed whole, no breach, plausible data.
    Held,
    /// A breach during the cycle.
    Lost,
    /// Part of it unobserved (unknown data, a maintenance window, a clock jump): judged
    /// neither way.
    Interrupted,
    /// Observed, but its data is implausible (the level did not move, or froze): never
    /// counted as held.
    Suspect,
    /// Recovered from the seal node's event latch after a communication gap.
    Reconciled,
}

/// A minute or hour value of a pollutant other than NMHC, alongside the NMHC value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollutantValue {
    /// HJ 212 pollutant code.
    pub code: String,
    /// Mean of the valid samples (minute) or valid minutes (valid hour only), mg/m³.
    pub avg: Option<f64>,
    /// Smallest valid value.
    pub min: Option<f64>,
    /// Largest valid value.
    pub max: Option<f64>,
    /// N (or T) by the same rules as NMHC (75 % of the expected samples; 45 valid minutes),
    /// else the flag of what was not valid.
    pub flag: Flag,
    /// Valid samples (minute) or valid minutes (hour).
    pub valid: u32,
}

/// A bin's day or month: time in each state, cycles by outcome, breaches, completeness. The
/// cycles by outcome add up to `cycles`; the times add up to the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinSummary {
    /// `furnace/bin`.
    pub bin: String,
    /// Period start (local midnight; first of the month), ms.
    pub start_ms: i64,
    /// Period end, ms.
    pub end_ms: i64,
    /// Time sealed, ms.
    pub sealed_ms: i64,
    /// Time charging with the seal held, ms.
    pub charging_ms: i64,
    /// Time in breach, ms.
    pub breach_ms: i64,
    /// Time unknown (faults, no data), ms.
    pub unknown_ms: i64,
    /// Time suspect (implausible data), ms.
    pub suspect_ms: i64,
    /// Time in maintenance, calibration or shutdown windows, ms.
    pub maintenance_ms: i64,
    /// Time no hour of this period was summarised (the agent was not running), ms.
    pub no_data_ms: i64,
    /// Charging cycles completed.
    pub cycles: u32,
    /// Held.
    pub cycles_held: u32,
    /// Lost (a breach).
    pub cycles_lost: u32,
    /// Interrupted.
    pub cycles_interrupted: u32,
    /// Suspect.
    pub cycles_suspect: u32,
    /// Reconciled from the event latch.
    pub cycles_reconciled: u32,
    /// Breaches that began.
    pub breaches: u32,
    /// Valid hours (≥ 45 minutes of known data outside windows).
    pub valid_hours: u32,
    /// Known time / (period − window time − no-data time counted as unknown), see
    /// `completeness` of the hours.
    pub completeness: Option<f64>,
    /// Held cycles / (held + lost) cycles.
    pub cycle_compliance: Option<f64>,
    /// An hour of the period ended early (a clock jump).
    pub interrupted: bool,
    /// Rule-set version.
    pub ruleset: String,
}

/// Everything the engine concludes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// A bin changed state.
    SealState {
        /// `furnace/bin`.
        bin: String,
        /// When, ms.
        at_ms: i64,
        /// Old state.
        from: SealState,
        /// New state.
        to: SealState,
        /// Why, in words (for unknown and suspect: which sensor and which fault).
        reason: String,
        /// Rule-set version.
        ruleset: String,
    },
    /// A breach began (at the time its signature first appeared).
    BreachStarted {
        /// `furnace/bin`.
        bin: String,
        /// When, ms.
        at_ms: i64,
        /// Which signature.
        signature: Signature,
        /// Rule-set version.
        ruleset: String,
    },
    /// A breach ended.
    BreachEnded {
        /// `furnace/bin`.
        bin: String,
        /// When, ms.
        at_ms: i64,
        /// When it began, ms.
        started_ms: i64,
        /// How long, ms.
        duration_ms: i64,
        /// Which signature began it.
        signature: Signature,
        /// Whether it ended because the data became unknown (not because the seal was restored).
        ended_by_unknown: bool,
        /// Rule-set version.
        ruleset: String,
    },
    /// A charging cycle completed (everything closed again).
    ChargingCycle {
        /// `furnace/bin`.
        bin: String,
        /// First opening, ms.
        started_ms: i64,
        /// Everything closed again, ms.
        ended_ms: i64,
        /// Lid first open, ms.
        lid_opened_ms: Option<i64>,
        /// Lid last closed, ms.
        lid_closed_ms: Option<i64>,
        /// Gate first open, ms.
        gate_opened_ms: Option<i64>,
        /// Gate last closed, ms.
        gate_closed_ms: Option<i64>,
        /// Material level when the gate opened, mm.
        level_at_gate_open_mm: Option<f64>,
        /// The level's fall while the gate was open, mm (None without a gate opening).
        level_change_mm: Option<f64>,
        /// Held: observed whole, no breach, plausible.
        seal_held: bool,
        /// Part of it was unobserved (unknown data, a window, a clock jump).
        interrupted: bool,
        /// Reconstructed from the seal node's event latch rather than observed.
        reconciled: bool,
        /// Its data is implausible, and why.
        suspect: Option<String>,
        /// The category it counts in.
        outcome: CycleOutcome,
        /// Rule-set version.
        ruleset: String,
    },
    /// An analyzer's status register says it changed state (calibration, maintenance …).
    AnalyzerState {
        /// `furnace/analyzer`.
        analyzer: String,
        /// When, ms.
        at_ms: i64,
        /// Old state.
        from: InstrumentState,
        /// New state.
        to: InstrumentState,
        /// The register value.
        status: u64,
        /// Rule-set version.
        ruleset: String,
    },
    /// A minute value of an analyzer.
    NmhcMinute {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Minute start, ms.
        minute_ms: i64,
        /// Mean of the valid samples (N, and T counted at the top of the range), mg/m³.
        avg: Option<f64>,
        /// Smallest valid sample.
        min: Option<f64>,
        /// Largest valid sample.
        max: Option<f64>,
        /// N when the valid samples are at least 75 % of those expected; T if some of them were
        /// saturated (the values are then at least those given); otherwise the flag of what was
        /// not valid (C, M, F, D, B).
        flag: Flag,
        /// Samples taken.
        samples: u32,
        /// Samples the poll interval implies for a minute.
        expected: u32,
        /// Samples at or above the top of the measuring range (T).
        saturated: u32,
        /// Samples by flag.
        flags: FlagCounts,
        /// The minute ended early (a clock jump).
        interrupted: bool,
        /// The analyzer's other pollutants over the same minute.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        others: Vec<PollutantValue>,
        /// Rule-set version.
        ruleset: String,
    },
    /// A value went over the single-value limit.
    NmhcExceedanceStarted {
        /// `furnace/analyzer`.
        analyzer: String,
        /// When, ms.
        at_ms: i64,
        /// The value, mg/m³ (for a saturated sample, the top of the range: at least this).
        value: f64,
        /// The limit, mg/m³.
        limit: f64,
        /// The value is a saturated sample (T).
        saturated: bool,
        /// Rule-set version.
        ruleset: String,
    },
    /// Values are back under the single-value limit (or no longer valid).
    NmhcExceedanceEnded {
        /// `furnace/analyzer`.
        analyzer: String,
        /// When, ms.
        at_ms: i64,
        /// When it began, ms.
        started_ms: i64,
        /// How long, ms.
        duration_ms: i64,
        /// Highest value seen, mg/m³.
        peak: f64,
        /// The limit, mg/m³.
        limit: f64,
        /// Whether it ended because values stopped being valid.
        ended_by_invalid_data: bool,
        /// The flag of the value that ended it, when it was not valid (C, M, F, D, B).
        ended_by_flag: Option<Flag>,
        /// Rule-set version.
        ruleset: String,
    },
    /// One local hour of an analyzer.
    NmhcHour {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Hour start, ms.
        hour_ms: i64,
        /// Valid minutes (N or T).
        valid_minutes: u32,
        /// Of which included saturated samples (T).
        saturated_minutes: u32,
        /// Mean of the valid minutes (only for a valid hour), mg/m³.
        avg: Option<f64>,
        /// Smallest valid minute minimum.
        min: Option<f64>,
        /// Largest valid minute maximum.
        max: Option<f64>,
        /// N for a valid hour (≥ 45 valid minutes), T if it includes saturated minutes, else
        /// the flag of what was not valid.
        flag: Flag,
        /// The hourly limit, mg/m³.
        hourly_limit: f64,
        /// Valid hour with its average above the limit.
        exceeded: bool,
        /// Single-value exceedances that began this hour.
        single_exceedances: u32,
        /// Highest valid sample this hour.
        peak: Option<f64>,
        /// Samples by flag.
        flags: FlagCounts,
        /// The hour ended early (a clock jump).
        interrupted: bool,
        /// The analyzer's other pollutants over the same hour.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        others: Vec<PollutantValue>,
        /// Rule-set version.
        ruleset: String,
    },
    /// One local day of an analyzer (HJ 76 annex B: valid with ≥ 20 valid hours).
    NmhcDay {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Local midnight, ms.
        day_ms: i64,
        /// Valid hours.
        valid_hours: u32,
        /// Mean of the valid hours' averages (valid days only), mg/m³.
        avg: Option<f64>,
        /// Smallest valid hour minimum.
        min: Option<f64>,
        /// Largest valid hour maximum.
        max: Option<f64>,
        /// N for a valid day (T if it includes saturated hours), else D.
        flag: Flag,
        /// Valid hours above the hourly limit.
        hours_exceeded: u32,
        /// Single-value exceedances that began this day.
        single_exceedances: u32,
        /// The hourly limit, mg/m³.
        hourly_limit: f64,
        /// An hour of the day ended early (a clock jump).
        interrupted: bool,
        /// Rule-set version.
        ruleset: String,
    },
    /// One local month of an analyzer (HJ 76 annex B: valid with ≥ 25 valid days, 23 in
    /// February).
    NmhcMonth {
        /// `furnace/analyzer`.
        analyzer: String,
        /// First instant of the month, ms.
        month_ms: i64,
        /// Valid days.
        valid_days: u32,
        /// Valid days a valid month needs.
        days_needed: u32,
        /// Mean of the valid days' averages (valid months only), mg/m³.
        avg: Option<f64>,
        /// N for a valid month (T if it includes saturated days), else D.
        flag: Flag,
        /// Valid hours above the hourly limit.
        hours_exceeded: u32,
        /// Single-value exceedances.
        single_exceedances: u32,
        /// Rule-set version.
        ruleset: String,
    },
    /// One local hour of a bin.
    BinHour {
        /// `furnace/bin`.
        bin: String,
        /// Hour start, ms.
        hour_ms: i64,
        /// Time sealed, ms.
        sealed_ms: i64,
        /// Time charging with the seal held, ms.
        charging_ms: i64,
        /// Time in breach, ms.
        breach_ms: i64,
        /// Time unknown, ms.
        unknown_ms: i64,
        /// Time suspect, ms.
        suspect_ms: i64,
        /// Time in maintenance, calibration or shutdown windows, ms.
        maintenance_ms: i64,
        /// Charging cycles completed this hour.
        cycles: u32,
        /// Of which held the seal throughout.
        cycles_held: u32,
        /// Of which had a breach.
        cycles_lost: u32,
        /// Of which were interrupted (judged neither way).
        cycles_interrupted: u32,
        /// Of which were suspect.
        cycles_suspect: u32,
        /// Of which were reconciled from the event latch.
        cycles_reconciled: u32,
        /// Breaches that began this hour.
        breaches: u32,
        /// Held cycles / (held + lost) cycles (None without such cycles).
        cycle_compliance: Option<f64>,
        /// (Sealed + charging) / (sealed + charging + breach) (None without such time).
        time_compliance: Option<f64>,
        /// Known time (sealed, charging, breach) / the hour outside windows (1 when the whole
        /// hour was a window).
        completeness: f64,
        /// At least 75 % of the hour outside windows known (the 45-minute rule).
        valid: bool,
        /// Input readings by flag.
        flags: FlagCounts,
        /// The hour ended early (a clock jump): the rest of it is counted unknown.
        interrupted: bool,
        /// Rule-set version.
        ruleset: String,
    },
    /// One local day of a bin.
    BinDay(BinSummary),
    /// One local month of a bin.
    BinMonth(BinSummary),
    /// The readings' time stepped further than the tolerance: a clock jump (or polling that
    /// stopped). The open minute and hour ended there; skipped time has no outputs.
    ClockJump {
        /// The time before the step, ms.
        from_ms: i64,
        /// The time after it, ms.
        to_ms: i64,
        /// `to_ms − from_ms` (negative: set back).
        size_ms: i64,
        /// `reading_times` (replay) or `monotonic_clock` (live: the wall clock moved against
        /// the monotonic clock).
        detected_by: String,
        /// After a step back: readings are not judged again until their time reaches this,
        /// the end of the last hour already summarised (no hour, day or month is summarised
        /// twice).
        resumes_ms: Option<i64>,
        /// Rule-set version.
        ruleset: String,
    },
    /// Readings with an impossible time (before 2000 or from 2100 on: a clock never set) came
    /// in; they are stored but not judged until the time is plausible again.
    ClockImplausible {
        /// The reading's time, ms.
        at_ms: i64,
        /// Rule-set version.
        ruleset: String,
    },
    /// A person opened a calibration, maintenance or shutdown window.
    WindowStarted {
        /// Bin or analyzer it covers.
        target: String,
        /// Kind.
        window: WindowKind,
        /// From when, ms.
        at_ms: i64,
        /// Why.
        reason: String,
        /// Who.
        by: String,
        /// Rule-set version.
        ruleset: String,
    },
    /// A person closed a window.
    WindowEnded {
        /// Bin or analyzer it covered.
        target: String,
        /// Kind.
        window: WindowKind,
        /// When, ms.
        at_ms: i64,
        /// When it was opened, ms.
        started_ms: i64,
        /// Why it was opened.
        reason: String,
        /// Who opened it.
        opened_by: String,
        /// Who closed it.
        by: String,
        /// Rule-set version.
        ruleset: String,
    },
    /// A window has been open longer than its kind's maximum: it still exempts its data, and
    /// this is on the record.
    WindowOverdue {
        /// Bin or analyzer.
        target: String,
        /// Kind.
        window: WindowKind,
        /// When this was noticed, ms.
        at_ms: i64,
        /// When it was opened, ms.
        started_ms: i64,
        /// The maximum, ms.
        max_ms: i64,
        /// Who opened it.
        opened_by: String,
        /// Rule-set version.
        ruleset: String,
    },
}

impl Output {
    /// When it happened (start of the period for minute, hour, day and month values), ms.
    pub fn at_ms(&self) -> i64 {
        match self {
            Output::SealState { at_ms, .. }
            | Output::BreachStarted { at_ms, .. }
            | Output::BreachEnded { at_ms, .. }
            | Output::AnalyzerState { at_ms, .. }
            | Output::NmhcExceedanceStarted { at_ms, .. }
            | Output::NmhcExceedanceEnded { at_ms, .. }
            | Output::ClockImplausible { at_ms, .. }
            | Output::WindowStarted { at_ms, .. }
            | Output::WindowEnded { at_ms, .. }
            | Output::WindowOverdue { at_ms, .. } => *at_ms,
            Output::ChargingCycle { ended_ms, .. } => *ended_ms,
            Output::NmhcMinute { minute_ms, .. } => *minute_ms,
            Output::NmhcHour { hour_ms, .. } | Output::BinHour { hour_ms, .. } => *hour_ms,
            Output::NmhcDay { day_ms, .. } => *day_ms,
            Output::NmhcMonth { month_ms, .. } => *month_ms,
            Output::BinDay(s) | Output::BinMonth(s) => s.start_ms,
            Output::ClockJump { to_ms, .. } => *to_ms,
        }
    }

    /// The bin or analyzer it is about (empty for site-wide ones).
    pub fn subject(&self) -> &str {
        match self {
            Output::SealState { bin, .. }
            | Output::BreachStarted { bin, .. }
            | Output::BreachEnded { bin, .. }
            | Output::ChargingCycle { bin, .. }
            | Output::BinHour { bin, .. } => bin,
            Output::BinDay(s) | Output::BinMonth(s) => &s.bin,
            Output::NmhcMinute { analyzer, .. }
            | Output::AnalyzerState { analyzer, .. }
            | Output::NmhcExceedanceStarted { analyzer, .. }
            | Output::NmhcExceedanceEnded { analyzer, .. }
            | Output::NmhcHour { analyzer, .. }
            | Output::NmhcDay { analyzer, .. }
            | Output::NmhcMonth { analyzer, .. } => analyzer,
            Output::WindowStarted { target, .. }
            | Output::WindowEnded { target, .. }
            | Output::WindowOverdue { target, .. } => target,
            Output::ClockJump { .. } | Output::ClockImplausible { .. } => "",
        }
    }

    /// Its kind, as in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Output::SealState { .. } => "seal_state",
            Output::BreachStarted { .. } => "breach_started",
            Output::BreachEnded { .. } => "breach_ended",
            Output::ChargingCycle { .. } => "charging_cycle",
            Output::AnalyzerState { .. } => "analyzer_state",
            Output::NmhcMinute { .. } => "nmhc_minute",
            Output::NmhcExceedanceStarted { .. } => "nmhc_exceedance_started",
            Output::NmhcExceedanceEnded { .. } => "nmhc_exceedance_ended",
            Output::NmhcHour { .. } => "nmhc_hour",
            Output::NmhcDay { .. } => "nmhc_day",
            Output::NmhcMonth { .. } => "nmhc_month",
            Output::BinHour { .. } => "bin_hour",
            Output::BinDay(_) => "bin_day",
            Output::BinMonth(_) => "bin_month",
            Output::ClockJump { .. } => "clock_jump",
            Output::ClockImplausible { .. } => "clock_implausible",
            Output::WindowStarted { .. } => "window_started",
            Output::WindowEnded { .. } => "window_ended",
            Output::WindowOverdue { .. } => "window_overdue",
        }
    }

    /// One JSON line (field order fixed by the type).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"kind\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_of_an_invalid_period_is_what_made_it_invalid() {
        let mut f = FlagCounts::default();
        assert_eq!(f.dominant_invalid(), Flag::D, "too few samples");
        f.add(Flag::N);
        f.add(Flag::C);
        f.add(Flag::C);
        f.add(Flag::B);
        assert_eq!(f.dominant_invalid(), Flag::C);
        f.add(Flag::B);
        assert_eq!(f.dominant_invalid(), Flag::C, "a tie goes to C");
        f.add(Flag::B);
        assert_eq!(f.dominant_invalid(), Flag::B);
    }

    #[test]
    fn day_and_month_summaries_carry_their_kind() {
        let s = BinSummary {
            bin: "F1/B1".into(),
            start_ms: 1,
            end_ms: 2,
            sealed_ms: 0,
            charging_ms: 0,
            breach_ms: 0,
            unknown_ms: 0,
            suspect_ms: 0,
            maintenance_ms: 0,
            no_data_ms: 0,
            cycles: 0,
            cycles_held: 0,
            cycles_lost: 0,
            cycles_interrupted: 0,
            cycles_suspect: 0,
            cycles_reconciled: 0,
            breaches: 0,
            valid_hours: 0,
            completeness: None,
            cycle_compliance: None,
            interrupted: false,
            ruleset: "r".into(),
        };
        let json = Output::BinDay(s.clone()).to_json();
        assert!(
            json.starts_with("{\"kind\":\"bin_day\",\"bin\":\"F1/B1\""),
            "{json}"
        );
        assert_eq!(Output::BinMonth(s).kind(), "bin_month");
    }
}
