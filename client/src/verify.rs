//! Offline verification of a data directory, trusting nothing but the verifier key.
//!
//! One pass over every segment in index order: every batch checksum (open segments), every
//! block checksum, digest, prior edge, root and signed note (sealed segments), every record
//! re-hashed into a fresh tree. Every checkpoint in `checkpoints.log` must verify with the
//! key, name the log's origin, and have the root the records give at its size; consecutive
//! checkpoints must be consistent, checked with RFC 9162 proofs built from the hash store,
//! whose every stored node must equal the recomputed one. The first failure names its file,
//! offset or block, and index.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use auditlog_formats::batch::{self, Entries, BATCH_HEADER_BYTES};
use auditlog_formats::keyhistory::{CheckedHistory, KeyHistory};
use auditlog_formats::layout::LogMeta;
use auditlog_formats::note::{Checkpoint, VerifierKey};
use auditlog_formats::record::Record;
use auditlog_formats::segment::{self, SegmentHeader, TRAILER_BYTES};
use auditlog_formats::tree::{self, HashReader, NodeId, RightEdge};
use auditlog_formats::{Hash, TreeHash};

pub use crate::source::{DirSource, LogSource, ReadAt, SegKind, SegRef};

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
    verify_source(&DirSource::new(dir), history, &Pins::default(), progress)
}

/// Verifies a data directory under `history` and `pins`.
pub fn verify_dir_pinned(
    dir: &Path,
    history: &CheckedHistory,
    pins: &Pins,
    progress: Progress<'_>,
) -> Result<Summary, VerifyError> {
    verify_source(&DirSource::new(dir), history, pins, progress)
}

/// Verifies the log a source holds (a data directory, a bucket), trusting only `history`
/// and `pins`.
pub fn verify_source(
    src: &dyn LogSource,
    history: &CheckedHistory,
    pins: &Pins,
    progress: Progress<'_>,
) -> Result<Summary, VerifyError> {
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

    let mut summary = Summary::default();
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
        None => summary.warnings.push(format!(
            "origin not pinned (--origin or --since): took {:?} from {meta_path}",
            meta.origin
        )),
    }

    // Checkpoints first: they say which roots the records must reproduce.
    let (cp_path, entries) = src.checkpoints()?;
    let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let text = std::str::from_utf8(raw)
            .or_else(|_| fail(&cp_path, format!("entry {i}: not UTF-8")))?;
        let cp = history
            .open_checkpoint(text)
            .or_else(|e| fail(&cp_path, format!("entry {i}: {e}")))?;
        if cp.origin != meta.origin {
            return fail(
                &cp_path,
                format!(
                    "entry {i}: origin {:?}, log is {:?}",
                    cp.origin, meta.origin
                ),
            );
        }
        if let Some(prev) = checkpoints.last() {
            if cp.size < prev.size {
                return fail(
                    &cp_path,
                    format!("entry {i}: size {} goes back from {}", cp.size, prev.size),
                );
            }
        }
        checkpoints.push(cp);
    }
    let mut want_roots: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, cp) in checkpoints.iter().enumerate() {
        want_roots.entry(cp.size).or_default().push(i);
    }
    // The kept checkpoint, as one more root the records must reproduce at its size: the
    // tree is rebuilt from every record, so this equals checking a consistency proof from
    // it to every later checkpoint (and needs no hash the source supplies).
    let since_at = pins.since.as_ref().map(|c| (c.size, c.root));
    // The newest size a pinned key signed: the checkpoint log's and every sealed footer's.
    let mut signed: Option<(u64, Hash)> = checkpoints.last().map(|c| (c.size, c.root));
    // Sealed segments whose footer has no note, and their ends.
    let mut unsigned_footers: Vec<(String, u64)> = Vec::new();

    let segs = src.segments()?;
    let total_bytes: u64 = segs.iter().map(|s| s.bytes).sum();
    let mut done_bytes = 0u64;
    let mut hashes = src.hash_levels()?;
    let mut edge = RightEdge::new(alg);
    let push_leaf = |edge: &mut RightEdge,
                     hashes: &mut HashCheck,
                     leaf: Hash,
                     place: &dyn Fn() -> String|
     -> Result<(), VerifyError> {
        let mut bad = None;
        edge.append(leaf, |node, h| {
            if bad.is_none() {
                bad = hashes.check(node, h).err();
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        if let Some((size, root)) = since_at.filter(|(size, _)| edge.size() == *size) {
            if edge.root() != root {
                return fail(place(), format!(
                    "records up to index {} give root {}, but the kept checkpoint (--since) of size {size} signs {}: the log was forked or rewritten",
                    size - 1, hex::encode(edge.root()), hex::encode(root)
                ));
            }
        }
        if let Some(idx) = want_roots.get(&edge.size()) {
            let root = edge.root();
            for &i in idx {
                if checkpoints[i].root != root {
                    return fail(place(), format!(
                        "records up to index {} give root {}, but checkpoint {i} (size {}) in checkpoints.log signs {}",
                        edge.size() - 1, hex::encode(root), checkpoints[i].size, hex::encode(checkpoints[i].root)
                    ));
                }
            }
        }
        Ok(())
    };
    let check_leaf = |edge: &mut RightEdge,
                      hashes: &mut HashCheck,
                      rec: &[u8],
                      place: &dyn Fn() -> String|
     -> Result<(), VerifyError> {
        if let Err(e) = Record::parse(rec) {
            return fail(place(), format!("index {}: {e}", edge.size()));
        }
        push_leaf(edge, hashes, alg.leaf(rec), place)
    };
    let mut pruned = Vec::new();

    for seg in &segs {
        let path = &src.place(seg);
        match seg.kind {
            SegKind::Sealed(first, end) => {
                let (first, end) = (&first, &end);
                if *first != edge.size() {
                    return fail(path, format!("starts at index {first}, but the log so far ends at {}: a segment is missing", edge.size()));
                }
                let prior_edge = edge.subtree_roots();
                let f = src.open_sealed(seg)?;
                let (header, footer) = read_sealed(path, f.as_ref())?;
                if header.first_index != *first
                    || header.first_index + header.count != *end
                    || header.tree_hash != alg
                {
                    return fail(
                        path,
                        "header does not match the file name or the log's tree hash",
                    );
                }
                if footer.prior_edge != prior_edge {
                    return fail(
                        path,
                        "footer's prior edge differs from the tree built from earlier segments",
                    );
                }
                for (n, b) in footer.blocks.iter().enumerate() {
                    let mut buf = vec![0u8; b.compressed_bytes as usize];
                    f.read_exact_at(&mut buf, b.offset)
                        .or_else(|e| fail(path, format!("block {n}: {e}")))?;
                    let raw = segment::decode_block(n as u32, b, &buf)
                        .or_else(|e| fail(path, e.to_string()))?;
                    for rec in Entries::new(&raw) {
                        let rec = rec
                            .or_else(|(p, r)| fail(path, format!("block {n}: record {p}: {r}")))?;
                        check_leaf(&mut edge, &mut hashes, rec, &|| {
                            format!("{path}: block {n}")
                        })?;
                    }
                }
                if edge.size() != *end || footer.root != edge.root() {
                    return fail(
                        path,
                        format!(
                            "footer root {} is not the root of the records at size {end}",
                            hex::encode(footer.root)
                        ),
                    );
                }
                // A footer sealed while the signer was down has no note: a checkpoint at or
                // past its end must sign it instead (checked once the signed size is known).
                // A note that is there must verify: an unverifiable one is a segment nobody
                // with the key sealed.
                if footer.checkpoint_note.is_empty() {
                    unsigned_footers.push((path.clone(), *end));
                } else {
                    let cp = history
                        .open_checkpoint(&footer.checkpoint_note)
                        .or_else(|e| fail(path, format!("footer checkpoint: {e}")))?;
                    if cp.size != *end || cp.root != footer.root || cp.origin != meta.origin {
                        return fail(path, "footer checkpoint does not sign this segment's head");
                    }
                    if signed.is_none_or(|(s, _)| cp.size > s) {
                        signed = Some((cp.size, cp.root));
                    }
                }
                summary.sealed_segments += 1;
            }
            SegKind::Pruned(first, end) => {
                // The records are on the store only. Their leaf hashes from the hash store
                // carry the tree over the gap, so every later segment, footer and
                // checkpoint is still checked; the records themselves are not (verify the
                // bucket for them).
                if first != edge.size() {
                    return fail(path, format!("pruned segment starts at index {first}, but the log so far ends at {}: a segment is missing", edge.size()));
                }
                let hashes_place = src.hashes_place();
                let Some(leaves) = src.leaf_hashes() else {
                    return fail(&hashes_place, "no leaf hashes for a pruned segment");
                };
                if leaves.len() < end.saturating_mul(32) {
                    return fail(
                        &hashes_place,
                        format!(
                            "level 0 holds {} leaves; pruned segment [{first}, {end}) needs them",
                            leaves.len() / 32
                        ),
                    );
                }
                let mut buf = vec![0u8; 32 << 12];
                let mut at = first;
                while at < end {
                    let n = (end - at).min(1 << 12) as usize;
                    leaves
                        .read_exact_at(&mut buf[..n * 32], at * 32)
                        .or_else(|e| fail(&hashes_place, e.to_string()))?;
                    for h in buf[..n * 32].chunks_exact(32) {
                        let mut leaf = [0u8; 32];
                        leaf.copy_from_slice(h);
                        push_leaf(&mut edge, &mut hashes, leaf, &|| path.clone())?;
                    }
                    at += n as u64;
                }
                pruned.push(format!("[{first}, {end})"));
                summary.pruned_segments += 1;
            }
            SegKind::Open(first) => {
                if first != edge.size() {
                    return fail(path, format!("starts at index {first}, but the log so far ends at {}: a segment is missing", edge.size()));
                }
                let last = std::ptr::eq(seg, segs.last().expect("in the list"));
                let f = src.open_unsealed(seg)?;
                let torn = scan_open(path, f.as_ref(), last, &mut |at, h, body| {
                    if h.first_index != edge.size() {
                        return fail(path, format!("batch at offset {at}: starts at index {}, expected {}: events are missing", h.first_index, edge.size()));
                    }
                    for rec in Entries::new(body) {
                        let rec = rec.or_else(|(p, r)| {
                            fail(path, format!("batch at offset {at}: record {p}: {r}"))
                        })?;
                        check_leaf(&mut edge, &mut hashes, rec, &|| {
                            format!("{path}: batch at offset {at}")
                        })?;
                    }
                    Ok(())
                })?;
                if let Some(t) = torn {
                    summary.warnings.push(format!("{path}: {t}"));
                    summary.torn_tail = Some(format!("{path}: {t}"));
                }
                summary.open_segments += 1;
            }
        }
        done_bytes += seg.bytes;
        progress(done_bytes, total_bytes);
    }

    if let Some(last) = checkpoints.last() {
        if last.size > edge.size() {
            // A bad batch taken for a torn tail cannot hold signed records: it is damage,
            // and where it is is the place to name.
            if let Some(t) = &summary.torn_tail {
                return fail(
                    t,
                    format!(
                        "records from index {} on were signed (checkpoint size {}), so this is damage, not a torn tail: events are missing",
                        edge.size(),
                        last.size
                    ),
                );
            }
            return fail(
                &cp_path,
                format!(
                    "checkpoint for size {} but the segments hold {} events: events are missing",
                    last.size,
                    edge.size()
                ),
            );
        }
    }
    // Consecutive checkpoints: consistency proofs from the stored hashes, checked. (A source
    // without a full hash store skips them: every checkpoint's root was already compared
    // with the one verified leaf sequence, which makes them consistent.)
    if let Some(reader) = src.hash_reader() {
        for pair in checkpoints.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let proof = match tree::prove_consistency(alg, a.size, b.size, &reader) {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    return fail(
                        &cp_path,
                        format!("consistency {} -> {}: {e}", a.size, b.size),
                    )
                }
                Err(e) => return Err(e),
            };
            tree::verify_consistency(alg, a.size, b.size, &a.root, &b.root, &proof).or_else(
                |e| {
                    fail(
                        &cp_path,
                        format!(
                            "checkpoints {} -> {} are not consistent: {e}",
                            a.size, b.size
                        ),
                    )
                },
            )?;
        }
    }
    let last_cp = checkpoints.last().map(|c| c.size).unwrap_or(0);
    if hashes
        .short_levels(edge.size(), last_cp, &mut summary.warnings)
        .is_err()
    {
        return fail(
            src.hashes_place(),
            format!("hash store holds fewer nodes than checkpoint {last_cp} covers"),
        );
    }
    if !pruned.is_empty() {
        summary.warnings.push(format!(
            "{} segment(s) pruned locally, records not read here (they are on the object store; `auditlog verify <bucket-url>` checks them): leaves {}",
            pruned.len(),
            pruned.join(", ")
        ));
    }
    // What is vouched for: the records a pinned key signed, and nothing past them.
    let Some((signed_size, signed_root)) = signed else {
        return fail(
            &cp_path,
            format!(
                "no checkpoint verifies under the pinned key(s): none of the {} records is signed",
                edge.size()
            ),
        );
    };
    if let Some(kept) = &pins.since {
        if kept.size > edge.size() || kept.size > signed_size {
            return fail(
                &cp_path,
                format!(
                    "the kept checkpoint (--since) has size {}, but the log holds {} records signed up to size {signed_size}: the log was rolled back",
                    kept.size,
                    edge.size()
                ),
            );
        }
        if kept.size == 0 && kept.root != RightEdge::new(alg).root() {
            return fail(
                &cp_path,
                "the kept checkpoint (--since) of size 0 has a root other than the empty tree's",
            );
        }
    }
    if let Some(min) = pins.min_size {
        if signed_size < min {
            return fail(
                &cp_path,
                format!("signed size {signed_size} is below the pinned minimum {min} (--min-size)"),
            );
        }
    }
    if let Some((path, end)) = unsigned_footers
        .iter()
        .find(|(_, end)| *end > signed_size && !pins.allow_unsigned_tail)
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
        summary.warnings.push(format!(
            "{covered} segment(s) sealed without a signed footer (the signer was down); a checkpoint signed later covers each"
        ));
    }
    let unsigned = edge.size() - signed_size;
    if unsigned > 0 {
        let what = format!(
            "{unsigned} record(s) past the signed size {signed_size} (indexes {signed_size}..{}): no pinned key signed them",
            edge.size()
        );
        if !pins.allow_unsigned_tail {
            return fail(
                &cp_path,
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
    summary.events = edge.size();
    summary.root = edge.root();
    summary.checkpoints = checkpoints.len();
    summary.hash_nodes_checked = hashes.checked;
    Ok(summary)
}

/// Called with each valid batch of an open segment: its offset, header and body.
type OnBatch<'a> = dyn FnMut(u64, &batch::BatchHeader, &[u8]) -> Result<(), VerifyError> + 'a;

/// Scans an open segment's batches (FORMATS.md §6) in pieces: one batch in memory at a
/// time, never the segment. `on_batch` sees each valid batch's header
/// with its body. A bad batch is a torn tail (returned, its records not counted) only in
/// the last open segment and only if zeros follow as the format's rule requires
/// (`batch::torn_tail_zeros`, with the format's largest batch as the allowance, since the
/// verifier does not know the configured limit); otherwise it is a failure.
fn scan_open(
    path: &str,
    f: &dyn ReadAt,
    last: bool,
    on_batch: &mut OnBatch<'_>,
) -> Result<Option<String>, VerifyError> {
    let len = f.len();
    let mut buf = Vec::new();
    let mut at = 0u64;
    let bad = loop {
        if at + BATCH_HEADER_BYTES as u64 > len {
            break None;
        }
        let mut head = [0u8; BATCH_HEADER_BYTES];
        f.read_exact_at(&mut head, at)
            .or_else(|e| fail(path, format!("offset {at}: {e}")))?;
        if head.iter().all(|&b| b == 0) {
            break None;
        }
        let total = match batch::decode_header(&head) {
            Ok(h) if at + h.total_bytes() as u64 <= len => h.total_bytes(),
            Ok(h) => {
                break Some(format!(
                    "batch at offset {at}: {} bytes, past the end of the file",
                    h.total_bytes()
                ))
            }
            Err(e) => break Some(format!("batch at offset {at}: {e}")),
        };
        buf.resize(total, 0);
        f.read_exact_at(&mut buf, at)
            .or_else(|e| fail(path, format!("offset {at}: {e}")))?;
        let (h, body) = match batch::decode_batch(&buf) {
            Ok(x) => x,
            Err(e) => break Some(format!("batch at offset {at}: {e}")),
        };
        on_batch(at, &h, body)?;
        at += total as u64;
    };
    let Some(why) = bad else {
        // After the last batch the file is zeros: anything else is not the engine's.
        if let Some(nz) = first_non_zero(path, f, at, len)? {
            return fail(
                path,
                format!("non-zero bytes at offset {nz} after the last batch"),
            );
        }
        return Ok(None);
    };
    if !last {
        return fail(
            path,
            format!("{why}, in an open segment that is not the last: damage, not a torn tail"),
        );
    }
    let (from, to) = batch::torn_tail_zeros(at, batch::TORN_TAIL_ALLOWANCE_BYTES_MAX, len);
    if let Some(nz) = first_non_zero(path, f, from, to)? {
        return fail(
            path,
            format!("{why}; and data follows at offset {nz}: damage, not a torn tail"),
        );
    }
    Ok(Some(format!("{why}: a torn tail (a write a crash interrupted, never acknowledged), its records not counted")))
}

/// The offset of the first non-zero byte of `f` in `[from, to)`, read in 1 MiB pieces.
fn first_non_zero(
    path: &str,
    f: &dyn ReadAt,
    from: u64,
    to: u64,
) -> Result<Option<u64>, VerifyError> {
    let mut chunk = vec![0u8; (1 << 20).min(to.saturating_sub(from)) as usize];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(chunk.len() as u64) as usize;
        f.read_exact_at(&mut chunk[..n], pos)
            .or_else(|e| fail(path, format!("offset {pos}: {e}")))?;
        if let Some(nz) = chunk[..n].iter().position(|&b| b != 0) {
            return Ok(Some(pos + nz as u64));
        }
        pos += n as u64;
    }
    Ok(None)
}

fn read_sealed(
    path: &str,
    f: &dyn ReadAt,
) -> Result<(SegmentHeader, segment::Footer), VerifyError> {
    let len = f.len();
    if len < (segment::HEADER_BYTES + TRAILER_BYTES) as u64 {
        return fail(path, "too short for a sealed segment");
    }
    // The digest over everything but its own 40 bytes, streamed.
    let mut hasher = blake3::Hasher::new();
    let covered = len - segment::DIGEST_COVERS_ALL_BUT as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < covered {
        let n = (covered - at).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], at)
            .or_else(|e| fail(path, e.to_string()))?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    let mut head = [0u8; segment::HEADER_BYTES];
    f.read_exact_at(&mut head, 0)
        .or_else(|e| fail(path, e.to_string()))?;
    let header = SegmentHeader::decode(&head).or_else(|e| fail(path, e.to_string()))?;
    let mut tail = [0u8; TRAILER_BYTES];
    f.read_exact_at(&mut tail, len - TRAILER_BYTES as u64)
        .or_else(|e| fail(path, e.to_string()))?;
    let trailer = segment::decode_trailer(len, &tail).or_else(|e| fail(path, e.to_string()))?;
    let digest: [u8; 32] = hasher.finalize().into();
    if digest != trailer.digest {
        return fail(
            path,
            "BLAKE3 digest mismatch: the file was changed after sealing",
        );
    }
    let mut fb = vec![0u8; trailer.footer_bytes as usize];
    f.read_exact_at(&mut fb, trailer.footer_offset)
        .or_else(|e| fail(path, e.to_string()))?;
    let footer =
        segment::decode_footer(&header, &trailer, &fb).or_else(|e| fail(path, e.to_string()))?;
    Ok((header, footer))
}

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
    fn check(&mut self, node: NodeId, h: &Hash) -> Result<(), VerifyError> {
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

    fn short_levels(&self, size: u64, covered: u64, warnings: &mut Vec<String>) -> Result<(), ()> {
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
