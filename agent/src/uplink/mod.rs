//! Uplinks: delivering what the store holds to systems outside the plant.
//!
//! - [`audit`]: the evidence chain to the audit system, at least once, in order, idempotently.

pub mod audit;
