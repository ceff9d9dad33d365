//! The one way every listener (HTTP, TCP, syslog) hands a batch to the engine: a batch, what
//! admission holds for it (its bytes in the budget, a place in the principal's queue share,
//! released when the engine answers), and what to do when the engine's queue is full. It
//! returns the completion to await. The back-pressure is the same for all: waiting for room
//! blocks this worker (`block_in_place`), which stops that connection reading.

use auditlog_engine::{Engine, EngineError, EventBatch, Receipts};
use tokio::sync::oneshot;

/// The engine's answer for one submission: receipts once durable, or why not.
pub type Pending = oneshot::Receiver<Result<Receipts, EngineError>>;

/// What to do when the engine's submission queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse with `QueueFull`, nothing queued (an HTTP request's first part: 503).
    Refuse,
    /// Wait for room (TCP frames, syslog batches, a request's later parts).
    Wait,
}

/// Queues `batch`; `held` is dropped when the engine answers (or at once if it is refused
/// here). A dropped `Pending` sender means the engine went away: read it as `ShuttingDown`.
pub fn submit<H: Send + 'static>(
    engine: &Engine,
    batch: EventBatch,
    held: H,
    when_full: WhenFull,
) -> Result<Pending, EngineError> {
    let (tx, rx) = oneshot::channel();
    // Runs on the sequencer thread: only a send, and what admission held given back.
    let done: auditlog_engine::Done = Box::new(move |r| {
        drop(held);
        let _ = tx.send(r);
    });
    match engine.offer(batch, done)? {
        None => Ok(rx),
        Some(waiting) => match when_full {
            WhenFull::Refuse => Err(waiting.refuse()),
            WhenFull::Wait => {
                tokio::task::block_in_place(|| waiting.wait(engine))?;
                Ok(rx)
            }
        },
    }
}

/// The receipts, once the engine answered.
pub async fn settle(p: Pending) -> Result<Receipts, EngineError> {
    p.await.unwrap_or(Err(EngineError::ShuttingDown))
}
