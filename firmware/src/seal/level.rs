//! Material level from a 4–20 mA transmitter, with the NAMUR NE43 fault ranges.
//!
//! NE43: below 3.8 mA or above 20.5 mA the loop signals a failure (broken wire, short circuit,
//! transmitter fault) and there is no level. 3.8–4.0 mA and 20.0–20.5 mA are under- and
//! over-range of a working transmitter: the level is clamped to 0 and to the span. In between,
//! the level scales linearly: 4 mA = 0 mm, 20 mA = span (a technician setting).
//! Invariant: pure integer arithmetic, no overflow for any `u16` input.

/// Lowest loop current of a working transmitter, µA (NE43).
pub const NE43_MIN_UA: u16 = 3_800;
/// Highest loop current of a working transmitter, µA (NE43).
pub const NE43_MAX_UA: u16 = 20_500;
/// Loop current at 0 % of span, µA.
pub const LOOP_ZERO_UA: u16 = 4_000;
/// Loop current at 100 % of span, µA.
pub const LOOP_FULL_UA: u16 = 20_000;

/// Why there is no level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelFault {
    /// Below 3.8 mA: broken wire or transmitter failure.
    LowCurrent,
    /// Above 20.5 mA: short circuit or transmitter failure.
    HighCurrent,
}

/// One conditioned level sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelReading {
    /// Loop current as measured, µA.
    pub raw_ua: u16,
    /// Level above the gate, mm, or why there is none.
    pub level_mm: Result<u16, LevelFault>,
}

impl LevelReading {
    /// Conditions a loop current of `raw_ua` for a transmitter whose 20 mA means `span_mm`.
    pub fn from_loop_current(raw_ua: u16, span_mm: u16) -> Self {
        let level_mm = if raw_ua < NE43_MIN_UA {
            Err(LevelFault::LowCurrent)
        } else if raw_ua > NE43_MAX_UA {
            Err(LevelFault::HighCurrent)
        } else {
            let above_zero = u32::from(raw_ua.clamp(LOOP_ZERO_UA, LOOP_FULL_UA) - LOOP_ZERO_UA);
            let full = u32::from(LOOP_FULL_UA - LOOP_ZERO_UA);
            // Rounded to the nearest mm; at most span_mm, so the conversion cannot fail.
            let mm = (above_zero * u32::from(span_mm) + full / 2) / full;
            Ok(u16::try_from(mm).unwrap_or(span_mm))
        };
        LevelReading { raw_ua, level_mm }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (µA, span mm, expected)
    #[test]
    fn ne43_and_scaling_table() {
        use LevelFault::*;
        let rows: &[(u16, u16, Result<u16, LevelFault>)] = &[
            (0, 5_000, Err(LowCurrent)),
            (3_599, 5_000, Err(LowCurrent)), // NE43 failure band
            (3_799, 5_000, Err(LowCurrent)),
            (3_800, 5_000, Ok(0)), // under-range, clamped
            (3_999, 5_000, Ok(0)),
            (4_000, 5_000, Ok(0)),
            (8_000, 5_000, Ok(1_250)),
            (12_000, 5_000, Ok(2_500)),
            (12_003, 5_000, Ok(2_501)), // 0.9375 mm rounds up
            (20_000, 5_000, Ok(5_000)),
            (20_500, 5_000, Ok(5_000)), // over-range, clamped
            (20_501, 5_000, Err(HighCurrent)),
            (21_000, 5_000, Err(HighCurrent)), // NE43 failure band
            (u16::MAX, 5_000, Err(HighCurrent)),
            (20_000, u16::MAX, Ok(u16::MAX)),
            (12_000, 0, Ok(0)),
        ];
        for &(ua, span, want) in rows {
            let r = LevelReading::from_loop_current(ua, span);
            assert_eq!(
                (r.raw_ua, r.level_mm),
                (ua, want),
                "{ua} µA, span {span} mm"
            );
        }
    }
}
