//! The seal node as a whole: seal scenarios through conditioning to the register image, the event
//! latch, counters, faults, settings persistence with power cuts, and the embedded-io runner.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use sealwatch_firmware::io::{LoopCurrent, NodeRunner, PinInputs};
use sealwatch_firmware::registers::*;
use sealwatch_firmware::settings::{SettingsStore, Slot, RECORD_LEN};
use sealwatch_firmware::{
    DeviceIdentity, InputSample, Instant, RamStorage, SealNode, Settings, SettingsStorage,
};

fn ms(v: u64) -> Instant {
    Instant::from_millis(v)
}

fn sample(lid_closed: bool, lid_open: bool, gate_open: bool, level_ua: u16) -> InputSample {
    InputSample {
        lid_closed,
        lid_open,
        gate_open,
        level_ua,
    }
}

/// Holds `s` from `from` to `to` ms, sampling every 10 ms.
fn hold<S: SettingsStorage>(n: &mut SealNode<S>, s: InputSample, from: u64, to: u64) {
    let mut t = from;
    while t <= to {
        n.update_inputs(s, ms(t));
        t += 10;
    }
}

fn commissioned() -> SealNode<RamStorage> {
    SealNode::commissioned(
        RamStorage::blank(),
        DeviceIdentity::seal_node("SN-7"),
        golden_settings(),
    )
    .unwrap()
}

fn state<S: SettingsStorage>(n: &SealNode<S>) -> SealState {
    SealState::from_register(n.input_register(IR_SEAL_STATE).unwrap())
}

#[test]
fn charging_cycle_and_breaches_are_latched() {
    let mut n = commissioned();
    hold(&mut n, sample(true, false, false, 12_000), 0, 200);
    assert_eq!(state(&n), SealState::Sealed);
    // Lid opens (travel 2 s), coal goes in, lid closes: charging, one lid cycle.
    hold(&mut n, sample(false, false, false, 12_000), 210, 2_200);
    assert_eq!(state(&n), SealState::Charging);
    hold(&mut n, sample(false, true, false, 12_000), 2_210, 5_000);
    hold(&mut n, sample(false, false, false, 12_000), 5_010, 7_000);
    hold(&mut n, sample(true, false, false, 12_000), 7_010, 7_500);
    assert_eq!(state(&n), SealState::Sealed);
    // Gate opens with the lid closed and enough coal: charging. Then the level drops below the
    // seal minimum (1000 mm = 7.2 mA) with the gate open: breach.
    hold(&mut n, sample(true, false, true, 12_000), 7_510, 8_000);
    assert_eq!(state(&n), SealState::Charging);
    hold(&mut n, sample(true, false, true, 7_000), 8_010, 8_500);
    assert_eq!(state(&n), SealState::Breach);
    assert_eq!(n.seal_verdict().cause, EventCause::LevelBelowSeal);
    // Gate closes again: sealed.
    hold(&mut n, sample(true, false, false, 7_000), 8_510, 9_000);
    assert_eq!(state(&n), SealState::Sealed);

    let u32_at = |a: u16| {
        (u32::from(n.input_register(a).unwrap()) << 16)
            | u32::from(n.input_register(a + 1).unwrap())
    };
    assert_eq!(u32_at(IR_LID_CYCLES), 1);
    assert_eq!(u32_at(IR_BREACH_COUNT), 1);
    assert_eq!(u32_at(IR_UPTIME_S), 9);
    assert_eq!(u32_at(IR_UPTIME_MS), 9_000);
    assert_eq!(n.input_register(IR_LEVEL_MM), Some(938)); // 7 mA of a 5000 mm span
    assert_eq!(n.input_register(IR_LEVEL_RAW_UA), Some(7_000));

    // Latch, newest first: sealed, breach, charging (gate), sealed, charging (lid), sealed.
    let seq = n.input_register(IR_EVENT_SEQ).unwrap();
    assert_eq!(seq, 6);
    let expected = [
        (SealState::Sealed, EventCause::None, 8_560),
        (SealState::Breach, EventCause::LevelBelowSeal, 8_010),
        (SealState::Charging, EventCause::None, 7_560),
        (SealState::Sealed, EventCause::None, 7_060),
        (SealState::Charging, EventCause::None, 260),
        (SealState::Sealed, EventCause::None, 50),
    ];
    for (i, (st, cause, at)) in expected.iter().enumerate() {
        let base = IR_EVENT_LATCH + i as u16 * EVENT_LATCH_STRIDE;
        let reg = |k: u16| n.input_register(base + k).unwrap();
        assert_eq!(reg(0), seq - i as u16, "slot {i} seq");
        assert_eq!(
            SealState::from_register(reg(1) & 0xFF),
            *st,
            "slot {i} state"
        );
        assert_eq!(
            EventCause::from_byte((reg(1) >> 8) as u8),
            *cause,
            "slot {i} cause"
        );
        assert_eq!(
            (u32::from(reg(2)) << 16) | u32::from(reg(3)),
            *at,
            "slot {i} time"
        );
    }
    // Unused slots are empty.
    assert_eq!(
        n.input_register(IR_EVENT_LATCH + 6 * EVENT_LATCH_STRIDE),
        Some(0)
    );
}

#[test]
fn lid_open_with_gate_open_is_an_interlock_breach() {
    let mut n = commissioned();
    hold(&mut n, sample(true, false, true, 12_000), 0, 200);
    assert_eq!(state(&n), SealState::Charging);
    hold(&mut n, sample(false, false, true, 12_000), 210, 400);
    assert_eq!(state(&n), SealState::Breach);
    assert_eq!(n.seal_verdict().cause, EventCause::LidAndGateOpen);
}

#[test]
fn sensor_faults_are_unknown_not_breach() {
    let mut n = commissioned();
    // Both lid switches on: fault at once (after debounce).
    hold(&mut n, sample(true, true, false, 12_000), 0, 200);
    assert_eq!(state(&n), SealState::Unknown);
    assert_eq!(n.fault_bits(), FAULT_LID_SWITCHES);
    assert_eq!(n.discrete_input(DI_LID_FAULT), Some(true));
    // Neither on for longer than the travel time (8 s).
    hold(&mut n, sample(false, false, false, 12_000), 210, 8_200);
    assert_eq!(state(&n), SealState::Charging);
    hold(&mut n, sample(false, false, false, 12_000), 8_210, 8_400);
    assert_eq!(state(&n), SealState::Unknown);
    assert_eq!(n.fault_bits(), FAULT_LID_SWITCHES);
    // Broken level loop with the gate open: unknown, not breach; NE43 low-current bit.
    hold(&mut n, sample(true, false, true, 3_000), 8_410, 8_700);
    assert_eq!(state(&n), SealState::Unknown);
    assert_eq!(n.fault_bits(), FAULT_LEVEL_LOW_CURRENT);
    assert_eq!(n.discrete_input(DI_LEVEL_FAULT), Some(true));
    hold(&mut n, sample(true, false, true, 21_000), 8_710, 8_800);
    assert_eq!(n.fault_bits(), FAULT_LEVEL_HIGH_CURRENT);
    assert_eq!(n.input_register(IR_BREACH_COUNT + 1), Some(0));
}

#[test]
fn a_broken_level_loop_keeps_level_fault_set_and_the_level_register_at_zero_for_as_long_as_it_lasts(
) {
    let mut n = commissioned();
    hold(&mut n, sample(true, false, false, 12_000), 0, 300);
    assert_eq!(n.discrete_input(DI_LEVEL_FAULT), Some(false));
    assert_ne!(n.input_register(IR_LEVEL_MM), Some(0));
    // The wire breaks (0 µA): for the whole minute it stays broken the node says so, and the
    // level register reads 0 — documented as "no level", which the agent reads only together
    // with level_fault and fault_bits.
    for t in (310..60_000).step_by(5_000) {
        hold(&mut n, sample(true, false, true, 0), t, t + 200);
        assert_eq!(n.discrete_input(DI_LEVEL_FAULT), Some(true), "at {t} ms");
        assert_eq!(n.input_register(IR_LEVEL_MM), Some(0), "at {t} ms");
        assert_eq!(n.input_register(IR_LEVEL_RAW_UA), Some(0));
        assert_eq!(
            n.fault_bits() & FAULT_LEVEL_LOW_CURRENT,
            FAULT_LEVEL_LOW_CURRENT
        );
        assert_eq!(state(&n), SealState::Unknown);
    }
    // Mended: the fault clears with the first valid current.
    hold(&mut n, sample(true, false, false, 12_000), 60_300, 60_600);
    assert_eq!(n.discrete_input(DI_LEVEL_FAULT), Some(false));
    assert_eq!(n.fault_bits() & FAULT_LEVEL_LOW_CURRENT, 0);
}

#[test]
fn blank_storage_runs_on_defaults_and_stays_unknown_until_commissioned() {
    let mut n = SealNode::new(RamStorage::blank(), DeviceIdentity::seal_node("SN-8"));
    assert!(!n.is_commissioned());
    assert_eq!(*n.settings(), Settings::DEFAULT);
    hold(&mut n, sample(true, false, false, 12_000), 0, 200);
    assert_eq!(state(&n), SealState::Unknown);
    assert_eq!(n.fault_bits(), FAULT_SETTINGS_DEFAULTED);
    // A technician commits settings over Modbus: unit 1 (default), 8 registers from 0.
    let mut body = vec![1, 0x10, 0x00, 0x00, 0x00, 0x08, 0x10];
    for v in [1u16, 192, 2, 50, 5_000, 1_000, 8_000, COMMIT_MAGIC] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    let req = with_crc(&body);
    let replies = feed_burst(&mut n, &req, ms(300));
    assert_eq!(replies, vec![with_crc(&[1, 0x10, 0x00, 0x00, 0x00, 0x08])]);
    assert!(n.is_commissioned());
    hold(&mut n, sample(true, false, false, 12_000), 400, 500);
    assert_eq!(state(&n), SealState::Sealed);
    assert_eq!(n.fault_bits(), 0);
    // And after a reboot the settings are still there.
    let n2 = SealNode::new(n.release(), DeviceIdentity::seal_node("SN-8"));
    assert!(n2.is_commissioned());
    assert_eq!(n2.settings().seal_level_min_mm, 1_000);
}

/// Storage that loses power in the middle of the `cut_at`-th write, after `bytes` bytes of the
/// record: erase-then-program (rest erased, 0xFF) or program-in-place (rest keeps old bytes).
#[derive(Debug, Clone)]
struct TornStorage {
    inner: RamStorage,
    writes: usize,
    cut_at: usize,
    bytes: usize,
    erase_first: bool,
    dead: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PowerCut;

impl SettingsStorage for TornStorage {
    type Error = PowerCut;
    fn read(&mut self, slot: Slot, record: &mut [u8; RECORD_LEN]) -> Result<(), PowerCut> {
        if self.dead {
            return Err(PowerCut);
        }
        *record = self.inner.slots[slot as usize];
        Ok(())
    }
    fn write(&mut self, slot: Slot, record: &[u8; RECORD_LEN]) -> Result<(), PowerCut> {
        if self.dead {
            return Err(PowerCut);
        }
        self.writes += 1;
        let target = &mut self.inner.slots[slot as usize];
        if self.writes == self.cut_at {
            if self.erase_first {
                *target = [0xFF; RECORD_LEN];
            }
            target[..self.bytes].copy_from_slice(&record[..self.bytes]);
            self.dead = true;
            return Err(PowerCut);
        }
        *target = *record;
        Ok(())
    }
}

fn settings_with(debounce_ms: u16) -> Settings {
    Settings {
        debounce_ms,
        ..golden_settings()
    }
}

fn commit_debounce<S: SettingsStorage>(
    n: &mut SealNode<S>,
    debounce_ms: u16,
    at: Instant,
) -> Vec<Vec<u8>> {
    let mut body = vec![UNIT, 0x10, 0x00, 0x03, 0x00, 0x05, 0x0A];
    for v in [debounce_ms, 5_000, 1_000, 8_000, COMMIT_MAGIC] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    feed_burst(n, &with_crc(&body), at)
}

#[test]
fn power_cut_during_settings_write_keeps_old_settings() {
    for erase_first in [true, false] {
        // The node has been commissioned twice (both slots hold a record), then a third commit
        // is cut after `bytes` bytes.
        for bytes in 0..=RECORD_LEN {
            let storage = TornStorage {
                inner: RamStorage::blank(),
                writes: 0,
                cut_at: 3,
                bytes,
                erase_first,
                dead: false,
            };
            let mut n = SealNode::commissioned(
                storage,
                DeviceIdentity::seal_node("SN-9"),
                settings_with(60),
            )
            .unwrap();
            assert_eq!(commit_debounce(&mut n, 70, ms(0)).len(), 1);
            assert_eq!(n.settings().debounce_ms, 70);
            let replies = commit_debounce(&mut n, 80, ms(100));
            // The node says it failed (exception 04) and keeps running on the old settings.
            assert_eq!(
                replies,
                vec![with_crc(&[UNIT, 0x90, 0x04])],
                "cut after {bytes} bytes"
            );
            assert_eq!(n.settings().debounce_ms, 70);
            // Power comes back: the record that loads is the last complete one (or the torn
            // one if every byte made it).
            let mut storage = n.release();
            storage.dead = false;
            let rebooted = SealNode::new(storage, DeviceIdentity::seal_node("SN-9"));
            let want = if bytes == RECORD_LEN { 80 } else { 70 };
            assert!(rebooted.is_commissioned());
            assert_eq!(
                rebooted.settings().debounce_ms,
                want,
                "erase_first {erase_first}, {bytes} bytes"
            );
        }
    }
}

#[test]
fn power_cut_during_first_write_gives_defaults() {
    for bytes in 0..RECORD_LEN {
        let storage = TornStorage {
            inner: RamStorage::blank(),
            writes: 0,
            cut_at: 1,
            bytes,
            erase_first: true,
            dead: false,
        };
        let (mut store, loaded) = SettingsStore::open(storage);
        assert_eq!(loaded, None);
        assert!(store.save(&settings_with(60)).is_err());
        let mut storage = store.release();
        storage.dead = false;
        let rebooted = SealNode::new(storage, DeviceIdentity::seal_node("SN-9"));
        assert!(!rebooted.is_commissioned(), "{bytes} bytes");
        assert_eq!(*rebooted.settings(), Settings::DEFAULT);
        assert_eq!(
            rebooted.fault_bits() & FAULT_SETTINGS_DEFAULTED,
            FAULT_SETTINGS_DEFAULTED
        );
    }
}

// ---- the embedded-io runner with mock peripherals ----

#[derive(Clone, Default)]
struct Line {
    rx: Rc<RefCell<VecDeque<u8>>>,
    tx: Rc<RefCell<Vec<u8>>>,
}

impl embedded_io::ErrorType for Line {
    type Error = Infallible;
}
impl embedded_io::Read for Line {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut rx = self.rx.borrow_mut();
        let n = buf.len().min(rx.len());
        for b in buf.iter_mut().take(n) {
            *b = rx.pop_front().unwrap();
        }
        Ok(n)
    }
}
impl embedded_io::ReadReady for Line {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.rx.borrow().is_empty())
    }
}
impl embedded_io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.tx.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

#[derive(Clone)]
struct Pin(Rc<RefCell<bool>>);
impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}
impl embedded_hal::digital::InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(*self.0.borrow())
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!*self.0.borrow())
    }
}

#[derive(Clone)]
struct Loop(Rc<RefCell<u16>>);
impl LoopCurrent for Loop {
    type Error = Infallible;
    fn read_microamps(&mut self) -> Result<u16, Infallible> {
        Ok(*self.0.borrow())
    }
}

#[test]
fn runner_drives_the_node_from_pins_and_uart() {
    let line = Line::default();
    let pin = |v| Pin(Rc::new(RefCell::new(v)));
    let (closed, open, gate) = (pin(true), pin(false), pin(false));
    let level = Loop(Rc::new(RefCell::new(12_000)));
    let inputs = PinInputs::new(closed.clone(), open.clone(), gate.clone(), level.clone());
    let mut runner = NodeRunner::new(line.clone(), inputs, commissioned());
    let mut t = 0;
    let mut run_until = |runner: &mut NodeRunner<_, _, _>, until: u64| {
        while t <= until {
            runner.step(ms(t)).unwrap();
            t += 10;
        }
    };
    run_until(&mut runner, 200);
    // Lid opens, gate opens: interlock breach.
    *closed.0.borrow_mut() = false;
    *open.0.borrow_mut() = true;
    *gate.0.borrow_mut() = true;
    run_until(&mut runner, 400);
    line.rx
        .borrow_mut()
        .extend(with_crc(&[UNIT, 0x04, 0x00, 0x02, 0x00, 0x01]));
    run_until(&mut runner, 420);
    assert_eq!(
        *line.tx.borrow(),
        with_crc(&[UNIT, 0x04, 0x02, 0x00, SealState::Breach as u8])
    );
    let _ = Duration::ZERO;
}
