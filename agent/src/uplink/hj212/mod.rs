//! The HJ 212-2017 uplink: NMHC minute (2051) and hourly (2061) values to an environmental
//! platform over TCP, one task per `[[uplink.hj212]]` platform.
//!
//! # What is sent
//!
//! The rules engine's `nmhc_minute` and `nmhc_hour` outputs (the `rule_outputs` table), in id
//! order, one frame per value and analyzer, to the analyzer's own MN (analyzers without an MN for
//! this platform are skipped). CP: `DataTime` (start of the minute or hour, the site's local
//! time) and `a24088-Min/-Avg/-Max` (mg/m³, 3 decimals; omitted when the engine had no valid
//! value) with `a24088-Flag` (N, T, C, M, F, D or B, as the engine flagged it), then the same fields for each
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
//!   (`ExeRtn=100` when there is no data); a span longer than a day of minutes or 31 days of
//!   hours is refused with 9011 `QnRtn=2`, and an answer holds at most 1,500 rows.
//! - Every frame's PW and MN are checked, acknowledgements (9014) included; requests are
//!   answered within a budget and the evidence they cause is coalesced ([`guard`]).
//! - 1011 (time get): 9011, a 1011 frame with `SystemTime`, 9012.
//! - 1012 (time set): 9011, then 9012 `ExeRtn=2` — the clock is **not** changed (it is kept by
//!   NTP); the request, with the offset it implied, is sealed as a `platform_time_set` evidence
//!   record.
//! - A wrong PW or an unknown MN is refused with 9011 `QnRtn=3` / `QnRtn=4`; another CN with
//!   `QnRtn=8`.

pub mod codec;
pub mod delivery;
pub mod guard;
mod messages;
mod session;

pub use messages::*;

use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::session::{End, Lost};
use crate::backoff::Backoff;
use crate::config::Hj212UplinkConfig;
use crate::store::{SharedReader, Store, StoreError, StoreHandle};
use codec::{cn, Flags, Frame};

/// NMHC (as carbon), HJ 212-2017 pollutant code.
pub const NMHC: &str = "a24088";

/// Values read from the store at a time.
const BATCH: usize = 200;

/// The cursor name of a platform.
pub fn cursor_name(platform: &str) -> String {
    format!("hj212:{platform}")
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

/// Where the live values of real-time (2011) frames come from: the plant state, and per
/// analyzer (`furnace/analyzer`) its points with their pollutant codes (NMHC first).
#[derive(Debug, Clone)]
pub struct LiveValues {
    /// The agent's live state.
    pub state: crate::state::PlantState,
    /// Analyzer → `(pollutant code, point)`.
    pub analyzers: Vec<(String, Vec<(&'static str, crate::model::PointId)>)>,
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
    /// How often the platform may ask (kept across reconnections).
    requests: guard::RequestBudget,
    /// Evidence its requests cause, at most one record per kind a minute.
    coalescer: guard::Coalescer,
    /// Warnings about what the platform sends, one line a minute with a count.
    garbage: crate::telemetry::Quiet,
    refused: crate::telemetry::Quiet,
    dropped: crate::telemetry::Quiet,
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
            requests: guard::RequestBudget::default(),
            coalescer: guard::Coalescer::default(),
            garbage: crate::telemetry::Quiet::new(Duration::from_secs(60)),
            refused: crate::telemetry::Quiet::new(Duration::from_secs(60)),
            dropped: crate::telemetry::Quiet::new(Duration::from_secs(60)),
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
                qn: next_qn(&mut self.last_qn_ms, self.header.tz),
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

    /// Runs until `stop`; then seals what the coalescer still counts.
    pub async fn run(mut self, stop: CancellationToken) {
        self.deliver(&stop).await;
        let drafts = self.coalescer.drain(crate::clock::now_ms());
        if !drafts.is_empty() {
            let _ = self.store.send_evidence(drafts).await;
        }
    }

    async fn deliver(&mut self, stop: &CancellationToken) {
        let stop = stop.clone();
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
                    Ok(Err(e)) => Err(Lost::Connect(e)),
                    Err(_) => Err(Lost::ConnectTimeout(self.config.timeout)),
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
}

/// A QN for now (local time, ms), later than the last one made.
fn next_qn(last_qn_ms: &mut i64, tz: Tz) -> String {
    let now = crate::clock::now_ms().max(*last_qn_ms + 1);
    *last_qn_ms = now;
    codec::qn_of(local(tz, now))
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
