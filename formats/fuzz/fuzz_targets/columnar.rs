#![no_main]
//! The columnar block codec: any bytes given to the decoder fail cleanly or decode within
//! the capacity; any records (the input cut at newlines, entry-framed) encode to a block
//! that decodes to exactly them.
use auditlog_formats::columnar::{decode, encode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
    if let Ok(out) = decode(data, 1 << 20, &mut d) {
        assert!(out.len() <= 1 << 20);
    }
    let mut raw = Vec::new();
    for r in data.split(|&b| b == b'\n') {
        raw.extend_from_slice(&(r.len() as u32).to_be_bytes());
        raw.extend_from_slice(r);
    }
    let mut c = zstd::bulk::Compressor::new(1).expect("compressor");
    let coded = encode(&raw, &mut c).expect("encode");
    let back = decode(&coded, raw.len(), &mut d).expect("decode");
    assert_eq!(back, raw);
});
