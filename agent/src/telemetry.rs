//! What the agent tells about itself: logs (tracing) and metrics (Prometheus text format).
//!
//! Logs go to standard error in one of three formats ([`LogFormat`]): `human` (coloured when
//! standard error is a terminal), `json` (one object per line, for log shippers and for journald
//! via standard output capture) or `journald` (native journal fields). The format comes from
//! `--log-format`, else `SEALWATCH_LOG_FORMAT`, else `human`; the level filter from `SEALWATCH_LOG`
//! (default `info`).
//!
//! Metrics are rendered from a [`PlantSnapshot`] by [`metrics_text`]; names and labels are stable
//! (documented in the README) and every sample comes from counters that only grow while the agent
//! runs, or from gauges read at scrape time.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use crate::state::PlantSnapshot;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines, coloured on a terminal.
    Human,
    /// One JSON object per line.
    Json,
    /// Native systemd journal entries (falls back to `human` without a journal).
    Journald,
}

/// Why logging could not be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Unknown format name.
    #[error("unknown log format '{0}'; expected human, json or journald")]
    Format(String),
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            "journald" | "journal" => Ok(LogFormat::Journald),
            other => Err(TelemetryError::Format(other.to_owned())),
        }
    }
}

/// The format asked for: `flag`, else `SEALWATCH_LOG_FORMAT`, else human.
pub fn log_format(flag: Option<&str>) -> Result<LogFormat, TelemetryError> {
    match flag {
        Some(f) => f.parse(),
        None => match std::env::var("SEALWATCH_LOG_FORMAT") {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(LogFormat::Human),
        },
    }
}

/// Installs the global tracing subscriber. Returns a note to log once logging works (e.g. that
/// journald was asked for but is not there).
pub fn init_logging(format: LogFormat) -> Option<String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SEALWATCH_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let mut note = None;
    let format = if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer.with_syslog_identifier("sealwatch".to_owned()))
                    .try_init();
                return None;
            }
            Err(e) => {
                note = Some(format!(
                    "journald asked for but not reachable ({e}); logging to standard error instead"
                ));
                LogFormat::Human
            }
        }
    } else {
        format
    };
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .try_init(),
        _ => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
    note
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition (format 0.0.4) of the agent's state at `now_ms`.
/// `store_bytes` is the database's size on disk, if known.
pub fn metrics_text(snap: &PlantSnapshot, store_bytes: Option<u64>, now_ms: i64) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "sealwatch_up_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    let _ = writeln!(
        out,
        "sealwatch_up_seconds {}",
        (now_ms - snap.started_ms).max(0) as f64 / 1000.0
    );
    family(
        &mut out,
        "sealwatch_polls_total",
        "counter",
        "Polls attempted per device (degraded devices' skipped polls not counted).",
    );
    for d in &snap.devices {
        let _ = writeln!(
            out,
            "sealwatch_polls_total{{device=\"{}\",bus=\"{}\"}} {}",
            escape_label(&d.name),
            escape_label(&d.bus),
            d.polls
        );
    }
    family(
        &mut out,
        "sealwatch_request_errors_total",
        "counter",
        "Failed or discarded requests per device and kind (timeout, exception, io, bad_frame, crc, late_reply).",
    );
    for d in &snap.devices {
        for (kind, n) in [
            ("timeout", d.timeouts),
            ("exception", d.exceptions),
            ("io", d.io_errors),
            ("bad_frame", d.bad_frames),
            ("crc", d.crc_errors),
            ("late_reply", d.late_replies),
        ] {
            let _ = writeln!(
                out,
                "sealwatch_request_errors_total{{device=\"{}\",kind=\"{kind}\"}} {n}",
                escape_label(&d.name)
            );
        }
    }
    family(
        &mut out,
        "sealwatch_device_degraded",
        "gauge",
        "1 while a device is degraded or its bus disconnected.",
    );
    for d in &snap.devices {
        let _ = writeln!(
            out,
            "sealwatch_device_degraded{{device=\"{}\"}} {}",
            escape_label(&d.name),
            u8::from(d.degraded || !d.connected)
        );
    }
    family(
        &mut out,
        "sealwatch_devices_degraded",
        "gauge",
        "Devices now degraded or disconnected.",
    );
    let degraded = snap
        .devices
        .iter()
        .filter(|d| d.degraded || !d.connected)
        .count();
    let _ = writeln!(out, "sealwatch_devices_degraded {degraded}");
    family(
        &mut out,
        "sealwatch_device_last_ok_timestamp_seconds",
        "gauge",
        "Unix time of each device's last good poll.",
    );
    for d in &snap.devices {
        if let Some(t) = d.last_ok_ms {
            let _ = writeln!(
                out,
                "sealwatch_device_last_ok_timestamp_seconds{{device=\"{}\"}} {}",
                escape_label(&d.name),
                t as f64 / 1000.0
            );
        }
    }
    family(
        &mut out,
        "sealwatch_readings_total",
        "counter",
        "Readings taken (every point of every poll, faults included).",
    );
    let _ = writeln!(out, "sealwatch_readings_total {}", snap.readings_total);
    family(
        &mut out,
        "sealwatch_readings_per_second",
        "gauge",
        "Readings per second over the last few seconds.",
    );
    let _ = writeln!(out, "sealwatch_readings_per_second {}", snap.readings_per_s);
    family(
        &mut out,
        "sealwatch_bins",
        "gauge",
        "Bins per judged seal state.",
    );
    for state in crate::rules::SealState::ALL {
        let n = snap.bins.iter().filter(|(s, _)| *s == state).count();
        let _ = writeln!(out, "sealwatch_bins{{state=\"{}\"}} {n}", state.name());
    }
    if let Some(bytes) = store_bytes {
        family(
            &mut out,
            "sealwatch_store_bytes",
            "gauge",
            "Size of the database file and its write-ahead log.",
        );
        let _ = writeln!(out, "sealwatch_store_bytes {bytes}");
    }
    if let Some(backlog) = snap.evidence_backlog {
        family(
            &mut out,
            "sealwatch_evidence_backlog",
            "gauge",
            "Evidence records not yet acknowledged by the audit system.",
        );
        let _ = writeln!(out, "sealwatch_evidence_backlog {backlog}");
    }
    family(
        &mut out,
        "sealwatch_audit_protocol_errors_total",
        "counter",
        "Audit system answers that proved nothing or something false (claims beyond what was sent, wrong hashes, redirects, oversized bodies); the acknowledged position stayed.",
    );
    let _ = writeln!(
        out,
        "sealwatch_audit_protocol_errors_total {}",
        snap.audit.protocol_errors
    );
    let store = &snap.store;
    for (name, help, value) in [
        (
            "sealwatch_store_commit_failures_total",
            "Commits that failed.",
            store.commits_failed,
        ),
        (
            "sealwatch_store_sqlite_corrupt_total",
            "Failures SQLite reported as a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).",
            store.sqlite_corrupt,
        ),
        (
            "sealwatch_store_corrupt_rows_total",
            "Stored rows that did not decode (set aside, sealed as store_corruption records).",
            store.corrupt_rows,
        ),
        (
            "sealwatch_store_readings_dropped_total",
            "Readings dropped because commits kept failing and the buffer was full.",
            store.readings_dropped,
        ),
        (
            "sealwatch_store_readings_refused_total",
            "Readings not stored because the disk was full with only evidence and rule outputs left.",
            store.readings_refused,
        ),
        (
            "sealwatch_store_pruned_for_space_total",
            "Raw-reading rows pruned (oldest first) because the file system ran short of space.",
            store.pruned_for_space,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "sealwatch_store_committing",
        "gauge",
        "1 while commits succeed; 0 while they fail or the database file was replaced.",
    );
    let _ = writeln!(
        out,
        "sealwatch_store_committing {}",
        u8::from(store.committing())
    );
    for (name, help, on) in [
        (
            "sealwatch_store_full",
            "1 while readings are refused because the disk is full with only evidence left.",
            store.space_exhausted_since_ms.is_some(),
        ),
        (
            "sealwatch_store_retention_paused",
            "1 while retention pruning is paused because the wall clock jumped.",
            store.retention_paused.is_some(),
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {}", u8::from(on));
    }
    if let Some(latency) = snap.upload_latency_s {
        family(
            &mut out,
            "sealwatch_upload_latency_seconds",
            "gauge",
            "Time the last upload batch took to be acknowledged.",
        );
        let _ = writeln!(out, "sealwatch_upload_latency_seconds {latency}");
    }
    out
}

/// A warning that may repeat without end (garbage from a peer, a failing accept): logged at
/// most once per period, the repeats in between counted and told in the next line.
#[derive(Debug, Clone)]
pub struct Quiet {
    period: std::time::Duration,
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl Quiet {
    /// At most one line per `period`.
    pub fn new(period: std::time::Duration) -> Quiet {
        Quiet {
            period,
            last: None,
            unlogged: 0,
        }
    }

    /// One more occurrence at `now`: `Some(repeats not logged since the last line)` when it is
    /// to be logged, `None` when it is only counted.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.period)
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Occurrences counted since the last line (to tell when the source goes away).
    pub fn unlogged(&self) -> u64 {
        self.unlogged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_warning_is_one_line_a_period_with_the_count() {
        let t0 = std::time::Instant::now();
        let mut q = super::Quiet::new(std::time::Duration::from_secs(60));
        assert_eq!(q.allow(t0), Some(0));
        let logged: Vec<_> = (1..=2101)
            .filter_map(|i| q.allow(t0 + std::time::Duration::from_millis(i)))
            .collect();
        assert!(logged.is_empty());
        assert_eq!(q.unlogged(), 2101);
        assert_eq!(q.allow(t0 + std::time::Duration::from_secs(60)), Some(2101));
        assert_eq!(q.unlogged(), 0);
    }
    use crate::state::{DeviceHealth, PlantState};

    #[test]
    fn metrics_are_valid_exposition_lines_with_labels_escaped() {
        let state = PlantState::new(
            vec![DeviceHealth {
                name: "node \"1\"".into(),
                bus: "top".into(),
                polls: 7,
                timeouts: 2,
                connected: true,
                ..DeviceHealth::default()
            }],
            0,
            1_000,
        );
        state.set_evidence_backlog(Some(12));
        let text = metrics_text(&state.snapshot(), Some(4096), 11_000);
        assert!(text.contains("sealwatch_polls_total{device=\"node \\\"1\\\"\",bus=\"top\"} 7"));
        assert!(text.contains(
            "sealwatch_request_errors_total{device=\"node \\\"1\\\"\",kind=\"timeout\"} 2"
        ));
        assert!(text.contains("sealwatch_devices_degraded 0"));
        assert!(text.contains("sealwatch_store_bytes 4096"));
        assert!(text.contains("sealwatch_evidence_backlog 12"));
        assert!(text.contains("sealwatch_up_seconds 10"));
        assert!(!text.contains("sealwatch_upload_latency_seconds"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("sealwatch_"), "{line}");
        }
    }

    #[test]
    fn log_format_names() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(
            "journald".parse::<LogFormat>().unwrap(),
            LogFormat::Journald
        );
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
