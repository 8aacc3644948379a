//! End-to-end tests: the simulated plant, independent Modbus peers and the agent run as separate
//! processes; assertions read what the agent stored.

mod evidence;
mod fixtures;
mod harness;
mod hj212;
mod hostile;
mod integrity;
mod interop;
mod operators;
mod polling;
mod rtu;
mod rules;
