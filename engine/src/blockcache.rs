//! Recently decoded blocks of local sealed segments, so reads that come back to the same
//! block decode it once: a 256 KiB block holds ~750 audit events, so the three or four
//! 256-entry bundles of the tiles API (and a search's candidates) that fall in one block
//! each decoded it whole before. Bounded by bytes (`block_cache_bytes`), least recently
//! used out first; a block larger than the whole cache is not kept.
//!
//! Only local sealed segments are cached: they never change once sealed (a pruned
//! segment's copy from the store is checked against the tree before use and is not kept
//! here, so nothing unchecked is ever served from the cache).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::Result;

/// Names one block of one sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockKey {
    /// The segment's first leaf index (sealed segments do not overlap).
    pub segment_first: u64,
    /// The block's number in its segment.
    pub block: u32,
    /// The block's CRC-32C from the footer, so a footer read again from a different file
    /// (a repaired segment) cannot be answered with another file's block.
    pub crc32c: u32,
}

pub(crate) struct BlockCache {
    bytes_max: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    /// Most recently used first.
    blocks: VecDeque<(BlockKey, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl BlockCache {
    /// A cache of at most `bytes_max` decoded bytes; 0 keeps nothing.
    pub fn new(bytes_max: usize) -> BlockCache {
        BlockCache {
            bytes_max,
            inner: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The block `key` if it is cached (it becomes the most recently used).
    pub fn get(&self, key: BlockKey) -> Option<Arc<Vec<u8>>> {
        let mut lru = self.lock();
        let at = lru.blocks.iter().position(|(k, _)| *k == key)?;
        let hit = lru.blocks.remove(at).expect("position is in range");
        let raw = hit.1.clone();
        lru.blocks.push_front(hit);
        Some(raw)
    }

    /// The block `key`, decoded by `decode` unless it is cached. Two readers missing the
    /// same block at once both decode it (the cache is a speed-up, never a wait).
    pub fn get_or_decode(
        &self,
        key: BlockKey,
        decode: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(raw) = self.get(key) {
            return Ok(raw);
        }
        let raw = Arc::new(decode()?);
        if raw.len() <= self.bytes_max {
            let mut lru = self.lock();
            if !lru.blocks.iter().any(|(k, _)| *k == key) {
                lru.bytes += raw.len();
                lru.blocks.push_front((key, raw.clone()));
                while lru.bytes > self.bytes_max {
                    let (_, old) = lru.blocks.pop_back().expect("bytes > 0 means a block");
                    lru.bytes -= old.len();
                }
            }
        }
        Ok(raw)
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let lru = self.lock();
        (lru.blocks.len(), lru.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn key(block: u32) -> BlockKey {
        BlockKey {
            segment_first: 0,
            block,
            crc32c: 7,
        }
    }

    /// A hit costs no decode; the least recently used block leaves first; the bytes held
    /// never pass the bound; a block larger than the cache is served but not kept.
    #[test]
    fn decodes_once_and_stays_within_its_bytes() {
        let cache = BlockCache::new(300);
        let decodes = Cell::new(0);
        let get = |b: u32, len: usize| {
            cache
                .get_or_decode(key(b), || {
                    decodes.set(decodes.get() + 1);
                    Ok(vec![b as u8; len])
                })
                .expect("decoded")
        };
        assert_eq!(*get(1, 100), vec![1u8; 100]);
        assert_eq!(*get(1, 100), vec![1u8; 100]);
        assert_eq!(decodes.get(), 1);
        get(2, 100);
        get(3, 100);
        get(1, 100); // 1 is now the most recent, 2 the least
        get(4, 100); // 400 > 300: 2 leaves
        assert_eq!(cache.held(), (3, 300));
        assert_eq!(decodes.get(), 4);
        get(2, 100);
        assert_eq!(decodes.get(), 5, "2 had left");
        get(1, 100);
        assert_eq!(decodes.get(), 5, "1 stayed");
        get(9, 301);
        get(9, 301);
        assert_eq!(decodes.get(), 7, "too large to keep");
        assert_eq!(cache.held(), (3, 300));
        let other = BlockKey {
            crc32c: 8,
            ..key(1)
        };
        cache.get_or_decode(other, || Ok(vec![0; 10])).expect("ok");
        assert_eq!(
            *cache.get_or_decode(key(1), || Ok(vec![])).expect("ok"),
            vec![1u8; 100],
            "another CRC is another block"
        );
    }

    /// A failed decode caches nothing and is returned; 0 bytes keeps nothing.
    #[test]
    fn errors_and_a_zero_cache_keep_nothing() {
        let cache = BlockCache::new(0);
        cache.get_or_decode(key(1), || Ok(vec![1])).expect("ok");
        assert_eq!(cache.held(), (0, 0));
        let cache = BlockCache::new(100);
        let e = cache.get_or_decode(key(1), || {
            Err(crate::error::EngineError::Config("bad block".into()))
        });
        assert!(e.is_err());
        assert_eq!(cache.held(), (0, 0));
    }
}
