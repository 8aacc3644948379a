//! The per-analyzer judge: NMHC minute, hour, day and month values and exceedances.
//!
//! - **Flags.** A sample's flag is set before it gets here ([`AnalyzerTracker::flag_for`]): the
//!   analyzer's own state from its status register (C calibration, M maintenance, F stopped,
//!   D fault; an unreadable or stale status is D), else a window a person opened (C, M, F), else
//!   the flag of the reading (N, T at or above the range, D, B). Only N and T samples are valid:
//!   C, M and F values are stored and uploaded with their flag and kept out of everything here.
//! - **Saturation.** A T sample counts as the top of the measuring range — at least that much —
//!   in averages and against the single-value limit, so an exceedance does not end because the
//!   analyzer saturated; every value that includes one is flagged T.
//! - **Minute** (HJ 212-2017): valid when its valid samples are at least 75 % of the samples the
//!   poll interval implies for a minute (not of those received); flag N, or T with saturated
//!   samples; otherwise the flag of what was not valid ([`FlagCounts::dominant_invalid`]).
//! - **Hour** (HJ 76 annex B): valid with at least 45 valid minutes; its average is the mean of
//!   the valid minutes' averages, compared with the analyzer's hourly limit. **Day**: valid with
//!   at least 20 valid hours. **Month**: at least 25 valid days, 23 in February.
//! - **Single values**: every valid sample (or, as configured, every valid minute value) is
//!   compared with the analyzer's single-value limit; an exceedance lasts until a valid value is
//!   back under it, or a value that is not valid comes (named by its flag).

use std::collections::BTreeMap;

use chrono_tz::Tz;

use super::time::{day_start, is_february, minute_start, month_start, HourCalendar, MINUTE_MS};
use super::windows::Windows;
use super::{AnalyzerRules, FlagCounts, Hours, Output, PollutantValue, SingleLimitOn};
use crate::model::{Flag, InstrumentState, Reading, StatusMap};

/// Valid minutes a valid hour needs (HJ 76 annex B; also 75 % of 60).
pub(super) const VALID_MINUTES_PER_HOUR: u32 = 45;
/// Valid hours a valid day needs (HJ 76 annex B).
pub(super) const VALID_HOURS_PER_DAY: u32 = 20;
/// Valid days a valid month needs (HJ 76 annex B).
pub(super) const VALID_DAYS_PER_MONTH: u32 = 25;
/// … in February.
pub(super) const VALID_DAYS_PER_FEBRUARY: u32 = 23;

fn valid_flag(flag: Flag) -> bool {
    matches!(flag, Flag::N | Flag::T)
}

/// Samples of one other pollutant in a minute.
#[derive(Debug, Clone, Default)]
struct Stat {
    valid: u32,
    saturated: u32,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    flags: FlagCounts,
}

impl Stat {
    fn add(&mut self, r: &Reading) {
        self.flags.add(r.flag);
        if let (Some(v), true) = (r.value(), valid_flag(r.flag)) {
            if v.is_finite() {
                self.valid += 1;
                self.saturated += u32::from(r.flag == Flag::T);
                self.sum += v;
                self.min = Some(self.min.map_or(v, |m| m.min(v)));
                self.max = Some(self.max.map_or(v, |m| m.max(v)));
            }
        }
    }

    fn value(&self, code: &str, expected: u32) -> PollutantValue {
        let ok = self.valid > 0 && self.valid * 4 >= expected * 3;
        PollutantValue {
            code: code.to_owned(),
            avg: (self.valid > 0).then(|| self.sum / f64::from(self.valid)),
            min: self.min,
            max: self.max,
            flag: match (ok, self.saturated > 0) {
                (true, true) => Flag::T,
                (true, false) => Flag::N,
                (false, _) => self.flags.dominant_invalid(),
            },
            valid: self.valid,
        }
    }
}

#[derive(Debug, Clone)]
struct MinuteAcc {
    start: i64,
    samples: u32,
    valid: u32,
    saturated: u32,
    sum: f64,
    min: f64,
    max: f64,
    flags: FlagCounts,
    interrupted: bool,
    /// Other pollutants of the same minute, by HJ 212 code.
    others: BTreeMap<&'static str, Stat>,
}

impl MinuteAcc {
    fn new(start: i64) -> Self {
        MinuteAcc {
            start,
            samples: 0,
            valid: 0,
            saturated: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            flags: FlagCounts::default(),
            interrupted: false,
            others: BTreeMap::new(),
        }
    }
}

/// A valid period's (avg, min, max, saturated, exceeded).
type Valid = (f64, f64, f64, bool, bool);

#[derive(Debug, Default, Clone)]
struct HourAcc {
    /// Valid minutes.
    minutes: Vec<Valid>,
    flags: FlagCounts,
    minute_flags: FlagCounts,
    single_exceedances: u32,
    peak: Option<f64>,
    interrupted: bool,
    /// Other pollutants: their valid minutes' (avg, min, max, saturated), by code.
    others: BTreeMap<&'static str, Vec<(f64, f64, f64, bool)>>,
}

/// What a closed NMHC hour adds to its day and month. Days and months keep their hours by
/// start time, so an hour counted again (taken from the record at a restart) replaces itself
/// instead of adding up twice.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct NmhcHourSeed {
    /// (avg, min, max, saturated) of a valid hour.
    pub valid: Option<(f64, f64, f64, bool)>,
    /// The hourly average was over the hourly limit.
    pub exceeded: bool,
    /// Single-value exceedances that started in it.
    pub single_exceedances: u32,
    /// A clock jump or a restart cut it.
    pub interrupted: bool,
}

/// A month: its hours, and its closed days' valid values.
#[derive(Debug, Default, Clone)]
struct MonthAcc {
    hours: Hours<NmhcHourSeed>,
    days: Hours<Option<(f64, f64, f64, bool)>>,
}

fn valid_of(v: (f64, f64, f64, bool)) -> Valid {
    (v.0, v.1, v.2, v.3, false)
}

/// (exceeded hours, single exceedances, interrupted) of a run of hours.
fn hour_totals<'a>(hours: impl Iterator<Item = &'a NmhcHourSeed>) -> (u32, u32, bool) {
    hours.fold((0, 0, false), |(e, s, i), h| {
        (
            e + u32::from(h.exceeded),
            s + h.single_exceedances,
            i || h.interrupted,
        )
    })
}

fn mean(values: &[Valid]) -> Option<(f64, f64, f64, bool)> {
    if values.is_empty() {
        return None;
    }
    let avg = values.iter().map(|v| v.0).sum::<f64>() / values.len() as f64;
    let min = values.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
    let max = values.iter().map(|v| v.2).fold(f64::NEG_INFINITY, f64::max);
    Some((avg, min, max, values.iter().any(|v| v.3)))
}

#[derive(Debug)]
pub(super) struct AnalyzerTracker {
    rules: AnalyzerRules,
    stale_after_ms: i64,
    calendar: HourCalendar,
    tz: Tz,
    minute: Option<MinuteAcc>,
    hours: Hours<HourAcc>,
    days: Hours<Hours<NmhcHourSeed>>,
    months: Hours<MonthAcc>,
    exceedance: Option<(i64, f64)>,
    closed_until: i64,
    /// Whether the profile maps a status register, and its latest state (`None`: unreadable)
    /// with its time and value.
    has_status: bool,
    status: Option<(Option<InstrumentState>, i64)>,
    reported_state: Option<InstrumentState>,
    /// The window open on this analyzer.
    pub(super) window: Windows,
    /// Samples later than their minute's closing (not judged).
    pub(super) late_samples: u64,
}

impl AnalyzerTracker {
    pub(super) fn new(rules: AnalyzerRules, stale_after_ms: i64, tz: Tz, has_status: bool) -> Self {
        AnalyzerTracker {
            rules,
            stale_after_ms,
            calendar: HourCalendar::new(tz),
            tz,
            minute: None,
            hours: Hours::new(),
            days: Hours::new(),
            months: Hours::new(),
            exceedance: None,
            closed_until: i64::MIN,
            has_status,
            status: None,
            reported_state: None,
            window: Windows::default(),
            late_samples: 0,
        }
    }

    pub(super) fn key(&self) -> &str {
        &self.rules.key
    }

    /// Takes a reading of the status register, mapped by `map`; reports a change of state.
    pub(super) fn status(
        &mut self,
        r: &Reading,
        map: &StatusMap,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        let (state, value) = match (r.value(), r.flag) {
            (Some(v), Flag::N | Flag::T) if v.is_finite() && v >= 0.0 => {
                (Some(map.state_of(v as u64)), v as u64)
            }
            _ => (None, 0),
        };
        self.status = Some((state, r.at_ms));
        if let Some(state) = state {
            let before = self.reported_state.unwrap_or(InstrumentState::Normal);
            if before != state {
                out.push(Output::AnalyzerState {
                    analyzer: self.rules.key.clone(),
                    at_ms: r.at_ms,
                    from: before,
                    to: state,
                    status: value,
                    ruleset: ruleset.to_owned(),
                });
            }
            self.reported_state = Some(state);
        }
    }

    /// The flag a value of this analyzer taken at `at` with flag `base` is stored, uploaded and
    /// judged with.
    pub(super) fn flag_for(&self, base: Flag, at: i64) -> Flag {
        if !valid_flag(base) {
            return base;
        }
        if self.has_status {
            match self.status {
                Some((Some(state), t)) if at.saturating_sub(t) <= self.stale_after_ms => {
                    if state != InstrumentState::Normal {
                        return state.flag();
                    }
                }
                // Unreadable or stale: what the instrument was doing is not known.
                _ => return Flag::D,
            }
        }
        match self.window.covering(at) {
            Some((kind, _)) => kind.flag(),
            None => base,
        }
    }

    /// The accumulator of the minute holding `at`, closing the previous minute first; `None`
    /// for a sample of a minute already closed (late: not judged, counted).
    fn roll(&mut self, at: i64, ruleset: &str, out: &mut Vec<Output>) -> Option<&mut MinuteAcc> {
        if at < self.closed_until {
            self.late_samples += 1;
            return None;
        }
        let m = minute_start(at);
        match self.minute.as_ref().map(|acc| acc.start) {
            Some(start) if m > start => self.close_minute(ruleset, out),
            Some(start) if m < start => {
                self.late_samples += 1;
                return None;
            }
            _ => {}
        }
        Some(self.minute.get_or_insert_with(|| MinuteAcc::new(m)))
    }

    pub(super) fn sample(&mut self, r: &Reading, ruleset: &str, out: &mut Vec<Output>) {
        let range_max = self.rules.range_max;
        let Some(acc) = self.roll(r.at_ms, ruleset, out) else {
            return;
        };
        acc.samples += 1;
        acc.flags.add(r.flag);
        let value = match (r.value(), r.flag) {
            (Some(v), Flag::N) if v.is_finite() => Some(v),
            // Saturated: at least the top of the range.
            (Some(v), Flag::T) => Some(range_max.unwrap_or(v)),
            _ => None,
        };
        if let Some(v) = value {
            acc.valid += 1;
            acc.saturated += u32::from(r.flag == Flag::T);
            acc.sum += v;
            acc.min = acc.min.min(v);
            acc.max = acc.max.max(v);
        }
        let hour = self.calendar.start_of(r.at_ms);
        let hour_acc = self.hours.entry(hour).or_default();
        hour_acc.flags.add(r.flag);
        match value {
            Some(v) => {
                hour_acc.peak = Some(hour_acc.peak.map_or(v, |p: f64| p.max(v)));
                if self.rules.single_limit_on == SingleLimitOn::Sample {
                    self.judge_single(r.at_ms, v, r.flag == Flag::T, ruleset, out);
                }
            }
            None => self.end_exceedance(r.at_ms, Some(r.flag), ruleset, out),
        }
    }

    /// Compares a valid value with the single-value limit.
    fn judge_single(
        &mut self,
        at: i64,
        value: f64,
        saturated: bool,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        let limit = self.rules.single_limit;
        if saturated && value <= limit {
            // At least the top of the range, which is not above the limit: whether the value is
            // over it cannot be told, so a running exceedance goes on and none starts.
            if let Some((_, peak)) = &mut self.exceedance {
                *peak = peak.max(value);
            }
            return;
        }
        if value > limit {
            match &mut self.exceedance {
                Some((_, peak)) => *peak = peak.max(value),
                None => {
                    self.exceedance = Some((at, value));
                    self.hours
                        .entry(self.calendar.start_of(at))
                        .or_default()
                        .single_exceedances += 1;
                    out.push(Output::NmhcExceedanceStarted {
                        analyzer: self.rules.key.clone(),
                        at_ms: at,
                        value,
                        limit,
                        saturated,
                        ruleset: ruleset.to_owned(),
                    });
                }
            }
        } else {
            self.end_exceedance(at, None, ruleset, out);
        }
    }

    /// Ends a running exceedance: back under the limit (`flag` None) or by a value that is not
    /// valid (its flag).
    fn end_exceedance(
        &mut self,
        at: i64,
        flag: Option<Flag>,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        let Some((started, peak)) = self.exceedance.take() else {
            return;
        };
        out.push(Output::NmhcExceedanceEnded {
            analyzer: self.rules.key.clone(),
            at_ms: at.max(started),
            started_ms: started,
            duration_ms: at.max(started) - started,
            peak,
            limit: self.rules.single_limit,
            ended_by_invalid_data: flag.is_some(),
            ended_by_flag: flag,
            ruleset: ruleset.to_owned(),
        });
    }

    /// A sample of another pollutant (methane, THC, benzene): aggregated like NMHC, carried in
    /// the same minute and hour outputs; no limits apply.
    pub(super) fn sample_other(
        &mut self,
        code: &'static str,
        r: &Reading,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        if let Some(acc) = self.roll(r.at_ms, ruleset, out) {
            acc.others.entry(code).or_default().add(r);
        }
    }

    fn close_minute(&mut self, ruleset: &str, out: &mut Vec<Output>) {
        let Some(acc) = self.minute.take() else {
            return;
        };
        let expected = self.rules.samples_per_minute.max(1);
        let valid = acc.valid > 0 && acc.valid * 4 >= expected * 3;
        let flag = match (valid, acc.saturated > 0) {
            (true, true) => Flag::T,
            (true, false) => Flag::N,
            (false, _) => acc.flags.dominant_invalid(),
        };
        let stats = (acc.valid > 0).then(|| (acc.sum / f64::from(acc.valid), acc.min, acc.max));
        let others: Vec<PollutantValue> = acc
            .others
            .iter()
            .map(|(code, stat)| stat.value(code, expected))
            .collect();
        let hour_acc = self
            .hours
            .entry(self.calendar.start_of(acc.start))
            .or_default();
        hour_acc.minute_flags.add(flag);
        hour_acc.interrupted |= acc.interrupted;
        for (code, v) in acc.others.keys().zip(&others) {
            let minutes = hour_acc.others.entry(code).or_default();
            if let (true, Some(avg), Some(min), Some(max)) =
                (valid_flag(v.flag), v.avg, v.min, v.max)
            {
                minutes.push((avg, min, max, v.flag == Flag::T));
            }
        }
        if let (true, Some((avg, min, max))) = (valid, stats) {
            hour_acc
                .minutes
                .push((avg, min, max, acc.saturated > 0, false));
        }
        if let (SingleLimitOn::Minute, true, Some((avg, _, _))) =
            (self.rules.single_limit_on, valid, stats)
        {
            self.judge_single(acc.start, avg, acc.saturated > 0, ruleset, out);
        } else if self.rules.single_limit_on == SingleLimitOn::Minute && !valid {
            self.end_exceedance(acc.start, Some(flag), ruleset, out);
        }
        out.push(Output::NmhcMinute {
            analyzer: self.rules.key.clone(),
            minute_ms: acc.start,
            avg: stats.map(|s| s.0),
            min: stats.map(|s| s.1),
            max: stats.map(|s| s.2),
            flag,
            samples: acc.samples,
            expected,
            saturated: acc.saturated,
            flags: acc.flags,
            interrupted: acc.interrupted,
            others,
            ruleset: ruleset.to_owned(),
        });
    }

    /// Closes the current minute if it ended before `t`.
    pub(super) fn close_minutes_before(&mut self, t: i64, ruleset: &str, out: &mut Vec<Output>) {
        if self
            .minute
            .as_ref()
            .is_some_and(|m| m.start.saturating_add(MINUTE_MS) <= t)
        {
            self.close_minute(ruleset, out);
        }
    }

    pub(super) fn close_hour(&mut self, hour: i64, end: i64, ruleset: &str, out: &mut Vec<Output>) {
        self.close_minutes_before(end, ruleset, out);
        self.closed_until = end;
        let acc = self.hours.remove(&hour).unwrap_or_default();
        self.hours.retain(|&h, _| h >= end);
        let valid_minutes = acc.minutes.len() as u32;
        let saturated_minutes = acc.minutes.iter().filter(|m| m.3).count() as u32;
        let valid = valid_minutes >= VALID_MINUTES_PER_HOUR;
        let stats = mean(&acc.minutes);
        let avg = stats.filter(|_| valid).map(|s| s.0);
        let limit = self.rules.hourly_limit;
        let exceeded = avg.is_some_and(|a| a > limit);
        let flag = match (valid, saturated_minutes > 0) {
            (true, true) => Flag::T,
            (true, false) => Flag::N,
            (false, _) => acc.minute_flags.dominant_invalid(),
        };
        self.seed_hour(
            hour,
            NmhcHourSeed {
                valid: stats.filter(|_| valid),
                exceeded,
                single_exceedances: acc.single_exceedances,
                interrupted: acc.interrupted,
            },
        );
        out.push(Output::NmhcHour {
            analyzer: self.rules.key.clone(),
            hour_ms: hour,
            valid_minutes,
            saturated_minutes,
            avg,
            min: stats.map(|s| s.1),
            max: stats.map(|s| s.2),
            flag,
            hourly_limit: limit,
            exceeded,
            single_exceedances: acc.single_exceedances,
            peak: acc.peak,
            flags: acc.flags,
            interrupted: acc.interrupted,
            others: acc
                .others
                .iter()
                .map(|(code, minutes)| {
                    let n = minutes.len() as u32;
                    let ok = n >= VALID_MINUTES_PER_HOUR;
                    let sat = minutes.iter().any(|m| m.3);
                    PollutantValue {
                        code: (*code).to_owned(),
                        avg: ok.then(|| minutes.iter().map(|m| m.0).sum::<f64>() / f64::from(n)),
                        min: minutes.iter().map(|m| m.1).reduce(f64::min),
                        max: minutes.iter().map(|m| m.2).reduce(f64::max),
                        flag: match (ok, sat) {
                            (true, true) => Flag::T,
                            (true, false) => Flag::N,
                            (false, _) => Flag::D,
                        },
                        valid: n,
                    }
                })
                .collect(),
            ruleset: ruleset.to_owned(),
        });
    }

    /// Adds a closed hour to its day and month (again: it replaces itself).
    pub(super) fn seed_hour(&mut self, hour: i64, seed: NmhcHourSeed) {
        self.days
            .entry(day_start(self.tz, hour))
            .or_default()
            .insert(hour, seed);
        self.months
            .entry(month_start(self.tz, hour))
            .or_default()
            .hours
            .insert(hour, seed);
        self.closed_until = self.closed_until.max(self.calendar.of(hour).1);
    }

    /// Adds a closed day's value (`None`: not valid) to its month.
    pub(super) fn seed_day(&mut self, day: i64, valid: Option<(f64, f64, f64, bool)>) {
        self.months
            .entry(month_start(self.tz, day))
            .or_default()
            .days
            .insert(day, valid);
        self.days.remove(&day);
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
            self.close_day(d, ruleset, out);
        }
        let months: Vec<i64> = self.months.range(..month).map(|(&m, _)| m).collect();
        for m in months {
            self.close_month(m, ruleset, out);
        }
    }

    /// Takes samples again from `at` on (a restart: what came before is in the record).
    pub(super) fn resume_at(&mut self, at: i64) {
        self.closed_until = self.closed_until.max(at);
    }

    /// Emits the day starting at `day` (its hours all closed).
    pub(super) fn close_day(&mut self, day: i64, ruleset: &str, out: &mut Vec<Output>) {
        let hours = self.days.remove(&day).unwrap_or_default();
        self.days.retain(|&d, _| d > day);
        let valid_values: Vec<Valid> = hours
            .values()
            .filter_map(|h| h.valid)
            .map(valid_of)
            .collect();
        let valid_hours = valid_values.len() as u32;
        let valid = valid_hours >= VALID_HOURS_PER_DAY;
        let stats = mean(&valid_values);
        let (hours_exceeded, single_exceedances, interrupted) = hour_totals(hours.values());
        self.seed_day(day, stats.filter(|_| valid));
        out.push(Output::NmhcDay {
            analyzer: self.rules.key.clone(),
            day_ms: day,
            valid_hours,
            avg: stats.filter(|_| valid).map(|s| s.0),
            min: stats.map(|s| s.1),
            max: stats.map(|s| s.2),
            flag: match (valid, stats.is_some_and(|s| s.3)) {
                (true, true) => Flag::T,
                (true, false) => Flag::N,
                (false, _) => Flag::D,
            },
            hours_exceeded,
            single_exceedances,
            hourly_limit: self.rules.hourly_limit,
            interrupted,
            ruleset: ruleset.to_owned(),
        });
    }

    /// Emits the month starting at `month` (its days all closed).
    pub(super) fn close_month(&mut self, month: i64, ruleset: &str, out: &mut Vec<Output>) {
        let acc = self.months.remove(&month).unwrap_or_default();
        self.months.retain(|&m, _| m > month);
        let needed = if is_february(self.tz, month) {
            VALID_DAYS_PER_FEBRUARY
        } else {
            VALID_DAYS_PER_MONTH
        };
        let valid_values: Vec<Valid> = acc.days.values().flatten().copied().map(valid_of).collect();
        let valid_days = valid_values.len() as u32;
        let valid = valid_days >= needed;
        let stats = mean(&valid_values);
        let (hours_exceeded, single_exceedances, _) = hour_totals(acc.hours.values());
        out.push(Output::NmhcMonth {
            analyzer: self.rules.key.clone(),
            month_ms: month,
            valid_days,
            days_needed: needed,
            avg: stats.filter(|_| valid).map(|s| s.0),
            flag: match (valid, stats.is_some_and(|s| s.3)) {
                (true, true) => Flag::T,
                (true, false) => Flag::N,
                (false, _) => Flag::D,
            },
            hours_exceeded,
            single_exceedances,
            ruleset: ruleset.to_owned(),
        });
    }

    /// A clock jump at `from`: the open minute ends there as interrupted, an exceedance ends,
    /// the hour is marked interrupted.
    pub(super) fn interrupt(&mut self, from: i64, ruleset: &str, out: &mut Vec<Output>) {
        if let Some(m) = &mut self.minute {
            m.interrupted = true;
        }
        self.close_minute(ruleset, out);
        self.end_exceedance(from, Some(Flag::D), ruleset, out);
        self.hours
            .entry(self.calendar.start_of(from))
            .or_default()
            .interrupted = true;
    }

    /// After a clock jump whose hour was closed: samples from `to`'s hour on are taken again.
    pub(super) fn restart_at(&mut self, to: i64) {
        let hour = self.calendar.start_of(to);
        self.closed_until = hour;
        self.hours.clear();
        self.hours.entry(hour).or_default().interrupted = true;
    }
}
