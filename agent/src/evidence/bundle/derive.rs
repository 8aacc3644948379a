//! The files of a bundle that are derived from its records: the CSV tables and the report.
//!
//! One function makes them, record by record ([`Derivation::push`]), from nothing but the
//! records and the signed manifest's header; `export` writes what it makes and `verify` makes
//! them again and compares byte for byte, so a table or a report that says something the
//! records do not is caught, row by row. Times are RFC 3339 to the second in the site's zone;
//! CSV goes through the `csv` crate (quoted where needed, nothing rewritten).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono_tz::Tz;
use serde_json::Value;

use super::Manifest;
use crate::evidence::EvidenceRecord;
use crate::rules::time::{local_seconds, local_text};

/// The derived files, in the order they are written.
pub const DERIVED: [&str; 5] = [
    "cycles.csv",
    "breaches.csv",
    "nmhc_hourly.csv",
    "completeness.csv",
    "report.html",
];

const CYCLES: &[&str] = &[
    "bin",
    "started",
    "ended",
    "lid_opened",
    "lid_closed",
    "gate_opened",
    "gate_closed",
    "level_at_gate_open_mm",
    "seal_held",
    "interrupted",
    "reconciled",
    "seq",
];
const BREACHES: &[&str] = &[
    "bin",
    "started",
    "ended",
    "duration_s",
    "signature",
    "ended_by_unknown",
    "open_at_period_end",
    "started_seq",
    "ended_seq",
];
const HOURLY: &[&str] = &[
    "analyzer",
    "hour",
    "valid_minutes",
    "avg_mg_m3",
    "min_mg_m3",
    "max_mg_m3",
    "flag",
    "hourly_limit_mg_m3",
    "exceeded",
    "single_exceedances",
    "peak_mg_m3",
    "seq",
];
const COMPLETENESS: &[&str] = &[
    "bin",
    "hour",
    "sealed_s",
    "charging_s",
    "breach_s",
    "unknown_s",
    "cycles",
    "cycles_held",
    "breaches",
    "cycle_compliance",
    "time_compliance",
    "completeness",
    "valid",
    "seq",
];

/// A number in a canonical body (integers stay numbers, decimals are strings).
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A body value as a CSV field: text as it is, numbers and booleans as JSON writes them.
fn field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A CSV table being written.
struct Table(csv::Writer<Vec<u8>>);

impl Table {
    fn new(header: &[&str]) -> Table {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let _ = w.write_record(header);
        Table(w)
    }

    fn row(&mut self, fields: &[String]) {
        // Writing into memory cannot fail.
        let _ = self.0.write_record(fields);
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap_or_default()
    }
}

/// An open breach: subject, start, signature, seq of its start record.
type OpenBreach = (i64, String, u64);

/// Derives the tables and report from records fed in chain order.
pub struct Derivation {
    tz: Tz,
    cycles: Table,
    breaches: Table,
    hourly: Table,
    completeness: Table,
    open_breaches: BTreeMap<String, OpenBreach>,
    rulesets: BTreeSet<String>,
    timeline: BTreeMap<String, Vec<(i64, String)>>,
    hours: BTreeMap<String, Vec<(i64, Option<f64>, f64)>>,
    bin_hours: BTreeMap<String, Vec<f64>>,
    totals: Totals,
    /// Windows, analyzer states, clock jumps and store events, in chain order: (time, what,
    /// subject, details).
    events: Vec<(i64, String, String, String)>,
}

/// Counts for the report's summary line.
#[derive(Default)]
struct Totals {
    cycles: u64,
    held: u64,
    breaches: u64,
    exceeded: u64,
}

impl Derivation {
    /// Starts a derivation for a site in zone `tz`.
    pub fn new(tz: Tz) -> Derivation {
        Derivation {
            tz,
            cycles: Table::new(CYCLES),
            breaches: Table::new(BREACHES),
            hourly: Table::new(HOURLY),
            completeness: Table::new(COMPLETENESS),
            open_breaches: BTreeMap::new(),
            rulesets: BTreeSet::new(),
            timeline: BTreeMap::new(),
            hours: BTreeMap::new(),
            bin_hours: BTreeMap::new(),
            totals: Totals::default(),
            events: Vec::new(),
        }
    }

    fn time(&self, v: &Value) -> String {
        num(v).map_or(String::new(), |ms| local_seconds(self.tz, ms as i64))
    }

    /// Takes the next record of the chain.
    pub fn push(&mut self, r: &EvidenceRecord) {
        let b: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        if let Some(rs) = b["ruleset"].as_str() {
            if !self.rulesets.contains(rs) {
                self.rulesets.insert(rs.to_owned());
            }
        }
        let secs = |v: &Value| num(v).map_or(String::new(), |ms| format!("{:.0}", ms / 1000.0));
        match r.kind.as_str() {
            "charging_cycle" => {
                self.totals.cycles += 1;
                if b["seal_held"] == Value::Bool(true) {
                    self.totals.held += 1;
                }
                let row = vec![
                    r.subject.clone(),
                    self.time(&b["started_ms"]),
                    self.time(&b["ended_ms"]),
                    self.time(&b["lid_opened_ms"]),
                    self.time(&b["lid_closed_ms"]),
                    self.time(&b["gate_opened_ms"]),
                    self.time(&b["gate_closed_ms"]),
                    field(&b["level_at_gate_open_mm"]),
                    field(&b["seal_held"]),
                    field(&b["interrupted"]),
                    field(&b["reconciled"]),
                    r.seq.to_string(),
                ];
                self.cycles.row(&row);
            }
            "breach_started" => {
                self.totals.breaches += 1;
                let at = num(&b["at_ms"]).map_or(r.at_ms, |v| v as i64);
                self.open_breaches
                    .insert(r.subject.clone(), (at, field(&b["signature"]), r.seq));
            }
            "breach_ended" => {
                let started_seq = self
                    .open_breaches
                    .remove(&r.subject)
                    .map_or(String::new(), |(_, _, seq)| seq.to_string());
                let row = vec![
                    r.subject.clone(),
                    self.time(&b["started_ms"]),
                    self.time(&b["at_ms"]),
                    secs(&b["duration_ms"]),
                    field(&b["signature"]),
                    field(&b["ended_by_unknown"]),
                    "false".to_owned(),
                    started_seq,
                    r.seq.to_string(),
                ];
                self.breaches.row(&row);
            }
            "seal_state" => self.timeline.entry(r.subject.clone()).or_default().push((
                num(&b["at_ms"]).map_or(r.at_ms, |v| v as i64),
                b["to"].as_str().unwrap_or("unknown").to_owned(),
            )),
            "nmhc_hour" => {
                if b["exceeded"] == Value::Bool(true) {
                    self.totals.exceeded += 1;
                }
                self.hours.entry(r.subject.clone()).or_default().push((
                    num(&b["hour_ms"]).map_or(0, |v| v as i64),
                    num(&b["avg"]),
                    num(&b["hourly_limit"]).unwrap_or(0.0),
                ));
                let row = vec![
                    r.subject.clone(),
                    self.time(&b["hour_ms"]),
                    field(&b["valid_minutes"]),
                    field(&b["avg"]),
                    field(&b["min"]),
                    field(&b["max"]),
                    field(&b["flag"]),
                    field(&b["hourly_limit"]),
                    field(&b["exceeded"]),
                    field(&b["single_exceedances"]),
                    field(&b["peak"]),
                    r.seq.to_string(),
                ];
                self.hourly.row(&row);
            }
            "bin_hour" => {
                self.bin_hours
                    .entry(r.subject.clone())
                    .or_default()
                    .push(num(&b["completeness"]).unwrap_or(0.0));
                let row = vec![
                    r.subject.clone(),
                    self.time(&b["hour_ms"]),
                    secs(&b["sealed_ms"]),
                    secs(&b["charging_ms"]),
                    secs(&b["breach_ms"]),
                    secs(&b["unknown_ms"]),
                    field(&b["cycles"]),
                    field(&b["cycles_held"]),
                    field(&b["breaches"]),
                    field(&b["cycle_compliance"]),
                    field(&b["time_compliance"]),
                    field(&b["completeness"]),
                    field(&b["valid"]),
                    r.seq.to_string(),
                ];
                self.completeness.row(&row);
            }
            "window_started" | "window_ended" | "window_overdue" | "analyzer_state"
            | "clock_jump" | "clock_implausible" | "store_corruption" | "new_chain"
            | "device_fault" | "device_recovered" => {
                let details = match r.kind.as_str() {
                    "window_started" => format!(
                        "{} — {} ({})",
                        field(&b["window"]),
                        field(&b["reason"]),
                        field(&b["by"])
                    ),
                    "window_ended" => format!(
                        "{} opened {} by {}, closed by {}",
                        field(&b["window"]),
                        self.time(&b["started_ms"]),
                        field(&b["opened_by"]),
                        field(&b["by"])
                    ),
                    "window_overdue" => format!(
                        "{} open since {} by {}",
                        field(&b["window"]),
                        self.time(&b["started_ms"]),
                        field(&b["opened_by"])
                    ),
                    "analyzer_state" => format!(
                        "{} → {} (status {})",
                        field(&b["from"]),
                        field(&b["to"]),
                        field(&b["status"])
                    ),
                    "clock_jump" => format!(
                        "{} → {} ({} s)",
                        self.time(&b["from_ms"]),
                        self.time(&b["to_ms"]),
                        num(&b["size_ms"]).map_or(0, |v| (v / 1000.0) as i64)
                    ),
                    "store_corruption" => format!(
                        "{} row {}: {}",
                        field(&b["table"]),
                        field(&b["row"]),
                        field(&b["error"])
                    ),
                    "new_chain" => format!("{} ({})", field(&b["reason"]), field(&b["by"])),
                    "device_fault" => field(&b["problem"]),
                    _ => String::new(),
                };
                self.events
                    .push((r.at_ms, r.kind.clone(), r.subject.clone(), details));
            }
            _ => {}
        }
    }

    /// The rule-set versions the records name, in order.
    pub fn rulesets(&self) -> Vec<String> {
        self.rulesets.iter().cloned().collect()
    }

    /// The derived files ([`DERIVED`], in that order), with the manifest's header for the
    /// report (its `files` and `signature` are not used).
    pub fn finish(mut self, manifest: &Manifest) -> Vec<(&'static str, Vec<u8>)> {
        // Breaches still open at the period's end, in the order they began.
        let mut open: Vec<(String, OpenBreach)> = std::mem::take(&mut self.open_breaches)
            .into_iter()
            .collect();
        open.sort_by_key(|(_, (_, _, seq))| *seq);
        for (bin, (started, signature, seq)) in open {
            let row = vec![
                bin,
                local_seconds(self.tz, started),
                String::new(),
                String::new(),
                signature,
                String::new(),
                "true".to_owned(),
                seq.to_string(),
                String::new(),
            ];
            self.breaches.row(&row);
        }
        let report = self.report(manifest);
        vec![
            ("cycles.csv", self.cycles.bytes()),
            ("breaches.csv", self.breaches.bytes()),
            ("nmhc_hourly.csv", self.hourly.bytes()),
            ("completeness.csv", self.completeness.bytes()),
            ("report.html", report.into_bytes()),
        ]
    }

    /// The human report: summary, seal-state timelines, NMHC hourly averages, completeness.
    fn report(&self, m: &Manifest) -> String {
        let tz = self.tz;
        let span = (m.to_ms.saturating_sub(m.from_ms)).max(1) as f64;
        let x = |ms: f64| ((ms - m.from_ms as f64) / span * 1000.0).clamp(0.0, 1000.0);
        let mut svg = String::new();
        let rows = self.timeline.len().max(1);
        let _ = write!(svg, "<svg viewBox=\"0 0 1100 {}\" width=\"100%\" role=\"img\" aria-label=\"seal state timeline\">", rows * 24 + 10);
        for (i, (bin, changes)) in self.timeline.iter().enumerate() {
            let y = i * 24 + 4;
            let _ = write!(
                svg,
                "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
                y + 14,
                esc(bin)
            );
            for (k, (at, state)) in changes.iter().enumerate() {
                let end = changes.get(k + 1).map_or(m.to_ms, |n| n.0) as f64;
                let at = *at as f64;
                let colour = match state.as_str() {
                    "sealed" => "#2e7d32",
                    "charging" => "#1565c0",
                    "breach" => "#c62828",
                    _ => "#9e9e9e",
                };
                let _ = write!(svg, "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"18\" fill=\"{colour}\"><title>{} {}</title></rect>", 90.0 + x(at), (x(end) - x(at)).max(0.5), esc(state), local_text(tz, at as i64));
            }
        }
        svg.push_str("</svg>");
        let mut nmhc = String::new();
        for (analyzer, list) in &self.hours {
            let top = list
                .iter()
                .filter_map(|h| h.1)
                .chain(list.iter().map(|h| h.2))
                .fold(1.0f64, f64::max)
                * 1.1;
            let _ = write!(nmhc, "<h3>{}</h3><svg viewBox=\"0 0 1100 220\" width=\"100%\" role=\"img\" aria-label=\"NMHC hourly averages\">", esc(analyzer));
            let w = (1000.0 / list.len().max(1) as f64).max(2.0);
            for (i, (hour, avg, limit)) in list.iter().enumerate() {
                let px = 90.0 + i as f64 * w;
                if let Some(a) = avg {
                    let h = a / top * 200.0;
                    let colour = if a > limit { "#c62828" } else { "#1565c0" };
                    let _ = write!(nmhc, "<rect x=\"{px:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} {a:.2} mg/m³</title></rect>", 210.0 - h, w * 0.8, local_text(tz, *hour));
                }
                let ly = 210.0 - limit / top * 200.0;
                let _ = write!(nmhc, "<line x1=\"{px:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"#000\" stroke-dasharray=\"4 2\"/>", px + w);
            }
            nmhc.push_str("<text x=\"0\" y=\"14\" font-size=\"12\">mg/m³</text></svg><p>Bars: valid hourly averages (red above the limit); dashed: the hourly limit. Hours without 45 valid minutes have no bar.</p>");
        }
        let mut comp = String::from("<table><tr><th>bin</th><th>hours</th><th>mean completeness</th><th>valid hours (≥ 45 min known)</th></tr>");
        for (bin, list) in &self.bin_hours {
            let mean = list.iter().sum::<f64>() / list.len().max(1) as f64;
            let valid = list.iter().filter(|c| **c >= 0.75).count();
            let _ = write!(
                comp,
                "<tr><td>{}</td><td>{}</td><td>{:.1} %</td><td>{valid}</td></tr>",
                esc(bin),
                list.len(),
                mean * 100.0
            );
        }
        comp.push_str("</table>");
        let mut events = String::from(
            "<table><tr><th>time</th><th>what</th><th>subject</th><th>details</th></tr>",
        );
        for (at, kind, subject, details) in &self.events {
            let _ = write!(
                events,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                local_seconds(tz, *at),
                esc(kind),
                esc(subject),
                esc(details)
            );
        }
        events.push_str("</table>");
        let t = &self.totals;
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sealwatch audit bundle — {plant}</title>\
<style>body{{font-family:sans-serif;margin:2rem;max-width:1100px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem}}</style></head><body>\
<h1>Furnace-top seal evidence — {plant}</h1>\
<p>Site {site}, permit {permit} ({class}). Period {from} to {to}. Records {first}–{last}; chain head <code>{head}</code>. Rule sets: {rulesets}.</p>\
<p>Signed with the site key whose fingerprint is <code>{fingerprint}</code>.</p>\
<p>Charging cycles: {cycles}, of which held the seal: {held}. Breaches: {breaches}. NMHC hours above the hourly limit: {exceeded}.</p>\
<h2>Seal state per bin</h2><p>Green sealed, blue charging with the seal held, red breach, grey unknown (no valid data).</p>{svg}\
<h2>NMHC hourly averages against the limit</h2>{nmhc}<h2>Data completeness</h2>{comp}\
<h2>Calibration, maintenance and shutdown windows, instrument states, clock jumps, device and store events</h2>{events}\
<p>Check this bundle against the site's key from the audit system: <code>sealwatch evidence verify --bundle &lt;this folder&gt; --key-fingerprint {fingerprint}</code>. The tables are in the CSV files beside this report; verification derives them and this report again from the records and fails on any difference.</p></body></html>",
            plant = esc(&m.plant),
            site = esc(&m.site),
            permit = esc(&m.permit_number),
            class = esc(&m.permit_class),
            from = local_text(tz, m.from_ms),
            to = local_text(tz, m.to_ms),
            first = m.first_seq,
            last = m.last_seq,
            head = esc(&m.head_hash),
            rulesets = esc(&m.rulesets.join(", ")),
            fingerprint = esc(&m.key_fingerprint),
            cycles = t.cycles,
            held = t.held,
            breaches = t.breaches,
            exceeded = t.exceeded,
        )
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_keep_commas_quotes_and_chinese_names_and_read_back_the_same() {
        let mut table = Table::new(&["bin", "note"]);
        let tricky = [
            "1号炉/2号煤仓".to_owned(),
            "lid \"A\", then gate,\nthen level".to_owned(),
        ];
        table.row(&tricky);
        let bytes = table.bytes();
        let mut reader = csv::Reader::from_reader(&bytes[..]);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].iter().collect::<Vec<_>>(), tricky.to_vec());
    }
}
