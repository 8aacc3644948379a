//! Audit bundles: `sealwatch evidence export` writes a folder an auditor can check and read
//! without sealwatch:
//!
//! - `records.jsonl`: the evidence records of the period, one JSON object a line, in chain order;
//! - `public_key.txt`: the site's Ed25519 public key (hex);
//! - `manifest.json`: site and permit, the period, the first and last sequence numbers, the hash
//!   before the first record (`prev_hash`) and the chain head (`head_hash`), the rule-set
//!   versions in force, and the SHA-256 of every other file;
//! - `cycles.csv`, `breaches.csv`, `nmhc_hourly.csv`, `completeness.csv`: tables for auditors;
//! - `report.html`: a report for people, with a seal-state timeline per bin, NMHC hourly averages
//!   against the limit, and data completeness, as inline SVG (no scripts, no network).
//!
//! `sealwatch evidence verify --bundle DIR` checks the files against the manifest and the records
//! against the chain, from `prev_hash` to `head_hash`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::verify::{check_chain, head_before, ChainError};
use super::{EvidenceRecord, Head};
use crate::config::SiteConfig;
use crate::rules::time::local_text;

/// Bundle problems; messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not what the manifest says.
    #[error("{path}: {why}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The records do not form a valid chain.
    #[error("{path}: {source}")]
    Chain {
        /// File.
        path: PathBuf,
        /// First problem.
        source: ChainError,
    },
    /// Nothing to export.
    #[error("no evidence between {from} and {to}")]
    Empty {
        /// Period start (local).
        from: String,
        /// Period end (local).
        to: String,
    },
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `sealwatch-bundle-v1`.
    pub format: String,
    /// Site id.
    pub site: String,
    /// Plant name.
    pub plant: String,
    /// Permit number.
    pub permit_number: String,
    /// Permit class.
    pub permit_class: String,
    /// Period start, ms.
    pub from_ms: i64,
    /// Period end, ms.
    pub to_ms: i64,
    /// First record.
    pub first_seq: u64,
    /// Last record.
    pub last_seq: u64,
    /// Hash before the first record, hex.
    pub prev_hash: String,
    /// Hash of the last record (the chain head of the bundle), hex.
    pub head_hash: String,
    /// Rule-set versions found in the records.
    pub rulesets: Vec<String>,
    /// SHA-256 of each file, hex, by name.
    pub files: BTreeMap<String, String>,
}

fn write(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    files: &mut BTreeMap<String, String>,
) -> Result<(), BundleError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|source| BundleError::Io { path, source })?;
    files.insert(name.to_owned(), hex::encode(Sha256::digest(bytes)));
    Ok(())
}

fn body(r: &EvidenceRecord) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// A number in a canonical body (integers stay numbers, decimals are strings).
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.replace(',', ";"),
        other => other.to_string(),
    }
}

/// Writes a bundle of `records` (consecutive, in chain order) into `dir`, reporting progress.
pub fn export(
    config: &SiteConfig,
    records: &[EvidenceRecord],
    public_key: &str,
    from_ms: i64,
    to_ms: i64,
    dir: &Path,
    progress: &dyn Fn(u64),
) -> Result<Manifest, BundleError> {
    let tz = config.site.time_zone;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(BundleError::Empty {
            from: local_text(tz, from_ms),
            to: local_text(tz, to_ms),
        });
    };
    std::fs::create_dir_all(dir).map_err(|source| BundleError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files = BTreeMap::new();
    let mut jsonl = String::new();
    let mut rulesets = std::collections::BTreeSet::new();
    let mut cycles = String::from("bin,started,ended,lid_opened,lid_closed,gate_opened,gate_closed,level_at_gate_open_mm,seal_held,interrupted,reconciled,seq\n");
    let mut breaches =
        String::from("bin,started,ended,duration_s,signature,ended_by_unknown,seq\n");
    let mut hourly = String::from("analyzer,hour,valid_minutes,avg_mg_m3,min_mg_m3,max_mg_m3,flag,hourly_limit_mg_m3,exceeded,single_exceedances,peak_mg_m3,seq\n");
    let mut completeness = String::from("bin,hour,sealed_s,charging_s,breach_s,unknown_s,cycles,cycles_held,breaches,cycle_compliance,time_compliance,completeness,valid,seq\n");
    let t = |v: &Value| num(v).map_or(String::new(), |ms| local_text(tz, ms as i64));
    let secs = |v: &Value| num(v).map_or(String::new(), |ms| format!("{:.0}", ms / 1000.0));
    for (i, r) in records.iter().enumerate() {
        jsonl.push_str(&serde_json::to_string(r).unwrap_or_default());
        jsonl.push('\n');
        let b = body(r);
        if let Some(rs) = b["ruleset"].as_str() {
            rulesets.insert(rs.to_owned());
        }
        match r.kind.as_str() {
            "charging_cycle" => {
                let _ = writeln!(
                    cycles,
                    "{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.subject,
                    t(&b["started_ms"]),
                    t(&b["ended_ms"]),
                    t(&b["lid_opened_ms"]),
                    t(&b["lid_closed_ms"]),
                    t(&b["gate_opened_ms"]),
                    t(&b["gate_closed_ms"]),
                    csv_field(&b["level_at_gate_open_mm"]),
                    csv_field(&b["seal_held"]),
                    csv_field(&b["interrupted"]),
                    csv_field(&b["reconciled"]),
                    r.seq
                );
            }
            "breach_ended" => {
                let _ = writeln!(
                    breaches,
                    "{},{},{},{},{},{},{}",
                    r.subject,
                    t(&b["started_ms"]),
                    t(&b["at_ms"]),
                    secs(&b["duration_ms"]),
                    csv_field(&b["signature"]),
                    csv_field(&b["ended_by_unknown"]),
                    r.seq
                );
            }
            "nmhc_hour" => {
                let _ = writeln!(
                    hourly,
                    "{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.subject,
                    t(&b["hour_ms"]),
                    csv_field(&b["valid_minutes"]),
                    csv_field(&b["avg"]),
                    csv_field(&b["min"]),
                    csv_field(&b["max"]),
                    csv_field(&b["flag"]),
                    csv_field(&b["hourly_limit"]),
                    csv_field(&b["exceeded"]),
                    csv_field(&b["single_exceedances"]),
                    csv_field(&b["peak"]),
                    r.seq
                );
            }
            "bin_hour" => {
                let _ = writeln!(
                    completeness,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.subject,
                    t(&b["hour_ms"]),
                    secs(&b["sealed_ms"]),
                    secs(&b["charging_ms"]),
                    secs(&b["breach_ms"]),
                    secs(&b["unknown_ms"]),
                    csv_field(&b["cycles"]),
                    csv_field(&b["cycles_held"]),
                    csv_field(&b["breaches"]),
                    csv_field(&b["cycle_compliance"]),
                    csv_field(&b["time_compliance"]),
                    csv_field(&b["completeness"]),
                    csv_field(&b["valid"]),
                    r.seq
                );
            }
            _ => {}
        }
        if i % 1000 == 0 {
            progress(i as u64);
        }
    }
    write(dir, "records.jsonl", jsonl.as_bytes(), &mut files)?;
    write(
        dir,
        "public_key.txt",
        format!("{public_key}\n").as_bytes(),
        &mut files,
    )?;
    write(dir, "cycles.csv", cycles.as_bytes(), &mut files)?;
    write(dir, "breaches.csv", breaches.as_bytes(), &mut files)?;
    write(dir, "nmhc_hourly.csv", hourly.as_bytes(), &mut files)?;
    write(dir, "completeness.csv", completeness.as_bytes(), &mut files)?;
    let manifest = Manifest {
        format: "sealwatch-bundle-v1".to_owned(),
        site: config.site.id.clone(),
        plant: config.site.name.clone(),
        permit_number: config.site.permit_number.clone(),
        permit_class: format!("{:?}", config.site.permit_class).to_lowercase(),
        from_ms,
        to_ms,
        first_seq: first.seq,
        last_seq: last.seq,
        prev_hash: first.prev_hash.clone(),
        head_hash: last.hash.clone(),
        rulesets: rulesets.into_iter().collect(),
        files: BTreeMap::new(),
    };
    let report = report_html(config, &manifest, records);
    write(dir, "report.html", report.as_bytes(), &mut files)?;
    progress(records.len() as u64);
    let manifest = Manifest { files, ..manifest };
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    let path = dir.join("manifest.json");
    std::fs::write(&path, text).map_err(|source| BundleError::Io { path, source })?;
    Ok(manifest)
}

/// Checks a bundle: file hashes, then the chain from the manifest's `prev_hash` to `head_hash`.
/// Returns the manifest and the number of records checked.
pub fn verify_bundle(dir: &Path) -> Result<(Manifest, usize), BundleError> {
    let read = |name: &str| -> Result<Vec<u8>, BundleError> {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| BundleError::Io { path, source })
    };
    let manifest_path = dir.join("manifest.json");
    let manifest: Manifest =
        serde_json::from_slice(&read("manifest.json")?).map_err(|e| BundleError::Invalid {
            path: manifest_path.clone(),
            why: e.to_string(),
        })?;
    for (name, expected) in &manifest.files {
        let actual = hex::encode(Sha256::digest(read(name)?));
        if &actual != expected {
            return Err(BundleError::Invalid { path: dir.join(name), why: format!("SHA-256 {actual} differs from the manifest's {expected} (the file was changed)") });
        }
    }
    let key_path = dir.join("public_key.txt");
    let key = super::sign::parse_public(&String::from_utf8_lossy(&read("public_key.txt")?))
        .map_err(|why| BundleError::Invalid {
            path: key_path,
            why,
        })?;
    let records_path = dir.join("records.jsonl");
    let text = String::from_utf8_lossy(&read("records.jsonl")?).into_owned();
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: EvidenceRecord = serde_json::from_str(line).map_err(|e| BundleError::Invalid {
            path: records_path.clone(),
            why: format!("line {}: {e}", i + 1),
        })?;
        records.push(r);
    }
    let first = records.first().ok_or_else(|| BundleError::Invalid {
        path: records_path.clone(),
        why: "no records".to_owned(),
    })?;
    let start = head_before(first)
        .filter(|_| first.prev_hash == manifest.prev_hash)
        .ok_or_else(|| BundleError::Invalid {
            path: records_path.clone(),
            why: format!(
                "the first record ({}) does not start where the manifest says (prev_hash {})",
                first.seq, manifest.prev_hash
            ),
        })?;
    let head: Head = check_chain(&manifest.site, &key, start, &records).map_err(|source| {
        BundleError::Chain {
            path: records_path.clone(),
            source,
        }
    })?;
    if hex::encode(head.hash) != manifest.head_hash || head.seq != manifest.last_seq {
        return Err(BundleError::Invalid {
            path: manifest_path,
            why: format!(
                "the records end at {} {}, the manifest says {} {}",
                head.seq,
                hex::encode(head.hash),
                manifest.last_seq,
                manifest.head_hash
            ),
        });
    }
    Ok((manifest, records.len()))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The human report: summary, seal-state timelines, NMHC hourly averages, completeness.
fn report_html(config: &SiteConfig, m: &Manifest, records: &[EvidenceRecord]) -> String {
    let tz = config.site.time_zone;
    let span = (m.to_ms - m.from_ms).max(1) as f64;
    let x = |ms: f64| ((ms - m.from_ms as f64) / span * 1000.0).clamp(0.0, 1000.0);
    // Seal-state timelines: segments between state changes.
    let mut timeline: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    let mut hours: BTreeMap<String, Vec<(f64, Option<f64>, f64)>> = BTreeMap::new();
    let mut completeness: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let (mut cycles, mut held, mut breaches, mut exceeded) = (0u64, 0u64, 0u64, 0u64);
    for r in records {
        let b = body(r);
        match r.kind.as_str() {
            "seal_state" => timeline.entry(r.subject.clone()).or_default().push((
                num(&b["at_ms"]).unwrap_or(0.0),
                b["to"].as_str().unwrap_or("unknown").to_owned(),
            )),
            "nmhc_hour" => {
                if b["exceeded"] == Value::Bool(true) {
                    exceeded += 1;
                }
                hours.entry(r.subject.clone()).or_default().push((
                    num(&b["hour_ms"]).unwrap_or(0.0),
                    num(&b["avg"]),
                    num(&b["hourly_limit"]).unwrap_or(0.0),
                ));
            }
            "bin_hour" => completeness.entry(r.subject.clone()).or_default().push((
                num(&b["hour_ms"]).unwrap_or(0.0),
                num(&b["completeness"]).unwrap_or(0.0),
            )),
            "charging_cycle" => {
                cycles += 1;
                if b["seal_held"] == Value::Bool(true) {
                    held += 1;
                }
            }
            "breach_started" => breaches += 1,
            _ => {}
        }
    }
    let mut svg = String::new();
    let rows = timeline.len().max(1);
    let _ = write!(svg, "<svg viewBox=\"0 0 1100 {}\" width=\"100%\" role=\"img\" aria-label=\"seal state timeline\">", rows * 24 + 10);
    for (i, (bin, changes)) in timeline.iter().enumerate() {
        let y = i * 24 + 4;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 14,
            esc(bin)
        );
        for (k, (at, state)) in changes.iter().enumerate() {
            let end = changes.get(k + 1).map_or(m.to_ms as f64, |n| n.0);
            let colour = match state.as_str() {
                "sealed" => "#2e7d32",
                "charging" => "#1565c0",
                "breach" => "#c62828",
                _ => "#9e9e9e",
            };
            let _ = write!(svg, "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"18\" fill=\"{colour}\"><title>{} {}</title></rect>", 90.0 + x(*at), (x(end) - x(*at)).max(0.5), esc(state), local_text(tz, *at as i64));
        }
    }
    svg.push_str("</svg>");
    let mut nmhc = String::new();
    for (analyzer, list) in &hours {
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
                let _ = write!(nmhc, "<rect x=\"{px:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{} {a:.2} mg/m³</title></rect>", 210.0 - h, w * 0.8, local_text(tz, *hour as i64));
            }
            let ly = 210.0 - limit / top * 200.0;
            let _ = write!(nmhc, "<line x1=\"{px:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"#000\" stroke-dasharray=\"4 2\"/>", px + w);
        }
        nmhc.push_str("<text x=\"0\" y=\"14\" font-size=\"12\">mg/m³</text></svg><p>Bars: valid hourly averages (red above the limit); dashed: the hourly limit. Hours without 45 valid minutes have no bar.</p>");
    }
    let mut comp = String::from("<table><tr><th>bin</th><th>hours</th><th>mean completeness</th><th>valid hours (≥ 45 min known)</th></tr>");
    for (bin, list) in &completeness {
        let mean = list.iter().map(|c| c.1).sum::<f64>() / list.len().max(1) as f64;
        let valid = list.iter().filter(|c| c.1 >= 0.75).count();
        let _ = write!(
            comp,
            "<tr><td>{}</td><td>{}</td><td>{:.1} %</td><td>{valid}</td></tr>",
            esc(bin),
            list.len(),
            mean * 100.0
        );
    }
    comp.push_str("</table>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sealwatch audit bundle — {plant}</title>\
<style>body{{font-family:sans-serif;margin:2rem;max-width:1100px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem}}</style></head><body>\
<h1>Furnace-top seal evidence — {plant}</h1>\
<p>Site {site}, permit {permit} ({class}). Period {from} to {to}. Records {first}–{last}; chain head <code>{head}</code>. Rule sets: {rulesets}.</p>\
<p>Charging cycles: {cycles}, of which held the seal: {held}. Breaches: {breaches}. NMHC hours above the hourly limit: {exceeded}.</p>\
<h2>Seal state per bin</h2><p>Green sealed, blue charging with the seal held, red breach, grey unknown (no valid data).</p>{svg}\
<h2>NMHC hourly averages against the limit</h2>{nmhc}<h2>Data completeness</h2>{comp}\
<p>Check this bundle: <code>sealwatch evidence verify --bundle &lt;this folder&gt;</code>. The tables are in the CSV files beside this report.</p></body></html>",
        plant = esc(&m.plant),
        site = esc(&m.site),
        permit = esc(&m.permit_number),
        class = esc(&m.permit_class),
        from = local_text(tz, m.from_ms),
        to = local_text(tz, m.to_ms),
        first = m.first_seq,
        last = m.last_seq,
        head = m.head_hash,
        rulesets = esc(&m.rulesets.join(", ")),
    )
}
