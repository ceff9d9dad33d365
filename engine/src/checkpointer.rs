//! The checkpointer: on its own clock (or sooner when asked), makes the hash store durable
//! up to the newest head, signs that head, appends the note to the checkpoint log, syncs,
//! and only then announces it. Signing never sits on the ingest path: a slow or failing
//! signer delays checkpoints, never acknowledgements (nor seals: a segment sealed while the
//! signer was down gets its checkpoint here, at its end, in order, before the head's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_formats::note::Checkpoint;

use crate::checkpoints::{CheckpointLog, SignedCheckpoint};
use crate::error::Result;
use crate::Shared;

pub(crate) fn run(shared: Arc<Shared>, mut log: CheckpointLog) {
    let interval = Duration::from_millis(shared.config.checkpoint_interval_ms.max(1));
    let mut backoff = Duration::from_millis(50);
    loop {
        crate::config::FaultHooks::maybe_panic(
            shared.config.faults.as_ref(),
            "auditlog-checkpointer",
        );
        let stopping = shared.health.shutting_down();
        match checkpoint_once(&shared, &mut log) {
            Ok(()) => {
                shared.health.set_signer_error(None);
                backoff = Duration::from_millis(50);
            }
            Err(e) if stopping => {
                // The last try: shutdown does not wait out a backoff for it.
                tracing::warn!("final checkpoint failed: {e}");
                shared.health.set_signer_error(Some(e.to_string()));
            }
            Err(e) => {
                tracing::warn!("checkpoint failed, will retry in {backoff:?}: {e}");
                shared.health.set_signer_error(Some(e.to_string()));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        if stopping {
            shared.health.checkpointer_finished();
            return;
        }
        // Sleep until the interval passes, shutdown, or someone wants a size signed that is
        // not: every change to that notifies (`head::Checkpoints`). No polling.
        shared
            .checkpoints
            .wait_for_work(Instant::now() + interval, || {
                shared.checkpoints.signed_size()
            });
    }
}

fn checkpoint_once(shared: &Shared, log: &mut CheckpointLog) -> Result<()> {
    let head = shared.head.get();
    let signed = shared.checkpoints.signed_size();
    assert!(signed <= head.size, "tree shrank below its checkpoint");
    // Segments sealed while the signer was down, oldest first, then the head: checkpoints
    // are signed in order, each segment's at its end (the signature its footer lacks).
    let mut sizes = shared.health.unsigned_footers_past(signed);
    assert!(sizes.last().is_none_or(|&s| s <= head.size));
    if sizes.last() != Some(&head.size) && head.size > signed {
        sizes.push(head.size);
    }
    if sizes.is_empty() {
        return Ok(());
    }
    // The checkpoint promises the hashes behind it survive a crash.
    shared.hashes.sync()?;
    // Every size a proof may be asked at is indexed by leaf hash before it is published. The
    // index is derived: a failure is logged and lookups scan the unindexed tail instead.
    if let Err(e) = shared.leaf_index.extend(&shared.hashes, head.size) {
        tracing::warn!("leaf index: {e}");
    }
    for size in sizes {
        let root = if size == head.size {
            head.root
        } else {
            auditlog_formats::tree::tree_hash(shared.config.tree_hash, size, &shared.hashes)?
        };
        if !publish(shared, log, size, root)? {
            // A segment's unsigned end came in below `size` meanwhile: sign it first.
            shared.checkpoints.wake();
            break;
        }
    }
    if let Err(e) = shared.leaf_index.compact() {
        tracing::warn!("leaf index: {e}");
    }
    Ok(())
}

/// Signs the head at `size`, appends it to the log, and only then announces it. False (and
/// nothing published) when a segment sealed without a note ends below `size` and past the
/// newest checkpoint: its checkpoint comes first.
fn publish(
    shared: &Shared,
    log: &mut CheckpointLog,
    size: u64,
    root: auditlog_formats::Hash,
) -> Result<bool> {
    let checkpoint = Checkpoint {
        origin: shared.config.origin.clone(),
        size,
        root,
        extensions: Vec::new(),
    };
    let note = match shared.keyring.sign(&checkpoint) {
        Ok(n) => {
            shared.health.signer_worked();
            n
        }
        Err(e) => {
            shared.health.signer_failed();
            return Err(e);
        }
    };
    // Cleared before the checkpoint is published: whoever sees the new checkpoint also
    // sees a working signer (`/ready`).
    if shared.health.signer_error().is_some() {
        tracing::info!("checkpoint signing works again");
    }
    shared.health.set_signer_error(None);
    let gate = shared.health.publish_gate();
    let signed = shared.checkpoints.signed_size();
    if gate.iter().any(|&end| signed < end && end < size) {
        return Ok(false);
    }
    log.append(&note)?;
    shared
        .checkpoints
        .publish(SignedCheckpoint { checkpoint, note });
    drop(gate);
    Ok(true)
}
