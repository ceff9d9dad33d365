#![no_main]
use auditlog_formats::schema::{validate, SchemaMode};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let audit = validate(data, SchemaMode::Audit);
    let raw = validate(data, SchemaMode::Raw);
    // Anything the audit schema accepts is at least a JSON object.
    if audit.is_ok() {
        assert!(raw.is_ok());
    }
});
