//! Site configuration: loaded in two stages.
//!
//! 1. [`raw`]: the TOML as written, through serde with `deny_unknown_fields`.
//! 2. [`load`] validates it purely — no port is opened, no database touched — and collects
//!    **every** problem, each with its file, line and key and what was expected. Only a config
//!    without problems becomes a [`SiteConfig`], whose types cannot hold an invalid value
//!    (a [`UnitId`] is 1–247, durations are `Duration`s, references are indices).

pub mod profile;
pub mod raw;
mod rules_of;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::profile::{validate_profile, Profile, SEAL_NODE_PROFILE};
use self::raw::{RawBus, RawConfig, RawProfile};
use self::source::{KeyPath, SourceFile};
use crate::rules::RuleSettings;

/// One problem found in a configuration or profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the place could be found.
    pub line: Option<usize>,
    /// Key path, e.g. `devices[2].unit_id`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{line}: {}: {}",
                self.file.display(),
                self.key,
                self.message
            ),
            None => write!(f, "{}: {}: {}", self.file.display(), self.key, self.message),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read and has problems; all of them are listed.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn list(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects problems of one file.
pub(crate) struct Issues<'a> {
    file: &'a SourceFile,
    list: &'a mut Vec<ConfigIssue>,
}

impl Issues<'_> {
    pub(crate) fn push(&mut self, key: KeyPath, message: impl Into<String>) {
        self.list.push(ConfigIssue {
            file: self.file.path().to_owned(),
            line: self.file.line_of(&key),
            key: key.to_string(),
            message: message.into(),
        });
    }
}

pub use crate::modbus::{DataBits, SerialSettings, StopBits};
pub use sealwatch_firmware::modbus::UnitId;
pub use sealwatch_firmware::{BaudRate, Parity};

/// Permit class of the plant (排污许可管理类别).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitClass {
    /// 重点管理
    Key,
    /// 简化管理
    Simplified,
    /// 登记管理
    Registration,
}

/// `[site]`, validated.
#[derive(Debug, Clone)]
pub struct Site {
    /// Short identifier.
    pub id: String,
    /// Plant name.
    pub name: String,
    /// Permit number.
    pub permit_number: String,
    /// Permit class.
    pub permit_class: PermitClass,
    /// Local time zone.
    pub time_zone: chrono_tz::Tz,
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Database file (absolute, or relative to the working directory).
    pub path: PathBuf,
    /// Size limit of the database file, bytes.
    pub disk_budget_bytes: u64,
    /// How long raw readings are kept.
    pub raw_retention: Duration,
    /// Longest time between commits.
    pub commit_interval: Duration,
    /// How often committed readings are compacted.
    pub compact_interval: Duration,
}

/// How a bus is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// Modbus RTU on a serial line.
    Rtu(SerialSettings),
}

/// `[[buses]]`, validated.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Name.
    pub name: String,
    /// Transport.
    pub transport: Transport,
    /// Response timeout of each request.
    pub timeout: Duration,
    /// Unused registers a merged read may span.
    pub max_gap: u16,
    /// Failed polls in a row before a device is degraded.
    pub degrade_after: u32,
    /// How often a degraded device is probed.
    pub probe_interval: Duration,
    /// RTU: how long a unit is not asked after it timed out (its late reply may still come).
    pub quiet_after_timeout: Duration,
}

/// `[[devices]]`, validated.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Name.
    pub name: String,
    /// Index into [`SiteConfig::buses`].
    pub bus: usize,
    /// Unit id.
    pub unit: UnitId,
    /// Profile.
    pub profile: Arc<Profile>,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Response timeout, if not the bus's.
    pub timeout: Option<Duration>,
}

/// `[[furnaces.bins]]`, validated.
#[derive(Debug, Clone)]
pub struct BinConfig {
    /// Name within the furnace.
    pub name: String,
    /// Index into [`SiteConfig::devices`] of its seal node.
    pub device: usize,
    /// Lowest level keeping the material seal, mm.
    pub seal_level_min_mm: u32,
    /// Longest a lid or gate may be open.
    pub max_open: Duration,
}

/// `[[furnaces.analyzers]]`, validated.
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    /// Name within the furnace.
    pub name: String,
    /// Index into [`SiteConfig::devices`].
    pub device: usize,
    /// Point carrying NMHC, mg/m³.
    pub nmhc_point: String,
    /// Its 1-hour average limit, mg/m³.
    pub hourly_limit: f64,
    /// Its single-value limit, mg/m³.
    pub single_limit: f64,
    /// Where it measures.
    pub point_kind: crate::rules::PointKind,
    /// What the single-value limit applies to.
    pub single_limit_on: crate::rules::SingleLimitOn,
}

/// `[[furnaces]]`, validated.
#[derive(Debug, Clone)]
pub struct FurnaceConfig {
    /// Name.
    pub name: String,
    /// Coal bins.
    pub bins: Vec<BinConfig>,
    /// Analyzers.
    pub analyzers: Vec<AnalyzerConfig>,
}

/// A whole validated site configuration.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Site identity.
    pub site: Site,
    /// Database.
    pub store: StoreSettings,
    /// Status page address; `None` when turned off.
    pub status_listen: Option<SocketAddr>,
    /// Buses.
    pub buses: Vec<BusConfig>,
    /// Devices.
    pub devices: Vec<DeviceConfig>,
    /// Furnaces.
    pub furnaces: Vec<FurnaceConfig>,
    /// Thresholds of the compliance rules.
    pub rules: RuleSettings,
    /// The evidence chain.
    pub evidence: EvidenceSettings,
    /// The audit system uplink, if configured.
    pub audit_uplink: Option<AuditUplinkConfig>,
    /// HJ 212 platform uplinks.
    pub hj212_uplinks: Vec<Hj212UplinkConfig>,
}

impl SiteConfig {
    /// The numbering of the site's points: devices in config order, points in profile order.
    pub fn point_table(&self) -> crate::model::PointTable {
        let mut table = crate::model::PointTable::default();
        for device in &self.devices {
            table.push_device(
                &device.name,
                device.profile.points.iter().map(|p| {
                    (
                        p.name.as_str(),
                        p.unit.as_deref(),
                        (p.range_min, p.range_max),
                    )
                }),
            );
        }
        table
    }
}

/// `[evidence]`, validated.
#[derive(Debug, Clone)]
pub struct EvidenceSettings {
    /// Signing key file.
    pub key_file: PathBuf,
    /// How long acknowledged evidence is kept.
    pub retention: Duration,
    /// The chain anchor file ([`crate::evidence::anchor`]).
    pub anchor_file: PathBuf,
}

/// `[uplink.audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditUplinkConfig {
    /// Base URL without a trailing slash.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// PEM file with the client certificate and key.
    pub client_identity_file: Option<PathBuf>,
    /// Records per request.
    pub batch_records: usize,
    /// Timeout per request.
    pub timeout: Duration,
    /// gzip request bodies.
    pub gzip: bool,
    /// Longest wait between retries.
    pub retry_max: Duration,
}

/// `[[uplink.hj212]]`, validated.
#[derive(Debug, Clone)]
pub struct Hj212UplinkConfig {
    /// Unique name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// PW.
    pub pw: String,
    /// ST, two digits.
    pub st: String,
    /// Version bits (0–63; 1 = HJ 212-2017).
    pub version: u8,
    /// Wait for a 9014 answer.
    pub timeout: Duration,
    /// Resends before reconnecting.
    pub retries: u32,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Period of real-time (2011) frames, if they are sent.
    pub realtime: Option<Duration>,
    /// `(furnace/analyzer, MN)`, in key order.
    pub mn: Vec<(String, String)>,
}

/// Whether `url` is `http://` to a loopback host.
fn loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]") || host.starts_with("127.")
}

/// Reads and validates a configuration file and the profiles it uses.
pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let source = SourceFile::new(path, text);
    let mut found = Vec::new();
    let raw: Option<RawConfig> = parse_toml(&source, &mut found);
    let Some(raw) = raw else {
        return Err(ConfigError::Invalid(found));
    };
    let config = validate(&source, raw, &mut found);
    if found.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(found))
    }
}

/// Reads and validates one profile file on its own (its name is the file stem).
pub fn load_profile(path: &Path) -> Result<Profile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let source = SourceFile::new(path, text);
    let mut found = Vec::new();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let profile = parse_toml::<RawProfile>(&source, &mut found).map(|raw| {
        let mut issues = Issues {
            file: &source,
            list: &mut found,
        };
        validate_profile(&name, raw, &mut issues)
    });
    match profile {
        Some(p) if found.is_empty() => Ok(p),
        _ => Err(ConfigError::Invalid(found)),
    }
}

/// Parses TOML into `T`, turning a serde error into an issue with line and key.
fn parse_toml<T: serde::de::DeserializeOwned>(
    source: &SourceFile,
    found: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match toml::from_str::<T>(source.text()) {
        Ok(value) => Some(value),
        Err(err) => {
            let offset = err.span().map(|s| s.start);
            let mut key = offset.map(|o| source.path_at(o)).unwrap_or_default();
            let message = err.message().trim().to_owned();
            // For an unknown field, serde points at the table; name the offending key itself.
            let mut line = offset.map(|o| source.line_of_offset(o));
            if let Some(field) = unknown_field(&message) {
                if let Some(o) = offset {
                    if let Some((l, _)) = find_key_line(source.text(), o, field) {
                        line = Some(l);
                    }
                }
                if !matches!(key.0.last(), Some(source::Seg::Key(k)) if k == field) {
                    key = key.key(field);
                }
            }
            found.push(ConfigIssue {
                file: source.path().to_owned(),
                line,
                key: key.to_string(),
                message,
            });
            None
        }
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The line where `key = ` is first written at or after `offset`.
fn find_key_line(text: &str, offset: usize, key: &str) -> Option<(usize, usize)> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let mut pos = start;
    for line in text[start..].split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let n = text[..pos].bytes().filter(|&b| b == b'\n').count() + 1;
                return Some((n, pos));
            }
        }
        pos += line.len();
    }
    None
}

fn validate(source: &SourceFile, raw: RawConfig, found: &mut Vec<ConfigIssue>) -> SiteConfig {
    let root = KeyPath::root();
    let base_dir = source
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut profiles = ProfileLoader::new(&base_dir, raw.profiles_dir.as_deref());
    let mut issues = Issues {
        file: source,
        list: found,
    };

    // [site]
    let site_path = root.key("site");
    let id_ok = !raw.site.id.is_empty()
        && raw
            .site
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        issues.push(
            site_path.key("id"),
            format!(
                "site id '{}' must be non-empty letters, digits, '-' or '_'",
                raw.site.id
            ),
        );
    }
    let permit_class = match raw.site.permit_class.as_str() {
        "key" => PermitClass::Key,
        "simplified" => PermitClass::Simplified,
        "registration" => PermitClass::Registration,
        other => {
            issues.push(
                site_path.key("permit_class"),
                format!("unknown permit class '{other}'; expected key (重点管理), simplified (简化管理) or registration (登记管理)"),
            );
            PermitClass::Key
        }
    };
    let tz_name = raw.site.time_zone.as_deref().unwrap_or("Asia/Shanghai");
    let time_zone = tz_name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
        issues.push(
            site_path.key("time_zone"),
            format!("unknown time zone '{tz_name}'; expected an IANA name such as Asia/Shanghai"),
        );
        chrono_tz::Asia::Shanghai
    });
    let site = Site {
        id: raw.site.id,
        name: raw.site.name,
        permit_number: raw.site.permit_number,
        permit_class,
        time_zone,
    };

    // [store]
    let store_path = root.key("store");
    let db = raw.store.path.as_deref().unwrap_or("sealwatch.db");
    let budget = ranged(
        &mut issues,
        &store_path.key("disk_budget_mib"),
        raw.store.disk_budget_mib,
        2048,
        16,
        1 << 20,
        "MiB",
    );
    let retention = ranged(
        &mut issues,
        &store_path.key("raw_retention_days"),
        raw.store.raw_retention_days,
        90,
        1,
        3650,
        "days",
    );
    let commit = ranged(
        &mut issues,
        &store_path.key("commit_interval_ms"),
        raw.store.commit_interval_ms,
        1000,
        100,
        10_000,
        "ms",
    );
    let compact = ranged(
        &mut issues,
        &store_path.key("compact_interval_ms"),
        raw.store.compact_interval_ms,
        60_000,
        1000,
        600_000,
        "ms",
    );
    let store = StoreSettings {
        path: base_dir.join(db),
        disk_budget_bytes: budget as u64 * 1024 * 1024,
        raw_retention: Duration::from_secs(retention as u64 * 86_400),
        commit_interval: Duration::from_millis(commit as u64),
        compact_interval: Duration::from_millis(compact as u64),
    };

    // [status]
    let listen = raw.status.listen.as_deref().unwrap_or("127.0.0.1:8080");
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

    // [rules]
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
            &mut issues,
            "nmhc_hourly_limit_mg_m3",
            raw.rules.nmhc_hourly_limit_mg_m3,
            defaults.nmhc_hourly_limit,
        ),
        nmhc_single_limit: limit(
            &mut issues,
            "nmhc_single_limit_mg_m3",
            raw.rules.nmhc_single_limit_mg_m3,
            defaults.nmhc_single_limit,
        ),
        breach_grace_ms: ranged(
            &mut issues,
            &rules_path.key("breach_grace_s"),
            raw.rules.breach_grace_s,
            defaults.breach_grace_ms / 1000,
            0,
            60,
            "s",
        ) * 1000,
        level_hysteresis_mm: ranged(
            &mut issues,
            &rules_path.key("level_hysteresis_mm"),
            raw.rules.level_hysteresis_mm,
            defaults.level_hysteresis_mm as i64,
            0,
            1000,
            "mm",
        ) as f64,
        stale_after_ms: ranged(
            &mut issues,
            &rules_path.key("stale_after_s"),
            raw.rules.stale_after_s,
            defaults.stale_after_ms / 1000,
            1,
            600,
            "s",
        ) * 1000,
        lid_travel_ms: ranged(
            &mut issues,
            &rules_path.key("lid_travel_s"),
            raw.rules.lid_travel_s,
            defaults.lid_travel_ms / 1000,
            1,
            600,
            "s",
        ) * 1000,
        level_min_change_mm: ranged(
            &mut issues,
            &rules_path.key("level_min_change_mm"),
            raw.rules.level_min_change_mm,
            defaults.level_min_change_mm as i64,
            0,
            5000,
            "mm",
        ) as f64,
        level_frozen_ms: ranged(
            &mut issues,
            &rules_path.key("level_frozen_s"),
            raw.rules.level_frozen_s,
            defaults.level_frozen_ms / 1000,
            0,
            604_800,
            "s",
        ) * 1000,
        clock_jump_tolerance_ms: ranged(
            &mut issues,
            &rules_path.key("clock_jump_tolerance_s"),
            raw.rules.clock_jump_tolerance_s,
            defaults.clock_jump_tolerance_ms / 1000,
            5,
            3600,
            "s",
        ) * 1000,
        window_max_ms: [
            (
                "calibration_window_max_h",
                raw.rules.calibration_window_max_h,
                0,
                720,
            ),
            (
                "maintenance_window_max_h",
                raw.rules.maintenance_window_max_h,
                1,
                2160,
            ),
            (
                "shutdown_window_max_h",
                raw.rules.shutdown_window_max_h,
                2,
                8760,
            ),
        ]
        .map(|(key, value, i, hi)| {
            ranged(
                &mut issues,
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

    // [evidence] and [uplink.audit]
    let ev_path = root.key("evidence");
    let key_file = base_dir.join(raw.evidence.key_file.as_deref().unwrap_or("sealwatch.key"));
    let evidence = EvidenceSettings {
        anchor_file: raw.evidence.anchor_file.as_deref().map_or_else(
            || crate::evidence::anchor::default_path(&key_file),
            |f| base_dir.join(f),
        ),
        key_file,
        retention: Duration::from_secs(
            ranged(
                &mut issues,
                &ev_path.key("retention_days"),
                raw.evidence.retention_days,
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
    let audit_uplink = raw.uplink.audit.map(|a| {
        let path = root.key("uplink").key("audit");
        let url = a.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || loopback_http(&url)) {
            issues.push(path.key("url"), format!("'{url}' must be an https:// URL (plain http:// is only allowed to this machine, 127.0.0.1 or localhost)"));
        }
        AuditUplinkConfig {
            url,
            token: a.token,
            client_identity_file: a.client_identity_file.as_deref().map(|f| base_dir.join(f)),
            batch_records: ranged(&mut issues, &path.key("batch_records"), a.batch_records, 500, 1, 10_000, "records") as usize,
            timeout: Duration::from_millis(ranged(&mut issues, &path.key("timeout_ms"), a.timeout_ms, 30_000, 100, 300_000, "ms") as u64),
            gzip: a.gzip.unwrap_or(true),
            retry_max: Duration::from_millis(ranged(&mut issues, &path.key("retry_max_ms"), a.retry_max_ms, 60_000, 1000, 3_600_000, "ms") as u64),
        }
    });

    // [[buses]]
    let mut buses = Vec::new();
    let mut bus_index: HashMap<String, usize> = HashMap::new();
    for (i, raw_bus) in raw.buses.into_iter().enumerate() {
        let path = root.key("buses").index(i);
        if bus_index.contains_key(&raw_bus.name) {
            issues.push(
                path.key("name"),
                format!(
                    "duplicate bus name '{}'; bus names must be unique",
                    raw_bus.name
                ),
            );
        }
        let bus = validate_bus(&path, raw_bus, &mut issues);
        bus_index.entry(bus.name.clone()).or_insert(buses.len());
        buses.push(bus);
    }

    // [[devices]]
    let mut devices = Vec::new();
    let mut device_index: HashMap<String, usize> = HashMap::new();
    let mut units: HashMap<(usize, u8), String> = HashMap::new();
    for (i, d) in raw.devices.into_iter().enumerate() {
        let path = root.key("devices").index(i);
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
                &mut issues,
                &path.key("timeout_ms"),
                d.timeout_ms,
                1000,
                10,
                60_000,
                "ms",
            ) as u64)
        });
        let interval = ranged(
            &mut issues,
            &path.key("poll_interval_ms"),
            d.poll_interval_ms,
            1000,
            100,
            3_600_000,
            "ms",
        );
        let profile = profiles.get(&d.profile, issues.list).unwrap_or_else(|| {
            issues.push(
                path.key("profile"),
                format!(
                    "profile '{}' not found: no built-in profile of that name and no file {}",
                    d.profile,
                    profiles.file_of(&d.profile).display()
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

    // [[furnaces]]
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
    for (fi, f) in raw.furnaces.into_iter().enumerate() {
        let path = root.key("furnaces").index(fi);
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
            if seen.insert(b.name.clone(), ()).is_some() {
                issues.push(
                    bpath.key("name"),
                    format!("duplicate bin name '{}' in furnace '{}'", b.name, f.name),
                );
            }
            let device = device_ref(
                &mut issues,
                &bpath,
                &b.device,
                &device_index,
                &devices,
                &["lid_closed", "lid_open", "gate_open", "level_mm"],
            );
            serve(
                &mut issues,
                &bpath,
                device,
                format!("bin {}/{}", f.name, b.name),
            );
            let level = ranged(
                &mut issues,
                &bpath.key("seal_level_min_mm"),
                Some(b.seal_level_min_mm),
                0,
                1,
                100_000,
                "mm",
            );
            let max_open = ranged(
                &mut issues,
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
            if seen.insert(a.name.clone(), ()).is_some() {
                issues.push(
                    apath.key("name"),
                    format!("duplicate name '{}' in furnace '{}'", a.name, f.name),
                );
            }
            let nmhc_point = a.nmhc_point.unwrap_or_else(|| "nmhc".to_owned());
            let device = device_ref(
                &mut issues,
                &apath,
                &a.device,
                &device_index,
                &devices,
                &[nmhc_point.as_str()],
            );
            serve(
                &mut issues,
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
                &mut issues,
                "nmhc_hourly_limit_mg_m3",
                a.nmhc_hourly_limit_mg_m3,
                rules.nmhc_hourly_limit,
            );
            let single_limit = own_limit(
                &mut issues,
                "nmhc_single_limit_mg_m3",
                a.nmhc_single_limit_mg_m3,
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
            let point_kind = match a.point_kind.as_deref() {
                None => crate::rules::PointKind::InPlant,
                Some(text) => crate::rules::PointKind::parse(text).unwrap_or_else(|| {
                    issues.push(apath.key("point_kind"), format!("unknown monitoring point kind '{text}'; expected in_plant (厂区内), furnace_top (炉顶) or boundary (企业边界)"));
                    crate::rules::PointKind::InPlant
                }),
            };
            let single_limit_on = match a.single_limit_applies_to.as_deref() {
                None | Some("sample") => crate::rules::SingleLimitOn::Sample,
                Some("minute") => crate::rules::SingleLimitOn::Minute,
                Some(other) => {
                    issues.push(
                        apath.key("single_limit_applies_to"),
                        format!("'{other}' is neither sample nor minute"),
                    );
                    crate::rules::SingleLimitOn::Sample
                }
            };
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

    // [[uplink.hj212]] (after the furnaces: it names analyzers)
    let analyzer_keys: Vec<String> = furnaces
        .iter()
        .flat_map(|f| {
            f.analyzers
                .iter()
                .map(move |a| format!("{}/{}", f.name, a.name))
        })
        .collect();
    let hj212_uplinks = validate_hj212(&root, raw.uplink.hj212, &analyzer_keys, &mut issues);

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

/// `[[uplink.hj212]]`: every problem of every platform entry.
fn validate_hj212(
    root: &KeyPath,
    raw: Vec<raw::RawHj212Uplink>,
    analyzers: &[String],
    issues: &mut Issues<'_>,
) -> Vec<Hj212UplinkConfig> {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'=' | b'&'))
    };
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut out = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        let path = root.key("uplink").key("hj212").index(i);
        let name_ok = !h.name.is_empty()
            && h.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            issues.push(
                path.key("name"),
                format!(
                    "platform name '{}' must be non-empty letters, digits, '-' or '_'",
                    h.name
                ),
            );
        } else if names.insert(h.name.clone(), ()).is_some() {
            issues.push(
                path.key("name"),
                format!("duplicate platform name '{}'; names must be unique", h.name),
            );
        }
        let port_ok = h.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            issues.push(
                path.key("address"),
                format!("'{}' is not host:port, e.g. 203.0.113.5:8800", h.address),
            );
        }
        if !(h.pw.len() <= 9 && plain(&h.pw)) {
            issues.push(
                path.key("pw"),
                format!(
                    "password '{}' must be up to 9 printable characters without ; , = &",
                    h.pw
                ),
            );
        }
        let st = match h.st {
            None => 27,
            Some(v) if (10..=99).contains(&v) => v,
            Some(v) => {
                issues.push(path.key("st"), format!("system code {v} is not two digits; expected e.g. 27 (VOC monitoring) or 31 (air pollution source)"));
                27
            }
        };
        let version = match h.version.as_deref().unwrap_or("2017") {
            "2017" => 1,
            bits if bits.len() == 6 && bits.bytes().all(|b| b == b'0' || b == b'1') => {
                u8::from_str_radix(bits, 2).unwrap_or(1)
            }
            other => {
                issues.push(path.key("version"), format!("'{other}' is not a version; expected \"2017\" or six version bits such as \"000001\""));
                1
            }
        };
        let timeout = ranged(issues, &path.key("timeout_s"), h.timeout_s, 10, 1, 300, "s");
        let retries = ranged(issues, &path.key("retries"), h.retries, 3, 0, 10, "resends");
        let reconnect_max = ranged(
            issues,
            &path.key("reconnect_max_s"),
            h.reconnect_max_s,
            60,
            1,
            3600,
            "s",
        );
        let realtime = h.realtime_s.map(|_| {
            Duration::from_secs(ranged(
                issues,
                &path.key("realtime_s"),
                h.realtime_s,
                30,
                5,
                3600,
                "s",
            ) as u64)
        });
        if h.mn.is_empty() {
            issues.push(path.key("mn"), "no analyzer is mapped to an MN, so nothing would be sent; add e.g. mn = { \"F1/NMHC\" = \"010000A8900016F000169DC0\" }");
        }
        let mut mns: HashMap<String, String> = HashMap::new();
        for (analyzer, mn) in &h.mn {
            if !analyzers.contains(analyzer) {
                issues.push(
                    path.key("mn").key(analyzer),
                    format!(
                        "'{analyzer}' is not an analyzer of this site; analyzers: {}",
                        names_of(analyzers)
                    ),
                );
            }
            if !(!mn.is_empty() && mn.len() <= 24 && plain(mn)) {
                issues.push(
                    path.key("mn").key(analyzer),
                    format!("MN '{mn}' must be 1–24 printable characters without ; , = &"),
                );
            } else if let Some(other) = mns.insert(mn.clone(), analyzer.clone()) {
                issues.push(path.key("mn").key(analyzer), format!("MN '{mn}' is already used for '{other}'; each monitoring point needs its own MN"));
            }
        }
        out.push(Hj212UplinkConfig {
            name: h.name,
            address: h.address,
            pw: h.pw,
            st: format!("{st:02}"),
            version,
            timeout: Duration::from_secs(timeout as u64),
            retries: retries as u32,
            reconnect_max: Duration::from_secs(reconnect_max as u64),
            realtime,
            mn: h.mn.into_iter().collect(),
        });
    }
    out
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

fn validate_bus(path: &KeyPath, raw: RawBus, issues: &mut Issues<'_>) -> BusConfig {
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
    let transport = match raw.kind.as_str() {
        "tcp" => {
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
        "rtu" => {
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
            let parity = match raw.parity.as_deref().unwrap_or("none") {
                "none" => Parity::None,
                "even" => Parity::Even,
                "odd" => Parity::Odd,
                other => {
                    issues.push(
                        path.key("parity"),
                        format!("unknown parity '{other}'; expected none, even or odd"),
                    );
                    Parity::None
                }
            };
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
        other => {
            issues.push(
                path.key("type"),
                format!("unknown bus type '{other}'; expected tcp or rtu"),
            );
            Transport::Tcp {
                address: String::new(),
            }
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

/// Loads each profile once, from the profiles folder or built in.
struct ProfileLoader {
    dir: PathBuf,
    loaded: BTreeMap<String, Option<Arc<Profile>>>,
}

impl ProfileLoader {
    fn new(base: &Path, dir: Option<&str>) -> Self {
        ProfileLoader {
            dir: base.join(dir.unwrap_or("profiles")),
            loaded: BTreeMap::new(),
        }
    }

    fn file_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// The profile, or `None` if it exists nowhere. Problems inside a profile file are added to
    /// `found` (with that file's lines) and the profile is still returned.
    fn get(&mut self, name: &str, found: &mut Vec<ConfigIssue>) -> Option<Arc<Profile>> {
        if let Some(p) = self.loaded.get(name) {
            return p.clone();
        }
        let file = self.file_of(name);
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let profile = match std::fs::read_to_string(&file) {
            Ok(text) if valid_name => {
                let source = SourceFile::new(&file, text);
                let raw: Option<RawProfile> = parse_toml(&source, found);
                raw.map(|raw| {
                    let mut issues = Issues {
                        file: &source,
                        list: found,
                    };
                    Arc::new(validate_profile(name, raw, &mut issues))
                })
                .or_else(|| {
                    Some(Arc::new(Profile {
                        name: name.to_owned(),
                        description: String::new(),
                        points: Vec::new(),
                    }))
                })
            }
            _ if name == SEAL_NODE_PROFILE => Some(Arc::new(Profile::seal_node())),
            _ => None,
        };
        self.loaded.insert(name.to_owned(), profile.clone());
        profile
    }
}

#[cfg(test)]
mod tests;
