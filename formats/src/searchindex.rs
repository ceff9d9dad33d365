//! The search index's run files (FORMATS.md §5.7): one run holds the index terms of the
//! records `[first, end)` with their posting lists, and receipt times (the sparse time
//! index that locates a window): every point where the receipt time changes when there are
//! few (a submission's records share one stamp), else that of every
//! `RECEIVED_AT_SAMPLE_EVERY`th record.
//!
//! ```text
//! header   magic "ALSRCH01" | first u64 | end u64 | terms u32 | times u32 | crc32c u32 | flags u32
//!          (the CRC-32C covers every byte of the run but its own four)
//! times    times × (offset u32 | received_at u64)   flags bit 0: exact (change points)
//! terms    terms × (key u64 | value u32)      keys strictly ascending
//! postings for each term whose value's top bit is clear: len u32 | roaring bitmap (portable)
//! ```
//! All integers big-endian. A term's value with the top bit set is its one posting (the
//! offset from `first`); otherwise the byte offset of its bitmap in the postings area.
//! Posting lists are `roaring` bitmaps (the portable format of the Roaring specification), offsets relative to `first`.

use roaring::RoaringBitmap;

use crate::{be_u32, be_u64};

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

/// Change points are kept (exact) while they are at most one per this many records.
pub const EXACT_TIMES_RECORDS_PER_POINT: u64 = 16;
const TIME_BYTES: usize = 12;
const EXACT: u32 = 1;

/// A run's receipt times: `(offset, received_at)` of some of its records, offsets
/// ascending from 0. `exact`: the points are where the time changes, so every record has
/// the time of the point at or before it; otherwise they are every 64th record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Times {
    pub exact: bool,
    pub points: Vec<(u32, u64)>,
}

impl Times {
    /// From a run's receipt times in record order.
    pub fn of(received: &[u64]) -> Times {
        let count = received.len() as u64;
        let changes: Vec<(u32, u64)> = received
            .iter()
            .enumerate()
            .filter(|&(i, t)| i == 0 || received[i - 1] != *t)
            .map(|(i, &t)| (i as u32, t))
            .collect();
        if changes.len() as u64 <= (count / EXACT_TIMES_RECORDS_PER_POINT).max(1) {
            return Times {
                exact: true,
                points: changes,
            };
        }
        Times {
            exact: false,
            points: received
                .iter()
                .enumerate()
                .step_by(RECEIVED_AT_SAMPLE_EVERY as usize)
                .map(|(i, &t)| (i as u32, t))
                .collect(),
        }
    }
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

/// Encodes a whole run. `terms` ascending by key, unique; `times` from `Times::of`.
pub fn encode_run(first: u64, end: u64, times: &Times, terms: &[(u64, Postings)]) -> Vec<u8> {
    assert!(first <= end && end - first <= RUN_RECORDS_MAX, "run range");
    assert!(check_times(times, end - first).is_ok(), "times");
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
    let mut body =
        Vec::with_capacity(times.points.len() * TIME_BYTES + table.len() + postings.len());
    for (o, t) in &times.points {
        body.extend_from_slice(&o.to_be_bytes());
        body.extend_from_slice(&t.to_be_bytes());
    }
    body.extend_from_slice(&table);
    body.extend_from_slice(&postings);
    let mut out = Vec::with_capacity(RUN_HEADER_BYTES + body.len());
    out.extend_from_slice(&RUN_MAGIC);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&(terms.len() as u32).to_be_bytes());
    out.extend_from_slice(&(times.points.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(if times.exact { EXACT } else { 0 }).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = run_crc(&out);
    out[32..36].copy_from_slice(&crc.to_be_bytes());
    out
}

/// CRC-32C of a run's bytes but its CRC field: the header's other fields (the flags
/// among them) are covered too.
fn run_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(&bytes[..32]);
    crc32c::crc32c_append(c, &bytes[36..])
}

/// A run's header, checked against its bytes' length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    pub first: u64,
    pub end: u64,
    pub terms: u64,
    pub times: u64,
    pub crc: u32,
    pub exact: bool,
}

impl RunHeader {
    pub fn decode(h: &[u8]) -> Result<RunHeader, RunError> {
        if h.len() < RUN_HEADER_BYTES || h[..8] != RUN_MAGIC {
            return Err(bad("not a search run (magic)"));
        }
        let flags = be_u32(&h[36..40]);
        if flags & !EXACT != 0 {
            return Err(bad(format!("unknown flags {flags:#x}")));
        }
        let u64_at = |at: usize| be_u64(&h[at..at + 8]);
        let u32_at = |at: usize| be_u32(&h[at..at + 4]);
        let header = RunHeader {
            first: u64_at(8),
            end: u64_at(16),
            terms: u64::from(u32_at(24)),
            times: u64::from(u32_at(28)),
            crc: u32_at(32),
            exact: flags & EXACT != 0,
        };
        if header.first > header.end || header.end - header.first > RUN_RECORDS_MAX {
            return Err(bad(format!("range [{}, {})", header.first, header.end)));
        }
        Ok(header)
    }

    pub fn times_at(&self) -> usize {
        RUN_HEADER_BYTES
    }

    pub fn terms_at(&self) -> usize {
        RUN_HEADER_BYTES + self.times as usize * TIME_BYTES
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
    let key = be_u64(&e[..8]);
    let v = be_u32(&e[8..12]);
    let value = if v & ONE != 0 {
        TermValue::One(v & !ONE)
    } else {
        TermValue::At(v)
    };
    (key, value)
}

/// The receipt times of a checked run.
pub fn decode_times(bytes: &[u8], h: &RunHeader) -> Times {
    Times {
        exact: h.exact,
        points: bytes[h.times_at()..h.terms_at()]
            .chunks_exact(TIME_BYTES)
            .map(|e| {
                let o = be_u32(&e[..4]);
                (o, be_u64(&e[4..]))
            })
            .collect(),
    }
}

/// Receipt times as `Times::of` makes them for `count` records: from offset 0, ascending
/// in range, times never decreasing (strictly rising between change points); samples at
/// every 64th record.
fn check_times(t: &Times, count: u64) -> Result<(), RunError> {
    let p = &t.points;
    if count > 0 && p.first().is_none_or(|&(o, _)| o != 0) {
        return Err(bad("receipt times do not start at the run's first record"));
    }
    if p.last().is_some_and(|&(o, _)| u64::from(o) >= count) {
        return Err(bad("receipt time past the run"));
    }
    let ordered = p
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && (w[0].1 < w[1].1 || (!t.exact && w[0].1 == w[1].1)));
    if !ordered {
        return Err(bad("receipt times out of order"));
    }
    let sampled = p.len() as u64 == count.div_ceil(RECEIVED_AT_SAMPLE_EVERY)
        && p.iter()
            .enumerate()
            .all(|(k, &(o, _))| u64::from(o) == k as u64 * RECEIVED_AT_SAMPLE_EVERY);
    if !t.exact && !sampled {
        return Err(bad("receipt-time samples not at every 64th record"));
    }
    Ok(())
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
    if run_crc(bytes) != h.crc {
        return Err(bad("CRC mismatch"));
    }
    let count = h.end - h.first;
    check_times(&decode_times(bytes, &h), count)?;
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
        .map(|b| be_u32(b) as usize)
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
        let mut received = vec![10u64; 64];
        received.extend([20u64; 36]);
        let times = Times::of(&received);
        assert_eq!(times.points, [(0, 10), (64, 20)]);
        let bytes = encode_run(1000, 1100, &times, &terms);
        let h = check_run(&bytes).expect("valid");
        assert_eq!((h.first, h.end, h.terms, h.times), (1000, 1100, 3, 2));
        assert_eq!(decode_times(&bytes, &h), times);
        let (key, value) = decode_term(&bytes[h.terms_at() + TERM_BYTES..]);
        assert_eq!(key, 9);
        let TermValue::At(at) = value else {
            panic!("a bitmap")
        };
        let b = decode_bitmap(&bytes[h.postings_at()..], at, 100).expect("bitmap");
        assert_eq!(b.iter().collect::<Vec<_>>(), [1, 2, 99]);
        for i in (0..bytes.len()).filter(|i| !(32..36).contains(i)) {
            let mut d = bytes.clone();
            d[i] ^= 1;
            assert!(check_run(&d).is_err(), "byte {i} changed");
        }
        assert!(check_run(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn times_are_change_points_while_few_else_samples() {
        let rising: Vec<u64> = (0..200).collect();
        let t = Times::of(&rising);
        assert!(!t.exact);
        assert_eq!(t.points, [(0, 0), (64, 64), (128, 128), (192, 192)]);
        let mut steps = vec![5u64; 100];
        steps[40..].fill(6);
        let t = Times::of(&steps);
        assert!(t.exact);
        assert_eq!(t.points, [(0, 5), (40, 6)]);
        assert_eq!(Times::of(&[]).points, []);
    }
}
