#![no_main]
use auditlog_formats::searchindex::{
    check_run, decode_bitmap, decode_term, decode_times, TermValue, TERM_BYTES,
};

/// A run that passes `check_run` must be readable whole without a panic: its receipt times,
/// every term, every bitmap (which may still be refused, with an error).
fn check(data: &[u8]) {
    let Ok(h) = check_run(data) else {
        return;
    };
    let _ = decode_times(data, &h);
    let postings = &data[h.postings_at()..];
    for e in data[h.terms_at()..h.postings_at()].chunks_exact(TERM_BYTES) {
        if let (_, TermValue::At(at)) = decode_term(e) {
            let _ = decode_bitmap(postings, at, h.end - h.first);
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    // Magic and CRC made right: the tables' own checks are reached.
    if let Some(fixed) = auditlog_formats_fuzz::fix_search_run(data) {
        check(&fixed);
    }
});
