//! The Modbus slave: turns a request PDU into a response PDU against a [`DataModel`].
//!
//! [`serve_pdu`] is the transport-free entry point (a [`SealNode`](crate::SealNode) behind the
//! simulator's Modbus TCP endpoints reaches it through `SealNode::handle_pdu`); [`RtuSlave`] adds
//! RTU framing and addressing on top. Rules, as the spec has them:
//! - a function or diagnostics sub-function we do not implement answers exception 01; a quantity or
//!   value out of range 03; an address outside the map 02; a failure while executing 04;
//! - a broadcast (unit 0) applies writes (05, 06, 0F, 10) and is never answered; reads and
//!   diagnostics sent as broadcast are ignored;
//! - frames for other units are ignored; frames with a bad CRC never reach this module.
//!
//! Invariant: a write request is validated completely by the model before anything changes, so an
//! exception answer means nothing was written.

use core::time::Duration;

use super::frame::{encode_rtu, Direction, Frame, FrameAssembler, FrameCounters};
use super::pdu::{Bits, ExceptionCode, ReadDeviceIdCode, Request, Words, Writer};
use super::{AduBuf, PduBuf, UnitId, BROADCAST_UNIT, MAX_PDU_LEN};
use crate::time::Instant;

/// Conformity level: basic, regular and extended identification, stream and individual access.
pub const CONFORMITY_EXTENDED_INDIVIDUAL: u8 = 0x83;

/// What a slave exposes. Each method answers for one address; reads of a range stop at the first
/// error, writes get the whole request so the model can validate all of it first.
pub trait DataModel {
    /// Coil at `address`, or exception 02.
    fn read_coil(&self, address: u16) -> Result<bool, ExceptionCode>;
    /// Discrete input at `address`, or exception 02.
    fn read_discrete_input(&self, address: u16) -> Result<bool, ExceptionCode>;
    /// Holding register at `address`, or exception 02.
    fn read_holding_register(&self, address: u16) -> Result<u16, ExceptionCode>;
    /// Input register at `address`, or exception 02.
    fn read_input_register(&self, address: u16) -> Result<u16, ExceptionCode>;
    /// Writes `values` to the coils from `start`: all or nothing.
    fn write_coils(&mut self, start: u16, values: Bits<'_>) -> Result<(), ExceptionCode>;
    /// Writes `values` to the holding registers from `start`: all or nothing.
    fn write_registers(&mut self, start: u16, values: Words<'_>) -> Result<(), ExceptionCode>;
    /// Value of device identification object `id` (0x00 vendor, 0x01 product code, 0x02 revision,
    /// 0x03–0x06 regular, 0x80–0xFF private), if the device has it.
    fn device_id_object(&self, id: u8) -> Option<&[u8]>;
    /// Conformity level reported in Read Device Identification answers.
    fn device_id_conformity(&self) -> u8 {
        CONFORMITY_EXTENDED_INDIVIDUAL
    }
}

/// Serves one request PDU. Returns true if `out` holds a response PDU to send; false for a
/// broadcast (never answered).
pub fn serve_pdu<M: DataModel + ?Sized>(
    model: &mut M,
    pdu: &[u8],
    broadcast: bool,
    out: &mut PduBuf,
) -> bool {
    out.clear();
    let function = pdu.first().copied().unwrap_or(0);
    let result = match Request::parse(pdu) {
        Ok(request) if broadcast => {
            if request.is_write() {
                let _ = execute(model, &request, pdu, out);
            }
            out.clear();
            return false;
        }
        Ok(request) => execute(model, &request, pdu, out),
        Err(_) if broadcast => {
            out.clear();
            return false;
        }
        Err(e) => Err(e),
    };
    if let Err(code) = result {
        out.clear();
        // Two bytes always fit.
        let _ = out.extend_from_slice(&[function | 0x80, code.code()]);
    }
    true
}

fn execute<M: DataModel + ?Sized>(
    model: &mut M,
    request: &Request<'_>,
    pdu: &[u8],
    out: &mut PduBuf,
) -> Result<(), ExceptionCode> {
    let fc = request.function().code();
    let overflow = |_| ExceptionCode::ServerDeviceFailure;
    let mut w = Writer(out);
    match *request {
        Request::ReadCoils(r) | Request::ReadDiscreteInputs(r) => {
            let coils = matches!(request, Request::ReadCoils(_));
            w.u8(fc).map_err(overflow)?;
            let n = usize::from(r.count()).div_ceil(8);
            w.u8(n as u8).map_err(overflow)?;
            let mut byte = 0u8;
            for (i, address) in r.addresses().enumerate() {
                let bit = if coils {
                    model.read_coil(address)?
                } else {
                    model.read_discrete_input(address)?
                };
                if bit {
                    byte |= 1 << (i % 8);
                }
                if i % 8 == 7 {
                    w.u8(byte).map_err(overflow)?;
                    byte = 0;
                }
            }
            if r.count() % 8 != 0 {
                w.u8(byte).map_err(overflow)?;
            }
            Ok(())
        }
        Request::ReadHoldingRegisters(r) | Request::ReadInputRegisters(r) => {
            let holding = matches!(request, Request::ReadHoldingRegisters(_));
            w.u8(fc).map_err(overflow)?;
            w.u8((r.count() * 2) as u8).map_err(overflow)?;
            for address in r.addresses() {
                let v = if holding {
                    model.read_holding_register(address)?
                } else {
                    model.read_input_register(address)?
                };
                w.u16(v).map_err(overflow)?;
            }
            Ok(())
        }
        Request::WriteSingleCoil { address, value } => {
            model.write_coils(address, Bits::from_values(&[value]))?;
            w.slice(pdu).map_err(overflow)
        }
        Request::WriteSingleRegister { address, value } => {
            model.write_registers(address, Words::from_values(&[value]))?;
            w.slice(pdu).map_err(overflow)
        }
        Request::WriteMultipleCoils { start, values } => {
            model.write_coils(start, values)?;
            w.slice(pdu.get(..5).unwrap_or(&[])).map_err(overflow)
        }
        Request::WriteMultipleRegisters { start, values } => {
            model.write_registers(start, values)?;
            w.slice(pdu.get(..5).unwrap_or(&[])).map_err(overflow)
        }
        Request::Diagnostics { sub_function, .. } => {
            if sub_function != 0x0000 {
                return Err(ExceptionCode::IllegalFunction);
            }
            // Return Query Data: the request, echoed.
            w.slice(pdu).map_err(overflow)
        }
        Request::ReadDeviceIdentification { code, object_id } => {
            device_identification(model, code, object_id, &mut w)
        }
    }
}

fn device_identification<M: DataModel + ?Sized>(
    model: &M,
    code: ReadDeviceIdCode,
    object_id: u8,
    w: &mut Writer<'_>,
) -> Result<(), ExceptionCode> {
    let overflow = |_| ExceptionCode::ServerDeviceFailure;
    let head = [0x2B, 0x0E, code.code(), model.device_id_conformity()];
    w.slice(&head).map_err(overflow)?;
    if code == ReadDeviceIdCode::Individual {
        let value = model
            .device_id_object(object_id)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        w.slice(&[0x00, 0x00, 0x01, object_id]).map_err(overflow)?;
        w.u8(value.len().min(255) as u8).map_err(overflow)?;
        return w.slice(value.get(..255).unwrap_or(value)).map_err(overflow);
    }
    let last: u8 = match code {
        ReadDeviceIdCode::Basic => 0x02,
        ReadDeviceIdCode::Regular => 0x7F,
        _ => 0xFF,
    };
    // A first object the device does not have restarts the stream at object 0.
    let first = if object_id <= last && model.device_id_object(object_id).is_some() {
        object_id
    } else {
        0
    };
    let more_at = w.0.len();
    w.slice(&[0x00, 0x00, 0x00]).map_err(overflow)?;
    let mut count = 0u8;
    let mut next = None;
    for id in first..=last {
        let Some(value) = model.device_id_object(id) else {
            continue;
        };
        let len = value.len().min(255);
        if w.0.len() + 2 + len > MAX_PDU_LEN {
            next = Some(id);
            break;
        }
        w.u8(id).map_err(overflow)?;
        w.u8(len as u8).map_err(overflow)?;
        w.slice(value.get(..len).unwrap_or(value))
            .map_err(overflow)?;
        count += 1;
    }
    let (more, next_id) = match next {
        Some(id) => (0xFF, id),
        None => (0x00, 0x00),
    };
    if let Some(slot) = w.0.get_mut(more_at..more_at + 3) {
        slot.copy_from_slice(&[more, next_id, count]);
    }
    Ok(())
}

/// A Modbus RTU slave: frame assembly, unit filtering, dispatch and reply framing.
#[derive(Debug, Clone)]
pub struct RtuSlave {
    assembler: FrameAssembler,
    unit: UnitId,
}

impl RtuSlave {
    /// A slave answering as `unit`, ending frames after `silence` of quiet line.
    pub const fn new(unit: UnitId, silence: Duration) -> Self {
        RtuSlave {
            assembler: FrameAssembler::new(Direction::Request, silence),
            unit,
        }
    }

    /// The unit this slave answers as.
    pub const fn unit(&self) -> UnitId {
        self.unit
    }

    /// Answers as `unit` from now on.
    pub fn set_unit(&mut self, unit: UnitId) {
        self.unit = unit;
    }

    /// Changes the silence that ends a frame.
    pub fn set_silence(&mut self, silence: Duration) {
        self.assembler.set_silence(silence);
    }

    /// Frame counters of the line.
    pub const fn counters(&self) -> FrameCounters {
        self.assembler.counters()
    }

    /// Feeds one received byte; returns the reply ADU to send, if any.
    pub fn on_byte<M: DataModel + ?Sized>(
        &mut self,
        byte: u8,
        now: Instant,
        model: &mut M,
    ) -> Option<AduBuf> {
        let unit = self.unit;
        let frame = self.assembler.push(byte, now)?;
        answer(unit, frame, model)
    }

    /// Lets time pass (ends frames of unknown length at silence); returns a reply, if any.
    pub fn poll<M: DataModel + ?Sized>(&mut self, now: Instant, model: &mut M) -> Option<AduBuf> {
        let unit = self.unit;
        let frame = self.assembler.poll(now)?;
        answer(unit, frame, model)
    }
}

fn answer<M: DataModel + ?Sized>(unit: UnitId, frame: Frame<'_>, model: &mut M) -> Option<AduBuf> {
    let broadcast = frame.unit == BROADCAST_UNIT;
    if !broadcast && frame.unit != unit.get() {
        return None;
    }
    let mut pdu = PduBuf::new();
    if !serve_pdu(model, frame.pdu, broadcast, &mut pdu) {
        return None;
    }
    let mut adu = AduBuf::new();
    encode_rtu(unit.get(), &pdu, &mut adu).ok()?;
    Some(adu)
}
