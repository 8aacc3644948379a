//! Golden RTU frames: every function code and every exception the seal node answers, byte by
//! byte with one line per field. CRCs were computed by an implementation independent of the crate.
//! The node they are sent to is [`Fixture::Commissioned`] unless stated otherwise: unit 17, 19200
//! 8E1, debounce 50 ms, span 5000 mm, seal minimum 1000 mm, travel 8000 ms, serial `SN-0001`, lid
//! closed, gate shut, level 12 mA (settled: sealed).
//!
//! They are part of the library (plain constants, nothing of them is linked unless used) so that
//! every peer of the seal node can be checked against the same bytes: the firmware's own tests,
//! the agent's Modbus client and the simulator's Modbus TCP endpoints. [`golden_settings`] and
//! [`GOLDEN_SERIAL`] describe the node; [`SEALED`] is the input it is settled with.

use crate::modbus::UnitId;
use crate::{BaudRate, InputSample, Parity, Settings};

/// The golden node's unit.
pub const GOLDEN_UNIT: u8 = 17;
/// The golden node's serial number.
pub const GOLDEN_SERIAL: &str = "SN-0001";

/// The settings of the golden node.
pub const fn golden_settings() -> Settings {
    Settings {
        unit_id: match UnitId::new(GOLDEN_UNIT) {
            Some(u) => u,
            None => panic!("17 is a unit id"),
        },
        baud: BaudRate::B19200,
        parity: Parity::Even,
        debounce_ms: 50,
        level_span_mm: 5_000,
        seal_level_min_mm: 1_000,
        travel_time_ms: 8_000,
    }
}

/// Lid closed, gate shut, 12 mA: the input the golden node is settled with.
pub const SEALED: InputSample = InputSample {
    lid_closed: true,
    lid_open: false,
    gate_open: false,
    level_ua: 12_000,
};

/// Which node a golden frame is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// Commissioned node, settled inputs.
    Commissioned,
    /// The same, but its settings storage fails every write.
    FailingStorage,
}

/// A request and the reply it must get (`None`: no reply at all).
#[derive(Debug, Clone, Copy)]
pub struct Golden {
    /// Name, for failure messages.
    pub name: &'static str,
    /// The node it is sent to.
    pub fixture: Fixture,
    /// The request ADU (RTU, CRC included).
    pub request: &'static [u8],
    /// The reply ADU, if any.
    pub reply: Option<&'static [u8]>,
}

/// 01: both coils off on a fresh node
pub const READ_COILS_REQ: &[u8] = &[
    0x11, // unit 17
    0x01, // function 0x01: read coils
    0x00, 0x00, // start = 0
    0x00, 0x02, // count = 2
    0xBF, 0x5B, // CRC, low byte first
];
/// Reply to [`READ_COILS_REQ`].
pub const READ_COILS_RSP: &[u8] = &[
    0x11, // unit 17
    0x01, // function 0x01: read coils
    0x01, // byte count = 1
    0x00, // identify off, service mode off
    0x55, 0x48, // CRC, low byte first
];

/// 02: lid closed, gate shut, no faults
pub const READ_DISCRETE_INPUTS_REQ: &[u8] = &[
    0x11, // unit 17
    0x02, // function 0x02: read discrete inputs
    0x00, 0x00, // start = 0
    0x00, 0x05, // count = 5
    0xBA, 0x99, // CRC, low byte first
];
/// Reply to [`READ_DISCRETE_INPUTS_REQ`].
pub const READ_DISCRETE_INPUTS_RSP: &[u8] = &[
    0x11, // unit 17
    0x02, // function 0x02: read discrete inputs
    0x01, // byte count = 1
    0x01, // lid closed; lid open, gate open, lid fault, level fault off
    0x64, 0x88, // CRC, low byte first
];

/// 03: the commissioned settings
pub const READ_HOLDING_REGISTERS_REQ: &[u8] = &[
    0x11, // unit 17
    0x03, // function 0x03: read holding registers
    0x00, 0x00, // start = 0
    0x00, 0x08, // count = 8
    0x46, 0x9C, // CRC, low byte first
];
/// Reply to [`READ_HOLDING_REGISTERS_REQ`].
pub const READ_HOLDING_REGISTERS_RSP: &[u8] = &[
    0x11, // unit 17
    0x03, // function 0x03: read holding registers
    0x10, // byte count = 16
    0x00, 0x11, // unit id = 17
    0x00, 0xC0, // baud / 100 = 192
    0x00, 0x02, // parity (even) = 2
    0x00, 0x32, // debounce ms = 50
    0x13, 0x88, // level span mm = 5000
    0x03, 0xE8, // seal level min mm = 1000
    0x1F, 0x40, // travel time ms = 8000
    0x00, 0x00, // commit (reads 0) = 0
    0x99, 0x7B, // CRC, low byte first
];

/// 04: level 12 mA = 2500 mm of a 5000 mm span, sealed
pub const READ_INPUT_REGISTERS_REQ: &[u8] = &[
    0x11, // unit 17
    0x04, // function 0x04: read input registers
    0x00, 0x00, // start = 0
    0x00, 0x04, // count = 4
    0xF3, 0x59, // CRC, low byte first
];
/// Reply to [`READ_INPUT_REGISTERS_REQ`].
pub const READ_INPUT_REGISTERS_RSP: &[u8] = &[
    0x11, // unit 17
    0x04, // function 0x04: read input registers
    0x08, // byte count = 8
    0x09, 0xC4, // level mm = 2500
    0x2E, 0xE0, // level raw uA = 12000
    0x00, 0x01, // seal state (sealed) = 1
    0x00, 0x00, // fault bits = 0
    0xE3, 0x33, // CRC, low byte first
];

/// 05: echo
pub const WRITE_SINGLE_COIL_REQ: &[u8] = &[
    0x11, // unit 17
    0x05, // function 0x05: write single coil
    0x00, 0x01, // address (service mode) = 1
    0xFF, 0x00, // value ON
    0xDF, 0x6A, // CRC, low byte first
];
/// Reply to [`WRITE_SINGLE_COIL_REQ`].
pub const WRITE_SINGLE_COIL_RSP: &[u8] = &[
    0x11, // unit 17
    0x05, // function 0x05: write single coil
    0x00, 0x01, // address (service mode) = 1
    0xFF, 0x00, // value ON
    0xDF, 0x6A, // CRC, low byte first
];

/// 06: echo (staged, not yet committed)
pub const WRITE_SINGLE_REGISTER_REQ: &[u8] = &[
    0x11, // unit 17
    0x06, // function 0x06: write single register
    0x00, 0x03, // address (debounce ms) = 3
    0x00, 0x64, // value = 100
    0x7A, 0xB1, // CRC, low byte first
];
/// Reply to [`WRITE_SINGLE_REGISTER_REQ`].
pub const WRITE_SINGLE_REGISTER_RSP: &[u8] = &[
    0x11, // unit 17
    0x06, // function 0x06: write single register
    0x00, 0x03, // address (debounce ms) = 3
    0x00, 0x64, // value = 100
    0x7A, 0xB1, // CRC, low byte first
];

/// 0F
pub const WRITE_MULTIPLE_COILS_REQ: &[u8] = &[
    0x11, // unit 17
    0x0F, // function 0x0f: write multiple coils
    0x00, 0x00, // start = 0
    0x00, 0x02, // count = 2
    0x01, // byte count = 1
    0x03, // both on
    0x9F, 0x9A, // CRC, low byte first
];
/// Reply to [`WRITE_MULTIPLE_COILS_REQ`].
pub const WRITE_MULTIPLE_COILS_RSP: &[u8] = &[
    0x11, // unit 17
    0x0F, // function 0x0f: write multiple coils
    0x00, 0x00, // start = 0
    0x00, 0x02, // count = 2
    0xD6, 0x9A, // CRC, low byte first
];

/// 10: staged settings
pub const WRITE_MULTIPLE_REGISTERS_REQ: &[u8] = &[
    0x11, // unit 17
    0x10, // function 0x10: write multiple registers
    0x00, 0x03, // start = 3
    0x00, 0x03, // count = 3
    0x06, // byte count = 6
    0x00, 0x64, // debounce ms = 100
    0x17, 0x70, // level span mm = 6000
    0x04, 0xB0, // seal level min mm = 1200
    0x5E, 0xCC, // CRC, low byte first
];
/// Reply to [`WRITE_MULTIPLE_REGISTERS_REQ`].
pub const WRITE_MULTIPLE_REGISTERS_RSP: &[u8] = &[
    0x11, // unit 17
    0x10, // function 0x10: write multiple registers
    0x00, 0x03, // start = 3
    0x00, 0x03, // count = 3
    0x72, 0x98, // CRC, low byte first
];

/// 10: stage and commit in one request
pub const COMMIT_SETTINGS_REQ: &[u8] = &[
    0x11, // unit 17
    0x10, // function 0x10: write multiple registers
    0x00, 0x05, // start = 5
    0x00, 0x03, // count = 3
    0x06, // byte count = 6
    0x05, 0xDC, // seal level min mm = 1500
    0x23, 0x28, // travel time ms = 9000
    0xC0, 0xDE, // commit magic 0xC0DE
    0x42, 0x52, // CRC, low byte first
];
/// Reply to [`COMMIT_SETTINGS_REQ`].
pub const COMMIT_SETTINGS_RSP: &[u8] = &[
    0x11, // unit 17
    0x10, // function 0x10: write multiple registers
    0x00, 0x05, // start = 5
    0x00, 0x03, // count = 3
    0x92, 0x99, // CRC, low byte first
];

/// 08/00
pub const DIAGNOSTICS_ECHO_REQ: &[u8] = &[
    0x11, // unit 17
    0x08, // function 0x08: diagnostics
    0x00, 0x00, // sub-function 00: return query data = 0
    0xA5, 0x37, // data
    0xD8, 0x1D, // CRC, low byte first
];
/// Reply to [`DIAGNOSTICS_ECHO_REQ`].
pub const DIAGNOSTICS_ECHO_RSP: &[u8] = &[
    0x11, // unit 17
    0x08, // function 0x08: diagnostics
    0x00, 0x00, // sub-function 00: return query data = 0
    0xA5, 0x37, // data, echoed
    0xD8, 0x1D, // CRC, low byte first
];

/// 2B/0E basic stream
pub const DEVICE_ID_BASIC_REQ: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x01, // read code 01: basic, stream
    0x00, // object id 0
    0xB1, 0xB4, // CRC, low byte first
];
/// Reply to [`DEVICE_ID_BASIC_REQ`].
pub const DEVICE_ID_BASIC_RSP: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x01, // read code 01
    0x83, // conformity: extended, individual access
    0x00, // no more follows
    0x00, // next object id
    0x03, // 3 objects
    0x00, // object 0x00: vendor
    0x09, // length 9
    0x73, 0x65, 0x61, 0x6C, 0x77, 0x61, 0x74, 0x63, 0x68, // "sealwatch"
    0x01, // object 0x01: product code
    0x06, // length 6
    0x53, 0x57, 0x2D, 0x53, 0x4E, 0x31, // "SW-SN1"
    0x02, // object 0x02: revision
    0x05, // length 5
    0x30, 0x2E, 0x31, 0x2E, 0x30, // "0.1.0"
    0x24, 0xCC, // CRC, low byte first
];

/// 2B/0E extended stream: vendor, product code, revision, product name, serial
pub const DEVICE_ID_EXTENDED_REQ: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x03, // read code 03: extended, stream
    0x00, // object id 0
    0xB0, 0xD4, // CRC, low byte first
];
/// Reply to [`DEVICE_ID_EXTENDED_REQ`].
pub const DEVICE_ID_EXTENDED_RSP: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x03, // read code 03
    0x83, // conformity
    0x00, // no more follows
    0x00, // next object id
    0x05, // 5 objects
    0x00, // object 0x00: vendor
    0x09, // length 9
    0x73, 0x65, 0x61, 0x6C, 0x77, 0x61, 0x74, 0x63, 0x68, // "sealwatch"
    0x01, // object 0x01: product code
    0x06, // length 6
    0x53, 0x57, 0x2D, 0x53, 0x4E, 0x31, // "SW-SN1"
    0x02, // object 0x02: revision
    0x05, // length 5
    0x30, 0x2E, 0x31, 0x2E, 0x30, // "0.1.0"
    0x04, // object 0x04: product name
    0x13, // length 19
    0x73, 0x65, 0x61, 0x6C, 0x77, 0x61, 0x74, 0x63, 0x68, 0x20, 0x73, 0x65, 0x61, 0x6C, 0x20, 0x6E,
    0x6F, 0x64, 0x65, // "sealwatch seal node"
    0x80, // object 0x80 (private): serial number
    0x07, // length 7
    0x53, 0x4E, 0x2D, 0x30, 0x30, 0x30, 0x31, // "SN-0001"
    0xE0, 0xCB, // CRC, low byte first
];

/// 2B/0E individual access
pub const DEVICE_ID_SERIAL_REQ: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x04, // read code 04: individual
    0x80, // object id 0x80
    0xB3, 0x44, // CRC, low byte first
];
/// Reply to [`DEVICE_ID_SERIAL_REQ`].
pub const DEVICE_ID_SERIAL_RSP: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x04, // read code 04
    0x83, // conformity
    0x00, // no more follows
    0x00, // next object id
    0x01, // 1 object
    0x80, // object 0x80: serial number
    0x07, // length 7
    0x53, 0x4E, 0x2D, 0x30, 0x30, 0x30, 0x31, // "SN-0001"
    0x68, 0xDB, // CRC, low byte first
];

/// 01: a function we do not implement
pub const EXC_01_UNSUPPORTED_FUNCTION_REQ: &[u8] = &[
    0x11, // unit 17
    0x07, // function 0x07: read exception status (not implemented)
    0x4C, 0x22, // CRC, low byte first
];
/// Reply to [`EXC_01_UNSUPPORTED_FUNCTION_REQ`].
pub const EXC_01_UNSUPPORTED_FUNCTION_RSP: &[u8] = &[
    0x11, // unit 17
    0x87, // function 0x07 | 0x80: exception
    0x01, // exception 01: illegal function
    0x83, 0xF5, // CRC, low byte first
];

/// 01: an unsupported diagnostics sub-function
pub const EXC_01_DIAGNOSTICS_SUB_FUNCTION_REQ: &[u8] = &[
    0x11, // unit 17
    0x08, // function 0x08: diagnostics
    0x00, 0x0A, // sub-function 0A: clear counters (not implemented) = 10
    0x00, 0x00, // data = 0
    0xC2, 0x99, // CRC, low byte first
];
/// Reply to [`EXC_01_DIAGNOSTICS_SUB_FUNCTION_REQ`].
pub const EXC_01_DIAGNOSTICS_SUB_FUNCTION_RSP: &[u8] = &[
    0x11, // unit 17
    0x88, // function 0x08 | 0x80: exception
    0x01, // exception 01: illegal function
    0x86, 0x05, // CRC, low byte first
];

/// 02
pub const EXC_02_READ_PAST_HOLDING_REQ: &[u8] = &[
    0x11, // unit 17
    0x03, // function 0x03: read holding registers
    0x00, 0x00, // start = 0
    0x00, 0x09, // count, one past the map = 9
    0x87, 0x5C, // CRC, low byte first
];
/// Reply to [`EXC_02_READ_PAST_HOLDING_REQ`].
pub const EXC_02_READ_PAST_HOLDING_RSP: &[u8] = &[
    0x11, // unit 17
    0x83, // function 0x03 | 0x80: exception
    0x02, // exception 02: illegal data address
    0xC1, 0x34, // CRC, low byte first
];

/// 02
pub const EXC_02_READ_PAST_INPUTS_REQ: &[u8] = &[
    0x11, // unit 17
    0x04, // function 0x04: read input registers
    0x00, 0x2E, // start, past the map = 46
    0x00, 0x01, // count = 1
    0x53, 0x53, // CRC, low byte first
];
/// Reply to [`EXC_02_READ_PAST_INPUTS_REQ`].
pub const EXC_02_READ_PAST_INPUTS_RSP: &[u8] = &[
    0x11, // unit 17
    0x84, // function 0x04 | 0x80: exception
    0x02, // exception 02: illegal data address
    0xC3, 0x04, // CRC, low byte first
];

/// 02
pub const EXC_02_WRITE_COIL_OUTSIDE_REQ: &[u8] = &[
    0x11, // unit 17
    0x05, // function 0x05: write single coil
    0x00, 0x02, // address, past the coils = 2
    0xFF, 0x00, // value ON
    0x2F, 0x6A, // CRC, low byte first
];
/// Reply to [`EXC_02_WRITE_COIL_OUTSIDE_REQ`].
pub const EXC_02_WRITE_COIL_OUTSIDE_RSP: &[u8] = &[
    0x11, // unit 17
    0x85, // function 0x05 | 0x80: exception
    0x02, // exception 02: illegal data address
    0xC2, 0x94, // CRC, low byte first
];

/// 02: individual access to an absent object
pub const EXC_02_DEVICE_ID_UNKNOWN_OBJECT_REQ: &[u8] = &[
    0x11, // unit 17
    0x2B, // function 0x2b: encapsulated interface
    0x0E, // MEI: read device identification
    0x04, // read code 04: individual
    0x05, // object 0x05: model name (not present)
    0x72, 0xE7, // CRC, low byte first
];
/// Reply to [`EXC_02_DEVICE_ID_UNKNOWN_OBJECT_REQ`].
pub const EXC_02_DEVICE_ID_UNKNOWN_OBJECT_RSP: &[u8] = &[
    0x11, // unit 17
    0xAB, // function 0x2b | 0x80: exception
    0x02, // exception 02: illegal data address
    0xDF, 0x34, // CRC, low byte first
];

/// 03
pub const EXC_03_READ_ZERO_COUNT_REQ: &[u8] = &[
    0x11, // unit 17
    0x03, // function 0x03: read holding registers
    0x00, 0x00, // start = 0
    0x00, 0x00, // count 0 = 0
    0x47, 0x5A, // CRC, low byte first
];
/// Reply to [`EXC_03_READ_ZERO_COUNT_REQ`].
pub const EXC_03_READ_ZERO_COUNT_RSP: &[u8] = &[
    0x11, // unit 17
    0x83, // function 0x03 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x00, 0xF4, // CRC, low byte first
];

/// 03
pub const EXC_03_READ_TOO_MANY_REQ: &[u8] = &[
    0x11, // unit 17
    0x04, // function 0x04: read input registers
    0x00, 0x00, // start = 0
    0x00, 0x7E, // count above 125 = 126
    0x72, 0xBA, // CRC, low byte first
];
/// Reply to [`EXC_03_READ_TOO_MANY_REQ`].
pub const EXC_03_READ_TOO_MANY_RSP: &[u8] = &[
    0x11, // unit 17
    0x84, // function 0x04 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x02, 0xC4, // CRC, low byte first
];

/// 03
pub const EXC_03_COIL_VALUE_REQ: &[u8] = &[
    0x11, // unit 17
    0x05, // function 0x05: write single coil
    0x00, 0x00, // address = 0
    0x12, 0x34, // value neither FF00 nor 0000
    0xC2, 0x2D, // CRC, low byte first
];
/// Reply to [`EXC_03_COIL_VALUE_REQ`].
pub const EXC_03_COIL_VALUE_RSP: &[u8] = &[
    0x11, // unit 17
    0x85, // function 0x05 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x03, 0x54, // CRC, low byte first
];

/// 03: invalid setting
pub const EXC_03_UNIT_ID_ZERO_REQ: &[u8] = &[
    0x11, // unit 17
    0x06, // function 0x06: write single register
    0x00, 0x00, // address (unit id) = 0
    0x00, 0x00, // value 0, not 1..=247 = 0
    0x8B, 0x5A, // CRC, low byte first
];
/// Reply to [`EXC_03_UNIT_ID_ZERO_REQ`].
pub const EXC_03_UNIT_ID_ZERO_RSP: &[u8] = &[
    0x11, // unit 17
    0x86, // function 0x06 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x03, 0xA4, // CRC, low byte first
];

/// 03
pub const EXC_03_BAD_COMMIT_MAGIC_REQ: &[u8] = &[
    0x11, // unit 17
    0x06, // function 0x06: write single register
    0x00, 0x07, // address (commit) = 7
    0x12, 0x34, // not the commit magic = 4660
    0x37, 0xEC, // CRC, low byte first
];
/// Reply to [`EXC_03_BAD_COMMIT_MAGIC_REQ`].
pub const EXC_03_BAD_COMMIT_MAGIC_RSP: &[u8] = &[
    0x11, // unit 17
    0x86, // function 0x06 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x03, 0xA4, // CRC, low byte first
];

/// 03: settings valid one by one, not together
pub const EXC_03_COMMIT_INCONSISTENT_REQ: &[u8] = &[
    0x11, // unit 17
    0x10, // function 0x10: write multiple registers
    0x00, 0x05, // start = 5
    0x00, 0x03, // count = 3
    0x06, // byte count = 6
    0x13, 0x89, // seal level min mm, above the span = 5001
    0x1F, 0x40, // travel time ms = 8000
    0xC0, 0xDE, // commit magic
    0xC1, 0x24, // CRC, low byte first
];
/// Reply to [`EXC_03_COMMIT_INCONSISTENT_REQ`].
pub const EXC_03_COMMIT_INCONSISTENT_RSP: &[u8] = &[
    0x11, // unit 17
    0x90, // function 0x10 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x0D, 0xC4, // CRC, low byte first
];

/// 03
pub const EXC_03_BYTE_COUNT_REQ: &[u8] = &[
    0x11, // unit 17
    0x10, // function 0x10: write multiple registers
    0x00, 0x03, // start = 3
    0x00, 0x02, // count = 2
    0x02, // byte count, should be 4 = 2
    0x00, 0x64, // value = 100
    0x6A, 0x0C, // CRC, low byte first
];
/// Reply to [`EXC_03_BYTE_COUNT_REQ`].
pub const EXC_03_BYTE_COUNT_RSP: &[u8] = &[
    0x11, // unit 17
    0x90, // function 0x10 | 0x80: exception
    0x03, // exception 03: illegal data value
    0x0D, 0xC4, // CRC, low byte first
];

/// 04: the settings storage refuses the write
pub const EXC_04_STORAGE_FAILS_REQ: &[u8] = &[
    0x11, // unit 17
    0x06, // function 0x06: write single register
    0x00, 0x07, // address (commit) = 7
    0xC0, 0xDE, // commit magic
    0xEA, 0xC3, // CRC, low byte first
];
/// Reply to [`EXC_04_STORAGE_FAILS_REQ`].
pub const EXC_04_STORAGE_FAILS_RSP: &[u8] = &[
    0x11, // unit 17
    0x86, // function 0x06 | 0x80: exception
    0x04, // exception 04: server device failure
    0x42, 0x66, // CRC, low byte first
];

/// another unit: ignored
pub const WRONG_UNIT_REQ: &[u8] = &[
    0x12, // unit 18
    0x03, // function 0x03: read holding registers
    0x00, 0x00, // start = 0
    0x00, 0x01, // count = 1
    0x86, 0xA9, // CRC, low byte first
];

/// broadcast write: applied, not answered
pub const BROADCAST_WRITE_REQ: &[u8] = &[
    0x00, // unit 0 (broadcast)
    0x05, // function 0x05: write single coil
    0x00, 0x00, // address (identify) = 0
    0xFF, 0x00, // value ON
    0x8D, 0xEB, // CRC, low byte first
];

/// broadcast read: ignored
pub const BROADCAST_READ_REQ: &[u8] = &[
    0x00, // unit 0 (broadcast)
    0x03, // function 0x03: read holding registers
    0x00, 0x00, // start = 0
    0x00, 0x01, // count = 1
    0x85, 0xDB, // CRC, low byte first
];

/// Every golden frame.
pub const ALL: &[Golden] = &[
    Golden {
        name: "READ_COILS",
        fixture: Fixture::Commissioned,
        request: READ_COILS_REQ,
        reply: Some(READ_COILS_RSP),
    },
    Golden {
        name: "READ_DISCRETE_INPUTS",
        fixture: Fixture::Commissioned,
        request: READ_DISCRETE_INPUTS_REQ,
        reply: Some(READ_DISCRETE_INPUTS_RSP),
    },
    Golden {
        name: "READ_HOLDING_REGISTERS",
        fixture: Fixture::Commissioned,
        request: READ_HOLDING_REGISTERS_REQ,
        reply: Some(READ_HOLDING_REGISTERS_RSP),
    },
    Golden {
        name: "READ_INPUT_REGISTERS",
        fixture: Fixture::Commissioned,
        request: READ_INPUT_REGISTERS_REQ,
        reply: Some(READ_INPUT_REGISTERS_RSP),
    },
    Golden {
        name: "WRITE_SINGLE_COIL",
        fixture: Fixture::Commissioned,
        request: WRITE_SINGLE_COIL_REQ,
        reply: Some(WRITE_SINGLE_COIL_RSP),
    },
    Golden {
        name: "WRITE_SINGLE_REGISTER",
        fixture: Fixture::Commissioned,
        request: WRITE_SINGLE_REGISTER_REQ,
        reply: Some(WRITE_SINGLE_REGISTER_RSP),
    },
    Golden {
        name: "WRITE_MULTIPLE_COILS",
        fixture: Fixture::Commissioned,
        request: WRITE_MULTIPLE_COILS_REQ,
        reply: Some(WRITE_MULTIPLE_COILS_RSP),
    },
    Golden {
        name: "WRITE_MULTIPLE_REGISTERS",
        fixture: Fixture::Commissioned,
        request: WRITE_MULTIPLE_REGISTERS_REQ,
        reply: Some(WRITE_MULTIPLE_REGISTERS_RSP),
    },
    Golden {
        name: "COMMIT_SETTINGS",
        fixture: Fixture::Commissioned,
        request: COMMIT_SETTINGS_REQ,
        reply: Some(COMMIT_SETTINGS_RSP),
    },
    Golden {
        name: "DIAGNOSTICS_ECHO",
        fixture: Fixture::Commissioned,
        request: DIAGNOSTICS_ECHO_REQ,
        reply: Some(DIAGNOSTICS_ECHO_RSP),
    },
    Golden {
        name: "DEVICE_ID_BASIC",
        fixture: Fixture::Commissioned,
        request: DEVICE_ID_BASIC_REQ,
        reply: Some(DEVICE_ID_BASIC_RSP),
    },
    Golden {
        name: "DEVICE_ID_EXTENDED",
        fixture: Fixture::Commissioned,
        request: DEVICE_ID_EXTENDED_REQ,
        reply: Some(DEVICE_ID_EXTENDED_RSP),
    },
    Golden {
        name: "DEVICE_ID_SERIAL",
        fixture: Fixture::Commissioned,
        request: DEVICE_ID_SERIAL_REQ,
        reply: Some(DEVICE_ID_SERIAL_RSP),
    },
    Golden {
        name: "EXC_01_UNSUPPORTED_FUNCTION",
        fixture: Fixture::Commissioned,
        request: EXC_01_UNSUPPORTED_FUNCTION_REQ,
        reply: Some(EXC_01_UNSUPPORTED_FUNCTION_RSP),
    },
    Golden {
        name: "EXC_01_DIAGNOSTICS_SUB_FUNCTION",
        fixture: Fixture::Commissioned,
        request: EXC_01_DIAGNOSTICS_SUB_FUNCTION_REQ,
        reply: Some(EXC_01_DIAGNOSTICS_SUB_FUNCTION_RSP),
    },
    Golden {
        name: "EXC_02_READ_PAST_HOLDING",
        fixture: Fixture::Commissioned,
        request: EXC_02_READ_PAST_HOLDING_REQ,
        reply: Some(EXC_02_READ_PAST_HOLDING_RSP),
    },
    Golden {
        name: "EXC_02_READ_PAST_INPUTS",
        fixture: Fixture::Commissioned,
        request: EXC_02_READ_PAST_INPUTS_REQ,
        reply: Some(EXC_02_READ_PAST_INPUTS_RSP),
    },
    Golden {
        name: "EXC_02_WRITE_COIL_OUTSIDE",
        fixture: Fixture::Commissioned,
        request: EXC_02_WRITE_COIL_OUTSIDE_REQ,
        reply: Some(EXC_02_WRITE_COIL_OUTSIDE_RSP),
    },
    Golden {
        name: "EXC_02_DEVICE_ID_UNKNOWN_OBJECT",
        fixture: Fixture::Commissioned,
        request: EXC_02_DEVICE_ID_UNKNOWN_OBJECT_REQ,
        reply: Some(EXC_02_DEVICE_ID_UNKNOWN_OBJECT_RSP),
    },
    Golden {
        name: "EXC_03_READ_ZERO_COUNT",
        fixture: Fixture::Commissioned,
        request: EXC_03_READ_ZERO_COUNT_REQ,
        reply: Some(EXC_03_READ_ZERO_COUNT_RSP),
    },
    Golden {
        name: "EXC_03_READ_TOO_MANY",
        fixture: Fixture::Commissioned,
        request: EXC_03_READ_TOO_MANY_REQ,
        reply: Some(EXC_03_READ_TOO_MANY_RSP),
    },
    Golden {
        name: "EXC_03_COIL_VALUE",
        fixture: Fixture::Commissioned,
        request: EXC_03_COIL_VALUE_REQ,
        reply: Some(EXC_03_COIL_VALUE_RSP),
    },
    Golden {
        name: "EXC_03_UNIT_ID_ZERO",
        fixture: Fixture::Commissioned,
        request: EXC_03_UNIT_ID_ZERO_REQ,
        reply: Some(EXC_03_UNIT_ID_ZERO_RSP),
    },
    Golden {
        name: "EXC_03_BAD_COMMIT_MAGIC",
        fixture: Fixture::Commissioned,
        request: EXC_03_BAD_COMMIT_MAGIC_REQ,
        reply: Some(EXC_03_BAD_COMMIT_MAGIC_RSP),
    },
    Golden {
        name: "EXC_03_COMMIT_INCONSISTENT",
        fixture: Fixture::Commissioned,
        request: EXC_03_COMMIT_INCONSISTENT_REQ,
        reply: Some(EXC_03_COMMIT_INCONSISTENT_RSP),
    },
    Golden {
        name: "EXC_03_BYTE_COUNT",
        fixture: Fixture::Commissioned,
        request: EXC_03_BYTE_COUNT_REQ,
        reply: Some(EXC_03_BYTE_COUNT_RSP),
    },
    Golden {
        name: "EXC_04_STORAGE_FAILS",
        fixture: Fixture::FailingStorage,
        request: EXC_04_STORAGE_FAILS_REQ,
        reply: Some(EXC_04_STORAGE_FAILS_RSP),
    },
    Golden {
        name: "WRONG_UNIT",
        fixture: Fixture::Commissioned,
        request: WRONG_UNIT_REQ,
        reply: None,
    },
    Golden {
        name: "BROADCAST_WRITE",
        fixture: Fixture::Commissioned,
        request: BROADCAST_WRITE_REQ,
        reply: None,
    },
    Golden {
        name: "BROADCAST_READ",
        fixture: Fixture::Commissioned,
        request: BROADCAST_READ_REQ,
        reply: None,
    },
];
