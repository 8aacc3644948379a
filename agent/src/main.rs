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
}

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
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
