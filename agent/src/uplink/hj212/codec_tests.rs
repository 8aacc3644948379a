//! Codec tests: golden frames both ways, every field error, split/join, stream reading, proptest.

use super::*;
use proptest::prelude::*;

/// HJ 212-2017 annex A example (its prose says CRC 1C08; the data segment hashes to 1C80).
pub(crate) const ANNEX_A: &str = concat!(
    "##",                           // start
    "0101",                         // data segment length, decimal
    "QN=20160801085857223;",        // request code: 2016-08-01 08:58:57.223
    "ST=32;",                       // system code
    "CN=1062;",                     // command: set real-time interval
    "PW=100000;",                   // password
    "MN=010000A8900016F000169DC0;", // device id
    "Flag=5;",                      // version 000001, D=0, A=1
    "CP=&&RtdInterval=30&&",        // parameters
    "1C80",                         // CRC of the data segment (annex A algorithm)
    "\r\n",                         // end
);

/// The platform's data response (9014) to the annex A frame.
const ACK_9014: &str = concat!(
    "##",
    "0087",
    "QN=20160801085857223;", // echoes the upload's QN
    "ST=91;",                // system interaction
    "CN=9014;",              // data response
    "PW=100000;",
    "MN=010000A8900016F000169DC0;",
    "Flag=4;", // version 000001, no ack wanted
    "CP=&&&&", // empty CP
    "71C0",
    "\r\n",
);

/// A minute value (2051) of NMHC as the uplink writes it.
pub(crate) const MINUTE_2051: &str = concat!(
    "##",
    "0175",
    "QN=20260101080100123;",
    "ST=27;",   // VOC monitoring
    "CN=2051;", // minute data
    "PW=123456;",
    "MN=010000A8900016F000169DC0;",
    "Flag=5;",
    "CP=&&",
    "DataTime=20260101080000;", // start of the minute, local time
    "a24088-Min=1.200,a24088-Avg=1.500,a24088-Max=1.800,a24088-Flag=N", // NMHC, mg/m³, 3 decimals
    "&&",
    "DBC1",
    "\r\n",
);

/// An hourly value (2061) of NMHC.
pub(crate) const HOUR_2061: &str = concat!(
    "##",
    "0176",
    "QN=20260101090000456;",
    "ST=27;",
    "CN=2061;", // hourly data
    "PW=123456;",
    "MN=010000A8900016F000169DC0;",
    "Flag=5;",
    "CP=&&",
    "DataTime=20260101080000;", // start of the hour
    "a24088-Min=0.900,a24088-Avg=4.125,a24088-Max=12.500,a24088-Flag=N",
    "&&",
    "2D00",
    "\r\n",
);

fn annex_frame() -> Frame {
    Frame {
        qn: "20160801085857223".into(),
        st: "32".into(),
        cn: "1062".into(),
        pw: "100000".into(),
        mn: "010000A8900016F000169DC0".into(),
        flag: Flags::upload(VERSION_2017),
        packet: None,
        cp: Cp::new().with_item([("RtdInterval", "30")]),
    }
}

fn minute_frame() -> Frame {
    Frame {
        qn: "20260101080100123".into(),
        st: st::VOC.into(),
        cn: cn::MINUTE.into(),
        pw: "123456".into(),
        mn: "010000A8900016F000169DC0".into(),
        flag: Flags::upload(VERSION_2017),
        packet: None,
        cp: Cp::new()
            .with_item([("DataTime", "20260101080000")])
            .with_item([
                ("a24088-Min", "1.200"),
                ("a24088-Avg", "1.500"),
                ("a24088-Max", "1.800"),
                ("a24088-Flag", "N"),
            ]),
    }
}

/// Rewrites a frame's data segment with a correct length and CRC.
fn reframe(data: &str) -> String {
    format!(
        "##{:04}{data}{:04X}\r\n",
        data.len(),
        crc16(data.as_bytes())
    )
}

fn data_of(frame: &str) -> &str {
    &frame[6..frame.len() - 6]
}

#[test]
fn crc_reference_vectors() {
    assert_eq!(crc16(data_of(ANNEX_A).as_bytes()), 0x1C80);
    assert_eq!(crc16(b""), 0xFFFF);
    // Not CRC-16/MODBUS, whose check value over "123456789" is 0x4B37.
    assert_ne!(crc16(b"123456789"), 0x4B37);
}

#[test]
fn golden_annex_a_parses_and_builds() {
    assert_eq!(parse(ANNEX_A), Ok(annex_frame()));
    assert_eq!(build(&annex_frame()), Ok(vec![ANNEX_A.to_owned()]));
}

#[test]
fn golden_ack_parses_and_builds() {
    let ack = Frame::data_response(&annex_frame(), VERSION_2017);
    assert_eq!(ack.flag.bits(), 4);
    assert_eq!(build(&ack), Ok(vec![ACK_9014.to_owned()]));
    assert_eq!(parse(ACK_9014), Ok(ack));
}

#[test]
fn golden_minute_and_hour_frames() {
    assert_eq!(build(&minute_frame()), Ok(vec![MINUTE_2051.to_owned()]));
    let parsed = parse(MINUTE_2051).unwrap();
    assert_eq!(parsed, minute_frame());
    assert_eq!(parsed.cp.get("a24088-Avg"), Some("1.500"));
    let hour = parse(HOUR_2061).unwrap();
    assert_eq!(hour.cn, "2061");
    assert_eq!(hour.cp.get("DataTime"), Some("20260101080000"));
    assert_eq!(build(&hour), Ok(vec![HOUR_2061.to_owned()]));
}

#[test]
fn lowercase_crc_is_accepted() {
    let lower = ANNEX_A.replace("1C80\r\n", "1c80\r\n");
    assert_eq!(parse(&lower), Ok(annex_frame()));
}

#[test]
fn the_standards_prose_crc_is_refused_with_both_values() {
    let typo = ANNEX_A.replace("1C80\r\n", "1C08\r\n");
    let err = parse(&typo).unwrap_err();
    assert_eq!(
        err,
        CodecError::BadCrc {
            said: 0x1C08,
            computed: 0x1C80
        }
    );
    assert_eq!(
        err.to_string(),
        "bad CRC: frame says 1C08, data segment hashes to 1C80"
    );
    assert!(err.is_transmission_error());
}

#[test]
fn framing_errors() {
    use CodecError::*;
    assert_eq!(parse(&ANNEX_A[1..]), Err(NoStart));
    assert_eq!(parse("##0000"), Err(TooShort(6)));
    assert_eq!(parse(ANNEX_A.trim_end()), Err(NoEnd));
    assert_eq!(
        parse(&ANNEX_A.replace("##0101", "##01a1")),
        Err(BadLengthField("01a1".into()))
    );
    assert_eq!(
        parse(&ANNEX_A.replace("##0101", "##0100")),
        Err(LengthMismatch {
            said: 100,
            actual: 101
        })
    );
    assert_eq!(
        parse(&ANNEX_A.replace("##0101", "##2000")),
        Err(TooLong(2000))
    );
    assert_eq!(
        parse(&ANNEX_A.replace("1C80\r\n", "1CG0\r\n")),
        Err(BadCrcField("1CG0".into()))
    );
    let mut bytes = ANNEX_A.as_bytes().to_vec();
    bytes[20] = 0xFF;
    let crc = crc16(&bytes[6..107]);
    bytes[107..111].copy_from_slice(format!("{crc:04X}").as_bytes());
    assert_eq!(parse_bytes(&bytes), Err(NotText));
}

#[test]
fn every_field_error_names_the_field() {
    let good = data_of(ANNEX_A);
    let cases: Vec<(String, CodecError)> = vec![
        (
            good.replace("QN=20160801085857223;", ""),
            CodecError::MissingField("QN"),
        ),
        (good.replace("ST=32;", ""), CodecError::MissingField("ST")),
        (good.replace("CN=1062;", ""), CodecError::MissingField("CN")),
        (
            good.replace("PW=100000;", ""),
            CodecError::MissingField("PW"),
        ),
        (
            good.replace("MN=010000A8900016F000169DC0;", ""),
            CodecError::MissingField("MN"),
        ),
        (
            good.replace("Flag=5;", ""),
            CodecError::MissingField("Flag"),
        ),
        (
            good.replace(";CP=&&RtdInterval=30&&", ""),
            CodecError::MissingField("CP"),
        ),
        (
            good.replace("ST=32;", "ST=32;ST=32;"),
            CodecError::DuplicateField("ST".into()),
        ),
        (
            good.replace("ST=32;", "ST=32;XX=1;"),
            CodecError::UnknownField("XX".into()),
        ),
        (
            good.replace("ST=32;", "ST=32;junk;"),
            CodecError::UnknownField("junk".into()),
        ),
        (
            good.replace("QN=20160801085857223", "QN=2016080108585722"),
            bad(
                "QN",
                "2016080108585722",
                "expected 17 digits YYYYMMDDhhmmsszzz",
            ),
        ),
        (
            good.replace("ST=32", "ST=3x"),
            bad("ST", "3x", "expected 2 digits, e.g. 27 or 91"),
        ),
        (
            good.replace("CN=1062", "CN=12345678"),
            bad("CN", "12345678", "expected 1–7 digits, e.g. 2051"),
        ),
        (
            good.replace("PW=100000", "PW=1234567890"),
            bad(
                "PW",
                "1234567890",
                "expected up to 9 printable characters without ; , = &",
            ),
        ),
        (
            good.replace("MN=010000A8900016F000169DC0", "MN="),
            bad(
                "MN",
                "",
                "expected 1–24 printable characters without ; , = &",
            ),
        ),
        (
            good.replace("Flag=5", "Flag=256"),
            bad("Flag", "256", "expected a number 0–255"),
        ),
        (
            good.replace("Flag=5", "Flag=5;PNUM=2"),
            CodecError::MissingField("PNO"),
        ),
        (
            good.replace("Flag=5", "Flag=5;PNO=1"),
            CodecError::MissingField("PNUM"),
        ),
        (
            good.replace("Flag=5", "Flag=7;PNUM=2;PNO=3"),
            bad("PNO", "3", "expected 1 to PNUM"),
        ),
        (
            good.replace("Flag=5", "Flag=7;PNUM=0;PNO=1"),
            bad("PNUM", "0", "expected 1–9999"),
        ),
        (
            good.replace("Flag=5", "Flag=5;PNUM=2;PNO=1"),
            bad(
                "Flag",
                "5",
                "the D bit must be set exactly when PNUM and PNO are present",
            ),
        ),
        (
            good.replace("RtdInterval=30&&", "RtdInterval=30"),
            CodecError::BadCp("CP must end with '&&', found '…nterval=30'".into()),
        ),
        (
            good.replace("RtdInterval=30", "RtdInterval"),
            CodecError::BadCp("'RtdInterval' in item 1 has no '='".into()),
        ),
        (
            good.replace("RtdInterval=30", "RtdInterval=30;"),
            CodecError::BadCp("item 2 is empty (two ';' in a row, or one at an end)".into()),
        ),
        (
            good.replace("RtdInterval=30", "=30"),
            CodecError::BadCp("a field of item 1 has no name ('=30')".into()),
        ),
        (
            good.replace("RtdInterval=30", "RtdInterval=3=0"),
            CodecError::BadCp("field RtdInterval of item 1 has two '='".into()),
        ),
        (
            format!(
                "QN=20160801085857223;ST=32;CN=1;PW=;MN=A;Flag=5;CP=&&{}a=1&&",
                "a=1;".repeat(237)
            ),
            CodecError::CpTooLong { len: 951, max: 950 },
        ),
    ];
    for (data, expected) in cases {
        let frame = reframe(&data);
        assert_eq!(parse(&frame), Err(expected.clone()), "{data}");
        assert!(!expected.is_transmission_error() || matches!(expected, CodecError::TooLong(_)));
        assert!(!expected.to_string().is_empty());
    }
}

#[test]
fn build_refuses_what_would_not_parse_back() {
    let mut f = minute_frame();
    f.mn = "A;B".into();
    assert!(matches!(
        build(&f),
        Err(CodecError::BadField { field: "MN", .. })
    ));
    let mut f = minute_frame();
    f.cp = Cp::new().with_item([("a24088-Avg", "1,5")]);
    assert!(matches!(build(&f), Err(CodecError::BadCp(_))));
    let mut f = minute_frame();
    f.cp = Cp::new().with_item([("x", "y".repeat(1000))]);
    assert!(matches!(build(&f), Err(CodecError::CpTooLong { .. })));
}

fn big_frame(items: usize) -> Frame {
    let mut cp = Cp::new().with_item([("DataTime", "20260101080000")]);
    for i in 0..items {
        cp = cp.with_item([
            (format!("a{i:05}-Min"), "123.456".to_owned()),
            (format!("a{i:05}-Avg"), "234.567".to_owned()),
            (format!("a{i:05}-Flag"), "N".to_owned()),
        ]);
    }
    Frame {
        cp,
        ..minute_frame()
    }
}

#[test]
fn a_long_cp_is_split_into_packets_and_joined_back() {
    let f = big_frame(40);
    assert!(f.cp.render().len() > MAX_CP_LEN);
    let packets = build(&f).unwrap();
    assert!(packets.len() >= 2, "{} packets", packets.len());
    let parsed: Vec<Frame> = packets.iter().map(|p| parse(p).unwrap()).collect();
    for (i, p) in parsed.iter().enumerate() {
        assert_eq!(
            p.packet,
            Some(Packet {
                count: packets.len() as u16,
                number: i as u16 + 1
            })
        );
        assert!(p.flag.split);
        assert_eq!(p.flag.bits(), 7);
        assert!(p.cp.render().len() <= MAX_CP_LEN);
        assert!(data_of(&packets[i]).len() <= MAX_DATA_LEN);
    }
    assert_eq!(join(&parsed), Ok(f.clone()));
    let mut reversed = parsed.clone();
    reversed.reverse();
    assert_eq!(join(&reversed), Ok(f));
}

#[test]
fn join_refuses_packets_of_other_messages_or_missing_ones() {
    let parsed: Vec<Frame> = build(&big_frame(40))
        .unwrap()
        .iter()
        .map(|p| parse(p).unwrap())
        .collect();
    assert!(matches!(join(&parsed[1..]), Err(CodecError::Packets(_))));
    let mut twice = parsed.clone();
    twice[1] = twice[0].clone();
    assert!(matches!(join(&twice), Err(CodecError::Packets(m)) if m.contains("twice")));
    let mut other = parsed.clone();
    other[1].qn = "20260101080100999".into();
    assert!(matches!(join(&other), Err(CodecError::Packets(_))));
    assert!(matches!(join(&[]), Err(CodecError::Packets(_))));
}

#[test]
fn the_stream_reader_finds_frames_whole_byte_by_byte_and_split_anywhere() {
    let stream = format!("garbage#{ANNEX_A}{MINUTE_2051}\r\n##xx{ACK_9014}");
    let expected = [
        parse(ANNEX_A).unwrap(),
        minute_frame(),
        parse(ACK_9014).unwrap(),
    ];
    let collect = |chunks: &[&[u8]]| {
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for c in chunks {
            r.push(c);
            while let Some(f) = r.next_frame() {
                if let Ok(f) = f {
                    got.push(f);
                }
            }
        }
        got
    };
    let bytes = stream.as_bytes();
    assert_eq!(collect(&[bytes]), expected);
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(collect(&singles), expected);
    for at in 0..=bytes.len() {
        assert_eq!(
            collect(&[&bytes[..at], &bytes[at..]]),
            expected,
            "split at {at}"
        );
    }
}

#[test]
fn the_stream_reader_recovers_after_a_bad_crc() {
    let broken = ANNEX_A.replace("1C80\r\n", "0000\r\n");
    let mut r = FrameReader::new();
    r.push(format!("{broken}{MINUTE_2051}").as_bytes());
    assert!(matches!(
        r.next_frame(),
        Some(Err(CodecError::BadCrc { .. }))
    ));
    let mut found = None;
    while let Some(f) = r.next_frame() {
        if let Ok(f) = f {
            found = Some(f);
        }
    }
    assert_eq!(found, Some(minute_frame()));
}

#[test]
fn times_and_decimals() {
    let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_milli_opt(8, 1, 0, 123)
        .unwrap();
    assert_eq!(qn_of(t), "20260101080100123");
    assert_eq!(time_text(t), "20260101080100");
    assert_eq!(
        parse_time("DataTime", "20260101080100").unwrap(),
        t.with_nanosecond(0).unwrap()
    );
    assert!(parse_time("BeginTime", "20261301000000").is_err());
    assert!(parse_time("BeginTime", "2026").is_err());
    assert_eq!(decimal(1.5, 3).as_deref(), Some("1.500"));
    assert_eq!(decimal(-0.0001, 3).as_deref(), Some("0.000"));
    assert_eq!(decimal(-1.25, 2).as_deref(), Some("-1.25"));
    assert_eq!(decimal(f64::NAN, 3), None);
}

use chrono::Timelike as _;

fn field_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9_.\\-]{{1,{max}}}")).unwrap()
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    let cp_item = proptest::collection::vec(
        (
            field_text(12),
            proptest::string::string_regex("[A-Za-z0-9_.\\-]{0,12}").unwrap(),
        ),
        1..5,
    );
    (
        proptest::string::string_regex("[0-9]{17}").unwrap(),
        proptest::string::string_regex("[0-9]{2}").unwrap(),
        proptest::string::string_regex("[0-9]{1,7}").unwrap(),
        proptest::string::string_regex("[A-Za-z0-9]{0,9}").unwrap(),
        field_text(24),
        0u8..64,
        any::<bool>(),
        proptest::collection::vec(cp_item, 0..80),
    )
        .prop_map(|(qn, st, cn, pw, mn, version, ack, items)| Frame {
            qn,
            st,
            cn,
            pw,
            mn,
            flag: Flags {
                version,
                split: false,
                ack,
            },
            packet: None,
            cp: Cp { items },
        })
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = parse_bytes(&bytes);
        let mut r = FrameReader::new();
        r.push(&bytes);
        while r.next_frame().is_some() {}
    }

    #[test]
    fn parse_never_panics_on_damaged_frames(at in 0usize..175, byte in any::<u8>(), cut in 0usize..182) {
        let mut bytes = MINUTE_2051.as_bytes().to_vec();
        let at = at.min(bytes.len() - 1);
        bytes[at] = byte;
        let _ = parse_bytes(&bytes);
        let _ = parse_bytes(&bytes[..cut.min(bytes.len())]);
    }

    #[test]
    fn build_then_parse_round_trips(frame in frame_strategy()) {
        let packets = build(&frame).unwrap();
        let parsed: Vec<Frame> = packets.iter().map(|p| parse(p).unwrap()).collect();
        for p in &packets {
            prop_assert!(data_of(p).len() <= MAX_DATA_LEN);
        }
        prop_assert_eq!(join(&parsed).unwrap(), frame);
    }
}
