//! The seal node: conditioning, register image, settings and the RTU slave of one coal bin, tied
//! together behind a small sans-I/O API.
//!
//! Feed it samples ([`SealNode::update_inputs`]) and received bytes ([`SealNode::on_byte`]), let
//! time pass ([`SealNode::poll`]), and send whatever reply frame comes back. A Modbus TCP server
//! calls [`SealNode::handle_pdu`] instead. `now` is the time since the node powered up: it is the
//! uptime, and the time base of the event latch.
//!
//! Invariants:
//! - the register image is computed from the conditioned state on every read, so it can never
//!   disagree with it;
//! - settings written by a technician are staged; they take effect only after a successful commit
//!   (valid as a whole and persisted); a reply to a request that changes the unit id or line
//!   settings still goes out with the old ones;
//! - the event latch keeps the last [`EVENT_LATCH_LEN`] seal-state changes with sequence numbers
//!   1, 2, … 65535, 1, … (0 marks an empty slot).

use core::time::Duration;

use crate::modbus::frame::FrameAssembler;
use crate::modbus::pdu::{Bits, ExceptionCode, Words};
use crate::modbus::slave::{serve_pdu, DataModel, RtuSlave};
use crate::modbus::{AduBuf, PduBuf, UnitId, BROADCAST_UNIT};
use crate::registers::*;
use crate::seal::LevelFault;
use crate::seal::{
    seal_state, Debouncer, LevelReading, LidMonitor, LidPosition, SealInputs, SealVerdict,
};
use crate::settings::{BaudRate, Parity, SaveError, Settings, SettingsStorage, SettingsStore};
use crate::time::Instant;

/// Firmware version as exposed in [`IR_FIRMWARE_VERSION`]: major in the high byte, minor low.
pub const FIRMWARE_VERSION: u16 = {
    const fn parse(s: &str) -> u16 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut v = 0u16;
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as u16;
            i += 1;
        }
        v
    }
    (parse(env!("CARGO_PKG_VERSION_MAJOR")) << 8) | (parse(env!("CARGO_PKG_VERSION_MINOR")) & 0xFF)
};

/// Longest serial number a node reports.
pub const SERIAL_MAX_LEN: usize = 32;

/// One raw sample of the bin's sensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputSample {
    /// Lid-closed limit switch on.
    pub lid_closed: bool,
    /// Lid-open limit switch on.
    pub lid_open: bool,
    /// Charging-gate switch on (gate open).
    pub gate_open: bool,
    /// Level transmitter loop current, µA.
    pub level_ua: u16,
}

/// What the node answers to Read Device Identification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Object 0x00, vendor name.
    pub vendor: &'static str,
    /// Object 0x01, product code.
    pub product_code: &'static str,
    /// Object 0x02, major.minor revision.
    pub revision: &'static str,
    /// Object 0x04, product name.
    pub product_name: &'static str,
    /// Object 0x80 (private), serial number of this node.
    pub serial: heapless::String<SERIAL_MAX_LEN>,
}

impl DeviceIdentity {
    /// The sealwatch seal node with serial number `serial` (cut to [`SERIAL_MAX_LEN`] bytes).
    pub fn seal_node(serial: &str) -> Self {
        let mut s = heapless::String::new();
        for c in serial.chars() {
            if s.push(c).is_err() {
                break;
            }
        }
        DeviceIdentity {
            vendor: "sealwatch",
            product_code: "SW-SN1",
            revision: env!("CARGO_PKG_VERSION"),
            product_name: "sealwatch seal node",
            serial: s,
        }
    }
}

/// One latched seal event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SealEvent {
    /// Sequence number, 1–65535 (0 = empty).
    pub seq: u16,
    /// New seal state in the low byte, [`EventCause`] in the high byte.
    pub kind: u16,
    /// Node uptime when it happened, ms (wraps).
    pub at_ms: u32,
}

impl SealEvent {
    /// The new seal state.
    pub const fn state(&self) -> SealState {
        SealState::from_register(self.kind & 0xFF)
    }

    /// Why.
    pub const fn cause(&self) -> EventCause {
        EventCause::from_byte((self.kind >> 8) as u8)
    }
}

/// Ring of the last [`EVENT_LATCH_LEN`] seal events.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventLatch {
    slots: [SealEvent; EVENT_LATCH_LEN as usize],
    /// Index of the newest event.
    head: usize,
    seq: u16,
}

impl EventLatch {
    const fn new() -> Self {
        EventLatch {
            slots: [SealEvent {
                seq: 0,
                kind: 0,
                at_ms: 0,
            }; EVENT_LATCH_LEN as usize],
            head: 0,
            seq: 0,
        }
    }

    fn push(&mut self, verdict: SealVerdict, now: Instant) {
        self.seq = if self.seq == u16::MAX {
            1
        } else {
            self.seq + 1
        };
        self.head = (self.head + 1) % self.slots.len();
        self.slots[self.head] = SealEvent {
            seq: self.seq,
            kind: verdict.state as u16 | (verdict.cause as u16) << 8,
            at_ms: now.as_millis() as u32,
        };
    }

    /// Event `i`, 0 = newest.
    fn get(&self, i: usize) -> SealEvent {
        let n = self.slots.len();
        self.slots[(self.head + n - (i % n)) % n]
    }
}

/// What [`SealNode::handle_pdu`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduAnswer {
    /// `out` holds the response PDU.
    Reply,
    /// A broadcast: applied, not answered.
    Broadcast,
    /// Addressed to another unit: ignored.
    NotAddressed,
}

/// The parts of the node a Modbus request can see and change.
struct NodeModel<S> {
    store: SettingsStore<S>,
    active: Settings,
    staged: Settings,
    commissioned: bool,
    settings_changed: bool,
    identity: DeviceIdentity,
    coils: [bool; COIL_COUNT as usize],
    lid_closed: Debouncer,
    lid_open: Debouncer,
    gate: Debouncer,
    lid_monitor: LidMonitor,
    lid: LidPosition,
    level: LevelReading,
    verdict: SealVerdict,
    lid_was_open: bool,
    lid_cycles: u32,
    breach_count: u32,
    events: EventLatch,
    now: Instant,
}

/// A seal node: one coal bin's conditioning, register image, settings and Modbus RTU slave.
pub struct SealNode<S> {
    slave: RtuSlave,
    model: NodeModel<S>,
    silence_override: Option<Duration>,
    line: (BaudRate, Parity),
    line_change: Option<(BaudRate, Parity)>,
}

impl<S: SettingsStorage> SealNode<S> {
    /// A node that loads its settings from `storage`; blank or corrupt storage gives
    /// [`Settings::DEFAULT`], [`FAULT_SETTINGS_DEFAULTED`] and an unknown seal state until a
    /// technician commits settings.
    pub fn new(storage: S, identity: DeviceIdentity) -> Self {
        let (store, loaded) = SettingsStore::open(storage);
        let settings = loaded.unwrap_or(Settings::DEFAULT);
        let model = NodeModel {
            store,
            active: settings,
            staged: settings,
            commissioned: loaded.is_some(),
            settings_changed: false,
            identity,
            coils: [false; COIL_COUNT as usize],
            lid_closed: Debouncer::new(),
            lid_open: Debouncer::new(),
            gate: Debouncer::new(),
            lid_monitor: LidMonitor::new(),
            lid: LidPosition::Unknown,
            level: LevelReading {
                raw_ua: 0,
                level_mm: Err(LevelFault::LowCurrent),
            },
            verdict: SealVerdict {
                state: SealState::Unknown,
                cause: EventCause::SensorFault,
            },
            lid_was_open: false,
            lid_cycles: 0,
            breach_count: 0,
            events: EventLatch::new(),
            now: Instant::ZERO,
        };
        let silence = FrameAssembler::silence_for_baud(settings.baud.bits_per_second());
        SealNode {
            slave: RtuSlave::new(settings.unit_id, silence),
            model,
            silence_override: None,
            line: (settings.baud, settings.parity),
            line_change: None,
        }
    }

    /// A node commissioned with `settings`: they are validated and saved to `storage` first (the
    /// simulator's way to build a node as a technician left it).
    pub fn commissioned(
        storage: S,
        identity: DeviceIdentity,
        settings: Settings,
    ) -> Result<Self, SaveError<S::Error>> {
        let (mut store, _) = SettingsStore::open(storage);
        store.save(&settings)?;
        Ok(Self::new(store.release(), identity))
    }

    /// Feeds one sample of the sensors taken at `now`.
    pub fn update_inputs(&mut self, sample: InputSample, now: Instant) {
        self.model.update_inputs(sample, now);
    }

    /// Feeds one byte received at `now`; returns the reply frame to send, if any.
    pub fn on_byte(&mut self, byte: u8, now: Instant) -> Option<AduBuf> {
        self.model.tick(now);
        let reply = self.slave.on_byte(byte, now, &mut self.model);
        self.apply_settings_change();
        reply
    }

    /// Lets time pass; a frame of unknown length ends at silence. Returns a reply, if any.
    pub fn poll(&mut self, now: Instant) -> Option<AduBuf> {
        self.model.tick(now);
        let reply = self.slave.poll(now, &mut self.model);
        self.apply_settings_change();
        reply
    }

    /// Serves one request PDU addressed to `unit` (for Modbus TCP or any transport that frames
    /// by itself): the same rules as on RTU — unit 0 is a broadcast, other units are ignored.
    pub fn handle_pdu(&mut self, unit: u8, pdu: &[u8], out: &mut PduBuf) -> PduAnswer {
        out.clear();
        let broadcast = unit == BROADCAST_UNIT;
        if !broadcast && unit != self.slave.unit().get() {
            return PduAnswer::NotAddressed;
        }
        let replied = serve_pdu(&mut self.model, pdu, broadcast, out);
        self.apply_settings_change();
        if replied {
            PduAnswer::Reply
        } else {
            PduAnswer::Broadcast
        }
    }

    /// Overrides the silence that ends a frame (`None`: t3.5 of the configured baud). Hosts whose
    /// line has no bit timing (a pty, QEMU) use a longer one.
    pub fn set_frame_silence(&mut self, silence: Option<Duration>) {
        self.silence_override = silence;
        self.apply_silence();
    }

    fn apply_silence(&mut self) {
        let baud = self.model.active.baud.bits_per_second();
        let silence = self
            .silence_override
            .unwrap_or(FrameAssembler::silence_for_baud(baud));
        self.slave.set_silence(silence);
    }

    fn apply_settings_change(&mut self) {
        if self.model.settings_changed {
            self.model.settings_changed = false;
            self.slave.set_unit(self.model.active.unit_id);
            self.apply_silence();
            let line = (self.model.active.baud, self.model.active.parity);
            if line != self.line {
                self.line = line;
                self.line_change = Some(line);
            }
        }
    }

    /// The unit this node answers as.
    pub fn unit_id(&self) -> UnitId {
        self.slave.unit()
    }

    /// The settings in effect.
    pub fn settings(&self) -> &Settings {
        &self.model.active
    }

    /// The settings a technician has written but not committed yet.
    pub fn staged_settings(&self) -> &Settings {
        &self.model.staged
    }

    /// False while the node runs on default settings.
    pub fn is_commissioned(&self) -> bool {
        self.model.commissioned
    }

    /// The local seal state and why.
    pub fn seal_verdict(&self) -> SealVerdict {
        self.model.verdict
    }

    /// The lid position.
    pub fn lid(&self) -> LidPosition {
        self.model.lid
    }

    /// The conditioned level.
    pub fn level(&self) -> LevelReading {
        self.model.level
    }

    /// The fault bits of [`IR_FAULT_BITS`].
    pub fn fault_bits(&self) -> u16 {
        self.model.fault_bits()
    }

    /// Latched event `i` (0 = newest); `seq == 0` if the slot is empty.
    pub fn event(&self, i: usize) -> SealEvent {
        self.model.events.get(i)
    }

    /// Coil `address`, if it exists.
    pub fn coil(&self, address: u16) -> Option<bool> {
        self.model.coils.get(usize::from(address)).copied()
    }

    /// Input register `address` as a master would read it.
    pub fn input_register(&self, address: u16) -> Option<u16> {
        self.model.read_input_register(address).ok()
    }

    /// Discrete input `address` as a master would read it.
    pub fn discrete_input(&self, address: u16) -> Option<bool> {
        self.model.read_discrete_input(address).ok()
    }

    /// Line settings in effect (baud, parity): after a commit changed them, the board reconfigures
    /// its UART once the reply has been sent.
    pub fn line_settings(&self) -> (BaudRate, Parity) {
        (self.model.active.baud, self.model.active.parity)
    }

    /// Line settings that a commit changed since the last call: the board applies them to its UART
    /// after the reply has been sent (the reply still goes out with the old ones).
    pub fn take_line_change(&mut self) -> Option<(BaudRate, Parity)> {
        self.line_change.take()
    }

    /// The identity answered to Read Device Identification.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.model.identity
    }

    /// Frame counters of the RTU line.
    pub fn frame_counters(&self) -> crate::modbus::FrameCounters {
        self.slave.counters()
    }

    /// The settings storage.
    pub fn storage(&self) -> &S {
        self.model.store.storage()
    }

    /// Gives the settings storage back.
    pub fn release(self) -> S {
        self.model.store.release()
    }
}

impl<S> NodeModel<S> {
    fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn update_inputs(&mut self, sample: InputSample, now: Instant) {
        self.tick(now);
        let hold = Duration::from_millis(u64::from(self.active.debounce_ms));
        let closed = self.lid_closed.update(sample.lid_closed, now, hold);
        let open = self.lid_open.update(sample.lid_open, now, hold);
        let gate_open = self.gate.update(sample.gate_open, now, hold);
        let travel = Duration::from_millis(u64::from(self.active.travel_time_ms));
        self.lid = self.lid_monitor.update(closed, open, now, travel);
        match self.lid {
            LidPosition::Open => self.lid_was_open = true,
            LidPosition::Closed if self.lid_was_open => {
                self.lid_was_open = false;
                self.lid_cycles = self.lid_cycles.wrapping_add(1);
            }
            _ => {}
        }
        self.level = LevelReading::from_loop_current(sample.level_ua, self.active.level_span_mm);
        let verdict = seal_state(&SealInputs {
            lid: self.lid,
            gate_open,
            level_mm: self.level.level_mm,
            seal_level_min_mm: self.active.seal_level_min_mm,
            commissioned: self.commissioned,
        });
        if verdict != self.verdict {
            if verdict.state == SealState::Breach && self.verdict.state != SealState::Breach {
                self.breach_count = self.breach_count.wrapping_add(1);
            }
            self.verdict = verdict;
            self.events.push(verdict, now);
        }
    }

    fn fault_bits(&self) -> u16 {
        let mut bits = 0;
        if matches!(self.lid, LidPosition::Fault(_)) {
            bits |= FAULT_LID_SWITCHES;
        }
        match self.level.level_mm {
            Err(LevelFault::LowCurrent) => bits |= FAULT_LEVEL_LOW_CURRENT,
            Err(LevelFault::HighCurrent) => bits |= FAULT_LEVEL_HIGH_CURRENT,
            Ok(_) => {}
        }
        if !self.commissioned {
            bits |= FAULT_SETTINGS_DEFAULTED;
        }
        bits
    }
}

fn hi(v: u32) -> u16 {
    (v >> 16) as u16
}

fn lo(v: u32) -> u16 {
    v as u16
}

impl<S: SettingsStorage> DataModel for NodeModel<S> {
    fn read_coil(&self, address: u16) -> Result<bool, ExceptionCode> {
        self.coils
            .get(usize::from(address))
            .copied()
            .ok_or(ExceptionCode::IllegalDataAddress)
    }

    fn read_discrete_input(&self, address: u16) -> Result<bool, ExceptionCode> {
        Ok(match address {
            DI_LID_CLOSED => self.lid_closed.state() == Some(true),
            DI_LID_OPEN => self.lid_open.state() == Some(true),
            DI_GATE_OPEN => self.gate.state() == Some(true),
            DI_LID_FAULT => matches!(self.lid, LidPosition::Fault(_)),
            DI_LEVEL_FAULT => self.level.level_mm.is_err(),
            _ => return Err(ExceptionCode::IllegalDataAddress),
        })
    }

    fn read_holding_register(&self, address: u16) -> Result<u16, ExceptionCode> {
        match address {
            HR_COMMIT => Ok(0),
            a => self
                .staged
                .register(a)
                .ok_or(ExceptionCode::IllegalDataAddress),
        }
    }

    fn read_input_register(&self, address: u16) -> Result<u16, ExceptionCode> {
        let uptime_s = (self.now.as_millis() / 1000) as u32;
        let uptime_ms = self.now.as_millis() as u32;
        Ok(match address {
            IR_LEVEL_MM => self.level.level_mm.unwrap_or(0),
            IR_LEVEL_RAW_UA => self.level.raw_ua,
            IR_SEAL_STATE => self.verdict.state as u16,
            IR_FAULT_BITS => self.fault_bits(),
            IR_LID_CYCLES => hi(self.lid_cycles),
            a if a == IR_LID_CYCLES + 1 => lo(self.lid_cycles),
            IR_BREACH_COUNT => hi(self.breach_count),
            a if a == IR_BREACH_COUNT + 1 => lo(self.breach_count),
            IR_UPTIME_S => hi(uptime_s),
            a if a == IR_UPTIME_S + 1 => lo(uptime_s),
            IR_FIRMWARE_VERSION => FIRMWARE_VERSION,
            IR_EVENT_SEQ => self.events.seq,
            a if (IR_EVENT_LATCH..IR_UPTIME_MS).contains(&a) => {
                let offset = a - IR_EVENT_LATCH;
                let e = self.events.get(usize::from(offset / EVENT_LATCH_STRIDE));
                match offset % EVENT_LATCH_STRIDE {
                    0 => e.seq,
                    1 => e.kind,
                    2 => hi(e.at_ms),
                    _ => lo(e.at_ms),
                }
            }
            IR_UPTIME_MS => hi(uptime_ms),
            a if a == IR_UPTIME_MS + 1 => lo(uptime_ms),
            _ => return Err(ExceptionCode::IllegalDataAddress),
        })
    }

    fn write_coils(&mut self, start: u16, values: Bits<'_>) -> Result<(), ExceptionCode> {
        let end = usize::from(start) + usize::from(values.len());
        if end > self.coils.len() {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        for (i, v) in values.iter().enumerate() {
            self.coils[usize::from(start) + i] = v;
        }
        Ok(())
    }

    fn write_registers(&mut self, start: u16, values: Words<'_>) -> Result<(), ExceptionCode> {
        let end = usize::from(start) + usize::from(values.len());
        if end > usize::from(HOLDING_REGISTER_COUNT) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        // Validate everything on a copy; nothing changes unless all of it is accepted.
        let mut staged = self.staged;
        let mut commit = false;
        for (address, value) in (start..).zip(values.iter()) {
            if address == HR_COMMIT {
                if value != COMMIT_MAGIC {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                commit = true;
            } else {
                staged = staged
                    .with_register(address, value)
                    .map_err(|_| ExceptionCode::IllegalDataValue)?;
            }
        }
        if commit {
            staged
                .validate()
                .map_err(|_| ExceptionCode::IllegalDataValue)?;
            self.store.save(&staged).map_err(|e| match e {
                SaveError::Invalid(_) => ExceptionCode::IllegalDataValue,
                SaveError::Storage(_) | SaveError::Verify => ExceptionCode::ServerDeviceFailure,
            })?;
            self.active = staged;
            self.commissioned = true;
            self.settings_changed = true;
        }
        self.staged = staged;
        Ok(())
    }

    fn device_id_object(&self, id: u8) -> Option<&[u8]> {
        let s = match id {
            0x00 => self.identity.vendor,
            0x01 => self.identity.product_code,
            0x02 => self.identity.revision,
            0x04 => self.identity.product_name,
            0x80 => self.identity.serial.as_str(),
            _ => return None,
        };
        Some(s.as_bytes())
    }
}
