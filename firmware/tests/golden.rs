//! Golden frames against the seal node's RTU slave: every function code and exception, fed whole,
//! byte by byte and split at every offset; wrong unit, broadcast, bad CRC, garbage before a frame.

mod common;

use std::time::Duration;

use common::golden::{self, Fixture, Golden, ALL};
use common::*;
use sealwatch_firmware::modbus::{decode_rtu, PduBuf, Request, Response};
use sealwatch_firmware::registers::{COIL_IDENTIFY, COIL_SERVICE_MODE};
use sealwatch_firmware::Instant;

fn us(v: u64) -> Duration {
    Duration::from_micros(v)
}

fn expect(g: &Golden, how: &str, replies: &[Vec<u8>]) {
    let want: Vec<Vec<u8>> = g.reply.iter().map(|r| r.to_vec()).collect();
    assert_eq!(replies, want.as_slice(), "{} fed {how}", g.name);
}

#[test]
fn golden_crcs_match_the_crate() {
    for g in ALL {
        for frame in std::iter::once(g.request).chain(g.reply) {
            let body = &frame[..frame.len() - 2];
            let crc = sealwatch_firmware::modbus::crc::crc16(body);
            assert_eq!(crc.to_le_bytes(), frame[frame.len() - 2..], "{}", g.name);
        }
    }
}

#[test]
fn golden_fed_whole() {
    for g in ALL {
        let mut n = node(g.fixture);
        expect(g, "whole", &feed_burst(&mut n, g.request, T0));
    }
}

#[test]
fn golden_fed_byte_by_byte() {
    for g in ALL {
        let mut n = node(g.fixture);
        // One character time at 19200 baud apart: ~573 µs.
        let timed: Vec<_> = g
            .request
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, T0.plus(us(573 * i as u64))))
            .collect();
        expect(g, "byte by byte", &feed_timed(&mut n, &timed));
    }
}

#[test]
fn golden_split_at_every_offset() {
    for g in ALL {
        for split in 1..g.request.len() {
            let mut n = node(g.fixture);
            // The second part arrives 1.5 ms later: within a frame at 19200 (t3.5 ≈ 2.0 ms).
            let timed: Vec<_> = g
                .request
                .iter()
                .enumerate()
                .map(|(i, &b)| (b, if i < split { T0 } else { T0.plus(us(1_500)) }))
                .collect();
            expect(g, &format!("split at {split}"), &feed_timed(&mut n, &timed));
        }
    }
}

#[test]
fn golden_replies_parse_as_answers_to_their_requests() {
    for g in ALL {
        let Some(reply) = g.reply else { continue };
        let (_, req_pdu) = decode_rtu(g.request).unwrap();
        let (_, rsp_pdu) = decode_rtu(reply).unwrap();
        match Request::parse(req_pdu) {
            Ok(req) => {
                let rsp =
                    Response::parse(&req, rsp_pdu).unwrap_or_else(|e| panic!("{}: {e}", g.name));
                let mut again = PduBuf::new();
                rsp.encode(&mut again).unwrap();
                assert_eq!(again.as_slice(), rsp_pdu, "{}: re-encoded", g.name);
                let mut req_again = PduBuf::new();
                req.encode(&mut req_again).unwrap();
                assert_eq!(
                    req_again.as_slice(),
                    req_pdu,
                    "{}: request re-encoded",
                    g.name
                );
            }
            // Requests the slave rejects while parsing answer exactly that exception.
            Err(code) => assert_eq!(rsp_pdu, [req_pdu[0] | 0x80, code.code()], "{}", g.name),
        }
    }
}

#[test]
fn writes_take_effect() {
    let mut n = node(Fixture::Commissioned);
    feed_burst(&mut n, golden::WRITE_SINGLE_COIL_REQ, T0);
    assert_eq!(n.coil(COIL_SERVICE_MODE), Some(true));
    feed_burst(
        &mut n,
        golden::WRITE_MULTIPLE_REGISTERS_REQ,
        T0.plus(us(100_000)),
    );
    // Staged, not in effect.
    assert_eq!(n.staged_settings().level_span_mm, 6_000);
    assert_eq!(n.settings().level_span_mm, 5_000);
    feed_burst(&mut n, golden::COMMIT_SETTINGS_REQ, T0.plus(us(200_000)));
    let s = *n.settings();
    assert_eq!(
        (
            s.debounce_ms,
            s.level_span_mm,
            s.seal_level_min_mm,
            s.travel_time_ms
        ),
        (100, 6_000, 1_500, 9_000)
    );
}

#[test]
fn rejected_commit_changes_nothing() {
    let mut n = node(Fixture::Commissioned);
    let before = *n.settings();
    feed_burst(&mut n, golden::EXC_03_COMMIT_INCONSISTENT_REQ, T0);
    assert_eq!((*n.settings(), *n.staged_settings()), (before, before));
    let mut f = node(Fixture::FailingStorage);
    feed_burst(&mut f, golden::EXC_04_STORAGE_FAILS_REQ, T0);
    assert_eq!(*f.settings(), before);
}

#[test]
fn broadcast_write_is_applied_without_reply() {
    let mut n = node(Fixture::Commissioned);
    assert!(feed_burst(&mut n, golden::BROADCAST_WRITE_REQ, T0).is_empty());
    assert_eq!(n.coil(COIL_IDENTIFY), Some(true));
}

#[test]
fn bad_crc_is_dropped_silently() {
    for g in ALL {
        for i in 0..g.request.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = g.request.to_vec();
                bad[i] ^= flip;
                // A corrupted frame that happens to contain another valid frame is not "bad".
                if has_valid_window(&bad, &[UNIT, 0]) {
                    continue;
                }
                let mut n = node(g.fixture);
                let replies = feed_burst(&mut n, &bad, T0);
                assert!(
                    replies.is_empty(),
                    "{}: byte {i} ^ {flip:#04x} answered {replies:02X?}",
                    g.name
                );
            }
        }
    }
}

#[test]
fn bad_crc_then_good_frame_is_answered() {
    let mut bad = golden::READ_HOLDING_REGISTERS_REQ.to_vec();
    *bad.last_mut().unwrap() ^= 0x55;
    let mut n = node(Fixture::Commissioned);
    let mut stream = bad.clone();
    stream.extend_from_slice(golden::READ_INPUT_REGISTERS_REQ);
    assert_eq!(
        feed_burst(&mut n, &stream, T0),
        vec![golden::READ_INPUT_REGISTERS_RSP.to_vec()]
    );
    assert!(n.frame_counters().crc_errors >= 1);
}

#[test]
fn garbage_before_a_frame_resyncs() {
    let garbage: &[&[u8]] = &[
        &[0x00],
        &[0xFF, 0xFF, 0xFF],
        &[0x11],
        &[0x11, 0x03],
        &[0x11, 0x03, 0x00, 0x00],
        &[0x11, 0x90, 0x42],
        // A write-multiple header whose byte count swallows the real frame: found at silence.
        &[0x11, 0x10, 0x00, 0x00, 0x00, 0x10, 0x20],
        &[0x11, 0x10, 0x00, 0x00, 0x00, 0x01, 0xFF],
        &[0x11, 0x2B, 0x0D],
        &[0x11, 0x41, 0x00, 0x01],
        b"noise on the line",
    ];
    for g in ALL.iter().filter(|g| g.fixture == Fixture::Commissioned) {
        for junk in garbage {
            let mut stream = junk.to_vec();
            stream.extend_from_slice(g.request);
            let mut n = node(g.fixture);
            expect(
                g,
                &format!("after garbage {junk:02X?}"),
                &feed_burst(&mut n, &stream, T0),
            );
        }
    }
}

#[test]
fn back_to_back_frames_are_all_answered() {
    let mut n = node(Fixture::Commissioned);
    let mut stream = Vec::new();
    for g in [
        golden::READ_COILS_REQ,
        golden::DIAGNOSTICS_ECHO_REQ,
        golden::READ_INPUT_REGISTERS_REQ,
    ] {
        stream.extend_from_slice(g);
    }
    assert_eq!(
        feed_burst(&mut n, &stream, T0),
        vec![
            golden::READ_COILS_RSP.to_vec(),
            golden::DIAGNOSTICS_ECHO_RSP.to_vec(),
            golden::READ_INPUT_REGISTERS_RSP.to_vec()
        ]
    );
}

#[test]
fn silence_inside_a_frame_drops_it() {
    let req = golden::READ_HOLDING_REGISTERS_REQ;
    let mut n = node(Fixture::Commissioned);
    // 5 ms gap after the 4th byte: longer than t3.5 at 19200 (2.0 ms), so two broken frames.
    let timed: Vec<_> = req
        .iter()
        .enumerate()
        .map(|(i, &b)| (b, if i < 4 { T0 } else { T0.plus(us(5_000)) }))
        .collect();
    assert!(feed_timed(&mut n, &timed).is_empty());
    // The line recovers with the next frame.
    let later = T0.plus(us(100_000));
    assert_eq!(
        feed_burst(&mut n, req, later),
        vec![golden::READ_HOLDING_REGISTERS_RSP.to_vec()]
    );
}

#[test]
fn unknown_function_ends_at_silence_with_exception_01() {
    let req = with_crc(&[UNIT, 0x41, 0x01, 0x02, 0x03]);
    let mut n = node(Fixture::Commissioned);
    let mut replies = Vec::new();
    for &b in &req {
        assert!(n.on_byte(b, T0).is_none());
    }
    // Not before the silence has passed...
    assert!(n.poll(T0.plus(us(1_000))).is_none());
    if let Some(r) = n.poll(T0.plus(us(3_000))) {
        replies.push(r.to_vec());
    }
    assert_eq!(replies, vec![with_crc(&[UNIT, 0xC1, 0x01])]);
}

#[test]
fn unit_change_takes_effect_after_commit_and_reply_uses_old_unit() {
    let mut n = node(Fixture::Commissioned);
    let write_unit = with_crc(&[UNIT, 0x06, 0x00, 0x00, 0x00, 0x05]);
    assert_eq!(
        feed_burst(&mut n, &write_unit, T0),
        vec![write_unit.clone()]
    );
    assert_eq!(n.unit_id().get(), UNIT, "staged only");
    let commit = with_crc(&[UNIT, 0x06, 0x00, 0x07, 0xC0, 0xDE]);
    assert_eq!(
        feed_burst(&mut n, &commit, T0.plus(us(100_000))),
        vec![commit.clone()]
    );
    assert_eq!(n.unit_id().get(), 5);
    assert!(
        n.take_line_change().is_none(),
        "baud and parity did not change"
    );
    let read_old = with_crc(&[UNIT, 0x03, 0x00, 0x00, 0x00, 0x01]);
    assert!(feed_burst(&mut n, &read_old, T0.plus(us(200_000))).is_empty());
    let read_new = with_crc(&[5, 0x03, 0x00, 0x00, 0x00, 0x01]);
    assert_eq!(
        feed_burst(&mut n, &read_new, T0.plus(us(300_000))),
        vec![with_crc(&[5, 0x03, 0x02, 0x00, 0x05])]
    );
}

#[test]
fn baud_change_is_reported_to_the_board() {
    let mut n = node(Fixture::Commissioned);
    let req = with_crc(&[
        UNIT, 0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x04, 0x80, 0x00, 0x00,
    ]);
    feed_burst(&mut n, &req, T0);
    let commit = with_crc(&[UNIT, 0x06, 0x00, 0x07, 0xC0, 0xDE]);
    feed_burst(&mut n, &commit, T0.plus(us(100_000)));
    assert_eq!(
        n.take_line_change(),
        Some((
            sealwatch_firmware::BaudRate::B115200,
            sealwatch_firmware::Parity::None
        ))
    );
    assert_eq!(n.take_line_change(), None);
}

#[test]
fn handle_pdu_serves_tcp_style_requests() {
    use sealwatch_firmware::PduAnswer;
    let mut n = node(Fixture::Commissioned);
    let mut out = PduBuf::new();
    assert_eq!(
        n.handle_pdu(UNIT, &[0x04, 0x00, 0x02, 0x00, 0x01], &mut out),
        PduAnswer::Reply
    );
    assert_eq!(out.as_slice(), [0x04, 0x02, 0x00, 0x01]);
    assert_eq!(
        n.handle_pdu(3, &[0x04, 0x00, 0x02, 0x00, 0x01], &mut out),
        PduAnswer::NotAddressed
    );
    assert_eq!(
        n.handle_pdu(0, &[0x05, 0x00, 0x00, 0xFF, 0x00], &mut out),
        PduAnswer::Broadcast
    );
    assert!(out.is_empty());
    assert_eq!(n.coil(0), Some(true));
    let _ = Instant::ZERO;
}
