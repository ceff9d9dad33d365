//! The data directory's names (FORMATS.md §3): the files the engine keeps, the segment file
//! names and how to read them back, `log.json`'s fields, and the default key name an
//! origin gives. Pure: the engine, the daemon and the verifier all take them from here.

use serde::{Deserialize, Serialize};

/// `log.json`: what the log is (origin, tree hash), written once when it is created.
pub const LOG_META_FILE: &str = "log.json";
/// The segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// Every checkpoint the engine published (`checkpoint_log`).
pub const CHECKPOINT_LOG_FILE: &str = "checkpoints.log";
/// The leaf-hash index's runs (`leafindex`), derived state.
pub const LEAF_INDEX_DIR: &str = "leafindex";
/// The search index (FORMATS.md §5.7): runs named as the leaf index's, derived state.
pub const SEARCH_INDEX_DIR: &str = "search";
/// The hash store: one file per stored tree level (`hash_level_file`), derived state.
pub const HASHES_DIR: &str = "hashes";
/// The key history (FORMATS.md §13).
pub const KEYS_FILE: &str = "keys.json";
/// The development key file signer's key (never used with an HSM or KMS).
pub const DEV_KEY_FILE: &str = "keys/checkpoint.key";
/// The replicator's state: its manifest and the pruned list.
pub const REPLICATION_DIR: &str = "replication";
/// In `replication/`: every object shipped (FORMATS.md §15.2).
pub const MANIFEST_FILE: &str = "manifest.log";
/// In `replication/`: sealed segments deleted locally (FORMATS.md §15.3).
pub const PRUNED_FILE: &str = "pruned.log";
/// The default `file://` replication target inside the data directory.
pub const LOCAL_WORM_DIR: &str = "worm";
/// The daemon's API tokens (names, roles, hashes).
pub const TOKENS_FILE: &str = "tokens.json";
/// The tokens made on first start, once, for the operator to collect.
pub const INITIAL_TOKENS_FILE: &str = "initial-tokens";
/// Admin requests under the two-person rule.
pub const ADMIN_REQUESTS_FILE: &str = "admin-requests.json";
/// How far the SIEM forwarder has sent.
pub const FORWARDER_CURSOR_FILE: &str = "forwarder.cursor";

/// The hash store's file for tree level `level` (in `HASHES_DIR`).
pub fn hash_level_file(level: usize) -> String {
    format!("level-{level:02}.bin")
}

/// The hash store keeps levels `0, 4, 8, …` (FORMATS.md §5.5); a node of another level is
/// computed from the nodes under it on the stored level below (`tree::fold_levels`). It
/// divides 8, so the tlog-tiles levels are stored.
pub const HASH_LEVELS_STORED_EVERY: usize = 4;

/// Whether the hash store keeps a file for `level`.
pub fn hash_level_stored(level: usize) -> bool {
    level.is_multiple_of(HASH_LEVELS_STORED_EVERY)
}

/// `log.json`'s fields.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogMeta {
    pub format: u32,
    pub origin: String,
    /// A `TreeHash` name (`sha256`, `blake3`).
    pub tree_hash: String,
    pub created_at_unix_ns: u64,
}

/// An open segment holding leaves from `first`.
pub fn open_name(first: u64) -> String {
    format!("{first:020}.open")
}

/// A sealed segment of leaves `[first, end)`.
pub fn sealed_name(first: u64, end: u64) -> String {
    format!("{first:020}-{end:020}.seg")
}

/// A sealed open segment kept to be zeroed and reused (never replayed: the name says so).
pub fn recycle_name(first: u64) -> String {
    format!("recycle-{first:020}.old")
}

/// A leaf-index run of leaves `[first, end)`.
pub fn run_name(first: u64, end: u64) -> String {
    format!("{first:020}-{end:020}.run")
}

/// `(first, end)` of a leaf-index run's file name; `None` for any other name.
pub fn parse_run_name(name: &str) -> Option<(u64, u64)> {
    let (a, b) = name.strip_suffix(".run")?.split_once('-')?;
    Some((number(a)?, number(b)?))
}

/// A file in `segments/`, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentName {
    /// `<first>.open`
    Open(u64),
    /// `<first>-<end>.seg`
    Sealed(u64, u64),
    /// `prealloc-<n>.tmp`: zeroed, not yet in use.
    Prealloc,
    /// `recycle-<first>.old`: sealed, waiting to be zeroed and reused.
    Recycle,
    /// `*.partial`, `*.seg.tmp`: a write a crash interrupted.
    Temporary,
}

/// What a file name in `segments/` is; `None` for a name the engine never writes.
pub fn parse_segment_name(name: &str) -> Option<SegmentName> {
    if let Some(first) = name.strip_suffix(".open") {
        return number(first).map(SegmentName::Open);
    }
    if let Some(range) = name.strip_suffix(".seg") {
        let (a, b) = range.split_once('-')?;
        return Some(SegmentName::Sealed(number(a)?, number(b)?));
    }
    if name.starts_with("prealloc-") && name.ends_with(".tmp") {
        return Some(SegmentName::Prealloc);
    }
    if name.starts_with("recycle-") && name.ends_with(".old") {
        return Some(SegmentName::Recycle);
    }
    if name.ends_with(".partial") || name.ends_with(".seg.tmp") {
        return Some(SegmentName::Temporary);
    }
    None
}

/// Decimal digits only (`u64::from_str` would also take a leading `+`).
fn number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The key name an origin gives when none is chosen: note key names may not hold white
/// space or '+', so those become '_'.
pub fn default_key_name(origin: &str) -> String {
    origin
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        assert_eq!(
            parse_segment_name(&open_name(7)),
            Some(SegmentName::Open(7))
        );
        assert_eq!(
            parse_segment_name(&sealed_name(0, u64::MAX)),
            Some(SegmentName::Sealed(0, u64::MAX))
        );
        assert_eq!(
            parse_segment_name(&recycle_name(3)),
            Some(SegmentName::Recycle)
        );
        assert_eq!(
            parse_segment_name("prealloc-1.tmp"),
            Some(SegmentName::Prealloc)
        );
        assert_eq!(
            parse_segment_name(&format!("{}.tmp", sealed_name(1, 2))),
            Some(SegmentName::Temporary)
        );
        for stranger in [
            "+1.open",
            ".open",
            "1-.seg",
            "a-b.seg",
            "1-2-3.seg",
            "notes.txt",
        ] {
            assert_eq!(parse_segment_name(stranger), None, "{stranger}");
        }
        assert_eq!(default_key_name("audit log+x"), "audit_log_x");
        assert_eq!(parse_run_name(&run_name(3, u64::MAX)), Some((3, u64::MAX)));
        for stranger in ["1-2.run.tmp", "+1-2.run", "1-2-3.run", "1.run"] {
            assert_eq!(parse_run_name(stranger), None, "{stranger}");
        }
    }
}
