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
    /// Log format: human (default), json, or journald; also SEALWATCH_LOG_FORMAT.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
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
    /// Make the agent's Ed25519 signing key (mode 0600) and its public key (`<out>.pub`).
    Keygen {
        /// Where to write the key (refuses to overwrite one).
        #[arg(long)]
        out: PathBuf,
    },
    /// Tamper-evident evidence: verify a chain, export an audit bundle.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Show the seal status grid of the running agent (or, if none answers, of its database).
    Status(StatusArgs),
    /// Commissioning tools for a bus: scan, read, write, watch, verify.
    Commission(sealwatch_agent::commission::CommissionArgs),
    /// Open or close a calibration, maintenance or shutdown window on a bin, an analyzer or a
    /// device of the running agent: its data is flagged C, M or F and kept out of compliance
    /// figures; who, what and why go on the record.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
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

/// What a window covers: exactly one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct WindowTarget {
    /// A bin, `furnace/bin`.
    #[arg(long)]
    bin: Option<String>,
    /// An analyzer, `furnace/analyzer`.
    #[arg(long)]
    analyzer: Option<String>,
    /// A device: every bin and analyzer it serves.
    #[arg(long)]
    device: Option<String>,
}

impl WindowTarget {
    fn name(&self) -> String {
        self.bin
            .clone()
            .or_else(|| self.analyzer.clone())
            .or_else(|| self.device.clone())
            .unwrap_or_default()
    }
}

/// Which agent a maintenance command goes to.
#[derive(clap::Args)]
struct AgentAddress {
    /// Site configuration (where the agent's status page listens).
    #[arg(long, short)]
    config: PathBuf,
    /// The agent's status page, e.g. http://127.0.0.1:8080, when the config's address is not
    /// the one to use.
    #[arg(long)]
    url: Option<String>,
}

/// `sealwatch maintenance …`
#[derive(Subcommand)]
enum MaintenanceCommand {
    /// Open a window.
    Start {
        #[command(flatten)]
        agent: AgentAddress,
        #[command(flatten)]
        target: WindowTarget,
        /// `calibration` (C), `maintenance` (M) or `shutdown` (F).
        #[arg(long)]
        kind: String,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who.
        #[arg(long)]
        by: String,
    },
    /// Close the window open on a target.
    End {
        #[command(flatten)]
        agent: AgentAddress,
        #[command(flatten)]
        target: WindowTarget,
        /// Who.
        #[arg(long)]
        by: String,
    },
    /// List the windows open now.
    List {
        #[command(flatten)]
        agent: AgentAddress,
    },
}

/// `sealwatch evidence …`
#[derive(Subcommand)]
enum EvidenceCommand {
    /// Check an evidence chain offline: in a database (`--db` with `--public-key`, or
    /// `--config`) or in an exported bundle (`--bundle`, against a key from outside it: its
    /// `.pub` file, the site config, or its fingerprint). Names the first broken record and why;
    /// exits 1 if the chain is broken or the bundle is not what it says.
    Verify {
        /// The agent's database.
        #[arg(long, conflicts_with = "bundle")]
        db: Option<PathBuf>,
        /// An exported audit bundle folder.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The site's public key file (`<key>.pub`).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Or the site config, whose key file's `.pub` is used (and whose database, without --db).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Or the site key's fingerprint (at least 32 hex digits), as the audit system or
        /// `sealwatch keygen` gave it; with --bundle.
        #[arg(long, value_name = "HEX", requires = "bundle")]
        key_fingerprint: Option<String>,
        /// Check a bundle against the key it carries: proves it is consistent, NOT who made it.
        #[arg(long, requires = "bundle", conflicts_with_all = ["public_key", "config", "key_fingerprint"])]
        trust_bundle_key: bool,
    },
    /// Write an audit bundle for a period: records, public key, CSV tables, a report, and a
    /// manifest signed with the site key.
    Export {
        /// Site configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Period start: `2026-11-29` (local midnight), RFC 3339, or ms since the epoch.
        #[arg(long)]
        from: String,
        /// Period end: `2026-11-29` (end of that local day), RFC 3339, or ms since the epoch.
        #[arg(long)]
        to: String,
        /// Folder to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Start a new chain in an empty database after the old database was lost: its first record
    /// names the previous chain's head (from the chain anchor) or says it is lost, with who and
    /// why, so the audit system and auditors see the break. The agent must be stopped.
    NewChain {
        /// Site configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Why the previous chain cannot be continued (e.g. "disk failed, no backup").
        #[arg(long)]
        reason: String,
        /// Who declares it.
        #[arg(long)]
        by: String,
    },
}

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format.as_deref()) {
        eprintln!("sealwatch: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Status(args) => status(&args),
        Command::Commission(args) => commission(args),
        Command::Maintenance(command) => exit_with(maintenance(command)),
        Command::CheckConfig { config } => check_config(&config),
        Command::Keygen { out } => exit_with(keygen(&out)),
        Command::Evidence(EvidenceCommand::Verify {
            db,
            bundle,
            public_key,
            config,
            key_fingerprint,
            trust_bundle_key,
        }) => {
            let result = match bundle {
                Some(dir) => {
                    verify_bundle(&dir, public_key, config, key_fingerprint, trust_bundle_key)
                }
                None => verify_database(db, public_key, config),
            };
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => exit_with(Err(e)),
            }
        }
        Command::Evidence(EvidenceCommand::Export {
            config,
            from,
            to,
            out,
        }) => exit_with(export_evidence(&config, &from, &to, &out)),
        Command::Evidence(EvidenceCommand::NewChain { config, reason, by }) => {
            exit_with(new_chain(&config, &reason, &by))
        }
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

fn init_logging(flag: Option<&str>) -> anyhow::Result<()> {
    use sealwatch_agent::telemetry;
    let format = telemetry::log_format(flag)?;
    if let Some(note) = telemetry::init_logging(format) {
        tracing::warn!("{note}");
    }
    Ok(())
}

/// `sealwatch status` options.
#[derive(clap::Args)]
struct StatusArgs {
    /// Site configuration: where the agent's status page listens and where its database is.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Status page of the agent, e.g. http://127.0.0.1:8080 (default: from the config).
    #[arg(long)]
    url: Option<String>,
    /// Print the JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Redraw every N seconds until Ctrl-C.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
}

/// `sealwatch status`: the grid from the running agent, else from its database.
fn status(args: &StatusArgs) -> ExitCode {
    use sealwatch_agent::status::{client, table};
    use std::io::IsTerminal as _;
    let cfg = match args.config.as_deref().map(config::load).transpose() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let url = args.url.clone().or_else(|| {
        cfg.as_ref()
            .and_then(|c| c.status_listen)
            .map(|a| format!("http://{a}"))
    });
    if url.is_none() && cfg.is_none() {
        eprintln!("sealwatch: give --config FILE (or --url http://HOST:PORT of the status page)");
        return ExitCode::from(EXIT_CONFIG);
    }
    let color = std::io::stdout().is_terminal();
    loop {
        let live = url.as_deref().map(client::fetch_state);
        let view = match (live, &cfg) {
            (Some(Ok(view)), _) => Ok(view),
            (Some(Err(e)), Some(cfg)) => {
                eprintln!("sealwatch: {e}; showing the database instead");
                client::view_from_database(cfg)
            }
            (Some(Err(e)), None) => Err(e),
            (None, Some(cfg)) => client::view_from_database(cfg),
            (None, None) => unreachable!("checked above"),
        };
        match view {
            Ok(view) if args.json => match serde_json::to_string_pretty(&view) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("sealwatch: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Ok(view) => {
                if args.watch.is_some() && color {
                    print!("\x1b[H\x1b[2J");
                }
                print!("{}", table::render(&view, color));
            }
            Err(e) => {
                eprintln!("sealwatch: {e}");
                return ExitCode::FAILURE;
            }
        }
        match args.watch {
            Some(s) => std::thread::sleep(std::time::Duration::from_secs(s.max(1))),
            None => return ExitCode::SUCCESS,
        }
    }
}

/// `sealwatch commission …`
fn commission(args: sealwatch_agent::commission::CommissionArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealwatch: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sealwatch_agent::commission::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealwatch commission: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `sealwatch maintenance …`: asks the running agent (its status page on this machine).
fn maintenance(command: MaintenanceCommand) -> anyhow::Result<()> {
    use sealwatch_agent::rules::WindowCommand;
    use sealwatch_agent::rules::{Window, WindowKind};
    use sealwatch_agent::status::client;
    let (agent, command) = match command {
        MaintenanceCommand::Start {
            agent,
            target,
            kind,
            reason,
            by,
        } => {
            let kind = WindowKind::parse(&kind).with_context(|| {
                format!(
                    "'{kind}' is not a window kind; expected calibration, maintenance or shutdown"
                )
            })?;
            let window = Window {
                target: target.name(),
                kind,
                reason,
                by,
            };
            (agent, Some(WindowCommand::Start(window)))
        }
        MaintenanceCommand::End { agent, target, by } => (
            agent,
            Some(WindowCommand::End {
                target: target.name(),
                by,
            }),
        ),
        MaintenanceCommand::List { agent } => (agent, None),
    };
    let cfg = config::load(&agent.config)?;
    let url = match agent.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let mut addr = cfg.status_listen.context("the config turns the status page off ([status].listen = \"\"); windows are given to the running agent through it")?;
            if addr.ip().is_unspecified() {
                // Listening on every address: asked on this machine's own.
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{addr}")
        }
    };
    let timeout = std::time::Duration::from_secs(10);
    let Some(command) = command else {
        let view = client::fetch_state(&url)?;
        if view.windows.is_empty() {
            println!("no window open");
        }
        for w in &view.windows {
            println!(
                "{}: {} since {} by {} — {}{}",
                w.target,
                w.kind,
                sealwatch_agent::rules::time::local_seconds(cfg.site.time_zone, w.since_ms),
                w.by,
                w.reason,
                if w.overdue { " (OVERDUE)" } else { "" }
            );
        }
        return Ok(());
    };
    let body = serde_json::to_string(&command)?;
    let token_file = sealwatch_agent::status::control::token_path(&cfg.store.path);
    let token = sealwatch_agent::status::control::read_token(&cfg.store.path).with_context(|| {
        format!(
            "cannot read the agent's control token {} (run this as the agent's user, on its machine)",
            token_file.display()
        )
    })?;
    let (code, answer) = client::http_request_with(
        "POST",
        &url,
        "/api/maintenance",
        Some(&body),
        &[(sealwatch_agent::status::control::TOKEN_HEADER, &token)],
        timeout,
    )
    .with_context(|| format!("the agent does not answer at {url}; is it running?"))?;
    anyhow::ensure!(
        code == 200,
        "the agent refused: {}",
        answer.trim().escape_debug()
    );
    let outputs: Vec<serde_json::Value> = serde_json::from_str(&answer).unwrap_or_default();
    for o in &outputs {
        if let Some(kind @ ("window_started" | "window_ended")) = o["kind"].as_str() {
            println!(
                "{kind}: {} {} at {} (on the record)",
                o["target"].as_str().unwrap_or(""),
                o["window"].as_str().unwrap_or(""),
                o["at_ms"].as_i64().map_or(String::new(), |t| {
                    sealwatch_agent::rules::time::local_seconds(cfg.site.time_zone, t)
                })
            );
        }
    }
    Ok(())
}

/// Tells systemd the agent is ready and feeds its watchdog (both no-ops outside systemd).
fn service_started(
    agent: &run::RunningAgent,
    stop: &CancellationToken,
    stall_after: std::time::Duration,
) {
    use sealwatch_agent::notify;
    let status = match agent.status_addr {
        Some(addr) => format!("polling; status page http://{addr}/"),
        None => "polling".to_owned(),
    };
    notify::ready(&status);
    if let Some(interval) = notify::watchdog_interval() {
        notify::spawn_watchdog(
            interval,
            stall_after.max(interval),
            agent.state.clone(),
            stop.clone(),
        );
    }
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
    use sealwatch_agent::replay::ReplayItem;
    use sealwatch_agent::rules::{Engine, Replay};
    use std::io::Write as _;

    let cfg = config::load(config_path)?;
    let points = cfg.point_table();
    let input = sealwatch_agent::replay::read_replay(readings, &points)?;
    let rules = cfg.rules_config(&points);
    let engine = Engine::new(&rules);
    let ruleset = engine.ruleset().to_owned();
    let mut replay = Replay::new(engine, points.points.iter().map(|p| p.device).collect());
    let mut outputs = Vec::new();
    let mut count = 0usize;
    for item in &input {
        match item {
            ReplayItem::Reading(r) => {
                count += 1;
                outputs.extend(replay.push(std::slice::from_ref(r)));
            }
            ReplayItem::Window { at_ms, command } => outputs.extend(
                replay
                    .window(*at_ms, command)
                    .with_context(|| format!("{}: window at {at_ms}", readings.display()))?,
            ),
        }
    }
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
        "replayed {count} readings under rule set {ruleset}: {} outputs",
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
        // Take over SIGTERM and SIGINT before anything else, so that a stop that arrives while
        // the agent is still starting is a clean stop too.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot handle SIGINT")?;
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal(term, int).await;
            sealwatch_agent::notify::stopping();
            tracing::info!("stopping: committing what was polled");
            signal_stop.cancel();
        });
        let stall_after = sealwatch_agent::notify::stall_after(&cfg);
        let agent = run::start(cfg, stop.clone()).await?;
        if let Some(addr) = agent.status_addr {
            tracing::info!("status page: http://{addr}/");
        }
        service_started(&agent, &stop, stall_after);
        agent.finished().await;
        Ok(())
    })
}

async fn wait_for_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Maps a command's result to an exit code: 2 for configuration problems, 1 for the rest.
fn exit_with(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealwatch: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = sealwatch_agent::evidence::sign::generate(out)?;
    let public = sealwatch_agent::evidence::sign::public_path(out);
    println!(
        "signing key: {} (mode 0600; keep it on this machine)",
        out.display()
    );
    println!(
        "public key:  {} — register it with the audit system:",
        public.display()
    );
    println!(
        "{}",
        sealwatch_agent::evidence::sign::public_hex(&key.verifying_key())
    );
    println!(
        "fingerprint: {} (auditors check bundles against it)",
        sealwatch_agent::evidence::sign::fingerprint_text(&key.verifying_key())
    );
    Ok(())
}

/// The site's public key from `--public-key` or the config's key file.
fn outside_key(
    public_key: Option<PathBuf>,
    cfg: Option<&config::SiteConfig>,
) -> anyhow::Result<Option<ed25519_dalek::VerifyingKey>> {
    use sealwatch_agent::evidence::sign;
    let file = public_key.or_else(|| cfg.map(|c| sign::public_path(&c.evidence.key_file)));
    Ok(file.map(|f| sign::load_public(&f)).transpose()?)
}

/// Verifies a bundle against a key from outside it; Ok(false) when it does not verify.
fn verify_bundle(
    dir: &Path,
    public_key: Option<PathBuf>,
    config: Option<PathBuf>,
    key_fingerprint: Option<String>,
    trust_bundle_key: bool,
) -> anyhow::Result<bool> {
    use sealwatch_agent::evidence::bundle::{self, KeyTrust};
    let cfg = config.as_deref().map(config::load).transpose()?;
    let trust = match (outside_key(public_key, cfg.as_ref())?, key_fingerprint) {
        (Some(key), _) => KeyTrust::Key(key),
        (None, Some(fp)) => KeyTrust::Fingerprint(fp),
        (None, None) if trust_bundle_key => KeyTrust::BundleKey,
        (None, None) => {
            println!("NOT VERIFIED: {}", bundle::BundleError::NoKey);
            return Ok(false);
        }
    };
    let bar = progress_bar("checking");
    let result = bundle::verify_bundle(dir, &trust, &|n| bar.set_position(n));
    bar.finish_and_clear();
    match result {
        Ok(v) => {
            let m = &v.manifest;
            if let Some(cfg) = &cfg {
                if cfg.site.id != m.site {
                    println!(
                        "BROKEN: the bundle is of site {}, the config of site {}",
                        m.site, cfg.site.id
                    );
                    return Ok(false);
                }
            }
            println!(
                "{}: {} records {}–{} of site {}, chain intact, head {}; manifest signed; tables and report match the records",
                dir.display(),
                v.records,
                m.first_seq,
                m.last_seq,
                m.site,
                m.head_hash
            );
            println!("key fingerprint checked: {}", v.key_fingerprint);
            if !v.authentic {
                println!("WARNING: checked against the key the bundle carries (--trust-bundle-key): this proves the bundle is consistent, NOT that the site made it. Check it with --key-fingerprint from the audit system.");
            }
            Ok(true)
        }
        Err(e) => {
            println!("BROKEN: {e}");
            Ok(false)
        }
    }
}

/// Verifies a database's chain; Ok(false) when it is broken (the reason is printed).
fn verify_database(
    db: Option<PathBuf>,
    public_key: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<bool> {
    use sealwatch_agent::ledger::{check_database, DbCheck};
    let cfg = config.as_deref().map(config::load).transpose()?;
    let db = db
        .or_else(|| cfg.as_ref().map(|c| c.store.path.clone()))
        .context("give --db, --bundle or --config")?;
    let key = outside_key(public_key, cfg.as_ref())?
        .context("give --public-key (the .pub file) or --config")?;
    let store = sealwatch_agent::store::Store::open_read_only(&db)?;
    match check_database(&store, &key, cfg.as_ref().map(|c| c.site.id.as_str()))? {
        DbCheck::Intact {
            records,
            site,
            head,
            pruned_through,
        } => {
            if let Some(through) = pruned_through {
                println!(
                    "records 1–{through} were pruned after their retention (the chain's data_pruned record says so); checked from {}",
                    through + 1
                );
            }
            println!(
                "{}: {records} records of site {site}, chain intact, head {}",
                db.display(),
                hex::encode(head.hash)
            );
            Ok(true)
        }
        DbCheck::Broken(why) => {
            println!("BROKEN {why}");
            Ok(false)
        }
    }
}

fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{what} {{pos}} records"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

/// Parses a period bound: ms, RFC 3339, or a local date (start or end of day).
fn parse_bound(text: &str, tz: chrono_tz::Tz, end_of_day: bool) -> anyhow::Result<i64> {
    use chrono::TimeZone as _;
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").with_context(|| {
        format!("'{text}' is not a date (2026-11-29), an RFC 3339 time or ms since the epoch")
    })?;
    let day = if end_of_day {
        date.succ_opt().context("date out of range")?
    } else {
        date
    };
    let local = tz
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).context("midnight")?)
        .earliest()
        .context("no such local time")?;
    Ok(local.timestamp_millis() - i64::from(end_of_day))
}

fn export_evidence(config_path: &Path, from: &str, to: &str, out: &Path) -> anyhow::Result<()> {
    let cfg = config::load(config_path)?;
    let tz = cfg.site.time_zone;
    let (from_ms, to_ms) = (parse_bound(from, tz, false)?, parse_bound(to, tz, true)?);
    anyhow::ensure!(from_ms <= to_ms, "--from is after --to");
    let bar = progress_bar("exporting");
    let manifest = sealwatch_agent::ledger::export_period(
        &cfg,
        (from_ms, to_ms),
        out,
        sealwatch_agent::clock::now_ms(),
        &|n| bar.set_position(n),
    );
    bar.finish_and_clear();
    let manifest = manifest?;
    println!(
        "{}: records {}–{}, head {}",
        out.display(),
        manifest.first_seq,
        manifest.last_seq,
        manifest.head_hash
    );
    println!(
        "signed with the site key, fingerprint {}",
        manifest.key_fingerprint
    );
    println!("report: {}", out.join("report.html").display());
    println!(
        "check it with: sealwatch evidence verify --bundle {} --key-fingerprint {}",
        out.display(),
        manifest.key_fingerprint
    );
    Ok(())
}

fn new_chain(config_path: &Path, reason: &str, by: &str) -> anyhow::Result<()> {
    let cfg = config::load(config_path)?;
    // What the audit system holds goes on the record, when it answers.
    let holds = cfg.audit_uplink.as_ref().and_then(|audit| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                sealwatch_agent::uplink::audit::receiver_head(audit, &cfg.site.id),
            )
            .await
            .ok()?
            .ok()
            .map(|a| a.stored_through)
        })
    });
    let chain = sealwatch_agent::ledger::declare_new_chain(
        &cfg,
        reason,
        by,
        holds,
        sealwatch_agent::clock::now_ms(),
    )?;
    match &chain.previous {
        Some(a) => println!(
            "previous chain of site {}: last anchored record {} (hash {})",
            a.site, a.seq, a.hash
        ),
        None => println!("previous chain: no anchor found; the new chain says it is lost"),
    }
    if let Some(n) = holds {
        println!("the audit system holds the previous chain up to record {n}");
    }
    println!(
        "new chain of site {} started in {}: record 1 ({}) hash {}",
        cfg.site.id,
        cfg.store.path.display(),
        chain.record.kind,
        chain.record.hash
    );
    println!("start the agent; the audit system receives the new chain with its declaration");
    Ok(())
}
