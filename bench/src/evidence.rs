//! Evidence backlog drain: a backlog of sealed records delivered by the real audit uplink to the
//! stand-in audit system, which verifies every hash and signature and stores them durably.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sealwatch_agent::config::AuditUplinkConfig;
use sealwatch_agent::evidence::{sign, Draft};
use sealwatch_agent::state::PlantState;
use sealwatch_agent::store::{spawn_writer, Limits, Store};
use sealwatch_agent::uplink::audit::AuditUplink;
use sealwatch_sim::audit::{AuditServer, Receiver};
use tokio_util::sync::CancellationToken;

pub(crate) struct DrainFigures {
    pub(crate) records: u64,
    pub(crate) seal_rate: f64,
    pub(crate) drain_rate: f64,
}

pub(crate) async fn measure(records: u64) -> anyhow::Result<DrainFigures> {
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("sealwatch.key");
    let key = sign::generate(&key_path)?;
    let db = dir.path().join("agent.db");
    let mut store = Store::open(&db)?;
    store.enable_evidence("bench", key.clone())?;
    // The backlog: sealed (numbered, chained, signed) and committed in batches of 10,000.
    let started = Instant::now();
    let mut n = 0u64;
    while n < records {
        let batch: Vec<Draft> = (n..(n + 10_000).min(records))
            .map(|i| {
                Draft::new(
                    1_767_225_600_000 + i as i64 * 1000,
                    "seal_state",
                    "F1/B1",
                    &serde_json::json!({ "from": "sealed", "to": "charging", "i": i }),
                )
            })
            .collect();
        n += batch.len() as u64;
        store.append(&[], &[], &batch)?;
    }
    let seal_rate = records as f64 / started.elapsed().as_secs_f64();

    let receiver = Receiver::open(
        &dir.path().join("audit.db"),
        "bench",
        key.verifying_key(),
        None,
    )?;
    let server = AuditServer::start(receiver, "127.0.0.1:0").await?;
    let limits = Limits {
        raw_retention: Duration::from_secs(86_400),
        disk_budget_bytes: 1 << 40,
        evidence_retention: Duration::from_secs(1095 * 86_400),
        compact_every: sealwatch_agent::store::COMPACT_EVERY,
        disk_reserve_bytes: 0,
    };
    let (handle, writer) = spawn_writer(store, Vec::new(), Duration::from_secs(1), limits);
    let config = AuditUplinkConfig {
        url: format!("http://{}", server.addr()),
        token: None,
        client_identity_file: None,
        batch_records: 5000,
        timeout: Duration::from_secs(60),
        gzip: true,
        retry_max: Duration::from_secs(2),
    };
    let uplink = AuditUplink::new(
        config,
        "bench".into(),
        sign::public_hex(&key.verifying_key()),
        db,
        handle,
        PlantState::default(),
    )?;
    let acked = uplink.acked();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(uplink.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while acked.load(Ordering::Relaxed) < records {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the backlog did not drain within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_rate = records as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    task.await?;
    let _ = writer.await?;
    Ok(DrainFigures {
        records,
        seal_rate,
        drain_rate,
    })
}
