//! sealwatch-sim: a simulated semi-coke plant (furnaces, coal bins, seal nodes, NMHC analyzers)
//! serving Modbus TCP on loopback, for the demo and the end-to-end tests.
//!
//! The plant model ([`plant`]) is pure; [`serve`] runs it in real time and serves it;
//! [`scenario`] scripts what goes wrong, and when.

pub mod plant;
pub mod scenario;
pub mod serve;
