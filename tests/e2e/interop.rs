//! Interoperability: the agent polls an independent Modbus TCP server (pymodbus).

use std::process::Command;
use std::time::Duration;

use sealwatch_agent::model::{Fault, Flag, Outcome};

use crate::harness::{python, start_agent, stored, wait_until, workspace, Proc};

#[test]
fn the_agent_reads_exactly_what_pymodbus_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("tests/peers/pymodbus_tcp_server.py"));
    let peer = Proc::spawn("pymodbus server", cmd);
    let hello: serde_json::Value =
        wait_until(Duration::from_secs(30), "pymodbus to listen", || {
            peer.stdout_lines()
                .first()
                .and_then(|l| serde_json::from_str(l).ok())
        });
    let port = hello["port"].as_u64().expect("port");
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(
        dir.path().join("profiles/peer.toml"),
        r#"description = "pymodbus peer"
[[points]]
name = "f32_cdab"
table = "holding"
address = 0
type = "f32"
word_order = "CDAB"
[[points]]
name = "i32_abcd"
table = "holding"
address = 2
type = "i32"
word_order = "ABCD"
[[points]]
name = "u16"
table = "holding"
address = 4
"#,
    )
    .unwrap();
    let devices: String = [(1, "good"), (2, "refusing"), (3, "slow")]
        .iter()
        .map(|(unit, name)| format!("[[devices]]\nname = \"{name}\"\nbus = \"peer\"\nunit_id = {unit}\nprofile = \"peer\"\npoll_interval_ms = 300\n\n"))
        .collect();
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nid = \"interop\"\nname = \"Interop\"\npermit_number = \"X\"\npermit_class = \"key\"\n\n[store]\npath = \"site.db\"\ncommit_interval_ms = 200\n\n[status]\nlisten = \"\"\n\n[[buses]]\nname = \"peer\"\ntype = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout_ms = 500\n\n{devices}"
        ),
    )
    .unwrap();
    crate::harness::ensure_key(dir.path());
    let _agent = start_agent(&config);
    let db = dir.path().join("site.db");
    let value_of = |point: &str| -> Option<f64> {
        stored(&db, point)
            .iter()
            .find_map(|r| match (r.outcome, r.flag) {
                (Outcome::Value(v), Flag::N) => Some(v),
                _ => None,
            })
    };
    let f32v = wait_until(Duration::from_secs(20), "the f32 CDAB value", || {
        value_of("good/f32_cdab")
    });
    assert_eq!(f32v, hello["f32"].as_f64().unwrap());
    assert_eq!(value_of("good/i32_abcd"), hello["i32"].as_f64());
    assert_eq!(value_of("good/u16"), hello["u16"].as_f64());
    // An exception from the device is an exception outcome (flag D), not a communication fault.
    wait_until(
        Duration::from_secs(20),
        "exception 04 from the refusing unit",
        || {
            stored(&db, "refusing/u16")
                .iter()
                .any(|r| {
                    r.outcome
                        == Outcome::Exception(
                            sealwatch_firmware::modbus::ExceptionCode::ServerDeviceFailure,
                        )
                        && r.flag == Flag::D
                })
                .then_some(())
        },
    );
    // A reply later than the bus timeout is a timeout (flag B).
    wait_until(
        Duration::from_secs(20),
        "a timeout from the slow unit",
        || {
            stored(&db, "slow/u16")
                .iter()
                .any(|r| r.outcome == Outcome::Fault(Fault::Timeout) && r.flag == Flag::B)
                .then_some(())
        },
    );
    // The slow unit never poisons the good unit's values.
    let good: Vec<f64> = stored(&db, "good/i32_abcd")
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Value(v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(
        good.iter().all(|v| *v == hello["i32"].as_f64().unwrap()),
        "{good:?}"
    );
}
