//! The segment set and its readers: which file (or stored object) holds each leaf, kept
//! current by the sequencer (open segments and their batches), the sealer (sealed ones
//! replace open ones) and the pruner (pruned ones leave the disk), and the read path that
//! resolves a range under the lock and reads it outside.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use auditlog_formats::TreeHash;

use crate::blockcache::BlockCache;
use crate::error::{EngineError, Result};
use crate::hashstore::HashFiles;
use crate::pruned::PrunedSegment;
use crate::remote::{RemoteSegments, StoreReadStats};
use crate::segments::{BatchLoc, Body, Reads, Segment};
use crate::sequencer::OpenSegment;

pub(crate) struct SegmentSet {
    pub(crate) sealed: Vec<Arc<Segment>>,
    pub(crate) open: Vec<OpenView>,
    /// Sealed segments deleted locally; their records are read from the store.
    pub(crate) pruned: Vec<Arc<PrunedSegment>>,
}

pub(crate) struct OpenView {
    pub(crate) first: u64,
    pub(crate) end: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<std::fs::File>,
    pub(crate) batches: Vec<BatchLoc>,
}

/// Counts for the status.
pub(crate) struct SetCounts {
    pub sealed: usize,
    pub open: usize,
    pub pruned: usize,
    pub pruned_bytes: u64,
}

/// The set behind its lock, with what reading a pruned segment needs.
pub(crate) struct Segments {
    set: RwLock<SegmentSet>,
    dir: PathBuf,
    alg: TreeHash,
    /// The tree's hashes, to check records read back from the store.
    hashes: HashFiles,
    remote: RemoteSegments,
    /// Recently decoded blocks of local sealed segments.
    cache: BlockCache,
}

enum ReadPlan {
    Sealed(Arc<Segment>),
    Open(Segment),
    Pruned(Arc<PrunedSegment>),
}

impl Segments {
    pub fn new(
        set: SegmentSet,
        dir: PathBuf,
        alg: TreeHash,
        hashes: HashFiles,
        remote: RemoteSegments,
        block_cache_bytes: usize,
    ) -> Segments {
        Segments {
            set: RwLock::new(set),
            dir,
            alg,
            hashes,
            remote,
            cache: BlockCache::new(block_cache_bytes),
        }
    }

    /// The `segments/` directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, SegmentSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SegmentSet> {
        self.set.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> SetCounts {
        let set = self.read();
        SetCounts {
            sealed: set.sealed.len(),
            open: set.open.len(),
            pruned: set.pruned.len(),
            pruned_bytes: set.pruned.iter().map(|p| p.bytes).sum(),
        }
    }

    pub fn store_reads(&self) -> StoreReadStats {
        self.remote.stats()
    }

    /// A durable batch becomes readable: its location in the open segment, which now ends
    /// at `size`.
    pub fn add_batch(&self, open_first: u64, loc: BatchLoc, size: u64) {
        let mut set = self.write();
        let view = set
            .open
            .iter_mut()
            .find(|v| v.first == open_first)
            .expect("open segment is registered");
        view.batches.push(loc);
        view.end = size;
    }

    pub fn add_open(&self, open: &OpenSegment) {
        self.write().open.push(OpenView {
            first: open.first,
            end: open.first,
            path: open.path.clone(),
            file: open.file.clone(),
            batches: Vec::new(),
        });
    }

    pub fn remove_open(&self, first: u64) {
        self.write().open.retain(|v| v.first != first);
    }

    /// The sealer's last step: the sealed file replaces the open one for readers.
    pub fn replace_with_sealed(&self, sealed: Segment) {
        let mut set = self.write();
        set.open.retain(|v| v.first != sealed.first);
        set.sealed.push(Arc::new(sealed));
        set.sealed.sort_by_key(|s| s.first);
    }

    /// The pruner's step between recording a segment as pruned and unlinking it: readers
    /// stop looking for the file and go to the store.
    pub fn mark_pruned(&self, p: PrunedSegment) {
        let mut set = self.write();
        set.sealed.retain(|s| s.first != p.first);
        set.pruned.push(Arc::new(p));
        set.pruned.sort_by_key(|p| p.first);
    }

    /// Where `at` lives, resolved under the lock (`end`: where the caller stops reading).
    fn plan(&self, at: u64, end: u64) -> Result<ReadPlan> {
        let set = self.read();
        if let Some(s) = set.sealed.iter().find(|s| s.first <= at && at < s.end) {
            return Ok(ReadPlan::Sealed(s.clone()));
        }
        if let Some(p) = set.pruned.iter().find(|p| p.first <= at && at < p.end) {
            return Ok(ReadPlan::Pruned(p.clone()));
        }
        let Some(v) = set.open.iter().find(|v| v.first <= at && at < v.end) else {
            return Err(EngineError::Corrupt {
                path: self.dir.clone(),
                what: format!("no segment holds index {at}"),
            });
        };
        let stop = end.min(v.end);
        let i = v
            .batches
            .partition_point(|b| b.first_index <= at)
            .saturating_sub(1);
        let j = v.batches.partition_point(|b| b.first_index < stop);
        Ok(ReadPlan::Open(Segment {
            first: v.first,
            end: stop,
            path: v.path.clone(),
            file: v.file.clone(),
            body: Body::Open {
                batches: v.batches[i..j].to_vec(),
            },
        }))
    }

    /// Reads `[start, end)` in order through `f`, which returns false to stop early. A
    /// `point` read (a few records: a search's candidates, one event) decodes a block it
    /// does not find in the cache only as far as it needs, and keeps nothing.
    pub fn for_each_record(
        &self,
        point: bool,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut at = start;
        while at < end {
            let (more, next) = match self.plan(at, end)? {
                ReadPlan::Sealed(s) => {
                    let reads = Reads::Cached {
                        cache: &self.cache,
                        point,
                    };
                    (s.for_each_record(reads, at, end, f)?, s.end)
                }
                ReadPlan::Open(s) => (s.for_each_record(Reads::Uncached, at, end, f)?, s.end),
                ReadPlan::Pruned(p) => (
                    self.remote
                        .for_each_record(&p, self.alg, &self.hashes, at, end, f)?,
                    p.end,
                ),
            };
            if !more {
                return Ok(());
            }
            at = next.min(end);
        }
        Ok(())
    }
}
