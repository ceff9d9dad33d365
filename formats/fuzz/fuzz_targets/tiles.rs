#![no_main]
use auditlog_formats::tiles::{bundle_entries, push_entry, Tile};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A path that parses has exactly one spelling: writing it back gives the input.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = Tile::parse(text) {
            assert_eq!(t.path(), text);
            if let Some(size) = t.tree_size_needed() {
                assert!(size > 0);
            }
        }
    }
    // A bundle that splits into whole entries frames back to the same bytes.
    let entries: Result<Vec<&[u8]>, _> = bundle_entries(data).collect();
    if let Ok(entries) = entries {
        let mut again = Vec::new();
        for e in entries {
            push_entry(&mut again, e).expect("a read entry fits");
        }
        assert_eq!(again, data);
    }
});
