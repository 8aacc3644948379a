//! The agent's vocabulary, below everything else: what a poll produces ([`Reading`], [`Outcome`],
//! [`Flag`], [`Fault`]), how points are numbered ([`PointId`], [`PointTable`]) and the canonical
//! JSON every hash is taken over. Nothing here imports another module of the agent.

mod canonical;
mod instrument;
mod points;
mod reading;

pub use canonical::canonical_json;
pub use instrument::{FaultBit, FaultIndicator, StatusMap};
pub use points::{PointInfo, PointTable};
pub use reading::{Fault, Flag, InstrumentState, Outcome, PointId, Reading, SensorPart};
