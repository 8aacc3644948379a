//! Scripted scenarios and live commands: what happens to the plant, and when.
//!
//! A scenario file lists events with a time; the same actions can be typed as commands on the
//! sim's standard input (`breach F1/B2`, `silence f1-b1`, `bus-down nmhc-1 20`, …), which is how
//! tests drive it.
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

use crate::plant::Plant;

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
}

impl Action {
    /// Parses a command word (`bus-down`).
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "breach" => Action::Breach,
            "lid-stuck-open" => Action::LidStuckOpen,
            "level-wire-broken" => Action::LevelWireBroken,
            "silence" => Action::Silence,
            "restore" => Action::Restore,
            "fail" => Action::Fail,
            "recover" => Action::Recover,
            "restart" => Action::Restart,
            "bus-down" => Action::BusDown,
            "bus-up" => Action::BusUp,
            _ => return None,
        })
    }

    /// Whether the action is on a bus (handled by the server, not the plant model).
    pub fn is_bus(self) -> bool {
        matches!(self, Action::BusDown | Action::BusUp)
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
    #[error("cannot understand '{0}'; expected ACTION TARGET [DURATION_S], e.g. 'breach F1/B2' or 'silence f1-b1 30'")]
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
    let duration_s = match words.next() {
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
    Ok(Event {
        at_s: now,
        action,
        target,
        duration_s,
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
        Action::Breach | Action::LidStuckOpen | Action::LevelWireBroken => {
            let b = plant
                .bin(&event.target)
                .ok_or_else(|| unknown("bin (furnace/bin)"))?;
            let bin = &mut plant.bins[b];
            match event.action {
                Action::Breach => bin.breach_next_cycle = true,
                Action::LidStuckOpen => bin.lid_stuck_until = Some(until.unwrap_or(t + 60.0)),
                _ => bin.level_broken_until = Some(until.unwrap_or(f64::INFINITY)),
            }
        }
        Action::Silence | Action::Restore | Action::Fail | Action::Recover | Action::Restart => {
            let d = plant
                .device(&event.target)
                .ok_or_else(|| unknown("device"))?;
            let dev = &mut plant.devices[d];
            match event.action {
                Action::Silence => dev.silent = true,
                Action::Restore => dev.silent = false,
                Action::Fail => dev.failing = true,
                Action::Recover => dev.failing = false,
                _ => dev.restarting_until = Some(t + event.duration_s.unwrap_or(5.0)),
            }
        }
        Action::BusDown | Action::BusUp => {}
    }
    Ok(())
}

/// The event that undoes a timed `Silence`, `Fail` or `BusDown`, if it has a duration.
pub fn reversal(event: &Event) -> Option<Event> {
    let undo = match event.action {
        Action::Silence => Action::Restore,
        Action::Fail => Action::Recover,
        Action::BusDown => Action::BusUp,
        _ => return None,
    };
    event.duration_s.map(|d| Event {
        at_s: event.at_s + d,
        action: undo,
        target: event.target.clone(),
        duration_s: None,
    })
}
