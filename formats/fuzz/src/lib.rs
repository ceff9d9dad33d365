//! Fix-ups for the fuzz targets: random mutations rarely keep a magic number, a length or a
//! checksum right, so most inputs would stop at the first check. Each function here takes a
//! mutated input and makes those fields right again (recomputes the CRC over the mutated
//! bytes, sets the magic, makes lengths agree with the bytes there are), so the decoders'
//! deeper checks run on it. The targets decode the raw input first, then the fixed one.

use auditlog_formats::batch::{self, Entries, BATCH_HEADER_BYTES, BATCH_MAGIC};
use auditlog_formats::leafindex::{RUN_HEADER_BYTES, RUN_MAGIC};
use auditlog_formats::segment::{self, HEADER_BYTES, TRAILER_BYTES, TRAILER_MAGIC};

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// An open-segment batch: magic, a body length that fits the input, a count equal to the
/// well-formed records at the start of the body (when there are any), and the CRC.
pub fn fix_batch(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() <= BATCH_HEADER_BYTES {
        return None;
    }
    let mut b = data.to_vec();
    b[0..4].copy_from_slice(&BATCH_MAGIC.to_be_bytes());
    let room = (b.len() - BATCH_HEADER_BYTES).min(batch::BATCH_BODY_BYTES_MAX);
    let body_len = (get_u32(&b, 4) as usize).min(room).max(1);
    put_u32(&mut b, 4, body_len as u32);
    let body_end = BATCH_HEADER_BYTES + body_len;
    let records = Entries::new(&b[BATCH_HEADER_BYTES..body_end])
        .take_while(|e| e.is_ok())
        .count();
    if records > 0 {
        put_u32(&mut b, 16, records as u32);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..28]), &b[BATCH_HEADER_BYTES..body_end]);
    put_u32(&mut b, 28, crc);
    Some(b)
}

/// A sealed segment: header and trailer magic and version, the footer length the trailer
/// gives (so the footer ends where the trailer starts) and every block's CRC in the footer's
/// block index. (The digest is the engine's and the verifier's check, not these decoders'.)
pub fn fix_segment(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_BYTES + TRAILER_BYTES + 4 {
        return None;
    }
    let mut b = data.to_vec();
    let len = b.len();
    b[0..8].copy_from_slice(segment::HEADER_MAGIC);
    b[8] = segment::FORMAT_VERSION;
    let tail = len - TRAILER_BYTES;
    b[tail + 48..].copy_from_slice(TRAILER_MAGIC);
    let footer_offset = (get_u64(&b, tail) as usize).clamp(HEADER_BYTES, tail - 4);
    b[tail..tail + 8].copy_from_slice(&(footer_offset as u64).to_be_bytes());
    put_u32(&mut b, tail + 8, (tail - footer_offset) as u32);
    // The block index: count, then 32-byte entries whose last field is the block's CRC.
    let blocks = get_u32(&b, footer_offset) as usize;
    for i in 0..blocks.min((tail - footer_offset - 4) / segment::BLOCK_ENTRY_BYTES) {
        let at = footer_offset + 4 + i * segment::BLOCK_ENTRY_BYTES;
        let (offset, bytes) = (get_u64(&b, at + 8) as usize, get_u32(&b, at + 16) as usize);
        if let Some(block) = offset
            .checked_add(bytes)
            .filter(|&end| end <= footer_offset)
            .map(|end| &b[offset..end])
        {
            let crc = crc32c::crc32c(block);
            put_u32(&mut b, at + 28, crc);
        }
    }
    Some(b)
}

/// A leaf-index run: magic, a range as long as the entries the input holds (each a LEB128
/// delta of at most 5 bytes and a 3-byte offset; the input is cut to them and as many
/// directory entries as their blocks need) and the CRC of those bytes.
pub fn fix_run(data: &[u8]) -> Option<Vec<u8>> {
    use auditlog_formats::leafindex::{BLOCK_ENTRIES, DIRECTORY_ENTRY_BYTES};
    let body = data.get(RUN_HEADER_BYTES..)?;
    let entry_len = |b: &[u8]| {
        let delta = b.iter().take(5).position(|c| c & 0x80 == 0)? + 1;
        (b.len() >= delta + 3).then_some(delta + 3)
    };
    let dir_bytes = |count: u64| (count.div_ceil(BLOCK_ENTRIES) as usize) * DIRECTORY_ENTRY_BYTES;
    let (mut at, mut count) = (0usize, 0u64);
    while let Some(len) = entry_len(&body[at..]) {
        if at + len + dir_bytes(count + 1) > body.len() || count == 1 << 24 {
            break;
        }
        at += len;
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let mut b = data[..RUN_HEADER_BYTES + at + dir_bytes(count)].to_vec();
    b[..8].copy_from_slice(RUN_MAGIC);
    let first = get_u64(&b, 8).min(u64::MAX - count);
    b[8..16].copy_from_slice(&first.to_be_bytes());
    b[16..24].copy_from_slice(&(first + count).to_be_bytes());
    let crc = crc32c::crc32c(&b[RUN_HEADER_BYTES..]);
    put_u32(&mut b, 24, crc);
    b[28..32].fill(0);
    Some(b)
}

/// A search-index run: its magic, zero flags but the exact bit, a block size of at least
/// one, at most 32 bucket bits, and the CRC-32C over every byte but its own four
/// (FORMATS.md §5.7).
pub fn fix_search_run(data: &[u8]) -> Option<Vec<u8>> {
    use auditlog_formats::searchindex::{
        RUN_HEADER_BYTES as SEARCH_HEADER, RUN_MAGIC as SEARCH_MAGIC,
    };
    if data.len() < SEARCH_HEADER {
        return None;
    }
    let mut b = data.to_vec();
    b[..8].copy_from_slice(&SEARCH_MAGIC);
    b[36..39].fill(0);
    b[39] &= 1;
    b[43] |= u8::from(b[40..44] == [0; 4]);
    b[44..47].fill(0);
    b[47] &= 31;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..32]), &b[36..]);
    put_u32(&mut b, 32, crc);
    Some(b)
}

/// A signed note: the text re-signed by the fuzz key, so a checkpoint's body is parsed
/// after its signature verifies. `None` when the input has no note body to sign.
pub fn fix_note(text: &str, signer: &auditlog_formats::note::NoteSigner) -> Option<String> {
    // As `parse_note` splits: the text ends at the last blank line.
    let body = text.rfind("\n\n").map_or(text, |i| &text[..i]);
    let body = format!("{body}\n");
    auditlog_formats::note::sign_note(&body, &[signer]).ok()
}

/// A TCP frame: the header's payload length set to the bytes that follow it.
pub fn fix_frame(data: &[u8]) -> Option<Vec<u8>> {
    let payload = data
        .len()
        .checked_sub(auditlog_formats::frame::FRAME_HEADER_BYTES)?;
    let mut b = data.to_vec();
    b[1..4].fill(0);
    put_u32(&mut b, 8, payload as u32);
    Some(b)
}
