//! Audit bundles: `sealwatch evidence export` writes a folder an auditor can check and read
//! without sealwatch:
//!
//! - `records.jsonl`: the evidence records of the period, one JSON object a line, in chain order;
//! - `public_key.txt`: the site's Ed25519 public key (hex) — a convenience, never the proof;
//! - `cycles.csv`, `breaches.csv`, `nmhc_hourly.csv`, `completeness.csv`: tables for auditors,
//!   and `report.html`: a report for people — all derived from the records ([`derive`]);
//! - `manifest.json` ([`Manifest`]): site, permit and time zone, the period, the first and last
//!   sequence numbers, the link before the first record (`prev_hash`) and the last record's hash
//!   (`head_hash`), the whole chain's head at export, the export time, the agent version, the
//!   key fingerprint, the rule-set versions, and the SHA-256 of every other file — **signed with
//!   the site key** (the export checkpoint).
//!
//! `sealwatch evidence verify --bundle DIR` proves a bundle against a key that comes from
//! outside it (the site's `.pub` file, the site config, or a fingerprint from the audit system;
//! [`KeyTrust`]): the manifest's signature, every file's hash, the chain from `prev_hash` to
//! `head_hash` with every record's signature, and every derived file made again from the records
//! and compared byte for byte. A cut tail, a dropped head, a re-signed chain, an edited table or
//! report are each named. Only the files of [`files::FILES`] are read, as plain files with size
//! limits.

pub mod derive;
pub mod files;

use std::collections::BTreeMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sign::{fingerprint, fingerprint_matches, parse_public, public_hex};
use super::verify::{check_chain_batched, ChainError};
use super::{EvidenceRecord, Head};
use crate::model::canonical_json;
use derive::Derivation;

/// The bundle format written and read.
pub const FORMAT: &str = "sealwatch-bundle-v2";

/// What the manifest's signature covers starts with this line.
const MANIFEST_DOMAIN: &str = "sealwatch-bundle-manifest-v2\n";

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
    /// The bundle was not signed with the key it is checked against.
    #[error("{path}: {why}")]
    NotAuthentic {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No key from outside the bundle to check it against.
    #[error("no key to check the bundle against: give --public-key FILE (the site's .pub), --config FILE, or --key-fingerprint HEX (from the audit system); --trust-bundle-key checks only that the bundle is consistent, not who made it")]
    NoKey,
    /// Nothing to export.
    #[error("no evidence between {from} and {to}")]
    Empty {
        /// Period start (local).
        from: String,
        /// Period end (local).
        to: String,
    },
    /// The records could not be read from the database.
    #[error("reading the records to export: {0}")]
    Source(String),
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Site id.
    pub site: String,
    /// Plant name.
    pub plant: String,
    /// Permit number.
    pub permit_number: String,
    /// Permit class.
    pub permit_class: String,
    /// The site's IANA time zone (the tables' times are in it).
    pub time_zone: String,
    /// Period start, ms.
    pub from_ms: i64,
    /// Period end, ms.
    pub to_ms: i64,
    /// First record.
    pub first_seq: u64,
    /// Last record.
    pub last_seq: u64,
    /// Hash of the record before the first (the link into the chain; zeros before record 1).
    pub prev_hash: String,
    /// Hash of the last record, hex.
    pub head_hash: String,
    /// The whole chain's head when the bundle was made (compare with the audit system's).
    pub chain_head_seq: u64,
    /// Its hash.
    pub chain_head_hash: String,
    /// When the bundle was made, ms.
    pub exported_at_ms: i64,
    /// The sealwatch that made it.
    pub agent_version: String,
    /// SHA-256 of the site's public key, hex.
    pub key_fingerprint: String,
    /// Rule-set versions found in the records.
    pub rulesets: Vec<String>,
    /// SHA-256 of each file, hex, by name.
    pub files: BTreeMap<String, String>,
    /// Ed25519 signature (hex) of [`Manifest::signed_bytes`].
    #[serde(default)]
    pub signature: String,
}

impl Manifest {
    /// What the signature covers: a domain line, then the canonical JSON of every field but
    /// `signature`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.remove("signature");
        }
        let mut bytes = MANIFEST_DOMAIN.as_bytes().to_vec();
        bytes.extend_from_slice(canonical_json(&value).as_bytes());
        bytes
    }

    fn sign(&mut self, key: &SigningKey) {
        self.signature = hex::encode(key.sign(&self.signed_bytes()).to_bytes());
    }

    fn signature_verifies(&self, key: &VerifyingKey) -> Result<(), String> {
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "the manifest carries no signature (64 hex bytes)".to_owned())?;
        key.verify_strict(&self.signed_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| "the manifest's signature does not verify with the site key: the manifest was changed (period, bounds, file hashes …) or signed with another key".to_owned())
    }
}

/// What an export is about, before it is written.
#[derive(Debug, Clone)]
pub struct ExportHeader {
    /// Site id.
    pub site: String,
    /// Plant name.
    pub plant: String,
    /// Permit number.
    pub permit_number: String,
    /// Permit class.
    pub permit_class: String,
    /// Time zone.
    pub time_zone: chrono_tz::Tz,
    /// Period start, ms.
    pub from_ms: i64,
    /// Period end, ms.
    pub to_ms: i64,
    /// The whole chain's head now.
    pub chain_head: Head,
    /// Now, ms.
    pub exported_at_ms: i64,
}

/// A file being written, hashed as it goes.
struct Hashed {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    path: PathBuf,
}

impl Hashed {
    /// Creates `dir/name` afresh: a file of an earlier export is replaced, a link is removed
    /// (never followed), anything else is refused.
    fn create(dir: &Path, name: &str) -> Result<Hashed, BundleError> {
        let path = dir.join(name);
        let io = |source| BundleError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() || meta.file_type().is_symlink() => {
                std::fs::remove_file(&path).map_err(io)?;
            }
            Ok(_) => {
                return Err(BundleError::Invalid {
                    path: path.clone(),
                    why: "is in the way and is not a file; choose another --out folder".to_owned(),
                })
            }
            Err(_) => {}
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        Ok(Hashed {
            file: std::io::BufWriter::new(file),
            hash: Sha256::new(),
            path,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BundleError> {
        self.hash.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(|source| BundleError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn finish(self) -> Result<String, BundleError> {
        let Hashed { file, hash, path } = self;
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(|source| BundleError::Io { path, source })?;
        Ok(hex::encode(hash.finalize()))
    }
}

fn write_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    files: &mut BTreeMap<String, String>,
) -> Result<(), BundleError> {
    let mut out = Hashed::create(dir, name)?;
    out.write(bytes)?;
    files.insert(name.to_owned(), out.finish()?);
    Ok(())
}

/// Writes a bundle of records `first_seq..=last_seq` into `dir`, signed with `key`. `read(seq)`
/// gives the next records from `seq` on, in chain order (a batch at a time); `progress` is told
/// how many were written.
pub fn export(
    header: &ExportHeader,
    key: &SigningKey,
    (first_seq, last_seq): (u64, u64),
    read: &mut dyn FnMut(u64) -> Result<Vec<EvidenceRecord>, String>,
    dir: &Path,
    progress: &dyn Fn(u64),
) -> Result<Manifest, BundleError> {
    let tz = header.time_zone;
    let empty = || BundleError::Empty {
        from: crate::rules::time::local_text(tz, header.from_ms),
        to: crate::rules::time::local_text(tz, header.to_ms),
    };
    if first_seq == 0 || last_seq < first_seq {
        return Err(empty());
    }
    std::fs::create_dir_all(dir).map_err(|source| BundleError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files = BTreeMap::new();
    let mut derivation = Derivation::new(tz);
    let mut jsonl = Hashed::create(dir, "records.jsonl")?;
    let (mut next, mut prev_hash, mut head_hash) = (first_seq, None, String::new());
    while next <= last_seq {
        let batch = read(next).map_err(BundleError::Source)?;
        if batch.is_empty() {
            break;
        }
        for r in batch.iter().take_while(|r| r.seq <= last_seq) {
            if r.seq != next {
                return Err(BundleError::Source(format!(
                    "record {next} is missing from the database (found {})",
                    r.seq
                )));
            }
            prev_hash.get_or_insert_with(|| r.prev_hash.clone());
            let mut line = serde_json::to_vec(r).map_err(|e| BundleError::Source(e.to_string()))?;
            line.push(b'\n');
            jsonl.write(&line)?;
            derivation.push(r);
            head_hash.clone_from(&r.hash);
            next += 1;
        }
        progress(next - first_seq);
    }
    if next <= last_seq {
        return Err(BundleError::Source(format!(
            "the database holds records only up to {}, the period asks for {last_seq}",
            next - 1
        )));
    }
    files.insert("records.jsonl".to_owned(), jsonl.finish()?);
    let public = key.verifying_key();
    write_file(
        dir,
        "public_key.txt",
        format!("{}\n", public_hex(&public)).as_bytes(),
        &mut files,
    )?;
    let mut manifest = Manifest {
        format: FORMAT.to_owned(),
        site: header.site.clone(),
        plant: header.plant.clone(),
        permit_number: header.permit_number.clone(),
        permit_class: header.permit_class.clone(),
        time_zone: tz.name().to_owned(),
        from_ms: header.from_ms,
        to_ms: header.to_ms,
        first_seq,
        last_seq,
        prev_hash: prev_hash.ok_or_else(empty)?,
        head_hash,
        chain_head_seq: header.chain_head.seq,
        chain_head_hash: hex::encode(header.chain_head.hash),
        exported_at_ms: header.exported_at_ms,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        key_fingerprint: fingerprint(&public),
        rulesets: derivation.rulesets(),
        files: BTreeMap::new(),
        signature: String::new(),
    };
    for (name, bytes) in derivation.finish(&manifest) {
        write_file(dir, name, &bytes, &mut files)?;
    }
    manifest.files = files;
    manifest.sign(key);
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    let mut out = Hashed::create(dir, "manifest.json")?;
    out.write(text.as_bytes())?;
    out.finish()?;
    Ok(manifest)
}

/// Which key a bundle is checked against.
#[derive(Debug, Clone)]
pub enum KeyTrust {
    /// The site's public key, from outside the bundle.
    Key(VerifyingKey),
    /// The beginning (≥ 32 hex digits) of the key's fingerprint, from outside the bundle.
    Fingerprint(String),
    /// The key the bundle carries: proves the bundle is consistent, not who made it.
    BundleKey,
}

/// What a verified bundle holds.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its manifest.
    pub manifest: Manifest,
    /// Records checked.
    pub records: u64,
    /// The fingerprint of the key everything verified with.
    pub key_fingerprint: String,
    /// Whether that key came from outside the bundle.
    pub authentic: bool,
}

fn invalid(path: PathBuf, why: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path,
        why: why.into(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads and checks the manifest: format, the fixed list of files.
fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join("manifest.json");
    let bytes = files::read(dir, "manifest.json", files::MAX_MANIFEST_BYTES)?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        let hint = if String::from_utf8_lossy(&bytes).contains("sealwatch-bundle-v1") {
            " (a sealwatch-bundle-v1 manifest is not signed: export the period again with this sealwatch)"
        } else {
            ""
        };
        invalid(path.clone(), format!("{e}{hint}"))
    })?;
    if manifest.format != FORMAT {
        return Err(invalid(
            path,
            format!(
                "format '{}'; this sealwatch checks {FORMAT}",
                manifest.format.escape_debug()
            ),
        ));
    }
    for name in manifest.files.keys() {
        if files::limit_of(name).is_none() {
            return Err(invalid(
                path,
                format!(
                    "the manifest names a file '{}' that is not part of a bundle ({}); nothing outside that list is read",
                    name.escape_debug(),
                    files::FILES.map(|(n, _)| n).join(", ")
                ),
            ));
        }
    }
    for (name, _) in files::FILES {
        if !manifest.files.contains_key(name) {
            return Err(invalid(
                path,
                format!("the manifest does not list {name}: the bundle is incomplete"),
            ));
        }
    }
    Ok(manifest)
}

/// Checks a bundle against a key from outside it (or, with [`KeyTrust::BundleKey`], only for
/// consistency); `progress` is told how many records were checked.
pub fn verify_bundle(
    dir: &Path,
    trust: &KeyTrust,
    progress: &dyn Fn(u64),
) -> Result<Verified, BundleError> {
    let manifest = read_manifest(dir)?;
    let manifest_path = dir.join("manifest.json");
    let key_path = dir.join("public_key.txt");
    let key_bytes = files::read(
        dir,
        "public_key.txt",
        files::limit_of("public_key.txt").unwrap_or(0),
    )?;
    if sha256_hex(&key_bytes) != manifest.files["public_key.txt"] {
        return Err(invalid(
            key_path,
            "its SHA-256 differs from the manifest's (the file was changed)",
        ));
    }
    let bundle_key = parse_public(&String::from_utf8_lossy(&key_bytes))
        .map_err(|why| invalid(key_path.clone(), why))?;
    let not_authentic = |why: String| BundleError::NotAuthentic {
        path: key_path.clone(),
        why,
    };
    let (key, authentic) = match trust {
        KeyTrust::Key(key) => {
            if key != &bundle_key {
                return Err(not_authentic(format!(
                    "the bundle was made with the key whose fingerprint is {}, not with the site's key ({}): its records were signed by someone else",
                    fingerprint(&bundle_key),
                    fingerprint(key)
                )));
            }
            (*key, true)
        }
        KeyTrust::Fingerprint(given) => match fingerprint_matches(given, &bundle_key) {
            Ok(true) => (bundle_key, true),
            Ok(false) => {
                return Err(not_authentic(format!(
                    "the bundle's key has the fingerprint {}, not {}: its records were signed by someone else",
                    fingerprint(&bundle_key),
                    given.escape_debug()
                )))
            }
            Err(why) => return Err(BundleError::Invalid { path: PathBuf::from("--key-fingerprint"), why }),
        },
        KeyTrust::BundleKey => (bundle_key, false),
    };
    if manifest.key_fingerprint != fingerprint(&key) {
        return Err(invalid(
            manifest_path,
            "the manifest names another key fingerprint than its key file's",
        ));
    }
    manifest
        .signature_verifies(&key)
        .map_err(|why| BundleError::NotAuthentic {
            path: manifest_path.clone(),
            why,
        })?;
    let head_consistent = manifest.chain_head_seq > manifest.last_seq
        || (manifest.chain_head_seq == manifest.last_seq
            && manifest.chain_head_hash == manifest.head_hash);
    if !head_consistent {
        return Err(invalid(
            manifest_path,
            format!(
                "the chain head at export ({} {}) cannot be before the bundle's last record ({} {})",
                manifest.chain_head_seq,
                manifest.chain_head_hash,
                manifest.last_seq,
                manifest.head_hash
            ),
        ));
    }
    let tz: chrono_tz::Tz = manifest.time_zone.parse().map_err(|_| {
        invalid(
            manifest_path.clone(),
            format!("unknown time zone '{}'", manifest.time_zone.escape_debug()),
        )
    })?;
    let (records, derivation) = check_records(dir, &manifest, &key, tz, progress)?;
    if derivation.rulesets() != manifest.rulesets {
        return Err(invalid(
            manifest_path,
            "the rule sets it lists are not those the records name",
        ));
    }
    for (name, derived) in derivation.finish(&manifest) {
        let path = dir.join(name);
        let actual = files::read(dir, name, files::limit_of(name).unwrap_or(0))?;
        if sha256_hex(&actual) != manifest.files[name] {
            return Err(invalid(
                path,
                "its SHA-256 differs from the manifest's (the file was changed after export)",
            ));
        }
        if actual != derived {
            return Err(invalid(path, first_difference(&actual, &derived)));
        }
    }
    Ok(Verified {
        manifest,
        records,
        key_fingerprint: fingerprint(&key),
        authentic,
    })
}

/// Where a derived file differs from what the records give.
fn first_difference(actual: &[u8], derived: &[u8]) -> String {
    let (a, d) = (
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(derived),
    );
    let mut lines_a = a.split('\n');
    let mut lines_d = d.split('\n');
    let mut line = 0;
    loop {
        line += 1;
        match (lines_a.next(), lines_d.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                let cut = |s: Option<&str>| {
                    s.map_or("(nothing)".to_owned(), |s| {
                        let s: String = s.chars().take(160).collect();
                        format!("'{}'", s.escape_debug())
                    })
                };
                return format!(
                    "line {line} is not what the records give: the file has {}, the records give {}",
                    cut(x),
                    cut(y)
                );
            }
        }
    }
}

/// Reads `records.jsonl` line by line: hash, chain from `prev_hash` to `head_hash` with every
/// signature, and the derivation. Returns the count and the derivation.
fn check_records(
    dir: &Path,
    manifest: &Manifest,
    key: &VerifyingKey,
    tz: chrono_tz::Tz,
    progress: &dyn Fn(u64),
) -> Result<(u64, Derivation), BundleError> {
    let name = "records.jsonl";
    let (file, path) = files::open(dir, name, files::limit_of(name).unwrap_or(0))?;
    let mut reader = std::io::BufReader::new(file);
    let mut hash = Sha256::new();
    let mut derivation = Derivation::new(tz);
    let prev: [u8; 32] = hex::decode(&manifest.prev_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid(dir.join("manifest.json"), "prev_hash is not 32 hex bytes"))?;
    let start = Head {
        seq: manifest.first_seq.checked_sub(1).ok_or_else(|| {
            invalid(
                dir.join("manifest.json"),
                "first_seq is 0; records are numbered from 1",
            )
        })?,
        hash: prev,
    };
    let mut head = start;
    let mut batch: Vec<EvidenceRecord> = Vec::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut count = 0u64;
    let flush = |batch: &mut Vec<EvidenceRecord>, head: &mut Head, derivation: &mut Derivation| {
        let checked = check_chain_batched(&manifest.site, key, *head, batch).map_err(|source| {
            BundleError::Chain {
                path: path.clone(),
                source,
            }
        })?;
        for r in batch.iter() {
            derivation.push(r);
        }
        *head = checked;
        batch.clear();
        Ok::<(), BundleError>(())
    };
    loop {
        line.clear();
        let n = (&mut reader)
            .take(files::MAX_RECORD_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        number += 1;
        if n > files::MAX_RECORD_LINE {
            return Err(invalid(
                path,
                format!(
                    "line {number} is longer than {} bytes",
                    files::MAX_RECORD_LINE
                ),
            ));
        }
        hash.update(&line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r: EvidenceRecord = serde_json::from_slice(text)
            .map_err(|e| invalid(path.clone(), format!("line {number}: {e}")))?;
        if count == 0 && r.seq != manifest.first_seq {
            return Err(invalid(path, format!(
                "the records begin at {}, the signed manifest says {}: records at the start are missing",
                r.seq, manifest.first_seq
            )));
        }
        count += 1;
        batch.push(r);
        if batch.len() >= 4096 {
            flush(&mut batch, &mut head, &mut derivation)?;
            progress(count);
        }
    }
    flush(&mut batch, &mut head, &mut derivation)?;
    progress(count);
    if count == 0 {
        return Err(invalid(path, "no records"));
    }
    if head.seq != manifest.last_seq || hex::encode(head.hash) != manifest.head_hash {
        return Err(invalid(
            path,
            format!(
                "the records end at {} ({}), the signed manifest says {} ({}): records at the end are missing",
                head.seq,
                hex::encode(head.hash),
                manifest.last_seq,
                manifest.head_hash
            ),
        ));
    }
    if hex::encode(hash.finalize()) != manifest.files[name] {
        return Err(invalid(
            path,
            "its SHA-256 differs from the manifest's (the file was changed)",
        ));
    }
    Ok((count, derivation))
}

#[cfg(test)]
mod tests;
