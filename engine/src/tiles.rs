//! The C2SP tlog-tiles read side (FORMATS.md §5.8): the bytes of a hash tile or an entry
//! bundle of the tree at the newest checkpoint. No second tile builder: the hash store's
//! level 8L file, cut in 8 KiB pieces, is tile level L (`hashstore.rs`), and a bundle is
//! the records themselves, each framed by its length.

use auditlog_formats::tiles::{push_entry, Tile, TileKind};
use auditlog_formats::TreeHash;

use crate::{Engine, EngineError};

/// Why a tile is not served.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// tlog-tiles hashes with SHA-256; a BLAKE3 log's hashes would not verify as tiles.
    #[error("this log hashes its tree with {0}; the tlog-tiles API is SHA-256 only (use /v1/proof/… and /v1/events)")]
    NotSha256(&'static str),
    #[error("{path} needs a tree of {needed} leaves; the newest checkpoint has {size}")]
    Beyond {
        path: String,
        needed: String,
        size: u64,
    },
    /// A record written before new records were limited to one entry (FORMATS.md §4).
    #[error("{path}: record {index} is {bytes} bytes, over the 65535-byte tlog-tiles entry limit; this bundle cannot be served (read the record at /v1/events/{index}?format=record)")]
    EntryTooLarge {
        path: String,
        index: u64,
        bytes: usize,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl Engine {
    /// The bytes of `tile` (hashes concatenated, or entries framed by their length) when
    /// the newest checkpoint's tree holds all of it.
    pub fn read_tile(&self, tile: Tile) -> Result<Vec<u8>, TileError> {
        let alg = self.tree_hash();
        if alg != TreeHash::Sha256 {
            return Err(TileError::NotSha256(alg.name()));
        }
        let size = self.latest_checkpoint().map_or(0, |c| c.checkpoint.size);
        let beyond = |needed: String| TileError::Beyond {
            path: tile.path(),
            needed,
            size,
        };
        let needed = tile
            .tree_size_needed()
            .ok_or_else(|| beyond("over 2^64".into()))?;
        if needed > size {
            return Err(beyond(needed.to_string()));
        }
        // Within a tree of `size`, so the first node is within `u64` too.
        let first = tile.n * u64::from(auditlog_formats::tiles::TILE_WIDTH);
        let width = u64::from(tile.width);
        match tile.kind {
            TileKind::Hashes { .. } => {
                let mut out = vec![0u8; tile.width as usize * 32];
                let level = tile.tree_level() as usize;
                self.shared.hashes.read_nodes(level, first, &mut out)?;
                Ok(out)
            }
            TileKind::Entries => self.entry_bundle(tile, first, first + width),
        }
    }

    fn entry_bundle(&self, tile: Tile, start: u64, end: u64) -> Result<Vec<u8>, TileError> {
        let mut out = Vec::new();
        let mut too_large = None;
        let mut next = start;
        self.read_records(start, end, &mut |i, rec| {
            if push_entry(&mut out, rec).is_err() {
                too_large = Some((i, rec.len()));
                return Ok(false);
            }
            next = i + 1;
            Ok(true)
        })?;
        if let Some((index, bytes)) = too_large {
            return Err(TileError::EntryTooLarge {
                path: tile.path(),
                index,
                bytes,
            });
        }
        // Every record below the checkpoint is on disk or in the store: a short read is
        // damage, not a missing tile.
        if next != end {
            return Err(EngineError::Corrupt {
                path: self.shared.segments_dir(),
                what: format!("{}: records {start}..{end} ended at {next}", tile.path()),
            }
            .into());
        }
        Ok(out)
    }
}
