#![no_main]
use auditlog_formats::searchindex::{check_run, decode_terms, decode_times, term_postings};

/// A run that passes `check_run` must be readable whole without a panic: its receipt times,
/// every term, every bitmap (which may still be refused, with an error).
fn check(data: &[u8]) {
    let Ok(h) = check_run(data) else {
        return;
    };
    let _ = decode_times(data, &h);
    let postings = &data[h.postings_at()..];
    for (_, value) in decode_terms(data, &h) {
        let _ = term_postings(postings, value, h.blocks());
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    // Magic and CRC made right: the tables' own checks are reached.
    if let Some(fixed) = auditlog_formats_fuzz::fix_search_run(data) {
        check(&fixed);
    }
});
