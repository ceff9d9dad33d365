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

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::listener::{admit, admit_waiting, handshake, Conn, Peer, Shed, SourceSlots};

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
    let idle = Arc::new(IdleConns::default());
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
        let admitted = admit(addr, &connections, &sources);
        // Full: a source under its fair share makes room (`IdleConns::evict`).
        let made_room = matches!(admitted, Err(Shed::Full)) && idle.evict(addr.ip());
        if let (Err(why), false) = (&admitted, made_room) {
            shed.count(*why);
            if tls.is_none() {
                // A fresh socket's send buffer is empty: this never waits.
                let _ = stream.try_write(BUSY);
            }
            continue;
        }
        let (tls, router, limits, stop) =
            (tls.clone(), router.clone(), limits.clone(), stop.clone());
        let (connections, sources, shed, idle) = (
            connections.clone(),
            sources.clone(),
            shed.clone(),
            idle.clone(),
        );
        tokio::spawn(async move {
            let slots = match admitted {
                Ok(s) => s,
                // The evicted connection's task gives its slot back in a moment.
                Err(_) => match admit_waiting(addr, &connections, &sources, EVICTION_WAIT).await {
                    Ok(s) => s,
                    Err(why) => {
                        shed.count(why);
                        if tls.is_none() {
                            let _ = stream.try_write(BUSY);
                        }
                        return;
                    }
                },
            };
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
                (&limits, &idle),
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
    (limits, idle): (&HttpLimits, &Arc<IdleConns>),
    mut stop: watch::Receiver<bool>,
) {
    let addr: Option<SocketAddr> = peer.addr;
    let me = idle.register(addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip()));
    let ctl = me.ctl.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            let router = router.clone();
            // Busy from the request's headers until its response body is sent or dropped.
            let busy = Busy::new(&ctl);
            async move {
                let resp = router
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e| match e {});
                Ok::<_, Infallible>(resp.map(|b| axum::body::Body::new(Tracked { b, _busy: busy })))
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
        _ = me.ctl.evict.notified() => {
            if me.ctl.busy.load(Ordering::SeqCst) == 0 {
                // No request in progress: closed at once (a half-sent header included).
                return;
            }
            // A request started after all: it finishes, then the connection closes.
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = r {
        tracing::debug!("{addr:?}: connection ended: {e}");
    }
}

/// How long a connection that closed an idle one waits for its slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// One listener's open connections in the order they were accepted, each with its source
/// and the requests it has in progress. When the listener is full, a new connection from a
/// source under its fair share closes one with no request in progress of a heavier source
/// instead of being shed (`evict`). A flood from a few addresses is shed as it arrives;
/// a client with few connections (a prober) displaces the flood's and is never displaced
/// by it. Within a source, one that never sent a whole request goes before one idle
/// between keep-alive requests, the oldest first. (Oldest-first across all sources, every
/// arrival evicting, was tried: at a flood's two thousand arrivals a second a prober's
/// fresh connection became the oldest before its request was read, and the evictions'
/// waiters queued ahead of it.)
#[derive(Default)]
pub struct IdleConns {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnCtl>>>,
}

struct ConnCtl {
    source: IpAddr,
    /// A request's headers arrived on it once.
    served: AtomicBool,
    /// Requests in progress, their response bodies included.
    busy: AtomicUsize,
    evicted: AtomicBool,
    evict: Notify,
}

/// A connection's entry, removed when it closes.
struct Registered {
    idle: Arc<IdleConns>,
    id: u64,
    ctl: Arc<ConnCtl>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.idle.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
    }
}

impl IdleConns {
    fn register(self: &Arc<Self>, source: IpAddr) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let ctl = Arc::new(ConnCtl {
            source,
            served: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, ctl.clone());
        Registered {
            idle: self.clone(),
            id,
            ctl,
        }
    }

    /// Makes room, in a full listener, for a connection from `from` by telling one with no
    /// request in progress to close: one of the sources holding more connections than
    /// `from` would with this one, the heaviest first. Only a source holding less than its
    /// fair share (the open connections over the sources holding them) may: a flood's own
    /// arrivals are shed at once, which costs the server nothing, while a client with few
    /// connections displaces the flood's. False if there is no room to make.
    fn evict(&self, from: IpAddr) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for c in open.values().filter(|c| !c.evicted.load(Ordering::SeqCst)) {
            *held.entry(c.source).or_insert(0) += 1;
        }
        let mine = held.get(&from).copied().unwrap_or(0);
        let sources = held.len() + usize::from(mine == 0);
        if mine * sources >= open.len() {
            return false;
        }
        let mut heavier: Vec<(usize, IpAddr)> = held
            .iter()
            .filter(|&(_, &n)| n > mine + 1)
            .map(|(s, n)| (*n, *s))
            .collect();
        heavier.sort_unstable_by(|a, b| b.cmp(a));
        match heavier.iter().find_map(|&(_, s)| Self::idle_of(&open, s)) {
            Some(c) => {
                c.evicted.store(true, Ordering::SeqCst);
                // Kept if the connection's task is not waiting yet.
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// `source`'s connection with no request in progress that goes first: never served
    /// before served, the oldest first.
    fn idle_of(open: &BTreeMap<u64, Arc<ConnCtl>>, source: IpAddr) -> Option<&Arc<ConnCtl>> {
        let mut idle = open.values().filter(|c| {
            c.source == source
                && c.busy.load(Ordering::SeqCst) == 0
                && !c.evicted.load(Ordering::SeqCst)
        });
        let first = idle.next();
        first
            .filter(|c| !c.served.load(Ordering::SeqCst))
            .or_else(|| idle.find(|c| !c.served.load(Ordering::SeqCst)))
            .or(first)
    }
}

/// One request in progress on its connection.
struct Busy(Arc<ConnCtl>);

impl Busy {
    fn new(ctl: &Arc<ConnCtl>) -> Busy {
        ctl.busy.fetch_add(1, Ordering::SeqCst);
        ctl.served.store(true, Ordering::SeqCst);
        Busy(ctl.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in progress until it is sent or
/// dropped (an export streams long after the handler returned).
struct Tracked {
    b: axum::body::Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.b).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.b.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.b.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn evicted(c: &Registered) -> bool {
        c.ctl.evicted.load(Ordering::SeqCst)
    }

    /// A flood's arrivals make no room; a prober's displace the flood's oldest, never the
    /// prober's own connection, nor a busy one.
    #[test]
    fn a_client_under_its_fair_share_displaces_a_flood() {
        let idle = Arc::new(IdleConns::default());
        let prober = idle.register(ip(1));
        let flood: Vec<_> = (0..5).map(|_| idle.register(ip(9))).collect();
        let busy = Busy::new(&flood[0].ctl);
        assert!(!idle.evict(ip(9)), "the flood is over its share");
        assert!(idle.evict(ip(2)), "a newcomer under its share");
        assert!(evicted(&flood[1]) && !evicted(&flood[0]) && !evicted(&prober));
        assert!(idle.evict(ip(1)));
        assert!(evicted(&flood[2]) && !evicted(&prober));
        drop(busy);
    }

    /// Within a source: never served before served, oldest first; none heavier, no room.
    #[test]
    fn within_a_source_unserved_go_first() {
        let idle = Arc::new(IdleConns::default());
        let kept = idle.register(ip(9));
        drop(Busy::new(&kept.ctl));
        let (a, b) = (idle.register(ip(9)), idle.register(ip(9)));
        assert!(idle.evict(ip(1)));
        assert!(evicted(&a) && !evicted(&kept) && !evicted(&b));
        assert!(idle.evict(ip(1)));
        assert!(evicted(&b) && !evicted(&kept));
        assert!(
            !idle.evict(ip(1)),
            "one left: not heavier than a newcomer's would be"
        );
        drop((kept, a, b));
        assert!(idle.open.lock().expect("lock").is_empty());
    }
}
