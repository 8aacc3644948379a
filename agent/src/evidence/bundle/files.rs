//! Reading a bundle's files as outside input: only plain files directly inside the bundle
//! folder, by a name from a fixed list, each with a size limit; never a symbolic link, a device
//! or a path that leaves the folder.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::BundleError;

/// The files a bundle holds besides `manifest.json`, and the largest each may be.
pub const FILES: [(&str, u64); 7] = [
    ("records.jsonl", 8 << 30),
    ("public_key.txt", 4 << 10),
    ("cycles.csv", 1 << 30),
    ("breaches.csv", 1 << 30),
    ("nmhc_hourly.csv", 1 << 30),
    ("completeness.csv", 1 << 30),
    ("report.html", 1 << 30),
];

/// The largest `manifest.json` read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The longest line of `records.jsonl` read (a record is a few hundred bytes).
pub const MAX_RECORD_LINE: usize = 1 << 20;

/// The size limit of a file of the fixed list.
pub fn limit_of(name: &str) -> Option<u64> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// Opens `dir/name` for reading if it is a plain file within `limit` bytes.
pub fn open(dir: &Path, name: &str, limit: u64) -> Result<(std::fs::File, PathBuf), BundleError> {
    let path = dir.join(name);
    let invalid = |why: String| BundleError::Invalid {
        path: path.clone(),
        why,
    };
    let meta = std::fs::symlink_metadata(&path).map_err(|source| BundleError::Io {
        path: path.clone(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(invalid(
            "not a plain file (a link, a device or a folder); a bundle holds plain files only"
                .to_owned(),
        ));
    }
    // Not through a link swapped in since, and without waiting on a pipe or device that was.
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
    // Checked again on the open file, which cannot change kind under us.
    let meta = file.metadata().map_err(|source| BundleError::Io {
        path: path.clone(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(invalid("not a plain file".to_owned()));
    }
    if meta.len() > limit {
        return Err(invalid(format!(
            "{} bytes, more than the {limit} a bundle's {name} may have",
            meta.len()
        )));
    }
    Ok((file, path))
}

/// Reads `dir/name` whole (a plain file within `limit` bytes).
pub fn read(dir: &Path, name: &str, limit: u64) -> Result<Vec<u8>, BundleError> {
    let (file, path) = open(dir, name, limit)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(BundleError::Invalid {
            path,
            why: format!("grew past {limit} bytes while being read"),
        });
    }
    Ok(bytes)
}
