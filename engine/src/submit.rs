//! The way in: an [`EventBatch`] is built on the producer's thread (each event validated and
//! framed there, in parallel), then handed to the sequencer through one bounded queue.
//! There is one submit path: [`Engine::offer`] queues at once or hands the submission back
//! as [`Waiting`] when the queue is full; the caller decides whether to wait for room
//! ([`Waiting::wait`], the back-pressure) or to refuse. [`Engine::submit`] and
//! [`Engine::append`] are that path for callers that may block.
//!
//! **Receipt time in index order.** A submission's `received_at` is stamped as it enters the
//! queue, under one small lock with the enqueue itself, and never below the one before: so
//! it never decreases in index order (the queue's order is the index order). The leaf
//! hashes cover the stamp, so they are computed after it, by the producer, right after the
//! enqueue, on its own thread ([`Leaves`]); the sequencer writes the batch and, while the
//! kernel syncs it, takes the hashes (the producer is nearly always done by then).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use auditlog_formats::batch::{push_entry, Entries, ENTRY_PREFIX_BYTES};
use auditlog_formats::record::{set_received_at, PayloadKind, Record, PAYLOAD_BYTES_MAX};
use auditlog_formats::tiles::ENTRY_BYTES_MAX;
use auditlog_formats::{schema, syslog};
use auditlog_formats::{Hash, TreeHash};
use crossbeam_channel::{Sender, TrySendError};

use crate::{now_unix_ns, Done, Engine, EngineError, Receipts, Result, Submitter};

pub(crate) struct Submission {
    /// Shared with the producer, which hashes the records after the enqueue; final (the
    /// receipt time stamped in) before the sequencer sees it.
    pub body: Arc<Vec<u8>>,
    pub leaves: Arc<Leaves>,
    pub count: u32,
    pub max_classification: u8,
    pub received_at_unix_ns: u64,
    pub done: Done,
}

/// A submission's leaf hashes, filled by its producer after the enqueue.
pub(crate) struct Leaves {
    slot: Mutex<Option<Vec<Hash>>>,
    ready: Condvar,
}

/// How long the sequencer waits for a producer's hashes before it computes them itself (a
/// producer that died between the enqueue and the hashing).
const LEAVES_WAIT: Duration = Duration::from_secs(5);

impl Leaves {
    fn new() -> Arc<Leaves> {
        Arc::new(Leaves {
            slot: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    fn fill(&self, hashes: Vec<Hash>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(hashes);
        self.ready.notify_all();
    }

    /// The hashes of `body`'s records, as the producer computed them (or, if it never
    /// does, computed here).
    pub fn take(&self, alg: TreeHash, body: &[u8]) -> Vec<Hash> {
        let deadline = Instant::now() + LEAVES_WAIT;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(h) = slot.take() {
                return h;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(slot);
                return hash_body(alg, body);
            }
            slot = self
                .ready
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The leaf hash of every record in a batch body.
fn hash_body(alg: TreeHash, body: &[u8]) -> Vec<Hash> {
    Entries::new(body)
        .map(|r| alg.leaf(r.expect("a body the engine framed")))
        .collect()
}

/// The last receipt time stamped: stamps never go below it.
#[derive(Default)]
pub(crate) struct Stamps {
    last: Mutex<u64>,
}

/// A submission the queue had no room for ([`Engine::offer`]).
pub struct Waiting {
    tx: Sender<Submission>,
    s: Submission,
    offsets: Vec<u32>,
    capacity: usize,
}

impl Waiting {
    /// Queues it, waiting for room: the back-pressure, on a thread that may block. (The
    /// stamp lock is held while it waits: every other producer would meet the same full
    /// queue.)
    pub fn wait(self, engine: &Engine) -> Result<()> {
        let Waiting { tx, s, offsets, .. } = self;
        engine.enqueue(s, &offsets, |s| {
            tx.send(s).map_err(|_| EngineError::ShuttingDown)
        })?;
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
    mode: schema::SchemaMode,
    bytes_max: usize,
    /// Who the server authenticated for this submission; every record of it carries it.
    submitter: Submitter,
    /// The address in a `syslog:<ip>` submitter, read once: `push_syslog` needs it.
    syslog_peer: Option<std::net::IpAddr>,
    /// When the batch was made: the receipt year `push_syslog` checks a message in (it
    /// needs no finer time, and reading the clock per message was 1% of the listener).
    made_unix_ns: u64,
    body: Vec<u8>,
    /// Where each record starts in `body` (after its length prefix): its receipt time is
    /// stamped there at the enqueue.
    offsets: Vec<u32>,
    max_classification: u8,
}

impl EventBatch {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }

    /// Adds one event, or says the batch is full (`Pushed::Full`: nothing added; it goes
    /// into the next batch). Refused (nothing kept): an invalid event, or one too large for
    /// a submission on its own.
    pub fn push(&mut self, payload: &[u8]) -> Result<Pushed> {
        let put = self.put(payload)?;
        self.pushed(put)
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

    /// Adds one syslog message, as received without its framing, as a version 3 record
    /// (FORMATS.md §4): stored once, its event derived when read. As `push`, except for
    /// the check: not the event schema (there is no event yet) but that the message parses
    /// as syslog and its event would fit (`syslog::check_to_store`), with the peer taken
    /// from the batch's submitter, which must be a `syslog:<ip>` form.
    pub fn push_syslog(&mut self, message: &[u8]) -> Result<Pushed> {
        let position = self.offsets.len();
        let bad = |reason: String| EngineError::BadEvent { position, reason };
        let peer = self.syslog_peer.ok_or_else(|| {
            bad(format!(
                "submitter {} is not a syslog peer",
                self.submitter.as_str()
            ))
        })?;
        if message.is_empty() || message.len() > PAYLOAD_BYTES_MAX {
            return Err(bad(format!("syslog message of {} bytes", message.len())));
        }
        syslog::check_to_store(message, self.made_unix_ns, Some(peer))
            .map_err(|e| bad(e.to_string()))?;
        // Syslog events carry no classification: the batch's maximum is unchanged.
        let put = self.frame(PayloadKind::Syslog, message, 0)?;
        self.pushed(put)
    }

    fn pushed(&self, put: Option<usize>) -> Result<Pushed> {
        match put {
            None => Ok(Pushed::Added),
            Some(_) if !self.is_empty() => Ok(Pushed::Full),
            Some(bytes) => Err(EngineError::SubmissionTooLarge {
                bytes,
                max: self.bytes_max,
            }),
        }
    }

    /// Validates and frames one event into the batch (its receipt time comes at the
    /// enqueue); `Some(bytes)`, the size the batch would reach, when it does not fit
    /// (nothing added).
    fn put(&mut self, payload: &[u8]) -> Result<Option<usize>> {
        let position = self.offsets.len();
        let info = schema::validate(payload, self.mode).map_err(|e| EngineError::BadEvent {
            position,
            reason: e.to_string(),
        })?;
        self.frame(PayloadKind::Event, payload, info.classification as u8)
    }

    /// Frames one checked payload as a record; `Some(bytes)` when it does not fit. A record
    /// over one tlog-tiles entry is refused (FORMATS.md §4): every record of the log can be
    /// served in an entry bundle.
    fn frame(
        &mut self,
        kind: PayloadKind,
        payload: &[u8],
        classification: u8,
    ) -> Result<Option<usize>> {
        let record = Record {
            received_at_unix_ns: 0,
            submitter: Some(self.submitter.as_str()),
            kind,
            payload,
        };
        if record.encoded_len() > ENTRY_BYTES_MAX {
            return Err(EngineError::BadEvent {
                position: self.offsets.len(),
                reason: entry_too_large(&record),
            });
        }
        let added = 4 + record.encoded_len();
        if self.body.len() + added > self.bytes_max {
            return Ok(Some(self.body.len() + added));
        }
        let start = self.body.len();
        push_entry(&mut self.body, &record);
        self.offsets.push((start + ENTRY_PREFIX_BYTES) as u32);
        self.max_classification = self.max_classification.max(classification);
        Ok(None)
    }
}

/// Why a record over one tlog-tiles entry is refused, with the payload limit that follows
/// for this submitter (the header and submitter count against the 65,535 bytes).
fn entry_too_large(record: &Record) -> String {
    let overhead = record.encoded_len() - record.payload.len();
    format!(
        "event of {} bytes is too large: its record would be {} bytes ({overhead} of header and submitter), over the {ENTRY_BYTES_MAX}-byte limit of one tlog-tiles entry; events from this submitter are at most {} bytes",
        record.payload.len(),
        record.encoded_len(),
        ENTRY_BYTES_MAX - overhead
    )
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
            mode: c.schema,
            bytes_max: c.submission_bytes_max,
            syslog_peer: Submitter::syslog_peer(submitter.as_str()),
            made_unix_ns: now_unix_ns(),
            submitter,
            body: Vec::new(),
            offsets: Vec::new(),
            max_classification: 0,
        }
    }

    fn submission(
        &self,
        batch: EventBatch,
        done: Done,
    ) -> Result<(Sender<Submission>, Submission, Vec<u32>)> {
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
                count: batch.offsets.len() as u32,
                body: Arc::new(batch.body),
                leaves: Leaves::new(),
                max_classification: batch.max_classification,
                received_at_unix_ns: 0,
                done,
            },
            batch.offsets,
        ))
    }

    /// Stamps the receipt time (never below the last one) into every record and queues the
    /// submission with `send`, both under the stamp lock, so stamps follow the queue's
    /// order; then hashes the records on this thread for the sequencer. `send` hands the
    /// submission back when it did not queue it.
    fn enqueue<E>(
        &self,
        mut s: Submission,
        offsets: &[u32],
        send: impl FnOnce(Submission) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let (body, leaves) = {
            let mut last = self
                .shared
                .stamps
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let t = now_unix_ns().max(*last);
            *last = t;
            let bytes =
                Arc::get_mut(&mut s.body).expect("the body is not shared before the enqueue");
            for &at in offsets {
                set_received_at(&mut bytes[at as usize..], t);
            }
            s.received_at_unix_ns = t;
            let shared = (s.body.clone(), s.leaves.clone());
            send(s)?;
            shared
        };
        let alg = self.shared.config.tree_hash;
        // Record i runs from its offset to the next entry's length prefix (or the end).
        let ends = offsets
            .iter()
            .skip(1)
            .map(|&n| n as usize - ENTRY_PREFIX_BYTES)
            .chain([body.len()]);
        leaves.fill(
            offsets
                .iter()
                .zip(ends)
                .map(|(&at, end)| alg.leaf(&body[at as usize..end]))
                .collect(),
        );
        Ok(())
    }

    /// Queues a batch if the queue has room; with the queue full the submission comes back,
    /// for the caller to wait for room ([`Waiting::wait`], from a thread that may block: an
    /// async server hands that to `block_in_place`) or to refuse ([`Waiting::refuse`]).
    /// `done` runs (on the sequencer thread: keep it short) once the events are durable or
    /// refused; it runs exactly once for every batch queued, never for one handed back.
    pub fn offer(&self, batch: EventBatch, done: Done) -> Result<Option<Waiting>> {
        let (tx, s, offsets) = self.submission(batch, done)?;
        let mut full = None;
        let queued = self.enqueue(s, &offsets, |s| match tx.try_send(s) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(s)) => {
                full = Some(s);
                Err(None)
            }
            Err(TrySendError::Disconnected(_)) => Err(Some(EngineError::ShuttingDown)),
        });
        match queued {
            Ok(()) => {
                self.answer_if_failed();
                Ok(None)
            }
            Err(Some(e)) => Err(e),
            Err(None) => Ok(full.map(|s| Waiting {
                tx,
                s,
                offsets,
                capacity: self.shared.config.queue_submissions_max,
            })),
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
