//! The writer's lease: one object in the store (`lease`, FORMATS.md §15.1), created with
//! `If-None-Match: *` and renewed with `If-Match` on its version tag (the store's own
//! conditional writes: S3 and Azure ETags, GCS generations). Nothing here invents a
//! protocol; the store decides who wrote last.
//!
//! A writer holds the lease until `valid_until`: the moment it *sent* its last successful
//! renewal plus the period, less a margin. A standby takes the lease only after seeing the
//! same version for a whole period on its own clock, counted from when it *read* it — which
//! is after the writer sent it — so the two intervals never overlap (clock rates, not clock
//! values, must agree; the margin covers drift and scheduling). Past `valid_until` the
//! writer acknowledges nothing, signs nothing and uploads nothing (every such step checks
//! [`Lease::check`]), and its renewal thread fails the engine: fail-stop, as a failed sync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlog_worm::{SwapOutcome, WormTarget};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The lease object's key, beside `checkpoint` at the target's root.
pub const LEASE_KEY: &str = "lease";

/// The lease object's JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Who holds it: a stable name per node (`[replication] node_name`).
    pub holder: String,
    /// Where the holder takes writes (for replicas' answers), if it said.
    pub writer_url: String,
    /// Incremented by every takeover: the writer generation.
    pub epoch: u64,
    pub period_ms: u64,
    pub renewed_at_unix_ms: u64,
}

fn now_ms() -> u64 {
    crate::now_unix_ns() / 1_000_000
}

fn store_err(e: auditlog_worm::WormError) -> EngineError {
    EngineError::StoreUnavailable {
        place: LEASE_KEY.into(),
        reason: e.to_string(),
    }
}

fn parse(bytes: &[u8]) -> Result<LeaseRecord> {
    serde_json::from_slice(bytes).map_err(|e| EngineError::Corrupt {
        path: LEASE_KEY.into(),
        what: format!("lease object: {e}"),
    })
}

/// A held lease, checked by every step that extends the log.
pub struct Lease {
    target: Box<dyn WormTarget>,
    base: Instant,
    /// Nanoseconds after `base` until which the lease is ours.
    valid_until_ns: AtomicU64,
    state: Mutex<(String, LeaseRecord)>,
    period: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("record", &self.record())
            .finish()
    }
}

impl Lease {
    fn margin(&self) -> Duration {
        self.period / 5
    }

    /// Takes the lease for `holder`: creates it, renews our own, or takes one whose
    /// version did not change for a whole period (its holder is gone). A lease another
    /// holder renews is refused, naming it.
    pub fn acquire(
        target: Box<dyn WormTarget>,
        holder: &str,
        writer_url: &str,
        period: Duration,
    ) -> Result<Arc<Lease>> {
        probe(target.as_ref())?;
        let base = Instant::now();
        let mut record = LeaseRecord {
            holder: holder.to_string(),
            writer_url: writer_url.to_string(),
            epoch: 1,
            period_ms: period.as_millis() as u64,
            renewed_at_unix_ms: now_ms(),
        };
        let expected = match target.get_tagged(LEASE_KEY).map_err(store_err)? {
            None => None,
            Some(t) => {
                let theirs = parse(&t.bytes)?;
                if theirs.holder == holder {
                    record.epoch = theirs.epoch;
                    Some(t.tag)
                } else {
                    let tag = wait_unchanged(target.as_ref(), &t.tag, &theirs)?;
                    record.epoch = theirs.epoch + 1;
                    Some(tag)
                }
            }
        };
        let sent = Instant::now();
        let bytes = serde_json::to_vec(&record).expect("a lease record serializes");
        match target
            .put_if(LEASE_KEY, &bytes, expected.as_deref())
            .map_err(store_err)?
        {
            SwapOutcome::Stored { tag } => {
                let lease = Arc::new(Lease {
                    target,
                    base,
                    valid_until_ns: AtomicU64::new(0),
                    state: Mutex::new((tag, record)),
                    period,
                });
                lease.extend_from(sent);
                tracing::info!("lease taken: {:?}", lease.record());
                Ok(lease)
            }
            SwapOutcome::Conflict => Err(EngineError::Fenced(
                "another node wrote the lease while this one took it".into(),
            )),
        }
    }

    /// `acquire` on the store at `url`.
    pub fn acquire_at(
        url: &str,
        options: &auditlog_worm::TargetOptions,
        holder: &str,
        writer_url: &str,
        period: Duration,
    ) -> Result<Arc<Lease>> {
        let target = auditlog_worm::open(url, options)
            .map_err(|e| EngineError::Config(format!("{url}: {e}")))?;
        Lease::acquire(target, holder, writer_url, period)
    }

    fn extend_from(&self, sent: Instant) {
        let until = sent + self.period - self.margin();
        self.valid_until_ns.store(
            until.duration_since(self.base).as_nanos() as u64,
            Ordering::SeqCst,
        );
    }

    pub fn record(&self) -> LeaseRecord {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Whether the lease is still ours now.
    pub fn valid(&self) -> bool {
        (self.base.elapsed().as_nanos() as u64) < self.valid_until_ns.load(Ordering::SeqCst)
    }

    /// `Ok` while the lease is ours; the error every fenced step returns.
    pub fn check(&self) -> Result<()> {
        if self.valid() {
            Ok(())
        } else {
            Err(EngineError::Fenced(format!(
                "the writer's lease (held by {}) lapsed: this node no longer extends the log",
                self.record().holder
            )))
        }
    }

    /// One renewal. `Ok(false)` when the store did not answer (try again while valid);
    /// an error when another node holds the lease now.
    pub fn renew(&self) -> Result<bool> {
        let (tag, mut record) = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        record.renewed_at_unix_ms = now_ms();
        let bytes = serde_json::to_vec(&record).expect("a lease record serializes");
        let sent = Instant::now();
        match self.target.put_if(LEASE_KEY, &bytes, Some(&tag)) {
            Ok(SwapOutcome::Stored { tag }) => {
                // Only extend a lease still held when the request went out.
                if self.valid() {
                    self.extend_from(sent);
                }
                *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (tag, record);
                Ok(true)
            }
            Ok(SwapOutcome::Conflict) => {
                self.valid_until_ns.store(0, Ordering::SeqCst);
                Err(EngineError::Fenced(
                    "another node took the writer's lease: this node is fenced".into(),
                ))
            }
            Err(e) => {
                tracing::warn!("lease renewal: {e}");
                Ok(false)
            }
        }
    }

    /// The renewal loop: every third of the period; stops with the reason the lease was
    /// lost (which fails the engine), or when `stopping` says so.
    pub fn keep(&self, stopping: &dyn Fn() -> bool) -> Option<String> {
        let every = self.period / 3;
        let mut next = Instant::now() + every;
        loop {
            while Instant::now() < next {
                if stopping() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10).min(every));
            }
            next = Instant::now() + every;
            match self.renew() {
                Ok(true) => {}
                Ok(false) if self.valid() => next = Instant::now() + every / 4,
                Ok(false) => {
                    return Some(format!(
                        "the writer's lease could not be renewed within its period ({} ms): this node stops extending the log",
                        self.period.as_millis()
                    ))
                }
                Err(e) => return Some(e.to_string()),
            }
        }
    }
}

/// A store (or a proxy before it) that ignores `If-Match` would make every renewal look
/// conditional and fence nobody: a write conditional on a tag that cannot be current must
/// come back `Conflict`, and nothing be written.
fn probe(target: &dyn WormTarget) -> Result<()> {
    const PROBE_KEY: &str = "lease-probe";
    // The probe key never exists, so any tag is stale; "1" is a tag every store accepts.
    let impossible = "1";
    match target
        .put_if(PROBE_KEY, b"a lease probe: never stored", Some(impossible))
        .map_err(store_err)?
    {
        SwapOutcome::Conflict => Ok(()),
        SwapOutcome::Stored { .. } => Err(EngineError::Config(format!(
            "{}: the store ignored If-Match on a conditional write: it cannot hold a lease",
            target.describe()
        ))),
    }
}

/// Watches a lease held by someone else: returns its tag once it stayed the same for a
/// whole period (counted from the first read), or refuses when its holder renews it.
fn wait_unchanged(target: &dyn WormTarget, tag: &str, theirs: &LeaseRecord) -> Result<String> {
    let period = Duration::from_millis(theirs.period_ms.max(1));
    let seen = Instant::now();
    loop {
        std::thread::sleep((period / 10).max(Duration::from_millis(10)));
        let now = target.get_tagged(LEASE_KEY).map_err(store_err)?;
        match now {
            Some(t) if t.tag == tag => {
                if seen.elapsed() >= period {
                    return Ok(t.tag);
                }
            }
            Some(t) => {
                let r = parse(&t.bytes)?;
                return Err(EngineError::Fenced(format!(
                    "the lease is held by {} (epoch {}), who renews it: start this node as a standby",
                    r.holder, r.epoch
                )));
            }
            None => {
                return Err(EngineError::Fenced(
                    "the lease object disappeared while watched".into(),
                ))
            }
        }
    }
}

/// What a standby watches: `Some(tag, record)` of the lease, if any.
pub fn read(target: &dyn WormTarget) -> Result<Option<(String, LeaseRecord)>> {
    match target.get_tagged(LEASE_KEY).map_err(store_err)? {
        None => Ok(None),
        Some(t) => Ok(Some((t.tag, parse(&t.bytes)?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_worm::{Lock, NewObject, ObjectInfo, PutOutcome, Retention, Tagged, WormCheck};

    /// A store that drops preconditions (a proxy that strips `If-Match`, say).
    struct IgnoresPreconditions(Box<dyn WormTarget>);

    impl WormTarget for IgnoresPreconditions {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn check_worm(&self) -> auditlog_worm::Result<WormCheck> {
            self.0.check_worm()
        }
        fn put_create(
            &self,
            key: &str,
            bytes: &[u8],
            lock: Option<Lock>,
        ) -> auditlog_worm::Result<PutOutcome> {
            self.0.put_create(key, bytes, lock)
        }
        fn put_create_many(
            &self,
            objects: &[NewObject<'_>],
        ) -> auditlog_worm::Result<Vec<PutOutcome>> {
            self.0.put_create_many(objects)
        }
        fn put_mutable(&self, key: &str, bytes: &[u8]) -> auditlog_worm::Result<()> {
            self.0.put_mutable(key, bytes)
        }
        fn get(&self, key: &str) -> auditlog_worm::Result<Option<Vec<u8>>> {
            self.0.get(key)
        }
        fn get_tagged(&self, key: &str) -> auditlog_worm::Result<Option<Tagged>> {
            self.0.get_tagged(key)
        }
        fn put_if(
            &self,
            key: &str,
            bytes: &[u8],
            _expected: Option<&str>,
        ) -> auditlog_worm::Result<SwapOutcome> {
            self.0.put_mutable(key, bytes)?;
            Ok(SwapOutcome::Stored { tag: "x".into() })
        }
        fn get_range(
            &self,
            key: &str,
            offset: u64,
            len: u64,
        ) -> auditlog_worm::Result<Option<Vec<u8>>> {
            self.0.get_range(key, offset, len)
        }
        fn retention(&self, key: &str) -> auditlog_worm::Result<Option<Retention>> {
            self.0.retention(key)
        }
        fn list(&self, prefix: &str) -> auditlog_worm::Result<Vec<ObjectInfo>> {
            self.0.list(prefix)
        }
    }

    fn local(dir: &std::path::Path) -> Box<dyn WormTarget> {
        auditlog_worm::open(
            &format!("file://{}", dir.display()),
            &auditlog_worm::TargetOptions::default(),
        )
        .expect("local target")
    }

    #[test]
    fn a_lease_is_taken_renewed_and_refused_to_a_second_holder() {
        let d = tempfile::tempdir().expect("tmp");
        let period = Duration::from_millis(400);
        let a = Lease::acquire(local(d.path()), "a", "", period).expect("create");
        assert!(a.valid());
        assert_eq!(a.record().epoch, 1);
        assert!(a.renew().expect("renew"));
        // b watches a renewing: refused, naming a.
        let renewing = std::thread::scope(|s| {
            let t = s.spawn(|| {
                for _ in 0..8 {
                    std::thread::sleep(period / 4);
                    let _ = a.renew();
                }
            });
            let r = Lease::acquire(local(d.path()), "b", "", period);
            t.join().expect("renewer");
            r
        });
        match renewing {
            Err(EngineError::Fenced(why)) => assert!(why.contains("held by a"), "{why}"),
            other => panic!("took a renewed lease: {other:?}"),
        }
        // a stops renewing: b takes it after a period, epoch 2; a's next renewal is fenced.
        let b = Lease::acquire(local(d.path()), "b", "", period).expect("take over");
        assert_eq!(b.record().epoch, 2);
        assert!(matches!(a.renew(), Err(EngineError::Fenced(_))));
        assert!(!a.valid() && a.check().is_err());
        assert!(b.valid());
    }

    #[test]
    fn a_store_that_ignores_preconditions_cannot_hold_a_lease() {
        let d = tempfile::tempdir().expect("tmp");
        let target = Box::new(IgnoresPreconditions(local(d.path())));
        match Lease::acquire(target, "a", "", Duration::from_millis(400)) {
            Err(EngineError::Config(why)) => assert!(why.contains("If-Match"), "{why}"),
            other => panic!("a lease on a store without preconditions: {other:?}"),
        }
    }

    #[test]
    fn a_lease_not_renewed_within_its_period_lapses() {
        let d = tempfile::tempdir().expect("tmp");
        let a =
            Lease::acquire(local(d.path()), "a", "", Duration::from_millis(300)).expect("create");
        assert!(a.check().is_ok());
        std::thread::sleep(Duration::from_millis(300));
        assert!(a.check().is_err(), "valid past period - margin");
    }
}
