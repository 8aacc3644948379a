//! The status grid as text for a terminal (`sealwatch status`): furnaces × bins, analyzers, and
//! device health. Pure: a [`StatusView`] in, lines out; colour only when asked for.

use std::fmt::Write as _;

use super::{PointView, StatusView};

/// `1h02m`, `3m05s`, `12s`.
pub fn duration_text(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn value(p: &Option<PointView>, digits: usize) -> String {
    match p {
        None => "—".to_owned(),
        Some(p) => match p.value {
            Some(v) if p.flag == 'N' => format!("{v:.digits$}"),
            Some(v) => format!("{v:.digits$} {}", p.flag),
            None => format!("{} {}", p.flag, p.problem.as_deref().unwrap_or("")),
        },
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

fn paint(text: &str, state: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match state {
        "sealed" => "32",
        "charging" => "34",
        "breach" => "1;41;97",
        _ => "33",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Renders the grid; `color` adds ANSI colours to the states.
pub fn render(view: &StatusView, color: bool) -> String {
    let mut out = String::new();
    let source = if view.source == "database" {
        " — from the database (no agent answered)".to_owned()
    } else {
        format!(
            " — agent up {}, {} readings ({:.1}/s)",
            duration_text(view.now_ms - view.started_ms),
            view.readings_total,
            view.readings_per_s
        )
    };
    let _ = writeln!(out, "sealwatch · {} ({}){source}", view.plant, view.site);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<8} {:<6} {:<9} {:>7}  {:<10} {:<7} {:>13}  LAST CYCLE",
        "FURNACE", "BIN", "STATE", "FOR", "LID", "GATE", "LEVEL/SEAL mm"
    );
    for f in &view.furnaces {
        for b in &f.bins {
            let since = b
                .seal_state_since_ms
                .map_or_else(|| "—".to_owned(), |t| duration_text(view.now_ms - t));
            let level = format!("{}/{}", value(&b.level_mm, 0), b.seal_level_min_mm);
            let cycle = match &b.last_cycle {
                None => "—".to_owned(),
                Some(c) => format!(
                    "{} ago, {}, {}",
                    duration_text(view.now_ms - c.ended_ms),
                    duration_text(c.ended_ms - c.started_ms),
                    if c.interrupted {
                        "interrupted"
                    } else if c.seal_held {
                        "seal held"
                    } else {
                        "SEAL LOST"
                    }
                ),
            };
            let state = paint(&format!("{:<9}", b.seal_state), &b.seal_state, color);
            let _ = writeln!(
                out,
                "{:<8} {:<6} {state} {:>7}  {:<10} {:<7} {:>13}  {cycle}",
                f.name, b.name, since, b.lid, b.gate, level
            );
        }
    }
    let analyzers: Vec<_> = view.furnaces.iter().flat_map(|f| &f.analyzers).collect();
    if !analyzers.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>16} {:>12}  LIMITS mg/m³ (hour / single)",
            "ANALYZER", "NMHC NOW", "HOUR AVG (min)", "LAST HOUR"
        );
        for a in analyzers {
            let hour = format!("{} ({})", opt(a.hour_avg, 2), a.hour_valid_minutes);
            let last = a.last_hour.as_ref().map_or_else(
                || "—".to_owned(),
                |h| format!("{}{}", opt(h.avg, 2), if h.exceeded { " OVER" } else { "" }),
            );
            let _ = writeln!(
                out,
                "{:<16} {:>10} {:>16} {:>12}  {} / {}",
                a.key,
                value(&a.nmhc, 2),
                hour,
                last,
                view.limits.nmhc_hourly_mg_m3,
                view.limits.nmhc_single_mg_m3
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<16} {:<14} {:>4} {:<13} {:>9} {:>8} {:>6} {:>5} {:>5} {:>5}  LAST ERROR",
        "DEVICE", "BUS", "UNIT", "HEALTH", "LAST OK", "POLLS", "T/O", "EXC", "IO", "CRC"
    );
    for d in &view.devices {
        let health = if view.source == "database" {
            "—"
        } else if !d.connected {
            "disconnected"
        } else if d.degraded {
            "degraded"
        } else {
            "ok"
        };
        let last_ok = d
            .last_ok_ms
            .map_or_else(|| "—".to_owned(), |t| duration_text(view.now_ms - t));
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:>4} {:<13} {:>9} {:>8} {:>6} {:>5} {:>5} {:>5}  {}",
            d.name,
            d.bus,
            d.unit,
            health,
            last_ok,
            d.polls,
            d.timeouts,
            d.exceptions,
            d.io_errors,
            d.crc_errors,
            d.last_error.as_deref().unwrap_or("")
        );
    }
    let backlog = view
        .evidence_backlog
        .map_or_else(|| "—".to_owned(), |n| n.to_string());
    let _ = writeln!(out);
    let _ = writeln!(out, "evidence backlog: {backlog}");
    for alarm in &view.alarms {
        let _ = writeln!(out, "ALARM {}: {}", alarm.kind, alarm.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(duration_text(5_400), "5s");
        assert_eq!(duration_text(185_000), "3m05s");
        assert_eq!(duration_text(3_720_000), "1h02m");
        assert_eq!(duration_text(-1), "0s");
    }
}
