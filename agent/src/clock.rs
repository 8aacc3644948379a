//! Wall-clock time for the I/O shell. Pure code (rules, codecs, plans) never calls this: it is
//! given timestamps.

/// Now, in ms since the Unix epoch (UTC). A clock before 1970 reads as 0.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
