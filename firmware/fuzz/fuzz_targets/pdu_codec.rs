//! The PDU codec and response-side framing on arbitrary bytes: parsing never panics, and whatever
//! parses re-encodes to bytes that parse to the same value. (Not to the same bytes: the parser
//! accepts non-zero padding bits after the last coil, as devices in the field send them; the
//! encoder always pads with zeros.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealwatch_firmware::modbus::frame::{Direction, FrameAssembler};
use sealwatch_firmware::modbus::{PduBuf, Request, Response};
use sealwatch_firmware::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (req_bytes, rsp_bytes) = rest.split_at(split);
    if let Ok(req) = Request::parse(req_bytes) {
        let mut again = PduBuf::new();
        req.encode(&mut again).expect("a parsed request encodes");
        assert_eq!(again.len(), req_bytes.len());
        assert_eq!(Request::parse(&again), Ok(req));
        if let Ok(rsp) = Response::parse(&req, rsp_bytes) {
            let mut again = PduBuf::new();
            rsp.encode(&mut again).expect("a parsed response encodes");
            assert_eq!(again.len(), rsp_bytes.len());
            assert_eq!(Response::parse(&req, &again), Ok(rsp));
        }
    }
    // The master-side assembler on the same bytes.
    let mut asm = FrameAssembler::new(Direction::Response, core::time::Duration::from_millis(2));
    for (i, &b) in data.iter().enumerate() {
        let _ = asm.push(b, Instant::from_micros(i as u64 * 100));
    }
    let _ = asm.poll(Instant::from_millis(1_000_000));
});
