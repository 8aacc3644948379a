//! Files a user hands over are outside input: read only up to a size that fits what they are
//! (a config, a key, a token), so a wrong path (`/dev/zero`, a log file) is an error that names
//! the file and the limit, not an exhausted memory.

use std::io::Read as _;
use std::path::Path;

/// Largest site config or profile file.
pub const CONFIG_BYTES: u64 = 1 << 20;
/// Largest key, token or certificate file.
pub const SECRET_BYTES: u64 = 64 << 10;
/// Largest replay file.
pub const REPLAY_BYTES: u64 = 1 << 30;

/// The bytes of `path`, at most `limit`; longer is an `InvalidData` error saying so.
pub fn read(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {limit} bytes, more than such a file holds"),
        ));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, limit)?).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endless_file_is_an_error_not_a_memory_exhaustion() {
        let e = super::read_text(std::path::Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("f");
        std::fs::write(&small, "key").unwrap();
        assert_eq!(super::read_text(&small, 3).unwrap(), "key");
    }
}
