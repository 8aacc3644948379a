//! Uplinks: delivering what the store holds to systems outside the plant.
//!
//! - [`audit`]: the evidence chain to the audit system, at least once, in order, idempotently.
//! - [`hj212`]: NMHC minute and hourly values to the environmental platform over HJ 212-2017.

pub mod audit;
pub mod hj212;
