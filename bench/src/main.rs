//! `sealwatch-bench`: measures sealwatch's performance figures, each against a baseline measured
//! in the same run, and writes them as a markdown table (BENCHMARKS.md).

mod rtu;
mod site;
mod store;
mod tcp;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sealwatch-bench",
    about = "sealwatch benchmarks against same-run baselines"
)]
struct Cli {
    /// Write the table here (and print it).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Shorter windows (for a quick look; figures are noisier).
    #[arg(long)]
    quick: bool,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, {mem} GiB RAM, Linux; release build")
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".to_owned()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let window = if cli.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let seconds = if cli.quick { 600 } else { 3600 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    eprintln!(
        "bench: Modbus TCP throughput ({} s windows)…",
        window.as_secs()
    );
    let tcp = runtime.block_on(tcp::measure(window))?;
    eprintln!("bench: store ingest and size ({seconds} s of 1,000 points at 1 Hz)…");
    let store = store::measure(seconds)?;
    let mut lines = Vec::new();
    for baud in [9_600, 115_200] {
        eprintln!(
            "bench: Modbus RTU bus efficiency at {baud} baud, line emulation ({} s window)…",
            window.as_secs()
        );
        lines.push(runtime.block_on(rtu::measure(baud, window))?);
    }

    let mut md = String::new();
    writeln!(md, "# sealwatch benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo run --release -p sealwatch-bench` on {}.",
        machine()
    )?;
    writeln!(
        md,
        "Every figure is compared with a baseline measured in the same run.\n"
    )?;
    writeln!(
        md,
        "| figure | sealwatch | baseline (same run) | ratio | goal | verdict |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
    writeln!(
        md,
        "| Modbus TCP readings/s through the whole agent (poll → decode → store), {} seal nodes on {} connections, sim in-process | {:.0} | bare tokio-modbus loop, same registers: {:.0} | {} | ≥ 0.9× and ≥ 20,000/s | {} |",
        tcp.devices,
        tcp.connections,
        tcp.agent,
        tcp.bare,
        ratio(tcp.agent, tcp.bare),
        verdict(tcp.agent >= 0.9 * tcp.bare && tcp.agent >= 20_000.0)
    )?;
    writeln!(
        md,
        "| Store ingest, durable (synchronous=FULL, commits of 20,000, compaction each minute of data), readings/s | {:.0} | naive one-row-per-reading inserts: {:.0} | {} | ≥ 100,000/s and ≥ 5× | {} |",
        store.ours_rate,
        store.naive_rate,
        ratio(store.ours_rate, store.naive_rate),
        verdict(store.ours_rate >= 100_000.0 && store.ours_rate >= 5.0 * store.naive_rate)
    )?;
    writeln!(
        md,
        "| Disk bytes per stored reading ({} points at 1 Hz, {} readings) | {:.2} | naive rows: {:.2} | {} | ≤ 4 bytes | {} |",
        store.points,
        store.readings,
        store.ours_bytes,
        store.naive_bytes,
        ratio(store.ours_bytes, store.naive_bytes),
        verdict(store.ours_bytes <= 4.0)
    )?;
    for line in &lines {
        writeln!(
            md,
            "| Modbus RTU reads/s at {} baud, {} seal nodes on one emulated line (bytes paced at 11 bits/char, t3.5, {} ms turnaround), {} failed requests | {:.1} | physical model T = (13 + 2N)·t_char + 2·t3.5 + t_turn per read: {:.1} | {} | ≥ 0.9× | {} |",
            line.baud,
            line.nodes,
            rtu::TURNAROUND.as_millis(),
            line.failures,
            line.measured,
            line.model,
            ratio(line.measured, line.model),
            verdict(line.measured >= 0.9 * line.model && line.failures == 0)
        )?;
    }
    writeln!(md, "\nRows still to come with their capabilities: evidence backlog drain, agent memory and CPU, seal-state latency, firmware image size.")?;
    if cli.quick {
        writeln!(md, "\n(quick run: shorter windows, noisier figures)")?;
    }
    print!("{md}");
    std::fs::write(&cli.out, md)?;
    eprintln!("bench: wrote {}", cli.out.display());
    Ok(())
}
