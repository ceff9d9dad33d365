//! Serving HTTP connections: our own accept loop and hyper's HTTP/1 connection, not
//! `axum::serve`, because hostile clients must not be able to hold the server:
//!
//! - The accept loop never stops accepting. A connection takes its slots first (its
//!   source's under `connections_per_source_max`, then the listener's under
//!   `connections_max`); when it cannot, it is shed at once: plain HTTP gets a `503` with
//!   `Retry-After` written without waiting, TLS is closed (no handshake is spent on it).
//!   A flood of connections therefore costs the flooder its own share, never a stopped
//!   listener (with `axum::serve` the loop waited for a free slot, and 1,100 idle sockets
//!   that had sent half a request line froze every route, `/health` included).
//! - The TLS handshake runs in the connection's task, under `tls_handshake_timeout_ms`.
//! - hyper's header-read timeout (`header_read_timeout_ms`) bounds both the wait for a
//!   request's headers and a keep-alive connection's idle wait for the next one, so a
//!   client that sends nothing, or a header a byte at a time, is cut.
//! - A write that makes no progress for `write_timeout_ms` fails (`listener::Conn`), so a
//!   client that stops reading an export or a response is cut.
//! - Bodies: each read of a body chunk is bounded by `body_read_timeout_ms` where the body
//!   is read (`ingest::read_body`); the whole request by `request_timeout_ms`.
//!
//! The same loop serves the ops listener (`/health`, `/ready`, `/metrics`), which has its
//! own limits, so probes never queue behind API traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::listener::{admit, handshake, Conn, Peer, Shed, SourceSlots};

/// One HTTP listener's limits.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub connections_max: usize,
    pub connections_per_source_max: usize,
    pub header_read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub tls_handshake_timeout_ms: u64,
}

/// Connections shed by a listener, by reason (for `/metrics`).
#[derive(Default)]
pub struct ShedCounts {
    pub full: AtomicU64,
    pub source: AtomicU64,
}

impl ShedCounts {
    fn count(&self, why: Shed) {
        let c = match why {
            Shed::Full => &self.full,
            Shed::Source => &self.source,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a shed plain-HTTP connection is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 74\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"busy\",\"message\":\"too many connections, retry later\"}}\n";

/// Serves `router` on `listener` until `stop` turns true, then lets requests in flight
/// finish (hyper's graceful shutdown) and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    connections: Arc<Semaphore>,
    shed: Arc<ShedCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let sources = SourceSlots::new(limits.connections_per_source_max);
    loop {
        let (stream, addr) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, as axum does.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slots = match admit(addr, &connections, &sources) {
            Ok(s) => s,
            Err(why) => {
                shed.count(why);
                if tls.is_none() {
                    // A fresh socket's send buffer is empty: this never waits.
                    let _ = stream.try_write(BUSY);
                }
                continue;
            }
        };
        let (tls, router, limits, stop) =
            (tls.clone(), router.clone(), limits.clone(), stop.clone());
        tokio::spawn(async move {
            let handshake_timeout = Duration::from_millis(limits.tls_handshake_timeout_ms);
            let (io, client) = match handshake(stream, tls.as_ref(), handshake_timeout).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("{addr}: {e}");
                    return;
                }
            };
            let write_timeout = Some(Duration::from_millis(limits.write_timeout_ms));
            let conn = Conn::new(io, slots, write_timeout);
            connection(
                conn,
                Peer {
                    client,
                    addr: Some(addr),
                },
                router,
                &limits,
                stop,
            )
            .await;
        });
    }
    // Every connection holds a permit until it closes.
    let _ = connections
        .acquire_many(limits.connections_max as u32)
        .await;
}

async fn connection(
    conn: Conn,
    peer: Peer,
    router: Router,
    limits: &HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let addr: Option<SocketAddr> = peer.addr;
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    router
                        .oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(conn), service);
    tokio::pin!(served);
    let r = tokio::select! {
        r = served.as_mut() => r,
        _ = stop.changed() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = r {
        tracing::debug!("{addr:?}: connection ended: {e}");
    }
}
