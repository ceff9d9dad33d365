#![no_main]
use auditlog_formats::schema::{self, SchemaMode};
use auditlog_formats::syslog::{self, Decoder};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut, so split frames are exercised too.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(stream.len());
    let mut d = Decoder::new(512);
    for part in [&stream[..cut], &stream[cut..]] {
        d.extend(part);
        while let Ok(Some(m)) = d.next_message() {
            assert!(m.len() <= 512);
            if let Ok(p) = syslog::parse(m, 1_795_428_000_000_000_000) {
                let ev = syslog::to_audit_event(&p, m, 1_795_428_000_000_000_000, None)
                    .expect("a parsed message maps");
                schema::validate(&ev, SchemaMode::Audit).expect("a mapped event is valid");
            }
        }
    }
});
