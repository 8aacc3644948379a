//! `[uplink.audit]` and `[[uplink.hj212]]`: where evidence and data are delivered.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{names_of, ranged};
use crate::config::plain_name;
use crate::config::raw::{RawAuditUplink, RawHj212Uplink};
use crate::config::source::KeyPath;
use crate::config::{AuditUplinkConfig, Hj212UplinkConfig, Issues};

/// `[uplink.audit]`; the client identity file is relative to the config file's folder.
pub(super) fn audit(
    issues: &mut Issues<'_>,
    root: &KeyPath,
    base_dir: &Path,
    raw: Option<RawAuditUplink>,
) -> Option<AuditUplinkConfig> {
    let audit_uplink = raw.map(|a| {
        let path = root.key("uplink").key("audit");
        let url = a.url.trim_end_matches('/').to_owned();
        if let Err(why) = audit_url(&url) {
            issues.push(path.key("url"), format!("'{}' {why}", url.escape_debug()));
        }
        AuditUplinkConfig {
            url,
            token: a.token,
            client_identity_file: a.client_identity_file.as_deref().map(|f| base_dir.join(f)),
            batch_records: ranged(
                issues,
                &path.key("batch_records"),
                a.batch_records,
                500,
                1,
                10_000,
                "records",
            ) as usize,
            timeout: Duration::from_millis(ranged(
                issues,
                &path.key("timeout_ms"),
                a.timeout_ms,
                30_000,
                100,
                300_000,
                "ms",
            ) as u64),
            gzip: a.gzip.unwrap_or(true),
            retry_max: Duration::from_millis(ranged(
                issues,
                &path.key("retry_max_ms"),
                a.retry_max_ms,
                60_000,
                1000,
                3_600_000,
                "ms",
            ) as u64),
        }
    });

    audit_uplink
}

/// Whether `url` may be the audit system's: parsed (WHATWG rules, as the HTTP client parses
/// it), `https://`, or plain `http://` only to this machine — decided on the parsed host
/// (`localhost`, `127.0.0.0/8`, `::1`), so `http://localhost:1@audit.example.com/` (user info)
/// and `http://127.attacker.example/` (a domain) are not taken for loopback.
fn audit_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "holds a user name or password; give the audit system's credentials as `token`"
                .to_owned(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query (?…) or fragment (#…)".to_owned());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("has no host".to_owned()),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be an https:// URL (plain http:// is only allowed to this machine: localhost, 127.0.0.0/8 or [::1])".to_owned()),
    }
}

/// `[[uplink.hj212]]`: every problem of every platform entry; `analyzers` are `furnace/analyzer` keys.
pub(super) fn hj212(
    root: &KeyPath,
    raw: Vec<RawHj212Uplink>,
    analyzers: &[String],
    issues: &mut Issues<'_>,
) -> Vec<Hj212UplinkConfig> {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'=' | b'&'))
    };
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut out = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        let path = root.key("uplink").key("hj212").index(i);
        if !plain_name(&h.name) {
            issues.push(
                path.key("name"),
                format!(
                    "platform name '{}' must be non-empty letters, digits, '-' or '_'",
                    h.name
                ),
            );
        } else if names.insert(h.name.clone(), ()).is_some() {
            issues.push(
                path.key("name"),
                format!("duplicate platform name '{}'; names must be unique", h.name),
            );
        }
        let port_ok = h.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            issues.push(
                path.key("address"),
                format!("'{}' is not host:port, e.g. 203.0.113.5:8800", h.address),
            );
        }
        if !(h.pw.len() <= 9 && plain(&h.pw)) {
            issues.push(
                path.key("pw"),
                format!(
                    "password '{}' must be up to 9 printable characters without ; , = &",
                    h.pw
                ),
            );
        }
        let st = match h.st {
            None => 27,
            Some(v) if (10..=99).contains(&v) => v,
            Some(v) => {
                issues.push(path.key("st"), format!("system code {v} is not two digits; expected e.g. 27 (VOC monitoring) or 31 (air pollution source)"));
                27
            }
        };
        let version = match h.version.as_deref().unwrap_or("2017") {
            "2017" => 1,
            bits if bits.len() == 6 && bits.bytes().all(|b| b == b'0' || b == b'1') => {
                u8::from_str_radix(bits, 2).unwrap_or(1)
            }
            other => {
                issues.push(path.key("version"), format!("'{other}' is not a version; expected \"2017\" or six version bits such as \"000001\""));
                1
            }
        };
        let timeout = ranged(issues, &path.key("timeout_s"), h.timeout_s, 10, 1, 300, "s");
        let retries = ranged(issues, &path.key("retries"), h.retries, 3, 0, 10, "resends");
        let reconnect_max = ranged(
            issues,
            &path.key("reconnect_max_s"),
            h.reconnect_max_s,
            60,
            1,
            3600,
            "s",
        );
        let realtime = h.realtime_s.map(|_| {
            Duration::from_secs(ranged(
                issues,
                &path.key("realtime_s"),
                h.realtime_s,
                30,
                5,
                3600,
                "s",
            ) as u64)
        });
        if h.mn.is_empty() {
            issues.push(path.key("mn"), "no analyzer is mapped to an MN, so nothing would be sent; add e.g. mn = { \"F1/NMHC\" = \"010000A8900016F000169DC0\" }");
        }
        let mut mns: HashMap<String, String> = HashMap::new();
        for (analyzer, mn) in &h.mn {
            if !analyzers.contains(analyzer) {
                issues.push(
                    path.key("mn").key(analyzer),
                    format!(
                        "'{analyzer}' is not an analyzer of this site; analyzers: {}",
                        names_of(analyzers)
                    ),
                );
            }
            if !(!mn.is_empty() && mn.len() <= 24 && plain(mn)) {
                issues.push(
                    path.key("mn").key(analyzer),
                    format!("MN '{mn}' must be 1–24 printable characters without ; , = &"),
                );
            } else if let Some(other) = mns.insert(mn.clone(), analyzer.clone()) {
                issues.push(path.key("mn").key(analyzer), format!("MN '{mn}' is already used for '{other}'; each monitoring point needs its own MN"));
            }
        }
        out.push(Hj212UplinkConfig {
            name: h.name,
            address: h.address,
            pw: h.pw,
            st: format!("{st:02}"),
            version,
            timeout: Duration::from_secs(timeout as u64),
            retries: retries as u32,
            reconnect_max: Duration::from_secs(reconnect_max as u64),
            realtime,
            mn: h.mn.into_iter().collect(),
        });
    }
    out
}
