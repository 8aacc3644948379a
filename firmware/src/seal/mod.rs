//! Sensor conditioning for one coal bin: pure functions and small state machines fed
//! `(sample, now)`, never sleeping, never reading hardware.
//!
//! - [`debounce`]: limit-switch debouncing;
//! - [`lid`]: lid position from the two limit switches, with the plausibility check;
//! - [`level`]: 4–20 mA material level with the NAMUR NE43 fault ranges;
//! - [`state`]: the local seal state (sealed / charging / breach / unknown) from all of the above.

pub mod debounce;
pub mod level;
pub mod lid;
pub mod state;

pub use debounce::Debouncer;
pub use level::{LevelFault, LevelReading};
pub use lid::{LidFault, LidMonitor, LidPosition};
pub use state::{seal_state, SealInputs, SealVerdict};
