//! Device profiles: which registers of a device carry which named points, and how to decode them.
//!
//! A profile is a TOML file `profiles/<name>.toml` or the built-in `seal-node`, which is derived
//! from the firmware's register map (`sealwatch_firmware::registers`), the one definition of what a
//! seal node exposes. Validated profiles guarantee: point names unique, every point inside the
//! 16-bit address space, no two points of a table overlapping, types fit their table.

use std::fmt;

use sealwatch_firmware::registers::{self as fw, SEAL_NODE_POINTS, SEAL_NODE_POINTS_APPENDED};

use super::raw::{RawPoint, RawProfile};
use super::source::KeyPath;
use super::Issues;

/// Name of the built-in seal-node profile.
pub const SEAL_NODE_PROFILE: &str = "seal-node";

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Coils, function code 01.
    Coil,
    /// Discrete inputs, function code 02.
    DiscreteInput,
    /// Holding registers, function code 03.
    Holding,
    /// Input registers, function code 04.
    Input,
}

impl Table {
    /// Whether the table holds single bits.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// Most bits or registers one request may read (Modbus application protocol, 6.1–6.4).
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "coil" => Table::Coil,
            "discrete_input" => Table::DiscreteInput,
            "holding" => Table::Holding,
            "input" => Table::Input,
            _ => return None,
        })
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Holding => "holding",
            Table::Input => "input",
        })
    }
}

/// How the registers of a point are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// One bit.
    Bool,
    /// 16-bit unsigned.
    U16,
    /// 16-bit two's complement.
    I16,
    /// 32-bit unsigned.
    U32,
    /// 32-bit two's complement.
    I32,
    /// 64-bit unsigned (values above 2^53 lose precision as engineering values).
    U64,
    /// IEEE 754 single.
    F32,
    /// IEEE 754 double.
    F64,
}

impl ValueType {
    /// Registers (or bits) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            ValueType::Bool | ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::F64 => 4,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "bool" => ValueType::Bool,
            "u16" => ValueType::U16,
            "i16" => ValueType::I16,
            "u32" => ValueType::U32,
            "i32" => ValueType::I32,
            "u64" => ValueType::U64,
            "f32" => ValueType::F32,
            "f64" => ValueType::F64,
            _ => return None,
        })
    }
}

/// Order of bytes and words of multi-register values, named by where the bytes of the big-endian
/// value `A B C D` end up on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WordOrder {
    /// Big-endian: high word first, high byte first.
    #[default]
    Abcd,
    /// Words swapped (low word first), bytes big-endian within each word.
    Cdab,
    /// Bytes swapped within each word, high word first.
    Badc,
    /// Little-endian: low word first, low byte first.
    Dcba,
}

impl WordOrder {
    /// Whether the words arrive low word first.
    pub fn words_reversed(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    /// Whether the two bytes inside each register are swapped.
    pub fn bytes_swapped(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_uppercase().as_str() {
            "ABCD" => WordOrder::Abcd,
            "CDAB" => WordOrder::Cdab,
            "BADC" => WordOrder::Badc,
            "DCBA" => WordOrder::Dcba,
            _ => return None,
        })
    }
}

/// One named point of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct PointDef {
    /// Name, unique in the profile.
    pub name: String,
    /// Table.
    pub table: Table,
    /// 0-based protocol address of the first register or bit.
    pub address: u16,
    /// Interpretation.
    pub value_type: ValueType,
    /// Byte and word order of multi-register values.
    pub word_order: WordOrder,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Engineering unit.
    pub unit: Option<String>,
    /// Measuring range low end (below: flag D).
    pub range_min: Option<f64>,
    /// Measuring range high end (above: flag T).
    pub range_max: Option<f64>,
}

impl PointDef {
    /// Registers (or bits) the point occupies.
    pub fn width(&self) -> u16 {
        self.value_type.width()
    }

    /// One past the last address the point occupies (may be 65536).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width())
    }
}

/// A validated device profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name (file stem).
    pub name: String,
    /// What device it describes.
    pub description: String,
    /// Points.
    pub points: Vec<PointDef>,
}

impl Profile {
    /// The point of this name.
    pub fn point(&self, name: &str) -> Option<&PointDef> {
        self.points.iter().find(|p| p.name == name)
    }

    /// The built-in seal-node profile, from the firmware's register map: every point of the first
    /// release, plus the event latch and the uptime in ms (input registers; the rules reconcile
    /// charging cycles missed during a communication gap from them). Coils and the technician
    /// settings are not polled: they belong to commissioning, not to monitoring.
    pub fn seal_node() -> Profile {
        let points = SEAL_NODE_POINTS
            .iter()
            .chain(
                SEAL_NODE_POINTS_APPENDED
                    .iter()
                    .filter(|p| p.table == fw::Table::Input),
            )
            .map(|spec| PointDef {
                name: spec.name.to_owned(),
                table: match spec.table {
                    fw::Table::Coil => Table::Coil,
                    fw::Table::DiscreteInput => Table::DiscreteInput,
                    fw::Table::Holding => Table::Holding,
                    fw::Table::Input => Table::Input,
                },
                address: spec.address,
                value_type: match spec.kind {
                    fw::Kind::Bool => ValueType::Bool,
                    fw::Kind::U16 => ValueType::U16,
                    fw::Kind::U32 => ValueType::U32,
                },
                word_order: WordOrder::Abcd,
                scale: 1.0,
                offset: 0.0,
                unit: seal_node_unit(spec.name).map(str::to_owned),
                range_min: None,
                range_max: None,
            })
            .collect();
        Profile {
            name: SEAL_NODE_PROFILE.to_owned(),
            description: "sealwatch seal node (built in, from the firmware register map)"
                .to_owned(),
            points,
        }
    }
}

/// Units of the seal node's points, where they have one.
fn seal_node_unit(point: &str) -> Option<&'static str> {
    match point {
        "level_mm" => Some("mm"),
        "level_raw_ua" => Some("uA"),
        "uptime_s" => Some("s"),
        "uptime_ms" => Some("ms"),
        _ => None,
    }
}

/// Validates a parsed profile file; problems go to `issues` with their key paths.
pub(super) fn validate_profile(name: &str, raw: RawProfile, issues: &mut Issues<'_>) -> Profile {
    let root = KeyPath::root();
    let mut points: Vec<(KeyPath, PointDef)> = Vec::new();
    for (i, raw_point) in raw.points.into_iter().enumerate() {
        let path = root.key("points").index(i);
        if let Some(point) = validate_point(&path, raw_point, issues) {
            if let Some((first, _)) = points.iter().find(|(_, p)| p.name == point.name) {
                issues.push(
                    path.key("name"),
                    format!(
                        "duplicate point name '{}' (first defined at {first}); point names must be unique in a profile",
                        point.name
                    ),
                );
            }
            points.push((path, point));
        }
    }
    // Overlaps, per table, in address order.
    let mut sorted: Vec<&(KeyPath, PointDef)> = points.iter().collect();
    sorted.sort_by_key(|(_, p)| (p.table, p.address));
    for pair in sorted.windows(2) {
        let (_, a) = pair[0];
        let (path_b, b) = pair[1];
        if a.table == b.table && a.end() > u32::from(b.address) {
            issues.push(
                path_b.key("address"),
                format!(
                    "point '{}' ({} {}..{}) overlaps point '{}' ({} {}..{}); each register belongs to one point",
                    b.name,
                    b.table,
                    b.address,
                    b.end() - 1,
                    a.name,
                    a.table,
                    a.address,
                    a.end() - 1
                ),
            );
        }
    }
    Profile {
        name: name.to_owned(),
        description: raw.description.unwrap_or_default(),
        points: points.into_iter().map(|(_, p)| p).collect(),
    }
}

fn validate_point(path: &KeyPath, raw: RawPoint, issues: &mut Issues<'_>) -> Option<PointDef> {
    let table = Table::parse(&raw.table);
    if table.is_none() {
        issues.push(
            path.key("table"),
            format!(
                "unknown table '{}'; expected coil, discrete_input, holding or input",
                raw.table
            ),
        );
    }
    let value_type = match &raw.value_type {
        None => Some(if table.is_some_and(Table::is_bits) {
            ValueType::Bool
        } else {
            ValueType::U16
        }),
        Some(t) => {
            let parsed = ValueType::parse(t);
            if parsed.is_none() {
                issues.push(
                    path.key("type"),
                    format!(
                        "unknown type '{t}'; expected bool, u16, i16, u32, i32, u64, f32 or f64"
                    ),
                );
            }
            parsed
        }
    };
    let word_order = match &raw.word_order {
        None => Some(WordOrder::Abcd),
        Some(w) => {
            let parsed = WordOrder::parse(w);
            if parsed.is_none() {
                issues.push(
                    path.key("word_order"),
                    format!("unknown word order '{w}'; expected ABCD, CDAB, BADC or DCBA"),
                );
            }
            parsed
        }
    };
    let address = u16::try_from(raw.address).ok();
    if address.is_none() {
        issues.push(
            path.key("address"),
            format!(
                "address {} is outside 0–65535 (0-based protocol address)",
                raw.address
            ),
        );
    }
    let (table, value_type, word_order, address) = (table?, value_type?, word_order?, address?);
    if table.is_bits() != (value_type == ValueType::Bool) {
        issues.push(
            path.key("type"),
            if table.is_bits() {
                format!("a {table} point holds one bit; its type must be bool")
            } else {
                format!("a {table} point is made of 16-bit registers; bool needs a coil or discrete_input")
            },
        );
        return None;
    }
    if u32::from(address) + u32::from(value_type.width()) > 65536 {
        issues.push(
            path.key("address"),
            format!(
                "point runs past address 65535 ({} registers from {address})",
                value_type.width()
            ),
        );
        return None;
    }
    let scale = raw.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        issues.push(
            path.key("scale"),
            format!("scale {scale} must be a finite, non-zero number"),
        );
    }
    if let (Some(lo), Some(hi)) = (raw.range_min, raw.range_max) {
        if lo >= hi {
            issues.push(
                path.key("range_max"),
                format!("range_max {hi} must be above range_min {lo}"),
            );
        }
    }
    Some(PointDef {
        name: raw.name,
        table,
        address,
        value_type,
        word_order,
        scale,
        offset: raw.offset.unwrap_or(0.0),
        unit: raw.unit,
        range_min: raw.range_min,
        range_max: raw.range_max,
    })
}
