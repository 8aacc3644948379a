//! Modbus TCP framing: the MBAP header (Modbus Messaging on TCP/IP Implementation Guide 1.0b,
//! 3.1.3) around a PDU.
//!
//! ```text
//! transaction id (2) | protocol id (2, always 0) | length (2: unit + PDU) | unit (1) | PDU
//! ```
//!
//! Sans-I/O like the rest of this module: [`encode_mbap`] wraps a PDU, [`split_mbap`] finds the
//! first whole frame at the start of a receive buffer. The agent's Modbus TCP client and the
//! simulator's Modbus TCP server both use these, so both ends of the demo speak one codec.
//!
//! Invariants:
//! - a frame is handed out only with protocol id 0 and a length that fits a PDU (2..=254);
//!   anything else is an [`MbapError`], after which the stream cannot be trusted to be in step
//!   and must be closed;
//! - no input makes [`split_mbap`] panic or read past the buffer.

use core::fmt;

use super::pdu::EncodeError;
use super::MAX_PDU_LEN;

/// Bytes of the MBAP header, unit id included.
pub const MBAP_HEADER_LEN: usize = 7;
/// Largest Modbus TCP frame: header and the largest PDU.
pub const MAX_MBAP_LEN: usize = MBAP_HEADER_LEN + MAX_PDU_LEN;

/// A buffer that holds one Modbus TCP frame.
pub type MbapBuf = heapless::Vec<u8, MAX_MBAP_LEN>;

/// One frame found in a Modbus TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbapFrame<'a> {
    /// Transaction id, echoed by the server.
    pub transaction: u16,
    /// Unit id (a gateway's RTU address; 0xFF or 0 for a device that is its own unit).
    pub unit: u8,
    /// Function code and data.
    pub pdu: &'a [u8],
}

/// Why bytes on a Modbus TCP stream are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbapError {
    /// The protocol id is not 0 (Modbus).
    Protocol(u16),
    /// The length field cannot be a unit id and a PDU.
    Length(u16),
}

impl fmt::Display for MbapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MbapError::Protocol(p) => write!(f, "MBAP protocol id {p} is not 0 (Modbus)"),
            MbapError::Length(n) => write!(
                f,
                "MBAP length {n} is outside 2..={} (unit id and a PDU)",
                MAX_PDU_LEN + 1
            ),
        }
    }
}

impl core::error::Error for MbapError {}

/// Wraps `pdu` for `unit` with transaction id `transaction` into `out`.
pub fn encode_mbap(
    transaction: u16,
    unit: u8,
    pdu: &[u8],
    out: &mut MbapBuf,
) -> Result<(), EncodeError> {
    out.clear();
    if pdu.is_empty() || pdu.len() > MAX_PDU_LEN {
        return Err(EncodeError::TooLong);
    }
    let length = (pdu.len() + 1) as u16;
    let overflow = |_| EncodeError::TooLong;
    out.extend_from_slice(&transaction.to_be_bytes())
        .map_err(overflow)?;
    out.extend_from_slice(&[0, 0]).map_err(overflow)?;
    out.extend_from_slice(&length.to_be_bytes())
        .map_err(overflow)?;
    out.push(unit).map_err(|_| EncodeError::TooLong)?;
    out.extend_from_slice(pdu).map_err(overflow)
}

/// The first whole frame at the start of `buf` and how many bytes it took; `Ok(None)` while more
/// bytes are needed.
pub fn split_mbap(buf: &[u8]) -> Result<Option<(MbapFrame<'_>, usize)>, MbapError> {
    let Some(header) = buf.get(..MBAP_HEADER_LEN) else {
        return Ok(None);
    };
    let transaction = u16::from_be_bytes([header[0], header[1]]);
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    let length = u16::from_be_bytes([header[4], header[5]]);
    if protocol != 0 {
        return Err(MbapError::Protocol(protocol));
    }
    if !(2..=(MAX_PDU_LEN as u16 + 1)).contains(&length) {
        return Err(MbapError::Length(length));
    }
    let total = 6 + usize::from(length);
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    Ok(Some((
        MbapFrame {
            transaction,
            unit: frame[6],
            pdu: &frame[MBAP_HEADER_LEN..],
        },
        total,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_is_found_only_when_whole() {
        let mut out = MbapBuf::new();
        encode_mbap(0x1234, 17, &[0x03, 0x00, 0x00, 0x00, 0x02], &mut out).unwrap();
        assert_eq!(
            out.as_slice(),
            &[0x12, 0x34, 0, 0, 0, 6, 17, 0x03, 0x00, 0x00, 0x00, 0x02]
        );
        for cut in 0..out.len() {
            assert_eq!(split_mbap(&out[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = out.to_vec();
        two.extend_from_slice(&out);
        let (frame, used) = split_mbap(&two).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(frame.transaction, 0x1234);
        assert_eq!(frame.unit, 17);
        assert_eq!(frame.pdu, &[0x03, 0x00, 0x00, 0x00, 0x02]);
    }

    #[test]
    fn a_foreign_protocol_or_an_impossible_length_is_an_error() {
        assert_eq!(
            split_mbap(&[0, 1, 0, 1, 0, 6, 1, 3]),
            Err(MbapError::Protocol(1))
        );
        assert_eq!(
            split_mbap(&[0, 1, 0, 0, 0, 1, 1]),
            Err(MbapError::Length(1))
        );
        assert_eq!(
            split_mbap(&[0, 1, 0, 0, 1, 0, 1]),
            Err(MbapError::Length(256))
        );
        let mut out = MbapBuf::new();
        assert_eq!(encode_mbap(1, 1, &[], &mut out), Err(EncodeError::TooLong));
    }
}
