//! The hash store: every stored hash of the tree, one append-only file per tree level
//! (`hashes/level-KK.bin`, node `i` of level K at byte `32 * i`). Any node is one `pread`,
//! so a proof reads ~2 log2(n) hashes whatever the log's size, and memory stays flat.
//! The level-0, 8, 16, … files are, cut in 8 KiB pieces, exactly the tlog-tiles tiles
//! (height 8), so full tiles can be served or shipped as they are.
//!
//! Derived state: written (not synced) by the sequencer after each batch, synced by the
//! checkpointer before it publishes a checkpoint, and re-derived from segments past the
//! last checkpoint on recovery.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use auditlog_formats::tree::{HashReader, NodeId};
use auditlog_formats::Hash;

use crate::error::{io_err, EngineError, Result};

pub(crate) const LEVELS_MAX: usize = 64;

/// The files, shared between the sequencer (appends), the checkpointer (syncs) and readers.
#[derive(Clone)]
pub struct HashFiles {
    dir: PathBuf,
    files: Arc<RwLock<Vec<Arc<File>>>>,
}

impl HashFiles {
    pub(crate) fn open(dir: &Path) -> Result<HashFiles> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create hash store directory"))?;
        let files = HashFiles {
            dir: dir.to_path_buf(),
            files: Arc::new(RwLock::new(Vec::new())),
        };
        // Open the levels that exist; new ones are created as the tree grows into them.
        for level in 0..LEVELS_MAX {
            if !files.path(level).exists() {
                break;
            }
            files.ensure_level(level)?;
        }
        Ok(files)
    }

    fn path(&self, level: usize) -> PathBuf {
        self.dir.join(format!("level-{level:02}.bin"))
    }

    pub(crate) fn level_file(&self, level: usize) -> Option<Arc<File>> {
        self.files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(level)
            .cloned()
    }

    fn ensure_level(&self, level: usize) -> Result<Arc<File>> {
        if let Some(f) = self.level_file(level) {
            return Ok(f);
        }
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        while files.len() <= level {
            let path = self.path(files.len());
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err(&path, "open hash level"))?;
            files.push(Arc::new(f));
        }
        Ok(files[level].clone())
    }

    /// Number of nodes stored at `level`.
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
        let mut complete = true;
        for level in 0..LEVELS_MAX {
            let want = if level < 64 { size >> level } else { 0 };
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
        for level in 0..LEVELS_MAX {
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
            f.sync_data()
                .map_err(io_err(self.path(level), "fdatasync"))?;
        }
        Ok(())
    }
}

impl HashReader for HashFiles {
    type Error = EngineError;

    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>> {
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let level = node.level as usize;
            let f = self.level_file(level).ok_or_else(|| EngineError::Corrupt {
                path: self.path(level),
                what: format!("missing level for node {node:?}"),
            })?;
            let mut h = [0u8; 32];
            f.read_exact_at(&mut h, node.index * 32).map_err(io_err(
                self.path(level),
                format!("read node {}", node.index),
            ))?;
            out.push(h);
        }
        Ok(out)
    }
}

/// Nodes completed by a batch, buffered per level and appended with one write per level.
pub(crate) struct PendingNodes {
    levels: Vec<(u64, Vec<u8>)>, // (index of the first buffered node, bytes)
}

impl PendingNodes {
    pub(crate) fn new() -> PendingNodes {
        PendingNodes {
            levels: (0..LEVELS_MAX).map(|_| (0, Vec::new())).collect(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, node: NodeId, hash: &Hash) {
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
                .map_err(io_err(files.path(level), "append hashes"))?;
            buf.clear();
        }
        Ok(())
    }
}
