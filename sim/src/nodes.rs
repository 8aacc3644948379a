//! The simulated devices behind every endpoint, whatever the transport: each seal node runs the
//! firmware crate's real [`SealNode`] (register image, debounce, seal logic, settings, device
//! identification), fed the sensor signals of its bin by the plant model; other devices
//! (analyzers) answer from the plant's register image through the firmware's [`serve_pdu`].
//!
//! RTU lines feed a node bytes ([`Node::on_byte`]); Modbus TCP endpoints hand it whole PDUs
//! ([`Node::handle_pdu`]). Either way the same code answers, so writes, settings commits and Read
//! Device Identification work on both transports.

use std::time::Duration;

use sealwatch_agent::config::profile::Table;
use sealwatch_agent::config::{SiteConfig, Transport};
use sealwatch_firmware::modbus::{
    serve_pdu, AduBuf, Bits, DataModel, ExceptionCode, PduBuf, RtuSlave, UnitId, Words,
    BROADCAST_UNIT,
};
use sealwatch_firmware::{
    BaudRate, DeviceIdentity, InputSample, Parity, PduAnswer, RamStorage, SealNode, Settings,
};
use tokio::time::Instant;

use crate::plant::{Plant, Role, LEVEL_SPAN_MM};

/// The frame-ending silence the simulated nodes use: a pty delivers requests in chunks with
/// pauses far longer than t3.5, so nodes find frames by their length and resync at this gap.
pub const PTY_FRAME_SILENCE: Duration = Duration::from_millis(20);

/// The plant's register image of one device as a Modbus data model (read-only).
struct PlantModel<'a> {
    plant: &'a Plant,
    device: usize,
}

impl PlantModel<'_> {
    fn word(&self, table: Table, address: u16) -> Result<u16, ExceptionCode> {
        self.plant
            .read(self.device, table, address, 1)
            .map(|w| w[0])
            .map_err(ExceptionCode::from_code)
    }
}

impl DataModel for PlantModel<'_> {
    fn read_coil(&self, address: u16) -> Result<bool, ExceptionCode> {
        self.word(Table::Coil, address).map(|w| w != 0)
    }
    fn read_discrete_input(&self, address: u16) -> Result<bool, ExceptionCode> {
        self.word(Table::DiscreteInput, address).map(|w| w != 0)
    }
    fn read_holding_register(&self, address: u16) -> Result<u16, ExceptionCode> {
        self.word(Table::Holding, address)
    }
    fn read_input_register(&self, address: u16) -> Result<u16, ExceptionCode> {
        self.word(Table::Input, address)
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

enum Kind {
    /// A seal node running the firmware; `None` while it is powered off.
    Seal {
        node: Option<Box<SealNode<RamStorage>>>,
        settings: Settings,
        serial: String,
        bin: usize,
    },
    /// A device answering from the plant's register image.
    Model { slave: Box<RtuSlave>, unit: UnitId },
}

/// One simulated device.
pub(crate) struct Node {
    /// Its index in the plant's devices.
    pub(crate) device: usize,
    booted: Instant,
    /// Replies it has given (for the line's every-k-th faults).
    pub(crate) replies: u32,
    kind: Kind,
}

fn boot_seal_node(settings: Settings, serial: &str) -> Option<Box<SealNode<RamStorage>>> {
    match SealNode::commissioned(
        RamStorage::blank(),
        DeviceIdentity::seal_node(serial),
        settings,
    ) {
        Ok(mut node) => {
            node.set_frame_silence(Some(PTY_FRAME_SILENCE));
            Some(Box::new(node))
        }
        Err(e) => {
            tracing::error!(serial, error = ?e, "the simulated seal node refused its settings");
            None
        }
    }
}

/// The devices of bus `bus`, booted at `now`.
pub(crate) fn bus_nodes(config: &SiteConfig, plant: &Plant, bus: usize, now: Instant) -> Vec<Node> {
    let (baud, parity) = match &config.buses[bus].transport {
        Transport::Rtu(s) => (s.baud, s.parity),
        Transport::Tcp { .. } => (BaudRate::B19200, Parity::Even),
    };
    let mut nodes = Vec::new();
    for (d, device) in plant.devices.iter().enumerate() {
        if device.bus != bus {
            continue;
        }
        let Some(unit) = UnitId::new(device.unit) else {
            continue;
        };
        let kind = match device.role {
            Role::SealNode(bin) => {
                let seal = config
                    .furnaces
                    .iter()
                    .flat_map(|f| f.bins.iter())
                    .find(|b| b.device == d)
                    .map_or(800, |b| b.seal_level_min_mm);
                let settings = Settings {
                    unit_id: unit,
                    baud,
                    parity,
                    debounce_ms: 50,
                    level_span_mm: LEVEL_SPAN_MM as u16,
                    seal_level_min_mm: seal.min(u32::from(u16::MAX)) as u16,
                    travel_time_ms: 10_000,
                };
                let serial = format!("SIM-{}", device.name);
                Kind::Seal {
                    node: boot_seal_node(settings, &serial),
                    settings,
                    serial,
                    bin,
                }
            }
            _ => Kind::Model {
                slave: Box::new(RtuSlave::new(unit, PTY_FRAME_SILENCE)),
                unit,
            },
        };
        nodes.push(Node {
            device: d,
            booted: now,
            replies: 0,
            kind,
        });
    }
    nodes
}

impl Node {
    fn uptime(&self, now: Instant) -> sealwatch_firmware::Instant {
        sealwatch_firmware::Instant::from_micros(now.duration_since(self.booted).as_micros() as u64)
    }

    /// Whether this is a seal node (running the firmware).
    pub(crate) fn is_seal_node(&self) -> bool {
        matches!(self.kind, Kind::Seal { .. })
    }

    /// The unit the device answers as now (a seal node's can be changed by a settings commit).
    pub(crate) fn unit(&self) -> Option<u8> {
        match &self.kind {
            Kind::Seal { node, .. } => node.as_ref().map(|n| n.unit_id().get()),
            Kind::Model { unit, .. } => Some(unit.get()),
        }
    }

    /// One byte from the line, received at `now`; a reply frame when one is complete.
    pub(crate) fn on_byte(&mut self, byte: u8, now: Instant, plant: &Plant) -> Option<AduBuf> {
        let uptime = self.uptime(now);
        match &mut self.kind {
            Kind::Seal {
                node: Some(seal), ..
            } => seal.on_byte(byte, uptime),
            Kind::Seal { node: None, .. } => None,
            Kind::Model { slave, .. } => slave.on_byte(
                byte,
                uptime,
                &mut PlantModel {
                    plant,
                    device: self.device,
                },
            ),
        }
    }

    /// One request PDU for `unit` (Modbus TCP); `out` holds the response PDU when it returns
    /// true (not for broadcasts, other units or a powered-off node).
    pub(crate) fn handle_pdu(
        &mut self,
        unit: u8,
        pdu: &[u8],
        plant: &Plant,
        out: &mut PduBuf,
    ) -> bool {
        match &mut self.kind {
            Kind::Seal {
                node: Some(seal), ..
            } => seal.handle_pdu(unit, pdu, out) == PduAnswer::Reply,
            Kind::Seal { node: None, .. } => false,
            Kind::Model { unit: own, .. } => {
                if unit != own.get() && unit != BROADCAST_UNIT {
                    return false;
                }
                let mut model = PlantModel {
                    plant,
                    device: self.device,
                };
                serve_pdu(&mut model, pdu, unit == BROADCAST_UNIT, out)
            }
        }
    }

    /// Lets time pass: feeds a seal node its bin's sensors, powers it off and on as the plant
    /// says, and ends frames at silence. Returns a reply frame if silence completed one.
    pub(crate) fn tick(&mut self, plant: &Plant, now: Instant) -> Option<AduBuf> {
        let off = plant.devices[self.device].restarting_until.is_some();
        let uptime = self.uptime(now);
        match &mut self.kind {
            Kind::Seal {
                node: seal,
                settings,
                serial,
                bin,
            } => {
                if off {
                    *seal = None;
                    return None;
                }
                if seal.is_none() {
                    self.booted = now;
                    *seal = boot_seal_node(*settings, serial);
                }
                let uptime = sealwatch_firmware::Instant::from_micros(
                    now.duration_since(self.booted).as_micros() as u64,
                );
                let seal = seal.as_mut()?;
                let s = plant.sensors(*bin);
                seal.update_inputs(
                    InputSample {
                        lid_closed: s.lid_closed,
                        lid_open: s.lid_open,
                        gate_open: s.gate_open,
                        level_ua: s.level_ua,
                    },
                    uptime,
                );
                seal.poll(uptime)
            }
            Kind::Model { slave, .. } => slave.poll(
                uptime,
                &mut PlantModel {
                    plant,
                    device: self.device,
                },
            ),
        }
    }
}
