//! The compliance rules: readings with timestamps in; seal states, breaches, charging cycles,
//! NMHC minute and hour values, exceedances and hourly summaries out.
//!
//! A pure engine: no clock, no I/O, no tokio. Time is only ever the timestamps of the readings.
//! The same engine runs live (the agent's pipeline), in `sealwatch replay` and in tests, and gives
//! identical output for identical input, however the input is chunked.
//!
//! Input unit: a **poll group** — the readings of one device taken at one time (the bus tasks
//! deliver exactly that; replay regroups a reading stream the same way). A group is applied as a
//! whole and then judged, so a bin is never judged on half of a poll.
//!
//! Invariants (tested with proptest):
//! - per bin and hour, the time in the four states sums to the hour;
//! - breaches of one bin never overlap; ratios stay within [0, 1];
//! - sensor faults, exceptions, stale or missing data give `unknown`, never `sealed` or `breach`.
//!
//! Every output carries the rule-set version: a hash of every threshold in force.

mod output;
pub mod resume;
mod seal;
pub mod time;
mod voc;
mod windows;

use std::collections::BTreeMap;
use std::fmt;

use chrono_tz::Tz;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::model::InstrumentState;
use crate::model::PointTable;
use crate::model::{FaultIndicator, StatusMap};
use crate::model::{Flag, Reading};
pub use output::{BinSummary, CycleOutcome, FlagCounts, Output, PollutantValue};
use seal::BinTracker;
use voc::AnalyzerTracker;
pub use windows::{Window, WindowCommand, WindowError, WindowKind};

/// Thresholds and timings of the rules, site-wide (per-bin and per-analyzer ones live in
/// [`BinRules`] and [`AnalyzerRules`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// NMHC 1-hour average limit, mg/m³ (GB 37822-2019 A.1: 10; key regions 6): the default of
    /// every analyzer.
    pub nmhc_hourly_limit: f64,
    /// NMHC single-value limit, mg/m³ (GB 37822-2019 A.1: 30; key regions 20): the default of
    /// every analyzer.
    pub nmhc_single_limit: f64,
    /// How long a breach signature must persist before it is a breach, ms.
    pub breach_grace_ms: i64,
    /// Level above the seal threshold needed to end a level breach, mm.
    pub level_hysteresis_mm: f64,
    /// Inputs older than this make a bin or analyzer unknown, ms.
    pub stale_after_ms: i64,
    /// Longest both lid switches may be off (lid travelling) before it is a switch fault, ms.
    pub lid_travel_ms: i64,
    /// Least fall of the level while the gate is open in a cycle; less is a suspect cycle, mm
    /// (0: no check).
    pub level_min_change_mm: f64,
    /// Longest the level may read exactly the same value before it is suspect, ms (0: no
    /// check).
    pub level_frozen_ms: i64,
    /// Largest step of the readings' times taken as time passing; more is a clock jump, ms.
    pub clock_jump_tolerance_ms: i64,
    /// Longest a window of each kind ([`WindowKind::index`]) may stay open before it is
    /// reported, ms.
    pub window_max_ms: [i64; 3],
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            nmhc_hourly_limit: 10.0,
            nmhc_single_limit: 30.0,
            breach_grace_ms: 3_000,
            level_hysteresis_mm: 50.0,
            stale_after_ms: 10_000,
            lid_travel_ms: 10_000,
            level_min_change_mm: 50.0,
            level_frozen_ms: 3_600_000,
            clock_jump_tolerance_ms: 60_000,
            window_max_ms: [8 * 3_600_000, 72 * 3_600_000, 744 * 3_600_000],
        }
    }
}

/// Where an analyzer measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// 厂区内: in the plant, 1 m outside an opening (GB 37822-2019 A.1, the limits' home).
    InPlant,
    /// 炉顶: at the furnace top, a process measurement.
    FurnaceTop,
    /// 企业边界: at the plant boundary.
    Boundary,
}

impl PointKind {
    /// The name in config and outputs.
    pub fn name(self) -> &'static str {
        match self {
            PointKind::InPlant => "in_plant",
            PointKind::FurnaceTop => "furnace_top",
            PointKind::Boundary => "boundary",
        }
    }

    /// The kind a config names.
    pub fn parse(text: &str) -> Option<PointKind> {
        [
            PointKind::InPlant,
            PointKind::FurnaceTop,
            PointKind::Boundary,
        ]
        .into_iter()
        .find(|k| k.name() == text)
    }
}

/// What an analyzer's single-value limit is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SingleLimitOn {
    /// Every valid sample.
    Sample,
    /// Every valid minute value.
    Minute,
}

/// Per-bin thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct BinRules {
    /// `furnace/bin`.
    pub key: String,
    /// Its seal node (device name).
    pub device: String,
    /// Lowest level that keeps the material seal, mm.
    pub seal_level_min_mm: f64,
    /// Longest a lid or gate may be open, ms.
    pub max_open_ms: i64,
}

/// Per-analyzer limits and what is known of its measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzerRules {
    /// `furnace/analyzer`.
    pub key: String,
    /// Its device name.
    pub device: String,
    /// 1-hour average limit, mg/m³.
    pub hourly_limit: f64,
    /// Single-value limit, mg/m³.
    pub single_limit: f64,
    /// What the single-value limit applies to.
    pub single_limit_on: SingleLimitOn,
    /// Where it measures.
    pub point_kind: PointKind,
    /// Top of the NMHC measuring range (a saturated reading counts as at least this), mg/m³.
    pub range_max: Option<f64>,
    /// NMHC samples a minute holds at the poll interval (the 75 % rule's base).
    pub samples_per_minute: u32,
}

impl AnalyzerRules {
    /// An analyzer with the site's default limits, sampled every second, without a range.
    pub fn with_defaults(key: &str, settings: &RuleSettings) -> AnalyzerRules {
        AnalyzerRules {
            key: key.to_owned(),
            device: String::new(),
            hourly_limit: settings.nmhc_hourly_limit,
            single_limit: settings.nmhc_single_limit,
            single_limit_on: SingleLimitOn::Sample,
            point_kind: PointKind::InPlant,
            range_max: None,
            samples_per_minute: 60,
        }
    }
}

/// The inputs of a bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// Lid-closed limit switch.
    LidClosed = 0,
    /// Lid-open limit switch.
    LidOpen = 1,
    /// Charging gate open switch.
    GateOpen = 2,
    /// Material level, mm.
    LevelMm = 3,
}

/// Profile point names of the pollutants an analyzer may measure besides NMHC, with their
/// HJ 212-2017 codes.
pub const OTHER_POLLUTANTS: [(&str, &str); 3] = [
    ("methane", "a05002"),
    ("thc", "a24087"),
    ("benzene", "a25002"),
];

/// Fields of a seal node's event latch (firmware register map), by slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchField {
    /// Sequence number of the newest latched event.
    NewestSeq,
    /// Node uptime, ms (the latch's time base).
    UptimeMs,
    /// Sequence number in slot `n` (0 = empty).
    Seq(usize),
    /// Kind in slot `n`: new seal state in the low byte, cause in the high byte.
    Kind(usize),
    /// Node uptime at the event in slot `n`, ms.
    AtMs(usize),
}

impl LatchField {
    /// The field a seal-node point name carries, if any.
    pub fn of_point(name: &str) -> Option<LatchField> {
        match name {
            "event_seq" => return Some(LatchField::NewestSeq),
            "uptime_ms" => return Some(LatchField::UptimeMs),
            _ => {}
        }
        let rest = name.strip_prefix("event_")?;
        let (slot, field) = rest.split_once('_')?;
        let slot: usize = slot.parse().ok()?;
        if slot >= seal::LATCH_SLOTS {
            return None;
        }
        match field {
            "seq" => Some(LatchField::Seq(slot)),
            "kind" => Some(LatchField::Kind(slot)),
            "at_ms" => Some(LatchField::AtMs(slot)),
            _ => None,
        }
    }
}

/// What a point means to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An input of bin `bin`.
    Bin {
        /// Bin index.
        bin: usize,
        /// Which input.
        signal: Signal,
    },
    /// A field of the seal node's event latch of bin `bin`.
    Latch {
        /// Bin index.
        bin: usize,
        /// Which field.
        field: LatchField,
    },
    /// Another pollutant an analyzer measures (methane, total hydrocarbons, benzene).
    Pollutant {
        /// Analyzer index.
        analyzer: usize,
        /// HJ 212 pollutant code, e.g. `a05002`.
        code: &'static str,
    },
    /// The NMHC value of analyzer `analyzer`.
    Nmhc {
        /// Analyzer index.
        analyzer: usize,
    },
    /// A fault indicator of bin `bin`'s seal node ([`RulesConfig::indicators`]).
    BinFault {
        /// Bin index.
        bin: usize,
        /// Index into [`RulesConfig::indicators`].
        indicator: usize,
    },
    /// The status register of analyzer `analyzer` ([`RulesConfig::status_maps`]).
    AnalyzerStatus {
        /// Analyzer index.
        analyzer: usize,
        /// Index into [`RulesConfig::status_maps`].
        map: usize,
    },
}

/// Seal state of a bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SealState {
    /// Lid and gate closed.
    Sealed,
    /// Lid or gate open, seal held.
    Charging,
    /// A breach signature persisted past the grace period.
    Breach,
    /// Inputs faulty, stale or missing: neither sealed nor breach is known.
    Unknown,
    /// Inputs read, but implausible (a frozen level): never counted as sealed or held.
    Suspect,
    /// A calibration, maintenance or shutdown window a person opened: kept out of compliance.
    Maintenance,
}

impl SealState {
    /// All states, in accumulator order.
    pub const ALL: [SealState; 6] = [
        SealState::Sealed,
        SealState::Charging,
        SealState::Breach,
        SealState::Unknown,
        SealState::Suspect,
        SealState::Maintenance,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SealState::Sealed => "sealed",
            SealState::Charging => "charging",
            SealState::Breach => "breach",
            SealState::Unknown => "unknown",
            SealState::Suspect => "suspect",
            SealState::Maintenance => "maintenance",
        }
    }

    /// The state of a name.
    pub fn parse(text: &str) -> Option<SealState> {
        SealState::ALL.into_iter().find(|s| s.name() == text)
    }
}

impl fmt::Display for SealState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which breach signature (DOMAIN.md) was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    /// Material level below the seal level while the gate is open.
    LevelBelowSeal,
    /// Lid and gate open at the same time (interlock violation).
    LidAndGateOpen,
    /// Lid or gate open longer than `max_open_s`.
    OpenTooLong,
}

/// Everything the engine needs to know about a site.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    /// Local time zone.
    pub tz: Tz,
    /// Site-wide settings.
    pub settings: RuleSettings,
    /// Bins, in config order.
    pub bins: Vec<BinRules>,
    /// Analyzers, in config order.
    pub analyzers: Vec<AnalyzerRules>,
    /// Role of each point, by point id.
    pub roles: Vec<Option<Role>>,
    /// Fault indicators of seal nodes: (point name, what it says).
    pub indicators: Vec<(String, FaultIndicator)>,
    /// Status registers of analyzers: (point name, mapping).
    pub status_maps: Vec<(String, StatusMap)>,
}

impl RulesConfig {
    /// A site with these bins and analyzers and no point roles yet (tests build on it).
    pub fn empty(tz: Tz, settings: RuleSettings) -> RulesConfig {
        RulesConfig {
            tz,
            settings,
            bins: Vec::new(),
            analyzers: Vec::new(),
            roles: Vec::new(),
            indicators: Vec::new(),
            status_maps: Vec::new(),
        }
    }

    /// Every value the rules judge with, in a fixed order: what the rule-set version hashes and
    /// what the `rule_set` evidence record writes out, so the record shows the values in force,
    /// not only their hash.
    pub fn values_in_force(&self) -> serde_json::Value {
        let s = &self.settings;
        serde_json::json!({
            "time_zone": self.tz.name(),
            "nmhc_hourly_limit_mg_m3": s.nmhc_hourly_limit,
            "nmhc_single_limit_mg_m3": s.nmhc_single_limit,
            "breach_grace_ms": s.breach_grace_ms,
            "level_hysteresis_mm": s.level_hysteresis_mm,
            "stale_after_ms": s.stale_after_ms,
            "lid_travel_ms": s.lid_travel_ms,
            "level_min_change_mm": s.level_min_change_mm,
            "level_frozen_ms": s.level_frozen_ms,
            "clock_jump_tolerance_ms": s.clock_jump_tolerance_ms,
            "window_max_ms": {
                "calibration": s.window_max_ms[0],
                "maintenance": s.window_max_ms[1],
                "shutdown": s.window_max_ms[2],
            },
            "minute_valid_fraction": "0.75 of the samples expected at the poll interval (HJ 212-2017)",
            "hour_valid_minutes": voc::VALID_MINUTES_PER_HOUR,
            "day_valid_hours": voc::VALID_HOURS_PER_DAY,
            "month_valid_days": voc::VALID_DAYS_PER_MONTH,
            "february_valid_days": voc::VALID_DAYS_PER_FEBRUARY,
            "bins": self.bins.iter().map(|b| serde_json::json!({
                "bin": b.key,
                "device": b.device,
                "seal_level_min_mm": b.seal_level_min_mm,
                "max_open_ms": b.max_open_ms,
            })).collect::<Vec<_>>(),
            "analyzers": self.analyzers.iter().map(|a| serde_json::json!({
                "analyzer": a.key,
                "device": a.device,
                "hourly_limit_mg_m3": a.hourly_limit,
                "single_limit_mg_m3": a.single_limit,
                "single_limit_applies_to": a.single_limit_on,
                "point_kind": a.point_kind,
                "range_max_mg_m3": a.range_max,
                "samples_per_minute": a.samples_per_minute,
            })).collect::<Vec<_>>(),
            "fault_indicators": self.indicators.iter().map(|(name, f)| serde_json::json!({
                "point": name,
                "indicator": format!("{f:?}"),
            })).collect::<Vec<_>>(),
            "status_maps": self.status_maps.iter().map(|(name, m)| serde_json::json!({
                "point": name,
                "map": format!("{m:?}"),
            })).collect::<Vec<_>>(),
        })
    }

    /// The rule-set version: the first 16 hex digits of SHA-256 over every value in force
    /// ([`RulesConfig::values_in_force`], canonical JSON).
    pub fn version(&self) -> String {
        let text = format!(
            "sealwatch-rules-v2\n{}",
            crate::model::canonical_json(&self.values_in_force())
        );
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// The rules engine.
#[derive(Debug)]
pub struct Engine {
    tz: Tz,
    ruleset: String,
    settings: RuleSettings,
    roles: Vec<Option<Role>>,
    status_maps: Vec<StatusMap>,
    bins: Vec<BinTracker>,
    analyzers: Vec<AnalyzerTracker>,
    /// Device name of each bin and analyzer, for windows opened on a device.
    bin_devices: Vec<String>,
    analyzer_devices: Vec<String>,
    /// Latest reading time seen, ms.
    watermark: Option<i64>,
    /// Start and end of the oldest hour not yet summarised; of its day and month.
    open_hour: Option<(i64, i64)>,
    open_day: Option<(i64, i64)>,
    open_month: Option<(i64, i64)>,
    /// How long after an hour ends it is closed, ms (late readings of other buses still count).
    lateness_ms: i64,
    /// Bins whose state or its start may have changed since [`Engine::take_bin_changes`].
    changed_bins: ChangedBins,
    /// Inside a run of readings with implausible times.
    implausible: bool,
    /// The last clock jump (from, to): readings still arriving from before it are stragglers.
    jump: Option<(i64, i64)>,
    /// After a step back: readings before this time are not judged (their hours are closed).
    resume_at: Option<i64>,
    /// The stretches of time whose hours are summarised, `[start, end)`, in order.
    summarised: Vec<(i64, i64)>,
    /// Readings not judged because they came after a step back, before `resume_at`.
    skipped_after_jump: u64,
    /// Whether jumps are found in the readings' times (replay); live, the pipeline's watch of
    /// the wall clock against the monotonic clock says ([`Engine::clock_jump`]).
    jumps_from_reading_times: bool,
}

/// A set of bin indexes, in the order they were first added.
#[derive(Debug, Default)]
struct ChangedBins {
    listed: Vec<bool>,
    order: Vec<usize>,
}

impl ChangedBins {
    fn add(&mut self, bin: usize) {
        if bin >= self.listed.len() {
            self.listed.resize(bin + 1, false);
        }
        if !std::mem::replace(&mut self.listed[bin], true) {
            self.order.push(bin);
        }
    }

    fn take(&mut self) -> Vec<usize> {
        for &bin in &self.order {
            self.listed[bin] = false;
        }
        std::mem::take(&mut self.order)
    }
}

impl Engine {
    /// An engine for these rules, with no history.
    pub fn new(config: &RulesConfig) -> Engine {
        let ruleset = config.version();
        let s = &config.settings;
        let bins = config
            .bins
            .iter()
            .enumerate()
            .map(|(bin, b)| {
                let indicators = config
                    .roles
                    .iter()
                    .filter_map(|r| match r {
                        Some(Role::BinFault { bin: b, indicator }) if *b == bin => config
                            .indicators
                            .get(*indicator)
                            .map(|(name, def)| (*indicator, name.clone(), def.clone())),
                        _ => None,
                    })
                    .collect();
                BinTracker::new(b.clone(), s.clone(), config.tz, indicators)
            })
            .collect();
        let analyzers = config
            .analyzers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let has_status = config.roles.iter().any(
                    |r| matches!(r, Some(Role::AnalyzerStatus { analyzer, .. }) if *analyzer == i),
                );
                AnalyzerTracker::new(a.clone(), s.stale_after_ms, config.tz, has_status)
            })
            .collect();
        Engine {
            tz: config.tz,
            roles: config.roles.clone(),
            status_maps: config.status_maps.iter().map(|(_, m)| m.clone()).collect(),
            bins,
            analyzers,
            bin_devices: config.bins.iter().map(|b| b.device.clone()).collect(),
            analyzer_devices: config.analyzers.iter().map(|a| a.device.clone()).collect(),
            ruleset,
            settings: s.clone(),
            watermark: None,
            open_hour: None,
            open_day: None,
            open_month: None,
            lateness_ms: s.breach_grace_ms + s.stale_after_ms + 5_000,
            changed_bins: ChangedBins::default(),
            implausible: false,
            jump: None,
            resume_at: None,
            summarised: Vec::new(),
            skipped_after_jump: 0,
            jumps_from_reading_times: true,
        }
    }

    /// Live use: clock jumps come from [`Engine::clock_jump`] (the wall clock against the
    /// monotonic clock), not from reading times — a poll delivered late, or a bus stalled behind
    /// a busy store, is not a jump.
    pub fn live(mut self) -> Engine {
        self.jumps_from_reading_times = false;
        self
    }

    /// Readings not judged because they came after the clock was set back, before their time
    /// reached the last hour already summarised.
    pub fn skipped_after_jump(&self) -> u64 {
        self.skipped_after_jump
    }

    /// The rule-set version stamped on every output.
    pub fn ruleset(&self) -> &str {
        &self.ruleset
    }

    /// Current state of each bin, with the time it began.
    pub fn bin_states(&self) -> Vec<(SealState, Option<i64>)> {
        self.bins.iter().map(BinTracker::state).collect()
    }

    /// The bins whose state (or its start) may have changed since the last call, by index, with
    /// their current state: what a live view that starts with every bin unknown needs to stay
    /// equal to [`Engine::bin_states`].
    pub fn take_bin_changes(&mut self) -> Vec<(usize, (SealState, Option<i64>))> {
        self.changed_bins
            .take()
            .into_iter()
            .map(|bin| (bin, self.bins[bin].state()))
            .collect()
    }

    fn all_bins_changed(&mut self) {
        for bin in 0..self.bins.len() {
            self.changed_bins.add(bin);
        }
    }

    /// Samples taken later than their minute's closing (not judged), per analyzer.
    pub fn late_samples(&self) -> u64 {
        self.analyzers.iter().map(|a| a.late_samples).sum()
    }

    /// Applies one poll group (readings of one device at one time) and returns what follows,
    /// without keeping the flags it sets (tests; the pipeline uses [`Engine::ingest`]).
    pub fn ingest_poll(&mut self, group: &[Reading]) -> Vec<Output> {
        let mut group = group.to_vec();
        self.ingest(&mut group)
    }

    /// Applies one poll group and returns what follows. Sets each reading's flag to what the
    /// rules make of it — C, M, F from an analyzer's state or a window, D for a sensor its fault
    /// indicator calls faulted — so that what is stored and uploaded carries it.
    pub fn ingest(&mut self, group: &mut [Reading]) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(at) = group.iter().map(|r| r.at_ms).max() else {
            return out;
        };
        if !time::plausible(at) {
            if !self.implausible {
                out.push(Output::ClockImplausible {
                    at_ms: at,
                    ruleset: self.ruleset.clone(),
                });
                self.implausible = true;
            }
            return out;
        }
        self.implausible = false;
        for r in group.iter_mut() {
            // A value that is not a number is no measurement, whatever a file says.
            if r.value().is_some_and(|v| !v.is_finite()) && matches!(r.flag, Flag::N | Flag::T) {
                r.flag = Flag::D;
            }
        }
        if let (true, Some(w)) = (self.jumps_from_reading_times, self.watermark) {
            let tolerance = self.settings.clock_jump_tolerance_ms;
            // Back by more than the lateness, samples would land in closed minutes: a jump too.
            let back = tolerance.min(self.lateness_ms);
            if at > w.saturating_add(tolerance) || at < w.saturating_sub(back) {
                // Readings still in flight from before a jump are not a jump back.
                if let Some((from, to)) = self.jump {
                    if w < to.saturating_add(tolerance) && at.abs_diff(from) <= tolerance as u64 {
                        self.skipped_after_jump += group.len() as u64;
                        return out;
                    }
                }
                self.discontinuity(w, at, "reading_times", &mut out);
            }
        }
        if let Some(resume) = self.resume_at {
            if at < resume {
                self.watermark = Some(self.watermark.map_or(at, |w| w.max(at)));
                self.skipped_after_jump += group.len() as u64;
                return out;
            }
            self.resume_at = None;
        }
        if self.open_hour.is_none() {
            self.open_periods(at);
            let hour = time::hour_start(self.tz, at);
            for b in &mut self.bins {
                b.start(hour);
            }
            self.all_bins_changed();
        }
        // The analyzers' states and the nodes' fault indicators first: they decide the flags of
        // the group's values.
        for r in group.iter() {
            match self.roles.get(r.point.0 as usize).copied().flatten() {
                Some(Role::AnalyzerStatus { analyzer, map }) => {
                    if let Some(map) = self.status_maps.get(map) {
                        self.analyzers[analyzer].status(r, map, &self.ruleset, &mut out);
                    }
                }
                Some(Role::BinFault { bin, indicator }) => {
                    self.bins[bin].apply_indicator(indicator, r)
                }
                _ => {}
            }
        }
        let mut touched_bins: Vec<usize> = Vec::new();
        for r in group.iter_mut() {
            match self.roles.get(r.point.0 as usize).copied().flatten() {
                Some(Role::Bin { bin, signal }) => {
                    let tracker = &mut self.bins[bin];
                    r.flag = bin_flag(tracker, signal, r.flag, r.at_ms);
                    tracker.apply(signal, r);
                    if !touched_bins.contains(&bin) {
                        touched_bins.push(bin);
                    }
                }
                Some(Role::Latch { bin, field }) => self.bins[bin].apply_latch(field, r),
                Some(Role::Pollutant { analyzer, code }) => {
                    let a = &mut self.analyzers[analyzer];
                    r.flag = a.flag_for(r.flag, r.at_ms);
                    a.sample_other(code, r, &self.ruleset, &mut out)
                }
                Some(Role::Nmhc { analyzer }) => {
                    let a = &mut self.analyzers[analyzer];
                    r.flag = a.flag_for(r.flag, r.at_ms);
                    a.sample(r, &self.ruleset, &mut out)
                }
                Some(Role::BinFault { bin, .. }) => {
                    if let Some((kind, _)) = self.bins[bin].window.covering(r.at_ms) {
                        if matches!(r.flag, Flag::N | Flag::T) {
                            r.flag = kind.flag();
                        }
                    }
                }
                Some(Role::AnalyzerStatus { .. }) | None => {}
            }
        }
        for bin in touched_bins {
            self.bins[bin].judge(at, &self.ruleset, &mut out);
            self.changed_bins.add(bin);
        }
        self.advance(at, &mut out);
        out
    }

    /// Opens the hour, day and month holding `at`.
    fn open_periods(&mut self, at: i64) {
        let hour = time::hour_start(self.tz, at);
        self.open_hour = Some((hour, time::next_hour(self.tz, hour)));
        let day = time::day_start(self.tz, hour);
        self.open_day = Some((day, time::next_day(self.tz, day)));
        let month = time::month_start(self.tz, hour);
        self.open_month = Some((month, time::next_month(self.tz, month)));
    }

    /// Moves the engine's notion of "now" (from reading times only): closes minutes, hours,
    /// days and months that can no longer receive readings, marks inputs that went stale, and
    /// reports windows open too long.
    fn advance(&mut self, at: i64, out: &mut Vec<Output>) {
        let watermark = self.watermark.map_or(at, |w| w.max(at));
        self.watermark = Some(watermark);
        for a in &mut self.analyzers {
            a.close_minutes_before(
                watermark.saturating_sub(self.lateness_ms),
                &self.ruleset,
                out,
            );
        }
        while let Some((hour, end)) = self.open_hour {
            if watermark < end.saturating_add(self.lateness_ms) {
                break;
            }
            self.close_hour(hour, end, out);
            self.open_hour = Some((end, time::next_hour(self.tz, end)));
            self.close_periods_before(end, out);
        }
        self.report_overdue_windows(watermark, out);
    }

    /// Notes that the hour `[hour, end)` is summarised.
    fn mark_summarised(&mut self, hour: i64, end: i64) {
        match self.summarised.iter_mut().find(|(_, e)| *e == hour) {
            Some(stretch) => stretch.1 = end,
            None => {
                self.summarised.push((hour, end));
                self.summarised.sort_unstable();
            }
        }
    }

    /// The end of the summarised stretch holding `t`, if `t` is in one.
    fn summarised_end(&self, t: i64) -> Option<i64> {
        self.summarised
            .iter()
            .find(|(s, e)| *s <= t && t < *e)
            .map(|(_, e)| *e)
    }

    fn close_hour(&mut self, hour: i64, end: i64, out: &mut Vec<Output>) {
        self.mark_summarised(hour, end);
        for b in &mut self.bins {
            b.close_hour(hour, end, &self.ruleset, out);
        }
        self.all_bins_changed();
        for a in &mut self.analyzers {
            a.close_hour(hour, end, &self.ruleset, out);
        }
    }

    /// Closes the open day and month if they end at or before `t`, and opens the ones holding
    /// `t`.
    fn close_periods_before(&mut self, t: i64, out: &mut Vec<Output>) {
        if let Some((day, end)) = self.open_day.filter(|(_, end)| *end <= t) {
            for b in &mut self.bins {
                b.close_period(false, day, end, &self.ruleset, out);
            }
            for a in &mut self.analyzers {
                a.close_day(day, &self.ruleset, out);
            }
            let next = time::day_start(self.tz, t);
            self.open_day = Some((next, time::next_day(self.tz, next)));
        }
        if let Some((month, end)) = self.open_month.filter(|(_, end)| *end <= t) {
            for b in &mut self.bins {
                b.close_period(true, month, end, &self.ruleset, out);
            }
            for a in &mut self.analyzers {
                a.close_month(month, &self.ruleset, out);
            }
            let next = time::month_start(self.tz, t);
            self.open_month = Some((next, time::next_month(self.tz, next)));
        }
    }

    /// The readings' time stepped from `from` to `to` further than the tolerance. Everything
    /// open ends at `from` as interrupted.
    /// - Forward within the hour: the gap is unknown time, as any gap. Further forward: the open
    ///   hour (and its day and month, if `to` is outside them) close there and the timeline
    ///   begins again at `to` — no outputs for skipped hours, nothing merged into earlier
    ///   minutes.
    /// - Back: the open hour closes (interrupted), and readings are not judged again until
    ///   their time reaches its end — time already summarised is never summarised twice, and
    ///   no day or month is split.
    fn discontinuity(&mut self, from: i64, to: i64, detected_by: &str, out: &mut Vec<Output>) {
        let mut resumes = self.resume_at;
        let back = to < from && resumes.is_none();
        if back {
            // Back into time already summarised: judged again only after it. Back into time
            // never summarised: a new stretch begins there.
            let open = self.open_hour.filter(|(hour, _)| to >= *hour);
            resumes = open.map(|(_, end)| end).or_else(|| self.summarised_end(to));
        }
        out.push(Output::ClockJump {
            from_ms: from,
            to_ms: to,
            size_ms: to.saturating_sub(from),
            detected_by: detected_by.to_owned(),
            resumes_ms: resumes.filter(|r| to < *r),
            ruleset: self.ruleset.clone(),
        });
        self.jump = Some((from, to));
        self.watermark = Some(to);
        if let Some(r) = self.resume_at {
            // Already behind the record: still behind, or back past it (time from the end of
            // the record to `to` was not observed).
            if to >= r {
                self.resume_at = None;
                self.forward(r, to, out);
            }
            return;
        }
        for b in &mut self.bins {
            b.interrupt(from, &self.ruleset, out);
        }
        for a in &mut self.analyzers {
            a.interrupt(from, &self.ruleset, out);
        }
        self.all_bins_changed();
        if !back {
            self.forward(from, to, out);
            return;
        }
        let Some((hour, end)) = self.open_hour else {
            return;
        };
        self.close_hour(hour, end, out);
        // Into time never summarised, the timeline begins again at `to`; into summarised time,
        // at its end.
        let resume = self.summarised_end(to);
        self.begin_at(resume.unwrap_or(to), out);
        self.resume_at = resume;
    }

    /// The timeline goes on at `to` after nothing was observed since `from` (a step forward).
    fn forward(&mut self, from: i64, to: i64, out: &mut Vec<Output>) {
        let Some((hour, end)) = self.open_hour else {
            return;
        };
        if to >= from && to < end {
            return; // Within the hour: the gap is unknown time, as any gap.
        }
        self.close_hour(hour, end, out);
        self.begin_at(to, out);
    }

    /// The timeline begins again at `to` (the open hour is closed): the day and month end
    /// early too, unless `to` is still inside them.
    fn begin_at(&mut self, to: i64, out: &mut Vec<Output>) {
        let outside = |period: Option<(i64, i64)>| period.is_some_and(|(s, e)| to < s || to >= e);
        if outside(self.open_day) {
            if let Some((day, end)) = self.open_day {
                for b in &mut self.bins {
                    b.close_period(false, day, end, &self.ruleset, out);
                }
                for a in &mut self.analyzers {
                    a.close_day(day, &self.ruleset, out);
                }
            }
        }
        if outside(self.open_month) {
            if let Some((month, end)) = self.open_month {
                for b in &mut self.bins {
                    b.close_period(true, month, end, &self.ruleset, out);
                }
                for a in &mut self.analyzers {
                    a.close_month(month, &self.ruleset, out);
                }
            }
        }
        let keep_day = !outside(self.open_day);
        let keep_month = !outside(self.open_month);
        let (day, month) = (self.open_day, self.open_month);
        self.open_periods(to);
        if keep_day {
            self.open_day = day;
        }
        if keep_month {
            self.open_month = month;
        }
        for b in &mut self.bins {
            b.restart_at(to);
        }
        for a in &mut self.analyzers {
            a.restart_at(to);
        }
    }

    /// Takes the closed hours and days of the periods still open from the record (a restart),
    /// and opens the timeline at the end of the last closed hour. Returns the summaries of days
    /// and months that ended while the agent was stopped and were never emitted.
    pub fn resume(&mut self, seeds: &[resume::Seed]) -> Vec<Output> {
        use resume::Seed;
        let mut out = Vec::new();
        let mut last_end: Option<i64> = None;
        for seed in seeds {
            match seed {
                Seed::BinHour { bin, hour_ms, seed } => {
                    if let Some(b) = self.bins.iter_mut().find(|b| b.key() == bin) {
                        b.seed_hour(*hour_ms, *seed);
                        let end = time::next_hour(self.tz, *hour_ms);
                        last_end = Some(last_end.map_or(end, |e| e.max(end)));
                    }
                }
                Seed::NmhcHour {
                    analyzer,
                    hour_ms,
                    seed,
                } => {
                    if let Some(a) = self.analyzers.iter_mut().find(|a| a.key() == analyzer) {
                        a.seed_hour(*hour_ms, *seed);
                        let end = time::next_hour(self.tz, *hour_ms);
                        last_end = Some(last_end.map_or(end, |e| e.max(end)));
                    }
                }
                Seed::NmhcDay {
                    analyzer,
                    day_ms,
                    valid,
                } => {
                    if let Some(a) = self.analyzers.iter_mut().find(|a| a.key() == analyzer) {
                        a.seed_day(*day_ms, *valid);
                    }
                }
                Seed::Closed {
                    subject,
                    month,
                    analyzer,
                    start_ms,
                } => {
                    if *analyzer {
                        if let Some(a) = self.analyzers.iter_mut().find(|a| a.key() == subject) {
                            a.forget_period(*month, *start_ms);
                        }
                    } else if let Some(b) = self.bins.iter_mut().find(|b| b.key() == subject) {
                        b.forget_period(*month, *start_ms);
                    }
                }
            }
        }
        let Some(end) = last_end.filter(|e| time::plausible(*e)) else {
            return out;
        };
        self.open_periods(end);
        let (day, month) = (
            self.open_day.map_or(end, |d| d.0),
            self.open_month.map_or(end, |m| m.0),
        );
        for b in &mut self.bins {
            b.start(end);
            b.close_due(day, month, &self.ruleset, &mut out);
        }
        for a in &mut self.analyzers {
            a.resume_at(end);
            a.close_due(day, month, &self.ruleset, &mut out);
        }
        self.all_bins_changed();
        out
    }

    /// The wall clock moved against the monotonic clock from `from` to `to` (live): the same as
    /// a jump found in the readings, unless the readings already showed it.
    pub fn clock_jump(&mut self, from: i64, to: i64) -> Vec<Output> {
        let mut out = Vec::new();
        let tolerance = self.settings.clock_jump_tolerance_ms.unsigned_abs();
        let seen = self.watermark.is_none_or(|w| w.abs_diff(to) <= tolerance);
        if !seen && time::plausible(to) {
            self.discontinuity(
                self.watermark.unwrap_or(from),
                to,
                "monotonic_clock",
                &mut out,
            );
        }
        out
    }

    /// The bins and analyzers a window target names.
    fn resolve(&self, target: &str) -> Result<(Vec<usize>, Vec<usize>), WindowError> {
        let bins: Vec<usize> = (0..self.bins.len())
            .filter(|&i| self.bins[i].key() == target || self.bin_devices[i] == target)
            .collect();
        let analyzers: Vec<usize> = (0..self.analyzers.len())
            .filter(|&i| self.analyzers[i].key() == target || self.analyzer_devices[i] == target)
            .collect();
        if bins.is_empty() && analyzers.is_empty() {
            return Err(WindowError::UnknownTarget(target.to_owned()));
        }
        Ok((bins, analyzers))
    }

    /// Opens a window at `at_ms` on every bin and analyzer its target names; `announce` makes
    /// the `window_started` outputs (false when restoring windows at start).
    pub fn open_window(
        &mut self,
        window: &Window,
        at_ms: i64,
        announce: bool,
    ) -> Result<Vec<Output>, WindowError> {
        if window.reason.trim().is_empty() {
            return Err(WindowError::Missing("reason"));
        }
        if window.by.trim().is_empty() {
            return Err(WindowError::Missing("name of who opens it (by)"));
        }
        self.check_window_time(at_ms, !announce)?;
        let (bins, analyzers) = self.resolve(&window.target)?;
        let open = bins
            .iter()
            .filter_map(|&b| {
                self.bins[b]
                    .window
                    .open
                    .as_ref()
                    .map(|w| (self.bins[b].key(), w))
            })
            .chain(analyzers.iter().filter_map(|&a| {
                self.analyzers[a]
                    .window
                    .open
                    .as_ref()
                    .map(|w| (self.analyzers[a].key(), w))
            }))
            .next();
        if let Some((key, w)) = open {
            return Err(WindowError::AlreadyOpen {
                target: key.to_owned(),
                kind: w.kind.name(),
                since_ms: w.started_ms,
            });
        }
        let opened = windows::OpenWindow {
            kind: window.kind,
            started_ms: at_ms,
            reason: window.reason.clone(),
            by: window.by.clone(),
            reported_overdue: false,
        };
        let mut out = Vec::new();
        let announce_for = |key: &str, out: &mut Vec<Output>| {
            if announce {
                out.push(Output::WindowStarted {
                    target: key.to_owned(),
                    window: window.kind,
                    at_ms,
                    reason: window.reason.clone(),
                    by: window.by.clone(),
                    ruleset: self.ruleset.clone(),
                });
            }
        };
        for &b in &bins {
            announce_for(self.bins[b].key(), &mut out);
        }
        for &a in &analyzers {
            announce_for(self.analyzers[a].key(), &mut out);
        }
        for &b in &bins {
            self.bins[b].window.open = Some(opened.clone());
            self.changed_bins.add(b);
            // Judged at the readings' time, and only once readings have come: a window restored
            // at start, or opened before the first reading, waits for them.
            if let (true, Some(w)) = (announce, self.watermark) {
                if at_ms <= w {
                    self.bins[b].judge(w, &self.ruleset, &mut out);
                }
            }
        }
        for &a in &analyzers {
            self.analyzers[a].window.open = Some(opened.clone());
        }
        Ok(out)
    }

    /// Whether a window may start or end at `at_ms`: a plausible time, and — unless it is
    /// restored from the record (`restoring`) — not further from the readings' time than the
    /// clock-jump tolerance, so a window can neither rewrite what was judged long ago nor reach
    /// into a future the readings have not seen.
    fn check_window_time(&self, at_ms: i64, restoring: bool) -> Result<(), WindowError> {
        if !time::plausible(at_ms) {
            return Err(WindowError::Time {
                at_ms,
                why: "is not a plausible time (the clock is not set)".to_owned(),
            });
        }
        let Some(w) = self.watermark else {
            return Ok(());
        };
        let tolerance = self.settings.clock_jump_tolerance_ms;
        if restoring {
            return if at_ms > w.saturating_add(tolerance) {
                Err(WindowError::Time {
                    at_ms,
                    why: format!("is after the readings' time {w}"),
                })
            } else {
                Ok(())
            };
        }
        if at_ms.abs_diff(w) > tolerance.unsigned_abs() {
            return Err(WindowError::Time {
                at_ms,
                why: format!(
                    "is more than {} s from the readings' time {w}",
                    tolerance / 1000
                ),
            });
        }
        Ok(())
    }

    /// Closes the windows open on what `target` names, at `at_ms`, by `by`.
    pub fn close_window(
        &mut self,
        target: &str,
        at_ms: i64,
        by: &str,
    ) -> Result<Vec<Output>, WindowError> {
        if by.trim().is_empty() {
            return Err(WindowError::Missing("name of who closes it (by)"));
        }
        self.check_window_time(at_ms, false)?;
        let (bins, analyzers) = self.resolve(target)?;
        let mut out = Vec::new();
        let ended = |key: &str, w: windows::OpenWindow, ruleset: &str| Output::WindowEnded {
            target: key.to_owned(),
            window: w.kind,
            at_ms,
            started_ms: w.started_ms,
            reason: w.reason,
            opened_by: w.by,
            by: by.to_owned(),
            ruleset: ruleset.to_owned(),
        };
        let started_after = bins
            .iter()
            .filter_map(|&b| self.bins[b].window.open.as_ref())
            .chain(
                analyzers
                    .iter()
                    .filter_map(|&a| self.analyzers[a].window.open.as_ref()),
            )
            .map(|w| w.started_ms)
            .find(|&s| s > at_ms);
        if let Some(started_ms) = started_after {
            return Err(WindowError::Time {
                at_ms,
                why: format!("is before the window's start {started_ms}"),
            });
        }
        for &b in &bins {
            if let Some(w) = self.bins[b].window.close(at_ms) {
                out.push(ended(self.bins[b].key(), w, &self.ruleset));
                self.changed_bins.add(b);
            }
        }
        for &a in &analyzers {
            if let Some(w) = self.analyzers[a].window.close(at_ms) {
                out.push(ended(self.analyzers[a].key(), w, &self.ruleset));
            }
        }
        if out.is_empty() {
            return Err(WindowError::NotOpen(target.to_owned()));
        }
        Ok(out)
    }

    fn report_overdue_windows(&mut self, now: i64, out: &mut Vec<Output>) {
        let max = self.settings.window_max_ms;
        let ruleset = &self.ruleset;
        let windows = self
            .bins
            .iter_mut()
            .map(|b| (b.key().to_owned(), &mut b.window))
            .chain(
                self.analyzers
                    .iter_mut()
                    .map(|a| (a.key().to_owned(), &mut a.window)),
            );
        let forget_before = now.saturating_sub(self.lateness_ms);
        for (key, window) in windows {
            window.prune(forget_before);
            let Some(w) = window.open.as_mut() else {
                continue;
            };
            let limit = max[w.kind.index()];
            if !w.reported_overdue && now.saturating_sub(w.started_ms) > limit {
                w.reported_overdue = true;
                out.push(Output::WindowOverdue {
                    target: key,
                    window: w.kind,
                    at_ms: now,
                    started_ms: w.started_ms,
                    max_ms: limit,
                    opened_by: w.by.clone(),
                    ruleset: ruleset.clone(),
                });
            }
        }
    }

    /// The windows open now: (target, kind, since, reason, by).
    pub fn open_windows(&self) -> Vec<(String, WindowKind, i64, String, String)> {
        let bins = self.bins.iter().map(|b| (b.key(), &b.window.open));
        let analyzers = self.analyzers.iter().map(|a| (a.key(), &a.window.open));
        bins.chain(analyzers)
            .filter_map(|(k, w)| {
                w.as_ref().map(|w| {
                    (
                        k.to_owned(),
                        w.kind,
                        w.started_ms,
                        w.reason.clone(),
                        w.by.clone(),
                    )
                })
            })
            .collect()
    }

    /// Closes every hour up to `until_ms` as if time had passed without readings (end of a
    /// replay). Bins and analyzers without fresh data become unknown.
    pub fn finish(&mut self, until_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        if !time::plausible(until_ms) {
            return out;
        }
        for b in &mut self.bins {
            b.judge(until_ms, &self.ruleset, &mut out);
        }
        self.all_bins_changed();
        self.advance(until_ms.saturating_add(self.lateness_ms), &mut out);
        out
    }
}

/// The flag a bin input is kept with: the window's while one is open, D while its fault
/// indicator calls its sensor faulted, else as read.
fn bin_flag(tracker: &BinTracker, signal: Signal, flag: Flag, at: i64) -> Flag {
    if !matches!(flag, Flag::N | Flag::T) {
        return flag;
    }
    if let Some((kind, _)) = tracker.window.covering(at) {
        return kind.flag();
    }
    let part = match signal {
        Signal::LidClosed | Signal::LidOpen => crate::model::SensorPart::Lid,
        Signal::GateOpen => crate::model::SensorPart::Gate,
        Signal::LevelMm => crate::model::SensorPart::Level,
    };
    if tracker.faulted(part) {
        Flag::D
    } else {
        flag
    }
}

/// Feeds a stream of readings, cut into chunks anywhere, to an engine as poll groups: a group is
/// complete when a reading of another device or time follows it. Output does not depend on where
/// the chunks are cut.
#[derive(Debug)]
pub struct Replay {
    engine: Engine,
    device_of: Vec<usize>,
    pending: Vec<Reading>,
    last_at: Option<i64>,
}

impl Replay {
    /// A replay into `engine`; `device_of[p]` is the device of point `p`.
    pub fn new(engine: Engine, device_of: Vec<usize>) -> Replay {
        Replay {
            engine,
            device_of,
            pending: Vec::new(),
            last_at: None,
        }
    }

    fn device(&self, r: &Reading) -> Option<usize> {
        self.device_of.get(r.point.0 as usize).copied()
    }

    /// Takes the next chunk; returns what the complete groups in it produced.
    pub fn push(&mut self, chunk: &[Reading]) -> Vec<Output> {
        let mut out = Vec::new();
        for r in chunk {
            if let Some(first) = self.pending.first() {
                if first.at_ms != r.at_ms || self.device(first) != self.device(r) {
                    out.extend(self.engine.ingest(&mut self.pending));
                    self.pending.clear();
                }
            }
            if time::plausible(r.at_ms) {
                self.last_at = Some(self.last_at.map_or(r.at_ms, |t| t.max(r.at_ms)));
            }
            self.pending.push(*r);
        }
        out
    }

    /// A window opened or closed at `at_ms`, between the readings before and after it.
    pub fn window(
        &mut self,
        at_ms: i64,
        command: &WindowCommand,
    ) -> Result<Vec<Output>, WindowError> {
        let mut out = self.engine.ingest(&mut self.pending);
        self.pending.clear();
        out.extend(match command {
            WindowCommand::Start(w) => self.engine.open_window(w, at_ms, true)?,
            WindowCommand::End { target, by } => self.engine.close_window(target, at_ms, by)?,
        });
        Ok(out)
    }

    /// The engine, after the last group (what it produced is dropped: a warm-up).
    pub fn into_engine(mut self) -> Engine {
        let _ = self.engine.ingest(&mut self.pending);
        self.engine
    }

    /// Ends the stream: the last group, then every hour up to the last reading of the
    /// stream's last stretch of time (after any clock jump) is closed.
    pub fn finish(mut self) -> Vec<Output> {
        let mut out = self.engine.ingest(&mut self.pending);
        if let (Some(_), Some(t)) = (self.last_at, self.engine.watermark) {
            out.extend(self.engine.finish(t));
        }
        out
    }
}

/// Groups a reading stream into poll groups (consecutive readings of one device at one time),
/// the way the bus tasks deliver them live.
pub fn poll_groups<'a>(
    readings: &'a [Reading],
    points: &'a PointTable,
) -> impl Iterator<Item = &'a [Reading]> + 'a {
    let mut rest = readings;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let device = points.points.get(first.point.0 as usize).map(|p| p.device);
        let len = rest
            .iter()
            .position(|r| {
                r.at_ms != first.at_ms
                    || points.points.get(r.point.0 as usize).map(|p| p.device) != device
            })
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(len);
        rest = tail;
        Some(group)
    })
}

/// Per-hour accumulator map shared by bins and analyzers.
pub(crate) type Hours<T> = BTreeMap<i64, T>;

#[cfg(test)]
mod tests;
