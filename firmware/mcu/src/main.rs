//! sealwatch seal node on QEMU's mps2-an386: the Modbus RTU slave on UART0, sensor samples from
//! the host on UART1, settings in RAM (the board has no flash controller; a real board puts a
//! flash-backed `SettingsStorage` here), time from SysTick at 1 kHz.
//!
//! The node boots uncommissioned (defaults, seal state unknown) until a technician commits
//! settings over Modbus. The UART has no bit timing under QEMU, so frames end by their length and
//! the silence fallback is set to 20 ms.
#![no_std]
#![no_main]

mod board;

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use panic_halt as _;
use sealwatch_firmware::io::NodeRunner;
use sealwatch_firmware::{DeviceIdentity, Instant, RamStorage, SealNode};

use board::{CmsdkUart, UartInputs, SYSCLK_HZ, UART0_BASE, UART1_BASE};

/// Milliseconds since boot (wraps after 49.7 days; `main` extends it to 64 bits).
static MILLIS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Writes `stack-peak <bytes>\n` on the samples line.
fn report_stack(inputs: &mut UartInputs) {
    let mut digits = [0u8; 10];
    let mut n = board::stack::peak();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    inputs.report(b"stack-peak ");
    inputs.report(&digits[i..]);
    inputs.report(b"\n");
}

#[entry]
fn main() -> ! {
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        loop {
            cortex_m::asm::nop();
        }
    };
    board::stack::paint();
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(SYSCLK_HZ / 1_000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();

    let modbus = CmsdkUart::new(UART0_BASE, 115_200);
    let inputs = UartInputs::new(CmsdkUart::new(UART1_BASE, 115_200));
    let mut node = SealNode::new(RamStorage::blank(), DeviceIdentity::seal_node("QEMU-0001"));
    node.set_frame_silence(Some(Duration::from_millis(20)));
    let mut runner = NodeRunner::new(modbus, inputs, node);

    let mut last = 0u32;
    let mut wraps = 0u64;
    let mut next_report = 0u64;
    loop {
        let ms = MILLIS.load(Ordering::Relaxed);
        if ms < last {
            wraps += 1;
        }
        last = ms;
        let now = Instant::from_millis((wraps << 32) | u64::from(ms));
        // Both peripherals are infallible.
        let _ = runner.step(now);
        // A pty has no line settings to change; a real board reprograms UART0 here.
        let _ = runner.node_mut().take_line_change();
        // Every 500 ms, the stack high-water mark goes back to the host on the samples line.
        if now.as_millis() >= next_report {
            next_report = now.as_millis() + 500;
            report_stack(runner.inputs_mut());
        }
    }
}
