//! Site configurations for the benchmarks, written as TOML and loaded through the real loader.

use std::fmt::Write as _;
use std::path::Path;

use sealwatch_agent::config::{self, SiteConfig};

/// `buses` TCP buses (all at `addresses[i]`, or a placeholder), each with `nodes_per_bus` seal
/// nodes polled every `interval_ms`, grouped into furnaces of 7 bins; plus `analyzers` analyzers
/// on their own bus.
pub(crate) fn seal_node_site(
    dir: &Path,
    buses: usize,
    nodes_per_bus: usize,
    analyzers: usize,
    interval_ms: u64,
    addresses: &[String],
) -> anyhow::Result<SiteConfig> {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/profiles");
    let mut text = format!(
        "profiles_dir = \"{}\"\n[site]\nid = \"bench\"\nname = \"Bench\"\npermit_number = \"B\"\npermit_class = \"key\"\n[store]\npath = \"bench.db\"\n[status]\nlisten = \"\"\n",
        profiles.display()
    );
    let addr = |i: usize| {
        addresses
            .get(i)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:1".to_owned())
    };
    for b in 0..buses {
        writeln!(text, "[[buses]]\nname = \"bus{b}\"\ntype = \"tcp\"\naddress = \"{}\"\ntimeout_ms = 2000\nmax_gap = 8", addr(b))?;
    }
    if analyzers > 0 {
        writeln!(
            text,
            "[[buses]]\nname = \"analyzers\"\ntype = \"tcp\"\naddress = \"{}\"\ntimeout_ms = 2000",
            addr(buses)
        )?;
    }
    let mut bins = Vec::new();
    for b in 0..buses {
        for n in 0..nodes_per_bus {
            let name = format!("n{b}-{n}");
            writeln!(text, "[[devices]]\nname = \"{name}\"\nbus = \"bus{b}\"\nunit_id = {}\nprofile = \"seal-node\"\npoll_interval_ms = {interval_ms}", n + 1)?;
            bins.push(name);
        }
    }
    for a in 0..analyzers {
        writeln!(text, "[[devices]]\nname = \"a{a}\"\nbus = \"analyzers\"\nunit_id = {}\nprofile = \"nmhc-analyzer\"\npoll_interval_ms = {interval_ms}", a + 1)?;
    }
    let furnaces = bins.len().div_ceil(7).max(analyzers);
    for f in 0..furnaces {
        writeln!(text, "[[furnaces]]\nname = \"F{f}\"")?;
        for (i, node) in bins.iter().enumerate().skip(f * 7).take(7) {
            writeln!(text, "[[furnaces.bins]]\nname = \"B{i}\"\ndevice = \"{node}\"\nseal_level_min_mm = 800\nmax_open_s = 120")?;
        }
        if f < analyzers {
            writeln!(
                text,
                "[[furnaces.analyzers]]\nname = \"NMHC\"\ndevice = \"a{f}\""
            )?;
        }
    }
    let path = dir.join("bench.toml");
    std::fs::write(&path, text)?;
    let key = dir.join("sealwatch.key");
    if !key.exists() {
        sealwatch_agent::evidence::sign::generate(&key)?;
    }
    Ok(config::load(&path)?)
}
