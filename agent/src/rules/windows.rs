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
