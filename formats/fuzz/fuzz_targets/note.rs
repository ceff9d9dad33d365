#![no_main]
use auditlog_formats::note::{
    open_checkpoint, open_note, parse_note, Checkpoint, NoteSigner, VerifierKey,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_note(text);
    // A key string (either type) that parses has one spelling.
    if let Ok(key) = VerifierKey::parse(text) {
        assert_eq!(key.to_string(), text);
    }
    if let Ok(cp) = Checkpoint::parse_text(text) {
        assert_eq!(Checkpoint::parse_text(&cp.to_text()).as_ref(), Ok(&cp));
    }
    let signer = NoteSigner::from_seed("fuzz", [7u8; 32]).expect("key");
    let key = signer.verifier_key();
    let _ = open_checkpoint(text, &[key.clone()]);
    // Re-signed by the fuzz key: the signature verifies, so the checkpoint body is parsed.
    if let Some(signed) = auditlog_formats_fuzz::fix_note(text, &signer) {
        open_note(&signed, &[key.clone()]).expect("a note just signed opens");
        let _ = open_checkpoint(&signed, &[key]);
    }
});
