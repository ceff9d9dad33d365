#![no_main]
use auditlog_formats::cosignature::{
    parse_response, parse_size_body, valid_cosignatures, AddCheckpoint, WitnessKey, WitnessSigner,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // An add-checkpoint body that parses writes back to the same bytes: one spelling each.
    if let Ok(req) = AddCheckpoint::parse(data) {
        assert_eq!(req.to_body().as_bytes(), data);
    }
    let _ = parse_size_body(data);
    let witness = WitnessSigner::from_seed("fuzz/w", [7u8; 32]).expect("key");
    let key: WitnessKey = witness.witness_key().clone();
    if let Ok(sigs) = parse_response(data) {
        let _ = valid_cosignatures("o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", &sigs, &[key]);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(k) = WitnessKey::parse(s) {
            assert_eq!(k.to_string(), s);
        }
    }
});
