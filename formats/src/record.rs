//! The leaf input: `version:u8 = 1 || received_at_unix_ns:u64 BE || payload`.
//! The payload is the client's bytes exactly; the index is the leaf's position, not stored.

pub const RECORD_VERSION: u8 = 1;
pub const RECORD_HEADER_BYTES: usize = 9;
/// The tlog-tiles entry-bundle limit on one entry.
pub const PAYLOAD_BYTES_MAX: usize = 65536;
pub const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + PAYLOAD_BYTES_MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its 9-byte header")]
    Short(usize),
    #[error("record version {0} is unknown (expected 1)")]
    Version(u8),
    #[error("record payload of {0} bytes is empty or over the 65536-byte limit")]
    PayloadSize(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub received_at_unix_ns: u64,
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Record<'a>, RecordError> {
        if bytes.len() < RECORD_HEADER_BYTES {
            return Err(RecordError::Short(bytes.len()));
        }
        if bytes[0] != RECORD_VERSION {
            return Err(RecordError::Version(bytes[0]));
        }
        let payload = &bytes[RECORD_HEADER_BYTES..];
        if payload.is_empty() || payload.len() > PAYLOAD_BYTES_MAX {
            return Err(RecordError::PayloadSize(payload.len()));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[1..9]);
        Ok(Record {
            received_at_unix_ns: u64::from_be_bytes(ts),
            payload,
        })
    }

    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(!self.payload.is_empty() && self.payload.len() <= PAYLOAD_BYTES_MAX);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.received_at_unix_ns.to_be_bytes());
        out.extend_from_slice(self.payload);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let r = Record {
            received_at_unix_ns: 0x0102030405060708,
            payload: b"{}",
        };
        let b = r.to_bytes();
        assert_eq!(b, [1, 1, 2, 3, 4, 5, 6, 7, 8, b'{', b'}']);
        assert_eq!(Record::parse(&b), Ok(r));
        assert_eq!(Record::parse(&b[..5]), Err(RecordError::Short(5)));
        assert_eq!(Record::parse(&b[..9]), Err(RecordError::PayloadSize(0)));
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(Record::parse(&v2), Err(RecordError::Version(2)));
        let big = vec![b'x'; PAYLOAD_BYTES_MAX + 1];
        let mut raw = vec![1u8; 9];
        raw.extend_from_slice(&big);
        assert!(Record::parse(&raw).is_err());
        assert!(Record::parse(&raw[..RECORD_BYTES_MAX]).is_ok());
    }
}
