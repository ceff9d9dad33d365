//! auditlog-engine: where the bytes are and when they are durable.
//!
//! Threads, each owning one job: the sequencer (batches, appends, syncs, tree, receipts),
//! the checkpointer (signs the newest tree head on its own clock), the sealer (compresses
//! full segments), the preallocator (zero-fills the next segment file). Producers build an
//! [`EventBatch`] on their own thread (validation, record encoding and leaf hashing run
//! there, in parallel) and submit it into a bounded queue.

mod blockcache;
mod checkpointer;
pub mod checkpoints;
pub mod config;
pub mod error;
pub mod files;
pub mod follower;
mod framedlog;
mod hashstore;
mod head;
mod health;
mod io;
mod keyring;
pub mod kms;
mod leafindex;
pub mod lease;
pub mod pkcs11;
mod preallocator;
pub mod private;
pub mod pruned;
mod recovery;
mod remote;
pub mod replication;
pub mod retention;
pub mod rotation;
mod runs;
mod sealer;
mod search;
mod searchindex;
mod segment_set;
mod segments;
mod sequencer;
mod shared;
pub mod signer;
mod store_acks;
mod submit;
mod supervisor;
mod tiles;
mod window;
pub mod witness;
mod yielding;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auditlog_formats::note::VerifierKey;
pub use auditlog_formats::record::Submitter;
use auditlog_formats::tree::{self, HashReader, NodeId};
use auditlog_formats::{Hash, TreeHash};

pub use auditlog_formats::keyhistory::{KeyBackend, KeyEntry, KeyHistory};
pub use checkpoints::SignedCheckpoint;
pub use config::{EngineConfig, FaultHooks, IoMode, SignerConfig};
pub use error::{EngineError, Result};
pub use keyring::open_backend;
pub use kms::aws::{AwsKmsSigner, AwsKmsSpec};
pub use kms::KmsError;
pub use pkcs11::{PinSource, Pkcs11Error, Pkcs11Signer, Pkcs11Spec};
pub use pruned::PrunedSegment;
pub use remote::StoreReadStats;
pub use replication::{
    Durability, ManifestEntry, ManifestKind, ReplicationConfig, ReplicationStatus,
};
pub use search::{Cursor, SearchEnd, SearchRequest};
pub use signer::{KeyFileSigner, Signer};
pub(crate) use submit::Submission;
pub use submit::{EventBatch, Pushed, Waiting};
pub use tiles::TileError;
pub use window::Window;
pub use witness::{WitnessConfig, WitnessEntry, WitnessStatus};

pub use head::{CheckpointListener, Stats, TreeHead, BATCH_EVENTS_BUCKETS, SYNC_BUCKETS_US};
pub(crate) use shared::Shared;

/// What a producer gets back once its events are durable.
#[derive(Clone, Debug)]
pub struct Receipts {
    pub first_index: u64,
    pub received_at_unix_ns: u64,
    pub leaf_hashes: Vec<Hash>,
}

pub type Done = Box<dyn FnOnce(Result<Receipts>) + Send>;

/// A writer that took the lease must hold everything the store holds: otherwise it would
/// extend the log from behind its end (a fork, and acknowledged events dropped).
fn check_not_behind(config: &EngineConfig, r: &recovery::Recovered) -> Result<()> {
    let Some(rc) = config.replication.as_ref() else {
        return Ok(());
    };
    let url = rc.target_url(&config.data_dir);
    let target = auditlog_worm::open(&url, &rc.options)
        .map_err(|e| EngineError::Config(format!("replication target {url}: {e}")))?;
    let local = r.edge.size();
    let from = r.set.sealed.last().map_or(0, |s| s.end).min(local);
    let stored = follower::store_end(target.as_ref(), from)?;
    if stored > local {
        return Err(EngineError::Fenced(format!(
            "the store holds the log up to index {stored}, this directory up to {local}: this node is behind; start it as a replica (--replica-of {url}) to catch up before it writes"
        )));
    }
    Ok(())
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
    /// Why the newest checkpoint is not published: too few witnesses cosigned it.
    pub witness_error: Option<String>,
    /// Each configured witness (none without `[witness]`) and the policy `k`.
    pub witnesses: Vec<WitnessStatus>,
    pub witness_policy: usize,
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
    /// A read replica's following (`None` for a writer).
    pub replica: Option<follower::ReplicaStatus>,
    /// The search index (`search_index`): records it covers, its bytes on disk, its runs.
    /// It trails the newest checkpoint while its thread catches up; searches scan the rest.
    pub search_index_on: bool,
    pub search_indexed: u64,
    pub search_index_bytes: u64,
    pub search_index_runs: usize,
}

pub struct Engine {
    shared: Arc<Shared>,
    supervisor: supervisor::Supervisor,
    recovery: recovery::RecoveryReport,
    started: Instant,
    replication: Option<Arc<replication::Monitor>>,
    replica: Arc<follower::ReplicaMonitor>,
}

impl Engine {
    /// Opens (or creates) the log in `config.data_dir`, recovering whatever a crash left,
    /// with the development key file signer unless `signer` is given.
    pub fn open(config: EngineConfig, signer: Option<Arc<dyn Signer>>) -> Result<Engine> {
        let started = Instant::now();
        // A read replica: its directory starts from the bucket's metadata and key history.
        let source = match &config.replica {
            Some(rc) => {
                let source = follower::open_source(rc)?;
                follower::bootstrap(&config.data_dir, source.as_ref())?;
                Some(source)
            }
            None => None,
        };
        // A writer with a lease takes it before anything else: a node that cannot is fenced.
        let lease = match (&config.replica, &config.replication) {
            (None, Some(rc)) if rc.enabled && rc.lease_ms > 0 => {
                let url = rc.target_url(&config.data_dir);
                let target = auditlog_worm::open(&url, &rc.options)
                    .map_err(|e| EngineError::Config(format!("replication target {url}: {e}")))?;
                Some(lease::Lease::acquire(
                    target,
                    &rc.node(&config.data_dir),
                    &rc.writer_url,
                    Duration::from_millis(rc.lease_ms),
                )?)
            }
            _ => None,
        };
        let r = recovery::recover(&config, signer)?;
        if let Some(l) = &lease {
            r.keyring.fence(l.clone());
            check_not_behind(&config, &r)?;
        }
        let seg_dir = config.data_dir.join(auditlog_formats::layout::SEGMENTS_DIR);
        let (appender, io_mode_name) =
            io::Appender::new(config.io_mode).map_err(error::io_err(&seg_dir, "set up I/O"))?;
        let leaf_index = leafindex::LeafIndex::open(
            &config
                .data_dir
                .join(auditlog_formats::layout::LEAF_INDEX_DIR),
            r.report.tree_size,
        )?;
        let search_dir = config
            .data_dir
            .join(auditlog_formats::layout::SEARCH_INDEX_DIR);
        let search = searchindex::SearchIndex::open(
            config.search_index.then_some(search_dir.as_path()),
            config.search_window_records,
            config.search_shape(),
            r.latest.as_ref().map_or(0, |c| c.checkpoint.size),
        )?;
        let mut search_cursor_key = [0u8; 32];
        getrandom::getrandom(&mut search_cursor_key)
            .map_err(|e| EngineError::Config(format!("random cursor key: {e}")))?;
        let remote = recovery::read_target(&config)?;
        let witnesses = match &config.witness {
            Some(w) if config.replica.is_none() => {
                Some(witness::Witnesses::new(w, config.tree_hash)?)
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            hashes: r.hashes.clone(),
            leaf_index,
            search,
            search_cursor_key,
            keyring: r.keyring,
            io_mode_name,
            head: head::Head::new(TreeHead {
                size: r.edge.size(),
                root: r.edge.root(),
            }),
            checkpoints: head::Checkpoints::new(r.latest),
            segments: segment_set::Segments::new(
                r.set,
                seg_dir,
                config.tree_hash,
                r.hashes,
                remote,
                config.block_cache_bytes,
            ),
            health: health::Health::with_unsigned_footers(r.unsigned_footers),
            recycled: preallocator::Recycled::new(r.recycle),
            store_acks: store_acks::StoreAcks::new(
                config
                    .replication
                    .as_ref()
                    .is_some_and(|c| c.enabled && c.durability == replication::Durability::Remote),
                r.edge.size(),
            ),
            queued: std::sync::OnceLock::new(),
            lease,
            stamps: Default::default(),
            witnesses,
            config,
        });
        let (replicator, replication) = r.replicator.unzip();
        let replica = Arc::new(follower::ReplicaMonitor::default());
        let supervisor = match (source, &shared.config.replica) {
            (Some(source), Some(rc)) => supervisor::Supervisor::start_replica(
                shared.clone(),
                follower::Follower::new(
                    source,
                    rc.clone(),
                    replica.clone(),
                    r.edge,
                    r.pending,
                    r.cp_log,
                    r.open,
                ),
            )?,
            _ => supervisor::Supervisor::start(
                shared.clone(),
                supervisor::Start {
                    prealloc: r.prealloc,
                    open: r.open,
                    to_seal: r.to_seal,
                    edge: r.edge,
                    pending: r.pending,
                    cp_log: r.cp_log,
                    replicator,
                    appender,
                },
            )?,
        };
        let mut report = r.report;
        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            "log open: {} events, checkpoint {}, recovery {:?}",
            report.tree_size,
            report.checkpoint_size,
            report
        );
        Ok(Engine {
            shared,
            supervisor,
            recovery: report,
            started,
            replication,
            replica,
        })
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

    /// The key rotation policy stored in `log.json`, if one was approved.
    pub fn rotation_policy(&self) -> Result<Option<rotation::RotationPolicy>> {
        rotation::read(&self.shared.config.data_dir)
    }

    /// Stores a key rotation policy in `log.json` (durably).
    pub fn set_rotation_policy(&self, policy: &rotation::RotationPolicy) -> Result<()> {
        rotation::write(&self.shared.config.data_dir, policy)
    }

    /// Makes a new key in `next` labelled `label` (not yet in the key history: `add_key`
    /// adds it) and returns its backend.
    pub fn create_key(&self, next: &rotation::NextKey, label: &str) -> Result<KeyBackend> {
        let cfg = &self.shared.config;
        let name = recovery::key_name(&cfg.origin);
        rotation::create_key(next, label, &name, &cfg.data_dir, cfg.pkcs11_pin.as_ref())
    }

    /// Ends a key's validity after the largest size signed so far. `which` is its verifier
    /// key string or `name+hex8(key_id)`.
    pub fn retire_key(&self, which: &str) -> Result<KeyEntry> {
        self.shared.keyring.retire(which)
    }

    /// The log's head. A read replica's is its newest verified checkpoint: records it
    /// holds past that (tails not yet signed) are neither read nor proven.
    pub fn head(&self) -> TreeHead {
        if self.shared.config.replica.is_some() {
            return self.shared.checkpoints.latest().map_or(
                TreeHead {
                    size: 0,
                    root: self.shared.config.tree_hash.empty(),
                },
                |c| TreeHead {
                    size: c.checkpoint.size,
                    root: c.checkpoint.root,
                },
            );
        }
        self.shared.head.get()
    }

    pub fn tree_size(&self) -> u64 {
        if self.shared.config.replica.is_some() {
            return self.shared.checkpoints.signed_size();
        }
        self.shared.head.size()
    }

    /// The exact record bytes (`version || received_at || payload`) at `index`.
    pub fn read_record(&self, index: u64) -> Result<Vec<u8>> {
        let size = self.tree_size();
        if index >= size {
            return Err(EngineError::NotFound { index, size });
        }
        let mut out = None;
        self.shared
            .segments
            .for_each_record(true, index, index + 1, &mut |_, rec| {
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
        self.shared.segments.for_each_record(false, start, end, f)
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
        self.shared.checkpoints.latest()
    }

    /// Asks for a checkpoint covering `min_size` soon and waits (up to `timeout`) for it.
    pub fn wait_checkpoint(
        &self,
        min_size: u64,
        timeout: Duration,
    ) -> Option<Arc<SignedCheckpoint>> {
        self.shared
            .checkpoints
            .wait(min_size, timeout, || self.tree_size())
    }

    /// Asks for a checkpoint covering `min_size` soon, without waiting for it (an async
    /// caller waits on `on_checkpoint` instead of a thread). A size the log has is signed at
    /// once, a larger one when the log reaches it; a waiter for a larger size than the
    /// smallest asked asks again when a checkpoint is published. One early signature per
    /// request at most: no caller can make every batch cost one.
    pub fn want_checkpoint(&self, min_size: u64) {
        self.shared.checkpoints.want(min_size, || self.tree_size());
    }

    /// Calls `f` with the size of every checkpoint published from now on, on the
    /// checkpointer's thread: keep it short (a channel send).
    pub fn on_checkpoint(&self, f: CheckpointListener) {
        self.shared.checkpoints.on_published(f);
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
        let (search_indexed, search_index_bytes, search_index_runs) = self.search_index_status();
        let cp = self.latest_checkpoint();
        let set = self.shared.segments.counts();
        let health = self.shared.health.report();
        Status {
            tree_size: self.tree_size(),
            checkpoint_size: cp.as_ref().map(|c| c.checkpoint.size),
            checkpoint_age_ms: self.shared.checkpoints.age_ms(),
            failed: health.failed,
            preallocation_error: health.preallocation_error,
            signer_error: health.signer_error,
            signer_failures: health.signer_failures,
            signer_failures_in_a_row: health.signer_failures_in_a_row,
            seal_error: health.seal_error,
            seal_failures: health.seal_failures,
            witness_error: self.shared.witnesses.as_ref().and_then(|w| w.error()),
            witnesses: self
                .shared
                .witnesses
                .as_ref()
                .map_or_else(Vec::new, |w| w.status()),
            witness_policy: self.shared.witnesses.as_ref().map_or(0, |w| w.policy()),
            io_mode: self.shared.io_mode_name,
            sealed_segments: set.sealed,
            open_segments: set.open,
            pruned_segments: set.pruned,
            pruned_bytes: set.pruned_bytes,
            store_reads: self.shared.segments.store_reads(),
            stats: self.shared.head.stats(),
            queue_depth: self.supervisor.queue().map_or(0, |t| t.len()),
            queue_capacity: self.shared.config.queue_submissions_max,
            recovery: self.recovery.clone(),
            replication: self.replication.as_ref().map(|m| {
                let mut s = m.snapshot();
                s.store_end = self.shared.store_acks.end();
                s.tail_lag_ms = self.shared.store_acks.lag_ms();
                s.remote_waiting_events = self.shared.store_acks.held().0 as u64;
                s
            }),
            replica: self
                .shared
                .config
                .replica
                .is_some()
                .then(|| self.replica.snapshot()),
            search_index_on: self.shared.config.search_index,
            search_indexed,
            search_index_bytes,
            search_index_runs,
        }
    }

    /// A replica's writer, as the bucket's lease names it.
    pub(crate) fn replica_writer(&self) -> Option<String> {
        self.replica.snapshot().writer
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Tells the engine that shutdown has begun, while callers still hold it (a server
    /// draining its requests): from here on a seal that fails is left for the next start
    /// instead of retried, so that appends waiting behind a full seal queue complete and
    /// the drain can finish. Writes are still taken. `shutdown` does this too.
    pub fn begin_shutdown(&self) {
        self.shared.health.begin_draining();
    }

    /// Stops taking writes, lets the sequencer drain what is queued, signs a final
    /// checkpoint, and waits for every thread.
    pub fn shutdown(mut self) -> Result<()> {
        self.supervisor.stop();
        match self.shared.health.failed() {
            Some(why) => Err(EngineError::Failed(why)),
            None => Ok(()),
        }
    }
}
