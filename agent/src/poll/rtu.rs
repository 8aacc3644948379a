//! Modbus RTU on a serial line: the [`Link`] of an RTU bus.
//!
//! One bus task owns the line, so requests never overlap; the port itself is opened exclusively
//! (TIOCEXCL and an advisory lock, as tokio-serial does by default), so no second program can
//! talk on it either. Several unit ids share the line. Frames are made and checked by the
//! firmware crate's sans-I/O codec ([`encode_rtu_request`], [`FrameAssembler`],
//! [`Response::parse`]); this module only moves bytes and keeps time.
//!
//! Invariants:
//! - Before every request the input is flushed (whatever is waiting is read and thrown away;
//!   complete frames in it are counted as late replies against the unit they carry) and the line
//!   has been quiet for t3.5 (3.5 characters of 11 bits, 1.75 ms above 19200 baud).
//! - An answer is taken only if its CRC checks and it comes from the unit asked, with the
//!   function asked (or its exception) and exactly the length the request implies. Any other
//!   frame is discarded and counted, and the wait goes on until the response timeout: a late
//!   reply to an earlier request is never taken as the answer to this one.
//! - A reply with a bad CRC (or bytes that make no frame) ends the wait as soon as the line has
//!   been quiet for the receive gap, not at the timeout: the device has spoken and will not
//!   speak again. It is a bad frame, and the CRC error is counted.
//! - A timeout or a bad frame keeps the port open (the next request flushes); only an I/O error
//!   (the adapter went away) closes it, and the bus task reopens it with backoff.

use std::io;
use std::time::Duration;

use futures_util::FutureExt as _;
use sealwatch_firmware::modbus::{
    decode_rtu, encode_rtu_request, read_request, AduBuf, Direction, FrameAssembler, FrameCounters,
    FrameError, Request, Response, ResponseError,
};
use sealwatch_firmware::registers::Table as FwTable;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use super::bus::{Discarded, Link, ReadResult};
use super::plan::ReadRequest;
use super::reading::Fault;
use crate::config::profile::Table;
use crate::config::{Parity, SerialSettings};

/// The shortest receive gap: USB adapters and pseudo-terminals hand a frame over in chunks with
/// pauses of up to about 16 ms (an FTDI chip's latency timer), far longer than t3.5. Frames are
/// found by their length; this gap only ends the wait after a corrupt reply and resynchronises
/// after noise.
pub const RECEIVE_GAP_MIN: Duration = Duration::from_millis(20);

/// Why one RTU exchange gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtuError {
    /// The port could not be opened.
    #[error("cannot open {port}: {reason}; is the adapter plugged in and the path right?")]
    Open {
        /// Serial device path.
        port: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The port reported end of file: the adapter disappeared.
    #[error("{port} closed (adapter unplugged?)")]
    PortClosed {
        /// Serial device path.
        port: String,
    },
    /// Reading or writing the port failed.
    #[error("{port}: {reason}")]
    Io {
        /// Serial device path.
        port: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A frame from another unit came while waiting.
    #[error("unit {expected}: reply for unit {got} discarded")]
    WrongUnit {
        /// Unit asked.
        expected: u8,
        /// Unit in the frame.
        got: u8,
    },
    /// A frame from the right unit that does not answer the request.
    #[error("unit {unit}: reply discarded: {why}")]
    Mismatch {
        /// Unit asked.
        unit: u8,
        /// What does not fit.
        why: ResponseError,
    },
    /// A complete frame from an earlier exchange was waiting in the input.
    #[error("unit {unit}: late reply flushed before the next request")]
    LateReply {
        /// Unit in the frame.
        unit: u8,
    },
    /// The reply's CRC did not check.
    #[error("unit {unit}: CRC expected {expected:#06X}, got {got:#06X}")]
    Crc {
        /// Unit asked.
        unit: u8,
        /// CRC computed over the bytes received.
        expected: u16,
        /// CRC found in them.
        got: u16,
    },
    /// Bytes came that made no frame.
    #[error("unit {unit}: {bytes} bytes of noise and no valid reply")]
    Noise {
        /// Unit asked.
        unit: u8,
        /// Bytes received.
        bytes: usize,
    },
    /// Nothing answered in time.
    #[error("unit {unit}: no reply within {ms} ms to {table} {start}+{count}")]
    Timeout {
        /// Unit asked.
        unit: u8,
        /// Response timeout, ms.
        ms: u128,
        /// Table read.
        table: Table,
        /// First address.
        start: u16,
        /// Count.
        count: u16,
    },
    /// The read cannot be encoded (a plan out of the protocol's limits).
    #[error("unit {unit}: cannot encode {table} {start}+{count}: {why}")]
    Encode {
        /// Unit asked.
        unit: u8,
        /// Table read.
        table: Table,
        /// First address.
        start: u16,
        /// Count.
        count: u16,
        /// Why.
        why: String,
    },
}

impl RtuError {
    /// The fault a reading gets for this error.
    pub fn fault(&self) -> Fault {
        match self {
            RtuError::Open { .. } | RtuError::PortClosed { .. } | RtuError::Io { .. } => Fault::Io,
            RtuError::Timeout { .. } => Fault::Timeout,
            RtuError::WrongUnit { .. }
            | RtuError::Mismatch { .. }
            | RtuError::LateReply { .. }
            | RtuError::Crc { .. }
            | RtuError::Noise { .. }
            | RtuError::Encode { .. } => Fault::BadFrame,
        }
    }

    /// Whether the port stays usable after it (only a port that failed must be reopened).
    pub fn keeps_port(&self) -> bool {
        self.fault() != Fault::Io
    }

    fn into_result(self) -> ReadResult {
        ReadResult::Fault(self.fault(), self.to_string())
    }
}

/// t3.5 and the receive gap of a line at `baud`.
pub fn line_timing(baud: u32) -> (Duration, Duration) {
    let silence = FrameAssembler::silence_for_baud(baud);
    (silence, silence.max(RECEIVE_GAP_MIN))
}

fn firmware_table(table: Table) -> FwTable {
    match table {
        Table::Coil => FwTable::Coil,
        Table::DiscreteInput => FwTable::DiscreteInput,
        Table::Holding => FwTable::Holding,
        Table::Input => FwTable::Input,
    }
}

/// Length of the normal reply ADU to `read`: unit, function, byte count, data, CRC.
fn reply_len(read: &ReadRequest) -> usize {
    let data = if read.table.is_bits() {
        usize::from(read.count).div_ceil(8)
    } else {
        2 * usize::from(read.count)
    };
    5 + data
}

/// A Modbus RTU line: a port (any byte stream) and how to open it again.
pub(crate) struct RtuLink<P, F> {
    port_name: String,
    opener: F,
    port: Option<P>,
    silence: Duration,
    assembler: FrameAssembler,
    epoch: std::time::Instant,
    /// When the last byte went out or came in.
    line_active_at: Instant,
    discarded: Vec<Discarded>,
}

impl<P, F> RtuLink<P, F>
where
    P: AsyncRead + AsyncWrite + Unpin,
    F: FnMut() -> io::Result<P>,
{
    /// A line named `port_name` at `baud`, opened by `opener` (not yet open).
    pub(crate) fn new(port_name: &str, baud: u32, opener: F) -> Self {
        let (silence, gap) = line_timing(baud);
        RtuLink {
            port_name: port_name.to_owned(),
            opener,
            port: None,
            silence,
            assembler: FrameAssembler::new(Direction::Response, gap),
            epoch: std::time::Instant::now(),
            line_active_at: Instant::now(),
            discarded: Vec::new(),
        }
    }

    fn fw_now(&self) -> sealwatch_firmware::Instant {
        sealwatch_firmware::Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn io_error(&self, e: &io::Error) -> RtuError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            RtuError::PortClosed {
                port: self.port_name.clone(),
            }
        } else {
            RtuError::Io {
                port: self.port_name.clone(),
                reason: e.to_string(),
            }
        }
    }

    /// Reads and throws away whatever is waiting, without blocking. Complete frames in it are
    /// late replies: counted against their unit. Returns how many bytes were thrown away.
    fn flush_input(&mut self) -> Result<usize, RtuError> {
        let now = self.fw_now();
        let Some(port) = self.port.as_mut() else {
            return Ok(0);
        };
        let mut buf = [0u8; 256];
        let mut total = 0;
        self.assembler.reset();
        loop {
            match port.read(&mut buf).now_or_never() {
                None => break,
                Some(Ok(0)) => {
                    return Err(RtuError::PortClosed {
                        port: self.port_name.clone(),
                    })
                }
                Some(Ok(n)) => {
                    total += n;
                    for &b in &buf[..n] {
                        if let Some(frame) = self.assembler.push(b, now) {
                            let unit = frame.unit;
                            self.discarded.push(Discarded {
                                unit,
                                crc: false,
                                why: RtuError::LateReply { unit }.to_string(),
                            });
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(RtuError::Io {
                        port: self.port_name.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        self.assembler.reset();
        Ok(total)
    }

    /// Flushes the input and waits until the line has been quiet for t3.5.
    async fn quiet_line(&mut self, deadline: Instant) -> Result<(), RtuError> {
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

    /// One exchange: request out, the answer (or a fault) back.
    async fn exchange(
        &mut self,
        unit: u8,
        read: &ReadRequest,
        timeout: Duration,
    ) -> Result<ReadResult, RtuError> {
        let encode_error = |why: String| RtuError::Encode {
            unit,
            table: read.table,
            start: read.start,
            count: read.count,
            why,
        };
        let request = read_request(firmware_table(read.table), read.start, read.count)
            .map_err(|e| encode_error(format!("{e:?}")))?;
        let mut adu = AduBuf::new();
        encode_rtu_request(unit, &request, &mut adu).map_err(|e| encode_error(format!("{e:?}")))?;

        let started = Instant::now();
        self.quiet_line(started + timeout).await?;
        let Some(port) = self.port.as_mut() else {
            return Err(RtuError::PortClosed {
                port: self.port_name.clone(),
            });
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
        let mut received: Vec<u8> = Vec::new();
        // When bytes last came, until a quiet receive gap after them has been looked at.
        let mut unsettled: Option<Instant> = None;
        let mut buf = [0u8; 256];
        loop {
            let wake = match unsettled {
                Some(at) => (at + self.assembler.silence()).min(deadline),
                None => deadline,
            };
            let Some(port) = self.port.as_mut() else {
                return Err(RtuError::PortClosed {
                    port: self.port_name.clone(),
                });
            };
            let got = tokio::select! {
                r = port.read(&mut buf) => Some(r),
                () = tokio::time::sleep_until(wake) => None,
            };
            let Some(got) = got else {
                if Instant::now() >= deadline {
                    return Err(self.no_answer(unit, read, timeout, &received, before));
                }
                // The line went quiet: a frame of unknown length ends here, noise is dropped.
                unsettled = None;
                let now = self.fw_now();
                if let Some(frame) = self.assembler.poll(now) {
                    match judge(unit, &request, frame.unit, frame.pdu) {
                        Ok(result) => return Ok(result),
                        Err(e) => self.discard(unit, &e),
                    }
                }
                let after = self.assembler.counters();
                if after.crc_errors != before.crc_errors
                    || after.dropped_bytes != before.dropped_bytes
                {
                    // The device has spoken, and not well: it will not speak again.
                    return Err(self.no_answer(unit, read, timeout, &received, before));
                }
                continue;
            };
            let n = match got {
                Ok(0) => {
                    return Err(RtuError::PortClosed {
                        port: self.port_name.clone(),
                    })
                }
                Ok(n) => n,
                Err(e) => return Err(self.io_error(&e)),
            };
            let at = Instant::now();
            unsettled = Some(at);
            self.line_active_at = at;
            received.extend_from_slice(&buf[..n]);
            let now = self.fw_now();
            for &b in &buf[..n] {
                let Some(frame) = self.assembler.push(b, now) else {
                    continue;
                };
                match judge(unit, &request, frame.unit, frame.pdu) {
                    Ok(result) => return Ok(result),
                    Err(e) => self.discard(unit, &e),
                }
            }
        }
    }

    /// Records a frame that was not the answer.
    fn discard(&mut self, unit: u8, e: &RtuError) {
        let owner = match e {
            RtuError::WrongUnit { got, .. } => *got,
            _ => unit,
        };
        self.discarded.push(Discarded {
            unit: owner,
            crc: false,
            why: e.to_string(),
        });
    }

    /// Why the wait ended without an answer.
    fn no_answer(
        &mut self,
        unit: u8,
        read: &ReadRequest,
        timeout: Duration,
        received: &[u8],
        before: FrameCounters,
    ) -> RtuError {
        let after = self.assembler.counters();
        if after.crc_errors != before.crc_errors {
            let error = match received.get(..reply_len(read)).map(decode_rtu) {
                Some(Err(FrameError::Crc { expected, got })) => RtuError::Crc {
                    unit,
                    expected,
                    got,
                },
                // Garbage in front, or an exception frame: name the last five bytes' CRC.
                _ => match received
                    .len()
                    .checked_sub(5)
                    .map(|s| decode_rtu(&received[s..]))
                {
                    Some(Err(FrameError::Crc { expected, got })) => RtuError::Crc {
                        unit,
                        expected,
                        got,
                    },
                    _ => RtuError::Noise {
                        unit,
                        bytes: received.len(),
                    },
                },
            };
            if matches!(error, RtuError::Crc { .. }) {
                self.discarded.push(Discarded {
                    unit,
                    crc: true,
                    why: error.to_string(),
                });
            }
            return error;
        }
        if after.dropped_bytes != before.dropped_bytes || self.assembler.pending() > 0 {
            return RtuError::Noise {
                unit,
                bytes: received.len(),
            };
        }
        RtuError::Timeout {
            unit,
            ms: timeout.as_millis(),
            table: read.table,
            start: read.start,
            count: read.count,
        }
    }
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

/// Takes a CRC-checked frame as the answer to `request` sent to `unit`, or says why not.
fn judge(unit: u8, request: &Request<'_>, got: u8, pdu: &[u8]) -> Result<ReadResult, RtuError> {
    if got != unit {
        return Err(RtuError::WrongUnit {
            expected: unit,
            got,
        });
    }
    match Response::parse(request, pdu) {
        Ok(Response::Exception { code, .. }) => Ok(ReadResult::Exception(code.code())),
        Ok(Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits)) => {
            Ok(ReadResult::Words(bits.iter().map(u16::from).collect()))
        }
        Ok(Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words)) => {
            Ok(ReadResult::Words(words.iter().collect()))
        }
        Ok(_) => Err(RtuError::Mismatch {
            unit,
            why: ResponseError::UnexpectedFunction {
                expected: request.function().code(),
                got: pdu.first().copied().unwrap_or(0),
            },
        }),
        Err(why) => Err(RtuError::Mismatch { unit, why }),
    }
}

impl<P, F> Link for RtuLink<P, F>
where
    P: AsyncRead + AsyncWrite + Unpin,
    F: FnMut() -> io::Result<P>,
{
    fn target(&self) -> &str {
        &self.port_name
    }

    fn is_open(&self) -> bool {
        self.port.is_some()
    }

    async fn open(&mut self, _unit: u8, _timeout: Duration) -> Result<(), String> {
        let port = (self.opener)().map_err(|e| {
            RtuError::Open {
                port: self.port_name.clone(),
                reason: e.to_string(),
            }
            .to_string()
        })?;
        self.port = Some(port);
        self.assembler.reset();
        self.line_active_at = Instant::now();
        Ok(())
    }

    fn close(&mut self) {
        self.port = None;
    }

    async fn read(&mut self, unit: u8, read: &ReadRequest, timeout: Duration) -> ReadResult {
        if self.port.is_none() {
            return ReadResult::Fault(Fault::NotConnected, format!("{} not open", self.port_name));
        }
        match self.exchange(unit, read, timeout).await {
            Ok(result) => result,
            Err(e) => e.into_result(),
        }
    }

    fn survives(&self, fault: Fault) -> bool {
        !matches!(fault, Fault::Io | Fault::NotConnected)
    }

    fn take_discarded(&mut self) -> Vec<Discarded> {
        std::mem::take(&mut self.discarded)
    }
}

/// Opens a serial port with the bus's line settings.
pub fn open_serial(settings: &SerialSettings) -> io::Result<tokio_serial::SerialStream> {
    let builder = tokio_serial::new(&settings.port, settings.baud)
        .parity(match settings.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if settings.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        })
        .stop_bits(if settings.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(tokio_serial::FlowControl::None);
    tokio_serial::SerialStream::open(&builder).map_err(io::Error::from)
}

/// The line of an RTU bus, on its serial port (opened by the bus task, reopened after a failure).
pub(crate) fn serial_link(
    settings: &SerialSettings,
) -> RtuLink<
    tokio_serial::SerialStream,
    impl FnMut() -> io::Result<tokio_serial::SerialStream> + Send,
> {
    let settings = settings.clone();
    let name = settings.port.clone();
    RtuLink::new(&name, settings.baud, move || open_serial(&settings))
}

#[cfg(test)]
mod tests;
