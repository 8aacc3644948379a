//! Picking up where the last run left off. Days and months are summed from their hours, and the
//! open hour from its readings; at a restart both are in the store, not in memory. Before
//! polling starts, the closed hours and days of the periods still open are read back as
//! [`Seed`]s into the new engine, and the readings of the hour that was open are replayed
//! through it (what that replay concludes is already in the record, and is dropped). So a
//! restart at 10:00 does not cost the day its first ten hours, and live and replay agree.
//!
//! Whatever cannot be read back is named: a stored output that does not parse is skipped and
//! reported; a corrupt stretch of readings ends the warm-up there (the hour is then judged from
//! what followed).

use chrono_tz::Tz;

use crate::model::{PointId, PointTable, Reading};
use crate::rules::resume::{Seed, RESUME_KINDS};
use crate::rules::{time, Engine, Output, Replay};
use crate::store::{Store, StoreError};

/// Readings read back at a time during the warm-up, by time span.
const WARM_UP_SLICE_MS: i64 = 5 * 60_000;

/// What a restart took from the record.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Closed hours and days read back.
    pub seeds: usize,
    /// Readings of the open hour replayed.
    pub replayed: u64,
    /// Summaries of days and months that ended while the agent was stopped (to be stored).
    pub due: Vec<Output>,
    /// What could not be read back, in words.
    pub problems: Vec<String>,
}

/// The seeds of the periods still open: every closed hour, day and month since the start of
/// the month of the last closed hour.
pub fn seeds(store: &Store, tz: Tz) -> Result<(Vec<Seed>, Vec<String>), StoreError> {
    let Some(last) = store.latest_output_at(&["bin_hour", "nmhc_hour"])? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let from = time::month_start(tz, last);
    let mut seeds = Vec::new();
    let mut problems = Vec::new();
    for (id, kind, body) in store.outputs_since(from, &RESUME_KINDS)? {
        match Seed::from_stored(&kind, &body) {
            Ok(Some(seed)) => seeds.push(seed),
            Ok(None) => {}
            Err(e) => problems.push(format!("rule output {id}: {e}")),
        }
    }
    Ok((seeds, problems))
}

/// Seeds `engine`, then replays the readings stored from the end of the last closed hour up to
/// `now_ms` through it. `ids[p]` is the database id of point `p`.
pub fn resume(
    engine: Engine,
    store: &Store,
    points: &PointTable,
    ids: &[i64],
    tz: Tz,
    now_ms: i64,
) -> (Engine, Resumed) {
    let mut engine = engine;
    let mut resumed = Resumed::default();
    let seeds = match seeds(store, tz) {
        Ok((seeds, problems)) => {
            resumed.problems = problems;
            seeds
        }
        Err(e) => {
            resumed
                .problems
                .push(format!("the record's hours cannot be read: {e}"));
            return (engine, resumed);
        }
    };
    resumed.seeds = seeds.len();
    resumed.due = engine.resume(&seeds);
    let Some(from) = seeds
        .iter()
        .filter_map(|s| match s {
            Seed::BinHour { hour_ms, .. } | Seed::NmhcHour { hour_ms, .. } => Some(*hour_ms),
            _ => None,
        })
        .max()
        .map(|h| time::next_hour(tz, h))
    else {
        return (engine, resumed);
    };
    let point_of: std::collections::HashMap<i64, PointId> = ids
        .iter()
        .enumerate()
        .map(|(p, &id)| (id, PointId(p as u32)))
        .collect();
    let device_of = points.points.iter().map(|p| p.device).collect();
    let mut replay = Replay::new(engine, device_of);
    let mut at = from;
    while at <= now_ms {
        let to = at.saturating_add(WARM_UP_SLICE_MS - 1).min(now_ms);
        match store.readings_between(at, to) {
            Ok(rows) => {
                let chunk: Vec<Reading> = rows
                    .into_iter()
                    .filter_map(|(id, s)| {
                        point_of.get(&id).map(|&point| Reading {
                            at_ms: s.at_ms,
                            point,
                            outcome: s.outcome,
                            flag: s.flag,
                        })
                    })
                    .collect();
                resumed.replayed += chunk.len() as u64;
                let _ = replay.push(&chunk);
            }
            Err(e) => {
                resumed.problems.push(format!(
                    "the readings from {at} on cannot be read back ({e}); the open hour is judged from what follows"
                ));
                break;
            }
        }
        at = to.saturating_add(1);
    }
    (replay.into_engine(), resumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, PointId};
    use crate::rules::{AnalyzerRules, BinRules, Role, RuleSettings, RulesConfig, Signal};

    const TZ: Tz = chrono_tz::Asia::Shanghai;
    /// 2026-01-01T00:00+08:00.
    const MIDNIGHT: i64 = 1_767_196_800_000;

    fn rules() -> RulesConfig {
        let settings = RuleSettings::default();
        RulesConfig {
            bins: vec![BinRules {
                key: "F1/B1".into(),
                device: "node".into(),
                seal_level_min_mm: 800.0,
                max_open_ms: 120_000,
            }],
            analyzers: vec![AnalyzerRules {
                samples_per_minute: 1,
                ..AnalyzerRules::with_defaults("F1/NMHC", &settings)
            }],
            roles: vec![
                Some(Role::Bin {
                    bin: 0,
                    signal: Signal::LidClosed,
                }),
                Some(Role::Bin {
                    bin: 0,
                    signal: Signal::LidOpen,
                }),
                Some(Role::Bin {
                    bin: 0,
                    signal: Signal::GateOpen,
                }),
                Some(Role::Bin {
                    bin: 0,
                    signal: Signal::LevelMm,
                }),
                Some(Role::Nmhc { analyzer: 0 }),
            ],
            ..RulesConfig::empty(TZ, settings)
        }
    }

    fn points() -> PointTable {
        let mut t = PointTable::default();
        t.push_device(
            "node",
            ["lid_closed", "lid_open", "gate_open", "level_mm"].map(|p| (p, None, (None, None))),
        );
        t.push_device("nmhc", [("nmhc", None, (None, None))]);
        t
    }

    /// The polls of minute `m` of the day.
    fn minute(m: i64) -> [Vec<Reading>; 2] {
        let t = MIDNIGHT + m * 60_000;
        let v = |p: u32, x: f64| Reading::new(t, PointId(p), Outcome::Value(x), (None, None));
        [
            vec![
                v(0, 1.0),
                v(1, 0.0),
                v(2, 0.0),
                v(3, 1000.0 + (m % 2) as f64),
            ],
            vec![v(4, 2.0 + (m % 3) as f64)],
        ]
    }

    fn days(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter(|o| matches!(o, Output::NmhcDay { .. } | Output::BinDay(_)))
            .map(Output::to_json)
            .collect()
    }

    #[test]
    fn a_restart_reads_back_the_closed_hours_and_replays_the_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("site.db")).unwrap();
        let points = points();
        let keys: Vec<(String, Option<String>)> = points
            .points
            .iter()
            .map(|p| (p.key.clone(), None))
            .collect();
        let ids = store.register_points(&keys).unwrap();
        let mut whole = Engine::new(&rules());
        let mut expected = Vec::new();
        // The first run: ten and a half hours, stored as the pipeline stores them.
        let mut first = Engine::new(&rules());
        for m in 0..(10 * 60 + 30) {
            for mut group in minute(m) {
                expected.extend(whole.ingest(&mut group.clone()));
                let out = first.ingest(&mut group);
                let rows: Vec<(i64, Reading)> = group
                    .iter()
                    .map(|r| (ids[r.point.0 as usize], *r))
                    .collect();
                store.append(&rows, &out, &[]).unwrap();
            }
        }
        // Restarted at 10:30.
        let now = MIDNIGHT + (10 * 60 + 30) * 60_000;
        let (mut second, resumed) = resume(Engine::new(&rules()), &store, &points, &ids, TZ, now);
        assert!(resumed.problems.is_empty(), "{:?}", resumed.problems);
        assert!(resumed.seeds >= 20, "{resumed:?}");
        assert_eq!(resumed.replayed, 30 * 5, "the open hour's readings");
        let mut after = Vec::new();
        for m in (10 * 60 + 30)..(25 * 60) {
            for mut group in minute(m) {
                expected.extend(whole.ingest(&mut group.clone()));
                after.extend(second.ingest(&mut group));
            }
        }
        assert_eq!(days(&after), days(&expected));
        assert_eq!(days(&after).len(), 2, "{:?}", days(&after));
    }
}
