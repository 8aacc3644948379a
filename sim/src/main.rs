//! `sealwatch-sim`: serve the simulated plant, or run the demo (plant + agent + status page).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use sealwatch_agent::config::{self, Transport};
use sealwatch_agent::run;
use sealwatch_sim::scenario::Scenario;
use sealwatch_sim::serve::LineOptions;
use sealwatch_sim::serve::{self, RunningSim, SimOptions};
use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sealwatch-sim",
    version,
    about = "Simulated semi-coke plant serving Modbus for sealwatch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the plant described by a site config. Commands on stdin: `breach F1/B2`,
    /// `lid-stuck-open F1/B1 60`, `silence DEVICE [S]`, `restore DEVICE`, `fail DEVICE`,
    /// `recover DEVICE`, `restart DEVICE [S]`, `bus-down BUS [S]`, `bus-up BUS`; for RTU lines
    /// `slow DEVICE MS`, `late DEVICE MS`, `corrupt-crc DEVICE K`, `garbage DEVICE`,
    /// `unplug BUS [S]`, `replug BUS`.
    Serve {
        /// Site configuration (the same file the agent uses).
        #[arg(long, short)]
        config: PathBuf,
        /// Scenario file with timed events.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Write the bound addresses here as JSON once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Listen on the addresses in the config rather than on free ports; put each RTU line's
        /// pty behind a symlink at its configured `port` path.
        #[arg(long)]
        fixed_ports: bool,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Emulate the timing of the RTU lines on their ptys: bytes paced at the baud (11 bits a
        /// character), t3.5 silences and the device turnaround.
        #[arg(long)]
        line_emulation: bool,
        /// Device turnaround with line emulation, ms.
        #[arg(long, default_value_t = 1.0)]
        turnaround_ms: f64,
        /// How long a device on a TCP bus takes to answer, ms (real devices: a few ms).
        #[arg(long, default_value_t = 0.0)]
        reply_delay_ms: f64,
    },
    /// Run a stand-in audit system that receives and verifies evidence uploads. Commands on stdin:
    /// `refuse`, `accept`, `fail N`, `cut N`, `slow MS`, `forget N`, `ok`.
    Audit {
        /// Its database (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// The site it accepts.
        #[arg(long)]
        site: String,
        /// The site's registered public key (`sealwatch keygen` writes `<key>.pub`).
        #[arg(long)]
        public_key: PathBuf,
        /// Bearer token the site must present.
        #[arg(long)]
        token: Option<String>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Write `{"url": …}` here once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Run a stand-in HJ 212 environmental platform that acknowledges uploads with 9014 and
    /// records what it receives (JSON lines). Commands on stdin: `no-ack N`, `bad-crc N`,
    /// `disconnect`, `down`, `up`, `history 2051|2061 BEGIN END`, `time-set YYYYMMDDhhmmss`, `ok`.
    Platform {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// File that receives one JSON line per frame received (created or appended to).
        #[arg(long)]
        record: PathBuf,
        /// Write `{"address": …}` here once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Run the demo: the simulated plant and the agent against it, with the status page.
    Demo {
        /// Site configuration.
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Scenario.
        #[arg(long, default_value = "config/demo-scenario.toml")]
        scenario: PathBuf,
        /// Where the agent keeps its database.
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealwatch-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                scenario,
                ready_file,
                fixed_ports,
                speed,
                line_emulation,
                turnaround_ms,
                reply_delay_ms,
            } => {
                if !(turnaround_ms.is_finite() && turnaround_ms >= 0.0) {
                    bail!("--turnaround-ms must be 0 or more, got {turnaround_ms}");
                }
                if !(reply_delay_ms.is_finite() && (0.0..=60_000.0).contains(&reply_delay_ms)) {
                    bail!("--reply-delay-ms must be 0 to 60000, got {reply_delay_ms}");
                }
                let options = SimOptions {
                    speed,
                    fixed_ports,
                    line: LineOptions {
                        emulate: line_emulation,
                        turnaround: std::time::Duration::from_secs_f64(turnaround_ms / 1000.0),
                    },
                    reply_delay: std::time::Duration::from_secs_f64(reply_delay_ms / 1000.0),
                };
                serve_plant(&config, scenario.as_deref(), ready_file.as_deref(), options).await
            }
            Command::Demo {
                config,
                scenario,
                data_dir,
            } => demo(&config, &scenario, &data_dir).await,
            Command::Platform {
                listen,
                record,
                ready_file,
            } => platform(&listen, &record, ready_file.as_deref()).await,
            Command::Audit {
                db,
                site,
                public_key,
                token,
                listen,
                ready_file,
            } => {
                audit(
                    &db,
                    &site,
                    &public_key,
                    token,
                    &listen,
                    ready_file.as_deref(),
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealwatch-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_scenario(path: Option<&Path>) -> anyhow::Result<Scenario> {
    Ok(match path {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    })
}

async fn serve_plant(
    config_path: &Path,
    scenario: Option<&Path>,
    ready_file: Option<&Path>,
    options: SimOptions,
) -> anyhow::Result<()> {
    if !(options.speed.is_finite() && options.speed > 0.0) {
        bail!("--speed must be a positive number, got {}", options.speed);
    }
    let cfg = config::load(config_path)?;
    let mut sim = serve::start(&cfg, load_scenario(scenario)?, options).await?;
    for (bus, addr) in &sim.addresses {
        println!("sim: bus {bus} listening on {addr}");
    }
    for (bus, path) in &sim.ports {
        println!("sim: bus {bus} on {path}");
    }
    if let Some(path) = ready_file {
        write_ready_file(path, &sim)?;
    }
    println!("sim: ready");
    let _ = std::io::stdout().flush();
    serve_commands(&mut sim).await;
    sim.stop();
    Ok(())
}

async fn audit(
    db: &Path,
    site: &str,
    public_key: &Path,
    token: Option<String>,
    listen: &str,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    use sealwatch_sim::audit::{AuditServer, Receiver};
    let key = sealwatch_agent::evidence::sign::load_public(public_key)?;
    let receiver = Receiver::open(db, site, key, token)?;
    let held = receiver.head().seq;
    let mut server = AuditServer::start(receiver, listen).await?;
    let url = format!("http://{}", server.addr());
    println!("audit: site {site}, holding records up to {held}, listening on {url}");
    if let Some(path) = ready_file {
        write_ready(path, &serde_json::json!({ "url": url }))?;
    }
    let _ = std::io::stdout().flush();
    serve_commands(&mut server).await;
    Ok(())
}

async fn platform(listen: &str, record: &Path, ready_file: Option<&Path>) -> anyhow::Result<()> {
    use sealwatch_sim::platform::Platform;
    let mut platform = Platform::start(listen, record).await?;
    let address = platform.addr().to_string();
    println!(
        "platform: HJ 212 listening on {address}, recording into {}",
        record.display()
    );
    if let Some(path) = ready_file {
        write_ready(path, &serde_json::json!({ "address": address }))?;
    }
    let _ = std::io::stdout().flush();
    serve_commands(&mut platform).await;
    Ok(())
}

fn write_ready_file(path: &Path, sim: &RunningSim) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "buses": sim.addresses,
        "ports": sim.ports,
        "pid": std::process::id(),
    });
    write_ready(path, &doc)
}

async fn demo(config_path: &Path, scenario: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let mut cfg = config::load(config_path)?;
    let scenario = Scenario::load(scenario)?;
    let sim = serve::start(&cfg, scenario, SimOptions::default()).await?;
    // Point the agent at the plant's actual ports and the demo's data folder.
    for bus in &mut cfg.buses {
        match &mut bus.transport {
            Transport::Tcp { address } => {
                if let Some(addr) = sim.addresses.get(&bus.name) {
                    *address = addr.to_string();
                }
            }
            Transport::Rtu(serial) => {
                if let Some(path) = sim.ports.get(&bus.name) {
                    serial.port = path.clone();
                }
            }
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    cfg.store.path = data_dir.join("sealwatch.db");
    cfg.evidence.key_file = data_dir.join("sealwatch.key");
    cfg.evidence.anchor_file =
        sealwatch_agent::evidence::anchor::default_path(&cfg.evidence.key_file);
    if !cfg.evidence.key_file.exists() {
        sealwatch_agent::evidence::sign::generate(&cfg.evidence.key_file)?;
        println!(
            "made a signing key for the demo: {}",
            cfg.evidence.key_file.display()
        );
    }
    // The stand-in audit system, so the demo shows the evidence chain delivered and verified.
    let public = sealwatch_agent::evidence::sign::load_public(
        &sealwatch_agent::evidence::sign::public_path(&cfg.evidence.key_file),
    )?;
    let receiver = sealwatch_sim::audit::Receiver::open(
        &data_dir.join("audit.db"),
        &cfg.site.id,
        public,
        None,
    )?;
    let audit = sealwatch_sim::audit::AuditServer::start(receiver, "127.0.0.1:0").await?;
    cfg.audit_uplink = Some(sealwatch_agent::config::AuditUplinkConfig {
        url: format!("http://{}", audit.addr()),
        token: None,
        client_identity_file: None,
        batch_records: 500,
        timeout: std::time::Duration::from_secs(10),
        gzip: true,
        retry_max: std::time::Duration::from_secs(5),
    });
    let stop = CancellationToken::new();
    let agent = match run::start(cfg.clone(), stop.clone()).await {
        Ok(agent) => agent,
        Err(run::RunError::Status(e)) => {
            tracing::warn!(error = %e, "status address busy; using a free port instead");
            cfg.status_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            run::start(cfg.clone(), stop.clone()).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!();
    println!(
        "sealwatch demo: {} — {} furnaces, {} devices on a simulated plant",
        cfg.site.name,
        cfg.furnaces.len(),
        cfg.devices.len()
    );
    if let Some(addr) = agent.status_addr {
        println!("  status page:   http://{addr}/");
    }
    println!("  database:      {}", cfg.store.path.display());
    println!(
        "  audit system:  http://{} (stand-in; verifies every record, keeps them in {})",
        audit.addr(),
        data_dir.join("audit.db").display()
    );
    for (bus, addr) in &sim.addresses {
        println!("  plant bus:     {bus} at {addr}");
    }
    for (bus, path) in &sim.ports {
        println!("  plant line:    {bus} on {path}");
    }
    println!(
        "  scenario:      breaches, a stuck lid and an analyzer outage over the first minutes"
    );
    println!("  Ctrl-C stops both cleanly.");
    println!();
    wait_for_signal().await;
    println!("stopping: committing what was polled…");
    stop.cancel();
    agent.finished().await;
    sim.stop();
    println!(
        "stopped. Readings and evidence are in {}",
        cfg.store.path.display()
    );
    println!(
        "check the evidence: cargo run --release -p sealwatch-agent -- evidence verify --db {} --public-key {}",
        cfg.store.path.display(),
        sealwatch_agent::evidence::sign::public_path(&cfg.evidence.key_file).display()
    );
    // The audit bundle of everything recorded, for the auditor's view.
    let bundle = data_dir.join("bundle");
    let now = sealwatch_agent::clock::now_ms();
    match sealwatch_agent::ledger::export_period(&cfg, (0, now), &bundle, now, &|_| {}) {
        Ok(manifest) => {
            println!(
                "audit bundle:  {} (records {}–{}); open {} in a browser",
                bundle.display(),
                manifest.first_seq,
                manifest.last_seq,
                bundle.join("report.html").display()
            );
            println!(
                "check it:      cargo run --release -p sealwatch-agent -- evidence verify --bundle {} --key-fingerprint {}",
                bundle.display(),
                manifest.key_fingerprint
            );
        }
        Err(e) => println!("no audit bundle: {e}"),
    }
    Ok(())
}

/// A stand-in that takes operator commands.
trait Commands {
    /// Runs one command line; says what was done or why not.
    async fn command(&mut self, line: &str) -> Result<String, String>;
}

impl Commands for RunningSim {
    async fn command(&mut self, line: &str) -> Result<String, String> {
        RunningSim::command(self, line).await
    }
}

impl Commands for sealwatch_sim::audit::AuditServer {
    async fn command(&mut self, line: &str) -> Result<String, String> {
        sealwatch_sim::audit::AuditServer::command(self, line).await
    }
}

impl Commands for sealwatch_sim::platform::Platform {
    async fn command(&mut self, line: &str) -> Result<String, String> {
        sealwatch_sim::platform::Platform::command(self, line).await
    }
}

/// Answers command lines on stdin with `ok …` or `error: …` until SIGTERM or Ctrl-C; at the
/// end of input it keeps serving.
async fn serve_commands(target: &mut impl Commands) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => {
                    match target.command(line.trim()).await {
                        Ok(done) => println!("ok {done}"),
                        Err(e) => println!("error: {e}"),
                    }
                    let _ = std::io::stdout().flush();
                }
                Ok(None) | Err(_) => stdin_open = false,
            },
            () = wait_for_signal() => break,
        }
    }
}

/// Writes a ready file atomically (a reader never sees half of it).
fn write_ready(path: &Path, doc: &serde_json::Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
