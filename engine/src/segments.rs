//! Segment files: naming, scanning the open segment (the last complete batch and a torn
//! tail), loading sealed segments, and reading records back from either.
//!
//! `segments/{first:020}.open`               open segment: zero-filled, batches from offset 0
//! `segments/{first:020}-{end:020}.seg`      sealed segment (formats::segment layout)
//! `segments/prealloc-{n:06}.tmp`            zero-filled file waiting to become open
//! `segments/recycle-{first:020}.old`         a sealed open segment waiting to be zeroed
//!                                            in place and reused as a prealloc file

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auditlog_formats::batch::{self, BatchError, Entries, BATCH_HEADER_BYTES};
use auditlog_formats::segment::{self, Footer, SegmentHeader, TRAILER_BYTES};

use crate::blockcache::{BlockCache, BlockKey};
use crate::error::{corrupt, io_err, Result};

pub(crate) use auditlog_formats::layout::{
    open_name, parse_segment_name as parse_name, recycle_name, sealed_name, SegmentName,
};

/// Where one batch of the open segment lies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchLoc {
    pub first_index: u64,
    pub offset: u64,
    pub total_bytes: u32,
}

pub(crate) enum Body {
    Open { batches: Vec<BatchLoc> },
    Sealed { footer: Arc<Footer> },
}

pub(crate) struct Segment {
    pub first: u64,
    pub end: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub body: Body,
}

/// Reads a file through a 1 MiB window, so a scan of many small batches costs a few
/// large reads instead of two syscalls per batch. Not larger: the sealer scans through it
/// beside the sequencer, and one read cannot give the CPU away (`yielding`).
pub(crate) struct Window<'f> {
    file: &'f File,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW_BYTES: usize = 1 << 20;

impl<'f> Window<'f> {
    pub fn new(file: &'f File, file_len: u64) -> Window<'f> {
        Window {
            file,
            file_len,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    pub fn get(&mut self, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = (offset + len as u64).min(self.file_len);
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            let want = (end - offset)
                .max(WINDOW_BYTES as u64)
                .min(self.file_len - offset) as usize;
            self.buf.resize(want, 0);
            let mut done = 0;
            while done < want {
                let n = self
                    .file
                    .read_at(&mut self.buf[done..], offset + done as u64)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            self.buf.truncate(done);
            self.start = offset;
        }
        let a = (offset - self.start) as usize;
        let b = ((end - self.start) as usize).min(self.buf.len());
        Ok(&self.buf[a.min(b)..b])
    }
}

pub(crate) struct OpenScan {
    pub batches: Vec<BatchLoc>,
    pub end_index: u64,
    /// Offset just past the last complete batch: where the next batch goes.
    pub valid_bytes: u64,
    /// The first bad batch, if the segment does not end in zeros there.
    pub torn: Option<(u64, BatchError)>,
}

/// Scans an open segment from its start. Stops at zeros (the normal end) or at the first
/// batch that does not check (a torn tail). Data that does check beyond a bad batch, past
/// what one torn write could have left, is corruption and refused. Calls `on_record` for
/// every record of every complete batch.
pub(crate) fn scan_open(
    path: &Path,
    file: &File,
    first: u64,
    tail_allowance_bytes: u64,
    mut on_record: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<OpenScan> {
    let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
    let mut window = Window::new(file, file_len);
    let mut scan = OpenScan {
        batches: Vec::new(),
        end_index: first,
        valid_bytes: 0,
        torn: None,
    };
    let mut offset = 0u64;
    loop {
        if offset + BATCH_HEADER_BYTES as u64 > file_len {
            break;
        }
        let head = window
            .get(offset, BATCH_HEADER_BYTES)
            .map_err(io_err(path, "read"))?;
        if head.iter().all(|&b| b == 0) {
            break;
        }
        let total = match batch::decode_header(head) {
            Ok(h) => h.total_bytes(),
            Err(e) => {
                scan.torn = Some((offset, e));
                break;
            }
        };
        let bytes = window.get(offset, total).map_err(io_err(path, "read"))?;
        let (header, body) = match batch::decode_batch(bytes) {
            Ok(x) => x,
            Err(e) => {
                scan.torn = Some((offset, e));
                break;
            }
        };
        if header.first_index != scan.end_index {
            return Err(corrupt(
                path,
                format!(
                    "batch at offset {offset}: starts at index {}, expected {}",
                    header.first_index, scan.end_index
                ),
            ));
        }
        for (i, rec) in Entries::new(body).enumerate() {
            let rec = rec.map_err(|(p, r)| {
                corrupt(path, format!("batch at offset {offset}: record {p}: {r}"))
            })?;
            on_record(header.first_index + i as u64, rec)?;
        }
        scan.batches.push(BatchLoc {
            first_index: header.first_index,
            offset,
            total_bytes: total as u32,
        });
        scan.end_index = header.end_index();
        offset += total as u64;
        scan.valid_bytes = offset;
    }
    if let Some((at, e)) = &scan.torn {
        // One torn write can leave garbage over at most one batch's length; beyond that the
        // file must still be zeros, or something other than a crash changed it.
        let (from, to) = batch::torn_tail_zeros(*at, tail_allowance_bytes, file_len);
        let mut pos = from;
        while pos < to {
            let chunk = window
                .get(pos, (to - pos).min(1 << 20) as usize)
                .map_err(io_err(path, "read"))?;
            if chunk.is_empty() {
                break;
            }
            if let Some(nz) = chunk.iter().position(|&b| b != 0) {
                return Err(corrupt(
                    path,
                    format!(
                        "batch at offset {at}: {e}; and data follows at offset {}: corruption, not a torn tail",
                        pos + nz as u64
                    ),
                ));
            }
            pos += chunk.len() as u64;
        }
    }
    Ok(scan)
}

/// Reads and checks a sealed segment's header, trailer and footer (not its digest: that is
/// the verifier's full pass).
/// Where a sealed segment's bytes are: its local file, or a copy fetched from the store.
/// The same decoding and the same checks serve both.
pub(crate) trait SealedBytes {
    fn len_bytes(&self) -> std::io::Result<u64>;
    fn read_bytes_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Feeds bytes `[0, len)` to `h`.
    fn hash_prefix(&self, h: &mut blake3::Hasher, len: u64) -> std::io::Result<()>;
}

impl SealedBytes for File {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_bytes_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    /// In pieces, with a yield after each: the sealer checks every segment it writes this
    /// way, beside the sequencer (`yielding`).
    fn hash_prefix(&self, h: &mut blake3::Hasher, len: u64) -> std::io::Result<()> {
        let mut buf = vec![0u8; crate::yielding::PIECE_BYTES.min(len as usize)];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            FileExt::read_exact_at(self, &mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
            crate::yielding::point();
        }
        Ok(())
    }
}

impl SealedBytes for [u8] {
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_bytes_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = from
            .checked_add(buf.len())
            .and_then(|to| self.get(from..to))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// Directly: the bytes are already in memory.
    fn hash_prefix(&self, h: &mut blake3::Hasher, len: u64) -> std::io::Result<()> {
        let to = usize::try_from(len).unwrap_or(usize::MAX);
        let covered = self
            .get(..to)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        h.update(covered);
        Ok(())
    }
}

pub(crate) fn load_sealed(
    path: &Path,
    file: &(impl SealedBytes + ?Sized),
) -> Result<(SegmentHeader, Footer)> {
    let len = file.len_bytes().map_err(io_err(path, "stat"))?;
    let bad = |e: segment::SegmentError| corrupt(path, e.to_string());
    let mut head = [0u8; segment::HEADER_BYTES];
    file.read_bytes_at(&mut head, 0)
        .map_err(io_err(path, "read header"))?;
    let header = SegmentHeader::decode(&head).map_err(bad)?;
    if len < TRAILER_BYTES as u64 {
        return Err(bad(segment::SegmentError::TooShort(len)));
    }
    let mut tail = [0u8; TRAILER_BYTES];
    file.read_bytes_at(&mut tail, len - TRAILER_BYTES as u64)
        .map_err(io_err(path, "read trailer"))?;
    let trailer = segment::decode_trailer(len, &tail).map_err(bad)?;
    let mut fb = vec![0u8; trailer.footer_bytes as usize];
    file.read_bytes_at(&mut fb, trailer.footer_offset)
        .map_err(io_err(path, "read footer"))?;
    let footer = segment::decode_footer(&header, &trailer, &fb).map_err(bad)?;
    Ok((header, footer))
}

/// Checks a sealed segment's bytes against the BLAKE3 digest in its trailer (everything
/// but the last `DIGEST_COVERS_ALL_BUT` bytes). For the sealer's read-back and for copies
/// fetched from the store.
pub(crate) fn check_digest(place: &Path, file: &(impl SealedBytes + ?Sized)) -> Result<()> {
    let len = file.len_bytes().map_err(io_err(place, "stat"))?;
    if len < TRAILER_BYTES as u64 {
        return Err(corrupt(
            place,
            segment::SegmentError::TooShort(len).to_string(),
        ));
    }
    let mut tail = [0u8; TRAILER_BYTES];
    file.read_bytes_at(&mut tail, len - TRAILER_BYTES as u64)
        .map_err(io_err(place, "read trailer"))?;
    let trailer = segment::decode_trailer(len, &tail).map_err(|e| corrupt(place, e.to_string()))?;
    let covered = len - segment::DIGEST_COVERS_ALL_BUT as u64;
    let mut h = blake3::Hasher::new();
    file.hash_prefix(&mut h, covered)
        .map_err(io_err(place, "read"))?;
    if <[u8; 32]>::from(h.finalize()) != trailer.digest {
        return Err(corrupt(place, "sealed segment digest mismatch"));
    }
    Ok(())
}

/// Calls `f(index, record)` for every record of a sealed segment in `[start, end)`, one
/// decompressed block in memory at a time.
pub(crate) fn for_each_sealed_record(
    path: &Path,
    file: &(impl SealedBytes + ?Sized),
    footer: &Footer,
    reads: Reads<'_>,
    start: u64,
    end: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
) -> Result<bool> {
    let Reads::Cached { cache, point } = reads else {
        return for_each_sealed_block(path, file, footer, start, end, &mut |b, raw| {
            walk(path, b.first_index, raw, start, end, f)
        });
    };
    let i = first_block(footer, start);
    let segment_first = footer.blocks.first().map_or(0, |b| b.first_index);
    let mut buf = Vec::new();
    for (n, b) in footer.blocks.iter().enumerate().skip(i) {
        if b.first_index >= end {
            break;
        }
        let key = BlockKey {
            segment_first,
            block: n as u32,
            crc32c: b.crc32c,
        };
        // A point read decodes a block only as far as its records, and keeps nothing.
        let wanted = (end - b.first_index).min(u64::from(b.record_count)) as u32;
        let raw = match cache.get(key) {
            Some(raw) => raw,
            None if point && wanted < b.record_count => {
                Arc::new(read_block_records(path, file, n, b, wanted, &mut buf)?)
            }
            None => cache.get_or_decode(key, || {
                read_block_records(path, file, n, b, b.record_count, &mut buf)
            })?,
        };
        if !walk(path, b.first_index, &raw, start, end, f)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How a sealed segment's blocks are read: decoded for this read only (the sealer's
/// check, a store's copy), or through the block cache, where a point read (a few records:
/// a search's candidates, one event) decodes a block it misses only as far as it needs.
#[derive(Clone, Copy)]
pub(crate) enum Reads<'c> {
    Uncached,
    Cached { cache: &'c BlockCache, point: bool },
}

/// The number of the block holding `start` (or the first block).
fn first_block(footer: &Footer, start: u64) -> usize {
    footer
        .blocks
        .partition_point(|b| b.first_index <= start)
        .saturating_sub(1)
}

/// The first `records` records of block `n`, read into `buf` and decoded, its CRC and
/// sizes checked.
fn read_block_records(
    path: &Path,
    file: &(impl SealedBytes + ?Sized),
    n: usize,
    b: &segment::BlockEntry,
    records: u32,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>> {
    buf.resize(b.compressed_bytes as usize, 0);
    file.read_bytes_at(buf, b.offset)
        .map_err(|e| io_err(path, format!("read block {n}"))(e))?;
    segment::decode_block_records(n as u32, b, buf, records)
        .map_err(|e| corrupt(path, e.to_string()))
}

/// Calls `f(block, raw)` with each block of a sealed segment that holds records of
/// `[start, end)`, decompressed and checked (its CRC and sizes). The raw bytes are the
/// block's framed records, exactly as the sealer compressed them.
pub(crate) fn for_each_sealed_block(
    path: &Path,
    file: &(impl SealedBytes + ?Sized),
    footer: &Footer,
    start: u64,
    end: u64,
    f: &mut dyn FnMut(&segment::BlockEntry, &[u8]) -> Result<bool>,
) -> Result<bool> {
    let mut buf = Vec::new();
    for (n, b) in footer
        .blocks
        .iter()
        .enumerate()
        .skip(first_block(footer, start))
    {
        if b.first_index >= end {
            break;
        }
        let raw = read_block_records(path, file, n, b, b.record_count, &mut buf)?;
        if !f(b, &raw)? {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Segment {
    /// Calls `f(index, record)` for every record in `[start, end)` ∩ this segment, in order;
    /// a sealed segment's blocks as `reads` says.
    pub(crate) fn for_each_record(
        &self,
        reads: Reads<'_>,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<bool> {
        let (start, end) = (start.max(self.first), end.min(self.end));
        if start >= end {
            return Ok(true);
        }
        match &self.body {
            Body::Open { batches } => {
                let i = batches
                    .partition_point(|b| b.first_index <= start)
                    .saturating_sub(1);
                if end - start == 1 {
                    // One record: walk the batch in small reads instead of reading all of
                    // it (under load a batch is megabytes). The caller checks the record
                    // against its stored leaf hash, in place of the batch checksum.
                    let loc = batches[i];
                    let rec = self.read_one_open(&loc, start)?;
                    return f(start, &rec);
                }
                let mut buf = Vec::new();
                for loc in &batches[i..] {
                    if loc.first_index >= end {
                        break;
                    }
                    buf.resize(loc.total_bytes as usize, 0);
                    self.file.read_exact_at(&mut buf, loc.offset).map_err(|e| {
                        io_err(&self.path, format!("read batch at {}", loc.offset))(e)
                    })?;
                    let (_, body) = batch::decode_batch(&buf).map_err(|e| {
                        corrupt(&self.path, format!("batch at offset {}: {e}", loc.offset))
                    })?;
                    if !walk(&self.path, loc.first_index, body, start, end, f)? {
                        return Ok(false);
                    }
                }
            }
            Body::Sealed { footer, .. } => {
                return for_each_sealed_record(
                    &self.path,
                    &*self.file,
                    footer,
                    reads,
                    start,
                    end,
                    f,
                );
            }
        }
        Ok(true)
    }

    fn read_one_open(&self, loc: &BatchLoc, index: u64) -> Result<Vec<u8>> {
        const STEP: usize = 64 << 10;
        let batch_end = loc.offset + loc.total_bytes as u64;
        let mut buf: Vec<u8> = Vec::with_capacity(STEP);
        let mut buf_at = 0u64;
        let read = |at: u64, len: usize, buf: &mut Vec<u8>, buf_at: &mut u64| -> Result<()> {
            if at >= *buf_at && at + len as u64 <= *buf_at + buf.len() as u64 {
                return Ok(());
            }
            if at + len as u64 > batch_end {
                return Err(corrupt(
                    &self.path,
                    format!("batch at offset {}: record runs past its end", loc.offset),
                ));
            }
            let n = (batch_end - at).min(len.max(STEP) as u64) as usize;
            buf.resize(n, 0);
            self.file
                .read_exact_at(buf, at)
                .map_err(|e| io_err(&self.path, format!("read batch at {}", loc.offset))(e))?;
            *buf_at = at;
            Ok(())
        };
        let mut at = loc.offset + BATCH_HEADER_BYTES as u64;
        let mut i = loc.first_index;
        loop {
            read(at, 4, &mut buf, &mut buf_at)?;
            let o = (at - buf_at) as usize;
            let Some(len) = batch::decode_entry_prefix(&buf[o..]) else {
                return Err(corrupt(
                    &self.path,
                    format!(
                        "batch at offset {}: record length over the limit",
                        loc.offset
                    ),
                ));
            };
            if i == index {
                read(at + 4, len, &mut buf, &mut buf_at)?;
                let o = (at + 4 - buf_at) as usize;
                return Ok(buf[o..o + len].to_vec());
            }
            at += 4 + len as u64;
            i += 1;
        }
    }
}

pub(crate) fn walk(
    path: &Path,
    first: u64,
    body: &[u8],
    start: u64,
    end: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
) -> Result<bool> {
    for (i, rec) in Entries::new(body).enumerate() {
        let index = first + i as u64;
        if index >= end {
            return Ok(true);
        }
        let rec =
            rec.map_err(|(p, r)| corrupt(path, format!("record {p} after index {first}: {r}")))?;
        if index >= start && !f(index, rec)? {
            return Ok(false);
        }
    }
    Ok(true)
}
