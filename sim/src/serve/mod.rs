//! Serving the simulated plant: Modbus TCP, one endpoint per TCP bus of the site config
//! ([`tcp`]), and Modbus RTU on a pseudo-terminal per RTU bus ([`rtu`]). Behind both are the same
//! simulated devices ([`crate::nodes`]); this module runs the plant clock, the scripted events
//! and the commands.
//!
//! `bus-down` closes a TCP listener and every connection (or unplugs an RTU line); `bus-up`
//! listens on the same address again.

mod rtu;
mod tcp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealwatch_agent::config::{SiteConfig, Transport};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use rtu::{precise_sleep_until, LineOptions};

use crate::nodes::bus_nodes;
use crate::plant::{lock, Plant, SharedPlant};
use crate::scenario::{apply, parse_command, reversal, Action, Event, Scenario, ScenarioError};
use rtu::{start_line, LineControl, LineHandle};
use tcp::{listen, TcpBus};

/// Why the sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An RTU bus's pseudo-terminal could not be made.
    #[error("bus '{bus}': cannot make a pty for {port}: {source}")]
    Pty {
        /// Bus.
        bus: String,
        /// Configured port.
        port: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A bus address could not be bound.
    #[error("bus '{bus}': cannot listen on {addr}: {source}")]
    Bind {
        /// Bus.
        bus: String,
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// How to run the sim.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Listen on the addresses in the config instead of free ports; for RTU buses, put a
    /// symlink to the pty at the configured `port` path.
    pub fixed_ports: bool,
    /// Timing of the RTU lines.
    pub line: LineOptions,
    /// How long a device on a TCP bus takes to answer (zero: at once). Real devices and
    /// gateways answer in a few ms; the loopback sim otherwise answers in microseconds.
    pub reply_delay: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            speed: 1.0,
            fixed_ports: false,
            line: LineOptions::default(),
            reply_delay: Duration::ZERO,
        }
    }
}

/// One Modbus TCP endpoint.
struct Endpoint {
    bus: usize,
    addr: SocketAddr,
    devices: Arc<TcpBus>,
    task: Option<JoinHandle<()>>,
    reply_delay: Duration,
}

/// A running sim.
pub struct RunningSim {
    /// Where each TCP bus listens.
    pub addresses: BTreeMap<String, SocketAddr>,
    /// The serial device path of each RTU bus (the pty's slave side, or the symlink to it).
    pub ports: BTreeMap<String, String>,
    commands: mpsc::Sender<(String, oneshot::Sender<Result<String, String>>)>,
    clock: JoinHandle<()>,
}

impl RunningSim {
    /// Runs a command line (`breach F1/B2`) now; returns what was done.
    pub async fn command(&self, line: &str) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((line.to_owned(), tx))
            .await
            .map_err(|_| "sim stopped".to_owned())?;
        rx.await.map_err(|_| "sim stopped".to_owned())?
    }

    /// Stops the plant and closes every endpoint.
    pub fn stop(self) {
        self.clock.abort();
    }
}

/// Starts the plant and its endpoints.
pub async fn start(
    config: &SiteConfig,
    scenario: Scenario,
    options: SimOptions,
) -> Result<RunningSim, SimError> {
    let plant: SharedPlant = Arc::new(Mutex::new(Plant::from_config(config)));
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut addresses = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let mut lines: Vec<LineHandle> = Vec::new();
    for (b, bus) in config.buses.iter().enumerate() {
        match &bus.transport {
            Transport::Tcp { address } => {
                let want = if options.fixed_ports {
                    address.clone()
                } else {
                    "127.0.0.1:0".to_owned()
                };
                let listener = TcpListener::bind(&want)
                    .await
                    .map_err(|source| SimError::Bind {
                        bus: bus.name.clone(),
                        addr: want.clone(),
                        source,
                    })?;
                let addr = listener.local_addr().map_err(|source| SimError::Bind {
                    bus: bus.name.clone(),
                    addr: want,
                    source,
                })?;
                let now = tokio::time::Instant::now();
                let devices = Arc::new(TcpBus::new(bus_nodes(config, &lock(&plant), b, now)));
                let task = listen(
                    plant.clone(),
                    devices.clone(),
                    listener,
                    options.reply_delay,
                );
                addresses.insert(bus.name.clone(), addr);
                endpoints.push(Endpoint {
                    bus: b,
                    addr,
                    devices,
                    task: Some(task),
                    reply_delay: options.reply_delay,
                });
            }
            Transport::Rtu(serial) => {
                let link = options
                    .fixed_ports
                    .then(|| std::path::PathBuf::from(&serial.port));
                let (line, path) = start_line(config, &plant, b, link.as_deref(), options.line)
                    .map_err(|source| SimError::Pty {
                        bus: bus.name.clone(),
                        port: serial.port.clone(),
                        source,
                    })?;
                ports.insert(bus.name.clone(), path);
                lines.push(line);
            }
        }
    }
    let bus_names: Vec<String> = config.buses.iter().map(|b| b.name.clone()).collect();
    let (tx, rx) = mpsc::channel(16);
    let clock = tokio::spawn(run_clock(
        plant,
        endpoints,
        lines,
        bus_names,
        scenario,
        options.speed,
        rx,
    ));
    Ok(RunningSim {
        addresses,
        ports,
        commands: tx,
        clock,
    })
}

/// Advances the plant in real time, fires scripted events, runs commands.
async fn run_clock(
    plant: SharedPlant,
    mut endpoints: Vec<Endpoint>,
    mut lines: Vec<LineHandle>,
    bus_names: Vec<String>,
    scenario: Scenario,
    speed: f64,
    mut commands: mpsc::Receiver<(String, oneshot::Sender<Result<String, String>>)>,
) {
    let started = tokio::time::Instant::now();
    let mut pending: Vec<Event> = scenario.events;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let command = tokio::select! {
            _ = tick.tick() => None,
            c = commands.recv() => c,
        };
        let now = started.elapsed().as_secs_f64() * speed;
        lock(&plant).advance_to(now);
        let real_now = tokio::time::Instant::now();
        for endpoint in &endpoints {
            endpoint.devices.tick(&plant, real_now);
        }
        let mut due: Vec<Event> = Vec::new();
        pending.retain(|e| {
            if e.at_s <= now {
                due.push(e.clone());
                false
            } else {
                true
            }
        });
        for event in due {
            match fire(
                &plant,
                &mut endpoints,
                &mut lines,
                &bus_names,
                &event,
                &mut pending,
            )
            .await
            {
                Ok(done) => tracing::info!(t = now, "scenario: {done}"),
                Err(e) => tracing::warn!(t = now, error = %e, "scenario event failed"),
            }
        }
        if let Some((line, reply)) = command {
            let result = match parse_command(&line, now) {
                Ok(event) => fire(
                    &plant,
                    &mut endpoints,
                    &mut lines,
                    &bus_names,
                    &event,
                    &mut pending,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send(result);
        }
    }
}

async fn fire(
    plant: &SharedPlant,
    endpoints: &mut [Endpoint],
    lines: &mut [LineHandle],
    bus_names: &[String],
    event: &Event,
    pending: &mut Vec<Event>,
) -> Result<String, ScenarioError> {
    let line = bus_names
        .iter()
        .position(|b| *b == event.target)
        .and_then(|b| lines.iter().find(|l| l.bus == b));
    if let (true, Some(line)) = (event.action.is_bus(), line) {
        let done = match event.action {
            Action::Unplug | Action::BusDown => {
                let (tx, rx) = oneshot::channel();
                let _ = line.control.send(LineControl::Unplug(tx)).await;
                rx.await.map_err(|_| stopped_line(&event.target))?
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                let _ = line.control.send(LineControl::Replug(tx)).await;
                rx.await
                    .map_err(|_| stopped_line(&event.target))?
                    .map_err(ScenarioError::BadCommand)?
            }
        };
        if let Some(undo) = reversal(event) {
            pending.push(undo);
        }
        return Ok(done);
    }
    if matches!(event.action, Action::Unplug | Action::Replug) {
        return Err(ScenarioError::UnknownTarget {
            action: event.action,
            kind: "RTU bus",
            target: event.target.clone(),
        });
    }
    if event.action.is_bus() {
        let bus = bus_names
            .iter()
            .position(|b| *b == event.target)
            .and_then(|b| endpoints.iter_mut().find(|e| e.bus == b))
            .ok_or_else(|| ScenarioError::UnknownTarget {
                action: event.action,
                kind: "TCP bus",
                target: event.target.clone(),
            })?;
        match event.action {
            Action::BusDown => {
                if let Some(task) = bus.task.take() {
                    task.abort();
                    let _ = task.await;
                }
            }
            _ => {
                if bus.task.is_none() {
                    match TcpListener::bind(bus.addr).await {
                        Ok(listener) => {
                            bus.task = Some(listen(
                                plant.clone(),
                                bus.devices.clone(),
                                listener,
                                bus.reply_delay,
                            ))
                        }
                        Err(e) => {
                            return Err(ScenarioError::BadCommand(format!(
                                "bus-up {}: cannot listen on {}: {e}",
                                event.target, bus.addr
                            )))
                        }
                    }
                }
            }
        }
    } else {
        apply(&mut lock(plant), event)?;
    }
    if let Some(undo) = reversal(event) {
        pending.push(undo);
    }
    Ok(format!("{:?} {}", event.action, event.target))
}

fn stopped_line(bus: &str) -> ScenarioError {
    ScenarioError::BadCommand(format!("bus {bus}: its line task has stopped"))
}
