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

mod seal;
pub mod time;
mod voc;

use std::collections::BTreeMap;
use std::fmt;

use chrono_tz::Tz;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::SiteConfig;
use crate::poll::reading::{Flag, Reading};
use crate::poll::PointTable;
use seal::BinTracker;
use voc::AnalyzerTracker;

/// Thresholds and timings of the rules, site-wide (per-bin ones live in [`BinRules`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// NMHC 1-hour average limit, mg/m³ (GB 37822-2019 A.1: 10; key regions 6).
    pub nmhc_hourly_limit: f64,
    /// NMHC single-value limit, mg/m³ (GB 37822-2019 A.1: 30; key regions 20).
    pub nmhc_single_limit: f64,
    /// How long a breach signature must persist before it is a breach, ms.
    pub breach_grace_ms: i64,
    /// Level above the seal threshold needed to end a level breach, mm.
    pub level_hysteresis_mm: f64,
    /// Inputs older than this make a bin or analyzer unknown, ms.
    pub stale_after_ms: i64,
    /// Longest both lid switches may be off (lid travelling) before it is a switch fault, ms.
    pub lid_travel_ms: i64,
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
        }
    }
}

/// Per-bin thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct BinRules {
    /// `furnace/bin`.
    pub key: String,
    /// Lowest level that keeps the material seal, mm.
    pub seal_level_min_mm: f64,
    /// Longest a lid or gate may be open, ms.
    pub max_open_ms: i64,
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
    /// N by the same rules as NMHC (75 % of samples; 45 valid minutes), else D.
    pub flag: Flag,
    /// Valid samples (minute) or valid minutes (hour).
    pub valid: u32,
}

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
    /// Inputs faulty, stale or missing.
    Unknown,
}

impl SealState {
    /// All states, in accumulator order.
    pub const ALL: [SealState; 4] = [
        SealState::Sealed,
        SealState::Charging,
        SealState::Breach,
        SealState::Unknown,
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
        }
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

/// Count of values by HJ 212 flag, in the order N F M S D C T B.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlagCounts(pub [u32; 8]);

impl FlagCounts {
    fn add(&mut self, flag: Flag) {
        self.0[usize::from(flag.code())] += 1;
    }

    /// Count of one flag.
    pub fn get(&self, flag: Flag) -> u32 {
        self.0[usize::from(flag.code())]
    }
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
        /// Why, in words.
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
        /// No breach during the cycle.
        seal_held: bool,
        /// Data was unknown during part of the cycle.
        interrupted: bool,
        /// Reconstructed from the seal node's event latch rather than observed.
        reconciled: bool,
        /// Rule-set version.
        ruleset: String,
    },
    /// A minute value of an analyzer.
    NmhcMinute {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Minute start, ms.
        minute_ms: i64,
        /// Mean of the valid samples, mg/m³.
        avg: Option<f64>,
        /// Smallest valid sample.
        min: Option<f64>,
        /// Largest valid sample.
        max: Option<f64>,
        /// N if at least 75 % of the samples were N, else D.
        flag: Flag,
        /// Samples taken.
        samples: u32,
        /// The analyzer's other pollutants over the same minute.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        others: Vec<PollutantValue>,
        /// Rule-set version.
        ruleset: String,
    },
    /// A single value went over the single-value limit.
    NmhcExceedanceStarted {
        /// `furnace/analyzer`.
        analyzer: String,
        /// When, ms.
        at_ms: i64,
        /// The value, mg/m³.
        value: f64,
        /// The limit, mg/m³.
        limit: f64,
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
        /// Rule-set version.
        ruleset: String,
    },
    /// One local hour of an analyzer.
    NmhcHour {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Hour start, ms.
        hour_ms: i64,
        /// Minutes with flag N.
        valid_minutes: u32,
        /// Mean of the valid minutes (only for a valid hour), mg/m³.
        avg: Option<f64>,
        /// Smallest valid minute minimum.
        min: Option<f64>,
        /// Largest valid minute maximum.
        max: Option<f64>,
        /// N for a valid hour (≥ 45 valid minutes, 75 %), else D.
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
        /// The analyzer's other pollutants over the same hour.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        others: Vec<PollutantValue>,
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
        /// Charging cycles completed this hour.
        cycles: u32,
        /// Of which held the seal throughout.
        cycles_held: u32,
        /// Of which were interrupted by unknown data (judged neither way).
        cycles_interrupted: u32,
        /// Breaches that began this hour.
        breaches: u32,
        /// Held cycles / judged cycles (None without judged cycles).
        cycle_compliance: Option<f64>,
        /// (Sealed + charging) / known time (None without known time).
        time_compliance: Option<f64>,
        /// Known time / the hour.
        completeness: f64,
        /// At least 45 minutes known (the 45-minute rule applied to seal data).
        valid: bool,
        /// Input readings by flag.
        flags: FlagCounts,
        /// Rule-set version.
        ruleset: String,
    },
}

impl Output {
    /// When it happened (start of the period for minute and hour values), ms.
    pub fn at_ms(&self) -> i64 {
        match self {
            Output::SealState { at_ms, .. }
            | Output::BreachStarted { at_ms, .. }
            | Output::BreachEnded { at_ms, .. }
            | Output::NmhcExceedanceStarted { at_ms, .. }
            | Output::NmhcExceedanceEnded { at_ms, .. } => *at_ms,
            Output::ChargingCycle { ended_ms, .. } => *ended_ms,
            Output::NmhcMinute { minute_ms, .. } => *minute_ms,
            Output::NmhcHour { hour_ms, .. } | Output::BinHour { hour_ms, .. } => *hour_ms,
        }
    }

    /// The bin or analyzer it is about.
    pub fn subject(&self) -> &str {
        match self {
            Output::SealState { bin, .. }
            | Output::BreachStarted { bin, .. }
            | Output::BreachEnded { bin, .. }
            | Output::ChargingCycle { bin, .. }
            | Output::BinHour { bin, .. } => bin,
            Output::NmhcMinute { analyzer, .. }
            | Output::NmhcExceedanceStarted { analyzer, .. }
            | Output::NmhcExceedanceEnded { analyzer, .. }
            | Output::NmhcHour { analyzer, .. } => analyzer,
        }
    }

    /// Its kind, as in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Output::SealState { .. } => "seal_state",
            Output::BreachStarted { .. } => "breach_started",
            Output::BreachEnded { .. } => "breach_ended",
            Output::ChargingCycle { .. } => "charging_cycle",
            Output::NmhcMinute { .. } => "nmhc_minute",
            Output::NmhcExceedanceStarted { .. } => "nmhc_exceedance_started",
            Output::NmhcExceedanceEnded { .. } => "nmhc_exceedance_ended",
            Output::NmhcHour { .. } => "nmhc_hour",
            Output::BinHour { .. } => "bin_hour",
        }
    }

    /// One JSON line (field order fixed by the type).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"kind\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
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
    /// Analyzers (`furnace/analyzer`), in config order.
    pub analyzers: Vec<String>,
    /// Role of each point, by point id.
    pub roles: Vec<Option<Role>>,
}

impl RulesConfig {
    /// The rules of a site.
    pub fn new(config: &SiteConfig, points: &PointTable) -> RulesConfig {
        let mut roles = vec![None; points.points.len()];
        let mut bins = Vec::new();
        let mut analyzers = Vec::new();
        for f in &config.furnaces {
            for b in &f.bins {
                let profile = &config.devices[b.device].profile;
                for (signal, name) in [
                    (Signal::LidClosed, "lid_closed"),
                    (Signal::LidOpen, "lid_open"),
                    (Signal::GateOpen, "gate_open"),
                    (Signal::LevelMm, "level_mm"),
                ] {
                    if let Some(i) = profile.points.iter().position(|p| p.name == name) {
                        roles[points.id(b.device, i).0 as usize] = Some(Role::Bin {
                            bin: bins.len(),
                            signal,
                        });
                    }
                }
                for (i, p) in profile.points.iter().enumerate() {
                    if let Some(field) = LatchField::of_point(&p.name) {
                        roles[points.id(b.device, i).0 as usize] = Some(Role::Latch {
                            bin: bins.len(),
                            field,
                        });
                    }
                }
                bins.push(BinRules {
                    key: format!("{}/{}", f.name, b.name),
                    seal_level_min_mm: f64::from(b.seal_level_min_mm),
                    max_open_ms: b.max_open.as_millis() as i64,
                });
            }
            for a in &f.analyzers {
                let profile = &config.devices[a.device].profile;
                for (name, code) in OTHER_POLLUTANTS {
                    if let Some(i) = profile.points.iter().position(|p| p.name == name) {
                        roles[points.id(a.device, i).0 as usize] = Some(Role::Pollutant {
                            analyzer: analyzers.len(),
                            code,
                        });
                    }
                }
                if let Some(i) = profile.points.iter().position(|p| p.name == a.nmhc_point) {
                    roles[points.id(a.device, i).0 as usize] = Some(Role::Nmhc {
                        analyzer: analyzers.len(),
                    });
                }
                analyzers.push(format!("{}/{}", f.name, a.name));
            }
        }
        RulesConfig {
            tz: config.site.time_zone,
            settings: config.rules.clone(),
            bins,
            analyzers,
            roles,
        }
    }

    /// The rule-set version: the first 16 hex digits of SHA-256 over every threshold in force,
    /// written in a fixed order.
    pub fn version(&self) -> String {
        let s = &self.settings;
        let mut text = format!(
            "sealwatch-rules-v1\ntz={}\nnmhc_hourly_limit={:.3}\nnmhc_single_limit={:.3}\nbreach_grace_ms={}\nlevel_hysteresis_mm={:.1}\nstale_after_ms={}\nlid_travel_ms={}\n",
            self.tz.name(),
            s.nmhc_hourly_limit,
            s.nmhc_single_limit,
            s.breach_grace_ms,
            s.level_hysteresis_mm,
            s.stale_after_ms,
            s.lid_travel_ms
        );
        for b in &self.bins {
            text.push_str(&format!(
                "bin={};seal_level_min_mm={:.1};max_open_ms={}\n",
                b.key, b.seal_level_min_mm, b.max_open_ms
            ));
        }
        for a in &self.analyzers {
            text.push_str(&format!("analyzer={a}\n"));
        }
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// The rules engine.
#[derive(Debug)]
pub struct Engine {
    tz: Tz,
    ruleset: String,
    roles: Vec<Option<Role>>,
    bins: Vec<BinTracker>,
    analyzers: Vec<AnalyzerTracker>,
    /// Latest reading time seen, ms.
    watermark: Option<i64>,
    /// Start and end of the oldest hour not yet summarised.
    open_hour: Option<(i64, i64)>,
    /// How long after an hour ends it is closed, ms (late readings of other buses still count).
    lateness_ms: i64,
    /// Bins whose state or its start may have changed since [`Engine::take_bin_changes`].
    changed_bins: ChangedBins,
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
        Engine {
            tz: config.tz,
            roles: config.roles.clone(),
            bins: config
                .bins
                .iter()
                .map(|b| BinTracker::new(b.clone(), s.clone(), config.tz))
                .collect(),
            analyzers: config
                .analyzers
                .iter()
                .map(|a| AnalyzerTracker::new(a.clone(), s.clone(), config.tz))
                .collect(),
            ruleset,
            watermark: None,
            open_hour: None,
            lateness_ms: s.breach_grace_ms + s.stale_after_ms + 5_000,
            changed_bins: ChangedBins::default(),
        }
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

    /// Applies one poll group (readings of one device at one time) and returns what follows.
    pub fn ingest_poll(&mut self, group: &[Reading]) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(at) = group.iter().map(|r| r.at_ms).max() else {
            return out;
        };
        if self.open_hour.is_none() {
            let hour = time::hour_start(self.tz, at);
            self.open_hour = Some((hour, time::next_hour(self.tz, hour)));
            for b in &mut self.bins {
                b.start(hour);
            }
            self.all_bins_changed();
        }
        let mut touched_bins: Vec<usize> = Vec::new();
        for r in group {
            match self.roles.get(r.point.0 as usize).copied().flatten() {
                Some(Role::Bin { bin, signal }) => {
                    let tracker = &mut self.bins[bin];
                    tracker.apply(signal, r);
                    if !touched_bins.contains(&bin) {
                        touched_bins.push(bin);
                    }
                }
                Some(Role::Latch { bin, field }) => self.bins[bin].apply_latch(field, r),
                Some(Role::Pollutant { analyzer, code }) => {
                    self.analyzers[analyzer].sample_other(code, r, &self.ruleset, &mut out)
                }
                Some(Role::Nmhc { analyzer }) => {
                    self.analyzers[analyzer].sample(r, &self.ruleset, &mut out)
                }
                None => {}
            }
        }
        for bin in touched_bins {
            self.bins[bin].judge(at, &self.ruleset, &mut out);
            self.changed_bins.add(bin);
        }
        self.advance(at, &mut out);
        out
    }

    /// Moves the engine's notion of "now" (from reading times only): closes minutes and hours
    /// that can no longer receive readings, and marks inputs that went stale.
    fn advance(&mut self, at: i64, out: &mut Vec<Output>) {
        let watermark = self.watermark.map_or(at, |w| w.max(at));
        self.watermark = Some(watermark);
        for a in &mut self.analyzers {
            a.close_minutes_before(watermark - self.lateness_ms, &self.ruleset, out);
        }
        while let Some((hour, end)) = self.open_hour {
            if watermark < end + self.lateness_ms {
                break;
            }
            for b in &mut self.bins {
                b.close_hour(hour, end, &self.ruleset, out);
            }
            self.all_bins_changed();
            for a in &mut self.analyzers {
                a.close_hour(hour, end, &self.ruleset, out);
            }
            self.open_hour = Some((end, time::next_hour(self.tz, end)));
        }
    }

    /// Closes every hour up to `until_ms` as if time had passed without readings (end of a
    /// replay). Bins and analyzers without fresh data become unknown.
    pub fn finish(&mut self, until_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        for b in &mut self.bins {
            b.judge(until_ms, &self.ruleset, &mut out);
        }
        self.all_bins_changed();
        self.advance(until_ms + self.lateness_ms, &mut out);
        out
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
                    out.extend(self.engine.ingest_poll(&self.pending));
                    self.pending.clear();
                }
            }
            self.last_at = Some(self.last_at.map_or(r.at_ms, |t| t.max(r.at_ms)));
            self.pending.push(*r);
        }
        out
    }

    /// Ends the stream: the last group, then every hour up to the last reading is closed.
    pub fn finish(mut self) -> Vec<Output> {
        let mut out = self.engine.ingest_poll(&self.pending);
        if let Some(t) = self.last_at {
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
