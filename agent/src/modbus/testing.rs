//! Test support for links and schedules: a scripted RTU slave on `tokio::io::duplex` that answers
//! with the firmware crate's own slave code (and misbehaves on purpose), and links over it.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealwatch_firmware::modbus::{
    encode_rtu, serve_pdu, AduBuf, Bits, DataModel, ExceptionCode, PduBuf, Request, UnitId, Words,
};
use sealwatch_firmware::registers::Table;
use sealwatch_firmware::BaudRate;
use tokio::io::{duplex, AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Link, RtuLink};

/// A slave whose input register `a` holds `unit * 1000 + a`; discrete input `a` is `a` odd.
pub(crate) struct Regs {
    pub(crate) unit: u8,
}

impl DataModel for Regs {
    fn read_coil(&self, _: u16) -> Result<bool, ExceptionCode> {
        Err(ExceptionCode::IllegalDataAddress)
    }
    fn read_discrete_input(&self, a: u16) -> Result<bool, ExceptionCode> {
        Ok(a % 2 == 1)
    }
    fn read_holding_register(&self, _: u16) -> Result<u16, ExceptionCode> {
        Err(ExceptionCode::IllegalDataAddress)
    }
    fn read_input_register(&self, a: u16) -> Result<u16, ExceptionCode> {
        if a < 100 {
            Ok(u16::from(self.unit) * 1000 + a)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
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

/// The ADU a correct slave answers to request ADU `req`, as unit `as_unit`.
pub(crate) fn reply_as(as_unit: u8, req: &[u8]) -> Vec<u8> {
    let pdu = &req[1..req.len() - 2];
    let mut out = PduBuf::new();
    serve_pdu(&mut Regs { unit: as_unit }, pdu, false, &mut out);
    let mut adu = AduBuf::new();
    encode_rtu(as_unit, &out, &mut adu).unwrap();
    adu.to_vec()
}

/// The ADU the addressed slave answers to `req`.
pub(crate) fn reply(req: &[u8]) -> Vec<u8> {
    reply_as(req[0], req)
}

/// `adu` with its CRC recomputed.
pub(crate) fn resign(adu: &[u8]) -> Vec<u8> {
    let mut out = AduBuf::new();
    encode_rtu(adu[0], &adu[1..adu.len() - 2], &mut out).unwrap();
    out.to_vec()
}

/// What the slave saw: when each request arrived and when its answer was written.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlaveLog {
    pub(crate) requests: Vec<(Instant, Vec<u8>)>,
    pub(crate) answered: Vec<Instant>,
}

/// A delay and the bytes to send after it.
pub(crate) type Scripted = (Duration, Vec<u8>);

/// How a scripted slave treats a delayed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turns {
    /// Delayed answers go out on their own, while later requests are answered.
    Concurrent,
    /// One request at a time, as a single-threaded device (libmodbus's test server): a delayed
    /// answer holds back every later request.
    OneAtATime,
}

/// A slave on `io`: reads 8-byte requests and answers what `answer(n, request)` says after its
/// delay. Stops (dropping its end: the "adapter" is gone) after `limit` requests.
pub(crate) fn slave(
    io: DuplexStream,
    limit: usize,
    answer: impl FnMut(usize, &[u8]) -> Scripted + Send + 'static,
) -> (Arc<Mutex<SlaveLog>>, JoinHandle<()>) {
    slave_taking_turns(io, limit, Turns::Concurrent, answer)
}

/// [`slave`], taking turns as `turns` says.
pub(crate) fn slave_taking_turns(
    io: DuplexStream,
    limit: usize,
    turns: Turns,
    mut answer: impl FnMut(usize, &[u8]) -> Scripted + Send + 'static,
) -> (Arc<Mutex<SlaveLog>>, JoinHandle<()>) {
    let log = Arc::new(Mutex::new(SlaveLog::default()));
    let shared = log.clone();
    let task = tokio::spawn(async move {
        let (mut rx, tx) = tokio::io::split(io);
        let tx = Arc::new(tokio::sync::Mutex::new(tx));
        let mut req = [0u8; 8];
        for n in 0..limit {
            if rx.read_exact(&mut req).await.is_err() {
                return;
            }
            shared
                .lock()
                .unwrap()
                .requests
                .push((Instant::now(), req.to_vec()));
            let (delay, bytes) = answer(n, &req);
            let (tx, log) = (tx.clone(), shared.clone());
            let send = async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if !bytes.is_empty() {
                    let _ = tx.lock().await.write_all(&bytes).await;
                }
                log.lock().unwrap().answered.push(Instant::now());
            };
            if delay.is_zero() || turns == Turns::OneAtATime {
                send.await;
            } else {
                tokio::spawn(send);
            }
        }
    });
    (log, task)
}

/// An RTU link over in-memory pipes.
pub(crate) type TestLink = RtuLink<DuplexStream>;

/// A link at `baud`, quieting a unit for `quiet` after a timeout, that opens the ports in
/// `ports`, in order, and then fails.
pub(crate) fn link(
    baud: BaudRate,
    quiet: Duration,
    ports: Vec<io::Result<DuplexStream>>,
) -> TestLink {
    let mut ports: VecDeque<_> = ports.into();
    RtuLink::new(
        "/dev/ttyTEST",
        baud,
        quiet,
        Box::new(move || {
            ports
                .pop_front()
                .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::NotFound, "unplugged")))
        }),
    )
}

/// An open link at `baud` (quiet 200 ms after a timeout) and the slave's end of its pipe.
pub(crate) async fn open_link(baud: BaudRate) -> (TestLink, DuplexStream) {
    let (ours, theirs) = duplex(4096);
    let mut l = link(baud, Duration::from_millis(200), vec![Ok(ours)]);
    l.open(Duration::from_secs(1)).await.unwrap();
    (l, theirs)
}

/// A read of `count` input registers from `start`.
pub(crate) fn input(start: u16, count: u16) -> Request<'static> {
    sealwatch_firmware::modbus::read_request(Table::Input, start, count).unwrap()
}

/// Unit `u`.
pub(crate) fn unit(u: u8) -> UnitId {
    UnitId::new(u).unwrap()
}

/// The response timeout most tests use.
pub(crate) const T: Duration = Duration::from_millis(300);
