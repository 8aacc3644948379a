//! Uplink tests: frames from rule outputs (golden), request answers, and a session against an
//! in-process platform (retry with the same QN, cursor, history, time set as evidence).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::codec::{self, Cp, Flags, Frame, FrameReader, VERSION_2017};
use super::*;
use crate::model::Flag;
use crate::rules::{FlagCounts, Output};
use crate::store::{spawn_writer, Limits, Store};

/// 2026-01-01T08:00:00+08:00.
const T0: i64 = 1_767_225_600_000;
const MN: &str = "010000A8900016F000169DC0";

fn header() -> Header {
    Header {
        pw: "123456".into(),
        st: "27".into(),
        version: VERSION_2017,
        tz: chrono_tz::Asia::Shanghai,
    }
}

fn minute(analyzer: &str, at: i64, avg: Option<f64>, flag: Flag) -> Output {
    Output::NmhcMinute {
        analyzer: analyzer.into(),
        minute_ms: at,
        avg,
        min: avg.map(|a| a - 0.3),
        max: avg.map(|a| a + 0.3),
        flag,
        samples: 60,
        expected: 60,
        saturated: 0,
        flags: FlagCounts::default(),
        interrupted: false,
        others: Vec::new(),
        ruleset: "r".into(),
    }
}

fn hour() -> Output {
    Output::NmhcHour {
        analyzer: "F1/NMHC".into(),
        hour_ms: T0,
        valid_minutes: 58,
        saturated_minutes: 0,
        avg: Some(4.125),
        min: Some(0.9),
        max: Some(12.5),
        flag: Flag::N,
        hourly_limit: 10.0,
        exceeded: false,
        single_exceedances: 0,
        peak: Some(12.5),
        flags: FlagCounts::default(),
        interrupted: false,
        others: Vec::new(),
        ruleset: "r".into(),
    }
}

fn aggregate(id: i64, o: &Output) -> Aggregate {
    Aggregate::from_row(id, o.kind(), &o.to_json()).unwrap()
}

#[test]
fn a_minute_output_becomes_the_golden_2051_frame() {
    let v = aggregate(1, &minute("F1/NMHC", T0, Some(1.5), Flag::N));
    let f = upload_frame(&v, MN, "20260101080100123".into(), &header());
    assert_eq!(
        codec::build(&f).unwrap(),
        vec![codec::tests::MINUTE_2051.to_owned()]
    );
}

#[test]
fn an_hour_output_becomes_the_golden_2061_frame() {
    let v = aggregate(7, &hour());
    assert_eq!(v.interval, Interval::Hour);
    let f = upload_frame(&v, MN, "20260101090000456".into(), &header());
    assert_eq!(
        codec::build(&f).unwrap(),
        vec![codec::tests::HOUR_2061.to_owned()]
    );
}

#[test]
fn a_minute_without_valid_values_carries_only_its_flag() {
    let v = aggregate(2, &minute("F1/NMHC", T0 + 60_000, None, Flag::D));
    let cp = value_cp(&v, chrono_tz::Asia::Shanghai);
    assert_eq!(cp.render(), "DataTime=20260101080100;a24088-Flag=D");
}

#[test]
fn rows_that_are_not_nmhc_values_are_refused_by_name() {
    let e = Aggregate::from_row(3, "seal_state", "{}").unwrap_err();
    assert!(e.contains("seal_state"), "{e}");
    let e =
        Aggregate::from_row(4, "nmhc_minute", "{\"analyzer\":\"a\",\"flag\":\"N\"}").unwrap_err();
    assert!(e.contains("no start time"), "{e}");
}

fn request(cn: &str, cp: Cp) -> Frame {
    Frame {
        qn: "20260101100000001".into(),
        st: "27".into(),
        cn: cn.into(),
        pw: "123456".into(),
        mn: MN.into(),
        flag: Flags::upload(VERSION_2017),
        packet: None,
        cp,
    }
}

fn mns() -> Vec<(String, String)> {
    vec![("F1/NMHC".into(), MN.into())]
}

#[test]
fn requests_are_classified_and_bad_ones_refused() {
    let tz = chrono_tz::Asia::Shanghai;
    let history = request(
        "2051",
        Cp::new().with_item([
            ("BeginTime", "20260101080000"),
            ("EndTime", "20260101080200"),
        ]),
    );
    assert_eq!(
        classify(&history, "123456", &mns(), tz),
        Request::History {
            interval: Interval::Minute,
            analyzer: "F1/NMHC".into(),
            from_ms: T0,
            to_ms: T0 + 120_000,
        }
    );
    // A week of minutes is refused (request refused): the platform asks for days.
    let week = request(
        "2051",
        Cp::new().with_item([
            ("BeginTime", "20260101080000"),
            ("EndTime", "20260108080000"),
        ]),
    );
    assert_eq!(classify(&week, "123456", &mns(), tz), Request::Refuse(2));
    assert_eq!(classify(&history, "654321", &mns(), tz), Request::Refuse(3));
    let mut other_mn = history.clone();
    other_mn.mn = "X".into();
    assert_eq!(
        classify(&other_mn, "123456", &mns(), tz),
        Request::Refuse(4)
    );
    let backwards = request(
        "2061",
        Cp::new().with_item([
            ("BeginTime", "20260101090000"),
            ("EndTime", "20260101080000"),
        ]),
    );
    assert_eq!(
        classify(&backwards, "123456", &mns(), tz),
        Request::Refuse(2)
    );
    assert_eq!(
        classify(&request("3020", Cp::new()), "123456", &mns(), tz),
        Request::Refuse(8)
    );
    assert_eq!(
        classify(&request("1011", Cp::new()), "123456", &mns(), tz),
        Request::GetTime
    );
}

#[test]
fn history_is_answered_with_9011_the_values_and_9012() {
    let req = request("2051", Cp::new());
    let values = vec![
        aggregate(1, &minute("F1/NMHC", T0, Some(1.5), Flag::N)),
        aggregate(2, &minute("F1/NMHC", T0 + 60_000, Some(2.0), Flag::N)),
    ];
    let frames = history_answer(&req, &values, &header());
    let cns: Vec<&str> = frames.iter().map(|f| f.cn.as_str()).collect();
    assert_eq!(cns, ["9011", "2051", "2051", "9012"]);
    assert!(frames.iter().all(|f| f.qn == req.qn && !f.flag.ack));
    assert_eq!(frames[0].cp.get("QnRtn"), Some("1"));
    assert_eq!(frames[2].cp.get("DataTime"), Some("20260101080100"));
    assert_eq!(frames[3].cp.get("ExeRtn"), Some("1"));
    let none = history_answer(&req, &[], &header());
    assert_eq!(none[1].cp.get("ExeRtn"), Some("100"));
    // More rows than one answer gives (values recomputed): the first are sent.
    let many: Vec<_> = (0..crate::uplink::hj212::guard::MAX_HISTORY_ROWS as i64 + 10)
        .map(|i| {
            aggregate(
                i + 1,
                &minute("F1/NMHC", T0 + i * 60_000, Some(1.0), Flag::N),
            )
        })
        .collect();
    let capped = history_answer(&req, &many, &header());
    assert_eq!(
        capped.len(),
        crate::uplink::hj212::guard::MAX_HISTORY_ROWS + 2
    );
}

#[test]
fn time_get_answers_local_time_and_time_set_is_recorded_not_applied() {
    let h = header();
    let get = request("1011", Cp::new());
    let (frames, draft) = time_answer(&get, &Request::GetTime, T0 + 1_500, "prov", &h);
    assert!(draft.is_none());
    assert_eq!(frames[1].cp.get("SystemTime"), Some("20260101080001"));
    assert_eq!(frames[2].cp.get("ExeRtn"), Some("1"));
    let set = request(
        "1012",
        Cp::new().with_item([("SystemTime", "20260101080100")]),
    );
    let what = classify(&set, "123456", &mns(), h.tz);
    assert_eq!(what, Request::SetTime("20260101080100".into()));
    let (frames, draft) = time_answer(&set, &what, T0, "prov", &h);
    assert_eq!(frames[1].cp.get("ExeRtn"), Some("2"));
    let body = draft.unwrap();
    assert_eq!(body["offset_ms"], 60_000, "{body}");
    assert_eq!(body["applied"], false, "{body}");
}

async fn next_frame(
    sock: &mut (impl tokio::io::AsyncRead + Unpin),
    reader: &mut FrameReader,
) -> Frame {
    let mut buf = [0u8; 2048];
    loop {
        if let Some(f) = reader.next_frame() {
            return f.unwrap();
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .expect("a frame within 10 s")
            .unwrap();
        assert!(n > 0, "agent closed the connection");
        reader.push(&buf[..n]);
    }
}

async fn send(sock: &mut (impl tokio::io::AsyncWrite + Unpin), f: &Frame) {
    for p in codec::build(f).unwrap() {
        sock.write_all(p.as_bytes()).await.unwrap();
    }
}

/// The store's writer for an uplink test (commits every 50 ms).
fn writer_of(store: Store) -> (StoreHandle, tokio::task::JoinHandle<Store>) {
    let limits = Limits {
        raw_retention: Duration::from_secs(86_400),
        disk_budget_bytes: 1 << 30,
        evidence_retention: Duration::from_secs(1095 * 86_400),
        compact_every: crate::store::COMPACT_EVERY,
        disk_reserve_bytes: 0,
    };
    spawn_writer(store, Vec::new(), Duration::from_millis(50), limits)
}

/// A database in `dir` holding one NMHC minute of F1/NMHC, and its writer.
fn one_minute_stored(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    StoreHandle,
    tokio::task::JoinHandle<Store>,
) {
    let db = dir.join("site.db");
    let mut store = Store::open(&db).unwrap();
    store
        .append(&[], &[minute("F1/NMHC", T0, Some(1.5), Flag::N)], &[])
        .unwrap();
    let (handle, writer) = writer_of(store);
    (db, handle, writer)
}

/// A platform at `address` with PW 123456, ST 27 and the test MNs.
fn platform(name: &str, address: String, timeout_ms: u64, retries: u32) -> Hj212UplinkConfig {
    Hj212UplinkConfig {
        name: name.into(),
        address,
        pw: "123456".into(),
        st: "27".into(),
        version: VERSION_2017,
        timeout: Duration::from_millis(timeout_ms),
        retries,
        reconnect_max: Duration::from_secs(1),
        realtime: None,
        mn: mns(),
    }
}

#[tokio::test]
async fn a_session_retries_with_the_same_qn_advances_the_cursor_and_answers_requests() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("site.db");
    let mut store = Store::open(&db).unwrap();
    store
        .enable_evidence("s", ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
        .unwrap();
    let outputs = vec![
        minute("F1/NMHC", T0, Some(1.5), Flag::N),
        minute("F2/OTHER", T0, Some(9.0), Flag::N),
        minute("F1/NMHC", T0 + 60_000, None, Flag::D),
        hour(),
    ];
    store.append(&[], &outputs, &[]).unwrap();
    let (handle, writer) = writer_of(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = platform("prov", listener.local_addr().unwrap().to_string(), 300, 3);
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Hj212Uplink::new(config, chrono_tz::Asia::Shanghai, &db, handle.clone()).run(stop.clone()),
    );
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut reader = FrameReader::new();
    // First upload: not answered, so it comes again with the same QN.
    let first = next_frame(&mut sock, &mut reader).await;
    let again = next_frame(&mut sock, &mut reader).await;
    assert_eq!(first, again);
    assert_eq!((first.cn.as_str(), first.flag.bits()), ("2051", 5));
    assert_eq!(first.cp.get("DataTime"), Some("20260101080000"));
    assert_eq!(first.cp.get("a24088-Avg"), Some("1.500"));
    let mut got = vec![first.clone()];
    send(&mut sock, &Frame::data_response(&first, VERSION_2017)).await;
    // The rest, in order, the other analyzer's value passed over.
    while got.len() < 3 {
        let f = next_frame(&mut sock, &mut reader).await;
        if got.last().is_some_and(|g| g.qn == f.qn) {
            continue;
        }
        send(&mut sock, &Frame::data_response(&f, VERSION_2017)).await;
        got.push(f);
    }
    let cns: Vec<&str> = got.iter().map(|f| f.cn.as_str()).collect();
    assert_eq!(cns, ["2051", "2051", "2061"]);
    assert_eq!(got[1].cp.render(), "DataTime=20260101080100;a24088-Flag=D");
    assert!(got.iter().all(|f| f.mn == MN));
    // History.
    let req = request(
        "2051",
        Cp::new().with_item([
            ("BeginTime", "20260101080000"),
            ("EndTime", "20260101080100"),
        ]),
    );
    send(&mut sock, &req).await;
    let mut answer = Vec::new();
    loop {
        let f = next_frame(&mut sock, &mut reader).await;
        let done = f.cn == "9012";
        answer.push(f);
        if done {
            break;
        }
    }
    let cns: Vec<&str> = answer.iter().map(|f| f.cn.as_str()).collect();
    assert_eq!(cns, ["9011", "2051", "2051", "9012"]);
    // Time set: refused, recorded.
    send(
        &mut sock,
        &request(
            "1012",
            Cp::new().with_item([("SystemTime", "20260101080100")]),
        ),
    )
    .await;
    let r1 = next_frame(&mut sock, &mut reader).await;
    let r2 = next_frame(&mut sock, &mut reader).await;
    assert_eq!((r1.cn.as_str(), r2.cn.as_str()), ("9011", "9012"));
    assert_eq!(r2.cp.get("ExeRtn"), Some("2"));
    stop.cancel();
    task.await.unwrap();
    handle.flush().await.unwrap();
    drop(handle);
    writer.await.unwrap();
    let store = Store::open_read_only(&db).unwrap();
    assert_eq!(store.uplink_cursor("hj212:prov").unwrap(), 4);
    let set = store
        .last_evidence_of("platform_time_set")
        .unwrap()
        .unwrap();
    assert_eq!(set.subject, "prov");
}

#[tokio::test]
async fn an_unanswering_platform_is_dropped_and_the_value_resent_on_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (db, handle, writer) = one_minute_stored(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = platform("p", listener.local_addr().unwrap().to_string(), 100, 2);
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Hj212Uplink::new(config, chrono_tz::Asia::Shanghai, &db, handle.clone()).run(stop.clone()),
    );
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut reader = FrameReader::new();
    let first = next_frame(&mut sock, &mut reader).await;
    for _ in 0..2 {
        assert_eq!(next_frame(&mut sock, &mut reader).await, first);
    }
    // 1 send + 2 retries unanswered: the agent hangs up and connects again.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "connection closed");
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut reader = FrameReader::new();
    let resent = next_frame(&mut sock, &mut reader).await;
    assert_eq!(resent.cp, first.cp, "the same value again");
    assert_ne!(resent.qn, first.qn, "a new message");
    stop.cancel();
    task.await.unwrap();
    drop(handle);
    writer.await.unwrap();
    let store = Store::open_read_only(&db).unwrap();
    assert_eq!(
        store.uplink_cursor("hj212:p").unwrap(),
        0,
        "nothing acknowledged"
    );
}

#[test]
fn the_platform_config_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/profiles");
    let text = format!(
        r#"profiles_dir = "{}"
[site]
id = "x"
name = "x"
permit_number = "1"
permit_class = "key"
[[buses]]
name = "b"
type = "tcp"
address = "127.0.0.1:5020"
[[devices]]
name = "a"
bus = "b"
unit_id = 1
profile = "nmhc-analyzer"
[[furnaces]]
name = "F1"
[[furnaces.analyzers]]
name = "NMHC"
device = "a"
[[uplink.hj212]]
name = "prov"
address = "nohost"
pw = "12;4"
st = 5
version = "2025"
timeout_s = 0
mn = {{ "F1/NMHC" = "{MN}", "F2/X" = "A;B" }}
[[uplink.hj212]]
name = "prov"
address = "10.0.0.1:8800"
pw = "123456"
version = "000001"
mn = {{ "F1/NMHC" = "M2" }}
"#,
        profiles.display()
    );
    let path = dir.path().join("site.toml");
    std::fs::write(&path, text).unwrap();
    let crate::config::ConfigError::Invalid(issues) = crate::config::load(&path).unwrap_err()
    else {
        panic!("expected problems");
    };
    let keys: Vec<(Option<usize>, &str)> =
        issues.iter().map(|i| (i.line, i.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            (Some(23), "uplink.hj212[0].address"),
            (Some(24), "uplink.hj212[0].pw"),
            (Some(25), "uplink.hj212[0].st"),
            (Some(26), "uplink.hj212[0].version"),
            (Some(27), "uplink.hj212[0].timeout_s"),
            (Some(28), "uplink.hj212[0].mn.F2/X"),
            (Some(28), "uplink.hj212[0].mn.F2/X"),
            (Some(30), "uplink.hj212[1].name"),
        ]
    );
    // The second entry alone is fine: defaults filled in.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .split("[[uplink.hj212]]")
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join("[[uplink.hj212]]");
    std::fs::write(&path, fixed).unwrap();
    let config = crate::config::load(&path).unwrap();
    let p = &config.hj212_uplinks[0];
    assert_eq!((p.st.as_str(), p.version, p.retries), ("27", 1, 3));
    assert_eq!(p.timeout, Duration::from_secs(10));
    assert_eq!(p.mn, [("F1/NMHC".to_owned(), "M2".to_owned())]);
}

#[test]
fn other_pollutants_travel_in_the_same_frame_after_nmhc() {
    let row = serde_json::json!({
        "kind": "nmhc_minute", "analyzer": "F1/NMHC", "minute_ms": T0, "avg": 1.5, "min": 1.2, "max": 1.8, "flag": "N",
        "samples": 12, "ruleset": "r",
        "others": [
            { "code": "a05002", "avg": 2.1, "min": 2.0, "max": 2.2, "flag": "N", "valid": 12 },
            { "code": "a24087", "avg": null, "min": null, "max": null, "flag": "D", "valid": 0 }
        ]
    });
    let value = Aggregate::from_row(7, "nmhc_minute", &row.to_string()).unwrap();
    assert_eq!(value.others.len(), 2);
    let text = value_cp(&value, chrono_tz::Asia::Shanghai).render();
    assert!(
        text.ends_with(";a24088-Min=1.200,a24088-Avg=1.500,a24088-Max=1.800,a24088-Flag=N;a05002-Min=2.000,a05002-Avg=2.100,a05002-Max=2.200,a05002-Flag=N;a24087-Flag=D"),
        "{text}"
    );
}

#[test]
fn a_realtime_cp_carries_rtd_and_flag_of_each_pollutant() {
    use crate::model::{Fault, Outcome, PointId, Reading};
    let nmhc = Reading::new(T0, PointId(0), Outcome::Value(1.2346), (None, None));
    let methane = Reading::new(T0, PointId(1), Outcome::Fault(Fault::Timeout), (None, None));
    let cp = realtime_cp(
        &[
            ("a24088", Some(nmhc)),
            ("a05002", Some(methane)),
            ("a24087", None),
        ],
        T0,
        chrono_tz::Asia::Shanghai,
    );
    assert_eq!(
        cp.render(),
        "DataTime=20260101080000;a24088-Rtd=1.235,a24088-Flag=N;a05002-Flag=B"
    );
}

/// A session of platform "pipe" (acknowledgement timeout `timeout_ms`, 5 retries) over an
/// in-memory pipe, from position 0 with one NMHC minute stored: the platform's end, the session
/// (its end and position), the store handle and its writer.
#[allow(clippy::type_complexity)]
fn session_over_a_pipe(
    dir: &std::path::Path,
    timeout_ms: u64,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<(session::End, Option<i64>)>,
    StoreHandle,
    tokio::task::JoinHandle<Store>,
) {
    let (db, handle, writer) = one_minute_stored(dir);
    let config = platform("pipe", "unused:1".into(), timeout_ms, 5);
    let mut uplink = Hj212Uplink::new(config, chrono_tz::Asia::Shanghai, &db, handle.clone());
    let (ours, platform) = tokio::io::duplex(8192);
    let stop = CancellationToken::new();
    let session = tokio::spawn(async move {
        let mut acked = Some(0);
        let end = uplink.session(ours, &stop, &mut acked).await;
        (end, acked)
    });
    (platform, session, handle, writer)
}

/// The session is generic over its byte stream: here an in-memory pipe. A 9014 for another QN
/// does not count; the value is resent with its QN, and only the matching 9014 moves the
/// position; a platform that hangs up ends the session as lost.
#[tokio::test]
async fn a_session_over_an_in_memory_pipe_counts_only_the_matching_9014() {
    let dir = tempfile::tempdir().unwrap();
    let (mut platform, session, handle, writer) = session_over_a_pipe(dir.path(), 200);
    let mut reader = FrameReader::new();
    let first = next_frame(&mut platform, &mut reader).await;
    let mut wrong = Frame::data_response(&first, VERSION_2017);
    wrong.qn = "20260101080000999".into();
    send(&mut platform, &wrong).await;
    let again = next_frame(&mut platform, &mut reader).await;
    assert_eq!(again, first, "resent with the same QN");
    send(&mut platform, &Frame::data_response(&first, VERSION_2017)).await;
    // Hang up at once: frames already sent reach the session before the end of the stream.
    drop(platform);
    let (end, acked) = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends when the platform hangs up")
        .unwrap();
    assert!(
        matches!(end, session::End::Lost(session::Lost::Closed)),
        "{end:?}"
    );
    assert_eq!(acked, Some(1));
    drop(handle);
    writer.await.unwrap();
}

#[tokio::test]
async fn a_9014_with_a_wrong_pw_or_mn_is_refused_and_never_taken_as_an_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let (mut platform, session, handle, writer) = session_over_a_pipe(dir.path(), 300);
    let mut reader = FrameReader::new();
    let first = next_frame(&mut platform, &mut reader).await;
    for (pw, mn, qn_rtn) in [
        ("WRONG", first.mn.as_str(), "3"),
        ("123456", "NOTMINE", "4"),
    ] {
        let mut forged = Frame::data_response(&first, VERSION_2017);
        forged.pw = pw.into();
        forged.mn = mn.into();
        send(&mut platform, &forged).await;
        let answer = next_frame(&mut platform, &mut reader).await;
        assert_eq!(
            (answer.cn.as_str(), answer.cp.get("QnRtn")),
            ("9011", Some(qn_rtn))
        );
    }
    // Still in flight: resent with its QN, then acknowledged properly.
    let again = next_frame(&mut platform, &mut reader).await;
    assert_eq!(again, first);
    drop(platform);
    let (_, acked) = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("the session ends when the platform hangs up")
        .unwrap();
    assert_eq!(acked, Some(0), "a forged 9014 moved the position");
    drop(handle);
    writer.await.unwrap();
}
