//! Sans-I/O Modbus: CRC, RTU frame assembly, PDU codec and the slave dispatcher.
//!
//! Nothing here does I/O or reads a clock: bytes and [`Instant`](crate::time::Instant)s go in,
//! frames and replies come out. The same code runs on the MCU, in the simulator (every seal node,
//! on RTU lines and behind Modbus TCP endpoints alike, is a [`SealNode`](crate::SealNode); TCP
//! frames go through [`mbap`]) and in the agent's one Modbus client (request encoding, RTU and MBAP
//! framing and response parsing, with the `std` feature). Buffers are `heapless` and sized by the spec constants below;
//! no path that handles received bytes can panic.

pub mod crc;
pub mod frame;
pub mod mbap;
pub mod pdu;
pub mod slave;

/// Largest RTU ADU: unit (1) + PDU (253) + CRC (2).
pub const MAX_ADU_LEN: usize = 256;
/// Largest PDU: function code (1) + data (252).
pub const MAX_PDU_LEN: usize = 253;
/// Smallest RTU ADU: unit, function code, CRC.
pub const MIN_ADU_LEN: usize = 4;
/// Most bits one read (01, 02) may ask for.
pub const MAX_READ_BITS: u16 = 2000;
/// Most registers one read (03, 04) may ask for.
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most coils one write (0F) may carry.
pub const MAX_WRITE_BITS: u16 = 0x07B0;
/// Most registers one write (10) may carry.
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// The broadcast unit address: writes are applied by every slave, nobody answers.
pub const BROADCAST_UNIT: u8 = 0;

/// A buffer that holds one RTU ADU (a whole frame with CRC).
pub type AduBuf = heapless::Vec<u8, MAX_ADU_LEN>;
/// A buffer that holds one PDU (function code and data).
pub type PduBuf = heapless::Vec<u8, MAX_PDU_LEN>;

pub use frame::{
    decode_rtu, encode_rtu, encode_rtu_request, parse_rtu_response, Direction, Frame,
    FrameAssembler, FrameCounters, FrameError,
};
pub use mbap::{encode_mbap, split_mbap, MbapBuf, MbapError, MbapFrame, MAX_MBAP_LEN};
pub use pdu::{
    encode_read_request, read_request, AddressRange, Bits, DeviceIdObjects, EncodeError,
    ExceptionCode, FunctionCode, RangeError, ReadDeviceIdCode, Request, Response, ResponseError,
    Words,
};
pub use slave::{serve_pdu, DataModel, RtuSlave};

/// A valid slave address on a serial line: 1–247.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(u8);

impl UnitId {
    /// Lowest assignable unit address.
    pub const MIN: u8 = 1;
    /// Highest assignable unit address.
    pub const MAX: u8 = 247;
    /// Unit 1, the lowest.
    pub const FIRST: UnitId = UnitId(1);

    /// `Some` if `id` is an assignable slave address (1–247).
    pub const fn new(id: u8) -> Option<UnitId> {
        if id >= Self::MIN && id <= Self::MAX {
            Some(UnitId(id))
        } else {
            None
        }
    }

    /// The address as it goes on the wire.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl core::fmt::Display for UnitId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}
