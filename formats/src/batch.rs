//! Open-segment batch framing. The open segment is a sequence of batches, each written by
//! one append and made durable by one sync, so recovery can find the last complete batch
//! and cut a torn tail. All integers big-endian.
//!
//! ```text
//! batch   = header(32) body
//! header  = magic:u32 "ALB1" | body_bytes:u32 | first_index:u64 | count:u32
//!           | max_classification:u8 | reserved:7 bytes (zero) | crc32c:u32
//! body    = count × (record_bytes:u32 | record)
//! crc32c  = CRC-32C over header[0..28] followed by body
//! ```
//! `max_classification` is the highest classification code among the batch's events, so
//! sealing and recovery know a segment's retention class without parsing payloads.
//! ```text
//! ```
//! The checksum catches torn and stale writes (it is not a security boundary: the Merkle
//! tree and signed checkpoints are).

use crate::record::{Record, RecordError, RECORD_BYTES_MAX};
use crate::{be_u32, be_u64};

pub const BATCH_MAGIC: u32 = 0x414C_4231; // "ALB1"
pub const BATCH_HEADER_BYTES: usize = 32;
const CRC_AT: usize = 28;
pub const ENTRY_PREFIX_BYTES: usize = 4;
/// Refuse any header claiming more than this, so a corrupt length cannot make a reader
/// allocate or scan gigabytes.
pub const BATCH_BODY_BYTES_MAX: usize = 64 << 20;

/// The torn-tail rule of FORMATS.md §6, one place for the engine's recovery and sealer and
/// the offline verifier. A batch is synced before the next is written, so a crash can leave
/// garbage over at most the one batch being written: a bad batch at `at` is a torn tail only
/// if the bytes `torn_tail_zeros(at, allowance, file_len)` are all zero, and only in the
/// last open segment. Anything else is damage.
///
/// How far past a bad batch one torn write can reach: one whole batch of the configured
/// limit, with slack for its header.
pub fn torn_tail_allowance_bytes(batch_bytes_max: usize) -> u64 {
    batch_bytes_max as u64 + 64
}

/// The allowance for a reader that does not know the configured batch limit (the offline
/// verifier): the format's largest batch.
pub const TORN_TAIL_ALLOWANCE_BYTES_MAX: u64 =
    (BATCH_HEADER_BYTES + BATCH_BODY_BYTES_MAX) as u64 + 64;

/// How many bytes past the allowance must be zeros.
pub const TORN_TAIL_ZEROS_CHECKED_BYTES: u64 = 16 << 20;

/// The byte range `[from, to)` that must be all zeros for a bad batch at `at`, in a file of
/// `file_len` bytes, to be a torn tail (empty when the file ends within the allowance).
pub fn torn_tail_zeros(at: u64, allowance_bytes: u64, file_len: u64) -> (u64, u64) {
    let from = at.saturating_add(allowance_bytes).min(file_len);
    let to = from
        .saturating_add(TORN_TAIL_ZEROS_CHECKED_BYTES)
        .min(file_len);
    (from, to)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub body_bytes: u32,
    pub first_index: u64,
    pub count: u32,
    pub max_classification: u8,
    pub checksum: u32,
}

impl BatchHeader {
    pub fn total_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.body_bytes as usize
    }

    pub fn end_index(&self) -> u64 {
        self.first_index + self.count as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch header truncated: {0} of 32 bytes")]
    TruncatedHeader(usize),
    #[error("no batch here (magic {0:#010x}, zeroed or foreign bytes)")]
    BadMagic(u32),
    #[error("batch claims a body of {0} bytes, over the limit")]
    BodyTooLarge(u32),
    #[error("batch claims {0} records but an empty body or no records")]
    BadCount(u32),
    #[error("batch body truncated: {have} of {want} bytes")]
    TruncatedBody { have: usize, want: usize },
    #[error("batch checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record {position} of the batch: {reason}")]
    Entry { position: u32, reason: String },
}

/// The record length an entry's 4-byte prefix (`record_bytes:u32`) gives, or `None` when it
/// is over the record limit. `prefix` holds at least 4 bytes.
pub fn decode_entry_prefix(prefix: &[u8]) -> Option<usize> {
    let len = be_u32(prefix) as usize;
    (len <= RECORD_BYTES_MAX).then_some(len)
}

/// Appends one entry (`record_bytes:u32 | record`) to a batch body under construction.
#[inline]
pub fn push_entry(body: &mut Vec<u8>, record: &Record<'_>) {
    body.extend_from_slice(&(record.encoded_len() as u32).to_be_bytes());
    record.encode_into(body);
}

/// The header for `body`, which holds `count` entries starting at `first_index`.
pub fn encode_header(
    first_index: u64,
    count: u32,
    max_classification: u8,
    body: &[u8],
) -> [u8; BATCH_HEADER_BYTES] {
    encode_header_parts(first_index, count, max_classification, &[body])
}

/// The header for a body given as consecutive parts (each producer's entries), so the
/// writer can checksum and write them without first copying them together.
pub fn encode_header_parts(
    first_index: u64,
    count: u32,
    max_classification: u8,
    parts: &[&[u8]],
) -> [u8; BATCH_HEADER_BYTES] {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(count > 0 && body_len > 0 && body_len <= BATCH_BODY_BYTES_MAX);
    let mut h = [0u8; BATCH_HEADER_BYTES];
    h[0..4].copy_from_slice(&BATCH_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&(body_len as u32).to_be_bytes());
    h[8..16].copy_from_slice(&first_index.to_be_bytes());
    h[16..20].copy_from_slice(&count.to_be_bytes());
    h[20] = max_classification;
    let mut crc = crc32c::crc32c(&h[0..CRC_AT]);
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    h[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Reads the header at the start of `bytes` without checking the body.
pub fn decode_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::TruncatedHeader(bytes.len()));
    }
    let magic = be_u32(&bytes[0..4]);
    if magic != BATCH_MAGIC {
        return Err(BatchError::BadMagic(magic));
    }
    let header = BatchHeader {
        body_bytes: be_u32(&bytes[4..8]),
        first_index: be_u64(&bytes[8..16]),
        count: be_u32(&bytes[16..20]),
        max_classification: bytes[20],
        checksum: be_u32(&bytes[CRC_AT..BATCH_HEADER_BYTES]),
    };
    if header.body_bytes as usize > BATCH_BODY_BYTES_MAX {
        return Err(BatchError::BodyTooLarge(header.body_bytes));
    }
    if header.count == 0
        || header.body_bytes == 0
        || header
            .first_index
            .checked_add(header.count as u64)
            .is_none()
    {
        return Err(BatchError::BadCount(header.count));
    }
    Ok(header)
}

/// Checks a whole batch at the start of `bytes`: header, checksum, and that the body holds
/// exactly `count` well-formed records. Returns the header and the body.
pub fn decode_batch(bytes: &[u8]) -> Result<(BatchHeader, &[u8]), BatchError> {
    let header = decode_header(bytes)?;
    let want = header.total_bytes();
    if bytes.len() < want {
        return Err(BatchError::TruncatedBody {
            have: bytes.len(),
            want,
        });
    }
    let body = &bytes[BATCH_HEADER_BYTES..want];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..CRC_AT]), body);
    if computed != header.checksum {
        return Err(BatchError::Checksum {
            stored: header.checksum,
            computed,
        });
    }
    let mut seen = 0u32;
    for entry in Entries::new(body) {
        entry.map_err(|(position, reason)| BatchError::Entry { position, reason })?;
        seen += 1;
    }
    if seen != header.count {
        return Err(BatchError::Entry {
            position: seen,
            reason: format!("body holds {seen} records, header says {}", header.count),
        });
    }
    Ok((header, body))
}

/// Iterates the records of a checked body (or of a sealed block, which shares the entry
/// framing). Yields `(position, reason)` on a malformed entry and stops.
pub struct Entries<'a> {
    rest: &'a [u8],
    position: u32,
    failed: bool,
}

impl<'a> Entries<'a> {
    pub fn new(body: &'a [u8]) -> Entries<'a> {
        Entries {
            rest: body,
            position: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<&'a [u8], (u32, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let position = self.position;
        let fail = |this: &mut Self, reason: String| {
            this.failed = true;
            Some(Err((position, reason)))
        };
        if self.rest.len() < ENTRY_PREFIX_BYTES {
            return fail(
                self,
                format!("{} stray bytes after the last record", self.rest.len()),
            );
        }
        let Some(len) = decode_entry_prefix(self.rest) else {
            let len = be_u32(self.rest);
            return fail(self, format!("record length {len} over the limit"));
        };
        let end = ENTRY_PREFIX_BYTES + len;
        if self.rest.len() < end {
            return fail(self, format!("record length {len} runs past the end"));
        }
        let record = &self.rest[ENTRY_PREFIX_BYTES..end];
        if let Err(e) = Record::parse(record) {
            return fail(self, e.to_string());
        }
        self.rest = &self.rest[end..];
        self.position += 1;
        Some(Ok(record))
    }
}

impl From<RecordError> for BatchError {
    fn from(e: RecordError) -> Self {
        BatchError::Entry {
            position: 0,
            reason: e.to_string(),
        }
    }
}

/// Where a run of batches (a tail object, FORMATS.md §15.1) breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {what}")]
pub struct RunError {
    pub offset: usize,
    pub what: String,
}

/// The cheap half of [`check_run`]: batch headers only (magic, lengths, and each continuing
/// where the one before ended, from `first`), no checksum or record parsing. For bytes the
/// caller itself wrote and made durable, read back to be sent on (the tail shipper): it
/// catches a read at the wrong place, not damage, which the receiver's `check_run` does.
/// Returns the index after the last record.
pub fn check_run_headers(bytes: &[u8], first: u64) -> Result<u64, RunError> {
    let mut at = 0;
    let mut expect = first;
    while at < bytes.len() {
        let h = decode_header(&bytes[at..]).map_err(|e| RunError {
            offset: at,
            what: e.to_string(),
        })?;
        if h.first_index != expect || at + h.total_bytes() > bytes.len() {
            return Err(RunError {
                offset: at,
                what: format!(
                    "batch of index {} where {expect} was expected, or cut",
                    h.first_index
                ),
            });
        }
        expect = h.end_index();
        at += h.total_bytes();
    }
    if at == 0 {
        return Err(RunError {
            offset: 0,
            what: "no batch".into(),
        });
    }
    Ok(expect)
}

/// Checks that `bytes` is exactly whole valid batches back to back, the first holding leaf
/// `first` and each continuing where the one before ended (no zeros, no torn tail: a tail
/// object is never cut short). Returns the index after the last record and the batches'
/// `(offset, header)`.
pub fn check_run(bytes: &[u8], first: u64) -> Result<(u64, Vec<(usize, BatchHeader)>), RunError> {
    let mut at = 0;
    let mut expect = first;
    let mut batches = Vec::new();
    if bytes.is_empty() {
        return Err(RunError {
            offset: 0,
            what: "no batch".into(),
        });
    }
    while at < bytes.len() {
        let (h, _) = decode_batch(&bytes[at..]).map_err(|e| RunError {
            offset: at,
            what: e.to_string(),
        })?;
        if h.first_index != expect {
            return Err(RunError {
                offset: at,
                what: format!("batch starts at index {}, expected {expect}", h.first_index),
            });
        }
        batches.push((at, h));
        expect = h.end_index();
        at += h.total_bytes();
    }
    Ok((expect, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            push_entry(
                &mut body,
                &Record {
                    received_at_unix_ns: i as u64,
                    // Both record versions, side by side as in a log upgraded mid-segment.
                    submitter: (i % 2 == 1).then_some("token:t"),
                    kind: crate::record::PayloadKind::Event,
                    payload: p,
                },
            );
        }
        let mut out = encode_header(first, payloads.len() as u32, 0, &body).to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn round_trip() {
        let b = batch(42, &[b"{\"a\":1}", b"{}"]);
        let (h, body) = decode_batch(&b).expect("valid");
        assert_eq!((h.first_index, h.count, h.total_bytes()), (42, 2, b.len()));
        let recs: Vec<_> = Entries::new(body).map(|r| r.expect("ok")).collect();
        assert_eq!(Record::parse(recs[0]).expect("rec").payload, b"{\"a\":1}");
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let b = batch(7, &[b"{\"x\":\"y\"}", b"{\"z\":1}"]);
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x40;
            assert!(decode_batch(&t).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn truncation_and_zeros() {
        let b = batch(0, &[b"{}"]);
        for cut in 0..b.len() {
            assert!(decode_batch(&b[..cut]).is_err());
        }
        assert_eq!(decode_batch(&[0u8; 64]), Err(BatchError::BadMagic(0)));
    }

    #[test]
    fn a_run_is_whole_contiguous_batches_and_nothing_else() {
        let mut run = batch(10, &[b"{}", b"{}"]);
        run.extend(batch(12, &[b"{}"]));
        let (end, batches) = check_run(&run, 10).expect("valid run");
        assert_eq!(check_run_headers(&run, 10), Ok(13));
        assert!(check_run_headers(&run, 11).is_err());
        assert!(check_run_headers(&run[..run.len() - 1], 10).is_err());
        assert_eq!(end, 13);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].0, run.len() - batch(12, &[b"{}"]).len());
        assert!(check_run(&run, 11).is_err(), "wrong first");
        let gap = [batch(10, &[b"{}"]), batch(12, &[b"{}"])].concat();
        let e = check_run(&gap, 10).expect_err("gap");
        assert!(e.what.contains("expected 11"), "{e}");
        let boundary = batches[1].0;
        for cut in 1..run.len() {
            match check_run(&run[..cut], 10) {
                // Cut between the batches: the first alone is a (shorter) run.
                Ok((end, _)) => assert_eq!((cut, end), (boundary, 12)),
                Err(_) => assert_ne!(cut, boundary),
            }
        }
        let mut zeros = run.clone();
        zeros.extend([0u8; 64]);
        assert!(check_run(&zeros, 10).is_err(), "trailing zeros");
        assert!(check_run(&[], 0).is_err());
    }
}
