//! The RTU link and the bus task over `tokio::io::duplex`, against a scripted slave that answers
//! with the firmware crate's own slave code (and then misbehaves on purpose).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sealwatch_firmware::modbus::{
    encode_rtu, serve_pdu, Bits, DataModel, ExceptionCode, PduBuf, Words,
};
use tokio::io::{duplex, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::profile::{PointDef, Profile, ValueType, WordOrder};
use crate::config::{BusConfig, Transport};
use crate::poll::bus::{BusPoller, Scheduled};
use crate::poll::reading::{Outcome, Reading};
use crate::poll::{PointInfo, PointTable};
use crate::state::{DeviceHealth, PlantState};

/// A slave whose input register `a` holds `unit * 1000 + a`; discrete input `a` is `a` odd.
struct Regs {
    unit: u8,
}

impl DataModel for Regs {
    fn read_coil(&self, _: u16) -> Result<bool, ExceptionCode> {
        Err(ExceptionCode::IllegalDataAddress)
    }
    fn read_discrete_input(&self, a: u16) -> Result<bool, ExceptionCode> {
        Ok(a % 2 == 1)
    }
    fn read_holding_register(&self, _: u16) -> Result<u16, ExceptionCode> {
        Err(ExceptionCode::IllegalDataAddress)
    }
    fn read_input_register(&self, a: u16) -> Result<u16, ExceptionCode> {
        if a < 100 {
            Ok(u16::from(self.unit) * 1000 + a)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }
    fn write_coils(&mut self, _: u16, _: Bits<'_>) -> Result<(), ExceptionCode> {
        Err(ExceptionCode::IllegalFunction)
    }
    fn write_registers(&mut self, _: u16, _: Words<'_>) -> Result<(), ExceptionCode> {
        Err(ExceptionCode::IllegalFunction)
    }
    fn device_id_object(&self, _: u8) -> Option<&[u8]> {
        None
    }
}

/// The ADU a correct slave answers to request ADU `req`, as unit `as_unit`.
fn reply_as(as_unit: u8, req: &[u8]) -> Vec<u8> {
    let pdu = &req[1..req.len() - 2];
    let mut out = PduBuf::new();
    serve_pdu(&mut Regs { unit: as_unit }, pdu, false, &mut out);
    let mut adu = AduBuf::new();
    encode_rtu(as_unit, &out, &mut adu).unwrap();
    adu.to_vec()
}

fn reply(req: &[u8]) -> Vec<u8> {
    reply_as(req[0], req)
}

/// What the slave saw: when each request arrived and when its answer was written.
#[derive(Debug, Clone, Default)]
struct SlaveLog {
    requests: Vec<(Instant, Vec<u8>)>,
    answered: Vec<Instant>,
}

type Answer = (Duration, Vec<u8>);

/// A slave on `io`: reads 8-byte requests, answers what `answer(n, request)` says after its delay
/// (delayed answers go out on their own, while later requests are answered). Stops (dropping its
/// end: the "adapter" is gone) after `limit` requests.
fn slave(
    io: DuplexStream,
    limit: usize,
    mut answer: impl FnMut(usize, &[u8]) -> Answer + Send + 'static,
) -> (Arc<Mutex<SlaveLog>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(SlaveLog::default()));
    let shared = log.clone();
    let task = tokio::spawn(async move {
        let (mut rx, tx) = tokio::io::split(io);
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        let mut req = [0u8; 8];
        for n in 0..limit {
            if rx.read_exact(&mut req).await.is_err() {
                return;
            }
            shared
                .lock()
                .unwrap()
                .requests
                .push((Instant::now(), req.to_vec()));
            let (delay, bytes) = answer(n, &req);
            let (tx, log) = (tx.clone(), shared.clone());
            let send = async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if !bytes.is_empty() {
                    let _ = tx.lock().await.write_all(&bytes).await;
                }
                log.lock().unwrap().answered.push(Instant::now());
            };
            if delay.is_zero() {
                send.await;
            } else {
                tokio::spawn(send);
            }
        }
    });
    (log, task)
}

type TestLink = RtuLink<DuplexStream, Box<dyn FnMut() -> io::Result<DuplexStream> + Send>>;

/// A link at `baud` that opens the ports in `ports`, in order, and then fails.
fn link(baud: u32, ports: Vec<io::Result<DuplexStream>>) -> TestLink {
    let mut ports: VecDeque<_> = ports.into();
    RtuLink::new(
        "/dev/ttyTEST",
        baud,
        Box::new(move || {
            ports
                .pop_front()
                .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::NotFound, "unplugged")))
        }),
    )
}

async fn open_link(baud: u32) -> (TestLink, DuplexStream) {
    let (ours, theirs) = duplex(4096);
    let mut l = link(baud, vec![Ok(ours)]);
    l.open(1, Duration::from_secs(1)).await.unwrap();
    (l, theirs)
}

fn input(start: u16, count: u16) -> ReadRequest {
    ReadRequest {
        table: Table::Input,
        start,
        count,
        points: (0..usize::from(count)).collect(),
    }
}

const T: Duration = Duration::from_millis(300);

#[tokio::test]
async fn registers_and_bits_come_back_through_the_firmware_codec() {
    let (mut l, io) = open_link(115_200).await;
    let (_log, _task) = slave(io, usize::MAX, |_, req| (Duration::ZERO, reply(req)));
    assert_eq!(
        l.read(3, &input(0, 3), T).await,
        ReadResult::Words(vec![3000, 3001, 3002])
    );
    let bits = ReadRequest {
        table: Table::DiscreteInput,
        start: 0,
        count: 5,
        points: vec![0],
    };
    assert_eq!(
        l.read(3, &bits, T).await,
        ReadResult::Words(vec![0, 1, 0, 1, 0])
    );
    // An exception is an answer, not a fault.
    assert_eq!(l.read(3, &input(99, 2), T).await, ReadResult::Exception(2));
    assert!(l.take_discarded().is_empty());
}

#[tokio::test]
async fn a_reply_from_another_unit_is_discarded_and_counted_never_taken() {
    let (mut l, io) = open_link(115_200).await;
    // Unit 5's reply comes first (a late reply), then unit 3's own.
    let (_log, _task) = slave(io, usize::MAX, |_, req| {
        let mut bytes = reply_as(5, req);
        bytes.extend(reply(req));
        (Duration::ZERO, bytes)
    });
    assert_eq!(
        l.read(3, &input(0, 2), T).await,
        ReadResult::Words(vec![3000, 3001])
    );
    let discarded = l.take_discarded();
    assert_eq!(
        discarded,
        vec![Discarded {
            unit: 5,
            crc: false,
            why: "unit 3: reply for unit 5 discarded".to_owned()
        }]
    );
}

#[tokio::test]
async fn a_reply_of_the_wrong_length_or_function_is_discarded_and_the_wait_goes_on() {
    let (mut l, io) = open_link(115_200).await;
    let (_log, _task) = slave(io, usize::MAX, |n, req| {
        let mut shorter = req.to_vec();
        shorter[5] -= 1; // one register fewer
        let wrong_length = reply(&resign(&shorter));
        let wrong_function = {
            // A well-formed 0x03 reply with the right length.
            let pdu = [0x03, 4, 0, 1, 0, 2];
            let mut adu = AduBuf::new();
            encode_rtu(req[0], &pdu, &mut adu).unwrap();
            adu.to_vec()
        };
        let bytes = match n {
            0 => [wrong_length, reply(req)].concat(),
            _ => wrong_function,
        };
        (Duration::ZERO, bytes)
    });
    assert_eq!(
        l.read(3, &input(0, 2), T).await,
        ReadResult::Words(vec![3000, 3001])
    );
    let d = l.take_discarded();
    assert_eq!(d.len(), 1);
    assert!(
        d[0].why
            .starts_with("unit 3: reply discarded: expected byte count 4, got 2"),
        "{d:?}"
    );
    // Nothing else comes: the wrong-function frame is discarded and the read times out.
    let started = Instant::now();
    let r = l.read(3, &input(0, 2), T).await;
    assert!(started.elapsed() >= T);
    assert_eq!(
        r,
        ReadResult::Fault(
            Fault::Timeout,
            "unit 3: no reply within 300 ms to input 0+2".to_owned()
        )
    );
    let d = l.take_discarded();
    assert!(d[0].why.contains("expected function code 0x04"), "{d:?}");
}

/// `req` with its CRC recomputed.
fn resign(req: &[u8]) -> Vec<u8> {
    let mut adu = AduBuf::new();
    encode_rtu(req[0], &req[1..req.len() - 2], &mut adu).unwrap();
    adu.to_vec()
}

#[tokio::test]
async fn a_late_reply_waiting_in_the_input_is_flushed_not_taken_as_the_next_answer() {
    let (mut l, io) = open_link(115_200).await;
    let late = Duration::from_millis(150);
    let (_log, _task) = slave(io, usize::MAX, move |n, req| match n {
        // The first answer comes after the master gave up: as unit 3, with unit 7's values.
        0 => (late, reply_as(7, req)),
        _ => (Duration::ZERO, reply(req)),
    });
    let short = Duration::from_millis(100);
    assert!(matches!(
        l.read(3, &input(0, 2), short).await,
        ReadResult::Fault(Fault::Timeout, _)
    ));
    // Let the late reply land in the input buffer before the next request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        l.read(3, &input(0, 2), T).await,
        ReadResult::Words(vec![3000, 3001])
    );
    assert_eq!(
        l.take_discarded(),
        vec![Discarded {
            unit: 7,
            crc: false,
            why: "unit 7: late reply flushed before the next request".to_owned()
        }]
    );
}

#[tokio::test]
async fn a_corrupt_crc_is_a_bad_frame_named_with_both_crcs_and_ends_before_the_timeout() {
    let (mut l, io) = open_link(115_200).await;
    let (_log, _task) = slave(io, usize::MAX, |n, req| {
        let mut bytes = reply(req);
        if n == 0 {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x5A;
        }
        (Duration::ZERO, bytes)
    });
    let long = Duration::from_secs(2);
    let started = Instant::now();
    let r = l.read(3, &input(0, 2), long).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "ended at the receive gap, not the timeout: {:?}",
        started.elapsed()
    );
    let ReadResult::Fault(Fault::BadFrame, why) = r else {
        panic!("{r:?}")
    };
    assert!(why.starts_with("unit 3: CRC expected 0x"), "{why}");
    let d = l.take_discarded();
    assert_eq!(d.len(), 1);
    assert!(d[0].crc && d[0].unit == 3 && d[0].why == why, "{d:?}");
    // The port is kept, and the next exchange is clean.
    assert!(l.survives(Fault::BadFrame));
    assert_eq!(
        l.read(3, &input(0, 2), T).await,
        ReadResult::Words(vec![3000, 3001])
    );
}

#[tokio::test]
async fn garbage_instead_of_a_reply_is_a_bad_frame_not_a_crash() {
    let (mut l, io) = open_link(115_200).await;
    let (_log, _task) = slave(io, usize::MAX, |n, req| match n {
        0 => (
            Duration::ZERO,
            vec![0xFF, 0x00, 0x13, 0x37, 0xDE, 0xAD, 0xBE, 0xEF, 0x42],
        ),
        _ => (Duration::ZERO, reply(req)),
    });
    let r = l.read(3, &input(0, 2), Duration::from_secs(2)).await;
    assert!(matches!(r, ReadResult::Fault(Fault::BadFrame, _)), "{r:?}");
    assert_eq!(
        l.read(3, &input(0, 2), T).await,
        ReadResult::Words(vec![3000, 3001])
    );
}

#[tokio::test]
async fn every_request_follows_t3_5_of_silence_on_the_line() {
    // 9600 baud: t3.5 = 38.5 bits = 4.01 ms.
    let (mut l, io) = open_link(9600).await;
    let (log, _task) = slave(io, usize::MAX, |_, req| (Duration::ZERO, reply(req)));
    for _ in 0..5 {
        assert!(matches!(
            l.read(3, &input(0, 2), T).await,
            ReadResult::Words(_)
        ));
    }
    let log = log.lock().unwrap().clone();
    for (answered, (next, _)) in log.answered.iter().zip(log.requests.iter().skip(1)) {
        let gap = next.duration_since(*answered);
        assert!(
            gap >= Duration::from_micros(4_010),
            "only {gap:?} of silence"
        );
    }
}

#[tokio::test]
async fn a_closed_port_is_an_io_fault_that_closes_the_link() {
    let (mut l, io) = open_link(115_200).await;
    drop(io);
    let r = l.read(3, &input(0, 2), T).await;
    assert_eq!(
        r,
        ReadResult::Fault(
            Fault::Io,
            "/dev/ttyTEST closed (adapter unplugged?)".to_owned()
        )
    );
    assert!(!l.survives(Fault::Io));
    l.close();
    let e = l.open(1, T).await.unwrap_err();
    assert_eq!(
        e,
        "cannot open /dev/ttyTEST: unplugged; is the adapter plugged in and the path right?"
    );
}

// The bus task over an RTU link.

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
        table.device_base.push(table.points.len() as u32);
        for (i, p) in profile.points.iter().enumerate() {
            table.points.push(PointInfo {
                key: format!("u{unit}/{}", p.name),
                device: d,
                index: i,
                unit: None,
                range: (None, None),
            });
        }
        devices.push(Scheduled::new(
            d,
            &format!("u{unit}"),
            unit,
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
        transport: Transport::Rtu(crate::config::SerialSettings {
            port: "/dev/ttyTEST".to_owned(),
            baud: 115_200,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        }),
        timeout,
        max_gap: 8,
        degrade_after,
        probe_interval: probe,
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
    let l = link(115_200, vec![Ok(first), gone(), gone(), Ok(second)]);
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
    let l = link(115_200, vec![Ok(ours)]);
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
    let l = link(115_200, vec![Ok(ours)]);
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
    let l = link(115_200, vec![Ok(ours)]);
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
    assert!(snap.devices[1].bad_frames >= 3, "{:?}", snap.devices[1]);
    assert_eq!(snap.devices[0].bad_frames, 0, "{:?}", snap.devices[0]);
}
