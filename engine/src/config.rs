//! Engine configuration: every queue, batch and file size has a named limit here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;

use auditlog_formats::schema::SchemaMode;
use auditlog_formats::segment::BlockCodec;
use auditlog_formats::TreeHash;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when the kernel has it (probed at start), else pwrite + fdatasync.
    #[default]
    Auto,
    IoUring,
    Pwrite,
}

/// Which key signs checkpoints when the log is created (and must be in its key history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SignerConfig {
    /// `keys/checkpoint.key` in the data directory, created on first start.
    #[default]
    DevKeyFile,
    /// A key in an HSM; `name` is the note key name (default: from the origin).
    Pkcs11 {
        spec: crate::pkcs11::Pkcs11Spec,
        name: Option<String>,
    },
    /// A key in a cloud KMS (`KeyBackend::AwsKms`, `GcpKms` or `AzureKeyVault`), reached
    /// with the daemon's cloud identity; `name` is the note key name.
    Kms {
        backend: auditlog_formats::keyhistory::KeyBackend,
        name: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// The checkpoint origin line; fixed at log creation.
    pub origin: String,
    /// Fixed at log creation; a different value on reopen is refused.
    pub tree_hash: TreeHash,
    pub schema: SchemaMode,
    /// Submissions waiting for the sequencer; a full queue blocks or refuses producers.
    pub queue_submissions_max: usize,
    /// One submission's body; bounds the queue's memory with `queue_submissions_max`.
    pub submission_bytes_max: usize,
    /// One group commit: bytes and events appended by one write and one sync.
    pub batch_bytes_max: usize,
    pub batch_events_max: usize,
    /// Size of each open segment file, zero-filled ahead of the writer.
    pub segment_bytes: u64,
    /// Seal the open segment once it is this old, even if not full (0: never by age).
    pub seal_age_ms: u64,
    /// Full open segments queued for the sealer. When sealing falls this far behind, the
    /// sequencer waits at its next rotation and producers feel it as back-pressure, rather
    /// than unsealed segment files piling up on the disk without bound: at most this many
    /// plus three exist (the one being written, the one being sealed, the one waiting to
    /// be queued).
    pub seal_queue_segments_max: usize,
    pub checkpoint_interval_ms: u64,
    /// Raw bytes per compressed block of a sealed segment.
    pub block_raw_bytes: usize,
    pub zstd_level: i32,
    /// How sealed blocks are coded: columnar lanes (segment format 2, the default) or one
    /// zstd frame of the raw block (format 1). Either is read whatever this says.
    pub block_codec: BlockCodec,
    /// On read-back, the sealer checks the file's digest and that its blocks decompress to
    /// exactly the records it read from the open segment (BLAKE3 of both). With this on it
    /// also hashes every sealed record into the tree again (about 0.6 µs an event of
    /// background CPU, two thirds of sealing).
    pub seal_check_leaves: bool,
    /// Memory for the upper levels of the hash store, kept whole so that a proof reads
    /// only the few lowest levels from disk. The lowest cached level rises as the tree
    /// grows, so this bounds memory whatever the log's size.
    pub hash_cache_bytes_max: u64,
    /// Decoded blocks of sealed segments kept for reads that come back to them (the tiles
    /// API's entry bundles: ~3 to a 256 KiB block; a search's candidates); 0 keeps none.
    pub block_cache_bytes: usize,
    /// Keep the search index (`searchindex.rs`); off, searches scan within their cost limit.
    pub search_index: bool,
    /// Records in one search-index window (`searchindex.rs`): runs never cross a multiple
    /// of it, and a whole window is one run (merged from smaller runs' postings). With
    /// `search_block_records`, at most 65 536 blocks keep a term's postings in one Roaring
    /// container.
    pub search_window_records: u64,
    /// Records per search-index block: a posting names a block, and a search re-checks
    /// every record of a candidate block. Changing it rebuilds the index.
    pub search_block_records: u32,
    /// A bucketed field's (resource, session and request ids) values share
    /// `2^search_bucket_bits` buckets: fewer, fuller buckets make a smaller index and more
    /// records to re-check per search by such a field. Changing it rebuilds the index.
    pub search_bucket_bits: u32,
    /// Threads that decode a search's next candidate blocks while it checks one (1: the
    /// search's own thread only).
    pub search_readers: usize,
    pub io_mode: IoMode,
    pub signer: SignerConfig,
    /// Where HSM PINs come from (an environment variable or a file, never the config).
    pub pkcs11_pin: Option<crate::pkcs11::PinSource>,
    /// Test hooks that make the next sync or write fail.
    pub faults: Option<Arc<FaultHooks>>,
    /// Shipping sealed data to WORM object storage; `None`: off.
    pub replication: Option<crate::ReplicationConfig>,
    /// A read replica: follow this bucket instead of taking writes (`replication` and the
    /// signer are then unused).
    pub replica: Option<crate::follower::ReplicaConfig>,
    /// Witnesses that must cosign a checkpoint before it is published; `None`: none.
    pub witness: Option<crate::witness::WitnessConfig>,
}

impl EngineConfig {
    /// How the search index's postings are made.
    pub(crate) fn search_shape(&self) -> auditlog_formats::searchindex::Shape {
        auditlog_formats::searchindex::Shape {
            block_records: self.search_block_records,
            bucket_bits: self.search_bucket_bits,
        }
    }

    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            origin: "auditlog.local/log".to_string(),
            tree_hash: TreeHash::Sha256,
            schema: SchemaMode::Audit,
            queue_submissions_max: 4096,
            submission_bytes_max: 4 << 20,
            batch_bytes_max: 4 << 20,
            batch_events_max: 65536,
            segment_bytes: 256 << 20,
            seal_age_ms: 300_000,
            seal_queue_segments_max: 4,
            checkpoint_interval_ms: 1000,
            block_raw_bytes: 256 << 10,
            zstd_level: 3,
            block_codec: BlockCodec::Columnar,
            seal_check_leaves: false,
            hash_cache_bytes_max: 64 << 20,
            block_cache_bytes: 4 << 20,
            search_index: true,
            search_window_records: 1 << 23,
            search_block_records: 128,
            search_bucket_bits: 15,
            search_readers: 2,
            io_mode: IoMode::Auto,
            signer: SignerConfig::DevKeyFile,
            pkcs11_pin: None,
            faults: None,
            replication: None,
            replica: None,
            witness: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.batch_bytes_max < 128 << 10 {
            return Err(
                "batch_bytes_max must be at least 128 KiB (one largest event and its framing)"
                    .into(),
            );
        }
        if self.submission_bytes_max > self.batch_bytes_max {
            return Err("submission_bytes_max must not exceed batch_bytes_max".into());
        }
        if self.segment_bytes < 2 * self.batch_bytes_max as u64 {
            return Err("segment_bytes must hold at least two full batches".into());
        }
        if self.queue_submissions_max == 0
            || self.batch_events_max == 0
            || self.seal_queue_segments_max == 0
        {
            return Err(
                "queue_submissions_max, batch_events_max and seal_queue_segments_max must be positive"
                    .into(),
            );
        }
        if self.search_window_records == 0
            || self.search_window_records > auditlog_formats::searchindex::RUN_RECORDS_MAX
        {
            return Err("search_window_records must be from 1 to 2^31".into());
        }
        if !self.search_shape().valid() {
            return Err(
                "search_block_records must be positive, search_bucket_bits at most 32".into(),
            );
        }
        if !(1..=16).contains(&self.search_readers) {
            return Err("search_readers must be from 1 to 16".into());
        }
        if self.origin.is_empty() || self.origin.chars().any(|c| c.is_control()) {
            return Err("origin must be a non-empty line of text".into());
        }
        Ok(())
    }
}

/// Failure injection for tests: each flag, once set, makes the next such operation fail
/// (and clears itself).
#[derive(Debug, Default)]
pub struct FaultHooks {
    pub fail_next_sync: AtomicBool,
    pub enospc_next_write: AtomicBool,
    /// While set, the sealer waits before it takes up each segment (a slow sealer).
    pub hold_sealer: AtomicBool,
    /// The next this many attempts to seal each change one record byte after hashing the
    /// open segment's records and before compressing them (a compressor or re-blocking
    /// bug), which the read-back must catch before the open file is retired.
    pub damage_seals: AtomicU32,
    /// The engine thread of this name (`auditlog-sequencer`, `-sealer`, `-checkpointer`,
    /// `-replicator`, `-prealloc`) panics at its next turn (a broken invariant anywhere),
    /// which the supervisor must turn into an engine failure. Cleared when taken.
    pub panic_thread: std::sync::Mutex<Option<String>>,
}

impl FaultHooks {
    /// Panics if a test asked `thread` to (see `panic_thread`).
    pub(crate) fn maybe_panic(faults: Option<&std::sync::Arc<FaultHooks>>, thread: &str) {
        let Some(f) = faults else { return };
        let mut want = f.panic_thread.lock().unwrap_or_else(|e| e.into_inner());
        if want.as_deref() == Some(thread) {
            *want = None;
            drop(want);
            panic!("injected panic in {thread} (FaultHooks::panic_thread)");
        }
    }
}
