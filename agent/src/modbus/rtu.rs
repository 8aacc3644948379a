//! Modbus RTU on a serial line: a [`Link`] over any byte stream (a serial port, a test's pipe).
//!
//! One owner talks on the line, so requests never overlap; the port itself is opened exclusively
//! (see [`super::serial`]). Several unit ids share the line. Frames are made and checked by the
//! firmware crate's sans-I/O codec ([`encode_rtu`], [`FrameAssembler`], [`Response::parse`]);
//! this module only moves bytes and keeps time.
//!
//! RTU has no transaction ids: a reply that comes after its request timed out fits the next
//! request to the same unit with the same function and length, and nothing in the frame says it
//! is stale. So the line is kept in step by time:
//! - Before every request the input is flushed (complete frames in it are late replies, counted
//!   against the unit they carry) and the line has been quiet for t3.5.
//! - After a timeout, the unit is not asked again for `quiet_after_timeout` (a bus setting; see
//!   the config docs): a late reply in that time lands on an idle line or in another unit's
//!   exchange and is thrown away as late. [`Link::quiet_until`] tells the scheduler, which asks
//!   other units meanwhile; a direct caller waits.
//! - An answer is taken only if its CRC checks and it comes from the unit asked, with the
//!   function asked (or its exception) and exactly the length the request implies, and nothing
//!   else came from that unit in the exchange and nothing follows it. Bytes after an accepted
//!   answer mean the line is out of step: the answer is discarded as a late reply, the unit is
//!   quieted, and the line is flushed before the next request.
//! - A frame from the wrong unit (not one being quieted) or of the wrong length, with no answer
//!   after it by the timeout, is a bad frame — a reply came, so it is not a timeout.
//! - A reply with a bad CRC (or bytes that make no frame) ends the wait as soon as the line has
//!   been quiet for the receive gap, not at the timeout: the device has spoken and will not
//!   speak again.
//! - A timeout or a bad frame keeps the port open; only an I/O error (the adapter went away)
//!   closes it, and the owner reopens it.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use futures_util::FutureExt as _;
use sealwatch_firmware::modbus::{
    decode_rtu, encode_rtu, AduBuf, Direction, FrameAssembler, FrameCounters, FrameError, PduBuf,
    Request, Response, UnitId,
};
use sealwatch_firmware::BaudRate;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use super::link::{Answer, BadFrame, Heard, HeardKind, Link, LinkError};

/// The shortest receive gap: USB adapters and pseudo-terminals hand a frame over in chunks with
/// pauses of up to about 16 ms (an FTDI chip's latency timer), far longer than t3.5. Frames are
/// found by their length; this gap only ends the wait after a corrupt reply and resynchronises
/// after noise.
pub const RECEIVE_GAP_MIN: Duration = Duration::from_millis(20);

/// How long a unit is not asked after it timed out, unless the bus says otherwise.
pub const QUIET_AFTER_TIMEOUT_DEFAULT: Duration = Duration::from_millis(1000);

/// t3.5 and the receive gap of a line at `baud`.
pub fn line_timing(baud: BaudRate) -> (Duration, Duration) {
    let silence = FrameAssembler::silence_for_baud(baud.bits_per_second());
    (silence, silence.max(RECEIVE_GAP_MIN))
}

/// Opens the port again after it failed.
pub type Opener<P> = Box<dyn FnMut() -> io::Result<P> + Send>;

/// A Modbus RTU line: a port (any byte stream) and how to open it again.
pub struct RtuLink<P> {
    port_name: String,
    opener: Opener<P>,
    port: Option<P>,
    silence: Duration,
    quiet_after_timeout: Duration,
    assembler: FrameAssembler,
    epoch: std::time::Instant,
    /// When the last byte went out or came in.
    line_active_at: Instant,
    /// Units not to be asked before the time given (their late reply may still come).
    quiet: HashMap<u8, Instant>,
    heard: Vec<Heard>,
    /// A failure of the port noticed after an answer was taken, for the next call to report.
    failure: Option<LinkError>,
}

/// What one exchange heard besides its answer.
#[derive(Default)]
struct Exchange {
    /// The first frame that was not the answer, from the unit asked or an unexpected unit.
    bad: Option<BadFrame>,
    /// A frame from the unit asked came that was not the answer.
    out_of_step: bool,
    received: Vec<u8>,
}

impl<P> RtuLink<P>
where
    P: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// A line named `port_name` at `baud`, opened by `opener` (not yet open), quieting a unit for
    /// `quiet_after_timeout` after it timed out.
    pub fn new(
        port_name: &str,
        baud: BaudRate,
        quiet_after_timeout: Duration,
        opener: Opener<P>,
    ) -> Self {
        let (silence, gap) = line_timing(baud);
        RtuLink {
            port_name: port_name.to_owned(),
            opener,
            port: None,
            silence,
            quiet_after_timeout,
            assembler: FrameAssembler::new(Direction::Response, gap),
            epoch: std::time::Instant::now(),
            line_active_at: Instant::now(),
            quiet: HashMap::new(),
            heard: Vec::new(),
            failure: None,
        }
    }

    fn fw_now(&self) -> sealwatch_firmware::Instant {
        sealwatch_firmware::Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn failed(&mut self, reason: String) -> LinkError {
        self.port = None;
        LinkError::Io {
            target: self.port_name.clone(),
            reason,
        }
    }

    fn io_error(&mut self, e: &io::Error) -> LinkError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.failed("closed (adapter unplugged?)".to_owned())
        } else {
            self.failed(e.to_string())
        }
    }

    fn is_quieted(&self, unit: u8, now: Instant) -> bool {
        self.quiet.get(&unit).is_some_and(|until| now < *until)
    }

    fn quiet_unit(&mut self, unit: UnitId, now: Instant) {
        self.quiet.retain(|_, until| *until > now);
        self.quiet
            .insert(unit.get(), now + self.quiet_after_timeout);
    }

    /// Reads and throws away whatever is waiting, without blocking. Complete frames in it are
    /// late replies, counted against their unit. Returns how many bytes were thrown away.
    fn flush_input(&mut self) -> Result<usize, LinkError> {
        let now = self.fw_now();
        let mut buf = [0u8; 256];
        let mut total = 0;
        self.assembler.reset();
        loop {
            let Some(port) = self.port.as_mut() else {
                return Ok(total);
            };
            match port.read(&mut buf).now_or_never() {
                None => break,
                Some(Ok(0)) => return Err(self.failed("closed (adapter unplugged?)".to_owned())),
                Some(Ok(n)) => {
                    total += n;
                    for &b in &buf[..n] {
                        if let Some(frame) = self.assembler.push(b, now) {
                            let unit = frame.unit;
                            self.heard.push(Heard {
                                unit,
                                kind: HeardKind::Late,
                                why: format!(
                                    "unit {unit}: late reply flushed before the next request"
                                ),
                            });
                        }
                    }
                }
                Some(Err(e)) => return Err(self.io_error(&e)),
            }
        }
        self.assembler.reset();
        Ok(total)
    }

    /// Flushes the input and waits until the line has been quiet for t3.5.
    async fn quiet_line(&mut self, deadline: Instant) -> Result<(), LinkError> {
        loop {
            if self.flush_input()? > 0 {
                self.line_active_at = Instant::now();
            }
            let quiet_at = self.line_active_at + self.silence;
            if Instant::now() >= quiet_at || quiet_at >= deadline {
                return Ok(());
            }
            sleep_until_precisely(quiet_at).await;
        }
    }

    /// Takes frame `(from, pdu)` as the answer to `request` to `unit`, or records why not.
    fn judge(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
        from: u8,
        pdu: &[u8],
        exchange: &mut Exchange,
    ) -> Option<Result<Answer, LinkError>> {
        let now = Instant::now();
        if from != unit.get() {
            let late = self.is_quieted(from, now);
            self.heard.push(Heard {
                unit: from,
                kind: if late {
                    HeardKind::Late
                } else {
                    HeardKind::BadFrame
                },
                why: if late {
                    format!("unit {from}: late reply heard while asking unit {unit}, discarded")
                } else {
                    format!("unit {unit}: reply for unit {from} discarded")
                },
            });
            if !late && exchange.bad.is_none() {
                exchange.bad = Some(BadFrame::WrongUnit { got: from });
            }
            return None;
        }
        let why = match Response::parse(request, pdu) {
            Ok(response) => {
                return Some(
                    Answer::of(response).map_err(|code| LinkError::Exception { unit, code }),
                )
            }
            Err(why) => why,
        };
        self.heard.push(Heard {
            unit: from,
            kind: HeardKind::BadFrame,
            why: format!("unit {unit}: reply discarded: {why}"),
        });
        exchange.out_of_step = true;
        exchange.bad.get_or_insert(BadFrame::Mismatch(why));
        None
    }

    /// What an accepted frame means, given what else the exchange heard: bytes after it, or
    /// another frame from the same unit before it, make it untrustworthy.
    fn settle(
        &mut self,
        unit: UnitId,
        result: Result<Answer, LinkError>,
        extra: usize,
        exchange: &Exchange,
    ) -> Result<Answer, LinkError> {
        let pending = self.assembler.pending();
        let waiting = match self.flush_input() {
            Ok(n) => n,
            Err(e) => {
                // The answer came whole; the port failed after it. Said at the next call.
                self.failure = Some(e);
                0
            }
        };
        let extra = extra + pending + waiting;
        if extra == 0 && !exchange.out_of_step {
            return result;
        }
        let now = Instant::now();
        self.line_active_at = now;
        self.quiet_unit(unit, now);
        self.heard.push(Heard {
            unit: unit.get(),
            kind: HeardKind::Late,
            why: format!(
                "unit {unit}: answer discarded: {} — the line is out of step",
                if extra > 0 {
                    format!("{extra} more bytes came after it")
                } else {
                    "another frame from the unit came before it".to_owned()
                }
            ),
        });
        Err(LinkError::LateReply {
            unit,
            extra: extra.max(1),
        })
    }

    /// One exchange: request out, the answer (or why not) back.
    async fn exchange(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<Answer, LinkError> {
        let mut pdu = PduBuf::new();
        request.encode(&mut pdu).map_err(LinkError::Encode)?;
        let mut adu = AduBuf::new();
        encode_rtu(unit.get(), &pdu, &mut adu).map_err(LinkError::Encode)?;

        let started = Instant::now();
        self.quiet_line(started + timeout).await?;
        let Some(port) = self.port.as_mut() else {
            return Err(self.not_open());
        };
        let written = async {
            port.write_all(&adu).await?;
            port.flush().await
        }
        .await;
        if let Err(e) = written {
            return Err(self.io_error(&e));
        }
        let sent_at = Instant::now();
        self.line_active_at = sent_at;
        let deadline = sent_at + timeout;

        self.assembler.reset();
        let before = self.assembler.counters();
        let mut exchange = Exchange::default();
        // When bytes last came, until a quiet receive gap after them has been looked at.
        let mut unsettled: Option<Instant> = None;
        let mut buf = [0u8; 256];
        loop {
            let wake = match unsettled {
                Some(at) => (at + self.assembler.silence()).min(deadline),
                None => deadline,
            };
            let Some(port) = self.port.as_mut() else {
                return Err(self.not_open());
            };
            let got = tokio::select! {
                r = port.read(&mut buf) => Some(r),
                () = tokio::time::sleep_until(wake) => None,
            };
            let Some(got) = got else {
                if Instant::now() >= deadline {
                    return Err(self.no_answer(unit, timeout, &exchange, before));
                }
                // The line went quiet: a frame of unknown length ends here, noise is dropped.
                unsettled = None;
                let now = self.fw_now();
                if let Some(frame) = self.assembler.poll(now) {
                    let (from, pdu) = (frame.unit, frame.pdu.to_vec());
                    if let Some(result) = self.judge(unit, request, from, &pdu, &mut exchange) {
                        return self.settle(unit, result, 0, &exchange);
                    }
                }
                let after = self.assembler.counters();
                if after.crc_errors != before.crc_errors
                    || after.dropped_bytes != before.dropped_bytes
                {
                    // The device has spoken, and not well: it will not speak again.
                    return Err(self.no_answer(unit, timeout, &exchange, before));
                }
                continue;
            };
            let n = match got {
                Ok(0) => return Err(self.failed("closed (adapter unplugged?)".to_owned())),
                Ok(n) => n,
                Err(e) => return Err(self.io_error(&e)),
            };
            let at = Instant::now();
            unsettled = Some(at);
            self.line_active_at = at;
            exchange.received.extend_from_slice(&buf[..n]);
            let now = self.fw_now();
            for (i, &b) in buf[..n].iter().enumerate() {
                let Some(frame) = self.assembler.push(b, now) else {
                    continue;
                };
                let (from, pdu) = (frame.unit, frame.pdu.to_vec());
                if let Some(result) = self.judge(unit, request, from, &pdu, &mut exchange) {
                    return self.settle(unit, result, n - i - 1, &exchange);
                }
            }
        }
    }

    fn not_open(&self) -> LinkError {
        LinkError::NotOpen {
            target: self.port_name.clone(),
        }
    }

    /// Why the wait ended without an answer.
    fn no_answer(
        &mut self,
        unit: UnitId,
        timeout: Duration,
        exchange: &Exchange,
        before: FrameCounters,
    ) -> LinkError {
        let after = self.assembler.counters();
        if after.crc_errors != before.crc_errors {
            let why = crc_error(&exchange.received, exchange.bad.as_ref());
            if matches!(why, BadFrame::Crc { .. }) {
                self.heard.push(Heard {
                    unit: unit.get(),
                    kind: HeardKind::Crc,
                    why: format!("unit {unit}: {why}"),
                });
            }
            return LinkError::BadFrame { unit, why };
        }
        if let Some(why) = &exchange.bad {
            return LinkError::BadFrame {
                unit,
                why: why.clone(),
            };
        }
        if after.dropped_bytes != before.dropped_bytes || self.assembler.pending() > 0 {
            return LinkError::BadFrame {
                unit,
                why: BadFrame::Noise {
                    bytes: exchange.received.len(),
                },
            };
        }
        self.quiet_unit(unit, Instant::now());
        LinkError::Timeout {
            unit,
            ms: timeout.as_millis() as u64,
        }
    }
}

/// The CRC error in `received`, named with both CRCs where a frame can be cut out of it.
fn crc_error(received: &[u8], bad: Option<&BadFrame>) -> BadFrame {
    // The frame is the whole reception, or its last five bytes (an exception frame, or garbage
    // in front).
    let candidates = [
        Some(received),
        received.len().checked_sub(5).map(|s| &received[s..]),
    ];
    for candidate in candidates.into_iter().flatten() {
        if let Err(FrameError::Crc { expected, got }) = decode_rtu(candidate) {
            return BadFrame::Crc { expected, got };
        }
    }
    bad.cloned().unwrap_or(BadFrame::Noise {
        bytes: received.len(),
    })
}

/// Waits until `deadline` to within tens of microseconds: the timer wheel (1 ms ticks) for the
/// bulk, a blocking-pool sleep for the last stretch. t3.5 is 1.75 ms above 19200 baud; rounding it
/// up to the next millisecond tick would cost a fast line a sixth of its throughput.
async fn sleep_until_precisely(deadline: Instant) {
    let now = Instant::now();
    if deadline > now + Duration::from_millis(2) {
        tokio::time::sleep_until(deadline - Duration::from_micros(1_500)).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

impl<P> Link for RtuLink<P>
where
    P: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn target(&self) -> &str {
        &self.port_name
    }

    fn is_open(&self) -> bool {
        // A failure not yet reported keeps the link "open" until the next call says it.
        self.port.is_some() || self.failure.is_some()
    }

    async fn open(&mut self, _timeout: Duration) -> Result<(), LinkError> {
        let port = (self.opener)().map_err(|e| LinkError::Open {
            target: self.port_name.clone(),
            reason: format!("{e}; is the adapter plugged in and the path right?"),
        })?;
        self.port = Some(port);
        self.failure = None;
        self.assembler.reset();
        self.line_active_at = Instant::now();
        Ok(())
    }

    fn close(&mut self) {
        self.port = None;
        self.failure = None;
    }

    async fn call(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<Answer, LinkError> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if self.port.is_none() {
            return Err(self.not_open());
        }
        if let Some(until) = self.quiet_until(unit) {
            tokio::time::sleep_until(until).await;
        }
        self.exchange(unit, request, timeout).await
    }

    fn take_heard(&mut self) -> Vec<Heard> {
        std::mem::take(&mut self.heard)
    }

    fn quiet_until(&self, unit: UnitId) -> Option<Instant> {
        self.quiet
            .get(&unit.get())
            .copied()
            .filter(|until| Instant::now() < *until)
    }
}

#[cfg(test)]
mod tests;
