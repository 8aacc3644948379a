//! `[[furnaces]]` with their `bins` and `analyzers`: what is judged.

use std::collections::HashMap;

use std::time::Duration;

use super::{device_ref, ranged};
use crate::config::raw::RawFurnace;
use crate::config::source::KeyPath;
use crate::config::{AnalyzerConfig, BinConfig, DeviceConfig, FurnaceConfig, Issues};
use crate::rules::{PointKind, RuleSettings, SingleLimitOn};

/// Every furnace; each bin and analyzer names a device of its own.
pub(super) fn furnaces(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    raw: Vec<RawFurnace>,
    device_index: &HashMap<String, usize>,
    devices: &[DeviceConfig],
    rules: &RuleSettings,
) -> Vec<FurnaceConfig> {
    let mut furnaces = Vec::new();
    let mut furnace_names: HashMap<String, usize> = HashMap::new();
    // Which bin or analyzer each device serves: one device, one of them.
    let mut served: HashMap<usize, String> = HashMap::new();
    let mut serve = |issues: &mut Issues<'_>, path: &KeyPath, device: usize, who: String| {
        if device == usize::MAX {
            return;
        }
        if let Some(other) = served.insert(device, who.clone()) {
            issues.push(
                path.key("device"),
                format!("{who} names a device that already serves {other}; each bin and each analyzer needs its own device"),
            );
        }
    };
    for (fi, f) in raw.into_iter().enumerate() {
        let path = root.key("furnaces").index(fi);
        crate::config::check_name(issues, &path.key("name"), "furnace", &f.name);
        if furnace_names.insert(f.name.clone(), fi).is_some() {
            issues.push(
                path.key("name"),
                format!("duplicate furnace name '{}'", f.name),
            );
        }
        let mut bins = Vec::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        for (bi, b) in f.bins.into_iter().enumerate() {
            let bpath = path.key("bins").index(bi);
            crate::config::check_name(issues, &bpath.key("name"), "bin", &b.name);
            if seen.insert(b.name.clone(), ()).is_some() {
                issues.push(
                    bpath.key("name"),
                    format!("duplicate bin name '{}' in furnace '{}'", b.name, f.name),
                );
            }
            let device = device_ref(
                issues,
                &bpath,
                &b.device,
                device_index,
                devices,
                &["lid_closed", "lid_open", "gate_open", "level_mm"],
            );
            serve(issues, &bpath, device, format!("bin {}/{}", f.name, b.name));
            let level = ranged(
                issues,
                &bpath.key("seal_level_min_mm"),
                Some(b.seal_level_min_mm),
                0,
                1,
                100_000,
                "mm",
            );
            let max_open = ranged(
                issues,
                &bpath.key("max_open_s"),
                Some(b.max_open_s),
                0,
                1,
                86_400,
                "s",
            );
            bins.push(BinConfig {
                name: b.name,
                device,
                seal_level_min_mm: level as u32,
                max_open: Duration::from_secs(max_open as u64),
            });
        }
        let mut analyzers = Vec::new();
        for (ai, a) in f.analyzers.into_iter().enumerate() {
            let apath = path.key("analyzers").index(ai);
            crate::config::check_name(issues, &apath.key("name"), "analyzer", &a.name);
            if seen.insert(a.name.clone(), ()).is_some() {
                issues.push(
                    apath.key("name"),
                    format!("duplicate name '{}' in furnace '{}'", a.name, f.name),
                );
            }
            let nmhc_point = a.nmhc_point.unwrap_or_else(|| "nmhc".to_owned());
            let device = device_ref(
                issues,
                &apath,
                &a.device,
                device_index,
                devices,
                &[nmhc_point.as_str()],
            );
            serve(
                issues,
                &apath,
                device,
                format!("analyzer {}/{}", f.name, a.name),
            );
            let own_limit = |issues: &mut Issues<'_>,
                             key: &str,
                             value: Option<f64>,
                             default: f64| match value {
                None => default,
                Some(v) if v.is_finite() && v > 0.0 && v <= 100_000.0 => v,
                Some(v) => {
                    issues.push(
                        apath.key(key),
                        format!(
                            "{v} is not a usable limit; expected a positive concentration in mg/m³"
                        ),
                    );
                    default
                }
            };
            let hourly_limit = own_limit(
                issues,
                "nmhc_hourly_limit_mg_m3",
                a.nmhc_hourly_limit_mg_m3.map(|f| f.0),
                rules.nmhc_hourly_limit,
            );
            let single_limit = own_limit(
                issues,
                "nmhc_single_limit_mg_m3",
                a.nmhc_single_limit_mg_m3.map(|f| f.0),
                rules.nmhc_single_limit,
            );
            if single_limit < hourly_limit {
                issues.push(apath.key("nmhc_single_limit_mg_m3"), format!("the single-value limit {single_limit} is below the hourly limit {hourly_limit}"));
            }
            let range_top = (device != usize::MAX)
                .then(|| devices.get(device))
                .flatten()
                .and_then(|d| d.profile.point(&nmhc_point))
                .and_then(|p| p.range_max);
            if let Some(top) = range_top.filter(|top| *top <= single_limit) {
                issues.push(apath.key("device"), format!("the NMHC range of this analyzer ends at {top} mg/m³, at or below its single-value limit {single_limit}: a saturated reading could not be told from one under the limit; use a measuring range above the limit (range_max in the profile)"));
            }
            let point_kind = a.point_kind.map_or(PointKind::InPlant, |k| {
                k.or_report(
                    issues,
                    apath.key("point_kind"),
                    "monitoring point kind (in_plant 厂区内, furnace_top 炉顶, boundary 企业边界)",
                    PointKind::InPlant,
                )
            });
            let single_limit_on = a
                .single_limit_applies_to
                .map_or(SingleLimitOn::Sample, |s| {
                    s.or_report(
                        issues,
                        apath.key("single_limit_applies_to"),
                        "single-limit mode",
                        SingleLimitOn::Sample,
                    )
                });
            analyzers.push(AnalyzerConfig {
                name: a.name,
                device,
                nmhc_point,
                hourly_limit,
                single_limit,
                point_kind,
                single_limit_on,
            });
        }
        furnaces.push(FurnaceConfig {
            name: f.name,
            bins,
            analyzers,
        });
    }

    furnaces
}
