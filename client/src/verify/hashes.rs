//! The hash store as the verifier sees it: its levels compared node by node with the
//! rebuilt tree, and read by index for consistency proofs.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use auditlog_formats::layout::{hash_level_file, hash_level_stored, HASH_LEVELS_STORED_EVERY};
use auditlog_formats::tree::{self, HashReader, NodeId};
use auditlog_formats::{Hash, TreeHash};

use super::{fail, VerifyError};

/// Compares recomputed nodes with a hash store's levels as they stream by.
pub struct HashCheck {
    /// Where each level lives, for messages.
    pub places: Vec<String>,
    /// A reader positioned at node 0 of each level the source has.
    pub levels: Vec<Option<Box<dyn Read>>>,
    /// Nodes present per level.
    pub present: Vec<u64>,
    /// The source keeps every stored level (a data directory: levels 0, 4, 8, …, FORMATS.md
    /// §5.5), so short stored levels are errors. Other levels are checked where present (a
    /// directory an earlier version wrote, which kept every level).
    pub complete: bool,
    pub checked: u64,
}

impl HashCheck {
    pub(super) fn check(&mut self, node: NodeId, h: &Hash) -> Result<(), VerifyError> {
        let l = node.level as usize;
        if node.index >= self.present[l] {
            return Ok(()); // beyond what was synced; checked against checkpoints below
        }
        let Some(r) = self.levels[l].as_mut() else {
            return Ok(());
        };
        let mut stored = [0u8; 32];
        r.read_exact(&mut stored)
            .or_else(|e| fail(&self.places[l], e.to_string()))?;
        if &stored != h {
            let first_leaf = node.index << node.level;
            return fail(
                &self.places[l],
                format!(
                    "node {} (covering leaves from index {first_leaf}) differs from the records",
                    node.index
                ),
            );
        }
        self.checked += 1;
        Ok(())
    }

    pub(super) fn short_levels(
        &self,
        size: u64,
        covered: u64,
        warnings: &mut Vec<String>,
    ) -> Result<(), ()> {
        if !self.complete {
            let tiles: Vec<String> = (0..64)
                .filter(|l| self.levels[*l].is_some())
                .map(|l| format!("level {l}: {} of {} nodes", self.present[l], size >> l))
                .collect();
            warnings.push(format!("hash tiles checked ({})", tiles.join(", ")));
            return Ok(());
        }
        for l in 0..64u8 {
            let want = size >> l;
            let have = self.present[l as usize];
            if !hash_level_stored(l as usize) && self.levels[l as usize].is_none() {
                continue;
            }
            if have < (covered >> l) {
                return Err(());
            }
            if have < want {
                warnings.push(format!("hash level {l}: {have} of {want} nodes (unsynced tail; the engine re-derives it on start)"));
            }
        }
        Ok(())
    }
}

/// Stored hashes read from a data directory's level files; a node of a level that is not
/// stored is computed from the nodes under it on the stored level below.
pub struct FileHashes {
    pub alg: TreeHash,
    pub dir: PathBuf,
}

impl HashReader for FileHashes {
    type Error = VerifyError;
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, VerifyError> {
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let level = n.level as usize;
            let p = self.dir.join(hash_level_file(level));
            // An earlier version's directory keeps every level: read one that is there.
            let k = if hash_level_stored(level) || p.exists() {
                0
            } else {
                level % HASH_LEVELS_STORED_EVERY
            };
            let p = self.dir.join(hash_level_file(level - k));
            let f = File::open(&p).or_else(|e| fail(&p, e.to_string()))?;
            let mut under = vec![[0u8; 32]; 1 << k];
            f.read_exact_at(under.as_flattened_mut(), (n.index << k) * 32)
                .or_else(|e| fail(&p, format!("node {}: {e}", n.index << k)))?;
            tree::fold_levels(self.alg, &mut under, k as u32);
            out.push(under[0]);
        }
        Ok(out)
    }
}
