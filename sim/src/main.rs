//! `sealwatch-sim`: serve the simulated plant, or run the demo (plant + agent + status page).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use sealwatch_agent::config::{self, Transport};
use sealwatch_agent::run;
use sealwatch_sim::scenario::Scenario;
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
    /// `recover DEVICE`, `restart DEVICE [S]`, `bus-down BUS [S]`, `bus-up BUS`.
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
        /// Listen on the addresses in the config rather than on free ports.
        #[arg(long)]
        fixed_ports: bool,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
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
            } => {
                serve_plant(
                    &config,
                    scenario.as_deref(),
                    ready_file.as_deref(),
                    fixed_ports,
                    speed,
                )
                .await
            }
            Command::Demo {
                config,
                scenario,
                data_dir,
            } => demo(&config, &scenario, &data_dir).await,
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
    fixed_ports: bool,
    speed: f64,
) -> anyhow::Result<()> {
    if !(speed.is_finite() && speed > 0.0) {
        bail!("--speed must be a positive number, got {speed}");
    }
    let cfg = config::load(config_path)?;
    let sim = serve::start(
        &cfg,
        load_scenario(scenario)?,
        SimOptions { speed, fixed_ports },
    )
    .await?;
    for (bus, addr) in &sim.addresses {
        println!("sim: bus {bus} listening on {addr}");
    }
    if let Some(path) = ready_file {
        write_ready_file(path, &sim)?;
    }
    println!("sim: ready");
    let _ = std::io::stdout().flush();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => {
                    match sim.command(&line).await {
                        Ok(done) => println!("ok {done}"),
                        Err(e) => println!("error: {e}"),
                    }
                    let _ = std::io::stdout().flush();
                }
                // End of input: keep serving until a signal.
                Ok(None) | Err(_) => stdin_open = false,
            },
            () = wait_for_signal() => break,
        }
    }
    sim.stop();
    Ok(())
}

fn write_ready_file(path: &Path, sim: &RunningSim) -> anyhow::Result<()> {
    let doc = serde_json::json!({ "buses": sim.addresses, "pid": std::process::id() });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn demo(config_path: &Path, scenario: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let mut cfg = config::load(config_path)?;
    let scenario = Scenario::load(scenario)?;
    let sim = serve::start(
        &cfg,
        scenario,
        SimOptions {
            speed: 1.0,
            fixed_ports: false,
        },
    )
    .await?;
    // Point the agent at the plant's actual ports and the demo's data folder.
    for bus in &mut cfg.buses {
        if let (Transport::Tcp { address }, Some(addr)) =
            (&mut bus.transport, sim.addresses.get(&bus.name))
        {
            *address = addr.to_string();
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    cfg.store.path = data_dir.join("sealwatch.db");
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
    for (bus, addr) in &sim.addresses {
        println!("  plant bus:     {bus} at {addr}");
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
    println!("stopped. Readings are in {}", cfg.store.path.display());
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
