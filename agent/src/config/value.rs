//! How a point's registers are read: its value type and word order (closed sets a profile names).

/// How the registers of a point are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// One bit.
    Bool,
    /// 16-bit unsigned.
    U16,
    /// 16-bit two's complement.
    I16,
    /// 32-bit unsigned.
    U32,
    /// 32-bit two's complement.
    I32,
    /// 64-bit unsigned (values above 2^53 lose precision as engineering values).
    U64,
    /// IEEE 754 single.
    F32,
    /// IEEE 754 double.
    F64,
}

impl ValueType {
    /// Registers (or bits) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            ValueType::Bool | ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::F64 => 4,
        }
    }
}

/// Order of bytes and words of multi-register values, named by where the bytes of the big-endian
/// value `A B C D` end up on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WordOrder {
    /// Big-endian: high word first, high byte first.
    #[default]
    #[serde(alias = "abcd")]
    Abcd,
    /// Words swapped (low word first), bytes big-endian within each word.
    #[serde(alias = "cdab")]
    Cdab,
    /// Bytes swapped within each word, high word first.
    #[serde(alias = "badc")]
    Badc,
    /// Little-endian: low word first, low byte first.
    #[serde(alias = "dcba")]
    Dcba,
}

impl WordOrder {
    /// Whether the words arrive low word first.
    pub fn words_reversed(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    /// Whether the two bytes inside each register are swapped.
    pub fn bytes_swapped(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }
}
