//! The configuration file as written: serde structures, nothing checked beyond TOML types.
//!
//! The doc comments on these fields are the user documentation of each key (mirrored in
//! `config/site-example.toml` and the README). Unit suffixes say the unit (`_ms`, `_s`, `_mm`).
//! Integers that have a legal range are read as `i64` so that `validate` can say what is wrong
//! ("unit id 300 is outside 1–247") instead of a generic type error.

use sealwatch_firmware::registers::Table;
use sealwatch_firmware::Parity;
use serde::de::value::StrDeserializer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::value::{ValueType, WordOrder};
use super::PermitClass;
use crate::model::InstrumentState;
use crate::rules::{PointKind, SingleLimitOn};

/// The transport of a bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// Modbus TCP (a device or a serial gateway on the network).
    Tcp,
    /// Modbus RTU on a serial line.
    Rtu,
}

/// A value of a closed set (a serde enum), or the text that names none of its members. Parsing
/// goes on past an unknown name, so validation can report it with every other problem;
/// [`Choice::or_report`] turns it into the value or an issue at its key.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice<T> {
    /// A member of the set.
    Known(T),
    /// Text naming no member, and serde's account of what was expected.
    Unknown {
        /// What was written.
        text: String,
        /// What the set accepts.
        why: String,
    },
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let member = T::deserialize(StrDeserializer::<serde::de::value::Error>::new(&text));
        Ok(match member {
            Ok(v) => Choice::Known(v),
            Err(e) => Choice::Unknown {
                why: e.to_string(),
                text,
            },
        })
    }
}

impl<T> Choice<T> {
    /// The member, or `default` with an issue at `key` naming what was written and expected.
    /// `what` names the setting, optionally with a gloss in parentheses that ends the message:
    /// `"permit class (key 重点管理, …)"`.
    pub(crate) fn or_report(
        self,
        issues: &mut super::Issues<'_>,
        key: super::source::KeyPath,
        what: &str,
        default: T,
    ) -> T {
        match self {
            Choice::Known(v) => v,
            Choice::Unknown { text, why } => {
                let expected = why
                    .split_once(", expected ")
                    .map_or(why.as_str(), |(_, e)| e)
                    .replace('`', "");
                let (what, gloss) = what.split_once(" (").map_or((what, ""), |(w, g)| (w, g));
                let gloss = gloss
                    .strip_suffix(')')
                    .map(|g| format!(" ({g})"))
                    .unwrap_or_default();
                issues.push(
                    key,
                    format!("unknown {what} '{text}'; expected {expected}{gloss}"),
                );
                default
            }
        }
    }
}

/// A whole site configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Who and where this plant is; copied into every evidence bundle.
    pub site: RawSite,
    /// The local database.
    #[serde(default)]
    pub store: RawStore,
    /// The local status page.
    #[serde(default)]
    pub status: RawStatus,
    /// Thresholds of the compliance rules.
    #[serde(default)]
    pub rules: RawRules,
    /// The evidence chain: signing key and retention.
    #[serde(default)]
    pub evidence: RawEvidence,
    /// Where evidence and data are delivered.
    #[serde(default)]
    pub uplink: RawUplinks,
    /// Folder with device profiles (`<name>.toml`), relative to this file. Default `profiles`.
    pub profiles_dir: Option<String>,
    /// Field buses: a Modbus TCP endpoint (or gateway) or an RS-485 serial line.
    #[serde(default)]
    pub buses: Vec<RawBus>,
    /// Modbus devices: seal nodes, analyzers, pressure transmitters.
    #[serde(default)]
    pub devices: Vec<RawDevice>,
    /// Carbonization furnaces with their coal bins and analyzers.
    #[serde(default)]
    pub furnaces: Vec<RawFurnace>,
}

/// `[site]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// Short site identifier, letters, digits, `-` and `_` (used in evidence and uploads).
    pub id: String,
    /// Plant name as on the permit.
    pub name: String,
    /// Pollutant discharge permit number (排污许可证编号).
    pub permit_number: String,
    /// Permit class: `key` (重点管理), `simplified` (简化管理) or `registration` (登记管理).
    pub permit_class: Choice<PermitClass>,
    /// IANA time zone of the plant, for local hours in summaries. Default `Asia/Shanghai`.
    pub time_zone: Option<String>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// SQLite database file, relative to this file. Default `sealwatch.db`.
    pub path: Option<String>,
    /// Largest size the database may grow to, MiB; raw readings are pruned oldest first past it.
    /// Default 2048.
    pub disk_budget_mib: Option<i64>,
    /// Free space the file system must keep, MiB (1–65536): below it the oldest raw readings
    /// are pruned before a commit. Default 64.
    pub disk_reserve_mib: Option<i64>,
    /// How long raw readings are kept, days. Default 90.
    pub raw_retention_days: Option<i64>,
    /// Longest time between commits of polled readings, ms (100–10000). Default 1000.
    pub commit_interval_ms: Option<i64>,
    /// How often committed readings are compacted (and the chain anchor written, retention
    /// applied, stored rows checked), ms (1000–600000). Default 60000.
    pub compact_interval_ms: Option<i64>,
}

/// `[status]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    /// Address the status page listens on. Default `127.0.0.1:8080`; `""` turns it off.
    pub listen: Option<String>,
}

/// `[rules]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// NMHC 1-hour average limit, mg/m³. Default 10 (GB 37822-2019 A.1; key regions: 6).
    pub nmhc_hourly_limit_mg_m3: Option<Finite>,
    /// NMHC single-value limit, mg/m³. Default 30 (GB 37822-2019 A.1; key regions: 20).
    pub nmhc_single_limit_mg_m3: Option<Finite>,
    /// How long a breach signature must persist to count as a breach, s (0–60). Default 3.
    pub breach_grace_s: Option<i64>,
    /// Level above `seal_level_min_mm` needed to end a level breach, mm (0–1000). Default 50.
    pub level_hysteresis_mm: Option<i64>,
    /// Inputs older than this make a bin or analyzer unknown, s (1–600). Default 10.
    pub stale_after_s: Option<i64>,
    /// Longest both lid switches may be off while the lid travels, s (1–600). Default 10.
    pub lid_travel_s: Option<i64>,
    /// Least the material level must change while the gate is open in a charging cycle, mm
    /// (0–5000; 0 turns the check off). A cycle whose level did not move is suspect: it is
    /// never counted as a held seal. Default 50.
    pub level_min_change_mm: Option<i64>,
    /// Longest the material level may read exactly the same value before it is suspect (a
    /// frozen transmitter), s (0–604800; 0 turns the check off). Default 3600.
    pub level_frozen_s: Option<i64>,
    /// Largest step of the readings' times (the clock set forward or back, or polling stopped)
    /// the rules take as time passing; a larger one is a clock jump: the open minute and hour
    /// end as interrupted, skipped hours get no outputs, nothing is merged into earlier minutes,
    /// s (5–3600). Default 60.
    pub clock_jump_tolerance_s: Option<i64>,
    /// Longest a calibration window opened by a person may stay open before it is reported, h
    /// (1–720). Default 8.
    pub calibration_window_max_h: Option<i64>,
    /// Longest a maintenance window may stay open before it is reported, h (1–2160). Default 72.
    pub maintenance_window_max_h: Option<i64>,
    /// Longest a shutdown window may stay open before it is reported, h (1–8760). Default 744.
    pub shutdown_window_max_h: Option<i64>,
}

/// `[evidence]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    /// Ed25519 signing key made by `sealwatch keygen`, relative to this file. Default
    /// `sealwatch.key`. Must be readable by its owner only (mode 0600).
    pub key_file: Option<String>,
    /// How long evidence is kept after the audit system acknowledged it, days (1095–36500).
    /// Default 1825: five years, what 排污许可管理条例 arts. 20–21 ask of a permit holder's
    /// monitoring records (GB 37822 §10.4 asks three); a key-managed (重点管理) site may not set
    /// less.
    pub retention_days: Option<i64>,
    /// The chain anchor: a small file the agent keeps up to date with the newest sealed record,
    /// so that a deleted or replaced database is noticed instead of silently starting a second
    /// chain at record 1 (relative to this file). Keep it outside the database's folder if you
    /// can. Default: the key file's name with `.chain` added.
    pub anchor_file: Option<String>,
}

/// `[uplink]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplinks {
    /// The audit system that receives the evidence chain.
    pub audit: Option<RawAuditUplink>,
    /// Environmental platforms that receive NMHC minute and hourly values over HJ 212-2017.
    #[serde(default)]
    pub hj212: Vec<RawHj212Uplink>,
}

/// `[[uplink.hj212]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHj212Uplink {
    /// Unique name of this platform connection (letters, digits, `-`, `_`); its delivery position
    /// is stored under `hj212:<name>`.
    pub name: String,
    /// `host:port` of the platform's HJ 212 server.
    pub address: String,
    /// Access password (PW) the platform assigned, up to 9 characters.
    pub pw: String,
    /// System code (ST): 27 VOC monitoring, 31 air pollution source. Default 27.
    pub st: Option<i64>,
    /// Protocol version: `2017` (version bits 000001), or the 6 version bits written out, e.g.
    /// `000001`, for a platform on another version. Default `2017`.
    pub version: Option<String>,
    /// How long to wait for the platform's 9014 answer to an upload, s (1–300). Default 10.
    pub timeout_s: Option<i64>,
    /// Resends of an unanswered upload before the connection is dropped and made again (0–10).
    /// Default 3.
    pub retries: Option<i64>,
    /// Longest wait between reconnection attempts, s (1–3600). Attempts back off exponentially
    /// from 1 s up to this, with jitter. Default 60.
    pub reconnect_max_s: Option<i64>,
    /// Send real-time values (CN 2011, `-Rtd`, no acknowledgement asked) every this many
    /// seconds (5–3600) while connected. Default: off.
    pub realtime_s: Option<i64>,
    /// Device id (MN, up to 24 characters) of each analyzer sent to this platform, keyed by
    /// `furnace/analyzer`, e.g. `{ "F1/NMHC" = "010000A8900016F000169DC0" }`. Analyzers not
    /// listed are not sent.
    pub mn: std::collections::BTreeMap<String, String>,
}

/// `[uplink.audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditUplink {
    /// Base URL, `https://…` (plain `http://` only to this machine, for tests).
    pub url: String,
    /// Bearer token the audit system gave this site.
    pub token: Option<String>,
    /// Client certificate and its private key in one PEM file, for audit systems that
    /// authenticate sites by certificate (relative to this file).
    pub client_identity_file: Option<String>,
    /// Records per request (1–10000). Default 500.
    pub batch_records: Option<i64>,
    /// Timeout of each request, ms (100–300000). Default 30000.
    pub timeout_ms: Option<i64>,
    /// Compress request bodies with gzip. Default true.
    pub gzip: Option<bool>,
    /// Longest wait between retries while the audit system is unreachable, ms (1000–3600000).
    /// Retries back off exponentially from 0.5 s up to this, with jitter. Default 60000.
    pub retry_max_ms: Option<i64>,
}

/// `[[buses]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    /// Unique bus name, referenced by devices.
    pub name: String,
    /// `tcp` (Modbus TCP) or `rtu` (Modbus RTU on a serial line).
    #[serde(rename = "type")]
    pub kind: Choice<BusKind>,
    /// tcp: `host:port` of the device or gateway.
    pub address: Option<String>,
    /// rtu: serial device path, e.g. `/dev/ttyUSB0`.
    pub port: Option<String>,
    /// rtu: baud rate (1200–115200). Default 9600.
    pub baud: Option<i64>,
    /// rtu: `none`, `even` or `odd`. Default `none`.
    pub parity: Option<Choice<Parity>>,
    /// rtu: 7 or 8. Default 8.
    pub data_bits: Option<i64>,
    /// rtu: 1 or 2. Default 1.
    pub stop_bits: Option<i64>,
    /// Response timeout of each request, ms (10–60000). Default 1000.
    pub timeout_ms: Option<i64>,
    /// Registers of unused space a merged read may span between two points (0–100). Default 8.
    pub max_gap: Option<i64>,
    /// A device that failed this many polls in a row is degraded (1–100). Default 3.
    pub degrade_after: Option<i64>,
    /// A degraded device is probed again after this long, ms (100–3600000). Default 30000.
    pub probe_interval_ms: Option<i64>,
    /// rtu: after a unit timed out, it is not asked again for this long, ms (0–60000), so that
    /// its late reply cannot be taken for the next answer. Default 1000.
    pub quiet_after_timeout_ms: Option<i64>,
}

/// `[[devices]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// Unique device name.
    pub name: String,
    /// Name of the bus the device is on.
    pub bus: String,
    /// Modbus unit id (1–247).
    pub unit_id: i64,
    /// Device profile name: a file `<profile>.toml` in the profiles folder, or built-in `seal-node`.
    pub profile: String,
    /// Poll interval, ms (100–3600000). Default 1000.
    pub poll_interval_ms: Option<i64>,
    /// This device's response timeout, ms (10–60000), for a slow device on a fast bus. Default:
    /// the bus's `timeout_ms`.
    pub timeout_ms: Option<i64>,
}

/// `[[furnaces]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFurnace {
    /// Unique furnace name, e.g. `F1`.
    pub name: String,
    /// Coal bins on the furnace top.
    #[serde(default)]
    pub bins: Vec<RawBin>,
    /// VOC/NMHC analyzers monitoring this furnace top.
    #[serde(default)]
    pub analyzers: Vec<RawAnalyzer>,
}

/// `[[furnaces.bins]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBin {
    /// Bin name, unique within the furnace, e.g. `B1`.
    pub name: String,
    /// The seal node (device) at this bin.
    pub device: String,
    /// Lowest material level that still keeps the material seal, mm above the gate (plant setting).
    pub seal_level_min_mm: i64,
    /// Longest a lid or gate may stay open in a charging cycle, s (plant setting).
    pub max_open_s: i64,
}

/// `[[furnaces.analyzers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalyzer {
    /// Analyzer name, unique within the furnace.
    pub name: String,
    /// The device that reads it.
    pub device: String,
    /// Point of the device's profile carrying the NMHC concentration. Default `nmhc`.
    pub nmhc_point: Option<String>,
    /// This analyzer's 1-hour average limit, mg/m³. Default `[rules].nmhc_hourly_limit_mg_m3`.
    pub nmhc_hourly_limit_mg_m3: Option<Finite>,
    /// This analyzer's single-value limit, mg/m³. Default `[rules].nmhc_single_limit_mg_m3`.
    pub nmhc_single_limit_mg_m3: Option<Finite>,
    /// Where it measures: `in_plant` (厂区内, GB 37822 A.1), `furnace_top` (炉顶, process) or
    /// `boundary` (企业边界). Default `in_plant`.
    pub point_kind: Option<Choice<PointKind>>,
    /// Whether the single-value limit applies to each `sample` or to each `minute` value.
    /// Default `sample`.
    pub single_limit_applies_to: Option<Choice<SingleLimitOn>>,
}

/// A device profile file, `profiles/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// What device this profile describes (maker, model, firmware).
    pub description: Option<String>,
    /// The points read from the device.
    #[serde(default)]
    pub points: Vec<RawPoint>,
}

/// `[[points]]` of a profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoint {
    /// Point name, unique within the profile.
    pub name: String,
    /// `coil`, `discrete_input`, `holding` or `input`.
    pub table: Choice<Table>,
    /// 0-based protocol address of the first register or bit (0–65535).
    pub address: i64,
    /// `bool`, `u16`, `i16`, `u32`, `i32`, `u64`, `f32` or `f64`. Default `bool` for coils and
    /// discrete inputs, `u16` for registers.
    #[serde(rename = "type")]
    pub value_type: Option<Choice<ValueType>>,
    /// For multi-register types: `ABCD` (big-endian), `CDAB` (word-swapped), `BADC`
    /// (byte-swapped) or `DCBA` (little-endian). Default `ABCD`.
    pub word_order: Option<Choice<WordOrder>>,
    /// Engineering value = raw × scale + offset. Default 1.
    pub scale: Option<Finite>,
    /// Default 0.
    pub offset: Option<Finite>,
    /// Engineering unit, e.g. `mm`, `mg/m3`.
    pub unit: Option<String>,
    /// Lowest value of the measuring range; below it the value is flagged D.
    pub range_min: Option<Finite>,
    /// Highest value of the measuring range; at or above it the value is flagged T (and counts
    /// as at least this much toward an exceedance).
    pub range_max: Option<Finite>,
    /// Marks the point as a seal node's fault indicator: `lid`, `gate`, `level` or `node`; a
    /// nonzero value means that sensor is faulted, and the bin's seal state is unknown with
    /// this point named as the reason.
    pub fault_of: Option<String>,
    /// Marks the point as a bit field of faults: each entry's `mask` set means the sensor `of`
    /// (`lid`, `gate`, `level`, `node`) is faulted, for the reason `meaning`.
    pub fault_bits: Option<Vec<RawFaultBit>>,
    /// Marks the point as an analyzer's status register and maps its values to states
    /// (`normal`, `calibration`, `maintenance`, `stopped`, `fault`, or their HJ 212 flags N, C,
    /// M, F, D): `{ values = [1, 2], state = "calibration" }`. Values in calibration,
    /// maintenance or stopped states are flagged C, M, F and kept out of averages and
    /// exceedances.
    pub status: Option<Vec<RawStatusEntry>>,
    /// State of a status value no entry names. Default `fault`.
    pub status_otherwise: Option<Choice<InstrumentState>>,
}

/// One bit (or group of bits) of a fault bit field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaultBit {
    /// The bits (at least one).
    pub mask: i64,
    /// `lid`, `gate`, `level` or `node`.
    pub of: String,
    /// What it means, for the record.
    pub meaning: Option<String>,
}

/// Values of a status register that mean one state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatusEntry {
    /// The register values.
    pub values: Vec<i64>,
    /// The state they mean.
    pub state: Choice<InstrumentState>,
}

/// A number that must be finite: TOML's `nan`, `inf` and `-inf` are refused where the file
/// says them (a `range_max = nan` would otherwise turn the range check off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finite(pub f64);

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Finite, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() {
            Ok(Finite(v))
        } else {
            Err(serde::de::Error::custom(format!(
                "{v} is not a number this setting can take; give a finite number"
            )))
        }
    }
}
