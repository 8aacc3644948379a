//! Frame assembler + slave + node on arbitrary input. Bytes come in pairs (timing, byte): the
//! timing selects the gap before the byte (none, within a frame, just past t3.5, long). Checks:
//! no panic; every reply is a well-formed frame from our unit with a good CRC, answering a
//! CRC-valid frame for our unit (same function code) that was really on the line.
#![no_main]

use core::time::Duration;

use libfuzzer_sys::fuzz_target;
use sealwatch_firmware::modbus::crc::crc_ok;
use sealwatch_firmware::modbus::UnitId;
use sealwatch_firmware::{
    BaudRate, DeviceIdentity, InputSample, Instant, Parity, RamStorage, SealNode, Settings,
};

const UNIT: u8 = 17;

fuzz_target!(|data: &[u8]| {
    let settings = Settings {
        unit_id: UnitId::new(UNIT).unwrap(),
        baud: BaudRate::B19200,
        parity: Parity::Even,
        debounce_ms: 50,
        level_span_mm: 5_000,
        seal_level_min_mm: 1_000,
        travel_time_ms: 8_000,
    };
    let Ok(mut node) = SealNode::commissioned(
        RamStorage::blank(),
        DeviceIdentity::seal_node("FUZZ"),
        settings,
    ) else {
        return;
    };
    let sample = InputSample {
        lid_closed: true,
        lid_open: false,
        gate_open: false,
        level_ua: 12_000,
    };
    let mut now = Instant::from_millis(1);
    node.update_inputs(sample, now);
    let mut history: Vec<u8> = Vec::with_capacity(data.len() / 2);
    for pair in data.chunks_exact(2) {
        let gap = match pair[0] % 4 {
            0 => 0,
            1 => 500,
            2 => 2_100,
            _ => 30_000,
        };
        now = now.plus(Duration::from_micros(gap));
        let byte = pair[1];
        history.push(byte);
        let reply = node.on_byte(byte, now).or_else(|| node.poll(now));
        // The unit may have changed by a commit in the stream; replies come from the unit the
        // request was addressed to.
        if let Some(r) = reply {
            assert!(r.len() >= 5 && crc_ok(&r), "malformed reply {r:02X?}");
            let fc = r[1] & 0x7F;
            let found = (0..history.len()).any(|i| {
                (i + 4..=history.len().min(i + 256)).any(|j| {
                    let w = &history[i..j];
                    w[0] == r[0] && w[1] == fc && crc_ok(w)
                })
            });
            assert!(found, "reply {r:02X?} without a valid request");
        }
        if pair[0] & 0x80 != 0 {
            node.update_inputs(
                InputSample {
                    lid_closed: byte & 1 != 0,
                    lid_open: byte & 2 != 0,
                    gate_open: byte & 4 != 0,
                    level_ua: u16::from(byte) * 100,
                },
                now,
            );
        }
    }
});
