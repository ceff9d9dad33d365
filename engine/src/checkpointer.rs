//! The checkpointer: on its own clock (or sooner when asked), makes the hash store durable
//! up to the newest head, signs that head, appends the note to the checkpoint log, syncs,
//! and only then announces it. Signing never sits on the ingest path: a slow or failing
//! signer delays checkpoints, never acknowledgements (nor seals: a segment sealed while the
//! signer was down gets its checkpoint here, at its end, in order, before the head's).

use std::sync::atomic::Ordering;
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
        let stopping = shared.shutting_down.load(Ordering::SeqCst);
        match checkpoint_once(&shared, &mut log) {
            Ok(()) => {
                shared.set_signer_error(None);
                backoff = Duration::from_millis(50);
            }
            Err(e) if stopping => {
                // The last try: shutdown does not wait out a backoff for it.
                tracing::warn!("final checkpoint failed: {e}");
                shared.set_signer_error(Some(e.to_string()));
            }
            Err(e) => {
                tracing::warn!("checkpoint failed, will retry in {backoff:?}: {e}");
                shared.set_signer_error(Some(e.to_string()));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        if stopping {
            return;
        }
        // Sleep until the interval passes or someone asks for a size we have not signed.
        let deadline = Instant::now() + interval;
        let mut want = shared
            .checkpoint_wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            let signed = shared
                .latest_checkpoint()
                .map(|c| c.checkpoint.size)
                .unwrap_or(0);
            let head = shared.head().size;
            if shared.shutting_down.load(Ordering::SeqCst) || (*want > signed && head > signed) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Every change to what this waits for notifies under the same lock: a raised
            // `want` (`Engine::want_checkpoint`), a batch published past it
            // (`Shared::publish`), shutdown and a panicked thread. No polling.
            want = shared
                .checkpoint_wake
                .wait_timeout(want, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn checkpoint_once(shared: &Shared, log: &mut CheckpointLog) -> Result<()> {
    let head = shared.head();
    let signed = shared
        .latest_checkpoint()
        .map_or(0, |cp| cp.checkpoint.size);
    assert!(signed <= head.size, "tree shrank below its checkpoint");
    // Segments sealed while the signer was down, oldest first, then the head: checkpoints
    // are signed in order, each segment's at its end (the signature its footer lacks).
    let mut sizes = shared.unsigned_footers_past(signed);
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
        publish(shared, log, size, root)?;
    }
    if let Err(e) = shared.leaf_index.compact() {
        tracing::warn!("leaf index: {e}");
    }
    Ok(())
}

/// Signs the head at `size`, appends it to the log, and only then announces it.
fn publish(
    shared: &Shared,
    log: &mut CheckpointLog,
    size: u64,
    root: auditlog_formats::Hash,
) -> Result<()> {
    let checkpoint = Checkpoint {
        origin: shared.config.origin.clone(),
        size,
        root,
        extensions: Vec::new(),
    };
    let note = match shared.keyring.sign(&checkpoint) {
        Ok(n) => {
            shared.signer_worked();
            n
        }
        Err(e) => {
            shared.signer_failed();
            return Err(e);
        }
    };
    // Cleared before the checkpoint is published: whoever sees the new checkpoint also
    // sees a working signer (`/ready`).
    if shared.status_signer_error().is_some() {
        tracing::info!("checkpoint signing works again");
    }
    shared.set_signer_error(None);
    log.append(&note)?;
    shared.set_checkpoint(SignedCheckpoint { checkpoint, note });
    *shared
        .checkpoint_at
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    Ok(())
}
