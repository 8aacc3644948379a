//! The status page's listener, bounded against a careless or hostile peer: a connection limit
//! below the file-descriptor budget, a deadline for each request's header (which also closes
//! idle keep-alive connections) and for each request as a whole, small header and body sizes,
//! a `Host` check when bound to loopback (DNS rebinding), and a shutdown that closes every open
//! connection within a grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// What the listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections open at once; more wait in the kernel's backlog (no descriptor used).
    pub max_connections: usize,
    /// A request's header must arrive within this, counted from the connection or from the
    /// end of the previous answer (so an idle keep-alive connection is closed after it).
    pub header_timeout: Duration,
    /// A request must be read and answered (its header sent) within this.
    pub request_timeout: Duration,
    /// At stop, open connections get this long to finish, then they are cut.
    pub shutdown_grace: Duration,
    /// Answer only requests whose `Host` names this machine (set when bound to loopback).
    pub loopback_hosts_only: bool,
}

/// Connections open at once when the file-descriptor budget allows.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request header (and read buffer), bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

impl Bounds {
    /// The bounds for a page bound to `addr` with `max_connections` allowed.
    pub fn for_address(addr: SocketAddr, max_connections: usize) -> Bounds {
        Bounds {
            max_connections,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(3),
            loopback_hosts_only: addr.ip().is_loopback(),
        }
    }
}

/// Whether a `Host` header names this machine: `localhost`, `127.0.0.0/8` or `[::1]`, with
/// or without a port. A page bound to loopback answers nothing else, so a web page elsewhere
/// that re-points its own name at 127.0.0.1 (DNS rebinding) cannot read it.
pub fn loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => {
                return inside
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.is_loopback())
            }
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn plain(code: StatusCode, text: &'static str) -> Response {
    (code, [(header::CONNECTION, "close")], text).into_response()
}

/// Serves `app` on `listener` within `bounds` until `stop`; returns when every connection is
/// closed.
pub async fn serve(listener: TcpListener, app: Router, bounds: Bounds, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(64);
    let mut accept_failures = crate::telemetry::Quiet::new(Duration::from_secs(60));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was taken:
                    // wait a little rather than spin.
                    if let Some(unlogged) = accept_failures.allow(std::time::Instant::now()) {
                        tracing::warn!(error = %e, repeats_since_last_line = unlogged, "status page cannot accept a connection");
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let host = request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned);
                async move {
                    if bounds.loopback_hosts_only && !loopback_host(host.as_deref()) {
                        return Ok::<_, Infallible>(plain(
                        StatusCode::MISDIRECTED_REQUEST,
                        "this page is bound to loopback and answers only Host: localhost, 127.0.0.1 or [::1]\n",
                    ));
                    }
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let request = request.map(axum::body::Body::new);
                    match tokio::time::timeout(bounds.request_timeout, app.oneshot(request)).await {
                        Ok(Ok(answer)) => Ok(answer),
                        Ok(Err(never)) => match never {},
                        Err(_) => Ok(plain(
                            StatusCode::REQUEST_TIMEOUT,
                            "the request was not complete in time\n",
                        )),
                    }
                }
            },
        );
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(bounds.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            open = connections.len(),
            "status page connections still open after the grace period; closed"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_hosts_naming_this_machine_pass_the_loopback_check() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.3.2.1:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(loopback_host(Some(ok)), "{ok}");
        }
        for bad in [
            "attacker.example",
            "127.0.0.1.attacker.example",
            "localhost.attacker.example:8080",
            "[::2]:80",
            "[::1]x",
            "10.0.0.1",
            "",
        ] {
            assert!(!loopback_host(Some(bad)), "{bad}");
        }
        assert!(!loopback_host(None));
    }
}
