//! The local seal state of one bin, derived from the conditioned inputs (DOMAIN.md, "seal breach").
//!
//! The node judges only what it can see locally:
//! 1. breach — material level below `seal_level_min` while the charging gate is open;
//! 2. breach — lid not closed (open or travelling) while the charging gate is open (interlock);
//! 3. unknown — a sensor needed for the verdict is faulty or unsettled, or the node has never been
//!    commissioned (the thresholds are plant settings, never built in). Sensor faults are *not*
//!    breaches: they are unknown time;
//! 4. sealed — lid closed and gate closed;
//! 5. charging — otherwise: lid or gate open with the seal held.
//!
//! Rules that need a charging schedule, `max_open_s` or furnace pressure (DOMAIN rules 3–5) are the
//! agent's. Invariant: a pure function of its inputs.

use super::level::LevelFault;
use super::lid::LidPosition;
use crate::registers::{EventCause, SealState};

/// Everything the verdict depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealInputs {
    /// Lid position from the plausibility check.
    pub lid: LidPosition,
    /// Debounced charging-gate switch, `None` while unsettled.
    pub gate_open: Option<bool>,
    /// Conditioned level, mm above the gate.
    pub level_mm: Result<u16, LevelFault>,
    /// The level that keeps the material seal, mm (technician setting).
    pub seal_level_min_mm: u16,
    /// False while the node runs on default settings (never commissioned).
    pub commissioned: bool,
}

/// The seal state and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealVerdict {
    /// The state.
    pub state: SealState,
    /// Its cause (breach rule, sensor fault, or none).
    pub cause: EventCause,
}

const fn verdict(state: SealState, cause: EventCause) -> SealVerdict {
    SealVerdict { state, cause }
}

/// The local seal state for `inputs`.
pub fn seal_state(inputs: &SealInputs) -> SealVerdict {
    if !inputs.commissioned {
        return verdict(SealState::Unknown, EventCause::SensorFault);
    }
    let gate_open = inputs.gate_open == Some(true);
    if gate_open {
        if let Ok(mm) = inputs.level_mm {
            if mm < inputs.seal_level_min_mm {
                return verdict(SealState::Breach, EventCause::LevelBelowSeal);
            }
        }
        if inputs.lid.is_not_closed() {
            return verdict(SealState::Breach, EventCause::LidAndGateOpen);
        }
    }
    let lid_known = matches!(
        inputs.lid,
        LidPosition::Closed | LidPosition::Open | LidPosition::Travelling
    );
    if !lid_known || inputs.gate_open.is_none() || (gate_open && inputs.level_mm.is_err()) {
        return verdict(SealState::Unknown, EventCause::SensorFault);
    }
    if inputs.lid == LidPosition::Closed && !gate_open {
        verdict(SealState::Sealed, EventCause::None)
    } else {
        verdict(SealState::Charging, EventCause::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::lid::LidFault;

    #[test]
    fn seal_state_table() {
        use EventCause as C;
        use LidPosition as L;
        use SealState as S;
        let low = Err(LevelFault::LowCurrent);
        // (lid, gate, level, commissioned, expected state, cause); seal_level_min = 1000 mm
        type Row = (L, Option<bool>, Result<u16, LevelFault>, bool, S, C);
        let rows: &[Row] = &[
            (L::Closed, Some(false), Ok(2_000), true, S::Sealed, C::None),
            (L::Closed, Some(false), low, true, S::Sealed, C::None), // level irrelevant while shut
            (L::Open, Some(false), Ok(2_000), true, S::Charging, C::None),
            (
                L::Travelling,
                Some(false),
                Ok(500),
                true,
                S::Charging,
                C::None,
            ),
            (L::Closed, Some(true), Ok(2_000), true, S::Charging, C::None),
            (L::Closed, Some(true), Ok(1_000), true, S::Charging, C::None), // at the minimum: held
            (
                L::Closed,
                Some(true),
                Ok(999),
                true,
                S::Breach,
                C::LevelBelowSeal,
            ),
            (
                L::Open,
                Some(true),
                Ok(2_000),
                true,
                S::Breach,
                C::LidAndGateOpen,
            ),
            (
                L::Travelling,
                Some(true),
                Ok(2_000),
                true,
                S::Breach,
                C::LidAndGateOpen,
            ),
            (
                L::Open,
                Some(true),
                Ok(10),
                true,
                S::Breach,
                C::LevelBelowSeal,
            ),
            (
                L::Unknown,
                Some(true),
                Ok(10),
                true,
                S::Breach,
                C::LevelBelowSeal,
            ),
            (L::Closed, Some(true), low, true, S::Unknown, C::SensorFault),
            (
                L::Fault(LidFault::BothSwitchesOn),
                Some(false),
                Ok(2_000),
                true,
                S::Unknown,
                C::SensorFault,
            ),
            (
                L::Fault(LidFault::NeitherSwitchTooLong),
                Some(true),
                Ok(2_000),
                true,
                S::Unknown,
                C::SensorFault,
            ),
            (
                L::Unknown,
                Some(false),
                Ok(2_000),
                true,
                S::Unknown,
                C::SensorFault,
            ),
            (L::Closed, None, Ok(2_000), true, S::Unknown, C::SensorFault),
            (
                L::Closed,
                Some(false),
                Ok(2_000),
                false,
                S::Unknown,
                C::SensorFault,
            ),
            (
                L::Open,
                Some(true),
                Ok(10),
                false,
                S::Unknown,
                C::SensorFault,
            ),
        ];
        for (i, &(lid, gate_open, level_mm, commissioned, state, cause)) in rows.iter().enumerate()
        {
            let inputs = SealInputs {
                lid,
                gate_open,
                level_mm,
                seal_level_min_mm: 1_000,
                commissioned,
            };
            assert_eq!(
                seal_state(&inputs),
                SealVerdict { state, cause },
                "row {i}: {inputs:?}"
            );
        }
    }
}
