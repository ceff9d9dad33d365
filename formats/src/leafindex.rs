//! Leaf-hash index runs (FORMATS.md §5.6): the bytes of one `leafindex/<first>-<end>.run`
//! file. The engine decides when runs are built, merged and read; this module says what a
//! run's bytes are and checks them. All integers big-endian.
//!
//! ```text
//! run     = header(32) entry × (end - first)
//! header  = magic "AUDLIDX1" | first:u64 | end:u64 | crc32c:u32 | reserved:u32 (zero)
//! entry   = key:u64 | index:u64        key = the leaf hash's first 8 bytes, big-endian
//! crc32c  = CRC-32C over every entry, in file order
//! ```
//! A run covers the leaves `[first, end)` exactly once, entries sorted by `(key, index)`
//! with no two equal. The checksum catches torn and altered runs (the index is derived
//! state, rebuilt from the hash store when a run fails): it is not a security boundary, and
//! a key match is only a candidate, confirmed against the full leaf hash.
//!
//! [`RunEncoder`] and [`RunDecoder`] work one entry at a time, so the engine can stream runs
//! of hundreds of MiB; [`encode_run`] and [`decode_run`] are their whole-buffer forms.

use crate::be_u64;

pub const RUN_MAGIC: &[u8; 8] = b"AUDLIDX1";
pub const RUN_HEADER_BYTES: usize = 32;
pub const RUN_ENTRY_BYTES: usize = 16;
const CRC_AT: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("run header truncated: {0} of 32 bytes")]
    TruncatedHeader(usize),
    #[error("bad run magic or reserved bytes")]
    Magic,
    #[error("run range {first}..{end} is empty or reversed")]
    Range { first: u64, end: u64 },
    #[error("{have} bytes for {count} entries")]
    Length { have: u64, count: u64 },
    #[error("entry {0} out of order or range")]
    Order(u64),
    #[error(
        "entries do not match the header's CRC (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("run ends after {read} of {count} entries")]
    Short { read: u64, count: u64 },
}

/// The index key of a leaf hash: its first 8 bytes, big-endian. `hash` holds at least 8.
pub fn key_of(hash: &[u8]) -> u64 {
    be_u64(&hash[..8])
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

    /// The length of the whole run file, `None` if it does not fit a `u64`.
    pub fn file_bytes(&self) -> Option<u64> {
        self.count()
            .checked_mul(RUN_ENTRY_BYTES as u64)?
            .checked_add(RUN_HEADER_BYTES as u64)
    }

    pub fn encode(&self) -> [u8; RUN_HEADER_BYTES] {
        let mut h = [0u8; RUN_HEADER_BYTES];
        h[..8].copy_from_slice(RUN_MAGIC);
        h[8..16].copy_from_slice(&self.first.to_be_bytes());
        h[16..24].copy_from_slice(&self.end.to_be_bytes());
        h[CRC_AT..CRC_AT + 4].copy_from_slice(&self.crc32c.to_be_bytes());
        h
    }

    /// Reads a header: magic, zero reserved bytes, a non-empty range. The CRC is checked by
    /// [`RunDecoder::finish`] once the entries are read.
    pub fn decode(b: &[u8]) -> Result<RunHeader, RunError> {
        if b.len() < RUN_HEADER_BYTES {
            return Err(RunError::TruncatedHeader(b.len()));
        }
        if &b[..8] != RUN_MAGIC || b[28..32] != [0; 4] {
            return Err(RunError::Magic);
        }
        let (first, end) = (be_u64(&b[8..16]), be_u64(&b[16..24]));
        if end <= first {
            return Err(RunError::Range { first, end });
        }
        Ok(RunHeader {
            first,
            end,
            crc32c: crate::be_u32(&b[CRC_AT..CRC_AT + 4]),
        })
    }
}

pub fn encode_entry(key: u64, index: u64) -> [u8; RUN_ENTRY_BYTES] {
    let mut e = [0u8; RUN_ENTRY_BYTES];
    e[..8].copy_from_slice(&key.to_be_bytes());
    e[8..].copy_from_slice(&index.to_be_bytes());
    e
}

/// `(key, index)` of one entry; `e` holds at least 16 bytes.
pub fn decode_entry(e: &[u8]) -> (u64, u64) {
    (be_u64(&e[..8]), be_u64(&e[8..16]))
}

/// Frames the entries of a run of `[first, end)` one at a time, keeping the CRC. The
/// caller gives them sorted, each leaf once: anything else is a bug, and panics.
pub struct RunEncoder {
    first: u64,
    end: u64,
    written: u64,
    last: (u64, u64),
    crc: u32,
}

impl RunEncoder {
    pub fn new(first: u64, end: u64) -> RunEncoder {
        assert!(first < end, "a run covers at least one leaf");
        RunEncoder {
            first,
            end,
            written: 0,
            last: (0, 0),
            crc: 0,
        }
    }

    /// The bytes of the next entry.
    pub fn entry(&mut self, key: u64, index: u64) -> [u8; RUN_ENTRY_BYTES] {
        assert!(
            (self.first..self.end).contains(&index)
                && (self.written == 0 || (key, index) > self.last),
            "leaf index entries out of order or range"
        );
        let e = encode_entry(key, index);
        self.crc = crc32c::crc32c_append(self.crc, &e);
        self.written += 1;
        self.last = (key, index);
        e
    }

    /// Entries given so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The header, written first in the file (the engine writes it last, in place).
    pub fn header(&self) -> [u8; RUN_HEADER_BYTES] {
        assert_eq!(
            self.written,
            self.end - self.first,
            "a run holds each leaf of its range once"
        );
        RunHeader {
            first: self.first,
            end: self.end,
            crc32c: self.crc,
        }
        .encode()
    }
}

/// Checks the entries of a run one at a time, in file order: each in the run's range and
/// after the one before, and at the end the count and the header's CRC.
pub struct RunDecoder {
    header: RunHeader,
    read: u64,
    last: (u64, u64),
    crc: u32,
}

impl RunDecoder {
    pub fn new(header: RunHeader) -> RunDecoder {
        RunDecoder {
            header,
            read: 0,
            last: (0, 0),
            crc: 0,
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

    /// Checks the next entry (16 bytes) and returns `(key, index)`.
    pub fn entry(&mut self, e: &[u8]) -> Result<(u64, u64), RunError> {
        let entry = decode_entry(e);
        let h = &self.header;
        let in_order = self.read == 0 || entry > self.last;
        if self.done() || !in_order || !(h.first..h.end).contains(&entry.1) {
            return Err(RunError::Order(self.read));
        }
        self.crc = crc32c::crc32c_append(self.crc, &e[..RUN_ENTRY_BYTES]);
        (self.read, self.last) = (self.read + 1, entry);
        Ok(entry)
    }

    /// After the last entry: all of them read, and their CRC the header's.
    pub fn finish(&self) -> Result<(), RunError> {
        if !self.done() {
            return Err(RunError::Short {
                read: self.read,
                count: self.header.count(),
            });
        }
        if self.crc != self.header.crc32c {
            return Err(RunError::Checksum {
                stored: self.header.crc32c,
                computed: self.crc,
            });
        }
        Ok(())
    }
}

/// A whole run in memory, from sorted `(key, index)` entries covering `[first, end)`.
pub fn encode_run(first: u64, end: u64, entries: &[(u64, u64)]) -> Vec<u8> {
    let mut enc = RunEncoder::new(first, end);
    let mut out = vec![0u8; RUN_HEADER_BYTES];
    for &(key, index) in entries {
        out.extend_from_slice(&enc.entry(key, index));
    }
    out[..RUN_HEADER_BYTES].copy_from_slice(&enc.header());
    out
}

/// Checks a whole run in memory and returns its header and entries.
pub fn decode_run(bytes: &[u8]) -> Result<(RunHeader, Vec<(u64, u64)>), RunError> {
    let header = RunHeader::decode(bytes)?;
    let have = bytes.len() as u64;
    if header.file_bytes() != Some(have) {
        return Err(RunError::Length {
            have,
            count: header.count(),
        });
    }
    let mut dec = RunDecoder::new(header);
    let entries = bytes[RUN_HEADER_BYTES..]
        .chunks_exact(RUN_ENTRY_BYTES)
        .map(|e| dec.entry(e))
        .collect::<Result<Vec<_>, _>>()?;
    dec.finish()?;
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<(u64, u64)>, Vec<u8>) {
        let mut entries: Vec<(u64, u64)> = (10..40u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % 7, i))
            .collect();
        entries.sort_unstable();
        let bytes = encode_run(10, 40, &entries);
        (entries, bytes)
    }

    #[test]
    fn round_trip() {
        let (entries, bytes) = sample();
        assert_eq!(bytes.len(), RUN_HEADER_BYTES + 30 * RUN_ENTRY_BYTES);
        let (h, back) = decode_run(&bytes).expect("valid");
        assert_eq!((h.first, h.end, h.count()), (10, 40, 30));
        assert_eq!(back, entries);
        assert_eq!(RunHeader::decode(&h.encode()), Ok(h));
        assert_eq!(key_of(&[0, 0, 0, 0, 0, 0, 1, 2, 0xff]), 0x102);
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let (_, bytes) = sample();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(decode_run(&t).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn truncation_order_and_range_are_refused() {
        let (entries, bytes) = sample();
        for cut in 0..bytes.len() {
            assert!(decode_run(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.extend_from_slice(&encode_entry(9, 39));
        assert!(matches!(decode_run(&extra), Err(RunError::Length { .. })));
        // An entry outside the run's range, with the CRC made right: the order check says so.
        let h = RunHeader::decode(&bytes).expect("header");
        let mut dec = RunDecoder::new(h);
        assert_eq!(dec.entry(&encode_entry(0, 9)), Err(RunError::Order(0)));
        // The same entry twice.
        let mut dec = RunDecoder::new(h);
        dec.entry(&encode_entry(entries[0].0, entries[0].1))
            .expect("first");
        let again = dec.entry(&encode_entry(entries[0].0, entries[0].1));
        assert_eq!(again, Err(RunError::Order(1)));
        assert!(matches!(dec.finish(), Err(RunError::Short { read: 1, .. })));
        assert_eq!(
            RunHeader::decode(
                &RunHeader {
                    first: 5,
                    end: 5,
                    crc32c: 0
                }
                .encode()
            ),
            Err(RunError::Range { first: 5, end: 5 })
        );
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn the_encoder_refuses_unsorted_entries() {
        let mut enc = RunEncoder::new(0, 2);
        enc.entry(5, 0);
        enc.entry(4, 1);
    }
}
