//! The way in: an [`EventBatch`] is built on the producer's thread (each event validated,
//! framed and hashed there, in parallel), then handed to the sequencer through one bounded
//! queue. There is one submit path: [`Engine::offer`] queues at once or hands the
//! submission back as [`Waiting`] when the queue is full; the caller decides whether to wait
//! for room ([`Waiting::wait`], the back-pressure) or to refuse. [`Engine::submit`] and
//! [`Engine::append`] are that path for callers that may block.

use auditlog_formats::batch::push_entry;
use auditlog_formats::record::Record;
use auditlog_formats::schema;
use auditlog_formats::{Hash, TreeHash};
use crossbeam_channel::{Sender, TrySendError};

use crate::{now_unix_ns, Done, Engine, EngineError, Receipts, Result, Submitter};

pub(crate) struct Submission {
    pub body: Vec<u8>,
    pub leaf_hashes: Vec<Hash>,
    pub count: u32,
    pub max_classification: u8,
    pub received_at_unix_ns: u64,
    pub done: Done,
}

/// A submission the queue had no room for ([`Engine::offer`]).
pub struct Waiting {
    tx: Sender<Submission>,
    s: Submission,
    capacity: usize,
}

impl Waiting {
    /// Queues it, waiting for room: the back-pressure, on a thread that may block.
    pub fn wait(self, engine: &Engine) -> Result<()> {
        self.tx
            .send(self.s)
            .map_err(|_| EngineError::ShuttingDown)?;
        engine.answer_if_failed();
        Ok(())
    }

    /// Gives up: `QueueFull`, and nothing of it was queued (its `done` is dropped unrun).
    pub fn refuse(self) -> EngineError {
        EngineError::QueueFull(self.capacity)
    }
}

/// Events on their way in, built on the producer's thread: each `push` validates the
/// payload, frames its record and hashes its leaf, so the sequencer only orders and writes.
pub struct EventBatch {
    alg: TreeHash,
    mode: schema::SchemaMode,
    bytes_max: usize,
    received_at_unix_ns: u64,
    /// Who the server authenticated for this submission; every record of it carries it.
    submitter: Submitter,
    body: Vec<u8>,
    leaf_hashes: Vec<Hash>,
    max_classification: u8,
}

impl EventBatch {
    pub fn len(&self) -> usize {
        self.leaf_hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leaf_hashes.is_empty()
    }

    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }

    /// Adds one event, or says the batch is full (`Pushed::Full`: nothing added; it goes
    /// into the next batch). Refused (nothing kept): an invalid event, or one too large for
    /// a submission on its own.
    pub fn push(&mut self, payload: &[u8]) -> Result<Pushed> {
        match self.put(payload)? {
            None => Ok(Pushed::Added),
            Some(_) if !self.is_empty() => Ok(Pushed::Full),
            Some(bytes) => Err(EngineError::SubmissionTooLarge {
                bytes,
                max: self.bytes_max,
            }),
        }
    }

    /// As `push`, for callers whose events must go in this one submission (a TCP frame, a
    /// tool's batch): a full batch is refused with `SubmissionTooLarge`.
    pub fn add(&mut self, payload: &[u8]) -> Result<()> {
        match self.put(payload)? {
            None => Ok(()),
            Some(bytes) => Err(EngineError::SubmissionTooLarge {
                bytes,
                max: self.bytes_max,
            }),
        }
    }

    /// Validates, frames and hashes one event into the batch; `Some(bytes)`, the size the
    /// batch would reach, when it does not fit (nothing added).
    fn put(&mut self, payload: &[u8]) -> Result<Option<usize>> {
        let position = self.leaf_hashes.len();
        let info = schema::validate(payload, self.mode).map_err(|e| EngineError::BadEvent {
            position,
            reason: e.to_string(),
        })?;
        let record = Record {
            received_at_unix_ns: self.received_at_unix_ns,
            submitter: Some(self.submitter.as_str()),
            payload,
        };
        let added = 4 + record.encoded_len();
        if self.body.len() + added > self.bytes_max {
            return Ok(Some(self.body.len() + added));
        }
        let start = self.body.len();
        push_entry(&mut self.body, &record);
        self.leaf_hashes
            .push(self.alg.leaf(&self.body[start + 4..]));
        self.max_classification = self.max_classification.max(info.classification as u8);
        Ok(None)
    }
}

/// What [`EventBatch::push`] did with an event it did not refuse.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Validated, framed, hashed and added.
    Added,
    /// Valid, but the batch has no room for it: nothing added.
    Full,
}

impl Engine {
    /// An empty submission from `submitter`: who the caller authenticated (the server's
    /// token, certificate or syslog peer), or `Submitter::daemon()` for the daemon's own
    /// events. It is written into every record (FORMATS.md §4, version 2).
    pub fn new_batch(&self, submitter: Submitter) -> EventBatch {
        let c = &self.shared.config;
        EventBatch {
            alg: c.tree_hash,
            mode: c.schema,
            bytes_max: c.submission_bytes_max,
            received_at_unix_ns: now_unix_ns(),
            submitter,
            body: Vec::new(),
            leaf_hashes: Vec::new(),
            max_classification: 0,
        }
    }

    fn submission(
        &self,
        batch: EventBatch,
        done: Done,
    ) -> Result<(Sender<Submission>, Submission)> {
        if let Some(f) = self.shared.health.failure() {
            return Err(f.error());
        }
        if let Some(rc) = &self.shared.config.replica {
            let writer = self
                .replica_writer()
                .unwrap_or_else(|| "the writer".to_string());
            return Err(EngineError::ReadOnly(format!(
                "this is a read replica of {}: it takes no writes; send them to {writer}",
                rc.source
            )));
        }
        let tx = self
            .supervisor
            .queue()
            .cloned()
            .ok_or(EngineError::ShuttingDown)?;
        if batch.is_empty() {
            return Err(EngineError::BadRequest("no events".into()));
        }
        Ok((
            tx,
            Submission {
                count: batch.leaf_hashes.len() as u32,
                body: batch.body,
                leaf_hashes: batch.leaf_hashes,
                max_classification: batch.max_classification,
                received_at_unix_ns: batch.received_at_unix_ns,
                done,
            },
        ))
    }

    /// Queues a batch if the queue has room; with the queue full the submission comes back,
    /// for the caller to wait for room ([`Waiting::wait`], from a thread that may block: an
    /// async server hands that to `block_in_place`) or to refuse ([`Waiting::refuse`]).
    /// `done` runs (on the sequencer thread: keep it short) once the events are durable or
    /// refused; it runs exactly once for every batch queued, never for one handed back.
    pub fn offer(&self, batch: EventBatch, done: Done) -> Result<Option<Waiting>> {
        let (tx, s) = self.submission(batch, done)?;
        match tx.try_send(s) {
            Ok(()) => {
                self.answer_if_failed();
                Ok(None)
            }
            Err(TrySendError::Full(s)) => Ok(Some(Waiting {
                tx,
                s,
                capacity: self.shared.config.queue_submissions_max,
            })),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShuttingDown),
        }
    }

    /// `offer`, waiting for room when the queue is full: blocks, which is the back-pressure.
    pub fn submit(&self, batch: EventBatch, done: Done) -> Result<()> {
        match self.offer(batch, done)? {
            None => Ok(()),
            Some(w) => w.wait(self),
        }
    }

    /// After queueing: if the engine failed meanwhile, the sequencer may have stopped after
    /// its last look at the queue, so the submission is answered here (with the failure)
    /// instead of waiting for ever. See `Shared::refuse_queued`.
    fn answer_if_failed(&self) {
        if self.shared.health.has_failed() {
            self.shared.refuse_queued();
        }
    }

    /// Submits and waits for the receipts.
    pub fn append(&self, batch: EventBatch) -> Result<Receipts> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(batch, Box::new(move |r| drop(tx.send(r))))?;
        rx.recv().map_err(|_| EngineError::ShuttingDown)?
    }

    /// Validates and appends payloads in one batch (a convenience for tools and tests),
    /// recorded as submitted by the daemon itself.
    pub fn append_payloads<'a>(
        &self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Receipts> {
        let mut b = self.new_batch(Submitter::daemon());
        for p in payloads {
            b.add(p)?;
        }
        self.append(b)
    }
}
