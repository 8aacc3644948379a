//! Validation of a parsed configuration, section by section. Pure: the profiles were read
//! before ([`Profiles`]), nothing here touches a file, a port or a database, and every problem
//! is collected with its key.

mod bus;
mod device;
mod furnace;
mod site;
mod uplink;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::profile::Profile;
use super::raw::RawConfig;
use super::source::{KeyPath, SourceFile};
use super::{ConfigIssue, DeviceConfig, Issues, SiteConfig};

/// The profiles a configuration names, read and validated before the configuration is: for
/// each name a device uses, the file it was looked for in and the profile (`None` if it exists
/// nowhere).
pub(crate) struct Profiles(pub(crate) BTreeMap<String, (PathBuf, Option<Arc<Profile>>)>);

impl Profiles {
    fn get(&self, name: &str) -> Option<Arc<Profile>> {
        self.0.get(name).and_then(|(_, p)| p.clone())
    }

    fn place_of(&self, name: &str) -> String {
        self.0
            .get(name)
            .map(|(file, _)| file.display().to_string())
            .unwrap_or_default()
    }
}

/// Validates `raw`, read from `source`, with its `profiles`; problems go to `found`.
pub(crate) fn validate(
    source: &SourceFile,
    raw: RawConfig,
    profiles: &Profiles,
    found: &mut Vec<ConfigIssue>,
) -> SiteConfig {
    let root = KeyPath::root();
    let base_dir = source
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut issues = Issues {
        file: source,
        list: found,
    };
    let issues = &mut issues;
    let site = site::site(issues, &root, raw.site);
    let store = site::store(issues, &root, &base_dir, raw.store);
    let status_listen = site::status_listen(issues, &root, raw.status);
    let rules = site::rules(issues, &root, raw.rules);
    let evidence = site::evidence(issues, &root, &base_dir, raw.evidence, site.permit_class);
    let audit_uplink = uplink::audit(issues, &root, &base_dir, raw.uplink.audit);
    let (buses, bus_index) = bus::buses(issues, &root, raw.buses);
    let (devices, device_index) = device::devices(issues, &root, raw.devices, &bus_index, profiles);
    let furnaces = furnace::furnaces(issues, &root, raw.furnaces, &device_index, &devices, &rules);
    // [[uplink.hj212]] (after the furnaces: it names analyzers)
    let analyzer_keys: Vec<String> = furnaces
        .iter()
        .flat_map(|f| {
            f.analyzers
                .iter()
                .map(move |a| format!("{}/{}", f.name, a.name))
        })
        .collect();
    let hj212_uplinks = uplink::hj212(&root, raw.uplink.hj212, &analyzer_keys, issues);

    SiteConfig {
        file: source.path().to_owned(),
        site,
        store,
        status_listen,
        buses,
        devices,
        furnaces,
        rules,
        evidence,
        audit_uplink,
        hj212_uplinks,
    }
}

fn names_of(keys: &[String]) -> String {
    if keys.is_empty() {
        "(none)".to_owned()
    } else {
        keys.join(", ")
    }
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = keys.map(String::as_str).collect();
    v.sort_unstable();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

/// A device referenced by a bin or analyzer, whose profile must have `needs` points.
fn device_ref(
    issues: &mut Issues<'_>,
    path: &KeyPath,
    name: &str,
    index: &HashMap<String, usize>,
    devices: &[DeviceConfig],
    needs: &[&str],
) -> usize {
    let Some(&i) = index.get(name) else {
        issues.push(
            path.key("device"),
            format!(
                "device '{name}' is not defined; defined devices: {}",
                names(index.keys())
            ),
        );
        return usize::MAX;
    };
    let profile = &devices[i].profile;
    let missing: Vec<&str> = needs
        .iter()
        .copied()
        .filter(|p| profile.point(p).is_none())
        .collect();
    if !missing.is_empty() && !profile.points.is_empty() {
        issues.push(
            path.key("device"),
            format!(
                "device '{name}' uses profile '{}', which has no point(s) {}",
                profile.name,
                missing.join(", ")
            ),
        );
    }
    i
}

/// An optional integer setting with a default and an inclusive range.
fn ranged(
    issues: &mut Issues<'_>,
    path: &KeyPath,
    value: Option<i64>,
    default: i64,
    lo: i64,
    hi: i64,
    unit: &str,
) -> i64 {
    match value {
        None => default,
        Some(v) if (lo..=hi).contains(&v) => v,
        Some(v) => {
            issues.push(
                path.clone(),
                format!("{v} {unit} is out of range; expected {lo}–{hi} {unit}"),
            );
            default.clamp(lo, hi)
        }
    }
}
