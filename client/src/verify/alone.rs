//! What one segment's bytes say about themselves, checked without the segments before it:
//! the part of reading a segment that a worker thread does (`in_order.rs`).
//!
//! A sealed segment: its digest, header, trailer and footer, the header against the file's
//! name and the log's tree hash, then every block's checksum, decompression and records,
//! each record's leaf hash. An open segment: every batch's checksum and records, each
//! record's leaf hash, and the torn-tail rule (which looks only at the file). Nothing here
//! depends on the tree so far; what does (the segment starting where the log ends, the
//! prior edge, the hash store, checkpoint roots, the footer root) is checked in index order
//! by `segments.rs` as it adds these leaves to the tree. A worker stops at the first failure
//! it finds and returns it with the leaves before it, so that the in-order side reports
//! whatever comes first: its own failure at an earlier leaf, or this one.

use std::sync::atomic::{AtomicBool, Ordering};

use auditlog_formats::batch::{self, Entries, BATCH_HEADER_BYTES};
use auditlog_formats::record::Record;
use auditlog_formats::segment::{self, SegmentHeader, TRAILER_BYTES};
use auditlog_formats::{Hash, TreeHash};

use super::{fail, ReadAt, VerifyError};

/// A segment's records as leaf hashes, in the pieces they were read in (a sealed segment's
/// blocks, an open segment's batches), and what ended the reading.
#[derive(Debug)]
pub(super) struct Hashed {
    pub(super) pieces: Vec<Piece>,
    /// Every piece's leaves, back to back.
    pub(super) leaves: Vec<Hash>,
    /// What came after the last leaf: a failure (a bad block, batch or record: it comes
    /// after those leaves in index order), or for an open segment its torn tail, if any.
    pub(super) then: Result<Option<String>, VerifyError>,
}

/// A block or a batch: where it is, the index its first record claims, how many leaves.
#[derive(Debug)]
pub(super) struct Piece {
    pub(super) at: PieceAt,
    /// The index of its first record: a batch says it (and must be where the log ends); a
    /// block's follows from the blocks before it.
    pub(super) first_index: u64,
    pub(super) leaves: usize,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum PieceAt {
    Block(u32),
    /// A batch of an open segment, at this offset.
    Batch(u64),
}

impl PieceAt {
    /// Where a failure at one of its records is, as the sequential verifier names it.
    pub(super) fn place(&self, path: &str) -> String {
        match self {
            PieceAt::Block(n) => format!("{path}: block {n}"),
            PieceAt::Batch(at) => format!("{path}: batch at offset {at}"),
        }
    }
}

impl Hashed {
    fn new(leaves_hint: u64) -> Hashed {
        Hashed {
            pieces: Vec::new(),
            // A hint from a checked name, capped: a name can claim anything.
            leaves: Vec::with_capacity(leaves_hint.min(1 << 20) as usize),
            then: Ok(None),
        }
    }

    /// Starts a piece whose first record has index `first_index`.
    fn start(&mut self, at: PieceAt, first_index: u64) {
        self.pieces.push(Piece {
            at,
            first_index,
            leaves: 0,
        });
    }

    /// Parses one record of the current piece and keeps its leaf hash.
    fn push_record(&mut self, alg: TreeHash, path: &str, rec: &[u8]) -> Result<(), VerifyError> {
        let piece = self.pieces.last_mut().expect("a piece was started");
        if let Err(e) = Record::parse(rec) {
            let index = piece.first_index + piece.leaves as u64;
            return fail(piece.at.place(path), format!("index {index}: {e}"));
        }
        piece.leaves += 1;
        self.leaves.push(alg.leaf(rec));
        Ok(())
    }
}

/// The run failed elsewhere: this output is never consumed.
fn stopped(path: &str) -> VerifyError {
    VerifyError {
        place: path.to_string(),
        what: "stopped: an earlier segment failed".to_string(),
    }
}

/// A sealed segment alone: its bytes (digest, header, trailer, footer), its header against
/// its name `[first, end)` and the log's tree hash `alg`; then its blocks. A failure before
/// any record is the error; the footer comes back for the checks against the tree.
pub(super) fn sealed(
    path: &str,
    f: &dyn ReadAt,
    (first, end): (u64, u64),
    alg: TreeHash,
    stop: &AtomicBool,
) -> Result<(segment::Footer, Hashed), VerifyError> {
    let (header, footer) = read_sealed(path, f)?;
    if header.first_index != first
        || header.first_index + header.count != end
        || header.tree_hash != alg
    {
        return fail(
            path,
            "header does not match the file name or the log's tree hash",
        );
    }
    let mut hashed = Hashed::new(end - first);
    hashed.then = hash_blocks(path, f, &footer, first, alg, &mut hashed, stop).map(|()| None);
    Ok((footer, hashed))
}

/// Reads a sealed segment's blocks (their checksums checked by `decode_block`) and hashes
/// their records.
fn hash_blocks(
    path: &str,
    f: &dyn ReadAt,
    footer: &segment::Footer,
    first: u64,
    alg: TreeHash,
    hashed: &mut Hashed,
    stop: &AtomicBool,
) -> Result<(), VerifyError> {
    for (n, b) in footer.blocks.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(path));
        }
        let mut buf = vec![0u8; b.compressed_bytes as usize];
        f.read_exact_at(&mut buf, b.offset)
            .or_else(|e| fail(path, format!("block {n}: {e}")))?;
        let raw =
            segment::decode_block(n as u32, b, &buf).or_else(|e| fail(path, e.to_string()))?;
        hashed.start(PieceAt::Block(n as u32), first + hashed.leaves.len() as u64);
        for rec in Entries::new(&raw) {
            let rec = rec.or_else(|(p, r)| fail(path, format!("block {n}: record {p}: {r}")))?;
            hashed.push_record(alg, path, rec)?;
        }
    }
    Ok(())
}

/// An open segment alone: every batch's records hashed, up to a torn tail (only if `last`,
/// the last open segment) or a failure, in `then`.
pub(super) fn open(
    path: &str,
    f: &dyn ReadAt,
    last: bool,
    alg: TreeHash,
    stop: &AtomicBool,
) -> Hashed {
    let mut hashed = Hashed::new(0);
    let then = scan_open(path, f, last, &mut |at, h, body| {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(path));
        }
        hashed.start(PieceAt::Batch(at), h.first_index);
        for rec in Entries::new(body) {
            let rec =
                rec.or_else(|(p, r)| fail(path, format!("batch at offset {at}: record {p}: {r}")))?;
            hashed.push_record(alg, path, rec)?;
        }
        Ok(())
    });
    hashed.then = then;
    hashed
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
