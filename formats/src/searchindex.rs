//! The search index's run files (FORMATS.md §5.7): one run holds the index terms of the
//! records `[first, end)` with their posting lists, and the receipt times of every
//! `RECEIVED_AT_SAMPLE_EVERY`th record (the sparse time index that locates a window).
//!
//! ```text
//! header   magic "ALSRCH01" | first u64 | end u64 | terms u32 | samples u32 | crc32c u32 | 0u32
//! samples  samples × received_at u64          (record first + k·64, k = 0..)
//! terms    terms × (key u64 | value u32)      keys strictly ascending
//! postings for each term whose value's top bit is clear: len u32 | roaring bitmap (portable)
//! ```
//! All integers big-endian. A term's value with the top bit set is its one posting (the
//! offset from `first`); otherwise the byte offset of its bitmap in the postings area. The
//! CRC-32C covers everything after the header. Posting lists are `roaring` bitmaps (the
//! portable format of the Roaring specification), offsets relative to `first`.

use roaring::RoaringBitmap;

pub const RUN_MAGIC: [u8; 8] = *b"ALSRCH01";
pub const RUN_HEADER_BYTES: usize = 40;
pub const TERM_BYTES: usize = 12;
/// Every this many records, a run keeps one receipt time.
pub const RECEIVED_AT_SAMPLE_EVERY: u64 = 64;
/// A run's range fits in 31-bit offsets (the top bit marks a one-posting term).
pub const RUN_RECORDS_MAX: u64 = 1 << 31;
const ONE: u32 = 1 << 31;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("search run: {0}")]
    Bad(String),
}

fn bad(what: impl Into<String>) -> RunError {
    RunError::Bad(what.into())
}

/// The receipt-time samples a run of `[first, end)` holds.
pub fn sample_count(first: u64, end: u64) -> u64 {
    (end - first).div_ceil(RECEIVED_AT_SAMPLE_EVERY)
}

/// A term's posting list, as a run stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Postings {
    One(u32),
    Many(RoaringBitmap),
}

impl Postings {
    /// From ascending offsets (at least one).
    pub fn from_sorted(offsets: &[u32]) -> Postings {
        match offsets {
            [one] => Postings::One(*one),
            many => Postings::Many(
                RoaringBitmap::from_sorted_iter(many.iter().copied())
                    .expect("offsets ascending (built in record order)"),
            ),
        }
    }

    pub fn into_bitmap(self) -> RoaringBitmap {
        match self {
            Postings::One(o) => std::iter::once(o).collect(),
            Postings::Many(b) => b,
        }
    }
}

/// Encodes a whole run. `terms` ascending by key, unique; `samples` as `sample_count` says.
pub fn encode_run(first: u64, end: u64, samples: &[u64], terms: &[(u64, Postings)]) -> Vec<u8> {
    assert!(first <= end && end - first <= RUN_RECORDS_MAX, "run range");
    assert_eq!(samples.len() as u64, sample_count(first, end), "samples");
    assert!(terms.windows(2).all(|w| w[0].0 < w[1].0), "terms ascending");
    let mut table = Vec::with_capacity(terms.len() * TERM_BYTES);
    let mut postings = Vec::new();
    for (key, p) in terms {
        table.extend_from_slice(&key.to_be_bytes());
        let value = match p {
            Postings::One(o) => {
                assert!(u64::from(*o) < end - first, "posting outside the run");
                ONE | o
            }
            Postings::Many(b) => {
                assert!(b.max().is_some_and(|m| u64::from(m) < end - first));
                let at = u32::try_from(postings.len()).expect("postings area under 2 GiB");
                assert!(at & ONE == 0, "postings area under 2 GiB");
                let len = u32::try_from(b.serialized_size()).expect("bitmap size");
                postings.extend_from_slice(&len.to_be_bytes());
                b.serialize_into(&mut postings).expect("writing to memory");
                at
            }
        };
        table.extend_from_slice(&value.to_be_bytes());
    }
    let mut body = Vec::with_capacity(samples.len() * 8 + table.len() + postings.len());
    for s in samples {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&table);
    body.extend_from_slice(&postings);
    let mut out = Vec::with_capacity(RUN_HEADER_BYTES + body.len());
    out.extend_from_slice(&RUN_MAGIC);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&(terms.len() as u32).to_be_bytes());
    out.extend_from_slice(&(samples.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&body);
    out
}

/// A run's header, checked against its bytes' length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    pub first: u64,
    pub end: u64,
    pub terms: u64,
    pub samples: u64,
    pub crc: u32,
}

impl RunHeader {
    pub fn decode(h: &[u8]) -> Result<RunHeader, RunError> {
        if h.len() < RUN_HEADER_BYTES || h[..8] != RUN_MAGIC {
            return Err(bad("not a search run (magic)"));
        }
        if h[36..40] != [0u8; 4] {
            return Err(bad("reserved bytes are not zero"));
        }
        let u64_at = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let header = RunHeader {
            first: u64_at(8),
            end: u64_at(16),
            terms: u64::from(u32_at(24)),
            samples: u64::from(u32_at(28)),
            crc: u32_at(32),
        };
        if header.first > header.end || header.end - header.first > RUN_RECORDS_MAX {
            return Err(bad(format!("range [{}, {})", header.first, header.end)));
        }
        if header.samples != sample_count(header.first, header.end) {
            return Err(bad(format!("{} receipt-time samples", header.samples)));
        }
        Ok(header)
    }

    pub fn samples_at(&self) -> usize {
        RUN_HEADER_BYTES
    }

    pub fn terms_at(&self) -> usize {
        RUN_HEADER_BYTES + self.samples as usize * 8
    }

    pub fn postings_at(&self) -> usize {
        self.terms_at() + self.terms as usize * TERM_BYTES
    }
}

/// A term table entry: its key, and its one posting or where its bitmap is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermValue {
    One(u32),
    At(u32),
}

pub fn decode_term(e: &[u8]) -> (u64, TermValue) {
    let key = u64::from_be_bytes(e[..8].try_into().expect("12-byte entry"));
    let v = u32::from_be_bytes(e[8..12].try_into().expect("12-byte entry"));
    let value = if v & ONE != 0 {
        TermValue::One(v & !ONE)
    } else {
        TermValue::At(v)
    };
    (key, value)
}

/// Checks a whole run's bytes (header, length, CRC, key order, postings in range) and
/// returns its header; what `decode_bitmap` then reads is known to be in bounds.
pub fn check_run(bytes: &[u8]) -> Result<RunHeader, RunError> {
    let h = RunHeader::decode(bytes)?;
    let postings_at = h.postings_at();
    if bytes.len() < postings_at {
        return Err(bad(format!(
            "{} bytes, shorter than its tables",
            bytes.len()
        )));
    }
    if crc32c::crc32c(&bytes[RUN_HEADER_BYTES..]) != h.crc {
        return Err(bad("CRC mismatch"));
    }
    let count = h.end - h.first;
    let mut last = None;
    for e in bytes[h.terms_at()..postings_at].chunks_exact(TERM_BYTES) {
        let (key, value) = decode_term(e);
        if last.is_some_and(|l| l >= key) {
            return Err(bad("terms out of order"));
        }
        last = Some(key);
        match value {
            TermValue::One(o) if u64::from(o) >= count => {
                return Err(bad(format!("posting {o} outside the run")))
            }
            TermValue::At(at) if postings_at + at as usize + 4 > bytes.len() => {
                return Err(bad(format!("bitmap at {at} past the end")))
            }
            _ => {}
        }
    }
    Ok(h)
}

/// Reads the bitmap at `at` in a run's postings area (`postings`: from there to the end),
/// checking that it lies inside and that every offset is inside the run.
pub fn decode_bitmap(postings: &[u8], at: u32, count: u64) -> Result<RoaringBitmap, RunError> {
    let at = at as usize;
    let len = postings
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad(format!("bitmap at {at} past the end")))?;
    let body = postings
        .get(at + 4..at + 4 + len)
        .ok_or_else(|| bad(format!("bitmap at {at} of {len} bytes past the end")))?;
    let b = RoaringBitmap::deserialize_from(body).map_err(|e| bad(format!("bitmap: {e}")))?;
    if b.max().is_some_and(|m| u64::from(m) >= count) {
        return Err(bad("bitmap posting outside the run"));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_encodes_and_checks_back() {
        let terms = vec![
            (3u64, Postings::One(7)),
            (9, Postings::from_sorted(&[1, 2, 99])),
            (u64::MAX, Postings::from_sorted(&[0])),
        ];
        let samples = [10u64, 20];
        let bytes = encode_run(1000, 1100, &samples, &terms);
        let h = check_run(&bytes).expect("valid");
        assert_eq!((h.first, h.end, h.terms, h.samples), (1000, 1100, 3, 2));
        let (key, value) = decode_term(&bytes[h.terms_at() + TERM_BYTES..]);
        assert_eq!(key, 9);
        let TermValue::At(at) = value else {
            panic!("a bitmap")
        };
        let b = decode_bitmap(&bytes[h.postings_at()..], at, 100).expect("bitmap");
        assert_eq!(b.iter().collect::<Vec<_>>(), [1, 2, 99]);
        for i in RUN_HEADER_BYTES..bytes.len() {
            let mut d = bytes.clone();
            d[i] ^= 1;
            assert!(check_run(&d).is_err(), "byte {i} changed");
        }
        assert!(check_run(&bytes[..bytes.len() - 1]).is_err());
    }
}
