//! `sealwatch commission`: what a technician with a laptop on a bus needs.
//!
//! - `scan` finds the unit ids that answer on an RTU line or a TCP gateway (a cheap one-register
//!   read; any answer, even an exception, means a device is there) and asks each for its Read
//!   Device Identification (0x2B/0x0E), reporting "no identification (exception 01)" for devices
//!   without it. A progress bar shows on a terminal.
//! - `read` / `watch` read registers raw (with an optional type and word order) or decoded with a
//!   device profile; `watch` refreshes in place on a terminal.
//! - `write` writes registers or coils — after a confirmation on a terminal, and never without
//!   one: without a terminal it refuses unless `--yes` is given.
//! - `verify` checks a configured device against its profile: reachable, identification matches,
//!   every read answers, values plausible, and (guided) the switches toggle when the technician
//!   opens the lid and the gate. It ends with a pass/fail summary; the exit code says it too.
//!
//! Errors are [`CommissionError`]s; [`CommissionError::exit_code`] maps them for `main`.

mod line;

use std::fmt::Write as _;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use sealwatch_firmware::modbus::{
    read_request, Bits, ExceptionCode, ReadDeviceIdCode, Request, UnitId, Words,
};
use sealwatch_firmware::{BaudRate, Parity};

pub use self::line::Line;
use crate::config::profile::{PointDef, Profile, Table, ValueType, WordOrder, SEAL_NODE_PROFILE};
use crate::config::{self, ConfigError, DataBits, SerialSettings, SiteConfig, StopBits, Transport};
use crate::modbus::{serial_link, Answer, AnyLink, Link, LinkError, TcpLink};
use crate::poll::decode::{decode_point, decode_raw, encode_point};
use crate::poll::plan::{plan_reads, ReadRequest};

/// Exit code: the technician did not confirm a write (or could not be asked).
pub const EXIT_NOT_CONFIRMED: u8 = 3;
/// Exit code: a scan found nothing, or a verification failed.
pub const EXIT_FAILED: u8 = 1;

/// Why a commissioning command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommissionError {
    /// No line was given, or two.
    #[error("say which line to use: --tcp HOST:PORT, --rtu /dev/ttyUSB0, or --config FILE with --device NAME (or --bus NAME)")]
    NoTarget,
    /// A named device or bus is not in the config.
    #[error("{kind} '{name}' is not in {file}; defined: {known}")]
    NotInConfig {
        /// `device` or `bus`.
        kind: &'static str,
        /// Name asked.
        name: String,
        /// Config file.
        file: PathBuf,
        /// Names defined.
        known: String,
    },
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A unit id was not 1–247 or a range was malformed.
    #[error("{0}")]
    Usage(String),
    /// The line failed.
    #[error(transparent)]
    Line(#[from] LinkError),
    /// The device answered with an exception.
    #[error("unit {unit} answered {code} to {what}")]
    Exception {
        /// Unit.
        unit: UnitId,
        /// The exception.
        code: ExceptionCode,
        /// The request, in words.
        what: String,
    },
    /// A write was not confirmed on the terminal.
    #[error("write cancelled: not confirmed")]
    Declined,
    /// A write was asked for without a terminal to confirm on.
    #[error("refusing to write without confirmation: standard input is not a terminal; check the command and pass --yes to write anyway")]
    NoTerminal,
    /// A scan found no unit, or a verification failed (already reported).
    #[error("{0}")]
    Failed(String),
    /// Standard input/output failed.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

impl CommissionError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommissionError::Declined | CommissionError::NoTerminal => EXIT_NOT_CONFIRMED,
            CommissionError::Config(_) | CommissionError::NoTarget | CommissionError::Usage(_) => 2,
            _ => EXIT_FAILED,
        }
    }
}

/// `sealwatch commission …`
#[derive(Debug, Args)]
pub struct CommissionArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: CommissionCommand,
}

/// Which line to talk on.
#[derive(Debug, Args)]
struct TargetArgs {
    /// Modbus TCP device or gateway, `host:port`.
    #[arg(long, global = true, value_name = "HOST:PORT", conflicts_with = "rtu")]
    tcp: Option<String>,
    /// Serial port of an RTU line, e.g. /dev/ttyUSB0.
    #[arg(long, global = true, value_name = "PORT")]
    rtu: Option<String>,
    /// RTU baud rate (1200, 2400, 4800, 9600, 19200, 38400, 57600 or 115200).
    #[arg(long, global = true, default_value = "9600", value_parser = parse_baud)]
    baud: BaudRate,
    /// RTU parity.
    #[arg(long, global = true, value_enum, default_value_t = ParityArg::None)]
    parity: ParityArg,
    /// RTU data bits (7 or 8).
    #[arg(long, global = true, default_value = "8", value_parser = parse_data_bits)]
    data_bits: DataBits,
    /// RTU stop bits (1 or 2).
    #[arg(long, global = true, default_value = "1", value_parser = parse_stop_bits)]
    stop_bits: StopBits,
    /// Site configuration, to name a bus or device instead of giving the line by hand.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// A bus of the site configuration.
    #[arg(long, global = true)]
    bus: Option<String>,
    /// A device of the site configuration (gives the line, unit id and profile).
    #[arg(long, global = true)]
    device: Option<String>,
    /// Response timeout per request, ms.
    #[arg(long, global = true, default_value_t = 500)]
    timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ParityArg {
    None,
    Even,
    Odd,
}

impl ParityArg {
    fn parity(self) -> Parity {
        match self {
            ParityArg::None => Parity::None,
            ParityArg::Even => Parity::Even,
            ParityArg::Odd => Parity::Odd,
        }
    }
}

fn parse_baud(text: &str) -> Result<BaudRate, String> {
    text.parse::<u32>()
        .ok()
        .and_then(BaudRate::from_bits_per_second)
        .ok_or_else(|| {
            format!(
                "'{text}' is not a line speed; expected one of {}",
                BaudRate::ALL.map(|b| b.to_string()).join(", ")
            )
        })
}

fn parse_data_bits(text: &str) -> Result<DataBits, String> {
    match text {
        "7" => Ok(DataBits::Seven),
        "8" => Ok(DataBits::Eight),
        _ => Err(format!("'{text}' data bits: expected 7 or 8")),
    }
}

fn parse_stop_bits(text: &str) -> Result<StopBits, String> {
    match text {
        "1" => Ok(StopBits::One),
        "2" => Ok(StopBits::Two),
        _ => Err(format!("'{text}' stop bits: expected 1 or 2")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TableArg {
    Coil,
    Discrete,
    Holding,
    Input,
}

impl TableArg {
    fn table(self) -> Table {
        match self {
            TableArg::Coil => Table::Coil,
            TableArg::Discrete => Table::DiscreteInput,
            TableArg::Holding => Table::Holding,
            TableArg::Input => Table::Input,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    U16,
    I16,
    U32,
    I32,
    U64,
    F32,
    F64,
}

impl TypeArg {
    fn value_type(self) -> ValueType {
        match self {
            TypeArg::U16 => ValueType::U16,
            TypeArg::I16 => ValueType::I16,
            TypeArg::U32 => ValueType::U32,
            TypeArg::I32 => ValueType::I32,
            TypeArg::U64 => ValueType::U64,
            TypeArg::F32 => ValueType::F32,
            TypeArg::F64 => ValueType::F64,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OrderArg {
    #[value(name = "ABCD")]
    Abcd,
    #[value(name = "CDAB")]
    Cdab,
    #[value(name = "BADC")]
    Badc,
    #[value(name = "DCBA")]
    Dcba,
}

impl OrderArg {
    fn order(self) -> WordOrder {
        match self {
            OrderArg::Abcd => WordOrder::Abcd,
            OrderArg::Cdab => WordOrder::Cdab,
            OrderArg::Badc => WordOrder::Badc,
            OrderArg::Dcba => WordOrder::Dcba,
        }
    }
}

/// What to read: a profile's points, or a raw range.
#[derive(Debug, Args, Clone)]
struct ReadSpec {
    /// Unit id (1–247); taken from --device when that is given.
    #[arg(long, short, value_parser = parse_unit)]
    unit: Option<UnitId>,
    /// Decode with this profile: `seal-node`, or a profile file (`.toml`).
    #[arg(long)]
    profile: Option<String>,
    /// Only these points of the profile (repeatable).
    #[arg(long = "point")]
    points: Vec<String>,
    /// Raw read: the table.
    #[arg(long, value_enum)]
    table: Option<TableArg>,
    /// Raw read: first address (0-based, as on the wire).
    #[arg(long, short)]
    address: Option<u16>,
    /// Raw read: how many registers or bits.
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u16,
    /// Raw read: decode the registers as this type too.
    #[arg(long = "type", value_enum)]
    value_type: Option<TypeArg>,
    /// Raw read: word order of multi-register types.
    #[arg(long, value_enum, default_value_t = OrderArg::Abcd)]
    word_order: OrderArg,
}

#[derive(Debug, Subcommand)]
enum CommissionCommand {
    /// Find the unit ids that answer on the line, with their identification.
    Scan {
        /// Unit ids to try: `1-247`, `1-10`, `1,2,5`.
        #[arg(long, default_value = "1-247")]
        units: String,
    },
    /// Read registers once, raw or decoded with a profile.
    Read(ReadSpec),
    /// Read registers over and over, refreshing in place.
    Watch {
        #[command(flatten)]
        spec: ReadSpec,
        /// Time between reads, ms.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many reads (default: until Ctrl-C).
        #[arg(long)]
        times: Option<u64>,
    },
    /// Write holding registers or coils (asks for confirmation).
    Write {
        /// Unit id (1–247); taken from --device when that is given.
        #[arg(long, short, value_parser = parse_unit)]
        unit: Option<UnitId>,
        /// Write a point of the profile instead of a raw address.
        #[arg(long)]
        point: Option<String>,
        /// Profile for --point: `seal-node` or a profile file.
        #[arg(long)]
        profile: Option<String>,
        /// The table: holding (default) or coil.
        #[arg(long, value_enum, default_value_t = TableArg::Holding)]
        table: TableArg,
        /// First address (0-based).
        #[arg(long, short)]
        address: Option<u16>,
        /// Values: register values (decimal or 0x…), coil states (1/0, on/off), or one
        /// engineering value for --point.
        #[arg(required = true, num_args = 1..)]
        values: Vec<String>,
        /// Write without asking.
        #[arg(long, short)]
        yes: bool,
    },
    /// Check a configured device against its profile, with guided switch tests.
    Verify {
        /// Skip the guided switch tests (lid and gate).
        #[arg(long)]
        no_switch_test: bool,
        /// How long to wait for each switch test, s.
        #[arg(long, default_value_t = 120)]
        switch_timeout_s: u64,
        /// Expected vendor name (default: from the profile; the seal node's is `sealwatch`).
        #[arg(long)]
        expect_vendor: Option<String>,
        /// Expected product code (default: from the profile; the seal node's is `SW-SN1`).
        #[arg(long)]
        expect_product: Option<String>,
    },
}

/// What a target resolves to.
struct Resolved {
    line: Line,
    unit: Option<UnitId>,
    profile: Option<Arc<Profile>>,
    device: Option<String>,
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

fn load_config(t: &TargetArgs) -> Result<Option<SiteConfig>, CommissionError> {
    t.config
        .as_deref()
        .map(config::load)
        .transpose()
        .map_err(Into::into)
}

/// The RTU line on `settings`, opened now (a wrong port is said at once, before any request).
async fn rtu_line(settings: &SerialSettings, timeout: Duration) -> Result<Line, CommissionError> {
    let mut link = serial_link(settings, crate::modbus::QUIET_AFTER_TIMEOUT_DEFAULT);
    link.open(timeout).await?;
    Ok(Line::new(AnyLink::Rtu(Box::new(link)), timeout))
}

async fn resolve(t: &TargetArgs) -> Result<Resolved, CommissionError> {
    let timeout = Duration::from_millis(t.timeout_ms.max(1));
    if let Some(addr) = &t.tcp {
        return Ok(Resolved {
            line: Line::new(AnyLink::Tcp(TcpLink::new(addr)), timeout),
            unit: None,
            profile: None,
            device: None,
        });
    }
    if let Some(port) = &t.rtu {
        let settings = SerialSettings {
            port: port.clone(),
            baud: t.baud,
            parity: t.parity.parity(),
            data_bits: t.data_bits,
            stop_bits: t.stop_bits,
        };
        return Ok(Resolved {
            line: rtu_line(&settings, timeout).await?,
            unit: None,
            profile: None,
            device: None,
        });
    }
    let Some(cfg) = load_config(t)? else {
        return Err(CommissionError::NoTarget);
    };
    let (bus, unit, profile, device) = if let Some(name) = &t.device {
        let d = cfg
            .devices
            .iter()
            .find(|d| &d.name == name)
            .ok_or_else(|| CommissionError::NotInConfig {
                kind: "device",
                name: name.clone(),
                file: cfg.file.clone(),
                known: known(cfg.devices.iter().map(|d| &d.name)),
            })?;
        (
            d.bus,
            Some(d.unit),
            Some(d.profile.clone()),
            Some(d.name.clone()),
        )
    } else if let Some(name) = &t.bus {
        let b = cfg
            .buses
            .iter()
            .position(|b| &b.name == name)
            .ok_or_else(|| CommissionError::NotInConfig {
                kind: "bus",
                name: name.clone(),
                file: cfg.file.clone(),
                known: known(cfg.buses.iter().map(|b| &b.name)),
            })?;
        (b, None, None, None)
    } else {
        return Err(CommissionError::NoTarget);
    };
    let line = match &cfg.buses[bus].transport {
        Transport::Tcp { address } => Line::new(AnyLink::Tcp(TcpLink::new(address)), timeout),
        Transport::Rtu(serial) => rtu_line(serial, timeout).await?,
    };
    Ok(Resolved {
        line,
        unit,
        profile,
        device,
    })
}

fn load_profile(name: &str) -> Result<Arc<Profile>, CommissionError> {
    if name == SEAL_NODE_PROFILE {
        return Ok(Arc::new(Profile::seal_node()));
    }
    Ok(Arc::new(config::load_profile(std::path::Path::new(name))?))
}

fn unit_of(asked: Option<UnitId>, resolved: Option<UnitId>) -> Result<UnitId, CommissionError> {
    asked.or(resolved).ok_or_else(|| {
        CommissionError::Usage("say which unit: --unit N (or --device NAME with --config)".into())
    })
}

fn parse_unit(text: &str) -> Result<UnitId, String> {
    text.parse::<u8>()
        .ok()
        .and_then(UnitId::new)
        .ok_or_else(|| {
            format!("unit id '{text}' is outside 1–247 (0 is broadcast, 248–255 are reserved)")
        })
}

/// Parses `1-247`, `5`, `1,2,10-12`.
pub fn parse_units(text: &str) -> Result<Vec<UnitId>, CommissionError> {
    let bad = || {
        CommissionError::Usage(format!(
            "'{text}' is not a list of unit ids; expected e.g. 1-247, 1-10 or 1,2,5 (each 1–247)"
        ))
    };
    let mut units = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a = a.parse().ok().and_then(UnitId::new).ok_or_else(bad)?;
        let b = b.parse().ok().and_then(UnitId::new).ok_or_else(bad)?;
        if a > b {
            return Err(bad());
        }
        units.extend((a.get()..=b.get()).filter_map(UnitId::new));
    }
    units.sort_unstable();
    units.dedup();
    if units.is_empty() {
        return Err(bad());
    }
    Ok(units)
}

/// Reads `count` of `table` from `start`; an exception is an error naming the request.
async fn read_words(
    line: &mut Line<impl Link>,
    unit: UnitId,
    table: Table,
    start: u16,
    count: u16,
) -> Result<Vec<u16>, CommissionError> {
    let req = read_request(table, start, count).map_err(|e| {
        CommissionError::Usage(format!("cannot read {count} of {table} from {start}: {e}"))
    })?;
    match line.call(unit, &req).await {
        Ok(answer) => answer.into_words().ok_or_else(|| {
            CommissionError::Failed(format!(
                "unexpected answer to a read of {table} {start}+{count}"
            ))
        }),
        Err(LinkError::Exception { code, .. }) => Err(CommissionError::Exception {
            unit,
            code,
            what: format!("reading {table} {start}+{count}"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// A device's identification: basic objects, or the exception that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identification {
    /// Objects (0 vendor, 1 product code, 2 revision, …).
    Objects(Vec<(u8, String)>),
    /// The device answered this exception (01: not implemented).
    Exception(ExceptionCode),
}

impl Identification {
    /// Object `id` as text.
    pub fn get(&self, id: u8) -> Option<&str> {
        match self {
            Identification::Objects(o) => o.iter().find(|(i, _)| *i == id).map(|(_, v)| v.as_str()),
            Identification::Exception(_) => None,
        }
    }

    /// One line for people.
    pub fn text(&self) -> String {
        match self {
            Identification::Objects(o) if o.is_empty() => "identification: no objects".to_owned(),
            Identification::Objects(o) => o
                .iter()
                .map(|(id, v)| {
                    let name = match id {
                        0 => "vendor",
                        1 => "product",
                        2 => "revision",
                        3 => "url",
                        4 => "name",
                        5 => "model",
                        _ => "object",
                    };
                    if *id <= 5 {
                        format!("{name} {v}")
                    } else {
                        format!("{name} 0x{id:02X} {v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            Identification::Exception(code) => format!("no identification ({code})"),
        }
    }
}

/// A string a device sent, made safe to print: bytes that are not UTF-8 become U+FFFD, and
/// control and bidirectional-formatting characters are written escaped (`\u{1b}`), so a
/// device cannot move the cursor, clear the technician's screen or reorder what is shown.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Asks `unit` for its basic device identification.
pub async fn identify(
    line: &mut Line<impl Link>,
    unit: UnitId,
) -> Result<Identification, LinkError> {
    let req = Request::ReadDeviceIdentification {
        code: ReadDeviceIdCode::Basic,
        object_id: 0,
    };
    match line.call(unit, &req).await {
        Ok(Answer::Identification(objects)) => Ok(Identification::Objects(
            objects
                .into_iter()
                .map(|(id, v)| (id, printable(&v)))
                .collect(),
        )),
        Ok(other) => Ok(Identification::Objects(vec![(0xFF, format!("{other:?}"))])),
        Err(LinkError::Exception { code, .. }) => Ok(Identification::Exception(code)),
        Err(e) => Err(e),
    }
}

/// A unit found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Unit id.
    pub unit: UnitId,
    /// How it answered the probe read.
    pub probe: String,
    /// Its identification, if it answered that request.
    pub identification: Option<Identification>,
}

/// The probe of a scan: holding register 0, one register.
const PROBE_RANGE: sealwatch_firmware::modbus::AddressRange =
    match sealwatch_firmware::modbus::AddressRange::try_new(0, 1, 1) {
        Ok(r) => r,
        Err(_) => panic!("one register at 0 is a range"),
    };

/// Probes `units` one by one; `progress` is called after each.
pub async fn scan(
    line: &mut Line<impl Link>,
    units: &[UnitId],
    mut progress: impl FnMut(UnitId, Option<&Found>),
) -> Result<Vec<Found>, CommissionError> {
    let mut found = Vec::new();
    let probe = Request::ReadHoldingRegisters(PROBE_RANGE);
    for &unit in units {
        let answer = match line.call(unit, &probe).await {
            Ok(Answer::Words(w)) => {
                Some(format!("holding 0 = {}", w.first().copied().unwrap_or(0)))
            }
            // A gateway's "path unavailable" / "target failed to respond": nobody there.
            Err(LinkError::Exception {
                code: ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetFailed,
                ..
            }) => None,
            Err(LinkError::Exception { code, .. }) => {
                Some(format!("answers ({code} to a read of holding 0)"))
            }
            Ok(other) => Some(format!("answers ({other:?})")),
            Err(e) if e.is_silence() => None,
            Err(e @ (LinkError::BadFrame { .. } | LinkError::LateReply { .. })) if e.survives() => {
                Some(format!("answers garbled: {e}"))
            }
            Err(e) => return Err(e.into()),
        };
        let Some(probe_text) = answer else {
            progress(unit, None);
            continue;
        };
        let identification = match identify(line, unit).await {
            Ok(id) => Some(id),
            Err(e) if e.survives() => {
                tracing::debug!(unit = %unit, error = %e, "no identification");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let f = Found {
            unit,
            probe: probe_text,
            identification,
        };
        progress(unit, Some(&f));
        found.push(f);
    }
    Ok(found)
}

/// One decoded point.
#[derive(Debug, Clone)]
struct PointValue {
    name: String,
    table: Table,
    address: u16,
    raw: Vec<u16>,
    value: Result<f64, String>,
    unit: Option<String>,
    in_range: bool,
}

async fn read_profile(
    line: &mut Line<impl Link>,
    unit: UnitId,
    profile: &Profile,
    only: &[String],
) -> Result<Vec<PointValue>, CommissionError> {
    let mut reads: Vec<ReadRequest> = plan_reads(&profile.points, 8);
    if !only.is_empty() {
        for name in only {
            if profile.point(name).is_none() {
                return Err(CommissionError::Usage(format!(
                    "profile '{}' has no point '{name}'; points: {}",
                    profile.name,
                    profile
                        .points
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let keep: Vec<usize> = (0..profile.points.len())
            .filter(|&i| only.contains(&profile.points[i].name))
            .collect();
        let chosen: Vec<PointDef> = keep.iter().map(|&i| profile.points[i].clone()).collect();
        reads = plan_reads(&chosen, 8)
            .into_iter()
            .map(|mut r| {
                r.points = r.points.iter().map(|&p| keep[p]).collect();
                r
            })
            .collect();
    }
    let mut values = Vec::new();
    for read in &reads {
        let words = read_words(line, unit, read.table, read.start(), read.count()).await?;
        for &p in &read.points {
            let point = &profile.points[p];
            let offset = usize::from(point.address - read.start());
            let slice = words.get(offset..).unwrap_or(&[]);
            let raw = slice
                .iter()
                .take(usize::from(point.width()))
                .copied()
                .collect();
            let value = decode_point(slice, point).map_err(|e| e.to_string());
            let in_range = match &value {
                Ok(v) => {
                    v.is_finite()
                        && point.range_min.is_none_or(|lo| *v >= lo)
                        && point.range_max.is_none_or(|hi| *v <= hi)
                }
                Err(_) => false,
            };
            values.push(PointValue {
                name: point.name.clone(),
                table: point.table,
                address: point.address,
                raw,
                value,
                unit: point.unit.clone(),
                in_range,
            });
        }
    }
    values.sort_by_key(|v| (v.table, v.address));
    Ok(values)
}

fn render_points(values: &[PointValue]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<15} {:>7}  {:<20} VALUE",
        "POINT", "TABLE", "ADDRESS", "RAW"
    );
    for v in values {
        let raw = v
            .raw
            .iter()
            .map(|w| format!("{w:04X}"))
            .collect::<Vec<_>>()
            .join(" ");
        let value = match &v.value {
            Ok(x) => format!(
                "{x}{}{}",
                v.unit
                    .as_deref()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default(),
                if v.in_range { "" } else { "  (out of range)" }
            ),
            Err(e) => format!("cannot decode: {e}"),
        };
        let _ = writeln!(
            out,
            "{:<22} {:<15} {:>7}  {:<20} {value}",
            v.name,
            v.table.to_string(),
            v.address,
            raw
        );
    }
    out
}

fn render_raw(
    table: Table,
    start: u16,
    words: &[u16],
    typed: Option<(ValueType, WordOrder)>,
) -> String {
    let mut out = String::new();
    if table.is_bits() {
        let _ = writeln!(out, "{:<15} {:>7}  VALUE", "TABLE", "ADDRESS");
        for (i, w) in words.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:<15} {:>7}  {}",
                table.to_string(),
                usize::from(start) + i,
                if *w != 0 { "1 (on)" } else { "0 (off)" }
            );
        }
        return out;
    }
    let _ = writeln!(
        out,
        "{:<15} {:>7}  {:>6}  {:>6}  {:>6}",
        "TABLE", "ADDRESS", "HEX", "U16", "I16"
    );
    for (i, w) in words.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<15} {:>7}  0x{w:04X}  {w:>6}  {:>6}",
            table.to_string(),
            usize::from(start) + i,
            *w as i16
        );
    }
    if let Some((vt, order)) = typed {
        let width = usize::from(vt.width());
        for (i, chunk) in words.chunks(width).enumerate() {
            if chunk.len() < width {
                break;
            }
            let text = decode_raw(chunk, vt, order)
                .map_or_else(|e| format!("cannot decode: {e}"), |v| v.to_string());
            let _ = writeln!(
                out,
                "{:?} {:?} at {}: {text}",
                vt,
                order,
                usize::from(start) + i * width
            );
        }
    }
    out
}

async fn read_once(
    line: &mut Line<impl Link>,
    spec: &ReadSpec,
    unit: UnitId,
    profile: Option<&Arc<Profile>>,
) -> Result<String, CommissionError> {
    match (spec.table, spec.address) {
        (Some(table), Some(address)) => {
            let words = read_words(line, unit, table.table(), address, spec.count).await?;
            Ok(render_raw(
                table.table(),
                address,
                &words,
                spec.value_type
                    .map(|t| (t.value_type(), spec.word_order.order())),
            ))
        }
        (None, None) => {
            let profile = profile.ok_or_else(|| {
                CommissionError::Usage(
                    "say what to read: --profile NAME (or --device) to decode points, or --table and --address for a raw read".into(),
                )
            })?;
            Ok(render_points(
                &read_profile(line, unit, profile, &spec.points).await?,
            ))
        }
        _ => Err(CommissionError::Usage(
            "a raw read needs both --table and --address".into(),
        )),
    }
}

fn parse_word(text: &str) -> Option<u16> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u16::from_str_radix(hex, 16).ok()
    } else if let Some(neg) = t.strip_prefix('-') {
        neg.parse::<u16>()
            .ok()
            .filter(|v| *v <= 32768)
            .map(|v| (-(i32::from(v))) as i16 as u16)
    } else {
        t.parse().ok()
    }
}

fn parse_bit(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" => Some(true),
        "0" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// Asks on the terminal unless `yes`; refuses without a terminal.
fn confirm(question: &str, yes: bool) -> Result<(), CommissionError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommissionError::NoTerminal);
    }
    let mut err = std::io::stderr();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CommissionError::Declined)
    }
}

/// The write a `write` command means: table, address and the values as words or bits.
enum WritePlan {
    Registers(u16, Vec<u16>),
    Coils(u16, Vec<bool>),
}

impl WritePlan {
    /// The Modbus request that writes it.
    fn request(&self) -> Request<'_> {
        match self {
            WritePlan::Registers(a, v) if v.len() == 1 => Request::WriteSingleRegister {
                address: *a,
                value: v[0],
            },
            WritePlan::Registers(a, v) => Request::WriteMultipleRegisters {
                start: *a,
                values: Words::from_values(v),
            },
            WritePlan::Coils(a, v) if v.len() == 1 => Request::WriteSingleCoil {
                address: *a,
                value: v[0],
            },
            WritePlan::Coils(a, v) => Request::WriteMultipleCoils {
                start: *a,
                values: Bits::from_values(v),
            },
        }
    }

    fn text(&self) -> String {
        match self {
            WritePlan::Registers(a, v) => format!(
                "holding {a}{} = {}",
                if v.len() > 1 {
                    format!("..{}", usize::from(*a) + v.len() - 1)
                } else {
                    String::new()
                },
                v.iter()
                    .map(|w| format!("{w} (0x{w:04X})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            WritePlan::Coils(a, v) => format!(
                "coil {a}{} = {}",
                if v.len() > 1 {
                    format!("..{}", usize::from(*a) + v.len() - 1)
                } else {
                    String::new()
                },
                v.iter()
                    .map(|b| if *b { "on" } else { "off" })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Runs a commissioning command; progress and prompts go to standard error, results to
/// standard output.
pub async fn run(args: CommissionArgs) -> Result<(), CommissionError> {
    let CommissionArgs { target, command } = args;
    let mut r = resolve(&target).await?;
    match command {
        CommissionCommand::Scan { units } => scan_command(&mut r, &units).await,
        CommissionCommand::Read(spec) => read_command(&mut r, &spec).await,
        CommissionCommand::Watch {
            spec,
            interval_ms,
            times,
        } => watch_command(&mut r, &spec, interval_ms, times).await,
        CommissionCommand::Write {
            unit,
            point,
            profile,
            table,
            address,
            values,
            yes,
        } => {
            let unit = unit_of(unit, r.unit)?;
            let plan = write_plan(&r, point, profile, table, address, &values)?;
            write_command(&mut r, unit, plan, yes).await
        }
        CommissionCommand::Verify {
            no_switch_test,
            switch_timeout_s,
            expect_vendor,
            expect_product,
        } => {
            verify_command(
                &mut r,
                no_switch_test,
                switch_timeout_s,
                expect_vendor,
                expect_product,
            )
            .await
        }
    }
}

/// `commission scan`: the units that answer, with their identification.
async fn scan_command(r: &mut Resolved, units: &str) -> Result<(), CommissionError> {
    let stdout = std::io::stdout();
    let units = parse_units(units)?;
    let bar = indicatif::ProgressBar::new(units.len() as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} scanning {msg} [{bar:30}] {pos}/{len} units, {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(r.line.target().to_owned());
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let target_text = r.line.target().to_owned();
    let found = scan(&mut r.line, &units, |unit, f| {
        bar.inc(1);
        if let Some(f) = f {
            let id = f.identification.as_ref().map_or_else(
                || "no identification (no reply)".to_owned(),
                Identification::text,
            );
            bar.println(format!("unit {unit:>3}: {} — {id}", f.probe));
            if bar.is_hidden() {
                let _ = writeln!(stdout.lock(), "unit {unit:>3}: {} — {id}", f.probe);
            }
        }
    })
    .await?;
    bar.finish_and_clear();
    let list: Vec<String> = found.iter().map(|f| f.unit.to_string()).collect();
    if found.is_empty() {
        return Err(CommissionError::Failed(format!(
            "no unit answered on {target_text} (tried {} unit ids, {} ms each); check wiring, baud rate and parity",
            units.len(),
            r.line.timeout().as_millis()
        )));
    }
    writeln!(
        stdout.lock(),
        "found {} unit(s) on {target_text}: {}",
        found.len(),
        list.join(", ")
    )?;
    Ok(())
}

/// `commission read`: one read, raw or decoded.
async fn read_command(r: &mut Resolved, spec: &ReadSpec) -> Result<(), CommissionError> {
    let stdout = std::io::stdout();
    let unit = unit_of(spec.unit, r.unit)?;
    let profile = match &spec.profile {
        Some(p) => Some(load_profile(p)?),
        None => r.profile.clone(),
    };
    let text = read_once(&mut r.line, spec, unit, profile.as_ref()).await?;
    stdout.lock().write_all(text.as_bytes())?;
    Ok(())
}

/// `commission watch`: reads again and again, redrawn in place on a terminal.
async fn watch_command(
    r: &mut Resolved,
    spec: &ReadSpec,
    interval_ms: u64,
    times: Option<u64>,
) -> Result<(), CommissionError> {
    let stdout = std::io::stdout();
    let unit = unit_of(spec.unit, r.unit)?;
    let profile = match &spec.profile {
        Some(p) => Some(load_profile(p)?),
        None => r.profile.clone(),
    };
    let tty = std::io::stdout().is_terminal();
    let mut drawn_lines = 0usize;
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(50)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        n += 1;
        let now = chrono::Local::now().format("%H:%M:%S%.3f");
        let body = match read_once(&mut r.line, spec, unit, profile.as_ref()).await {
            Ok(text) => text,
            Err(e @ (CommissionError::Line(_) | CommissionError::Exception { .. })) => {
                format!("{e}\n")
            }
            Err(e) => return Err(e),
        };
        let text = format!(
            "unit {unit} on {} — read {n} at {now} (Ctrl-C stops)\n{body}",
            r.line.target()
        );
        let mut out = stdout.lock();
        if tty && drawn_lines > 0 {
            // Back to the first line drawn, and clear to the end of the screen.
            write!(out, "\x1b[{drawn_lines}F\x1b[J")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        drawn_lines = text.lines().count();
        if times.is_some_and(|t| n >= t) {
            break;
        }
    }
    Ok(())
}

/// What `commission write` is to write: a point of a profile (one engineering value) or raw
/// registers or coils at an address.
fn write_plan(
    r: &Resolved,
    point: Option<String>,
    profile: Option<String>,
    table: TableArg,
    address: Option<u16>,
    values: &[String],
) -> Result<WritePlan, CommissionError> {
    Ok(match point {
        Some(name) => {
            let profile = match &profile {
                Some(p) => load_profile(p)?,
                None => r.profile.clone().ok_or_else(|| {
                    CommissionError::Usage(
                        "--point needs --profile (or --device with --config)".into(),
                    )
                })?,
            };
            let p = profile.point(&name).ok_or_else(|| {
                CommissionError::Usage(format!("profile '{}' has no point '{name}'", profile.name))
            })?;
            let [value] = values else {
                return Err(CommissionError::Usage(format!(
                    "--point {name} takes one value, got {}",
                    values.len()
                )));
            };
            match p.table {
                Table::Holding => {
                    let v: f64 = value.parse().map_err(|_| {
                        CommissionError::Usage(format!("'{value}' is not a number"))
                    })?;
                    WritePlan::Registers(p.address, encode_point(v, p))
                }
                Table::Coil => WritePlan::Coils(
                    p.address,
                    vec![parse_bit(value).ok_or_else(|| {
                        CommissionError::Usage(format!(
                            "'{value}' is not a coil state; expected on/off or 1/0"
                        ))
                    })?],
                ),
                other => {
                    return Err(CommissionError::Usage(format!(
                        "point '{name}' is in the {other} table, which cannot be written"
                    )))
                }
            }
        }
        None => {
            let address = address.ok_or_else(|| {
                CommissionError::Usage("say where to write: --address A (or --point NAME)".into())
            })?;
            match table {
                TableArg::Holding => WritePlan::Registers(
                    address,
                    values
                        .iter()
                        .map(|v| {
                            parse_word(v).ok_or_else(|| {
                                CommissionError::Usage(format!(
                                    "'{v}' is not a register value; expected 0–65535, -32768–-1 or 0x0000–0xFFFF"
                                ))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                ),
                TableArg::Coil => WritePlan::Coils(
                    address,
                    values
                        .iter()
                        .map(|v| {
                            parse_bit(v).ok_or_else(|| {
                                CommissionError::Usage(format!(
                                    "'{v}' is not a coil state; expected on/off or 1/0"
                                ))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(CommissionError::Usage(format!(
                        "the {} table cannot be written; use --table holding or --table coil",
                        other.table()
                    )))
                }
            }
        }
    })
}

/// `commission write`: asks, then writes the plan to `unit`.
async fn write_command(
    r: &mut Resolved,
    unit: UnitId,
    plan: WritePlan,
    yes: bool,
) -> Result<(), CommissionError> {
    let stdout = std::io::stdout();
    let what = plan.text();
    let device = r
        .device
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    confirm(
        &format!(
            "write {what} to unit {unit}{device} on {}?",
            r.line.target()
        ),
        yes,
    )?;
    let request = plan.request();
    match r.line.call(unit, &request).await {
        Ok(Answer::Written) => {
            writeln!(stdout.lock(), "wrote {what} to unit {unit}")?;
            Ok(())
        }
        Ok(other) => Err(CommissionError::Failed(format!(
            "unexpected answer to a write: {other:?}"
        ))),
        Err(LinkError::Exception { code, .. }) => Err(CommissionError::Exception {
            unit,
            code,
            what: format!("writing {what}"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// `commission verify`: the configured device against its profile, with switch tests.
async fn verify_command(
    r: &mut Resolved,
    no_switch_test: bool,
    switch_timeout_s: u64,
    expect_vendor: Option<String>,
    expect_product: Option<String>,
) -> Result<(), CommissionError> {
    let stdout = std::io::stdout();
    let (Some(unit), Some(profile), Some(device)) = (r.unit, r.profile.clone(), r.device.clone())
    else {
        return Err(CommissionError::Usage(
            "verify checks a configured device: give --config FILE --device NAME".into(),
        ));
    };
    let expect = Expectation {
        vendor: expect_vendor
            .or_else(|| (profile.name == SEAL_NODE_PROFILE).then(|| "sealwatch".to_owned())),
        product: expect_product
            .or_else(|| (profile.name == SEAL_NODE_PROFILE).then(|| "SW-SN1".to_owned())),
    };
    let switch_timeout = (!no_switch_test).then(|| Duration::from_secs(switch_timeout_s));
    let report = verify(
        &mut r.line,
        unit,
        &device,
        &profile,
        &expect,
        switch_timeout,
    )
    .await;
    stdout.lock().write_all(report.text().as_bytes())?;
    if report.failed() > 0 {
        Err(CommissionError::Failed(format!(
            "{device} failed {} of {} checks",
            report.failed(),
            report.steps.len()
        )))
    } else {
        Ok(())
    }
}

/// What the identification of a device should say.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// Vendor name (object 0).
    pub vendor: Option<String>,
    /// Product code (object 1).
    pub product: Option<String>,
}

/// Outcome of one verification step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Pass,
    /// Passed with a remark.
    Warn,
    /// Failed.
    Fail,
    /// Not run.
    Skip,
}

/// One verification step.
#[derive(Debug, Clone)]
pub struct Step {
    /// What was checked.
    pub name: String,
    /// Outcome.
    pub verdict: Verdict,
    /// Details.
    pub detail: String,
}

/// The result of `verify`.
#[derive(Debug, Clone)]
pub struct Report {
    /// Device name.
    pub device: String,
    /// Steps in order.
    pub steps: Vec<Step>,
}

impl Report {
    fn push(&mut self, name: &str, verdict: Verdict, detail: impl Into<String>) {
        let step = Step {
            name: name.to_owned(),
            verdict,
            detail: detail.into(),
        };
        eprintln!("{}", step_line(&step));
        self.steps.push(step);
    }

    /// Failed steps.
    pub fn failed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.verdict == Verdict::Fail)
            .count()
    }

    /// The report for people: one line per step and a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "verify {}:", self.device);
        for s in &self.steps {
            let _ = writeln!(out, "  {}", step_line(s));
        }
        let count = |v| self.steps.iter().filter(|s| s.verdict == v).count();
        let _ = writeln!(
            out,
            "{}: {} passed, {} failed, {} warnings, {} skipped",
            if self.failed() > 0 { "FAIL" } else { "PASS" },
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Warn),
            count(Verdict::Skip)
        );
        out
    }
}

fn step_line(s: &Step) -> String {
    let tag = match s.verdict {
        Verdict::Pass => "PASS",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
    };
    format!("[{tag}] {}: {}", s.name, s.detail)
}

/// Checks a device against its profile. `switch_timeout`: run the guided switch tests, waiting
/// this long for each; `None` skips them.
pub async fn verify(
    line: &mut Line<impl Link>,
    unit: UnitId,
    device: &str,
    profile: &Profile,
    expect: &Expectation,
    switch_timeout: Option<Duration>,
) -> Report {
    let mut report = Report {
        device: device.to_owned(),
        steps: Vec::new(),
    };
    // 1. Reachable.
    let reads = plan_reads(&profile.points, 8);
    let Some(first) = reads.first() else {
        report.push(
            "profile",
            Verdict::Fail,
            format!("profile '{}' has no points", profile.name),
        );
        return report;
    };
    let probe = match read_request(first.table, first.start(), 1) {
        Ok(probe) => probe,
        Err(e) => {
            report.push(
                "profile",
                Verdict::Fail,
                format!("cannot read {first}: {e}"),
            );
            return report;
        }
    };
    match line.call(unit, &probe).await {
        Ok(_) | Err(LinkError::Exception { .. }) => report.push(
            "reachable",
            Verdict::Pass,
            format!("unit {unit} answers on {}", line.target()),
        ),
        Err(e) => {
            report.push("reachable", Verdict::Fail, e.to_string());
            return report;
        }
    }
    // 2. Identification.
    match identify(line, unit).await {
        Ok(Identification::Exception(code)) => report.push(
            "identification",
            if expect.vendor.is_some() || expect.product.is_some() {
                Verdict::Warn
            } else {
                Verdict::Skip
            },
            format!(
                "the device does not implement Read Device Identification ({code}); cannot confirm it is a {}",
                expect.product.as_deref().unwrap_or(&profile.name)
            ),
        ),
        Ok(id) => {
            let mut wrong = Vec::new();
            for (obj, want) in [(0u8, &expect.vendor), (1u8, &expect.product)] {
                if let Some(want) = want {
                    if id.get(obj) != Some(want.as_str()) {
                        wrong.push(format!(
                            "{} is '{}', expected '{want}'",
                            if obj == 0 { "vendor" } else { "product code" },
                            id.get(obj).unwrap_or("")
                        ));
                    }
                }
            }
            if wrong.is_empty() {
                report.push("identification", Verdict::Pass, id.text());
            } else {
                report.push(
                    "identification",
                    Verdict::Fail,
                    format!("{} — wrong device or wrong profile?", wrong.join("; ")),
                );
            }
        }
        Err(e) => report.push("identification", Verdict::Warn, format!("no answer: {e}")),
    }
    // 3. Every read of the profile answers.
    let mut values: Vec<PointValue> = Vec::new();
    let mut unreadable = Vec::new();
    for read in &reads {
        match read_profile_one(line, unit, profile, read).await {
            Ok(mut v) => values.append(&mut v),
            Err(e) => unreadable.push(format!("{read}: {e}")),
        }
    }
    if unreadable.is_empty() {
        report.push(
            "registers",
            Verdict::Pass,
            format!(
                "all {} points of profile '{}' read ({} requests)",
                profile.points.len(),
                profile.name,
                reads.len()
            ),
        );
    } else {
        report.push(
            "registers",
            Verdict::Fail,
            format!(
                "{} of {} reads refused — does profile '{}' fit this device? {}",
                unreadable.len(),
                reads.len(),
                profile.name,
                unreadable.join("; ")
            ),
        );
    }
    // 4. Plausible values.
    if !values.is_empty() {
        let mut odd: Vec<String> = values
            .iter()
            .filter(|v| !v.in_range)
            .map(|v| match &v.value {
                Ok(x) => format!("{} = {x} outside its range", v.name),
                Err(e) => format!("{}: {e}", v.name),
            })
            .collect();
        let get = |name: &str| {
            values
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.value.as_ref().ok().copied())
        };
        if let (Some(c), Some(o)) = (get("lid_closed"), get("lid_open")) {
            if c != 0.0 && o != 0.0 {
                odd.push("both lid switches are on (wiring fault or stuck switch)".to_owned());
            }
        }
        if odd.is_empty() {
            report.push(
                "values",
                Verdict::Pass,
                format!("{} values within their ranges", values.len()),
            );
        } else {
            report.push("values", Verdict::Fail, odd.join("; "));
        }
    }
    // 5. Guided switch tests.
    let tests: [(&str, &[&str], &str); 2] = [
        (
            "lid switches",
            &["lid_open", "lid_closed"],
            "open the lid fully, then close it again",
        ),
        (
            "gate switch",
            &["gate_open"],
            "open the charging gate, then close it again",
        ),
    ];
    for (name, points, instruction) in tests {
        if points.iter().any(|p| profile.point(p).is_none()) {
            continue;
        }
        let Some(timeout) = switch_timeout else {
            report.push(name, Verdict::Skip, "switch tests not asked for");
            continue;
        };
        eprintln!(
            ">>> {device}: {instruction} (waiting up to {} s)…",
            timeout.as_secs()
        );
        match watch_toggle(line, unit, profile, points, timeout).await {
            Ok(()) => report.push(
                name,
                Verdict::Pass,
                format!("{} seen on and off", points.join(" and ")),
            ),
            Err(why) => report.push(name, Verdict::Fail, why),
        }
    }
    report
}

async fn read_profile_one(
    line: &mut Line<impl Link>,
    unit: UnitId,
    profile: &Profile,
    read: &ReadRequest,
) -> Result<Vec<PointValue>, CommissionError> {
    let names: Vec<String> = read
        .points
        .iter()
        .map(|&p| profile.points[p].name.clone())
        .collect();
    read_profile(line, unit, profile, &names).await
}

/// Waits until every point of `points` has been seen both on and off.
async fn watch_toggle(
    line: &mut Line<impl Link>,
    unit: UnitId,
    profile: &Profile,
    points: &[&str],
    timeout: Duration,
) -> Result<(), String> {
    let names: Vec<String> = points.iter().map(|p| (*p).to_owned()).collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: Vec<(bool, bool)> = vec![(false, false); points.len()];
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        match read_profile(line, unit, profile, &names).await {
            Ok(values) => {
                for v in values {
                    if let (Some(i), Ok(x)) = (names.iter().position(|n| *n == v.name), v.value) {
                        if x != 0.0 {
                            seen[i].0 = true;
                        } else {
                            seen[i].1 = true;
                        }
                    }
                }
                if seen.iter().all(|(on, off)| *on && *off) {
                    return Ok(());
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<String> = names
        .iter()
        .zip(&seen)
        .filter(|(_, (on, off))| !(*on && *off))
        .map(|(n, (on, _))| format!("{n} never {}", if *on { "off" } else { "on" }))
        .collect();
    Err(format!(
        "not seen within {} s: {}{}",
        timeout.as_secs(),
        missing.join(", "),
        if last_error.is_empty() {
            String::new()
        } else {
            format!(" (last error: {last_error})")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_are_printed_with_control_characters_escaped() {
        let shown = printable(b"ACME\x1b[2J\x1b]0;owned\x07 \xe6\xb5\x8b\xff\xe2\x80\xae");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(
            shown,
            "ACME\\u{1b}[2J\\u{1b}]0;owned\\u{7} 测\u{fffd}\\u{202e}"
        );
    }

    #[test]
    fn unit_lists() {
        let units = |text| {
            parse_units(text)
                .unwrap()
                .into_iter()
                .map(UnitId::get)
                .collect::<Vec<u8>>()
        };
        assert_eq!(units("1-3,7, 2"), vec![1, 2, 3, 7]);
        assert_eq!(parse_units("1-247").unwrap().len(), 247);
        for bad in ["0-3", "1-248", "5-2", "x", ""] {
            assert!(parse_units(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn register_values_parse_as_technicians_write_them() {
        assert_eq!(parse_word("0xC0DE"), Some(0xC0DE));
        assert_eq!(parse_word("250"), Some(250));
        assert_eq!(parse_word("-1"), Some(0xFFFF));
        assert_eq!(parse_word("70000"), None);
        assert_eq!(parse_bit("on"), Some(true));
        assert_eq!(parse_bit("maybe"), None);
    }

    #[test]
    fn a_write_without_a_terminal_is_refused_unless_confirmed_by_flag() {
        // `cargo test` runs with standard input not a terminal.
        if std::io::stdin().is_terminal() {
            return;
        }
        assert!(matches!(
            confirm("write?", false),
            Err(CommissionError::NoTerminal)
        ));
        assert!(confirm("write?", true).is_ok());
        assert_eq!(CommissionError::NoTerminal.exit_code(), EXIT_NOT_CONFIRMED);
    }
}
