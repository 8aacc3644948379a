//! The seal node's Modbus register map, defined once.
//!
//! Addresses are 0-based protocol addresses (what goes on the wire), not the 1-based "reference
//! numbers" some tools print. Multi-register values are big-endian words, high word first (ABCD).
//!
//! Invariant: addresses never change meaning once released; new points are appended.

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Table {
    /// Read/write single bits (function codes 01, 05, 0F).
    Coil,
    /// Read-only single bits (function code 02).
    DiscreteInput,
    /// Read/write 16-bit registers (function codes 03, 06, 10).
    Holding,
    /// Read-only 16-bit registers (function code 04).
    Input,
}

impl Table {
    /// Every table, in protocol order.
    pub const ALL: [Table; 4] = [
        Table::Coil,
        Table::DiscreteInput,
        Table::Holding,
        Table::Input,
    ];

    /// Whether the table holds single bits.
    pub const fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// Most bits or registers one read may ask for (Modbus application protocol 6.1–6.4).
    pub const fn max_read(self) -> u16 {
        if self.is_bits() {
            crate::modbus::MAX_READ_BITS
        } else {
            crate::modbus::MAX_READ_REGISTERS
        }
    }

    /// The table's name in device profiles and messages: `coil`, `discrete_input`, `holding`,
    /// `input`.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }

    /// The table named `name` (as [`Table::name`] gives it).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl core::fmt::Display for Table {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the registers of a point are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One bit of a coil or discrete input.
    Bool,
    /// One unsigned 16-bit register.
    U16,
    /// Two registers, unsigned 32-bit, high word first.
    U32,
}

impl Kind {
    /// Registers (or bits) the point occupies.
    pub const fn width(self) -> u16 {
        match self {
            Kind::Bool | Kind::U16 => 1,
            Kind::U32 => 2,
        }
    }
}

/// One named point of the register map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointSpec {
    /// Name used in the agent's device profile.
    pub name: &'static str,
    /// Table the point lives in.
    pub table: Table,
    /// 0-based protocol address of its first register or bit.
    pub address: u16,
    /// Interpretation of its registers.
    pub kind: Kind,
}

/// Discrete input: lid-closed limit switch, debounced.
pub const DI_LID_CLOSED: u16 = 0;
/// Discrete input: lid-open limit switch, debounced.
pub const DI_LID_OPEN: u16 = 1;
/// Discrete input: charging gate open, debounced.
pub const DI_GATE_OPEN: u16 = 2;
/// Discrete input: lid switches implausible (both on, or both off longer than the travel time).
pub const DI_LID_FAULT: u16 = 3;
/// Discrete input: level transmitter outside the NAMUR NE43 measuring range.
pub const DI_LEVEL_FAULT: u16 = 4;
/// Number of discrete inputs.
pub const DISCRETE_INPUT_COUNT: u16 = 5;

/// Input register: material level in the bin, mm above the gate.
pub const IR_LEVEL_MM: u16 = 0;
/// Input register: raw loop current of the level transmitter, µA.
pub const IR_LEVEL_RAW_UA: u16 = 1;
/// Input register: locally derived seal state, see [`SealState`].
pub const IR_SEAL_STATE: u16 = 2;
/// Input register: fault bits, see the `FAULT_*` constants.
pub const IR_FAULT_BITS: u16 = 3;
/// Input registers (2, high word first): lid open/close cycles since power-up.
pub const IR_LID_CYCLES: u16 = 4;
/// Input registers (2, high word first): breaches detected locally since power-up.
pub const IR_BREACH_COUNT: u16 = 6;
/// Input registers (2, high word first): seconds since power-up.
pub const IR_UPTIME_S: u16 = 8;
/// Input register: firmware version, major in the high byte, minor in the low byte.
pub const IR_FIRMWARE_VERSION: u16 = 10;
/// Input register: sequence number of the newest latched seal event (wraps at 65535).
pub const IR_EVENT_SEQ: u16 = 11;
/// Number of input registers before the event latch.
pub const INPUT_REGISTER_COUNT: u16 = 12;

/// Holding register: Modbus unit id (1–247).
pub const HR_UNIT_ID: u16 = 0;
/// Holding register: baud rate divided by 100 (96 = 9600, 1152 = 115200).
pub const HR_BAUD_HUNDREDS: u16 = 1;
/// Holding register: parity (0 none, 1 odd, 2 even).
pub const HR_PARITY: u16 = 2;
/// Holding register: switch debounce time, ms.
pub const HR_DEBOUNCE_MS: u16 = 3;
/// Holding register: level at 20 mA, mm (level span).
pub const HR_LEVEL_SPAN_MM: u16 = 4;
/// Holding register: minimum level that keeps the material seal, mm.
pub const HR_SEAL_LEVEL_MIN_MM: u16 = 5;
/// Holding register: lid travel time, ms (both switches off longer than this = fault).
pub const HR_TRAVEL_TIME_MS: u16 = 6;
/// Holding register: write [`COMMIT_MAGIC`] here to apply and persist the settings above.
pub const HR_COMMIT: u16 = 7;
/// Number of holding registers.
pub const HOLDING_REGISTER_COUNT: u16 = 8;

/// The value that, written to [`HR_COMMIT`], applies and persists pending settings.
pub const COMMIT_MAGIC: u16 = 0xC0DE;

/// Fault bit: lid switches implausible.
pub const FAULT_LID_SWITCHES: u16 = 1 << 0;
/// Fault bit: level loop current below 3.8 mA (NE43: broken wire or transmitter failure).
pub const FAULT_LEVEL_LOW_CURRENT: u16 = 1 << 1;
/// Fault bit: level loop current above 20.5 mA (NE43: short circuit or transmitter failure).
pub const FAULT_LEVEL_HIGH_CURRENT: u16 = 1 << 2;
/// Fault bit: settings storage blank or corrupt, defaults in use.
pub const FAULT_SETTINGS_DEFAULTED: u16 = 1 << 3;

// ---- Appended after the first release of the map (addresses above are frozen). ----

/// Coil: identify lamp on the node (a technician finds the node on the bin); no effect on sealing.
pub const COIL_IDENTIFY: u16 = 0;
/// Coil: service mode (technician on site): readings are flagged maintenance (M) by the agent.
pub const COIL_SERVICE_MODE: u16 = 1;
/// Number of coils.
pub const COIL_COUNT: u16 = 2;

/// Seal events the node keeps in its latch (newest first), so the agent can reconcile what
/// happened between two polls.
pub const EVENT_LATCH_LEN: u16 = 8;
/// Input registers per latched event: sequence, kind, time (2 registers).
pub const EVENT_LATCH_STRIDE: u16 = 4;
/// First input register of the event latch. Slot `i` (0 = newest) starts at
/// `IR_EVENT_LATCH + i * EVENT_LATCH_STRIDE` and holds: sequence number (0 = empty slot), event
/// kind (new [`SealState`] in the low byte, [`EventCause`] in the high byte), and node uptime in ms
/// when it happened (U32, high word first, wraps after 49.7 days).
pub const IR_EVENT_LATCH: u16 = INPUT_REGISTER_COUNT;
/// Input registers (2, high word first): milliseconds since power-up (wraps after 49.7 days); the
/// time base of the event latch.
pub const IR_UPTIME_MS: u16 = IR_EVENT_LATCH + EVENT_LATCH_LEN * EVENT_LATCH_STRIDE;
/// Total number of input registers, event latch included.
pub const INPUT_REGISTER_TOTAL: u16 = IR_UPTIME_MS + 2;

/// Why the seal state changed, as latched in the high byte of an event's kind register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EventCause {
    /// An ordinary transition (sealed, charging).
    None = 0,
    /// Breach: material level below the seal minimum while the charging gate is open.
    LevelBelowSeal = 1,
    /// Breach: lid not closed while the charging gate is open (interlock violation).
    LidAndGateOpen = 2,
    /// Unknown: a sensor fault or settings not commissioned.
    SensorFault = 3,
}

impl EventCause {
    /// Decodes the high byte of an event kind register; anything unknown is `None`.
    pub const fn from_byte(value: u8) -> Self {
        match value {
            1 => EventCause::LevelBelowSeal,
            2 => EventCause::LidAndGateOpen,
            3 => EventCause::SensorFault,
            _ => EventCause::None,
        }
    }
}

/// Local seal state as exposed in [`IR_SEAL_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum SealState {
    /// Inputs faulty or not yet settled: neither sealed nor breached is known.
    Unknown = 0,
    /// Lid and gate closed.
    Sealed = 1,
    /// A charging step in progress with the seal held.
    Charging = 2,
    /// A breach signature is present.
    Breach = 3,
}

impl SealState {
    /// Decodes a register value; anything unknown is [`SealState::Unknown`].
    pub const fn from_register(value: u16) -> Self {
        match value {
            1 => SealState::Sealed,
            2 => SealState::Charging,
            3 => SealState::Breach,
            _ => SealState::Unknown,
        }
    }
}

/// The named points of the first release of the map, in address order per table: what the agent's
/// built-in profile polls. Later points are in [`SEAL_NODE_POINTS_APPENDED`].
pub const SEAL_NODE_POINTS: &[PointSpec] = &[
    PointSpec {
        name: "lid_closed",
        table: Table::DiscreteInput,
        address: DI_LID_CLOSED,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "lid_open",
        table: Table::DiscreteInput,
        address: DI_LID_OPEN,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "gate_open",
        table: Table::DiscreteInput,
        address: DI_GATE_OPEN,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "lid_fault",
        table: Table::DiscreteInput,
        address: DI_LID_FAULT,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "level_fault",
        table: Table::DiscreteInput,
        address: DI_LEVEL_FAULT,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "level_mm",
        table: Table::Input,
        address: IR_LEVEL_MM,
        kind: Kind::U16,
    },
    PointSpec {
        name: "level_raw_ua",
        table: Table::Input,
        address: IR_LEVEL_RAW_UA,
        kind: Kind::U16,
    },
    PointSpec {
        name: "seal_state",
        table: Table::Input,
        address: IR_SEAL_STATE,
        kind: Kind::U16,
    },
    PointSpec {
        name: "fault_bits",
        table: Table::Input,
        address: IR_FAULT_BITS,
        kind: Kind::U16,
    },
    PointSpec {
        name: "lid_cycles",
        table: Table::Input,
        address: IR_LID_CYCLES,
        kind: Kind::U32,
    },
    PointSpec {
        name: "breach_count",
        table: Table::Input,
        address: IR_BREACH_COUNT,
        kind: Kind::U32,
    },
    PointSpec {
        name: "uptime_s",
        table: Table::Input,
        address: IR_UPTIME_S,
        kind: Kind::U32,
    },
    PointSpec {
        name: "firmware_version",
        table: Table::Input,
        address: IR_FIRMWARE_VERSION,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_seq",
        table: Table::Input,
        address: IR_EVENT_SEQ,
        kind: Kind::U16,
    },
];

/// Points appended after the first release: coils, the event latch, uptime in ms and the
/// technician settings. Kept apart from [`SEAL_NODE_POINTS`] so that the agent's shipped profile
/// (which must equal `SEAL_NODE_POINTS`) opts in to polling them deliberately; together the two
/// lists are every named point of the node.
pub const SEAL_NODE_POINTS_APPENDED: &[PointSpec] = &[
    PointSpec {
        name: "identify",
        table: Table::Coil,
        address: COIL_IDENTIFY,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "service_mode",
        table: Table::Coil,
        address: COIL_SERVICE_MODE,
        kind: Kind::Bool,
    },
    PointSpec {
        name: "event_0_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_0_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 1,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_0_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 2,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_1_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 4,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_1_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 5,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_1_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 6,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_2_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 8,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_2_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 9,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_2_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 10,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_3_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 12,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_3_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 13,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_3_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 14,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_4_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 16,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_4_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 17,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_4_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 18,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_5_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 20,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_5_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 21,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_5_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 22,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_6_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 24,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_6_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 25,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_6_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 26,
        kind: Kind::U32,
    },
    PointSpec {
        name: "event_7_seq",
        table: Table::Input,
        address: IR_EVENT_LATCH + 28,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_7_kind",
        table: Table::Input,
        address: IR_EVENT_LATCH + 29,
        kind: Kind::U16,
    },
    PointSpec {
        name: "event_7_at_ms",
        table: Table::Input,
        address: IR_EVENT_LATCH + 30,
        kind: Kind::U32,
    },
    PointSpec {
        name: "uptime_ms",
        table: Table::Input,
        address: IR_UPTIME_MS,
        kind: Kind::U32,
    },
    PointSpec {
        name: "unit_id",
        table: Table::Holding,
        address: HR_UNIT_ID,
        kind: Kind::U16,
    },
    PointSpec {
        name: "baud_hundreds",
        table: Table::Holding,
        address: HR_BAUD_HUNDREDS,
        kind: Kind::U16,
    },
    PointSpec {
        name: "parity",
        table: Table::Holding,
        address: HR_PARITY,
        kind: Kind::U16,
    },
    PointSpec {
        name: "debounce_ms",
        table: Table::Holding,
        address: HR_DEBOUNCE_MS,
        kind: Kind::U16,
    },
    PointSpec {
        name: "level_span_mm",
        table: Table::Holding,
        address: HR_LEVEL_SPAN_MM,
        kind: Kind::U16,
    },
    PointSpec {
        name: "seal_level_min_mm",
        table: Table::Holding,
        address: HR_SEAL_LEVEL_MIN_MM,
        kind: Kind::U16,
    },
    PointSpec {
        name: "travel_time_ms",
        table: Table::Holding,
        address: HR_TRAVEL_TIME_MS,
        kind: Kind::U16,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_do_not_overlap_and_fit_their_tables() {
        let all: Vec<&PointSpec> = SEAL_NODE_POINTS
            .iter()
            .chain(SEAL_NODE_POINTS_APPENDED)
            .collect();
        for (i, a) in all.iter().enumerate() {
            let limit = match a.table {
                Table::Coil => COIL_COUNT,
                Table::DiscreteInput => DISCRETE_INPUT_COUNT,
                Table::Holding => HOLDING_REGISTER_COUNT,
                Table::Input => INPUT_REGISTER_TOTAL,
            };
            assert!(
                a.address + a.kind.width() <= limit,
                "{} past the end of its table",
                a.name
            );
            for b in &all[i + 1..] {
                assert_ne!(a.name, b.name);
                if a.table == b.table {
                    let disjoint = a.address + a.kind.width() <= b.address
                        || b.address + b.kind.width() <= a.address;
                    assert!(disjoint, "{} overlaps {}", a.name, b.name);
                }
            }
        }
    }

    #[test]
    fn first_release_addresses_are_frozen() {
        assert_eq!(SEAL_NODE_POINTS.len(), 14);
        assert_eq!((IR_EVENT_SEQ, INPUT_REGISTER_COUNT, HR_COMMIT), (11, 12, 7));
        assert_eq!(
            (IR_EVENT_LATCH, IR_UPTIME_MS, INPUT_REGISTER_TOTAL),
            (12, 44, 46)
        );
    }
}
