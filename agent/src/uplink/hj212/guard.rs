//! What a platform may make the uplink do. Every frame from a platform is outside input: it
//! speaks for the platform only with the platform's PW and one of our MNs, it may ask only so
//! often, a history answer is only so long, and what it makes us seal as evidence is coalesced.
//! Pure: time is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::codec::Frame;
use super::messages::Interval;
use crate::evidence::Draft;

/// Checks a frame's PW and MN: the analyzer whose MN it names, or the `QnRtn` to refuse it
/// with (3: wrong PW, 4: unknown MN, HJ 212-2017 table 8).
pub fn authenticate<'a>(
    frame: &Frame,
    pw: &str,
    mn: &'a [(String, String)],
) -> Result<&'a str, u32> {
    if frame.pw != pw {
        return Err(3);
    }
    mn.iter()
        .find(|(_, m)| *m == frame.mn)
        .map(|(analyzer, _)| analyzer.as_str())
        .ok_or(4)
}

/// Requests a platform may make in a burst, and how many a second after that.
pub const REQUEST_BURST: u32 = 20;
/// See [`REQUEST_BURST`].
pub const REQUESTS_PER_S: u32 = 2;

/// A token bucket over the platform's requests (acknowledgements of our uploads are not
/// requests and are not counted).
#[derive(Debug, Clone)]
pub struct RequestBudget {
    tokens: f64,
    at: Option<Instant>,
}

impl Default for RequestBudget {
    fn default() -> Self {
        RequestBudget {
            tokens: f64::from(REQUEST_BURST),
            at: None,
        }
    }
}

impl RequestBudget {
    /// Whether a request arriving at `now` may be answered.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let refill =
                now.saturating_duration_since(at).as_secs_f64() * f64::from(REQUESTS_PER_S);
            self.tokens = (self.tokens + refill).min(f64::from(REQUEST_BURST));
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Longest span one history request is answered for: a day of minute values (1,440 rows per
/// analyzer), 31 days of hourly ones (744 rows).
pub fn max_history_span(interval: Interval) -> Duration {
    match interval {
        Interval::Minute => Duration::from_secs(86_400),
        Interval::Hour => Duration::from_secs(31 * 86_400),
    }
}

/// Most rows in one history answer (a span may hold more than its minutes when values were
/// recomputed).
pub const MAX_HISTORY_ROWS: usize = 1_500;

/// Whether a history request for `[from_ms, to_ms]` (both ends included, as the platform
/// means them: 00:00 to 24:00 is a day) is within [`max_history_span`]. A longer one is
/// refused (9011 `QnRtn=2`, request refused) rather than answered in part: HJ 212-2017 has no
/// way to say "partly answered", and the platform then asks for shorter spans.
pub fn history_span_ok(interval: Interval, from_ms: i64, to_ms: i64) -> bool {
    to_ms.saturating_sub(from_ms) <= max_history_span(interval).as_millis() as i64
}

/// How long one kind of platform-caused evidence is coalesced.
pub const COALESCE_WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone)]
struct Window {
    until_ms: i64,
    subject: String,
    /// Requests taken since the window opened and not yet sealed.
    suppressed: u64,
    first_ms: i64,
    last_ms: i64,
    last: serde_json::Value,
}

/// Evidence a platform's requests cause, at most one record per kind per minute: the first
/// request of a quiet spell is sealed at once; later ones in the minute are counted and sealed
/// as one record at the minute's end with the count, the first and last time and the last
/// request's details (under a sustained flood: one record a minute).
#[derive(Debug, Clone, Default)]
pub struct Coalescer {
    open: BTreeMap<String, Window>,
}

impl Coalescer {
    /// A request at `now_ms` that would seal `body` as a `kind` record about `subject`; the
    /// drafts to seal now.
    pub fn offer(
        &mut self,
        now_ms: i64,
        kind: &str,
        subject: &str,
        body: serde_json::Value,
    ) -> Vec<Draft> {
        let mut out = self.due(now_ms);
        match self.open.get_mut(kind) {
            Some(w) => {
                if w.suppressed == 0 {
                    w.first_ms = now_ms;
                }
                w.suppressed += 1;
                w.last_ms = now_ms;
                w.last = body;
            }
            None => {
                out.push(Draft::new(
                    now_ms,
                    kind,
                    subject,
                    &with_count(body, 1, now_ms, now_ms),
                ));
                self.open.insert(
                    kind.to_owned(),
                    Window {
                        until_ms: now_ms.saturating_add(COALESCE_WINDOW_MS),
                        subject: subject.to_owned(),
                        suppressed: 0,
                        first_ms: now_ms,
                        last_ms: now_ms,
                        last: serde_json::Value::Null,
                    },
                );
            }
        }
        out
    }

    /// The drafts of windows ended by `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Vec<Draft> {
        let mut out = Vec::new();
        self.open.retain(|kind, w| {
            if now_ms < w.until_ms {
                return true;
            }
            if w.suppressed == 0 {
                return false;
            }
            let body = with_count(
                std::mem::take(&mut w.last),
                w.suppressed,
                w.first_ms,
                w.last_ms,
            );
            out.push(Draft::new(now_ms, kind, &w.subject, &body));
            // Still busy: the next minute coalesces too.
            w.suppressed = 0;
            w.until_ms = now_ms.saturating_add(COALESCE_WINDOW_MS);
            true
        });
        out
    }

    /// When [`Coalescer::due`] has something next, ms.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.open
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.until_ms)
            .min()
    }

    /// Everything still counted, sealed now (at stop).
    pub fn drain(&mut self, now_ms: i64) -> Vec<Draft> {
        for w in self.open.values_mut() {
            w.until_ms = w.until_ms.min(now_ms);
        }
        let out = self.due(now_ms);
        self.open.clear();
        out
    }
}

fn with_count(
    mut body: serde_json::Value,
    count: u64,
    first_ms: i64,
    last_ms: i64,
) -> serde_json::Value {
    if let Some(map) = body.as_object_mut() {
        map.insert("requests".into(), count.into());
        map.insert("first_request_ms".into(), first_ms.into());
        map.insert("last_request_ms".into(), last_ms.into());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(d: &Draft) -> u64 {
        serde_json::from_str::<serde_json::Value>(&d.body).unwrap()["requests"]
            .as_u64()
            .unwrap()
    }

    #[test]
    fn a_flood_of_time_sets_is_one_record_a_minute_with_the_count() {
        let mut c = Coalescer::default();
        let body = |i: i64| serde_json::json!({ "qn": i.to_string() });
        let mut sealed = Vec::new();
        // 200 requests in the first second, then one every second for two more minutes.
        for i in 0..200 {
            sealed.extend(c.offer(i * 5, "platform_time_set", "p", body(i)));
        }
        for s in 1..=120 {
            let at = s * 1000;
            sealed.extend(c.due(at));
            sealed.extend(c.offer(at, "platform_time_set", "p", body(1000 + s)));
        }
        sealed.extend(c.drain(121_500));
        let counts: Vec<u64> = sealed.iter().map(requests).collect();
        assert_eq!(
            counts.iter().sum::<u64>(),
            320,
            "every request counted: {counts:?}"
        );
        assert!(sealed.len() <= 4, "{counts:?}");
        assert_eq!(counts[0], 1, "the first request is sealed at once");
        let last: serde_json::Value = serde_json::from_str(&sealed.last().unwrap().body).unwrap();
        assert_eq!(last["qn"], "1120", "the last request's details are kept");
    }

    #[test]
    fn a_lone_request_is_sealed_at_once_and_nothing_after() {
        let mut c = Coalescer::default();
        assert_eq!(c.offer(0, "k", "p", serde_json::json!({})).len(), 1);
        assert_eq!(c.next_due_ms(), None);
        assert!(c.due(COALESCE_WINDOW_MS).is_empty());
        assert_eq!(
            c.offer(COALESCE_WINDOW_MS + 1, "k", "p", serde_json::json!({}))
                .len(),
            1
        );
    }

    #[test]
    fn requests_beyond_the_burst_wait_for_the_refill() {
        let t0 = Instant::now();
        let mut b = RequestBudget::default();
        let taken = (0..100).filter(|_| b.allow(t0)).count();
        assert_eq!(taken, REQUEST_BURST as usize);
        assert!(!b.allow(t0 + Duration::from_millis(100)));
        assert!(b.allow(t0 + Duration::from_millis(600)));
    }

    #[test]
    fn a_day_of_minutes_is_answered_and_more_refused() {
        assert!(
            history_span_ok(Interval::Minute, 0, 86_400_000),
            "00:00 to 24:00"
        );
        assert!(!history_span_ok(Interval::Minute, 0, 86_400_000 + 60_000));
        assert!(history_span_ok(Interval::Hour, 0, 10 * 86_400_000));
        assert!(!history_span_ok(Interval::Hour, 0, 32 * 86_400_000));
        assert!(history_span_ok(Interval::Minute, i64::MAX - 5, i64::MAX));
    }
}
