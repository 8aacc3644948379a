//! `[site]`, `[store]`, `[status]`, `[rules]` and `[evidence]`: the settings of the whole site.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::ranged;
use crate::config::raw::{RawEvidence, RawRules, RawSite, RawStatus, RawStore};
use crate::config::source::KeyPath;
use crate::config::{EvidenceSettings, Issues, PermitClass, Site, StoreSettings};
use crate::rules::RuleSettings;

/// `[site]`.
pub(super) fn site(issues: &mut Issues<'_>, root: &KeyPath, raw: RawSite) -> Site {
    let site_path = root.key("site");
    if !crate::config::plain_name(&raw.id) {
        issues.push(
            site_path.key("id"),
            format!(
                "site id '{}' must be non-empty letters, digits, '-' or '_'",
                raw.id
            ),
        );
    }
    let permit_class = raw.permit_class.or_report(
        issues,
        site_path.key("permit_class"),
        "permit class (key 重点管理, simplified 简化管理, registration 登记管理)",
        PermitClass::Key,
    );
    let tz_name = raw.time_zone.as_deref().unwrap_or("Asia/Shanghai");
    let time_zone = tz_name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
        issues.push(
            site_path.key("time_zone"),
            format!("unknown time zone '{tz_name}'; expected an IANA name such as Asia/Shanghai"),
        );
        chrono_tz::Asia::Shanghai
    });

    Site {
        id: raw.id,
        name: raw.name,
        permit_number: raw.permit_number,
        permit_class,
        time_zone,
    }
}

/// `[store]`; the database path is relative to the config file's folder `base_dir`.
pub(super) fn store(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    base_dir: &Path,
    raw: RawStore,
) -> StoreSettings {
    let store_path = root.key("store");
    let db = raw.path.as_deref().unwrap_or("sealwatch.db");
    let budget = ranged(
        issues,
        &store_path.key("disk_budget_mib"),
        raw.disk_budget_mib,
        2048,
        16,
        1 << 20,
        "MiB",
    );
    let reserve = ranged(
        issues,
        &store_path.key("disk_reserve_mib"),
        raw.disk_reserve_mib,
        64,
        1,
        65_536,
        "MiB",
    );
    let retention = ranged(
        issues,
        &store_path.key("raw_retention_days"),
        raw.raw_retention_days,
        90,
        1,
        3650,
        "days",
    );
    let commit = ranged(
        issues,
        &store_path.key("commit_interval_ms"),
        raw.commit_interval_ms,
        1000,
        100,
        10_000,
        "ms",
    );
    let compact = ranged(
        issues,
        &store_path.key("compact_interval_ms"),
        raw.compact_interval_ms,
        60_000,
        1000,
        600_000,
        "ms",
    );

    StoreSettings {
        path: base_dir.join(db),
        disk_budget_bytes: budget as u64 * 1024 * 1024,
        disk_reserve_bytes: reserve as u64 * 1024 * 1024,
        raw_retention: Duration::from_secs(retention as u64 * 86_400),
        commit_interval: Duration::from_millis(commit as u64),
        compact_interval: Duration::from_millis(compact as u64),
    }
}

/// `[status]`: the status page's address, `None` when turned off.
pub(super) fn status_listen(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    raw: RawStatus,
) -> Option<SocketAddr> {
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let status_listen = if listen.is_empty() {
        None
    } else {
        match listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                issues.push(
                    root.key("status").key("listen"),
                    format!("'{listen}' is not an address; expected ip:port such as 127.0.0.1:8080, or \"\" to turn the page off"),
                );
                None
            }
        }
    };

    status_listen
}

/// `[rules]`.
pub(super) fn rules(issues: &mut Issues<'_>, root: &KeyPath, raw: RawRules) -> RuleSettings {
    let rules_path = root.key("rules");
    let defaults = RuleSettings::default();
    let limit = |issues: &mut Issues<'_>, key: &str, value: Option<f64>, default: f64| match value {
        None => default,
        Some(v) if v.is_finite() && v > 0.0 && v <= 100_000.0 => v,
        Some(v) => {
            issues.push(
                rules_path.key(key),
                format!("{v} is not a usable limit; expected a positive concentration in mg/m³"),
            );
            default
        }
    };
    let rules = RuleSettings {
        nmhc_hourly_limit: limit(
            issues,
            "nmhc_hourly_limit_mg_m3",
            raw.nmhc_hourly_limit_mg_m3.map(|f| f.0),
            defaults.nmhc_hourly_limit,
        ),
        nmhc_single_limit: limit(
            issues,
            "nmhc_single_limit_mg_m3",
            raw.nmhc_single_limit_mg_m3.map(|f| f.0),
            defaults.nmhc_single_limit,
        ),
        breach_grace_ms: ranged(
            issues,
            &rules_path.key("breach_grace_s"),
            raw.breach_grace_s,
            defaults.breach_grace_ms / 1000,
            0,
            60,
            "s",
        ) * 1000,
        level_hysteresis_mm: ranged(
            issues,
            &rules_path.key("level_hysteresis_mm"),
            raw.level_hysteresis_mm,
            defaults.level_hysteresis_mm as i64,
            0,
            1000,
            "mm",
        ) as f64,
        stale_after_ms: ranged(
            issues,
            &rules_path.key("stale_after_s"),
            raw.stale_after_s,
            defaults.stale_after_ms / 1000,
            1,
            600,
            "s",
        ) * 1000,
        lid_travel_ms: ranged(
            issues,
            &rules_path.key("lid_travel_s"),
            raw.lid_travel_s,
            defaults.lid_travel_ms / 1000,
            1,
            600,
            "s",
        ) * 1000,
        level_min_change_mm: ranged(
            issues,
            &rules_path.key("level_min_change_mm"),
            raw.level_min_change_mm,
            defaults.level_min_change_mm as i64,
            0,
            5000,
            "mm",
        ) as f64,
        level_frozen_ms: ranged(
            issues,
            &rules_path.key("level_frozen_s"),
            raw.level_frozen_s,
            defaults.level_frozen_ms / 1000,
            0,
            604_800,
            "s",
        ) * 1000,
        clock_jump_tolerance_ms: ranged(
            issues,
            &rules_path.key("clock_jump_tolerance_s"),
            raw.clock_jump_tolerance_s,
            defaults.clock_jump_tolerance_ms / 1000,
            5,
            3600,
            "s",
        ) * 1000,
        window_max_ms: [
            (
                "calibration_window_max_h",
                raw.calibration_window_max_h,
                0,
                720,
            ),
            (
                "maintenance_window_max_h",
                raw.maintenance_window_max_h,
                1,
                2160,
            ),
            ("shutdown_window_max_h", raw.shutdown_window_max_h, 2, 8760),
        ]
        .map(|(key, value, i, hi)| {
            ranged(
                issues,
                &rules_path.key(key),
                value,
                defaults.window_max_ms[i] / 3_600_000,
                1,
                hi,
                "h",
            ) * 3_600_000
        }),
    };
    if rules.nmhc_single_limit < rules.nmhc_hourly_limit {
        issues.push(rules_path.key("nmhc_single_limit_mg_m3"), format!("the single-value limit {} is below the hourly limit {}; GB 37822 sets the single-value limit higher (30 vs 10, 20 vs 6)", rules.nmhc_single_limit, rules.nmhc_hourly_limit));
    }

    rules
}

/// `[evidence]`; a key-managed permit holder must keep records five years.
pub(super) fn evidence(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    base_dir: &Path,
    raw: RawEvidence,
    permit_class: PermitClass,
) -> EvidenceSettings {
    let ev_path = root.key("evidence");
    let key_file = base_dir.join(raw.key_file.as_deref().unwrap_or("sealwatch.key"));
    let evidence = EvidenceSettings {
        anchor_file: raw.anchor_file.as_deref().map_or_else(
            || crate::evidence::anchor::default_path(&key_file),
            |f| base_dir.join(f),
        ),
        key_file,
        retention: Duration::from_secs(
            ranged(
                issues,
                &ev_path.key("retention_days"),
                raw.retention_days,
                1825,
                1095,
                36_500,
                "days",
            ) as u64
                * 86_400,
        ),
    };
    if permit_class == PermitClass::Key && evidence.retention < Duration::from_secs(1825 * 86_400) {
        issues.push(ev_path.key("retention_days"), format!("{} days is less than the five years (1825 days) 排污许可管理条例 arts. 20–21 ask a key-managed (重点管理) permit holder to keep monitoring records", evidence.retention.as_secs() / 86_400));
    }

    evidence
}
