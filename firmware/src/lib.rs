//! Firmware core of the sealwatch seal node: the microcontroller at each coal bin on the furnace top.
//!
//! Everything here is `no_std`, allocation-free and sans-I/O, so the same code runs on the MCU, in the
//! simulated plant and in host tests. The register map in [`registers`] is the single definition of
//! what a seal node exposes over Modbus; the agent's `config/profiles/seal-node.toml` must agree with
//! it (a test in the agent proves it).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

pub mod registers;
