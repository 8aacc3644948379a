//! The per-analyzer judge: NMHC minute values, valid hours, hourly averages and exceedances.
//!
//! A minute is flagged N when at least 75 % of its samples are N (HJ 212-2017), else D; its
//! average, minimum and maximum are over the N samples. An hour is valid with at least 45 valid
//! minutes (HJ 76 annex B; also 75 % of 60); its average is the mean of the valid minutes'
//! averages and is compared with the hourly limit. Every N sample is compared with the
//! single-value limit; an exceedance lasts until a valid sample is back under the limit or the
//! values stop being valid.

use chrono_tz::Tz;

use super::time::{minute_start, HourCalendar, MINUTE_MS};
use std::collections::BTreeMap;

use super::{FlagCounts, Hours, Output, PollutantValue, RuleSettings};
use crate::poll::reading::{Flag, Reading};

/// Valid minutes a valid hour needs.
pub(super) const VALID_MINUTES_PER_HOUR: u32 = 45;

#[derive(Debug, Clone)]
struct MinuteAcc {
    start: i64,
    samples: u32,
    valid: u32,
    sum: f64,
    min: f64,
    max: f64,
    /// Other pollutants of the same minute, by HJ 212 code.
    others: BTreeMap<&'static str, Stat>,
}

impl MinuteAcc {
    fn new(start: i64) -> Self {
        MinuteAcc {
            start,
            samples: 0,
            valid: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            others: BTreeMap::new(),
        }
    }
}

/// Samples of one other pollutant in a minute.
#[derive(Debug, Clone, Default)]
struct Stat {
    samples: u32,
    valid: u32,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Stat {
    fn add(&mut self, r: &Reading) {
        self.samples += 1;
        if let (Some(v), Flag::N) = (r.value(), r.flag) {
            if v.is_finite() {
                self.valid += 1;
                self.sum += v;
                self.min = Some(self.min.map_or(v, |m| m.min(v)));
                self.max = Some(self.max.map_or(v, |m| m.max(v)));
            }
        }
    }

    /// The minute value: N with at least 75 % valid samples.
    fn value(&self, code: &str) -> PollutantValue {
        let n = self.valid > 0 && self.valid * 4 >= self.samples * 3;
        PollutantValue {
            code: code.to_owned(),
            avg: (self.valid > 0).then(|| self.sum / f64::from(self.valid)),
            min: self.min,
            max: self.max,
            flag: if n { Flag::N } else { Flag::D },
            valid: self.valid,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct HourAcc {
    /// Valid minutes' (avg, min, max).
    minutes: Vec<(f64, f64, f64)>,
    flags: FlagCounts,
    single_exceedances: u32,
    peak: Option<f64>,
    /// Other pollutants: their valid minutes' (avg, min, max), by code.
    others: BTreeMap<&'static str, Vec<(f64, f64, f64)>>,
}

#[derive(Debug)]
pub(super) struct AnalyzerTracker {
    key: String,
    settings: RuleSettings,
    calendar: HourCalendar,
    minute: Option<MinuteAcc>,
    hours: Hours<HourAcc>,
    exceedance: Option<(i64, f64)>,
    closed_until: i64,
}

impl AnalyzerTracker {
    pub(super) fn new(key: String, settings: RuleSettings, tz: Tz) -> Self {
        AnalyzerTracker {
            key,
            settings,
            calendar: HourCalendar::new(tz),
            minute: None,
            hours: Hours::new(),
            exceedance: None,
            closed_until: i64::MIN,
        }
    }

    pub(super) fn sample(&mut self, r: &Reading, ruleset: &str, out: &mut Vec<Output>) {
        if r.at_ms < self.closed_until {
            return; // Later than its hour's closing: already summarised.
        }
        self.roll(r.at_ms, ruleset, out).samples += 1;
        let hour = self.calendar.start_of(r.at_ms);
        self.hours.entry(hour).or_default().flags.add(r.flag);
        let value = match (r.value(), r.flag) {
            (Some(v), Flag::N) if v.is_finite() => v,
            _ => {
                if let Some((started, peak)) = self.exceedance.take() {
                    self.push_end(r.at_ms, started, peak, true, ruleset, out);
                }
                return;
            }
        };
        if let Some(acc) = self.minute.as_mut() {
            acc.valid += 1;
            acc.sum += value;
            acc.min = acc.min.min(value);
            acc.max = acc.max.max(value);
        }
        let hour_acc = self.hours.entry(hour).or_default();
        hour_acc.peak = Some(hour_acc.peak.map_or(value, |p: f64| p.max(value)));
        let limit = self.settings.nmhc_single_limit;
        if value > limit {
            match &mut self.exceedance {
                Some((_, peak)) => *peak = peak.max(value),
                None => {
                    self.exceedance = Some((r.at_ms, value));
                    hour_acc.single_exceedances += 1;
                    out.push(Output::NmhcExceedanceStarted {
                        analyzer: self.key.clone(),
                        at_ms: r.at_ms,
                        value,
                        limit,
                        ruleset: ruleset.to_owned(),
                    });
                }
            }
        } else if let Some((started, peak)) = self.exceedance.take() {
            self.push_end(r.at_ms, started, peak, false, ruleset, out);
        }
    }

    /// The accumulator of the minute holding `at`, closing the previous minute first.
    fn roll(&mut self, at: i64, ruleset: &str, out: &mut Vec<Output>) -> &mut MinuteAcc {
        let m = minute_start(at);
        if self.minute.as_ref().is_some_and(|acc| m > acc.start) {
            self.close_minute(ruleset, out);
        }
        self.minute.get_or_insert_with(|| MinuteAcc::new(m))
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
        if r.at_ms < self.closed_until {
            return;
        }
        self.roll(r.at_ms, ruleset, out)
            .others
            .entry(code)
            .or_default()
            .add(r);
    }

    fn push_end(
        &self,
        at: i64,
        started: i64,
        peak: f64,
        invalid: bool,
        ruleset: &str,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::NmhcExceedanceEnded {
            analyzer: self.key.clone(),
            at_ms: at,
            started_ms: started,
            duration_ms: at - started,
            peak,
            limit: self.settings.nmhc_single_limit,
            ended_by_invalid_data: invalid,
            ruleset: ruleset.to_owned(),
        });
    }

    fn close_minute(&mut self, ruleset: &str, out: &mut Vec<Output>) {
        let Some(acc) = self.minute.take() else {
            return;
        };
        let flag = if acc.valid > 0 && acc.valid * 4 >= acc.samples * 3 {
            Flag::N
        } else {
            Flag::D
        };
        let stats = (acc.valid > 0).then(|| (acc.sum / f64::from(acc.valid), acc.min, acc.max));
        let others: Vec<PollutantValue> = acc
            .others
            .iter()
            .map(|(code, stat)| stat.value(code))
            .collect();
        let hour_acc = self
            .hours
            .entry(self.calendar.start_of(acc.start))
            .or_default();
        for (code, v) in acc.others.keys().zip(&others) {
            let minutes = hour_acc.others.entry(code).or_default();
            if let (Flag::N, Some(avg), Some(min), Some(max)) = (v.flag, v.avg, v.min, v.max) {
                minutes.push((avg, min, max));
            }
        }
        if let (Flag::N, Some(s)) = (flag, stats) {
            self.hours
                .entry(self.calendar.start_of(acc.start))
                .or_default()
                .minutes
                .push(s);
        }
        out.push(Output::NmhcMinute {
            analyzer: self.key.clone(),
            minute_ms: acc.start,
            avg: stats.map(|s| s.0),
            min: stats.map(|s| s.1),
            max: stats.map(|s| s.2),
            flag,
            samples: acc.samples,
            others,
            ruleset: ruleset.to_owned(),
        });
    }

    /// Closes the current minute if it ended before `t`.
    pub(super) fn close_minutes_before(&mut self, t: i64, ruleset: &str, out: &mut Vec<Output>) {
        if self
            .minute
            .as_ref()
            .is_some_and(|m| m.start + MINUTE_MS <= t)
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
        let valid = valid_minutes >= VALID_MINUTES_PER_HOUR;
        let avg =
            valid.then(|| acc.minutes.iter().map(|m| m.0).sum::<f64>() / f64::from(valid_minutes));
        let min = acc.minutes.iter().map(|m| m.1).reduce(f64::min);
        let max = acc.minutes.iter().map(|m| m.2).reduce(f64::max);
        let limit = self.settings.nmhc_hourly_limit;
        out.push(Output::NmhcHour {
            analyzer: self.key.clone(),
            hour_ms: hour,
            valid_minutes,
            avg,
            min,
            max,
            flag: if valid { Flag::N } else { Flag::D },
            hourly_limit: limit,
            exceeded: avg.is_some_and(|a| a > limit),
            single_exceedances: acc.single_exceedances,
            peak: acc.peak,
            flags: acc.flags,
            others: acc
                .others
                .iter()
                .map(|(code, minutes)| {
                    let n = minutes.len() as u32;
                    let ok = n >= VALID_MINUTES_PER_HOUR;
                    PollutantValue {
                        code: (*code).to_owned(),
                        avg: ok.then(|| minutes.iter().map(|m| m.0).sum::<f64>() / f64::from(n)),
                        min: minutes.iter().map(|m| m.1).reduce(f64::min),
                        max: minutes.iter().map(|m| m.2).reduce(f64::max),
                        flag: if ok { Flag::N } else { Flag::D },
                        valid: n,
                    }
                })
                .collect(),
            ruleset: ruleset.to_owned(),
        });
    }
}
