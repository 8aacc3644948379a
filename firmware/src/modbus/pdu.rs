//! Modbus PDU codec: requests and responses as typed values, encoded to and parsed from bytes.
//!
//! Both directions exist so the slave (parse requests, encode responses) and a master such as the
//! agent's poller or the commissioning CLI (encode requests, parse responses) share one codec.
//! Invariants: parsing never panics and never reads past the slice; every length on the wire is
//! checked against the spec limits ([`MAX_READ_REGISTERS`] and friends); a request that breaks a
//! rule parses to the [`ExceptionCode`] the spec prescribes for it, so the slave only forwards it.
//! A Modbus exception in a response is an *answer* ([`Response::Exception`]), not an error.

use core::fmt;

use super::{
    PduBuf, MAX_PDU_LEN, MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_BITS, MAX_WRITE_REGISTERS,
};
use crate::registers::Table;

/// The MEI type of Read Device Identification inside function code 0x2B.
pub const MEI_READ_DEVICE_ID: u8 = 0x0E;

/// Function codes this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionCode {
    /// 0x01 Read Coils.
    ReadCoils,
    /// 0x02 Read Discrete Inputs.
    ReadDiscreteInputs,
    /// 0x03 Read Holding Registers.
    ReadHoldingRegisters,
    /// 0x04 Read Input Registers.
    ReadInputRegisters,
    /// 0x05 Write Single Coil.
    WriteSingleCoil,
    /// 0x06 Write Single Register.
    WriteSingleRegister,
    /// 0x08 Diagnostics.
    Diagnostics,
    /// 0x0F Write Multiple Coils.
    WriteMultipleCoils,
    /// 0x10 Write Multiple Registers.
    WriteMultipleRegisters,
    /// 0x2B Encapsulated Interface Transport (MEI 0x0E: Read Device Identification).
    EncapsulatedInterface,
}

impl FunctionCode {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            FunctionCode::ReadCoils => 0x01,
            FunctionCode::ReadDiscreteInputs => 0x02,
            FunctionCode::ReadHoldingRegisters => 0x03,
            FunctionCode::ReadInputRegisters => 0x04,
            FunctionCode::WriteSingleCoil => 0x05,
            FunctionCode::WriteSingleRegister => 0x06,
            FunctionCode::Diagnostics => 0x08,
            FunctionCode::WriteMultipleCoils => 0x0F,
            FunctionCode::WriteMultipleRegisters => 0x10,
            FunctionCode::EncapsulatedInterface => 0x2B,
        }
    }

    /// The function code for a wire value, if this crate speaks it.
    pub const fn from_code(code: u8) -> Option<FunctionCode> {
        Some(match code {
            0x01 => FunctionCode::ReadCoils,
            0x02 => FunctionCode::ReadDiscreteInputs,
            0x03 => FunctionCode::ReadHoldingRegisters,
            0x04 => FunctionCode::ReadInputRegisters,
            0x05 => FunctionCode::WriteSingleCoil,
            0x06 => FunctionCode::WriteSingleRegister,
            0x08 => FunctionCode::Diagnostics,
            0x0F => FunctionCode::WriteMultipleCoils,
            0x10 => FunctionCode::WriteMultipleRegisters,
            0x2B => FunctionCode::EncapsulatedInterface,
            _ => return None,
        })
    }

    /// The read function for a data table.
    pub const fn read_for(table: Table) -> FunctionCode {
        match table {
            Table::Coil => FunctionCode::ReadCoils,
            Table::DiscreteInput => FunctionCode::ReadDiscreteInputs,
            Table::Holding => FunctionCode::ReadHoldingRegisters,
            Table::Input => FunctionCode::ReadInputRegisters,
        }
    }
}

/// A Modbus exception code, as answered by a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    /// 01: the function (or diagnostics sub-function) is not supported.
    IllegalFunction,
    /// 02: an address of the request is outside the device's map.
    IllegalDataAddress,
    /// 03: a value or quantity of the request is not allowed.
    IllegalDataValue,
    /// 04: the device failed while executing the request.
    ServerDeviceFailure,
    /// 05: accepted, will take long.
    Acknowledge,
    /// 06: busy with a long command.
    ServerDeviceBusy,
    /// 08: memory parity error.
    MemoryParityError,
    /// 0A: gateway path unavailable.
    GatewayPathUnavailable,
    /// 0B: gateway target device failed to respond.
    GatewayTargetFailed,
    /// Any other code.
    Other(u8),
}

impl ExceptionCode {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            ExceptionCode::IllegalFunction => 0x01,
            ExceptionCode::IllegalDataAddress => 0x02,
            ExceptionCode::IllegalDataValue => 0x03,
            ExceptionCode::ServerDeviceFailure => 0x04,
            ExceptionCode::Acknowledge => 0x05,
            ExceptionCode::ServerDeviceBusy => 0x06,
            ExceptionCode::MemoryParityError => 0x08,
            ExceptionCode::GatewayPathUnavailable => 0x0A,
            ExceptionCode::GatewayTargetFailed => 0x0B,
            ExceptionCode::Other(c) => c,
        }
    }

    /// Decodes a wire value.
    pub const fn from_code(code: u8) -> ExceptionCode {
        match code {
            0x01 => ExceptionCode::IllegalFunction,
            0x02 => ExceptionCode::IllegalDataAddress,
            0x03 => ExceptionCode::IllegalDataValue,
            0x04 => ExceptionCode::ServerDeviceFailure,
            0x05 => ExceptionCode::Acknowledge,
            0x06 => ExceptionCode::ServerDeviceBusy,
            0x08 => ExceptionCode::MemoryParityError,
            0x0A => ExceptionCode::GatewayPathUnavailable,
            0x0B => ExceptionCode::GatewayTargetFailed,
            c => ExceptionCode::Other(c),
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            ExceptionCode::IllegalFunction => "illegal function",
            ExceptionCode::IllegalDataAddress => "illegal data address",
            ExceptionCode::IllegalDataValue => "illegal data value",
            ExceptionCode::ServerDeviceFailure => "server device failure",
            ExceptionCode::Acknowledge => "acknowledge",
            ExceptionCode::ServerDeviceBusy => "server device busy",
            ExceptionCode::MemoryParityError => "memory parity error",
            ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
            ExceptionCode::GatewayTargetFailed => "gateway target device failed to respond",
            ExceptionCode::Other(_) => "unknown exception",
        };
        write!(f, "Modbus exception {:#04X} ({what})", self.code())
    }
}

/// Why an address range is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// Count is zero or above the function's limit.
    Quantity {
        /// Requested count.
        count: u16,
        /// Largest allowed count.
        max: u16,
    },
    /// `start + count` runs past address 0xFFFF.
    Overflow {
        /// First address.
        start: u16,
        /// Requested count.
        count: u16,
    },
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Quantity { count, max } => {
                write!(f, "quantity {count} is outside 1..={max}")
            }
            RangeError::Overflow { start, count } => {
                write!(f, "range {start} + {count} runs past address 65535")
            }
        }
    }
}

impl core::error::Error for RangeError {}

/// A contiguous, non-empty range of addresses in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressRange {
    start: u16,
    count: u16,
}

impl AddressRange {
    /// A range of `count` (1..=`max_count`) addresses from `start`, not running past 0xFFFF.
    pub const fn try_new(start: u16, count: u16, max_count: u16) -> Result<Self, RangeError> {
        if count == 0 || count > max_count {
            return Err(RangeError::Quantity {
                count,
                max: max_count,
            });
        }
        if start as u32 + count as u32 > 0x1_0000 {
            return Err(RangeError::Overflow { start, count });
        }
        Ok(AddressRange { start, count })
    }

    /// First address.
    pub const fn start(self) -> u16 {
        self.start
    }

    /// Number of addresses.
    pub const fn count(self) -> u16 {
        self.count
    }

    /// Every address of the range, in order.
    pub fn addresses(self) -> impl Iterator<Item = u16> {
        (0..self.count).map(move |i| self.start.wrapping_add(i))
    }
}

/// A sequence of bits: packed as on the wire (LSB of the first byte first) or a slice of bools.
#[derive(Debug, Clone, Copy)]
pub struct Bits<'a>(BitsRepr<'a>);

#[derive(Debug, Clone, Copy)]
enum BitsRepr<'a> {
    Packed { bytes: &'a [u8], count: u16 },
    Values(&'a [bool]),
}

impl<'a> Bits<'a> {
    /// `count` bits packed in `bytes`; `None` if `bytes` is too short for `count` bits.
    pub fn from_packed(bytes: &'a [u8], count: u16) -> Option<Self> {
        (bytes.len() >= usize::from(count).div_ceil(8))
            .then_some(Bits(BitsRepr::Packed { bytes, count }))
    }

    /// Bits from a slice of bools (at most 65535 are used).
    pub fn from_values(values: &'a [bool]) -> Self {
        let n = values.len().min(usize::from(u16::MAX));
        Bits(BitsRepr::Values(values.get(..n).unwrap_or(&[])))
    }

    /// Number of bits.
    pub fn len(&self) -> u16 {
        match self.0 {
            BitsRepr::Packed { count, .. } => count,
            BitsRepr::Values(v) => u16::try_from(v.len()).unwrap_or(u16::MAX),
        }
    }

    /// True if there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bit `i`, `None` past the end.
    pub fn get(&self, i: u16) -> Option<bool> {
        if i >= self.len() {
            return None;
        }
        match self.0 {
            BitsRepr::Packed { bytes, .. } => {
                let byte = bytes.get(usize::from(i / 8))?;
                Some(byte & (1 << (i % 8)) != 0)
            }
            BitsRepr::Values(v) => v.get(usize::from(i)).copied(),
        }
    }

    /// Every bit in order.
    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.len()).map(move |i| self.get(i).unwrap_or(false))
    }
}

impl PartialEq for Bits<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// A sequence of 16-bit registers: big-endian bytes as on the wire, or a slice of values.
#[derive(Debug, Clone, Copy)]
pub struct Words<'a>(WordsRepr<'a>);

#[derive(Debug, Clone, Copy)]
enum WordsRepr<'a> {
    Wire(&'a [u8]),
    Values(&'a [u16]),
}

impl<'a> Words<'a> {
    /// Registers from big-endian wire bytes; `None` if the length is odd.
    pub fn from_wire(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() % 2 == 0).then_some(Words(WordsRepr::Wire(bytes)))
    }

    /// Registers from values (at most 65535 are used).
    pub fn from_values(values: &'a [u16]) -> Self {
        let n = values.len().min(usize::from(u16::MAX));
        Words(WordsRepr::Values(values.get(..n).unwrap_or(&[])))
    }

    /// Number of registers.
    pub fn len(&self) -> u16 {
        let n = match self.0 {
            WordsRepr::Wire(b) => b.len() / 2,
            WordsRepr::Values(v) => v.len(),
        };
        u16::try_from(n).unwrap_or(u16::MAX)
    }

    /// True if there are no registers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Register `i`, `None` past the end.
    pub fn get(&self, i: u16) -> Option<u16> {
        let i = usize::from(i);
        match self.0 {
            WordsRepr::Wire(b) => {
                let hi = *b.get(2 * i)?;
                let lo = *b.get(2 * i + 1)?;
                Some(u16::from_be_bytes([hi, lo]))
            }
            WordsRepr::Values(v) => v.get(i).copied(),
        }
    }

    /// Every register in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.len()).map(move |i| self.get(i).unwrap_or(0))
    }
}

impl PartialEq for Words<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// Which objects a Read Device Identification request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadDeviceIdCode {
    /// 01: basic objects (vendor, product code, revision), stream access.
    Basic,
    /// 02: basic and regular objects, stream access.
    Regular,
    /// 03: basic, regular and extended objects, stream access.
    Extended,
    /// 04: one object, individual access.
    Individual,
}

impl ReadDeviceIdCode {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            ReadDeviceIdCode::Basic => 1,
            ReadDeviceIdCode::Regular => 2,
            ReadDeviceIdCode::Extended => 3,
            ReadDeviceIdCode::Individual => 4,
        }
    }

    /// Decodes a wire value.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => ReadDeviceIdCode::Basic,
            2 => ReadDeviceIdCode::Regular,
            3 => ReadDeviceIdCode::Extended,
            4 => ReadDeviceIdCode::Individual,
            _ => return None,
        })
    }
}

/// A request PDU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Request<'a> {
    /// 0x01.
    ReadCoils(AddressRange),
    /// 0x02.
    ReadDiscreteInputs(AddressRange),
    /// 0x03.
    ReadHoldingRegisters(AddressRange),
    /// 0x04.
    ReadInputRegisters(AddressRange),
    /// 0x05.
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// New state.
        value: bool,
    },
    /// 0x06.
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// New value.
        value: u16,
    },
    /// 0x0F.
    WriteMultipleCoils {
        /// First coil.
        start: u16,
        /// New states.
        values: Bits<'a>,
    },
    /// 0x10.
    WriteMultipleRegisters {
        /// First register.
        start: u16,
        /// New values.
        values: Words<'a>,
    },
    /// 0x08 with a sub-function and its data.
    Diagnostics {
        /// Sub-function (0 = return query data).
        sub_function: u16,
        /// Data after the sub-function.
        data: &'a [u8],
    },
    /// 0x2B / 0x0E.
    ReadDeviceIdentification {
        /// Which objects.
        code: ReadDeviceIdCode,
        /// First object (stream) or the object (individual).
        object_id: u8,
    },
}

fn be(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

fn four(data: &[u8]) -> Result<(u16, u16), ExceptionCode> {
    match *data {
        [a, b, c, d] => Ok((be(a, b), be(c, d))),
        _ => Err(ExceptionCode::IllegalDataValue),
    }
}

/// Quantity problems are exception 03, a range past 0xFFFF is 02 (the spec's order of checks).
fn range(start: u16, count: u16, max: u16) -> Result<AddressRange, ExceptionCode> {
    AddressRange::try_new(start, count, max).map_err(|e| match e {
        RangeError::Quantity { .. } => ExceptionCode::IllegalDataValue,
        RangeError::Overflow { .. } => ExceptionCode::IllegalDataAddress,
    })
}

impl<'a> Request<'a> {
    /// The read of `range` in `table` (a range made for the table's limit, see
    /// [`Table::max_read`]).
    pub const fn read(table: Table, range: AddressRange) -> Request<'static> {
        match table {
            Table::Coil => Request::ReadCoils(range),
            Table::DiscreteInput => Request::ReadDiscreteInputs(range),
            Table::Holding => Request::ReadHoldingRegisters(range),
            Table::Input => Request::ReadInputRegisters(range),
        }
    }

    /// Parses a request PDU; an error is the exception the slave must answer with.
    pub fn parse(pdu: &'a [u8]) -> Result<Self, ExceptionCode> {
        let (&fc, data) = pdu.split_first().ok_or(ExceptionCode::IllegalFunction)?;
        let function = FunctionCode::from_code(fc).ok_or(ExceptionCode::IllegalFunction)?;
        if pdu.len() > MAX_PDU_LEN {
            return Err(ExceptionCode::IllegalDataValue);
        }
        Ok(match function {
            FunctionCode::ReadCoils | FunctionCode::ReadDiscreteInputs => {
                let (start, count) = four(data)?;
                let r = range(start, count, MAX_READ_BITS)?;
                if function == FunctionCode::ReadCoils {
                    Request::ReadCoils(r)
                } else {
                    Request::ReadDiscreteInputs(r)
                }
            }
            FunctionCode::ReadHoldingRegisters | FunctionCode::ReadInputRegisters => {
                let (start, count) = four(data)?;
                let r = range(start, count, MAX_READ_REGISTERS)?;
                if function == FunctionCode::ReadHoldingRegisters {
                    Request::ReadHoldingRegisters(r)
                } else {
                    Request::ReadInputRegisters(r)
                }
            }
            FunctionCode::WriteSingleCoil => {
                let (address, raw) = four(data)?;
                let value = match raw {
                    0xFF00 => true,
                    0x0000 => false,
                    _ => return Err(ExceptionCode::IllegalDataValue),
                };
                Request::WriteSingleCoil { address, value }
            }
            FunctionCode::WriteSingleRegister => {
                let (address, value) = four(data)?;
                Request::WriteSingleRegister { address, value }
            }
            FunctionCode::WriteMultipleCoils | FunctionCode::WriteMultipleRegisters => {
                let Some((head, payload)) = data.split_at_checked(5) else {
                    return Err(ExceptionCode::IllegalDataValue);
                };
                let start = be(head[0], head[1]);
                let count = be(head[2], head[3]);
                let byte_count = usize::from(head[4]);
                let (max, needed) = if function == FunctionCode::WriteMultipleCoils {
                    (MAX_WRITE_BITS, usize::from(count).div_ceil(8))
                } else {
                    (MAX_WRITE_REGISTERS, usize::from(count) * 2)
                };
                if count == 0 || count > max || byte_count != needed || payload.len() != byte_count
                {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                range(start, count, max)?;
                if function == FunctionCode::WriteMultipleCoils {
                    let values =
                        Bits::from_packed(payload, count).ok_or(ExceptionCode::IllegalDataValue)?;
                    Request::WriteMultipleCoils { start, values }
                } else {
                    let values =
                        Words::from_wire(payload).ok_or(ExceptionCode::IllegalDataValue)?;
                    Request::WriteMultipleRegisters { start, values }
                }
            }
            FunctionCode::Diagnostics => {
                let Some((sub, rest)) = data.split_at_checked(2) else {
                    return Err(ExceptionCode::IllegalDataValue);
                };
                Request::Diagnostics {
                    sub_function: be(sub[0], sub[1]),
                    data: rest,
                }
            }
            FunctionCode::EncapsulatedInterface => match *data {
                [MEI_READ_DEVICE_ID, code, object_id] => Request::ReadDeviceIdentification {
                    code: ReadDeviceIdCode::from_code(code)
                        .ok_or(ExceptionCode::IllegalDataValue)?,
                    object_id,
                },
                [MEI_READ_DEVICE_ID, ..] => return Err(ExceptionCode::IllegalDataValue),
                _ => return Err(ExceptionCode::IllegalFunction),
            },
        })
    }

    /// The function code of this request.
    pub const fn function(&self) -> FunctionCode {
        match self {
            Request::ReadCoils(_) => FunctionCode::ReadCoils,
            Request::ReadDiscreteInputs(_) => FunctionCode::ReadDiscreteInputs,
            Request::ReadHoldingRegisters(_) => FunctionCode::ReadHoldingRegisters,
            Request::ReadInputRegisters(_) => FunctionCode::ReadInputRegisters,
            Request::WriteSingleCoil { .. } => FunctionCode::WriteSingleCoil,
            Request::WriteSingleRegister { .. } => FunctionCode::WriteSingleRegister,
            Request::WriteMultipleCoils { .. } => FunctionCode::WriteMultipleCoils,
            Request::WriteMultipleRegisters { .. } => FunctionCode::WriteMultipleRegisters,
            Request::Diagnostics { .. } => FunctionCode::Diagnostics,
            Request::ReadDeviceIdentification { .. } => FunctionCode::EncapsulatedInterface,
        }
    }

    /// True for the functions a slave applies when they come as a broadcast (05, 06, 0F, 10).
    pub const fn is_write(&self) -> bool {
        matches!(
            self,
            Request::WriteSingleCoil { .. }
                | Request::WriteSingleRegister { .. }
                | Request::WriteMultipleCoils { .. }
                | Request::WriteMultipleRegisters { .. }
        )
    }

    /// Encodes the request PDU into `out` (cleared first).
    pub fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        out.clear();
        let mut w = Writer(out);
        w.u8(self.function().code())?;
        match *self {
            Request::ReadCoils(r)
            | Request::ReadDiscreteInputs(r)
            | Request::ReadHoldingRegisters(r)
            | Request::ReadInputRegisters(r) => {
                w.u16(r.start())?;
                w.u16(r.count())
            }
            Request::WriteSingleCoil { address, value } => {
                w.u16(address)?;
                w.u16(if value { 0xFF00 } else { 0x0000 })
            }
            Request::WriteSingleRegister { address, value } => {
                w.u16(address)?;
                w.u16(value)
            }
            Request::WriteMultipleCoils { start, values } => {
                let r = AddressRange::try_new(start, values.len(), MAX_WRITE_BITS)
                    .map_err(EncodeError::Range)?;
                w.u16(r.start())?;
                w.u16(r.count())?;
                w.bits(values)
            }
            Request::WriteMultipleRegisters { start, values } => {
                let r = AddressRange::try_new(start, values.len(), MAX_WRITE_REGISTERS)
                    .map_err(EncodeError::Range)?;
                w.u16(r.start())?;
                w.u16(r.count())?;
                w.words(values)
            }
            Request::Diagnostics { sub_function, data } => {
                w.u16(sub_function)?;
                w.slice(data)
            }
            Request::ReadDeviceIdentification { code, object_id } => {
                w.u8(MEI_READ_DEVICE_ID)?;
                w.u8(code.code())?;
                w.u8(object_id)
            }
        }
    }
}

/// The read request for `count` points of `table` from `start`.
pub fn read_request(table: Table, start: u16, count: u16) -> Result<Request<'static>, RangeError> {
    let max = table.max_read();
    Ok(Request::read(
        table,
        AddressRange::try_new(start, count, max)?,
    ))
}

/// Encodes the PDU of a read request for `count` points of `table` from `start` into `out`.
pub fn encode_read_request(
    table: Table,
    start: u16,
    count: u16,
    out: &mut PduBuf,
) -> Result<(), EncodeError> {
    read_request(table, start, count)
        .map_err(EncodeError::Range)?
        .encode(out)
}

/// The objects of a Read Device Identification response, as `(id, value)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIdObjects<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> DeviceIdObjects<'a> {
    /// Validates `count` objects laid out as `id, len, value…` filling `bytes` exactly.
    pub fn parse(bytes: &'a [u8], count: u8) -> Option<Self> {
        let mut rest = bytes;
        for _ in 0..count {
            let (&[_, len], tail) = rest.split_first_chunk::<2>()?;
            rest = tail.get(usize::from(len)..)?;
        }
        rest.is_empty().then_some(DeviceIdObjects { bytes, count })
    }

    /// Number of objects.
    pub const fn len(&self) -> u8 {
        self.count
    }

    /// True if there are no objects.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every `(id, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let mut rest = self.bytes;
        (0..self.count).map_while(move |_| {
            let (&[id, len], tail) = rest.split_first_chunk::<2>()?;
            let (value, after) = tail.split_at_checked(usize::from(len))?;
            rest = after;
            Some((id, value))
        })
    }

    /// The value of object `id`.
    pub fn get(&self, id: u8) -> Option<&'a [u8]> {
        self.iter().find(|(i, _)| *i == id).map(|(_, v)| v)
    }

    /// The raw object bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A response PDU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Response<'a> {
    /// 0x01.
    ReadCoils(Bits<'a>),
    /// 0x02.
    ReadDiscreteInputs(Bits<'a>),
    /// 0x03.
    ReadHoldingRegisters(Words<'a>),
    /// 0x04.
    ReadInputRegisters(Words<'a>),
    /// 0x05 (echo).
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// Written state.
        value: bool,
    },
    /// 0x06 (echo).
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// Written value.
        value: u16,
    },
    /// 0x0F.
    WriteMultipleCoils(AddressRange),
    /// 0x10.
    WriteMultipleRegisters(AddressRange),
    /// 0x08.
    Diagnostics {
        /// Sub-function.
        sub_function: u16,
        /// Data after the sub-function.
        data: &'a [u8],
    },
    /// 0x2B / 0x0E.
    DeviceIdentification {
        /// Read device id code of the request.
        code: u8,
        /// Conformity level of the device.
        conformity: u8,
        /// More objects follow in another transaction.
        more_follows: bool,
        /// Where the next transaction starts when `more_follows`.
        next_object_id: u8,
        /// The objects.
        objects: DeviceIdObjects<'a>,
    },
    /// An exception answer to `function`.
    Exception {
        /// Function code of the request (without the 0x80 bit).
        function: u8,
        /// The exception.
        code: ExceptionCode,
    },
}

/// Why a response does not fit its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// The PDU is empty or shorter than its function needs.
    TooShort {
        /// Bytes present.
        got: usize,
    },
    /// The function code is neither the request's nor its exception.
    UnexpectedFunction {
        /// The request's function code.
        expected: u8,
        /// What came back.
        got: u8,
    },
    /// The byte count does not match the request's quantity.
    ByteCount {
        /// Bytes the request's quantity needs.
        expected: usize,
        /// Byte count in the response.
        got: usize,
    },
    /// The PDU length disagrees with its own header.
    Length {
        /// Length the header implies.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A write or diagnostics echo differs from the request.
    EchoMismatch,
    /// A device identification response is malformed.
    Malformed,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::TooShort { got } => write!(f, "response PDU too short ({got} bytes)"),
            ResponseError::UnexpectedFunction { expected, got } => write!(
                f,
                "expected function code {expected:#04X} (or its exception), got {got:#04X}"
            ),
            ResponseError::ByteCount { expected, got } => {
                write!(f, "expected byte count {expected}, got {got}")
            }
            ResponseError::Length { expected, got } => {
                write!(f, "expected a {expected}-byte PDU, got {got} bytes")
            }
            ResponseError::EchoMismatch => write!(f, "the echo differs from the request"),
            ResponseError::Malformed => write!(f, "malformed device identification objects"),
        }
    }
}

impl core::error::Error for ResponseError {}

impl<'a> Response<'a> {
    /// Parses `pdu` as the answer to `request`, checking every count and echo against it.
    pub fn parse(request: &Request<'_>, pdu: &'a [u8]) -> Result<Self, ResponseError> {
        let expected_fc = request.function().code();
        if pdu.len() > MAX_PDU_LEN {
            return Err(ResponseError::Length {
                expected: MAX_PDU_LEN,
                got: pdu.len(),
            });
        }
        let (&fc, data) = pdu
            .split_first()
            .ok_or(ResponseError::TooShort { got: 0 })?;
        if fc == expected_fc | 0x80 {
            return match *data {
                [code] => Ok(Response::Exception {
                    function: expected_fc,
                    code: ExceptionCode::from_code(code),
                }),
                _ => Err(ResponseError::Length {
                    expected: 2,
                    got: pdu.len(),
                }),
            };
        }
        if fc != expected_fc {
            return Err(ResponseError::UnexpectedFunction {
                expected: expected_fc,
                got: fc,
            });
        }
        let exact = |n: usize| -> Result<(), ResponseError> {
            if pdu.len() == n {
                Ok(())
            } else {
                Err(ResponseError::Length {
                    expected: n,
                    got: pdu.len(),
                })
            }
        };
        match *request {
            Request::ReadCoils(r)
            | Request::ReadDiscreteInputs(r)
            | Request::ReadHoldingRegisters(r)
            | Request::ReadInputRegisters(r) => {
                let (&bc, payload) = data
                    .split_first()
                    .ok_or(ResponseError::TooShort { got: pdu.len() })?;
                let bits = matches!(
                    request,
                    Request::ReadCoils(_) | Request::ReadDiscreteInputs(_)
                );
                let needed = if bits {
                    usize::from(r.count()).div_ceil(8)
                } else {
                    usize::from(r.count()) * 2
                };
                if usize::from(bc) != needed {
                    return Err(ResponseError::ByteCount {
                        expected: needed,
                        got: usize::from(bc),
                    });
                }
                exact(2 + needed)?;
                Ok(match request {
                    Request::ReadCoils(_) => Response::ReadCoils(
                        Bits::from_packed(payload, r.count()).ok_or(ResponseError::Malformed)?,
                    ),
                    Request::ReadDiscreteInputs(_) => Response::ReadDiscreteInputs(
                        Bits::from_packed(payload, r.count()).ok_or(ResponseError::Malformed)?,
                    ),
                    Request::ReadHoldingRegisters(_) => Response::ReadHoldingRegisters(
                        Words::from_wire(payload).ok_or(ResponseError::Malformed)?,
                    ),
                    _ => Response::ReadInputRegisters(
                        Words::from_wire(payload).ok_or(ResponseError::Malformed)?,
                    ),
                })
            }
            Request::WriteSingleCoil { .. }
            | Request::WriteSingleRegister { .. }
            | Request::WriteMultipleCoils { .. }
            | Request::WriteMultipleRegisters { .. } => {
                exact(5)?;
                let mut req = PduBuf::new();
                request
                    .encode(&mut req)
                    .map_err(|_| ResponseError::EchoMismatch)?;
                if req.get(..5) != Some(pdu) {
                    return Err(ResponseError::EchoMismatch);
                }
                let (a, v) = (be(data[0], data[1]), be(data[2], data[3]));
                Ok(match *request {
                    Request::WriteSingleCoil { .. } => Response::WriteSingleCoil {
                        address: a,
                        value: v == 0xFF00,
                    },
                    Request::WriteSingleRegister { .. } => Response::WriteSingleRegister {
                        address: a,
                        value: v,
                    },
                    Request::WriteMultipleCoils { .. } => Response::WriteMultipleCoils(
                        AddressRange::try_new(a, v, MAX_WRITE_BITS)
                            .map_err(|_| ResponseError::EchoMismatch)?,
                    ),
                    _ => Response::WriteMultipleRegisters(
                        AddressRange::try_new(a, v, MAX_WRITE_REGISTERS)
                            .map_err(|_| ResponseError::EchoMismatch)?,
                    ),
                })
            }
            Request::Diagnostics {
                sub_function,
                data: query,
            } => {
                let (sub, rest) = data
                    .split_at_checked(2)
                    .ok_or(ResponseError::TooShort { got: pdu.len() })?;
                let sub = be(sub[0], sub[1]);
                if sub != sub_function || (sub == 0 && rest != query) {
                    return Err(ResponseError::EchoMismatch);
                }
                Ok(Response::Diagnostics {
                    sub_function: sub,
                    data: rest,
                })
            }
            Request::ReadDeviceIdentification { code, .. } => {
                let (head, objects) = data
                    .split_at_checked(6)
                    .ok_or(ResponseError::TooShort { got: pdu.len() })?;
                if head[0] != MEI_READ_DEVICE_ID || head[1] != code.code() {
                    return Err(ResponseError::EchoMismatch);
                }
                let more_follows = match head[3] {
                    0x00 => false,
                    0xFF => true,
                    _ => return Err(ResponseError::Malformed),
                };
                Ok(Response::DeviceIdentification {
                    code: head[1],
                    conformity: head[2],
                    more_follows,
                    next_object_id: head[4],
                    objects: DeviceIdObjects::parse(objects, head[5])
                        .ok_or(ResponseError::Malformed)?,
                })
            }
        }
    }

    /// Encodes the response PDU into `out` (cleared first).
    pub fn encode(&self, out: &mut PduBuf) -> Result<(), EncodeError> {
        out.clear();
        let mut w = Writer(out);
        match *self {
            Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
                let fc = if matches!(self, Response::ReadCoils(_)) {
                    0x01
                } else {
                    0x02
                };
                w.u8(fc)?;
                w.bits(bits)
            }
            Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
                let fc = if matches!(self, Response::ReadHoldingRegisters(_)) {
                    0x03
                } else {
                    0x04
                };
                w.u8(fc)?;
                w.words(words)
            }
            Response::WriteSingleCoil { address, value } => {
                w.u8(0x05)?;
                w.u16(address)?;
                w.u16(if value { 0xFF00 } else { 0 })
            }
            Response::WriteSingleRegister { address, value } => {
                w.u8(0x06)?;
                w.u16(address)?;
                w.u16(value)
            }
            Response::WriteMultipleCoils(r) | Response::WriteMultipleRegisters(r) => {
                let fc = if matches!(self, Response::WriteMultipleCoils(_)) {
                    0x0F
                } else {
                    0x10
                };
                w.u8(fc)?;
                w.u16(r.start())?;
                w.u16(r.count())
            }
            Response::Diagnostics { sub_function, data } => {
                w.u8(0x08)?;
                w.u16(sub_function)?;
                w.slice(data)
            }
            Response::DeviceIdentification {
                code,
                conformity,
                more_follows,
                next_object_id,
                objects,
            } => {
                w.slice(&[0x2B, MEI_READ_DEVICE_ID, code, conformity])?;
                w.u8(if more_follows { 0xFF } else { 0x00 })?;
                w.u8(next_object_id)?;
                w.u8(objects.len())?;
                w.slice(objects.as_bytes())
            }
            Response::Exception { function, code } => {
                w.u8(function | 0x80)?;
                w.u8(code.code())
            }
        }
    }
}

/// Why a PDU could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The PDU would exceed [`MAX_PDU_LEN`] bytes.
    TooLong,
    /// A quantity or range breaks the function's limits.
    Range(RangeError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong => write!(f, "PDU longer than 253 bytes"),
            EncodeError::Range(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Appends to a PDU buffer, failing (never panicking) when it is full.
pub(crate) struct Writer<'b>(pub(crate) &'b mut PduBuf);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, b: u8) -> Result<(), EncodeError> {
        self.0.push(b).map_err(|_| EncodeError::TooLong)
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.slice(&v.to_be_bytes())
    }

    pub(crate) fn slice(&mut self, s: &[u8]) -> Result<(), EncodeError> {
        self.0
            .extend_from_slice(s)
            .map_err(|_| EncodeError::TooLong)
    }

    /// Byte count, then the bits packed LSB first.
    pub(crate) fn bits(&mut self, bits: Bits<'_>) -> Result<(), EncodeError> {
        let n = usize::from(bits.len()).div_ceil(8);
        self.u8(u8::try_from(n).map_err(|_| EncodeError::TooLong)?)?;
        for byte_index in 0..n {
            let mut byte = 0u8;
            for bit in 0..8u16 {
                let i = u16::try_from(byte_index * 8)
                    .unwrap_or(u16::MAX)
                    .saturating_add(bit);
                if bits.get(i) == Some(true) {
                    byte |= 1 << bit;
                }
            }
            self.u8(byte)?;
        }
        Ok(())
    }

    /// Byte count, then the registers big-endian.
    pub(crate) fn words(&mut self, words: Words<'_>) -> Result<(), EncodeError> {
        let n = usize::from(words.len()) * 2;
        self.u8(u8::try_from(n).map_err(|_| EncodeError::TooLong)?)?;
        for v in words.iter() {
            self.u16(v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the pdu_codec fuzz target: a 260-byte diagnostics response parsed, then could not
    /// be re-encoded. PDUs longer than an RTU frame can carry are now refused by both parsers.
    #[test]
    fn regression_oversized_pdu_is_refused() {
        let mut long = [0x08u8; 260];
        long[1] = 0;
        long[2] = 0;
        let req = Request::Diagnostics {
            sub_function: 0,
            data: &[],
        };
        assert_eq!(
            Response::parse(&req, &long),
            Err(ResponseError::Length {
                expected: MAX_PDU_LEN,
                got: 260
            })
        );
        assert_eq!(Request::parse(&long), Err(ExceptionCode::IllegalDataValue));
    }

    /// Found by the pdu_codec fuzz target: padding bits after the last coil may be non-zero on the
    /// wire. They are accepted (devices send them) and ignored; encoding pads with zeros.
    #[test]
    fn regression_coil_padding_bits_are_ignored() {
        let req = Request::ReadCoils(AddressRange::try_new(1, 1, MAX_READ_BITS).unwrap());
        let rsp = Response::parse(&req, &[0x01, 0x01, 0x83]).unwrap();
        let Response::ReadCoils(bits) = rsp else {
            panic!("{rsp:?}")
        };
        assert_eq!(
            (bits.len(), bits.get(0), bits.get(1)),
            (1, Some(true), None)
        );
        let mut out = PduBuf::new();
        rsp.encode(&mut out).unwrap();
        assert_eq!(out.as_slice(), [0x01, 0x01, 0x01]);
    }
}
