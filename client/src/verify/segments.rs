//! Reading the segments in index order into the rebuilt tree: a sealed segment's digest,
//! header, prior edge, blocks and footer; a pruned segment's leaf hashes from the hash
//! store; an open segment's batches, up to a torn tail in the last one.
//!
//! What a segment's bytes say about themselves (`alone.rs`: digests, checksums, records,
//! leaf hashes) is checked on worker threads, several segments at once, a sealed segment
//! whole and an open one in chunks of batches; what needs the segments before it (where it
//! starts, its prior edge, each batch's first index, the hash store's nodes, the
//! checkpoints' roots, its footer's root and note) is checked here, on the calling thread,
//! one piece after the other in index order, as its leaves join the tree, while the worker
//! reading that piece goes on. The window of `in_order.rs` bounds what is read ahead
//! (`WAITING_BYTES_MAX` of leaf hashes, 32 bytes a record), and the first failure in index
//! order is the one reported, as with one thread.

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;

use auditlog_formats::keyhistory::CheckedHistory;
use auditlog_formats::segment;
use auditlog_formats::{Hash, TreeHash};

use super::alone::{self, Chunk, End, Leaves, OpenChunks, PieceAt};
use super::in_order::{in_order, Window};
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

/// What a worker hands over, in order: a sealed segment's head, its leaves as its blocks
/// are read, its end; a chunk of an open segment's start, its leaves as its batches are
/// read, its end; a pruned segment.
enum Part<'s> {
    /// A sealed segment's bytes checked alone (digest, header, footer; the footer without
    /// its block index), or what failed there.
    Sealed(&'s SegRef, Result<segment::Footer, VerifyError>),
    /// A chunk of an open segment begins.
    Chunk(&'s SegRef, Chunk),
    Pruned(&'s SegRef),
    Leaves(Leaves),
    /// What ended the reading of the segment or chunk begun last.
    End(Result<End, VerifyError>),
}

impl Part<'_> {
    /// What keeping it costs, roughly: its leaf hashes.
    fn weight(&self) -> usize {
        match self {
            Part::Leaves(l) => {
                l.leaves.len() * std::mem::size_of::<Hash>()
                    + l.pieces.len() * std::mem::size_of::<alone::Piece>()
            }
            Part::Sealed(_, Ok(footer)) => {
                footer.checkpoint_note.len() + footer.prior_edge.len() * std::mem::size_of::<Hash>()
            }
            _ => 64,
        }
    }
}

/// Leaf hashes read ahead of the calling thread wait up to this much (those of two million
/// records; a default 256 MiB segment holds about 650,000): the rest of the window waits.
const WAITING_BYTES_MAX: usize = 64 << 20;

impl<'s> Job<'s> {
    /// The worker's part: everything the bytes say about themselves, handed over as it
    /// is read.
    fn run(self, alg: TreeHash, emit: &mut dyn FnMut(Part<'s>), stop: &AtomicBool) {
        let Job { seg, path, work } = self;
        match (seg.kind, work) {
            (SegKind::Sealed(first, end), Work::Sealed(file)) => {
                let head = file.and_then(|f| {
                    alone::sealed_head(&path, f.as_ref(), (first, end), alg).map(|h| (f, h))
                });
                let (f, mut footer) = match head {
                    Ok(x) => x,
                    Err(e) => return emit(Part::Sealed(seg, Err(e))),
                };
                let blocks = std::mem::take(&mut footer.blocks);
                emit(Part::Sealed(seg, Ok(footer)));
                let mut leaves = |l| emit(Part::Leaves(l));
                let end =
                    alone::sealed_blocks(&path, f.as_ref(), &blocks, first, alg, &mut leaves, stop);
                emit(Part::End(end));
            }
            (SegKind::Open(_), Work::Open { file, chunk, last }) => {
                emit(Part::Chunk(seg, chunk));
                let end = file.and_then(|f| {
                    let mut leaves = |l| emit(Part::Leaves(l));
                    alone::open(&path, f.as_ref(), chunk, last, alg, &mut leaves, stop)
                });
                emit(Part::End(end));
            }
            (SegKind::Pruned(..), Work::Pruned) => emit(Part::Pruned(seg)),
            (kind, _) => unreachable!("bad math: a {kind:?} segment given another's work"),
        }
    }
}

/// The calling thread's side of reading: what was found, and which segment or chunk the
/// parts coming now belong to.
struct Joining<'s> {
    found: Findings,
    now: Option<Now<'s>>,
    /// The first index of an open segment that ended before its last chunk (a torn tail):
    /// the chunks after it are not part of the log.
    open_ended: Option<u64>,
    /// Bytes of the segments read, for the progress bar.
    done_bytes: u64,
}

/// The segment or chunk being added to the tree.
struct Now<'s> {
    seg: &'s SegRef,
    path: String,
    /// A sealed segment's footer, for its end: its root and note.
    footer: Option<segment::Footer>,
    /// The segment's bytes it covers.
    bytes: u64,
    /// A chunk after the end of its open segment: read, and left out.
    skip: bool,
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
        let mut joining = Joining {
            found: Findings {
                signed: tree.checkpoints.last().map(|c| (c.size, c.root)),
                unsigned_footers: Vec::new(),
                pruned: Vec::new(),
            },
            now: None,
            open_ended: None,
            done_bytes: 0,
        };
        let total_bytes: u64 = segs.iter().map(|s| s.bytes).sum();
        let alg = tree.alg;
        let jobs = segs
            .iter()
            .enumerate()
            .flat_map(|(i, seg)| self.jobs(seg, i + 1 == segs.len(), threads));
        let window = Window {
            threads,
            waiting_bytes_max: WAITING_BYTES_MAX,
        };
        in_order(
            window,
            jobs,
            |job, emit, stop| job.run(alg, emit, stop),
            Part::weight,
            |part| {
                let ends = matches!(part, Part::End(_) | Part::Pruned(_));
                self.join(part, tree, &mut joining, summary)?;
                if ends {
                    progress(joining.done_bytes, total_bytes);
                }
                Ok(())
            },
        )?;
        Ok(joining.found)
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

    /// Adds what a worker handed over to the tree, with the checks that need the segments
    /// before it, in the order the sequential verifier makes them: where a segment starts,
    /// what its bytes say alone, its prior edge (sealed); each batch's first index (open)
    /// and every leaf; then what ended it, and a sealed segment's footer root and note.
    fn join<'s>(
        &self,
        part: Part<'s>,
        tree: &mut Rebuild<'_>,
        j: &mut Joining<'s>,
        summary: &mut Summary,
    ) -> Result<(), VerifyError> {
        match part {
            Part::Sealed(seg, head) => {
                let SegKind::Sealed(first, _) = seg.kind else {
                    unreachable!("bad math: {seg:?} read as sealed");
                };
                let path = self.src.place(seg);
                starts_where_the_log_ends(&path, first, tree)?;
                let footer = head?;
                if footer.prior_edge != tree.edge.subtree_roots() {
                    return fail(
                        &path,
                        "footer's prior edge differs from the tree built from earlier segments",
                    );
                }
                j.now = Some(Now {
                    seg,
                    path,
                    footer: Some(footer),
                    bytes: seg.bytes,
                    skip: false,
                });
            }
            Part::Chunk(seg, chunk) => {
                let SegKind::Open(first) = seg.kind else {
                    unreachable!("bad math: {seg:?} read as open");
                };
                let now = Now {
                    seg,
                    path: self.src.place(seg),
                    footer: None,
                    bytes: chunk.to.unwrap_or(seg.bytes).saturating_sub(chunk.from),
                    skip: j.open_ended == Some(first),
                };
                if chunk.from == 0 && !now.skip {
                    starts_where_the_log_ends(&now.path, first, tree)?;
                }
                j.now = Some(now);
            }
            Part::Leaves(leaves) => {
                let now = j
                    .now
                    .as_ref()
                    .expect("leaves come after their segment's start");
                if !now.skip {
                    push_leaves(&now.path, leaves, tree)?;
                }
            }
            Part::End(end) => {
                let now = j
                    .now
                    .take()
                    .expect("an end comes after its segment's start");
                j.done_bytes += now.bytes;
                if !now.skip {
                    self.end(now, end?, tree, j, summary)?;
                }
            }
            Part::Pruned(seg) => {
                let SegKind::Pruned(first, end) = seg.kind else {
                    unreachable!("bad math: {seg:?} read as pruned");
                };
                self.pruned(&self.src.place(seg), (first, end), tree)?;
                j.found.pruned.push(format!("[{first}, {end})"));
                summary.pruned_segments += 1;
                j.done_bytes += seg.bytes;
            }
        }
        Ok(())
    }

    /// A segment or chunk read to its end without failure: a sealed segment's footer root
    /// and note; an open segment's torn tail, if it ended there.
    fn end<'s>(
        &self,
        now: Now<'s>,
        end: End,
        tree: &mut Rebuild<'_>,
        j: &mut Joining<'s>,
        summary: &mut Summary,
    ) -> Result<(), VerifyError> {
        let path = now.path.as_str();
        match (now.seg.kind, now.footer, end) {
            (SegKind::Sealed(_, last), Some(footer), End::Segment(None)) => {
                if tree.size() != last || footer.root != tree.edge.root() {
                    return fail(
                        path,
                        format!(
                            "footer root {} is not the root of the records at size {last}",
                            hex::encode(footer.root)
                        ),
                    );
                }
                self.footer_note(path, last, &footer, &mut j.found)?;
                summary.sealed_segments += 1;
            }
            (SegKind::Open(_), None, End::Chunk) => {}
            (SegKind::Open(first), None, End::Segment(torn)) => {
                if let Some(t) = torn {
                    summary.warnings.push(format!("{path}: {t}"));
                    summary.torn_tail = Some(format!("{path}: {t}"));
                }
                summary.open_segments += 1;
                j.open_ended = Some(first);
            }
            (kind, _, end) => unreachable!("bad math: a {kind:?} segment ending as {end:?}"),
        }
        Ok(())
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

/// Adds leaves to the tree piece by piece (each batch must start where the log ends).
fn push_leaves(path: &str, part: Leaves, tree: &mut Rebuild<'_>) -> Result<(), VerifyError> {
    let mut leaves = part.leaves.iter();
    for piece in &part.pieces {
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
    Ok(())
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
