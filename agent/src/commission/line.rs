//! One Modbus line for a technician's commands: a TCP device or gateway, or an RTU serial line.
//!
//! Any request of the firmware crate's codec ([`Request`]) can be sent — reads, writes and Read
//! Device Identification (0x2B/0x0E), which the agent's poller never needs — and the answer comes
//! back as an owned [`Reply`]. A Modbus exception is an answer ([`Reply::Exception`]), not an
//! error.
//!
//! Invariants:
//! - Every request has a deadline ([`Line::call`]'s timeout); nothing waits forever.
//! - TCP: replies are matched by MBAP transaction id and unit; a late reply to an earlier
//!   request is read and thrown away, never taken as this request's answer. The connection is
//!   kept across timeouts (a gateway answers nothing for an absent unit) and reopened after an
//!   I/O error.
//! - RTU: frames are found and checked by the firmware's [`FrameAssembler`]; input waiting before
//!   a request is flushed; a frame from another unit is ignored. Serial ports are opened with
//!   the poller's [`open_serial`] (same line settings, exclusive access).

use std::io;
use std::time::Duration;

use futures_util::FutureExt as _;
use sealwatch_firmware::modbus::{
    encode_rtu, AduBuf, Direction, FrameAssembler, PduBuf, Request, Response,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::SerialSettings;
use crate::poll::rtu::{line_timing, open_serial};

/// What a device answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
    /// Holding or input registers.
    Words(Vec<u16>),
    /// A write was acknowledged.
    Written,
    /// Read Device Identification objects `(id, value)`.
    Identification(Vec<(u8, Vec<u8>)>),
    /// A Modbus exception code.
    Exception(u8),
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// TCP connect failed.
    #[error("cannot connect to {target}: {why}")]
    Connect {
        /// `host:port`.
        target: String,
        /// Cause.
        why: String,
    },
    /// The serial port could not be opened.
    #[error("cannot open {port}: {source}; is the adapter plugged in and the path right?")]
    Open {
        /// Device path.
        port: String,
        /// Cause.
        source: io::Error,
    },
    /// No answer in time.
    #[error("no reply from unit {unit} on {target} within {ms} ms")]
    Timeout {
        /// Unit asked.
        unit: u8,
        /// Line.
        target: String,
        /// Timeout.
        ms: u64,
    },
    /// The connection or port failed.
    #[error("{target}: {source}")]
    Io {
        /// Line.
        target: String,
        /// Cause.
        source: io::Error,
    },
    /// An answer came that does not fit the request.
    #[error("unit {unit} on {target}: bad reply: {why}")]
    BadReply {
        /// Unit asked.
        unit: u8,
        /// Line.
        target: String,
        /// What was wrong.
        why: String,
    },
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

impl LineError {
    /// Whether the unit simply did not answer (absent or silent), as opposed to a broken line.
    pub fn is_timeout(&self) -> bool {
        matches!(self, LineError::Timeout { .. })
    }
}

/// A byte stream a serial line can be (a port, or a test's in-memory pipe).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

enum Kind {
    Tcp {
        address: String,
        stream: Option<TcpStream>,
        tid: u16,
        buf: Vec<u8>,
    },
    Rtu(Box<RtuState>),
}

struct RtuState {
    port: Box<dyn ByteStream>,
    assembler: FrameAssembler,
    gap: Duration,
    silence: Duration,
    epoch: std::time::Instant,
}

/// A Modbus line.
pub struct Line {
    target: String,
    timeout: Duration,
    kind: Kind,
}

fn to_reply(r: Response<'_>) -> Reply {
    match r {
        Response::ReadCoils(b) | Response::ReadDiscreteInputs(b) => Reply::Bits(b.iter().collect()),
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
            Reply::Words(w.iter().collect())
        }
        Response::DeviceIdentification { objects, .. } => {
            Reply::Identification(objects.iter().map(|(id, v)| (id, v.to_vec())).collect())
        }
        Response::Exception { code, .. } => Reply::Exception(code.code()),
        Response::WriteSingleCoil { .. }
        | Response::WriteSingleRegister { .. }
        | Response::WriteMultipleCoils(_)
        | Response::WriteMultipleRegisters(_)
        | Response::Diagnostics { .. } => Reply::Written,
    }
}

impl Line {
    /// A Modbus TCP line to `address` (`host:port`); connects on the first request.
    pub fn tcp(address: &str, timeout: Duration) -> Line {
        Line {
            target: format!("tcp {address}"),
            timeout,
            kind: Kind::Tcp {
                address: address.to_owned(),
                stream: None,
                tid: 0,
                buf: Vec::new(),
            },
        }
    }

    /// An RTU line on the serial port of `settings`.
    pub fn rtu(settings: &SerialSettings, timeout: Duration) -> Result<Line, LineError> {
        let port = open_serial(settings).map_err(|source| LineError::Open {
            port: settings.port.clone(),
            source,
        })?;
        Ok(Line::rtu_on(
            Box::new(port),
            &format!("rtu {} {} baud", settings.port, settings.baud),
            settings.baud,
            timeout,
        ))
    }

    /// An RTU line over any byte stream (tests use an in-memory pipe).
    pub fn rtu_on(port: Box<dyn ByteStream>, target: &str, baud: u32, timeout: Duration) -> Line {
        let (silence, gap) = line_timing(baud);
        Line {
            target: target.to_owned(),
            timeout,
            kind: Kind::Rtu(Box::new(RtuState {
                port,
                assembler: FrameAssembler::new(Direction::Response, gap),
                gap,
                silence,
                epoch: std::time::Instant::now(),
            })),
        }
    }

    /// The line, for messages (`tcp 10.0.0.5:502`, `rtu /dev/ttyUSB0 9600 baud`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The response timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` to `unit` and waits for its answer.
    pub async fn call(&mut self, unit: u8, request: &Request<'_>) -> Result<Reply, LineError> {
        let mut pdu = PduBuf::new();
        request
            .encode(&mut pdu)
            .map_err(|e| LineError::Encode(e.to_string()))?;
        let timeout = self.timeout;
        let target = self.target.clone();
        let timed_out = || LineError::Timeout {
            unit,
            target: target.clone(),
            ms: timeout.as_millis() as u64,
        };
        let bad = |why: String| LineError::BadReply {
            unit,
            target: target.clone(),
            why,
        };
        let io = |source: io::Error| LineError::Io {
            target: target.clone(),
            source,
        };
        match &mut self.kind {
            Kind::Tcp {
                address,
                stream,
                tid,
                buf,
            } => {
                let deadline = Instant::now() + timeout;
                if stream.is_none() {
                    let connect = TcpStream::connect(address.as_str());
                    let s = match tokio::time::timeout_at(deadline, connect).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            return Err(LineError::Connect {
                                target: address.clone(),
                                why: e.to_string(),
                            })
                        }
                        Err(_) => {
                            return Err(LineError::Connect {
                                target: address.clone(),
                                why: format!("no connection within {} ms", timeout.as_millis()),
                            })
                        }
                    };
                    let _ = s.set_nodelay(true);
                    *stream = Some(s);
                    buf.clear();
                }
                *tid = tid.wrapping_add(1);
                let mut frame = Vec::with_capacity(7 + pdu.len());
                frame.extend_from_slice(&tid.to_be_bytes());
                frame.extend_from_slice(&[0, 0]);
                frame.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
                frame.push(unit);
                frame.extend_from_slice(&pdu);
                let Some(s) = stream.as_mut() else {
                    return Err(timed_out());
                };
                if let Err(e) = s.write_all(&frame).await {
                    *stream = None;
                    return Err(io(e));
                }
                loop {
                    // Whole MBAP frames in the buffer first.
                    while buf.len() >= 7 {
                        let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                        if len < 2 {
                            *stream = None;
                            return Err(bad(format!("MBAP length {len}")));
                        }
                        let total = 6 + len;
                        if buf.len() < total {
                            break;
                        }
                        let got: Vec<u8> = buf.drain(..total).collect();
                        let got_tid = u16::from_be_bytes([got[0], got[1]]);
                        if got_tid != *tid || got[6] != unit {
                            continue; // a late reply to an earlier request
                        }
                        return Response::parse(request, &got[7..])
                            .map(to_reply)
                            .map_err(|e| bad(e.to_string()));
                    }
                    let Some(s) = stream.as_mut() else {
                        return Err(timed_out());
                    };
                    let mut chunk = [0u8; 512];
                    match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                        Err(_) => return Err(timed_out()),
                        Ok(Ok(0)) => {
                            *stream = None;
                            return Err(io(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the device closed the connection",
                            )));
                        }
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                        Ok(Err(e)) => {
                            *stream = None;
                            return Err(io(e));
                        }
                    }
                }
            }
            Kind::Rtu(state) => {
                let RtuState {
                    port,
                    assembler,
                    gap,
                    silence,
                    epoch,
                } = &mut **state;
                // Flush what is waiting (late replies, noise), then keep t3.5 of silence.
                let mut scratch = [0u8; 256];
                while let Some(Ok(n)) = port.read(&mut scratch).now_or_never() {
                    if n == 0 {
                        break;
                    }
                }
                tokio::time::sleep(*silence).await;
                let mut adu = AduBuf::new();
                encode_rtu(unit, &pdu, &mut adu).map_err(|e| LineError::Encode(e.to_string()))?;
                let written = async {
                    port.write_all(&adu).await?;
                    port.flush().await
                }
                .await;
                written.map_err(io)?;
                let deadline = Instant::now() + timeout;
                assembler.reset();
                let mut last_rx: Option<Instant> = None;
                let mut heard = 0usize;
                let fw_now = |epoch: &std::time::Instant| {
                    sealwatch_firmware::Instant::from_micros(epoch.elapsed().as_micros() as u64)
                };
                loop {
                    let wake = match last_rx {
                        Some(at) if assembler.pending() > 0 => (at + *gap).min(deadline),
                        _ => deadline,
                    };
                    let got = tokio::select! {
                        r = port.read(&mut scratch) => Some(r),
                        () = tokio::time::sleep_until(wake) => None,
                    };
                    match got {
                        None => {
                            if let Some(frame) = assembler.poll(fw_now(epoch)) {
                                if frame.unit == unit {
                                    return Response::parse(request, frame.pdu)
                                        .map(to_reply)
                                        .map_err(|e| bad(e.to_string()));
                                }
                            }
                            if Instant::now() >= deadline {
                                return Err(if heard > 0 {
                                    bad(format!(
                                        "{heard} bytes heard but no valid frame (CRC errors: {})",
                                        assembler.counters().crc_errors
                                    ))
                                } else {
                                    timed_out()
                                });
                            }
                        }
                        Some(Ok(0)) => {
                            return Err(io(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "port closed (adapter unplugged?)",
                            )))
                        }
                        Some(Ok(n)) => {
                            heard += n;
                            last_rx = Some(Instant::now());
                            let now = fw_now(epoch);
                            for &b in &scratch[..n] {
                                if let Some(frame) = assembler.push(b, now) {
                                    if frame.unit == unit {
                                        return Response::parse(request, frame.pdu)
                                            .map(to_reply)
                                            .map_err(|e| bad(e.to_string()));
                                    }
                                }
                            }
                        }
                        Some(Err(e)) => return Err(io(e)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealwatch_firmware::modbus::{read_request, ReadDeviceIdCode};
    use sealwatch_firmware::registers::Table;

    /// A fake RTU device on an in-memory pipe answering one request with `answer` (an ADU).
    async fn device(mut end: tokio::io::DuplexStream, answer: Vec<u8>) -> Vec<u8> {
        let mut got = vec![0u8; 8];
        end.read_exact(&mut got).await.unwrap();
        end.write_all(&answer).await.unwrap();
        got
    }

    #[tokio::test]
    async fn an_rtu_read_goes_out_framed_and_its_answer_comes_back_decoded() {
        let (ours, theirs) = tokio::io::duplex(256);
        // unit 1, fc 03, 2 bytes, 0x1234, CRC
        let mut answer = AduBuf::new();
        encode_rtu(1, &[0x03, 0x02, 0x12, 0x34], &mut answer).unwrap();
        let dev = tokio::spawn(device(theirs, answer.to_vec()));
        let mut line = Line::rtu_on(Box::new(ours), "test", 19_200, Duration::from_secs(1));
        let req = read_request(Table::Holding, 5, 1).unwrap();
        let reply = line.call(1, &req).await.unwrap();
        assert_eq!(reply, Reply::Words(vec![0x1234]));
        let sent = dev.await.unwrap();
        // unit, fc, start 0x0005, count 0x0001, CRC
        assert_eq!(&sent[..6], &[0x01, 0x03, 0x00, 0x05, 0x00, 0x01]);
    }

    #[tokio::test]
    async fn an_exception_is_an_answer_and_silence_is_a_timeout() {
        let (ours, theirs) = tokio::io::duplex(256);
        let mut answer = AduBuf::new();
        encode_rtu(7, &[0xAB, 0x01], &mut answer).unwrap();
        let dev = tokio::spawn(async move {
            let mut end = theirs;
            let mut got = vec![0u8; 7];
            end.read_exact(&mut got).await.unwrap();
            end.write_all(&answer).await.unwrap();
            end
        });
        let mut line = Line::rtu_on(Box::new(ours), "test", 19_200, Duration::from_millis(300));
        let req = Request::ReadDeviceIdentification {
            code: ReadDeviceIdCode::Basic,
            object_id: 0,
        };
        assert_eq!(line.call(7, &req).await.unwrap(), Reply::Exception(1));
        let _end = dev.await.unwrap();
        let err = line.call(8, &req).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
}
