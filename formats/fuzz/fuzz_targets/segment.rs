#![no_main]
use auditlog_formats::segment::{
    decode_block, decode_footer, decode_trailer, SegmentHeader, HEADER_BYTES, TRAILER_BYTES,
};

fn check(data: &[u8]) {
    if data.len() < HEADER_BYTES + TRAILER_BYTES {
        return;
    }
    let Ok(header) = SegmentHeader::decode(&data[..HEADER_BYTES]) else {
        return;
    };
    let len = data.len() as u64;
    let Ok(trailer) = decode_trailer(len, &data[data.len() - TRAILER_BYTES..]) else {
        return;
    };
    let start = trailer.footer_offset as usize;
    let end = start + trailer.footer_bytes as usize;
    if end > data.len() {
        return;
    }
    if let Ok(footer) = decode_footer(&header, &trailer, &data[start..end]) {
        for (n, b) in footer.blocks.iter().enumerate() {
            let (o, c) = (b.offset as usize, b.compressed_bytes as usize);
            if o + c <= data.len() {
                let _ = decode_block(n as u32, b, &data[o..o + c]);
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    // Magics, footer length, and block CRCs made right: the footer and the blocks'
    // contents are checked.
    if let Some(fixed) = auditlog_formats_fuzz::fix_segment(data) {
        check(&fixed);
    }
});
