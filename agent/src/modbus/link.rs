//! What every Modbus line offers, whatever carries it: [`Link`], its answers and its errors.

use std::future::Future;
use std::time::Duration;

use sealwatch_firmware::modbus::{
    EncodeError, ExceptionCode, MbapError, Request, Response, ResponseError, UnitId,
};
use tokio::time::Instant;

/// A device's answer, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
    /// Holding or input registers.
    Words(Vec<u16>),
    /// A write (or diagnostics echo) was acknowledged.
    Written,
    /// Read Device Identification objects `(id, value)`.
    Identification(Vec<(u8, Vec<u8>)>),
}

impl Answer {
    /// The answer of a response that is not an exception (exceptions are [`LinkError`]s).
    pub(crate) fn of(response: Response<'_>) -> Result<Answer, ExceptionCode> {
        Ok(match response {
            Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => {
                Answer::Bits(b.iter().collect())
            }
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
                Answer::Words(w.iter().collect())
            }
            Response::DeviceIdentification { objects, .. } => {
                Answer::Identification(objects.iter().map(|(id, v)| (id, v.to_vec())).collect())
            }
            Response::Exception { code, .. } => return Err(code),
            Response::WriteSingleCoil { .. }
            | Response::WriteSingleRegister { .. }
            | Response::WriteMultipleCoils(_)
            | Response::WriteMultipleRegisters(_)
            | Response::Diagnostics { .. } => Answer::Written,
        })
    }

    /// Registers, or bits as 0/1: what a read gave, as words.
    pub fn into_words(self) -> Option<Vec<u16>> {
        match self {
            Answer::Words(w) => Some(w),
            Answer::Bits(b) => Some(b.into_iter().map(u16::from).collect()),
            Answer::Written | Answer::Identification(_) => None,
        }
    }
}

/// Why a frame that came was not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadFrame {
    /// It came from another unit than the one asked.
    #[error("reply from unit {got}")]
    WrongUnit {
        /// Unit in the frame.
        got: u8,
    },
    /// It came from the unit asked but does not answer the request (function, byte count, length,
    /// echo).
    #[error("{0}")]
    Mismatch(ResponseError),
    /// The CRC did not check.
    #[error("CRC expected {expected:#06X}, got {got:#06X}")]
    Crc {
        /// CRC computed over the bytes received.
        expected: u16,
        /// CRC found in them.
        got: u16,
    },
    /// Bytes came that made no frame.
    #[error("{bytes} bytes of noise and no valid frame")]
    Noise {
        /// Bytes received.
        bytes: usize,
    },
    /// The TCP stream carried something that is not a Modbus TCP frame.
    #[error("{0}")]
    Mbap(MbapError),
}

/// Why a request got no answer. Each kind of failure stays itself, so polling, commissioning and
/// the counters all tell a silent device from a garbled, a late or a refusing one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The connection or port could not be opened.
    #[error("cannot open {target}: {reason}")]
    Open {
        /// `host:port` or device path.
        target: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The link is not open.
    #[error("{target} is not open")]
    NotOpen {
        /// `host:port` or device path.
        target: String,
    },
    /// The connection or port failed while in use.
    #[error("{target}: {reason}")]
    Io {
        /// `host:port` or device path.
        target: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Nothing answered in time.
    #[error("unit {unit}: no reply within {ms} ms")]
    Timeout {
        /// Unit asked.
        unit: UnitId,
        /// The response timeout, ms.
        ms: u64,
    },
    /// A frame came, but not the answer (and none came after it).
    #[error("unit {unit}: bad reply: {why}")]
    BadFrame {
        /// Unit asked.
        unit: UnitId,
        /// What was wrong.
        why: BadFrame,
    },
    /// More came after the answer: the line is out of step, and the answer may have been a late
    /// reply to an earlier request. It is thrown away.
    #[error("unit {unit}: {extra} more bytes came after the answer; the answer is discarded as possibly a late reply and the line quieted")]
    LateReply {
        /// Unit asked.
        unit: UnitId,
        /// Bytes that followed the accepted frame.
        extra: usize,
    },
    /// The device answered with an exception.
    #[error("unit {unit}: {code}")]
    Exception {
        /// Unit asked.
        unit: UnitId,
        /// The exception.
        code: ExceptionCode,
    },
    /// The request cannot be put on the wire.
    #[error("cannot encode the request: {0}")]
    Encode(EncodeError),
}

impl LinkError {
    /// Whether the link may carry the next request. Only a failed connection or port, or a TCP
    /// stream that lost its framing, must be closed and opened again; everything else is
    /// handled in place (TCP matches transaction ids, RTU flushes and quiets the line).
    pub fn survives(&self) -> bool {
        !matches!(
            self,
            LinkError::Open { .. }
                | LinkError::NotOpen { .. }
                | LinkError::Io { .. }
                | LinkError::BadFrame {
                    why: BadFrame::Mbap(_),
                    ..
                }
        )
    }

    /// Whether the device answered (an exception is an answer: somebody is there).
    pub fn is_answer(&self) -> bool {
        matches!(self, LinkError::Exception { .. })
    }

    /// Whether nobody answered at all.
    pub fn is_silence(&self) -> bool {
        matches!(self, LinkError::Timeout { .. })
    }
}

/// What a link heard and threw away instead of taking it as an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Unit the frame carried (for a bad CRC: the unit being asked).
    pub unit: u8,
    /// What it was.
    pub kind: HeardKind,
    /// In words, with the values.
    pub why: String,
}

/// Kinds of frames thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeardKind {
    /// A CRC that did not check.
    Crc,
    /// A frame that does not fit (wrong unit, function or length).
    BadFrame,
    /// A reply to an earlier request: flushed before a request, heard while its unit was being
    /// quieted, carrying an old transaction id, or followed by more bytes.
    Late,
}

/// One Modbus line: a TCP connection (to a device or a gateway) or an RTU serial line. Polling and
/// every commissioning command talk through this, so a device that passes `commission verify`
/// is read the same way in polling.
///
/// Invariants every implementation keeps:
/// - every call has a deadline (`timeout`); nothing waits longer;
/// - an answer is taken only if it is from the unit asked and fits the request (function,
///   byte count, echo); a late reply to an earlier request is never taken for an answer;
/// - what was heard and thrown away is kept for [`Link::take_heard`].
pub trait Link {
    /// Where the link goes (`host:port`, `/dev/ttyUSB0`), for logs and errors.
    fn target(&self) -> &str;
    /// Whether the connection or port is open.
    fn is_open(&self) -> bool;
    /// Opens the connection or port.
    fn open(&mut self, timeout: Duration) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Closes it (the next open makes a new one).
    fn close(&mut self);
    /// Sends `request` to `unit` and waits at most `timeout` for its answer. A unit being quieted
    /// after a timeout (see [`Link::quiet_until`]) is waited for first.
    fn call(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Answer, LinkError>> + Send;
    /// Frames heard and thrown away since the last call.
    fn take_heard(&mut self) -> Vec<Heard>;
    /// Until when `unit` must not be asked (after a timeout or a late reply its late answer may
    /// still come). A scheduler asks others meanwhile instead of waiting.
    fn quiet_until(&self, unit: UnitId) -> Option<Instant> {
        let _ = unit;
        None
    }
}
