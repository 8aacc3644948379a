//! HJ 212 messages: building the frames sealwatch sends and reading the requests a platform
//! makes. Pure functions of their inputs (time passed in); no socket, no database.

use chrono::{NaiveDateTime, TimeZone as _};
use chrono_tz::Tz;
use serde::Deserialize;

use super::codec::{self, cn, st, Cp, Flags, Frame};
use super::NMHC;

/// Minute or hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// `nmhc_minute` → CN 2051.
    Minute,
    /// `nmhc_hour` → CN 2061.
    Hour,
}

impl Interval {
    /// The command number of its upload.
    pub fn cn(self) -> &'static str {
        match self {
            Interval::Minute => cn::MINUTE,
            Interval::Hour => cn::HOUR,
        }
    }

    /// The `rule_outputs` kind it comes from.
    pub fn kind(self) -> &'static str {
        match self {
            Interval::Minute => "nmhc_minute",
            Interval::Hour => "nmhc_hour",
        }
    }

    fn of_cn(cn: &str) -> Option<Interval> {
        match cn {
            cn::MINUTE => Some(Interval::Minute),
            cn::HOUR => Some(Interval::Hour),
            _ => None,
        }
    }
}

/// A minute or hour value of an analyzer, as the rules engine stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// `rule_outputs` id.
    pub id: i64,
    /// Minute or hour.
    pub interval: Interval,
    /// `furnace/analyzer`.
    pub analyzer: String,
    /// Start of the interval, ms.
    pub start_ms: i64,
    /// Mean, mg/m³.
    pub avg: Option<f64>,
    /// Smallest, mg/m³.
    pub min: Option<f64>,
    /// Largest, mg/m³.
    pub max: Option<f64>,
    /// HJ 212 data flag letter.
    pub flag: String,
    /// The analyzer's other pollutants over the same interval (methane, THC, benzene).
    pub others: Vec<Other>,
}

/// Another pollutant's value in an [`Aggregate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Other {
    /// HJ 212 pollutant code, e.g. `a05002`.
    pub code: String,
    /// Mean, mg/m³.
    pub avg: Option<f64>,
    /// Smallest, mg/m³.
    pub min: Option<f64>,
    /// Largest, mg/m³.
    pub max: Option<f64>,
    /// HJ 212 data flag letter.
    pub flag: String,
}

#[derive(Deserialize)]
struct Body {
    analyzer: String,
    minute_ms: Option<i64>,
    hour_ms: Option<i64>,
    avg: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    flag: String,
    #[serde(default)]
    others: Vec<Other>,
}

impl Aggregate {
    /// From a `rule_outputs` row.
    pub fn from_row(id: i64, kind: &str, body: &str) -> Result<Aggregate, String> {
        let interval = match kind {
            "nmhc_minute" => Interval::Minute,
            "nmhc_hour" => Interval::Hour,
            other => return Err(format!("rule output {id} is a {other}, not an NMHC value")),
        };
        let b: Body = serde_json::from_str(body)
            .map_err(|e| format!("rule output {id} ({kind}) does not read: {e}"))?;
        let start_ms = match interval {
            Interval::Minute => b.minute_ms,
            Interval::Hour => b.hour_ms,
        }
        .ok_or_else(|| format!("rule output {id} ({kind}) has no start time"))?;
        if !matches!(
            b.flag.as_str(),
            "N" | "F" | "M" | "S" | "D" | "C" | "T" | "B"
        ) {
            return Err(format!(
                "rule output {id} has flag '{}', not an HJ 212 flag",
                b.flag
            ));
        }
        Ok(Aggregate {
            id,
            interval,
            analyzer: b.analyzer,
            start_ms,
            avg: b.avg,
            min: b.min,
            max: b.max,
            flag: b.flag,
            others: b
                .others
                .into_iter()
                .filter(|o| o.code.len() == 6 && o.code.chars().all(|c| c.is_ascii_alphanumeric()))
                .collect(),
        })
    }
}

/// What frames need besides the value: the platform's settings and the site's zone.
#[derive(Debug, Clone)]
pub struct Header {
    /// PW.
    pub pw: String,
    /// ST of data uploads.
    pub st: String,
    /// Version bits.
    pub version: u8,
    /// The site's zone (DataTime, QN and SystemTime are local).
    pub tz: Tz,
}

pub(super) fn local(tz: Tz, ms: i64) -> NaiveDateTime {
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.naive_local())
        .unwrap_or_default()
}

fn utc_ms(tz: Tz, local: NaiveDateTime) -> Option<i64> {
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// The `-Min/-Avg/-Max/-Flag` fields of one pollutant (Min/Avg/Max only when there are values).
fn pollutant_fields(
    code: &str,
    min: Option<f64>,
    avg: Option<f64>,
    max: Option<f64>,
    flag: &str,
) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (suffix, v) in [("Min", min), ("Avg", avg), ("Max", max)] {
        if let Some(text) = v.and_then(|v| codec::decimal(v, 3)) {
            fields.push((format!("{code}-{suffix}"), text));
        }
    }
    fields.push((format!("{code}-Flag"), flag.to_owned()));
    fields
}

/// The CP of a value: DataTime, the NMHC fields, then one item per other pollutant measured.
pub fn value_cp(value: &Aggregate, tz: Tz) -> Cp {
    let mut cp = Cp::new()
        .with_item([("DataTime", codec::time_text(local(tz, value.start_ms)))])
        .with_item(pollutant_fields(
            NMHC,
            value.min,
            value.avg,
            value.max,
            &value.flag,
        ));
    for other in &value.others {
        cp = cp.with_item(pollutant_fields(
            &other.code,
            other.min,
            other.avg,
            other.max,
            &other.flag,
        ));
    }
    cp
}

/// The upload frame of a value (acknowledgement asked).
pub fn upload_frame(value: &Aggregate, mn: &str, qn: String, h: &Header) -> Frame {
    Frame {
        qn,
        st: h.st.clone(),
        cn: value.interval.cn().to_owned(),
        pw: h.pw.clone(),
        mn: mn.to_owned(),
        flag: Flags::upload(h.version),
        packet: None,
        cp: value_cp(value, h.tz),
    }
}

fn system_frame(request: &Frame, cn: &str, cp: Cp, version: u8) -> Frame {
    Frame {
        qn: request.qn.clone(),
        st: st::SYSTEM.to_owned(),
        cn: cn.to_owned(),
        pw: request.pw.clone(),
        mn: request.mn.clone(),
        flag: Flags::no_ack(version),
        packet: None,
        cp,
    }
}

/// 9011 with `QnRtn`.
pub fn request_response(request: &Frame, qn_rtn: u32, version: u8) -> Frame {
    system_frame(
        request,
        cn::REQUEST_RESPONSE,
        Cp::new().with_item([("QnRtn", qn_rtn.to_string())]),
        version,
    )
}

/// 9012 with `ExeRtn`.
pub fn result_frame(request: &Frame, exe_rtn: u32, version: u8) -> Frame {
    system_frame(
        request,
        cn::RESULT,
        Cp::new().with_item([("ExeRtn", exe_rtn.to_string())]),
        version,
    )
}

/// What a platform request asks of the uplink.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// History of one analyzer: values of `interval` starting in `[from_ms, to_ms]`.
    History {
        /// Minute or hour.
        interval: Interval,
        /// `furnace/analyzer`.
        analyzer: String,
        /// BeginTime, ms.
        from_ms: i64,
        /// EndTime, ms (at most [`super::guard::max_history_span`] after BeginTime).
        to_ms: i64,
    },
    /// 1011.
    GetTime,
    /// 1012, with the requested time.
    SetTime(String),
    /// Refused with this QnRtn.
    Refuse(u32),
}

/// Classifies a frame from the platform (not a 9014). `mn` maps analyzers to MNs.
pub fn classify(frame: &Frame, pw: &str, mn: &[(String, String)], tz: Tz) -> Request {
    let analyzer = match super::guard::authenticate(frame, pw, mn) {
        Ok(a) => a.to_owned(),
        Err(code) => return Request::Refuse(code),
    };
    match frame.cn.as_str() {
        cn::GET_TIME => Request::GetTime,
        cn::SET_TIME => match frame.cp.get("SystemTime") {
            Some(t) if codec::parse_time("SystemTime", t).is_ok() => Request::SetTime(t.to_owned()),
            _ => Request::Refuse(2),
        },
        other => {
            let Some(interval) = Interval::of_cn(other) else {
                return Request::Refuse(8);
            };
            let time = |name: &'static str| {
                frame
                    .cp
                    .get(name)
                    .and_then(|t| codec::parse_time(name, t).ok())
                    .and_then(|t| utc_ms(tz, t))
            };
            match (time("BeginTime"), time("EndTime")) {
                (Some(from_ms), Some(to_ms))
                    if from_ms <= to_ms
                        && super::guard::history_span_ok(interval, from_ms, to_ms) =>
                {
                    Request::History {
                        interval,
                        analyzer,
                        from_ms,
                        to_ms,
                    }
                }
                _ => Request::Refuse(2),
            }
        }
    }
}

/// The answer to a history request: 9011, the values (the request's QN, no ack asked; at most
/// [`super::guard::MAX_HISTORY_ROWS`]), 9012 (`ExeRtn` 1; 100 without data).
pub fn history_answer(request: &Frame, values: &[Aggregate], h: &Header) -> Vec<Frame> {
    let mut out = vec![request_response(request, 1, h.version)];
    let values = &values[..values.len().min(super::guard::MAX_HISTORY_ROWS)];
    for v in values {
        let mut f = upload_frame(v, &request.mn, request.qn.clone(), h);
        f.flag = Flags::no_ack(h.version);
        out.push(f);
    }
    let exe_rtn = if values.is_empty() { 100 } else { 1 };
    out.push(result_frame(request, exe_rtn, h.version));
    out
}

/// The answer to a time request at `now_ms`, and for a set request the body of its
/// `platform_time_set` evidence record (sealed through [`super::guard::Coalescer`]).
pub fn time_answer(
    request: &Frame,
    what: &Request,
    now_ms: i64,
    platform: &str,
    h: &Header,
) -> (Vec<Frame>, Option<serde_json::Value>) {
    let now_text = codec::time_text(local(h.tz, now_ms));
    match what {
        Request::GetTime => {
            let mut cp = Cp::new();
            if let Some(pol) = request.cp.get("PolId") {
                cp = cp.with_item([("PolId", pol)]);
            }
            let time = Frame {
                st: h.st.clone(),
                cp: cp.with_item([("SystemTime", now_text)]),
                ..system_frame(request, cn::GET_TIME, Cp::new(), h.version)
            };
            (
                vec![
                    request_response(request, 1, h.version),
                    time,
                    result_frame(request, 1, h.version),
                ],
                None,
            )
        }
        Request::SetTime(requested) => {
            let offset_ms = codec::parse_time("SystemTime", requested)
                .ok()
                .and_then(|t| utc_ms(h.tz, t))
                .map(|t| t - now_ms);
            let draft = serde_json::json!({
                "platform": platform,
                "mn": request.mn,
                "qn": request.qn,
                "requested_time": requested,
                "local_time": now_text,
                "offset_ms": offset_ms,
                "applied": false,
            });
            (
                vec![
                    request_response(request, 1, h.version),
                    result_frame(request, 2, h.version),
                ],
                Some(draft),
            )
        }
        _ => (Vec::new(), None),
    }
}

/// The CP of a real-time frame: DataTime (now, local), then `<code>-Rtd` and `<code>-Flag` of
/// each pollutant with a latest reading (no value, only the flag, when the reading had none).
pub fn realtime_cp(readings: &[(&str, Option<crate::model::Reading>)], now_ms: i64, tz: Tz) -> Cp {
    let mut cp = Cp::new().with_item([("DataTime", codec::time_text(local(tz, now_ms)))]);
    for (code, reading) in readings {
        let Some(r) = reading else { continue };
        let mut fields: Vec<(String, String)> = Vec::new();
        if let Some(text) = r.value().and_then(|v| codec::decimal(v, 3)) {
            fields.push((format!("{code}-Rtd"), text));
        }
        fields.push((format!("{code}-Flag"), r.flag.letter().to_string()));
        cp = cp.with_item(fields);
    }
    cp
}
