#![no_main]
use auditlog_formats::frame::*;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() >= FRAME_HEADER_BYTES {
        let h: [u8; FRAME_HEADER_BYTES] = data[..FRAME_HEADER_BYTES].try_into().expect("len");
        let _ = FrameHeader::decode(&h, 1 << 20);
    }
    if let Ok(events) = decode_batch(data) {
        let declared = events.declared_count() as usize;
        assert_eq!(declared, events.collect::<Vec<_>>().len());
    }
    let _ = decode_hello(data);
    let _ = decode_ack(data);
    let _ = decode_error(data);
    let _ = HelloOk::decode(data);
});
