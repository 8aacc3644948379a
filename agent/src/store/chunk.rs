//! Compact encoding of one point's readings: its part of a frame or block (see [`super::frame`]).
//!
//! Each reading is one header byte and, when needed, a few more:
//!
//! ```text
//! header  bits 0-1  value kind: 0 same value as before, 1 new value, 2 exception, 3 fault
//!         bits 2-4  HJ 212 flag code (Flag::code)
//!         bit  5    time step equals the previous step (no time bytes follow)
//!         bits 6-7  0 (reserved)
//! time    zigzag LEB128 varint of (step − previous step), ms; absent when bit 5 is set
//! value   kind 1: one byte (leading zero bytes << 4 | trailing zero bytes) of the XOR of the
//!                 f64 bits with the previous value's bits, then the remaining middle bytes
//!         kind 2: the exception code;  kind 3: the fault code
//! ```
//!
//! Steady polling of a steady value costs 2 bytes a reading (header and a one-byte jitter), an
//! exact step costs 1. Decoding rejects anything malformed with an error; it never panics.

use sealwatch_firmware::modbus::ExceptionCode;

use crate::model::{Fault, Flag, Outcome};

/// A reading as stored: time, outcome, flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// ms since the Unix epoch.
    pub at_ms: i64,
    /// Outcome.
    pub outcome: Outcome,
    /// Flag.
    pub flag: Flag,
}

impl From<&crate::model::Reading> for Sample {
    fn from(r: &crate::model::Reading) -> Sample {
        Sample {
            at_ms: r.at_ms,
            outcome: r.outcome,
            flag: r.flag,
        }
    }
}

/// A chunk body that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading chunk is corrupt at byte {offset}: {reason}")]
pub struct ChunkError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

const KIND_SAME: u8 = 0;
const KIND_NEW: u8 = 1;
const KIND_EXCEPTION: u8 = 2;
const KIND_FAULT: u8 = 3;
const SAME_STEP: u8 = 1 << 5;

/// Stable storage code of a fault kind.
pub fn fault_code(fault: Fault) -> u8 {
    match fault {
        Fault::Timeout => 1,
        Fault::Io => 2,
        Fault::BadFrame => 3,
        Fault::NotConnected => 4,
        Fault::Degraded => 5,
    }
}

/// The fault of a storage code.
pub fn fault_from_code(code: u8) -> Option<Fault> {
    Some(match code {
        1 => Fault::Timeout,
        2 => Fault::Io,
        3 => Fault::BadFrame,
        4 => Fault::NotConnected,
        5 => Fault::Degraded,
        _ => return None,
    })
}

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut z = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (z & 0x7F) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Encodes samples (in time order); the first sample's time is kept by the caller (the row's
/// `first_ms`). Tests only: the store encodes into its frame buffer with [`encode_into`].
#[cfg(test)]
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2 + 8);
    encode_into(&mut out, samples);
    out
}

/// Appends the encoding of `samples` to `out`.
pub fn encode_into(out: &mut Vec<u8>, samples: &[Sample]) {
    let mut prev_at = samples.first().map_or(0, |s| s.at_ms);
    let mut prev_step: i64 = 0;
    let mut prev_bits: u64 = 0;
    for s in samples {
        let step = s.at_ms.wrapping_sub(prev_at);
        let dod = step.wrapping_sub(prev_step);
        let mut header = s.flag.code() << 2;
        if dod == 0 {
            header |= SAME_STEP;
        }
        // At most a length byte and 8 value bytes; kept on the stack.
        let mut tail = [0u8; 9];
        let mut tail_len = 0;
        match s.outcome {
            Outcome::Value(v) => {
                let bits = v.to_bits();
                let xor = bits ^ prev_bits;
                if xor == 0 {
                    header |= KIND_SAME;
                } else {
                    header |= KIND_NEW;
                    let lz = (xor.leading_zeros() / 8) as usize;
                    let tz = (xor.trailing_zeros() / 8) as usize;
                    tail[0] = ((lz as u8) << 4) | tz as u8;
                    let middle = &xor.to_be_bytes()[lz..8 - tz];
                    tail[1..=middle.len()].copy_from_slice(middle);
                    tail_len = 1 + middle.len();
                }
                prev_bits = bits;
            }
            Outcome::Exception(code) => {
                header |= KIND_EXCEPTION;
                tail[0] = code.code();
                tail_len = 1;
            }
            Outcome::Fault(f) => {
                header |= KIND_FAULT;
                tail[0] = fault_code(f);
                tail_len = 1;
            }
        }
        out.push(header);
        if dod != 0 {
            put_varint(out, dod);
        }
        out.extend_from_slice(&tail[..tail_len]);
        prev_at = s.at_ms;
        prev_step = step;
    }
}

pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    pub(crate) fn byte(&mut self, reason: &'static str) -> Result<u8, ChunkError> {
        let b = *self.bytes.get(self.pos).ok_or(ChunkError {
            offset: self.pos,
            reason,
        })?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn varint(&mut self) -> Result<i64, ChunkError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte("time step cut short")?;
            if shift == 63 && b > 1 {
                return Err(ChunkError {
                    offset: self.pos - 1,
                    reason: "time step too large",
                });
            }
            z |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(ChunkError {
            offset: self.pos,
            reason: "time step too long",
        })
    }
}

/// Decodes a chunk of `count` samples whose first sample is at `first_ms`.
pub fn decode(first_ms: i64, count: usize, body: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let mut out = Vec::with_capacity(count.min(body.len()));
    decode_into(first_ms, count, body, &mut out)?;
    Ok(out)
}

/// [`decode`], appending to `out`. On an error, `out` may hold some of the samples.
pub fn decode_into(
    first_ms: i64,
    count: usize,
    body: &[u8],
    out: &mut Vec<Sample>,
) -> Result<(), ChunkError> {
    let mut cur = Cursor {
        bytes: body,
        pos: 0,
    };
    out.reserve(count.min(body.len()));
    let mut prev_at = first_ms;
    let mut prev_step: i64 = 0;
    let mut prev_bits: u64 = 0;
    for _ in 0..count {
        let header = cur.byte("sample missing")?;
        if header & 0xC0 != 0 {
            return Err(ChunkError {
                offset: cur.pos - 1,
                reason: "reserved header bits set",
            });
        }
        let flag = Flag::from_code((header >> 2) & 0x07);
        let dod = if header & SAME_STEP != 0 {
            0
        } else {
            cur.varint()?
        };
        let step = prev_step.wrapping_add(dod);
        let at_ms = prev_at.wrapping_add(step);
        let outcome = match header & 0x03 {
            KIND_SAME => Outcome::Value(f64::from_bits(prev_bits)),
            KIND_NEW => {
                let lt = cur.byte("value cut short")?;
                let (lz, tz) = (usize::from(lt >> 4), usize::from(lt & 0x0F));
                if lz + tz >= 8 {
                    return Err(ChunkError {
                        offset: cur.pos - 1,
                        reason: "empty value change",
                    });
                }
                let mut bytes = [0u8; 8];
                for slot in bytes.iter_mut().take(8 - tz).skip(lz) {
                    *slot = cur.byte("value cut short")?;
                }
                prev_bits ^= u64::from_be_bytes(bytes);
                Outcome::Value(f64::from_bits(prev_bits))
            }
            KIND_EXCEPTION => Outcome::Exception(ExceptionCode::from_code(
                cur.byte("exception code missing")?,
            )),
            _ => {
                let code = cur.byte("fault code missing")?;
                Outcome::Fault(fault_from_code(code).ok_or(ChunkError {
                    offset: cur.pos - 1,
                    reason: "unknown fault code",
                })?)
            }
        };
        out.push(Sample {
            at_ms,
            outcome,
            flag,
        });
        prev_at = at_ms;
        prev_step = step;
    }
    if cur.pos != body.len() {
        return Err(ChunkError {
            offset: cur.pos,
            reason: "bytes after the last sample",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same_outcome(a: &Outcome, b: &Outcome) -> bool {
        match (a, b) {
            (Outcome::Value(x), Outcome::Value(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    #[test]
    fn steady_polling_costs_one_or_two_bytes() {
        let samples: Vec<Sample> = (0..60)
            .map(|i| Sample {
                at_ms: 1_700_000_000_000 + i * 1000 + (i % 3),
                outcome: Outcome::Value(812.0),
                flag: Flag::N,
            })
            .collect();
        let body = encode(&samples);
        assert!(body.len() <= 2 * 60 + 8, "{} bytes", body.len());
        let exact: Vec<Sample> = (0..60)
            .map(|i| Sample {
                at_ms: 1_700_000_000_000 + i * 1000,
                outcome: Outcome::Value(1.0),
                flag: Flag::N,
            })
            .collect();
        // First sample: header + value (1.0 = 0x3FF0_0000_0000_0000: 1 length byte + 2 bytes);
        // second: header + 2-byte step; the other 58: one header byte each.
        assert_eq!(encode(&exact).len(), 4 + 3 + 58);
    }

    #[test]
    fn corrupt_bodies_are_errors() {
        let samples = [Sample {
            at_ms: 5,
            outcome: Outcome::Value(2.5),
            flag: Flag::N,
        }];
        let body = encode(&samples);
        assert!(decode(5, 2, &body).is_err(), "too few bytes for the count");
        assert!(decode(5, 0, &body).is_err(), "trailing bytes");
        assert!(decode(5, 1, &[0xFF]).is_err(), "reserved bits");
        assert!(
            decode(5, 1, &[KIND_FAULT, 99]).is_err()
                || decode(5, 1, &[KIND_FAULT | SAME_STEP, 99]).is_err()
        );
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            any::<f64>().prop_map(Outcome::Value),
            (0.0f64..3000.0).prop_map(|v| Outcome::Value(v.round())),
            any::<u8>().prop_map(|c| Outcome::Exception(ExceptionCode::from_code(c))),
            (1u8..=5).prop_map(|c| Outcome::Fault(fault_from_code(c).unwrap())),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(start in any::<i64>(), steps in prop::collection::vec((-5000i64..100_000, outcome(), 0u8..8), 0..200)) {
            let mut at = start;
            let samples: Vec<Sample> = steps.iter().map(|(step, outcome, flag)| {
                at = at.wrapping_add(*step);
                Sample { at_ms: at, outcome: *outcome, flag: Flag::from_code(*flag) }
            }).collect();
            let body = encode(&samples);
            let first = samples.first().map_or(0, |s| s.at_ms);
            let back = decode(first, samples.len(), &body).unwrap();
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in samples.iter().zip(&back) {
                prop_assert_eq!(a.at_ms, b.at_ms);
                prop_assert_eq!(a.flag, b.flag);
                prop_assert!(same_outcome(&a.outcome, &b.outcome), "{:?} vs {:?}", a, b);
            }
        }

        #[test]
        fn garbage_never_panics(first in any::<i64>(), count in 0usize..50, body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(first, count, &body);
        }
    }
}
