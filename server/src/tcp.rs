//! The TCP ingest listener (FORMATS.md §12.1): binary frames, a HELLO with a bearer token,
//! pipelined BATCH frames answered in order by ACK or ERROR. Every length is checked
//! before it is read, the number of batches in flight per connection and the number of
//! connections are bounded, and a full engine queue slows the reader (back-pressure)
//! instead of buffering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use auditlog_engine::{Engine, EngineError, EventBatch, Submitter};
use auditlog_formats::frame::{
    self, ErrorCode, FrameError, FrameHeader, FrameType, HelloOk, FRAME_HEADER_BYTES,
    PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::admission::Admission;
use crate::submit::{submit, Pending, WhenFull};
use tokio_rustls::TlsAcceptor;

use crate::auth::{Access, Role, Tokens};
use crate::listener::{admit, handshake, Conn, Shed, SourceSlots};

#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub frame_bytes_max: u32,
    pub batches_in_flight_max: u32,
    pub hello_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// A write of acknowledgements that makes no progress this long cuts the connection.
    pub write_timeout_ms: u64,
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
    /// Event bytes in memory and each principal's share of the engine's queue.
    pub admission: Arc<Admission>,
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
                        let (rd, wr) = tokio::io::split(Conn::new(
                            io,
                            slots,
                            Some(Duration::from_millis(ctx.limits.write_timeout_ms)),
                        ));
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
    Ack(u32, Pending),
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

/// A frame, its payload counted against the byte budget (when given) from before it is
/// read: a connection waits for room, unread, rather than allocating past the budget.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    payload_bytes_max: u32,
    budget: Option<&Admission>,
) -> Result<(FrameHeader, Vec<u8>, Option<crate::admission::Bytes>), ReadError> {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let h = FrameHeader::decode(&h, payload_bytes_max).map_err(ReadError::Frame)?;
    let held = match budget {
        Some(b) => Some(b.bytes(h.payload_bytes as usize).await),
        None => None,
    };
    let mut p = vec![0u8; h.payload_bytes as usize];
    r.read_exact(&mut p).await.map_err(ReadError::Io)?;
    Ok((h, p, held))
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
        // Small and bounded: not counted against the byte budget.
        read_frame(&mut rd, 4 + frame::TOKEN_BYTES_MAX as u32, None),
    )
    .await;
    let mut authenticated = None;
    let refusal = match hello {
        Err(_) => Some((ErrorCode::BadFrame, "no HELLO in time".to_string())),
        Ok(Err(ReadError::Frame(e))) => Some((ErrorCode::BadFrame, e.to_string())),
        Ok(Err(_)) => None,
        Ok(Ok((h, _, _))) if h.frame_type != FrameType::Hello => {
            Some((ErrorCode::BadFrame, "the first frame must be HELLO".into()))
        }
        Ok(Ok((_, p, _))) => match frame::decode_hello(&p) {
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
        read_batches(&mut rd, &tx, ctx, &submitter).await;
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
    ctx: &TcpContext,
    submitter: &Submitter,
) {
    let (engine, limits, admission) = (&ctx.engine, &ctx.limits, &*ctx.admission);
    loop {
        let next = tokio::time::timeout(
            Duration::from_millis(limits.idle_timeout_ms),
            read_frame(rd, limits.frame_bytes_max, Some(admission)),
        )
        .await;
        let (h, payload, bytes) = match next {
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
                // The frame's bytes and a place in the principal's share of the queue are
                // held until the engine answers; waiting for a share, the connection is
                // not read.
                let held = (bytes, admission.share(submitter).await);
                // With room, queueing is a channel push and stays on the worker; a full
                // engine queue is waited for off it, and this connection stops reading.
                match submit(engine, batch, held, WhenFull::Wait) {
                    Ok(pending) => Reply::Ack(id, pending),
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
        batch.add(e).map_err(|err| match err {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use auditlog_engine::{EngineConfig, FaultHooks};
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn event(n: u64) -> Vec<u8> {
        format!(
            r#"{{"timestamp":"2026-11-23T10:00:00.123Z","event_type":"auth","actor":"user-{n}","action":"login","resource":"/srv/app","outcome":"success","details":{{"pad":"{}"}}}}"#,
            "x".repeat(200)
        )
        .into_bytes()
    }

    fn batch_frame(id: u32, first: u64) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        for n in first..first + 250 {
            frame::push_batch_event(&mut p, &event(n));
        }
        frame::frame(FrameType::Batch, id, &p)
    }

    /// A client over an in-memory stream: HELLO sent; frames written by the caller.
    async fn client(ctx: &Arc<TcpContext>, token: &str) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let (rd, wr) = tokio::io::split(theirs);
        let ctx = ctx.clone();
        tokio::spawn(async move { connection(rd, wr, &ctx, None).await });
        let mut ours = ours;
        ours.write_all(&frame::frame(
            FrameType::Hello,
            0,
            &frame::hello_payload(token),
        ))
        .await
        .expect("hello");
        ours
    }

    /// Reads frames from the server until `acks` ACKs came back.
    async fn read_acks<R: AsyncRead + Unpin>(s: &mut R, acks: usize) {
        let mut seen = 0;
        while seen < acks {
            let mut h = [0u8; FRAME_HEADER_BYTES];
            s.read_exact(&mut h).await.expect("frame header");
            let h = FrameHeader::decode(&h, 1 << 20).expect("header");
            let mut p = vec![0u8; h.payload_bytes as usize];
            s.read_exact(&mut p).await.expect("payload");
            match h.frame_type {
                FrameType::Ack => seen += 1,
                FrameType::HelloOk => {}
                other => panic!("{other:?}: {}", String::from_utf8_lossy(&p)),
            }
        }
    }

    /// One writer flooding its connection while the engine cannot keep up takes its share
    /// of the submission queue and no more: another writer's batch still goes into the
    /// queue at once. (Without shares the flood filled the queue, and the other writer's
    /// connection waited behind it.) Released, both are acknowledged in full.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_writer_cannot_take_the_whole_submission_queue() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg = EngineConfig::new(dir.path());
        cfg.batch_bytes_max = 128 << 10;
        cfg.submission_bytes_max = 128 << 10;
        cfg.segment_bytes = 1 << 20;
        cfg.block_raw_bytes = 16 << 10;
        cfg.seal_queue_segments_max = 1;
        cfg.queue_submissions_max = 16;
        let faults = Arc::new(FaultHooks::default());
        faults.hold_sealer.store(true, SeqCst);
        cfg.faults = Some(faults.clone());
        // Released however the test ends: a connection blocked in `submit` would otherwise
        // hold the runtime's shutdown, and a failure would hang instead of failing.
        struct Release(Arc<FaultHooks>);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.hold_sealer.store(false, SeqCst);
            }
        }
        let _release = Release(faults.clone());
        let engine = Arc::new(Engine::open(cfg, None).expect("open"));
        let tokens = Tokens::from_pairs(&[("token-a", Role::Writer)]);
        tokens.insert(sha2::Sha256::digest(b"token-b").into(), Role::Writer, "b");
        let share = 4;
        let ctx = Arc::new(TcpContext {
            engine: engine.clone(),
            tokens: Arc::new(tokens),
            limits: TcpLimits {
                frame_bytes_max: 4 << 20,
                batches_in_flight_max: 64,
                hello_timeout_ms: 10_000,
                idle_timeout_ms: 60_000,
                write_timeout_ms: 30_000,
                connections_per_source_max: 8,
            },
            tls: None,
            client_roles: BTreeMap::new(),
            connections: Arc::new(Semaphore::new(8)),
            admission: Admission::new(256 << 20, share),
        });

        // Writer a: far more than the engine takes before it waits on the held sealer.
        let a = client(&ctx, "token-a").await;
        let frames_a = 60u32;
        let (mut a_rd, mut a_wr) = tokio::io::split(a);
        let flood = tokio::spawn(async move {
            for i in 0..frames_a {
                a_wr.write_all(&batch_frame(i + 1, u64::from(i) * 250))
                    .await
                    .expect("a writes");
            }
            a_wr
        });
        // Wait until the engine is stuck and the queue holds what a may have there.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut still = 0;
        let mut last = (u64::MAX, usize::MAX);
        while still < 20 {
            let s = engine.status();
            let now = (s.tree_size, s.queue_depth);
            still = if now == last { still + 1 } else { 0 };
            last = now;
            assert!(std::time::Instant::now() < deadline, "never settled: {s:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let stuck = engine.status();

        // Writer b: its batch is queued at once, beside a's. (Checked after the engine is
        // released: a failure while a connection waits in `submit` would hang the runtime.)
        let mut b = client(&ctx, "token-b").await;
        b.write_all(&batch_frame(1, 1_000_000))
            .await
            .expect("b writes");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let b_queued = loop {
            if engine.status().queue_depth == stuck.queue_depth + 1 {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };

        faults.hold_sealer.store(false, SeqCst);
        let b_done = tokio::spawn(async move { read_acks(&mut b, 1).await });
        let a_done = tokio::spawn(async move { read_acks(&mut a_rd, frames_a as usize).await });
        tokio::time::timeout(Duration::from_secs(60), async {
            b_done.await.expect("b");
            a_done.await.expect("a");
        })
        .await
        .expect("every batch acknowledged once the engine caught up");
        drop(flood.await.expect("flood"));
        assert_eq!(engine.tree_size(), u64::from(frames_a) * 250 + 250);
        assert!(stuck.tree_size < u64::from(frames_a) * 250, "{stuck:?}");
        assert!(
            stuck.queue_depth < share,
            "a held more than its share of the queue: {stuck:?}"
        );
        assert!(b_queued, "b's batch waited behind a's flood");
    }
}
