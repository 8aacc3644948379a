//! One task per bus: owns the connection, runs the poll schedule of the bus's devices.
//!
//! The schedule, the degrade/probe bookkeeping, the readings and the device health are the same
//! for every transport; only how one read travels differs. That part is a [`Link`]: Modbus TCP
//! through tokio-modbus ([`TcpLink`]) or Modbus RTU on a serial line (`super::rtu::RtuLink`).
//!
//! Invariants:
//! - Every request has a timeout (the link enforces it; tokio-modbus has none of its own).
//! - A link that a fault made untrustworthy ([`Link::survives`] is false) is closed and reopened,
//!   so a late reply can never be taken as the answer to the next request. TCP drops the
//!   connection after a timeout, I/O error or bad frame; RTU keeps its port (it flushes input and
//!   checks unit, function and length instead) and reopens it only after an I/O error.
//! - A device that fails `degrade_after` polls in a row is degraded: its points get `Degraded`
//!   fault readings on schedule without any I/O, and it is probed once per `probe_interval`. So a
//!   dead device costs one timeout per probe period, not per sweep, and never stalls the others.
//! - A failed connect (or port open) is retried with capped, jittered exponential backoff; while
//!   disconnected the bus's devices get `NotConnected` fault readings on schedule (the record
//!   shows the gap).
//! - After a timeout on a link that stays open (RTU), the device is not asked again for one more
//!   timeout: a reply up to twice the timeout late lands in another device's exchange or on an
//!   idle line and is discarded, never in this device's next exchange, whose function and length
//!   it would fit. (Later than that, no master can tell it from an answer: the protocol has no
//!   transaction ids. Degrading makes that rare: a dead device is asked once per probe period.)
//! - A merged read refused with exception 02 (illegal data address) switches that device to one
//!   read per point, once, and is retried immediately.
//! - Frames a link heard but discarded (wrong unit, function or length, bad CRC) are counted
//!   against the device whose unit they carry, if it is on this bus, else against the device
//!   being polled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;

use super::decode::decode_point;
use super::plan::{plan_reads, split_per_point, ReadRequest};
use super::reading::{Fault, Outcome, Reading};
use super::rtu::serial_link;
use super::PointTable;
use crate::clock::now_ms;
use crate::config::profile::{Profile, Table};
use crate::config::{BusConfig, SiteConfig, Transport};
use crate::state::PlantState;

/// Exception 02, illegal data address.
const ILLEGAL_DATA_ADDRESS: u8 = 0x02;

/// Backoff for reconnecting: 200 ms doubling to 30 s, each wait jittered to 50–100 %.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// One device's schedule and plan on its bus.
pub(crate) struct Scheduled {
    pub(crate) device: usize,
    pub(crate) name: String,
    pub(crate) unit: u8,
    pub(crate) profile: Arc<Profile>,
    pub(crate) reads: Arc<[ReadRequest]>,
    pub(crate) split: bool,
    pub(crate) interval: Duration,
    pub(crate) next_due: Instant,
    pub(crate) consecutive_failures: u32,
    pub(crate) degraded_until: Option<Instant>,
    /// Not to be asked again before this: after a timeout on a kept link, its late reply may
    /// still come, and must land while another device is asked (or the line is idle), where it
    /// is discarded, not in this device's next exchange, where it would fit.
    pub(crate) hold_until: Option<Instant>,
    /// This device's response timeout, when it differs from the bus's.
    pub(crate) timeout: Option<Duration>,
}

impl Scheduled {
    /// Device `device` with `unit`, `profile` and `interval`, due now.
    pub(crate) fn new(
        device: usize,
        name: &str,
        unit: u8,
        profile: Arc<Profile>,
        interval: Duration,
        max_gap: u16,
    ) -> Self {
        Scheduled {
            device,
            name: name.to_owned(),
            unit,
            reads: plan_reads(&profile.points, max_gap).into(),
            profile,
            split: false,
            interval,
            next_due: Instant::now(),
            consecutive_failures: 0,
            degraded_until: None,
            hold_until: None,
            timeout: None,
        }
    }

    /// The same device with its own response timeout.
    pub(crate) fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What one request gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReadResult {
    /// The registers (bits as 0/1), at least as many as asked for.
    Words(Vec<u16>),
    /// A Modbus exception code from the device.
    Exception(u8),
    /// No usable answer, and why.
    Fault(Fault, String),
}

/// A frame a link heard and threw away instead of taking it as an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Discarded {
    /// Unit id the frame carried (for a bad CRC: the unit being polled).
    pub(crate) unit: u8,
    /// The CRC did not check (else: wrong unit, function or length, or a late reply).
    pub(crate) crc: bool,
    /// In words, with the values.
    pub(crate) why: String,
}

/// How the requests of one bus travel: a TCP connection or a serial line.
///
/// `async fn` in a crate-private trait: every implementation is known here, and the bus tasks
/// are spawned with concrete links, so their futures are checked to be `Send` there.
pub(crate) trait Link {
    /// Where the link goes (`host:port`, `/dev/ttyUSB0`), for logs and errors.
    fn target(&self) -> &str;
    /// Whether the connection or port is open.
    fn is_open(&self) -> bool;
    /// Opens the connection or port; `unit` is the first device to be polled.
    async fn open(&mut self, unit: u8, timeout: Duration) -> Result<(), String>;
    /// Closes it (the next poll reopens it).
    fn close(&mut self);
    /// Reads `read` from `unit`, waiting at most `timeout` for the answer.
    async fn read(&mut self, unit: u8, read: &ReadRequest, timeout: Duration) -> ReadResult;
    /// Whether the link may be used again after a read failed with `fault`.
    fn survives(&self, fault: Fault) -> bool;
    /// Frames discarded since the last call.
    fn take_discarded(&mut self) -> Vec<Discarded> {
        Vec::new()
    }
}

/// Runs every bus of `config` until `stop` is cancelled. Readings go to `out`.
///
/// Each bus watches its own child of `stop`: a token's state sits behind a mutex, and a bus
/// behind schedule checks it once a poll, so one shared token would have every bus contend.
pub fn spawn_buses(
    config: &SiteConfig,
    points: &Arc<PointTable>,
    state: &PlantState,
    out: &mpsc::Sender<Vec<Reading>>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (b, bus) in config.buses.iter().enumerate() {
        let devices: Vec<Scheduled> = config
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.bus == b)
            .map(|(i, d)| {
                Scheduled::new(
                    i,
                    &d.name,
                    d.unit.get(),
                    d.profile.clone(),
                    d.poll_interval,
                    bus.max_gap,
                )
                .with_timeout(d.timeout)
            })
            .collect();
        if devices.is_empty() {
            continue;
        }
        match &bus.transport {
            Transport::Tcp { address } => {
                let link = TcpLink {
                    address: address.clone(),
                    ctx: None,
                };
                let poller = BusPoller::new(bus.clone(), link, devices, points, state, out);
                tasks.push(tokio::spawn(poller.run(stop.child_token())));
            }
            Transport::Rtu(serial) => {
                let link = serial_link(serial);
                let poller = BusPoller::new(bus.clone(), link, devices, points, state, out);
                tasks.push(tokio::spawn(poller.run(stop.child_token())));
            }
        }
    }
    tasks
}

/// The schedule of one bus over one link.
pub(crate) struct BusPoller<L> {
    bus: BusConfig,
    link: L,
    devices: Vec<Scheduled>,
    /// Every device but the one being polled, by when it is due next (then by index, so devices
    /// due at the same time go in configuration order). Only [`BusPoller::reschedule`] moves a
    /// device's `next_due`, and it puts the device back here.
    queue: BinaryHeap<Reverse<(Instant, usize)>>,
    points: Arc<PointTable>,
    state: PlantState,
    out: mpsc::Sender<Vec<Reading>>,
}

impl<L: Link> BusPoller<L> {
    pub(crate) fn new(
        bus: BusConfig,
        link: L,
        devices: Vec<Scheduled>,
        points: &Arc<PointTable>,
        state: &PlantState,
        out: &mpsc::Sender<Vec<Reading>>,
    ) -> Self {
        BusPoller {
            bus,
            link,
            queue: devices
                .iter()
                .enumerate()
                .map(|(i, d)| Reverse((d.next_due, i)))
                .collect(),
            devices,
            points: points.clone(),
            state: state.clone(),
            out: out.clone(),
        }
    }

    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut reconnect_at = Instant::now();
        let mut connect_error_logged = false;
        loop {
            let Some(Reverse((due, next))) = self.queue.pop() else {
                return;
            };
            if due > Instant::now() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(due) => {}
                }
            } else if stop.is_cancelled() {
                // Behind schedule: no timer to wait for.
                return;
            }
            let now = Instant::now();
            let at_ms = now_ms();
            let degraded_skip = self.devices[next]
                .degraded_until
                .is_some_and(|until| now < until);
            if degraded_skip {
                let readings = self.fault_readings(next, at_ms, Fault::Degraded);
                self.reschedule(next, now);
                if self.out.send(readings).await.is_err() {
                    return;
                }
                continue;
            }
            if !self.link.is_open() && now >= reconnect_at {
                match self
                    .link
                    .open(self.devices[next].unit, self.bus.timeout)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(bus = %self.bus.name, target = %self.link.target(), "connected");
                        backoff.reset();
                        connect_error_logged = false;
                        self.set_connected(true);
                    }
                    Err(why) => {
                        let wait = backoff.next_wait();
                        reconnect_at = Instant::now() + wait;
                        if !connect_error_logged {
                            tracing::warn!(bus = %self.bus.name, target = %self.link.target(), error = %why,
                                "cannot connect; retrying with backoff (devices on this bus get fault readings meanwhile)");
                            connect_error_logged = true;
                        }
                        self.set_connected(false);
                        let target = self.link.target().to_owned();
                        self.with_health(next, |h| {
                            h.io_errors += 1;
                            h.last_error = Some(format!("connect to {target}: {why}"));
                        });
                    }
                }
            }
            if !self.link.is_open() {
                let readings = self.fault_readings(next, at_ms, Fault::NotConnected);
                self.reschedule(next, now);
                if self.out.send(readings).await.is_err() {
                    return;
                }
                continue;
            }
            let (readings, keep_connection) = self.poll_device(next, at_ms).await;
            if !keep_connection {
                self.link.close();
                self.set_connected(false);
                reconnect_at = Instant::now();
            }
            self.reschedule(next, now);
            if self.out.send(readings).await.is_err() {
                return;
            }
        }
    }

    fn reschedule(&mut self, i: usize, now: Instant) {
        let d = &mut self.devices[i];
        // Keep the cadence; after falling behind, start again from now instead of bursting.
        d.next_due = (d.next_due + d.interval).max(now);
        if let Some(hold) = d.hold_until.take() {
            d.next_due = d.next_due.max(hold);
        }
        self.queue.push(Reverse((d.next_due, i)));
    }

    fn with_health(&self, i: usize, f: impl FnOnce(&mut crate::state::DeviceHealth)) {
        self.state.with_device(self.devices[i].device, f);
    }

    fn set_connected(&self, connected: bool) {
        for d in &self.devices {
            self.state
                .with_device(d.device, |h| h.connected = connected);
        }
    }

    fn fault_readings(&self, i: usize, at_ms: i64, fault: Fault) -> Vec<Reading> {
        let d = &self.devices[i];
        (0..d.profile.points.len())
            .map(|p| {
                Reading::new(
                    at_ms,
                    self.points.id(d.device, p),
                    Outcome::Fault(fault),
                    (None, None),
                )
            })
            .collect()
    }

    /// Counts what the link threw away while device `i` was being read.
    fn count_discarded(&mut self, i: usize) {
        for d in self.link.take_discarded() {
            let owner = self
                .devices
                .iter()
                .position(|s| s.unit == d.unit)
                .unwrap_or(i);
            tracing::debug!(bus = %self.bus.name, device = %self.devices[owner].name, "{}", d.why);
            self.with_health(owner, |h| {
                if d.crc {
                    h.crc_errors += 1;
                } else {
                    h.bad_frames += 1;
                }
                h.last_error = Some(d.why);
            });
        }
    }

    /// Polls one device. Returns its readings and whether the connection may be kept.
    async fn poll_device(&mut self, i: usize, at_ms: i64) -> (Vec<Reading>, bool) {
        let timeout = self.devices[i].timeout.unwrap_or(self.bus.timeout);
        let unit = self.devices[i].unit;
        let mut readings = Vec::with_capacity(self.devices[i].profile.points.len());
        let mut answered = false;
        let mut failure: Option<(Fault, String)> = None;
        let mut reads = self.devices[i].reads.clone();
        let mut r = 0;
        while r < reads.len() {
            let read = &reads[r];
            if let Some((fault, _)) = &failure {
                // The device or the link is unreliable: the rest of this device's reads fail too.
                self.push_outcome(&mut readings, i, read, at_ms, Outcome::Fault(*fault));
                r += 1;
                continue;
            }
            let result = self.link.read(unit, read, timeout).await;
            self.count_discarded(i);
            match result {
                ReadResult::Words(words) => {
                    answered = true;
                    let d = &self.devices[i];
                    for &p in &read.points {
                        let point = &d.profile.points[p];
                        let offset = usize::from(point.address - read.start);
                        let outcome = match words.get(offset..) {
                            Some(slice) => match decode_point(slice, point) {
                                Ok(v) => Outcome::Value(v),
                                Err(_) => Outcome::Fault(Fault::BadFrame),
                            },
                            None => Outcome::Fault(Fault::BadFrame),
                        };
                        readings.push(Reading::new(
                            at_ms,
                            self.points.id(d.device, p),
                            outcome,
                            (point.range_min, point.range_max),
                        ));
                    }
                }
                ReadResult::Exception(code) => {
                    answered = true;
                    if code == ILLEGAL_DATA_ADDRESS
                        && read.points.len() > 1
                        && !self.devices[i].split
                    {
                        let d = &mut self.devices[i];
                        tracing::info!(device = %d.name, table = %read.table, start = read.start, count = read.count,
                            "device refused a merged read (exception 02); reading its points one by one from now on");
                        d.split = true;
                        d.reads = split_per_point(&d.profile.points).into();
                        reads = d.reads.clone();
                        readings.clear();
                        r = 0;
                        continue;
                    }
                    self.with_health(i, |h| {
                        h.exceptions += 1;
                        h.last_error = Some(format!(
                            "exception {code:02X} reading {} {}+{}",
                            read.table, read.start, read.count
                        ));
                    });
                    self.push_outcome(&mut readings, i, read, at_ms, Outcome::Exception(code));
                }
                ReadResult::Fault(fault, why) => {
                    self.with_health(i, |h| {
                        h.count_fault(fault);
                        h.last_error = Some(why.clone());
                    });
                    self.push_outcome(&mut readings, i, read, at_ms, Outcome::Fault(fault));
                    failure = Some((fault, why));
                }
            }
            r += 1;
        }
        let now = Instant::now();
        let probe = self.bus.probe_interval;
        let degrade_after = self.bus.degrade_after;
        let d = &mut self.devices[i];
        if answered && failure.is_none() {
            if d.degraded_until.is_some() {
                tracing::info!(device = %d.name, "device answers again; no longer degraded");
            }
            d.consecutive_failures = 0;
            d.degraded_until = None;
        } else if failure.is_some() {
            d.consecutive_failures += 1;
            if d.consecutive_failures >= degrade_after {
                if d.degraded_until.is_none() {
                    tracing::warn!(device = %d.name, failures = d.consecutive_failures, probe_ms = probe.as_millis() as u64,
                        "device degraded: probing it only once per probe interval");
                }
                d.degraded_until = Some(now + probe);
            }
        }
        let (failures, degraded) = (d.consecutive_failures, d.degraded_until.is_some());
        self.with_health(i, |h| {
            h.polls += 1;
            h.consecutive_failures = failures;
            h.degraded = degraded;
            if answered && failures == 0 {
                h.last_ok_ms = Some(at_ms);
            }
        });
        let keep = match &failure {
            Some((fault, _)) => self.link.survives(*fault),
            None => true,
        };
        if keep && matches!(failure, Some((Fault::Timeout, _))) {
            self.devices[i].hold_until = Some(Instant::now() + timeout);
        }
        (readings, keep)
    }

    fn push_outcome(
        &self,
        readings: &mut Vec<Reading>,
        i: usize,
        read: &ReadRequest,
        at_ms: i64,
        outcome: Outcome,
    ) {
        let d = &self.devices[i];
        for &p in &read.points {
            readings.push(Reading::new(
                at_ms,
                self.points.id(d.device, p),
                outcome,
                (None, None),
            ));
        }
    }
}

/// Modbus TCP through tokio-modbus: one connection per bus, the unit id set per request.
pub(crate) struct TcpLink {
    address: String,
    ctx: Option<Context>,
}

impl Link for TcpLink {
    fn target(&self) -> &str {
        &self.address
    }

    fn is_open(&self) -> bool {
        self.ctx.is_some()
    }

    async fn open(&mut self, unit: u8, timeout: Duration) -> Result<(), String> {
        self.ctx = Some(connect(&self.address, timeout, unit).await?);
        Ok(())
    }

    fn close(&mut self) {
        self.ctx = None;
    }

    async fn read(&mut self, unit: u8, read: &ReadRequest, timeout: Duration) -> ReadResult {
        let Some(ctx) = self.ctx.as_mut() else {
            return ReadResult::Fault(Fault::NotConnected, "not connected".to_owned());
        };
        ctx.set_slave(Slave(unit));
        read_once(ctx, read, timeout).await
    }

    fn survives(&self, fault: Fault) -> bool {
        // A reply may still be on its way: only a new connection is sure not to carry it.
        !matches!(fault, Fault::Timeout | Fault::Io | Fault::BadFrame)
    }
}

async fn connect(address: &str, timeout: Duration, unit: u8) -> Result<Context, String> {
    let attempt = async {
        let mut last = String::from("no address");
        for addr in tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
        {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    return Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)));
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
    }
}

fn bits_to_words(bits: Vec<bool>) -> Vec<u16> {
    bits.into_iter().map(u16::from).collect()
}

async fn read_once(ctx: &mut Context, read: &ReadRequest, timeout: Duration) -> ReadResult {
    let request = async {
        match read.table {
            Table::Coil => ctx
                .read_coils(read.start, read.count)
                .await
                .map(|r| r.map(bits_to_words)),
            Table::DiscreteInput => ctx
                .read_discrete_inputs(read.start, read.count)
                .await
                .map(|r| r.map(bits_to_words)),
            Table::Holding => ctx.read_holding_registers(read.start, read.count).await,
            Table::Input => ctx.read_input_registers(read.start, read.count).await,
        }
    };
    match tokio::time::timeout(timeout, request).await {
        Err(_) => ReadResult::Fault(
            Fault::Timeout,
            format!(
                "no reply within {} ms to {} {}+{}",
                timeout.as_millis(),
                read.table,
                read.start,
                read.count
            ),
        ),
        Ok(Err(tokio_modbus::Error::Transport(e))) => {
            ReadResult::Fault(Fault::Io, format!("connection: {e}"))
        }
        Ok(Err(tokio_modbus::Error::Protocol(e))) => {
            ReadResult::Fault(Fault::BadFrame, format!("bad reply: {e}"))
        }
        Ok(Ok(Err(exception))) => ReadResult::Exception(u8::from(exception)),
        Ok(Ok(Ok(words))) if words.len() >= usize::from(read.count) => ReadResult::Words(words),
        Ok(Ok(Ok(words))) => ReadResult::Fault(
            Fault::BadFrame,
            format!("asked for {} values, got {}", read.count, words.len()),
        ),
    }
}
