//! What a poll produces: a [`Reading`] per point, with its outcome and HJ 212 data flag.
//!
//! A device exception is an answer, not a failure (STYLE.md §3): the outcome keeps the three apart
//! — a value, a Modbus exception code from the device, or a fault of the communication — and the
//! flag says what an auditor sees: N normal, T at or above the range, D device fault, B
//! communication fault — and, set by the rules from an analyzer's state or a maintenance window,
//! C calibration, M maintenance, F stopped.

use std::fmt;

use sealwatch_firmware::modbus::ExceptionCode;

/// An exception as its code on the wire.
fn exception_code<S: serde::Serializer>(code: &ExceptionCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(code.code())
}

/// Index of a point in the agent's point table (device order × profile order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PointId(pub u32);

/// HJ 212-2017 data flag (table 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Flag {
    /// Normal.
    N,
    /// Instrument stopped.
    F,
    /// Maintenance.
    M,
    /// Manually set value.
    S,
    /// Fault.
    D,
    /// Calibration.
    C,
    /// Above the measuring range.
    T,
    /// Analyzer-to-logger communication fault.
    B,
}

impl Flag {
    /// All flags, in the order of their codes.
    pub const ALL: [Flag; 8] = [
        Flag::N,
        Flag::F,
        Flag::M,
        Flag::S,
        Flag::D,
        Flag::C,
        Flag::T,
        Flag::B,
    ];

    /// Small integer code for storage (index in [`Flag::ALL`]).
    pub fn code(self) -> u8 {
        Flag::ALL.iter().position(|f| *f == self).unwrap_or(0) as u8
    }

    /// The flag of a storage code; unknown codes read as D (fault).
    pub fn from_code(code: u8) -> Flag {
        Flag::ALL.get(usize::from(code)).copied().unwrap_or(Flag::D)
    }

    /// The letter.
    pub fn letter(self) -> char {
        match self {
            Flag::N => 'N',
            Flag::F => 'F',
            Flag::M => 'M',
            Flag::S => 'S',
            Flag::D => 'D',
            Flag::C => 'C',
            Flag::T => 'T',
            Flag::B => 'B',
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// What an instrument says it is doing (an analyzer's status register, mapped by its profile),
/// or what a maintenance window says of it; each state has its HJ 212-2017 table 8 flag.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentState {
    /// Measuring (N).
    #[serde(alias = "N")]
    Normal,
    /// Zero or span calibration: values are calibration gas (C).
    #[serde(alias = "C")]
    Calibration,
    /// Maintenance (M).
    #[serde(alias = "M")]
    Maintenance,
    /// Stopped (F).
    #[serde(alias = "F")]
    Stopped,
    /// The instrument reports a fault (D).
    #[serde(alias = "D")]
    Fault,
}

impl InstrumentState {
    /// Every state.
    pub const ALL: [InstrumentState; 5] = [
        InstrumentState::Normal,
        InstrumentState::Calibration,
        InstrumentState::Maintenance,
        InstrumentState::Stopped,
        InstrumentState::Fault,
    ];

    /// Its HJ 212 flag.
    pub fn flag(self) -> Flag {
        match self {
            InstrumentState::Normal => Flag::N,
            InstrumentState::Calibration => Flag::C,
            InstrumentState::Maintenance => Flag::M,
            InstrumentState::Stopped => Flag::F,
            InstrumentState::Fault => Flag::D,
        }
    }

    /// The name used in profiles and outputs.
    pub fn name(self) -> &'static str {
        match self {
            InstrumentState::Normal => "normal",
            InstrumentState::Calibration => "calibration",
            InstrumentState::Maintenance => "maintenance",
            InstrumentState::Stopped => "stopped",
            InstrumentState::Fault => "fault",
        }
    }

    /// The state a profile names (its name, or its flag letter).
    pub fn parse(text: &str) -> Option<InstrumentState> {
        InstrumentState::ALL
            .into_iter()
            .find(|s| s.name() == text || s.flag().letter().to_string() == text)
    }
}

/// Which sensor of a seal node a fault indicator is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorPart {
    /// The lid switch pair.
    Lid,
    /// The charging-gate switch.
    Gate,
    /// The material-level transmitter and its loop.
    Level,
    /// The node itself (e.g. settings not commissioned).
    Node,
}

impl SensorPart {
    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            SensorPart::Lid => "lid",
            SensorPart::Gate => "gate",
            SensorPart::Level => "level",
            SensorPart::Node => "node",
        }
    }

    /// The part a profile names.
    pub fn parse(text: &str) -> Option<SensorPart> {
        [
            SensorPart::Lid,
            SensorPart::Gate,
            SensorPart::Level,
            SensorPart::Node,
        ]
        .into_iter()
        .find(|p| p.name() == text)
    }
}

/// Why no value came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Fault {
    /// No reply within the bus timeout.
    Timeout,
    /// The connection failed or broke.
    Io,
    /// A reply came that did not fit the request.
    BadFrame,
    /// The bus is not connected (connecting or backing off).
    NotConnected,
    /// The device failed repeatedly and is only probed now and then.
    Degraded,
}

/// The outcome of reading one point.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Outcome {
    /// The engineering value.
    Value(f64),
    /// The device answered with this Modbus exception.
    Exception(#[serde(serialize_with = "exception_code")] ExceptionCode),
    /// No answer.
    Fault(Fault),
}

/// One point at one time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Reading {
    /// When the request was sent, ms since the Unix epoch (UTC).
    pub at_ms: i64,
    /// Which point.
    pub point: PointId,
    /// What came back.
    pub outcome: Outcome,
    /// HJ 212 flag.
    pub flag: Flag,
}

impl Reading {
    /// A reading of `outcome`, flagged from it and the point's measuring range: T at or above
    /// the top of the range (a saturated instrument reads at least that much), D below its
    /// bottom or not a number.
    pub fn new(
        at_ms: i64,
        point: PointId,
        outcome: Outcome,
        range: (Option<f64>, Option<f64>),
    ) -> Self {
        let flag = match outcome {
            Outcome::Value(v) if !v.is_finite() => Flag::D,
            Outcome::Value(v) if range.1.is_some_and(|hi| v >= hi) => Flag::T,
            Outcome::Value(v) if range.0.is_some_and(|lo| v < lo) => Flag::D,
            Outcome::Value(_) => Flag::N,
            Outcome::Exception(_) => Flag::D,
            Outcome::Fault(_) => Flag::B,
        };
        Reading {
            at_ms,
            point,
            outcome,
            flag,
        }
    }

    /// The value, if there is one.
    pub fn value(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Value(v) => Some(v),
            _ => None,
        }
    }
}
