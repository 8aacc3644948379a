//! Serving the plant on serial lines: one pseudo-terminal per RTU bus of the site config.
//!
//! Every device on a line is a [`crate::nodes::Node`] (seal nodes run the firmware's `SealNode`,
//! with its own frame assembler). Like on RS-485, every byte goes to every device on the line and
//! only the addressed one answers.
//!
//! Line emulation (`--line-emulation`): a pty has no bit timing, so the sim makes it. A reply
//! goes out only after the request's time on the wire (11 bits a character), t3.5 of silence and
//! the device turnaround, and its bytes are paced at the line's baud; a master that sends before
//! t3.5 of silence after a reply is logged. Bus timing measured on such a pty is the physical
//! timing of the line.
//!
//! Invariants:
//! - one task owns a line: replies never overlap, and a late reply queues behind the line;
//! - the sim keeps its own handle on the slave side open, so the line survives the master side
//!   (the agent) closing and reopening it; `unplug` closes both sides and removes the path, so
//!   the agent sees the adapter vanish; `replug` makes a new pty behind the same path.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealwatch_agent::config::{SiteConfig, Transport};
use sealwatch_firmware::modbus::{encode_rtu, ExceptionCode, FrameAssembler};
use sealwatch_firmware::BaudRate;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_serial::{SerialPort as _, SerialStream};

use crate::nodes::{bus_nodes, Node};
use crate::plant::{lock, SharedPlant};

/// How a line behaves in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineOptions {
    /// Pace bytes at the baud, enforce t3.5 and the turnaround.
    pub emulate: bool,
    /// Time a device takes between the end of a request (after t3.5) and its reply.
    pub turnaround: Duration,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions {
            emulate: false,
            turnaround: Duration::from_millis(1),
        }
    }
}

/// What can be done to a line while it runs.
pub(crate) enum LineControl {
    /// The adapter disappears.
    Unplug(oneshot::Sender<String>),
    /// The adapter is back.
    Replug(oneshot::Sender<Result<String, String>>),
}

/// A running line.
pub(crate) struct LineHandle {
    /// Bus index.
    pub(crate) bus: usize,
    /// Commands to its task.
    pub(crate) control: mpsc::Sender<LineControl>,
}

/// One side of a pty pair held by the sim, and the path the master opens.
struct Pty {
    master: SerialStream,
    _slave: SerialStream,
    path: String,
    link: Option<PathBuf>,
}

impl Pty {
    /// A new pty pair; with `link`, a symlink at that path points to its slave side.
    fn open(link: Option<&Path>) -> io::Result<Pty> {
        let (master, slave) = SerialStream::pair().map_err(io::Error::from)?;
        let name = slave
            .name()
            .ok_or_else(|| io::Error::other("the pty has no name"))?;
        let path = match link {
            Some(link) => {
                match std::fs::remove_file(link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                std::os::unix::fs::symlink(&name, link)?;
                link.display().to_string()
            }
            None => name,
        };
        Ok(Pty {
            master,
            _slave: slave,
            path,
            link: link.map(Path::to_path_buf),
        })
    }

    /// Closes both sides and removes the symlink.
    fn unplug(self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// Waits until `deadline` to within tens of microseconds: the timer wheel (1 ms) for the bulk,
/// a blocking-pool sleep for the rest.
pub async fn precise_sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now + Duration::from_millis(2) {
        tokio::time::sleep_until(deadline - Duration::from_micros(1_500)).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// One serial line in time.
struct Line {
    name: String,
    plant: SharedPlant,
    nodes: Vec<Node>,
    options: LineOptions,
    t_char: Duration,
    silence: Duration,
    link: Option<PathBuf>,
    /// Replies waiting for their time: (when, bytes).
    pending: Vec<(Instant, Vec<u8>)>,
    /// When the last reply byte went out.
    last_tx_end: Option<Instant>,
    silence_violations: u64,
}

impl Line {
    /// Feeds bytes that arrived at `at` to every node; schedules their replies.
    fn on_bytes(&mut self, bytes: &[u8], at: Instant) {
        if self.options.emulate {
            if let Some(end) = self.last_tx_end {
                if at < end + self.silence {
                    self.silence_violations += 1;
                    if self.silence_violations == 1 || self.silence_violations % 1000 == 0 {
                        tracing::warn!(bus = %self.name, gap_us = at.saturating_duration_since(end).as_micros() as u64,
                            violations = self.silence_violations, "the master sent before t3.5 of silence");
                    }
                }
            }
        }
        let plant = lock(&self.plant);
        let mut replies = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            for (n, node) in self.nodes.iter_mut().enumerate() {
                if let Some(reply) = node.on_byte(b, at, &plant) {
                    replies.push((n, reply.to_vec(), i + 1));
                }
            }
        }
        drop(plant);
        for (n, reply, request_bytes) in replies {
            // On the wire, the request ends `request_bytes` characters after it began arriving.
            let wire_end = at + self.t_char * request_bytes as u32;
            self.schedule(n, reply, wire_end);
        }
    }

    /// Applies the device's state and faults to a reply and queues it.
    fn schedule(&mut self, n: usize, mut reply: Vec<u8>, request_end: Instant) {
        let node = &mut self.nodes[n];
        let (answers, failing, faults) = {
            let plant = lock(&self.plant);
            let d = &plant.devices[node.device];
            (plant.answers(node.device), d.failing, d.line_faults)
        };
        if !answers {
            return;
        }
        if failing && node.is_seal_node() && reply.len() >= 2 {
            let mut adu = sealwatch_firmware::modbus::AduBuf::new();
            let pdu = [reply[1] | 0x80, ExceptionCode::ServerDeviceFailure.code()];
            if encode_rtu(reply[0], &pdu, &mut adu).is_ok() {
                reply = adu.to_vec();
            }
        }
        node.replies = node.replies.wrapping_add(1);
        if faults.garbage {
            reply = (0..reply.len())
                .map(|i| 0xA5 ^ (i as u8).wrapping_mul(37))
                .collect();
        } else if faults.corrupt_every > 0 && node.replies % faults.corrupt_every == 0 {
            if let Some(last) = reply.last_mut() {
                *last ^= 0x5A;
            }
        }
        let mut due = if self.options.emulate {
            request_end.max(Instant::now()) + self.silence + self.options.turnaround
        } else {
            Instant::now()
        };
        due += Duration::from_millis(faults.slow_ms + faults.late_ms);
        self.pending.push((due, reply));
    }

    /// The reply due first, if any.
    fn next_due(&self) -> Option<(usize, Instant)> {
        self.pending
            .iter()
            .enumerate()
            .min_by_key(|(_, (due, _))| *due)
            .map(|(i, (due, _))| (i, *due))
    }

    /// Writes `bytes`, paced at the baud when emulating the line.
    async fn transmit(&mut self, port: &mut SerialStream, bytes: &[u8]) -> io::Result<()> {
        if !self.options.emulate {
            port.write_all(bytes).await?;
            self.last_tx_end = Some(Instant::now());
            return Ok(());
        }
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes.len() {
            // Characters whose last bit has left the UART by now.
            let done = ((start.elapsed().as_nanos() / self.t_char.as_nanos().max(1)) as usize)
                .min(bytes.len());
            if done > sent {
                port.write_all(&bytes[sent..done]).await?;
                sent = done;
            }
            if sent < bytes.len() {
                let end = start + self.t_char * bytes.len() as u32;
                let next = start + self.t_char * (sent as u32 + 1);
                if end.saturating_duration_since(Instant::now()) > Duration::from_millis(2) {
                    // In the middle of a long frame, whole milliseconds are close enough.
                    tokio::time::sleep_until(next.max(Instant::now() + Duration::from_millis(1)))
                        .await;
                } else {
                    precise_sleep_until(end).await;
                }
            }
        }
        self.last_tx_end = Some(Instant::now());
        Ok(())
    }

    /// Feeds the nodes their sensors, lets their silences pass, powers them off and on.
    fn tick(&mut self, now: Instant) {
        let plant = lock(&self.plant);
        let mut replies = Vec::new();
        for (n, node) in self.nodes.iter_mut().enumerate() {
            if let Some(reply) = node.tick(&plant, now) {
                replies.push((n, reply.to_vec()));
            }
        }
        drop(plant);
        for (n, reply) in replies {
            self.schedule(n, reply, now);
        }
    }

    async fn run(mut self, mut pty: Option<Pty>, mut control: mpsc::Receiver<LineControl>) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut buf = [0u8; 512];
        loop {
            let due = self.next_due();
            let read = async {
                match pty.as_mut() {
                    Some(p) => p.master.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = read => match r {
                    Ok(0) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Ok(n) => {
                        let at = Instant::now();
                        let bytes = buf[..n].to_vec();
                        self.on_bytes(&bytes, at);
                    }
                    Err(e) => {
                        tracing::debug!(bus = %self.name, error = %e, "pty read failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                () = precise_sleep_until(due.map_or(Instant::now(), |(_, at)| at)), if due.is_some() => {
                    let Some((i, _)) = due else { continue };
                    let (_, bytes) = self.pending.swap_remove(i);
                    if let Some(p) = pty.as_mut() {
                        if let Err(e) = self.transmit(&mut p.master, &bytes).await {
                            tracing::debug!(bus = %self.name, error = %e, "pty write failed");
                        }
                    }
                }
                _ = tick.tick() => self.tick(Instant::now()),
                c = control.recv() => match c {
                    None => return,
                    Some(LineControl::Unplug(reply)) => {
                        if let Some(p) = pty.take() {
                            p.unplug();
                        }
                        self.pending.clear();
                        let _ = reply.send(format!("Unplug {}", self.name));
                    }
                    Some(LineControl::Replug(reply)) => {
                        let result = match &pty {
                            Some(p) => Ok(format!("Replug {} on {}", self.name, p.path)),
                            None => match Pty::open(self.link.as_deref()) {
                                Ok(p) => {
                                    let done = format!("Replug {} on {}", self.name, p.path);
                                    pty = Some(p);
                                    Ok(done)
                                }
                                Err(e) => Err(format!("replug {}: cannot make a pty: {e}", self.name)),
                            },
                        };
                        let _ = reply.send(result);
                    }
                },
            }
        }
    }
}

/// Starts RTU bus `bus` on a new pty (behind a symlink at `link`, if given). Returns the line
/// and the path the master should open.
pub(crate) fn start_line(
    config: &SiteConfig,
    plant: &SharedPlant,
    bus: usize,
    link: Option<&Path>,
    options: LineOptions,
) -> io::Result<(LineHandle, String)> {
    let baud = match &config.buses[bus].transport {
        Transport::Rtu(s) => s.baud,
        Transport::Tcp { .. } => BaudRate::B19200,
    }
    .bits_per_second();
    let pty = Pty::open(link)?;
    let path = pty.path.clone();
    let now = Instant::now();
    let nodes = bus_nodes(config, &lock(plant), bus, now);
    let line = Line {
        name: config.buses[bus].name.clone(),
        plant: plant.clone(),
        nodes,
        options,
        t_char: Duration::from_nanos(11_000_000_000 / u64::from(baud.max(1))),
        silence: FrameAssembler::silence_for_baud(baud),
        link: link.map(Path::to_path_buf),
        pending: Vec::new(),
        last_tx_end: None,
        silence_violations: 0,
    };
    let (tx, rx) = mpsc::channel(4);
    // Ends when the sim drops the line's handle.
    tokio::spawn(line.run(Some(pty), rx));
    Ok((LineHandle { bus, control: tx }, path))
}
