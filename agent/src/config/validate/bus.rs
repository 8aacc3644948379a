//! `[[buses]]`: the Modbus lines and gateways.

use std::collections::HashMap;
use std::time::Duration;

use super::ranged;
use crate::config::raw::{BusKind, RawBus};
use crate::config::source::KeyPath;
use crate::config::{
    BaudRate, BusConfig, DataBits, Issues, Parity, SerialSettings, StopBits, Transport,
};

/// Every bus, and the index of each bus name.
pub(super) fn buses(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    raw: Vec<RawBus>,
) -> (Vec<BusConfig>, HashMap<String, usize>) {
    let mut buses = Vec::new();
    let mut bus_index: HashMap<String, usize> = HashMap::new();
    for (i, raw_bus) in raw.into_iter().enumerate() {
        let path = root.key("buses").index(i);
        crate::config::check_name(issues, &path.key("name"), "bus", &raw_bus.name);
        if bus_index.contains_key(&raw_bus.name) {
            issues.push(
                path.key("name"),
                format!(
                    "duplicate bus name '{}'; bus names must be unique",
                    raw_bus.name
                ),
            );
        }
        let bus = bus(&path, raw_bus, issues);
        bus_index.entry(bus.name.clone()).or_insert(buses.len());
        buses.push(bus);
    }

    (buses, bus_index)
}

fn bus(path: &KeyPath, raw: RawBus, issues: &mut Issues<'_>) -> BusConfig {
    let timeout = ranged(
        issues,
        &path.key("timeout_ms"),
        raw.timeout_ms,
        1000,
        10,
        60_000,
        "ms",
    );
    let max_gap = ranged(
        issues,
        &path.key("max_gap"),
        raw.max_gap,
        8,
        0,
        100,
        "registers",
    );
    let degrade_after = ranged(
        issues,
        &path.key("degrade_after"),
        raw.degrade_after,
        3,
        1,
        100,
        "polls",
    );
    let probe = ranged(
        issues,
        &path.key("probe_interval_ms"),
        raw.probe_interval_ms,
        30_000,
        100,
        3_600_000,
        "ms",
    );
    let quiet_after_timeout = ranged(
        issues,
        &path.key("quiet_after_timeout_ms"),
        raw.quiet_after_timeout_ms,
        crate::modbus::QUIET_AFTER_TIMEOUT_DEFAULT.as_millis() as i64,
        0,
        60_000,
        "ms",
    );
    let misplaced = |issues: &mut Issues<'_>, key: &str, present: bool, kind: &str| {
        if present {
            issues.push(
                path.key(key),
                format!("'{key}' does not apply to a {kind} bus"),
            );
        }
    };
    let kind = raw
        .kind
        .or_report(issues, path.key("type"), "bus type", BusKind::Tcp);
    let transport = match kind {
        BusKind::Tcp => {
            misplaced(issues, "port", raw.port.is_some(), "tcp");
            misplaced(issues, "baud", raw.baud.is_some(), "tcp");
            misplaced(issues, "parity", raw.parity.is_some(), "tcp");
            misplaced(issues, "data_bits", raw.data_bits.is_some(), "tcp");
            misplaced(issues, "stop_bits", raw.stop_bits.is_some(), "tcp");
            misplaced(
                issues,
                "quiet_after_timeout_ms",
                raw.quiet_after_timeout_ms.is_some(),
                "tcp",
            );
            let address = raw.address.unwrap_or_default();
            let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !port_ok {
                issues.push(
                    if address.is_empty() { path.clone() } else { path.key("address") },
                    format!("a tcp bus needs address = \"host:port\" with a port 1–65535; got '{address}'"),
                );
            }
            Transport::Tcp { address }
        }
        BusKind::Rtu => {
            misplaced(issues, "address", raw.address.is_some(), "rtu");
            let port = raw.port.unwrap_or_default();
            if port.is_empty() {
                issues.push(
                    path.clone(),
                    "an rtu bus needs port = \"/dev/ttyUSB0\" (the serial device)",
                );
            }
            let baud = match raw.baud {
                None => BaudRate::B9600,
                Some(bps) => match u32::try_from(bps)
                    .ok()
                    .and_then(BaudRate::from_bits_per_second)
                {
                    Some(baud) => baud,
                    None => {
                        issues.push(
                            path.key("baud"),
                            format!(
                                "baud {bps} is not a line speed a serial adapter offers; expected one of {}",
                                BaudRate::ALL.map(|b| b.to_string()).join(", ")
                            ),
                        );
                        BaudRate::B9600
                    }
                },
            };
            let parity = raw.parity.map_or(Parity::None, |p| {
                p.or_report(issues, path.key("parity"), "parity", Parity::None)
            });
            let data_bits = match raw.data_bits.unwrap_or(8) {
                7 => DataBits::Seven,
                8 => DataBits::Eight,
                other => {
                    issues.push(
                        path.key("data_bits"),
                        format!("data_bits {other} is not 7 or 8"),
                    );
                    DataBits::Eight
                }
            };
            let stop_bits = match raw.stop_bits.unwrap_or(1) {
                1 => StopBits::One,
                2 => StopBits::Two,
                other => {
                    issues.push(
                        path.key("stop_bits"),
                        format!("stop_bits {other} is not 1 or 2"),
                    );
                    StopBits::One
                }
            };
            Transport::Rtu(SerialSettings {
                port,
                baud,
                parity,
                data_bits,
                stop_bits,
            })
        }
    };
    BusConfig {
        name: raw.name,
        transport,
        timeout: Duration::from_millis(timeout as u64),
        max_gap: max_gap as u16,
        degrade_after: degrade_after as u32,
        probe_interval: Duration::from_millis(probe as u64),
        quiet_after_timeout: Duration::from_millis(quiet_after_timeout as u64),
    }
}
