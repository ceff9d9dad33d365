//! `[replication]`: where sealed data goes, how long it is kept there, and the replicator's
//! limits. Credentials are best left to the environment (see `auditlog_worm::TargetOptions`).

use std::path::Path;

use auditlog_worm::{RetentionPolicy, TargetOptions};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    pub enabled: bool,
    /// `s3://bucket/prefix`, `azure://container/prefix`, `gs://bucket/prefix`,
    /// `file:///path` or a path. Empty: the embedded default, `<data_dir>/worm`.
    pub target: String,
    pub options: TargetOptions,
    /// Days per classification (`"CUI//BASIC" = 2555`); a segment takes its most
    /// sensitive event's.
    pub retention_days: RetentionPolicy,
    /// Also place a legal hold on every object (S3 legal hold, Azure legal hold, GCS
    /// temporary hold).
    pub legal_hold: bool,
    /// Ship to a store that does not enforce retention. The embedded default (an empty
    /// `target`) is allowed without it: it is the development setup.
    pub allow_non_worm: bool,
    /// Backoff after a failed upload: starts here, doubles, stops growing at the max.
    pub retry_ms_initial: u64,
    pub retry_ms_max: u64,
    /// How often to look for newly sealed segments when idle.
    pub poll_interval_ms: u64,
    /// The mutable newest-checkpoint object is rewritten at most this often. Read
    /// replicas take the writer's checkpoints from it: it bounds how far their proofs lag.
    pub latest_checkpoint_interval_ms: u64,
    /// `/ready` fails when the oldest unshipped sealed segment is older than this.
    pub ready_lag_ms_max: u64,
    /// Checkpoints read from `checkpoints.log` and waiting for their segments to ship.
    pub checkpoints_pending_max: usize,
    /// Bytes of `checkpoints.log` read per step.
    pub checkpoint_log_read_bytes_max: usize,
    /// Full hash tiles shipped as one group (one manifest sync; one store sync on a local
    /// target). At 500k events/s a log fills ~2,000 tiles a second: one at a time, a
    /// replicator fell behind for good.
    pub tiles_per_step_max: usize,
    /// Full level-0 tiles per object (`tile/bundle/…`, FORMATS.md §15.1); 1 ships each as
    /// its own tlog-tiles object (`tile/0/…`). Higher levels always go one per object.
    pub tile_bundle_tiles: u64,
    /// Ship level-0 tiles (bundles). Off, the bucket holds tiles from level 1 (tree level 8)
    /// up only: 27 bytes per event less (docs/benchmarks.md, footprint), and nothing is lost
    /// to the verifier or a pruned read, which recompute level 0 from the segments; a static
    /// tlog-tiles client that has only the tiles cannot compute the hashes below tree level
    /// 8, so it proves no inclusion of single entries and no consistency at sizes that are
    /// not multiples of 65,536 without fetching the segments (docs/worm.md).
    pub ship_level0_tiles: bool,
    /// The key history file (`keys.json`) and `log.json` are shipped only if no larger.
    pub small_file_bytes_max: u64,
    /// Local retention: a sealed segment is deleted locally once it is on the store, read
    /// back and found identical, covered by a signed checkpoint, and sealed longer ago than
    /// this. Absent: every segment stays local (the default).
    pub local_keep_ms: Option<u64>,
    /// Reads of pruned segments fetch whole objects from the store; at most this many
    /// verified copies, and this many bytes of them, stay cached in memory.
    pub store_read_cache_segments_max: usize,
    pub store_read_cache_bytes_max: u64,
    /// One fetch of a pruned segment, start to end (caps `options.request_timeout_ms` for
    /// reads only): a reader waits at most this long for a store that does not answer.
    pub store_read_timeout_ms: u64,
    /// How often the open segment's new batches go to the store as tail objects
    /// (`tail/…`, FORMATS.md §15.1): the recovery point when the machine is lost. 0: no
    /// tails (only sealed segments ship). In `remote` durability tails go as soon as there
    /// is something to ship, and this is only the idle wake-up.
    pub tail_interval_ms: u64,
    /// Retention of a tail object, in days from its upload. Short on purpose: the sealed
    /// segment that supersedes it ships under its class's retention within `seal_age_ms`
    /// (docs/worm.md, "Tails").
    pub tail_retention_days: u32,
    /// Largest tail object, in bytes (a tail holds at least one batch, however large).
    pub tail_bytes_max: u64,
    /// One tail upload, start to end (caps `options.request_timeout_ms` for tails).
    pub tail_request_timeout_ms: u64,
    /// `/ready` fails when a locally durable batch has waited longer than this for the store.
    pub tail_ready_lag_ms_max: u64,
    /// `local`: an event is acknowledged once synced locally. `remote`: once synced locally
    /// and stored in a tail object (or its sealed segment) on the store as well.
    pub durability: Durability,
    /// `remote`: bytes of receipts (64 + 32 per event) waiting for the store; above it the
    /// sequencer stops taking batches, so producers meet a full queue.
    pub remote_pending_bytes_max: u64,
    /// The writer's lease period (the `lease` object, renewed every third of it with
    /// conditional writes). 0: no lease (one writer, no standby). With a lease the writer
    /// stops acknowledging, signing and uploading when it cannot renew within the period,
    /// and a standby takes over after seeing it unrenewed for a whole period.
    pub lease_ms: u64,
    /// This node's name in the lease. Empty: `<hostname>:<data_dir>`.
    pub node_name: String,
    /// Where this node takes writes, written into the lease for replicas to name.
    pub writer_url: String,
}

/// When an event is acknowledged (`[replication] durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Synced to the local disk.
    #[default]
    Local,
    /// Synced to the local disk and stored on the object store.
    Remote,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            enabled: true,
            target: String::new(),
            options: TargetOptions::default(),
            retention_days: RetentionPolicy::default(),
            legal_hold: false,
            allow_non_worm: false,
            retry_ms_initial: 200,
            retry_ms_max: 30_000,
            poll_interval_ms: 500,
            latest_checkpoint_interval_ms: 1_000,
            ready_lag_ms_max: 3_600_000,
            checkpoints_pending_max: 4096,
            checkpoint_log_read_bytes_max: 1 << 20,
            tiles_per_step_max: 256,
            tile_bundle_tiles: 256,
            ship_level0_tiles: true,
            small_file_bytes_max: 16 << 20,
            local_keep_ms: None,
            store_read_cache_segments_max: 2,
            store_read_cache_bytes_max: 512 << 20,
            store_read_timeout_ms: 60_000,
            tail_interval_ms: 1_000,
            tail_retention_days: 7,
            tail_bytes_max: 16 << 20,
            tail_request_timeout_ms: 10_000,
            tail_ready_lag_ms_max: 30_000,
            durability: Durability::Local,
            remote_pending_bytes_max: 64 << 20,
            lease_ms: 0,
            node_name: String::new(),
            writer_url: String::new(),
        }
    }
}

impl ReplicationConfig {
    pub fn target_url(&self, data_dir: &Path) -> String {
        if self.target.is_empty() {
            data_dir
                .join(auditlog_formats::layout::LOCAL_WORM_DIR)
                .display()
                .to_string()
        } else {
            self.target.clone()
        }
    }

    /// This node's name in the lease.
    pub fn node(&self, data_dir: &Path) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}:{}", data_dir.display())
    }

    pub fn non_worm_allowed(&self) -> bool {
        self.allow_non_worm || self.target.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.retry_ms_initial == 0 || self.retry_ms_max < self.retry_ms_initial {
            return Err(
                "replication: retry_ms_initial must be positive and at most retry_ms_max".into(),
            );
        }
        if !(1..=4096).contains(&self.tiles_per_step_max) {
            return Err(
                "replication: tiles_per_step_max must be between 1 and 4096 (32 MiB)".into(),
            );
        }
        if !(1..=256).contains(&self.tile_bundle_tiles) {
            return Err("replication: tile_bundle_tiles must be between 1 and 256".into());
        }
        if self.checkpoints_pending_max == 0 || self.checkpoint_log_read_bytes_max < 65_544 {
            return Err("replication: checkpoints_pending_max must be positive and checkpoint_log_read_bytes_max must hold one checkpoint entry (65544 bytes)".into());
        }
        if self.store_read_timeout_ms == 0 {
            return Err("replication: store_read_timeout_ms must be positive".into());
        }
        if self.durability == Durability::Remote && self.tail_interval_ms == 0 {
            return Err(
                "replication: durability = \"remote\" needs tails (tail_interval_ms > 0)".into(),
            );
        }
        if !(1..=3650).contains(&self.tail_retention_days) {
            return Err("replication: tail_retention_days must be between 1 and 3650".into());
        }
        if self.tail_bytes_max < 4096 || self.tail_request_timeout_ms == 0 {
            return Err("replication: tail_bytes_max must be at least 4096 and tail_request_timeout_ms positive".into());
        }
        if self.lease_ms != 0 && self.lease_ms < 300 {
            return Err("replication: lease_ms must be 0 (no lease) or at least 300".into());
        }
        if self.remote_pending_bytes_max < 4096 {
            return Err("replication: remote_pending_bytes_max must be at least 4096".into());
        }
        if let Some(why) = self.retention_days.below_floor() {
            return Err(format!("replication.retention_days: {why}"));
        }
        Ok(())
    }
}
