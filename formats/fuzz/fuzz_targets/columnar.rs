#![no_main]
//! The columnar block codec: any bytes given to the decoder fail cleanly or decode within
//! the capacity; any records (the input cut at newlines, entry-framed) encode to a block
//! that decodes to exactly them, and every prefix of that block's records decodes to the
//! same first records.
use auditlog_formats::columnar::{decode, decode_records, encode};

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
    let records = data.split(|&b| b == b'\n').count();
    let k = data.first().map_or(0, |&b| usize::from(b)) % (records + 2);
    let prefix = decode_records(&coded, raw.len(), k, &mut d).expect("prefix");
    let want: usize = data
        .split(|&b| b == b'\n')
        .take(k)
        .map(|r| 4 + r.len())
        .sum();
    assert_eq!(prefix, raw[..want]);
});
