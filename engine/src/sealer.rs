//! The sealer: turns a full open segment into a sealed one (zstd blocks, block index,
//! footer with the prior edge, the head at its last leaf and a signed checkpoint of it,
//! BLAKE3 digest), syncs and renames it into place, checks it by reading it back, and only
//! then retires the open file. A crash at any step leaves the open file as the truth.
//!
//! A seal never waits for the signer: while it is down the footer carries no note, and the
//! checkpointer signs a checkpoint at the segment's end when it is back (`footer_note`).
//!
//! The read-back proves the file holds what was meant: its digest, its footer, and blocks
//! that decompress to exactly the records read from the open segment (a BLAKE3 of both
//! record streams). Those records passed their batches' CRCs, and their leaf hashes, taken
//! at ingest from the same bytes, are the tree the footer's root commits to. Hashing every
//! record into the tree again (`seal_check_leaves`) was two thirds of the sealer's CPU, and
//! at half the ingest rate its bursts showed in the ack latency; the offline verifier still
//! re-derives everything.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use auditlog_formats::note::Checkpoint;
use auditlog_formats::segment::{SegmentBuilder, SegmentHeader};
use auditlog_formats::tree::{self, RightEdge};
use auditlog_formats::Hash;
use crossbeam_channel::Receiver;

use crate::error::{corrupt, io_err, Result};
use crate::segments::{self, sealed_name, Body, Segment};
use crate::sequencer::SealJob;
use crate::Shared;

pub(crate) fn run(shared: Arc<Shared>, jobs: Receiver<SealJob>) {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    // `draining` is set first thing at shutdown, before `shutting_down`.
    let stopping = || shared.health.draining();
    // Once a seal is given up on at shutdown, so are the segments after it: sealed
    // segments stay a prefix of the log, and the next start seals the open files in order.
    let mut gave_up = false;
    for job in jobs {
        crate::config::FaultHooks::maybe_panic(shared.config.faults.as_ref(), "auditlog-sealer");
        if let Some(f) = &shared.config.faults {
            while f.hold_sealer.load(SeqCst) && !stopping() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut delay = Duration::from_millis(100);
        while !gave_up {
            let outcome = seal(&shared, &job);
            shared
                .health
                .seal_outcome(outcome.as_ref().err().map(|e| e.to_string()));
            let Err(e) = outcome else { break };
            if stopping() {
                tracing::warn!(
                    "sealing {} failed at shutdown; the open file stays and is sealed at the next start: {e}",
                    job.path.display()
                );
                gave_up = true;
                break;
            }
            tracing::warn!(
                "sealing {} failed, retrying in {delay:?}: {e}",
                job.path.display()
            );
            // Shutdown does not wait out the backoff.
            let until = Instant::now() + delay;
            while !stopping() && Instant::now() < until {
                std::thread::sleep(
                    Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
                );
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// Seals one open segment: its records re-blocked and compressed into `<name>.seal.tmp`
/// with a footer tying it into the tree, synced, read back and checked against what was
/// read from the open segment, then renamed into place and handed to readers; the open
/// file is retired for recycling.
pub(crate) fn seal(shared: &Shared, job: &SealJob) -> Result<()> {
    let dir = shared.segments_dir();
    let tmp = dir.join(format!("{}.tmp", sealed_name(job.first, job.end)));
    let _ = std::fs::remove_file(&tmp);
    let header = SegmentHeader {
        codec: shared.config.block_codec,
        tree_hash: shared.config.tree_hash,
        first_index: job.first,
        count: job.end - job.first,
    };
    let written = write_sealed(shared, job, &tmp, header)?;
    let seg = read_back(shared, job, &tmp, header, &written)?;
    install(shared, job, seg)
}

/// What was written, for the read-back check.
struct Written {
    root: Hash,
    /// BLAKE3 of every record read from the open segment, in its block framing: what the
    /// sealed blocks must decompress to.
    records: blake3::Hash,
}

/// Writes the sealed file at `tmp`: header, blocks, footer; synced.
fn write_sealed(
    shared: &Shared,
    job: &SealJob,
    tmp: &Path,
    header: SegmentHeader,
) -> Result<Written> {
    let cfg = &shared.config;
    let alg = cfg.tree_hash;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_err(tmp, "create"))?;
    let (mut builder, head) = SegmentBuilder::new(header, cfg.zstd_level);
    use std::io::Write;
    let mut w = crate::io::WriteBehind::new(&out);
    w.write_all(&head).map_err(io_err(tmp, "write"))?;
    let records = write_blocks(shared, job, tmp, &mut builder, &mut w)?;

    // The footer ties the segment into the tree: the edge before it, the head after it.
    let prior = RightEdge::load(alg, job.first, &shared.hashes)?;
    let root = tree::tree_hash(alg, job.end, &shared.hashes)?;
    let cp = Checkpoint {
        origin: cfg.origin.clone(),
        size: job.end,
        root,
        extensions: Vec::new(),
    };
    let note = footer_note(shared, &cp);
    let tail = builder.finish(
        prior.subtree_roots(),
        root,
        crate::now_unix_ns(),
        job.max_classification,
        note,
    );
    w.write_all(&tail).map_err(io_err(tmp, "write"))?;
    w.flush().map_err(io_err(tmp, "write"))?;
    drop(w);
    out.sync_all().map_err(io_err(tmp, "fsync"))?;
    Ok(Written { root, records })
}

/// Re-blocks the open segment's records into fixed-size compressed blocks: the open
/// segment's batches are as big as load made them; sealed blocks are a fixed size, so
/// reads cost the same everywhere. Returns the BLAKE3 of the raw blocks.
fn write_blocks(
    shared: &Shared,
    job: &SealJob,
    tmp: &Path,
    builder: &mut SegmentBuilder,
    w: &mut impl std::io::Write,
) -> Result<blake3::Hash> {
    let cfg = &shared.config;
    let mut raw: Vec<u8> = Vec::with_capacity(cfg.block_raw_bytes + 70_000);
    let mut records = blake3::Hasher::new();
    let mut in_block = 0u32;
    let mut seen = job.first;
    let mut damage = cfg.faults.as_ref().is_some_and(|f| {
        use std::sync::atomic::Ordering::SeqCst;
        f.damage_seals
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    });
    let mut flush = |raw: &mut Vec<u8>, in_block: &mut u32| -> Result<()> {
        records.update(raw);
        damage_for_test(&mut damage, raw);
        let c = builder
            .add_block(raw, *in_block)
            .map_err(io_err(tmp, "compress"))?;
        w.write_all(&c).map_err(io_err(tmp, "write"))?;
        raw.clear();
        *in_block = 0;
        Ok(())
    };
    // Runs beside the sequencer on a small machine: gives the CPU away often (`yielding`).
    let mut pace = crate::yielding::Every::new(256);
    let scan = segments::scan_open(
        &job.path,
        &job.file,
        job.first,
        auditlog_formats::batch::torn_tail_allowance_bytes(cfg.batch_bytes_max),
        |index, rec| {
            if index >= job.end {
                return Ok(());
            }
            assert_eq!(index, seen, "records out of order while sealing");
            seen += 1;
            pace.tick();
            auditlog_formats::segment::push_block_entry(&mut raw, rec);
            in_block += 1;
            if raw.len() >= cfg.block_raw_bytes {
                flush(&mut raw, &mut in_block)?;
                crate::yielding::point();
            }
            Ok(())
        },
    )?;
    if scan.end_index < job.end || seen != job.end {
        return Err(corrupt(
            &job.path,
            format!("holds leaves to {}, expected {}", scan.end_index, job.end),
        ));
    }
    if in_block > 0 {
        flush(&mut raw, &mut in_block)?;
    }
    Ok(records.finalize())
}

/// Reads the synced file back before trusting it: its digest, header and footer, and every
/// block, which must decompress to exactly the records read from the open segment. With
/// `seal_check_leaves` the records are also hashed into the tree again from the footer's
/// prior edge: the file must reproduce the head the footer states.
fn read_back(
    shared: &Shared,
    job: &SealJob,
    tmp: &Path,
    header: SegmentHeader,
    written: &Written,
) -> Result<Segment> {
    let alg = shared.config.tree_hash;
    let f = std::fs::File::open(tmp).map_err(io_err(tmp, "reopen"))?;
    segments::check_digest(tmp, &f)?;
    let (h2, footer) = segments::load_sealed(tmp, &f)?;
    if h2 != header || footer.root != written.root {
        return Err(corrupt(tmp, "read back differs from what was written"));
    }
    let footer = Arc::new(footer);
    let mut edge = shared
        .config
        .seal_check_leaves
        .then(|| RightEdge::from_parts(alg, job.first, &footer.prior_edge));
    // A decompressed block is its records in exactly the framing hashed when written, so
    // each block is hashed whole (BLAKE3 is fast on long inputs only; per record it cost
    // more than the SHA-256 re-hash).
    let mut again = blake3::Hasher::new();
    let mut count = 0u64;
    let mut pace = crate::yielding::Every::new(256);
    segments::for_each_sealed_block(tmp, &f, &footer, job.first, job.end, &mut |b, raw| {
        again.update(raw);
        count += u64::from(b.record_count);
        if let Some(e) = edge.as_mut() {
            segments::walk(
                tmp,
                b.first_index,
                raw,
                job.first,
                job.end,
                &mut |_, rec| {
                    pace.tick();
                    e.append(alg.leaf(rec), |_, _| {});
                    Ok(true)
                },
            )?;
        }
        crate::yielding::point();
        Ok(true)
    })?;
    if count != job.end - job.first || again.finalize() != written.records {
        return Err(corrupt(
            tmp,
            "sealed records differ from the open segment's",
        ));
    }
    if edge.is_some_and(|e| e.size() != job.end || e.root() != written.root) {
        return Err(corrupt(
            tmp,
            "sealed records do not reproduce the tree head",
        ));
    }
    Ok(Segment {
        first: job.first,
        end: job.end,
        path: tmp.to_path_buf(),
        file: Arc::new(f),
        body: Body::Sealed { footer },
    })
}

/// The checked file takes its name and replaces the open segment for readers; the open
/// file is retired. Not unlinked: the preallocator zeroes it in place for a later segment
/// (freeing it stalled the disk). Renamed first, so recovery never takes it for an open one.
fn install(shared: &Shared, job: &SealJob, seg: Segment) -> Result<()> {
    let dir = shared.segments_dir();
    let final_path = dir.join(sealed_name(job.first, job.end));
    std::fs::rename(&seg.path, &final_path)
        .map_err(io_err(&final_path, "rename sealed segment"))?;
    crate::io::sync_dir(&dir).map_err(io_err(&dir, "sync"))?;
    shared.segments.replace_with_sealed(Segment {
        path: final_path,
        ..seg
    });
    let recycled = dir.join(segments::recycle_name(job.first));
    std::fs::rename(&job.path, &recycled)
        .map_err(io_err(&job.path, "retire sealed open segment"))?;
    crate::io::sync_dir(&dir).map_err(io_err(&dir, "sync"))?;
    shared.recycled.push(recycled, job.file.clone());
    tracing::info!("sealed segment [{}, {})", job.first, job.end);
    Ok(())
}

/// The signed note for a footer, or none while the signer is down: a seal never waits for
/// the signer (an HSM outage would otherwise fill the seal queue and stop ingest). A footer
/// without a note is covered by the checkpoint the checkpointer signs at its end once the
/// signer is back (`Health::footer_unsigned`, registered before the footer is written, so
/// no later checkpoint can slip past it), or, for a segment whose records a checkpoint
/// already covered before the seal, by that checkpoint.
fn footer_note(shared: &Shared, cp: &Checkpoint) -> String {
    if !shared.health.signer_down() {
        match shared.keyring.sign(cp) {
            Ok(note) => {
                shared.health.signer_worked();
                return note;
            }
            Err(e) => {
                shared.health.signer_failed();
                tracing::warn!(
                    "sealing [.., {}) without a signed footer: {e}; its checkpoint is signed when the signer is back",
                    cp.size
                );
                shared.health.set_signer_error(Some(e.to_string()));
            }
        }
    }
    if shared
        .health
        .footer_unsigned(cp.size, || shared.checkpoints.signed_size())
    {
        return String::new();
    }
    // A checkpoint past this segment's end was published before this seal: one at its end
    // can no longer be added in order. The footer carries its own note if the signer works
    // again, else none: the later checkpoint covers the segment (the verifier accepts that).
    match shared.keyring.sign(cp) {
        Ok(note) => {
            shared.health.signer_worked();
            note
        }
        Err(e) => {
            tracing::warn!(
                "sealing [.., {}) without a signed footer: {e}; the newest checkpoint covers it",
                cp.size
            );
            String::new()
        }
    }
}

/// `FaultHooks::damage_seals`: changes the last byte (a record's) of the first block.
fn damage_for_test(armed: &mut bool, raw: &mut [u8]) {
    if let (true, Some(b)) = (std::mem::take(armed), raw.last_mut()) {
        *b ^= 0x20;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_digest_finds_a_changed_byte() {
        let header = SegmentHeader {
            codec: Default::default(),
            tree_hash: auditlog_formats::TreeHash::Sha256,
            first_index: 0,
            count: 1,
        };
        let (mut b, head) = SegmentBuilder::new(header, 1);
        let mut file = head.to_vec();
        let rec = b"one record";
        let mut raw = Vec::new();
        auditlog_formats::segment::push_block_entry(&mut raw, rec);
        file.extend(b.add_block(&raw, 1).expect("compress"));
        file.extend(b.finish(Vec::new(), [7u8; 32], 1, 0, String::new()));
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("s.seg");
        std::fs::write(&path, &file).expect("write");
        let f = std::fs::File::open(&path).expect("open");
        segments::check_digest(&path, &f).expect("intact");
        for at in [0, head.len() + 1, file.len() - 41] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).expect("write");
            let f = std::fs::File::open(&path).expect("open");
            let err = segments::check_digest(&path, &f).expect_err("changed byte");
            assert!(err.to_string().contains("digest"), "{at}: {err}");
        }
    }
}
