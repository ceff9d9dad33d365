//! The head and its checkpoints: the tree head the sequencer last made durable, the ingest
//! statistics that go with it, and the newest signed checkpoint with the one way anybody
//! waits for one. Waiting is on condition variables and listeners, never a timer: the
//! checkpointer sleeps on `Checkpoints::wait_for_work`, a thread waits with
//! `Checkpoints::wait`, and an async server registers a listener (`on_published`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use auditlog_formats::Hash;

use crate::checkpoints::SignedCheckpoint;

/// A consistent view of the head the sequencer last made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

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

/// The durable head: written by the sequencer alone, read by everyone.
pub(crate) struct Head {
    head: Mutex<TreeHead>,
    /// `head.size`, readable without the lock.
    size: AtomicU64,
    stats: Mutex<Stats>,
}

impl Head {
    pub fn new(head: TreeHead) -> Head {
        Head {
            head: Mutex::new(head),
            size: AtomicU64::new(head.size),
            stats: Mutex::new(Stats::default()),
        }
    }

    pub fn get(&self) -> TreeHead {
        *self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A group commit of `events` events and `bytes` bytes is durable and the head is now
    /// `head`.
    pub fn advance(&self, head: TreeHead, events: u64, bytes: u64, sync_ns: u64) {
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.events += events;
            s.bytes += bytes;
            s.batches += 1;
            s.sync_ns_total += sync_ns;
            s.sync_latency_counts[bucket(&SYNC_BUCKETS_US, sync_ns / 1_000)] += 1;
            s.batch_events_counts[bucket(&BATCH_EVENTS_BUCKETS, events)] += 1;
        }
        let mut h = self.head.lock().unwrap_or_else(|e| e.into_inner());
        assert!(head.size >= h.size, "the head moved backwards");
        *h = head;
        self.size.store(head.size, Ordering::Release);
    }
}

/// Told the size of every checkpoint as it is published (`Engine::on_checkpoint`).
pub type CheckpointListener = Box<dyn Fn(u64) + Send + Sync>;

/// What callers asked to have signed early (besides the checkpointer's own clock).
#[derive(Default)]
struct Wanted {
    /// A size the log has: the checkpointer signs the head as soon as it sees this above
    /// the newest checkpoint.
    now: u64,
    /// The smallest size asked for that the log did not have yet: it becomes `now` when a
    /// group commit reaches it. Only the smallest is kept; waiters for larger sizes ask
    /// again when a checkpoint is published (`Checkpoints::wait`, the server's long poll).
    next: Option<u64>,
}

/// The newest signed checkpoint and who waits for which.
pub(crate) struct Checkpoints {
    latest: Mutex<Option<Arc<SignedCheckpoint>>>,
    /// Notified (under `latest`) when a checkpoint is published.
    published: Condvar,
    published_at: Mutex<Option<Instant>>,
    wanted: Mutex<Wanted>,
    /// The checkpointer's: notified (under `wanted`) when there is work before its clock.
    work: Condvar,
    /// Set by shutdown: nobody waits any more. An atomic, read under either lock, set
    /// before either is taken to notify: no lock is ever held while taking the other.
    stopped: AtomicBool,
    listeners: Mutex<Vec<CheckpointListener>>,
}

impl Checkpoints {
    pub fn new(latest: Option<SignedCheckpoint>) -> Checkpoints {
        Checkpoints {
            latest: Mutex::new(latest.map(Arc::new)),
            published: Condvar::new(),
            published_at: Mutex::new(None),
            wanted: Mutex::new(Wanted::default()),
            work: Condvar::new(),
            stopped: AtomicBool::new(false),
            listeners: Mutex::new(Vec::new()),
        }
    }

    pub fn latest(&self) -> Option<Arc<SignedCheckpoint>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn signed_size(&self) -> u64 {
        self.latest().map_or(0, |c| c.checkpoint.size)
    }

    pub fn age_ms(&self) -> Option<u64> {
        self.published_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed().as_millis() as u64)
    }

    /// The checkpointer's last step: waiters and listeners learn of `cp`.
    pub fn publish(&self, cp: SignedCheckpoint) {
        let size = cp.checkpoint.size;
        {
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            assert!(
                latest.as_ref().is_none_or(|c| c.checkpoint.size <= size),
                "checkpoints published out of order"
            );
            *latest = Some(Arc::new(cp));
            self.published.notify_all();
        }
        *self.published_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        for f in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            f(size);
        }
    }

    pub fn on_published(&self, f: CheckpointListener) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    /// Asks for a checkpoint covering `min_size` soon. A size the log has (`head`, read
    /// under the lock `head_reached` takes, so no group commit slips between) is signed at
    /// once; a larger one when a group commit reaches it. Either way one early signature per
    /// request at most: no caller can make every batch cost one.
    pub fn want(&self, min_size: u64, head: impl Fn() -> u64) {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if min_size <= head() {
            w.now = w.now.max(min_size);
        } else {
            w.next = Some(w.next.map_or(min_size, |n| n.min(min_size)));
        }
        self.work.notify_all();
    }

    /// A group commit took the head to `size`: a wanted size it reached is due now.
    pub fn head_reached(&self, size: u64) {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = w.next.filter(|&n| n <= size) {
            w.now = w.now.max(n);
            w.next = None;
            self.work.notify_all();
        }
    }

    /// Wakes the checkpointer and every waiter to look again (a thread panicked).
    pub fn wake(&self) {
        let _w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        self.work.notify_all();
        drop(_w);
        let _latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        self.published.notify_all();
    }

    /// Wakes the checkpointer at once, for good (shutdown): it signs its last and stops.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// The checkpointer's sleep: until `deadline`, a stop, or a wanted size above what is
    /// signed (`signed`). Every change to what it waits for notifies under the same lock.
    pub fn wait_for_work(&self, deadline: Instant, signed: impl Fn() -> u64) {
        let mut w = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopped.load(Ordering::SeqCst) || w.now > signed() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            w = self
                .work
                .wait_timeout(w, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Asks for and waits (up to `timeout`) for a checkpoint covering `min_size`; `head`
    /// reads the log's size. The request is renewed at every publication (see `want`).
    pub fn wait(
        &self,
        min_size: u64,
        timeout: Duration,
        head: impl Fn() -> u64,
    ) -> Option<Arc<SignedCheckpoint>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.want(min_size, &head);
            let guard = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cp) = guard.as_ref().filter(|c| c.checkpoint.size >= min_size) {
                return Some(cp.clone());
            }
            let now = Instant::now();
            if now >= deadline || self.stopped.load(Ordering::SeqCst) {
                return None;
            }
            drop(
                self.published
                    .wait_timeout(guard, deadline - now)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
    }
}
