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
mod validate;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::profile::{validate_profile, Profile, SEAL_NODE_PROFILE};
use self::raw::{RawConfig, RawProfile};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Free space kept on the file system, bytes.
    pub disk_reserve_bytes: u64,
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

/// Where the profiles a configuration names come from. Reading happens here, before validation:
/// [`load_str`] asks for each profile a device names once, then validates everything purely.
pub trait ProfileSource {
    /// The file profile `name` would be read from, given the config's `profiles_dir` (the
    /// default is `profiles`); messages name it.
    fn file_of(&self, profiles_dir: &str, name: &str) -> PathBuf;
    /// The text of that file, `None` if it does not exist, or why it cannot be read (too
    /// long, not UTF-8, not allowed).
    fn read(&self, file: &Path) -> Result<Option<String>, String>;
}

/// Profiles in a folder next to the configuration file (`profiles_dir`, relative to `base`).
pub struct ProfileDir {
    /// The configuration file's folder.
    pub base: PathBuf,
}

impl ProfileSource for ProfileDir {
    fn file_of(&self, profiles_dir: &str, name: &str) -> PathBuf {
        self.base.join(profiles_dir).join(format!("{name}.toml"))
    }

    fn read(&self, file: &Path) -> Result<Option<String>, String> {
        match crate::bounded::read_text(file, crate::bounded::CONFIG_BYTES) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Profiles held in memory, by file stem (tests, and configs built by programs).
impl ProfileSource for BTreeMap<String, String> {
    fn file_of(&self, profiles_dir: &str, name: &str) -> PathBuf {
        Path::new(profiles_dir).join(format!("{name}.toml"))
    }

    fn read(&self, file: &Path) -> Result<Option<String>, String> {
        Ok(file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|stem| self.get(stem).cloned()))
    }
}

/// Reads and validates a configuration file and the profiles it uses (from its profiles folder,
/// or built in).
pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
    let text = crate::bounded::read_text(path, crate::bounded::CONFIG_BYTES).map_err(|source| {
        ConfigError::Read {
            path: path.to_owned(),
            source,
        }
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(path, text, &ProfileDir { base })
}

/// Validates configuration `text` (named `path` in messages; relative paths in it are relative
/// to `path`'s folder), with profiles from `profiles`. Every profile a device names is read
/// first; then validation runs without any I/O and lists every problem it finds.
pub fn load_str(
    path: &Path,
    text: String,
    profiles: &impl ProfileSource,
) -> Result<SiteConfig, ConfigError> {
    let source = SourceFile::new(path, text);
    let mut found = Vec::new();
    let raw: Option<RawConfig> = parse_toml(&source, &mut found);
    let Some(raw) = raw else {
        return Err(ConfigError::Invalid(found));
    };
    let profiles = read_profiles(&raw, profiles, &mut found);
    let config = validate::validate(&source, raw, &profiles, &mut found);
    if found.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(found))
    }
}

/// Reads and validates each profile the devices of `raw` name, once. A file of the name wins
/// over the built-in seal-node profile; problems inside a profile file are added to `found`
/// with that file's lines, and the profile is still returned (so its users are checked too).
fn read_profiles(
    raw: &RawConfig,
    from: &impl ProfileSource,
    found: &mut Vec<ConfigIssue>,
) -> validate::Profiles {
    let dir = raw
        .profiles_dir
        .clone()
        .unwrap_or_else(|| "profiles".to_owned());
    let mut profiles = BTreeMap::new();
    for name in raw.devices.iter().map(|d| d.profile.as_str()) {
        if profiles.contains_key(name) {
            continue;
        }
        let valid_name = plain_name(name);
        let file = from.file_of(&dir, name);
        let read = if valid_name {
            from.read(&file)
        } else {
            Ok(None)
        };
        let read = read.unwrap_or_else(|why| {
            // Named as what it is, not as a missing profile; an empty profile stands in so the
            // devices using it raise no second error.
            found.push(ConfigIssue {
                file: file.clone(),
                line: None,
                key: String::new(),
                message: format!("profile '{name}' cannot be read: {why}"),
            });
            Some(String::new())
        });
        let profile = match read {
            Some(text) => {
                let source = SourceFile::new(&file, text);
                let parsed = parse_toml::<RawProfile>(&source, found).map(|raw| {
                    let mut issues = Issues {
                        file: &source,
                        list: found,
                    };
                    validate_profile(name, raw, &mut issues)
                });
                Some(Arc::new(parsed.unwrap_or_else(|| Profile {
                    name: name.to_owned(),
                    description: String::new(),
                    points: Vec::new(),
                })))
            }
            None if name == SEAL_NODE_PROFILE => Some(Arc::new(Profile::seal_node())),
            None => None,
        };
        profiles.insert(name.to_owned(), (file, profile));
    }
    validate::Profiles(profiles)
}

/// Longest name of a bus, device, furnace, bin, analyzer or point, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Whether `name` may name a bus, device, furnace, bin, analyzer or point: 1 to
/// [`MAX_NAME_CHARS`] letters or digits (Chinese ones too, e.g. `1号炉`), `-`, `_` or `.`.
/// Names are joined with `/` into keys (`furnace/bin`), so `/`, spaces and control
/// characters are refused: `a/b` in one furnace and `b` in furnace `a/` would otherwise be
/// one key.
pub(crate) fn check_name(issues: &mut Issues<'_>, path: &KeyPath, what: &str, name: &str) {
    let chars = name.chars().count();
    let bad = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')));
    let problem = if chars == 0 {
        Some(format!("a {what} name must not be empty"))
    } else if chars > MAX_NAME_CHARS {
        Some(format!(
            "the {what} name has {chars} characters; at most {MAX_NAME_CHARS}"
        ))
    } else {
        bad.map(|c| {
            format!(
                "the {what} name '{}' holds '{}'; names are letters, digits, '-', '_' and '.' only",
                name.escape_debug(),
                c.escape_debug()
            )
        })
    };
    if let Some(p) = problem {
        issues.push(path.clone(), p);
    }
}

/// Whether `name` is a non-empty run of ASCII letters, digits, `-` and `_`: what site ids,
/// profile names and platform names may be (they become file names and keys).
pub(crate) fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads and validates one profile file on its own (its name is the file stem).
pub fn load_profile(path: &Path) -> Result<Profile, ConfigError> {
    let text = crate::bounded::read_text(path, crate::bounded::CONFIG_BYTES).map_err(|source| {
        ConfigError::Read {
            path: path.to_owned(),
            source,
        }
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

#[cfg(test)]
mod tests;
