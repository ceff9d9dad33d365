//! The sequencer: one thread owns the open segment and the tree's right edge. The life of a
//! batch, in `run`: take what producers queued (up to the batch limits), append it with one
//! write and make it durable with one sync (hashing the new leaves into the tree while the
//! kernel works), publish the new tree head, and only then complete every receipt.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_formats::batch::{encode_header_parts, BATCH_HEADER_BYTES};
use auditlog_formats::tree::RightEdge;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::error::{io_err, EngineError, Result};
use crate::hashstore::PendingNodes;
use crate::health::Fault;
use crate::io::Appender;
use crate::segments::{open_name, BatchLoc};
use crate::{Receipts, Shared, Submission};

/// The segment being appended to.
pub(crate) struct OpenSegment {
    pub first: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub write_offset: u64,
    pub opened_at: Instant,
    pub max_classification: u8,
}

impl OpenSegment {
    /// A zero-filled preallocated file becomes the open segment holding leaves from
    /// `first`: renamed to its open name (the directory synced, so a crash finds it there),
    /// opened, and registered for readers. At start (a new log) and at every rotation.
    pub fn activate(
        shared: &Shared,
        prealloc: &std::path::Path,
        first: u64,
    ) -> Result<OpenSegment> {
        let dir = shared.segments_dir();
        let path = dir.join(open_name(first));
        std::fs::rename(prealloc, &path).map_err(io_err(&path, "activate preallocated segment"))?;
        crate::io::sync_dir(&dir).map_err(io_err(&dir, "sync"))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "open segment"))?;
        let open = OpenSegment {
            first,
            path,
            file: Arc::new(file),
            write_offset: 0,
            opened_at: Instant::now(),
            max_classification: 0,
        };
        shared.segments.add_open(&open);
        Ok(open)
    }
}

/// A full (or old) open segment handed to the sealer.
pub(crate) struct SealJob {
    pub first: u64,
    pub end: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub max_classification: u8,
}

pub(crate) struct Sequencer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Submission>,
    pub appender: Appender,
    pub open: OpenSegment,
    pub edge: RightEdge,
    pub pending: PendingNodes,
    pub prealloc_rx: Receiver<PathBuf>,
    pub seal_tx: Sender<SealJob>,
    /// The last group commit's leaf hashes, per submission (for its receipts).
    pub leaves: Vec<Vec<auditlog_formats::Hash>>,
}

const IDLE_TICK: Duration = Duration::from_millis(100);

const PAGE_BYTES: u64 = 4096;
static ZERO_PAGE: [u8; PAGE_BYTES as usize] = [0; PAGE_BYTES as usize];

/// Zeros to write after a batch ending at `end` so that the write ends on a page boundary
/// (or at the file's end). The file already holds zeros there, and the next batch
/// overwrites them. A write that ended mid-page left that page (and, in a recycled file
/// zeroed around the page cache, every page) to be read back from the disk before the
/// next batch could be copied into it: about two synchronous 4 KiB reads per group
/// commit, in front of its sync (7 MB/s of reads at 526k events/s).
fn page_pad(end: u64, file_bytes: u64) -> usize {
    let padded = end.next_multiple_of(PAGE_BYTES).min(file_bytes.max(end));
    (padded - end) as usize
}

impl Sequencer {
    pub fn run(mut self) {
        let cfg = self.shared.config.clone();
        let mut batch: Vec<Submission> = Vec::with_capacity(1024);
        let mut carry: Option<Submission> = None;
        loop {
            // Take: block for the first submission, then drain what is already queued.
            let first = match carry.take() {
                Some(s) => s,
                None => match self.rx.recv_timeout(IDLE_TICK) {
                    Ok(s) => s,
                    Err(RecvTimeoutError::Timeout) => {
                        self.seal_if_old();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let (mut bytes, mut events) = (first.body.len(), first.count as usize);
            batch.push(first);
            while bytes < cfg.batch_bytes_max && events < cfg.batch_events_max {
                match self.rx.try_recv() {
                    Ok(s)
                        if bytes + s.body.len() <= cfg.batch_bytes_max
                            && events + (s.count as usize) <= cfg.batch_events_max =>
                    {
                        bytes += s.body.len();
                        events += s.count as usize;
                        batch.push(s);
                    }
                    Ok(s) => {
                        carry = Some(s);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // A failure elsewhere (a panicked thread: a broken invariant) stops writes: nothing
            // is acknowledged after it. One atomic load per group commit.
            if self.shared.health.has_failed() {
                let why = self.shared.health.failure();
                for s in batch.drain(..) {
                    (s.done)(Err(why.as_ref().map_or_else(
                        || EngineError::Failed(String::new()),
                        Fault::error,
                    )));
                }
                break;
            }
            crate::config::FaultHooks::maybe_panic(cfg.faults.as_ref(), "auditlog-sequencer");
            // Remote durability: receipts waiting for the store are bounded; past the bound
            // this thread waits, so the queue fills and producers meet the back-pressure.
            let remote_max = cfg
                .replication
                .as_ref()
                .map_or(u64::MAX, |r| r.remote_pending_bytes_max);
            let health = &self.shared.health;
            self.shared
                .store_acks
                .wait_for_room(remote_max, &|| health.has_failed() || health.draining());
            // Append, sync, add to the tree, acknowledge (or, in remote durability, hand
            // the receipts to wait for the store). With a lease, only while it is held:
            // before the write, and again before the acknowledgement.
            let committed = self
                .shared
                .fence()
                .and_then(|()| self.commit(&batch, bytes, events))
                .and_then(|first| self.shared.fence().map(|()| first));
            match committed {
                Ok(first_index) => {
                    let receipts = receipts(&mut batch, first_index, &mut self.leaves);
                    let end = self.edge.size();
                    if let Some(ready) = self.shared.store_acks.committed(end, receipts) {
                        for (done, r) in ready {
                            done(Ok(r));
                        }
                    }
                    self.pending.start_writeback(&self.shared.hashes);
                }
                Err(e) => {
                    // Whatever failed (write, sync, hash store), the page cache and the tree's
                    // edge can no longer be trusted to match the disk: stop, say why, ack nothing.
                    let fault = Fault::of(&e);
                    self.shared.health.fail(fault.clone());
                    for s in batch.drain(..) {
                        (s.done)(Err(fault.error()));
                    }
                    break;
                }
            }
            self.seal_if_old();
        }
        // Refuse whatever is still queued: with the engine failed or shutting down, none of
        // it will be written. A submission queued after this is answered by its producer
        // (`Engine::submission` checks the failure after queueing).
        let why = self.shared.health.failure();
        if let Some(s) = carry {
            (s.done)(Err(why
                .as_ref()
                .map_or(EngineError::ShuttingDown, Fault::error)));
        }
        self.shared.refuse_queued();
    }

    /// Writes the batch durably and adds it to the tree; returns its first index.
    fn commit(&mut self, batch: &[Submission], bytes: usize, events: usize) -> Result<u64> {
        let total = (BATCH_HEADER_BYTES + bytes) as u64;
        if self.open.write_offset + total > self.shared.config.segment_bytes {
            self.rotate()?;
        }
        let first_index = self.edge.size();
        let max_class = batch
            .iter()
            .map(|s| s.max_classification)
            .max()
            .unwrap_or(0);
        let parts: Vec<&[u8]> = batch.iter().map(|s| s.body.as_slice()).collect();
        let header = encode_header_parts(first_index, events as u32, max_class, &parts);
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(parts.len() + 2);
        bufs.push(&header);
        bufs.extend_from_slice(&parts);
        let pad = page_pad(
            self.open.write_offset + total,
            self.shared.config.segment_bytes,
        );
        bufs.push(&ZERO_PAGE[..pad]);

        let edge = &mut self.edge;
        let pending = &mut self.pending;
        let alg = self.shared.config.tree_hash;
        let leaves = &mut self.leaves;
        leaves.clear();
        // While the kernel syncs: each submission's leaf hashes (its producer computed them
        // after the enqueue) into the tree.
        let mut hash_leaves = || {
            for s in batch {
                let hashes = s.leaves.take(alg, &s.body);
                for leaf in &hashes {
                    edge.append(*leaf, |node, h| pending.push(node, h));
                }
                leaves.push(hashes);
            }
        };
        let started = Instant::now();
        self.appender
            .write_and_sync(
                &self.open.file,
                self.open.write_offset,
                &bufs,
                self.shared.config.faults.as_ref(),
                &mut hash_leaves,
            )
            .map_err(|e| {
                let at = self.open.write_offset;
                io_err(&self.open.path, format!("append batch at offset {at}"))(e)
            })?;
        let sync_ns = started.elapsed().as_nanos() as u64;
        assert_eq!(
            self.edge.size(),
            first_index + events as u64,
            "tree and batch disagree"
        );

        self.pending.flush(&self.shared.hashes)?;
        let loc = BatchLoc {
            first_index,
            offset: self.open.write_offset,
            total_bytes: total as u32,
        };
        self.open.write_offset += total;
        self.open.max_classification = self.open.max_classification.max(max_class);
        self.shared.publish(
            &self.open,
            loc,
            self.edge.size(),
            self.edge.root(),
            bytes as u64,
            sync_ns,
        );
        Ok(first_index)
    }

    fn seal_if_old(&mut self) {
        let age_ms = self.shared.config.seal_age_ms;
        if age_ms == 0
            || self.open.write_offset == 0
            || self.open.opened_at.elapsed() < Duration::from_millis(age_ms)
        {
            return;
        }
        if let Err(e) = self.rotate() {
            tracing::warn!("sealing by age postponed: {e}");
        }
    }

    /// Closes the open segment (handing it to the sealer) and opens the next one from the
    /// zero-filled files the preallocator keeps ready.
    fn rotate(&mut self) -> Result<()> {
        let next = match self.prealloc_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(p) => p,
            Err(_) => {
                return Err(self.shared.health.prealloc_fault().map_or_else(
                    || EngineError::Failed("no zero-filled segment ready after 10 s".into()),
                    |f| f.error(),
                ));
            }
        };
        let first = self.edge.size();
        let new = OpenSegment::activate(&self.shared, &next, first)?;
        let old = std::mem::replace(&mut self.open, new);
        if old.write_offset == 0 {
            // Never written: nothing to seal.
            self.shared.segments.remove_open(old.first);
            let _ = std::fs::remove_file(&old.path);
            return Ok(());
        }
        let job = SealJob {
            first: old.first,
            end: first,
            path: old.path,
            file: old.file,
            max_classification: old.max_classification,
        };
        let gone = || EngineError::Failed("sealer thread is gone".into());
        match self.seal_tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(gone()),
            Err(TrySendError::Full(job)) => {
                // Appends wait here until the sealer takes one; producers see a full queue.
                tracing::warn!(
                    "sealing is {} segments behind (seal_queue_segments_max): appends wait for it",
                    self.shared.config.seal_queue_segments_max
                );
                self.seal_tx.send(job).map_err(|_| gone())
            }
        }
    }
}

/// Each submission's receipts (with its leaf hashes, as the commit took them), with the
/// callback that answers it.
fn receipts(
    batch: &mut Vec<Submission>,
    first_index: u64,
    leaves: &mut Vec<Vec<auditlog_formats::Hash>>,
) -> Vec<(crate::Done, Receipts)> {
    let mut next = first_index;
    assert_eq!(batch.len(), leaves.len(), "a receipt per submission");
    batch
        .drain(..)
        .zip(leaves.drain(..))
        .map(|(s, leaf_hashes)| {
            let count = s.count as u64;
            assert_eq!(leaf_hashes.len() as u64, count, "a leaf per event");
            let receipts = Receipts {
                first_index: next,
                received_at_unix_ns: s.received_at_unix_ns,
                leaf_hashes,
            };
            next += count;
            (s.done, receipts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_end_on_page_boundaries_within_the_file() {
        assert_eq!(page_pad(0, 1 << 20), 0);
        assert_eq!(page_pad(1, 1 << 20), 4095);
        assert_eq!(page_pad(4096, 1 << 20), 0);
        assert_eq!(page_pad(4097 + 4096, 1 << 20), 4095);
        // Never past the file's end (a file not a whole number of pages)...
        assert_eq!(page_pad(10_000, 10_001), 1);
        assert_eq!(page_pad(10_001, 10_001), 0);
        // ...and never negative for a batch that already runs past it.
        assert_eq!(page_pad(10_002, 10_001), 0);
    }
}
