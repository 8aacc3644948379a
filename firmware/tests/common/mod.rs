//! Shared fixtures for the firmware's integration tests: the golden node, a storage that fails,
//! a storage that loses power mid-write, and helpers that feed bytes with timestamps.
#![allow(dead_code, unreachable_pub)]

pub use sealwatch_firmware::test_vectors as golden;
pub mod procs;

use sealwatch_firmware::settings::{Slot, RECORD_LEN};
use sealwatch_firmware::{DeviceIdentity, Instant, RamStorage, SealNode, SettingsStorage};

use golden::Fixture;

/// The golden node's unit.
pub const UNIT: u8 = golden::GOLDEN_UNIT;

pub use golden::{golden_settings, SEALED};

/// Settings storage that refuses every write (and, once `fail_reads`, every read).
#[derive(Debug, Clone, Default)]
pub struct FailingStorage {
    pub inner: RamStorage,
    pub fail_writes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFault;

impl SettingsStorage for FailingStorage {
    type Error = StorageFault;
    fn read(&mut self, slot: Slot, record: &mut [u8; RECORD_LEN]) -> Result<(), StorageFault> {
        let _ = self.inner.read(slot, record);
        Ok(())
    }
    fn write(&mut self, slot: Slot, record: &[u8; RECORD_LEN]) -> Result<(), StorageFault> {
        if self.fail_writes {
            return Err(StorageFault);
        }
        let _ = self.inner.write(slot, record);
        Ok(())
    }
}

/// A node built for `fixture`, inputs settled at t = 100 ms (sealed).
pub fn node(fixture: Fixture) -> SealNode<FailingStorage> {
    let mut node = SealNode::commissioned(
        FailingStorage::default(),
        DeviceIdentity::seal_node(golden::GOLDEN_SERIAL),
        golden_settings(),
    )
    .unwrap();
    if fixture == Fixture::FailingStorage {
        // Rebuild on the same records with writes failing from now on.
        let mut storage = node.release();
        storage.fail_writes = true;
        node = SealNode::new(storage, DeviceIdentity::seal_node(golden::GOLDEN_SERIAL));
    }
    node.update_inputs(SEALED, Instant::from_millis(0));
    node.update_inputs(SEALED, Instant::from_millis(100));
    node
}

/// Time the golden tests start feeding bytes at.
pub const T0: Instant = Instant::from_millis(1_000);

/// Feeds `(byte, at)` pairs and then polls well after the last; returns every reply in order.
pub fn feed_timed<S: SettingsStorage>(
    node: &mut SealNode<S>,
    bytes: &[(u8, Instant)],
) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    let mut last = T0;
    for &(b, at) in bytes {
        if let Some(r) = node.on_byte(b, at) {
            replies.push(r.to_vec());
        }
        last = at;
    }
    if let Some(r) = node.poll(last.plus(std::time::Duration::from_millis(50))) {
        replies.push(r.to_vec());
    }
    replies
}

/// Feeds all bytes at the same instant (a burst), then polls after the silence.
pub fn feed_burst<S: SettingsStorage>(
    node: &mut SealNode<S>,
    bytes: &[u8],
    at: Instant,
) -> Vec<Vec<u8>> {
    let timed: Vec<_> = bytes.iter().map(|&b| (b, at)).collect();
    feed_timed(node, &timed)
}

/// CRC-16/MODBUS written out independently of the crate.
pub fn crc16_reference(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Appends the CRC (low byte first).
pub fn with_crc(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend_from_slice(&crc16_reference(body).to_le_bytes());
    v
}

/// True if some window of `bytes` (4..=256 long) is a CRC-valid frame for `unit` or broadcast.
pub fn has_valid_window(bytes: &[u8], units: &[u8]) -> bool {
    (0..bytes.len()).any(|i| {
        (i + 4..=bytes.len().min(i + 256)).any(|j| {
            let w = &bytes[i..j];
            units.contains(&w[0])
                && crc16_reference(&w[..w.len() - 2]).to_le_bytes() == w[w.len() - 2..]
        })
    })
}
