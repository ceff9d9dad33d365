//! What ingest may hold at once, whichever listener it comes through: bytes of events in
//! memory (`request_bytes_in_flight_max`: HTTP bodies, TCP frames and the batches a syslog
//! read makes, until the engine answers them), and each principal's share of the engine's
//! submission queue (`submissions_per_principal_max`), so one writer cannot take the whole
//! queue and hold every other one out.
//!
//! HTTP refuses at once when either is full (the byte budget: 503, the server is busy;
//! the share: 429, this caller sends too much; both with `Retry-After`); TCP and syslog
//! connections wait, and stop reading meanwhile, so TCP flow control slows the sender.

use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use auditlog_engine::Submitter;

use crate::listener::{SourceSlot, SourceSlots};

pub struct Admission {
    bytes: Arc<Semaphore>,
    pub bytes_max: usize,
    shares: Arc<SourceSlots<Submitter>>,
    pub share_max: usize,
    /// Told when a share is given back; principals waiting for one look again.
    freed: Arc<Notify>,
}

/// Bytes counted against `request_bytes_in_flight_max` until dropped.
pub type Bytes = OwnedSemaphorePermit;

/// One submission's place in its principal's share of the queue, given back when dropped
/// (in the engine's answer to the submission).
pub struct Share {
    slot: Option<SourceSlot<Submitter>>,
    freed: Arc<Notify>,
}

impl Drop for Share {
    fn drop(&mut self) {
        // The slot first: a waiter woken by the notification must find it free.
        drop(self.slot.take());
        self.freed.notify_waiters();
    }
}

impl Admission {
    pub fn new(bytes_max: usize, share_max: usize) -> Arc<Admission> {
        assert!(bytes_max > 0 && bytes_max <= Semaphore::MAX_PERMITS);
        assert!(share_max > 0);
        Arc::new(Admission {
            bytes: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
            shares: SourceSlots::new(share_max),
            share_max,
            freed: Arc::new(Notify::new()),
        })
    }

    /// Bytes counted now (for `/metrics`).
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes_max - self.bytes.available_permits()
    }

    /// `n` bytes (at least 1, at most the whole budget), or `None` when the budget is full.
    pub fn try_bytes(&self, n: usize) -> Option<Bytes> {
        self.bytes
            .clone()
            .try_acquire_many_owned(self.clamp(n))
            .ok()
    }

    /// `n` bytes, waiting for them.
    pub async fn bytes(&self, n: usize) -> Bytes {
        let n = self.clamp(n);
        match self.bytes.clone().acquire_many_owned(n).await {
            Ok(p) => p,
            // The semaphore is never closed.
            Err(_) => unreachable!("the byte budget was closed"),
        }
    }

    fn clamp(&self, n: usize) -> u32 {
        // `new` checked the budget fits a u32 (MAX_PERMITS is below u32::MAX).
        n.clamp(1, self.bytes_max) as u32
    }

    /// A place in `principal`'s share of the queue, or `None` when it has all of its share.
    /// Keyed by the `Submitter` itself: a clone is a reference count, so a submission on the
    /// ingest path allocates nothing here.
    pub fn try_share(&self, principal: &Submitter) -> Option<Share> {
        self.shares.take(principal.clone()).map(|slot| Share {
            slot: Some(slot),
            freed: self.freed.clone(),
        })
    }

    /// A place in `principal`'s share, waiting for one of its submissions to be answered.
    pub async fn share(&self, principal: &Submitter) -> Share {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a share given back in between is not missed.
            freed.as_mut().enable();
            if let Some(s) = self.try_share(principal) {
                return s;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_are_per_principal_and_a_waiter_gets_the_one_given_back() {
        let a = Admission::new(100, 2);
        let (ta, tb) = (Submitter::token("a"), Submitter::token("b"));
        let s1 = a.try_share(&ta).expect("first");
        let _s2 = a.try_share(&ta).expect("second");
        assert!(a.try_share(&ta).is_none(), "a's share is full");
        let _b = a.try_share(&tb).expect("b has its own share");
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.share(&Submitter::token("a")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(s1);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the share given back")
            .expect("task");
        drop(got);
    }

    #[tokio::test]
    async fn bytes_are_clamped_and_counted() {
        let a = Admission::new(100, 1);
        let p = a.try_bytes(1_000).expect("clamped to the whole budget");
        assert_eq!(a.bytes_in_flight(), 100);
        assert!(a.try_bytes(1).is_none());
        drop(p);
        let z = a.try_bytes(0).expect("at least one");
        assert_eq!(a.bytes_in_flight(), 1);
        drop(z);
        assert_eq!(a.bytes_in_flight(), 0);
    }
}
