#![no_main]
use auditlog_formats::note::{open_checkpoint, parse_note, Checkpoint, NoteSigner};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_note(text);
    if let Ok(cp) = Checkpoint::parse_text(text) {
        assert_eq!(Checkpoint::parse_text(&cp.to_text()).as_ref(), Ok(&cp));
    }
    let key = NoteSigner::from_seed("fuzz", [7u8; 32]).expect("key").verifier_key();
    let _ = open_checkpoint(text, &[key]);
});
