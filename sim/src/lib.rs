//! sealwatch-sim: a simulated semi-coke plant (furnaces, coal bins, seal nodes, NMHC analyzers)
//! serving Modbus TCP on loopback and Modbus RTU on pseudo-terminals (running the firmware's seal
//! node), for the demo, the benchmarks and the end-to-end tests.
//!
//! The plant model ([`plant`]) is pure; [`nodes`] are the devices that answer for it (seal nodes
//! run the firmware); [`serve`] runs it in real time and serves it over Modbus TCP and RTU;
//! [`scenario`] scripts what goes wrong, and when; [`audit`] and [`platform`] stand in for the
//! audit system and the HJ 212 environmental platform.

pub mod audit;
pub mod nodes;
pub mod plant;
pub mod platform;
pub mod scenario;
pub mod serve;
