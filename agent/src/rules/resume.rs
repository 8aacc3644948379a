//! Starting again where the record left off. A day or month is summed from its hours; at a
//! restart those hours are in the record, not in memory. [`Seed`]s carry the closed hours (and
//! days) of the periods still open, read back from the stored rule outputs, into a new engine
//! ([`super::Engine::resume`]), so a restart at 10:00 does not cost the day its first ten hours,
//! and a day or month already summarised is not summarised again.
//!
//! Every stored body is checked as it is read: a body that does not parse, or lacks a field,
//! is an error naming the output and the field (the caller reports it; nothing is guessed).

use serde_json::Value;

pub use super::seal::BinHourSeed;
pub use super::voc::NmhcHourSeed;

/// The kinds of stored outputs a restart reads back.
pub const RESUME_KINDS: [&str; 6] = [
    "bin_hour",
    "bin_day",
    "bin_month",
    "nmhc_hour",
    "nmhc_day",
    "nmhc_month",
];

/// One closed period, from the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Seed {
    /// A closed hour of a bin.
    BinHour {
        /// `furnace/bin`.
        bin: String,
        /// Hour start, ms.
        hour_ms: i64,
        /// What it adds to its day and month.
        seed: BinHourSeed,
    },
    /// A closed hour of an analyzer.
    NmhcHour {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Hour start, ms.
        hour_ms: i64,
        /// What it adds to its day and month.
        seed: NmhcHourSeed,
    },
    /// A closed day of an analyzer: its value counts in the month.
    NmhcDay {
        /// `furnace/analyzer`.
        analyzer: String,
        /// Local midnight, ms.
        day_ms: i64,
        /// (avg, min, max, saturated) of a valid day.
        valid: Option<(f64, f64, f64, bool)>,
    },
    /// A day or month already summarised (not to be summarised again).
    Closed {
        /// `furnace/bin` or `furnace/analyzer`.
        subject: String,
        /// Whether a month (else a day).
        month: bool,
        /// Whether of an analyzer (else of a bin).
        analyzer: bool,
        /// Its start, ms.
        start_ms: i64,
    },
}

/// Why a stored output cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {kind} output: {why}")]
pub struct SeedError {
    /// Its kind.
    pub kind: String,
    /// What is wrong.
    pub why: String,
}

fn field<'a>(kind: &str, body: &'a Value, name: &str) -> Result<&'a Value, SeedError> {
    body.get(name).ok_or_else(|| SeedError {
        kind: kind.to_owned(),
        why: format!("no field '{name}'"),
    })
}

fn int(kind: &str, body: &Value, name: &str) -> Result<i64, SeedError> {
    field(kind, body, name)?.as_i64().ok_or_else(|| SeedError {
        kind: kind.to_owned(),
        why: format!("'{name}' is not a whole number"),
    })
}

fn count(kind: &str, body: &Value, name: &str) -> Result<u32, SeedError> {
    u32::try_from(int(kind, body, name)?).map_err(|_| SeedError {
        kind: kind.to_owned(),
        why: format!("'{name}' is not a count"),
    })
}

fn flag(kind: &str, body: &Value, name: &str) -> Result<bool, SeedError> {
    field(kind, body, name)?.as_bool().ok_or_else(|| SeedError {
        kind: kind.to_owned(),
        why: format!("'{name}' is not true or false"),
    })
}

fn text(kind: &str, body: &Value, name: &str) -> Result<String, SeedError> {
    field(kind, body, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| SeedError {
            kind: kind.to_owned(),
            why: format!("'{name}' is not text"),
        })
}

/// (avg, min, max, saturated) when `avg` is a number; saturated from the flag (T).
fn value(kind: &str, body: &Value) -> Result<Option<(f64, f64, f64, bool)>, SeedError> {
    let number = |name: &str| body.get(name).and_then(Value::as_f64);
    let Some(avg) = number("avg") else {
        return Ok(None);
    };
    let saturated = text(kind, body, "flag")? == "T";
    Ok(Some((
        avg,
        number("min").unwrap_or(avg),
        number("max").unwrap_or(avg),
        saturated,
    )))
}

impl Seed {
    /// The seed a stored output of `kind` gives (`None` for kinds that carry none).
    pub fn from_stored(kind: &str, body: &str) -> Result<Option<Seed>, SeedError> {
        if !RESUME_KINDS.contains(&kind) {
            return Ok(None);
        }
        let body: Value = serde_json::from_str(body).map_err(|e| SeedError {
            kind: kind.to_owned(),
            why: format!("not JSON: {e}"),
        })?;
        let body = &body;
        Ok(Some(match kind {
            "bin_hour" => Seed::BinHour {
                bin: text(kind, body, "bin")?,
                hour_ms: int(kind, body, "hour_ms")?,
                seed: BinHourSeed {
                    state_ms: [
                        int(kind, body, "sealed_ms")?,
                        int(kind, body, "charging_ms")?,
                        int(kind, body, "breach_ms")?,
                        int(kind, body, "unknown_ms")?,
                        int(kind, body, "suspect_ms")?,
                        int(kind, body, "maintenance_ms")?,
                    ],
                    outcomes: [
                        count(kind, body, "cycles_held")?,
                        count(kind, body, "cycles_lost")?,
                        count(kind, body, "cycles_interrupted")?,
                        count(kind, body, "cycles_suspect")?,
                        count(kind, body, "cycles_reconciled")?,
                    ],
                    breaches: count(kind, body, "breaches")?,
                    valid: flag(kind, body, "valid")?,
                    interrupted: flag(kind, body, "interrupted")?,
                },
            },
            "nmhc_hour" => Seed::NmhcHour {
                analyzer: text(kind, body, "analyzer")?,
                hour_ms: int(kind, body, "hour_ms")?,
                seed: NmhcHourSeed {
                    valid: value(kind, body)?,
                    exceeded: flag(kind, body, "exceeded")?,
                    single_exceedances: count(kind, body, "single_exceedances")?,
                    interrupted: flag(kind, body, "interrupted")?,
                },
            },
            "nmhc_day" => Seed::NmhcDay {
                analyzer: text(kind, body, "analyzer")?,
                day_ms: int(kind, body, "day_ms")?,
                valid: value(kind, body)?,
            },
            "bin_day" | "bin_month" => Seed::Closed {
                subject: text(kind, body, "bin")?,
                month: kind == "bin_month",
                analyzer: false,
                start_ms: int(kind, body, "start_ms")?,
            },
            _ => Seed::Closed {
                subject: text(kind, body, "analyzer")?,
                month: true,
                analyzer: true,
                start_ms: int(kind, body, "month_ms")?,
            },
        }))
    }
}
