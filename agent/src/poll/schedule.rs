//! The schedule of one bus: which device is polled when, over the bus's [`Link`].
//!
//! The schedule, the degrade/probe bookkeeping, the readings and the device health are the same
//! for every transport; how a request travels is the link's business (`crate::modbus`).
//!
//! Invariants:
//! - Every request has a timeout (the link enforces it).
//! - A link that a failure made untrustworthy ([`LinkError::survives`] is false) is closed and
//!   reopened; otherwise it is kept (TCP matches transaction ids, RTU quiets the unit that timed
//!   out), and a late reply is never taken as the answer to the next request.
//! - A device the link is quieting ([`Link::quiet_until`]) is not asked before the quiet ends;
//!   the others keep their cadence meanwhile.
//! - A device that fails `degrade_after` polls in a row is degraded: its points get `Degraded`
//!   fault readings on schedule without any I/O, and it is probed once per `probe_interval`. So a
//!   dead device costs one timeout per probe period, not per sweep, and never stalls the others.
//! - A failed connect (or port open) is retried with capped, jittered exponential backoff; while
//!   disconnected the bus's devices get `NotConnected` fault readings on schedule (the record
//!   shows the gap).
//! - A merged read refused with exception 02 (illegal data address) switches that device to one
//!   read per point, once, and is retried immediately.
//! - Frames a link heard but discarded (wrong unit, function or length, bad CRC, late replies)
//!   are counted against the device whose unit they carry, if it is on this bus, else against
//!   the device being polled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use sealwatch_firmware::modbus::{ExceptionCode, UnitId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decode::decode_point;
use super::plan::{plan_reads, split_per_point, ReadRequest};
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::config::profile::Profile;
use crate::config::BusConfig;
use crate::modbus::{HeardKind, Link, LinkError};
use crate::model::{Fault, Outcome, PointTable, Reading};
use crate::state::PlantState;

/// One device's schedule and plan on its bus.
pub struct Scheduled {
    device: usize,
    name: String,
    unit: UnitId,
    profile: Arc<Profile>,
    reads: Arc<[ReadRequest]>,
    split: bool,
    interval: Duration,
    next_due: Instant,
    consecutive_failures: u32,
    degraded_until: Option<Instant>,
    /// This device's response timeout, when it differs from the bus's.
    timeout: Option<Duration>,
}

impl Scheduled {
    /// Device `device` (its index in the config) with `unit`, `profile` and `interval`, due now.
    pub fn new(
        device: usize,
        name: &str,
        unit: UnitId,
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
            timeout: None,
        }
    }

    /// The same device with its own response timeout.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The fault a reading gets when its request failed with `e` (an exception is not a fault).
fn fault_of(e: &LinkError) -> Option<Fault> {
    Some(match e {
        LinkError::Exception { .. } => return None,
        LinkError::Timeout { .. } => Fault::Timeout,
        LinkError::BadFrame { .. } | LinkError::LateReply { .. } | LinkError::Encode(_) => {
            Fault::BadFrame
        }
        LinkError::Io { .. } => Fault::Io,
        LinkError::Open { .. } | LinkError::NotOpen { .. } => Fault::NotConnected,
    })
}

/// What one poll of a device gave.
struct Poll {
    readings: Vec<Reading>,
    /// Some request was answered (a value or an exception).
    answered: bool,
    /// The request that failed (the rest of the device's reads were not sent).
    failure: Option<LinkError>,
}

/// The schedule of one bus over one link.
pub struct BusPoller<L> {
    bus: BusConfig,
    link: L,
    devices: Vec<Scheduled>,
    /// Every device but the one being polled, by when it is due next (then by index, so devices
    /// due at the same time go in configuration order). Only [`BusPoller::reschedule`] and
    /// [`BusPoller::postpone`] move a device's `next_due`, and they put the device back here.
    queue: BinaryHeap<Reverse<(Instant, usize)>>,
    points: Arc<PointTable>,
    state: PlantState,
    out: mpsc::Sender<Vec<Reading>>,
    backoff: Backoff,
    reconnect_at: Instant,
    connect_error_logged: bool,
}

impl<L: Link> BusPoller<L> {
    /// The schedule of `devices` on `bus` over `link`; readings go to `out`, health to `state`.
    pub fn new(
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
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            reconnect_at: Instant::now(),
            connect_error_logged: false,
        }
    }

    /// Polls until `stop` is cancelled or nobody takes readings any more.
    pub async fn run(mut self, stop: CancellationToken) {
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
            let degraded = self.devices[next]
                .degraded_until
                .is_some_and(|until| now < until);
            if let Some(until) = self.link.quiet_until(self.devices[next].unit) {
                if !degraded {
                    // Its late reply may still come: ask the others meanwhile.
                    self.postpone(next, until);
                    continue;
                }
            }
            let at_ms = now_ms();
            let readings = if degraded {
                self.fault_readings(next, at_ms, Fault::Degraded)
            } else if !self.ensure_open(next, now).await {
                self.fault_readings(next, at_ms, Fault::NotConnected)
            } else {
                let readings = self.poll_device(next, at_ms).await;
                if !self.link.is_open() {
                    self.set_connected(false);
                    self.reconnect_at = Instant::now();
                }
                readings
            };
            self.reschedule(next, now);
            if self.out.send(readings).await.is_err() {
                return;
            }
        }
    }

    /// Opens the link if it is closed and the backoff allows; whether it is open.
    async fn ensure_open(&mut self, i: usize, now: Instant) -> bool {
        if self.link.is_open() {
            return true;
        }
        if now < self.reconnect_at {
            return false;
        }
        match self.link.open(self.bus.timeout).await {
            Ok(()) => {
                tracing::info!(bus = %self.bus.name, target = %self.link.target(), "connected");
                self.backoff.reset();
                self.connect_error_logged = false;
                self.set_connected(true);
                true
            }
            Err(why) => {
                self.reconnect_at = Instant::now() + self.backoff.next_wait();
                if !self.connect_error_logged {
                    tracing::warn!(bus = %self.bus.name, target = %self.link.target(), error = %why,
                        "cannot connect; retrying with backoff (devices on this bus get fault readings meanwhile)");
                    self.connect_error_logged = true;
                }
                self.set_connected(false);
                self.with_health(i, |h| {
                    h.io_errors += 1;
                    h.last_error = Some(why.to_string());
                });
                false
            }
        }
    }

    fn reschedule(&mut self, i: usize, now: Instant) {
        let d = &mut self.devices[i];
        // Keep the cadence; after falling behind, start again from now instead of bursting.
        d.next_due = (d.next_due + d.interval).max(now);
        self.queue.push(Reverse((d.next_due, i)));
    }

    /// Puts device `i` back in the queue, due at `until`, without polling it now.
    fn postpone(&mut self, i: usize, until: Instant) {
        let d = &mut self.devices[i];
        d.next_due = d.next_due.max(until);
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
    fn count_heard(&mut self, i: usize) {
        for heard in self.link.take_heard() {
            let owner = self
                .devices
                .iter()
                .position(|s| s.unit.get() == heard.unit)
                .unwrap_or(i);
            tracing::debug!(bus = %self.bus.name, device = %self.devices[owner].name, "{}", heard.why);
            self.with_health(owner, |h| {
                match heard.kind {
                    HeardKind::Crc => h.crc_errors += 1,
                    HeardKind::BadFrame => h.bad_frames += 1,
                    HeardKind::Late => h.late_replies += 1,
                }
                h.last_error = Some(heard.why);
            });
        }
    }

    /// Polls device `i`: its readings, and its health and degrade state updated.
    async fn poll_device(&mut self, i: usize, at_ms: i64) -> Vec<Reading> {
        let poll = self.read_device(i, at_ms).await;
        if let Some(e) = &poll.failure {
            if let Some(fault) = fault_of(e) {
                self.with_health(i, |h| {
                    // A discarded late answer is counted as heard, as late, not as a bad frame.
                    if !matches!(e, LinkError::LateReply { .. }) {
                        h.count_fault(fault);
                    }
                    h.last_error = Some(e.to_string());
                });
            }
            if !e.survives() {
                self.link.close();
            }
        }
        self.judge_poll(i, at_ms, poll.answered, poll.failure.is_some());
        poll.readings
    }

    /// Sends device `i`'s reads until one fails; the reads after a failure are not sent and their
    /// points get the same fault.
    async fn read_device(&mut self, i: usize, at_ms: i64) -> Poll {
        let timeout = self.devices[i].timeout.unwrap_or(self.bus.timeout);
        let unit = self.devices[i].unit;
        let mut poll = Poll {
            readings: Vec::with_capacity(self.devices[i].profile.points.len()),
            answered: false,
            failure: None,
        };
        let mut reads = self.devices[i].reads.clone();
        let mut r = 0;
        while r < reads.len() {
            let read = &reads[r];
            r += 1;
            if let Some(fault) = poll.failure.as_ref().and_then(fault_of) {
                // The device or the link is unreliable: the rest of this device's reads fail too.
                self.push_outcome(&mut poll.readings, i, read, at_ms, Outcome::Fault(fault));
                continue;
            }
            let result = self.link.call(unit, &read.request(), timeout).await;
            self.count_heard(i);
            match result {
                Ok(answer) => {
                    poll.answered = true;
                    let words = answer.into_words().unwrap_or_default();
                    self.push_values(&mut poll.readings, i, read, at_ms, &words);
                }
                Err(LinkError::Exception { code, .. }) => {
                    poll.answered = true;
                    if code == ExceptionCode::IllegalDataAddress
                        && read.points.len() > 1
                        && !self.devices[i].split
                    {
                        let d = &mut self.devices[i];
                        tracing::info!(device = %d.name, read = %read,
                            "device refused a merged read (exception 02); reading its points one by one from now on");
                        d.split = true;
                        d.reads = split_per_point(&d.profile.points).into();
                        reads = d.reads.clone();
                        poll.readings.clear();
                        r = 0;
                        continue;
                    }
                    self.with_health(i, |h| {
                        h.exceptions += 1;
                        h.last_error = Some(format!("{code} reading {read}"));
                    });
                    self.push_outcome(&mut poll.readings, i, read, at_ms, Outcome::Exception(code));
                }
                Err(e) => {
                    let fault = fault_of(&e).unwrap_or(Fault::BadFrame);
                    self.push_outcome(&mut poll.readings, i, read, at_ms, Outcome::Fault(fault));
                    poll.failure = Some(e);
                }
            }
        }
        poll
    }

    /// The degrade bookkeeping after a poll of device `i`.
    fn judge_poll(&mut self, i: usize, at_ms: i64, answered: bool, failed: bool) {
        let now = Instant::now();
        let probe = self.bus.probe_interval;
        let degrade_after = self.bus.degrade_after;
        let d = &mut self.devices[i];
        if answered && !failed {
            if d.degraded_until.is_some() {
                tracing::info!(device = %d.name, "device answers again; no longer degraded");
            }
            d.consecutive_failures = 0;
            d.degraded_until = None;
        } else if failed {
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
    }

    /// The readings of `read`'s points from the `words` it gave.
    fn push_values(
        &self,
        readings: &mut Vec<Reading>,
        i: usize,
        read: &ReadRequest,
        at_ms: i64,
        words: &[u16],
    ) {
        let d = &self.devices[i];
        let complete = words.len() >= usize::from(read.count());
        for &p in &read.points {
            let point = &d.profile.points[p];
            let offset = usize::from(point.address - read.start());
            let outcome = match words.get(offset..).filter(|_| complete) {
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

#[cfg(test)]
mod tests;
