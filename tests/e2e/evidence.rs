//! Evidence end to end: crash safety, outages, a forgetful audit system, offline verification
//! and audit bundles.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sealwatch_agent::evidence::EvidenceRecord;

use crate::harness::{
    binary, evidence_of, site_with_audit, small_site, start_agent, wait_until, Proc,
};

/// Compares two chains and says where they part, without dumping them.
pub(crate) fn same_chain(what: &str, ours: &[EvidenceRecord], theirs: &[EvidenceRecord]) {
    let first_difference = ours.iter().zip(theirs).position(|(a, b)| a != b);
    assert!(
        ours.len() == theirs.len() && first_difference.is_none(),
        "{what}: agent holds {} records, audit system {}; first differing position {first_difference:?}; last of ours: {:?}",
        ours.len(),
        theirs.len(),
        ours.last().map(|r| (r.seq, &r.kind))
    );
}

fn verify_db(config: &Path) -> (bool, String) {
    let out = Command::new(binary("sealwatch"))
        .args(["evidence", "verify", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn kill_hard(agent: &mut Proc) {
    let status = Command::new("kill")
        .arg("-KILL")
        .arg(agent.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    agent.wait_exit(Duration::from_secs(10));
}

#[test]
fn killed_fifty_times_the_audit_system_ends_with_exactly_the_committed_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, audit, config) = site_with_audit(dir.path());
    let db = dir.path().join("site.db");
    let mut rng = fastrand::Rng::with_seed(0x5EA1);
    for round in 0..50 {
        let mut agent = start_agent(&config);
        // Let it get somewhere first: at least its start record sealed.
        let before = evidence_of(&db).len();
        wait_until(
            Duration::from_secs(20),
            "the agent to seal its start",
            || (evidence_of(&db).len() > before).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        kill_hard(&mut agent);
        let records = evidence_of(&db);
        assert_eq!(
            records.last().map(|r| r.seq),
            Some(records.len() as u64),
            "round {round}: no gaps in the agent's own chain"
        );
    }
    let before = evidence_of(&db).len();
    let mut agent = start_agent(&config);
    let db_records = wait_until(
        Duration::from_secs(60),
        "the audit system to catch up",
        || {
            let ours = evidence_of(&db);
            (ours.len() > before + 2 && audit.records().len() >= ours.len()).then_some(ours)
        },
    );
    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status}\n{}", agent.stderr());
    let ours = evidence_of(&db);
    let theirs = audit.records();
    assert!(ours.len() >= db_records.len());
    same_chain("after 50 hard kills and a clean stop", &ours, &theirs);
    let (ok, report) = verify_db(&config);
    assert!(ok, "{report}");
    let starts = ours.iter().filter(|r| r.kind == "agent_started").count();
    assert_eq!(starts, 51, "every start is on the record");
}

#[test]
fn an_outage_builds_a_backlog_that_arrives_complete_and_a_forgetful_audit_system_gets_records_again(
) {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, mut audit, config) = site_with_audit(dir.path());
    audit.command("refuse");
    let db = dir.path().join("site.db");
    let mut agent = start_agent(&config);
    wait_until(Duration::from_secs(60), "a backlog of 12 records", || {
        (evidence_of(&db).len() >= 12).then_some(())
    });
    assert!(audit.records().is_empty());
    audit.command("accept");
    audit.command("fail 2");
    audit.command("cut 1");
    let caught_up = wait_until(Duration::from_secs(60), "the backlog to arrive", || {
        let theirs = audit.records();
        (theirs.len() >= 12).then_some(theirs)
    });
    same_chain(
        "backlog after the outage",
        &evidence_of(&db)[..caught_up.len()],
        &caught_up,
    );
    let held = caught_up.len();
    audit.command("forget 10");
    wait_until(
        Duration::from_secs(60),
        "the forgotten records to be sent again",
        || (audit.records().len() >= held + 5).then_some(()),
    );
    let theirs = audit.records();
    same_chain(
        "after the audit system forgot",
        &evidence_of(&db)[..theirs.len()],
        &theirs,
    );
    assert!(agent.terminate(Duration::from_secs(20)).success());
}

#[test]
fn verify_names_the_first_broken_record_and_bundles_check_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, _audit, config) = site_with_audit(dir.path());
    let db = dir.path().join("site.db");
    let mut agent = start_agent(&config);
    wait_until(Duration::from_secs(60), "20 records", || {
        (evidence_of(&db).len() >= 20).then_some(())
    });
    assert!(agent.terminate(Duration::from_secs(20)).success());
    let (ok, report) = verify_db(&config);
    assert!(ok, "{report}");
    assert!(report.contains("chain intact"), "{report}");

    // An audit bundle of the day, checked offline.
    let bundle = dir.path().join("bundle");
    let out = Command::new(binary("sealwatch"))
        .args(["evidence", "export", "--config"])
        .arg(&config)
        .args(["--from", "0", "--to", &i64::MAX.to_string(), "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "records.jsonl",
        "public_key.txt",
        "manifest.json",
        "cycles.csv",
        "breaches.csv",
        "nmhc_hourly.csv",
        "completeness.csv",
        "report.html",
    ] {
        assert!(bundle.join(file).exists(), "{file} in the bundle");
    }
    let verify_with = |dir: &Path, how: &[&str]| {
        let out = Command::new(binary("sealwatch"))
            .args(["evidence", "verify", "--bundle"])
            .arg(dir)
            .args(how)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let config_arg = config.display().to_string();
    let verify_bundle = |dir: &Path| verify_with(dir, &["--config", &config_arg]);
    let (code, said) = verify_bundle(&bundle);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("key fingerprint checked"), "{said}");
    // Without a key from outside the bundle, it does not pass …
    let (code, said) = verify_with(&bundle, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("--key-fingerprint"), "{said}");
    // … unless told to trust the bundle's own key, which it says loudly.
    let (code, said) = verify_with(&bundle, &["--trust-bundle-key"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("NOT that the site made it"), "{said}");
    // The fingerprint keygen and export print checks it too; another one does not.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let fingerprint = manifest["key_fingerprint"].as_str().unwrap().to_owned();
    let (code, said) = verify_with(&bundle, &["--key-fingerprint", &fingerprint[..32]]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = verify_with(&bundle, &["--key-fingerprint", &"0".repeat(64)]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("signed by someone else"), "{said}");
    let report_html = std::fs::read_to_string(bundle.join("report.html")).unwrap();
    assert!(report_html.contains("<svg") && report_html.contains("F1/B1"));
    // A changed byte in the bundle is caught by the manifest's hashes.
    let records = std::fs::read_to_string(bundle.join("records.jsonl")).unwrap();
    std::fs::write(
        bundle.join("records.jsonl"),
        records.replacen("seal_state", "seal_stat3", 1),
    )
    .unwrap();
    let (code, said) = verify_bundle(&bundle);
    assert_eq!(code, Some(1));
    assert!(said.contains("records.jsonl"), "{said}");

    // Tampering with the database: a changed byte, then a deleted record.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE evidence SET body = replace(body, 'e', 'E') WHERE seq = 3",
        [],
    )
    .unwrap();
    let (ok, report) = verify_db(&config);
    assert!(!ok);
    assert!(report.contains("BROKEN at record 3"), "{report}");
    conn.execute(
        "UPDATE evidence SET body = replace(body, 'E', 'e') WHERE seq = 3",
        [],
    )
    .unwrap();
    assert!(verify_db(&config).0, "restored");
    conn.execute("DELETE FROM evidence WHERE seq = 5", [])
        .unwrap();
    let (ok, report) = verify_db(&config);
    assert!(!ok);
    assert!(
        report.contains("record 6 where record 5 was expected"),
        "{report}"
    );
    // Minutes-old records deleted from the start are deleted, not "pruned after retention":
    // no data_pruned record of the chain names them.
    conn.execute("DELETE FROM evidence WHERE seq <= 5", [])
        .unwrap();
    let (ok, report) = verify_db(&config);
    assert!(!ok);
    assert!(
        report.contains("records 1–5 are missing") && report.contains("deleted"),
        "{report}"
    );
    assert!(!report.contains("were pruned"), "{report}");
}

#[test]
fn keygen_refuses_to_overwrite_and_the_agent_refuses_a_key_others_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let out = Command::new(binary("sealwatch"))
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = Command::new(binary("sealwatch"))
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let config = small_site(dir.path(), &BTreeMap::new());
    let site_key = dir.path().join("sealwatch.key");
    std::fs::set_permissions(&site_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut agent = start_agent(&config);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(agent.stderr().contains("chmod 600"), "{}", agent.stderr());
}
