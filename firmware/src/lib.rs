//! Firmware core of the sealwatch seal node: the microcontroller at each coal bin on the furnace top.
//!
//! Everything here is `no_std`, allocation-free and sans-I/O, so the same code runs on the MCU, in the
//! simulated plant and in host tests. The register map in [`registers`] is the single definition of
//! what a seal node exposes over Modbus; the agent's `config/profiles/seal-node.toml` must agree with
//! it (a test in the agent proves it).
//!
//! - [`modbus`]: CRC, RTU framing, PDU codec (requests and responses), the slave dispatcher;
//! - [`seal`]: sensor conditioning (debounce, lid plausibility, NE43 level, seal state);
//! - [`settings`]: technician settings, validation, two-slot CRC persistence;
//! - [`node`]: [`SealNode`], all of the above for one bin behind `on_byte` / `poll` /
//!   `update_inputs` / `handle_pdu`;
//! - [`io`]: the node driven over `embedded-io` (UART) and `embedded-hal` (pins);
//! - [`inputs_line`]: a tiny text protocol that carries sensor samples over a serial line (the QEMU
//!   image and host harnesses use it in place of real pins).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod inputs_line;
pub mod io;
pub mod modbus;
pub mod node;
pub mod registers;
pub mod seal;
pub mod settings;
pub mod test_vectors;
pub mod time;

pub use node::{DeviceIdentity, InputSample, PduAnswer, SealEvent, SealNode};
pub use settings::{BaudRate, Parity, RamStorage, Settings, SettingsStorage};
pub use time::Instant;
