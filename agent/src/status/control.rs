//! Who may give the running agent commands (open and close windows): a person on this machine
//! who can read the control token. The agent writes a fresh random token at every start next
//! to its database, readable by its own user only; `sealwatch maintenance` reads it and sends
//! it. A web page in a browser on the gateway cannot read the file, so it cannot forge a
//! command (no cross-site request), and a proxy or tunnel that makes a remote client look local
//! does not give the token away.
//!
//! Checked for every command, besides the token: the peer is this machine, the body is JSON
//! (`Content-Type: application/json`, which a page cannot send without the browser asking
//! first), the `Host` names this machine (no DNS rebinding) and an `Origin`, if sent, is this
//! page's own.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The header the token travels in.
pub const TOKEN_HEADER: &str = "x-sealwatch-token";

/// Where the control token of the agent with this database lives.
pub fn token_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".control-token");
    PathBuf::from(p)
}

/// Writes a fresh token for the agent with database `db`; returns it.
pub fn write_token(db: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = hex::encode(raw);
    let path = token_path(db);
    // Never written through a link, and never readable by others, even for a moment.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// Reads the token of the agent with database `db`.
pub fn read_token(db: &Path) -> std::io::Result<String> {
    let text = crate::bounded::read_text(&token_path(db), crate::bounded::SECRET_BYTES)?;
    Ok(text.trim().to_owned())
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// From another machine.
    #[error("commands are taken from this machine only (sealwatch maintenance)")]
    NotLocal,
    /// No or the wrong token.
    #[error("no valid control token; use sealwatch maintenance on this machine (it reads the agent's token file)")]
    Token,
    /// Not JSON.
    #[error("a command is JSON (Content-Type: application/json)")]
    NotJson,
    /// A `Host` that is not this machine.
    #[error("the Host header '{0}' does not name this machine")]
    Host(String),
    /// Sent by a page of another site.
    #[error("the Origin '{0}' is not this status page")]
    Origin(String),
}

fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// Checks a command's peer and headers against the `token` of this run.
pub fn check(
    peer_is_loopback: bool,
    headers: &axum::http::HeaderMap,
    token: &str,
) -> Result<(), Refused> {
    use axum::http::header;
    if !peer_is_loopback {
        return Err(Refused::NotLocal);
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or("");
    if !local_host(host) {
        return Err(Refused::Host(host.to_owned()));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let own = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme) == Some(host));
        if !own {
            return Err(Refused::Origin(origin.to_owned()));
        }
    }
    let json = text(header::CONTENT_TYPE)
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refused::NotJson);
    }
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Compared whole, at the same cost for any wrong token.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same || token.is_empty() {
        return Err(Refused::Token);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_a_local_json_command_with_the_token_is_taken() {
        let good = [
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
            (TOKEN_HEADER, "abc"),
        ];
        assert_eq!(check(true, &headers(&good), "abc"), Ok(()));
        assert_eq!(check(false, &headers(&good), "abc"), Err(Refused::NotLocal));
        assert_eq!(check(true, &headers(&good), "abd"), Err(Refused::Token));
        // A page's form post: text/plain, no token.
        let form = [
            ("host", "127.0.0.1:8080"),
            ("content-type", "text/plain"),
            ("origin", "http://evil.example"),
        ];
        assert!(check(true, &headers(&form), "abc").is_err());
        // DNS rebinding: a foreign name resolving to this machine.
        let rebound = [
            ("host", "evil.example:8080"),
            ("content-type", "application/json"),
            (TOKEN_HEADER, "abc"),
        ];
        assert!(matches!(
            check(true, &headers(&rebound), "abc"),
            Err(Refused::Host(_))
        ));
        let foreign = [
            ("host", "localhost:8080"),
            ("origin", "http://evil.example"),
            ("content-type", "application/json"),
            (TOKEN_HEADER, "abc"),
        ];
        assert!(matches!(
            check(true, &headers(&foreign), "abc"),
            Err(Refused::Origin(_))
        ));
        let own = [
            ("host", "[::1]:8080"),
            ("origin", "http://[::1]:8080"),
            ("content-type", "application/json; charset=utf-8"),
            (TOKEN_HEADER, "abc"),
        ];
        assert_eq!(check(true, &headers(&own), "abc"), Ok(()));
    }

    #[test]
    fn the_token_file_is_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("site.db");
        let token = write_token(&db).unwrap();
        assert_eq!(read_token(&db).unwrap(), token);
        let mode = std::fs::metadata(token_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        // A link planted in its place is replaced, not followed.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::fs::remove_file(token_path(&db)).unwrap();
        std::os::unix::fs::symlink(&target, token_path(&db)).unwrap();
        let again = write_token(&db).unwrap();
        assert_ne!(again, token);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
