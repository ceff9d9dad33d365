//! What one segment's bytes say about themselves, checked without the segments before it:
//! the part of reading a segment that a worker thread does (`in_order.rs`).
//!
//! A sealed segment: its digest, header, trailer and footer, the header against the file's
//! name and the log's tree hash, then every block's checksum, decompression and records,
//! each record's leaf hash. An open segment, in chunks of batches (`OpenChunks` finds where
//! batches start, so that one open segment keeps several cores busy too): every batch's
//! checksum and records, each record's leaf hash, and the torn-tail rule (which looks only
//! at the file). Nothing here
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

/// Leaf hashes of consecutive pieces of a segment (a sealed segment's blocks, an open
/// segment's batches), handed over as they are read.
#[derive(Debug, Default)]
pub(super) struct Leaves {
    pub(super) pieces: Vec<Piece>,
    /// Every piece's leaves, back to back.
    pub(super) leaves: Vec<Hash>,
}

/// How a segment, or a chunk of an open segment, read without failure ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The segment ends here, with its torn tail if it has one (only an open segment can).
    Segment(Option<String>),
    /// A chunk of an open segment ends at a batch boundary: the next chunk goes on.
    Chunk,
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

impl Leaves {
    /// Room for a handover's leaves, so that filling it copies nothing.
    fn with_room() -> Leaves {
        Leaves {
            pieces: Vec::new(),
            leaves: Vec::with_capacity(2 * LEAVES_PER_HANDOVER),
        }
    }
}

/// Leaves are handed over once this many are read (at the end of a piece), so that the
/// calling thread adds them to the tree while the rest of the segment is read.
const LEAVES_PER_HANDOVER: usize = 1024;

/// Collects leaves piece by piece and hands them over.
struct Handover<'e> {
    emit: &'e mut dyn FnMut(Leaves),
    now: Leaves,
    /// Leaves read so far, handed over or not.
    read: u64,
}

impl<'e> Handover<'e> {
    fn new(emit: &'e mut dyn FnMut(Leaves)) -> Handover<'e> {
        Handover {
            emit,
            now: Leaves::with_room(),
            read: 0,
        }
    }

    /// Starts a piece whose first record has index `first_index`; hands over what was
    /// read if that is enough.
    fn start(&mut self, at: PieceAt, first_index: u64) {
        if self.now.leaves.len() >= LEAVES_PER_HANDOVER {
            self.flush();
        }
        self.now.pieces.push(Piece {
            at,
            first_index,
            leaves: 0,
        });
    }

    /// Parses one record of the current piece and keeps its leaf hash.
    fn push_record(&mut self, alg: TreeHash, path: &str, rec: &[u8]) -> Result<(), VerifyError> {
        let piece = self.now.pieces.last_mut().expect("a piece was started");
        // A syslog record's message must parse (its event is derived from it).
        if let Err(e) = Record::parse(rec).and_then(|r| r.check_payload()) {
            let index = piece.first_index + piece.leaves as u64;
            return fail(piece.at.place(path), format!("index {index}: {e}"));
        }
        piece.leaves += 1;
        self.now.leaves.push(alg.leaf(rec));
        self.read += 1;
        Ok(())
    }

    /// Hands over what was read (and not yet handed over).
    fn flush(&mut self) {
        if !self.now.pieces.is_empty() {
            (self.emit)(std::mem::replace(&mut self.now, Leaves::with_room()));
        }
    }
}

/// The run failed elsewhere: nothing this hands over is looked at.
fn stopped(path: &str) -> VerifyError {
    VerifyError {
        place: path.to_string(),
        what: "stopped: an earlier segment failed".to_string(),
    }
}

/// A sealed segment's bytes alone: its digest, header, trailer and footer, and its header
/// against its name `[first, end)` and the log's tree hash `alg`. The footer comes back
/// for the blocks and for the checks against the tree.
pub(super) fn sealed_head(
    path: &str,
    f: &dyn ReadAt,
    (first, end): (u64, u64),
    alg: TreeHash,
) -> Result<segment::Footer, VerifyError> {
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
    Ok(footer)
}

/// A sealed segment's blocks (their checksums checked by `decode_block`), their records
/// hashed and handed to `emit` as they are read; then the end: a failure comes after the
/// leaves handed over before it.
pub(super) fn sealed_blocks(
    path: &str,
    f: &dyn ReadAt,
    blocks: &[segment::BlockEntry],
    first: u64,
    alg: TreeHash,
    emit: &mut dyn FnMut(Leaves),
    stop: &AtomicBool,
) -> Result<End, VerifyError> {
    let mut out = Handover::new(emit);
    let end = hash_blocks(path, f, blocks, first, alg, &mut out, stop);
    out.flush();
    end.map(|()| End::Segment(None))
}

fn hash_blocks(
    path: &str,
    f: &dyn ReadAt,
    blocks: &[segment::BlockEntry],
    first: u64,
    alg: TreeHash,
    out: &mut Handover<'_>,
    stop: &AtomicBool,
) -> Result<(), VerifyError> {
    for (n, b) in blocks.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(path));
        }
        let mut buf = vec![0u8; b.compressed_bytes as usize];
        f.read_exact_at(&mut buf, b.offset)
            .or_else(|e| fail(path, format!("block {n}: {e}")))?;
        let raw =
            segment::decode_block(n as u32, b, &buf).or_else(|e| fail(path, e.to_string()))?;
        out.start(PieceAt::Block(n as u32), first + out.read);
        for rec in Entries::new(&raw) {
            let rec = rec.or_else(|(p, r)| fail(path, format!("block {n}: record {p}: {r}")))?;
            out.push_record(alg, path, rec)?;
        }
    }
    Ok(())
}

/// A chunk of an open segment alone: the batches from offset `chunk.from` (where one
/// starts), their records hashed and handed to `emit` as they are read, up to the boundary
/// `chunk.to` or, for the segment's last chunk, to its end: a torn tail (only if `last`,
/// the last open segment) or a failure, after the leaves handed over before it.
pub(super) fn open(
    path: &str,
    f: &dyn ReadAt,
    chunk: Chunk,
    last: bool,
    alg: TreeHash,
    emit: &mut dyn FnMut(Leaves),
    stop: &AtomicBool,
) -> Result<End, VerifyError> {
    let mut out = Handover::new(emit);
    let end = scan_open(path, f, chunk, last, &mut |at, h, body| {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(path));
        }
        out.start(PieceAt::Batch(at), h.first_index);
        for rec in Entries::new(body) {
            let rec =
                rec.or_else(|(p, r)| fail(path, format!("batch at offset {at}: record {p}: {r}")))?;
            out.push_record(alg, path, rec)?;
        }
        Ok(())
    });
    out.flush();
    end
}

/// Called with each valid batch of an open segment: its offset, header and body.
type OnBatch<'a> = dyn FnMut(u64, &batch::BatchHeader, &[u8]) -> Result<(), VerifyError> + 'a;

/// Scans an open segment's batches (FORMATS.md §6) in pieces: one batch in memory at a
/// time, never the segment. `on_batch` sees each valid batch's header
/// with its body. A bad batch is a torn tail (returned, its records not counted) only in
/// the last open segment and only if zeros follow as the format's rule requires
/// (`batch::torn_tail_zeros`, with the format's largest batch as the allowance, since the
/// verifier does not know the configured limit); otherwise it is a failure. A chunk that
/// is not the segment's last stops at its boundary (`End::Chunk`); what it finds before
/// is judged as in one scan of the whole segment.
fn scan_open(
    path: &str,
    f: &dyn ReadAt,
    chunk: Chunk,
    last: bool,
    on_batch: &mut OnBatch<'_>,
) -> Result<End, VerifyError> {
    let len = f.len();
    let mut buf = Vec::new();
    let mut at = chunk.from;
    let bad = loop {
        if chunk.to.is_some_and(|to| at >= to) {
            return Ok(End::Chunk);
        }
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
        return Ok(End::Segment(None));
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
    Ok(End::Segment(Some(format!("{why}: a torn tail (a write a crash interrupted, never acknowledged), its records not counted"))))
}

/// Where a chunk of an open segment starts (a batch, or the file's start), and the batch
/// boundary it ends at; `None`: the rest of the file, the segment's end judged there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chunk {
    pub(super) from: u64,
    pub(super) to: Option<u64>,
}

/// Cuts an open segment into chunks at batch boundaries by walking the batch headers (32
/// bytes a batch, read through a 64 KiB window, checked no further than the format's
/// header). Where the walk cannot go on (zeros, a header that does not decode or runs past
/// the file, a read that fails), the last chunk takes the rest: the scan there judges it.
pub(super) struct OpenChunks {
    file: Box<dyn ReadAt + Send>,
    len: u64,
    /// The batch bytes a chunk spans at least (the last, less).
    chunk_bytes: u64,
    at: u64,
    window: (u64, Vec<u8>),
    done: bool,
}

impl OpenChunks {
    /// Chunks for `threads` threads: four per thread of the file's length (a preallocated
    /// file is mostly zeros until it fills), between 64 KiB (the work a chunk saves must
    /// outweigh handing it over) and 4 MiB (so that the last chunk, which no other work
    /// overlaps, is short: 4 MiB of records is about 10 ms of one core); with one thread,
    /// the whole segment.
    pub(super) fn new(file: Box<dyn ReadAt + Send>, threads: usize) -> OpenChunks {
        let len = file.len();
        let chunk_bytes = match threads {
            1 => u64::MAX,
            n => (len / (4 * n as u64)).clamp(64 << 10, 4 << 20),
        };
        OpenChunks {
            file,
            len,
            chunk_bytes,
            at: 0,
            window: (0, Vec::new()),
            done: false,
        }
    }

    /// The next batch boundary past the batch at `self.at`, if the walk can take it.
    fn step(&mut self) -> Option<u64> {
        let at = self.at;
        if at + BATCH_HEADER_BYTES as u64 > self.len {
            return None;
        }
        let (w_at, w) = &self.window;
        let held = at >= *w_at && at + BATCH_HEADER_BYTES as u64 <= w_at + w.len() as u64;
        if !held {
            let n = (self.len - at).min(64 << 10) as usize;
            let (w_at, buf) = &mut self.window;
            buf.resize(n, 0);
            *w_at = at;
            if self.file.read_exact_at(buf, at).is_err() {
                buf.clear();
                return None;
            }
        }
        let start = (at - self.window.0) as usize;
        let head = &self.window.1[start..start + BATCH_HEADER_BYTES];
        if head.iter().all(|&b| b == 0) {
            return None;
        }
        let total = batch::decode_header(head).ok()?.total_bytes() as u64;
        Some(at + total).filter(|&end| end <= self.len)
    }
}

impl Iterator for OpenChunks {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.done {
            return None;
        }
        let from = self.at;
        while self.at - from < self.chunk_bytes {
            match self.step() {
                Some(next) => self.at = next,
                None => {
                    self.done = true;
                    return Some(Chunk { from, to: None });
                }
            }
        }
        Some(Chunk {
            from,
            to: Some(self.at),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_formats::record::Record;

    /// An open segment's bytes: `batches` batches of 20 records each, then zeros to `len`.
    fn open_segment(batches: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for b in 0..batches {
            let mut body = Vec::new();
            for i in 0..20u64 {
                let payload = format!(r#"{{"n":{},"pad":"{}"}}"#, b * 20 + i, "x".repeat(90));
                batch::push_entry(
                    &mut body,
                    &Record {
                        received_at_unix_ns: 1,
                        submitter: Some("test"),
                        kind: auditlog_formats::record::PayloadKind::Event,
                        payload: payload.as_bytes(),
                    },
                );
            }
            out.extend_from_slice(&batch::encode_header(b * 20, 20, 0, &body));
            out.extend_from_slice(&body);
        }
        assert!(out.len() <= len);
        out.resize(len, 0);
        out
    }

    /// Every batch's offset in an undamaged open segment.
    fn batch_starts(bytes: &[u8]) -> Vec<u64> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Ok(h) = batch::decode_header(&bytes[at..]) {
            out.push(at as u64);
            at += h.total_bytes();
        }
        out
    }

    /// The chunks of `bytes` for `threads`, each read alone and joined as the in-order
    /// side does (stopping where the segment ends or fails): the leaves, where each batch
    /// starts and claims to start, and the end.
    fn read_in_chunks(bytes: &[u8], threads: usize) -> (Vec<Hash>, Vec<(u64, u64)>, String) {
        let stop = AtomicBool::new(false);
        let mut leaves = Vec::new();
        let mut batches = Vec::new();
        let file = bytes.to_vec();
        for chunk in OpenChunks::new(Box::new(bytes.to_vec()), threads) {
            let mut emit = |part: Leaves| {
                leaves.extend(part.leaves);
                for p in &part.pieces {
                    let PieceAt::Batch(at) = p.at else {
                        panic!("a block in an open segment")
                    };
                    batches.push((at, p.first_index));
                }
            };
            match open(
                "seg",
                &file,
                chunk,
                true,
                TreeHash::Sha256,
                &mut emit,
                &stop,
            ) {
                Ok(End::Chunk) => assert!(chunk.to.is_some(), "only a middle chunk goes on"),
                end => return (leaves, batches, format!("{end:?}")),
            }
        }
        panic!("the last chunk ends the segment");
    }

    /// Chunks start at batches and cover the segment, four per thread of the file's length
    /// (at least 64 KiB each); one thread reads it whole.
    #[test]
    fn open_chunks_cut_at_batch_boundaries() {
        let bytes = open_segment(400, 1 << 20);
        let starts = batch_starts(&bytes);
        let single: Vec<Chunk> = OpenChunks::new(Box::new(bytes.clone()), 1).collect();
        assert_eq!(single, vec![Chunk { from: 0, to: None }]);
        for threads in [2, 4, 16] {
            let chunks: Vec<Chunk> = OpenChunks::new(Box::new(bytes.clone()), threads).collect();
            let want = (bytes.len() as u64 / (4 * threads as u64)).max(64 << 10);
            assert!(chunks.len() >= 3, "{threads}: {chunks:?}");
            assert_eq!(chunks[0].from, 0);
            assert_eq!(chunks.last().expect("one").to, None);
            for pair in chunks.windows(2) {
                let to = pair[0].to.expect("a middle chunk ends at a boundary");
                assert_eq!(to, pair[1].from);
                assert!(starts.contains(&to), "{to} is not a batch start");
                assert!(to - pair[0].from >= want, "{pair:?}");
            }
        }
    }

    /// Read in chunks or whole, an open segment gives the same leaves, batches and end,
    /// whatever the damage: a bad checksum with batches after it (a torn tail by the
    /// format's rule: the file ends within the largest batch), a header that does not
    /// decode, bytes after the last batch, a batch that claims another index.
    #[test]
    fn an_open_segment_reads_the_same_in_chunks_as_whole() {
        let clean = open_segment(400, 1 << 20);
        let starts = batch_starts(&clean);
        let mid = starts[starts.len() / 2] as usize;
        let end = (starts[starts.len() - 1] as usize)
            + batch::decode_header(&clean[starts[starts.len() - 1] as usize..])
                .expect("last")
                .total_bytes();
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let damage: Vec<(&str, Damage)> = vec![
            ("clean", Box::new(|_| {})),
            (
                "bad checksum mid-segment",
                Box::new(move |b| b[mid + 100] ^= 1),
            ),
            ("bad header mid-segment", Box::new(move |b| b[mid] ^= 1)),
            (
                "bytes after the last batch",
                Box::new(move |b| b[end + 5000] = 1),
            ),
            (
                "a batch claims another index",
                Box::new(move |b| {
                    let mut h = [0u8; BATCH_HEADER_BYTES];
                    h.copy_from_slice(&b[mid..mid + BATCH_HEADER_BYTES]);
                    let header = batch::decode_header(&h).expect("header");
                    let body = b[mid + BATCH_HEADER_BYTES..mid + header.total_bytes()].to_vec();
                    let again = batch::encode_header(header.first_index + 1, 20, 0, &body);
                    b[mid..mid + BATCH_HEADER_BYTES].copy_from_slice(&again);
                }),
            ),
        ];
        for (name, change) in &damage {
            let mut bytes = clean.clone();
            change(&mut bytes);
            let whole = read_in_chunks(&bytes, 1);
            for threads in [2, 3, 8] {
                assert_eq!(
                    read_in_chunks(&bytes, threads),
                    whole,
                    "{name}, {threads} threads"
                );
            }
            match *name {
                "clean" | "a batch claims another index" => {
                    assert_eq!(whole.0.len(), 8000, "{name}");
                    assert_eq!(whole.2, "Ok(Segment(None))", "{name}");
                }
                _ => assert!(
                    whole.0.len() < 8000 || whole.2.starts_with("Err"),
                    "{name}: {}",
                    whole.2
                ),
            }
        }
    }
}
