//! Reads of pruned segments: the sealed segment object is fetched from the WORM store,
//! checked, and served from memory.
//!
//! Trust nothing fetched: the object must hash (BLAKE3, whole object) to the digest recorded
//! when it was pruned, parse as a sealed segment whose own digest holds, cover exactly the
//! pruned range, and every record must hash to the leaf the local hash store holds. Only
//! then is it cached and read. The store's `get` returns whole objects (no range reads in
//! the `WormTarget` trait), so memory is bounded by a small cache (a count and a byte limit,
//! `store_read_cache_*` in `[replication]`) plus one fetch at a time: concurrent readers of
//! the same segment wait for the one fetch instead of each holding a copy.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use auditlog_formats::segment::Footer;
use auditlog_formats::TreeHash;
use auditlog_worm::WormTarget;

use crate::error::{corrupt, EngineError, Result};
use crate::hashstore::HashFiles;
use crate::pruned::PrunedSegment;
use crate::segments;

/// A verified copy of a pruned segment, held in memory.
pub(crate) struct Fetched {
    first: u64,
    place: PathBuf,
    bytes: Vec<u8>,
    footer: Footer,
}

/// Counters for status and metrics.
#[derive(Clone, Debug, Default)]
pub struct StoreReadStats {
    /// Segment objects fetched from the store (cache misses), and those that failed
    /// (store down, object missing, or it did not verify).
    pub fetches: u64,
    pub fetch_failures: u64,
    pub fetched_bytes: u64,
    pub cache_hits: u64,
    pub cached_segments: u64,
    pub cached_bytes: u64,
}

pub(crate) struct RemoteSegments {
    /// `None`: replication is off, so pruned segments cannot be read.
    target: Option<Box<dyn WormTarget>>,
    cache_segments_max: usize,
    cache_bytes_max: u64,
    /// Least recently used first.
    cache: Mutex<Vec<Arc<Fetched>>>,
    /// One fetch at a time: bounds memory to the cache plus one object in flight.
    fetching: Mutex<()>,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    fetched_bytes: AtomicU64,
    cache_hits: AtomicU64,
}

impl RemoteSegments {
    pub fn new(
        target: Option<Box<dyn WormTarget>>,
        cache_segments_max: usize,
        cache_bytes_max: u64,
    ) -> RemoteSegments {
        RemoteSegments {
            target,
            cache_segments_max,
            cache_bytes_max,
            cache: Mutex::new(Vec::new()),
            fetching: Mutex::new(()),
            fetches: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> StoreReadStats {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        StoreReadStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            fetch_failures: self.fetch_failures.load(Ordering::Relaxed),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cached_segments: cache.len() as u64,
            cached_bytes: cache.iter().map(|f| f.bytes.len() as u64).sum(),
        }
    }

    /// Calls `f(index, record)` for `[start, end)` ∩ the pruned segment, in order.
    pub fn for_each_record(
        &self,
        p: &PrunedSegment,
        alg: TreeHash,
        hashes: &HashFiles,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        let seg = self.get(p, alg, hashes)?;
        seg.for_each_record(start.max(p.first), end.min(p.end), f)
    }

    fn cached(&self, first: u64) -> Option<Arc<Fetched>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let i = cache.iter().position(|f| f.first == first)?;
        let hit = cache.remove(i);
        cache.push(hit.clone());
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    fn get(&self, p: &PrunedSegment, alg: TreeHash, hashes: &HashFiles) -> Result<Arc<Fetched>> {
        if let Some(hit) = self.cached(p.first) {
            return Ok(hit);
        }
        let _one = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        // Another reader may have fetched it while this one waited.
        if let Some(hit) = self.cached(p.first) {
            return Ok(hit);
        }
        let Some(target) = self.target.as_ref() else {
            return Err(EngineError::StoreUnavailable {
                place: p.key.clone(),
                reason: format!(
                    "segment [{}, {}) was pruned locally and replication is off: no store to read it from",
                    p.first, p.end
                ),
            });
        };
        let place = format!("{}/{}", target.describe().trim_end_matches('/'), p.key);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = match target.get(&p.key) {
            Ok(Some(bytes)) => {
                self.fetched_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                check(p, alg, hashes, bytes, PathBuf::from(&place))
            }
            Ok(None) => Err(corrupt(
                &place,
                format!(
                    "pruned segment [{}, {}) is missing on the store",
                    p.first, p.end
                ),
            )),
            Err(e) => Err(EngineError::StoreUnavailable {
                place,
                reason: e.to_string(),
            }),
        };
        let fetched = match fetched {
            Ok(f) => Arc::new(f),
            Err(e) => {
                self.fetch_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("read of pruned segment: {e}");
                return Err(e);
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.push(fetched.clone());
        // Evict least recently used until both limits hold; an object larger than the byte
        // limit is served to this reader and not kept.
        loop {
            let bytes: u64 = cache.iter().map(|f| f.bytes.len() as u64).sum();
            if cache.is_empty()
                || (cache.len() <= self.cache_segments_max && bytes <= self.cache_bytes_max)
            {
                break;
            }
            cache.remove(0);
        }
        Ok(fetched)
    }
}

/// Checks a fetched object against what was pruned; see the module comment.
fn check(
    p: &PrunedSegment,
    alg: TreeHash,
    hashes: &HashFiles,
    bytes: Vec<u8>,
    place: PathBuf,
) -> Result<Fetched> {
    let digest = blake3::hash(&bytes).to_hex();
    if bytes.len() as u64 != p.bytes || digest.as_str() != p.blake3 {
        return Err(corrupt(
            &place,
            format!(
                "object of {} bytes with BLAKE3 {digest} differs from the segment pruned locally ({} bytes, BLAKE3 {}): refusing to serve it",
                bytes.len(),
                p.bytes,
                p.blake3
            ),
        ));
    }
    // The object hashed to the digest recorded when it was pruned, so these checks only
    // fail on a bug; they are the same ones a local sealed segment goes through.
    segments::check_digest(&place, &bytes[..])?;
    let (header, footer) = segments::load_sealed(&place, &bytes[..])?;
    if header.first_index != p.first
        || header.first_index + header.count != p.end
        || header.tree_hash != alg
    {
        return Err(corrupt(
            &place,
            format!(
                "header says [{}, {}), the pruned segment is [{}, {})",
                header.first_index,
                header.first_index + header.count,
                p.first,
                p.end
            ),
        ));
    }
    let fetched = Fetched {
        first: p.first,
        place,
        bytes,
        footer,
    };
    // Every record against the leaf hash the tree holds, block by block.
    let leaves = hashes
        .level_file(0)
        .ok_or_else(|| corrupt(&fetched.place, "hash store has no leaves"))?;
    let mut stored = Vec::new();
    for b in &fetched.footer.blocks {
        stored.resize(b.record_count as usize * 32, 0);
        leaves
            .read_exact_at(&mut stored, b.first_index * 32)
            .map_err(crate::error::io_err(
                "hashes/level-00.bin",
                format!("read leaves from {}", b.first_index),
            ))?;
        let mut i = 0usize;
        fetched.for_each_record(
            b.first_index,
            b.first_index + b.record_count as u64,
            &mut |index, rec| {
                if alg.leaf(rec)[..] != stored[i * 32..i * 32 + 32] {
                    return Err(corrupt(
                        &fetched.place,
                        format!("record {index} does not hash to its stored leaf hash"),
                    ));
                }
                i += 1;
                Ok(true)
            },
        )?;
    }
    Ok(fetched)
}

impl Fetched {
    fn for_each_record(
        &self,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        segments::for_each_sealed_record(
            &self.place,
            &self.bytes[..],
            &self.footer,
            segments::Reads::Uncached,
            start,
            end,
            f,
        )
    }
}
