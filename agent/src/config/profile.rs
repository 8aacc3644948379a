//! Device profiles: which registers of a device carry which named points, and how to decode them.
//!
//! A profile is a TOML file `profiles/<name>.toml` or the built-in `seal-node`, which is derived
//! from the firmware's register map (`sealwatch_firmware::registers`), the one definition of what a
//! seal node exposes. Validated profiles guarantee: point names unique, every point inside the
//! 16-bit address space, no two points of a table overlapping, types fit their table.

use sealwatch_firmware::registers::{self as fw, SEAL_NODE_POINTS, SEAL_NODE_POINTS_APPENDED};

use super::raw::{Choice, RawPoint, RawProfile};
use super::source::KeyPath;
use super::Issues;
pub use crate::model::{FaultBit, FaultIndicator, StatusMap};
use crate::model::{InstrumentState, SensorPart};

/// Name of the built-in seal-node profile.
pub const SEAL_NODE_PROFILE: &str = "seal-node";

pub use super::value::{ValueType, WordOrder};
pub use sealwatch_firmware::registers::Table;

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
    /// Measuring range high end (at or above: flag T).
    pub range_max: Option<f64>,
    /// The point says whether a seal node's sensor is faulted.
    pub fault: Option<FaultIndicator>,
    /// The point is an analyzer's status register, mapped to states.
    pub status: Option<StatusMap>,
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
                    .filter(|p| p.table == Table::Input),
            )
            .map(|spec| PointDef {
                name: spec.name.to_owned(),
                table: spec.table,
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
                fault: seal_node_fault(spec.name),
                status: None,
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

/// What the seal node's fault points say (firmware register map).
pub fn seal_node_fault(point: &str) -> Option<FaultIndicator> {
    let bit = |mask: u16, part, meaning: &str| FaultBit {
        mask: u64::from(mask),
        part,
        meaning: meaning.to_owned(),
    };
    match point {
        "lid_fault" => Some(FaultIndicator::Flag(SensorPart::Lid)),
        "level_fault" => Some(FaultIndicator::Flag(SensorPart::Level)),
        "fault_bits" => Some(FaultIndicator::Bits(vec![
            bit(
                fw::FAULT_LID_SWITCHES,
                SensorPart::Lid,
                "lid switches both on, or both off longer than the travel time",
            ),
            bit(
                fw::FAULT_LEVEL_LOW_CURRENT,
                SensorPart::Level,
                "level loop current below 3.8 mA (NAMUR NE43: broken wire or transmitter failure)",
            ),
            bit(
                fw::FAULT_LEVEL_HIGH_CURRENT,
                SensorPart::Level,
                "level loop current above 20.5 mA (NAMUR NE43: short circuit or transmitter failure)",
            ),
            bit(
                fw::FAULT_SETTINGS_DEFAULTED,
                SensorPart::Node,
                "seal node settings not commissioned (defaults in use)",
            ),
        ])),
        _ => None,
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
        crate::config::check_name(issues, &path.key("name"), "point", &raw_point.name);
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
    let table = match raw.table {
        Choice::Known(table) => Some(table),
        unknown => {
            unknown.or_report(issues, path.key("table"), "table", Table::Holding);
            None
        }
    };
    let value_type = match raw.value_type {
        None if table.is_some_and(Table::is_bits) => Some(ValueType::Bool),
        None => Some(ValueType::U16),
        Some(Choice::Known(t)) => Some(t),
        Some(unknown) => {
            unknown.or_report(issues, path.key("type"), "type", ValueType::U16);
            None
        }
    };
    let word_order = raw.word_order.map_or(WordOrder::Abcd, |w| {
        w.or_report(
            issues,
            path.key("word_order"),
            "word order",
            WordOrder::Abcd,
        )
    });
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
    let (table, value_type, address) = (table?, value_type?, address?);
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
    // Non-finite numbers were refused where the file says them (`raw::Finite`).
    let [raw_scale, raw_offset, range_min, range_max] =
        [raw.scale, raw.offset, raw.range_min, raw.range_max].map(|v| v.map(|f| f.0));
    let scale = raw_scale.unwrap_or(1.0);
    if scale == 0.0 {
        issues.push(path.key("scale"), "scale must not be 0".to_owned());
    }
    if let (Some(lo), Some(hi)) = (range_min, range_max) {
        if lo >= hi {
            issues.push(
                path.key("range_max"),
                format!("range_max {hi} must be above range_min {lo}"),
            );
        }
    }
    let integer = !matches!(value_type, ValueType::F32 | ValueType::F64);
    let fault = validate_fault(path, raw.fault_of, raw.fault_bits, integer, issues);
    let status = validate_status(path, raw.status, raw.status_otherwise, integer, issues);
    if fault.is_some() && status.is_some() {
        issues.push(
            path.key("status"),
            "a point is either a fault indicator or a status register, not both".to_owned(),
        );
    }
    if (fault.is_some() || status.is_some())
        && (raw_scale.is_some_and(|s| s != 1.0) || raw_offset.is_some_and(|o| o != 0.0))
    {
        issues.push(
            path.key(if raw_scale.is_some_and(|s| s != 1.0) {
                "scale"
            } else {
                "offset"
            }),
            "a fault indicator or status register is read as the raw register value: it takes no scale or offset".to_owned(),
        );
    }
    Some(PointDef {
        name: raw.name,
        table,
        address,
        value_type,
        word_order,
        scale,
        offset: raw_offset.unwrap_or(0.0),
        unit: raw.unit,
        range_min,
        range_max,
        fault,
        status,
    })
}

fn sensor_part(path: &KeyPath, text: &str, issues: &mut Issues<'_>) -> Option<SensorPart> {
    let part = SensorPart::parse(text);
    if part.is_none() {
        issues.push(
            path.clone(),
            format!("unknown sensor '{text}'; expected lid, gate, level or node"),
        );
    }
    part
}

fn validate_fault(
    path: &KeyPath,
    fault_of: Option<String>,
    fault_bits: Option<Vec<super::raw::RawFaultBit>>,
    integer: bool,
    issues: &mut Issues<'_>,
) -> Option<FaultIndicator> {
    if (fault_of.is_some() || fault_bits.is_some()) && !integer {
        issues.push(
            path.key("fault_of"),
            "a fault indicator must be a bool or integer point".to_owned(),
        );
        return None;
    }
    match (fault_of, fault_bits) {
        (Some(_), Some(_)) => {
            issues.push(
                path.key("fault_bits"),
                "give fault_of (a flag) or fault_bits (a bit field), not both".to_owned(),
            );
            None
        }
        (Some(of), None) => {
            sensor_part(&path.key("fault_of"), &of, issues).map(FaultIndicator::Flag)
        }
        (None, Some(bits)) => {
            let mut out = Vec::new();
            let mut seen = 0u64;
            for (i, bit) in bits.into_iter().enumerate() {
                let here = path.key("fault_bits").index(i);
                let part = sensor_part(&here.key("of"), &bit.of, issues);
                let Ok(mask) = u64::try_from(bit.mask) else {
                    issues.push(
                        here.key("mask"),
                        format!("mask {} must be positive", bit.mask),
                    );
                    continue;
                };
                if mask == 0 {
                    issues.push(here.key("mask"), "mask 0 names no bit".to_owned());
                    continue;
                }
                if mask & seen != 0 {
                    issues.push(
                        here.key("mask"),
                        format!("mask 0x{mask:X} overlaps an earlier entry's bits"),
                    );
                }
                seen |= mask;
                if let Some(part) = part {
                    out.push(FaultBit {
                        mask,
                        part,
                        meaning: bit
                            .meaning
                            .unwrap_or_else(|| format!("{} fault", part.name())),
                    });
                }
            }
            (!out.is_empty()).then_some(FaultIndicator::Bits(out))
        }
        (None, None) => None,
    }
}

fn validate_status(
    path: &KeyPath,
    entries: Option<Vec<super::raw::RawStatusEntry>>,
    otherwise: Option<Choice<InstrumentState>>,
    integer: bool,
    issues: &mut Issues<'_>,
) -> Option<StatusMap> {
    let Some(entries) = entries else {
        if otherwise.is_some() {
            issues.push(
                path.key("status_otherwise"),
                "status_otherwise needs a status mapping".to_owned(),
            );
        }
        return None;
    };
    if !integer {
        issues.push(
            path.key("status"),
            "a status register must be a bool or integer point".to_owned(),
        );
        return None;
    }
    let mut map = StatusMap {
        entries: Vec::new(),
        otherwise: otherwise.map_or(InstrumentState::Fault, |s| {
            s.or_report(
                issues,
                path.key("status_otherwise"),
                "state",
                InstrumentState::Fault,
            )
        }),
    };
    let mut seen: Vec<u64> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let here = path.key("status").index(i);
        let mut values = Vec::new();
        for v in entry.values {
            match u64::try_from(v) {
                Ok(v) if seen.contains(&v) => issues.push(
                    here.key("values"),
                    format!("value {v} is already mapped by an earlier entry; each value means one state"),
                ),
                Ok(v) => {
                    seen.push(v);
                    values.push(v);
                }
                Err(_) => issues.push(here.key("values"), format!("value {v} must not be negative")),
            }
        }
        if values.is_empty() {
            issues.push(
                here.key("values"),
                "an entry needs at least one value".to_owned(),
            );
        }
        match entry.state {
            Choice::Known(state) => map.entries.push((values, state)),
            unknown => {
                unknown.or_report(issues, here.key("state"), "state", InstrumentState::Fault);
            }
        }
    }
    Some(map)
}
