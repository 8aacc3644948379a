//! Decoding registers into engineering values (and, for the simulated plant, back).
//!
//! Pure functions of the words read and the point's profile entry. Word orders are named by where
//! the bytes of the big-endian value `A B C D` travel: see [`WordOrder`]. For 64-bit types the
//! same rule extends to four words (CDAB = words in reverse order).

use crate::config::profile::{PointDef, ValueType, WordOrder};

/// Why registers could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer registers than the type needs.
    #[error("{value_type:?} needs {needed} registers, got {got}")]
    TooShort {
        /// The type.
        value_type: ValueType,
        /// Registers needed.
        needed: usize,
        /// Registers given.
        got: usize,
    },
}

/// Puts the registers of a value into big-endian byte order (A B C D …).
fn to_big_endian(words: &[u16], order: WordOrder, out: &mut [u8]) {
    let n = words.len();
    for i in 0..n {
        let w = if order.words_reversed() {
            words[n - 1 - i]
        } else {
            words[i]
        };
        let [hi, lo] = w.to_be_bytes();
        let (a, b) = if order.bytes_swapped() {
            (lo, hi)
        } else {
            (hi, lo)
        };
        out[2 * i] = a;
        out[2 * i + 1] = b;
    }
}

/// The registers that carry big-endian bytes `bytes` in `order` (inverse of `to_big_endian`).
fn from_big_endian(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let n = bytes.len() / 2;
    let mut words = vec![0u16; n];
    for i in 0..n {
        let (a, b) = (bytes[2 * i], bytes[2 * i + 1]);
        let w = if order.bytes_swapped() {
            u16::from_be_bytes([b, a])
        } else {
            u16::from_be_bytes([a, b])
        };
        let slot = if order.words_reversed() { n - 1 - i } else { i };
        words[slot] = w;
    }
    words
}

/// The raw (unscaled) value of registers `words` as `value_type` in `order`.
pub fn decode_raw(
    words: &[u16],
    value_type: ValueType,
    order: WordOrder,
) -> Result<f64, DecodeError> {
    let needed = usize::from(value_type.width());
    if words.len() < needed {
        return Err(DecodeError::TooShort {
            value_type,
            needed,
            got: words.len(),
        });
    }
    let mut be = [0u8; 8];
    let be = &mut be[..needed * 2];
    to_big_endian(&words[..needed], order, be);
    Ok(match value_type {
        ValueType::Bool => f64::from(u8::from(words[0] != 0)),
        ValueType::U16 => f64::from(u16::from_be_bytes([be[0], be[1]])),
        ValueType::I16 => f64::from(i16::from_be_bytes([be[0], be[1]])),
        ValueType::U32 => f64::from(u32::from_be_bytes([be[0], be[1], be[2], be[3]])),
        ValueType::I32 => f64::from(i32::from_be_bytes([be[0], be[1], be[2], be[3]])),
        ValueType::F32 => f64::from(f32::from_be_bytes([be[0], be[1], be[2], be[3]])),
        ValueType::U64 => {
            u64::from_be_bytes([be[0], be[1], be[2], be[3], be[4], be[5], be[6], be[7]]) as f64
        }
        ValueType::F64 => {
            f64::from_be_bytes([be[0], be[1], be[2], be[3], be[4], be[5], be[6], be[7]])
        }
    })
}

/// The engineering value of a point from its registers: raw × scale + offset.
pub fn decode_point(words: &[u16], point: &PointDef) -> Result<f64, DecodeError> {
    let raw = decode_raw(words, point.value_type, point.word_order)?;
    Ok(
        if point.value_type == crate::config::profile::ValueType::Bool {
            raw
        } else {
            raw * point.scale + point.offset
        },
    )
}

/// The registers a device would hold for the raw value `raw` (rounded and saturated for integer
/// types). The simulated plant uses this; the agent only decodes.
pub fn encode_raw(raw: f64, value_type: ValueType, order: WordOrder) -> Vec<u16> {
    let be: Vec<u8> = match value_type {
        ValueType::Bool => return vec![u16::from(raw != 0.0)],
        ValueType::U16 => (raw.round() as u16).to_be_bytes().to_vec(),
        ValueType::I16 => (raw.round() as i16).to_be_bytes().to_vec(),
        ValueType::U32 => (raw.round() as u32).to_be_bytes().to_vec(),
        ValueType::I32 => (raw.round() as i32).to_be_bytes().to_vec(),
        ValueType::U64 => (raw.round() as u64).to_be_bytes().to_vec(),
        ValueType::F32 => (raw as f32).to_be_bytes().to_vec(),
        ValueType::F64 => raw.to_be_bytes().to_vec(),
    };
    from_big_endian(&be, order)
}

/// The registers of a point holding engineering value `value` (inverse of [`decode_point`]).
pub fn encode_point(value: f64, point: &PointDef) -> Vec<u16> {
    let raw = if point.value_type == ValueType::Bool {
        value
    } else {
        (value - point.offset) / point.scale
    };
    encode_raw(raw, point.value_type, point.word_order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ValueType::*;
    use WordOrder::*;

    /// 3.5f32 is 0x4060_0000: bytes A=0x40 B=0x60 C=0x00 D=0x00.
    #[test]
    fn f32_three_and_a_half_in_every_order() {
        let cases: [(WordOrder, [u16; 2]); 4] = [
            (Abcd, [0x4060, 0x0000]),
            (Cdab, [0x0000, 0x4060]),
            (Badc, [0x6040, 0x0000]),
            (Dcba, [0x0000, 0x6040]),
        ];
        for (order, words) in cases {
            assert_eq!(decode_raw(&words, F32, order), Ok(3.5), "{order:?}");
            assert_eq!(encode_raw(3.5, F32, order), words, "{order:?}");
        }
    }

    /// -123456789i32 is 0xF8A4_32EB.
    #[test]
    fn i32_negative_in_every_order() {
        let cases: [(WordOrder, [u16; 2]); 4] = [
            (Abcd, [0xF8A4, 0x32EB]),
            (Cdab, [0x32EB, 0xF8A4]),
            (Badc, [0xA4F8, 0xEB32]),
            (Dcba, [0xEB32, 0xA4F8]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_raw(&words, I32, order),
                Ok(-123_456_789.0),
                "{order:?}"
            );
            assert_eq!(encode_raw(-123_456_789.0, I32, order), words, "{order:?}");
        }
    }

    /// 4_000_000_000u32 is 0xEE6B_2800 (above i32::MAX: must not go negative).
    #[test]
    fn u32_above_i32_max_in_every_order() {
        let cases: [(WordOrder, [u16; 2]); 4] = [
            (Abcd, [0xEE6B, 0x2800]),
            (Cdab, [0x2800, 0xEE6B]),
            (Badc, [0x6BEE, 0x0028]),
            (Dcba, [0x0028, 0x6BEE]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_raw(&words, U32, order),
                Ok(4_000_000_000.0),
                "{order:?}"
            );
        }
    }

    /// 0x0102_0304_0506_0708u64 = 72623859790382856.
    #[test]
    fn u64_in_every_order() {
        let cases: [(WordOrder, [u16; 4]); 4] = [
            (Abcd, [0x0102, 0x0304, 0x0506, 0x0708]),
            (Cdab, [0x0708, 0x0506, 0x0304, 0x0102]),
            (Badc, [0x0201, 0x0403, 0x0605, 0x0807]),
            (Dcba, [0x0807, 0x0605, 0x0403, 0x0201]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_raw(&words, U64, order),
                Ok(72_623_859_790_382_856.0),
                "{order:?}"
            );
        }
    }

    /// -2.5f64 is 0xC004_0000_0000_0000.
    #[test]
    fn f64_in_every_order() {
        let cases: [(WordOrder, [u16; 4]); 4] = [
            (Abcd, [0xC004, 0, 0, 0]),
            (Cdab, [0, 0, 0, 0xC004]),
            (Badc, [0x04C0, 0, 0, 0]),
            (Dcba, [0, 0, 0, 0x04C0]),
        ];
        for (order, words) in cases {
            assert_eq!(decode_raw(&words, F64, order), Ok(-2.5), "{order:?}");
            assert_eq!(encode_raw(-2.5, F64, order), words, "{order:?}");
        }
    }

    /// 16-bit types: word order only swaps bytes (BADC, DCBA).
    #[test]
    fn sixteen_bit_types() {
        assert_eq!(decode_raw(&[0xFFFE], I16, Abcd), Ok(-2.0));
        assert_eq!(decode_raw(&[0xFEFF], I16, Dcba), Ok(-2.0));
        assert_eq!(decode_raw(&[0xFFFE], U16, Abcd), Ok(65534.0));
        assert_eq!(decode_raw(&[0x3412], U16, Badc), Ok(f64::from(0x1234u16)));
        assert_eq!(decode_raw(&[0x1234], U16, Cdab), Ok(f64::from(0x1234u16)));
        assert_eq!(decode_raw(&[7], Bool, Abcd), Ok(1.0));
        assert_eq!(decode_raw(&[0], Bool, Abcd), Ok(0.0));
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert_eq!(
            decode_raw(&[1], F32, Abcd),
            Err(DecodeError::TooShort {
                value_type: F32,
                needed: 2,
                got: 1
            })
        );
    }

    #[test]
    fn scale_and_offset() {
        let point = PointDef {
            name: "t".into(),
            table: crate::config::profile::Table::Holding,
            address: 0,
            value_type: I16,
            word_order: Abcd,
            scale: 0.1,
            offset: -40.0,
            unit: None,
            range_min: None,
            range_max: None,
            fault: None,
            status: None,
        };
        assert!((decode_point(&[655], &point).unwrap() - 25.5).abs() < 1e-9);
        assert_eq!(encode_point(25.5, &point), vec![655]);
    }
}
