//! `sealwatch-pty-slave`: one seal node served on a serial device or pseudo-terminal.
//!
//! ```text
//! sealwatch-pty-slave TTY [--unit N] [--serial SN] [--uncommissioned] [--silence-ms MS]
//!                         [--storage-fails-after N]
//! ```
//!
//! Modbus RTU requests are read from TTY and answered there. Sensor samples come from standard
//! input as lines `S <lid_closed> <lid_open> <gate_open> <level µA>` (see
//! `sealwatch_firmware::inputs_line`); the last one holds until the next. Prints `ready` on
//! standard output once the TTY is open. Exits when standard input closes or the TTY fails.
//! `--storage-fails-after N` makes the settings storage fail after N more successful commits (to
//! see exception 04). A pty has no bit timing, so the frame-ending silence defaults to 20 ms instead of t3.5.

use std::cell::Cell;
use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use sealwatch_firmware::inputs_line::parse_line;
use sealwatch_firmware::modbus::UnitId;
use sealwatch_firmware::settings::{Slot, RECORD_LEN};
use sealwatch_firmware::{
    BaudRate, DeviceIdentity, InputSample, Instant, Parity, RamStorage, SealNode, Settings,
    SettingsStorage,
};

/// RAM storage that can be told to fail after a number of writes.
struct BenchStorage {
    ram: RamStorage,
    writes_left: Rc<Cell<Option<u32>>>,
}

#[derive(Debug, Clone, Copy)]
struct StorageFailed;

impl SettingsStorage for BenchStorage {
    type Error = StorageFailed;
    fn read(&mut self, slot: Slot, record: &mut [u8; RECORD_LEN]) -> Result<(), StorageFailed> {
        self.ram.read(slot, record).map_err(|e| match e {})
    }
    fn write(&mut self, slot: Slot, record: &[u8; RECORD_LEN]) -> Result<(), StorageFailed> {
        match self.writes_left.get() {
            Some(0) => return Err(StorageFailed),
            Some(n) => self.writes_left.set(Some(n - 1)),
            None => {}
        }
        self.ram.write(slot, record).map_err(|e| match e {})
    }
}

enum Event {
    Bytes(Vec<u8>),
    Sample(InputSample),
    InputClosed,
    TtyFailed(std::io::Error),
}

struct Args {
    tty: String,
    unit: u8,
    serial: String,
    commissioned: bool,
    silence_ms: u64,
    storage_fails_after: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        tty: String::new(),
        unit: 1,
        serial: "SN-PTY-0001".into(),
        commissioned: true,
        silence_ms: 20,
        storage_fails_after: None,
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--unit" => {
                let v = value("--unit")?;
                args.unit = v
                    .parse()
                    .ok()
                    .and_then(UnitId::new)
                    .ok_or_else(|| format!("--unit {v}: expected 1..=247"))?
                    .get();
            }
            "--serial" => args.serial = value("--serial")?,
            "--silence-ms" => {
                let v = value("--silence-ms")?;
                args.silence_ms = v
                    .parse()
                    .map_err(|_| format!("--silence-ms {v}: expected ms"))?;
            }
            "--storage-fails-after" => {
                let v = value("--storage-fails-after")?;
                args.storage_fails_after = Some(
                    v.parse()
                        .map_err(|_| format!("--storage-fails-after {v}: expected a count"))?,
                );
            }
            "--uncommissioned" => args.commissioned = false,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => args.tty = s.to_owned(),
        }
    }
    if args.tty.is_empty() {
        return Err("usage: sealwatch-pty-slave TTY [--unit N] [--serial SN] [--uncommissioned] [--silence-ms MS]".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sealwatch-pty-slave: {e}");
            return ExitCode::from(2);
        }
    };
    let identity = DeviceIdentity::seal_node(&args.serial);
    let writes_left = Rc::new(Cell::new(None));
    let storage = BenchStorage {
        ram: RamStorage::blank(),
        writes_left: writes_left.clone(),
    };
    let mut node = if args.commissioned {
        let settings = Settings {
            unit_id: UnitId::new(args.unit).unwrap_or(Settings::DEFAULT.unit_id),
            baud: BaudRate::B19200,
            parity: Parity::Even,
            debounce_ms: 50,
            level_span_mm: 5_000,
            seal_level_min_mm: 1_000,
            travel_time_ms: 8_000,
        };
        match SealNode::commissioned(storage, identity, settings) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("sealwatch-pty-slave: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        SealNode::new(storage, identity)
    };
    writes_left.set(args.storage_fails_after);
    node.set_frame_silence(Some(Duration::from_millis(args.silence_ms)));

    let tty = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.tty)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sealwatch-pty-slave: cannot open {}: {e}", args.tty);
            return ExitCode::FAILURE;
        }
    };
    let mut writer = match tty.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sealwatch-pty-slave: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = mpsc::channel();
    let tty_tx = tx.clone();
    std::thread::spawn(move || {
        let mut tty = tty;
        let mut buf = [0u8; 256];
        loop {
            match tty.read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                Ok(n) => {
                    if tty_tx.send(Event::Bytes(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tty_tx.send(Event::TtyFailed(e));
                    return;
                }
            }
        }
    });
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match parse_line(line.trim_end().as_bytes()) {
                Some(s) => {
                    if tx.send(Event::Sample(s)).is_err() {
                        return;
                    }
                }
                None => eprintln!("sealwatch-pty-slave: ignored input line {line:?}"),
            }
        }
        let _ = tx.send(Event::InputClosed);
    });
    println!("ready");
    let _ = std::io::stdout().flush();

    let start = std::time::Instant::now();
    let now = || Instant::from_micros(start.elapsed().as_micros() as u64);
    let mut sample: Option<InputSample> = None;
    loop {
        let event = rx.recv_timeout(Duration::from_millis(5));
        let t = now();
        match event {
            Ok(Event::Bytes(bytes)) => {
                for b in bytes {
                    if let Some(reply) = node.on_byte(b, t) {
                        if let Err(e) = writer.write_all(&reply).and_then(|_| writer.flush()) {
                            eprintln!("sealwatch-pty-slave: write to {}: {e}", args.tty);
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
            Ok(Event::Sample(s)) => sample = Some(s),
            Ok(Event::InputClosed) => return ExitCode::SUCCESS,
            Ok(Event::TtyFailed(e)) => {
                eprintln!("sealwatch-pty-slave: read from {}: {e}", args.tty);
                return ExitCode::FAILURE;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
        }
        if let Some(s) = sample {
            node.update_inputs(s, t);
        }
        if let Some(reply) = node.poll(t) {
            if let Err(e) = writer.write_all(&reply).and_then(|_| writer.flush()) {
                eprintln!("sealwatch-pty-slave: write to {}: {e}", args.tty);
                return ExitCode::FAILURE;
            }
        }
    }
}
