#![no_main]
use auditlog_formats::leafindex::{decode_run, encode_run};

fn check(data: &[u8]) {
    if let Ok((h, entries)) = decode_run(data) {
        assert_eq!(entries.len() as u64, h.count());
        assert_eq!(encode_run(h.first, h.end, &entries), data);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    // Magic, range, length and CRC made right: the entries' order and range are checked.
    if let Some(fixed) = auditlog_formats_fuzz::fix_run(data) {
        check(&fixed);
    }
});
