//! The pipeline's decisions, out of the I/O loop: what a hand-over of polls from the bus tasks
//! becomes (readings with the flags the rules set, rule outputs, evidence drafts for device
//! faults and recoveries), what a window command from a person does, and when the wall clock
//! jumped against the monotonic clock. `run` feeds it and sends what it returns to the store.

use std::time::Duration;

use crate::evidence::Draft;
use crate::model::PointTable;
use crate::model::{Outcome, Reading};
use crate::rules::{Engine, Output, WindowCommand, WindowError};
use crate::state::PlantState;

/// What a hand-over becomes.
#[derive(Debug, Default)]
pub struct Handover {
    /// The readings, flagged by the rules, for the store.
    pub readings: Vec<Reading>,
    /// Rule outputs (sealed as evidence with the readings).
    pub outputs: Vec<Output>,
    /// Evidence of device faults and recoveries.
    pub drafts: Vec<Draft>,
}

/// Watches the wall clock against the monotonic clock: a step larger than the tolerance is a
/// clock jump (an NTP step, a clock set by hand, a clock that was never set). Pure: fed times.
#[derive(Debug, Clone)]
pub struct ClockWatch {
    tolerance_ms: i64,
    /// Wall time and monotonic time at the last look.
    last: Option<(i64, Duration)>,
}

impl ClockWatch {
    /// A watch that reports steps larger than `tolerance_ms`.
    pub fn new(tolerance_ms: i64) -> ClockWatch {
        ClockWatch {
            tolerance_ms,
            last: None,
        }
    }

    /// Looks at the clocks now (`wall_ms`, and `mono` since any fixed start); returns the
    /// wall time expected and the one found if they differ by more than the tolerance.
    pub fn look(&mut self, wall_ms: i64, mono: Duration) -> Option<(i64, i64)> {
        let found = self.last.and_then(|(wall, then)| {
            let elapsed = i64::try_from(mono.saturating_sub(then).as_millis()).unwrap_or(i64::MAX);
            let expected = wall.saturating_add(elapsed);
            (wall_ms.abs_diff(expected) > self.tolerance_ms.unsigned_abs())
                .then_some((expected, wall_ms))
        });
        self.last = Some((wall_ms, mono));
        found
    }
}

/// The pipeline's state between hand-overs.
pub struct Pipeline {
    engine: Engine,
    points: std::sync::Arc<PointTable>,
    state: PlantState,
    device_names: Vec<String>,
    /// Per device: (connected, degraded, answering only with exceptions) as last recorded.
    device_seen: Vec<(bool, bool, bool)>,
    /// Per device: polls in a row whose every read was a Modbus exception, and how many make
    /// it a faulty device (its bus's `degrade_after`).
    exception_streak: Vec<(u32, u32)>,
    clock: ClockWatch,
}

impl Pipeline {
    /// A pipeline around `engine`; `degrade_after[d]` is device `d`'s bus setting.
    pub fn new(
        engine: Engine,
        points: std::sync::Arc<PointTable>,
        state: PlantState,
        device_names: Vec<String>,
        degrade_after: Vec<u32>,
        clock_tolerance_ms: i64,
    ) -> Pipeline {
        state.set_open_windows(engine.open_windows());
        Pipeline {
            engine,
            points,
            state,
            device_seen: vec![(true, false, false); device_names.len()],
            exception_streak: degrade_after.into_iter().map(|d| (0, d.max(1))).collect(),
            device_names,
            clock: ClockWatch::new(clock_tolerance_ms),
        }
    }

    /// The engine (its rule-set version, open windows).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Takes the polls of one hand-over at wall time `wall_ms` and monotonic time `mono`.
    pub fn handover(
        &mut self,
        polls: &mut Vec<Vec<Reading>>,
        wall_ms: i64,
        mono: Duration,
    ) -> Handover {
        let mut out = Handover {
            readings: Vec::with_capacity(polls.iter().map(Vec::len).sum()),
            ..Handover::default()
        };
        if let Some((from, to)) = self.clock.look(wall_ms, mono) {
            tracing::warn!(
                from_ms = from,
                to_ms = to,
                size_ms = to.saturating_sub(from),
                "the wall clock jumped against the monotonic clock"
            );
            out.outputs.extend(self.engine.clock_jump(from, to));
        }
        // Judged first: the engine re-flags readings (C, M, F during calibrations, maintenance
        // and stops; D from fault indicators), and the latest values shown and sent as real-time
        // data must carry those flags, not the poll's.
        for batch in polls.iter_mut() {
            let found = self.engine.ingest(batch);
            log_outputs(&found);
            out.outputs.extend(found);
        }
        let points = self.points.clone();
        let health = self.state.record_polls(polls, |r| {
            points.points.get(r.point.0 as usize).map(|p| p.device)
        });
        for (batch, health) in polls.drain(..).zip(health) {
            if let Some(draft) = self.device_evidence(&batch, health) {
                out.drafts.push(draft);
            }
            out.readings.extend(batch);
        }
        // Once per hand-over, for the status page: the bins that changed, and the outputs.
        self.state
            .note_judgements(&self.engine.take_bin_changes(), &out.outputs);
        out
    }

    /// Carries out a window command at wall time `now_ms`.
    pub fn window(
        &mut self,
        command: &WindowCommand,
        now_ms: i64,
    ) -> Result<Vec<Output>, WindowError> {
        let outputs = match command {
            WindowCommand::Start(w) => self.engine.open_window(w, now_ms, true)?,
            WindowCommand::End { target, by } => self.engine.close_window(target, now_ms, by)?,
        };
        self.state
            .note_judgements(&self.engine.take_bin_changes(), &outputs);
        self.state.set_open_windows(self.engine.open_windows());
        Ok(outputs)
    }

    /// `device_fault` / `device_recovered` records when a device of this batch was degraded,
    /// disconnected or answering only with exceptions for `degrade_after` polls, or is back.
    fn device_evidence(
        &mut self,
        batch: &[Reading],
        health: Option<(bool, bool)>,
    ) -> Option<Draft> {
        let first = batch.first()?;
        let device = self.points.points.get(first.point.0 as usize)?.device;
        let (connected, degraded) = health?;
        let streak = self.exception_streak.get_mut(device)?;
        let only_exceptions = batch
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Exception(_)));
        streak.0 = if only_exceptions {
            streak.0.saturating_add(1)
        } else {
            0
        };
        let refusing = streak.0 >= streak.1;
        let now = (connected, degraded, refusing);
        let before = std::mem::replace(&mut self.device_seen[device], now);
        let healthy = |(c, d, e): (bool, bool, bool)| c && !d && !e;
        match (healthy(before), healthy(now)) {
            (true, false) => {
                let problem = if refusing && connected && !degraded {
                    let codes: Vec<String> = batch
                        .iter()
                        .filter_map(|r| match r.outcome {
                            Outcome::Exception(c) => Some(format!("{:02X}", c.code())),
                            _ => None,
                        })
                        .collect();
                    Some(format!(
                        "answers every read with a Modbus exception (codes {}) for {} polls",
                        codes.join(", "),
                        streak.0
                    ))
                } else {
                    self.state
                        .with_device(device, |h| h.last_error.clone())
                        .flatten()
                };
                Some(Draft::new(
                    first.at_ms,
                    "device_fault",
                    &self.device_names[device],
                    &serde_json::json!({
                        "connected": connected,
                        "degraded": degraded,
                        "exceptions_only": refusing,
                        "problem": problem,
                    }),
                ))
            }
            (false, true) => Some(Draft::new(
                first.at_ms,
                "device_recovered",
                &self.device_names[device],
                &serde_json::json!({}),
            )),
            _ => None,
        }
    }
}

/// Logs what operators should hear about at once.
fn log_outputs(outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::BreachStarted { bin, signature, .. } => {
                tracing::warn!(%bin, ?signature, "seal breach")
            }
            Output::BreachEnded {
                bin, duration_ms, ..
            } => tracing::warn!(%bin, duration_s = duration_ms / 1000, "seal breach ended"),
            Output::NmhcExceedanceStarted {
                analyzer,
                value,
                limit,
                ..
            } => tracing::warn!(%analyzer, value, limit, "NMHC above the single-value limit"),
            Output::NmhcHour {
                analyzer,
                avg: Some(avg),
                exceeded: true,
                hourly_limit,
                ..
            } => {
                tracing::warn!(%analyzer, avg, hourly_limit, "NMHC hourly average above the limit")
            }
            Output::ClockJump { from_ms, to_ms, .. } => {
                tracing::warn!(
                    from_ms,
                    to_ms,
                    "clock jump: the open minute and hour end as interrupted"
                )
            }
            Output::WindowOverdue { target, window, .. } => {
                tracing::warn!(%target, window = window.name(), "a window is open longer than its maximum")
            }
            Output::SealState {
                bin,
                from,
                to,
                reason,
                ..
            } => tracing::debug!(%bin, %from, %to, %reason, "seal state"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_step_against_the_monotonic_clock_is_a_jump_and_drift_is_not() {
        let mut watch = ClockWatch::new(60_000);
        let t0 = 1_767_225_600_000;
        assert_eq!(watch.look(t0, Duration::from_secs(100)), None);
        // A second later on both clocks, with 5 ms of drift: no jump.
        assert_eq!(watch.look(t0 + 1_005, Duration::from_secs(101)), None);
        // The wall clock set forward a year.
        let year = 365 * 86_400_000;
        assert_eq!(
            watch.look(t0 + 2_005 + year, Duration::from_secs(102)),
            Some((t0 + 2_005, t0 + 2_005 + year))
        );
        // And back again.
        assert_eq!(
            watch.look(t0 + 3_005, Duration::from_secs(103)),
            Some((t0 + 3_005 + year, t0 + 3_005))
        );
        assert!(watch.look(i64::MAX, Duration::from_secs(104)).is_some());
        assert!(watch.look(i64::MIN, Duration::ZERO).is_some());
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;
    use crate::model::PointInfo;
    use crate::model::{Fault, PointId};
    use crate::rules::{RuleSettings, RulesConfig};
    use crate::state::DeviceHealth;
    use sealwatch_firmware::modbus::ExceptionCode;

    fn pipeline() -> Pipeline {
        let mut points = PointTable::default();
        points.device_base.push(0);
        for index in 0..2 {
            points.points.push(PointInfo {
                key: format!("meter/p{index}"),
                device: 0,
                index,
                unit: None,
                range: (None, None),
            });
        }
        let state = PlantState::new(
            vec![DeviceHealth {
                name: "meter".into(),
                connected: true,
                ..DeviceHealth::default()
            }],
            2,
            0,
        );
        let rules = RulesConfig::empty(chrono_tz::Asia::Shanghai, RuleSettings::default());
        Pipeline::new(
            Engine::new(&rules),
            std::sync::Arc::new(points),
            state,
            vec!["meter".into()],
            vec![3],
            60_000,
        )
    }

    fn poll(at: i64, outcome: Outcome) -> Vec<Reading> {
        (0..2)
            .map(|p| Reading::new(at, PointId(p), outcome, (None, None)))
            .collect()
    }

    #[test]
    fn a_device_that_answers_only_with_exceptions_is_a_faulty_device_and_recovers() {
        let mut p = pipeline();
        let t0 = 1_767_225_600_000;
        let mut drafts = Vec::new();
        for (k, outcome) in [
            Outcome::Value(1.0),
            Outcome::Exception(ExceptionCode::ServerDeviceFailure),
            Outcome::Exception(ExceptionCode::ServerDeviceFailure),
            Outcome::Exception(ExceptionCode::ServerDeviceFailure),
            Outcome::Exception(ExceptionCode::ServerDeviceFailure),
            Outcome::Value(2.0),
        ]
        .into_iter()
        .enumerate()
        {
            let mut polls = vec![poll(t0 + k as i64 * 1000, outcome)];
            drafts.extend(p.handover(&mut polls, t0, Duration::ZERO).drafts);
        }
        let kinds: Vec<&str> = drafts.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec!["device_fault", "device_recovered"],
            "after 3 polls of exceptions"
        );
        assert!(
            drafts[0]
                .body
                .contains("answers every read with a Modbus exception (codes 04, 04)"),
            "{}",
            drafts[0].body
        );
        assert_eq!(drafts[0].at_ms, t0 + 3000, "the third poll of exceptions");
        // A communication fault is not an exception streak.
        let mut polls = vec![poll(t0 + 9000, Outcome::Fault(Fault::Timeout))];
        assert!(p.handover(&mut polls, t0, Duration::ZERO).drafts.is_empty());
    }
}

#[cfg(test)]
mod latest_tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::model::Flag;

    const SITE: &str = r#"[site]
id = "t"
name = "T"
permit_number = "X"
permit_class = "key"

[[buses]]
name = "top"
type = "tcp"
address = "127.0.0.1:5020"

[[devices]]
name = "nmhc"
bus = "top"
unit_id = 9
profile = "analyzer"

[[furnaces]]
name = "F1"

[[furnaces.analyzers]]
name = "A1"
device = "nmhc"
"#;

    const ANALYZER: &str = r#"[[points]]
name = "nmhc"
table = "holding"
address = 0
type = "f32"
range_max = 100.0

[[points]]
name = "status"
table = "holding"
address = 2
status = [{ values = [0], state = "normal" }, { values = [1], state = "calibration" }]
"#;

    /// The latest values the page shows and HJ 212 real-time frames send carry the engine's
    /// flags: span gas during a calibration is C there too, not the poll's N.
    #[test]
    fn the_latest_values_carry_the_flags_the_rules_gave() {
        let profiles = BTreeMap::from([("analyzer".to_owned(), ANALYZER.to_owned())]);
        let config =
            crate::config::load_str(Path::new("/plant/site.toml"), SITE.into(), &profiles).unwrap();
        let points = std::sync::Arc::new(config.point_table());
        let rules = config.rules_config(&points);
        let state = PlantState::new(
            vec![crate::state::DeviceHealth {
                name: "nmhc".into(),
                connected: true,
                ..Default::default()
            }],
            points.points.len(),
            0,
        );
        let mut pipeline = Pipeline::new(
            Engine::new(&rules),
            points.clone(),
            state.clone(),
            vec!["nmhc".into()],
            vec![3],
            60_000,
        );
        let nmhc = points.by_key("nmhc/nmhc").unwrap();
        let status = points.by_key("nmhc/status").unwrap();
        let t0 = 1_767_225_600_000;
        for k in 0..3 {
            let at = t0 + k * 1000;
            let mut polls = vec![vec![
                Reading::new(at, nmhc, Outcome::Value(80.0), (None, Some(100.0))),
                Reading::new(at, status, Outcome::Value(1.0), (None, None)),
            ]];
            let handover = pipeline.handover(&mut polls, at, Duration::from_secs(k as u64));
            let stored = handover
                .readings
                .iter()
                .find(|r| r.point == nmhc)
                .unwrap()
                .flag;
            let shown = state.snapshot().latest[nmhc.0 as usize].unwrap().flag;
            assert_eq!(shown, stored, "the page shows what is stored");
            if k > 0 {
                assert_eq!(shown, Flag::C, "span gas during a calibration");
            }
        }
    }
}
