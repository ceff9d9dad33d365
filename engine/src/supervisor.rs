//! The supervisor: starts the engine's threads from what recovery found, turns a panic in
//! any of them into an engine failure, and stops them in order. Shutdown order matters:
//! the submission queue closes, the sequencer drains it and stops, then the others see the
//! flag (the checkpointer signs a final checkpoint on its way out).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use auditlog_formats::tree::RightEdge;
use crossbeam_channel::Sender;

use crate::checkpoints::CheckpointLog;
use crate::error::{EngineError, Result};
use crate::hashstore::PendingNodes;
use crate::health::Fault;
use crate::io::{Appender, Background};
use crate::replication::Replicator;
use crate::sequencer::{OpenSegment, SealJob, Sequencer};
use crate::shared::Shared;
use crate::Submission;

/// What the threads start from (recovery's findings).
pub(crate) struct Start {
    pub prealloc: Vec<PathBuf>,
    pub open: Option<OpenSegment>,
    pub to_seal: Vec<SealJob>,
    pub edge: RightEdge,
    pub pending: PendingNodes,
    pub cp_log: CheckpointLog,
    pub replicator: Option<Replicator>,
    pub appender: Appender,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    /// The submission queue's sending end: closing it is how the sequencer learns to stop.
    queue: Option<Sender<Submission>>,
    sequencer: Option<JoinHandle<()>>,
    others: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts preallocator, sealer, sequencer, checkpointer and (if configured) replicator.
    /// On an error the threads already started are stopped again (`Drop`).
    pub fn start(shared: Arc<Shared>, s: Start) -> Result<Supervisor> {
        let mut sup = Supervisor {
            shared: shared.clone(),
            queue: None,
            sequencer: None,
            others: Vec::new(),
        };
        // A rendezvous channel: the preallocator holds one ready file, not one more in a queue.
        let (prealloc_tx, prealloc_rx) = crossbeam_channel::bounded::<PathBuf>(0);
        let next_n = next_prealloc_number(&s.prealloc);
        let sh = shared.clone();
        let prealloc = s.prealloc;
        sup.spawn("auditlog-prealloc", Background::LowIo, move || {
            crate::preallocator::run(sh, prealloc, next_n, prealloc_tx)
        })?;
        // Bounded: the sequencer waits at a rotation once sealing is this far behind. The
        // segments recovery found unsealed all fit, whatever their number.
        let (seal_tx, seal_rx) =
            crossbeam_channel::bounded(shared.config.seal_queue_segments_max.max(s.to_seal.len()));
        for job in s.to_seal {
            seal_tx
                .send(job)
                .map_err(|_| EngineError::Failed("sealer gone".into()))?;
        }
        let open = match s.open {
            Some(o) => o,
            None => first_segment(&shared, &prealloc_rx, s.edge.size())?,
        };
        let (submit_tx, submit_rx) =
            crossbeam_channel::bounded(shared.config.queue_submissions_max);
        // Set once, here, before any submission exists.
        let _ = shared.queued.set(submit_rx.clone());
        let seq = Sequencer {
            shared: shared.clone(),
            rx: submit_rx,
            appender: s.appender,
            open,
            edge: s.edge,
            pending: s.pending,
            prealloc_rx,
            seal_tx,
            leaves: Vec::new(),
        };
        sup.sequencer = Some(spawn(&shared, "auditlog-sequencer", move || seq.run())?);
        sup.queue = Some(submit_tx);
        let sh = shared.clone();
        sup.spawn("auditlog-sealer", Background::IdleIo, move || {
            crate::sealer::run(sh, seal_rx)
        })?;
        // Checkpoints are off the ack path; building the leaf index for them is ~0.13 of a
        // core at 526k events/s. At nice 10 the ack p99 at 596k went from 8.3 to 6.9 ms
        // (medians of 10, A/B). Under saturation checkpoints come later
        // (`auditlog_checkpoint_age_milliseconds` shows it), acks do not.
        let (sh, cp_log) = (shared.clone(), s.cp_log);
        sup.spawn("auditlog-checkpointer", Background::LowIo, move || {
            crate::checkpointer::run(sh, cp_log)
        })?;
        sup.spawn_indexer()?;
        if let Some(lease) = shared.lease.clone() {
            let sh = shared.clone();
            let t = spawn(&shared, "auditlog-lease", move || {
                if let Some(why) = lease.keep(&|| sh.health.shutting_down()) {
                    tracing::error!("{why}");
                    sh.health.fail(Fault::other(why.clone()));
                    sh.store_acks.close(&why);
                    sh.refuse_queued();
                    sh.checkpoints.wake();
                }
            })?;
            sup.others.push(t);
        }
        if let Some(mut r) = s.replicator {
            if let Some(t) = r.take_tail() {
                let sh = shared.clone();
                // In remote durability the tails are on the ack path: normal priority.
                let t = spawn(&shared, "auditlog-tails", move || t.run(sh))?;
                sup.others.push(t);
            }
            let sh = shared.clone();
            sup.spawn("auditlog-replicator", Background::IdleIo, move || r.run(sh))?;
        }
        Ok(sup)
    }

    /// A read replica: only the follower runs; there is no submission queue.
    pub fn start_replica(
        shared: Arc<Shared>,
        follower: crate::follower::Follower,
    ) -> Result<Supervisor> {
        let mut sup = Supervisor {
            shared: shared.clone(),
            queue: None,
            sequencer: None,
            others: Vec::new(),
        };
        let sh = shared.clone();
        let t = spawn(&shared, "auditlog-follower", move || follower.run(sh))?;
        sup.others.push(t);
        sup.spawn_indexer()?;
        Ok(sup)
    }

    /// The search indexer, when the index is on: idle I/O, like sealing (its lag costs
    /// only scans).
    fn spawn_indexer(&mut self) -> Result<()> {
        if !self.shared.search.enabled() {
            return Ok(());
        }
        let sh = self.shared.clone();
        self.spawn("auditlog-search", Background::IdleIo, move || {
            crate::search::run_indexer(sh)
        })
    }

    fn spawn(
        &mut self,
        name: &'static str,
        priority: Background,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        let t = spawn(&self.shared, name, move || {
            crate::io::lower_thread_priority(priority);
            f()
        })?;
        self.others.push(t);
        Ok(())
    }

    /// The submission queue, while the engine takes writes.
    pub fn queue(&self) -> Option<&Sender<Submission>> {
        self.queue.as_ref()
    }

    /// Stops taking writes, lets the sequencer drain what is queued, and waits for every
    /// thread (the checkpointer signs a final checkpoint). Idempotent.
    pub fn stop(&mut self) {
        self.shared.health.begin_draining();
        self.queue.take();
        if let Some(seq) = self.sequencer.take() {
            let _ = seq.join();
        }
        self.shared.health.begin_shutting_down();
        self.shared.checkpoints.stop();
        self.shared.store_acks.stop();
        for t in self.others.drain(..) {
            let _ = t.join();
        }
        // Whatever still waits for the store (no tail shipper ran, or it stopped early)
        // is answered: never left waiting.
        self.shared
            .store_acks
            .close("engine shut down before the store confirmed");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a named engine thread; its panic stops the engine (fail-stop): writes are
/// refused from then on, what was queued is answered, and waiters are woken.
fn spawn(
    shared: &Arc<Shared>,
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                shared
                    .health
                    .fail(Fault::other(format!("thread {name} panicked: {msg}")));
                // What was queued will never be written: answer it (a panicked sequencer
                // answers nothing itself).
                shared.refuse_queued();
                shared.checkpoints.wake();
                shared.store_acks.close(&format!("thread {name} panicked"));
            }
        })
        .map_err(|e| EngineError::Failed(format!("cannot start thread {name}: {e}")))
}

/// The number after the highest `prealloc-N.tmp` recovery found (names never repeat).
fn next_prealloc_number(found: &[PathBuf]) -> u64 {
    found
        .iter()
        .filter_map(|p| {
            p.file_stem()?
                .to_str()?
                .strip_prefix("prealloc-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// A new log (or one whose open segment was sealed): the first preallocated file becomes
/// the open segment starting at leaf `end`.
fn first_segment(
    shared: &Shared,
    prealloc: &crossbeam_channel::Receiver<PathBuf>,
    end: u64,
) -> Result<OpenSegment> {
    let p = prealloc
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| {
            EngineError::Failed(
                shared
                    .health
                    .prealloc_fault()
                    .map(|f| f.text())
                    .unwrap_or_else(|| "could not prepare the first segment".into()),
            )
        })?;
    OpenSegment::activate(shared, &p, end)
}
