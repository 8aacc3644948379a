//! Property tests: arbitrary byte streams never panic and never get a reply without a CRC-valid
//! frame behind it; requests round-trip through encode → slave → response decode; the PDU codec
//! round-trips on its own.

mod common;

use std::time::Duration;

use common::golden::{Fixture, ALL};
use common::*;
use proptest::prelude::*;
use sealwatch_firmware::modbus::{
    encode_rtu_request, parse_rtu_response, AddressRange, AduBuf, Bits, ExceptionCode, PduBuf,
    ReadDeviceIdCode, Request, Response, Words, MAX_READ_BITS, MAX_READ_REGISTERS,
};
use sealwatch_firmware::registers::{
    COIL_COUNT, HOLDING_REGISTER_COUNT, INPUT_REGISTER_TOTAL, IR_UPTIME_MS, IR_UPTIME_S,
};
use sealwatch_firmware::Instant;

/// Owned form of a request, so proptest can generate it.
#[derive(Debug, Clone)]
enum Req {
    Read { table: u8, start: u16, count: u16 },
    Coil { address: u16, value: bool },
    Register { address: u16, value: u16 },
    Coils { start: u16, values: Vec<bool> },
    Registers { start: u16, values: Vec<u16> },
    Diag { sub: u16, data: [u8; 2] },
    DevId { code: u8, object: u8 },
}

impl Req {
    fn request(&self) -> Request<'_> {
        match self {
            Req::Read {
                table,
                start,
                count,
            } => {
                let max = if *table < 2 {
                    MAX_READ_BITS
                } else {
                    MAX_READ_REGISTERS
                };
                let r = AddressRange::try_new(*start, (*count).clamp(1, max), max).unwrap();
                match table {
                    0 => Request::ReadCoils(r),
                    1 => Request::ReadDiscreteInputs(r),
                    2 => Request::ReadHoldingRegisters(r),
                    _ => Request::ReadInputRegisters(r),
                }
            }
            Req::Coil { address, value } => Request::WriteSingleCoil {
                address: *address,
                value: *value,
            },
            Req::Register { address, value } => Request::WriteSingleRegister {
                address: *address,
                value: *value,
            },
            Req::Coils { start, values } => Request::WriteMultipleCoils {
                start: *start,
                values: Bits::from_values(values),
            },
            Req::Registers { start, values } => Request::WriteMultipleRegisters {
                start: *start,
                values: Words::from_values(values),
            },
            Req::Diag { sub, data } => Request::Diagnostics {
                sub_function: *sub,
                data,
            },
            Req::DevId { code, object } => Request::ReadDeviceIdentification {
                code: ReadDeviceIdCode::from_code(*code).unwrap(),
                object_id: *object,
            },
        }
    }
}

fn arb_req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (0u8..4, 0u16..60, 1u16..130).prop_map(|(table, start, count)| Req::Read {
            table,
            start,
            count
        }),
        (0u16..4, any::<bool>()).prop_map(|(address, value)| Req::Coil { address, value }),
        (0u16..10, any::<u16>()).prop_map(|(address, value)| Req::Register { address, value }),
        (0u16..4, prop::collection::vec(any::<bool>(), 1..5))
            .prop_map(|(start, values)| Req::Coils { start, values }),
        (
            0u16..10,
            prop::collection::vec(prop_oneof![any::<u16>(), 0u16..300, Just(0xC0DE)], 1..6)
        )
            .prop_map(|(start, values)| Req::Registers { start, values }),
        (0u16..3, any::<[u8; 2]>()).prop_map(|(sub, data)| Req::Diag { sub, data }),
        (1u8..=4, prop_oneof![0u8..8, Just(0x80), any::<u8>()])
            .prop_map(|(code, object)| Req::DevId { code, object }),
    ]
}

/// A stream segment: noise, a golden request, or a golden request with one byte corrupted; each
/// followed by a gap (µs) before the next segment.
#[derive(Debug, Clone)]
enum Segment {
    Noise(Vec<u8>),
    Frame(usize),
    Corrupt(usize, usize, u8),
}

fn arb_stream() -> impl Strategy<Value = Vec<(Segment, u16)>> {
    let seg = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Segment::Noise),
        (0..ALL.len()).prop_map(Segment::Frame),
        (0..ALL.len(), 0usize..64, 1u8..=255).prop_map(|(g, i, x)| Segment::Corrupt(g, i, x)),
    ];
    prop::collection::vec(
        (seg, prop_oneof![Just(0u16), 0u16..3_000, Just(10_000)]),
        1..20,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No panic on anything, and every reply answers a CRC-valid frame for our unit that really
    /// was on the line, with the same function code.
    #[test]
    fn arbitrary_streams_only_answer_valid_frames(stream in arb_stream(), tail in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut n = node(Fixture::Commissioned);
        let mut history: Vec<u8> = Vec::new();
        let mut now = T0;
        let mut bytes: Vec<(u8, u16)> = Vec::new();
        for (seg, gap) in &stream {
            let data: Vec<u8> = match seg {
                Segment::Noise(v) => v.clone(),
                Segment::Frame(g) => ALL[*g].request.to_vec(),
                Segment::Corrupt(g, i, x) => {
                    let mut v = ALL[*g].request.to_vec();
                    let i = i % v.len();
                    v[i] ^= x;
                    v
                }
            };
            for (k, b) in data.iter().enumerate() {
                bytes.push((*b, if k + 1 == data.len() { *gap } else { 0 }));
            }
        }
        bytes.extend(tail.iter().map(|b| (*b, 0)));
        for (b, gap) in bytes {
            history.push(b);
            let reply = n.on_byte(b, now);
            now = now.plus(Duration::from_micros(u64::from(gap)));
            let reply = reply.or_else(|| n.poll(now));
            if let Some(r) = reply {
                prop_assert!(r.len() >= 5);
                prop_assert_eq!(r[0], UNIT);
                let fc = r[1] & 0x7F;
                let found = (0..history.len()).any(|i| {
                    (i + 4..=history.len().min(i + 256)).any(|j| {
                        let w = &history[i..j];
                        w[0] == UNIT && w[1] == fc && crc16_reference(&w[..w.len() - 2]).to_le_bytes() == w[w.len() - 2..]
                    })
                });
                prop_assert!(found, "reply {:02X?} with no valid frame in {:02X?}", r, history);
            }
        }
        let _ = n.poll(now.plus(Duration::from_millis(100)));
    }

    /// One corrupted frame alone on the line is never answered.
    #[test]
    fn corrupted_frame_gets_no_reply(g in 0..ALL.len(), i in 0usize..64, x in 1u8..=255) {
        let mut bad = ALL[g].request.to_vec();
        let i = i % bad.len();
        bad[i] ^= x;
        prop_assume!(!has_valid_window(&bad, &[UNIT, 0]));
        let mut n = node(ALL[g].fixture);
        prop_assert!(feed_burst(&mut n, &bad, T0).is_empty());
    }

    /// encode → slave → decode: every request gets exactly one reply that parses as its answer,
    /// and what it says agrees with the node.
    #[test]
    fn request_slave_response_round_trip(req in arb_req()) {
        let request = req.request();
        let mut adu = AduBuf::new();
        encode_rtu_request(UNIT, &request, &mut adu).unwrap();
        let mut n = node(Fixture::Commissioned);
        let replies = feed_burst(&mut n, &adu, T0);
        prop_assert_eq!(replies.len(), 1, "{:?}", request);
        let response = parse_rtu_response(&request, UNIT, &replies[0]);
        prop_assert!(response.is_ok(), "{:?} -> {:?}", request, response);
        let response = response.unwrap();
        match (request, response) {
            (Request::ReadInputRegisters(r), Response::ReadInputRegisters(words)) => {
                prop_assert!(r.start() + r.count() <= INPUT_REGISTER_TOTAL);
                // The uptime registers move on while the reply's silence is waited out; every
                // other register must read back exactly.
                let uptime = [IR_UPTIME_S, IR_UPTIME_S + 1, IR_UPTIME_MS, IR_UPTIME_MS + 1];
                for (a, v) in r.addresses().zip(words.iter()).filter(|(a, _)| !uptime.contains(a)) {
                    prop_assert_eq!(Some(v), n.input_register(a), "input register {}", a);
                }
            }
            (Request::ReadDiscreteInputs(r), Response::ReadDiscreteInputs(bits)) => {
                for (a, v) in r.addresses().zip(bits.iter()) {
                    prop_assert_eq!(Some(v), n.discrete_input(a));
                }
            }
            (Request::ReadHoldingRegisters(r), Response::ReadHoldingRegisters(_)) => {
                prop_assert!(r.start() + r.count() <= HOLDING_REGISTER_COUNT);
            }
            (Request::ReadCoils(r), Response::ReadCoils(_)) => {
                prop_assert!(r.start() + r.count() <= COIL_COUNT);
            }
            (Request::WriteMultipleCoils { start, values }, Response::WriteMultipleCoils(_)) => {
                for (i, v) in values.iter().enumerate() {
                    prop_assert_eq!(n.coil(start + i as u16), Some(v));
                }
            }
            (_, Response::Exception { code, .. }) => {
                prop_assert!(matches!(
                    code,
                    ExceptionCode::IllegalFunction | ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
                ), "{:?}", code);
            }
            _ => {}
        }
    }

    /// The PDU codec on its own: parse(encode(request)) == request.
    #[test]
    fn request_codec_round_trip(req in arb_req()) {
        let request = req.request();
        let mut pdu = PduBuf::new();
        request.encode(&mut pdu).unwrap();
        prop_assert_eq!(Request::parse(&pdu), Ok(request));
    }

    /// Responses: parse(encode(response)) == response, for reads of any size.
    #[test]
    fn response_codec_round_trip(values in prop::collection::vec(any::<u16>(), 1..=125), bits in prop::collection::vec(any::<bool>(), 1..=2000)) {
        let regs = Request::ReadHoldingRegisters(AddressRange::try_new(0, values.len() as u16, 125).unwrap());
        let rsp = Response::ReadHoldingRegisters(Words::from_values(&values));
        let mut pdu = PduBuf::new();
        rsp.encode(&mut pdu).unwrap();
        prop_assert_eq!(Response::parse(&regs, &pdu), Ok(rsp));
        let coils = Request::ReadCoils(AddressRange::try_new(0, bits.len() as u16, 2000).unwrap());
        let rsp = Response::ReadCoils(Bits::from_values(&bits));
        rsp.encode(&mut pdu).unwrap();
        prop_assert_eq!(Response::parse(&coils, &pdu), Ok(rsp));
    }

    /// Any PDU bytes at all: the slave answers without panicking, with a PDU that fits.
    #[test]
    fn arbitrary_pdus_never_panic(pdu in prop::collection::vec(any::<u8>(), 0..253)) {
        let mut n = node(Fixture::Commissioned);
        let mut out = PduBuf::new();
        let _ = n.handle_pdu(UNIT, &pdu, &mut out);
        prop_assert!(out.len() <= 253);
        let _ = Instant::ZERO;
    }
}
