//! Serial ports for RTU lines: their settings and how they are opened.

use std::io;
use std::time::Duration;

use sealwatch_firmware::{BaudRate, Parity};

use super::rtu::RtuLink;

/// Data bits of a character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum DataBits {
    /// 7 bits (ASCII-era devices).
    #[serde(rename = "7")]
    Seven,
    /// 8 bits (what Modbus RTU requires).
    #[serde(rename = "8")]
    Eight,
}

/// Stop bits of a character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum StopBits {
    /// One stop bit.
    #[serde(rename = "1")]
    One,
    /// Two stop bits (no parity on a conforming line).
    #[serde(rename = "2")]
    Two,
}

/// Serial line settings of an RTU bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path.
    pub port: String,
    /// Line speed.
    pub baud: BaudRate,
    /// Parity.
    pub parity: Parity,
    /// Data bits.
    pub data_bits: DataBits,
    /// Stop bits.
    pub stop_bits: StopBits,
}

impl SerialSettings {
    /// `/dev/ttyUSB0 9600 8N1`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {}{}{}",
            self.port,
            self.baud,
            match self.data_bits {
                DataBits::Seven => 7,
                DataBits::Eight => 8,
            },
            match self.parity {
                Parity::None => 'N',
                Parity::Odd => 'O',
                Parity::Even => 'E',
            },
            match self.stop_bits {
                StopBits::One => 1,
                StopBits::Two => 2,
            }
        )
    }
}

/// Opens a serial port with these line settings, exclusively (TIOCEXCL and an advisory lock, as
/// tokio-serial does by default), so no second program talks on the line.
pub fn open_serial(settings: &SerialSettings) -> io::Result<tokio_serial::SerialStream> {
    let builder = tokio_serial::new(&settings.port, settings.baud.bits_per_second())
        .parity(match settings.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(match settings.data_bits {
            DataBits::Seven => tokio_serial::DataBits::Seven,
            DataBits::Eight => tokio_serial::DataBits::Eight,
        })
        .stop_bits(match settings.stop_bits {
            StopBits::One => tokio_serial::StopBits::One,
            StopBits::Two => tokio_serial::StopBits::Two,
        })
        .flow_control(tokio_serial::FlowControl::None);
    tokio_serial::SerialStream::open(&builder).map_err(io::Error::from)
}

/// The RTU line on the serial port of `settings` (opened on [`super::Link::open`], reopened
/// after a failure), quieting a unit for `quiet_after_timeout` after it timed out.
pub fn serial_link(
    settings: &SerialSettings,
    quiet_after_timeout: Duration,
) -> RtuLink<tokio_serial::SerialStream> {
    let settings = settings.clone();
    let name = settings.port.clone();
    RtuLink::new(
        &name,
        settings.baud,
        quiet_after_timeout,
        Box::new(move || open_serial(&settings)),
    )
}
