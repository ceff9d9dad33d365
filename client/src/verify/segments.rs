//! Reading the segments in index order into the rebuilt tree: a sealed segment's digest,
//! header, prior edge, blocks and footer; a pruned segment's leaf hashes from the hash
//! store; an open segment's batches, up to a torn tail in the last one.

use auditlog_formats::batch::{self, Entries, BATCH_HEADER_BYTES};
use auditlog_formats::keyhistory::CheckedHistory;
use auditlog_formats::segment::{self, SegmentHeader, TRAILER_BYTES};
use auditlog_formats::Hash;

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

impl SegmentReader<'_> {
    pub(super) fn read_all(
        &self,
        segs: &[SegRef],
        tree: &mut Rebuild<'_>,
        summary: &mut Summary,
        progress: Progress<'_>,
    ) -> Result<Findings, VerifyError> {
        let mut found = Findings {
            signed: tree.checkpoints.last().map(|c| (c.size, c.root)),
            unsigned_footers: Vec::new(),
            pruned: Vec::new(),
        };
        let total_bytes: u64 = segs.iter().map(|s| s.bytes).sum();
        let mut done_bytes = 0u64;
        for seg in segs {
            let path = self.src.place(seg);
            match seg.kind {
                SegKind::Sealed(first, end) => {
                    self.sealed(seg, &path, (first, end), tree, &mut found)?;
                    summary.sealed_segments += 1;
                }
                SegKind::Pruned(first, end) => {
                    self.pruned(&path, (first, end), tree)?;
                    found.pruned.push(format!("[{first}, {end})"));
                    summary.pruned_segments += 1;
                }
                SegKind::Open(first) => {
                    let last = std::ptr::eq(seg, segs.last().expect("in the list"));
                    if let Some(t) = self.open(seg, &path, first, last, tree)? {
                        summary.warnings.push(format!("{path}: {t}"));
                        summary.torn_tail = Some(format!("{path}: {t}"));
                    }
                    summary.open_segments += 1;
                }
            }
            done_bytes += seg.bytes;
            progress(done_bytes, total_bytes);
        }
        Ok(found)
    }

    /// A sealed segment: its digest, header and prior edge, every block and record, its
    /// footer root, and its footer's note if it has one.
    fn sealed(
        &self,
        seg: &SegRef,
        path: &str,
        (first, end): (u64, u64),
        tree: &mut Rebuild<'_>,
        found: &mut Findings,
    ) -> Result<(), VerifyError> {
        starts_where_the_log_ends(path, first, tree)?;
        let prior_edge = tree.edge.subtree_roots();
        let f = self.src.open_sealed(seg)?;
        let (header, footer) = read_sealed(path, f.as_ref())?;
        if header.first_index != first
            || header.first_index + header.count != end
            || header.tree_hash != tree.alg
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
        push_blocks(path, f.as_ref(), &footer, tree)?;
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

    /// An open segment: every batch and record; a torn tail (returned) only in the last.
    fn open(
        &self,
        seg: &SegRef,
        path: &str,
        first: u64,
        last: bool,
        tree: &mut Rebuild<'_>,
    ) -> Result<Option<String>, VerifyError> {
        starts_where_the_log_ends(path, first, tree)?;
        let f = self.src.open_unsealed(seg)?;
        scan_open(path, f.as_ref(), last, &mut |at, h, body| {
            tree.push_batch(path, at, h, body)
        })
    }
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

/// Reads a sealed segment's blocks (their checksums checked by `decode_block`) and adds
/// their records to the tree.
fn push_blocks(
    path: &str,
    f: &dyn ReadAt,
    footer: &segment::Footer,
    tree: &mut Rebuild<'_>,
) -> Result<(), VerifyError> {
    for (n, b) in footer.blocks.iter().enumerate() {
        let mut buf = vec![0u8; b.compressed_bytes as usize];
        f.read_exact_at(&mut buf, b.offset)
            .or_else(|e| fail(path, format!("block {n}: {e}")))?;
        let raw =
            segment::decode_block(n as u32, b, &buf).or_else(|e| fail(path, e.to_string()))?;
        for rec in Entries::new(&raw) {
            let rec = rec.or_else(|(p, r)| fail(path, format!("block {n}: record {p}: {r}")))?;
            tree.push_record(rec, &|| format!("{path}: block {n}"))?;
        }
    }
    Ok(())
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
