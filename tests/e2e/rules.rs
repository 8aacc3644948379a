//! The rules engine live in the agent, and `sealwatch replay` agreeing with it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use sealwatch_agent::config;
use sealwatch_agent::model::Reading;
use sealwatch_agent::replay::to_json_line;
use sealwatch_agent::store::Store;

use crate::harness::{binary, small_site, start_agent, status_url, stored, wait_until, Sim};

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
    let points = cfg.point_table();
    let store = Store::open_read_only(&db).unwrap();
    let mut all: Vec<Reading> = Vec::new();
    for (i, p) in points.points.iter().enumerate() {
        for s in store.readings(&p.key, i64::MIN, i64::MAX).unwrap() {
            all.push(Reading {
                at_ms: s.at_ms,
                point: sealwatch_agent::model::PointId(i as u32),
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

/// Every evidence record of an agent database, as (kind, subject, body).
fn chain(db: &std::path::Path) -> Vec<(String, String, serde_json::Value)> {
    crate::harness::evidence_of(db)
        .into_iter()
        .map(|r| {
            let body = serde_json::from_str(&r.body).unwrap_or_default();
            (r.kind, r.subject, body)
        })
        .collect()
}

#[test]
fn a_broken_level_loop_and_span_gas_are_on_the_record_as_unknown_and_calibration_never_as_breach_or_exceedance(
) {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &BTreeMap::new());
    let mut sim = Sim::start(dir.path(), &placeholder, &["--speed", "4"]);
    let config_path = small_site(dir.path(), &sim.buses);
    let mut agent = start_agent(&config_path);
    let db = dir.path().join("site.db");
    let has = |kind: &str, test: &dyn Fn(&str, &serde_json::Value) -> bool| {
        chain(&db)
            .iter()
            .any(|(k, subject, body)| k == kind && test(subject, body))
    };
    wait_until(Duration::from_secs(30), "F1/B1 judged sealed", || {
        has("seal_state", &|s, b| s == "F1/B1" && b["to"] == "sealed").then_some(())
    });
    // F1/B1's next gate opening would drain it below its seal level, but its level loop breaks
    // first, for 120 simulated seconds (30 s here, longer than a charging cycle): nothing may be
    // judged a breach meanwhile. F1's analyzer is calibrated with 80 mg/m³ span gas (the limit
    // is 30) for 320 simulated seconds.
    sim.command("breach F1/B1");
    sim.command("level-wire-broken F1/B1 120");
    sim.command("calibrate f1-nmhc 320");
    wait_until(
        Duration::from_secs(90),
        "F1/B1 unknown for its level fault, F1/NMHC in calibration, and a calibration minute",
        || {
            if let Some(status) = agent.try_exit() {
                panic!("agent exited with {status}:\n{}", agent.stderr());
            }
            (has("seal_state", &|s, b| {
                s == "F1/B1"
                    && b["to"] == "unknown"
                    && b["reason"].as_str().unwrap_or("").contains("level fault")
            }) && has("analyzer_state", &|s, b| {
                s == "F1/NMHC" && b["to"] == "calibration"
            }) && has("nmhc_minute", &|s, b| s == "F1/NMHC" && b["flag"] == "C")
                && has("seal_state", &|s, b| {
                    s == "F1/B1" && b["from"] == "unknown" && b["to"] != "unknown"
                }))
            .then_some(())
        },
    );
    // The gate did open while the loop was broken (else the test proves nothing).
    let gate_open_during_fault = stored(&db, "f1-b1-node/gate_open")
        .iter()
        .zip(stored(&db, "f1-b1-node/level_fault"))
        .any(|(gate, fault)| {
            gate.outcome == sealwatch_agent::model::Outcome::Value(1.0)
                && fault.outcome == sealwatch_agent::model::Outcome::Value(1.0)
        });
    // A person opens and closes a maintenance window on F1/B2 with the CLI.
    let url = status_url(&mut agent);
    let maintenance = |args: &[&str]| {
        let out = Command::new(binary("sealwatch"))
            .arg("maintenance")
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .args(["--url", &url])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = maintenance(&[
        "start",
        "--bin",
        "F1/B2",
        "--kind",
        "maintenance",
        "--reason",
        "lid hinge",
        "--by",
        "Zhao",
    ]);
    assert!(ok && said.contains("window_started"), "{said}");
    let (ok, said) = maintenance(&[
        "start",
        "--bin",
        "F1/B2",
        "--kind",
        "maintenance",
        "--reason",
        "again",
        "--by",
        "Zhao",
    ]);
    assert!(!ok && said.contains("already open"), "{said}");
    let (ok, said) = maintenance(&[
        "start",
        "--device",
        "no-such-node",
        "--kind",
        "shutdown",
        "--reason",
        "x",
        "--by",
        "Zhao",
    ]);
    assert!(!ok && said.contains("no bin"), "{said}");
    let (ok, said) = maintenance(&["list"]);
    assert!(ok && said.contains("F1/B2: maintenance"), "{said}");
    wait_until(Duration::from_secs(20), "F1/B2 in maintenance", || {
        has("seal_state", &|s, b| {
            s == "F1/B2" && b["to"] == "maintenance"
        })
        .then_some(())
    });
    let (ok, said) = maintenance(&["end", "--bin", "F1/B2", "--by", "Zhao"]);
    assert!(ok && said.contains("window_ended"), "{said}");
    let (ok, said) = maintenance(&["end", "--bin", "F1/B2", "--by", "Zhao"]);
    assert!(!ok && said.contains("no window is open"), "{said}");
    assert!(
        agent.terminate(Duration::from_secs(20)).success(),
        "{}",
        agent.stderr()
    );

    let records = chain(&db);
    assert!(
        gate_open_during_fault,
        "the gate never opened during the loop fault"
    );
    assert!(
        !records
            .iter()
            .any(|(k, s, _)| k == "breach_started" && s == "F1/B1"),
        "a broken level loop was judged a breach"
    );
    assert!(
        !records
            .iter()
            .any(|(k, _, _)| k == "nmhc_exceedance_started"),
        "span gas was judged an exceedance"
    );
    assert!(records.iter().any(|(k, _, b)| k == "rule_set"
        && b["values"]["analyzers"][0]["single_limit_mg_m3"] == "30.000"));
    assert!(records.iter().any(|(k, s, b)| k == "window_started"
        && s == "F1/B2"
        && b["by"] == "Zhao"
        && b["reason"] == "lid hinge"));
    // Stored values during the calibration carry C.
    assert!(stored(&db, "f1-nmhc/nmhc")
        .iter()
        .any(|r| r.flag == sealwatch_agent::model::Flag::C));
    let _ = &mut sim;
}
