//! Leaf-hash index runs (FORMATS.md §5.6): the bytes of one `leafindex/<first>-<end>.run`
//! file. The engine decides when runs are built, merged and read; this module says what a
//! run's bytes are and checks them. All fixed-width integers big-endian.
//!
//! ```text
//! run       = header(32) block × ⌈count / 256⌉ directory
//! header    = magic "AUDLIDX2" | first:u64 | end:u64 | crc32c:u32 | reserved:u32 (zero)
//! block     = entry × 256 (the last block: what is left)
//! entry     = delta:LEB128 | offset:u24
//!             key    = the leaf hash's first 4 bytes, big-endian
//!             delta  = key − the previous entry's key; the absolute key for a block's first
//!             offset = index − first
//! directory = (fence:u32 | start:u32) × blocks
//!             fence = the key of the block's first entry, start = its byte offset in the file
//! crc32c    = CRC-32C over every byte after the header, in file order
//! ```
//! A run covers the leaves `[first, end)` exactly once, at most 2^24 of them, entries sorted
//! by `(key, index)` with no two equal; deltas are minimal LEB128. Sorted 32-bit keys are
//! about 2^32 / count apart, so an entry of a run of 10^6 leaves is ~5 bytes, not the 16 of a
//! `(u64, u64)` pair. The checksum catches torn and altered runs (the index is derived
//! state, rebuilt from the hash store when a run fails): it is not a security boundary, and
//! a key match is only a candidate, confirmed against the full leaf hash.
//!
//! [`RunEncoder`] and [`RunDecoder`] work one entry at a time, so the engine can stream runs
//! of tens of MiB; [`encode_run`] and [`decode_run`] are their whole-buffer forms, and
//! [`decode_block`] reads the one block a lookup needs.

use crate::{be_u64, varint};

pub const RUN_MAGIC: &[u8; 8] = b"AUDLIDX2";
/// The magic of the first version's runs (16-byte entries), which the engine deletes and
/// rebuilds in the current form.
pub const RUN_MAGIC_V1: &[u8; 8] = b"AUDLIDX1";
pub const RUN_HEADER_BYTES: usize = 32;
/// Entries per block: a lookup reads one block per run.
pub const BLOCK_ENTRIES: u64 = 256;
/// The most leaves one run covers: an offset is 24 bits.
pub const RUN_ENTRIES_MAX: u64 = 1 << 24;
/// The longest entry: a 5-byte delta and a 3-byte offset.
pub const ENTRY_BYTES_MAX: usize = 8;
pub const DIRECTORY_ENTRY_BYTES: usize = 8;
const CRC_AT: usize = 24;
const DELTA_BYTES_MAX: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("run header truncated: {0} of 32 bytes")]
    TruncatedHeader(usize),
    #[error("bad run magic or reserved bytes")]
    Magic,
    #[error("run range {first}..{end} is empty, reversed or over 2^24 leaves")]
    Range { first: u64, end: u64 },
    #[error("{have} bytes where the entries and directory take {want}")]
    Length { have: u64, want: u64 },
    #[error("entry {0} is malformed (its delta is not minimal LEB128 of a u32, or it is cut)")]
    Entry(u64),
    #[error("entry {0} out of order or range")]
    Order(u64),
    #[error("directory entry of block {0} does not match the block")]
    Directory(u64),
    #[error(
        "run bytes do not match the header's CRC (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("run ends after {read} of {count} entries")]
    Short { read: u64, count: u64 },
}

/// The index key of a leaf hash: its first 4 bytes, big-endian. `hash` holds at least 4.
pub fn key_of(hash: &[u8]) -> u32 {
    crate::be_u32(&hash[..4])
}

/// A run's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    pub first: u64,
    pub end: u64,
    pub crc32c: u32,
}

impl RunHeader {
    pub fn count(&self) -> u64 {
        self.end - self.first
    }

    /// Blocks, and so directory entries.
    pub fn blocks(&self) -> u64 {
        self.count().div_ceil(BLOCK_ENTRIES)
    }

    pub fn encode(&self) -> [u8; RUN_HEADER_BYTES] {
        let mut h = [0u8; RUN_HEADER_BYTES];
        h[..8].copy_from_slice(RUN_MAGIC);
        h[8..16].copy_from_slice(&self.first.to_be_bytes());
        h[16..24].copy_from_slice(&self.end.to_be_bytes());
        h[CRC_AT..CRC_AT + 4].copy_from_slice(&self.crc32c.to_be_bytes());
        h
    }

    /// Reads a header: magic, zero reserved bytes, a non-empty range of at most 2^24. The
    /// CRC is checked by [`RunDecoder::finish`] once the rest is read.
    pub fn decode(b: &[u8]) -> Result<RunHeader, RunError> {
        if b.len() < RUN_HEADER_BYTES {
            return Err(RunError::TruncatedHeader(b.len()));
        }
        if &b[..8] != RUN_MAGIC || b[28..32] != [0; 4] {
            return Err(RunError::Magic);
        }
        let (first, end) = (be_u64(&b[8..16]), be_u64(&b[16..24]));
        if end <= first || end - first > RUN_ENTRIES_MAX {
            return Err(RunError::Range { first, end });
        }
        Ok(RunHeader {
            first,
            end,
            crc32c: crate::be_u32(&b[CRC_AT..CRC_AT + 4]),
        })
    }
}

/// Where a lookup finds one block: the key of its first entry and its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub fence: u32,
    pub start: u32,
}

impl BlockRef {
    pub fn encode(&self) -> [u8; DIRECTORY_ENTRY_BYTES] {
        let mut b = [0u8; DIRECTORY_ENTRY_BYTES];
        b[..4].copy_from_slice(&self.fence.to_be_bytes());
        b[4..].copy_from_slice(&self.start.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> BlockRef {
        BlockRef {
            fence: crate::be_u32(&b[..4]),
            start: crate::be_u32(&b[4..8]),
        }
    }
}

/// Appends one entry's bytes.
fn put_entry(out: &mut Vec<u8>, delta: u32, offset: u32) {
    varint::put(out, u64::from(delta));
    out.extend_from_slice(&offset.to_be_bytes()[1..]);
}

/// `(delta, offset, bytes used)` of the entry at the start of `b`; `None` if it is cut or
/// its delta is not minimal LEB128 of a u32.
fn get_entry(b: &[u8]) -> Option<(u32, u32, usize)> {
    let (delta, used) = varint::get(b, DELTA_BYTES_MAX)?;
    let delta = u32::try_from(delta).ok()?;
    let o = b.get(used..used + 3)?;
    let offset = u32::from_be_bytes([0, o[0], o[1], o[2]]);
    Some((delta, offset, used + 3))
}

/// Frames the entries of a run of `[first, end)` one at a time, keeping the CRC and the
/// directory. The caller gives them sorted, each leaf once: anything else is a bug, and
/// panics.
pub struct RunEncoder {
    first: u64,
    end: u64,
    written: u64,
    last: (u32, u64),
    /// Bytes from the file's start to the next entry.
    at: u64,
    crc: u32,
    directory: Vec<BlockRef>,
}

impl RunEncoder {
    pub fn new(first: u64, end: u64) -> RunEncoder {
        assert!(
            first < end && end - first <= RUN_ENTRIES_MAX,
            "a run covers 1 to 2^24 leaves"
        );
        RunEncoder {
            first,
            end,
            written: 0,
            last: (0, 0),
            at: RUN_HEADER_BYTES as u64,
            crc: 0,
            directory: Vec::with_capacity((end - first).div_ceil(BLOCK_ENTRIES) as usize),
        }
    }

    /// Appends the next entry's bytes to `out`.
    pub fn entry(&mut self, key: u32, index: u64, out: &mut Vec<u8>) {
        assert!(
            (self.first..self.end).contains(&index)
                && (self.written == 0 || (key, index) > self.last),
            "leaf index entries out of order or range"
        );
        let block_start = self.written.is_multiple_of(BLOCK_ENTRIES);
        let delta = if block_start {
            let start = u32::try_from(self.at).expect("a run of 2^24 entries fits 4 GiB");
            self.directory.push(BlockRef { fence: key, start });
            key
        } else {
            key - self.last.0
        };
        let from = out.len();
        put_entry(out, delta, (index - self.first) as u32);
        self.crc = crc32c::crc32c_append(self.crc, &out[from..]);
        self.at += (out.len() - from) as u64;
        self.written += 1;
        self.last = (key, index);
    }

    /// Entries given so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes of the entries given so far.
    pub fn bytes_written(&self) -> u64 {
        self.at - RUN_HEADER_BYTES as u64
    }

    /// After the last entry: the directory (to append after the entries) and the header
    /// (written first in the file; the engine writes it last, in place).
    pub fn finish(mut self) -> (Vec<u8>, [u8; RUN_HEADER_BYTES], Vec<BlockRef>) {
        assert_eq!(
            self.written,
            self.end - self.first,
            "a run holds each leaf of its range once"
        );
        let dir: Vec<u8> = self.directory.iter().flat_map(BlockRef::encode).collect();
        self.crc = crc32c::crc32c_append(self.crc, &dir);
        let header = RunHeader {
            first: self.first,
            end: self.end,
            crc32c: self.crc,
        };
        (dir, header.encode(), self.directory)
    }
}

/// Checks the entries of a run one at a time, in file order: each well formed, in the run's
/// range and after the one before; then the directory, the length and the header's CRC.
pub struct RunDecoder {
    header: RunHeader,
    read: u64,
    last: (u32, u64),
    at: u64,
    crc: u32,
    directory: Vec<BlockRef>,
}

impl RunDecoder {
    pub fn new(header: RunHeader) -> RunDecoder {
        RunDecoder {
            header,
            read: 0,
            last: (0, 0),
            at: RUN_HEADER_BYTES as u64,
            crc: 0,
            directory: Vec::with_capacity(header.blocks() as usize),
        }
    }

    /// Entries checked so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// Whether every entry the header promises has been read.
    pub fn done(&self) -> bool {
        self.read == self.header.count()
    }

    /// Checks the entry at the start of `b` (which holds at least `ENTRY_BYTES_MAX` bytes,
    /// or all that is left) and returns `((key, index), bytes used)`.
    pub fn entry(&mut self, b: &[u8]) -> Result<((u32, u64), usize), RunError> {
        if self.done() {
            return Err(RunError::Order(self.read));
        }
        let (delta, offset, used) = get_entry(b).ok_or(RunError::Entry(self.read))?;
        let block_start = self.read.is_multiple_of(BLOCK_ENTRIES);
        let key = if block_start {
            Some(delta)
        } else {
            self.last.0.checked_add(delta)
        };
        // Checked: `first` comes from the file, and an offset past `end` may pass `u64::MAX`.
        let index = self.header.first.checked_add(u64::from(offset));
        let entry = key.zip(index);
        let h = &self.header;
        let entry = match entry {
            Some(e) if (self.read == 0 || e > self.last) && (h.first..h.end).contains(&e.1) => e,
            _ => return Err(RunError::Order(self.read)),
        };
        if block_start {
            // The directory is read after the entries; a run's bytes stay under 4 GiB.
            let start = u32::try_from(self.at).map_err(|_| RunError::Entry(self.read))?;
            self.directory.push(BlockRef {
                fence: entry.0,
                start,
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, &b[..used]);
        self.at += used as u64;
        (self.read, self.last) = (self.read + 1, entry);
        Ok((entry, used))
    }

    /// Where the directory starts: the byte after the last entry (once `done`).
    pub fn directory_at(&self) -> u64 {
        self.at
    }

    /// After the last entry, given the rest of the file (the directory, exactly): every
    /// entry read, the directory the one the blocks make, and the CRC the header's.
    pub fn finish(mut self, directory: &[u8]) -> Result<Vec<BlockRef>, RunError> {
        if !self.done() {
            return Err(RunError::Short {
                read: self.read,
                count: self.header.count(),
            });
        }
        let want = self.directory.len() * DIRECTORY_ENTRY_BYTES;
        if directory.len() != want {
            return Err(RunError::Length {
                have: self.at + directory.len() as u64,
                want: self.at + want as u64,
            });
        }
        for (i, (b, have)) in directory
            .chunks_exact(DIRECTORY_ENTRY_BYTES)
            .zip(&self.directory)
            .enumerate()
        {
            if BlockRef::decode(b) != *have {
                return Err(RunError::Directory(i as u64));
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, directory);
        if self.crc != self.header.crc32c {
            return Err(RunError::Checksum {
                stored: self.header.crc32c,
                computed: self.crc,
            });
        }
        Ok(self.directory)
    }
}

/// The entries of one block of a run checked whole, as a lookup reads it: `bytes` is the
/// block (from its directory `start` to the next block's, or to the directory), `first` the
/// run's first leaf. Yields `(key, index)` in order; `Err` names the entry of the block that
/// is malformed or out of order (the run changed on disk since it was checked).
pub fn decode_block(
    bytes: &[u8],
    first: u64,
    end: u64,
) -> impl Iterator<Item = Result<(u32, u64), RunError>> + '_ {
    let mut at = 0;
    let mut last: Option<(u32, u64)> = None;
    let mut i = 0u64;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let item = match get_entry(&bytes[at..]) {
            None => Err(RunError::Entry(i)),
            Some((delta, offset, used)) => {
                at += used;
                let key = match last {
                    None => Some(delta),
                    Some((k, _)) => k.checked_add(delta),
                };
                let entry = key.zip(first.checked_add(u64::from(offset)));
                match entry {
                    Some(e) if last.is_none_or(|l| e > l) && (first..end).contains(&e.1) => {
                        last = Some(e);
                        Ok(e)
                    }
                    _ => Err(RunError::Order(i)),
                }
            }
        };
        if item.is_err() {
            at = bytes.len();
        }
        i += 1;
        Some(item)
    })
}

/// A whole run in memory, from sorted `(key, index)` entries covering `[first, end)`.
pub fn encode_run(first: u64, end: u64, entries: &[(u32, u64)]) -> Vec<u8> {
    let mut enc = RunEncoder::new(first, end);
    let mut out = vec![0u8; RUN_HEADER_BYTES];
    for &(key, index) in entries {
        enc.entry(key, index, &mut out);
    }
    let (dir, header, _) = enc.finish();
    out.extend_from_slice(&dir);
    out[..RUN_HEADER_BYTES].copy_from_slice(&header);
    out
}

/// Checks a whole run in memory and returns its header and entries.
pub fn decode_run(bytes: &[u8]) -> Result<(RunHeader, Vec<(u32, u64)>), RunError> {
    let header = RunHeader::decode(bytes)?;
    let mut dec = RunDecoder::new(header);
    let mut entries = Vec::with_capacity(header.count().min(bytes.len() as u64) as usize);
    let mut at = RUN_HEADER_BYTES;
    while !dec.done() {
        let (e, used) = dec.entry(&bytes[at..])?;
        entries.push(e);
        at += used;
    }
    dec.finish(&bytes[at..])?;
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(count: u64) -> (Vec<(u32, u64)>, Vec<u8>) {
        let first = 10;
        let mut entries: Vec<(u32, u64)> = (first..first + count)
            .map(|i| {
                (
                    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 % 50_000,
                    i,
                )
            })
            .collect();
        entries.sort_unstable();
        let bytes = encode_run(first, first + count, &entries);
        (entries, bytes)
    }

    #[test]
    fn round_trip_with_blocks_and_directory() {
        for count in [1, 30, 255, 256, 257, 600] {
            let (entries, bytes) = sample(count);
            let (h, back) = decode_run(&bytes).expect("valid");
            assert_eq!((h.first, h.end, h.count()), (10, 10 + count, count));
            assert_eq!(back, entries);
            assert_eq!(RunHeader::decode(&h.encode()), Ok(h));
            // Every block decodes on its own from the directory.
            let mut dec = RunDecoder::new(h);
            let mut at = RUN_HEADER_BYTES;
            while !dec.done() {
                at += dec.entry(&bytes[at..]).expect("entry").1;
            }
            let dir = dec.finish(&bytes[at..]).expect("directory");
            assert_eq!(dir.len() as u64, h.blocks());
            let mut all = Vec::new();
            for (i, b) in dir.iter().enumerate() {
                let stop = dir.get(i + 1).map_or(at, |n| n.start as usize);
                let block: Vec<_> = decode_block(&bytes[b.start as usize..stop], 10, 10 + count)
                    .collect::<Result<_, _>>()
                    .expect("block");
                assert_eq!(block[0].0, b.fence);
                all.extend(block);
            }
            assert_eq!(all, entries);
        }
        assert_eq!(key_of(&[0, 0, 1, 2, 0xff]), 0x102);
    }

    /// FORMATS.md §5.6's example, byte for byte.
    #[test]
    fn the_formats_md_example() {
        let body = [0x84, 0x86, 0x88, 0x08, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0x20];
        let mut want = b"AUDLIDX2".to_vec();
        want.extend([0; 8]);
        want.extend(1u64.to_be_bytes());
        want.extend(crc32c::crc32c(&body).to_be_bytes());
        want.extend([0; 4]);
        want.extend(body);
        assert_eq!(encode_run(0, 1, &[(0x0102_0304, 0)]), want);
    }

    #[test]
    fn entries_are_about_five_bytes_in_a_big_run() {
        // 2^20 leaves with random keys: deltas ~2^12, mostly two LEB128 bytes.
        let count = 1u64 << 20;
        let entries: Vec<(u32, u64)> = {
            let mut e: Vec<(u32, u64)> = (0..count)
                .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32, i))
                .collect();
            e.sort_unstable();
            e
        };
        let bytes = encode_run(0, count, &entries);
        let per_entry = bytes.len() as f64 / count as f64;
        assert!(per_entry < 5.1, "{per_entry} bytes per entry");
        assert_eq!(decode_run(&bytes).expect("valid").1, entries);
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let (_, bytes) = sample(300);
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(decode_run(&t).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn truncation_order_range_and_overlong_deltas_are_refused() {
        let (entries, bytes) = sample(30);
        for cut in 0..bytes.len() {
            assert!(decode_run(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0; 8]);
        assert!(matches!(decode_run(&extra), Err(RunError::Length { .. })));
        let h = RunHeader::decode(&bytes).expect("header");
        // An entry outside the run's range.
        let mut e = Vec::new();
        put_entry(&mut e, 0, 40);
        assert_eq!(RunDecoder::new(h).entry(&e), Err(RunError::Order(0)));
        // The same entry twice.
        let mut dec = RunDecoder::new(h);
        let mut e = Vec::new();
        put_entry(&mut e, entries[0].0, (entries[0].1 - 10) as u32);
        dec.entry(&e).expect("first");
        let mut again = Vec::new();
        put_entry(&mut again, 0, (entries[0].1 - 10) as u32);
        assert_eq!(dec.entry(&again), Err(RunError::Order(1)));
        assert!(matches!(
            dec.finish(&[]),
            Err(RunError::Short { read: 1, .. })
        ));
        // Zero written in two LEB128 bytes, and a delta over u32.
        assert_eq!(get_entry(&[0x80, 0x00, 0, 0, 1]), None);
        // An offset that would carry `first + offset` past u64::MAX (found by the fuzzer).
        let top = RunHeader {
            first: u64::MAX - 2,
            end: u64::MAX,
            crc32c: 0,
        };
        let mut e = Vec::new();
        put_entry(&mut e, 0, 0xff_ffff);
        assert_eq!(RunDecoder::new(top).entry(&e), Err(RunError::Order(0)));
        assert_eq!(
            decode_block(&e, u64::MAX - 2, u64::MAX).next(),
            Some(Err(RunError::Order(0)))
        );
        assert_eq!(get_entry(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 1]), None);
        assert_eq!(
            get_entry(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 1]),
            Some((u32::MAX, 1, 8))
        );
        for (first, end) in [(5, 5), (0, RUN_ENTRIES_MAX + 1)] {
            let h = RunHeader {
                first,
                end,
                crc32c: 0,
            };
            assert_eq!(
                RunHeader::decode(&h.encode()),
                Err(RunError::Range { first, end })
            );
        }
        let mut v1 = bytes.clone();
        v1[..8].copy_from_slice(RUN_MAGIC_V1);
        assert_eq!(decode_run(&v1), Err(RunError::Magic));
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn the_encoder_refuses_unsorted_entries() {
        let mut enc = RunEncoder::new(0, 2);
        let mut out = Vec::new();
        enc.entry(5, 0, &mut out);
        enc.entry(4, 1, &mut out);
    }
}
