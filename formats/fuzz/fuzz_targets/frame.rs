#![no_main]
use auditlog_formats::frame::*;

fn payload(data: &[u8]) {
    if let Ok(events) = decode_batch(data) {
        let declared = events.declared_count() as usize;
        assert_eq!(declared, events.collect::<Vec<_>>().len());
    }
    let _ = decode_hello(data);
    let _ = decode_ack(data);
    let _ = decode_error(data);
    let _ = HelloOk::decode(data);
}

/// A whole frame: the header, then its payload by the header's type.
fn frame(data: &[u8]) {
    let Some((h, p)) = data.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return;
    };
    let Ok(header) = FrameHeader::decode(h, 1 << 20) else {
        return;
    };
    if header.payload_bytes as usize != p.len() {
        return;
    }
    let _ = match header.frame_type {
        FrameType::Hello => decode_hello(p).map(|_| ()),
        FrameType::Batch => decode_batch(p).map(|_| ()),
        FrameType::Ack => decode_ack(p).map(|_| ()),
        FrameType::Error => decode_error(p).map(|_| ()),
        FrameType::HelloOk => HelloOk::decode(p).map(|_| ()),
    };
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    payload(data);
    frame(data);
    // The header's length made right: the payload is decoded by the frame's type.
    if let Some(fixed) = auditlog_formats_fuzz::fix_frame(data) {
        frame(&fixed);
    }
});
