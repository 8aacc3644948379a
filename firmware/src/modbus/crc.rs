//! CRC-16/MODBUS (poly 0x8005 reflected = 0xA001, init 0xFFFF, no final XOR).
//!
//! On the wire the CRC follows the PDU **low byte first**. [`crc16`] returns the value as a number;
//! [`crc_ok`] checks a whole ADU including its two trailing CRC bytes.

use crc::{Crc, CRC_16_MODBUS};

const MODBUS: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// CRC-16/MODBUS of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    MODBUS.checksum(bytes)
}

/// True if `adu` is at least 3 bytes long and its last two bytes are the CRC (low byte first) of
/// the bytes before them.
pub fn crc_ok(adu: &[u8]) -> bool {
    match adu.len().checked_sub(2) {
        Some(body) if body >= 1 => {
            let (data, tail) = adu.split_at(body);
            let expected = crc16(data);
            tail == expected.to_le_bytes()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        // The catalogue check value: CRC-16/MODBUS("123456789") = 0x4B37.
        assert_eq!(crc16(b"123456789"), 0x4B37);
        // Modbus spec example: read holding registers, unit 1, address 0, count 1 -> 84 0A.
        assert_eq!(
            crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]).to_le_bytes(),
            [0x84, 0x0A]
        );
        // Modbus over serial line guide: 02 07 -> CRC 41 12 (low byte first on the wire).
        assert_eq!(crc16(&[0x02, 0x07]).to_le_bytes(), [0x41, 0x12]);
        assert_eq!(crc16(&[]), 0xFFFF);
    }

    #[test]
    fn crc_ok_checks_tail() {
        assert!(crc_ok(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A]));
        assert!(!crc_ok(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x0A, 0x84]));
        assert!(!crc_ok(&[0x84, 0x0A]));
        assert!(!crc_ok(&[]));
    }
}
