//! `sealwatch-bench`: measures sealwatch's performance figures, each against a baseline measured
//! in the same run, and writes them as a markdown table (BENCHMARKS.md).

mod evidence;
mod footprint;
mod latency;
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
    /// Only the Modbus TCP row, printed and not written (for profiling it).
    #[arg(long)]
    tcp_only: bool,
    /// Only the evidence drain row, printed and not written (for profiling it).
    #[arg(long)]
    evidence_only: bool,
    /// Only the store rows, printed and not written (for profiling them).
    #[arg(long)]
    store_only: bool,
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

/// Reply time of the sim's devices for the round-trip-bound TCP row.
const DEVICE_REPLY: Duration = Duration::from_millis(2);

fn rounds(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
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

    if cli.evidence_only {
        let records = if cli.quick { 100_000 } else { 1_000_000 };
        let drain = runtime.block_on(evidence::measure(records))?;
        println!(
            "evidence drain {:.0} records/s, sealing {:.0} records/s",
            drain.drain_rate, drain.seal_rate
        );
        return Ok(());
    }
    if cli.store_only {
        let store = store::measure(seconds)?;
        println!(
            "store ingest {:.0} readings/s (naive {:.0}/s), {:.2} bytes/reading (naive {:.2})",
            store.ours_rate, store.naive_rate, store.ours_bytes, store.naive_bytes
        );
        return Ok(());
    }
    eprintln!("bench: Modbus TCP throughput, devices answering at once…");
    // Short windows in alternating rounds: this machine's speed drifts within minutes.
    let (tcp_window, tcp_rounds) = if cli.quick {
        (Duration::from_secs(3), 3)
    } else {
        (Duration::from_secs(6), 5)
    };
    let tcp = runtime.block_on(tcp::measure(tcp_window, tcp_rounds, Duration::ZERO))?;
    eprintln!(
        "bench: Modbus TCP throughput, devices answering after {} ms…",
        DEVICE_REPLY.as_millis()
    );
    let tcp_device = runtime.block_on(tcp::measure(tcp_window, tcp_rounds, DEVICE_REPLY))?;
    if cli.tcp_only {
        for t in [&tcp, &tcp_device] {
            println!(
                "reply delay {} ms: agent {:.0} readings/s, bare tokio-modbus loop {:.0} readings/s: {} (rounds: {}), {} readings not stored",
                t.reply_delay.as_millis(),
                t.agent,
                t.bare,
                ratio(t.agent, t.bare),
                rounds(&t.round_ratios),
                t.lost
            );
        }
        return Ok(());
    }
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
    let records = if cli.quick { 100_000 } else { 1_000_000 };
    eprintln!("bench: evidence backlog of {records} records drained to the stand-in audit system…");
    let drain = runtime.block_on(evidence::measure(records))?;
    let footprint_window = if cli.quick {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(300)
    };
    eprintln!(
        "bench: agent memory and CPU at 1,000 points, 1 Hz, for {} s…",
        footprint_window.as_secs()
    );
    let footprint = runtime.block_on(footprint::measure(footprint_window))?;
    let samples = if cli.quick { 8 } else { 20 };
    eprintln!("bench: seal-state change → evidence committed, {samples} lid openings…");
    let latency = runtime.block_on(latency::measure(samples))?;
    eprintln!("bench: firmware image size…");
    let image = footprint::firmware_size();

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
    for t in [&tcp, &tcp_device] {
        let answers = if t.reply_delay.is_zero() {
            "devices answer at once, so both sides are bound by the 2 cores they share with the sim"
                .to_owned()
        } else {
            format!(
                "devices answer after {} ms, as real ones do, so both sides are bound by round trips",
                t.reply_delay.as_millis()
            )
        };
        writeln!(
            md,
            "| Modbus TCP readings/s through the whole agent (poll → decode → rules → store), {} seal nodes on {} connections, sim in-process, {answers}; mean of {} alternating rounds (ratios {}); readings counted but not in the database afterwards: {} | {:.0} | bare tokio-modbus loop, same registers: {:.0} | {} | ≥ 0.9× and ≥ 20,000/s | {} |",
            t.devices,
            t.connections,
            t.round_ratios.len(),
            rounds(&t.round_ratios),
            t.lost,
            t.agent,
            t.bare,
            ratio(t.agent, t.bare),
            verdict(t.agent >= 0.9 * t.bare && t.agent >= 20_000.0 && t.lost == 0)
        )?;
    }
    writeln!(
        md,
        "| Store ingest, durable (synchronous=FULL, commits of 20,000 readings as one frame each, compaction into blocks each minute of data), readings/s | {:.0} | naive one-row-per-reading inserts: {:.0} | {} | ≥ 100,000/s and ≥ 5× | {} |",
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
    writeln!(
        md,
        "| Evidence backlog drain to the stand-in audit system ({} records; the receiver verifies every hash and signature and stores durably) | {:.0} records/s | — (sealing the backlog: {:.0} records/s) | — | ≥ 20,000 records/s | {} |",
        drain.records,
        drain.drain_rate,
        drain.seal_rate,
        verdict(drain.drain_rate >= 20_000.0)
    )?;
    writeln!(
        md,
        "| Agent peak RSS and CPU, {} points at 1 Hz for {} s (separate process, /proc) | {:.1} MiB, {:.2} % of one core | — | — | ≤ 20 MiB, ≤ 2 % | {} |",
        footprint.points,
        footprint.seconds,
        footprint.peak_rss_kib as f64 / 1024.0,
        footprint.cpu_percent,
        verdict(footprint.peak_rss_kib <= 20 * 1024 && footprint.cpu_percent <= 2.0)
    )?;
    match image {
        Ok((text, data, bss)) => writeln!(
            md,
            "| Seal-node image, thumbv7em-none-eabihf release: `.text` / RAM (`.data` + `.bss`; stack peak measured under QEMU by the firmware test: about 3.1 KiB) | {:.1} KiB / {} B | — | — | ≤ 32 KiB / ≤ 8 KiB | {} |",
            text as f64 / 1024.0,
            data + bss,
            verdict(text <= 32 * 1024 && data + bss <= 8 * 1024)
        )?,
        Err(why) => writeln!(md, "| Seal-node image size | not measured: {why} | — | — | ≤ 32 KiB / ≤ 8 KiB | — |")?,
    }
    writeln!(
        md,
        "| Seal-state change at the sim → evidence committed (lid forced open; {} samples; p50 {:.0} ms, max {:.0} ms) | p99 {:.0} ms | poll interval: {} ms | {} | ≤ interval + 50 ms at p99 | {} |",
        latency.samples,
        latency.p50_ms,
        latency.max_ms,
        latency.p99_ms,
        latency.interval_ms,
        ratio(latency.p99_ms, latency.interval_ms as f64),
        verdict(latency.p99_ms <= latency.interval_ms as f64 + 50.0)
    )?;
    if cli.quick {
        writeln!(md, "\n(quick run: shorter windows, noisier figures)")?;
    }
    print!("{md}");
    std::fs::write(&cli.out, md)?;
    eprintln!("bench: wrote {}", cli.out.display());
    Ok(())
}
