//! The agent's Ed25519 signing key: made by `sealwatch keygen`, kept in a file only its owner
//! can read (mode 0600; a key file others can read is refused), with the public key beside it
//! (`<key>.pub`), both as hex text.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Key file problems; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Cannot read or write the file.
    #[error("key file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is readable or writable by others.
    #[error("key file {path} is accessible to others (mode {mode:o}); run `chmod 600 {path}` — a signing key others can read proves nothing")]
    TooOpen {
        /// File.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("key file {path} does not hold a hex Ed25519 key ({why})")]
    Malformed {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Refusing to overwrite.
    #[error("{path} exists; refusing to overwrite a signing key (records signed with it could no longer be attributed). Move it away first")]
    Exists {
        /// File.
        path: PathBuf,
    },
    /// No randomness.
    #[error("no randomness available for a new key: {0}")]
    Random(String),
}

/// The public key file next to a key file.
pub fn public_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Makes a new key at `path` (mode 0600) and its public key at `<path>.pub`.
pub fn generate(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return Err(KeyError::Exists {
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    let public = public_path(path);
    std::fs::write(&public, format!("{}\n", public_hex(&key.verifying_key()))).map_err(
        |source| KeyError::Io {
            path: public,
            source,
        },
    )?;
    Ok(key)
}

/// Loads a signing key, refusing files others can access.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let text = crate::bounded::read_text(path, crate::bounded::SECRET_BYTES).map_err(io)?;
    let bytes = hex::decode(text.trim()).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| KeyError::Malformed {
        path: path.to_owned(),
        why: format!("{} bytes, expected 32", b.len()),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Hex text of a public key.
pub fn public_hex(key: &VerifyingKey) -> String {
    hex::encode(key.to_bytes())
}

/// The fingerprint of a public key: SHA-256 of its 32 bytes, as 64 hex digits. Printed at
/// `keygen` and `export` and on every audit report, so a key can be checked against one that
/// came from outside the bundle.
pub fn fingerprint(key: &VerifyingKey) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(key.to_bytes()))
}

/// A fingerprint in groups of four hex digits, for reading aloud and printing.
pub fn fingerprint_text(key: &VerifyingKey) -> String {
    let fp = fingerprint(key);
    fp.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shortest fingerprint accepted from a person: 32 hex digits (128 bits).
pub const MIN_FINGERPRINT_DIGITS: usize = 32;

/// Whether `given` (hex, any case, spaces and colons ignored, at least
/// [`MIN_FINGERPRINT_DIGITS`] digits) is `key`'s fingerprint or its beginning.
pub fn fingerprint_matches(given: &str, key: &VerifyingKey) -> Result<bool, String> {
    let digits: String = given
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "'{}' is not a hex fingerprint",
            given.escape_debug()
        ));
    }
    if digits.len() < MIN_FINGERPRINT_DIGITS || digits.len() > 64 {
        return Err(format!(
            "a fingerprint has {MIN_FINGERPRINT_DIGITS} to 64 hex digits; '{}' has {}",
            given.escape_debug(),
            digits.len()
        ));
    }
    Ok(fingerprint(key).starts_with(&digits))
}

/// Parses a public key from hex text (as in a `.pub` file).
pub fn parse_public(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|e| e.to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, expected 32", b.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// Loads a public key file (at most 4 KiB are read: a key is 65 bytes of text).
pub fn load_public(path: &Path) -> Result<VerifyingKey, KeyError> {
    use std::io::Read as _;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(io)?;
    parse_public(&text).map_err(|why| KeyError::Malformed {
        path: path.to_owned(),
        why,
    })
}
