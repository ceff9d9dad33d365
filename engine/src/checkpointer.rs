//! The checkpointer: on its own clock (or sooner when asked), makes the hash store durable
//! up to the newest head, signs that head, appends the note to the checkpoint log, syncs,
//! and only then announces it. Signing never sits on the ingest path: a slow or failing
//! signer delays checkpoints, never acknowledgements (nor seals: a segment sealed while the
//! signer was down gets its checkpoint here, at its end, in order, before the head's).
//! With `[witness]`, a signed checkpoint is published only once enough witnesses cosigned
//! it (`witness.rs`); too few is a failed pass, retried with the same backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_formats::note::Checkpoint;

use crate::checkpoints::{CheckpointLog, SignedCheckpoint};
use crate::error::{EngineError, Result};
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
                if !matches!(e, EngineError::WitnessPolicy(_)) {
                    shared.health.set_signer_error(Some(e.to_string()));
                }
            }
            Err(e) => {
                tracing::warn!("checkpoint failed, will retry in {backoff:?}: {e}");
                // Witnesses say why in their own status (`/ready`, metrics): the signer worked.
                if !matches!(e, EngineError::WitnessPolicy(_)) {
                    shared.health.set_signer_error(Some(e.to_string()));
                }
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
    let mut sizes = sizes_to_sign(shared, head.size);
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
    'sizes: while !sizes.is_empty() {
        for &size in &sizes {
            let root = if size == head.size {
                head.root
            } else {
                auditlog_formats::tree::tree_hash(shared.config.tree_hash, size, &shared.hashes)?
            };
            if !publish(shared, log, size, root)? {
                // A segment's unsigned end came in below `size` meanwhile: sign it first.
                sizes = sizes_to_sign(shared, head.size);
                continue 'sizes;
            }
        }
        break;
    }
    if let Err(e) = shared.leaf_index.compact() {
        tracing::warn!("leaf index: {e}");
    }
    Ok(())
}

/// The sizes to sign, in order, up to the head at `head_size`: the ends of segments sealed
/// while the signer was down (each gets its checkpoint, the signature its footer lacks),
/// then the head. An end past `head_size` (a seal registered after the head was read) waits
/// for the next pass.
fn sizes_to_sign(shared: &Shared, head_size: u64) -> Vec<u64> {
    let signed = shared.checkpoints.signed_size();
    assert!(signed <= head_size, "tree shrank below its checkpoint");
    let mut sizes = shared.health.unsigned_footers_past(signed);
    sizes.retain(|&s| s <= head_size);
    if sizes.last() != Some(&head_size) && head_size > signed {
        sizes.push(head_size);
    }
    sizes
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
    // Witnesses are asked before the gate is taken: their round trips never hold it.
    let note = match &shared.witnesses {
        None => note,
        Some(w) => w.cosign(&checkpoint, &note, &|old, new| {
            auditlog_formats::tree::prove_consistency(
                shared.config.tree_hash,
                old,
                new,
                &shared.hashes,
            )?
            .map_err(|e| EngineError::BadRequest(e.to_string()))
        })?,
    };
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
