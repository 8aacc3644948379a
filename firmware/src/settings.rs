//! Technician settings: validation, their holding-register view, and persistence in two slots.
//!
//! A technician writes holding registers (validated one by one: a bad value answers exception 03
//! and changes nothing), then writes [`COMMIT_MAGIC`](crate::registers::COMMIT_MAGIC) to the commit
//! register: the staged settings are checked as a whole, persisted, and only then take effect.
//!
//! Persistence ([`SettingsStore`] over any [`SettingsStorage`]): each record carries a magic, a
//! format version, a generation counter and a CRC-16. Two slots alternate: a save always writes the
//! slot that does *not* hold the newest valid record, so a power cut in the middle of a write leaves
//! the previous record intact, and loading picks the valid record with the newest generation.
//! Blank (erased, all 0xFF) or corrupt storage loads as "none", and the node runs on
//! [`Settings::DEFAULT`] flagged as not commissioned.

use core::fmt;

use crate::modbus::crc::crc16;
use crate::modbus::UnitId;
use crate::registers::{
    HR_BAUD_HUNDREDS, HR_DEBOUNCE_MS, HR_LEVEL_SPAN_MM, HR_PARITY, HR_SEAL_LEVEL_MIN_MM,
    HR_TRAVEL_TIME_MS, HR_UNIT_ID,
};

/// Serial line speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaudRate {
    /// 1200 baud.
    B1200,
    /// 2400 baud.
    B2400,
    /// 4800 baud.
    B4800,
    /// 9600 baud.
    B9600,
    /// 19200 baud.
    B19200,
    /// 38400 baud.
    B38400,
    /// 57600 baud.
    B57600,
    /// 115200 baud.
    B115200,
}

impl BaudRate {
    /// From the register value (baud / 100).
    pub const fn from_hundreds(v: u16) -> Option<Self> {
        Some(match v {
            12 => BaudRate::B1200,
            24 => BaudRate::B2400,
            48 => BaudRate::B4800,
            96 => BaudRate::B9600,
            192 => BaudRate::B19200,
            384 => BaudRate::B38400,
            576 => BaudRate::B57600,
            1152 => BaudRate::B115200,
            _ => return None,
        })
    }

    /// Every rate, slowest first.
    pub const ALL: [BaudRate; 8] = [
        BaudRate::B1200,
        BaudRate::B2400,
        BaudRate::B4800,
        BaudRate::B9600,
        BaudRate::B19200,
        BaudRate::B38400,
        BaudRate::B57600,
        BaudRate::B115200,
    ];

    /// The rate of `bps` bits per second, if it is one of these.
    pub fn from_bits_per_second(bps: u32) -> Option<Self> {
        BaudRate::ALL
            .into_iter()
            .find(|b| b.bits_per_second() == bps)
    }

    /// Bits per second.
    pub const fn bits_per_second(self) -> u32 {
        match self {
            BaudRate::B1200 => 1_200,
            BaudRate::B2400 => 2_400,
            BaudRate::B4800 => 4_800,
            BaudRate::B9600 => 9_600,
            BaudRate::B19200 => 19_200,
            BaudRate::B38400 => 38_400,
            BaudRate::B57600 => 57_600,
            BaudRate::B115200 => 115_200,
        }
    }

    /// The register value (baud / 100).
    pub const fn hundreds(self) -> u16 {
        (self.bits_per_second() / 100) as u16
    }
}

impl fmt::Display for BaudRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.bits_per_second(), f)
    }
}

/// Serial line parity (8 data bits; no parity means 2 stop bits on a conforming line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Parity {
    /// No parity.
    None,
    /// Odd parity.
    Odd,
    /// Even parity (the Modbus default).
    Even,
}

impl Parity {
    /// From the register value (0 none, 1 odd, 2 even).
    pub const fn from_register(v: u16) -> Option<Self> {
        Some(match v {
            0 => Parity::None,
            1 => Parity::Odd,
            2 => Parity::Even,
            _ => return None,
        })
    }

    /// The parity's name in configuration files and messages: `none`, `odd`, `even`.
    pub const fn name(self) -> &'static str {
        match self {
            Parity::None => "none",
            Parity::Odd => "odd",
            Parity::Even => "even",
        }
    }

    /// The register value.
    pub const fn register(self) -> u16 {
        match self {
            Parity::None => 0,
            Parity::Odd => 1,
            Parity::Even => 2,
        }
    }
}

impl fmt::Display for Parity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A setting that cannot be accepted; answered as exception 03.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingError {
    /// Unit id outside 1–247.
    UnitId(u16),
    /// Not one of the supported baud rates (register = baud / 100).
    Baud(u16),
    /// Parity not 0, 1 or 2.
    Parity(u16),
    /// Debounce outside [`DEBOUNCE_MS`](Settings::DEBOUNCE_MS).
    Debounce(u16),
    /// Level span outside [`LEVEL_SPAN_MM`](Settings::LEVEL_SPAN_MM).
    LevelSpan(u16),
    /// Seal level minimum above the level span.
    SealLevelAboveSpan {
        /// Staged minimum, mm.
        seal_level_min_mm: u16,
        /// Staged span, mm.
        level_span_mm: u16,
    },
    /// Travel time outside [`TRAVEL_TIME_MS`](Settings::TRAVEL_TIME_MS).
    TravelTime(u16),
    /// The address is not a setting.
    NotASetting(u16),
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SettingError::UnitId(v) => write!(f, "unit id {v} is outside 1..=247"),
            SettingError::Baud(v) => write!(
                f,
                "baud register {v} is not one of 12, 24, 48, 96, 192, 384, 576, 1152 (baud / 100)"
            ),
            SettingError::Parity(v) => write!(f, "parity {v} is not 0 (none), 1 (odd) or 2 (even)"),
            SettingError::Debounce(v) => write!(f, "debounce {v} ms is outside 1..=10000"),
            SettingError::LevelSpan(v) => write!(f, "level span {v} mm is outside 100..=60000"),
            SettingError::SealLevelAboveSpan { seal_level_min_mm, level_span_mm } => write!(
                f,
                "seal level minimum {seal_level_min_mm} mm is above the level span {level_span_mm} mm"
            ),
            SettingError::TravelTime(v) => write!(f, "travel time {v} ms is outside 100..=60000"),
            SettingError::NotASetting(a) => write!(f, "holding register {a} is not a setting"),
        }
    }
}

impl core::error::Error for SettingError {}

/// The technician settings of a seal node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settings {
    /// Modbus unit id.
    pub unit_id: UnitId,
    /// Line speed.
    pub baud: BaudRate,
    /// Line parity.
    pub parity: Parity,
    /// Switch debounce time, ms.
    pub debounce_ms: u16,
    /// Level at 20 mA, mm.
    pub level_span_mm: u16,
    /// Minimum level that keeps the material seal, mm.
    pub seal_level_min_mm: u16,
    /// Lid travel time, ms: both lid switches off longer than this is a fault.
    pub travel_time_ms: u16,
}

const fn default_unit() -> UnitId {
    match UnitId::new(1) {
        Some(u) => u,
        None => panic!("1 is a valid unit id"),
    }
}

impl Settings {
    /// What a node runs on before it is commissioned: unit 1, 19200 8E1, 50 ms debounce. The
    /// plant values (span, seal level, travel time) are placeholders; the seal state stays unknown
    /// until a technician commits real ones.
    pub const DEFAULT: Settings = Settings {
        unit_id: default_unit(),
        baud: BaudRate::B19200,
        parity: Parity::Even,
        debounce_ms: 50,
        level_span_mm: 5_000,
        seal_level_min_mm: 0,
        travel_time_ms: 10_000,
    };
    /// Allowed debounce times, ms.
    pub const DEBOUNCE_MS: core::ops::RangeInclusive<u16> = 1..=10_000;
    /// Allowed level spans, mm.
    pub const LEVEL_SPAN_MM: core::ops::RangeInclusive<u16> = 100..=60_000;
    /// Allowed travel times, ms.
    pub const TRAVEL_TIME_MS: core::ops::RangeInclusive<u16> = 100..=60_000;

    /// The holding-register value of setting `address`.
    pub const fn register(&self, address: u16) -> Option<u16> {
        Some(match address {
            HR_UNIT_ID => self.unit_id.get() as u16,
            HR_BAUD_HUNDREDS => self.baud.hundreds(),
            HR_PARITY => self.parity.register(),
            HR_DEBOUNCE_MS => self.debounce_ms,
            HR_LEVEL_SPAN_MM => self.level_span_mm,
            HR_SEAL_LEVEL_MIN_MM => self.seal_level_min_mm,
            HR_TRAVEL_TIME_MS => self.travel_time_ms,
            _ => return None,
        })
    }

    /// These settings with register `address` set to `value`, if that value is valid on its own.
    pub fn with_register(&self, address: u16, value: u16) -> Result<Settings, SettingError> {
        let mut s = *self;
        match address {
            HR_UNIT_ID => {
                s.unit_id = u8::try_from(value)
                    .ok()
                    .and_then(UnitId::new)
                    .ok_or(SettingError::UnitId(value))?;
            }
            HR_BAUD_HUNDREDS => {
                s.baud = BaudRate::from_hundreds(value).ok_or(SettingError::Baud(value))?
            }
            HR_PARITY => {
                s.parity = Parity::from_register(value).ok_or(SettingError::Parity(value))?
            }
            HR_DEBOUNCE_MS if Self::DEBOUNCE_MS.contains(&value) => s.debounce_ms = value,
            HR_DEBOUNCE_MS => return Err(SettingError::Debounce(value)),
            HR_LEVEL_SPAN_MM if Self::LEVEL_SPAN_MM.contains(&value) => s.level_span_mm = value,
            HR_LEVEL_SPAN_MM => return Err(SettingError::LevelSpan(value)),
            // Checked against the span as a whole at commit, so either can be written first.
            HR_SEAL_LEVEL_MIN_MM => s.seal_level_min_mm = value,
            HR_TRAVEL_TIME_MS if Self::TRAVEL_TIME_MS.contains(&value) => s.travel_time_ms = value,
            HR_TRAVEL_TIME_MS => return Err(SettingError::TravelTime(value)),
            a => return Err(SettingError::NotASetting(a)),
        }
        Ok(s)
    }

    /// Checks every setting and their combination.
    pub fn validate(&self) -> Result<(), SettingError> {
        let mut check = Settings::DEFAULT;
        for address in HR_UNIT_ID..=HR_TRAVEL_TIME_MS {
            let value = self
                .register(address)
                .ok_or(SettingError::NotASetting(address))?;
            check = check.with_register(address, value)?;
        }
        if self.seal_level_min_mm > self.level_span_mm {
            return Err(SettingError::SealLevelAboveSpan {
                seal_level_min_mm: self.seal_level_min_mm,
                level_span_mm: self.level_span_mm,
            });
        }
        Ok(())
    }

    fn encode(&self, generation: u32) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[0..2].copy_from_slice(&RECORD_MAGIC);
        r[2] = RECORD_VERSION;
        r[4..8].copy_from_slice(&generation.to_le_bytes());
        for (i, address) in (HR_UNIT_ID..=HR_TRAVEL_TIME_MS).enumerate() {
            let v = self.register(address).unwrap_or(0);
            r[8 + 2 * i..10 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc16(&r[..RECORD_LEN - 2]);
        r[RECORD_LEN - 2..].copy_from_slice(&crc.to_le_bytes());
        r
    }

    fn decode(r: &[u8; RECORD_LEN]) -> Option<(Settings, u32)> {
        let crc = u16::from_le_bytes([r[RECORD_LEN - 2], r[RECORD_LEN - 1]]);
        if r[0..2] != RECORD_MAGIC || r[2] != RECORD_VERSION || crc16(&r[..RECORD_LEN - 2]) != crc {
            return None;
        }
        let generation = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let mut s = Settings::DEFAULT;
        for (i, address) in (HR_UNIT_ID..=HR_TRAVEL_TIME_MS).enumerate() {
            let v = u16::from_le_bytes([r[8 + 2 * i], r[9 + 2 * i]]);
            s = s.with_register(address, v).ok()?;
        }
        s.validate().ok()?;
        Some((s, generation))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::DEFAULT
    }
}

/// Bytes of one stored settings record.
pub const RECORD_LEN: usize = 24;
const RECORD_MAGIC: [u8; 2] = *b"SW";
const RECORD_VERSION: u8 = 1;

/// One of the two storage slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot.
    A,
    /// The second slot.
    B,
}

impl Slot {
    /// The other slot.
    pub const fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// Non-volatile storage for settings records: two independent slots of [`RECORD_LEN`] bytes
/// (two flash pages, two EEPROM areas, a file). A write may be cut short by a power loss.
pub trait SettingsStorage {
    /// The storage's own error.
    type Error: Copy + fmt::Debug;
    /// Reads the record in `slot`.
    fn read(&mut self, slot: Slot, record: &mut [u8; RECORD_LEN]) -> Result<(), Self::Error>;
    /// Replaces the record in `slot` (erase and program on flash).
    fn write(&mut self, slot: Slot, record: &[u8; RECORD_LEN]) -> Result<(), Self::Error>;
}

/// Settings storage in RAM: for the simulator, tests and boards without non-volatile memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamStorage {
    /// The two slots, A then B, as raw bytes (erased = 0xFF).
    pub slots: [[u8; RECORD_LEN]; 2],
}

impl RamStorage {
    /// Erased storage (all 0xFF, like fresh flash).
    pub const fn blank() -> Self {
        RamStorage {
            slots: [[0xFF; RECORD_LEN]; 2],
        }
    }
}

impl Default for RamStorage {
    fn default() -> Self {
        Self::blank()
    }
}

impl SettingsStorage for RamStorage {
    type Error = core::convert::Infallible;

    fn read(&mut self, slot: Slot, record: &mut [u8; RECORD_LEN]) -> Result<(), Self::Error> {
        *record = self.slots[slot as usize];
        Ok(())
    }

    fn write(&mut self, slot: Slot, record: &[u8; RECORD_LEN]) -> Result<(), Self::Error> {
        self.slots[slot as usize] = *record;
        Ok(())
    }
}

/// Why settings could not be saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveError<E> {
    /// The settings are not valid.
    Invalid(SettingError),
    /// The storage failed.
    Storage(E),
    /// The record read back differs from what was written.
    Verify,
}

impl<E: fmt::Debug> fmt::Display for SaveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaveError::Invalid(e) => write!(f, "settings not saved: {e}"),
            SaveError::Storage(e) => write!(f, "settings storage failed: {e:?}"),
            SaveError::Verify => {
                write!(f, "settings record read back differs from what was written")
            }
        }
    }
}

/// Loads and saves settings in two alternating slots of a [`SettingsStorage`].
#[derive(Debug, Clone)]
pub struct SettingsStore<S> {
    storage: S,
    /// Slot and generation of the newest valid record.
    newest: Option<(Slot, u32)>,
}

impl<S: SettingsStorage> SettingsStore<S> {
    /// Opens `storage` and loads the newest valid record; `None` if both slots are blank or corrupt.
    pub fn open(mut storage: S) -> (Self, Option<Settings>) {
        let mut read = |slot: Slot| {
            let mut record = [0u8; RECORD_LEN];
            storage.read(slot, &mut record).ok()?;
            Settings::decode(&record)
        };
        let a = read(Slot::A);
        let b = read(Slot::B);
        let (newest, settings) = match (a, b) {
            (Some((sa, ga)), Some((sb, gb))) => {
                // Wrapping comparison: the generation counter may roll over.
                if (gb.wrapping_sub(ga) as i32) > 0 {
                    (Some((Slot::B, gb)), Some(sb))
                } else {
                    (Some((Slot::A, ga)), Some(sa))
                }
            }
            (Some((sa, ga)), None) => (Some((Slot::A, ga)), Some(sa)),
            (None, Some((sb, gb))) => (Some((Slot::B, gb)), Some(sb)),
            (None, None) => (None, None),
        };
        (SettingsStore { storage, newest }, settings)
    }

    /// Validates and saves `settings` into the slot not holding the newest record, and reads it
    /// back. On any error the previously saved settings are still the ones that load.
    pub fn save(&mut self, settings: &Settings) -> Result<(), SaveError<S::Error>> {
        settings.validate().map_err(SaveError::Invalid)?;
        let (slot, generation) = match self.newest {
            Some((slot, g)) => (slot.other(), g.wrapping_add(1)),
            None => (Slot::A, 1),
        };
        let record = settings.encode(generation);
        self.storage
            .write(slot, &record)
            .map_err(SaveError::Storage)?;
        let mut back = [0u8; RECORD_LEN];
        self.storage
            .read(slot, &mut back)
            .map_err(SaveError::Storage)?;
        if back != record {
            return Err(SaveError::Verify);
        }
        self.newest = Some((slot, generation));
        Ok(())
    }

    /// The storage.
    pub const fn storage(&self) -> &S {
        &self.storage
    }

    /// Gives the storage back.
    pub fn release(self) -> S {
        self.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Settings {
        Settings {
            unit_id: UnitId::new(17).unwrap(),
            baud: BaudRate::B9600,
            parity: Parity::None,
            debounce_ms: 80,
            level_span_mm: 6_000,
            seal_level_min_mm: 1_200,
            travel_time_ms: 7_000,
        }
    }

    #[test]
    fn blank_and_corrupt_storage_load_as_none() {
        let (_, s) = SettingsStore::open(RamStorage::blank());
        assert_eq!(s, None);
        let (_, s) = SettingsStore::open(RamStorage {
            slots: [[0; RECORD_LEN]; 2],
        });
        assert_eq!(s, None);
        let mut st = RamStorage::blank();
        st.slots[0] = sample().encode(1);
        st.slots[0][9] ^= 0x01; // a flipped bit
        assert_eq!(SettingsStore::open(st).1, None);
    }

    #[test]
    fn save_alternates_slots_and_newest_wins() {
        let (mut store, _) = SettingsStore::open(RamStorage::blank());
        let first = sample();
        store.save(&first).unwrap();
        let mut second = first;
        second.debounce_ms = 120;
        store.save(&second).unwrap();
        let raw = store.release();
        assert_eq!(Settings::decode(&raw.slots[0]).unwrap(), (first, 1));
        assert_eq!(Settings::decode(&raw.slots[1]).unwrap(), (second, 2));
        let (mut store, loaded) = SettingsStore::open(raw);
        assert_eq!(loaded, Some(second));
        let mut third = second;
        third.travel_time_ms = 9_000;
        store.save(&third).unwrap();
        assert_eq!(
            Settings::decode(&store.storage().slots[0]).unwrap(),
            (third, 3)
        );
        assert_eq!(SettingsStore::open(store.release()).1, Some(third));
    }

    #[test]
    fn generation_wraps() {
        let mut st = RamStorage::blank();
        let mut newer = sample();
        newer.debounce_ms = 99;
        st.slots[0] = sample().encode(u32::MAX);
        st.slots[1] = newer.encode(0);
        assert_eq!(SettingsStore::open(st).1, Some(newer));
    }

    #[test]
    fn invalid_settings_are_not_saved() {
        let (mut store, _) = SettingsStore::open(RamStorage::blank());
        let mut bad = sample();
        bad.seal_level_min_mm = 7_000;
        assert_eq!(
            store.save(&bad),
            Err(SaveError::Invalid(SettingError::SealLevelAboveSpan {
                seal_level_min_mm: 7_000,
                level_span_mm: 6_000
            }))
        );
        assert_eq!(store.release(), RamStorage::blank());
    }

    #[test]
    fn register_validation_table() {
        let d = Settings::DEFAULT;
        let ok: &[(u16, u16)] = &[
            (HR_UNIT_ID, 1),
            (HR_UNIT_ID, 247),
            (HR_BAUD_HUNDREDS, 96),
            (HR_BAUD_HUNDREDS, 1152),
            (HR_PARITY, 0),
            (HR_PARITY, 2),
            (HR_DEBOUNCE_MS, 1),
            (HR_DEBOUNCE_MS, 10_000),
            (HR_LEVEL_SPAN_MM, 100),
            (HR_LEVEL_SPAN_MM, 60_000),
            (HR_SEAL_LEVEL_MIN_MM, 0),
            (HR_TRAVEL_TIME_MS, 100),
            (HR_TRAVEL_TIME_MS, 60_000),
        ];
        for &(a, v) in ok {
            assert_eq!(
                d.with_register(a, v).unwrap().register(a),
                Some(v),
                "{a} = {v}"
            );
        }
        let bad: &[(u16, u16, SettingError)] = &[
            (HR_UNIT_ID, 0, SettingError::UnitId(0)),
            (HR_UNIT_ID, 248, SettingError::UnitId(248)),
            (HR_UNIT_ID, 257, SettingError::UnitId(257)),
            (HR_BAUD_HUNDREDS, 95, SettingError::Baud(95)),
            (HR_PARITY, 3, SettingError::Parity(3)),
            (HR_DEBOUNCE_MS, 0, SettingError::Debounce(0)),
            (HR_DEBOUNCE_MS, 10_001, SettingError::Debounce(10_001)),
            (HR_LEVEL_SPAN_MM, 99, SettingError::LevelSpan(99)),
            (HR_TRAVEL_TIME_MS, 60_001, SettingError::TravelTime(60_001)),
            (7, 0, SettingError::NotASetting(7)),
        ];
        for &(a, v, e) in bad {
            assert_eq!(d.with_register(a, v), Err(e), "{a} = {v}");
        }
    }
}
