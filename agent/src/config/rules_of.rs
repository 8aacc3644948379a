//! The rule engine's view of a site, built from the validated configuration: the rules depend on
//! their own settings only, and the configuration builds them.

use crate::model::PointTable;
use crate::rules::{
    AnalyzerRules, BinRules, LatchField, Role, RulesConfig, Signal, OTHER_POLLUTANTS,
};

use super::SiteConfig;

impl SiteConfig {
    /// The rules of this site, for points numbered by `points`.
    pub fn rules_config(&self, points: &PointTable) -> RulesConfig {
        let config = self;
        let mut rules = RulesConfig::empty(config.site.time_zone, config.rules.clone());
        rules.roles = vec![None; points.points.len()];
        for f in &config.furnaces {
            for b in &f.bins {
                let bin = rules.bins.len();
                let profile = &config.devices[b.device].profile;
                for (i, p) in profile.points.iter().enumerate() {
                    let id = points.id(b.device, i).0 as usize;
                    let signal = match p.name.as_str() {
                        "lid_closed" => Some(Signal::LidClosed),
                        "lid_open" => Some(Signal::LidOpen),
                        "gate_open" => Some(Signal::GateOpen),
                        "level_mm" => Some(Signal::LevelMm),
                        _ => None,
                    };
                    if let Some(signal) = signal {
                        rules.roles[id] = Some(Role::Bin { bin, signal });
                    } else if let Some(field) = LatchField::of_point(&p.name) {
                        rules.roles[id] = Some(Role::Latch { bin, field });
                    } else if let Some(fault) = &p.fault {
                        rules.roles[id] = Some(Role::BinFault {
                            bin,
                            indicator: rules.indicators.len(),
                        });
                        let name = format!("{}/{}", config.devices[b.device].name, p.name);
                        rules.indicators.push((name, fault.clone()));
                    }
                }
                rules.bins.push(BinRules {
                    key: format!("{}/{}", f.name, b.name),
                    device: config.devices[b.device].name.clone(),
                    seal_level_min_mm: f64::from(b.seal_level_min_mm),
                    max_open_ms: b.max_open.as_millis() as i64,
                });
            }
            for a in &f.analyzers {
                let analyzer = rules.analyzers.len();
                let device = &config.devices[a.device];
                for (i, p) in device.profile.points.iter().enumerate() {
                    let id = points.id(a.device, i).0 as usize;
                    if p.name == a.nmhc_point {
                        rules.roles[id] = Some(Role::Nmhc { analyzer });
                    } else if let Some(code) = OTHER_POLLUTANTS
                        .iter()
                        .find(|(name, _)| *name == p.name)
                        .map(|(_, code)| *code)
                    {
                        rules.roles[id] = Some(Role::Pollutant { analyzer, code });
                    } else if let Some(map) = &p.status {
                        rules.roles[id] = Some(Role::AnalyzerStatus {
                            analyzer,
                            map: rules.status_maps.len(),
                        });
                        rules
                            .status_maps
                            .push((format!("{}/{}", device.name, p.name), map.clone()));
                    }
                }
                let interval_ms = device.poll_interval.as_millis().max(1);
                rules.analyzers.push(AnalyzerRules {
                    key: format!("{}/{}", f.name, a.name),
                    device: device.name.clone(),
                    hourly_limit: a.hourly_limit,
                    single_limit: a.single_limit,
                    single_limit_on: a.single_limit_on,
                    point_kind: a.point_kind,
                    range_max: device
                        .profile
                        .point(&a.nmhc_point)
                        .and_then(|p| p.range_max),
                    samples_per_minute: u32::try_from((60_000 / interval_ms).max(1)).unwrap_or(1),
                });
            }
        }
        rules
    }
}
