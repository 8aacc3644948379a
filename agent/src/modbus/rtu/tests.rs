//! The RTU link over `tokio::io::duplex`, against a scripted slave that answers with the
//! firmware crate's own slave code (and then misbehaves on purpose).

use std::time::Duration;

use sealwatch_firmware::modbus::{encode_rtu, read_request, AduBuf, ExceptionCode};
use sealwatch_firmware::registers::Table;
use sealwatch_firmware::BaudRate;
use tokio::time::Instant;

use super::super::testing::{
    input, open_link, reply, reply_as, resign, slave, slave_taking_turns, unit, Turns, T,
};
use super::super::{Answer, BadFrame, HeardKind, Link, LinkError};

#[tokio::test]
async fn registers_and_bits_come_back_through_the_firmware_codec() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let (_log, _task) = slave(io, usize::MAX, |_, req| (Duration::ZERO, reply(req)));
    assert_eq!(
        l.call(unit(3), &input(0, 3), T).await,
        Ok(Answer::Words(vec![3000, 3001, 3002]))
    );
    let bits = read_request(Table::DiscreteInput, 0, 5).unwrap();
    assert_eq!(
        l.call(unit(3), &bits, T).await,
        Ok(Answer::Bits(vec![false, true, false, true, false]))
    );
    // An exception is an answer: the link says which, and stays.
    let e = l.call(unit(3), &input(99, 2), T).await.unwrap_err();
    assert_eq!(
        e,
        LinkError::Exception {
            unit: unit(3),
            code: ExceptionCode::IllegalDataAddress
        }
    );
    assert!(e.is_answer() && e.survives());
    assert!(l.take_heard().is_empty());
}

#[tokio::test]
async fn a_reply_from_another_unit_is_discarded_and_counted_never_taken() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    // Unit 5's reply comes first, then unit 3's own.
    let (_log, _task) = slave(io, usize::MAX, |_, req| {
        let mut bytes = reply_as(5, req);
        bytes.extend(reply(req));
        (Duration::ZERO, bytes)
    });
    assert_eq!(
        l.call(unit(3), &input(0, 2), T).await,
        Ok(Answer::Words(vec![3000, 3001]))
    );
    let heard = l.take_heard();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!((heard[0].unit, heard[0].kind), (5, HeardKind::BadFrame));
    assert_eq!(heard[0].why, "unit 3: reply for unit 5 discarded");
}

#[tokio::test]
async fn only_a_wrong_unit_answering_is_a_bad_frame_not_a_timeout() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let (_log, _task) = slave(io, usize::MAX, |_, req| (Duration::ZERO, reply_as(9, req)));
    let e = l.call(unit(3), &input(0, 2), T).await.unwrap_err();
    assert_eq!(
        e,
        LinkError::BadFrame {
            unit: unit(3),
            why: BadFrame::WrongUnit { got: 9 }
        }
    );
    assert!(e.survives());
}

#[tokio::test]
async fn a_reply_of_the_wrong_length_is_a_bad_frame_and_before_an_answer_voids_it() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let (_log, _task) = slave(io, usize::MAX, |n, req| {
        let mut shorter = req.to_vec();
        shorter[5] -= 1; // one register fewer
        let wrong_length = reply(&resign(&shorter));
        let bytes = match n {
            // A frame of another read's length, then one that fits: out of step.
            0 => [wrong_length, reply(req)].concat(),
            _ => wrong_length,
        };
        (Duration::ZERO, bytes)
    });
    let e = l.call(unit(3), &input(0, 2), T).await.unwrap_err();
    assert!(matches!(e, LinkError::LateReply { .. }), "{e}");
    let heard = l.take_heard();
    assert!(
        heard[0]
            .why
            .starts_with("unit 3: reply discarded: expected byte count 4, got 2"),
        "{heard:?}"
    );
    assert_eq!(heard.last().map(|h| h.kind), Some(HeardKind::Late));
    // Only a wrong-length frame: a bad frame at the timeout — a reply came, so not a timeout.
    let started = Instant::now();
    let e = l.call(unit(3), &input(0, 2), T).await.unwrap_err();
    assert!(started.elapsed() >= T);
    assert!(
        matches!(
            e,
            LinkError::BadFrame {
                why: BadFrame::Mismatch(_),
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_late_reply_waiting_in_the_input_is_flushed_not_taken_as_the_next_answer() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let late = Duration::from_millis(150);
    let (_log, _task) = slave(io, usize::MAX, move |n, req| match n {
        // The first answer comes after the master gave up, with unit 7's values.
        0 => (late, reply_as(7, req)),
        _ => (Duration::ZERO, reply(req)),
    });
    let short = Duration::from_millis(100);
    let e = l.call(unit(3), &input(0, 2), short).await.unwrap_err();
    assert!(e.is_silence(), "{e}");
    // The unit is quieted; the next call waits for that, and the late reply is flushed.
    assert!(l.quiet_until(unit(3)).is_some());
    assert_eq!(
        l.call(unit(3), &input(0, 2), T).await,
        Ok(Answer::Words(vec![3000, 3001]))
    );
    let heard = l.take_heard();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!((heard[0].unit, heard[0].kind), (7, HeardKind::Late));
    assert_eq!(
        heard[0].why,
        "unit 7: late reply flushed before the next request"
    );
}

/// The defect of issue 15: a single-threaded device answers one register 2.5 timeouts late;
/// the old link asked again after one more timeout, and the late answer (same function, same
/// length) was taken for the next read's.
#[tokio::test]
async fn an_answer_later_than_two_timeouts_is_never_taken_for_the_next_read() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let timeout = Duration::from_millis(80);
    // Register 50 answers after 200 ms; the device does nothing else meanwhile.
    let (_log, _task) = slave_taking_turns(io, usize::MAX, Turns::OneAtATime, |_, req| {
        let slow = req[3] == 50;
        let delay = if slow {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        (delay, reply(req))
    });
    let mut wrong = Vec::new();
    let mut right = 0;
    for round in 0..8 {
        let (start, read) = if round % 2 == 0 {
            (50, input(50, 1))
        } else {
            (0, input(0, 1))
        };
        match l.call(unit(3), &read, timeout).await {
            Ok(Answer::Words(w)) if w == [3000 + start] => right += 1,
            Ok(other) => wrong.push((start, other)),
            Err(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "answers taken for the wrong read: {wrong:?}"
    );
    assert!(right >= 3, "only {right} right answers");
    assert!(
        l.take_heard().iter().any(|h| h.kind == HeardKind::Late),
        "the late answers were never noticed"
    );
}

#[tokio::test]
async fn bytes_after_an_answer_void_it_and_quiet_the_unit() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let (_log, _task) = slave(io, usize::MAX, |n, req| match n {
        0 => (Duration::ZERO, [reply(req), reply(req)].concat()),
        _ => (Duration::ZERO, reply(req)),
    });
    let e = l.call(unit(3), &input(0, 2), T).await.unwrap_err();
    assert!(
        matches!(e, LinkError::LateReply { .. }) && e.survives(),
        "{e}"
    );
    assert!(l.quiet_until(unit(3)).is_some());
    assert_eq!(
        l.call(unit(3), &input(0, 2), T).await,
        Ok(Answer::Words(vec![3000, 3001]))
    );
}

#[tokio::test]
async fn a_corrupt_crc_is_a_bad_frame_named_with_both_crcs_and_ends_before_the_timeout() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
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
    let e = l.call(unit(3), &input(0, 2), long).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "ended at the receive gap, not the timeout: {:?}",
        started.elapsed()
    );
    let why = e.to_string();
    assert!(
        why.starts_with("unit 3: bad reply: CRC expected 0x"),
        "{why}"
    );
    let heard = l.take_heard();
    assert_eq!(heard.len(), 1);
    assert!(
        heard[0].kind == HeardKind::Crc && heard[0].unit == 3,
        "{heard:?}"
    );
    // The port is kept, and the next exchange is clean.
    assert!(e.survives());
    assert_eq!(
        l.call(unit(3), &input(0, 2), T).await,
        Ok(Answer::Words(vec![3000, 3001]))
    );
}

#[tokio::test]
async fn garbage_instead_of_a_reply_is_a_bad_frame_not_a_crash() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let (_log, _task) = slave(io, usize::MAX, |n, req| match n {
        0 => (
            Duration::ZERO,
            vec![0xFF, 0x00, 0x13, 0x37, 0xDE, 0xAD, 0xBE, 0xEF, 0x42],
        ),
        _ => (Duration::ZERO, reply(req)),
    });
    let e = l
        .call(unit(3), &input(0, 2), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(e, LinkError::BadFrame { .. }), "{e}");
    assert_eq!(
        l.call(unit(3), &input(0, 2), T).await,
        Ok(Answer::Words(vec![3000, 3001]))
    );
}

#[tokio::test]
async fn every_request_follows_t3_5_of_silence_on_the_line() {
    // 9600 baud: t3.5 = 38.5 bits = 4.01 ms.
    let (mut l, io) = open_link(BaudRate::B9600).await;
    let (log, _task) = slave(io, usize::MAX, |_, req| (Duration::ZERO, reply(req)));
    for _ in 0..5 {
        assert!(l.call(unit(3), &input(0, 2), T).await.is_ok());
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
async fn any_request_of_the_codec_goes_out_framed() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    let (log, _task) = slave(io, usize::MAX, |_, req| {
        // Echo a write single register.
        let mut adu = AduBuf::new();
        encode_rtu(req[0], &req[1..6], &mut adu).unwrap();
        (Duration::ZERO, adu.to_vec())
    });
    let write = sealwatch_firmware::modbus::Request::WriteSingleRegister {
        address: 5,
        value: 0x1234,
    };
    assert_eq!(l.call(unit(3), &write, T).await, Ok(Answer::Written));
    let sent = log.lock().unwrap().requests[0].1.clone();
    assert_eq!(&sent[..6], &[3, 0x06, 0x00, 0x05, 0x12, 0x34]);
}

#[tokio::test]
async fn a_closed_port_is_an_io_failure_that_closes_the_link() {
    let (mut l, io) = open_link(BaudRate::B115200).await;
    drop(io);
    let e = l.call(unit(3), &input(0, 2), T).await.unwrap_err();
    assert_eq!(e.to_string(), "/dev/ttyTEST: closed (adapter unplugged?)");
    assert!(!e.survives() && !l.is_open());
    let e = l.open(T).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot open /dev/ttyTEST: unplugged; is the adapter plugged in and the path right?"
    );
}
