//! What the engine's threads share, by concern: the head and its checkpoints (`head.rs`),
//! the segment set with its readers (`segment_set.rs`), health and failure (`health.rs`),
//! the recycled segment files (`preallocator.rs`), and the few things every thread reads
//! (configuration, hash store, leaf index, keys). Behind one `Arc`; the threads' loops live
//! elsewhere and their start and stop in `supervisor.rs`.

use std::path::PathBuf;
use std::sync::OnceLock;

use auditlog_formats::Hash;

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::hashstore::HashFiles;
use crate::head::{Checkpoints, Head, TreeHead};
use crate::health::{Fault, Health};
use crate::preallocator::Recycled;
use crate::segment_set::Segments;
use crate::segments::BatchLoc;
use crate::store_acks::StoreAcks;
use crate::{keyring, leafindex, sequencer};

pub(crate) struct Shared {
    pub config: EngineConfig,
    pub hashes: HashFiles,
    pub leaf_index: leafindex::LeafIndex,
    pub(crate) search: crate::searchindex::SearchIndex,
    /// Signs search cursors: a cursor is good for this run of the engine only.
    pub(crate) search_cursor_key: [u8; 32],
    pub(crate) keyring: keyring::Keyring,
    pub io_mode_name: &'static str,
    pub(crate) head: Head,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) segments: Segments,
    pub(crate) health: Health,
    pub(crate) recycled: Recycled,
    /// How far the object store holds the log; receipts waiting for it (remote durability).
    pub(crate) store_acks: StoreAcks,
    /// A receiving end of the submission queue, for `refuse_queued`: a submission queued
    /// as the sequencer stops (failed, panicked) is answered, never left waiting.
    pub(crate) queued: OnceLock<crossbeam_channel::Receiver<crate::Submission>>,
    /// The writer's lease, when configured: every step that extends the log checks it.
    pub(crate) lease: Option<std::sync::Arc<crate::lease::Lease>>,
    /// The last receipt time stamped (`submit.rs`): stamps follow the queue's order.
    pub(crate) stamps: crate::submit::Stamps,
    /// Witnesses that cosign checkpoints before they are published (`witness.rs`).
    pub(crate) witnesses: Option<crate::witness::Witnesses>,
}

impl Shared {
    /// `Ok` unless a lease is configured and no longer ours.
    pub(crate) fn fence(&self) -> crate::Result<()> {
        self.lease.as_ref().map_or(Ok(()), |l| l.check())
    }

    pub fn segments_dir(&self) -> PathBuf {
        self.segments.dir().to_path_buf()
    }

    /// Answers every queued submission with the failure (or `ShuttingDown`): called by the
    /// sequencer as it stops, by the supervisor after a thread panicked, and by a producer
    /// whose submission went in as the engine failed. Each submission is taken by exactly one
    /// receiver, so each is answered once, by whoever takes it.
    pub(crate) fn refuse_queued(&self) {
        let Some(rx) = self.queued.get() else { return };
        let why = self.health.failure();
        for s in rx.try_iter() {
            (s.done)(Err(why
                .as_ref()
                .map_or(EngineError::ShuttingDown, Fault::error)));
        }
    }

    /// Makes a durable batch visible: its location to readers, the head to everyone.
    pub(crate) fn publish(
        &self,
        open: &sequencer::OpenSegment,
        loc: BatchLoc,
        size: u64,
        root: Hash,
        bytes: u64,
        sync_ns: u64,
    ) {
        self.segments.add_batch(open.first, loc, size);
        self.head.advance(
            TreeHead { size, root },
            size - loc.first_index,
            bytes,
            sync_ns,
        );
        self.checkpoints.head_reached(size);
    }
}
