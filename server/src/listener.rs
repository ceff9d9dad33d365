//! Accepting connections for the HTTP and TCP listeners: a connection limit (a semaphore
//! permit travels with each connection and is released when it closes), the TLS handshake
//! (off the accept loop, each bounded by a timeout, so a client that never finishes its
//! handshake holds one slot until then and blocks no one), and the client certificate's
//! names for mutual TLS.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::{client_names, ClientNames};

/// Who is at the other end: its address and, under mutual TLS, its certificate's names.
#[derive(Clone, Debug)]
pub struct Peer {
    pub client: ClientNames,
    pub addr: Option<SocketAddr>,
}

/// Open connections (or requests) per key — a source address, a principal — under a cap:
/// one client cannot take every slot. A slot is given back when its `SourceSlot` drops.
pub struct SourceSlots<K = IpAddr> {
    max: usize,
    open: std::sync::Mutex<HashMap<K, usize>>,
}

pub struct SourceSlot<K: std::hash::Hash + Eq + Clone = IpAddr> {
    slots: Arc<SourceSlots<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> SourceSlots<K> {
    pub fn new(max: usize) -> Arc<SourceSlots<K>> {
        assert!(max > 0);
        Arc::new(SourceSlots {
            max,
            open: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `key`, or `None` when it has `max` open already.
    pub fn take(self: &Arc<Self>, key: K) -> Option<SourceSlot<K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for SourceSlot<K> {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection's two slots, taken on accept before anything else (the TLS handshake
/// included), so a client that never speaks holds at most its own source's share.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _source: SourceSlot,
}

/// Why a connection was not admitted, for the log and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// The listener's `connections_max` is reached.
    Full,
    /// This source address has its `connections_per_source_max` open.
    Source,
}

/// Takes a connection's slots: the source's first, then the listener's.
pub fn admit(
    addr: SocketAddr,
    connections: &Arc<Semaphore>,
    sources: &Arc<SourceSlots>,
) -> Result<Admitted, Shed> {
    let source = sources.take(addr.ip()).ok_or(Shed::Source)?;
    let permit = connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| Shed::Full)?;
    Ok(Admitted {
        _permit: permit,
        _source: source,
    })
}

/// As `admit`, for a connection that made room by closing an idle one: the listener's slot
/// is waited for, up to `wait` (the closed connection's task gives it back).
pub async fn admit_waiting(
    addr: SocketAddr,
    connections: &Arc<Semaphore>,
    sources: &Arc<SourceSlots>,
    wait: Duration,
) -> Result<Admitted, Shed> {
    let source = sources.take(addr.ip()).ok_or(Shed::Source)?;
    let permit = tokio::time::timeout(wait, connections.clone().acquire_owned())
        .await
        .map_err(|_| Shed::Full)?
        .map_err(|_| Shed::Full)?;
    Ok(Admitted {
        _permit: permit,
        _source: source,
    })
}

pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Binds a listener whose kernel accept queue holds `backlog` connections (capped by
/// `net.core.somaxconn`): under a flood of connections the accept loop falls behind for
/// moments, and a short queue then drops a prober's connection.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<tokio::net::TcpListener> {
    let s = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(backlog)
}

/// Completes the TLS handshake (if any) within `timeout`.
pub async fn handshake(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
    timeout: Duration,
) -> io::Result<(Io, ClientNames)> {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return Ok((Io::Plain(stream), ClientNames::default()));
    };
    let s = tokio::time::timeout(timeout, acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let names = client_names(s.get_ref().1.peer_certificates());
    Ok((Io::Tls(Box::new(s)), names))
}

/// A connection with its slots under the connection limits, and a write deadline: a
/// write that makes no progress for `write_timeout` fails (a client that stops reading an
/// export or a response cannot hold the connection and its buffers).
pub struct Conn {
    io: Io,
    _slots: Admitted,
    write_timeout: Option<Duration>,
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

macro_rules! delegate {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl Conn {
    /// Applies the write deadline to a write's outcome: progress clears it, a wait arms it
    /// (once), and a wait past it is an error.
    fn deadline<T>(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(limit) = self.write_timeout else {
            return r;
        };
        match r {
            Poll::Ready(x) => {
                self.write_stall = None;
                Poll::Ready(x)
            }
            Poll::Pending => {
                let stall = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {} ms", limit.as_millis()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = delegate!(self.as_mut(), s => s.poll_write(cx, buf));
        self.deadline(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = delegate!(self.as_mut(), s => s.poll_flush(cx));
        self.deadline(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = delegate!(self.as_mut(), s => s.poll_write_vectored(cx, bufs));
        self.deadline(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Conn {
    pub fn new(io: Io, slots: Admitted, write_timeout: Option<Duration>) -> Conn {
        Conn {
            io,
            _slots: slots,
            write_timeout,
            write_stall: None,
        }
    }
}
