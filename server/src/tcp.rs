//! The TCP ingest listener (FORMATS.md §11.1): binary frames, a HELLO with a bearer token,
//! pipelined BATCH frames answered in order by ACK or ERROR. Every length is checked
//! before it is read, the number of batches in flight per connection and the number of
//! connections are bounded, and a full engine queue slows the reader (back-pressure)
//! instead of buffering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auditlog_engine::{Engine, EngineError, EventBatch, Receipts, Submitter};
use auditlog_formats::frame::{
    self, ErrorCode, FrameError, FrameHeader, FrameType, HelloOk, FRAME_HEADER_BYTES,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::{Access, Role, Tokens};
use crate::listener::{admit, handshake, Conn, Shed, SourceSlots};

#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub frame_bytes_max: u32,
    pub batches_in_flight_max: u32,
    pub hello_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// Open connections from one source address.
    pub connections_per_source_max: usize,
}

/// What every connection shares.
pub struct TcpContext {
    pub engine: Arc<Engine>,
    pub tokens: Arc<Tokens>,
    pub limits: TcpLimits,
    pub tls: Option<TlsAcceptor>,
    /// Client certificate name -> role, under mutual TLS.
    pub client_roles: BTreeMap<String, Role>,
    /// Open connections: `connections_max` permits.
    pub connections: Arc<Semaphore>,
}

pub async fn serve(listener: TcpListener, ctx: Arc<TcpContext>, mut stop: watch::Receiver<bool>) {
    let handshake_timeout = Duration::from_millis(ctx.limits.hello_timeout_ms);
    let sources = SourceSlots::new(ctx.limits.connections_per_source_max);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    // The slots come first, before any handshake: a connection over a cap
                    // costs nothing but its accept. Plain TCP is told why (one frame into an
                    // empty send buffer never waits); TLS is closed without a handshake.
                    let slots = match admit(addr, &ctx.connections, &sources) {
                        Ok(s) => s,
                        Err(why) => {
                            if ctx.tls.is_none() {
                                let what = match why {
                                    Shed::Full => "too many connections",
                                    Shed::Source => "too many connections from this address",
                                };
                                let _ = stream.try_write(&error_frame(0, ErrorCode::Busy, what));
                            }
                            continue;
                        }
                    };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let (io, client) = match handshake(stream, ctx.tls.as_ref(), handshake_timeout).await {
                            Ok(x) => x,
                            Err(e) => {
                                tracing::debug!("tcp handshake: {e}");
                                return;
                            }
                        };
                        let cert = client
                            .role(&ctx.client_roles)
                            .map(|(name, r)| (r, Submitter::cert(name)));
                        let (rd, wr) = tokio::io::split(Conn::new(io, slots, None));
                        if let Err(e) = connection(rd, wr, &ctx, cert).await {
                            tracing::debug!("tcp connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// What the writer half sends next, in the order the reader produced it.
enum Reply {
    Frame(Vec<u8>),
    Ack(u32, oneshot::Receiver<Result<Receipts, EngineError>>),
}

fn error_frame(request_id: u32, code: ErrorCode, message: &str) -> Vec<u8> {
    crate::metrics::count_tcp_error(code);
    frame::frame(
        FrameType::Error,
        request_id,
        &frame::error_payload(code, message),
    )
}

fn code_of(e: &EngineError) -> ErrorCode {
    match e {
        EngineError::BadEvent { .. } | EngineError::BadRequest(_) => ErrorCode::BadEvent,
        EngineError::SubmissionTooLarge { .. } => ErrorCode::TooLarge,
        EngineError::QueueFull(_) => ErrorCode::Busy,
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
        _ => ErrorCode::EngineFailed,
    }
}

enum ReadError {
    Closed,
    Io(std::io::Error),
    Frame(FrameError),
}

async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    payload_bytes_max: u32,
) -> Result<(FrameHeader, Vec<u8>), ReadError> {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let h = FrameHeader::decode(&h, payload_bytes_max).map_err(ReadError::Frame)?;
    let mut p = vec![0u8; h.payload_bytes as usize];
    r.read_exact(&mut p).await.map_err(ReadError::Io)?;
    Ok((h, p))
}

async fn connection<R, W>(
    rd: R,
    wr: W,
    ctx: &TcpContext,
    cert: Option<(Role, Submitter)>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (engine, limits) = (&ctx.engine, &ctx.limits);
    let mut rd = BufReader::with_capacity(1 << 16, rd);
    // The channel bounds batches in flight: when the writer is that far behind, the reader
    // stops reading, and TCP flow control slows the client.
    let (tx, rx) = mpsc::channel::<Reply>(limits.batches_in_flight_max.max(1) as usize);
    let writer = tokio::spawn(write_replies(wr, rx));

    let hello = tokio::time::timeout(
        Duration::from_millis(limits.hello_timeout_ms),
        read_frame(&mut rd, 4 + frame::TOKEN_BYTES_MAX as u32),
    )
    .await;
    let mut authenticated = None;
    let refusal = match hello {
        Err(_) => Some((ErrorCode::BadFrame, "no HELLO in time".to_string())),
        Ok(Err(ReadError::Frame(e))) => Some((ErrorCode::BadFrame, e.to_string())),
        Ok(Err(_)) => None,
        Ok(Ok((h, _))) if h.frame_type != FrameType::Hello => {
            Some((ErrorCode::BadFrame, "the first frame must be HELLO".into()))
        }
        Ok(Ok((_, p))) => match frame::decode_hello(&p) {
            Err(e) => Some((ErrorCode::BadFrame, e.to_string())),
            Ok((v, _)) if v != PROTOCOL_VERSION => Some((
                ErrorCode::UnsupportedVersion,
                format!("version {v} is not supported (1 is)"),
            )),
            // An empty token stands for the client certificate's role, under mutual TLS.
            // The submitter recorded is the server's name for the credential.
            Ok((_, token)) => match cert.filter(|_| token.is_empty()).ok_or(()).or_else(|_| {
                ctx.tokens
                    .principal_of_token(token.as_bytes())
                    .map(|p| (p.role, Submitter::token(&p.name)))
                    .map_err(|_| ())
            }) {
                Err(_) => Some((ErrorCode::Unauthorized, "unknown token".into())),
                Ok((role, _)) if !Access::Ingest.allows(role) => Some((
                    ErrorCode::Forbidden,
                    format!("role {} may not ingest", role.name()),
                )),
                Ok((_, submitter)) => {
                    let ok = HelloOk {
                        version: PROTOCOL_VERSION,
                        tree_hash: engine.tree_hash().code(),
                        frame_bytes_max: limits.frame_bytes_max,
                        batches_in_flight_max: limits.batches_in_flight_max,
                        submitter: Some(submitter.as_str().to_string()),
                    };
                    let _ = tx
                        .send(Reply::Frame(frame::frame(
                            FrameType::HelloOk,
                            0,
                            &ok.encode(),
                        )))
                        .await;
                    authenticated = Some(submitter);
                    None
                }
            },
        },
    };
    if let Some((code, msg)) = refusal {
        let _ = tx.send(Reply::Frame(error_frame(0, code, &msg))).await;
    }
    if let Some(submitter) = authenticated {
        read_batches(&mut rd, &tx, engine, limits, &submitter).await;
    }
    drop(tx);
    match writer.await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// Frames up to this size are validated on the async worker itself (~250 events of
/// 256 B, ~0.1 ms of CPU); larger ones through `block_in_place`.
const INLINE_FRAME_BYTES_MAX: usize = 64 << 10;

/// Reads BATCH frames until the client stops, a frame is malformed, or the writer is gone;
/// each is validated, submitted, and queued for the writer in arrival order.
async fn read_batches<R: AsyncRead + Unpin>(
    rd: &mut R,
    tx: &mpsc::Sender<Reply>,
    engine: &Arc<Engine>,
    limits: &TcpLimits,
    submitter: &Submitter,
) {
    loop {
        let next = tokio::time::timeout(
            Duration::from_millis(limits.idle_timeout_ms),
            read_frame(rd, limits.frame_bytes_max),
        )
        .await;
        let (h, payload) = match next {
            Err(_) | Ok(Err(ReadError::Closed)) => break,
            Ok(Err(ReadError::Io(e))) => {
                tracing::debug!("tcp read: {e}");
                break;
            }
            Ok(Err(ReadError::Frame(e))) => {
                let code = if matches!(e, FrameError::TooLarge { .. }) {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::BadFrame
                };
                let _ = tx
                    .send(Reply::Frame(error_frame(0, code, &e.to_string())))
                    .await;
                break;
            }
            Ok(Ok(x)) => x,
        };
        if h.frame_type != FrameType::Batch {
            let _ = tx
                .send(Reply::Frame(error_frame(
                    0,
                    ErrorCode::BadFrame,
                    &format!("expected BATCH, got {:?}", h.frame_type),
                )))
                .await;
            break;
        }
        let id = h.request_id;
        // Validation, record framing and leaf hashing are CPU work (~0.5 µs an event). A
        // small frame is done right here; `block_in_place` hands the worker's other tasks
        // to another thread, and doing that per frame cost more than the frame itself (and
        // put thread wake-ups into every ack's latency). A large frame leaves the worker.
        let built = if payload.len() <= INLINE_FRAME_BYTES_MAX {
            build_batch(engine, &payload, submitter)
        } else {
            tokio::task::block_in_place(|| build_batch(engine, &payload, submitter))
        };
        let reply = match built {
            Err((code, msg)) => Reply::Frame(error_frame(id, code, &msg)),
            Ok(batch) => {
                let (done_tx, done_rx) = oneshot::channel();
                let done: auditlog_engine::Done = Box::new(move |r| {
                    let _ = done_tx.send(r);
                });
                // A full engine queue blocks here, so this connection stops reading; with
                // room, queueing is a channel push and stays on the worker.
                let submitted = if engine.queue_has_room() {
                    engine.submit(batch, done)
                } else {
                    tokio::task::block_in_place(|| engine.submit(batch, done))
                };
                match submitted {
                    Ok(()) => Reply::Ack(id, done_rx),
                    Err(e) => Reply::Frame(error_frame(id, code_of(&e), &e.to_string())),
                }
            }
        };
        if tx.send(reply).await.is_err() {
            break; // the writer is gone: the client stopped reading
        }
    }
}

fn build_batch(
    engine: &Engine,
    payload: &[u8],
    submitter: &Submitter,
) -> Result<EventBatch, (ErrorCode, String)> {
    let events = frame::decode_batch(payload).map_err(|e| (ErrorCode::BadFrame, e.to_string()))?;
    let mut batch = engine.new_batch(submitter.clone());
    for (position, e) in events.enumerate() {
        batch.push(e).map_err(|err| match err {
            EngineError::BadEvent { reason, .. } => (
                ErrorCode::BadEvent,
                format!("event {position} refused: {reason}"),
            ),
            other => (code_of(&other), format!("event {position}: {other}")),
        })?;
    }
    Ok(batch)
}

async fn write_replies<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::Receiver<Reply>,
) -> std::io::Result<()> {
    let mut wr = BufWriter::with_capacity(1 << 16, wr);
    while let Some(reply) = rx.recv().await {
        let bytes = match reply {
            Reply::Frame(f) => f,
            Reply::Ack(id, mut done) => {
                let outcome = match done.try_recv() {
                    Ok(r) => Ok(r),
                    Err(oneshot::error::TryRecvError::Empty) => {
                        // Not durable yet: what is already written goes out first.
                        // Waiting with it in the buffer held every ack behind the next
                        // group commit, and under pipelining behind ~20 of them (an ack
                        // latency p99 of ~13 ms at half rate).
                        wr.flush().await?;
                        done.await
                    }
                    Err(oneshot::error::TryRecvError::Closed) => done.await,
                };
                match outcome {
                    Ok(Ok(r)) => frame::frame(
                        FrameType::Ack,
                        id,
                        &frame::ack_payload(r.first_index, r.received_at_unix_ns, &r.leaf_hashes),
                    ),
                    Ok(Err(e)) => error_frame(id, code_of(&e), &e.to_string()),
                    Err(_) => error_frame(
                        id,
                        ErrorCode::ShuttingDown,
                        "the engine stopped before this batch was durable",
                    ),
                }
            }
        };
        wr.write_all(&bytes).await?;
        // Coalesce replies that are ready; flush when none is waiting.
        if rx.is_empty() {
            wr.flush().await?;
        }
    }
    wr.flush().await?;
    wr.shutdown().await
}
