//! The rules engine live in the agent, and `sealwatch replay` agreeing with it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use sealwatch_agent::config;
use sealwatch_agent::poll::reading::Reading;
use sealwatch_agent::poll::PointTable;
use sealwatch_agent::replay::to_json_line;
use sealwatch_agent::store::Store;

use crate::harness::{binary, small_site, start_agent, wait_until, Sim};

fn outputs(db: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    if !db.exists() {
        return Vec::new();
    }
    Store::open_read_only(db)
        .and_then(|s| s.outputs(i64::MIN, i64::MAX, Some(kind)))
        .unwrap_or_default()
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect()
}

#[test]
fn a_breach_in_the_plant_is_judged_live_and_the_same_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    // Twice as fast: F1/B1's first gate opening comes about 12 s after start, and the breached
    // bin then stays below its seal level for about 4.5 s, more than the 3 s grace period.
    let mut sim = Sim::start(dir.path(), &placeholder, &["--speed", "2"]);
    let config_path = small_site(dir.path(), &sim.buses);
    sim.command("breach F1/B1");
    let mut agent = start_agent(&config_path);
    let db = dir.path().join("site.db");
    let breach = wait_until(
        Duration::from_secs(60),
        "a breach of F1/B1 judged by the agent",
        || {
            outputs(&db, "breach_started")
                .into_iter()
                .find(|o| o["bin"] == "F1/B1")
        },
    );
    assert_eq!(breach["signature"], "level_below_seal", "{breach}");
    wait_until(
        Duration::from_secs(60),
        "the breached cycle of F1/B1 to complete",
        || {
            outputs(&db, "charging_cycle")
                .into_iter()
                .find(|o| o["bin"] == "F1/B1" && o["seal_held"] == false)
        },
    );
    // F1/B2 had no breach scripted: its cycles hold.
    assert!(outputs(&db, "breach_started")
        .iter()
        .all(|o| o["bin"] != "F1/B2"));
    assert!(
        agent.terminate(Duration::from_secs(10)).success(),
        "{}",
        agent.stderr()
    );

    // Export what the agent stored and replay it.
    let cfg = config::load(&config_path).unwrap();
    let points = PointTable::new(&cfg);
    let store = Store::open_read_only(&db).unwrap();
    let mut all: Vec<Reading> = Vec::new();
    for (i, p) in points.points.iter().enumerate() {
        for s in store.readings(&p.key, i64::MIN, i64::MAX).unwrap() {
            all.push(Reading {
                at_ms: s.at_ms,
                point: sealwatch_agent::poll::reading::PointId(i as u32),
                outcome: s.outcome,
                flag: s.flag,
            });
        }
    }
    all.sort_by_key(|r| (r.at_ms, r.point));
    let input = dir.path().join("readings.jsonl");
    let text: String = all
        .iter()
        .map(|r| to_json_line(&points, r) + "\n")
        .collect();
    std::fs::write(&input, text).unwrap();
    let run = |out: &str| {
        let status = Command::new(binary("sealwatch"))
            .args(["replay", "--config"])
            .arg(&config_path)
            .arg(&input)
            .arg("--out")
            .arg(dir.path().join(out))
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(dir.path().join(out)).unwrap()
    };
    let first = run("replay-1.jsonl");
    let second = run("replay-2.jsonl");
    assert_eq!(first, second, "identical input gives byte-identical output");
    let replayed: Vec<serde_json::Value> = String::from_utf8(first)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let again = replayed
        .iter()
        .find(|o| o["kind"] == "breach_started" && o["bin"] == "F1/B1")
        .expect("replay finds the breach");
    assert_eq!(
        again, &breach,
        "replay judges the breach exactly as the live agent did"
    );
}

#[test]
fn replay_names_the_line_of_a_bad_reading() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = small_site(dir.path(), &BTreeMap::new());
    let input = dir.path().join("readings.csv");
    std::fs::write(&input, "at_ms,point,value,flag\n1767225600000,f1-b1-node/level_mm,812,N\n1767225601000,f1-b1-node/levl_mm,812,N\n").unwrap();
    let out = Command::new(binary("sealwatch"))
        .args(["replay", "--config"])
        .arg(&config_path)
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readings.csv:3: unknown point 'f1-b1-node/levl_mm'"),
        "{stderr}"
    );
}
