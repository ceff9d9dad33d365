//! What to ship next, in order of what matters: the log's metadata, the key history, sealed
//! segments (oldest first), then the newest checkpoint the shipped segments cover, then full
//! hash tiles under that, then the mutable newest-checkpoint pointer. Tiles and
//! checkpoints only ever describe data already on the store, so a reader of the bucket never
//! meets a checkpoint for segments it cannot find.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_formats::checkpoint_log::parse_log;
use auditlog_worm::{tile_bundle_key, tile_key, Lock, RetentionPolicy};

use super::config::ReplicationConfig;
use super::manifest::{Entry, Kind, Shipped};
use crate::error::{io_err, Result};
use crate::segments::{sealed_name, Body};
use crate::Shared;

use auditlog_formats::tiles::TILE_BYTES;

/// An object to create: its manifest entry and its bytes.
pub(crate) type NewEntry = (Entry, Vec<u8>);

pub(crate) enum Item {
    /// Create-only objects under retention, recorded in the manifest once stored: one
    /// object, or a run of consecutive full tiles of one level.
    Objects(Vec<NewEntry>),
    /// The newest checkpoint, rewritten in place, not recorded.
    Latest { size: u64, bytes: Vec<u8> },
}

impl Item {
    pub fn bytes_len(&self) -> u64 {
        match self {
            Item::Objects(objects) => objects.iter().map(|(_, b)| b.len() as u64).sum(),
            Item::Latest { bytes, .. } => bytes.len() as u64,
        }
    }
}

pub(crate) struct Lag {
    pub tiles: u64,
    pub segments: u64,
    pub bytes: u64,
    pub oldest_age_ms: u64,
}

pub(crate) struct Sealed {
    pub first: u64,
    pub end: u64,
    pub file: Arc<std::fs::File>,
    pub path: PathBuf,
    pub sealed_at_unix_ns: u64,
    pub max_classification: u8,
}

pub(crate) struct Planner {
    cfg: ReplicationConfig,
    shipped: Shipped,
    cp_offset: u64,
    cp_pending: VecDeque<(u64, String)>,
    cp_candidate: Option<(u64, String)>,
    latest_size: u64,
    latest_at: Option<Instant>,
}

fn now_s() -> u64 {
    crate::now_unix_ns() / 1_000_000_000
}

pub(crate) fn sealed_snapshot(shared: &Shared) -> Vec<Sealed> {
    let set = shared.segments.read();
    set.sealed
        .iter()
        .filter_map(|s| match &s.body {
            Body::Sealed { footer } => Some(Sealed {
                first: s.first,
                end: s.end,
                file: s.file.clone(),
                path: s.path.clone(),
                sealed_at_unix_ns: footer.sealed_at_unix_ns,
                max_classification: footer.max_classification,
            }),
            Body::Open { .. } => None,
        })
        .collect()
}

pub(crate) fn segment_key(first: u64, end: u64) -> String {
    format!("segments/{}", sealed_name(first, end))
}

/// An object to ship: its manifest entry (size, BLAKE3, retention, range) and its bytes.
fn entry(
    kind: Kind,
    key: String,
    bytes: Vec<u8>,
    retain_until: u64,
    range: (Option<u64>, Option<u64>),
) -> (Entry, Vec<u8>) {
    (
        Entry {
            kind,
            key,
            bytes: bytes.len() as u64,
            blake3: blake3::hash(&bytes).to_hex().to_string(),
            retain_until_unix_s: retain_until,
            shipped_at_unix_s: now_s(),
            first: range.0,
            end: range.1,
            outcome: String::new(),
        },
        bytes,
    )
}

impl Item {
    fn one(object: (Entry, Vec<u8>)) -> Item {
        Item::Objects(vec![object])
    }
}

impl Planner {
    pub fn new(cfg: ReplicationConfig, shipped: Shipped) -> Planner {
        Planner {
            cfg,
            shipped,
            cp_offset: 0,
            cp_pending: VecDeque::new(),
            cp_candidate: None,
            latest_size: 0,
            latest_at: None,
        }
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.cfg
    }

    pub fn shipped(&self) -> &Shipped {
        &self.shipped
    }

    pub fn shipped_mut(&mut self) -> &mut Shipped {
        &mut self.shipped
    }

    pub fn lock(&self, retain_until_unix_s: u64) -> Option<Lock> {
        Some(Lock {
            retain_until_unix_s,
            legal_hold: self.cfg.legal_hold,
        })
    }

    pub fn latest_shipped(&mut self, size: u64) {
        self.latest_size = size;
        self.latest_at = Some(Instant::now());
    }

    pub fn lag(&self, shared: &Shared) -> Lag {
        let now = crate::now_unix_ns();
        let durable = shared
            .checkpoints
            .signed_size()
            .min(self.shipped.contiguous_end());
        let tiles_next = |t: usize| self.shipped.tiles_next.get(t).copied().unwrap_or(0);
        let bundle = self.cfg.tile_bundle_tiles;
        let tiles = if self.cfg.ship_level0_tiles {
            // Whole bundles only: a partial one waits for its last tile by design.
            (durable / 256).saturating_sub(tiles_next(0)) / bundle * bundle
        } else {
            (durable >> 16).saturating_sub(tiles_next(1))
        };
        let mut lag = Lag {
            tiles,
            segments: 0,
            bytes: 0,
            oldest_age_ms: 0,
        };
        for s in sealed_snapshot(shared) {
            if self.shipped.keys.contains(&segment_key(s.first, s.end)) {
                continue;
            }
            lag.segments += 1;
            lag.bytes += s.file.metadata().map(|m| m.len()).unwrap_or(0);
            lag.oldest_age_ms = lag
                .oldest_age_ms
                .max(now.saturating_sub(s.sealed_at_unix_ns) / 1_000_000);
        }
        lag
    }

    fn small_file(&self, shared: &Shared, name: &str) -> Result<Option<Vec<u8>>> {
        let path = shared.config.data_dir.join(name);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "stat")(e)),
            Ok(m) if m.len() > self.cfg.small_file_bytes_max => {
                tracing::warn!(
                    "{}: {} bytes, over small_file_bytes_max; not shipped",
                    path.display(),
                    m.len()
                );
                return Ok(None);
            }
            Ok(_) => {}
        }
        std::fs::read(&path)
            .map(Some)
            .map_err(io_err(&path, "read"))
    }

    /// The next object to ship, or `None` when everything is out. In this order: the log's
    /// metadata, the key history, sealed segments, checkpoints they cover, full tiles below
    /// a signed checkpoint, and last the `latest` pointer.
    pub fn next(&mut self, shared: &Shared) -> Result<Option<Item>> {
        // The approved policy (log.json, changed only under the two-person rule) over the
        // configured one; both are at or above the legal floor.
        let retention = match crate::retention::read(&shared.config.data_dir)? {
            Some(approved) => approved.applied_over(&self.cfg.retention_days),
            None => self.cfg.retention_days,
        };
        if let Some(item) = self.next_metadata(shared, &retention)? {
            return Ok(Some(item));
        }
        if let Some(item) = self.next_segment(shared, &retention)? {
            return Ok(Some(item));
        }
        let end = self.shipped.contiguous_end();
        // Checkpoints may also cover what only tails hold: `verify` on the bucket reads them.
        let stored = shared.store_acks.end().max(end);
        let longest = now_s() + u64::from(retention.longest_days()) * 86_400;
        if let Some(item) = self.next_checkpoint(shared, stored, (end, longest))? {
            return Ok(Some(item));
        }
        // Tiles: only below a signed checkpoint (the hash store is synced up to it).
        let durable = shared.checkpoints.signed_size().min(end);
        if let Some(item) = self.next_tiles(shared, durable)? {
            return Ok(Some(item));
        }
        self.next_latest(shared)
    }

    /// At shutdown: only the newest checkpoint the store's data covers, then the `latest`
    /// pointer (no segment or tile: shutdown does not wait for large uploads).
    pub fn next_final(&mut self, shared: &Shared) -> Result<Option<Item>> {
        let end = self.shipped.contiguous_end();
        let stored = shared.store_acks.end().max(end);
        let retention = match crate::retention::read(&shared.config.data_dir)? {
            Some(approved) => approved.applied_over(&self.cfg.retention_days),
            None => self.cfg.retention_days,
        };
        let longest = now_s() + u64::from(retention.longest_days()) * 86_400;
        if let Some(item) = self.next_checkpoint(shared, stored, (end, longest))? {
            return Ok(Some(item));
        }
        self.latest_at = None;
        self.next_latest(shared)
    }

    /// `log.json` once, and each version of `keys.json` (kept as long as the longest
    /// retention class).
    fn next_metadata(
        &mut self,
        shared: &Shared,
        retention: &RetentionPolicy,
    ) -> Result<Option<Item>> {
        let longest = now_s() + u64::from(retention.longest_days()) * 86_400;
        let meta = auditlog_formats::layout::LOG_META_FILE;
        if !self.shipped.keys.contains(meta) {
            if let Some(b) = self.small_file(shared, meta)? {
                return Ok(Some(Item::one(entry(
                    Kind::Meta,
                    meta.into(),
                    b,
                    longest,
                    (None, None),
                ))));
            }
        }
        if let Some(b) = self.small_file(shared, auditlog_formats::layout::KEYS_FILE)? {
            let key = history_key(&b);
            if !self.shipped.keys.contains(&key) {
                return Ok(Some(Item::one(entry(
                    Kind::Keys,
                    key,
                    b,
                    longest,
                    (None, None),
                ))));
            }
        }
        Ok(None)
    }

    /// The oldest sealed segment not shipped yet, retained by its classification's class.
    fn next_segment(
        &mut self,
        shared: &Shared,
        retention: &RetentionPolicy,
    ) -> Result<Option<Item>> {
        let Some(s) = sealed_snapshot(shared)
            .into_iter()
            .find(|s| !self.shipped.keys.contains(&segment_key(s.first, s.end)))
        else {
            return Ok(None);
        };
        let len = s.file.metadata().map_err(io_err(&s.path, "stat"))?.len();
        let mut bytes = vec![0u8; len as usize];
        // In pieces: the replicator runs beside the sequencer (`yielding`).
        crate::yielding::read_exact_at(&s.file, &mut bytes, 0)
            .map_err(io_err(&s.path, "read sealed segment"))?;
        let until =
            retention.retain_until(s.sealed_at_unix_ns / 1_000_000_000, s.max_classification);
        Ok(Some(Item::one(entry(
            Kind::Segment,
            segment_key(s.first, s.end),
            bytes,
            until,
            (Some(s.first), Some(s.end)),
        ))))
    }

    /// The newest checkpoint the store's data (contiguous to `end`) covers, if newer than
    /// the one shipped. One that covers records only tails hold (past `sealed.0`) is kept
    /// for the longest class from now (`sealed.1`): its segments' classes are not known yet.
    fn next_checkpoint(
        &mut self,
        shared: &Shared,
        end: u64,
        sealed: (u64, u64),
    ) -> Result<Option<Item>> {
        self.read_checkpoint_log(shared)?;
        while self
            .cp_pending
            .front()
            .is_some_and(|(size, _)| *size <= end)
        {
            self.cp_candidate = self.cp_pending.pop_front();
        }
        if self
            .cp_candidate
            .as_ref()
            .is_some_and(|(size, _)| *size <= self.shipped.checkpoint_size)
        {
            self.cp_candidate = None;
        }
        Ok(self.cp_candidate.as_ref().map(|(size, note)| {
            Item::one(entry(
                Kind::Checkpoint,
                format!("checkpoints/{size:020}"),
                note.clone().into_bytes(),
                if *size > sealed.0 {
                    self.shipped.retain_until_max_unix_s.max(sealed.1)
                } else {
                    self.shipped.retain_until_max_unix_s
                },
                (None, Some(*size)),
            ))
        }))
    }

    /// The next group of full tiles below `durable`, lowest level first.
    fn next_tiles(&mut self, shared: &Shared, durable: u64) -> Result<Option<Item>> {
        // Tile level 7 spans 2^64 leaves; no log reaches a full one. Level 0 only if asked.
        let lowest = if self.cfg.ship_level0_tiles { 0 } else { 1 };
        for t in lowest..7u8 {
            let n = self
                .shipped
                .tiles_next
                .get(t as usize)
                .copied()
                .unwrap_or(0);
            // Level 0 goes in bundles of `tile_bundle_tiles`; higher levels one by one.
            let per_object = if t == 0 {
                self.cfg.tile_bundle_tiles
            } else {
                1
            };
            let width = 1u64 << (8 * (u32::from(t) + 1));
            let full = durable / width;
            let objects = (full.saturating_sub(n) / per_object)
                .min((self.cfg.tiles_per_step_max as u64 / per_object).max(1));
            if objects == 0 {
                continue; // a higher level may still have a full tile behind it
            }
            if let Some(group) = self.tile_group(shared, t, n, objects * per_object, per_object)? {
                return Ok(Some(Item::Objects(group)));
            }
        }
        Ok(None)
    }

    /// `count` tiles of level `t` from tile `n` on, as objects of `per_object` tiles.
    fn tile_group(
        &self,
        shared: &Shared,
        t: u8,
        n: u64,
        count: u64,
        per_object: u64,
    ) -> Result<Option<Vec<NewEntry>>> {
        let level = 8 * t as usize;
        let Some(f) = shared.hashes.level_file(level) else {
            return Ok(None);
        };
        // Every tile of the group, read in a few large pieces (`yielding`).
        let mut all = vec![0u8; count as usize * TILE_BYTES];
        let path = shared
            .config
            .data_dir
            .join(auditlog_formats::layout::HASHES_DIR)
            .join(auditlog_formats::layout::hash_level_file(level));
        crate::yielding::read_exact_at(&f, &mut all, n * TILE_BYTES as u64)
            .map_err(io_err(&path, format!("read tiles {t}/{n}+{count}")))?;
        let width = 1u64 << (8 * (u32::from(t) + 1));
        let group = all
            .chunks_exact(TILE_BYTES * per_object as usize)
            .zip((n..n + count).step_by(per_object as usize))
            .map(|(bytes, i)| {
                let last = i + per_object - 1;
                let key = if per_object == 1 {
                    tile_key(t, i)
                } else {
                    tile_bundle_key(i, per_object)
                };
                let until = self
                    .shipped
                    .retain_until_over(i * width, (last + 1) * width);
                // A bundle is recorded as its last tile: the manifest's tile entries say
                // how far each level has shipped.
                entry(
                    Kind::Tile,
                    key,
                    bytes.to_vec(),
                    until,
                    (Some(u64::from(t)), Some(last)),
                )
            })
            .collect();
        Ok(Some(group))
    }

    /// The `latest` pointer, when the newest checkpoint moved and its interval has passed.
    /// The `checkpoint` pointer, when due: the newest checkpoint, once the key history it
    /// was signed under is on the store. The history is read after the checkpoint is taken
    /// (a key is in `keys.json` before it signs), so a reader that meets a signature by a
    /// new key in the pointer finds that key in the bucket's history; a replica adopts the
    /// new key before any size it signs, as its extension rule requires.
    fn next_latest(&self, shared: &Shared) -> Result<Option<Item>> {
        let Some(cp) = shared.checkpoints.latest() else {
            return Ok(None);
        };
        let due = self.latest_at.is_none_or(|t| {
            t.elapsed() >= Duration::from_millis(self.cfg.latest_checkpoint_interval_ms)
        });
        if cp.checkpoint.size == self.latest_size || !due {
            return Ok(None);
        }
        if let Some(b) = self.small_file(shared, auditlog_formats::layout::KEYS_FILE)? {
            if !self.shipped.keys.contains(&history_key(&b)) {
                return Ok(None);
            }
        }
        Ok(Some(Item::Latest {
            size: cp.checkpoint.size,
            bytes: cp.note.clone().into_bytes(),
        }))
    }

    /// Reads what was appended to `checkpoints.log` since the last call (bounded per call).
    fn read_checkpoint_log(&mut self, shared: &Shared) -> Result<()> {
        let path = shared
            .config
            .data_dir
            .join(auditlog_formats::layout::CHECKPOINT_LOG_FILE);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path, "open")(e)),
        };
        let len = f.metadata().map_err(io_err(&path, "stat"))?.len();
        if len <= self.cp_offset {
            return Ok(());
        }
        let n = (len - self.cp_offset).min(self.cfg.checkpoint_log_read_bytes_max as u64) as usize;
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, self.cp_offset)
            .map_err(io_err(&path, "read"))?;
        let (entries, good) = parse_log(&buf);
        // Stopped at an entry with room for a whole one after it: damage (unless it is the
        // last append, which the checkpointer may be writing now). Said, rather than waited
        // on for good without a word; the next start refuses the log (FORMATS.md §8).
        if n - good >= crate::framedlog::APPEND_BYTES_MAX {
            crate::framedlog::refuse_damage(&path, self.cp_offset + good as u64, len)?;
        }
        for raw in entries {
            let Ok(text) = std::str::from_utf8(raw) else {
                continue;
            };
            // Signatures were checked when the engine wrote them; the verifier checks them again.
            let Some(size) = text.lines().nth(1).and_then(|l| l.parse::<u64>().ok()) else {
                continue;
            };
            if size > self.shipped.checkpoint_size {
                self.cp_pending.push_back((size, text.to_string()));
            }
        }
        while self.cp_pending.len() > self.cfg.checkpoints_pending_max {
            self.cp_pending.pop_front();
        }
        self.cp_offset += good as u64;
        Ok(())
    }
}

/// The object key of one version of the key history: the name carries its digest.
fn history_key(bytes: &[u8]) -> String {
    format!("keys/{}.json", &blake3::hash(bytes).to_hex()[..16])
}
