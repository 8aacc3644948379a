//! Evidence an auditor can rely on, end to end: an audit system that lies cannot make records
//! count as delivered; a database deleted under the agent stops it writing and a restart refuses
//! a silent second chain until a person declares one; corrupt rows are reported, not fatal.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sealwatch_agent::store::Store;

use crate::evidence::same_chain;
use crate::harness::{
    binary, evidence_of, get_json, http, site_with_audit, start_agent, start_agent_notifying,
    status_url, wait_until, Proc,
};

/// The audit uplink's acknowledged position in the agent's database.
fn cursor(db: &Path) -> u64 {
    Store::open_read_only(db)
        .and_then(|s| s.uplink_cursor("audit"))
        .unwrap_or(0)
}

/// A sample of the agent's `/metrics` (0 if absent).
fn metric(url: &str, name: &str) -> f64 {
    let (_, text) = http("GET", &format!("{url}/metrics"), None).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The agent's peak resident memory, KiB.
fn peak_rss_kib(agent: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn with_batches_of_five(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(
        config,
        text.replace("batch_records = 50", "batch_records = 5"),
    )
    .unwrap();
}

#[test]
fn a_lying_audit_system_never_makes_records_count_as_delivered_and_gets_each_once_it_behaves() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, mut audit, config) = site_with_audit(dir.path());
    with_batches_of_five(&config);
    let db = dir.path().join("site.db");
    audit.command("refuse");
    let mut agent = start_agent(&config);
    let url = status_url(&mut agent);
    let lies = [
        "lie-through 1000000000000",
        "lie-hash",
        "lie-refuse 1000000000000",
        "huge 300",
        "redirect http://127.0.0.1:9/",
    ];
    // A backlog longer than a batch, so a lie could skip records never sent.
    wait_until(Duration::from_secs(60), "a backlog of 8 records", || {
        (evidence_of(&db).len() >= 8).then_some(())
    });
    // Each lie replaces the one before, so the audit system never answers honestly meanwhile.
    audit.command(lies[0]);
    audit.command("accept");
    for lie in lies {
        audit.command(lie);
        let errors = metric(&url, "sealwatch_audit_protocol_errors_total");
        wait_until(
            Duration::from_secs(30),
            &format!("two answers to '{lie}' judged as proving nothing"),
            || {
                if let Some(status) = agent.try_exit() {
                    panic!("agent exited with {status}:\n{}", agent.stderr());
                }
                (metric(&url, "sealwatch_audit_protocol_errors_total") >= errors + 2.0)
                    .then_some(())
            },
        );
        let (acked, truly) = (cursor(&db), audit.records().len() as u64);
        assert_eq!(acked, 0, "{lie}: the acknowledged position moved");
        assert!(
            truly >= 5,
            "{lie}: the audit system stored the batch, but its answer lies"
        );
        let state = get_json(&format!("{url}/api/state"));
        let backlog = state["evidence_backlog"].as_u64().unwrap();
        assert!(backlog >= 8, "{lie}: the backlog shows {backlog}");
        assert!(
            state["alarms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["kind"] == "audit_answers"),
            "{lie}: no alarm on the status page: {}",
            state["alarms"]
        );
    }
    // It behaves again: the backlog goes out.
    audit.command("ok");
    let head = evidence_of(&db).len() as u64;
    wait_until(Duration::from_secs(60), "the backlog delivered", || {
        (cursor(&db) >= head).then_some(())
    });
    let peak = peak_rss_kib(&agent);
    assert!(
        peak < 150 * 1024,
        "300 MiB answers must not be read: the agent peaked at {peak} KiB"
    );
    assert!(
        agent.stderr().contains("proves nothing"),
        "ERROR lines name the lies"
    );
    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", agent.stderr());
    // Everything arrived, in order, each once.
    let ours = evidence_of(&db);
    wait_until(Duration::from_secs(5), "the last records", || {
        (audit.records().len() >= ours.len() - 1).then_some(())
    });
    let theirs = audit.records();
    same_chain("after the lies", &ours[..theirs.len()], &theirs);
}

fn sealwatch(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(binary("sealwatch"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Starts the agent on a database it must refuse; returns what it said.
fn refused(config: &Path, db: &Path) -> String {
    let mut agent = start_agent(config);
    let status = agent.wait_exit(Duration::from_secs(20));
    let stderr = agent.stderr();
    assert!(!status.success(), "the agent started:\n{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains("sealwatch evidence new-chain"), "{stderr}");
    assert!(
        evidence_of(db).is_empty(),
        "no record 1 of a second chain was sealed"
    );
    stderr
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_database_deleted_under_the_agent_stops_it_and_no_second_chain_starts_until_one_is_declared() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, audit, config) = site_with_audit(dir.path());
    let db = dir.path().join("site.db");
    let anchor = dir.path().join("sealwatch.key.chain");
    let (mut agent, socket) = start_agent_notifying(dir.path(), &config, &[]);
    let url = status_url(&mut agent);
    wait_until(
        Duration::from_secs(60),
        "records delivered and anchored",
        || (audit.records().len() >= 5 && anchor.exists()).then_some(()),
    );
    remove_db(&db);
    wait_until(
        Duration::from_secs(20),
        "the replaced-database alarm",
        || {
            let state = get_json(&format!("{url}/api/state"));
            state["alarms"]
                .as_array()?
                .iter()
                .any(|a| a["kind"] == "store_replaced")
                .then_some(())
        },
    );
    assert_eq!(metric(&url, "sealwatch_store_committing"), 0.0);
    assert!(
        agent.stderr().contains("deleted or replaced"),
        "{}",
        agent.stderr()
    );
    // The watchdog is no longer fed: over two watchdog periods, no WATCHDOG=1 (after those
    // already on their way).
    let drain_until = Instant::now() + Duration::from_millis(700);
    let mut buf = [0u8; 4096];
    while Instant::now() < drain_until {
        let _ = socket.recv(&mut buf);
    }
    let window = Instant::now() + Duration::from_secs(2);
    while Instant::now() < window {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !text.lines().any(|l| l == "WATCHDOG=1"),
                "the watchdog was fed while the store cannot commit"
            );
        }
    }
    agent.terminate(Duration::from_secs(20));

    // Restarted on an empty database: the anchor says the chain went further.
    let said = refused(&config, &db);
    assert!(said.contains("chain anchor"), "{said}");
    // Without the anchor, an acknowledged position in an otherwise empty database.
    remove_db(&db);
    std::fs::remove_file(&anchor).unwrap();
    {
        let mut store = Store::open(&db).unwrap();
        store.set_uplink_cursor("audit", 7, 0).unwrap();
    }
    let said = refused(&config, &db);
    assert!(said.contains("acknowledged records up to 7"), "{said}");
    // Nothing local at all: the audit system itself says it holds this site's chain.
    remove_db(&db);
    let said = refused(&config, &db);
    assert!(said.contains("the audit system holds"), "{said}");

    // A person declares a new chain; the audit system takes it, the old one archived.
    let held_before = audit.records().len();
    let (ok, out) = sealwatch(
        &[
            "evidence",
            "new-chain",
            "--reason",
            "database lost in a test",
            "--by",
            "Wang Wei",
        ],
        &config,
    );
    assert!(ok, "{out}");
    assert!(out.contains("no anchor found"), "{out}");
    assert!(
        out.contains(&format!(
            "holds the previous chain up to record {held_before}"
        )),
        "{out}"
    );
    let mut agent = start_agent(&config);
    let theirs = wait_until(Duration::from_secs(60), "the new chain delivered", || {
        if let Some(status) = agent.try_exit() {
            panic!("agent exited with {status}:\n{}", agent.stderr());
        }
        let theirs = audit.records();
        (theirs.first().is_some_and(|r| r.kind == "new_chain") && theirs.len() >= 3)
            .then_some(theirs)
    });
    let body: serde_json::Value = serde_json::from_str(&theirs[0].body).unwrap();
    assert_eq!(body["reason"], "database lost in a test");
    assert_eq!(body["by"], "Wang Wei");
    assert_eq!(body["previous_chain_lost"], true);
    assert_eq!(body["audit_system_holds"], held_before as u64);
    let archived: i64 = rusqlite::Connection::open(&audit.db)
        .unwrap()
        .query_row("SELECT count(*) FROM archived_records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        archived as usize, held_before,
        "the old chain is kept, archived"
    );
    assert!(agent.terminate(Duration::from_secs(20)).success());
    let (ok, out) = sealwatch(&["evidence", "verify"], &config);
    assert!(ok, "{out}");
    // A second declaration on a database that holds a chain is refused.
    let (ok, out) = sealwatch(
        &["evidence", "new-chain", "--reason", "again", "--by", "x"],
        &config,
    );
    assert!(!ok && out.contains("already holds a chain"), "{out}");
}

#[test]
fn corrupt_rows_are_reported_in_the_chain_and_the_agent_keeps_polling() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, _audit, config) = site_with_audit(dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "commit_interval_ms = 200",
            "commit_interval_ms = 200\ncompact_interval_ms = 1000",
        ),
    )
    .unwrap();
    let db = dir.path().join("site.db");
    let mut agent = start_agent(&config);
    let url = status_url(&mut agent);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    wait_until(Duration::from_secs(30), "compacted blocks", || {
        (count("SELECT count(*) FROM reading_blocks") > 0).then_some(())
    });
    // A block whose body is garbage, and a frame whose count is absurd (the crash of the
    // issue: Vec::reserve aborted the agent at every compaction).
    conn.execute(
        "UPDATE reading_blocks SET body = x'FF' WHERE rowid = (SELECT min(rowid) FROM reading_blocks)",
        [],
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "a frame to damage", || {
        let changed = conn
            .execute(
                "UPDATE reading_frames SET count = 9223372036854775807 WHERE id = (SELECT max(id) FROM reading_frames)",
                [],
            )
            .unwrap();
        (changed == 1).then_some(())
    });
    let records = wait_until(
        Duration::from_secs(30),
        "two store_corruption records",
        || {
            if let Some(status) = agent.try_exit() {
                panic!("agent exited with {status}:\n{}", agent.stderr());
            }
            let found: Vec<_> = evidence_of(&db)
                .into_iter()
                .filter(|r| r.kind == "store_corruption")
                .collect();
            (found.len() >= 2).then_some(found)
        },
    );
    let tables: Vec<String> = records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["table"].to_string())
        .collect();
    assert!(
        tables.iter().any(|t| t.contains("reading_blocks"))
            && tables.iter().any(|t| t.contains("reading_frames")),
        "{tables:?}"
    );
    assert!(metric(&url, "sealwatch_store_corrupt_rows_total") >= 2.0);
    assert_eq!(
        count("SELECT count(*) FROM quarantine"),
        records.len() as i64
    );
    // Still polling and committing.
    let total = get_json(&format!("{url}/api/state"))["readings_total"]
        .as_u64()
        .unwrap();
    wait_until(Duration::from_secs(10), "more readings", || {
        (get_json(&format!("{url}/api/state"))["readings_total"].as_u64()? > total + 10)
            .then_some(())
    });
    assert_eq!(metric(&url, "sealwatch_store_committing"), 1.0);
    assert!(
        agent.stderr().contains("does not decode"),
        "logged at ERROR"
    );
    assert!(agent.terminate(Duration::from_secs(20)).success());
    let (ok, out) = sealwatch(&["evidence", "verify"], &config);
    assert!(ok, "{out}");
}
