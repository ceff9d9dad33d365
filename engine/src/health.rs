//! Health and failure: why writes stopped, what the signer, the sealer and the preallocator
//! last reported, and the shutdown flags. Every engine thread reports here; the status,
//! `/ready` and the metrics read it. Nothing here waits: the waits live with what is waited
//! for (the head and checkpoints in `head.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::EngineError;

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

/// The engine's health, one lock or atomic per fact.
#[derive(Default)]
pub(crate) struct Health {
    failed: Mutex<Option<Fault>>,
    /// `failed` is set: read on the submit path without taking the lock.
    failed_flag: AtomicBool,
    prealloc_error: Mutex<Option<Fault>>,
    signer_error: Mutex<Option<String>>,
    signer_failures: AtomicU64,
    signer_failures_in_a_row: AtomicU64,
    /// The last signing failed (`signer_failed`) and none has worked since (`signer_worked`):
    /// kept apart from `signer_error`, which any failed checkpoint sets.
    signing_down: AtomicBool,
    /// Ends of sealed segments whose footer carries no signed note (sealed while the signer
    /// was down), oldest first, until a checkpoint at or past each is in the log: the
    /// checkpointer signs one at each end, in order, when the signer is back.
    unsigned_footers: Mutex<VecDeque<u64>>,
    /// The last failed seal, until a seal succeeds, and failed seals since start.
    seal_error: Mutex<Option<String>>,
    seal_failures: AtomicU64,
    /// Set when shutdown begins, before the sequencer drains its queue (`shutting_down`
    /// comes after): the sealer stops retrying a failing seal, so that a sequencer waiting
    /// at a rotation for room in the seal queue is not waiting on it for ever.
    draining: AtomicBool,
    shutting_down: AtomicBool,
    /// During shutdown: the checkpointer signed its last, and the tail shipper shipped its
    /// last. The replicator waits for both before its final pass (the newest checkpoint
    /// over everything on the store), so a cleanly stopped log's bucket is all signed.
    checkpointer_finished: AtomicBool,
    tails_finished: AtomicBool,
}

/// What the status reports of health.
#[derive(Clone, Debug, Default)]
pub(crate) struct HealthReport {
    pub failed: Option<String>,
    pub preallocation_error: Option<String>,
    pub signer_error: Option<String>,
    pub signer_failures: u64,
    pub signer_failures_in_a_row: u64,
    pub seal_error: Option<String>,
    pub seal_failures: u64,
}

fn read<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(m: &Mutex<T>, v: T) {
    *m.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

impl Health {
    /// Recovery found segments sealed without a signed note (oldest first).
    pub fn with_unsigned_footers(ends: VecDeque<u64>) -> Health {
        Health {
            unsigned_footers: Mutex::new(ends),
            ..Health::default()
        }
    }

    /// Writes stop for good (until a restart); the first fault is the one kept.
    pub fn fail(&self, fault: Fault) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            tracing::error!("engine stops accepting writes: {}", fault.text());
            *f = Some(fault);
        }
        self.failed_flag.store(true, Ordering::SeqCst);
    }

    pub fn has_failed(&self) -> bool {
        self.failed_flag.load(Ordering::SeqCst)
    }

    pub fn failure(&self) -> Option<Fault> {
        read(&self.failed)
    }

    /// Why writes stopped, as the status says it.
    pub fn failed(&self) -> Option<String> {
        self.failure().map(|f| f.text())
    }

    pub fn prealloc_fault(&self) -> Option<Fault> {
        read(&self.prealloc_error)
    }

    pub fn set_prealloc_error(&self, e: Option<Fault>) {
        write(&self.prealloc_error, e);
    }

    /// Counts a failed signing (checkpointer or sealer).
    pub fn signer_failed(&self) {
        self.signing_down.store(true, Ordering::SeqCst);
        self.signer_failures.fetch_add(1, Ordering::Relaxed);
        self.signer_failures_in_a_row
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A signing worked (checkpointer or sealer).
    pub fn signer_worked(&self) {
        self.signing_down.store(false, Ordering::SeqCst);
    }

    /// Whether the last signing failed and none has worked since: seals then go on
    /// without asking the signer (their footers are signed by the checkpointer later).
    pub fn signer_down(&self) -> bool {
        self.signing_down.load(Ordering::SeqCst)
    }

    /// The outcome of the last checkpoint round: an error is kept until one succeeds.
    pub fn set_signer_error(&self, e: Option<String>) {
        if e.is_none() {
            self.signer_failures_in_a_row.store(0, Ordering::Relaxed);
        }
        write(&self.signer_error, e);
    }

    pub fn signer_error(&self) -> Option<String> {
        read(&self.signer_error)
    }

    /// A segment about to be sealed with no note in its footer, ending at `end`: the
    /// checkpointer then signs a checkpoint at `end`. Decided under the same lock as the
    /// checkpointer's publishing ([`Health::publish_gate`]), so no checkpoint past `end`
    /// can be published between the two. False when one already was (`signed` > `end`):
    /// the caller must sign the footer itself. Idempotent (a seal retried).
    pub fn footer_unsigned(&self, end: u64, signed: impl Fn() -> u64) -> bool {
        let mut q = self
            .unsigned_footers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let signed = signed();
        if signed >= end {
            return signed == end;
        }
        if q.back() != Some(&end) {
            assert!(
                q.back().is_none_or(|&b| b < end),
                "unsigned footers out of order"
            );
            q.push_back(end);
        }
        true
    }

    /// Held while a checkpoint is published: whether a segment's end below `size` and past
    /// `signed` awaits its checkpoint (then `size` must wait: checkpoints are in order).
    pub fn publish_gate(&self) -> MutexGuard<'_, VecDeque<u64>> {
        self.unsigned_footers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The ends of segments sealed without a signed note that no checkpoint in the log
    /// covers yet (`signed`: the newest checkpoint's size), oldest first.
    pub fn unsigned_footers_past(&self, signed: u64) -> Vec<u64> {
        let mut q = self
            .unsigned_footers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while q.front().is_some_and(|&e| e <= signed) {
            q.pop_front();
        }
        q.iter().copied().collect()
    }

    /// Records a seal's outcome: an error is counted and kept until a seal succeeds.
    pub fn seal_outcome(&self, e: Option<String>) {
        if e.is_some() {
            self.seal_failures.fetch_add(1, Ordering::Relaxed);
        }
        write(&self.seal_error, e);
    }

    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn begin_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn checkpointer_finished(&self) {
        self.checkpointer_finished.store(true, Ordering::SeqCst);
    }

    pub fn tails_finished(&self) {
        self.tails_finished.store(true, Ordering::SeqCst);
    }

    /// Whether the checkpointer (and, `with_tails`, the tail shipper) stopped.
    pub fn last_words_said(&self, with_tails: bool) -> bool {
        self.checkpointer_finished.load(Ordering::SeqCst)
            && (!with_tails || self.tails_finished.load(Ordering::SeqCst))
    }

    pub fn report(&self) -> HealthReport {
        HealthReport {
            failed: self.failed(),
            preallocation_error: self.prealloc_fault().map(|f| f.text()),
            signer_error: self.signer_error(),
            signer_failures: self.signer_failures.load(Ordering::Relaxed),
            signer_failures_in_a_row: self.signer_failures_in_a_row.load(Ordering::Relaxed),
            seal_error: read(&self.seal_error),
            seal_failures: self.seal_failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment's end is registered for a checkpoint only while no checkpoint past it was
    /// published: once one was, the sealer must sign the footer itself (the race that left
    /// `[.., 35000)` with neither a note nor a checkpoint at its end when the signer came
    /// back between the seal's check and its registration).
    #[test]
    fn an_unsigned_footer_is_registered_only_below_the_newest_checkpoint() {
        let h = Health::default();
        assert!(h.footer_unsigned(100, || 50));
        assert!(
            h.footer_unsigned(100, || 50),
            "a retried seal registers once"
        );
        assert_eq!(*h.publish_gate(), [100]);
        assert!(
            !h.footer_unsigned(200, || 250),
            "a checkpoint past it exists"
        );
        assert!(
            h.footer_unsigned(250, || 250),
            "a checkpoint at its end covers it"
        );
        assert_eq!(*h.publish_gate(), [100]);
        assert!(h.footer_unsigned(300, || 250));
        assert_eq!(h.unsigned_footers_past(100), [300]);
    }
}
