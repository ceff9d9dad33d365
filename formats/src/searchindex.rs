//! The search index's run files (FORMATS.md §5.7): one run holds the index terms of the
//! records `[first, end)` with their posting lists, and receipt times (the sparse time
//! index that locates a window): every point where the receipt time changes when there are
//! few (a submission's records share one stamp), else that of the run's first record and of
//! every record whose index is a multiple of `RECEIVED_AT_SAMPLE_EVERY`.
//!
//! ```text
//! header   magic "ALSRCH02" | first u64 | end u64 | terms u32 | times u32 | crc32c u32
//!          | flags u32 | block_records u32 | bucket_bits u32
//!          (the CRC-32C covers every byte of the run but its own four)
//! times    times × (offset u32 | received_at u64)   flags bit 0: exact (change points)
//! terms    terms × (key u64 | value u32)      keys strictly ascending
//! postings for each term whose value's top bit is clear: a roaring bitmap (portable format,
//!          which says its own length)
//! ```
//! All integers big-endian. A posting is a **block**: block `b` of a run is the records
//! `[(first / B + b) · B, (first / B + b + 1) · B) ∩ [first, end)` for `B = block_records`,
//! so blocks are aligned to absolute indexes and two adjacent runs merge by shifting their
//! block numbers. A term's value with the top bit set is its one posting; otherwise the
//! byte offset of its bitmap in the postings area. `bucket_bits` says how the terms of the
//! high-cardinality fields were folded into buckets (`search::term`): runs merge only
//! with runs of the same `block_records` and `bucket_bits`.

use roaring::RoaringBitmap;

use crate::{be_u32, be_u64};

pub const RUN_MAGIC: [u8; 8] = *b"ALSRCH02";
pub const RUN_HEADER_BYTES: usize = 48;
pub const TERM_BYTES: usize = 12;
/// Receipt-time samples are at records whose index is a multiple of this.
pub const RECEIVED_AT_SAMPLE_EVERY: u64 = 64;
/// A run's range fits in 31-bit offsets (the top bit marks a one-posting term).
pub const RUN_RECORDS_MAX: u64 = 1 << 31;
/// The most bits of a term's hash that pick its bucket (`search::term`).
pub const BUCKET_BITS_MAX: u32 = 32;
const ONE: u32 = 1 << 31;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("search run: {0}")]
    Bad(String),
}

fn bad(what: impl Into<String>) -> RunError {
    RunError::Bad(what.into())
}

/// How a run's postings are made: records per block, and the bits of a bucketed field's
/// term hash that pick its bucket. Runs of different shapes never merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub block_records: u32,
    pub bucket_bits: u32,
}

impl Shape {
    pub fn valid(&self) -> bool {
        self.block_records >= 1 && self.bucket_bits <= BUCKET_BITS_MAX
    }

    /// The run's block of record `index` (`first <= index`), counted from `first`'s block.
    pub fn block_of(&self, first: u64, index: u64) -> u32 {
        let b = u64::from(self.block_records);
        u32::try_from(index / b - first / b).expect("a run's blocks fit in u32")
    }

    /// Blocks in the run of the records `[first, end)`.
    pub fn blocks(&self, first: u64, end: u64) -> u64 {
        let b = u64::from(self.block_records);
        match end > first {
            true => (end - 1) / b - first / b + 1,
            false => 0,
        }
    }

    /// The records of block `block` of the run `[first, end)`.
    pub fn block_records_range(&self, first: u64, end: u64, block: u32) -> (u64, u64) {
        let b = u64::from(self.block_records);
        let at = (first / b + u64::from(block)) * b;
        (at.max(first), (at + b).min(end))
    }
}

/// Change points are kept (exact) while they are at most one per this many records.
pub const EXACT_TIMES_RECORDS_PER_POINT: u64 = 16;
const TIME_BYTES: usize = 12;
const EXACT: u32 = 1;

/// A run's receipt times: `(offset, received_at)` of some of its records, offsets
/// ascending from 0. `exact`: the points are where the time changes, so every record has
/// the time of the point at or before it; otherwise they are the run's first record and
/// every record whose index is a multiple of 64.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Times {
    pub exact: bool,
    pub points: Vec<(u32, u64)>,
}

/// The offsets a sampled run of `[first, end)` keeps: 0, then those of the indexes that
/// are multiples of `RECEIVED_AT_SAMPLE_EVERY`.
fn sample_offsets(first: u64, end: u64) -> impl Iterator<Item = u64> {
    let every = RECEIVED_AT_SAMPLE_EVERY;
    // The offset of the next multiple of 64 (none fits past u64::MAX: `count` is smaller).
    let next = every - first % every;
    let count = end.saturating_sub(first);
    (count > 0)
        .then_some(0)
        .into_iter()
        .chain((next..count).step_by(every as usize))
}

fn exact_fits(points: usize, count: u64) -> bool {
    points as u64 <= (count / EXACT_TIMES_RECORDS_PER_POINT).max(1)
}

impl Times {
    /// From the receipt times, in record order, of the records from `first`.
    pub fn of(first: u64, received: &[u64]) -> Times {
        let count = received.len() as u64;
        let changes: Vec<(u32, u64)> = received
            .iter()
            .enumerate()
            .filter(|&(i, t)| i == 0 || received[i - 1] != *t)
            .map(|(i, &t)| (i as u32, t))
            .collect();
        let rising = changes.windows(2).all(|w| w[0].1 < w[1].1);
        if rising && exact_fits(changes.len(), count) {
            return Times {
                exact: true,
                points: changes,
            };
        }
        Times {
            exact: false,
            points: sample_offsets(first, first + count)
                .map(|o| (o as u32, received[o as usize]))
                .collect(),
        }
    }

    /// The receipt time of the record at `offset`: exact, or for a sampled run, at one of
    /// its sample offsets.
    fn at(&self, offset: u32) -> u64 {
        let p = self.points.partition_point(|&(o, _)| o <= offset);
        self.points[p.checked_sub(1).expect("times start at offset 0")].1
    }

    /// The times of the run `[first, end)` made of the contiguous runs `parts`
    /// (`(first, end, times)`, in order, from `first` to `end`).
    pub fn merge(first: u64, end: u64, parts: &[(u64, u64, &Times)]) -> Times {
        assert!(
            parts.first().is_some_and(|p| p.0 == first)
                && parts.last().is_some_and(|p| p.1 == end)
                && parts.windows(2).all(|w| w[0].1 == w[1].0),
            "parts cover the run"
        );
        if parts.iter().all(|p| p.2.exact) {
            let mut points: Vec<(u32, u64)> = Vec::new();
            for &(f, _, t) in parts {
                for &(o, time) in &t.points {
                    if points.last().is_none_or(|&(_, last)| last != time) {
                        points.push(((f - first) as u32 + o, time));
                    }
                }
            }
            let rising = points.windows(2).all(|w| w[0].1 < w[1].1);
            if rising && exact_fits(points.len(), end - first) {
                return Times {
                    exact: true,
                    points,
                };
            }
        }
        let mut k = 0;
        let points = sample_offsets(first, end)
            .map(|o| {
                let index = first + o;
                while parts[k].1 <= index {
                    k += 1;
                }
                let (f, _, t) = parts[k];
                (o as u32, t.at((index - f) as u32))
            })
            .collect();
        Times {
            exact: false,
            points,
        }
    }
}

/// A term's posting list (blocks), as a run stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Postings {
    One(u32),
    Many(RoaringBitmap),
}

impl Postings {
    /// From ascending blocks (at least one).
    pub fn from_sorted(blocks: &[u32]) -> Postings {
        match blocks {
            [one] => Postings::One(*one),
            many => Postings::Many(
                RoaringBitmap::from_sorted_iter(many.iter().copied())
                    .expect("blocks ascending (built in record order)"),
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

/// Encodes a whole run. `terms` ascending by key, unique, postings below
/// `shape.blocks(first, end)`; `times` from `Times::of` or `Times::merge`.
pub fn encode_run(
    first: u64,
    end: u64,
    shape: Shape,
    times: &Times,
    terms: &[(u64, Postings)],
) -> Vec<u8> {
    assert!(first <= end && end - first <= RUN_RECORDS_MAX, "run range");
    assert!(shape.valid(), "shape");
    assert!(check_times(times, first, end).is_ok(), "times");
    assert!(terms.windows(2).all(|w| w[0].0 < w[1].0), "terms ascending");
    let blocks = shape.blocks(first, end);
    let mut table = Vec::with_capacity(terms.len() * TERM_BYTES);
    let mut postings = Vec::new();
    for (key, p) in terms {
        table.extend_from_slice(&key.to_be_bytes());
        let value = match p {
            Postings::One(o) => {
                assert!(u64::from(*o) < blocks, "posting outside the run");
                ONE | o
            }
            Postings::Many(b) => {
                assert!(b.max().is_some_and(|m| u64::from(m) < blocks));
                let at = u32::try_from(postings.len()).expect("postings area under 2 GiB");
                assert!(at & ONE == 0, "postings area under 2 GiB");
                b.serialize_into(&mut postings).expect("writing to memory");
                at
            }
        };
        table.extend_from_slice(&value.to_be_bytes());
    }
    let mut out = Vec::with_capacity(
        RUN_HEADER_BYTES + times.points.len() * TIME_BYTES + table.len() + postings.len(),
    );
    out.extend_from_slice(&RUN_MAGIC);
    out.extend_from_slice(&first.to_be_bytes());
    out.extend_from_slice(&end.to_be_bytes());
    out.extend_from_slice(&(terms.len() as u32).to_be_bytes());
    out.extend_from_slice(&(times.points.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(if times.exact { EXACT } else { 0 }).to_be_bytes());
    out.extend_from_slice(&shape.block_records.to_be_bytes());
    out.extend_from_slice(&shape.bucket_bits.to_be_bytes());
    for (o, t) in &times.points {
        out.extend_from_slice(&o.to_be_bytes());
        out.extend_from_slice(&t.to_be_bytes());
    }
    out.extend_from_slice(&table);
    out.extend_from_slice(&postings);
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
    pub shape: Shape,
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
            shape: Shape {
                block_records: u32_at(40),
                bucket_bits: u32_at(44),
            },
        };
        if header.first > header.end || header.end - header.first > RUN_RECORDS_MAX {
            return Err(bad(format!("range [{}, {})", header.first, header.end)));
        }
        if !header.shape.valid() {
            return Err(bad(format!("shape {:?}", header.shape)));
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

    /// Blocks in the run: every posting is below this.
    pub fn blocks(&self) -> u64 {
        self.shape.blocks(self.first, self.end)
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

/// The terms of a checked run, in key order.
pub fn decode_terms<'a>(
    bytes: &'a [u8],
    h: &RunHeader,
) -> impl Iterator<Item = (u64, TermValue)> + 'a {
    bytes[h.terms_at()..h.postings_at()]
        .chunks_exact(TERM_BYTES)
        .map(decode_term)
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

/// Receipt times as `Times::of` makes them for the records `[first, end)`: exact change
/// points from offset 0 with times strictly rising, or the samples at the offsets
/// `sample_offsets` gives with times never decreasing.
fn check_times(t: &Times, first: u64, end: u64) -> Result<(), RunError> {
    let p = &t.points;
    let count = end - first;
    if t.exact {
        if count > 0 && p.first().is_none_or(|&(o, _)| o != 0) {
            return Err(bad("receipt times do not start at the run's first record"));
        }
        if p.last().is_some_and(|&(o, _)| u64::from(o) >= count) {
            return Err(bad("receipt time past the run"));
        }
        if !p.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1) {
            return Err(bad("receipt times out of order"));
        }
        return Ok(());
    }
    let mut expected = sample_offsets(first, end);
    let sampled = p
        .iter()
        .all(|&(o, _)| expected.next() == Some(u64::from(o)))
        && expected.next().is_none();
    if !sampled {
        return Err(bad(
            "receipt-time samples not at the run's first record and every 64th index",
        ));
    }
    if !p.windows(2).all(|w| w[0].1 <= w[1].1) {
        return Err(bad("receipt times out of order"));
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
    check_times(&decode_times(bytes, &h), h.first, h.end)?;
    let blocks = h.blocks();
    let mut last = None;
    for (key, value) in decode_terms(bytes, &h) {
        if last.is_some_and(|l| l >= key) {
            return Err(bad("terms out of order"));
        }
        last = Some(key);
        match value {
            TermValue::One(o) if u64::from(o) >= blocks => {
                return Err(bad(format!("posting {o} outside the run")))
            }
            TermValue::At(at) if postings_at + at as usize + BITMAP_BYTES_MIN > bytes.len() => {
                return Err(bad(format!("bitmap at {at} past the end")))
            }
            _ => {}
        }
    }
    Ok(h)
}

/// A serialized Roaring bitmap's least bytes (its cookie and container count).
const BITMAP_BYTES_MIN: usize = 8;

/// Reads one bitmap from `r` (the portable format says where it ends) and checks that every
/// block is below `blocks`.
pub fn read_bitmap(r: impl std::io::Read, blocks: u64) -> Result<RoaringBitmap, RunError> {
    let b = RoaringBitmap::deserialize_from(r).map_err(|e| bad(format!("bitmap: {e}")))?;
    if b.max().is_some_and(|m| u64::from(m) >= blocks) {
        return Err(bad("bitmap posting outside the run"));
    }
    Ok(b)
}

/// Reads the bitmap at `at` in a run's postings area (`postings`: from there to the end),
/// checking that it lies inside and that every block is below `blocks`.
pub fn decode_bitmap(postings: &[u8], at: u32, blocks: u64) -> Result<RoaringBitmap, RunError> {
    let body = postings
        .get(at as usize..)
        .ok_or_else(|| bad(format!("bitmap at {at} past the end")))?;
    read_bitmap(body, blocks)
}

/// A term's postings: its one block, or its bitmap read from the postings area.
pub fn term_postings(
    postings: &[u8],
    value: TermValue,
    blocks: u64,
) -> Result<RoaringBitmap, RunError> {
    match value {
        TermValue::One(o) => Ok(std::iter::once(o).collect()),
        TermValue::At(at) => decode_bitmap(postings, at, blocks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        block_records: 8,
        bucket_bits: 4,
    };

    #[test]
    fn a_run_encodes_and_checks_back() {
        // Records [1003, 1103): blocks of 8 from 1000, so 13 blocks, the first partial.
        assert_eq!(SHAPE.blocks(1003, 1103), 13);
        assert_eq!(SHAPE.block_of(1003, 1003), 0);
        assert_eq!(SHAPE.block_of(1003, 1008), 1);
        assert_eq!(SHAPE.block_records_range(1003, 1103, 0), (1003, 1008));
        assert_eq!(SHAPE.block_records_range(1003, 1103, 12), (1096, 1103));
        let terms = vec![
            (3u64, Postings::One(7)),
            (9, Postings::from_sorted(&[1, 2, 12])),
            (u64::MAX, Postings::from_sorted(&[0])),
        ];
        let mut received = vec![10u64; 61];
        received.extend([20u64; 39]);
        let times = Times::of(1003, &received);
        assert_eq!(times.points, [(0, 10), (61, 20)]);
        let bytes = encode_run(1003, 1103, SHAPE, &times, &terms);
        let h = check_run(&bytes).expect("valid");
        assert_eq!((h.first, h.end, h.terms, h.times), (1003, 1103, 3, 2));
        assert_eq!(h.shape, SHAPE);
        assert_eq!(decode_times(&bytes, &h), times);
        let (key, value) = decode_term(&bytes[h.terms_at() + TERM_BYTES..]);
        assert_eq!(key, 9);
        let b = term_postings(&bytes[h.postings_at()..], value, h.blocks()).expect("bitmap");
        assert_eq!(b.iter().collect::<Vec<_>>(), [1, 2, 12]);
        let keys: Vec<u64> = decode_terms(&bytes, &h).map(|(k, _)| k).collect();
        assert_eq!(keys, [3, 9, u64::MAX]);
        for i in (0..bytes.len()).filter(|i| !(32..36).contains(i)) {
            let mut d = bytes.clone();
            d[i] ^= 1;
            assert!(check_run(&d).is_err(), "byte {i} changed");
        }
        for len in 0..bytes.len() {
            assert!(check_run(&bytes[..len]).is_err(), "cut to {len} bytes");
        }
    }

    /// A run at the top of the index space is checked without overflow (found by `cargo
    /// fuzz run searchindex`: the next sample's index overflowed u64).
    #[test]
    fn a_run_at_the_end_of_the_index_space_is_checked_without_overflow() {
        let first = u64::MAX - 10;
        let times = Times::of(first, &[7; 10]);
        let bytes = encode_run(first, u64::MAX, SHAPE, &times, &[]);
        assert!(check_run(&bytes).is_ok());
        let rising: Vec<u64> = (0..10).collect();
        let t = Times::of(first, &rising);
        assert_eq!(t.points, [(0, 0)]);
        assert!(check_times(&t, first, u64::MAX).is_ok());
    }

    /// A run of the format before blocks and buckets is not read: it fails the magic
    /// check, and the engine builds it again.
    #[test]
    fn a_first_format_run_is_refused_by_its_magic() {
        let bytes = encode_run(0, 10, SHAPE, &Times::of(0, &[5; 10]), &[]);
        let mut old = bytes.clone();
        old[..8].copy_from_slice(b"ALSRCH01");
        let fixed_crc = run_crc(&old);
        old[32..36].copy_from_slice(&fixed_crc.to_be_bytes());
        assert_eq!(
            check_run(&old),
            Err(RunError::Bad("not a search run (magic)".into()))
        );
        assert!(check_run(&bytes).is_ok());
    }

    #[test]
    fn times_are_change_points_while_few_else_aligned_samples() {
        let rising: Vec<u64> = (0..200).collect();
        let t = Times::of(0, &rising);
        assert!(!t.exact);
        assert_eq!(t.points, [(0, 0), (64, 64), (128, 128), (192, 192)]);
        // Samples sit at indexes that are multiples of 64, whatever the run's first.
        let t = Times::of(100, &rising);
        assert_eq!(t.points, [(0, 0), (28, 28), (92, 92), (156, 156)]);
        assert!(check_times(&t, 100, 300).is_ok());
        assert!(check_times(&t, 101, 301).is_err());
        let mut steps = vec![5u64; 100];
        steps[40..].fill(6);
        let t = Times::of(0, &steps);
        assert!(t.exact);
        assert_eq!(t.points, [(0, 5), (40, 6)]);
        assert_eq!(Times::of(0, &[]).points, []);
    }

    /// Merged times equal the times of the merged records, for every split of a log into
    /// parts, exact or sampled.
    #[test]
    fn merged_times_equal_the_times_of_the_whole() {
        let mut received = Vec::new();
        for i in 0..700u64 {
            // Long stretches of one stamp, then a rising stretch.
            received.push(if i < 400 { 1000 + i / 90 } else { 2000 + i });
        }
        let first = 37;
        for cuts in [
            vec![0, 700],
            vec![0, 90, 400, 700],
            vec![0, 1, 64, 300, 699, 700],
        ] {
            for whole in [&received[..400], &received[..]] {
                let end = whole.len();
                let cuts: Vec<usize> = cuts.iter().map(|&c| c.min(end)).collect();
                let parts: Vec<(u64, u64, Times)> = cuts
                    .windows(2)
                    .filter(|w| w[0] < w[1])
                    .map(|w| {
                        let (a, b) = (first + w[0] as u64, first + w[1] as u64);
                        (a, b, Times::of(a, &whole[w[0]..w[1]]))
                    })
                    .collect();
                let refs: Vec<(u64, u64, &Times)> =
                    parts.iter().map(|(a, b, t)| (*a, *b, t)).collect();
                let merged = Times::merge(first, first + end as u64, &refs);
                assert_eq!(merged, Times::of(first, whole), "cuts {cuts:?} of {end}");
            }
        }
    }
}
