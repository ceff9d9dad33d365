//! How far the object store holds the log, and the acknowledgements that wait for it.
//!
//! Leaves `[0, end)` are on the store when the sealed segments shipped so far (the
//! replicator's contiguous end) and the tail objects shipped so far (per open segment, the
//! tail shipper's) cover them without a gap. Every group commit is noted here with the
//! moment it became durable locally, so the tail lag (`auditlog_replication_tail_lag_ms`:
//! how long the oldest locally durable batch has waited for the store) is a fact, not an
//! estimate. In `durability = "remote"` the sequencer hands its receipts here instead of
//! completing them: they complete, in index order, when the store's end passes them.
//!
//! One mutex; the sequencer takes it once per group commit, the shippers once per upload.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::{Done, EngineError, Receipts};

/// Receipts of one group commit, waiting for the store.
type Held = Vec<(Done, Receipts)>;

/// Durable-locally moments closer than this are merged into one lag sample.
const SAMPLE_GRAIN: Duration = Duration::from_millis(5);
/// Lag samples kept; past it, new commits merge into the last sample (the lag it reports
/// can only be too old, never too young).
const SAMPLES_MAX: usize = 65_536;

#[derive(Default)]
struct State {
    /// The replicator's contiguous end of shipped sealed segments.
    sealed_end: u64,
    /// Open segment first leaf → end of its tails on the store.
    tails: BTreeMap<u64, u64>,
    /// `[0, end)` is on the store.
    end: u64,
    /// The head: `[0, head)` is durable locally.
    head: u64,
    /// (end of a group commit, when it became durable), oldest first, for ends > `end`.
    samples: VecDeque<(u64, Instant)>,
    /// Remote mode: receipts by the end of their group commit, in order.
    held: VecDeque<(u64, Held)>,
    held_bytes: u64,
    /// Set when nothing more will be shipped: held receipts are refused, none added.
    closed: Option<String>,
    /// Shutdown began: no commit will come, sleepers return.
    stopping: bool,
}

impl State {
    fn recompute(&mut self) -> Vec<Held> {
        let mut end = self.sealed_end.max(self.end);
        self.tails.retain(|_, e| *e > self.sealed_end);
        for (&first, &tail_end) in &self.tails {
            if first <= end {
                end = end.max(tail_end);
            }
        }
        assert!(end >= self.end, "the store's end moved backwards");
        self.end = end;
        while self.samples.front().is_some_and(|(e, _)| *e <= end) {
            self.samples.pop_front();
        }
        let mut done = Vec::new();
        while self.held.front().is_some_and(|(e, _)| *e <= end) {
            if let Some((_, h)) = self.held.pop_front() {
                self.held_bytes -= held_bytes(&h);
                done.push(h);
            }
        }
        done
    }
}

fn held_bytes(h: &Held) -> u64 {
    h.iter()
        .map(|(_, r)| 64 + 32 * r.leaf_hashes.len() as u64)
        .sum()
}

/// Shared by the sequencer, the tail shipper and the replicator.
pub(crate) struct StoreAcks {
    /// `durability = "remote"`: receipts wait here for the store.
    remote: bool,
    state: Mutex<State>,
    /// Notified when a group commit is noted (the tail shipper's wake-up in remote mode).
    committed: Condvar,
    /// Notified when held receipts complete (the sequencer's, waiting for room).
    drained: Condvar,
}

impl StoreAcks {
    pub fn new(remote: bool, head: u64) -> StoreAcks {
        StoreAcks {
            remote,
            state: Mutex::new(State {
                head,
                ..State::default()
            }),
            committed: Condvar::new(),
            drained: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `[0, end)` is on the store.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// How long the oldest locally durable batch not yet on the store has waited (0: none).
    pub fn lag_ms(&self) -> u64 {
        self.lock()
            .samples
            .front()
            .map_or(0, |(_, at)| at.elapsed().as_millis() as u64)
    }

    /// Events whose receipts are held for the store, and the receipts' bytes as counted
    /// against the limit.
    pub fn held(&self) -> (usize, u64) {
        let s = self.lock();
        let events = s
            .held
            .iter()
            .flat_map(|(_, h)| h.iter().map(|(_, r)| r.leaf_hashes.len()))
            .sum();
        (events, s.held_bytes)
    }

    /// The sequencer made `[.., end)` durable locally. In remote mode the receipts are held
    /// until the store has them (returned `None`); otherwise they come back to be completed.
    pub fn committed(&self, end: u64, receipts: Held) -> Option<Held> {
        let now = Instant::now();
        let mut s = self.lock();
        assert!(end >= s.head, "the head moved backwards");
        s.head = end;
        if end > s.end {
            let full = s.samples.len() >= SAMPLES_MAX;
            match s.samples.back_mut() {
                Some(last) if full || now - last.1 < SAMPLE_GRAIN => last.0 = end,
                _ => s.samples.push_back((end, now)),
            }
        }
        let out = if self.remote && s.closed.is_none() {
            s.held_bytes += held_bytes(&receipts);
            s.held.push_back((end, receipts));
            None
        } else {
            Some(receipts)
        };
        let refused = s.closed.clone().filter(|_| self.remote);
        drop(s);
        self.committed.notify_all();
        match (out, refused) {
            (Some(h), Some(why)) => {
                refuse(vec![h], &why);
                None
            }
            (out, _) => out,
        }
    }

    /// The tail shipper stored the tails of the segment from `segment_first` up to `end`.
    pub fn tail_shipped(&self, segment_first: u64, end: u64) {
        let done = {
            let mut s = self.lock();
            let e = s.tails.entry(segment_first).or_insert(end);
            *e = (*e).max(end);
            s.recompute()
        };
        self.complete(done);
    }

    /// The replicator shipped every sealed segment below `end`.
    pub fn sealed_shipped(&self, end: u64) {
        let done = {
            let mut s = self.lock();
            s.sealed_end = s.sealed_end.max(end);
            s.recompute()
        };
        self.complete(done);
    }

    fn complete(&self, done: Vec<Held>) {
        if done.is_empty() {
            return;
        }
        for held in done {
            for (f, r) in held {
                f(Ok(r));
            }
        }
        self.drained.notify_all();
    }

    /// The sequencer's back-pressure in remote mode: waits while more than `max` bytes of
    /// receipts wait for the store, until `give_up` says to stop waiting.
    pub fn wait_for_room(&self, max: u64, give_up: &dyn Fn() -> bool) {
        if !self.remote {
            return;
        }
        let mut s = self.lock();
        while s.held_bytes > max && s.closed.is_none() && !give_up() {
            s = self
                .drained
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The tail shipper's sleep: until a group commit past `end` (remote mode), `timeout`,
    /// or a close.
    pub fn wait_for_commit(&self, end: u64, timeout: Duration) {
        let s = self.lock();
        if s.head > end || s.closed.is_some() || s.stopping {
            return;
        }
        drop(
            self.committed
                .wait_timeout(s, timeout)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    /// Wakes every sleeper.
    fn wake(&self) {
        self.committed.notify_all();
        self.drained.notify_all();
    }

    /// Shutdown began (the sequencer stopped): sleepers return, now and from now on.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake();
    }

    /// Nothing more will reach the store (shutdown, failure, a lost lease): every held
    /// receipt is refused with `why`, and so is any later one.
    pub fn close(&self, why: &str) {
        let held: Vec<Held> = {
            let mut s = self.lock();
            s.closed.get_or_insert_with(|| why.to_string());
            s.held_bytes = 0;
            s.held.drain(..).map(|(_, h)| h).collect()
        };
        refuse(held, why);
        self.wake();
    }
}

fn refuse(held: Vec<Held>, why: &str) {
    for h in held {
        for (f, _) in h {
            f(Err(EngineError::NotDurableRemotely(why.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as M};

    fn receipt(first: u64, n: usize, log: &Arc<M<Vec<String>>>) -> (Done, Receipts) {
        let log = log.clone();
        (
            Box::new(move |r: crate::Result<Receipts>| {
                log.lock().unwrap().push(match r {
                    Ok(r) => format!("ok {}", r.first_index),
                    Err(e) => format!("err {e}"),
                })
            }),
            Receipts {
                first_index: first,
                received_at_unix_ns: 0,
                leaf_hashes: vec![[0u8; 32]; n],
            },
        )
    }

    #[test]
    fn remote_receipts_complete_in_order_when_the_store_covers_them() {
        let log = Arc::new(M::new(Vec::new()));
        let a = StoreAcks::new(true, 0);
        assert!(a.committed(10, vec![receipt(0, 10, &log)]).is_none());
        assert!(a.committed(25, vec![receipt(10, 15, &log)]).is_none());
        assert_eq!(a.held().0, 25);
        // A tail of a later segment alone covers nothing: there is a gap below it.
        a.tail_shipped(20, 25);
        assert_eq!(a.end(), 0);
        assert!(log.lock().unwrap().is_empty());
        // The first segment's tails up to 12: the first commit completes, not the second.
        a.tail_shipped(0, 12);
        assert_eq!(a.end(), 12);
        assert_eq!(*log.lock().unwrap(), vec!["ok 0"]);
        // The segment sealed and shipped up to 20; the later segment's tail joins on.
        a.sealed_shipped(20);
        assert_eq!(a.end(), 25);
        assert_eq!(*log.lock().unwrap(), vec!["ok 0", "ok 10"]);
        assert_eq!(a.held(), (0, 0));
        assert_eq!(a.lag_ms(), 0);
    }

    #[test]
    fn local_receipts_come_back_and_close_refuses_what_is_held() {
        let log = Arc::new(M::new(Vec::new()));
        let local = StoreAcks::new(false, 0);
        assert!(local.committed(3, vec![receipt(0, 3, &log)]).is_some());
        assert_eq!(local.end(), 0, "local mode still tracks the store");
        let remote = StoreAcks::new(true, 0);
        assert!(remote.committed(3, vec![receipt(0, 3, &log)]).is_none());
        remote.close("store unreachable at shutdown");
        assert!(remote.committed(5, vec![receipt(3, 2, &log)]).is_none());
        let got = log.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|l| l.starts_with("err ")), "{got:?}");
    }
}
