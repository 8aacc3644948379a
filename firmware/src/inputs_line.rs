//! A text line that carries one sensor sample over a serial line.
//!
//! Real nodes read pins and an ADC. The QEMU image (and host harnesses) take their samples from a
//! second UART instead, in lines of the form
//!
//! ```text
//! S <lid_closed 0|1> <lid_open 0|1> <gate_open 0|1> <level µA>\n
//! ```
//!
//! Invariants: the parser never panics and never grows: an overlong or malformed line is dropped
//! whole (up to its newline) and the next line parses normally. `\r` is ignored.

use crate::node::InputSample;

/// Longest line accepted, newline excluded.
pub const MAX_LINE_LEN: usize = 40;

/// Parses sample lines fed byte by byte.
#[derive(Debug, Clone, Default)]
pub struct InputLineParser {
    line: heapless::Vec<u8, MAX_LINE_LEN>,
    overflow: bool,
}

impl InputLineParser {
    /// An empty parser.
    pub const fn new() -> Self {
        InputLineParser {
            line: heapless::Vec::new(),
            overflow: false,
        }
    }

    /// Feeds one byte; returns a sample when a valid line ends.
    pub fn feed(&mut self, byte: u8) -> Option<InputSample> {
        match byte {
            b'\n' => {
                let sample = if self.overflow {
                    None
                } else {
                    parse_line(&self.line)
                };
                self.line.clear();
                self.overflow = false;
                sample
            }
            b'\r' => None,
            b => {
                if self.line.push(b).is_err() {
                    self.overflow = true;
                }
                None
            }
        }
    }
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Option<InputSample> {
    let text = core::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace();
    if fields.next()? != "S" {
        return None;
    }
    let mut flag = || match fields.next()? {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    };
    let lid_closed = flag()?;
    let lid_open = flag()?;
    let gate_open = flag()?;
    let level_ua = fields.next()?.parse::<u16>().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Some(InputSample {
        lid_closed,
        lid_open,
        gate_open,
        level_ua,
    })
}

/// Writes the line for `sample` (newline included) into `out`.
pub fn format_line(sample: &InputSample, out: &mut heapless::String<MAX_LINE_LEN>) {
    use core::fmt::Write;
    out.clear();
    let b = |v: bool| if v { 1 } else { 0 };
    // Longest line "S 1 1 1 65535\n" is 14 bytes: always fits.
    let _ = writeln!(
        out,
        "S {} {} {} {}",
        b(sample.lid_closed),
        b(sample.lid_open),
        b(sample.gate_open),
        sample.level_ua
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(p: &mut InputLineParser, bytes: &[u8]) -> Option<InputSample> {
        let mut last = None;
        for &b in bytes {
            if let Some(s) = p.feed(b) {
                last = Some(s);
            }
        }
        last
    }

    #[test]
    fn parses_and_recovers() {
        let mut p = InputLineParser::new();
        let want = InputSample {
            lid_closed: true,
            lid_open: false,
            gate_open: true,
            level_ua: 12_000,
        };
        assert_eq!(feed_all(&mut p, b"S 1 0 1 12000\r\n"), Some(want));
        assert_eq!(feed_all(&mut p, b"S 1 0 2 12000\n"), None);
        assert_eq!(feed_all(&mut p, b"S 1 0 1 70000\n"), None);
        assert_eq!(feed_all(&mut p, &[b'x'; 100]), None);
        assert_eq!(feed_all(&mut p, b"\nS 1 0 1 12000\n"), Some(want));
        let mut line = heapless::String::new();
        format_line(&want, &mut line);
        assert_eq!(feed_all(&mut p, line.as_bytes()), Some(want));
    }
}
