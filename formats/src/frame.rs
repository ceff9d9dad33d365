//! The TCP ingest protocol's frames. Pure encoding and decoding; the connection state
//! machine lives in the server and the client. All integers big-endian.
//!
//! ```text
//! frame   = type:u8 | flags:u8 (0) | reserved:u16 (0) | request_id:u32 | payload_bytes:u32 | payload
//! HELLO     0x01  c→s  version:u16 (1) | token_bytes:u16 | token (UTF-8)
//! BATCH     0x02  c→s  count:u32 | count × (event_bytes:u32 | event)
//! HELLO_OK  0x81  s→c  version:u16 | tree_hash:u8 | reserved:u8 | frame_bytes_max:u32 | batches_in_flight_max:u32
//! ACK       0x82  s→c  first_index:u64 | received_at_unix_ns:u64 | count:u32 | count × leaf_hash[32]
//! ERROR     0x83  s→c  code:u16 | message_bytes:u16 | message (UTF-8)
//! ```
//! The first client frame must be HELLO; the server answers HELLO_OK or ERROR and closes.
//! The client may then send up to `batches_in_flight_max` BATCH frames before their ACKs;
//! ACKs come in the order the batches were sent, each echoing its batch's `request_id`.
//! A refused batch gets an ERROR with its `request_id` and the connection stays open; a
//! malformed frame gets an ERROR with request_id 0 and the connection is closed.

pub const FRAME_HEADER_BYTES: usize = 12;
pub const PROTOCOL_VERSION: u16 = 1;
pub const TOKEN_BYTES_MAX: usize = 1024;
pub const MESSAGE_BYTES_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0x01,
    Batch = 0x02,
    HelloOk = 0x81,
    Ack = 0x82,
    Error = 0x83,
}

impl FrameType {
    pub fn from_u8(b: u8) -> Option<FrameType> {
        Some(match b {
            0x01 => FrameType::Hello,
            0x02 => FrameType::Batch,
            0x81 => FrameType::HelloOk,
            0x82 => FrameType::Ack,
            0x83 => FrameType::Error,
            _ => return None,
        })
    }
}

/// Error codes carried by ERROR frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    BadFrame = 1,
    Unauthorized = 2,
    Forbidden = 3,
    BadEvent = 4,
    TooLarge = 5,
    Busy = 6,
    EngineFailed = 7,
    ShuttingDown = 8,
    UnsupportedVersion = 9,
}

impl ErrorCode {
    pub fn from_u16(c: u16) -> Option<ErrorCode> {
        Some(match c {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::Unauthorized,
            3 => ErrorCode::Forbidden,
            4 => ErrorCode::BadEvent,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::Busy,
            7 => ErrorCode::EngineFailed,
            8 => ErrorCode::ShuttingDown,
            9 => ErrorCode::UnsupportedVersion,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame header has non-zero reserved bits")]
    Reserved,
    #[error("frame payload of {bytes} bytes is over the {max}-byte limit")]
    TooLarge { bytes: u32, max: u32 },
    #[error("{0} payload malformed: {1}")]
    Payload(&'static str, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_type: FrameType,
    pub request_id: u32,
    pub payload_bytes: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        h[0] = self.frame_type as u8;
        h[4..8].copy_from_slice(&self.request_id.to_be_bytes());
        h[8..12].copy_from_slice(&self.payload_bytes.to_be_bytes());
        h
    }

    /// Parses a header and enforces the payload limit before anything is read or allocated.
    pub fn decode(
        h: &[u8; FRAME_HEADER_BYTES],
        payload_bytes_max: u32,
    ) -> Result<FrameHeader, FrameError> {
        let frame_type = FrameType::from_u8(h[0]).ok_or(FrameError::UnknownType(h[0]))?;
        if h[1] != 0 || h[2] != 0 || h[3] != 0 {
            return Err(FrameError::Reserved);
        }
        let payload_bytes = crate::be_u32(&h[8..12]);
        if payload_bytes > payload_bytes_max {
            return Err(FrameError::TooLarge {
                bytes: payload_bytes,
                max: payload_bytes_max,
            });
        }
        Ok(FrameHeader {
            frame_type,
            request_id: crate::be_u32(&h[4..8]),
            payload_bytes,
        })
    }
}

/// A whole frame (header and payload) as bytes.
pub fn frame(frame_type: FrameType, request_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(
        &FrameHeader {
            frame_type,
            request_id,
            payload_bytes: payload.len() as u32,
        }
        .encode(),
    );
    out.extend_from_slice(payload);
    out
}

pub fn hello_payload(token: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + token.len());
    p.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    p.extend_from_slice(&(token.len() as u16).to_be_bytes());
    p.extend_from_slice(token.as_bytes());
    p
}

/// Returns (version, token).
pub fn decode_hello(p: &[u8]) -> Result<(u16, &str), FrameError> {
    let bad = |m: &str| FrameError::Payload("HELLO", m.to_string());
    if p.len() < 4 {
        return Err(bad("shorter than 4 bytes"));
    }
    let version = u16::from_be_bytes([p[0], p[1]]);
    let len = u16::from_be_bytes([p[2], p[3]]) as usize;
    if len > TOKEN_BYTES_MAX || p.len() != 4 + len {
        return Err(bad("token length does not match the payload"));
    }
    let token = std::str::from_utf8(&p[4..]).map_err(|_| bad("token is not UTF-8"))?;
    Ok((version, token))
}

/// Appends one event to a BATCH payload under construction (start it with `[0; 4]`).
pub fn push_batch_event(payload: &mut Vec<u8>, event: &[u8]) {
    payload.extend_from_slice(&(event.len() as u32).to_be_bytes());
    payload.extend_from_slice(event);
    let count = crate::be_u32(&payload[0..4]) + 1;
    payload[0..4].copy_from_slice(&count.to_be_bytes());
}

/// Iterates the events of a BATCH payload, checking the framing completely first so a
/// malformed batch is refused before any of its events is used.
pub fn decode_batch(p: &[u8]) -> Result<BatchEvents<'_>, FrameError> {
    let bad = |m: String| FrameError::Payload("BATCH", m);
    if p.len() < 4 {
        return Err(bad("shorter than its count".into()));
    }
    let count = crate::be_u32(&p[0..4]);
    if count == 0 {
        return Err(bad("no events".into()));
    }
    let mut at = 4usize;
    for i in 0..count {
        if p.len() < at + 4 {
            return Err(bad(format!("event {i}: truncated length")));
        }
        let len = crate::be_u32(&p[at..at + 4]) as usize;
        at += 4;
        if p.len() - at < len {
            return Err(bad(format!("event {i}: {len} bytes run past the frame")));
        }
        at += len;
    }
    if at != p.len() {
        return Err(bad(format!(
            "{} stray bytes after {count} events",
            p.len() - at
        )));
    }
    Ok(BatchEvents {
        rest: &p[4..],
        left: count,
    })
}

pub struct BatchEvents<'a> {
    rest: &'a [u8],
    left: u32,
}

impl BatchEvents<'_> {
    pub fn declared_count(&self) -> u32 {
        self.left
    }
}

impl<'a> Iterator for BatchEvents<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let len = crate::be_u32(&self.rest[0..4]) as usize;
        let e = &self.rest[4..4 + len];
        self.rest = &self.rest[4 + len..];
        self.left -= 1;
        Some(e)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloOk {
    pub version: u16,
    pub tree_hash: u8,
    pub frame_bytes_max: u32,
    pub batches_in_flight_max: u32,
    /// Who the server will record as the submitter of this connection's events (record
    /// version 2), so a client can rebuild its records from an ACK. `None` from a server
    /// that predates submitters (a 12-byte HELLO_OK).
    pub submitter: Option<String>,
}

impl HelloOk {
    pub fn encode(&self) -> Vec<u8> {
        let sub = self.submitter.as_deref().unwrap_or("");
        assert!(sub.len() <= crate::record::SUBMITTER_BYTES_MAX);
        let mut p = vec![0u8; 12];
        p[0..2].copy_from_slice(&self.version.to_be_bytes());
        p[2] = self.tree_hash;
        p[4..8].copy_from_slice(&self.frame_bytes_max.to_be_bytes());
        p[8..12].copy_from_slice(&self.batches_in_flight_max.to_be_bytes());
        if self.submitter.is_some() {
            p.extend_from_slice(&(sub.len() as u16).to_be_bytes());
            p.extend_from_slice(sub.as_bytes());
        }
        p
    }

    pub fn decode(p: &[u8]) -> Result<HelloOk, FrameError> {
        let bad = |m: String| FrameError::Payload("HELLO_OK", m);
        if p.len() < 12 {
            return Err(bad(format!("{} bytes, expected at least 12", p.len())));
        }
        let submitter = match &p[12..] {
            [] => None,
            [a, b, rest @ ..] if u16::from_be_bytes([*a, *b]) as usize == rest.len() => {
                let s = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|s| crate::record::Submitter::parse(s).ok())
                    .ok_or_else(|| bad("the submitter is not a valid submitter".into()))?;
                Some(s.as_str().to_string())
            }
            _ => {
                return Err(bad(
                    "the submitter's length does not match the payload".into()
                ))
            }
        };
        Ok(HelloOk {
            version: u16::from_be_bytes([p[0], p[1]]),
            tree_hash: p[2],
            frame_bytes_max: crate::be_u32(&p[4..8]),
            batches_in_flight_max: crate::be_u32(&p[8..12]),
            submitter,
        })
    }
}

pub fn ack_payload(
    first_index: u64,
    received_at_unix_ns: u64,
    leaf_hashes: &[crate::Hash],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(20 + 32 * leaf_hashes.len());
    p.extend_from_slice(&first_index.to_be_bytes());
    p.extend_from_slice(&received_at_unix_ns.to_be_bytes());
    p.extend_from_slice(&(leaf_hashes.len() as u32).to_be_bytes());
    for h in leaf_hashes {
        p.extend_from_slice(h);
    }
    p
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub first_index: u64,
    pub received_at_unix_ns: u64,
    pub leaf_hashes: Vec<crate::Hash>,
}

pub fn decode_ack(p: &[u8]) -> Result<Ack, FrameError> {
    let bad = |m: &str| FrameError::Payload("ACK", m.to_string());
    if p.len() < 20 {
        return Err(bad("shorter than 20 bytes"));
    }
    let count = crate::be_u32(&p[16..20]) as usize;
    if p.len() != 20 + 32 * count {
        return Err(bad("hash count does not match the payload"));
    }
    let leaf_hashes = p[20..].chunks_exact(32).map(|c| {
        let mut h = [0u8; 32];
        h.copy_from_slice(c);
        h
    });
    Ok(Ack {
        first_index: crate::be_u64(&p[0..8]),
        received_at_unix_ns: crate::be_u64(&p[8..16]),
        leaf_hashes: leaf_hashes.collect(),
    })
}

pub fn error_payload(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut m = message.as_bytes();
    if m.len() > MESSAGE_BYTES_MAX {
        let mut cut = MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        m = &m[..cut];
    }
    let mut p = Vec::with_capacity(4 + m.len());
    p.extend_from_slice(&(code as u16).to_be_bytes());
    p.extend_from_slice(&(m.len() as u16).to_be_bytes());
    p.extend_from_slice(m);
    p
}

/// Returns (code, message); an unknown code is kept as its number in the message.
pub fn decode_error(p: &[u8]) -> Result<(Option<ErrorCode>, String), FrameError> {
    let bad = |m: &str| FrameError::Payload("ERROR", m.to_string());
    if p.len() < 4 {
        return Err(bad("shorter than 4 bytes"));
    }
    let code = u16::from_be_bytes([p[0], p[1]]);
    let len = u16::from_be_bytes([p[2], p[3]]) as usize;
    if p.len() != 4 + len {
        return Err(bad("message length does not match the payload"));
    }
    let msg = std::str::from_utf8(&p[4..]).map_err(|_| bad("message is not UTF-8"))?;
    Ok((ErrorCode::from_u16(code), msg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let f = frame(FrameType::Hello, 0, &hello_payload("tok"));
        let h = FrameHeader::decode(f[..12].try_into().expect("12"), 1 << 20).expect("header");
        assert_eq!(
            (h.frame_type, h.payload_bytes as usize),
            (FrameType::Hello, f.len() - 12)
        );
        assert_eq!(decode_hello(&f[12..]).expect("hello"), (1, "tok"));

        let mut b = vec![0u8; 4];
        push_batch_event(&mut b, b"{\"a\":1}");
        push_batch_event(&mut b, b"{}");
        let events: Vec<_> = decode_batch(&b).expect("batch").collect();
        assert_eq!(events, vec![&b"{\"a\":1}"[..], &b"{}"[..]]);

        let ack = ack_payload(7, 9, &[[1u8; 32], [2u8; 32]]);
        assert_eq!(
            decode_ack(&ack).expect("ack"),
            Ack {
                first_index: 7,
                received_at_unix_ns: 9,
                leaf_hashes: vec![[1u8; 32], [2u8; 32]]
            }
        );
        let ok = HelloOk {
            version: 1,
            tree_hash: 1,
            frame_bytes_max: 4 << 20,
            batches_in_flight_max: 64,
            submitter: Some("token:ci".into()),
        };
        let enc = ok.encode();
        assert_eq!(enc.len(), 12 + 2 + 8);
        assert_eq!(HelloOk::decode(&enc), Ok(ok.clone()));
        // A server from before submitters: 12 bytes, no submitter.
        let old = HelloOk {
            submitter: None,
            ..ok
        };
        assert_eq!(old.encode().len(), 12);
        assert_eq!(HelloOk::decode(&old.encode()), Ok(old));
        // A length that does not match, and a submitter with a control character.
        assert!(HelloOk::decode(&enc[..enc.len() - 1]).is_err());
        let mut ctl = enc.clone();
        ctl[14] = b'\n';
        assert!(HelloOk::decode(&ctl).is_err());
        let e = error_payload(ErrorCode::BadEvent, "event 3: bad");
        assert_eq!(
            decode_error(&e).expect("error"),
            (Some(ErrorCode::BadEvent), "event 3: bad".to_string())
        );
    }

    #[test]
    fn refusals() {
        let mut h = FrameHeader {
            frame_type: FrameType::Batch,
            request_id: 1,
            payload_bytes: 100,
        }
        .encode();
        assert_eq!(
            FrameHeader::decode(&h, 99),
            Err(FrameError::TooLarge {
                bytes: 100,
                max: 99
            })
        );
        h[1] = 1;
        assert_eq!(FrameHeader::decode(&h, 1000), Err(FrameError::Reserved));
        h[0] = 0x55;
        assert_eq!(
            FrameHeader::decode(&h, 1000),
            Err(FrameError::UnknownType(0x55))
        );
        let mut b = vec![0u8; 4];
        push_batch_event(&mut b, b"{}");
        for cut in 0..b.len() {
            assert!(decode_batch(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode_batch(&extra).is_err());
        assert!(decode_batch(&[0, 0, 0, 0]).is_err());
        assert!(decode_hello(&[0, 1, 0, 5, b'a']).is_err());
        assert!(decode_ack(&ack_payload(1, 1, &[[0; 32]])[..51]).is_err());
    }
}
