#![no_main]
use auditlog_formats::batch::{decode_batch, Entries};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((h, body)) = decode_batch(data) {
        assert_eq!(Entries::new(body).count() as u32, h.count);
        assert!(h.total_bytes() <= data.len());
    }
    for e in Entries::new(data) {
        if e.is_err() {
            break;
        }
    }
});
