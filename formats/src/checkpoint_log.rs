//! The checkpoint log's framing: every checkpoint the engine published, appended as
//! `note_bytes:u32 | crc32c:u32 | note` (big-endian; CRC-32C of the note bytes).

pub const ENTRY_HEADER_BYTES: usize = 8;
pub const NOTE_BYTES_MAX: usize = 64 << 10;
/// The most bytes one append of a framed log writes (one largest entry), so the most a crash
/// can tear: bad bytes further from the end than this were damaged after they were durable
/// (FORMATS.md §8).
pub const APPEND_BYTES_MAX: usize = ENTRY_HEADER_BYTES + NOTE_BYTES_MAX;

/// Whether the `len - good` bytes after a log's complete prefix (`parse_log`'s `good`) are
/// more than a crash can tear: then the entry at `good` was damaged after it was durable,
/// and must be reported, not cut as a torn tail (FORMATS.md §8).
pub fn damaged_before_last_append(good: u64, len: u64) -> bool {
    assert!(good <= len, "complete prefix {good} past the end {len}");
    len - good > APPEND_BYTES_MAX as u64
}

/// Splits the log into notes; returns them and the length of the complete prefix (a torn
/// last entry, or anything after a bad one, is beyond it).
pub fn parse_log(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + ENTRY_HEADER_BYTES <= bytes.len() {
        let len =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at + ENTRY_HEADER_BYTES + len;
        if len == 0 || len > NOTE_BYTES_MAX || end > bytes.len() {
            break;
        }
        let body = &bytes[at + ENTRY_HEADER_BYTES..end];
        if crc32c::crc32c(body) != crc {
            break;
        }
        out.push(body);
        at = end;
    }
    (out, at)
}

pub fn encode_entry(note: &str) -> Vec<u8> {
    assert!(!note.is_empty() && note.len() <= NOTE_BYTES_MAX);
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + note.len());
    out.extend_from_slice(&(note.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(note.as_bytes()).to_be_bytes());
    out.extend_from_slice(note.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let mut log = encode_entry("a\n");
        log.extend(encode_entry("bb\n"));
        let (notes, good) = parse_log(&log);
        assert_eq!(notes, vec![&b"a\n"[..], &b"bb\n"[..]]);
        assert_eq!(good, log.len());
        let (notes, good) = parse_log(&log[..log.len() - 1]);
        assert_eq!((notes.len(), good), (1, 10));
        let mut bad = log.clone();
        bad[9] ^= 1;
        assert_eq!(parse_log(&bad).0.len(), 0);
    }
}
