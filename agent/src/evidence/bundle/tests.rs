//! Bundles prove themselves only against a key from outside: every way of editing one named in
//! the evidence-integrity issue fails, naming the cause; an untouched bundle passes.

use super::*;
use crate::evidence::{seal, sign, Draft};

const T0: i64 = 1_767_225_600_000;

/// A chain of `n` records like the agent's: seal states, a breach, a cycle, an NMHC hour.
fn drafts(n: usize) -> Vec<Draft> {
    let kinds = [
        (
            "seal_state",
            "F1/B1",
            serde_json::json!({"kind":"seal_state","bin":"F1/B1","at_ms":T0,"from":"sealed","to":"charging","reason":"lid open","ruleset":"rs1"}),
        ),
        (
            "breach_started",
            "F1/B1",
            serde_json::json!({"kind":"breach_started","bin":"F1/B1","at_ms":T0 + 1000,"signature":"lid_and_gate_open","ruleset":"rs1"}),
        ),
        (
            "breach_ended",
            "F1/B1",
            serde_json::json!({"kind":"breach_ended","bin":"F1/B1","at_ms":T0 + 8000,"started_ms":T0 + 1000,"duration_ms":7000,"signature":"lid_and_gate_open","ended_by_unknown":false,"ruleset":"rs1"}),
        ),
        (
            "charging_cycle",
            "1号炉/B,2",
            serde_json::json!({"kind":"charging_cycle","bin":"1号炉/B,2","started_ms":T0,"ended_ms":T0 + 9000,"level_at_gate_open_mm":812.5,"seal_held":false,"interrupted":false,"reconciled":false,"ruleset":"rs1"}),
        ),
        (
            "nmhc_hour",
            "F1/A1",
            serde_json::json!({"kind":"nmhc_hour","analyzer":"F1/A1","hour_ms":T0,"valid_minutes":50,"avg":4.25,"min":1.0,"max":9.5,"flag":"N","hourly_limit":10.0,"exceeded":false,"single_exceedances":0,"peak":9.5,"ruleset":"rs1"}),
        ),
    ];
    (0..n)
        .map(|i| {
            let (kind, subject, body) = &kinds[i % kinds.len()];
            Draft::new(T0 + i as i64 * 1000, kind, subject, body)
        })
        .collect()
}

fn header() -> ExportHeader {
    ExportHeader {
        site: "site-a".into(),
        plant: "Yulin <Test> Plant".into(),
        permit_number: "91610800MA70000000001P".into(),
        permit_class: "key".into(),
        time_zone: chrono_tz::Asia::Shanghai,
        from_ms: T0,
        to_ms: T0 + 86_400_000,
        chain_head: Head::EMPTY,
        exported_at_ms: T0 + 90_000_000,
    }
}

/// Writes a bundle of records `from..=to` of a chain of `n` signed with `key` into `dir`.
fn bundle_of(
    dir: &Path,
    key: &SigningKey,
    n: usize,
    (from, to): (u64, u64),
) -> Vec<EvidenceRecord> {
    let (records, head) = seal("site-a", key, Head::EMPTY, &drafts(n)).unwrap();
    let mut h = header();
    h.chain_head = head;
    let all = records.clone();
    export(
        &h,
        key,
        (from, to),
        &mut |seq| {
            Ok(all
                .iter()
                .filter(|r| r.seq >= seq)
                .take(3)
                .cloned()
                .collect())
        },
        dir,
        &|_| {},
    )
    .unwrap();
    records
}

fn site_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn check(dir: &Path) -> Result<Verified, BundleError> {
    verify_bundle(dir, &KeyTrust::Key(site_key().verifying_key()), &|_| {})
}

fn manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn save(dir: &Path, m: &Manifest) {
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

fn rehash(dir: &Path, m: &mut Manifest, name: &str) {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    m.files.insert(name.into(), sha256_hex(&bytes));
}

fn err_text(r: Result<Verified, BundleError>) -> String {
    match r {
        Ok(v) => panic!("verified, but must not: {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_untouched_bundle_passes_against_the_site_key_and_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    bundle_of(dir.path(), &site_key(), 12, (3, 10));
    let v = check(dir.path()).unwrap();
    assert_eq!(
        (v.records, v.manifest.first_seq, v.manifest.last_seq),
        (8, 3, 10)
    );
    assert!(v.authentic);
    assert_eq!(
        v.manifest.chain_head_seq, 12,
        "the whole chain's head at export"
    );
    let fp = sign::fingerprint(&site_key().verifying_key());
    assert_eq!(v.key_fingerprint, fp);
    let spaced = sign::fingerprint_text(&site_key().verifying_key());
    let by_fp = verify_bundle(
        dir.path(),
        &KeyTrust::Fingerprint(spaced[..39].to_owned()),
        &|_| {},
    );
    assert!(by_fp.unwrap().authentic);
    let report = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(report.contains(&fp), "the report shows the fingerprint");
    assert!(report.contains("Yulin &lt;Test&gt; Plant"));
}

#[test]
fn a_bundle_resigned_with_another_key_fails_and_only_passes_as_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let forger = SigningKey::from_bytes(&[8; 32]);
    bundle_of(dir.path(), &forger, 6, (1, 6));
    let e = err_text(check(dir.path()));
    assert!(e.contains("signed by someone else"), "{e}");
    let e = err_text(verify_bundle(
        dir.path(),
        &KeyTrust::Fingerprint(sign::fingerprint(&site_key().verifying_key())),
        &|_| {},
    ));
    assert!(e.contains("signed by someone else"), "{e}");
    // Consistent in itself: passes only when told to trust the key it carries, and says so.
    let v = verify_bundle(dir.path(), &KeyTrust::BundleKey, &|_| {}).unwrap();
    assert!(!v.authentic);
}

#[test]
fn a_cut_tail_fails_whether_or_not_the_manifest_is_edited() {
    let dir = tempfile::tempdir().unwrap();
    let records = bundle_of(dir.path(), &site_key(), 10, (1, 10));
    let jsonl = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
    let kept: String = jsonl.lines().take(7).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("records.jsonl"), &kept).unwrap();
    // Manifest left alone: the records end early.
    let e = err_text(check(dir.path()));
    assert!(e.contains("records at the end are missing"), "{e}");
    // Bounds and hash edited to match: the signature no longer holds.
    let mut m = manifest(dir.path());
    rehash(dir.path(), &mut m, "records.jsonl");
    m.last_seq = 7;
    m.head_hash = records[6].hash.clone();
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(e.contains("signature does not verify"), "{e}");
}

#[test]
fn a_dropped_head_fails() {
    let dir = tempfile::tempdir().unwrap();
    let records = bundle_of(dir.path(), &site_key(), 10, (1, 10));
    let jsonl = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
    let kept: String = jsonl.lines().skip(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("records.jsonl"), &kept).unwrap();
    let e = err_text(check(dir.path()));
    assert!(e.contains("records at the start are missing"), "{e}");
    let mut m = manifest(dir.path());
    rehash(dir.path(), &mut m, "records.jsonl");
    m.first_seq = 3;
    m.prev_hash = records[1].hash.clone();
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(e.contains("signature does not verify"), "{e}");
}

#[test]
fn an_edited_table_fails_by_its_hash_and_by_its_row_even_when_the_manifest_is_resigned() {
    let dir = tempfile::tempdir().unwrap();
    bundle_of(dir.path(), &site_key(), 10, (1, 10));
    let csv = std::fs::read_to_string(dir.path().join("cycles.csv")).unwrap();
    assert!(
        csv.contains("\"1号炉/B,2\""),
        "quoted, not rewritten: {csv}"
    );
    let edited = csv.replacen("false", "true", 1);
    assert_ne!(csv, edited);
    std::fs::write(dir.path().join("cycles.csv"), &edited).unwrap();
    let mut m = manifest(dir.path());
    rehash(dir.path(), &mut m, "cycles.csv");
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(e.contains("signature does not verify"), "{e}");
    // Even a manifest signed with the site key does not make the table true.
    m.sign(&site_key());
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(e.contains("cycles.csv") && e.contains("line 2"), "{e}");
}

#[test]
fn a_report_dropped_from_the_manifest_and_rewritten_fails() {
    let dir = tempfile::tempdir().unwrap();
    bundle_of(dir.path(), &site_key(), 5, (1, 5));
    std::fs::write(dir.path().join("report.html"), "<p>All seals held.</p>").unwrap();
    let mut m = manifest(dir.path());
    m.files.remove("report.html");
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(e.contains("does not list report.html"), "{e}");
    // Listed again with its new hash and re-signed: the report is not what the records give.
    rehash(dir.path(), &mut m, "report.html");
    m.sign(&site_key());
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(
        e.contains("report.html") && e.contains("not what the records give"),
        "{e}"
    );
}

#[test]
fn a_manifest_naming_paths_outside_the_bundle_is_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    bundle_of(dir.path(), &site_key(), 5, (1, 5));
    for name in ["../../etc/hostname", "/dev/zero"] {
        let mut m = manifest(dir.path());
        m.files.insert(name.into(), "00".repeat(32));
        save(dir.path(), &m);
        let e = err_text(check(dir.path()));
        assert!(e.contains("not part of a bundle"), "{name}: {e}");
    }
}

#[test]
fn a_file_replaced_by_a_link_to_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    bundle_of(dir.path(), &site_key(), 5, (1, 5));
    let report = dir.path().join("report.html");
    std::fs::remove_file(&report).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &report).unwrap();
    let e = err_text(check(dir.path()));
    assert!(e.contains("not a plain file"), "{e}");
}

#[test]
fn an_unsigned_or_old_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    bundle_of(dir.path(), &site_key(), 5, (1, 5));
    let mut m = manifest(dir.path());
    m.signature.clear();
    save(dir.path(), &m);
    let e = err_text(check(dir.path()));
    assert!(e.contains("no signature"), "{e}");
    let text = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        text.replace(FORMAT, "sealwatch-bundle-v1"),
    )
    .unwrap();
    let e = err_text(check(dir.path()));
    assert!(e.contains("sealwatch-bundle-v1"), "{e}");
}

#[test]
fn a_breach_open_at_the_end_of_the_period_is_listed_to_the_second() {
    let dir = tempfile::tempdir().unwrap();
    // Records 1–2: a seal state and a breach that has not ended yet.
    bundle_of(dir.path(), &site_key(), 2, (1, 2));
    let csv = std::fs::read_to_string(dir.path().join("breaches.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[1].starts_with("F1/B1,2026-01-01T08:00:01+08:00,,"),
        "{csv}"
    );
    assert!(rows[1].contains(",true,2,"), "open at period end: {csv}");
    check(dir.path()).unwrap();
}
