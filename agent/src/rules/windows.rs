//! Windows opened by people: a calibration, maintenance or shutdown of a bin's seal node or an
//! analyzer. While one is open, the readings it covers are flagged C, M or F (HJ 212-2017
//! table 8), kept out of averages, exceedances and seal judgements, and the bin is in the
//! `maintenance` state. Each start and end is a rule output (and so an evidence record) naming
//! who, what and why; a window left open past its kind's maximum is reported.

use serde::{Deserialize, Serialize};

use crate::model::Flag;

/// What a window is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Zero/span calibration (C).
    Calibration,
    /// Maintenance (M).
    Maintenance,
    /// Shutdown: the instrument or the bin is stopped (F).
    Shutdown,
}

impl WindowKind {
    /// The flag of the readings it covers.
    pub fn flag(self) -> Flag {
        match self {
            WindowKind::Calibration => Flag::C,
            WindowKind::Maintenance => Flag::M,
            WindowKind::Shutdown => Flag::F,
        }
    }

    /// The name in commands and outputs.
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Calibration => "calibration",
            WindowKind::Maintenance => "maintenance",
            WindowKind::Shutdown => "shutdown",
        }
    }

    /// The kind a command names.
    pub fn parse(text: &str) -> Option<WindowKind> {
        [
            WindowKind::Calibration,
            WindowKind::Maintenance,
            WindowKind::Shutdown,
        ]
        .into_iter()
        .find(|k| k.name() == text)
    }

    /// Its index in [`super::RuleSettings::window_max_ms`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A window as asked for: on a bin (`furnace/bin`), an analyzer (`furnace/analyzer`) or a
/// device (every bin and analyzer it serves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// `furnace/bin`, `furnace/analyzer` or a device name.
    pub target: String,
    /// Kind.
    pub kind: WindowKind,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
}

/// A command a person gave about a window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum WindowCommand {
    /// Open a window.
    Start(Window),
    /// Close the window on `target`.
    End {
        /// Bin, analyzer or device.
        target: String,
        /// Who.
        by: String,
    },
}

/// Why a window cannot be opened or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The target names nothing of this site.
    #[error("'{0}' is no bin (furnace/bin), analyzer (furnace/analyzer) or device of this site")]
    UnknownTarget(String),
    /// A window is already open on it.
    #[error("a {kind} window is already open on {target} (since {since_ms}); end it first")]
    AlreadyOpen {
        /// What.
        target: String,
        /// Its kind.
        kind: &'static str,
        /// Since, ms.
        since_ms: i64,
    },
    /// No window is open on it.
    #[error("no window is open on {0}")]
    NotOpen(String),
    /// A required field is empty.
    #[error("a window needs a {0}")]
    Missing(&'static str),
    /// The time of the start or end cannot be taken.
    #[error("the window time {at_ms} {why}")]
    Time {
        /// The time asked, ms.
        at_ms: i64,
        /// What is wrong with it.
        why: String,
    },
}

/// An open window on one bin or analyzer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OpenWindow {
    pub(super) kind: WindowKind,
    pub(super) started_ms: i64,
    pub(super) reason: String,
    pub(super) by: String,
    pub(super) reported_overdue: bool,
}

/// A window that has ended: readings stamped inside it may still arrive (polls in flight, a
/// replay), and are flagged by it all the same.
#[derive(Debug, Clone, PartialEq)]
struct ClosedWindow {
    kind: WindowKind,
    started_ms: i64,
    ended_ms: i64,
    said: String,
}

/// The windows of one bin or analyzer: the one open now, and those that ended lately.
#[derive(Debug, Clone, Default)]
pub(super) struct Windows {
    /// The window open now.
    pub(super) open: Option<OpenWindow>,
    closed: Vec<ClosedWindow>,
}

impl OpenWindow {
    fn said(&self) -> String {
        format!("{} window: {} ({})", self.kind.name(), self.reason, self.by)
    }
}

impl Windows {
    /// The window covering time `t` (open from its start, or closed with `start <= t < end`):
    /// its kind and, in words, what it is.
    pub(super) fn covering(&self, t: i64) -> Option<(WindowKind, String)> {
        if let Some(w) = self.open.as_ref().filter(|w| t >= w.started_ms) {
            return Some((w.kind, w.said()));
        }
        self.closed
            .iter()
            .find(|c| c.started_ms <= t && t < c.ended_ms)
            .map(|c| (c.kind, c.said.clone()))
    }

    /// Ends the open window at `at` (kept for readings stamped before `at` still to come).
    pub(super) fn close(&mut self, at: i64) -> Option<OpenWindow> {
        let w = self.open.take()?;
        self.closed.push(ClosedWindow {
            kind: w.kind,
            started_ms: w.started_ms,
            ended_ms: at.max(w.started_ms),
            said: w.said(),
        });
        Some(w)
    }

    /// Forgets ended windows that ended before `t` (no reading older than that is judged any
    /// more).
    pub(super) fn prune(&mut self, t: i64) {
        self.closed.retain(|c| c.ended_ms >= t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_window_still_covers_what_was_stamped_inside_it() {
        let mut w = Windows {
            open: Some(OpenWindow {
                kind: WindowKind::Calibration,
                started_ms: 1_000,
                reason: "span".into(),
                by: "li".into(),
                reported_overdue: false,
            }),
            closed: Vec::new(),
        };
        assert_eq!(w.covering(999), None);
        assert!(w.close(5_000).is_some());
        assert_eq!(
            w.covering(4_999).map(|c| c.0),
            Some(WindowKind::Calibration)
        );
        assert_eq!(w.covering(5_000), None);
        w.prune(6_000);
        assert_eq!(w.covering(4_999), None);
    }
}
