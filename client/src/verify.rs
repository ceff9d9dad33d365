//! Offline verification of a data directory, trusting nothing but the verifier key.
//!
//! One pass over every segment in index order: every batch checksum (open segments), every
//! block checksum, digest, prior edge, root and signed note (sealed segments), every record
//! re-hashed into a fresh tree. Every checkpoint in `checkpoints.log` must verify with the
//! key, name the log's origin, and have the root the records give at its size; consecutive
//! checkpoints must be consistent, checked with RFC 9162 proofs built from the hash store,
//! whose every stored node must equal the recomputed one. The first failure names its file,
//! offset or block, and index.
//!
//! `verify_source` reads as the list of phases, each one function below it; reading the
//! segments is `verify/segments.rs`, the hash store's side `verify/hashes.rs`.
//!
//! Reading the segments uses every core: a segment's bytes are checked and its records
//! hashed on worker threads, several segments (or chunks of an open segment) at once
//! (`verify/alone.rs`), while the calling thread adds their leaves to the tree in index
//! order as they come and makes every check that needs the segments before
//! (`verify/segments.rs`), through a window that bounds what is read ahead
//! (`verify/in_order.rs`). The verdict, and the first failure and how it is named, are the
//! same for every thread count: one thread is the sequential verifier.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use auditlog_formats::keyhistory::{CheckedHistory, KeyHistory};
use auditlog_formats::layout::LogMeta;
use auditlog_formats::note::{Checkpoint, VerifierKey};
use auditlog_formats::tree::{self, RightEdge};
use auditlog_formats::{Hash, TreeHash};

mod alone;
mod hashes;
mod in_order;
mod segments;

pub use crate::source::{DirSource, LogSource, ReadAt, SegKind, SegRef};
pub use hashes::{FileHashes, HashCheck};
use segments::{Findings, SegmentReader};

#[derive(Debug, thiserror::Error)]
#[error("{place}: {what}")]
pub struct VerifyError {
    pub place: String,
    pub what: String,
}

pub(crate) fn fail<T>(place: impl Place, what: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError {
        place: place.place(),
        what: what.into(),
    })
}

/// What the verifier vouches for. Only `signed_size` records are verified: those a checkpoint
/// signed by the pinned key(s) covers. Records past it (`unsigned_records`) were read and
/// checked for framing, but nothing signed them, so anyone who could write the directory
/// could have put them there.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Records read from the segments (signed and unsigned).
    pub events: u64,
    /// The size of the newest checkpoint (checkpoint log or sealed footer) that verifies
    /// under the pinned keys; the verified records are `[0, signed_size)`.
    pub signed_size: u64,
    /// The root of the tree at `signed_size`.
    pub signed_root: Hash,
    /// Records past `signed_size` (only with `Pins::allow_unsigned_tail`; otherwise an error).
    pub unsigned_records: u64,
    /// A torn tail cut from the last open segment (a write a crash interrupted: never
    /// acknowledged, not counted).
    pub torn_tail: Option<String>,
    /// The root of all records read (`events`).
    pub root: Hash,
    pub sealed_segments: usize,
    pub open_segments: usize,
    /// Segments a data directory records as pruned: their leaf hashes were taken from the
    /// hash store, their records not read.
    pub pruned_segments: usize,
    pub checkpoints: usize,
    pub hash_nodes_checked: u64,
    pub warnings: Vec<String>,
}

/// What the auditor pinned beyond the keys, and what it accepts. The tree hash and the
/// signatures come from the key history; these pin the rest, so nothing that matters is
/// taken from the directory or the bucket being verified.
#[derive(Debug, Default, Clone)]
pub struct Pins {
    /// The log's origin. Without it the origin `log.json` names is used (reported).
    pub origin: Option<String>,
    /// A checkpoint the auditor kept (already verified under the keys): the log must extend
    /// it, so a rolled-back or forked log fails.
    pub since: Option<Checkpoint>,
    /// The signed size must be at least this.
    pub min_size: Option<u64>,
    /// Accept records past the signed size (inspecting a directory after a crash): they are
    /// counted in `Summary::unsigned_records`, never as verified.
    pub allow_unsigned_tail: bool,
}

/// Called with (bytes done, bytes total) as segments are read.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// How many threads read segments by default: one per core, up to `THREADS_DEFAULT_MAX`.
/// The verdict is the same for every count; one is the sequential verifier.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism()
        .unwrap_or(NonZeroUsize::MIN)
        .min(THREADS_DEFAULT_MAX)
}

/// The calling thread adds every leaf to the tree (about a fifth of the work, measured on
/// the footprint corpus), which caps the gain near five times one thread; threads past
/// that would only wait. `--threads` goes past it.
pub const THREADS_DEFAULT_MAX: NonZeroUsize = NonZeroUsize::new(8).expect("non-zero");

/// Anything that names where a failure is: a path or an object key.
pub trait Place {
    fn place(&self) -> String;
}
impl Place for &Path {
    fn place(&self) -> String {
        self.display().to_string()
    }
}
impl Place for &PathBuf {
    fn place(&self) -> String {
        self.display().to_string()
    }
}
impl Place for PathBuf {
    fn place(&self) -> String {
        self.display().to_string()
    }
}
impl Place for &str {
    fn place(&self) -> String {
        self.to_string()
    }
}
impl Place for &String {
    fn place(&self) -> String {
        self.to_string()
    }
}
impl Place for String {
    fn place(&self) -> String {
        self.clone()
    }
}

/// Verifies with one key, valid at every size (the log never rotated).
pub fn verify_dir(
    dir: &Path,
    key: &VerifierKey,
    progress: Progress<'_>,
) -> Result<Summary, VerifyError> {
    let history = KeyHistory::single(key)
        .check()
        .or_else(|e| fail("--key", e.to_string()))?;
    verify_dir_with_history(dir, &history, progress)
}

/// Reads a key history file (`keys.json`, FORMATS.md §13) and checks its rules.
pub fn load_history(path: &Path) -> Result<CheckedHistory, VerifyError> {
    let bytes = std::fs::read(path).or_else(|e| fail(path, format!("cannot read: {e}")))?;
    KeyHistory::parse(&bytes).or_else(|e| fail(path, e.to_string()))
}

/// Verifies with a key history: every checkpoint (the checkpoint log's and each sealed
/// footer's) must be signed by exactly the history keys valid at its size (§13).
pub fn verify_dir_with_history(
    dir: &Path,
    history: &CheckedHistory,
    progress: Progress<'_>,
) -> Result<Summary, VerifyError> {
    verify_source(
        &DirSource::new(dir),
        history,
        &Pins::default(),
        default_threads(),
        progress,
    )
}

/// Verifies a data directory under `history` and `pins`.
pub fn verify_dir_pinned(
    dir: &Path,
    history: &CheckedHistory,
    pins: &Pins,
    progress: Progress<'_>,
) -> Result<Summary, VerifyError> {
    verify_source(
        &DirSource::new(dir),
        history,
        pins,
        default_threads(),
        progress,
    )
}

/// Verifies the log a source holds (a data directory, a bucket), trusting only `history`
/// and `pins`. The phases run in this order, and the first failure stops the run (so the
/// order also decides which failure is named): the log's identity, the checkpoint log,
/// every segment in index order rebuilding the tree, the checkpoints against the rebuilt
/// tree and against each other, the hash store's coverage, and the verdict on what a pinned
/// key signed. `threads` read segments (see the module doc); the outcome does not depend
/// on how many.
pub fn verify_source(
    src: &dyn LogSource,
    history: &CheckedHistory,
    pins: &Pins,
    threads: NonZeroUsize,
    progress: Progress<'_>,
) -> Result<Summary, VerifyError> {
    let mut summary = Summary::default();
    let log = read_log_identity(src, pins, &mut summary.warnings)?;
    // Checkpoints first: they say which roots the records must reproduce.
    let checkpoints = read_checkpoints(src, history, &log.origin)?;
    let segs = src.segments()?;
    let mut tree = Rebuild::new(log.alg, src.hash_levels()?, &checkpoints.list, pins);
    let reader = SegmentReader {
        src,
        history,
        origin: &log.origin,
    };
    let found = reader.read_all(&segs, &mut tree, &mut summary, threads, progress)?;
    check_signed_records_present(&checkpoints, tree.size(), summary.torn_tail.as_deref())?;
    check_checkpoints_consistent(src, log.alg, &checkpoints)?;
    check_hash_store_covers(src, &tree, &checkpoints, &mut summary.warnings)?;
    verdict(&checkpoints, pins, tree, found, summary)
}

/// Who the log says it is (`log.json`): its origin and tree hash.
struct LogIdentity {
    origin: String,
    alg: TreeHash,
}

/// Reads `log.json` and holds its origin to the pinned one; without a pin, the origin is
/// taken from the log and a warning says so.
fn read_log_identity(
    src: &dyn LogSource,
    pins: &Pins,
    warnings: &mut Vec<String>,
) -> Result<LogIdentity, VerifyError> {
    let (meta_path, meta_bytes) = src.log_meta()?;
    let meta: LogMeta = match serde_json::from_slice(&meta_bytes) {
        Ok(m) => m,
        Err(e) => return fail(&meta_path, format!("unreadable: {e}")),
    };
    let Some(alg) = TreeHash::from_name(&meta.tree_hash) else {
        return fail(
            &meta_path,
            format!("unknown tree hash {:?}", meta.tree_hash),
        );
    };
    let pinned_origin = pins
        .origin
        .as_ref()
        .or(pins.since.as_ref().map(|c| &c.origin));
    match pinned_origin {
        Some(o) if *o != meta.origin => {
            return fail(
                &meta_path,
                format!("origin {:?}, but the pinned origin is {o:?}", meta.origin),
            )
        }
        Some(_) => {}
        None => warnings.push(format!(
            "origin not pinned (--origin or --since): took {:?} from {meta_path}",
            meta.origin
        )),
    }
    Ok(LogIdentity {
        origin: meta.origin,
        alg,
    })
}

/// The checkpoint log: where it is, and its entries, each verified under the key history.
struct CheckpointLog {
    place: String,
    list: Vec<Checkpoint>,
}

/// Every entry must verify under the history, name the log's origin, and not go back in
/// size from the one before.
fn read_checkpoints(
    src: &dyn LogSource,
    history: &CheckedHistory,
    origin: &str,
) -> Result<CheckpointLog, VerifyError> {
    let (place, entries) = src.checkpoints()?;
    let mut list: Vec<Checkpoint> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let text =
            std::str::from_utf8(raw).or_else(|_| fail(&place, format!("entry {i}: not UTF-8")))?;
        let cp = history
            .open_checkpoint(text)
            .or_else(|e| fail(&place, format!("entry {i}: {e}")))?;
        if cp.origin != origin {
            return fail(
                &place,
                format!("entry {i}: origin {:?}, log is {origin:?}", cp.origin),
            );
        }
        if let Some(prev) = list.last() {
            if cp.size < prev.size {
                return fail(
                    &place,
                    format!("entry {i}: size {} goes back from {}", cp.size, prev.size),
                );
            }
        }
        list.push(cp);
    }
    Ok(CheckpointLog { place, list })
}

/// The tree rebuilt from the records, one leaf at a time, and what it must equal as it
/// grows: every stored node of the hash store, the kept checkpoint's root and every logged
/// checkpoint's root at their sizes.
struct Rebuild<'a> {
    alg: TreeHash,
    edge: RightEdge,
    hashes: HashCheck,
    checkpoints: &'a [Checkpoint],
    /// Positions in `checkpoints` by size.
    want_roots: BTreeMap<u64, Vec<usize>>,
    /// The kept checkpoint, as one more root the records must reproduce at its size: the
    /// tree is rebuilt from every record, so this equals checking a consistency proof from
    /// it to every later checkpoint (and needs no hash the source supplies).
    since_at: Option<(u64, Hash)>,
}

impl<'a> Rebuild<'a> {
    fn new(alg: TreeHash, hashes: HashCheck, checkpoints: &'a [Checkpoint], pins: &Pins) -> Self {
        let mut want_roots: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, cp) in checkpoints.iter().enumerate() {
            want_roots.entry(cp.size).or_default().push(i);
        }
        Rebuild {
            alg,
            edge: RightEdge::new(alg),
            hashes,
            checkpoints,
            want_roots,
            since_at: pins.since.as_ref().map(|c| (c.size, c.root)),
        }
    }

    fn size(&self) -> u64 {
        self.edge.size()
    }

    /// Adds one leaf, compares every node it completes with the hash store, and the new
    /// root with every checkpoint of the new size.
    fn push_leaf(&mut self, leaf: Hash, place: &dyn Fn() -> String) -> Result<(), VerifyError> {
        let hashes = &mut self.hashes;
        let mut bad = None;
        self.edge.append(leaf, |node, h| {
            if bad.is_none() {
                bad = hashes.check(node, h).err();
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        let size = self.size();
        if let Some((size, root)) = self.since_at.filter(|(at, _)| size == *at) {
            if self.edge.root() != root {
                return fail(place(), format!(
                    "records up to index {} give root {}, but the kept checkpoint (--since) of size {size} signs {}: the log was forked or rewritten",
                    size - 1, hex::encode(self.edge.root()), hex::encode(root)
                ));
            }
        }
        if let Some(idx) = self.want_roots.get(&size) {
            let root = self.edge.root();
            for &i in idx {
                let cp = &self.checkpoints[i];
                if cp.root != root {
                    return fail(place(), format!(
                        "records up to index {} give root {}, but checkpoint {i} (size {}) in checkpoints.log signs {}",
                        size - 1, hex::encode(root), cp.size, hex::encode(cp.root)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The newest checkpoint's records must all be in the segments.
fn check_signed_records_present(
    checkpoints: &CheckpointLog,
    size: u64,
    torn_tail: Option<&str>,
) -> Result<(), VerifyError> {
    let Some(last) = checkpoints.list.last() else {
        return Ok(());
    };
    if last.size <= size {
        return Ok(());
    }
    // A bad batch taken for a torn tail cannot hold signed records: it is damage, and where
    // it is is the place to name.
    if let Some(t) = torn_tail {
        return fail(
            t,
            format!(
                "records from index {size} on were signed (checkpoint size {}), so this is damage, not a torn tail: events are missing",
                last.size
            ),
        );
    }
    fail(
        &checkpoints.place,
        format!(
            "checkpoint for size {} but the segments hold {size} events: events are missing",
            last.size
        ),
    )
}

/// Consecutive checkpoints: consistency proofs from the stored hashes, checked. (A source
/// without a full hash store skips them: every checkpoint's root was already compared with
/// the one verified leaf sequence, which makes them consistent.)
fn check_checkpoints_consistent(
    src: &dyn LogSource,
    alg: TreeHash,
    checkpoints: &CheckpointLog,
) -> Result<(), VerifyError> {
    let Some(reader) = src.hash_reader(alg) else {
        return Ok(());
    };
    let place = &checkpoints.place;
    for pair in checkpoints.list.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let proof = match tree::prove_consistency(alg, a.size, b.size, &reader) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return fail(place, format!("consistency {} -> {}: {e}", a.size, b.size)),
            Err(e) => return Err(e),
        };
        tree::verify_consistency(alg, a.size, b.size, &a.root, &b.root, &proof).or_else(|e| {
            fail(
                place,
                format!(
                    "checkpoints {} -> {} are not consistent: {e}",
                    a.size, b.size
                ),
            )
        })?;
    }
    Ok(())
}

/// The hash store must hold every node the newest checkpoint covers; shorter levels past
/// it are an unsynced tail (warned).
fn check_hash_store_covers(
    src: &dyn LogSource,
    tree: &Rebuild<'_>,
    checkpoints: &CheckpointLog,
    warnings: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let last_cp = checkpoints.list.last().map(|c| c.size).unwrap_or(0);
    if tree
        .hashes
        .short_levels(tree.size(), last_cp, warnings)
        .is_err()
    {
        return fail(
            src.hashes_place(),
            format!("hash store holds fewer nodes than checkpoint {last_cp} covers"),
        );
    }
    Ok(())
}

/// What is vouched for: the records a pinned key signed, and nothing past them. Fails if
/// nothing is signed, if the signed log does not reach the pins, or if anything unsigned
/// remains that the pins do not accept as unsigned.
fn verdict(
    checkpoints: &CheckpointLog,
    pins: &Pins,
    tree: Rebuild<'_>,
    found: Findings,
    mut summary: Summary,
) -> Result<Summary, VerifyError> {
    if !found.pruned.is_empty() {
        summary.warnings.push(format!(
            "{} segment(s) pruned locally, records not read here (they are on the object store; `auditlog verify <bucket-url>` checks them): leaves {}",
            found.pruned.len(),
            found.pruned.join(", ")
        ));
    }
    let size = tree.size();
    let place = &checkpoints.place;
    let Some((signed_size, signed_root)) = found.signed else {
        return fail(
            place,
            format!(
                "no checkpoint verifies under the pinned key(s): none of the {size} records is signed"
            ),
        );
    };
    check_pinned_sizes(place, pins, tree.alg, size, signed_size)?;
    check_unsigned_footers(
        &found.unsigned_footers,
        signed_size,
        pins.allow_unsigned_tail,
        &mut summary.warnings,
    )?;
    let unsigned = size - signed_size;
    if unsigned > 0 {
        let what = format!(
            "{unsigned} record(s) past the signed size {signed_size} (indexes {signed_size}..{size}): no pinned key signed them"
        );
        if !pins.allow_unsigned_tail {
            return fail(
                place,
                format!("{what}; --allow-unsigned-tail accepts them as unverified"),
            );
        }
        summary
            .warnings
            .push(format!("{what}; NOT verified (--allow-unsigned-tail)"));
    }
    summary.signed_size = signed_size;
    summary.signed_root = signed_root;
    summary.unsigned_records = unsigned;
    summary.events = size;
    summary.root = tree.edge.root();
    summary.checkpoints = checkpoints.list.len();
    summary.hash_nodes_checked = tree.hashes.checked;
    Ok(summary)
}

/// The signed log must reach the kept checkpoint (else it was rolled back) and the pinned
/// minimum size.
fn check_pinned_sizes(
    place: &str,
    pins: &Pins,
    alg: TreeHash,
    size: u64,
    signed_size: u64,
) -> Result<(), VerifyError> {
    if let Some(kept) = &pins.since {
        if kept.size > size || kept.size > signed_size {
            return fail(
                place,
                format!(
                    "the kept checkpoint (--since) has size {}, but the log holds {size} records signed up to size {signed_size}: the log was rolled back",
                    kept.size
                ),
            );
        }
        if kept.size == 0 && kept.root != RightEdge::new(alg).root() {
            return fail(
                place,
                "the kept checkpoint (--since) of size 0 has a root other than the empty tree's",
            );
        }
    }
    if let Some(min) = pins.min_size {
        if signed_size < min {
            return fail(
                place,
                format!("signed size {signed_size} is below the pinned minimum {min} (--min-size)"),
            );
        }
    }
    Ok(())
}

/// A footer without a note is signed only by a checkpoint at or past its end; past the
/// signed size it is accepted only as unsigned tail.
fn check_unsigned_footers(
    unsigned_footers: &[(String, u64)],
    signed_size: u64,
    allow_unsigned_tail: bool,
    warnings: &mut Vec<String>,
) -> Result<(), VerifyError> {
    if let Some((path, end)) = unsigned_footers
        .iter()
        .find(|(_, end)| *end > signed_size && !allow_unsigned_tail)
    {
        return fail(
            path,
            format!("footer has no checkpoint note, and no checkpoint a pinned key signed covers its end {end} (signed size {signed_size}): no pinned key signed this segment"),
        );
    }
    let covered = unsigned_footers
        .iter()
        .filter(|(_, end)| *end <= signed_size)
        .count();
    if covered > 0 {
        warnings.push(format!(
            "{covered} segment(s) sealed without a signed footer (the signer was down); a checkpoint signed later covers each"
        ));
    }
    Ok(())
}
