//! The simulated plant: furnaces, coal bins with charging cycles, seal nodes and NMHC analyzers.
//!
//! A pure model: [`Plant::advance_to`] moves it to a simulated time in fixed 100 ms steps, and
//! [`Plant::read`] answers a Modbus read of one device from its current state. No clock, no I/O,
//! so the same sequence of calls always gives the same registers.
//!
//! A bin's charging cycle: idle (lid and gate closed) → lid opening (both lid switches off) →
//! filling (lid open, level rising) → lid closing → settle → gate open (coal descends into the
//! furnace, level falling to a residue that keeps the material seal) → idle. A scripted breach
//! makes the next gate opening drain the bin below its seal level; the furnace's analyzers then
//! see a VOC plume.

use std::sync::Arc;

use sealwatch_agent::config::profile::{Profile, Table};
use sealwatch_agent::config::SiteConfig;
use sealwatch_agent::poll::decode::encode_point;
use sealwatch_firmware::registers::{SealState, FAULT_LEVEL_LOW_CURRENT, FAULT_LID_SWITCHES};

/// Simulation step, s.
pub const STEP_S: f64 = 0.1;
/// Level transmitter span (level at 20 mA), mm.
pub const LEVEL_SPAN_MM: f64 = 4000.0;
/// Firmware version the simulated nodes report (1.0).
pub const FIRMWARE_VERSION: u16 = 0x0100;

/// Modbus exception codes the sim answers with.
pub mod exception {
    /// Illegal data address.
    pub const ILLEGAL_DATA_ADDRESS: u8 = 0x02;
    /// Server device failure.
    pub const DEVICE_FAILURE: u8 = 0x04;
}

/// Phases of a bin's charging cycle, with their durations in s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Lid and gate closed.
    Idle,
    /// Lid travelling open.
    LidOpening,
    /// Lid open, coal pouring in.
    Filling,
    /// Lid travelling closed.
    LidClosing,
    /// Everything closed, before the gate opens.
    Settle,
    /// Gate open, coal descending into the furnace.
    GateOpen,
}

impl Phase {
    fn duration(self) -> f64 {
        match self {
            Phase::Idle => 60.0,
            Phase::LidOpening | Phase::LidClosing => 2.0,
            Phase::Filling => 12.0,
            Phase::Settle => 3.0,
            Phase::GateOpen => 15.0,
        }
    }

    fn next(self) -> Phase {
        match self {
            Phase::Idle => Phase::LidOpening,
            Phase::LidOpening => Phase::Filling,
            Phase::Filling => Phase::LidClosing,
            Phase::LidClosing => Phase::Settle,
            Phase::Settle => Phase::GateOpen,
            Phase::GateOpen => Phase::Idle,
        }
    }
}

/// One coal bin and its seal node.
#[derive(Debug, Clone)]
pub struct BinModel {
    /// `furnace/bin`.
    pub key: String,
    /// Furnace index.
    pub furnace: usize,
    /// Seal level, mm.
    pub seal_level_min_mm: f64,
    /// Phase.
    pub phase: Phase,
    /// Seconds spent in the phase.
    pub in_phase: f64,
    /// Material level, mm.
    pub level_mm: f64,
    /// Level at the start of the phase.
    level_at_phase_start: f64,
    /// The next gate opening drains below the seal level.
    pub breach_next_cycle: bool,
    /// Draining below the seal in this gate opening.
    breaching: bool,
    /// Lid held open (stuck) until this time.
    pub lid_stuck_until: Option<f64>,
    /// Level transmitter broken wire (loop current 0) until this time.
    pub level_broken_until: Option<f64>,
    /// Level transmitter frozen (it keeps sending this level) until this time.
    pub level_frozen: Option<(f64, f64)>,
    /// Lid cycles counter.
    pub lid_cycles: u32,
    /// Breach counter.
    pub breach_count: u32,
    was_breach: bool,
}

impl BinModel {
    fn lid_switches(&self, t: f64) -> (bool, bool) {
        if self.lid_stuck_until.is_some_and(|u| t < u) {
            return (false, true);
        }
        match self.phase {
            Phase::Idle | Phase::Settle | Phase::GateOpen => (true, false),
            Phase::LidOpening | Phase::LidClosing => (false, false),
            Phase::Filling => (false, true),
        }
    }

    fn gate_open(&self) -> bool {
        self.phase == Phase::GateOpen
    }

    fn level_broken(&self, t: f64) -> bool {
        self.level_broken_until.is_some_and(|u| t < u)
    }

    /// The level the transmitter reports at `t`: the material level with the millimetre or two
    /// a live transmitter always flickers by — or, while frozen, the same value all along.
    fn measured_level_mm(&self, t: f64, bin: usize) -> f64 {
        match self.level_frozen {
            Some((level, until)) if t < until => level,
            _ => self.level_mm + (1.5 * (t * 2.3 + bin as f64).sin()).round(),
        }
    }

    /// The node's local seal state.
    pub fn seal_state(&self, t: f64) -> SealState {
        if self.level_broken(t) {
            return SealState::Unknown;
        }
        let (closed, open) = self.lid_switches(t);
        let gate = self.gate_open();
        if gate && (self.level_mm < self.seal_level_min_mm || !closed) {
            SealState::Breach
        } else if gate || open || !closed {
            SealState::Charging
        } else {
            SealState::Sealed
        }
    }

    fn step(&mut self, t: f64) -> bool {
        self.in_phase += STEP_S;
        let d = self.phase.duration();
        let frac = (self.in_phase / d).min(1.0);
        match self.phase {
            Phase::Filling => {
                self.level_mm =
                    self.level_at_phase_start + (2600.0 - self.level_at_phase_start) * frac
            }
            Phase::GateOpen => {
                // A breaching bin runs nearly empty early in the gate phase and stays low: the
                // gas path is open for most of the time the gate is.
                let (target, reach) = if self.breaching {
                    (300.0, 0.4)
                } else {
                    (1100.0, 1.0)
                };
                let progress = (frac / reach).min(1.0);
                self.level_mm =
                    self.level_at_phase_start + (target - self.level_at_phase_start) * progress;
            }
            _ => {}
        }
        if self.in_phase >= d - 1e-9 {
            let stuck = self.lid_stuck_until.is_some_and(|u| t < u);
            // A stuck lid holds the cycle in Idle (the operator cannot charge).
            if !(stuck && self.phase == Phase::Idle) {
                self.phase = self.phase.next();
                self.in_phase = 0.0;
                self.level_at_phase_start = self.level_mm;
                if self.phase == Phase::LidOpening {
                    self.lid_cycles += 1;
                }
                if self.phase == Phase::GateOpen {
                    self.breaching = std::mem::take(&mut self.breach_next_cycle);
                }
            }
        }
        let breach = self.seal_state(t) == SealState::Breach;
        let started = breach && !self.was_breach;
        if started {
            self.breach_count += 1;
        }
        self.was_breach = breach;
        started
    }
}

/// One NMHC analyzer.
#[derive(Debug, Clone)]
pub struct AnalyzerModel {
    /// `furnace/analyzer`.
    pub key: String,
    /// Furnace index.
    pub furnace: usize,
    /// Baseline NMHC, mg/m³.
    pub baseline: f64,
    /// In calibration with span gas until this time.
    pub calibrating_until: Option<f64>,
}

/// The span gas the simulated analyzers are calibrated with, mg/m³ (above the 30 mg/m³
/// single-value limit, as real span gas often is).
pub const SPAN_GAS_MG_M3: f64 = 80.0;

/// The status register value of an analyzer calibrating with span gas (the shipped
/// `nmhc-analyzer` profile maps 1 and 2 to calibration).
pub const STATUS_SPAN_CALIBRATION: u16 = 2;

/// What a device is in the plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The seal node of bin `n`.
    SealNode(usize),
    /// Analyzer `n`.
    Analyzer(usize),
    /// A device the plant does not model (answers zeros).
    Other,
}

/// A simulated Modbus device.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    /// Name from the config.
    pub name: String,
    /// Bus index.
    pub bus: usize,
    /// Unit id.
    pub unit: u8,
    /// Profile used to lay out its registers.
    pub profile: Arc<Profile>,
    /// What it is.
    pub role: Role,
    /// Answers nothing.
    pub silent: bool,
    /// Answers exception 04 (device failure).
    pub failing: bool,
    /// Powered off (silent) until this time, then boots with counters reset.
    pub restarting_until: Option<f64>,
    /// When it last booted.
    pub booted_at: f64,
    /// Faults of its serial line interface (RTU only).
    pub line_faults: LineFaults,
}

/// What a device on a serial line can do wrong (set by `slow`, `late`, `corrupt-crc`, `garbage`;
/// cleared by `restore`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFaults {
    /// Extra turnaround before each reply, ms.
    pub slow_ms: u64,
    /// Each reply goes out this late, ms (meant to be after the master's timeout).
    pub late_ms: u64,
    /// Every k-th reply has a corrupt CRC (0 = never).
    pub corrupt_every: u32,
    /// Garbage bytes instead of each reply.
    pub garbage: bool,
}

/// The raw sensor signals at a seal node's terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensors {
    /// Lid-closed limit switch on.
    pub lid_closed: bool,
    /// Lid-open limit switch on.
    pub lid_open: bool,
    /// Charging-gate switch on.
    pub gate_open: bool,
    /// Level transmitter loop current, µA (0 with a broken wire).
    pub level_ua: u16,
}

/// The whole plant.
#[derive(Debug, Clone)]
pub struct Plant {
    /// Simulated time, s since start.
    pub t: f64,
    /// Bins.
    pub bins: Vec<BinModel>,
    /// Analyzers.
    pub analyzers: Vec<AnalyzerModel>,
    /// Devices, in config order.
    pub devices: Vec<DeviceModel>,
    /// VOC plume per furnace, mg/m³ above baseline.
    pub plume: Vec<f64>,
    /// Device index by (bus, unit id): every request looks its device up.
    by_address: std::collections::HashMap<(usize, u8), usize>,
}

impl Plant {
    /// The plant a site configuration describes. Bins start their cycles 15 s apart.
    pub fn from_config(config: &SiteConfig) -> Plant {
        let mut devices: Vec<DeviceModel> = config
            .devices
            .iter()
            .map(|d| DeviceModel {
                name: d.name.clone(),
                bus: d.bus,
                unit: d.unit.get(),
                profile: d.profile.clone(),
                role: Role::Other,
                silent: false,
                failing: false,
                restarting_until: None,
                booted_at: 0.0,
                line_faults: LineFaults::default(),
            })
            .collect();
        let mut bins = Vec::new();
        let mut analyzers = Vec::new();
        for (fi, f) in config.furnaces.iter().enumerate() {
            for b in &f.bins {
                let n = bins.len();
                devices[b.device].role = Role::SealNode(n);
                bins.push(BinModel {
                    key: format!("{}/{}", f.name, b.name),
                    furnace: fi,
                    seal_level_min_mm: f64::from(b.seal_level_min_mm),
                    phase: Phase::Idle,
                    // Stagger the bins so their cycles do not line up: 0, 37, 14, 51, … s into the cycle.
                    in_phase: Phase::Idle.duration()
                        - 5.0
                        - (37.0 * n as f64) % (Phase::Idle.duration() - 5.0),
                    level_mm: 1100.0,
                    level_at_phase_start: 1100.0,
                    breach_next_cycle: false,
                    breaching: false,
                    lid_stuck_until: None,
                    level_broken_until: None,
                    level_frozen: None,
                    lid_cycles: 0,
                    breach_count: 0,
                    was_breach: false,
                });
            }
            for a in &f.analyzers {
                let n = analyzers.len();
                devices[a.device].role = Role::Analyzer(n);
                analyzers.push(AnalyzerModel {
                    key: format!("{}/{}", f.name, a.name),
                    furnace: fi,
                    baseline: 1.2 + 0.3 * n as f64,
                    calibrating_until: None,
                });
            }
        }
        let mut by_address = std::collections::HashMap::new();
        for (i, d) in devices.iter().enumerate() {
            // The first device configured at an address answers, as on a real bus.
            by_address.entry((d.bus, d.unit)).or_insert(i);
        }
        Plant {
            t: 0.0,
            bins,
            analyzers,
            devices,
            plume: vec![0.0; config.furnaces.len()],
            by_address,
        }
    }

    /// Advances the model to simulated time `t` (s), in fixed steps.
    pub fn advance_to(&mut self, t: f64) {
        while self.t + STEP_S <= t + 1e-9 {
            self.t += STEP_S;
            let now = self.t;
            for p in &mut self.plume {
                *p *= (-STEP_S / 60.0).exp();
            }
            for b in &mut self.bins {
                if b.step(now) {
                    self.plume[b.furnace] += 35.0;
                }
            }
            for d in &mut self.devices {
                if d.restarting_until.is_some_and(|u| now >= u) {
                    d.restarting_until = None;
                    d.booted_at = now;
                    if let Role::SealNode(b) = d.role {
                        self.bins[b].lid_cycles = 0;
                        self.bins[b].breach_count = 0;
                    }
                }
            }
        }
    }

    /// The bin with this `furnace/bin` key.
    pub fn bin(&self, key: &str) -> Option<usize> {
        self.bins.iter().position(|b| b.key == key)
    }

    /// The analyzer with this key (`furnace/analyzer`) or whose device has this name.
    pub fn analyzer(&self, target: &str) -> Option<usize> {
        self.analyzers
            .iter()
            .position(|a| a.key == target)
            .or_else(|| {
                let d = self.device(target)?;
                match self.devices[d].role {
                    Role::Analyzer(a) => Some(a),
                    _ => None,
                }
            })
    }

    /// The device with this name.
    pub fn device(&self, name: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.name == name)
    }

    /// The device with this unit id on bus `bus`.
    pub fn device_at(&self, bus: usize, unit: u8) -> Option<usize> {
        self.by_address.get(&(bus, unit)).copied()
    }

    /// Whether the device answers at all now.
    pub fn answers(&self, device: usize) -> bool {
        let d = &self.devices[device];
        !d.silent && d.restarting_until.is_none()
    }

    /// The sensor signals at the terminals of bin `bin`'s seal node now.
    pub fn sensors(&self, bin: usize) -> Sensors {
        let b = &self.bins[bin];
        let (lid_closed, lid_open) = b.lid_switches(self.t);
        let level_ua = if b.level_broken(self.t) {
            0
        } else {
            (4000.0 + b.measured_level_mm(self.t, bin) / LEVEL_SPAN_MM * 16000.0).round() as u16
        };
        Sensors {
            lid_closed,
            lid_open,
            gate_open: b.gate_open(),
            level_ua,
        }
    }

    /// The engineering value of a named point of a device now.
    pub fn value(&self, device: usize, point: &str) -> f64 {
        let d = &self.devices[device];
        let t = self.t;
        match d.role {
            Role::SealNode(b) => {
                let bin = &self.bins[b];
                let (closed, open) = bin.lid_switches(t);
                let broken = bin.level_broken(t);
                let lid_fault = closed && open;
                let level = bin.measured_level_mm(t, b);
                let ua = if broken {
                    0.0
                } else {
                    4000.0 + level / LEVEL_SPAN_MM * 16000.0
                };
                match point {
                    "lid_closed" => f64::from(u8::from(closed)),
                    "lid_open" => f64::from(u8::from(open)),
                    "gate_open" => f64::from(u8::from(bin.gate_open())),
                    "lid_fault" => f64::from(u8::from(lid_fault)),
                    "level_fault" => f64::from(u8::from(broken)),
                    "level_mm" => {
                        if broken {
                            0.0
                        } else {
                            level.round()
                        }
                    }
                    "level_raw_ua" => ua.round(),
                    "seal_state" => f64::from(bin.seal_state(t) as u16),
                    "fault_bits" => {
                        let mut bits = 0;
                        if lid_fault {
                            bits |= FAULT_LID_SWITCHES;
                        }
                        if broken {
                            bits |= FAULT_LEVEL_LOW_CURRENT;
                        }
                        f64::from(bits)
                    }
                    "lid_cycles" => f64::from(bin.lid_cycles),
                    "breach_count" => f64::from(bin.breach_count),
                    "uptime_s" => (t - d.booted_at).floor(),
                    "firmware_version" => f64::from(FIRMWARE_VERSION),
                    "event_seq" => f64::from(bin.breach_count + bin.lid_cycles),
                    _ => 0.0,
                }
            }
            Role::Analyzer(a) => {
                let an = &self.analyzers[a];
                // Deterministic small wobble around the baseline.
                let wobble = 0.15 * (t / 17.0 + a as f64).sin();
                let calibrating = an.calibrating_until.is_some_and(|u| t < u);
                let nmhc = if calibrating {
                    SPAN_GAS_MG_M3
                } else {
                    an.baseline + wobble + self.plume[an.furnace]
                };
                match point {
                    "nmhc" => nmhc,
                    "methane" => 2.1,
                    "thc" => nmhc + 2.1,
                    "status" if calibrating => f64::from(STATUS_SPAN_CALIBRATION),
                    _ => 0.0,
                }
            }
            Role::Other => 0.0,
        }
    }

    /// Answers a read of `count` registers or bits from `start` of `table` on `device`: the
    /// registers, or a Modbus exception code. Reads touching an address no point defines get
    /// exception 02, as real devices do.
    pub fn read(
        &self,
        device: usize,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, u8> {
        let d = &self.devices[device];
        if d.failing {
            return Err(exception::DEVICE_FAILURE);
        }
        let end = u32::from(start) + u32::from(count);
        let mut out = vec![None; usize::from(count)];
        for point in d.profile.points.iter().filter(|p| p.table == table) {
            if point.end() <= u32::from(start) || u32::from(point.address) >= end {
                continue;
            }
            let words = encode_point(self.value(device, &point.name), point);
            for (k, w) in words.into_iter().enumerate() {
                let addr = u32::from(point.address) + k as u32;
                if (u32::from(start)..end).contains(&addr) {
                    out[(addr - u32::from(start)) as usize] = Some(w);
                }
            }
        }
        out.into_iter()
            .collect::<Option<Vec<u16>>>()
            .ok_or(exception::ILLEGAL_DATA_ADDRESS)
    }
}

/// The plant, shared by the clock and every endpoint.
pub(crate) type SharedPlant = std::sync::Arc<std::sync::Mutex<Plant>>;

/// Locks the plant (a panic elsewhere does not make the model unusable).
pub(crate) fn lock(plant: &SharedPlant) -> std::sync::MutexGuard<'_, Plant> {
    plant
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
