//! HJ 212 end to end: the agent delivers NMHC minute values to the stand-in platform
//! (`sealwatch-sim platform`) through an outage, an unanswered upload, a history request and a
//! time-set request. Hourly (2061) frames need an hour of readings: they are covered by the
//! agent's unit tests (`uplink::hj212::tests`), which build them from an `NmhcHour` output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sealwatch_agent::store::Store;

use crate::harness::{binary, small_site, start_agent, wait_until, Proc, Sim};

const MN: &str = "010000A8900016F000169DC0";

/// The stand-in platform, running as `sealwatch-sim platform`.
struct Platform {
    proc: Proc,
    address: String,
    record: PathBuf,
}

impl Platform {
    fn start(dir: &Path) -> Platform {
        let ready = dir.join("platform-ready.json");
        let record = dir.join("platform.jsonl");
        let mut cmd = Command::new(binary("sealwatch-sim"));
        cmd.arg("platform")
            .arg("--record")
            .arg(&record)
            .arg("--ready-file")
            .arg(&ready);
        let (proc, doc) = Proc::spawn_ready("platform", cmd, &ready);
        Platform {
            proc,
            address: doc["address"].as_str().expect("address").to_owned(),
            record,
        }
    }

    fn command(&mut self, line: &str) -> String {
        self.proc.command(line)
    }

    fn entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn uplink_toml(&self) -> String {
        format!(
            "\n[[uplink.hj212]]\nname = \"prov\"\naddress = \"{}\"\npw = \"123456\"\ntimeout_s = 2\nretries = 2\nreconnect_max_s = 2\nrealtime_s = 5\nmn = {{ \"F1/NMHC\" = \"{MN}\" }}\n",
            self.address
        )
    }
}

fn cp(entry: &serde_json::Value, name: &str) -> Option<String> {
    entry["cp"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str().map(str::to_owned))
}

/// The stored NMHC minute values: (minute_ms, avg, flag).
fn minutes(db: &Path) -> Vec<(i64, Option<f64>, String)> {
    if !db.exists() {
        return Vec::new();
    }
    let Ok(store) = Store::open_read_only(db) else {
        return Vec::new();
    };
    store
        .outputs(0, i64::MAX, Some("nmhc_minute"))
        .unwrap_or_default()
        .iter()
        .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .map(|v| {
            (
                v["minute_ms"].as_i64().unwrap(),
                v["avg"].as_f64(),
                v["flag"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn minute_values_survive_an_outage_and_arrive_in_order_with_history_and_time_requests_answered() {
    let dir = tempfile::tempdir().unwrap();
    let placeholder = small_site(dir.path(), &Default::default());
    let _sim = Sim::start(dir.path(), &placeholder, &[]);
    let mut platform = Platform::start(dir.path());
    platform.command("down");
    let config = small_site(dir.path(), &_sim.buses);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&platform.uplink_toml());
    std::fs::write(&config, text).unwrap();
    let tz = sealwatch_agent::config::load(&config)
        .unwrap()
        .site
        .time_zone;
    let data_time = |ms: i64| {
        let local = sealwatch_agent::rules::time::local_text(tz, ms);
        let digits: String = local[..16].chars().filter(char::is_ascii_digit).collect();
        digits + "00"
    };
    let db = dir.path().join("site.db");
    let mut agent = start_agent(&config);

    // Platform down: minute values pile up in the store.
    wait_until(Duration::from_secs(150), "two NMHC minute values", || {
        (minutes(&db).len() >= 2).then_some(())
    });
    assert!(
        platform.entries().is_empty(),
        "nothing arrives while the platform is down"
    );

    // Back up, ignoring the first upload: it comes again with the same QN.
    platform.command("no-ack 1");
    platform.command("up");
    let stored = minutes(&db);
    let entries = wait_until(
        Duration::from_secs(40),
        "the backlog at the platform",
        || {
            let e = platform.entries();
            let acked = e.iter().filter(|e| e["acked"] == true).count();
            (acked >= stored.len()).then_some(e)
        },
    );
    let data: Vec<&serde_json::Value> = entries.iter().filter(|e| e["kind"] == "data").collect();
    assert_eq!(data[0]["acked"], false, "first upload ignored");
    assert_eq!(data[1]["qn"], data[0]["qn"], "resent with the same QN");
    assert_eq!(data[1]["raw"], data[0]["raw"]);
    let acked: Vec<&&serde_json::Value> = data.iter().filter(|e| e["acked"] == true).collect();
    for (i, (minute_ms, avg, flag)) in stored.iter().enumerate() {
        let e = acked[i];
        assert_eq!(
            (e["cn"].as_str(), e["mn"].as_str(), e["flag"].as_u64()),
            (Some("2051"), Some(MN), Some(5))
        );
        assert_eq!(
            cp(e, "DataTime"),
            Some(data_time(*minute_ms)),
            "in order, original DataTime"
        );
        assert_eq!(cp(e, "a24088-Avg"), avg.map(|a| format!("{a:.3}")));
        assert_eq!(cp(e, "a24088-Flag").as_deref(), Some(flag.as_str()));
        // The analyzer's methane and total hydrocarbons travel in the same frame.
        assert!(
            cp(e, "a05002-Flag").is_some() && cp(e, "a24087-Flag").is_some(),
            "{e}"
        );
    }
    // Real-time values (2011) every 5 s, no acknowledgement asked.
    let realtime: Vec<serde_json::Value> = platform
        .entries()
        .into_iter()
        .filter(|e| e["kind"] == "realtime")
        .collect();
    let last = realtime.last().expect("real-time frames while connected");
    assert_eq!(
        (last["cn"].as_str(), last["flag"].as_u64()),
        (Some("2011"), Some(4))
    );
    let rtd: f64 = cp(last, "a24088-Rtd")
        .expect("NMHC real-time value")
        .parse()
        .unwrap();
    assert!((0.5..5.0).contains(&rtd), "baseline NMHC, got {rtd}");
    assert!(cp(last, "a05002-Rtd").is_some(), "{last}");
    let qns: Vec<&str> = acked.iter().map(|e| e["qn"].as_str().unwrap()).collect();
    assert!(
        qns.windows(2).all(|w| w[0] < w[1]),
        "one QN per value: {qns:?}"
    );

    // History of what was delivered.
    let (first, last) = (stored[0].0, stored[stored.len() - 1].0);
    let answer = platform.command(&format!(
        "history 2051 {} {}",
        data_time(first),
        data_time(last)
    ));
    let qn = answer.rsplit(' ').next().unwrap().to_owned();
    let replies = wait_until(Duration::from_secs(20), "the history answer", || {
        let r: Vec<serde_json::Value> = platform
            .entries()
            .into_iter()
            .filter(|e| e["kind"] == "reply" && e["qn"] == qn.as_str())
            .collect();
        r.iter().any(|e| e["cn"] == "9012").then_some(r)
    });
    let cns: Vec<&str> = replies.iter().map(|e| e["cn"].as_str().unwrap()).collect();
    let mut expected = vec!["9011"];
    expected.extend(std::iter::repeat_n("2051", stored.len()));
    expected.push("9012");
    assert_eq!(cns, expected);
    assert_eq!(cp(&replies[1], "DataTime"), Some(data_time(first)));
    assert_eq!(
        cp(&replies[replies.len() - 1], "ExeRtn").as_deref(),
        Some("1")
    );

    // A time-set request is answered, recorded as evidence, and not applied.
    let answer = platform.command("time-set 20200101000000");
    let qn = answer.rsplit(' ').next().unwrap().to_owned();
    let replies = wait_until(Duration::from_secs(20), "the time-set answer", || {
        let r: Vec<serde_json::Value> = platform
            .entries()
            .into_iter()
            .filter(|e| e["kind"] == "reply" && e["qn"] == qn.as_str())
            .collect();
        (r.len() >= 2).then_some(r)
    });
    assert_eq!(cp(&replies[1], "ExeRtn").as_deref(), Some("2"));
    let record = wait_until(Duration::from_secs(10), "the time-set evidence", || {
        Store::open_read_only(&db)
            .ok()?
            .last_evidence_of("platform_time_set")
            .ok()?
    });
    assert!(record.body.contains("\"applied\":false"), "{}", record.body);

    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status}\n{}", agent.stderr());
    // The stored position covers at least every value the platform acknowledged.
    let cursor = Store::open_read_only(&db)
        .unwrap()
        .uplink_cursor("hj212:prov")
        .unwrap();
    let ids = sealwatch_agent::uplink::hj212::values_after(
        &Store::open_read_only(&db).unwrap(),
        0,
        10_000,
    )
    .unwrap();
    assert!(cursor >= ids[stored.len() - 1].id as u64, "cursor {cursor}");
}
