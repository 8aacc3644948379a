//! Runs a [`SealNode`] over real peripherals: a UART (`embedded-io`) and sensor inputs.
//!
//! [`NodeRunner::step`] is one turn of the main loop: sample the inputs, feed every received byte,
//! send replies, let time pass. It never blocks on input (it asks [`ReadReady`] first) and never
//! sleeps. Sensor inputs are behind [`SensorInputs`]: [`PinInputs`] reads three `embedded-hal`
//! input pins and a [`LoopCurrent`] channel; the QEMU image implements it over a second UART.
//! Errors are small enums wrapping the HAL's own error.

use core::fmt;

use embedded_hal::digital::InputPin;
use embedded_io::{Read, ReadReady, Write};

use crate::node::{InputSample, SealNode};
use crate::settings::SettingsStorage;
use crate::time::Instant;

/// A source of sensor samples.
pub trait SensorInputs {
    /// The source's error.
    type Error: fmt::Debug;
    /// A new sample, or `None` if nothing new is available (the last one still holds).
    fn sample(&mut self) -> Result<Option<InputSample>, Self::Error>;
}

/// The 4–20 mA loop of the level transmitter (an ADC channel behind a shunt, on real boards).
pub trait LoopCurrent {
    /// The ADC's error.
    type Error: fmt::Debug;
    /// Loop current, µA.
    fn read_microamps(&mut self) -> Result<u16, Self::Error>;
}

/// Which input failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputError<P, L> {
    /// Reading a switch pin failed.
    Pin(P),
    /// Reading the loop current failed.
    Level(L),
}

/// Sensor inputs on pins: lid-closed, lid-open and gate switches (high = on) and the level loop.
pub struct PinInputs<P, L> {
    lid_closed: P,
    lid_open: P,
    gate_open: P,
    level: L,
}

impl<P: InputPin, L: LoopCurrent> PinInputs<P, L> {
    /// Takes the pins and the loop-current channel.
    pub fn new(lid_closed: P, lid_open: P, gate_open: P, level: L) -> Self {
        PinInputs {
            lid_closed,
            lid_open,
            gate_open,
            level,
        }
    }

    /// Gives the pins and the channel back.
    pub fn release(self) -> (P, P, P, L) {
        (self.lid_closed, self.lid_open, self.gate_open, self.level)
    }
}

impl<P: InputPin, L: LoopCurrent> SensorInputs for PinInputs<P, L> {
    type Error = InputError<P::Error, L::Error>;

    fn sample(&mut self) -> Result<Option<InputSample>, Self::Error> {
        Ok(Some(InputSample {
            lid_closed: self.lid_closed.is_high().map_err(InputError::Pin)?,
            lid_open: self.lid_open.is_high().map_err(InputError::Pin)?,
            gate_open: self.gate_open.is_high().map_err(InputError::Pin)?,
            level_ua: self.level.read_microamps().map_err(InputError::Level)?,
        }))
    }
}

/// Why a step of the main loop failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<U, I> {
    /// The UART failed.
    Uart(U),
    /// The sensor inputs failed.
    Inputs(I),
}

/// A seal node driven by a UART and sensor inputs.
pub struct NodeRunner<U, I, S> {
    uart: U,
    inputs: I,
    node: SealNode<S>,
    last_sample: Option<InputSample>,
}

impl<U, I, S> NodeRunner<U, I, S>
where
    U: Read + ReadReady + Write,
    I: SensorInputs,
    S: SettingsStorage,
{
    /// Takes the UART, the inputs and the node.
    pub fn new(uart: U, inputs: I, node: SealNode<S>) -> Self {
        NodeRunner {
            uart,
            inputs,
            node,
            last_sample: None,
        }
    }

    /// One turn of the main loop at `now`.
    pub fn step(&mut self, now: Instant) -> Result<(), Error<U::Error, I::Error>> {
        if let Some(sample) = self.inputs.sample().map_err(Error::Inputs)? {
            self.last_sample = Some(sample);
        }
        if let Some(sample) = self.last_sample {
            self.node.update_inputs(sample, now);
        }
        let mut buf = [0u8; 32];
        while self.uart.read_ready().map_err(Error::Uart)? {
            let n = self.uart.read(&mut buf).map_err(Error::Uart)?;
            if n == 0 {
                break;
            }
            for &byte in buf.get(..n).unwrap_or(&[]) {
                if let Some(reply) = self.node.on_byte(byte, now) {
                    self.uart.write_all(&reply).map_err(Error::Uart)?;
                    self.uart.flush().map_err(Error::Uart)?;
                }
            }
        }
        if let Some(reply) = self.node.poll(now) {
            self.uart.write_all(&reply).map_err(Error::Uart)?;
            self.uart.flush().map_err(Error::Uart)?;
        }
        Ok(())
    }

    /// The node.
    pub fn node(&self) -> &SealNode<S> {
        &self.node
    }

    /// The node, mutably (e.g. to take a line change and reconfigure the UART).
    pub fn node_mut(&mut self) -> &mut SealNode<S> {
        &mut self.node
    }

    /// The sensor inputs, mutably.
    pub fn inputs_mut(&mut self) -> &mut I {
        &mut self.inputs
    }

    /// The UART, mutably.
    pub fn uart_mut(&mut self) -> &mut U {
        &mut self.uart
    }

    /// Gives everything back.
    pub fn release(self) -> (U, I, SealNode<S>) {
        (self.uart, self.inputs, self.node)
    }
}
