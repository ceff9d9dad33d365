//! The hash store: the tree's hashes at every fourth level (0, 4, 8, …), one append-only
//! file per stored level (`hashes/level-KK.bin`, node `i` of level K at byte `32 * i`).
//! A node of a stored level is one `pread`; one of the three levels above is one `pread` of
//! the 2, 4 or 8 nodes under it on the stored level and 1, 3 or 7 hashes. So a proof still
//! reads ~2 log2(n) hashes' worth of small preads whatever the log's size, memory stays
//! flat, and the store is 32 × 16/15 ≈ 34.1 bytes per leaf instead of 64 for every level.
//! The level-0, 8, 16, … files are, cut in 8 KiB pieces, exactly the tlog-tiles tiles
//! (height 8), so full tiles can be served or shipped as they are.
//!
//! A directory written when every level was stored opens as is: the files of the levels no
//! longer kept are removed on open (they are derived state, and the rest is unchanged).
//!
//! Derived state: written (not synced) by the sequencer after each batch, synced by the
//! checkpointer before it publishes a checkpoint, and re-derived from segments past the
//! last checkpoint on recovery.
//!
//! Proofs are served at tens of thousands per second, and ~2 log2(n) preads each made the
//! system calls cost more than the hashing. The upper levels are small (everything from
//! level 8 up is under 1% of the store), so they are kept whole in memory, within
//! `hash_cache_bytes_max`: a proof then reads only the few lowest levels from disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use auditlog_formats::tree::{self, HashReader, NodeId};
use auditlog_formats::{Hash, TreeHash};

use crate::error::{io_err, EngineError, Result};

pub(crate) const LEVELS_MAX: usize = 64;
/// Levels `0, STORED_EVERY, 2·STORED_EVERY, …` are stored (FORMATS.md §5.5).
pub(crate) const STORED_EVERY: usize = auditlog_formats::layout::HASH_LEVELS_STORED_EVERY;
use auditlog_formats::layout::hash_level_stored as is_stored;

/// The files, shared between the sequencer (appends), the checkpointer (syncs) and readers.
#[derive(Clone)]
pub struct HashFiles {
    dir: PathBuf,
    alg: TreeHash,
    /// Per level, its file (`None` for a level that is not stored).
    files: Arc<RwLock<Vec<Option<Arc<File>>>>>,
    cache: Arc<RwLock<UpperCache>>,
    /// Tests only: a page cache whose contents the test controls, in place of the kernel's
    /// (which may keep or drop any page whatever it was advised), so that what a cached-only
    /// read must refuse is known exactly.
    #[cfg(test)]
    page_model: Option<Arc<tests::PageModel>>,
}

/// Whole upper levels in memory. A level is extended only up to a node a reader asks for,
/// and every node before it on that level was appended earlier, so the cache holds only
/// nodes already written; a stored node never changes (a complete subtree's hash is final),
/// so a cached copy never goes stale. Only recovery cuts levels, and it clears the cache.
struct UpperCache {
    /// Levels below `floor` are read from disk; it only rises, as the tree outgrows memory.
    floor: usize,
    /// `levels[k]`: the first nodes of level k (empty below `floor`).
    levels: Vec<Vec<Hash>>,
    bytes: u64,
    bytes_max: u64,
}

impl UpperCache {
    fn new(bytes_max: u64) -> UpperCache {
        UpperCache {
            floor: 0,
            levels: (0..LEVELS_MAX).map(|_| Vec::new()).collect(),
            bytes: 0,
            bytes_max,
        }
    }

    fn get(&self, node: NodeId) -> Option<Hash> {
        self.levels
            .get(node.level as usize)?
            .get(usize::try_from(node.index).ok()?)
            .copied()
    }

    /// Makes room for `level` to hold `count` nodes by dropping the lowest cached levels;
    /// false if `level` itself had to go (it is then read from disk from now on).
    fn make_room(&mut self, level: usize, count: u64) -> bool {
        if level < self.floor {
            return false;
        }
        let grow = (count.saturating_sub(self.levels[level].len() as u64)).saturating_mul(32);
        while self.bytes.saturating_add(grow) > self.bytes_max && self.floor <= level {
            let dropped = std::mem::take(&mut self.levels[self.floor]);
            self.bytes -= dropped.len() as u64 * 32;
            self.floor += 1;
        }
        level >= self.floor
    }

    fn clear(&mut self) {
        *self = UpperCache::new(self.bytes_max);
    }
}

impl HashFiles {
    pub(crate) fn open(dir: &Path, cache_bytes_max: u64, alg: TreeHash) -> Result<HashFiles> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create hash store directory"))?;
        let files = HashFiles {
            dir: dir.to_path_buf(),
            alg,
            files: Arc::new(RwLock::new(Vec::new())),
            cache: Arc::new(RwLock::new(UpperCache::new(cache_bytes_max))),
            #[cfg(test)]
            page_model: None,
        };
        // Open the levels that exist; new ones are created as the tree grows into them. A
        // level that is not stored any more (a directory of an earlier version) is removed.
        for level in 0..LEVELS_MAX {
            let path = files.path(level);
            if !path.exists() {
                continue;
            }
            if is_stored(level) {
                files.ensure_level(level)?;
            } else {
                std::fs::remove_file(&path).map_err(io_err(&path, "remove unstored level"))?;
            }
        }
        Ok(files)
    }

    fn path(&self, level: usize) -> PathBuf {
        self.dir
            .join(auditlog_formats::layout::hash_level_file(level))
    }

    pub(crate) fn level_file(&self, level: usize) -> Option<Arc<File>> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(level)
            .cloned()
            .flatten()
    }

    fn ensure_level(&self, level: usize) -> Result<Arc<File>> {
        assert!(is_stored(level), "level {level} is not stored");
        if let Some(f) = self.level_file(level) {
            return Ok(f);
        }
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        while files.len() <= level {
            if !is_stored(files.len()) {
                files.push(None);
                continue;
            }
            let path = self.path(files.len());
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err(&path, "open hash level"))?;
            files.push(Some(Arc::new(f)));
        }
        Ok(files[level].clone().expect("a stored level has a file"))
    }

    /// Number of nodes stored at `level` (a stored level).
    pub(crate) fn node_count(&self, level: usize) -> Result<u64> {
        match self.level_file(level) {
            None => Ok(0),
            Some(f) => {
                let len = f
                    .metadata()
                    .map_err(io_err(self.path(level), "stat"))?
                    .len();
                Ok(len / 32)
            }
        }
    }

    /// Cuts every level to what a tree of `size` has. Returns false if some level holds
    /// fewer nodes than that (the store is behind and must be rebuilt from the start).
    pub(crate) fn truncate_to(&self, size: u64) -> Result<bool> {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut complete = true;
        for level in (0..LEVELS_MAX).step_by(STORED_EVERY) {
            let want = size >> level;
            let Some(f) = self.level_file(level) else {
                if want > 0 {
                    complete = false;
                }
                continue;
            };
            let have = self.node_count(level)?;
            if have < want {
                complete = false;
            }
            let keep_bytes = want.min(have) * 32;
            let len = f
                .metadata()
                .map_err(io_err(self.path(level), "stat"))?
                .len();
            if len != keep_bytes {
                f.set_len(keep_bytes)
                    .map_err(io_err(self.path(level), "truncate"))?;
            }
        }
        Ok(complete)
    }

    pub(crate) fn clear(&self) -> Result<()> {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for level in (0..LEVELS_MAX).step_by(STORED_EVERY) {
            if let Some(f) = self.level_file(level) {
                f.set_len(0).map_err(io_err(self.path(level), "truncate"))?;
            }
        }
        Ok(())
    }

    /// Makes every level durable (checkpointer, before a checkpoint names this size).
    pub(crate) fn sync(&self) -> Result<()> {
        let files = self.files.read().unwrap_or_else(|e| e.into_inner()).clone();
        for (level, f) in files.iter().enumerate() {
            let Some(f) = f else { continue };
            f.sync_data()
                .map_err(io_err(self.path(level), "fdatasync"))?;
        }
        Ok(())
    }
}

/// Whether a read may wait for the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    /// Only what the page cache holds; anything else is `EngineError::WouldBlock`.
    No,
}

impl HashFiles {
    fn read_node(&self, node: NodeId, wait: Wait) -> Result<Hash> {
        let mut h = [0u8; 32];
        self.read_level(node.level as usize, node.index, &mut h, wait)?;
        Ok(h)
    }

    /// Reads `out.len() / 32` consecutive nodes of `level` from node `first` on: from its
    /// file, or computed from the nodes under them on the stored level below.
    fn read_level(&self, level: usize, first: u64, out: &mut [u8], wait: Wait) -> Result<()> {
        if !is_stored(level) {
            return self.compute_level(level, first, out, wait);
        }
        let f = self.level_file(level).ok_or_else(|| EngineError::Corrupt {
            path: self.path(level),
            what: format!("missing level for node {first} of level {level}"),
        })?;
        #[cfg(test)]
        if let Some(model) = &self.page_model {
            return model.read(level, &f, out, first * 32, wait);
        }
        if wait == Wait::No {
            return match crate::io::pread_cached(&f, out, first * 32) {
                Ok(true) => Ok(()),
                Ok(false) => Err(EngineError::WouldBlock),
                Err(e) => Err(io_err(self.path(level), format!("read nodes from {first}"))(e)),
            };
        }
        // The path and text are built only on an error: this read serves proofs.
        f.read_exact_at(out, first * 32).map_err(|e| {
            let end = first + out.len() as u64 / 32;
            io_err(self.path(level), format!("read nodes {first}..{end}"))(e)
        })
    }

    /// Nodes of a level that is not stored, from the `2^k` nodes under each on the stored
    /// level `k` below: `2^k - 1` hashes a node, `k` < `STORED_EVERY`.
    fn compute_level(&self, level: usize, first: u64, out: &mut [u8], wait: Wait) -> Result<()> {
        let k = level % STORED_EVERY;
        let mut below = vec![[0u8; 32]; (out.len() / 32) << k];
        self.read_level(level - k, first << k, below.as_flattened_mut(), wait)?;
        let n = tree::fold_levels(self.alg, &mut below, k as u32);
        out.copy_from_slice(below[..n].as_flattened());
        Ok(())
    }

    /// `node` through the cache: the level is extended up to it with one read, unless
    /// the level no longer fits in memory.
    fn read_through(&self, cache: &mut UpperCache, node: NodeId, wait: Wait) -> Result<Hash> {
        let level = node.level as usize;
        if let Some(h) = cache.get(node) {
            return Ok(h);
        }
        // A level longer than memory can address is never cached.
        let Ok(want) = usize::try_from(node.index + 1) else {
            return self.read_node(node, wait);
        };
        if !cache.make_room(level, node.index + 1) {
            return self.read_node(node, wait);
        }
        let have = cache.levels[level].len();
        cache.levels[level].resize(want, [0u8; 32]);
        let fresh = &mut cache.levels[level][have..];
        if let Err(e) = self.read_level(level, have as u64, fresh.as_flattened_mut(), wait) {
            cache.levels[level].truncate(have);
            return Err(e);
        }
        cache.bytes += (want - have) as u64 * 32;
        Ok(cache.levels[level][want - 1])
    }

    fn read_hashes_with(&self, nodes: &[NodeId], wait: Wait) -> Result<Vec<Hash>> {
        let mut out = vec![[0u8; 32]; nodes.len()];
        // (slot, node, whether its level is cached): filled below, outside the read lock.
        let mut missing = Vec::new();
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            for (slot, node) in nodes.iter().enumerate() {
                match cache.get(*node) {
                    Some(h) => out[slot] = h,
                    None => missing.push((slot, *node, node.level as usize >= cache.floor)),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        for &(slot, node, _) in missing.iter().filter(|m| !m.2) {
            out[slot] = self.read_node(node, wait)?;
        }
        // Misses on cached levels are new right-edge nodes after the tree grew: the
        // write lock is taken once for all of them, and rarely.
        if missing.iter().any(|m| m.2) {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            for &(slot, node, _) in missing.iter().filter(|m| m.2) {
                out[slot] = self.read_through(&mut cache, node, wait)?;
            }
        }
        Ok(out)
    }
}

impl HashFiles {
    /// `out.len() / 32` consecutive nodes of `level` from node `first` on, waiting for the
    /// disk if need be: a tlog-tiles tile is one such read of level 8L (`tiles.rs`).
    pub(crate) fn read_nodes(&self, level: usize, first: u64, out: &mut [u8]) -> Result<()> {
        self.read_level(level, first, out, Wait::Yes)
    }
}

impl HashReader for HashFiles {
    type Error = EngineError;

    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>> {
        self.read_hashes_with(nodes, Wait::Yes)
    }
}

/// The hash store as far as memory and the page cache hold it: a read that would wait for
/// the disk fails with `EngineError::WouldBlock`. Lets an async caller answer a proof on
/// its own thread when that costs microseconds, and hand it to a blocking thread otherwise.
pub(crate) struct CachedOnly<'a>(pub &'a HashFiles);

impl HashReader for CachedOnly<'_> {
    type Error = EngineError;

    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>> {
        self.0.read_hashes_with(nodes, Wait::No)
    }
}

/// Nodes completed by a batch, buffered per level and appended with one write per level.
pub(crate) struct PendingNodes {
    levels: Vec<(u64, Vec<u8>)>, // (index of the first buffered node, bytes)
    /// Per level: (bytes appended by this writer, bytes whose writeback was started).
    writeback: Vec<Option<(u64, u64)>>,
}

/// Unwritten-back hash bytes of a level that make `start_writeback` act. Also the size of
/// the write requests it makes, which the sequencer's next sync may queue behind (see
/// `io::WriteBehind`): small, at ~190 calls a second at 763k events/s.
const WRITEBACK_STEP_BYTES: u64 = 256 << 10;

impl PendingNodes {
    pub(crate) fn new() -> PendingNodes {
        PendingNodes {
            levels: (0..LEVELS_MAX).map(|_| (0, Vec::new())).collect(),
            writeback: vec![None; LEVELS_MAX],
        }
    }

    /// Buffers `node` if its level is stored (the others are computed when read).
    #[inline]
    pub(crate) fn push(&mut self, node: NodeId, hash: &Hash) {
        if !is_stored(node.level as usize) {
            return;
        }
        let (first, buf) = &mut self.levels[node.level as usize];
        if buf.is_empty() {
            *first = node.index;
        }
        debug_assert_eq!(
            *first + (buf.len() / 32) as u64,
            node.index,
            "nodes out of order"
        );
        buf.extend_from_slice(hash);
    }

    /// Appends what is buffered to the level files and empties the buffers.
    pub(crate) fn flush(&mut self, files: &HashFiles) -> Result<()> {
        for (level, (first, buf)) in self.levels.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            let f = files.ensure_level(level)?;
            crate::io::pwritev_all(&f, *first * 32, &[buf])
                .map_err(|e| io_err(files.path(level), "append hashes")(e))?;
            let end = *first * 32 + buf.len() as u64;
            let wb = self.writeback[level].get_or_insert((*first * 32, *first * 32));
            wb.0 = end;
            buf.clear();
        }
        Ok(())
    }

    /// Starts (does not wait for) writeback of what was appended since the last call, per
    /// level, once a level has `WRITEBACK_STEP_BYTES` of it. At 10^6 events/s the store
    /// takes ~64 MB/s; left to the checkpointer's once-a-second fdatasync, that arrived at
    /// the disk as one burst the sequencer's small syncs queued behind. Called after the
    /// acks, so it never delays one; durability still comes from the checkpointer's sync.
    pub(crate) fn start_writeback(&mut self, files: &HashFiles) {
        for (level, wb) in self.writeback.iter_mut().enumerate() {
            let Some((written, started)) = wb else {
                continue;
            };
            if *written - *started < WRITEBACK_STEP_BYTES {
                continue;
            }
            if let Some(f) = files.level_file(level) {
                crate::io::start_writeback(&f, *started, *written - *started);
            }
            *started = *written;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_formats::tree::{self, MemoryTree};
    use auditlog_formats::TreeHash;

    /// The store answers exactly like the in-memory oracle for every budget, while the tree
    /// grows between reads (the cache must extend, never serve a stale or missing node), and
    /// a small budget pushes the cached floor up instead of growing past it.
    #[test]
    fn cached_reads_match_the_oracle_as_the_tree_grows() {
        let alg = TreeHash::Sha256;
        for budget in [0u64, 32 * 40, 32 * 300, 64 << 20] {
            let dir = tempfile::tempdir().expect("tempdir");
            let files = HashFiles::open(dir.path(), budget, TreeHash::Sha256).expect("open");
            let mut oracle = MemoryTree::new(alg);
            let mut pending = PendingNodes::new();
            for round in 0..12u64 {
                for i in 0..(37 + round * 29) {
                    let leaf = alg.leaf(&(round * 1000 + i).to_be_bytes());
                    let hashes = &mut oracle.hashes;
                    oracle
                        .edge
                        .append(leaf, |n, h| (hashes.put(n, h), pending.push(n, h)).0);
                }
                pending.flush(&files).expect("flush");
                let size = oracle.size();
                for index in (0..size).step_by(7).chain([size - 1]) {
                    let got = tree::prove_inclusion(alg, index, size, &files)
                        .expect("read")
                        .expect("proof");
                    let want = tree::prove_inclusion(alg, index, size, &oracle.hashes)
                        .expect("read")
                        .expect("proof");
                    assert_eq!(got, want, "budget {budget} index {index} size {size}");
                    // From memory and the page cache only: the same answer, or a refusal
                    // (never a wrong or partial one) if the pages were evicted meanwhile.
                    match tree::prove_inclusion(alg, index, size, &CachedOnly(&files)) {
                        Ok(p) => assert_eq!(p.expect("proof"), want),
                        Err(e) => assert!(matches!(e, EngineError::WouldBlock), "{e}"),
                    }
                }
                let from = size / 3 + 1;
                assert_eq!(
                    tree::prove_consistency(alg, from, size, &files)
                        .expect("read")
                        .expect("proof"),
                    tree::prove_consistency(alg, from, size, &oracle.hashes)
                        .expect("read")
                        .expect("proof"),
                );
                let cache = files.cache.read().expect("lock");
                assert!(cache.bytes <= budget, "{} > {budget}", cache.bytes);
            }
            let floor = files.cache.read().expect("lock").floor;
            match budget {
                0 => assert!(
                    floor > 0,
                    "nothing fits: the floor rose past every level read"
                ),
                b if b >= 64 << 20 => assert_eq!(floor, 0, "everything fits"),
                _ => assert!(floor > 0, "budget {budget}: the lowest levels were dropped"),
            }
            // Recovery cuts levels: the cache must forget what it held past the cut.
            assert!(files.truncate_to(100).expect("truncate"));
            assert_eq!(files.cache.read().expect("lock").bytes, 0);
        }
    }

    fn level_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Only levels 0, 4, 8, … get files, and every proof still equals the oracle's. A
    /// directory an earlier version wrote (every level stored) opens as is: the files of the
    /// levels no longer kept are removed, the rest read unchanged.
    #[test]
    fn every_fourth_level_is_stored_and_an_old_directory_opens() {
        let alg = TreeHash::Sha256;
        let leaves = 5000u64;
        let (new, old) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let (files, oracle) = store_of(new.path(), 0, leaves);
        let stored = [
            "level-00.bin",
            "level-04.bin",
            "level-08.bin",
            "level-12.bin",
        ];
        assert_eq!(level_files(new.path()), stored);
        assert_eq!(files.node_count(4).expect("count"), leaves >> 4);
        // The old layout: a file for every level up to the highest.
        for level in 0..13u8 {
            let bytes: Vec<u8> = (0..leaves >> level)
                .flat_map(|i| *oracle.hashes.get(NodeId::new(level, i)).expect("node"))
                .collect();
            std::fs::write(old.path().join(format!("level-{level:02}.bin")), bytes).expect("w");
        }
        let migrated = HashFiles::open(old.path(), 32 * 300, alg).expect("open old");
        assert_eq!(level_files(old.path()), stored);
        for store in [&files, &migrated] {
            for size in [1, 2, 3, 16, 17, 255, 256, 4097, leaves] {
                for index in (0..size).step_by(11).chain([size - 1]) {
                    assert_eq!(
                        tree::prove_inclusion(alg, index, size, store).expect("read"),
                        tree::prove_inclusion(alg, index, size, &oracle.hashes).expect("read"),
                        "index {index} size {size}"
                    );
                }
                for from in [1, size / 2 + 1, size - 1].into_iter().filter(|&f| f >= 1) {
                    assert_eq!(
                        tree::prove_consistency(alg, from, size, store).expect("read"),
                        tree::prove_consistency(alg, from, size, &oracle.hashes).expect("read"),
                        "{from} -> {size}"
                    );
                }
                assert_eq!(
                    tree::tree_hash(alg, size, store).expect("read"),
                    oracle.root_at(size)
                );
            }
        }
    }

    /// A page cache the test controls: `(level, page)` pairs that are resident. A waiting
    /// read brings its pages in (as the kernel's would); a cached-only read of anything not
    /// resident is refused; `evict_all` drops everything, deterministically.
    pub(super) struct PageModel {
        resident: std::sync::Mutex<std::collections::HashSet<(usize, u64)>>,
        /// Cached-only reads that reached the file (none may, for a refused read).
        cached_reads: std::sync::atomic::AtomicU64,
    }

    const PAGE_BYTES: u64 = 4096;

    impl PageModel {
        fn new() -> Arc<PageModel> {
            Arc::new(PageModel {
                resident: Default::default(),
                cached_reads: Default::default(),
            })
        }

        fn pages(level: usize, offset: u64, len: usize) -> impl Iterator<Item = (usize, u64)> {
            let end = offset + len as u64;
            (offset / PAGE_BYTES..end.div_ceil(PAGE_BYTES)).map(move |p| (level, p))
        }

        pub(super) fn read(
            &self,
            level: usize,
            f: &File,
            out: &mut [u8],
            offset: u64,
            wait: Wait,
        ) -> Result<()> {
            let mut resident = self.resident.lock().expect("lock");
            if wait == Wait::No {
                if !Self::pages(level, offset, out.len()).all(|p| resident.contains(&p)) {
                    return Err(EngineError::WouldBlock);
                }
                self.cached_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            f.read_exact_at(out, offset).map_err(|e| EngineError::Io {
                path: PathBuf::from(format!("level {level}")),
                what: "read".into(),
                source: e,
            })?;
            resident.extend(Self::pages(level, offset, out.len()));
            Ok(())
        }

        fn evict_all(&self) {
            self.resident.lock().expect("lock").clear();
        }

        fn resident_pages(&self) -> usize {
            self.resident.lock().expect("lock").len()
        }
    }

    fn store_of(dir: &Path, budget: u64, leaves: u64) -> (HashFiles, MemoryTree) {
        let alg = TreeHash::Sha256;
        let mut files = HashFiles::open(dir, budget, TreeHash::Sha256).expect("open");
        files.page_model = Some(PageModel::new());
        let mut oracle = MemoryTree::new(alg);
        let mut pending = PendingNodes::new();
        for i in 0..leaves {
            let hashes = &mut oracle.hashes;
            oracle.edge.append(alg.leaf(&i.to_be_bytes()), |n, h| {
                (hashes.put(n, h), pending.push(n, h)).0
            });
        }
        pending.flush(&files).expect("flush");
        files.sync().expect("sync");
        (files, oracle)
    }

    /// What the page cache does not hold, the cached-only reader refuses (`WouldBlock`)
    /// without reading the file, instead of waiting or answering wrong; the waiting reader
    /// then answers, and after that read the cached-only one can too. This is the path the
    /// HTTP handlers take to the blocking pool when the cache is cold. The page cache is the
    /// test's model, so "cold" is a fact here, not the kernel's goodwill (the kernel's own is
    /// checked, where it cannot fail spuriously, in `cached_reads_match_the_oracle_…`).
    #[test]
    fn cached_only_reader_refuses_what_needs_the_disk() {
        let alg = TreeHash::Sha256;
        for budget in [0u64, 64 << 20] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (files, oracle) = store_of(dir.path(), budget, 5000);
            let model = files.page_model.clone().expect("model");
            model.evict_all();
            let size = oracle.size();
            for index in [0, 1234, size - 1] {
                let want = tree::prove_inclusion(alg, index, size, &oracle.hashes)
                    .expect("read")
                    .expect("proof");
                model.evict_all();
                let before = model
                    .cached_reads
                    .load(std::sync::atomic::Ordering::Relaxed);
                let cold = tree::prove_inclusion(alg, index, size, &CachedOnly(&files));
                // The upper cache may answer some nodes, but never all of a cold proof.
                assert!(matches!(cold, Err(EngineError::WouldBlock)), "{cold:?}");
                assert_eq!(
                    model
                        .cached_reads
                        .load(std::sync::atomic::Ordering::Relaxed),
                    before,
                    "a refused read must not reach the file"
                );
                assert_eq!(model.resident_pages(), 0, "a refusal brings nothing in");
                let got = tree::prove_inclusion(alg, index, size, &files)
                    .expect("read")
                    .expect("proof");
                assert_eq!(got, want, "budget {budget} index {index}");
                let warm = tree::prove_inclusion(alg, index, size, &CachedOnly(&files))
                    .expect("cached now")
                    .expect("proof");
                assert_eq!(warm, want, "budget {budget} index {index}");
            }
        }
    }

    /// A cached-only read that finds part of what it needs (the leaf level resident, an
    /// upper level not) refuses the whole proof, and what it read of the resident part
    /// leaves no half-filled level in the upper cache: the next proof is still exact.
    #[test]
    fn partly_cached_reads_refuse_and_leave_the_cache_exact() {
        let alg = TreeHash::Sha256;
        let dir = tempfile::tempdir().expect("tempdir");
        let (files, oracle) = store_of(dir.path(), 64 << 20, 3000);
        let model = files.page_model.clone().expect("model");
        let size = oracle.size();
        let want = |index| {
            tree::prove_inclusion(alg, index, size, &oracle.hashes)
                .expect("read")
                .expect("proof")
        };
        model.evict_all();
        // Bring in only level 0, the whole of it.
        let f = files.level_file(0).expect("level 0");
        let mut all = vec![0u8; 32 * 3000];
        model.read(0, &f, &mut all, 0, Wait::Yes).expect("read");
        let cold = tree::prove_inclusion(alg, 77, size, &CachedOnly(&files));
        assert!(matches!(cold, Err(EngineError::WouldBlock)), "{cold:?}");
        for index in [77, 2999, 1024] {
            let got = tree::prove_inclusion(alg, index, size, &files)
                .expect("read")
                .expect("proof");
            assert_eq!(got, want(index));
            match tree::prove_inclusion(alg, index, size, &CachedOnly(&files)) {
                Ok(p) => assert_eq!(p.expect("proof"), want(index)),
                Err(e) => assert!(matches!(e, EngineError::WouldBlock), "{e}"),
            }
        }
    }
}
