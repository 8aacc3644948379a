//! The HJ 212-2017 uplink: NMHC minute (2051) and hourly (2061) values to an environmental
//! platform over TCP, one task per `[[uplink.hj212]]` platform.
//!
//! # What is sent
//!
//! The rules engine's `nmhc_minute` and `nmhc_hour` outputs (the `rule_outputs` table), in id
//! order, one frame per value and analyzer, to the analyzer's own MN (analyzers without an MN for
//! this platform are skipped). CP: `DataTime` (start of the minute or hour, the site's local
//! time) and `a24088-Min/-Avg/-Max` (mg/m³, 3 decimals; omitted when the engine had no valid
//! value) with `a24088-Flag` (N or D, as the engine flagged it), then the same fields for each
//! other pollutant the analyzer's profile measures: methane `a05002`, total hydrocarbons
//! `a24087`, benzene `a25002` (profile points `methane`, `thc`, `benzene`), aggregated by the
//! engine over the same minute or hour with the same validity rules.
//!
//! # Guarantees
//!
//! At least once and in order, as the audit uplink: an upload carries `Flag` with the A bit and
//! is resent with the same QN until the platform answers 9014 with that QN (`timeout_s`, then
//! `retries` resends); only then is the position (`hj212:<name>` in `uplink_cursors`, the last
//! acknowledged `rule_outputs` id) stored. Without an answer the connection is dropped and made
//! again with capped, jittered backoff, and sending resumes at the first unacknowledged value,
//! with its original DataTime. A crash resends from the last stored position at worst.
//!
//! # Platform requests on the same connection
//!
//! - 2051 / 2061 with `BeginTime`/`EndTime` (history): 9011 `QnRtn=1`, one data frame per stored
//!   value in the range (the request's QN, no acknowledgement asked), then 9012 `ExeRtn=1`
//!   (`ExeRtn=100` when there is no data).
//! - 1011 (time get): 9011, a 1011 frame with `SystemTime`, 9012.
//! - 1012 (time set): 9011, then 9012 `ExeRtn=2` — the clock is **not** changed (it is kept by
//!   NTP); the request, with the offset it implied, is sealed as a `platform_time_set` evidence
//!   record.
//! - A wrong PW or an unknown MN is refused with 9011 `QnRtn=3` / `QnRtn=4`; another CN with
//!   `QnRtn=8`.

pub mod codec;

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use chrono::{NaiveDateTime, TimeZone as _};
use chrono_tz::Tz;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Hj212UplinkConfig;
use crate::evidence::Draft;
use crate::store::{SharedReader, Store, StoreError, StoreHandle};
use codec::{cn, st, CodecError, Cp, Flags, Frame, FrameReader};

/// NMHC (as carbon), HJ 212-2017 pollutant code.
pub const NMHC: &str = "a24088";

/// Values read from the store at a time.
const BATCH: usize = 200;

/// How often the store is looked at when everything is delivered.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The cursor name of a platform.
pub fn cursor_name(platform: &str) -> String {
    format!("hj212:{platform}")
}

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

fn local(tz: Tz, ms: i64) -> NaiveDateTime {
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
        /// EndTime, ms.
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
    if frame.pw != pw {
        return Request::Refuse(3);
    }
    let Some((analyzer, _)) = mn.iter().find(|(_, m)| *m == frame.mn) else {
        return Request::Refuse(4);
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
                (Some(from_ms), Some(to_ms)) if from_ms <= to_ms => Request::History {
                    interval,
                    analyzer: analyzer.clone(),
                    from_ms,
                    to_ms,
                },
                _ => Request::Refuse(2),
            }
        }
    }
}

/// The answer to a history request: 9011, the values (the request's QN, no ack asked), 9012.
pub fn history_answer(request: &Frame, values: &[Aggregate], h: &Header) -> Vec<Frame> {
    let mut out = vec![request_response(request, 1, h.version)];
    for v in values {
        let mut f = upload_frame(v, &request.mn, request.qn.clone(), h);
        f.flag = Flags::no_ack(h.version);
        out.push(f);
    }
    out.push(result_frame(
        request,
        if values.is_empty() { 100 } else { 1 },
        h.version,
    ));
    out
}

/// The answer to a time request at `now_ms`, and for a set request the evidence draft.
pub fn time_answer(
    request: &Frame,
    what: &Request,
    now_ms: i64,
    platform: &str,
    h: &Header,
) -> (Vec<Frame>, Option<Draft>) {
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
            let draft = Draft::new(
                now_ms,
                "platform_time_set",
                platform,
                &serde_json::json!({
                    "platform": platform,
                    "mn": request.mn,
                    "qn": request.qn,
                    "requested_time": requested,
                    "local_time": now_text,
                    "offset_ms": offset_ms,
                    "applied": false,
                }),
            );
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

/// Why the uplink could not read the store.
#[derive(Debug, thiserror::Error)]
pub enum Hj212Error {
    /// The database (the message names the file).
    #[error("HJ 212 uplink: {0}")]
    Store(#[from] StoreError),
}

/// Parses stored rows; a row that does not read is logged and skipped.
fn aggregates(rows: Vec<(i64, String, String)>) -> Vec<Aggregate> {
    rows.into_iter()
        .filter_map(|(id, kind, body)| match Aggregate::from_row(id, &kind, &body) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(error = %e, "an NMHC value cannot be sent to the HJ 212 platform");
                None
            }
        })
        .collect()
}

/// Values after `after_id`, in id order. Rows that do not read are logged and skipped.
pub fn values_after(
    store: &Store,
    after_id: i64,
    limit: usize,
) -> Result<Vec<Aggregate>, Hj212Error> {
    let kinds = [Interval::Minute.kind(), Interval::Hour.kind()];
    Ok(aggregates(store.outputs_after(after_id, &kinds, limit)?))
}

/// One analyzer's values of `interval` starting in `[from_ms, to_ms]`, in time order.
pub fn values_between(
    store: &Store,
    interval: Interval,
    analyzer: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Aggregate>, Hj212Error> {
    Ok(aggregates(store.outputs_of(
        interval.kind(),
        analyzer,
        from_ms,
        to_ms,
    )?))
}

/// Why a connection ended.
enum End {
    Stopped,
    Lost(String),
}

struct InFlight {
    id: i64,
    qn: String,
    packets: Vec<String>,
    sends: u32,
    deadline: Instant,
}

/// Where the live values of real-time (2011) frames come from: the plant state, and per
/// analyzer (`furnace/analyzer`) its points with their pollutant codes (NMHC first).
#[derive(Debug, Clone)]
pub struct LiveValues {
    /// The agent's live state.
    pub state: crate::state::PlantState,
    /// Analyzer → `(pollutant code, point)`.
    pub analyzers: Vec<(String, Vec<(&'static str, crate::model::PointId)>)>,
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

/// One platform: connects, delivers, answers, until stopped.
pub struct Hj212Uplink {
    config: Hj212UplinkConfig,
    header: Header,
    reader: SharedReader,
    store: StoreHandle,
    cursor: String,
    last_qn_ms: i64,
    live: Option<LiveValues>,
}

impl Hj212Uplink {
    /// An uplink to one platform, reading the database at `db`.
    pub fn new(config: Hj212UplinkConfig, tz: Tz, db: &Path, store: StoreHandle) -> Self {
        Hj212Uplink {
            header: Header {
                pw: config.pw.clone(),
                st: config.st.clone(),
                version: config.version,
                tz,
            },
            cursor: cursor_name(&config.name),
            config,
            reader: SharedReader::new(db),
            store,
            last_qn_ms: 0,
            live: None,
        }
    }

    /// Sends real-time frames from these live values (when `realtime_s` is set).
    pub fn with_live_values(mut self, live: LiveValues) -> Self {
        self.live = Some(live);
        self
    }

    /// The real-time frames of this moment, one per analyzer with an MN (no ack asked).
    fn realtime_frames(&mut self) -> Vec<Frame> {
        let Some(live) = self.live.clone() else {
            return Vec::new();
        };
        let snapshot = live.state.snapshot();
        let now = crate::clock::now_ms();
        let mut frames = Vec::new();
        for (analyzer, points) in &live.analyzers {
            let Some(mn) = self
                .config
                .mn
                .iter()
                .find(|(a, _)| a == analyzer)
                .map(|(_, m)| m.clone())
            else {
                continue;
            };
            let readings: Vec<(&str, Option<crate::model::Reading>)> = points
                .iter()
                .map(|(code, p)| (*code, snapshot.latest.get(p.0 as usize).copied().flatten()))
                .collect();
            if readings.iter().all(|(_, r)| r.is_none()) {
                continue;
            }
            frames.push(Frame {
                qn: self.next_qn(),
                st: self.header.st.clone(),
                cn: cn::REALTIME.to_owned(),
                pw: self.header.pw.clone(),
                mn,
                flag: Flags::no_ack(self.header.version),
                packet: None,
                cp: realtime_cp(&readings, now, self.header.tz),
            });
        }
        frames
    }

    fn next_qn(&mut self) -> String {
        let now = crate::clock::now_ms().max(self.last_qn_ms + 1);
        self.last_qn_ms = now;
        codec::qn_of(local(self.header.tz, now))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Hj212Error> + Send + 'static,
    ) -> Result<T, String> {
        self.reader.read(f).await.map_err(|e| e.to_string())
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let name = self.config.name.clone();
        let address = self.config.address.clone();
        let mut backoff = Backoff::new(Duration::from_secs(1), self.config.reconnect_max);
        let mut acked: Option<i64> = None;
        let mut failing = false;
        loop {
            let position = match acked {
                Some(a) => a,
                None => {
                    let cursor = self.cursor.clone();
                    match self
                        .blocking(move |store| Ok(store.uplink_cursor(&cursor)? as i64))
                        .await
                    {
                        Ok(a) => {
                            acked = Some(a);
                            a
                        }
                        Err(e) => {
                            tracing::error!(platform = %name, error = %e, "HJ 212 uplink cannot read its position");
                            if sleep_or_stop(&stop, backoff.next_wait()).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            let connect = tokio::time::timeout(self.config.timeout, TcpStream::connect(&address));
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                r = connect => match r {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no connection within {:?}", self.config.timeout)),
                },
            };
            let end = match stream {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    if failing {
                        tracing::info!(platform = %name, %address, acked = position, "HJ 212 platform reachable again");
                        failing = false;
                    } else {
                        tracing::info!(platform = %name, %address, acked = position, "connected to the HJ 212 platform");
                    }
                    let before = position;
                    let end = self.session(stream, &stop, &mut acked).await;
                    if acked.is_some_and(|a| a > before) {
                        backoff.reset();
                    }
                    end
                }
                Err(e) => End::Lost(e),
            };
            match end {
                End::Stopped => return,
                End::Lost(why) => {
                    if !failing {
                        tracing::warn!(platform = %name, %address, error = %why, "HJ 212 platform unreachable; values are kept and resent in order");
                        failing = true;
                    } else {
                        tracing::debug!(platform = %name, error = %why, "HJ 212 platform still unreachable");
                    }
                    if sleep_or_stop(&stop, backoff.next_wait()).await {
                        return;
                    }
                }
            }
        }
    }

    async fn write(&self, w: &mut OwnedWriteHalf, frames: &[Frame]) -> Result<(), String> {
        for f in frames {
            let packets =
                codec::build(f).map_err(|e| format!("cannot write a {} frame: {e}", f.cn))?;
            for p in packets {
                self.write_text(w, &p).await?;
            }
        }
        Ok(())
    }

    async fn write_text(&self, w: &mut OwnedWriteHalf, text: &str) -> Result<(), String> {
        match tokio::time::timeout(self.config.timeout, w.write_all(text.as_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("send failed: {e}")),
            Err(_) => Err("send timed out".to_owned()),
        }
    }

    /// One connection: sends values one at a time, each until acknowledged, and answers requests.
    async fn session(
        &mut self,
        stream: TcpStream,
        stop: &CancellationToken,
        acked: &mut Option<i64>,
    ) -> End {
        let (mut read, mut write) = stream.into_split();
        let (tx, mut incoming) = mpsc::channel::<Result<Frame, CodecError>>(64);
        let reader = tokio::spawn(async move {
            let mut frames = FrameReader::new();
            let mut buf = [0u8; 2048];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        frames.push(&buf[..n]);
                        while let Some(f) = frames.next_frame() {
                            if tx.send(f).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let _abort = AbortOnDrop(reader);
        let mut queue: VecDeque<Aggregate> = VecDeque::new();
        let mut in_flight: Option<InFlight> = None;
        let mut next_load = Instant::now();
        let mut realtime = self
            .config
            .realtime
            .filter(|_| self.live.is_some())
            .map(|period| {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            });
        loop {
            let mut position = acked.unwrap_or(0);
            if in_flight.is_none() {
                if queue.is_empty() && Instant::now() >= next_load {
                    match self
                        .blocking(move |store| values_after(store, position, BATCH))
                        .await
                    {
                        Ok(values) => queue.extend(values),
                        Err(e) => {
                            tracing::error!(platform = %self.config.name, error = %e, "HJ 212 uplink cannot read NMHC values")
                        }
                    }
                    if queue.is_empty() {
                        next_load = Instant::now() + IDLE_POLL;
                    }
                }
                // Values of analyzers this platform does not receive are passed over.
                let skipped_to = position;
                while let Some(v) = queue.front() {
                    let mn = self
                        .config
                        .mn
                        .iter()
                        .find(|(a, _)| *a == v.analyzer)
                        .map(|(_, m)| m.clone());
                    if let Some(mn) = mn {
                        let v = v.clone();
                        let qn = self.next_qn();
                        let frame = upload_frame(&v, &mn, qn, &self.header);
                        let packets = match codec::build(&frame) {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::error!(platform = %self.config.name, id = v.id, error = %e, "an NMHC value cannot be framed; passed over");
                                position = v.id;
                                queue.pop_front();
                                continue;
                            }
                        };
                        in_flight = Some(InFlight {
                            id: v.id,
                            qn: frame.qn,
                            packets,
                            sends: 0,
                            deadline: Instant::now(),
                        });
                        break;
                    }
                    position = v.id;
                    queue.pop_front();
                }
                if position != skipped_to {
                    *acked = Some(position);
                    if self
                        .store
                        .set_cursor(&self.cursor, position as u64)
                        .await
                        .is_err()
                    {
                        return End::Stopped;
                    }
                }
            }
            let wake = in_flight.as_ref().map_or(next_load, |f| f.deadline);
            tokio::select! {
                () = stop.cancelled() => return End::Stopped,
                _ = async {
                    match realtime.as_mut() {
                        Some(tick) => {
                            tick.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let frames = self.realtime_frames();
                    if let Err(e) = self.write(&mut write, &frames).await {
                        return End::Lost(e);
                    }
                }
                msg = incoming.recv() => match msg {
                    None => return End::Lost("the platform closed the connection".to_owned()),
                    Some(Err(e)) => {
                        tracing::warn!(platform = %self.config.name, error = %e, "unreadable frame from the HJ 212 platform; ignored");
                    }
                    Some(Ok(frame)) if frame.cn == cn::DATA_RESPONSE => {
                        match &in_flight {
                            Some(f) if f.qn == frame.qn => {
                                let id = f.id;
                                in_flight = None;
                                queue.pop_front();
                                *acked = Some(id);
                                if self.store.set_cursor(&self.cursor, id as u64).await.is_err() {
                                    return End::Stopped;
                                }
                            }
                            _ => tracing::debug!(platform = %self.config.name, qn = %frame.qn, "9014 for no upload in flight; ignored"),
                        }
                    }
                    Some(Ok(frame)) => {
                        if let Err(e) = self.answer(&frame, &mut write).await {
                            return End::Lost(e);
                        }
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    if let Some(f) = &mut in_flight {
                        if Instant::now() >= f.deadline {
                            if f.sends > self.config.retries {
                                return End::Lost(format!(
                                    "no 9014 answer to QN {} after {} sends {:?} apart",
                                    f.qn, f.sends, self.config.timeout
                                ));
                            }
                            if f.sends > 0 {
                                tracing::debug!(platform = %self.config.name, qn = %f.qn, "no answer; resending");
                            }
                            f.sends += 1;
                            f.deadline = Instant::now() + self.config.timeout;
                            let packets = f.packets.clone();
                            for p in &packets {
                                if let Err(e) = self.write_text(&mut write, p).await {
                                    return End::Lost(e);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Answers a platform request.
    async fn answer(&self, frame: &Frame, write: &mut OwnedWriteHalf) -> Result<(), String> {
        let name = self.config.name.clone();
        let request = classify(frame, &self.config.pw, &self.config.mn, self.header.tz);
        tracing::info!(platform = %name, cn = %frame.cn, qn = %frame.qn, ?request, "HJ 212 platform request");
        let frames = match &request {
            Request::Refuse(code) => vec![request_response(frame, *code, self.header.version)],
            Request::History {
                interval,
                analyzer,
                from_ms,
                to_ms,
            } => {
                let (interval, analyzer, from_ms, to_ms) =
                    (*interval, analyzer.clone(), *from_ms, *to_ms);
                match self
                    .blocking(move |store| {
                        values_between(store, interval, &analyzer, from_ms, to_ms)
                    })
                    .await
                {
                    Ok(values) => history_answer(frame, &values, &self.header),
                    Err(e) => {
                        tracing::error!(platform = %name, error = %e, "cannot read history for the HJ 212 platform");
                        vec![
                            request_response(frame, 1, self.header.version),
                            result_frame(frame, 2, self.header.version),
                        ]
                    }
                }
            }
            Request::GetTime | Request::SetTime(_) => {
                let (frames, draft) =
                    time_answer(frame, &request, crate::clock::now_ms(), &name, &self.header);
                if let Some(draft) = draft {
                    tracing::warn!(platform = %name, requested = ?request, "the HJ 212 platform asked to set the clock; not applied, recorded as evidence");
                    let _ = self.store.send_evidence(vec![draft]).await;
                }
                frames
            }
        };
        self.write(write, &frames).await
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps; true if `stop` came first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests;
