//! `[[devices]]`: what is polled on which bus, with which profile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{names, ranged, Profiles};
use crate::config::profile::Profile;
use crate::config::raw::RawDevice;
use crate::config::source::KeyPath;
use crate::config::{DeviceConfig, Issues, UnitId};

/// Every device, and the index of each device name. A device on an unknown bus gets the bus
/// index `usize::MAX` (the problem is reported).
pub(super) fn devices(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    raw: Vec<RawDevice>,
    bus_index: &HashMap<String, usize>,
    profiles: &Profiles,
) -> (Vec<DeviceConfig>, HashMap<String, usize>) {
    let mut devices = Vec::new();
    let mut device_index: HashMap<String, usize> = HashMap::new();
    let mut units: HashMap<(usize, u8), String> = HashMap::new();
    for (i, d) in raw.into_iter().enumerate() {
        let path = root.key("devices").index(i);
        crate::config::check_name(issues, &path.key("name"), "device", &d.name);
        if device_index.contains_key(&d.name) {
            issues.push(
                path.key("name"),
                format!(
                    "duplicate device name '{}'; device names must be unique",
                    d.name
                ),
            );
        }
        let bus = match bus_index.get(&d.bus) {
            Some(&b) => b,
            None => {
                issues.push(
                    path.key("bus"),
                    format!(
                        "device '{}' is on bus '{}', which is not defined; defined buses: {}",
                        d.name,
                        d.bus,
                        names(bus_index.keys())
                    ),
                );
                usize::MAX
            }
        };
        let unit = match u8::try_from(d.unit_id).ok().and_then(UnitId::new) {
            Some(unit) => {
                if bus != usize::MAX {
                    if let Some(other) = units.insert((bus, unit.get()), d.name.clone()) {
                        issues.push(
                            path.key("unit_id"),
                            format!(
                                "unit id {unit} on bus '{}' is already used by device '{other}'",
                                d.bus
                            ),
                        );
                    }
                }
                unit
            }
            None => {
                issues.push(
                    path.key("unit_id"),
                    format!(
                        "unit id {} is outside 1–247 (0 is broadcast, 248–255 are reserved)",
                        d.unit_id
                    ),
                );
                UnitId::FIRST
            }
        };
        let timeout = d.timeout_ms.map(|_| {
            Duration::from_millis(ranged(
                issues,
                &path.key("timeout_ms"),
                d.timeout_ms,
                1000,
                10,
                60_000,
                "ms",
            ) as u64)
        });
        let interval = ranged(
            issues,
            &path.key("poll_interval_ms"),
            d.poll_interval_ms,
            1000,
            100,
            3_600_000,
            "ms",
        );
        let profile = profiles.get(&d.profile).unwrap_or_else(|| {
            issues.push(
                path.key("profile"),
                format!(
                    "profile '{}' not found: no built-in profile of that name and no file {}",
                    d.profile,
                    profiles.place_of(&d.profile)
                ),
            );
            Arc::new(Profile {
                name: d.profile.clone(),
                description: String::new(),
                points: Vec::new(),
            })
        });
        device_index.entry(d.name.clone()).or_insert(devices.len());
        devices.push(DeviceConfig {
            name: d.name,
            bus,
            unit,
            profile,
            poll_interval: Duration::from_millis(interval as u64),
            timeout,
        });
    }

    (devices, device_index)
}
