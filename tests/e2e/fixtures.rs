//! The committed replay fixtures (`tests/fixtures/replay/`), each replayed with `sealwatch
//! replay` and held to the conclusions worked out by hand in its header.

use std::process::Command;

use crate::harness::{binary, workspace};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T08:00+08:00
const MIN: i64 = 60_000;

/// Replays a fixture; returns its outputs.
fn replay(fixture: &str) -> Vec<serde_json::Value> {
    let dir = workspace().join("tests/fixtures/replay");
    let out = Command::new(binary("sealwatch"))
        .args(["replay", "--config"])
        .arg(dir.join("site.toml"))
        .arg(dir.join(fixture))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{fixture}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of<'a>(out: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    out.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn a_broken_level_loop_in_a_cycle_is_unknown_with_its_reason_and_no_breach() {
    let out = replay("level-loop-fault.jsonl");
    assert!(of(&out, "breach_started").is_empty());
    let unknown = of(&out, "seal_state")
        .into_iter()
        .find(|o| o["to"] == "unknown" && o["at_ms"] == T0 + 25_000)
        .expect("unknown from 25 s");
    let reason = unknown["reason"].as_str().unwrap();
    assert!(
        reason.contains("node/level_fault") && reason.contains("below 3.8 mA"),
        "{reason}"
    );
    let cycles = of(&out, "charging_cycle");
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0]["outcome"], "interrupted");
    assert_eq!(cycles[0]["seal_held"], false);
}

#[test]
fn a_stuck_lid_switch_pair_is_unknown() {
    let out = replay("stuck-lid.jsonl");
    let states: Vec<(i64, &str)> = of(&out, "seal_state")
        .iter()
        .map(|o| {
            (
                (o["at_ms"].as_i64().unwrap() - T0) / 1000,
                o["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, vec![(0, "sealed"), (10, "unknown"), (20, "sealed")]);
    assert!(of(&out, "seal_state")[1]["reason"]
        .as_str()
        .unwrap()
        .contains("node/lid_fault"));
    assert!(of(&out, "breach_started").is_empty());
}

#[test]
fn a_level_that_does_not_move_makes_the_cycle_suspect() {
    let out = replay("frozen-level.jsonl");
    let cycles = of(&out, "charging_cycle");
    assert_eq!(cycles.len(), 1);
    assert_eq!(cycles[0]["outcome"], "suspect");
    assert_eq!(cycles[0]["seal_held"], false);
    assert_eq!(cycles[0]["level_change_mm"], 0.0);
    assert!(of(&out, "breach_started").is_empty());
}

fn minute_flags<'a>(out: &'a [serde_json::Value], analyzer: &str) -> Vec<(i64, &'a str)> {
    of(out, "nmhc_minute")
        .iter()
        .filter(|o| o["analyzer"] == analyzer)
        .map(|o| {
            (
                (o["minute_ms"].as_i64().unwrap() - T0) / MIN,
                o["flag"].as_str().unwrap(),
            )
        })
        .collect()
}

#[test]
fn calibration_gas_is_flagged_c_and_kept_out() {
    let out = replay("calibration.jsonl");
    assert!(of(&out, "nmhc_exceedance_started").is_empty());
    for (m, flag) in minute_flags(&out, "F1/A60") {
        let want = if (10..20).contains(&m) { "C" } else { "N" };
        assert_eq!(flag, want, "minute {m}");
    }
    let hour = of(&out, "nmhc_hour")
        .into_iter()
        .find(|o| o["analyzer"] == "F1/A60" && o["hour_ms"] == T0)
        .unwrap();
    assert_eq!(
        (&hour["valid_minutes"], &hour["avg"], &hour["flag"]),
        (&50.into(), &2.0.into(), &"N".into())
    );
    assert_eq!(hour["flags"][5], 120, "120 samples flagged C");
    let states: Vec<(i64, &str)> = of(&out, "analyzer_state")
        .iter()
        .map(|o| {
            (
                (o["at_ms"].as_i64().unwrap() - T0) / MIN,
                o["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, vec![(10, "calibration"), (20, "normal")]);
}

#[test]
fn a_maintenance_window_flags_m_and_keeps_the_hour_out() {
    let out = replay("maintenance-window.jsonl");
    let started = of(&out, "window_started");
    assert_eq!(started.len(), 1);
    assert_eq!(
        (&started[0]["by"], &started[0]["reason"]),
        (&"Li Na".into(), &"replace the sample pump".into())
    );
    assert_eq!(of(&out, "window_ended").len(), 1);
    assert!(of(&out, "nmhc_exceedance_started").is_empty());
    for (m, flag) in minute_flags(&out, "F1/A60") {
        let want = if (10..30).contains(&m) { "M" } else { "N" };
        assert_eq!(flag, want, "minute {m}");
    }
    let hour = of(&out, "nmhc_hour")
        .into_iter()
        .find(|o| o["analyzer"] == "F1/A60" && o["hour_ms"] == T0)
        .unwrap();
    assert_eq!(hour["valid_minutes"], 40);
    assert!(hour["avg"].is_null());
}

#[test]
fn saturation_keeps_the_exceedance_going_at_the_top_of_the_range() {
    let out = replay("saturation.jsonl");
    assert_eq!(of(&out, "nmhc_exceedance_started").len(), 1);
    assert!(of(&out, "nmhc_exceedance_ended").is_empty());
    let minute = of(&out, "nmhc_minute")
        .into_iter()
        .find(|o| o["analyzer"] == "F1/A60" && o["minute_ms"] == T0 + MIN)
        .unwrap();
    assert_eq!(
        (&minute["avg"], &minute["flag"], &minute["saturated"]),
        (&100.0.into(), &"T".into(), &12.into())
    );
}

#[test]
fn a_minute_with_one_sample_of_sixty_is_not_valid() {
    let out = replay("sparse-minute.jsonl");
    let minutes: Vec<(i64, &str, i64, i64)> = of(&out, "nmhc_minute")
        .iter()
        .filter(|o| o["analyzer"] == "F1/A1")
        .map(|o| {
            (
                (o["minute_ms"].as_i64().unwrap() - T0) / MIN,
                o["flag"].as_str().unwrap(),
                o["samples"].as_i64().unwrap(),
                o["expected"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(minutes[..2], [(0, "D", 1, 60), (1, "N", 60, 60)]);
}

#[test]
fn a_day_with_nineteen_valid_hours_is_not_valid() {
    let out = replay("day-19-valid-hours.jsonl");
    let day = of(&out, "nmhc_day")
        .into_iter()
        .find(|o| o["analyzer"] == "F1/A60" && o["day_ms"] == T0 - 8 * 3_600_000)
        .unwrap();
    assert_eq!(
        (&day["valid_hours"], &day["flag"]),
        (&19.into(), &"D".into())
    );
    assert!(day["avg"].is_null());
}

#[test]
fn clock_jumps_are_records_with_bounded_outputs_and_no_merged_minutes() {
    let out = replay("clock-jumps.jsonl");
    let jumps: Vec<i64> = of(&out, "clock_jump")
        .iter()
        .map(|o| o["size_ms"].as_i64().unwrap())
        .collect();
    let year = 365 * 86_400_000;
    assert_eq!(jumps.len(), 3, "{jumps:?}");
    assert!(
        jumps[0] > year - MIN && jumps[1] <= -year + MIN && jumps[2] < -20 * MIN,
        "{jumps:?}"
    );
    let hours = of(&out, "nmhc_hour").len() + of(&out, "bin_hour").len();
    assert!(hours < 20, "{hours} hour outputs");
    for m in of(&out, "nmhc_minute") {
        assert!(m["samples"].as_i64() <= m["expected"].as_i64(), "{m}");
    }
    // Time already summarised is never summarised again: one output per kind, subject and
    // period.
    let mut keys: Vec<String> = ["nmhc_hour", "bin_hour", "nmhc_day", "bin_day"]
        .iter()
        .flat_map(|kind| {
            of(&out, kind).into_iter().map(move |o| {
                let subject = o["analyzer"].as_str().or(o["bin"].as_str()).unwrap_or("");
                let period = ["hour_ms", "day_ms", "start_ms"]
                    .iter()
                    .find_map(|k| o[*k].as_i64())
                    .unwrap_or(0);
                format!("{kind} {subject} {period}")
            })
        })
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "a period summarised twice: {keys:?}");
    // The step back by a year says from when readings are judged again.
    assert!(of(&out, "clock_jump")
        .iter()
        .any(|o| o["resumes_ms"].as_i64().is_some()));
}

#[test]
fn extreme_times_end_the_replay_with_a_clock_implausible_record() {
    let out = replay("extreme-times.jsonl");
    assert!(!of(&out, "clock_implausible").is_empty());
    assert!(out.len() < 20, "{} outputs", out.len());
}
