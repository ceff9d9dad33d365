#![no_main]
use auditlog_formats::batch::{decode_batch, decode_header, Entries};

fn check(data: &[u8]) {
    if let Ok((h, body)) = decode_batch(data) {
        assert_eq!(Entries::new(body).count() as u32, h.count);
        assert!(h.total_bytes() <= data.len());
        assert_eq!(decode_header(data), Ok(h));
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    for e in Entries::new(data) {
        if e.is_err() {
            break;
        }
    }
    // Magic, lengths, count and CRC made right: the records inside are checked.
    if let Some(fixed) = auditlog_formats_fuzz::fix_batch(data) {
        check(&fixed);
    }
});
