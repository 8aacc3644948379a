//! `sealwatch`: the agent's command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sealwatch_agent::config::{self, ConfigError};
use sealwatch_agent::run;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sealwatch",
    version,
    about = "Furnace-top seal and VOC monitoring for semi-coke plants"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: poll the devices, store readings, serve the status page.
    Run {
        /// Site configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and the profiles it uses; report every problem.
    CheckConfig {
        /// Site configuration file.
        config: PathBuf,
    },
    /// Run recorded readings (JSON lines or CSV) through the rules; print what they conclude as
    /// JSON lines. Identical input gives byte-identical output.
    Replay {
        /// Site configuration (points, thresholds, time zone).
        #[arg(long, short)]
        config: PathBuf,
        /// Readings file (`.jsonl` or `.csv`; format in the README).
        readings: PathBuf,
        /// Write the outputs here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Replay {
            config,
            readings,
            out,
        } => match replay(&config, &readings, out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealwatch: {e:#}");
                if e.downcast_ref::<ConfigError>().is_some() {
                    ExitCode::from(EXIT_CONFIG)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Command::Run { config } => match run_agent(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sealwatch: {e:#}");
                if e.downcast_ref::<ConfigError>().is_some() {
                    ExitCode::from(EXIT_CONFIG)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check_config(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            let points: usize = cfg.devices.iter().map(|d| d.profile.points.len()).sum();
            println!(
                "{}: ok — site {} ({}), {} buses, {} devices, {} points, {} furnaces",
                path.display(),
                cfg.site.id,
                cfg.site.name,
                cfg.buses.len(),
                cfg.devices.len(),
                points,
                cfg.furnaces.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn replay(config_path: &Path, readings: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    use sealwatch_agent::poll::PointTable;
    use sealwatch_agent::rules::{Engine, Replay, RulesConfig};
    use std::io::Write as _;

    let cfg = config::load(config_path)?;
    let points = PointTable::new(&cfg);
    let input = sealwatch_agent::replay::read_readings(readings, &points)?;
    let rules = RulesConfig::new(&cfg, &points);
    let engine = Engine::new(&rules);
    let ruleset = engine.ruleset().to_owned();
    let mut replay = Replay::new(engine, points.points.iter().map(|p| p.device).collect());
    let mut outputs = replay.push(&input);
    outputs.extend(replay.finish());
    let mut text = String::new();
    for o in &outputs {
        text.push_str(&o.to_json());
        text.push('\n');
    }
    match out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write to standard output")?,
    }
    eprintln!(
        "replayed {} readings under rule set {ruleset}: {} outputs",
        input.len(),
        outputs.len()
    );
    Ok(())
}

fn run_agent(path: &Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        let agent = run::start(cfg, stop.clone()).await?;
        if let Some(addr) = agent.status_addr {
            tracing::info!("status page: http://{addr}/");
        }
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: committing what was polled");
            signal_stop.cancel();
        });
        agent.finished().await;
        Ok(())
    })
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
