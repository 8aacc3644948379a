//! RTU framing: finding frames in a byte stream, and wrapping PDUs into ADUs.
//!
//! [`FrameAssembler`] is fed one byte at a time with the time it arrived. It knows the length of a
//! frame from its function code (and byte count), so a frame is complete the moment its last byte
//! arrives — this is what works on QEMU and on ptys, where there is no bit timing. Silence is the
//! fallback: when the line has been quiet longer than the inter-frame gap (t3.5), whatever is
//! buffered is finished (frames of unknown length end there; incomplete ones are dropped).
//!
//! Invariants:
//! - a frame is only handed out if its CRC checks; a bad CRC drops **one** byte and the search
//!   goes on from the next, so garbage before a frame is skipped (resync) and nothing is answered;
//! - the buffer never exceeds [`MAX_ADU_LEN`]; a full buffer drops its oldest byte;
//! - no input can make it panic or loop forever (every step consumes or waits for a byte).

use core::fmt;
use core::time::Duration;

use super::crc::{crc16, crc_ok};
use super::pdu::{EncodeError, Request, Response, ResponseError};
use super::{AduBuf, PduBuf, MAX_ADU_LEN, MIN_ADU_LEN};
use crate::time::Instant;

/// Which side of the line the assembler listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A slave: frames are requests.
    Request,
    /// A master: frames are responses.
    Response,
}

/// A frame found on the line: its unit address and PDU (CRC checked and stripped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Unit address (0 = broadcast).
    pub unit: u8,
    /// Function code and data.
    pub pdu: &'a [u8],
}

/// Counters of what the assembler saw, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameCounters {
    /// Frames with a good CRC handed out.
    pub frames: u32,
    /// Candidate frames whose CRC did not check.
    pub crc_errors: u32,
    /// Bytes dropped while resynchronising.
    pub dropped_bytes: u32,
}

/// What the bytes buffered so far say about the frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The frame is this long (CRC included).
    Len(usize),
    /// Not enough bytes to know the length yet.
    More,
    /// Length unknown from the content: ends at silence.
    Silence,
    /// Cannot start a frame here.
    Invalid,
}

fn len_after(buf: &[u8], header: usize, count_at: usize, extra: usize) -> Need {
    match buf.get(count_at) {
        None if buf.len() < header => Need::More,
        None => Need::Invalid,
        Some(&n) => fixed(header + usize::from(n) + extra),
    }
}

fn fixed(n: usize) -> Need {
    if n <= MAX_ADU_LEN {
        Need::Len(n)
    } else {
        Need::Invalid
    }
}

/// Frame length of a request starting at `buf[0]`.
fn request_len(buf: &[u8]) -> Need {
    let Some(&fc) = buf.get(1) else {
        return Need::More;
    };
    match fc {
        0x01..=0x06 | 0x08 => Need::Len(8),
        0x07 | 0x0B | 0x0C | 0x11 => Need::Len(4),
        // unit fc start(2) count(2) byte-count data… crc(2)
        0x0F | 0x10 => len_after(buf, 7, 6, 2),
        0x14 | 0x15 => len_after(buf, 3, 2, 2),
        0x16 => Need::Len(10),
        0x17 => len_after(buf, 11, 10, 2),
        0x18 => Need::Len(6),
        0x2B => match buf.get(2) {
            None => Need::More,
            Some(&0x0E) => Need::Len(7),
            Some(_) => Need::Silence,
        },
        0x80..=0xFF => Need::Invalid,
        _ => Need::Silence,
    }
}

/// Frame length of a response starting at `buf[0]`.
fn response_len(buf: &[u8]) -> Need {
    let Some(&fc) = buf.get(1) else {
        return Need::More;
    };
    match fc {
        0x80..=0xFF => Need::Len(5),
        0x01..=0x04 | 0x0C | 0x11 | 0x14 | 0x15 | 0x17 => len_after(buf, 3, 2, 2),
        0x05 | 0x06 | 0x08 | 0x0B | 0x0F | 0x10 => Need::Len(8),
        0x07 => Need::Len(5),
        0x16 => Need::Len(10),
        0x2B => {
            // unit fc mei code conformity more next count, then count × (id len value), crc
            if buf.len() < 8 {
                return Need::More;
            }
            if buf[2] != 0x0E {
                return Need::Silence;
            }
            let mut pos = 8usize;
            for _ in 0..buf[7] {
                match buf.get(pos + 1) {
                    None => return Need::More,
                    Some(&len) => pos += 2 + usize::from(len),
                }
                if pos + 2 > MAX_ADU_LEN {
                    return Need::Invalid;
                }
            }
            fixed(pos + 2)
        }
        _ => Need::Silence,
    }
}

/// Finds RTU frames in a stream of `(byte, arrival time)`.
#[derive(Debug, Clone)]
pub struct FrameAssembler {
    direction: Direction,
    buf: AduBuf,
    /// Bytes at the front that belong to the frame handed out last; dropped on the next call.
    consumed: usize,
    last_byte_at: Option<Instant>,
    silence: Duration,
    counters: FrameCounters,
}

impl FrameAssembler {
    /// An empty assembler for `direction` that treats `silence` as the end of a frame.
    pub const fn new(direction: Direction, silence: Duration) -> Self {
        FrameAssembler {
            direction,
            buf: AduBuf::new(),
            consumed: 0,
            last_byte_at: None,
            silence,
            counters: FrameCounters {
                frames: 0,
                crc_errors: 0,
                dropped_bytes: 0,
            },
        }
    }

    /// The t3.5 inter-frame silence for `baud`: 3.5 characters of 11 bits, 1.75 ms above 19200.
    pub const fn silence_for_baud(baud: u32) -> Duration {
        if baud == 0 || baud > 19_200 {
            Duration::from_micros(1_750)
        } else {
            // 38.5 bits, rounded up to whole microseconds.
            Duration::from_micros(38_500_000u64.div_ceil(baud as u64))
        }
    }

    /// Changes the silence that ends a frame (e.g. after a baud change).
    pub fn set_silence(&mut self, silence: Duration) {
        self.silence = silence;
    }

    /// The silence that ends a frame.
    pub const fn silence(&self) -> Duration {
        self.silence
    }

    /// What the assembler has seen so far.
    pub const fn counters(&self) -> FrameCounters {
        self.counters
    }

    /// Bytes buffered and not yet part of a handed-out frame.
    pub fn pending(&self) -> usize {
        self.buf.len().saturating_sub(self.consumed)
    }

    /// Forgets every buffered byte.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.consumed = 0;
        self.last_byte_at = None;
    }

    /// Feeds one byte that arrived at `now`; returns a frame if this byte completed one (or if the
    /// silence before it ended a frame of unknown length).
    pub fn push(&mut self, byte: u8, now: Instant) -> Option<Frame<'_>> {
        self.drain_consumed();
        let quiet = self.silence_elapsed(now);
        self.last_byte_at = Some(now);
        if quiet && !self.buf.is_empty() {
            if let Some(n) = self.scan(true) {
                // The silence ended a frame; the new byte starts the next one behind it.
                self.buf.truncate(n);
                self.store(byte);
                return Some(self.frame(n));
            }
        }
        self.store(byte);
        let n = self.scan(false)?;
        Some(self.frame(n))
    }

    /// Lets time pass: if the line has been quiet longer than the silence, finishes what is
    /// buffered (a frame of unknown length, or a valid frame behind garbage) and forgets the rest.
    pub fn poll(&mut self, now: Instant) -> Option<Frame<'_>> {
        self.drain_consumed();
        if self.buf.is_empty() {
            return None;
        }
        if self.silence_elapsed(now) {
            let n = self.scan(true);
            match n {
                Some(n) => {
                    self.buf.truncate(n);
                    Some(self.frame(n))
                }
                None => {
                    self.buf.clear();
                    None
                }
            }
        } else {
            let n = self.scan(false)?;
            Some(self.frame(n))
        }
    }

    fn silence_elapsed(&self, now: Instant) -> bool {
        match self.last_byte_at {
            Some(at) => now.saturating_since(at) > self.silence,
            None => false,
        }
    }

    fn store(&mut self, byte: u8) {
        if self.buf.is_full() {
            self.drop_front(1);
        }
        // Cannot fail: there is room now.
        let _ = self.buf.push(byte);
    }

    fn drain_consumed(&mut self) {
        if self.consumed > 0 {
            let n = self.consumed;
            self.consumed = 0;
            self.shift(n);
        }
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.counters.dropped_bytes = self.counters.dropped_bytes.wrapping_add(n as u32);
        self.shift(n);
    }

    fn shift(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.copy_within(n.., 0);
        let len = self.buf.len() - n;
        self.buf.truncate(len);
    }

    fn frame(&self, n: usize) -> Frame<'_> {
        let adu = self.buf.get(..n).unwrap_or(&[]);
        let (unit, rest) = adu.split_first().map_or((0, &[][..]), |(u, r)| (*u, r));
        Frame {
            unit,
            pdu: rest.get(..rest.len().saturating_sub(2)).unwrap_or(&[]),
        }
    }

    /// Looks for a complete, CRC-valid frame at the front of the buffer, dropping bytes that
    /// cannot start one. `at_silence`: the line went quiet, so nothing more will arrive for
    /// what is buffered. Returns the frame length, marked consumed.
    fn scan(&mut self, at_silence: bool) -> Option<usize> {
        loop {
            if self.buf.is_empty() {
                return None;
            }
            let need = match self.direction {
                Direction::Request => request_len(&self.buf),
                Direction::Response => response_len(&self.buf),
            };
            let candidate = match need {
                Need::Len(n) if n <= self.buf.len() => Some(n),
                Need::Len(_) | Need::More if !at_silence => return None,
                Need::Silence if !at_silence => return None,
                Need::Silence => Some(self.buf.len()),
                Need::Len(_) | Need::More | Need::Invalid => None,
            };
            if let Some(n) = candidate {
                if n >= MIN_ADU_LEN && crc_ok(&self.buf[..n]) {
                    self.counters.frames = self.counters.frames.wrapping_add(1);
                    self.consumed = n;
                    return Some(n);
                }
                self.counters.crc_errors = self.counters.crc_errors.wrapping_add(1);
            }
            self.drop_front(1);
        }
    }
}

/// Why an ADU was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 4 bytes (unit, function, CRC) or more than 256.
    Length {
        /// Bytes present.
        got: usize,
    },
    /// The CRC does not check.
    Crc {
        /// CRC computed over the bytes.
        expected: u16,
        /// CRC found in the frame.
        got: u16,
    },
    /// The response came from another unit.
    Unit {
        /// Unit the request went to.
        expected: u8,
        /// Unit in the response.
        got: u8,
    },
    /// The PDU does not answer the request.
    Response(ResponseError),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length { got } => write!(f, "RTU frame of {got} bytes (4..=256 allowed)"),
            FrameError::Crc { expected, got } => {
                write!(f, "expected CRC {expected:#06X}, got {got:#06X}")
            }
            FrameError::Unit { expected, got } => {
                write!(f, "expected a reply from unit {expected}, got unit {got}")
            }
            FrameError::Response(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Wraps `pdu` for `unit` into an RTU ADU in `out`: unit, PDU, CRC low byte first.
pub fn encode_rtu(unit: u8, pdu: &[u8], out: &mut AduBuf) -> Result<(), EncodeError> {
    out.clear();
    out.push(unit).map_err(|_| EncodeError::TooLong)?;
    out.extend_from_slice(pdu)
        .map_err(|_| EncodeError::TooLong)?;
    let crc = crc16(out);
    out.extend_from_slice(&crc.to_le_bytes())
        .map_err(|_| EncodeError::TooLong)
}

/// Encodes `request` for `unit` as an RTU ADU in `out`.
pub fn encode_rtu_request(
    unit: u8,
    request: &Request<'_>,
    out: &mut AduBuf,
) -> Result<(), EncodeError> {
    let mut pdu = PduBuf::new();
    request.encode(&mut pdu)?;
    encode_rtu(unit, &pdu, out)
}

/// Checks a whole ADU's length and CRC; returns its unit and PDU.
pub fn decode_rtu(adu: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    if adu.len() < MIN_ADU_LEN || adu.len() > MAX_ADU_LEN {
        return Err(FrameError::Length { got: adu.len() });
    }
    let (body, tail) = adu.split_at(adu.len() - 2);
    let expected = crc16(body);
    let got = u16::from_le_bytes([tail[0], tail[1]]);
    if expected != got {
        return Err(FrameError::Crc { expected, got });
    }
    Ok((body[0], &body[1..]))
}

/// Checks an RTU response ADU against the `request` sent to `unit` and parses it.
pub fn parse_rtu_response<'a>(
    request: &Request<'_>,
    unit: u8,
    adu: &'a [u8],
) -> Result<Response<'a>, FrameError> {
    let (got, pdu) = decode_rtu(adu)?;
    if got != unit {
        return Err(FrameError::Unit {
            expected: unit,
            got,
        });
    }
    Response::parse(request, pdu).map_err(FrameError::Response)
}
