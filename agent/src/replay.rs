//! Reading files for `sealwatch replay`: recorded readings in, the rules engine's outputs out.
//!
//! Formats (by file extension):
//!
//! - **JSON lines** (`.jsonl`, anything else): one object a line,
//!   `{"at_ms": 1767225600000, "point": "f1-b1-node/level_mm", "value": 812.0}`; instead of
//!   `value`, `"exception": 4` (a Modbus exception code) or `"fault": "timeout"` (`timeout`, `io`,
//!   `bad_frame`, `not_connected`, `degraded`); optional `"flag": "N"` (HJ 212 letter; by
//!   default N for a value, D for an exception, B for a fault).
//! - **CSV** (`.csv`): header `at_ms,point,value,flag`; `value` is a number, `exception:4` or
//!   `fault:timeout`; `flag` may be empty.
//!
//! `point` is `device/point` as in the site config. A value is flagged by the point's measuring
//! range as the agent does (T at or above `range_max`). Readings must be in the order they were
//! taken, as the agent records them; identical input gives byte-identical output.
//!
//! A JSON line may instead open or close a window, as `sealwatch maintenance` does live:
//! `{"at_ms": …, "window": "start", "target": "F1/NMHC", "kind": "calibration", "reason": "…",
//! "by": "…"}` or `{"at_ms": …, "window": "end", "target": "F1/NMHC", "by": "…"}`.

use std::path::{Path, PathBuf};

use sealwatch_firmware::modbus::ExceptionCode;
use serde::Deserialize;

use crate::model::PointTable;
use crate::model::{Fault, Flag, Outcome, Reading};
use crate::rules::WindowCommand;
use crate::rules::{Window, WindowKind};

/// A replay input that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line is not a reading.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReading {
    at_ms: i64,
    point: String,
    value: Option<f64>,
    exception: Option<u8>,
    fault: Option<String>,
    flag: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonWindow {
    at_ms: i64,
    window: String,
    target: String,
    kind: Option<String>,
    reason: Option<String>,
    by: String,
}

/// One line of a replay file.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayItem {
    /// A reading.
    Reading(Reading),
    /// A window opened or closed at `at_ms`.
    Window {
        /// When.
        at_ms: i64,
        /// What.
        command: WindowCommand,
    },
}

fn parse_window(line: &str) -> Result<ReplayItem, String> {
    let j: JsonWindow = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let command = match j.window.as_str() {
        "start" => {
            let kind = j.kind.as_deref().unwrap_or_default();
            WindowCommand::Start(Window {
                target: j.target,
                kind: WindowKind::parse(kind).ok_or_else(|| {
                    format!("unknown window kind '{kind}'; expected calibration, maintenance or shutdown")
                })?,
                reason: j.reason.unwrap_or_default(),
                by: j.by,
            })
        }
        "end" => WindowCommand::End {
            target: j.target,
            by: j.by,
        },
        other => return Err(format!("window '{other}' is neither start nor end")),
    };
    Ok(ReplayItem::Window {
        at_ms: j.at_ms,
        command,
    })
}

fn fault(name: &str) -> Option<Fault> {
    Some(match name {
        "timeout" => Fault::Timeout,
        "io" => Fault::Io,
        "bad_frame" => Fault::BadFrame,
        "not_connected" => Fault::NotConnected,
        "degraded" => Fault::Degraded,
        _ => return None,
    })
}

fn flag(letter: &str) -> Option<Flag> {
    Flag::ALL
        .into_iter()
        .find(|f| f.letter().to_string() == letter)
}

fn reading(
    points: &PointTable,
    at_ms: i64,
    point: &str,
    outcome: Outcome,
    flag_text: Option<&str>,
) -> Result<Reading, String> {
    let id = points.by_key(point).ok_or_else(|| {
        format!("unknown point '{point}' (expected device/point from the site config)")
    })?;
    let range = points
        .points
        .get(id.0 as usize)
        .map_or((None, None), |p| p.range);
    let mut r = Reading::new(at_ms, id, outcome, range);
    if let Some(text) = flag_text.filter(|t| !t.is_empty()) {
        r.flag = flag(text)
            .ok_or_else(|| format!("unknown flag '{text}'; expected one of N F M S D C T B"))?;
    }
    Ok(r)
}

fn parse_json(points: &PointTable, line: &str) -> Result<Reading, String> {
    let j: JsonReading = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let outcome = match (j.value, j.exception, j.fault.as_deref()) {
        (Some(v), None, None) => Outcome::Value(v),
        (None, Some(code), None) => Outcome::Exception(ExceptionCode::from_code(code)),
        (None, None, Some(name)) => {
            Outcome::Fault(fault(name).ok_or_else(|| format!("unknown fault '{name}'"))?)
        }
        _ => return Err("give exactly one of value, exception, fault".to_owned()),
    };
    reading(points, j.at_ms, &j.point, outcome, j.flag.as_deref())
}

fn parse_csv(points: &PointTable, line: &str) -> Result<Reading, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [at, point, value, rest @ ..] = fields.as_slice() else {
        return Err("expected at_ms,point,value,flag".to_owned());
    };
    let at_ms: i64 = at
        .parse()
        .map_err(|_| format!("at_ms '{at}' is not a whole number of ms"))?;
    let outcome = if let Some(code) = value.strip_prefix("exception:") {
        Outcome::Exception(ExceptionCode::from_code(
            code.parse()
                .map_err(|_| format!("bad exception code '{code}'"))?,
        ))
    } else if let Some(name) = value.strip_prefix("fault:") {
        Outcome::Fault(fault(name).ok_or_else(|| format!("unknown fault '{name}'"))?)
    } else {
        Outcome::Value(
            value
                .parse()
                .map_err(|_| format!("value '{value}' is not a number"))?,
        )
    };
    reading(points, at_ms, point, outcome, rest.first().copied())
}

/// Reads every line of a replay file: readings, and windows opened or closed.
pub fn read_replay(path: &Path, points: &PointTable) -> Result<Vec<ReplayItem>, ReplayError> {
    let text = crate::bounded::read_text(path, crate::bounded::REPLAY_BYTES).map_err(|source| {
        ReplayError::Read {
            path: path.to_owned(),
            source,
        }
    })?;
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (csv && i == 0 && line.starts_with("at_ms"))
        {
            continue;
        }
        let parsed = if csv {
            parse_csv(points, line).map(ReplayItem::Reading)
        } else if line.contains("\"window\"") {
            parse_window(line)
        } else {
            parse_json(points, line).map(ReplayItem::Reading)
        };
        out.push(parsed.map_err(|reason| ReplayError::Line {
            path: path.to_owned(),
            line: i + 1,
            reason,
        })?);
    }
    Ok(out)
}

/// Reads the readings of a replay file (windows left out).
pub fn read_readings(path: &Path, points: &PointTable) -> Result<Vec<Reading>, ReplayError> {
    Ok(read_replay(path, points)?
        .into_iter()
        .filter_map(|item| match item {
            ReplayItem::Reading(r) => Some(r),
            ReplayItem::Window { .. } => None,
        })
        .collect())
}

/// One reading as a replay JSON line (the inverse of the reader).
pub fn to_json_line(points: &PointTable, r: &Reading) -> String {
    let key = points
        .points
        .get(r.point.0 as usize)
        .map_or("?", |p| p.key.as_str());
    let what = match r.outcome {
        Outcome::Value(v) => format!(
            "\"value\":{}",
            serde_json::to_string(&v).unwrap_or_else(|_| "null".into())
        ),
        Outcome::Exception(code) => format!("\"exception\":{}", code.code()),
        Outcome::Fault(f) => format!(
            "\"fault\":\"{}\"",
            match f {
                Fault::Timeout => "timeout",
                Fault::Io => "io",
                Fault::BadFrame => "bad_frame",
                Fault::NotConnected => "not_connected",
                Fault::Degraded => "degraded",
            }
        ),
    };
    format!(
        "{{\"at_ms\":{},\"point\":\"{key}\",{what},\"flag\":\"{}\"}}",
        r.at_ms, r.flag
    )
}
