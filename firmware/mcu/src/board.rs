//! The board: the only module that touches hardware (and so the only one with `unsafe`).
//!
//! QEMU's mps2-an386 has CMSDK APB UARTs: UART0 at 0x4000_4000 carries Modbus RTU, UART1 at
//! 0x4000_5000 carries sensor samples from the host (on a real board: pins and an ADC). Registers:
//! DATA +0x00, STATE +0x04 (bit 0 TX full, bit 1 RX full), CTRL +0x08 (bit 0 TX enable, bit 1 RX
//! enable), BAUDDIV +0x10 (≥ 16, or QEMU ignores the UART). Invariant: each `CmsdkUart` is created
//! once per base address, in `main`, so nothing else aliases its registers.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

use sealwatch_firmware::inputs_line::InputLineParser;
use sealwatch_firmware::io::SensorInputs;
use sealwatch_firmware::InputSample;

/// UART0: Modbus RTU.
pub const UART0_BASE: usize = 0x4000_4000;
/// UART1: sensor samples.
pub const UART1_BASE: usize = 0x4000_5000;
/// The board's peripheral clock.
pub const SYSCLK_HZ: u32 = 25_000_000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;

/// A CMSDK APB UART, polled.
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// Takes the UART at `base` and enables it at `baud`.
    ///
    /// Only call once per `base` (see the module invariant).
    pub fn new(base: usize, baud: u32) -> Self {
        let uart = CmsdkUart { base };
        let div = (SYSCLK_HZ / baud.max(1)).max(16);
        uart.write_reg(BAUDDIV, div);
        uart.write_reg(CTRL, 0b11);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base + offset` is a register of this UART (module invariant), word aligned.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn rx_ready(&self) -> bool {
        self.read_reg(STATE) & STATE_RX_FULL != 0
    }

    fn write_byte(&mut self, b: u8) {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        self.write_reg(DATA, u32::from(b));
    }
}

impl embedded_io::ErrorType for CmsdkUart {
    type Error = Infallible;
}

impl embedded_io::ReadReady for CmsdkUart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.rx_ready())
    }
}

impl embedded_io::Read for CmsdkUart {
    /// Blocks until at least one byte is there (embedded-io's contract), then takes what is.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.rx_ready() {}
        let mut n = 0;
        while n < buf.len() && self.rx_ready() {
            buf[n] = self.read_reg(DATA) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for CmsdkUart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Sensor samples read as text lines from a UART (`S <closed> <open> <gate> <µA>`).
pub struct UartInputs {
    uart: CmsdkUart,
    parser: InputLineParser,
}

impl UartInputs {
    /// Reads samples from `uart`.
    pub fn new(uart: CmsdkUart) -> Self {
        UartInputs {
            uart,
            parser: InputLineParser::new(),
        }
    }
}

impl UartInputs {
    /// Writes `text` back to the host on the samples line (diagnostics).
    pub fn report(&mut self, text: &[u8]) {
        for &b in text {
            self.uart.write_byte(b);
        }
    }
}

/// Stack high-water mark: the stack is painted at boot and the untouched words counted later.
pub mod stack {
    const PAINT: u32 = 0xAAAA_AAAA;

    extern "C" {
        /// End of .bss/.uninit (cortex-m-rt): the lowest address the stack may grow down to.
        static mut __sheap: u32;
        /// Top of the stack (cortex-m-rt).
        static mut _stack_start: u32;
    }

    fn bounds() -> (usize, usize) {
        // Only the addresses of the linker symbols are taken, never their contents.
        (
            core::ptr::addr_of!(__sheap) as usize,
            core::ptr::addr_of!(_stack_start) as usize,
        )
    }

    /// Paints the free stack below the current stack pointer (less a margin for this call).
    pub fn paint() {
        let (bottom, _) = bounds();
        let sp = cortex_m::register::msp::read() as usize;
        let mut p = bottom;
        while p + 4 <= sp.saturating_sub(256) {
            // SAFETY: between the end of static data and the live stack: nothing lives there.
            unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
    }

    /// Bytes of stack used at the deepest point so far.
    pub fn peak() -> usize {
        let (bottom, top) = bounds();
        let mut p = bottom;
        // SAFETY: reads of RAM between the end of static data and the top of the stack.
        while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        top - p
    }
}

impl SensorInputs for UartInputs {
    type Error = Infallible;

    fn sample(&mut self) -> Result<Option<InputSample>, Infallible> {
        let mut latest = None;
        while self.uart.rx_ready() {
            let b = self.uart.read_reg(DATA) as u8;
            if let Some(s) = self.parser.feed(b) {
                latest = Some(s);
            }
        }
        Ok(latest)
    }
}
