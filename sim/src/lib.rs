//! sealwatch-sim: a simulated semi-coke plant (furnaces, coal bins, seal nodes, NMHC analyzers)
//! serving Modbus TCP on loopback and Modbus RTU on pseudo-terminals (running the firmware's seal
//! node), for the demo, the benchmarks and the end-to-end tests.
//!
//! The plant model ([`plant`]) is pure; [`serve`] runs it in real time and serves it ([`rtu`]:
//! the serial lines);
//! [`scenario`] scripts what goes wrong, and when; [`audit`] and [`platform`] stand in for the
//! audit system and the HJ 212 environmental platform.

pub mod audit;
pub mod plant;
pub mod platform;
pub mod rtu;
pub mod scenario;
pub mod serve;
