//! Modbus TCP: one connection to a device or a gateway, requests framed by the firmware crate's
//! MBAP codec.
//!
//! Why our own framing and not tokio-modbus's client: tokio-modbus has no timeout of its own and,
//! once a request timed out, the late reply it left on the stream makes the next call fail with a
//! header mismatch while the true answer waits behind it — the only safe move is to drop the
//! connection, which a gateway in front of several RTU devices pays for at every silent unit.
//! Framing here matches each reply by transaction id: a late reply is read, counted and thrown
//! away, and the connection stays up. It also carries every function the firmware's codec
//! knows (Read Device Identification included), so commissioning uses the same client.
//!
//! Invariants:
//! - one request is in flight at a time; its transaction id is new (wrapping);
//! - a frame with another transaction id is a late reply: counted, never taken;
//! - a frame with our transaction id from another unit is a bad frame (the stream is in step,
//!   the connection stays);
//! - bytes that are not a Modbus TCP frame (protocol id, length) mean the stream is out of step:
//!   the connection is closed and made again;
//! - the receive buffer never holds more than one frame and one read chunk.

use std::time::Duration;

use sealwatch_firmware::modbus::{
    encode_mbap, split_mbap, MbapBuf, PduBuf, Request, Response, UnitId, MAX_MBAP_LEN,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::link::{Answer, BadFrame, Heard, HeardKind, Link, LinkError};

/// Bytes read from the socket at a time.
const CHUNK: usize = 512;

/// A Modbus TCP connection (made on [`Link::open`]).
pub struct TcpLink {
    address: String,
    stream: Option<TcpStream>,
    transaction: u16,
    buf: Vec<u8>,
    heard: Vec<Heard>,
}

impl TcpLink {
    /// A link to `address` (`host:port`), not yet connected.
    pub fn new(address: &str) -> TcpLink {
        TcpLink {
            address: address.to_owned(),
            stream: None,
            transaction: 0,
            buf: Vec::with_capacity(MAX_MBAP_LEN + CHUNK),
            heard: Vec::new(),
        }
    }

    fn io(&mut self, e: &std::io::Error) -> LinkError {
        self.stream = None;
        LinkError::Io {
            target: self.address.clone(),
            reason: e.to_string(),
        }
    }

    /// Takes whole frames off the buffer until ours; `Ok(None)` while it has not come.
    fn take_answer(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
    ) -> Result<Option<Answer>, LinkError> {
        loop {
            let (transaction, from, result, used) = match split_mbap(&self.buf) {
                Ok(None) => return Ok(None),
                Ok(Some((frame, used))) => (
                    frame.transaction,
                    frame.unit,
                    Response::parse(request, frame.pdu).map(Answer::of),
                    used,
                ),
                Err(why) => {
                    self.stream = None;
                    self.buf.clear();
                    return Err(LinkError::BadFrame {
                        unit,
                        why: BadFrame::Mbap(why),
                    });
                }
            };
            self.buf.drain(..used);
            if transaction != self.transaction {
                self.heard.push(Heard {
                    unit: from,
                    kind: HeardKind::Late,
                    why: format!(
                        "late reply (transaction {transaction}, now at {}) discarded",
                        self.transaction
                    ),
                });
                continue;
            }
            if from != unit.get() {
                return Err(LinkError::BadFrame {
                    unit,
                    why: BadFrame::WrongUnit { got: from },
                });
            }
            return match result {
                Ok(Ok(answer)) => Ok(Some(answer)),
                Ok(Err(code)) => Err(LinkError::Exception { unit, code }),
                Err(why) => Err(LinkError::BadFrame {
                    unit,
                    why: BadFrame::Mismatch(why),
                }),
            };
        }
    }
}

impl Link for TcpLink {
    fn target(&self) -> &str {
        &self.address
    }

    fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    async fn open(&mut self, timeout: Duration) -> Result<(), LinkError> {
        let open_error = |reason: String| LinkError::Open {
            target: self.address.clone(),
            reason,
        };
        let attempt = async {
            let mut last = String::from("the name resolves to no address");
            for addr in tokio::net::lookup_host(self.address.as_str())
                .await
                .map_err(|e| format!("cannot resolve: {e}"))?
            {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        stream.set_nodelay(true).map_err(|e| e.to_string())?;
                        return Ok(stream);
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            Err(last)
        };
        let stream = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(reason)) => return Err(open_error(reason)),
            Err(_) => {
                return Err(open_error(format!(
                    "no connection within {} ms",
                    timeout.as_millis()
                )))
            }
        };
        self.stream = Some(stream);
        self.buf.clear();
        Ok(())
    }

    fn close(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    async fn call(
        &mut self,
        unit: UnitId,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<Answer, LinkError> {
        let deadline = Instant::now() + timeout;
        let mut pdu = PduBuf::new();
        request.encode(&mut pdu).map_err(LinkError::Encode)?;
        self.transaction = self.transaction.wrapping_add(1);
        let mut frame = MbapBuf::new();
        encode_mbap(self.transaction, unit.get(), &pdu, &mut frame).map_err(LinkError::Encode)?;
        let Some(stream) = self.stream.as_mut() else {
            return Err(LinkError::NotOpen {
                target: self.address.clone(),
            });
        };
        match tokio::time::timeout_at(deadline, stream.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.io(&e)),
            Err(_) => {
                // The socket would not take the request: the peer has stopped reading.
                self.stream = None;
                return Err(LinkError::Timeout {
                    unit,
                    ms: timeout.as_millis() as u64,
                });
            }
        }
        let mut chunk = [0u8; CHUNK];
        loop {
            if let Some(answer) = self.take_answer(unit, request)? {
                return Ok(answer);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(LinkError::NotOpen {
                    target: self.address.clone(),
                });
            };
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Err(_) => {
                    return Err(LinkError::Timeout {
                        unit,
                        ms: timeout.as_millis() as u64,
                    })
                }
                Ok(Ok(0)) => {
                    let eof = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection",
                    );
                    return Err(self.io(&eof));
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(self.io(&e)),
            }
        }
    }

    fn take_heard(&mut self) -> Vec<Heard> {
        std::mem::take(&mut self.heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealwatch_firmware::modbus::read_request;
    use sealwatch_firmware::registers::Table;
    use tokio::net::TcpListener;

    fn unit(u: u8) -> UnitId {
        UnitId::new(u).unwrap()
    }

    /// A server that answers each request with `answer(transaction, request)` frames.
    async fn server(answer: impl Fn(u16, &[u8]) -> Vec<Vec<u8>> + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 260];
            loop {
                let mut header = [0u8; 7];
                if s.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = usize::from(u16::from_be_bytes([header[4], header[5]])) - 1;
                s.read_exact(&mut buf[..len]).await.unwrap();
                let tid = u16::from_be_bytes([header[0], header[1]]);
                for frame in answer(tid, &buf[..len]) {
                    s.write_all(&frame).await.unwrap();
                }
            }
        });
        addr
    }

    fn frame(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut out = MbapBuf::new();
        encode_mbap(tid, unit, pdu, &mut out).unwrap();
        out.to_vec()
    }

    #[tokio::test]
    async fn a_late_reply_with_an_old_transaction_id_is_counted_and_never_taken() {
        // Every answer is preceded by a stale one carrying the previous transaction id and
        // another value: the client must skip it each time.
        let addr = server(|tid, _| {
            vec![
                frame(tid.wrapping_sub(1), 1, &[0x03, 0x02, 0xDE, 0xAD]),
                frame(tid, 1, &[0x03, 0x02, 0x00, 0x2A]),
            ]
        })
        .await;
        let mut link = TcpLink::new(&addr);
        link.open(Duration::from_secs(2)).await.unwrap();
        let read = read_request(Table::Holding, 0, 1).unwrap();
        for _ in 0..3 {
            let answer = link.call(unit(1), &read, Duration::from_secs(2)).await;
            assert_eq!(answer, Ok(Answer::Words(vec![42])));
        }
        let heard = link.take_heard();
        assert_eq!(heard.len(), 3);
        assert!(heard.iter().all(|h| h.kind == HeardKind::Late));
    }

    #[tokio::test]
    async fn wrong_unit_exception_and_broken_framing_stay_apart() {
        let addr = server(|tid, pdu| match pdu.get(1..3) {
            Some([0, 1]) => vec![frame(tid, 9, &[0x03, 0x02, 0, 1])],
            Some([0, 2]) => vec![frame(tid, 1, &[0x83, 0x02])],
            _ => vec![vec![0, 0, 0, 7, 0, 3, 1, 3, 2, 0, 0]],
        })
        .await;
        let mut link = TcpLink::new(&addr);
        link.open(Duration::from_secs(2)).await.unwrap();
        let t = Duration::from_secs(2);
        let e = link
            .call(unit(1), &read_request(Table::Holding, 1, 1).unwrap(), t)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                LinkError::BadFrame {
                    why: BadFrame::WrongUnit { got: 9 },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.survives());
        let e = link
            .call(unit(1), &read_request(Table::Holding, 2, 1).unwrap(), t)
            .await
            .unwrap_err();
        assert!(e.is_answer(), "{e}");
        let e = link
            .call(unit(1), &read_request(Table::Holding, 3, 1).unwrap(), t)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                LinkError::BadFrame {
                    why: BadFrame::Mbap(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.survives() && !link.is_open());
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_the_connection_stays() {
        let addr = server(|_, _| Vec::new()).await;
        let mut link = TcpLink::new(&addr);
        link.open(Duration::from_secs(2)).await.unwrap();
        let read = read_request(Table::Input, 0, 2).unwrap();
        let e = link
            .call(unit(3), &read, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(e.is_silence() && e.survives(), "{e}");
        assert!(link.is_open());
    }
}
