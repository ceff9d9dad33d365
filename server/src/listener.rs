//! Accepting connections for the HTTP and TCP listeners: a connection limit (a semaphore
//! permit travels with each connection and is released when it closes), the TLS handshake
//! (off the accept loop, each bounded by a timeout, so a client that never finishes its
//! handshake holds one slot until then and blocks no one), and the client certificate's
//! names for mutual TLS.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::{client_names, ClientNames};

/// Who is at the other end: under mutual TLS, its certificate's names.
#[derive(Clone, Debug)]
pub struct Peer {
    pub client: ClientNames,
}

pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
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

/// A connection with its slot under the connection limit.
pub struct Conn {
    io: Io,
    _permit: OwnedSemaphorePermit,
}

/// Accepts HTTP connections up to `connections_max`; past it they wait in the kernel's
/// backlog. Handshakes run in their own tasks and finished connections are handed to axum
/// through a channel.
pub fn spawn_acceptor(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    handshake_timeout: Duration,
) -> io::Result<ChannelListener> {
    let (tx, rx) = mpsc::channel::<(Conn, Peer)>(64);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = connections.clone().acquire_owned().await else {
                return; // closed: the server is stopping
            };
            let (stream, addr) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, as axum does.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match handshake(stream, tls.as_ref(), handshake_timeout).await {
                    Ok((io, client)) => {
                        let conn = Conn {
                            io,
                            _permit: permit,
                        };
                        let _ = tx.send((conn, Peer { client })).await;
                    }
                    Err(e) => tracing::debug!("{addr}: {e}"),
                }
            });
        }
    });
    Ok(ChannelListener { rx })
}

pub struct ChannelListener {
    rx: mpsc::Receiver<(Conn, Peer)>,
}

impl axum::serve::Listener for ChannelListener {
    type Io = Conn;
    type Addr = Peer;

    async fn accept(&mut self) -> (Conn, Peer) {
        match self.rx.recv().await {
            Some(c) => c,
            // The acceptor is gone; axum's graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            client: ClientNames::default(),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ChannelListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, ChannelListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
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

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// For the TCP ingest listener, which owns its accept loop: the same delegation over an
/// `Io` without a permit.
impl Conn {
    pub fn new(io: Io, permit: OwnedSemaphorePermit) -> Conn {
        Conn {
            io,
            _permit: permit,
        }
    }
}
