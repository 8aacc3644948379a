//! What a device's own indicators say: fault indicators of a seal node's sensors and the
//! status register of an analyzer, as a profile maps them.

use super::{InstrumentState, SensorPart};

/// A point that says whether sensors of a seal node are faulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultIndicator {
    /// A nonzero value means this sensor is faulted.
    Flag(SensorPart),
    /// Each bit group set means its sensor is faulted.
    Bits(Vec<FaultBit>),
}

/// One bit group of a fault bit field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultBit {
    /// The bits.
    pub mask: u64,
    /// The sensor they fault.
    pub part: SensorPart,
    /// What they mean.
    pub meaning: String,
}

impl FaultIndicator {
    /// The faults a value of the indicator point `point` says, with their reasons.
    pub fn faults(&self, point: &str, value: u64) -> Vec<(SensorPart, String)> {
        match self {
            FaultIndicator::Flag(part) if value != 0 => {
                vec![(*part, format!("{} fault ({point} = {value})", part.name()))]
            }
            FaultIndicator::Flag(_) => Vec::new(),
            FaultIndicator::Bits(bits) => bits
                .iter()
                .filter(|b| value & b.mask != 0)
                .map(|b| {
                    (
                        b.part,
                        format!("{} ({point} 0x{:04X})", b.meaning, value & b.mask),
                    )
                })
                .collect(),
        }
    }
}

/// What the values of an analyzer's status register mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMap {
    /// Values and the state they mean.
    pub entries: Vec<(Vec<u64>, InstrumentState)>,
    /// The state of any other value.
    pub otherwise: InstrumentState,
}

impl StatusMap {
    /// The state a register value means.
    pub fn state_of(&self, value: u64) -> InstrumentState {
        self.entries
            .iter()
            .find(|(values, _)| values.contains(&value))
            .map_or(self.otherwise, |(_, state)| *state)
    }
}
