//! The hash store as the verifier sees it: its levels compared node by node with the
//! rebuilt tree, and read by index for consistency proofs.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use auditlog_formats::tree::{HashReader, NodeId};
use auditlog_formats::Hash;

use super::{fail, VerifyError};

/// Compares recomputed nodes with a hash store's levels as they stream by.
pub struct HashCheck {
    /// Where each level lives, for messages.
    pub places: Vec<String>,
    /// A reader positioned at node 0 of each level the source has.
    pub levels: Vec<Option<Box<dyn Read>>>,
    /// Nodes present per level.
    pub present: Vec<u64>,
    /// The source keeps every level (a data directory), so short levels are errors.
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

/// Stored hashes read from a data directory's level files.
pub struct FileHashes {
    pub dir: PathBuf,
}

impl HashReader for FileHashes {
    type Error = VerifyError;
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, VerifyError> {
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let p = self.dir.join(format!("level-{:02}.bin", n.level));
            let f = File::open(&p).or_else(|e| fail(&p, e.to_string()))?;
            let mut h = [0u8; 32];
            f.read_exact_at(&mut h, n.index * 32)
                .or_else(|e| fail(&p, format!("node {}: {e}", n.index)))?;
            out.push(h);
        }
        Ok(out)
    }
}
