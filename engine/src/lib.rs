//! auditlog-engine: where the bytes are and when they are durable.
//!
//! Threads, each owning one job: the sequencer (batches, appends, syncs, tree, receipts),
//! the checkpointer (signs the newest tree head on its own clock), the sealer (compresses
//! full segments), the preallocator (zero-fills the next segment file). Producers build an
//! [`EventBatch`] on their own thread (validation, record encoding and leaf hashing run
//! there, in parallel) and submit it into a bounded queue.

mod checkpointer;
pub mod checkpoints;
pub mod config;
pub mod error;
pub mod files;
mod framedlog;
mod hashstore;
mod io;
mod keyring;
mod leafindex;
pub mod pkcs11;
pub mod private;
pub mod pruned;
mod recovery;
mod remote;
pub mod replication;
pub mod retention;
mod sealer;
mod segments;
mod sequencer;
mod shared;
pub mod signer;
mod yielding;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auditlog_formats::batch::push_entry;
use auditlog_formats::note::VerifierKey;
use auditlog_formats::record::Record;
pub use auditlog_formats::record::Submitter;
use auditlog_formats::schema;
use auditlog_formats::tree::{self, HashReader, NodeId};
use auditlog_formats::{Hash, TreeHash};
use crossbeam_channel::{Sender, TrySendError};

pub use auditlog_formats::keyhistory::{KeyBackend, KeyEntry, KeyHistory};
pub use checkpoints::SignedCheckpoint;
pub use config::{EngineConfig, FaultHooks, IoMode, SignerConfig};
pub use error::{EngineError, Result};
pub use pkcs11::{PinSource, Pkcs11Error, Pkcs11Signer, Pkcs11Spec};
pub use pruned::PrunedSegment;
pub use remote::StoreReadStats;
pub use replication::{ManifestEntry, ManifestKind, ReplicationConfig, ReplicationStatus};
pub use signer::{KeyFileSigner, Signer};

pub(crate) use shared::{OpenView, SegmentSet, Shared};
pub use shared::{Stats, TreeHead, BATCH_EVENTS_BUCKETS, SYNC_BUCKETS_US};

/// What a producer gets back once its events are durable.
#[derive(Clone, Debug)]
pub struct Receipts {
    pub first_index: u64,
    pub received_at_unix_ns: u64,
    pub leaf_hashes: Vec<Hash>,
}

pub type Done = Box<dyn FnOnce(Result<Receipts>) + Send>;

/// Called with the size of each checkpoint as it is published, on the checkpointer's
/// thread: keep it short (a channel send).
pub type CheckpointListener = Box<dyn Fn(u64) + Send + Sync>;

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

/// Where the key history lives in a data directory.
pub fn keyhistory_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(keyring::KEYS_FILE)
}

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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

/// What the engine says about itself, for `/ready`, metrics and operators.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub tree_size: u64,
    pub checkpoint_size: Option<u64>,
    pub checkpoint_age_ms: Option<u64>,
    pub failed: Option<String>,
    pub preallocation_error: Option<String>,
    pub signer_error: Option<String>,
    /// Failed signings since start, and since the last success.
    pub signer_failures: u64,
    pub signer_failures_in_a_row: u64,
    /// The last failed seal (the sealer retries with backoff), until one succeeds, and
    /// failed seals since start.
    pub seal_error: Option<String>,
    pub seal_failures: u64,
    pub io_mode: &'static str,
    /// Sealed segments on the local disk.
    pub sealed_segments: usize,
    pub open_segments: usize,
    /// Sealed segments deleted locally (local retention) and their bytes; their records
    /// are read from the object store.
    pub pruned_segments: usize,
    pub pruned_bytes: u64,
    /// Reads of pruned segments from the store.
    pub store_reads: StoreReadStats,
    pub stats: Stats,
    /// Submissions waiting for the sequencer, and the queue's limit.
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub recovery: recovery::RecoveryReport,
    /// `None` when replication is off.
    pub replication: Option<ReplicationStatus>,
}

pub struct Engine {
    shared: Arc<Shared>,
    submit_tx: Option<Sender<Submission>>,
    threads: Vec<JoinHandle<()>>,
    recovery: recovery::RecoveryReport,
    started: Instant,
    replication: Option<Arc<replication::Monitor>>,
}

impl Engine {
    /// Opens (or creates) the log in `config.data_dir`, recovering whatever a crash left,
    /// with the development key file signer unless `signer` is given.
    pub fn open(config: EngineConfig, signer: Option<Arc<dyn Signer>>) -> Result<Engine> {
        recovery::open(config, signer)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    pub fn tree_hash(&self) -> TreeHash {
        self.shared.config.tree_hash
    }

    /// The newest current key (what a client pinning one key should pin).
    pub fn verifier_key(&self) -> VerifierKey {
        self.shared.keyring.current_key()
    }

    /// Every key that signs new checkpoints (more than one during a rotation's overlap).
    pub fn verifier_keys(&self) -> Vec<VerifierKey> {
        self.shared.keyring.current_keys()
    }

    /// Every key the log has used, with the sizes each signs (FORMATS.md §13).
    pub fn key_history(&self) -> KeyHistory {
        self.shared.keyring.history()
    }

    /// Adds the key at `backend` (which must already exist) to the key history: from the
    /// next checkpoint on, it signs alongside the current keys.
    pub fn add_key(&self, backend: &KeyBackend, name: Option<&str>) -> Result<KeyEntry> {
        let default_name = recovery::key_name(&self.shared.config.origin);
        self.shared
            .keyring
            .add(backend, name.unwrap_or(&default_name))
    }

    /// The retention policy stored in `log.json`, if one was set.
    pub fn retention(&self) -> Result<Option<retention::RetentionPolicy>> {
        retention::read(&self.shared.config.data_dir)
    }

    /// Stores a retention policy in `log.json` (durably; the replicator reads it).
    pub fn set_retention(&self, policy: &retention::RetentionPolicy) -> Result<()> {
        retention::write(&self.shared.config.data_dir, policy)
    }

    /// Ends a key's validity after the largest size signed so far. `which` is its verifier
    /// key string or `name+hex8(key_id)`.
    pub fn retire_key(&self, which: &str) -> Result<KeyEntry> {
        self.shared.keyring.retire(which)
    }

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
        if let Some(f) = self.shared.failure() {
            return Err(f.error());
        }
        let tx = self.submit_tx.clone().ok_or(EngineError::ShuttingDown)?;
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

    /// Queues a batch; `done` runs (on the sequencer thread: keep it short) once the events
    /// are durable or refused. Blocks while the queue is full: that is the back-pressure.
    pub fn submit(&self, batch: EventBatch, done: Done) -> Result<()> {
        let (tx, s) = self.submission(batch, done)?;
        tx.send(s).map_err(|_| EngineError::ShuttingDown)?;
        self.answer_if_failed();
        Ok(())
    }

    /// After queueing: if the engine failed meanwhile, the sequencer may have stopped after
    /// its last look at the queue, so the submission is answered here (with the failure)
    /// instead of waiting for ever. See `Shared::refuse_queued`.
    fn answer_if_failed(&self) {
        if self
            .shared
            .failed_flag
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.shared.refuse_queued();
        }
    }

    /// As `submit`, but never waits: with the queue full the submission comes back, to be
    /// queued with [`Waiting::wait`] from a thread that may block (an async server hands
    /// that to `block_in_place`; a check of `queue_has_room` before `submit` could still
    /// block an async worker when another producer took the room in between).
    pub fn offer(&self, batch: EventBatch, done: Done) -> Result<Option<Waiting>> {
        let (tx, s) = self.submission(batch, done)?;
        match tx.try_send(s) {
            Ok(()) => {
                self.answer_if_failed();
                Ok(None)
            }
            Err(TrySendError::Full(s)) => Ok(Some(Waiting { tx, s })),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShuttingDown),
        }
    }

    /// Whether `submit` would queue at once rather than wait for room (a hint: another
    /// producer may take the room first, and `submit` then waits one commit at most).
    pub fn queue_has_room(&self) -> bool {
        self.submit_tx.as_ref().is_some_and(|tx| !tx.is_full())
    }

    /// As `submit`, but refuses with `QueueFull` instead of waiting.
    pub fn try_submit(&self, batch: EventBatch, done: Done) -> Result<()> {
        let (tx, s) = self.submission(batch, done)?;
        match tx.try_send(s) {
            Ok(()) => {
                self.answer_if_failed();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(EngineError::QueueFull(
                self.shared.config.queue_submissions_max,
            )),
            Err(TrySendError::Disconnected(_)) => Err(EngineError::ShuttingDown),
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

    pub fn head(&self) -> TreeHead {
        self.shared.head()
    }

    pub fn tree_size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// The exact record bytes (`version || received_at || payload`) at `index`.
    pub fn read_record(&self, index: u64) -> Result<Vec<u8>> {
        let size = self.tree_size();
        if index >= size {
            return Err(EngineError::NotFound { index, size });
        }
        let mut out = None;
        self.shared
            .for_each_record(index, index + 1, &mut |_, rec| {
                out = Some(rec.to_vec());
                Ok(false)
            })?;
        let rec = out.ok_or(EngineError::NotFound { index, size })?;
        // Checked end to end: the bytes must hash to the leaf the tree holds.
        if self.tree_hash().leaf(&rec) != self.leaf_hash(index)? {
            return Err(EngineError::Corrupt {
                path: self.shared.segments_dir(),
                what: format!("record {index} does not hash to its stored leaf hash"),
            });
        }
        Ok(rec)
    }

    /// Calls `f(index, record)` for `[start, end)`, clipped to the tree; `f` returns false
    /// to stop. Memory stays at one batch or block whatever the range.
    pub fn read_records(
        &self,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let end = end.min(self.tree_size());
        if start >= end {
            return Ok(());
        }
        self.shared.for_each_record(start, end, f)
    }

    pub fn leaf_hash(&self, index: u64) -> Result<Hash> {
        let size = self.tree_size();
        if index >= size {
            return Err(EngineError::NotFound { index, size });
        }
        Ok(self.shared.hashes.read_hashes(&[NodeId::new(0, index)])?[0])
    }

    /// The first index below `size` whose leaf hash is `leaf` (for proofs by leaf hash).
    pub fn index_of_leaf(&self, leaf: &Hash, size: u64) -> Result<Option<u64>> {
        self.proof_size_check(size)?;
        self.shared.leaf_index.find(&self.shared.hashes, leaf, size)
    }

    pub fn latest_checkpoint(&self) -> Option<Arc<SignedCheckpoint>> {
        self.shared.latest_checkpoint()
    }

    /// Asks the checkpointer to sign now and waits (up to `timeout`) for a checkpoint that
    /// covers at least `min_size`.
    pub fn wait_checkpoint(
        &self,
        min_size: u64,
        timeout: Duration,
    ) -> Option<Arc<SignedCheckpoint>> {
        let deadline = Instant::now() + timeout;
        self.want_checkpoint(min_size);
        let mut guard = self
            .shared
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(cp) = guard.as_ref() {
                if cp.checkpoint.size >= min_size {
                    return Some(cp.clone());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self
                .shared
                .checkpoint_cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Asks for a checkpoint covering `min_size` soon, without waiting for it (an async
    /// caller waits on `on_checkpoint` instead of a thread).
    pub fn want_checkpoint(&self, min_size: u64) {
        let mut want = self
            .shared
            .checkpoint_wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Only sizes the log already has are signed early: a waiter for a future size
        // gets the regular clock, so no caller can make every batch cost a signature.
        *want = (*want).max(min_size.min(self.tree_size()));
        self.shared.checkpoint_wake.notify_all();
    }

    /// Calls `f` with the size of every checkpoint published from now on.
    pub fn on_checkpoint(&self, f: CheckpointListener) {
        self.shared
            .checkpoint_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    fn proof_size_check(&self, size: u64) -> Result<()> {
        let signed = self
            .latest_checkpoint()
            .map(|c| c.checkpoint.size)
            .unwrap_or(0);
        if size > signed {
            return Err(EngineError::BadRequest(format!(
                "tree size {size} is beyond the newest checkpoint ({signed})"
            )));
        }
        Ok(())
    }

    /// RFC 9162 inclusion proof of `index` in the tree of `size` (at most the newest checkpoint).
    pub fn prove_inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.proof_size_check(size)?;
        tree::prove_inclusion(self.tree_hash(), index, size, &self.shared.hashes)?
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// As `prove_inclusion`, from memory and the page cache only: `WouldBlock` when the
    /// answer needs the disk (then call `prove_inclusion` where waiting is allowed).
    pub fn prove_inclusion_cached(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.proof_size_check(size)?;
        let reader = hashstore::CachedOnly(&self.shared.hashes);
        tree::prove_inclusion(self.tree_hash(), index, size, &reader)?
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// RFC 9162 consistency proof between the trees of `from` and `to`.
    pub fn prove_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.proof_size_check(to)?;
        tree::prove_consistency(self.tree_hash(), from, to, &self.shared.hashes)?
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// As `prove_consistency`, from memory and the page cache only (see
    /// `prove_inclusion_cached`).
    pub fn prove_consistency_cached(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        self.proof_size_check(to)?;
        let reader = hashstore::CachedOnly(&self.shared.hashes);
        tree::prove_consistency(self.tree_hash(), from, to, &reader)?
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// The root of the tree at `size` (at most the current size).
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        if size > self.tree_size() {
            return Err(EngineError::BadRequest(format!(
                "tree size {size} is beyond the log ({})",
                self.tree_size()
            )));
        }
        tree::tree_hash(self.tree_hash(), size, &self.shared.hashes)
    }

    pub fn status(&self) -> Status {
        let cp = self.latest_checkpoint();
        let set = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Status {
            tree_size: self.tree_size(),
            checkpoint_size: cp.as_ref().map(|c| c.checkpoint.size),
            checkpoint_age_ms: self.shared.checkpoint_age_ms(),
            failed: self.shared.failed(),
            preallocation_error: self.shared.prealloc_error(),
            signer_error: self
                .shared
                .signer_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            signer_failures: self.shared.signer_failures.load(Ordering::Relaxed),
            signer_failures_in_a_row: self.shared.signer_failures_in_a_row.load(Ordering::Relaxed),
            seal_error: self
                .shared
                .seal_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            seal_failures: self.shared.seal_failures.load(Ordering::Relaxed),
            io_mode: self.shared.io_mode_name,
            sealed_segments: set.sealed.len(),
            open_segments: set.open.len(),
            pruned_segments: set.pruned.len(),
            pruned_bytes: set.pruned.iter().map(|p| p.bytes).sum(),
            store_reads: self.shared.remote.stats(),
            stats: self
                .shared
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            queue_depth: self.submit_tx.as_ref().map_or(0, |t| t.len()),
            queue_capacity: self.shared.config.queue_submissions_max,
            recovery: self.recovery.clone(),
            replication: self.replication.as_ref().map(|m| m.snapshot()),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Tells the engine that shutdown has begun, while callers still hold it (a server
    /// draining its requests): from here on a seal that fails is left for the next start
    /// instead of retried, so that appends waiting behind a full seal queue complete and
    /// the drain can finish. Writes are still taken. `shutdown` does this too.
    pub fn begin_shutdown(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    /// Stops taking writes, lets the sequencer drain what is queued, signs a final
    /// checkpoint, and waits for every thread.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop();
        match self.shared.failed() {
            Some(why) => Err(EngineError::Failed(why)),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        // Sequencer first (threads[0]): it drains the queue once its sender is gone. Then
        // the others see the flag; the checkpointer signs a final checkpoint on its way out.
        self.begin_shutdown();
        self.submit_tx.take();
        let mut threads = self.threads.drain(..);
        if let Some(seq) = threads.next() {
            let _ = seq.join();
        }
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        {
            let _want = self
                .shared
                .checkpoint_wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.checkpoint_wake.notify_all();
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
