//! The syslog TCP listener (FORMATS.md §14.3–14.4): RFC 6587 framing detected per message,
//! RFC 5424 and RFC 3164 messages, each checked (it parses; its event would fit) and
//! appended once, as received (record version 3, FORMATS.md §4): the audit event is derived
//! from it when read, so per message this does framing, a parse and a copy.
//!
//! Syslog has no acknowledgements, so this listener batches by what arrived: every read
//! from the socket (up to `syslog_read_bytes_max`) is decoded and its messages go to the
//! engine as one submission. Up to `syslog_batches_in_flight_max` submissions per
//! connection may wait for durability; beyond that the connection is not read, and TCP flow
//! control slows the sender. A message that does not parse is counted and dropped (a relay
//! cannot be told); a framing error or an over-long message closes the connection, since
//! the stream can no longer be split.
//!
//! With `[siem] syslog_tls` the listener speaks syslog over TLS (RFC 5425) only: the
//! handshake runs in the connection's own task, bounded by `server.tls_handshake_timeout_ms`,
//! after the connection took its slot under `syslog_connections_max`, so a client that never
//! finishes a handshake holds one slot until the timeout and blocks nobody else. RFC 5425
//! frames messages with octet counting; the decoder accepts that (and LF framing) as on
//! plain TCP. A failed handshake (plain text, an unknown or missing client certificate)
//! closes the connection with nothing stored.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use auditlog_engine::{Engine, EngineError, EventBatch, Pushed, Submitter};

use crate::admission::Admission;
use crate::listener::{admit, SourceSlots};
use crate::submit::{submit, Pending, WhenFull};
use auditlog_formats::syslog::{self, Decoder};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::siem_config::{SiemConfig, SyslogTls};

/// Listener counters, shown by `/metrics`.
#[derive(Default)]
pub struct SyslogCounters {
    pub messages: AtomicU64,
    pub stored: AtomicU64,
    pub refused: AtomicU64,
    pub framing_errors: AtomicU64,
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

pub static COUNTERS: SyslogCounters = SyslogCounters {
    messages: AtomicU64::new(0),
    stored: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    framing_errors: AtomicU64::new(0),
    connections: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    tls_handshake_failures: AtomicU64::new(0),
};

/// The TLS side of the listener: the acceptor and the handshake's time limit.
#[derive(Clone)]
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
}

impl ListenerTls {
    /// Loads the listener's certificate, key and optional client CA.
    pub fn load(t: &SyslogTls, handshake_timeout: Duration) -> anyhow::Result<ListenerTls> {
        use anyhow::Context;
        let config =
            crate::tls::server_config(&t.cert_path, &t.key_path, t.client_ca_path.as_deref(), true)
                .context("siem.syslog_tls")?;
        Ok(ListenerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout,
        })
    }
}

pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    cfg: SiemConfig,
    tls: Option<ListenerTls>,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(cfg.syslog_connections_max));
    let sources = SourceSlots::new(cfg.syslog_connections_per_source_max);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // The source's slot and the listener's, before any handshake.
                    let Ok(permit) = admit(peer, &slots, &sources) else {
                        // Syslog has no way to say "busy": close, and the sender retries.
                        COUNTERS.connections_refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    };
                    let (engine, cfg, tls) = (engine.clone(), cfg.clone(), tls.clone());
                    let admission = admission.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        COUNTERS.connections.fetch_add(1, Ordering::Relaxed);
                        let ip = peer.ip();
                        // The submitter recorded: the peer's address, and under mutual
                        // TLS the first name of its verified certificate.
                        let r = match tls {
                            None => {
                                let from = Submitter::syslog(ip, None);
                                connection(stream, from, (&engine, &admission), &cfg, stop).await
                            }
                            Some(tls) => match handshake(stream, &tls).await {
                                Ok(s) => {
                                    let names =
                                        crate::tls::client_names(s.get_ref().1.peer_certificates());
                                    let from = Submitter::syslog(
                                        ip,
                                        names.0.first().map(String::as_str),
                                    );
                                    connection(s, from, (&engine, &admission), &cfg, stop).await
                                }
                                Err(e) => Err(e),
                            },
                        };
                        if let Err(e) = r {
                            tracing::info!("syslog connection from {peer}: {e}");
                        }
                        COUNTERS.connections.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("syslog accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("framing: {0}")]
    Framing(#[from] syslog::FramingError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

/// The server side of an RFC 5425 handshake, within the configured time.
async fn handshake(
    stream: TcpStream,
    tls: &ListenerTls,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, ConnError> {
    let r = match tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )),
    };
    r.map_err(|e| {
        COUNTERS
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        ConnError::Handshake(e)
    })
}

async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    submitter: Submitter,
    (engine, admission): (&Arc<Engine>, &Admission),
    cfg: &SiemConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let mut decoder = Decoder::new(cfg.syslog_message_bytes_max);
    let mut buf = vec![0u8; cfg.syslog_read_bytes_max];
    let mut in_flight: VecDeque<Pending> = VecDeque::new();
    let idle = Duration::from_millis(cfg.syslog_idle_timeout_ms);
    let result = loop {
        let n = tokio::select! {
            _ = stop.changed() => break Ok(()),
            r = tokio::time::timeout(idle, stream.read(&mut buf)) => match r {
                Err(_) => break Ok(()), // idle
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => break Err(e.into()),
            }
        };
        decoder.extend(&buf[..n]);
        // Parsing and hashing are CPU work: off the async workers.
        let built = tokio::task::block_in_place(|| build(engine, &mut decoder, &submitter));
        let (batches, framing) = built;
        for batch in batches {
            while in_flight.len() >= cfg.syslog_batches_in_flight_max {
                if let Some(p) = in_flight.pop_front() {
                    settle(p).await?;
                }
            }
            // Its bytes and its place in the peer's share of the queue, until the engine
            // answers; waiting for either, the connection is not read.
            let held = (
                admission.bytes(batch.body_bytes()).await,
                admission.share(&submitter).await,
            );
            in_flight.push_back(submit(engine, batch, held, WhenFull::Wait)?);
        }
        if let Some(e) = framing {
            COUNTERS.framing_errors.fetch_add(1, Ordering::Relaxed);
            break Err(e.into());
        }
    };
    // What was read is stored before the connection's end is reported.
    while let Some(p) = in_flight.pop_front() {
        settle(p).await?;
    }
    result
}

/// Decodes every complete message buffered, into as few engine batches as the submission
/// limit allows. A framing error ends decoding; the messages before it are kept.
fn build(
    engine: &Engine,
    decoder: &mut Decoder,
    submitter: &Submitter,
) -> (Vec<EventBatch>, Option<syslog::FramingError>) {
    let mut batches = vec![engine.new_batch(submitter.clone())];
    let framing = loop {
        let msg = match decoder.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        COUNTERS.messages.fetch_add(1, Ordering::Relaxed);
        let mut pushed = batches.last_mut().map(|b| b.push_syslog(msg));
        if let Some(Ok(Pushed::Full)) = pushed {
            let mut b = engine.new_batch(submitter.clone());
            pushed = Some(b.push_syslog(msg));
            batches.push(b);
        }
        if let Some(Err(e)) = pushed {
            COUNTERS.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("syslog message dropped: {e}");
        }
    };
    batches.retain(|b| !b.is_empty());
    (batches, framing)
}

async fn settle(p: Pending) -> Result<(), EngineError> {
    let r = crate::submit::settle(p).await?;
    COUNTERS
        .stored
        .fetch_add(r.leaf_hashes.len() as u64, Ordering::Relaxed);
    Ok(())
}
