//! The replicator: one thread that ships every sealed segment, full hash tile, checkpoint,
//! the log's metadata and key history to a WORM object store, create-only and under the
//! retention its classification requires, recording each object in a durable manifest.
//!
//! Its loop owns all state and control flow: ask the planner for the next object, upload
//! it, record it, or on failure back off (capped exponential) and try again. Nothing here
//! sits on the ingest path; a slow or absent store shows up as lag, never as back-pressure.

mod config;
mod manifest;
mod plan;
mod prune;
mod tail;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlog_worm::{NewObject, PutOutcome, WormError, WormTarget};

pub use config::{Durability, ReplicationConfig};
pub use manifest::{Entry as ManifestEntry, Kind as ManifestKind};
pub(crate) use tail::TailShipper;

use crate::error::{io_err, EngineError, Result};
use crate::pruned::{PrunedLog, PrunedSegment};
use crate::Shared;
pub(crate) use manifest::{Manifest, FOLLOWED};
use plan::{Item, Planner};
use prune::Verdict;

/// What the replicator says about itself, for `/ready` and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ReplicationStatus {
    pub target: String,
    /// What the store said at the last check (`None`: not reached yet).
    pub worm_enforced: Option<bool>,
    pub worm_detail: String,
    /// Sealed segments (and their bytes) not yet on the store; the age of the oldest.
    pub segments_pending: u64,
    pub bytes_pending: u64,
    pub oldest_pending_age_ms: u64,
    /// Full level-0 hash tiles under the latest checkpoint and the shipped segments, not
    /// yet shipped.
    pub tiles_pending: u64,
    /// Leaves `[0, shipped_end)` are on the store.
    pub shipped_end: u64,
    pub objects_shipped: u64,
    pub bytes_shipped: u64,
    /// Objects found already on the store (a crash between upload and manifest).
    pub objects_already_there: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Something no retry can fix: a key on the store holds other bytes, or the store
    /// does not enforce retention. Shipping stops until an operator looks.
    pub alarm: Option<String>,
    pub manifest_entries: u64,
    /// The last look found nothing to ship.
    pub idle: bool,
    /// Leaves `[0, store_end)` are on the store, as sealed segments or tails.
    pub store_end: u64,
    /// How long the oldest locally durable batch has waited for the store (0: none waits).
    pub tail_lag_ms: u64,
    pub tails_shipped: u64,
    pub tail_bytes_shipped: u64,
    pub tail_failures: u64,
    pub tail_last_error: Option<String>,
    /// A tail key on the store holds other bytes (another writer): tails stop.
    pub tail_alarm: Option<String>,
    /// `durability = "remote"`: events synced locally whose acknowledgement waits for the
    /// store.
    pub remote_waiting_events: u64,
}

/// Shared between the replicator thread and `Engine::status`.
#[derive(Default)]
pub(crate) struct Monitor {
    status: Mutex<ReplicationStatus>,
}

impl Monitor {
    pub fn snapshot(&self) -> ReplicationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut ReplicationStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Everything the thread needs, prepared (and the target checked) while the engine opens.
pub(crate) struct Replicator {
    target: Box<dyn WormTarget>,
    manifest: Manifest,
    pruned: PrunedLog,
    planner: Planner,
    monitor: Arc<Monitor>,
    worm_checked: bool,
    tail: Option<TailShipper>,
    /// A tail shipper runs beside this thread (so its last round comes before the final pass).
    with_tails: bool,
}

/// Opens the target and the manifest. A store that answers and cannot keep the WORM
/// promise is refused here unless `allow_non_worm`; one that does not answer is checked
/// again by the thread before its first upload.
pub(crate) fn prepare(
    shared_cfg: &crate::EngineConfig,
) -> Result<Option<(Replicator, Arc<Monitor>)>> {
    let Some(cfg) = shared_cfg.replication.as_ref().filter(|c| c.enabled) else {
        return Ok(None);
    };
    cfg.validate().map_err(EngineError::Config)?;
    let url = cfg.target_url(&shared_cfg.data_dir);
    let target = auditlog_worm::open(&url, &cfg.options)
        .map_err(|e| EngineError::Config(format!("replication target {url}: {e}")))?;
    let monitor = Arc::new(Monitor::default());
    monitor.update(|s| s.target = target.describe());
    let mut worm_checked = false;
    match target.check_worm() {
        Ok(c) => {
            record_check(&monitor, &c);
            if !c.enforced && !cfg.non_worm_allowed() {
                return Err(EngineError::Config(format!(
                    "replication target {} cannot keep the WORM promise ({}); set replication.allow_non_worm = true to ship there anyway",
                    target.describe(),
                    c.detail
                )));
            }
            if !c.enforced {
                tracing::warn!(
                    "replication target {} is not WORM: {}",
                    target.describe(),
                    c.detail
                );
            }
            worm_checked = true;
        }
        Err(e) => tracing::warn!(
            "replication target {} not reachable at start: {e}",
            target.describe()
        ),
    }
    let dir = shared_cfg
        .data_dir
        .join(auditlog_formats::layout::REPLICATION_DIR);
    let (manifest, mut shipped, entries) = Manifest::open(&dir)?;
    // A pruned segment was shipped by definition: should the (derived) manifest be lost,
    // it is not uploaded again (it cannot be: it is gone locally), and tiles and
    // checkpoints above it still go out.
    for p in crate::pruned::read(&shared_cfg.data_dir)? {
        if !shipped.segments.contains_key(&p.first) {
            shipped.record(&ManifestEntry {
                kind: ManifestKind::Segment,
                key: p.key,
                bytes: p.bytes,
                blake3: p.blake3,
                retain_until_unix_s: p.retain_until_unix_s,
                shipped_at_unix_s: 0,
                first: Some(p.first),
                end: Some(p.end),
                outcome: "pruned".into(),
            });
        }
    }
    monitor.update(|s| {
        s.manifest_entries = entries;
        s.shipped_end = shipped.contiguous_end();
    });
    let pruned = PrunedLog::open(&shared_cfg.data_dir)?;
    let tail = tail::prepare(cfg, &url, monitor.clone())?;
    let planner = Planner::new(cfg.clone(), shipped);
    Ok(Some((
        Replicator {
            target,
            manifest,
            pruned,
            planner,
            monitor: monitor.clone(),
            worm_checked,
            with_tails: tail.is_some(),
            tail,
        },
        monitor,
    )))
}

fn record_check(monitor: &Monitor, c: &auditlog_worm::WormCheck) {
    monitor.update(|s| {
        s.worm_enforced = Some(c.enforced);
        s.worm_detail = c.detail.clone();
    });
}

impl Replicator {
    /// The tail shipper, to run on a thread of its own.
    pub(crate) fn take_tail(&mut self) -> Option<TailShipper> {
        self.tail.take()
    }

    pub(crate) fn run(mut self, shared: Arc<Shared>) {
        let cfg = self.planner.config().clone();
        let poll = Duration::from_millis(cfg.poll_interval_ms.max(1));
        let mut backoff = Duration::from_millis(cfg.retry_ms_initial.max(1));
        let stopping = || shared.health.shutting_down();
        shared
            .store_acks
            .sealed_shipped(self.planner.shipped().contiguous_end());
        while !stopping() {
            crate::config::FaultHooks::maybe_panic(
                shared.config.faults.as_ref(),
                "auditlog-replicator",
            );
            let lag = self.planner.lag(&shared);
            self.monitor.update(|s| {
                s.segments_pending = lag.segments;
                s.bytes_pending = lag.bytes;
                s.oldest_pending_age_ms = lag.oldest_age_ms;
                s.tiles_pending = lag.tiles;
                s.shipped_end = self.planner.shipped().contiguous_end();
            });
            if self.monitor.snapshot().alarm.is_some() {
                sleep_unless(&stopping, poll);
                continue;
            }
            // Shipping comes first; only a replicator with nothing to ship prunes.
            let step = self
                .step(&shared)
                .and_then(|shipped| Ok(shipped || self.prune(&shared)?));
            match step {
                Ok(true) => {
                    self.monitor.update(|s| s.idle = false);
                    backoff = Duration::from_millis(cfg.retry_ms_initial.max(1));
                }
                Ok(false) => {
                    self.monitor.update(|s| s.idle = true);
                    sleep_unless(&stopping, poll);
                }
                Err(e) => {
                    let alarm = matches!(e, StepError::Alarm(_));
                    let text = e.to_string();
                    tracing::warn!(
                        "replication: {text}{}",
                        if alarm { "" } else { "; retrying" }
                    );
                    self.monitor.update(|s| {
                        s.idle = false;
                        s.failures += 1;
                        s.last_error = Some(text.clone());
                        if alarm {
                            s.alarm = Some(text.clone());
                        }
                    });
                    sleep_unless(&stopping, backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(cfg.retry_ms_max.max(1)));
                }
            }
        }
        self.final_pass(&shared);
    }

    /// At shutdown, once the checkpointer has signed its last and the tail shipper shipped
    /// its last: the newest checkpoint the store's data covers, and the `latest` pointer,
    /// so that a cleanly stopped log leaves a bucket that is signed to its end. Bounded:
    /// a store that does not answer costs one failed attempt each.
    fn final_pass(&mut self, shared: &Shared) {
        let deadline = Instant::now()
            + Duration::from_millis(self.planner.config().tail_request_timeout_ms)
            + Duration::from_secs(5);
        while !shared.health.last_words_said(self.with_tails) {
            if Instant::now() >= deadline || shared.health.has_failed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.monitor.snapshot().alarm.is_some() {
            return;
        }
        for _ in 0..2 {
            match self.final_step(shared) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!("replication: final checkpoint not shipped: {e}");
                    return;
                }
            }
        }
    }

    fn final_step(&mut self, shared: &Shared) -> Result<bool, StepError> {
        let Some(item) = self.planner.next_final(shared).map_err(StepError::Engine)? else {
            return Ok(false);
        };
        self.upload(shared, item).map(|_| true)
    }

    /// Ships the next object if there is one; `Ok(false)` when there is nothing to do.
    fn step(&mut self, shared: &Shared) -> Result<bool, StepError> {
        if !self.worm_checked {
            let c = self.target.check_worm().map_err(StepError::Store)?;
            record_check(&self.monitor, &c);
            if !c.enforced && !self.planner.config().non_worm_allowed() {
                return Err(StepError::Alarm(format!(
                    "target does not keep the WORM promise ({}); nothing is shipped",
                    c.detail
                )));
            }
            self.worm_checked = true;
        }
        let Some(item) = self.planner.next(shared).map_err(StepError::Engine)? else {
            return Ok(false);
        };
        self.upload(shared, item)?;
        Ok(true)
    }

    /// Stores one item (an object group, or the `latest` pointer) and records it.
    fn upload(&mut self, shared: &Shared, item: Item) -> Result<(), StepError> {
        shared.fence().map_err(StepError::Engine)?;
        let started = Instant::now();
        let bytes = item.bytes_len();
        let store_err = |e: WormError| match e {
            WormError::Checksum { .. } => StepError::Alarm(e.to_string()),
            e => StepError::Store(e),
        };
        let (count, already_there) = match item {
            Item::Latest { size, bytes } => {
                self.target
                    .put_mutable("checkpoint", &bytes)
                    .map_err(store_err)?;
                self.planner.latest_shipped(size);
                (1, 0)
            }
            Item::Objects(objects) => {
                let group: Vec<NewObject<'_>> = objects
                    .iter()
                    .map(|(entry, bytes)| NewObject {
                        key: &entry.key,
                        bytes,
                        lock: self.planner.lock(entry.retain_until_unix_s),
                    })
                    .collect();
                let outcomes = self.target.put_create_many(&group).map_err(store_err)?;
                if outcomes.len() != objects.len() {
                    return Err(StepError::Store(WormError::Config(format!(
                        "{} outcomes for {} objects",
                        outcomes.len(),
                        objects.len()
                    ))));
                }
                let entries: Vec<ManifestEntry> = objects
                    .into_iter()
                    .zip(&outcomes)
                    .map(|((mut entry, _), outcome)| {
                        entry.outcome = match outcome {
                            PutOutcome::Created => "created".into(),
                            PutOutcome::AlreadyThere => "already_there".into(),
                        };
                        entry
                    })
                    .collect();
                self.manifest.append(&entries).map_err(StepError::Engine)?;
                for entry in &entries {
                    self.planner.shipped_mut().record(entry);
                }
                shared
                    .store_acks
                    .sealed_shipped(self.planner.shipped().contiguous_end());
                tracing::debug!(
                    "shipped {} ({} objects, {bytes} bytes) in {:?}",
                    entries[0].key,
                    entries.len(),
                    started.elapsed()
                );
                let n = entries.len() as u64;
                self.monitor.update(|s| s.manifest_entries += n);
                let again = outcomes
                    .iter()
                    .filter(|o| **o == PutOutcome::AlreadyThere)
                    .count() as u64;
                (n, again)
            }
        };
        self.monitor.update(|s| {
            s.objects_shipped += count;
            s.bytes_shipped += bytes;
            s.objects_already_there += already_there;
            s.last_error = None;
        });
        Ok(())
    }
}

impl Replicator {
    /// Deletes one local sealed segment the policy lets go (`prune::pick`), after reading
    /// its object back and finding the same bytes; `Ok(false)` when there is none. The
    /// pruned list is synced before the unlink, and the directory after it, so a crash
    /// leaves the segment present, or absent and recorded.
    fn prune(&mut self, shared: &Shared) -> Result<bool, StepError> {
        let Some(keep_ms) = self.planner.config().local_keep_ms else {
            return Ok(false);
        };
        let checkpoint_size = shared.checkpoints.latest().map_or(0, |c| c.checkpoint.size);
        let sealed = plan::sealed_snapshot(shared);
        let Some((seg, shipped)) = prune::pick(
            &sealed,
            self.planner.shipped(),
            checkpoint_size,
            crate::now_unix_ns(),
            keep_ms,
        ) else {
            return Ok(false);
        };
        let object = self.target.get(&shipped.key).map_err(StepError::Store)?;
        let verdict = prune::compare(object.as_deref(), &seg.file, &seg.path, shipped)
            .map_err(StepError::Engine)?;
        drop(object);
        match verdict {
            Verdict::Same => {}
            Verdict::Missing => {
                return Err(StepError::Alarm(format!(
                    "{}: shipped, but missing on the store; not pruned",
                    shipped.key
                )))
            }
            Verdict::Differs(why) => {
                return Err(StepError::Alarm(format!(
                    "{}: the store's copy is not the local segment ({why}); not pruned",
                    shipped.key
                )))
            }
        }
        let entry = PrunedSegment {
            first: seg.first,
            end: seg.end,
            key: shipped.key.clone(),
            bytes: shipped.bytes,
            blake3: shipped.blake3.clone(),
            sealed_at_unix_ns: seg.sealed_at_unix_ns,
            pruned_at_unix_ns: crate::now_unix_ns(),
            retain_until_unix_s: shipped.retain_until_unix_s,
        };
        self.pruned.append(&entry).map_err(StepError::Engine)?;
        let path = seg.path.clone();
        shared.segments.mark_pruned(entry);
        // Readers that already hold the file keep reading it until they drop it.
        std::fs::remove_file(&path)
            .map_err(io_err(&path, "unlink pruned segment"))
            .map_err(StepError::Engine)?;
        let dir = shared.segments_dir();
        crate::io::sync_dir(&dir)
            .map_err(io_err(&dir, "sync"))
            .map_err(StepError::Engine)?;
        tracing::info!(
            "pruned {} (a verified copy is on the store)",
            path.display()
        );
        Ok(true)
    }
}

fn sleep_unless(stopping: &dyn Fn() -> bool, d: Duration) {
    let until = Instant::now() + d;
    while !stopping() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(25)));
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    Store(WormError),
    #[error("{0}")]
    Engine(EngineError),
    #[error("ALARM: {0}")]
    Alarm(String),
}
