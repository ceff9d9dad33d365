//! Reading the segments in index order into the rebuilt tree: a sealed segment's digest,
//! header, prior edge, blocks and footer; a pruned segment's leaf hashes from the hash
//! store; an open segment's batches, up to a torn tail in the last one.
//!
//! What a segment's bytes say about themselves (`alone.rs`: digests, checksums, records,
//! leaf hashes) is checked on worker threads, several segments at once, a sealed segment
//! whole and an open one in chunks of batches; what needs the segments before it (where it
//! starts, its prior edge, each batch's first index, the hash store's nodes, the
//! checkpoints' roots, its footer's root and note) is checked here, on the calling thread,
//! one piece after the other in index order, as its leaves join the tree. The window of
//! `in_order.rs` keeps at most `threads + 1` pieces' leaf hashes in memory (32 bytes a
//! record, a segment's at most), and the first failure in index order is the one
//! reported, as with one thread.

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;

use auditlog_formats::keyhistory::CheckedHistory;
use auditlog_formats::segment;
use auditlog_formats::{Hash, TreeHash};

use super::alone::{self, Chunk, End, Hashed, OpenChunks, PieceAt};
use super::in_order::in_order;
use super::{fail, LogSource, Progress, ReadAt, Rebuild, SegKind, SegRef, Summary, VerifyError};

/// What reading the segments found besides the tree.
pub(super) struct Findings {
    /// The newest size a pinned key signed: the checkpoint log's and every sealed footer's.
    pub(super) signed: Option<(u64, Hash)>,
    /// Sealed segments whose footer has no note, and their ends.
    pub(super) unsigned_footers: Vec<(String, u64)>,
    /// The leaf ranges of pruned segments, for the warning.
    pub(super) pruned: Vec<String>,
}

/// Reads every segment in index order into the rebuilt tree.
pub(super) struct SegmentReader<'a> {
    pub(super) src: &'a dyn LogSource,
    pub(super) history: &'a CheckedHistory,
    pub(super) origin: &'a str,
}

/// A piece of reading to do: drawn in index order on the calling thread (which opens the
/// files: a source is read from one thread), run on a worker.
struct Job<'s> {
    seg: &'s SegRef,
    path: String,
    work: Work,
}

enum Work {
    Sealed(Result<Box<dyn ReadAt + Send>, VerifyError>),
    /// A chunk of an open segment; `last`: the segment is the last listed, the only one
    /// that can end in a torn tail.
    Open {
        file: Result<Box<dyn ReadAt + Send>, VerifyError>,
        chunk: Chunk,
        last: bool,
    },
    /// Nothing to read alone: its leaf hashes come from the hash store, in order.
    Pruned,
}

/// A piece read alone, to be added to the tree in index order.
struct Done<'s> {
    seg: &'s SegRef,
    path: String,
    read: Read,
}

enum Read {
    Sealed(Result<(segment::Footer, Hashed), VerifyError>),
    Open {
        chunk: Chunk,
        hashed: Result<Hashed, VerifyError>,
    },
    Pruned,
}

impl<'s> Job<'s> {
    /// The worker's part: everything the bytes say about themselves.
    fn run(self, alg: TreeHash, stop: &AtomicBool) -> Done<'s> {
        let Job { seg, path, work } = self;
        let read = match (seg.kind, work) {
            (SegKind::Sealed(first, end), Work::Sealed(f)) => Read::Sealed(
                f.and_then(|f| alone::sealed(&path, f.as_ref(), (first, end), alg, stop)),
            ),
            (SegKind::Open(_), Work::Open { file, chunk, last }) => Read::Open {
                chunk,
                hashed: file.map(|f| alone::open(&path, f.as_ref(), chunk, last, alg, stop)),
            },
            (SegKind::Pruned(..), Work::Pruned) => Read::Pruned,
            (kind, _) => unreachable!("bad math: a {kind:?} segment given another's work"),
        };
        Done { seg, path, read }
    }
}

impl Done<'_> {
    /// The segment's bytes this piece covers, for the progress bar.
    fn bytes(&self) -> u64 {
        match &self.read {
            Read::Open { chunk, .. } => chunk
                .to
                .unwrap_or(self.seg.bytes)
                .saturating_sub(chunk.from),
            _ => self.seg.bytes,
        }
    }
}

impl SegmentReader<'_> {
    pub(super) fn read_all(
        &self,
        segs: &[SegRef],
        tree: &mut Rebuild<'_>,
        summary: &mut Summary,
        threads: NonZeroUsize,
        progress: Progress<'_>,
    ) -> Result<Findings, VerifyError> {
        let mut found = Findings {
            signed: tree.checkpoints.last().map(|c| (c.size, c.root)),
            unsigned_footers: Vec::new(),
            pruned: Vec::new(),
        };
        let total_bytes: u64 = segs.iter().map(|s| s.bytes).sum();
        let mut done_bytes = 0u64;
        let mut open_ended = None;
        let alg = tree.alg;
        let jobs = segs
            .iter()
            .enumerate()
            .flat_map(|(i, seg)| self.jobs(seg, i + 1 == segs.len(), threads));
        in_order(
            threads,
            jobs,
            |job, stop| job.run(alg, stop),
            |done| {
                done_bytes += done.bytes();
                self.join(done, tree, &mut found, summary, &mut open_ended)?;
                progress(done_bytes, total_bytes);
                Ok(())
            },
        )?;
        Ok(found)
    }

    /// The pieces of one segment, opened for the workers: a sealed segment whole, an open
    /// one in chunks (found as they are drawn), a pruned one with nothing to read alone.
    fn jobs<'s>(
        &'s self,
        seg: &'s SegRef,
        last: bool,
        threads: NonZeroUsize,
    ) -> Box<dyn Iterator<Item = Job<'s>> + 's> {
        let path = self.src.place(seg);
        let work = match seg.kind {
            SegKind::Sealed(..) => Work::Sealed(self.src.open_sealed(seg)),
            SegKind::Pruned(..) => Work::Pruned,
            SegKind::Open(_) => {
                // A file that does not open is one chunk, whose own open names the failure.
                let chunks: Box<dyn Iterator<Item = Chunk>> = match self.src.open_unsealed(seg) {
                    Ok(f) => Box::new(OpenChunks::new(f, threads.get())),
                    Err(_) => Box::new(std::iter::once(Chunk { from: 0, to: None })),
                };
                return Box::new(chunks.map(move |chunk| Job {
                    seg,
                    path: path.clone(),
                    work: Work::Open {
                        file: self.src.open_unsealed(seg),
                        chunk,
                        last,
                    },
                }));
            }
        };
        Box::new(std::iter::once(Job { seg, path, work }))
    }

    /// Adds one piece, read alone, to the tree: the checks that need the segments before
    /// it, in the order the sequential verifier makes them. `open_ended` is the first index
    /// of an open segment that ended before its last chunk (a torn tail): the chunks after
    /// it are not part of the log.
    fn join(
        &self,
        done: Done<'_>,
        tree: &mut Rebuild<'_>,
        found: &mut Findings,
        summary: &mut Summary,
        open_ended: &mut Option<u64>,
    ) -> Result<(), VerifyError> {
        let path = done.path.as_str();
        match (done.seg.kind, done.read) {
            (SegKind::Sealed(first, end), Read::Sealed(read)) => {
                self.sealed(path, (first, end), read, tree, found)?;
                summary.sealed_segments += 1;
            }
            (SegKind::Pruned(first, end), Read::Pruned) => {
                self.pruned(path, (first, end), tree)?;
                found.pruned.push(format!("[{first}, {end})"));
                summary.pruned_segments += 1;
            }
            (SegKind::Open(first), Read::Open { chunk, hashed }) => {
                if *open_ended == Some(first) {
                    return Ok(());
                }
                if chunk.from == 0 {
                    starts_where_the_log_ends(path, first, tree)?;
                }
                if let End::Segment(torn) = push_hashed(path, hashed?, tree)? {
                    if let Some(t) = torn {
                        summary.warnings.push(format!("{path}: {t}"));
                        summary.torn_tail = Some(format!("{path}: {t}"));
                    }
                    summary.open_segments += 1;
                    *open_ended = Some(first);
                }
            }
            (kind, _) => unreachable!("bad math: a {kind:?} segment read as another kind"),
        }
        Ok(())
    }

    /// A sealed segment: where it starts, what its bytes say alone, its prior edge, every
    /// record's leaf, its footer root, and its footer's note if it has one.
    fn sealed(
        &self,
        path: &str,
        (first, end): (u64, u64),
        read: Result<(segment::Footer, Hashed), VerifyError>,
        tree: &mut Rebuild<'_>,
        found: &mut Findings,
    ) -> Result<(), VerifyError> {
        starts_where_the_log_ends(path, first, tree)?;
        let (footer, hashed) = read?;
        if footer.prior_edge != tree.edge.subtree_roots() {
            return fail(
                path,
                "footer's prior edge differs from the tree built from earlier segments",
            );
        }
        push_hashed(path, hashed, tree)?;
        if tree.size() != end || footer.root != tree.edge.root() {
            return fail(
                path,
                format!(
                    "footer root {} is not the root of the records at size {end}",
                    hex::encode(footer.root)
                ),
            );
        }
        self.footer_note(path, end, &footer, found)
    }

    /// A footer sealed while the signer was down has no note: a checkpoint at or past its
    /// end must sign it instead (checked once the signed size is known). A note that is
    /// there must verify: an unverifiable one is a segment nobody with the key sealed.
    fn footer_note(
        &self,
        path: &str,
        end: u64,
        footer: &segment::Footer,
        found: &mut Findings,
    ) -> Result<(), VerifyError> {
        if footer.checkpoint_note.is_empty() {
            found.unsigned_footers.push((path.to_string(), end));
            return Ok(());
        }
        let cp = self
            .history
            .open_checkpoint(&footer.checkpoint_note)
            .or_else(|e| fail(path, format!("footer checkpoint: {e}")))?;
        if cp.size != end || cp.root != footer.root || cp.origin != self.origin {
            return fail(path, "footer checkpoint does not sign this segment's head");
        }
        if found.signed.is_none_or(|(s, _)| cp.size > s) {
            found.signed = Some((cp.size, cp.root));
        }
        Ok(())
    }

    /// A pruned segment: the records are on the store only. Their leaf hashes from the hash
    /// store carry the tree over the gap, so every later segment, footer and checkpoint is
    /// still checked; the records themselves are not (verify the bucket for them).
    fn pruned(
        &self,
        path: &str,
        (first, end): (u64, u64),
        tree: &mut Rebuild<'_>,
    ) -> Result<(), VerifyError> {
        if first != tree.size() {
            return fail(path, format!("pruned segment starts at index {first}, but the log so far ends at {}: a segment is missing", tree.size()));
        }
        let hashes_place = self.src.hashes_place();
        let Some(leaves) = self.src.leaf_hashes() else {
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
                tree.push_leaf(leaf, &|| path.to_string())?;
            }
            at += n as u64;
        }
        Ok(())
    }
}

/// Adds a segment's leaves to the tree piece by piece (each batch must start where the log
/// ends), then returns what ended its reading: the failure after them, or how it ends.
fn push_hashed(path: &str, hashed: Hashed, tree: &mut Rebuild<'_>) -> Result<End, VerifyError> {
    let mut leaves = hashed.leaves.iter();
    for piece in &hashed.pieces {
        if piece.first_index != tree.size() {
            let PieceAt::Batch(at) = piece.at else {
                unreachable!("bad math: blocks follow each other from the segment's start");
            };
            return fail(
                path,
                format!(
                    "batch at offset {at}: starts at index {}, expected {}: events are missing",
                    piece.first_index,
                    tree.size()
                ),
            );
        }
        for leaf in leaves.by_ref().take(piece.leaves) {
            tree.push_leaf(*leaf, &|| piece.at.place(path))?;
        }
    }
    assert!(leaves.next().is_none(), "bad math: leaves outside pieces");
    hashed.then
}

/// A segment must start where the segments before it end.
fn starts_where_the_log_ends(
    path: &str,
    first: u64,
    tree: &Rebuild<'_>,
) -> Result<(), VerifyError> {
    if first != tree.size() {
        return fail(
            path,
            format!(
                "starts at index {first}, but the log so far ends at {}: a segment is missing",
                tree.size()
            ),
        );
    }
    Ok(())
}
