//! The sim's Modbus TCP endpoints: a device answers what the plant model holds, and, when told
//! to, only after a device-like reply delay.

use std::path::Path;
use std::time::{Duration, Instant};

use sealwatch_agent::config;
use sealwatch_agent::poll::plan::plan_reads;
use sealwatch_sim::scenario::Scenario;
use sealwatch_sim::serve::{self, SimOptions};
use tokio_modbus::client::Reader;
use tokio_modbus::Slave;

/// Reads a seal node's first planned block from the demo plant's furnace-top bus; returns the
/// words and how long the answer took.
async fn read_first_block(reply_delay: Duration) -> (Vec<u16>, Duration) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.toml");
    let site = config::load(&demo).expect("the demo configuration loads");
    let options = SimOptions {
        reply_delay,
        ..SimOptions::default()
    };
    let sim = serve::start(&site, Scenario::default(), options)
        .await
        .expect("the sim starts");
    let address = sim.addresses["furnace-top"];
    let device = &site.devices[0];
    let read = plan_reads(&device.profile.points, 8)
        .into_iter()
        .find(|r| r.table == sealwatch_agent::config::profile::Table::Input)
        .expect("a seal node has input registers");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(device.unit.get()));
    let started = Instant::now();
    let words = ctx
        .read_input_registers(read.start(), read.count())
        .await
        .expect("transport")
        .expect("no exception");
    let took = started.elapsed();
    sim.stop();
    assert_eq!(words.len(), usize::from(read.count()));
    (words, took)
}

#[tokio::test]
async fn a_device_answers_after_its_reply_delay() {
    let (words, _) = read_first_block(Duration::ZERO).await;
    let (delayed, took) = read_first_block(Duration::from_millis(80)).await;
    assert!(took >= Duration::from_millis(80), "answered after {took:?}");
    assert_eq!(delayed.len(), words.len());
}
