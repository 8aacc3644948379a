//! The bus task over an RTU link on an in-memory pipe, against a scripted slave.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use sealwatch_firmware::modbus::{encode_rtu, AduBuf, UnitId};
use sealwatch_firmware::registers::Table;
use sealwatch_firmware::{BaudRate, Parity};
use tokio::io::duplex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BusPoller, Scheduled};
use crate::config::profile::{PointDef, Profile, ValueType, WordOrder};
use crate::config::{BusConfig, DataBits, SerialSettings, StopBits, Transport};
use crate::modbus::testing::{link, reply, reply_as, slave, TestLink, T};
use crate::model::{Fault, Outcome, PointTable, Reading};
use crate::state::{DeviceHealth, PlantState};

fn point(name: &str, address: u16) -> PointDef {
    PointDef {
        name: name.to_owned(),
        table: Table::Input,
        address,
        value_type: ValueType::U16,
        word_order: WordOrder::Abcd,
        scale: 1.0,
        offset: 0.0,
        unit: None,
        range_min: None,
        range_max: None,
        fault: None,
        status: None,
    }
}

struct Harness {
    readings: mpsc::Receiver<Vec<Reading>>,
    state: PlantState,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How long a unit that timed out is quieted in these tests.
const QUIET: Duration = Duration::from_millis(200);

/// A bus task polling units `units` (two input registers each, every 100 ms) over `link`.
fn poll_bus(
    link: TestLink,
    units: &[u8],
    timeout: Duration,
    degrade_after: u32,
    probe: Duration,
) -> Harness {
    let profile = Arc::new(Profile {
        name: "t".to_owned(),
        description: String::new(),
        points: vec![point("a", 0), point("b", 1)],
    });
    let mut table = PointTable::default();
    let mut devices = Vec::new();
    let mut health = Vec::new();
    for (d, &unit) in units.iter().enumerate() {
        let name = format!("u{unit}");
        table.push_device(
            &name,
            profile
                .points
                .iter()
                .map(|p| (p.name.as_str(), None, (None, None))),
        );
        devices.push(Scheduled::new(
            d,
            &name,
            UnitId::new(unit).unwrap(),
            profile.clone(),
            Duration::from_millis(100),
            8,
        ));
        health.push(DeviceHealth {
            unit,
            ..DeviceHealth::default()
        });
    }
    let bus = BusConfig {
        name: "line-1".to_owned(),
        transport: Transport::Rtu(SerialSettings {
            port: "/dev/ttyTEST".to_owned(),
            baud: BaudRate::B115200,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
        }),
        timeout,
        max_gap: 8,
        degrade_after,
        probe_interval: probe,
        quiet_after_timeout: QUIET,
    };
    let state = PlantState::new(health, table.points.len(), 0);
    let (tx, rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let poller = BusPoller::new(bus, link, devices, &Arc::new(table), &state, &tx);
    let task = tokio::spawn(poller.run(stop.clone()));
    Harness {
        readings: rx,
        state,
        stop,
        task,
    }
}

impl Harness {
    /// Waits (at most 10 s) for a reading of point `point` that `test` accepts.
    async fn wait_for(&mut self, point: u32, test: impl Fn(&Outcome) -> bool) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(batch) = self.readings.recv().await {
                if batch.iter().any(|r| r.point.0 == point && test(&r.outcome)) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no such reading of point {point}");
    }

    async fn stop(self) -> PlantState {
        self.stop.cancel();
        self.task.await.unwrap();
        self.state
    }
}

#[tokio::test]
async fn a_port_that_vanishes_is_reopened_with_backoff_and_polling_resumes() {
    let (first, first_slave) = duplex(4096);
    let (second, second_slave) = duplex(4096);
    let gone = || Err(io::Error::new(io::ErrorKind::NotFound, "no such device"));
    let l = link(
        BaudRate::B115200,
        QUIET,
        vec![Ok(first), gone(), gone(), Ok(second)],
    );
    // The first adapter answers three requests, then is unplugged.
    let (_a, _ta) = slave(first_slave, 3, |_, req| (Duration::ZERO, reply(req)));
    let (_b, _tb) = slave(second_slave, usize::MAX, |_, req| {
        (Duration::ZERO, reply_as(req[0], req))
    });
    let mut h = poll_bus(l, &[4], T, 3, Duration::from_secs(5));
    h.wait_for(0, |o| *o == Outcome::Value(4000.0)).await;
    h.wait_for(0, |o| *o == Outcome::Fault(Fault::Io)).await;
    h.wait_for(0, |o| *o == Outcome::Fault(Fault::NotConnected))
        .await;
    h.wait_for(1, |o| *o == Outcome::Value(4001.0)).await;
    let state = h.stop().await;
    let health = &state.snapshot().devices[0];
    // The unplug, and two failed reopens.
    assert_eq!(health.io_errors, 3, "{health:?}");
    assert!(health.connected);
}

#[tokio::test]
async fn a_silent_unit_is_degraded_and_costs_one_timeout_per_probe_period() {
    let (ours, theirs) = duplex(4096);
    let l = link(BaudRate::B115200, QUIET, vec![Ok(ours)]);
    // Unit 2 never answers.
    let (log, _task) = slave(theirs, usize::MAX, |_, req| {
        if req[0] == 2 {
            (Duration::ZERO, Vec::new())
        } else {
            (Duration::ZERO, reply(req))
        }
    });
    let timeout = Duration::from_millis(50);
    let probe = Duration::from_millis(500);
    let mut h = poll_bus(l, &[1, 2], timeout, 2, probe);
    h.wait_for(2, |o| *o == Outcome::Fault(Fault::Degraded))
        .await;
    let since = Instant::now();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let state = h.stop().await;
    let log = log.lock().unwrap().clone();
    let to = |unit: u8| {
        log.requests
            .iter()
            .filter(|(at, r)| *at >= since && r[0] == unit)
            .count()
    };
    // 1.6 s at one probe per 0.5 s: at most 4 probes of the silent unit …
    assert!(to(2) <= 4, "{} requests to the silent unit", to(2));
    // … while the live unit keeps its 100 ms cadence.
    assert!(to(1) >= 13, "{} requests to the live unit", to(1));
    let snap = state.snapshot();
    assert!(snap.devices[1].degraded && !snap.devices[0].degraded);
    assert_eq!(snap.devices[0].timeouts, 0);
}

#[tokio::test]
async fn discarded_frames_are_counted_against_the_unit_they_carry() {
    let (ours, theirs) = duplex(4096);
    let l = link(BaudRate::B115200, QUIET, vec![Ok(ours)]);
    // Every answer to unit 1 is preceded by a stray reply from unit 2; every third answer to unit
    // 2 has a bad CRC.
    let (_log, _task) = slave(theirs, usize::MAX, |n, req| {
        let mut bytes = reply(req);
        if req[0] == 1 {
            bytes = [reply_as(2, req), bytes].concat();
        } else if n % 3 == 0 {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
        (Duration::ZERO, bytes)
    });
    let mut h = poll_bus(l, &[1, 2], T, 100, Duration::from_secs(5));
    for _ in 0..6 {
        h.wait_for(0, |o| *o == Outcome::Value(1000.0)).await;
    }
    let snap = h.stop().await.snapshot();
    let (one, two) = (&snap.devices[0], &snap.devices[1]);
    assert_eq!(one.bad_frames, 0, "{one:?}");
    assert_eq!(one.crc_errors, 0, "{one:?}");
    assert!(two.bad_frames >= 5, "{two:?}");
    assert!(two.crc_errors >= 1, "{two:?}");
}

#[tokio::test]
async fn a_late_unit_is_never_answered_by_its_own_previous_reply() {
    let (ours, theirs) = duplex(4096);
    let l = link(BaudRate::B115200, QUIET, vec![Ok(ours)]);
    let timeout = Duration::from_millis(80);
    // Unit 2 answers every request 130 ms late (after the timeout, and after its next poll is
    // due: it is polled every 100 ms), each time with a new value (the request's number). Taken
    // as the answer to its next request (same function, same length), the stale value would be
    // stored as a reading.
    let (_log, _task) = slave(theirs, usize::MAX, move |n, req| {
        if req[0] == 2 {
            let pdu = [0x04, 4, 0, n as u8, 0, n as u8];
            let mut adu = AduBuf::new();
            encode_rtu(2, &pdu, &mut adu).unwrap();
            (Duration::from_millis(130), adu.to_vec())
        } else {
            (Duration::ZERO, reply(req))
        }
    });
    let mut h = poll_bus(l, &[1, 2], timeout, 100, Duration::from_secs(5));
    let mut unit2 = Vec::new();
    let mut unit1_values = 0;
    let collect = async {
        while let Some(batch) = h.readings.recv().await {
            for r in batch {
                match r.point.0 {
                    0 | 1 if matches!(r.outcome, Outcome::Value(_)) => unit1_values += 1,
                    2 | 3 => unit2.push(r.outcome),
                    _ => {}
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), collect).await;
    assert!(unit2.len() >= 6, "{unit2:?}");
    assert!(
        unit2.iter().all(|o| *o == Outcome::Fault(Fault::Timeout)),
        "a stale reply was taken: {unit2:?}"
    );
    assert!(unit1_values >= 10, "{unit1_values}");
    let snap = h.stop().await.snapshot();
    assert!(snap.devices[1].late_replies >= 3, "{:?}", snap.devices[1]);
    assert_eq!(snap.devices[0].bad_frames, 0, "{:?}", snap.devices[0]);
}
