//! The HJ 212-2017 frame codec: pure, no I/O, no clock (times are passed in).
//!
//! # Frame
//!
//! `##` + 4 decimal digits (length of the data segment in bytes) + data segment + 4 hex digits
//! (CRC of the data segment) + `\r\n`. The data segment is
//! `QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&`; inside CP, `;` separates items, `,`
//! the fields of an item and `=` a field's name from its value.
//!
//! # Invariants
//!
//! - [`parse`] never panics on any input and accepts only what [`build`] could have written:
//!   every header field present exactly once (QN 17 digits, ST 2 digits, CN 1–7 digits, PW up to 9
//!   and MN up to 24 characters without separators, Flag 0–255, PNUM/PNO both or neither, 1–9999,
//!   PNO ≤ PNUM, the Flag D bit set exactly when they are present), the length field equal to the
//!   data segment's length, the data segment ≤ 1024 bytes, CP ≤ 950, CRC matching (upper or
//!   lower case hex accepted).
//! - [`build`] writes uppercase CRC, and splits a CP longer than one packet allows into packets
//!   at item boundaries (PNUM/PNO, D bit); [`join`] puts them back: `join(parse(build(f))) == f`.
//! - The CRC is the standard's annex A algorithm ([`crc16`]), **not** CRC-16/MODBUS: the
//!   standard's own example frame hashes to 1C80 (its prose says 1C08, a typo).
//! - Values are text: the caller formats numbers with fixed decimals ([`decimal`]), never with a
//!   float's debug text.

use chrono::NaiveDateTime;

/// Largest data segment, bytes.
pub const MAX_DATA_LEN: usize = 1024;
/// Largest CP content (between the `&&`), characters.
pub const MAX_CP_LEN: usize = 950;
/// Version bits of HJ 212-2017 (`V5..V0` = 000001).
pub const VERSION_2017: u8 = 0b00_0001;

/// Command numbers (CN) used here.
pub mod cn {
    /// Time get.
    pub const GET_TIME: &str = "1011";
    /// Time set.
    pub const SET_TIME: &str = "1012";
    /// Real-time data.
    pub const REALTIME: &str = "2011";
    /// Daily data.
    pub const DAY: &str = "2031";
    /// Minute data.
    pub const MINUTE: &str = "2051";
    /// Hourly data.
    pub const HOUR: &str = "2061";
    /// Request response (QnRtn).
    pub const REQUEST_RESPONSE: &str = "9011";
    /// Execution result (ExeRtn).
    pub const RESULT: &str = "9012";
    /// Notification response.
    pub const NOTIFY_RESPONSE: &str = "9013";
    /// Data response (the platform's acknowledgement of an upload).
    pub const DATA_RESPONSE: &str = "9014";
}

/// System codes (ST) used here.
pub mod st {
    /// Air pollution source.
    pub const AIR: &str = "31";
    /// VOC monitoring.
    pub const VOC: &str = "27";
    /// System interaction (responses).
    pub const SYSTEM: &str = "91";
}

/// Why a frame was refused. Each message names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No `##` at the start.
    #[error("frame does not start with ##")]
    NoStart,
    /// Shorter than the smallest possible frame.
    #[error("frame of {0} bytes is too short: ## + 4-digit length + CRC + CR LF alone take 12")]
    TooShort(usize),
    /// No `\r\n` at the end.
    #[error("frame does not end with CR LF")]
    NoEnd,
    /// The length field is not 4 decimal digits.
    #[error("length field '{0}' is not 4 decimal digits")]
    BadLengthField(String),
    /// The length field disagrees with the data segment.
    #[error(
        "bad length: the length field says {said} bytes of data segment, the frame holds {actual}"
    )]
    LengthMismatch {
        /// What the length field says.
        said: usize,
        /// What the frame holds.
        actual: usize,
    },
    /// The data segment is over 1024 bytes.
    #[error("data segment of {0} bytes exceeds the 1024 HJ 212 allows")]
    TooLong(usize),
    /// The CRC field is not 4 hex digits.
    #[error("CRC field '{0}' is not 4 hex digits")]
    BadCrcField(String),
    /// The CRC does not match.
    #[error("bad CRC: frame says {said:04X}, data segment hashes to {computed:04X}")]
    BadCrc {
        /// The frame's CRC field.
        said: u16,
        /// The CRC of its data segment.
        computed: u16,
    },
    /// The data segment is not UTF-8.
    #[error("data segment is not text (not UTF-8)")]
    NotText,
    /// A header field is missing.
    #[error("missing field {0} in the data segment")]
    MissingField(&'static str),
    /// A header field appears twice.
    #[error("field {0} appears twice in the data segment")]
    DuplicateField(String),
    /// A header field this codec does not know.
    #[error(
        "unknown field '{0}' in the data segment; expected QN, ST, CN, PW, MN, Flag, PNUM, PNO, CP"
    )]
    UnknownField(String),
    /// A header field with an unusable value.
    #[error("field {field}='{value}' is invalid: {why}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        why: &'static str,
    },
    /// CP is malformed.
    #[error("bad CP: {0}")]
    BadCp(String),
    /// CP is longer than one packet allows.
    #[error("CP of {len} characters exceeds the {max} one packet allows")]
    CpTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Packets that do not form one message.
    #[error("cannot join packets: {0}")]
    Packets(String),
}

impl CodecError {
    /// Whether the bytes were damaged in transit (length, CRC, framing), as opposed to a
    /// well-formed frame with wrong content.
    pub fn is_transmission_error(&self) -> bool {
        matches!(
            self,
            CodecError::NoStart
                | CodecError::TooShort(_)
                | CodecError::NoEnd
                | CodecError::BadLengthField(_)
                | CodecError::LengthMismatch { .. }
                | CodecError::TooLong(_)
                | CodecError::BadCrcField(_)
                | CodecError::BadCrc { .. }
                | CodecError::NotText
        )
    }
}

/// The Flag field: version bits, split-packet bit D, acknowledgement-required bit A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// `V5..V0`: 1 for HJ 212-2017.
    pub version: u8,
    /// D: the message is split into packets (PNUM/PNO present).
    pub split: bool,
    /// A: the receiver must acknowledge.
    pub ack: bool,
}

impl Flags {
    /// An upload that wants an acknowledgement (`Flag=5` for 2017).
    pub fn upload(version: u8) -> Flags {
        Flags {
            version,
            split: false,
            ack: true,
        }
    }

    /// A response or an upload that needs no acknowledgement (`Flag=4` for 2017).
    pub fn no_ack(version: u8) -> Flags {
        Flags {
            version,
            split: false,
            ack: false,
        }
    }

    /// The field's value.
    pub fn bits(self) -> u8 {
        ((self.version & 0x3F) << 2) | (u8::from(self.split) << 1) | u8::from(self.ack)
    }

    /// From the field's value.
    pub fn from_bits(bits: u8) -> Flags {
        Flags {
            version: bits >> 2,
            split: bits & 2 != 0,
            ack: bits & 1 != 0,
        }
    }
}

/// PNUM/PNO: packet `number` (from 1) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// PNUM.
    pub count: u16,
    /// PNO.
    pub number: u16,
}

/// The CP field: ordered items, each an ordered list of `name=value` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cp {
    /// Items (`;`-separated), each with its fields (`,`-separated).
    pub items: Vec<Vec<(String, String)>>,
}

impl Cp {
    /// An empty CP (`CP=&&&&`).
    pub fn new() -> Cp {
        Cp::default()
    }

    /// Adds an item.
    pub fn with_item<N: Into<String>, V: Into<String>>(
        mut self,
        fields: impl IntoIterator<Item = (N, V)>,
    ) -> Cp {
        self.items.push(
            fields
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The first field called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .flatten()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The text between the `&&`.
    pub fn render(&self) -> String {
        self.items
            .iter()
            .map(|item| {
                item.iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Parses the text between the `&&`.
    pub fn parse_content(text: &str) -> Result<Cp, CodecError> {
        if text.is_empty() {
            return Ok(Cp::new());
        }
        if text.contains('&') {
            return Err(CodecError::BadCp(format!(
                "'&' inside CP content '{}'",
                clip(text)
            )));
        }
        let mut items = Vec::new();
        for (i, item) in text.split(';').enumerate() {
            if item.is_empty() {
                return Err(CodecError::BadCp(format!(
                    "item {} is empty (two ';' in a row, or one at an end)",
                    i + 1
                )));
            }
            let mut fields = Vec::new();
            for field in item.split(',') {
                let Some((name, value)) = field.split_once('=') else {
                    return Err(CodecError::BadCp(format!(
                        "'{}' in item {} has no '='",
                        clip(field),
                        i + 1
                    )));
                };
                if name.is_empty() {
                    return Err(CodecError::BadCp(format!(
                        "a field of item {} has no name ('={}')",
                        i + 1,
                        clip(value)
                    )));
                }
                if value.contains('=') {
                    return Err(CodecError::BadCp(format!(
                        "field {name} of item {} has two '='",
                        i + 1
                    )));
                }
                fields.push((name.to_owned(), value.to_owned()));
            }
            items.push(fields);
        }
        Ok(Cp { items })
    }

    /// Checks that names and values cannot break the structure.
    fn check(&self) -> Result<(), CodecError> {
        for (i, item) in self.items.iter().enumerate() {
            if item.is_empty() {
                return Err(CodecError::BadCp(format!("item {} has no fields", i + 1)));
            }
            for (name, value) in item {
                if name.is_empty() || !cp_text_ok(name) || !cp_text_ok(value) {
                    return Err(CodecError::BadCp(format!(
                        "field '{}={}' of item {}: names must be non-empty, and neither may hold ; , = & CR or LF",
                        clip(name),
                        clip(value),
                        i + 1
                    )));
                }
            }
        }
        Ok(())
    }
}

fn cp_text_ok(s: &str) -> bool {
    !s.contains([';', ',', '=', '&', '\r', '\n'])
}

fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        s.chars().take(40).collect::<String>() + "…"
    } else {
        s.to_owned()
    }
}

/// One frame (or one packet of a split message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request code, `YYYYMMDDhhmmsszzz`.
    pub qn: String,
    /// System code.
    pub st: String,
    /// Command number.
    pub cn: String,
    /// Access password.
    pub pw: String,
    /// Device (monitoring point) id.
    pub mn: String,
    /// Flag bits.
    pub flag: Flags,
    /// PNUM/PNO of a split message.
    pub packet: Option<Packet>,
    /// Command parameters.
    pub cp: Cp,
}

impl Frame {
    /// The platform's data response (9014) to an upload: same QN, PW and MN, `Flag=4`-style
    /// flags of `version`, empty CP.
    pub fn data_response(to: &Frame, version: u8) -> Frame {
        Frame {
            qn: to.qn.clone(),
            st: st::SYSTEM.to_owned(),
            cn: cn::DATA_RESPONSE.to_owned(),
            pw: to.pw.clone(),
            mn: to.mn.clone(),
            flag: Flags::no_ack(version),
            packet: None,
            cp: Cp::new(),
        }
    }
}

/// HJ 212-2017 annex A CRC of `data`: start 0xFFFF; per byte `crc = (crc >> 8) ^ byte`, then 8
/// times shift right, XOR 0xA001 when the bit shifted out was 1.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc = (crc >> 8) ^ u16::from(b);
        for _ in 0..8 {
            let out = crc & 1;
            crc >>= 1;
            if out != 0 {
                crc ^= 0xA001;
            }
        }
    }
    crc
}

fn bad(field: &'static str, value: &str, why: &'static str) -> CodecError {
    CodecError::BadField {
        field,
        value: clip(value),
        why,
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn header_text_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'=' | b'&'))
}

fn check_header(f: &Frame) -> Result<(), CodecError> {
    if !(f.qn.len() == 17 && digits(&f.qn)) {
        return Err(bad("QN", &f.qn, "expected 17 digits YYYYMMDDhhmmsszzz"));
    }
    if !(f.st.len() == 2 && digits(&f.st)) {
        return Err(bad("ST", &f.st, "expected 2 digits, e.g. 27 or 91"));
    }
    if !(f.cn.len() <= 7 && digits(&f.cn)) {
        return Err(bad("CN", &f.cn, "expected 1–7 digits, e.g. 2051"));
    }
    if !(f.pw.len() <= 9 && header_text_ok(&f.pw)) {
        return Err(bad(
            "PW",
            &f.pw,
            "expected up to 9 printable characters without ; , = &",
        ));
    }
    if !(!f.mn.is_empty() && f.mn.len() <= 24 && header_text_ok(&f.mn)) {
        return Err(bad(
            "MN",
            &f.mn,
            "expected 1–24 printable characters without ; , = &",
        ));
    }
    if f.flag.version > 0x3F {
        return Err(bad(
            "Flag",
            &f.flag.version.to_string(),
            "version bits are 0–63",
        ));
    }
    if let Some(p) = f.packet {
        if !(1..=9999).contains(&p.count) {
            return Err(bad("PNUM", &p.count.to_string(), "expected 1–9999"));
        }
        if !(1..=p.count).contains(&p.number) {
            return Err(bad("PNO", &p.number.to_string(), "expected 1 to PNUM"));
        }
    }
    if f.flag.split != f.packet.is_some() {
        return Err(bad(
            "Flag",
            &f.flag.bits().to_string(),
            "the D bit must be set exactly when PNUM and PNO are present",
        ));
    }
    Ok(())
}

fn data_segment(f: &Frame, cp: &str) -> String {
    let packet = f
        .packet
        .map(|p| format!("PNUM={};PNO={};", p.count, p.number))
        .unwrap_or_default();
    format!(
        "QN={};ST={};CN={};PW={};MN={};Flag={};{packet}CP=&&{cp}&&",
        f.qn,
        f.st,
        f.cn,
        f.pw,
        f.mn,
        f.flag.bits()
    )
}

fn wrap(data: &str) -> String {
    format!(
        "##{:04}{data}{:04X}\r\n",
        data.len(),
        crc16(data.as_bytes())
    )
}

/// Writes a frame. A CP too long for one packet is split at item boundaries into packets
/// (PNUM/PNO, D bit set), each a complete frame; a frame that already names its packet is written
/// as that one packet. Fails when a field cannot be written (it would not parse back) or one CP
/// item alone does not fit a packet.
pub fn build(frame: &Frame) -> Result<Vec<String>, CodecError> {
    frame.cp.check()?;
    if frame.packet.is_some() {
        check_header(frame)?;
        let cp = frame.cp.render();
        let data = data_segment(frame, &cp);
        if cp.len() > MAX_CP_LEN {
            return Err(CodecError::CpTooLong {
                len: cp.len(),
                max: MAX_CP_LEN,
            });
        }
        if data.len() > MAX_DATA_LEN {
            return Err(CodecError::TooLong(data.len()));
        }
        return Ok(vec![wrap(&data)]);
    }
    let whole = Frame {
        flag: Flags {
            split: false,
            ..frame.flag
        },
        ..frame.clone()
    };
    check_header(&whole)?;
    let cp = whole.cp.render();
    let data = data_segment(&whole, &cp);
    if cp.len() <= MAX_CP_LEN && data.len() <= MAX_DATA_LEN {
        return Ok(vec![wrap(&data)]);
    }
    // Split: room for CP in a packet, counting PNUM/PNO at their widest.
    let probe = Frame {
        packet: Some(Packet {
            count: 9999,
            number: 9999,
        }),
        flag: Flags {
            split: true,
            ..whole.flag
        },
        cp: Cp::new(),
        ..whole.clone()
    };
    let room = MAX_CP_LEN.min(MAX_DATA_LEN.saturating_sub(data_segment(&probe, "").len()));
    let mut groups: Vec<Vec<Vec<(String, String)>>> = Vec::new();
    let mut used = 0;
    for item in &whole.cp.items {
        let len = Cp {
            items: vec![item.clone()],
        }
        .render()
        .len();
        if len > room {
            return Err(CodecError::CpTooLong { len, max: room });
        }
        match groups.last_mut() {
            Some(group) if used + 1 + len <= room => {
                group.push(item.clone());
                used += 1 + len;
            }
            _ => {
                groups.push(vec![item.clone()]);
                used = len;
            }
        }
    }
    let count = u16::try_from(groups.len())
        .ok()
        .filter(|c| *c <= 9999)
        .ok_or_else(|| CodecError::Packets(format!("{} packets exceed 9999", groups.len())))?;
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, items)| {
            let packet = Frame {
                packet: Some(Packet {
                    count,
                    number: i as u16 + 1,
                }),
                flag: Flags {
                    split: true,
                    ..whole.flag
                },
                cp: Cp { items },
                ..whole.clone()
            };
            wrap(&data_segment(&packet, &packet.cp.render()))
        })
        .collect())
}

/// Parses one whole frame, `##` to `\r\n`.
pub fn parse(text: &str) -> Result<Frame, CodecError> {
    parse_bytes(text.as_bytes())
}

/// Parses one whole frame from bytes.
pub fn parse_bytes(bytes: &[u8]) -> Result<Frame, CodecError> {
    if !bytes.starts_with(b"##") {
        return Err(CodecError::NoStart);
    }
    if bytes.len() < 12 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    let len_field = &bytes[2..6];
    if !len_field.iter().all(u8::is_ascii_digit) {
        return Err(CodecError::BadLengthField(
            String::from_utf8_lossy(len_field).into_owned(),
        ));
    }
    let said: usize = len_field
        .iter()
        .fold(0, |n, d| n * 10 + usize::from(d - b'0'));
    if !bytes.ends_with(b"\r\n") {
        return Err(CodecError::NoEnd);
    }
    let actual = bytes.len() - 12;
    if said > MAX_DATA_LEN {
        return Err(CodecError::TooLong(said));
    }
    if actual != said {
        return Err(CodecError::LengthMismatch { said, actual });
    }
    let data = &bytes[6..6 + said];
    let crc_field = &bytes[6 + said..10 + said];
    let said_crc = std::str::from_utf8(crc_field)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| u16::from_str_radix(s, 16).ok())
        .ok_or_else(|| CodecError::BadCrcField(String::from_utf8_lossy(crc_field).into_owned()))?;
    let computed = crc16(data);
    if said_crc != computed {
        return Err(CodecError::BadCrc {
            said: said_crc,
            computed,
        });
    }
    let data = std::str::from_utf8(data).map_err(|_| CodecError::NotText)?;
    parse_data_segment(data)
}

/// Parses a data segment (`QN=…;…;CP=&&…&&`), without framing or CRC.
pub fn parse_data_segment(data: &str) -> Result<Frame, CodecError> {
    let (header, cp) = if let Some(rest) = data.strip_prefix("CP=&&") {
        ("", rest)
    } else {
        match data.find(";CP=&&") {
            Some(i) => (&data[..i], &data[i + 6..]),
            None => return Err(CodecError::MissingField("CP")),
        }
    };
    let Some(content) = cp.strip_suffix("&&") else {
        return Err(CodecError::BadCp(format!(
            "CP must end with '&&', found '…{}'",
            clip(
                &cp.chars()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            )
        )));
    };
    if content.len() > MAX_CP_LEN {
        return Err(CodecError::CpTooLong {
            len: content.len(),
            max: MAX_CP_LEN,
        });
    }
    let cp = Cp::parse_content(content)?;
    const NAMES: [&str; 8] = ["QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO"];
    let mut values: [Option<&str>; 8] = [None; 8];
    if !header.is_empty() {
        for field in header.split(';') {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| CodecError::UnknownField(clip(field)))?;
            let Some(i) = NAMES.iter().position(|n| *n == name) else {
                return Err(CodecError::UnknownField(clip(name)));
            };
            if values[i].replace(value).is_some() {
                return Err(CodecError::DuplicateField(name.to_owned()));
            }
        }
    }
    let take = |i: usize| values[i].ok_or(CodecError::MissingField(NAMES[i]));
    let qn = take(0)?;
    let st = take(1)?;
    let cn = take(2)?;
    let pw = take(3)?;
    let mn = take(4)?;
    let flag_text = take(5)?;
    let flag = flag_text
        .parse::<u8>()
        .ok()
        .filter(|_| flag_text.len() <= 3 && digits(flag_text))
        .map(Flags::from_bits)
        .ok_or_else(|| bad("Flag", flag_text, "expected a number 0–255"))?;
    let number = |field: &'static str, v: &str| {
        v.parse::<u16>()
            .ok()
            .filter(|_| v.len() <= 4 && digits(v))
            .ok_or_else(|| bad(field, v, "expected 1–9999"))
    };
    let packet = match (values[6], values[7]) {
        (None, None) => None,
        (Some(count), Some(no)) => Some(Packet {
            count: number("PNUM", count)?,
            number: number("PNO", no)?,
        }),
        (Some(_), None) => return Err(CodecError::MissingField("PNO")),
        (None, Some(_)) => return Err(CodecError::MissingField("PNUM")),
    };
    let frame = Frame {
        qn: qn.to_owned(),
        st: st.to_owned(),
        cn: cn.to_owned(),
        pw: pw.to_owned(),
        mn: mn.to_owned(),
        flag,
        packet,
        cp,
    };
    check_header(&frame)?;
    Ok(frame)
}

/// Puts the packets of one split message back together (in any order). A single frame without
/// PNUM/PNO is returned as it is.
pub fn join(packets: &[Frame]) -> Result<Frame, CodecError> {
    let Some(first) = packets.first() else {
        return Err(CodecError::Packets("no packets".to_owned()));
    };
    let Some(p0) = first.packet else {
        if packets.len() == 1 {
            return Ok(first.clone());
        }
        return Err(CodecError::Packets(
            "several frames, but the first has no PNUM/PNO".to_owned(),
        ));
    };
    if usize::from(p0.count) != packets.len() {
        return Err(CodecError::Packets(format!(
            "PNUM says {} packets, {} given",
            p0.count,
            packets.len()
        )));
    }
    let mut ordered: Vec<Option<&Frame>> = vec![None; packets.len()];
    for f in packets {
        let Some(p) = f.packet else {
            return Err(CodecError::Packets(format!(
                "a frame of QN {} has no PNUM/PNO",
                f.qn
            )));
        };
        if (&f.qn, &f.st, &f.cn, &f.pw, &f.mn, f.flag)
            != (
                &first.qn, &first.st, &first.cn, &first.pw, &first.mn, first.flag,
            )
            || p.count != p0.count
        {
            return Err(CodecError::Packets(format!(
                "packet {} of QN {} does not belong to message QN {} ({} packets)",
                p.number, f.qn, first.qn, p0.count
            )));
        }
        let slot = ordered
            .get_mut(usize::from(p.number).wrapping_sub(1))
            .ok_or_else(|| {
                CodecError::Packets(format!("PNO {} outside 1–{}", p.number, p0.count))
            })?;
        if slot.replace(f).is_some() {
            return Err(CodecError::Packets(format!("PNO {} given twice", p.number)));
        }
    }
    let mut cp = Cp::new();
    for f in ordered.into_iter().flatten() {
        cp.items.extend(f.cp.items.iter().cloned());
    }
    Ok(Frame {
        packet: None,
        flag: Flags {
            split: false,
            ..first.flag
        },
        cp,
        ..first.clone()
    })
}

/// Finds whole frames in a byte stream: skips anything before `##`, waits for the bytes the
/// length field promises, and after a bad frame moves on one byte so that a real frame inside
/// the garbage is still found.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame or framing error; `None` until more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, CodecError>> {
        let Some(start) = self.buf.windows(2).position(|w| w == b"##") else {
            // Keep a lone trailing '#': it may be the first half of a start.
            let keep = usize::from(self.buf.last() == Some(&b'#'));
            self.buf.drain(..self.buf.len() - keep);
            return None;
        };
        self.buf.drain(..start);
        if self.buf.len() < 6 {
            return None;
        }
        let len_field = &self.buf[2..6];
        if !len_field.iter().all(u8::is_ascii_digit) {
            let e = CodecError::BadLengthField(String::from_utf8_lossy(len_field).into_owned());
            self.buf.drain(..1);
            return Some(Err(e));
        }
        let len = len_field
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if len > MAX_DATA_LEN {
            self.buf.drain(..1);
            return Some(Err(CodecError::TooLong(len)));
        }
        let total = 12 + len;
        if self.buf.len() < total {
            return None;
        }
        match parse_bytes(&self.buf[..total]) {
            Ok(frame) => {
                self.buf.drain(..total);
                Some(Ok(frame))
            }
            Err(e) => {
                self.buf.drain(..1);
                Some(Err(e))
            }
        }
    }
}

/// `YYYYMMDDhhmmsszzz` of a local time.
pub fn qn_of(local: NaiveDateTime) -> String {
    local.format("%Y%m%d%H%M%S%3f").to_string()
}

/// `YYYYMMDDhhmmss` of a local time (DataTime, BeginTime, EndTime, SystemTime).
pub fn time_text(local: NaiveDateTime) -> String {
    local.format("%Y%m%d%H%M%S").to_string()
}

/// Parses `YYYYMMDDhhmmss`.
pub fn parse_time(field: &'static str, text: &str) -> Result<NaiveDateTime, CodecError> {
    if !(text.len() == 14 && digits(text)) {
        return Err(bad(field, text, "expected 14 digits YYYYMMDDhhmmss"));
    }
    NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S")
        .map_err(|_| bad(field, text, "not a valid date and time"))
}

/// A value with `places` fixed decimals (`-0.000` written as `0.000`); `None` if not finite.
pub fn decimal(value: f64, places: usize) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let text = format!("{value:.places$}");
    if text.starts_with('-') && text[1..].bytes().all(|b| b == b'0' || b == b'.') {
        Some(text[1..].to_owned())
    } else {
        Some(text)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
pub(crate) mod tests;
