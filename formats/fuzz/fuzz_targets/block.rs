#![no_main]
//! The records of a sealed segment's raw block: decoded as they are, re-encoded by
//! `push_block_entry` (the sealer's encoder) to the same bytes, and, when they are all
//! well formed, sealed into a one-block segment of either codec that must decode back to
//! them.
use auditlog_formats::segment::{
    block_records, decode_block, decode_footer, decode_trailer, push_block_entry, BlockCodec,
    SegmentBuilder, SegmentHeader, HEADER_BYTES, TRAILER_BYTES,
};
use auditlog_formats::TreeHash;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut again = Vec::new();
    let mut whole = true;
    for rec in block_records(data) {
        match rec {
            Ok(r) => push_block_entry(&mut again, r),
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    assert_eq!(
        &data[..again.len()],
        &again[..],
        "re-encoded records differ"
    );
    let count = block_records(&again).count() as u32;
    if !whole || count == 0 || again.len() != data.len() {
        return;
    }
    for codec in [BlockCodec::Zstd, BlockCodec::Columnar] {
        seal_one_block(codec, data, count);
    }
});

fn seal_one_block(codec: BlockCodec, data: &[u8], count: u32) {
    let header = SegmentHeader {
        codec,
        tree_hash: TreeHash::Sha256,
        first_index: 0,
        count: count as u64,
    };
    let (mut b, head) = SegmentBuilder::new(header, 1);
    let mut file = head.to_vec();
    file.extend(b.add_block(data, count).expect("compress"));
    file.extend(b.finish(Vec::new(), [0u8; 32], 0, 0, String::new()));
    let h = SegmentHeader::decode(&file[..HEADER_BYTES]).expect("header");
    let t =
        decode_trailer(file.len() as u64, &file[file.len() - TRAILER_BYTES..]).expect("trailer");
    let (s, e) = (
        t.footer_offset as usize,
        t.footer_offset as usize + t.footer_bytes as usize,
    );
    let footer = decode_footer(&h, &t, &file[s..e]).expect("footer");
    let entry = &footer.blocks[0];
    let at = entry.offset as usize;
    let raw =
        decode_block(0, entry, &file[at..at + entry.compressed_bytes as usize]).expect("block");
    assert_eq!(raw, data);
}
