//! The replication manifest, `<data_dir>/replication/manifest.log`: one entry per object
//! shipped, appended and `fdatasync`ed after the store confirmed it, in the checkpoint log's
//! framing (`bytes:u32 | crc32c:u32 | JSON`, FORMATS.md §15.2). A restart reads it to know
//! what is already out; a torn last entry is cut, and its object is found again on the
//! store by the create-only upload (same checksum: shipped; other bytes: an alarm).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{corrupt, Result};
use crate::framedlog::FramedLog;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Meta,
    Keys,
    Segment,
    Tile,
    Checkpoint,
}

/// One shipped object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub key: String,
    pub bytes: u64,
    /// BLAKE3 of the object, hex.
    pub blake3: String,
    pub retain_until_unix_s: u64,
    pub shipped_at_unix_s: u64,
    /// Leaf range of a segment; for a tile, its tile level and index; for a checkpoint, its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
    /// `"created"`, `"already_there"` (found on the store after a crash), or `"followed"`
    /// (a read replica adopted it from the store: shipped by the writer it followed).
    pub outcome: String,
}

/// A shipped segment, as far as tiles, checkpoints and pruning need to know.
#[derive(Clone, Debug)]
pub struct ShippedSegment {
    pub end: u64,
    pub retain_until_unix_s: u64,
    pub key: String,
    pub bytes: u64,
    /// BLAKE3 of the object shipped, hex.
    pub blake3: String,
}

/// What the manifest says has shipped, in the shape the planner asks about it.
#[derive(Debug, Default)]
pub struct Shipped {
    pub keys: HashSet<String>,
    pub segments: BTreeMap<u64, ShippedSegment>,
    /// Per tile level, the next tile index to ship (tiles go out in order).
    pub tiles_next: Vec<u64>,
    pub checkpoint_size: u64,
    pub retain_until_max_unix_s: u64,
}

impl Shipped {
    pub fn record(&mut self, e: &Entry) {
        self.retain_until_max_unix_s = self.retain_until_max_unix_s.max(e.retain_until_unix_s);
        match e.kind {
            Kind::Tile => {
                let (Some(level), Some(n)) = (e.first, e.end) else {
                    return;
                };
                let level = level as usize;
                if self.tiles_next.len() <= level {
                    self.tiles_next.resize(level + 1, 0);
                }
                self.tiles_next[level] = self.tiles_next[level].max(n + 1);
            }
            Kind::Segment => {
                if let (Some(first), Some(end)) = (e.first, e.end) {
                    self.segments.insert(
                        first,
                        ShippedSegment {
                            end,
                            retain_until_unix_s: e.retain_until_unix_s,
                            key: e.key.clone(),
                            bytes: e.bytes,
                            blake3: e.blake3.clone(),
                        },
                    );
                }
                self.keys.insert(e.key.clone());
            }
            Kind::Checkpoint => {
                self.checkpoint_size = self.checkpoint_size.max(e.end.unwrap_or(0));
                self.keys.insert(e.key.clone());
            }
            Kind::Meta | Kind::Keys => {
                self.keys.insert(e.key.clone());
            }
        }
    }

    /// Leaves `[0, end)` all lie in shipped segments.
    pub fn contiguous_end(&self) -> u64 {
        let mut end = 0;
        for (&first, s) in &self.segments {
            if first != end {
                break;
            }
            end = s.end;
        }
        end
    }

    /// The longest retention among shipped segments overlapping `[first, end)`.
    pub fn retain_until_over(&self, first: u64, end: u64) -> u64 {
        let from = self
            .segments
            .range(..=first)
            .next_back()
            .map_or(first, |(&f, _)| f);
        self.segments
            .range(from..end)
            .filter(|(_, s)| s.end > first)
            .map(|(_, s)| s.retain_until_unix_s)
            .max()
            .unwrap_or(self.retain_until_max_unix_s)
    }
}

/// The outcome of a segment a replica adopted from the store.
pub const FOLLOWED: &str = "followed";

pub struct Manifest {
    log: FramedLog,
}

impl Manifest {
    /// Opens (or creates) the manifest, cuts a torn tail, and replays it.
    pub fn open(dir: &Path) -> Result<(Manifest, Shipped, u64)> {
        let (log, entries) = FramedLog::open(dir, auditlog_formats::layout::MANIFEST_FILE)?;
        let mut shipped = Shipped::default();
        for (i, raw) in entries.iter().enumerate() {
            let e: Entry = serde_json::from_slice(raw)
                .map_err(|e| corrupt(log.path(), format!("entry {i}: {e}")))?;
            shipped.record(&e);
        }
        Ok((Manifest { log }, shipped, entries.len() as u64))
    }

    /// Whether the manifest in `dir` records an object this node shipped itself (not only
    /// segments it followed as a replica): the directory was a writer's.
    pub fn shipped_any_itself(dir: &Path) -> Result<bool> {
        if !dir.join(auditlog_formats::layout::MANIFEST_FILE).exists() {
            return Ok(false);
        }
        let (log, entries) = FramedLog::open(dir, auditlog_formats::layout::MANIFEST_FILE)?;
        for (i, raw) in entries.iter().enumerate() {
            let e: Entry = serde_json::from_slice(raw)
                .map_err(|e| corrupt(log.path(), format!("entry {i}: {e}")))?;
            if e.outcome != FOLLOWED {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records the entries with one sync: after this returns, they survive a crash.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.log.append_many(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: u64, end: u64, until: u64) -> Entry {
        Entry {
            kind: Kind::Segment,
            key: format!("segments/{first}"),
            bytes: 1,
            blake3: String::new(),
            retain_until_unix_s: until,
            shipped_at_unix_s: 0,
            first: Some(first),
            end: Some(end),
            outcome: "created".into(),
        }
    }

    #[test]
    fn replays_and_cuts_a_torn_tail() {
        let d = tempfile::tempdir().expect("tmp");
        {
            let (mut m, s, n) = Manifest::open(d.path()).expect("open");
            assert_eq!((s.contiguous_end(), n), (0, 0));
            // A group of two with one sync, then one alone: three entries either way.
            m.append(&[seg(0, 10, 5), seg(10, 20, 9)]).expect("append");
            m.append(&[seg(30, 40, 7)]).expect("append");
        }
        let p = d.path().join("manifest.log");
        let mut bytes = std::fs::read(&p).expect("read");
        bytes.extend_from_slice(&[0, 0, 1, 0, 9]);
        std::fs::write(&p, &bytes).expect("write");
        let (_, s, n) = Manifest::open(d.path()).expect("reopen");
        assert_eq!(n, 3);
        assert_eq!(s.contiguous_end(), 20);
        assert_eq!(s.retain_until_over(5, 15), 9);
        assert_eq!(s.retain_until_over(0, 10), 5);
        assert_eq!(
            std::fs::metadata(&p).expect("stat").len(),
            bytes.len() as u64 - 5
        );
    }
    /// A group whose append failed part-way (a full disk between two of `append_many`'s
    /// pieces) is shipped and recorded again whole: replay takes the entries recorded twice
    /// as once.
    #[test]
    fn a_group_recorded_twice_replays_as_once() {
        let tile = |n: u64| Entry {
            kind: Kind::Tile,
            key: format!("tile/0/{n}"),
            first: Some(0),
            end: Some(n),
            ..seg(0, 0, 3)
        };
        let group = [seg(0, 10, 5), tile(0), seg(10, 20, 9), tile(1)];
        let once = tempfile::tempdir().expect("tmp");
        let twice = tempfile::tempdir().expect("tmp");
        Manifest::open(once.path())
            .expect("open")
            .0
            .append(&group)
            .expect("append");
        let (mut m, _, _) = Manifest::open(twice.path()).expect("open");
        m.append(&group[..2]).expect("the piece that made it");
        m.append(&group).expect("the retried group");
        let (_, a, n_once) = Manifest::open(once.path()).expect("reopen");
        let (_, b, n_twice) = Manifest::open(twice.path()).expect("reopen");
        assert_eq!((n_once, n_twice), (4, 6));
        assert_eq!(a.keys, b.keys);
        assert_eq!(a.tiles_next, b.tiles_next);
        assert_eq!(a.tiles_next, vec![2]);
        assert_eq!(
            a.segments.keys().collect::<Vec<_>>(),
            b.segments.keys().collect::<Vec<_>>()
        );
        assert_eq!((a.contiguous_end(), b.contiguous_end()), (20, 20));
        assert_eq!(
            (a.checkpoint_size, a.retain_until_max_unix_s),
            (b.checkpoint_size, b.retain_until_max_unix_s)
        );
    }
}
