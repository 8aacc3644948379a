//! Scripted scenarios and live commands: what happens to the plant, and when.
//!
//! A scenario file lists events with a time; the same actions can be typed as commands on the
//! sim's standard input (`breach F1/B2`, `silence f1-b1`, `bus-down nmhc-1 20`, …), which is how
//! tests drive it. Faults of the serial line interface of RTU devices take a value instead of a
//! duration: `slow DEVICE MS`, `late DEVICE MS`, `corrupt-crc DEVICE K`, `garbage DEVICE`
//! (`restore DEVICE` clears them); `unplug BUS [S]` and `replug BUS` take an RTU line's adapter
//! away and bring it back.
//!
//! ```toml
//! [[events]]
//! at_s = 30            # simulated seconds after start
//! action = "breach"    # see Action
//! target = "F1/B2"     # a bin (furnace/bin), a device name or a bus name
//! duration_s = 20      # optional, for actions that end by themselves
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::plant::{LineFaults, Plant};

/// What can happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The bin's next gate opening drains it below its seal level (bin).
    Breach,
    /// The bin's lid stays open for `duration_s` (bin).
    LidStuckOpen,
    /// The bin's level transmitter loses its loop current for `duration_s` (bin).
    LevelWireBroken,
    /// The bin's level transmitter freezes at its current reading for `duration_s` (bin).
    LevelFrozen,
    /// The analyzer calibrates with span gas for `duration_s` (default 120): its status
    /// register says calibration and it reads the span gas (analyzer `furnace/analyzer`, or its
    /// device).
    Calibrate,
    /// The device stops answering (device); with `duration_s`, only for that long.
    Silence,
    /// The device answers again (device).
    Restore,
    /// The device answers every read with exception 04 (device).
    Fail,
    /// The device answers normally again (device).
    Recover,
    /// The device is off for `duration_s` (default 5), then boots with counters reset (device).
    Restart,
    /// The bus's TCP endpoint closes and refuses connections (bus); with `duration_s`, only for
    /// that long.
    BusDown,
    /// The bus's endpoint listens again (bus).
    BusUp,
    /// The device's replies go out `value` ms later than usual (RTU device).
    Slow,
    /// The device's replies go out `value` ms late, after the master's timeout (RTU device).
    Late,
    /// Every `value`-th reply of the device has a corrupt CRC (RTU device).
    CorruptCrc,
    /// The device sends garbage bytes instead of its replies (RTU device).
    Garbage,
    /// The serial adapter of the line disappears: its pty closes and its path goes away (RTU
    /// bus); with `duration_s`, only for that long.
    Unplug,
    /// The adapter is back: a new pty behind the same path (RTU bus).
    Replug,
}

impl Action {
    /// Parses a command word (`bus-down`).
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "breach" => Action::Breach,
            "lid-stuck-open" => Action::LidStuckOpen,
            "level-wire-broken" => Action::LevelWireBroken,
            "level-frozen" => Action::LevelFrozen,
            "calibrate" => Action::Calibrate,
            "silence" => Action::Silence,
            "restore" => Action::Restore,
            "fail" => Action::Fail,
            "recover" => Action::Recover,
            "restart" => Action::Restart,
            "bus-down" => Action::BusDown,
            "bus-up" => Action::BusUp,
            "slow" => Action::Slow,
            "late" => Action::Late,
            "corrupt-crc" => Action::CorruptCrc,
            "garbage" => Action::Garbage,
            "unplug" => Action::Unplug,
            "replug" => Action::Replug,
            _ => return None,
        })
    }

    /// Whether the action is on a bus (handled by the server, not the plant model).
    pub fn is_bus(self) -> bool {
        matches!(
            self,
            Action::BusDown | Action::BusUp | Action::Unplug | Action::Replug
        )
    }

    /// Whether the number after the target is the action's value (ms, or k) rather than a
    /// duration in seconds.
    pub fn takes_value(self) -> bool {
        matches!(self, Action::Slow | Action::Late | Action::CorruptCrc)
    }
}

/// One scripted event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Simulated time, s.
    pub at_s: f64,
    /// What happens.
    pub action: Action,
    /// To what.
    pub target: String,
    /// For how long, s.
    pub duration_s: Option<f64>,
    /// The amount of `slow` and `late` (ms) and of `corrupt-crc` (every k-th reply).
    #[serde(default)]
    pub value: Option<f64>,
}

/// A scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Events, in any order.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// Why a scenario or command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// File unreadable.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// File malformed.
    #[error("scenario {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        source: toml::de::Error,
    },
    /// A target that does not exist.
    #[error("{action:?}: no {kind} named '{target}'")]
    UnknownTarget {
        /// Action.
        action: Action,
        /// What kind of target was expected.
        kind: &'static str,
        /// Name.
        target: String,
    },
    /// A command line that does not parse.
    #[error("cannot understand '{0}'; expected ACTION TARGET [DURATION_S] (or VALUE for slow MS, late MS, corrupt-crc K), e.g. 'breach F1/B2', 'silence f1-b1 30' or 'late f1-b2 800'")]
    BadCommand(String),
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut s: Scenario = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: shown,
            source,
        })?;
        s.events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Ok(s)
    }
}

/// Parses a command line `ACTION TARGET [DURATION_S]` into an event at time `now`.
pub fn parse_command(line: &str, now: f64) -> Result<Event, ScenarioError> {
    let mut words = line.split_whitespace();
    let bad = || ScenarioError::BadCommand(line.trim().to_owned());
    let action = words.next().and_then(Action::parse).ok_or_else(bad)?;
    let target = words.next().ok_or_else(bad)?.to_owned();
    let number = match words.next() {
        Some(w) => Some(
            w.parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d >= 0.0)
                .ok_or_else(bad)?,
        ),
        None => None,
    };
    if words.next().is_some() {
        return Err(bad());
    }
    let (duration_s, value) = if action.takes_value() {
        (None, Some(number.ok_or_else(bad)?))
    } else {
        (number, None)
    };
    Ok(Event {
        at_s: now,
        action,
        target,
        duration_s,
        value,
    })
}

/// Applies a plant (non-bus) action now.
pub fn apply(plant: &mut Plant, event: &Event) -> Result<(), ScenarioError> {
    let t = plant.t;
    let until = event.duration_s.map(|d| t + d);
    let unknown = |kind| ScenarioError::UnknownTarget {
        action: event.action,
        kind,
        target: event.target.clone(),
    };
    match event.action {
        Action::Breach | Action::LidStuckOpen | Action::LevelWireBroken | Action::LevelFrozen => {
            let b = plant
                .bin(&event.target)
                .ok_or_else(|| unknown("bin (furnace/bin)"))?;
            let bin = &mut plant.bins[b];
            match event.action {
                Action::Breach => bin.breach_next_cycle = true,
                Action::LidStuckOpen => bin.lid_stuck_until = Some(until.unwrap_or(t + 60.0)),
                Action::LevelFrozen => {
                    bin.level_frozen = Some((bin.level_mm.round(), until.unwrap_or(f64::INFINITY)))
                }
                _ => bin.level_broken_until = Some(until.unwrap_or(f64::INFINITY)),
            }
        }
        Action::Calibrate => {
            let a = plant
                .analyzer(&event.target)
                .ok_or_else(|| unknown("analyzer (furnace/analyzer or its device)"))?;
            plant.analyzers[a].calibrating_until = Some(until.unwrap_or(t + 120.0));
        }
        Action::Silence
        | Action::Restore
        | Action::Fail
        | Action::Recover
        | Action::Restart
        | Action::Slow
        | Action::Late
        | Action::CorruptCrc
        | Action::Garbage => {
            let d = plant
                .device(&event.target)
                .ok_or_else(|| unknown("device"))?;
            let dev = &mut plant.devices[d];
            let value = event.value.unwrap_or(0.0);
            match event.action {
                Action::Silence => dev.silent = true,
                Action::Restore => {
                    dev.silent = false;
                    dev.line_faults = LineFaults::default();
                }
                Action::Fail => dev.failing = true,
                Action::Recover => dev.failing = false,
                Action::Slow => dev.line_faults.slow_ms = value as u64,
                Action::Late => dev.line_faults.late_ms = value as u64,
                Action::CorruptCrc => dev.line_faults.corrupt_every = value as u32,
                Action::Garbage => dev.line_faults.garbage = true,
                _ => dev.restarting_until = Some(t + event.duration_s.unwrap_or(5.0)),
            }
        }
        Action::BusDown | Action::BusUp | Action::Unplug | Action::Replug => {}
    }
    Ok(())
}

/// The event that undoes a timed `Silence`, `Fail`, `BusDown` or `Unplug`, if it has a duration.
pub fn reversal(event: &Event) -> Option<Event> {
    let undo = match event.action {
        Action::Silence => Action::Restore,
        Action::Fail => Action::Recover,
        Action::BusDown => Action::BusUp,
        Action::Unplug => Action::Replug,
        _ => return None,
    };
    event.duration_s.map(|d| Event {
        at_s: event.at_s + d,
        action: undo,
        target: event.target.clone(),
        duration_s: None,
        value: None,
    })
}
