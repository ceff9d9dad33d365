#![no_main]
use auditlog_formats::record::Record;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::parse(data) {
        assert_eq!(r.to_bytes(), data);
    }
});
