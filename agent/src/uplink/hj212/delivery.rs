//! Delivery to one platform as a sans-I/O state machine: which value goes next, when it is sent
//! again, when the platform is given up on, and how far the acknowledged position has come.
//!
//! The session asks [`Delivery::next_send`] what to do at `now`: load values from the store,
//! send a value's packets, or wait; it reports acknowledgements ([`Delivery::on_ack`]) and
//! deadlines ([`Delivery::on_deadline`]). One value is in flight at a time (stop-and-wait, as
//! HJ 212-2017 6.6 describes for uploads asking for a 9014): it is sent with a QN, resent with
//! the same QN after `timeout` up to `retries` times, and only a 9014 carrying that QN moves
//! [`Delivery::acked`] to it. Values of analyzers the platform does not receive are passed over
//! (the position moves past them without a send). Deterministic: time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::{self, CodecError, Frame};
use super::messages::Aggregate;

/// How long an empty load is trusted before the store is looked at again.
pub const IDLE_POLL: Duration = Duration::from_millis(500);

/// What the session is to do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Read the values after this id from the store and [`Delivery::offer`] them.
    Load {
        /// The acknowledged position.
        after: i64,
    },
    /// Write these packets (the first send of a value).
    Send(Vec<String>),
    /// A value that cannot be framed was passed over (the position moved past it).
    Unframable {
        /// Its `rule_outputs` id.
        id: i64,
        /// Why.
        error: CodecError,
    },
    /// Nothing before this instant (unless a frame arrives).
    Wait(Instant),
}

/// The platform did not acknowledge a value in time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no 9014 answer to QN {qn} after {sends} sends {timeout:?} apart")]
pub struct NoAck {
    /// The QN sent.
    pub qn: String,
    /// How many times it was sent.
    pub sends: u32,
    /// The wait after each send.
    pub timeout: Duration,
}

#[derive(Debug)]
struct InFlight {
    id: i64,
    qn: String,
    packets: Vec<String>,
    sends: u32,
    deadline: Instant,
}

/// The delivery state of one connection to one platform.
#[derive(Debug)]
pub struct Delivery {
    acked: i64,
    queue: VecDeque<Aggregate>,
    in_flight: Option<InFlight>,
    next_load: Instant,
    timeout: Duration,
    retries: u32,
}

impl Delivery {
    /// Delivery from the acknowledged position `acked`; each send waits `timeout` for its 9014
    /// and is repeated up to `retries` times.
    pub fn new(acked: i64, timeout: Duration, retries: u32, now: Instant) -> Self {
        Delivery {
            acked,
            queue: VecDeque::new(),
            in_flight: None,
            next_load: now,
            timeout,
            retries,
        }
    }

    /// The last value acknowledged or passed over.
    pub fn acked(&self) -> i64 {
        self.acked
    }

    /// The QN in flight, if any.
    pub fn in_flight_qn(&self) -> Option<&str> {
        self.in_flight.as_ref().map(|f| f.qn.as_str())
    }

    /// Values loaded after [`Step::Load`]; none means "all delivered": look again after
    /// [`IDLE_POLL`]. Values at or before the position are ignored.
    pub fn offer(&mut self, values: Vec<Aggregate>, now: Instant) {
        if values.is_empty() {
            self.next_load = now + IDLE_POLL;
        }
        let after = self.queue.back().map_or(self.acked, |v| v.id);
        self.queue
            .extend(values.into_iter().filter(|v| v.id > after));
    }

    /// What to do at `now`. `frame_of` gives the upload frame of a value, or `None` when this
    /// platform does not receive its analyzer (the value is passed over).
    pub fn next_send(
        &mut self,
        now: Instant,
        frame_of: &mut dyn FnMut(&Aggregate) -> Option<Frame>,
    ) -> Step {
        if let Some(f) = &self.in_flight {
            return Step::Wait(f.deadline);
        }
        while let Some(v) = self.queue.front() {
            let id = v.id;
            let Some(frame) = frame_of(v) else {
                self.acked = id;
                self.queue.pop_front();
                continue;
            };
            return match codec::build(&frame) {
                Ok(packets) => {
                    self.in_flight = Some(InFlight {
                        id,
                        qn: frame.qn,
                        packets: packets.clone(),
                        sends: 1,
                        deadline: now + self.timeout,
                    });
                    Step::Send(packets)
                }
                Err(error) => {
                    self.acked = id;
                    self.queue.pop_front();
                    Step::Unframable { id, error }
                }
            };
        }
        if now >= self.next_load {
            Step::Load { after: self.acked }
        } else {
            Step::Wait(self.next_load)
        }
    }

    /// A 9014 with `qn`: the position it moves to, if it acknowledges the value in flight.
    pub fn on_ack(&mut self, qn: &str) -> Option<i64> {
        if self.in_flight.as_ref()?.qn != qn {
            return None;
        }
        let f = self.in_flight.take()?;
        self.queue.pop_front();
        self.acked = f.id;
        Some(f.id)
    }

    /// The packets to send again at `now` if the value in flight is due for a resend, or the
    /// reason to give up when it was sent `retries + 1` times without an answer.
    pub fn on_deadline(&mut self, now: Instant) -> Result<Option<Vec<String>>, NoAck> {
        let Some(f) = &mut self.in_flight else {
            return Ok(None);
        };
        if now < f.deadline {
            return Ok(None);
        }
        if f.sends > self.retries {
            return Err(NoAck {
                qn: f.qn.clone(),
                sends: f.sends,
                timeout: self.timeout,
            });
        }
        f.sends += 1;
        f.deadline = now + self.timeout;
        Ok(Some(f.packets.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(id: i64, analyzer: &str) -> Aggregate {
        Aggregate {
            id,
            interval: super::super::Interval::Minute,
            analyzer: analyzer.to_owned(),
            start_ms: 1_764_547_200_000 + id * 60_000,
            min: Some(1.0),
            avg: Some(2.0),
            max: Some(3.0),
            flag: "N".to_owned(),
            others: Vec::new(),
        }
    }

    fn frames_for<'a>(
        analyzer: &'a str,
        qns: &'a mut u32,
    ) -> impl FnMut(&Aggregate) -> Option<Frame> + 'a {
        move |v| {
            (v.analyzer == analyzer).then(|| {
                *qns += 1;
                let h = super::super::Header {
                    pw: "123456".to_owned(),
                    st: "27".to_owned(),
                    version: codec::VERSION_2017,
                    tz: chrono_tz::Asia::Shanghai,
                };
                super::super::upload_frame(v, "MN1", format!("2026120100000000{:01}", *qns), &h)
            })
        }
    }

    #[test]
    fn a_value_is_resent_with_its_qn_until_acknowledged_and_only_its_qn_moves_the_position() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut d = Delivery::new(0, timeout, 2, t0);
        let mut qns = 0;
        let mut frame_of = frames_for("F1/NMHC", &mut qns);
        assert_eq!(d.next_send(t0, &mut frame_of), Step::Load { after: 0 });
        d.offer(vec![value(1, "F1/NMHC"), value(2, "F1/NMHC")], t0);
        let Step::Send(first) = d.next_send(t0, &mut frame_of) else {
            panic!("a send")
        };
        let qn = d.in_flight_qn().unwrap().to_owned();
        // Nothing else goes out while it waits for its answer.
        assert_eq!(d.next_send(t0, &mut frame_of), Step::Wait(t0 + timeout));
        assert_eq!(d.on_deadline(t0 + timeout / 2), Ok(None));
        // A 9014 for another QN changes nothing.
        assert_eq!(d.on_ack("20261201000000999"), None);
        assert_eq!(d.acked(), 0);
        assert_eq!(d.on_deadline(t0 + timeout), Ok(Some(first.clone())));
        assert_eq!(d.in_flight_qn(), Some(qn.as_str()), "the same QN");
        assert_eq!(d.on_ack(&qn), Some(1));
        assert_eq!(d.acked(), 1);
        let Step::Send(second) = d.next_send(t0 + timeout, &mut frame_of) else {
            panic!("the next value")
        };
        assert_ne!(second, first);
        // An acknowledgement comes once: the same QN again moves nothing.
        assert_eq!(d.on_ack(&qn), None);
    }

    #[test]
    fn a_platform_that_never_answers_is_given_up_after_its_retries() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut d = Delivery::new(7, timeout, 1, t0);
        let mut qns = 0;
        let mut frame_of = frames_for("F1/NMHC", &mut qns);
        d.offer(vec![value(8, "F1/NMHC")], t0);
        assert!(matches!(d.next_send(t0, &mut frame_of), Step::Send(_)));
        assert!(matches!(d.on_deadline(t0 + timeout), Ok(Some(_))));
        let err = d.on_deadline(t0 + timeout * 2).unwrap_err();
        assert_eq!(err.sends, 2);
        assert_eq!(d.acked(), 7, "nothing counts as delivered");
    }

    #[test]
    fn values_of_other_analyzers_are_passed_over_and_an_empty_load_waits() {
        let t0 = Instant::now();
        let mut d = Delivery::new(0, Duration::from_secs(5), 1, t0);
        let mut qns = 0;
        let mut frame_of = frames_for("F2/NMHC", &mut qns);
        d.offer(vec![value(1, "F1/NMHC"), value(2, "F1/NMHC")], t0);
        assert_eq!(d.next_send(t0, &mut frame_of), Step::Load { after: 2 });
        assert_eq!(d.acked(), 2);
        d.offer(Vec::new(), t0);
        assert_eq!(d.next_send(t0, &mut frame_of), Step::Wait(t0 + IDLE_POLL));
        assert_eq!(
            d.next_send(t0 + IDLE_POLL, &mut frame_of),
            Step::Load { after: 2 }
        );
        // A load that repeats values already passed is not sent twice.
        d.offer(
            vec![value(2, "F2/NMHC"), value(3, "F2/NMHC")],
            t0 + IDLE_POLL,
        );
        assert!(matches!(
            d.next_send(t0 + IDLE_POLL, &mut frame_of),
            Step::Send(_)
        ));
        let qn = d.in_flight_qn().unwrap().to_owned();
        assert_eq!(d.on_ack(&qn), Some(3));
    }
}
