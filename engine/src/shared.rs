//! State the engine's threads share: the tree head, the segment set, the newest
//! checkpoint, failure and shutdown flags, and the ingest statistics. One struct, behind an
//! `Arc`, with small methods that each take one lock; the threads' loops live elsewhere.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use auditlog_formats::Hash;

use crate::checkpoints::SignedCheckpoint;
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::hashstore::HashFiles;
use crate::pruned::PrunedSegment;
use crate::segments::{BatchLoc, Segment};
use crate::{keyring, leafindex, remote, segments, sequencer};

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub events: u64,
    pub bytes: u64,
    pub batches: u64,
    pub sync_ns_total: u64,
    /// Group commits by the time their write and sync took: counts per bucket of
    /// `SYNC_BUCKETS_US` (the last one is everything slower).
    pub sync_latency_counts: [u64; SYNC_BUCKETS_US.len() + 1],
    /// Group commits by events held: counts per bucket of `BATCH_EVENTS_BUCKETS`.
    pub batch_events_counts: [u64; BATCH_EVENTS_BUCKETS.len() + 1],
}

/// Upper bounds (inclusive, microseconds) of the sync-latency histogram's buckets.
pub const SYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];
/// Upper bounds (inclusive) of the batch-size histogram's buckets, in events.
pub const BATCH_EVENTS_BUCKETS: [u64; 8] =
    [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

pub(crate) fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds.partition_point(|&b| b < value)
}

/// A consistent view of the head the sequencer last made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

pub(crate) struct SegmentSet {
    pub(crate) sealed: Vec<Arc<Segment>>,
    pub(crate) open: Vec<OpenView>,
    /// Sealed segments deleted locally; their records are read from the store.
    pub(crate) pruned: Vec<Arc<PrunedSegment>>,
}

pub(crate) struct OpenView {
    pub(crate) first: u64,
    pub(crate) end: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) batches: Vec<BatchLoc>,
}

pub(crate) struct Shared {
    pub config: EngineConfig,
    pub hashes: HashFiles,
    pub leaf_index: leafindex::LeafIndex,
    pub(crate) keyring: keyring::Keyring,
    pub(crate) remote: remote::RemoteSegments,
    pub io_mode_name: &'static str,
    pub(crate) head: Mutex<TreeHead>,
    pub(crate) size: AtomicU64,
    pub(crate) segments: RwLock<SegmentSet>,
    pub(crate) checkpoint: Mutex<Option<Arc<SignedCheckpoint>>>,
    pub(crate) checkpoint_cv: Condvar,
    pub(crate) checkpoint_wanted: Mutex<u64>,
    pub(crate) checkpoint_wake: Condvar,
    pub(crate) checkpoint_at: Mutex<Option<Instant>>,
    pub(crate) failed: Mutex<Option<Fault>>,
    pub(crate) failed_flag: AtomicBool,
    pub(crate) prealloc_error: Mutex<Option<Fault>>,
    /// Sealed open segments, renamed to `recycle-*.old`, for the preallocator to zero in
    /// place. Each keeps its open handle: while a reader holds another, it is not reused.
    pub(crate) recycle: Mutex<Vec<(PathBuf, Option<Arc<std::fs::File>>)>>,
    pub(crate) signer_error: Mutex<Option<String>>,
    pub(crate) signer_failures: AtomicU64,
    pub(crate) signer_failures_in_a_row: AtomicU64,
    /// The last signing failed (`signer_failed`) and none has worked since (`signer_worked`):
    /// kept apart from `signer_error`, which any failed checkpoint sets.
    pub(crate) signing_down: AtomicBool,
    /// Ends of sealed segments whose footer carries no signed note (sealed while the signer
    /// was down), oldest first, until a checkpoint at or past each is in the log: the
    /// checkpointer signs one at each end, in order, when the signer is back.
    pub(crate) unsigned_footers: Mutex<std::collections::VecDeque<u64>>,
    /// The last failed seal, until a seal succeeds, and failed seals since start.
    pub(crate) seal_error: Mutex<Option<String>>,
    pub(crate) seal_failures: AtomicU64,
    /// Set when shutdown begins, before the sequencer drains its queue (`shutting_down`
    /// comes after): the sealer stops retrying a failing seal, so that a sequencer waiting
    /// at a rotation for room in the seal queue is not waiting on it for ever.
    pub(crate) draining: AtomicBool,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) stats: Mutex<Stats>,
    /// A receiving end of the submission queue, for `refuse_queued`: a submission queued
    /// as the sequencer stops (failed, panicked) is answered, never left waiting.
    pub(crate) queued: std::sync::OnceLock<crossbeam_channel::Receiver<crate::Submission>>,
    /// Told the size of every checkpoint as it is published (`Engine::on_checkpoint`).
    pub(crate) checkpoint_listeners: Mutex<Vec<crate::CheckpointListener>>,
}

/// Why writes stopped, or why the next segment cannot be prepared: typed, so producers get
/// `DiskFull` or `Failed` from the kind, never from matching the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub disk_full: bool,
    pub reason: String,
}

impl Fault {
    pub fn of(e: &EngineError) -> Fault {
        match e {
            EngineError::DiskFull(m) => Fault::disk_full(m.clone()),
            other => Fault::other(other.to_string()),
        }
    }

    pub fn disk_full(reason: String) -> Fault {
        Fault {
            disk_full: true,
            reason,
        }
    }

    pub fn other(reason: String) -> Fault {
        Fault {
            disk_full: false,
            reason,
        }
    }

    /// The error a producer is answered with.
    pub fn error(&self) -> EngineError {
        if self.disk_full {
            EngineError::DiskFull(self.reason.clone())
        } else {
            EngineError::Failed(self.reason.clone())
        }
    }

    /// As the status and `/ready` say it.
    pub fn text(&self) -> String {
        if self.disk_full {
            format!("disk full: {}", self.reason)
        } else {
            self.reason.clone()
        }
    }
}

impl Shared {
    pub fn segments_dir(&self) -> PathBuf {
        self.config
            .data_dir
            .join(auditlog_formats::layout::SEGMENTS_DIR)
    }

    pub(crate) fn fail(&self, fault: Fault) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            tracing::error!("engine stops accepting writes: {}", fault.text());
            *f = Some(fault);
        }
        self.failed_flag.store(true, Ordering::SeqCst);
    }

    /// Answers every queued submission with the failure (or `ShuttingDown`): called by the
    /// sequencer as it stops, by the supervisor after a thread panicked, and by a producer
    /// whose submission went in as the engine failed. Each submission is taken by exactly one
    /// receiver, so each is answered once, by whoever takes it.
    pub(crate) fn refuse_queued(&self) {
        let Some(rx) = self.queued.get() else { return };
        let why = self.failure();
        for s in rx.try_iter() {
            (s.done)(Err(why
                .as_ref()
                .map_or(EngineError::ShuttingDown, Fault::error)));
        }
    }

    /// Why writes stopped, as the status says it.
    pub fn failed(&self) -> Option<String> {
        self.failure().map(|f| f.text())
    }

    pub(crate) fn failure(&self) -> Option<Fault> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn prealloc_error(&self) -> Option<String> {
        self.prealloc_fault().map(|f| f.text())
    }

    pub(crate) fn prealloc_fault(&self) -> Option<Fault> {
        self.prealloc_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_prealloc_error(&self, e: Option<Fault>) {
        *self
            .prealloc_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub fn status_signer_error(&self) -> Option<String> {
        self.signer_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a failed signing (checkpointer or sealer) for metrics.
    pub fn signer_failed(&self) {
        self.signing_down.store(true, Ordering::SeqCst);
        self.signer_failures.fetch_add(1, Ordering::Relaxed);
        self.signer_failures_in_a_row
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records a seal's outcome: an error is counted and kept until a seal succeeds.
    pub(crate) fn seal_outcome(&self, e: Option<String>) {
        if e.is_some() {
            self.seal_failures.fetch_add(1, Ordering::Relaxed);
        }
        *self.seal_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// A signing worked (checkpointer or sealer).
    pub(crate) fn signer_worked(&self) {
        self.signing_down.store(false, Ordering::SeqCst);
    }

    /// Whether the last signing failed and none has worked since: seals then go on
    /// without asking the signer (their footers are signed by the checkpointer later).
    pub fn signer_down(&self) -> bool {
        self.signing_down.load(Ordering::SeqCst)
    }

    /// A segment sealed with no note in its footer, ending at `end`.
    pub(crate) fn footer_unsigned(&self, end: u64) {
        let mut q = self
            .unsigned_footers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            q.back().is_none_or(|&b| b < end),
            "unsigned footers out of order"
        );
        q.push_back(end);
    }

    /// The ends of segments sealed without a signed note that no checkpoint in the log
    /// covers yet (`signed`: the newest checkpoint's size), oldest first.
    pub(crate) fn unsigned_footers_past(&self, signed: u64) -> Vec<u64> {
        let mut q = self
            .unsigned_footers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while q.front().is_some_and(|&e| e <= signed) {
            q.pop_front();
        }
        q.iter().copied().collect()
    }

    pub fn set_signer_error(&self, e: Option<String>) {
        if e.is_none() {
            self.signer_failures_in_a_row.store(0, Ordering::Relaxed);
        }
        *self.signer_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub fn head(&self) -> TreeHead {
        *self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a durable batch visible: its location to readers, the head to everyone.
    pub(crate) fn publish(
        &self,
        open: &sequencer::OpenSegment,
        loc: BatchLoc,
        size: u64,
        root: Hash,
        bytes: u64,
        sync_ns: u64,
    ) {
        {
            let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let view = set
                .open
                .iter_mut()
                .find(|v| v.first == open.first)
                .expect("open segment is registered");
            view.batches.push(loc);
            view.end = size;
        }
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.events += size - loc.first_index;
            s.bytes += bytes;
            s.batches += 1;
            s.sync_ns_total += sync_ns;
            s.sync_latency_counts[bucket(&SYNC_BUCKETS_US, sync_ns / 1_000)] += 1;
            s.batch_events_counts[bucket(&BATCH_EVENTS_BUCKETS, size - loc.first_index)] += 1;
        }
        *self.head.lock().unwrap_or_else(|e| e.into_inner()) = TreeHead { size, root };
        self.size.store(size, Ordering::Release);
        let want = self
            .checkpoint_wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *want > loc.first_index {
            self.checkpoint_wake.notify_all();
        }
    }

    pub(crate) fn add_open_segment(&self, open: &sequencer::OpenSegment) {
        let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
        set.open.push(OpenView {
            first: open.first,
            end: open.first,
            path: open.path.clone(),
            file: open.file.clone(),
            batches: Vec::new(),
        });
    }

    pub(crate) fn remove_open_segment(&self, first: u64) {
        let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
        set.open.retain(|v| v.first != first);
    }

    /// The sealer's last step: the sealed file replaces the open one for readers.
    pub(crate) fn replace_with_sealed(&self, sealed: Segment) {
        let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
        set.open.retain(|v| v.first != sealed.first);
        set.sealed.push(Arc::new(sealed));
        set.sealed.sort_by_key(|s| s.first);
    }

    /// The pruner's step between recording a segment as pruned and unlinking it: readers
    /// stop looking for the file and go to the store.
    pub(crate) fn mark_pruned(&self, p: PrunedSegment) {
        let mut set = self.segments.write().unwrap_or_else(|e| e.into_inner());
        set.sealed.retain(|s| s.first != p.first);
        set.pruned.push(Arc::new(p));
        set.pruned.sort_by_key(|p| p.first);
    }

    pub(crate) fn set_checkpoint(&self, cp: SignedCheckpoint) {
        let size = cp.checkpoint.size;
        *self.checkpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(cp));
        self.checkpoint_cv.notify_all();
        for f in self
            .checkpoint_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(size);
        }
    }

    pub(crate) fn checkpoint_age_ms(&self) -> Option<u64> {
        self.checkpoint_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed().as_millis() as u64)
    }

    pub(crate) fn latest_checkpoint(&self) -> Option<Arc<SignedCheckpoint>> {
        self.checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads `[start, end)` in order through `f`, which returns false to stop early.
    pub(crate) fn for_each_record(
        &self,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut at = start;
        while at < end {
            // Resolve where `at` lives under the lock, read outside it.
            let plan = {
                let set = self.segments.read().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = set.sealed.iter().find(|s| s.first <= at && at < s.end) {
                    ReadPlan::Sealed(s.clone())
                } else if let Some(p) = set.pruned.iter().find(|p| p.first <= at && at < p.end) {
                    ReadPlan::Pruned(p.clone())
                } else if let Some(v) = set.open.iter().find(|v| v.first <= at && at < v.end) {
                    let stop = end.min(v.end);
                    let i = v
                        .batches
                        .partition_point(|b| b.first_index <= at)
                        .saturating_sub(1);
                    let j = v.batches.partition_point(|b| b.first_index < stop);
                    ReadPlan::Open(Segment {
                        first: v.first,
                        end: stop,
                        path: v.path.clone(),
                        file: v.file.clone(),
                        body: segments::Body::Open {
                            batches: v.batches[i..j].to_vec(),
                        },
                    })
                } else {
                    return Err(EngineError::Corrupt {
                        path: self.segments_dir(),
                        what: format!("no segment holds index {at}"),
                    });
                }
            };
            let seg: &Segment = match &plan {
                ReadPlan::Sealed(s) => s,
                ReadPlan::Open(s) => s,
                ReadPlan::Pruned(p) => {
                    let alg = self.config.tree_hash;
                    if !self
                        .remote
                        .for_each_record(p, alg, &self.hashes, at, end, f)?
                    {
                        return Ok(());
                    }
                    at = p.end.min(end);
                    continue;
                }
            };
            let seg_end = seg.end;
            if !seg.for_each_record(at, end, f)? {
                return Ok(());
            }
            at = seg_end.min(end);
        }
        Ok(())
    }
}

enum ReadPlan {
    Sealed(Arc<Segment>),
    Open(Segment),
    Pruned(Arc<PrunedSegment>),
}
