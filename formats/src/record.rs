//! The leaf input (FORMATS.md §4). Two versions, both readable:
//!
//! ```text
//! v1 = 0x01 | received_at_unix_ns:u64 BE | payload
//! v2 = 0x02 | received_at_unix_ns:u64 BE | submitter_bytes:u16 BE | submitter | payload
//! ```
//! The payload is the client's bytes exactly; the index is the leaf's position, not stored.
//! `submitter` (v2) is who the server authenticated for the submission — never anything the
//! client wrote — in the forms `Submitter` builds. The engine writes v2 only; v1 records
//! (logs written before submitters were recorded) stay readable and verifiable.

use std::sync::Arc;

pub const RECORD_VERSION_V1: u8 = 1;
/// The version the engine writes.
pub const RECORD_VERSION: u8 = 2;
pub const RECORD_V1_HEADER_BYTES: usize = 9;
/// v2's fixed part: version, receipt time, submitter length.
pub const RECORD_V2_HEADER_BYTES: usize = 11;
/// Where `received_at_unix_ns` sits in a record of either version (after the version byte).
pub const RECEIVED_AT_OFFSET: usize = 1;

/// Sets the receipt time of an encoded record (either version) in place.
pub fn set_received_at(record: &mut [u8], received_at_unix_ns: u64) {
    record[RECEIVED_AT_OFFSET..RECEIVED_AT_OFFSET + 8]
        .copy_from_slice(&received_at_unix_ns.to_be_bytes());
}

/// The smallest header of any version.
pub const RECORD_HEADER_BYTES: usize = RECORD_V1_HEADER_BYTES;
/// The tlog-tiles entry-bundle limit on one entry.
pub const PAYLOAD_BYTES_MAX: usize = 65536;
/// A submitter is 1 to this many bytes of UTF-8 without control characters.
pub const SUBMITTER_BYTES_MAX: usize = 1024;
pub const RECORD_BYTES_MAX: usize =
    RECORD_V2_HEADER_BYTES + SUBMITTER_BYTES_MAX + PAYLOAD_BYTES_MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record version {0} is unknown (expected 1 or 2)")]
    Version(u8),
    #[error("record payload of {0} bytes is empty or over the 65536-byte limit")]
    PayloadSize(usize),
    #[error("record submitter: {0}")]
    Submitter(&'static str),
}

/// Who submitted a record, as the server authenticated it. The forms, one per path in:
///
/// | form | who |
/// |---|---|
/// | `auditlogd` | the daemon itself (admin steps, key rotation, its configuration at start) |
/// | `token:<name>` | an HTTP or TCP client holding the bearer token named `<name>` |
/// | `cert:<name>` | an HTTP or TCP client whose certificate matched `<name>` (`client_roles`) |
/// | `oidc:<sub>` | an HTTP client signed in with an OIDC JWT whose verified `sub` claim is `<sub>` |
/// | `syslog:<ip>` | a syslog sender at `<ip>` without a client certificate |
/// | `syslog:<ip> cert:<name>` | a syslog sender at `<ip>` whose certificate names `<name>` |
///
/// Names are the server's own (token names, certificate names, verified OIDC subjects); a
/// name with control characters has them replaced by `?`, and a form longer than
/// `SUBMITTER_BYTES_MAX` is cut at a character boundary, so every constructor here succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Submitter(Arc<str>);

impl Submitter {
    pub const DAEMON: &'static str = "auditlogd";

    /// Checks a submitter read from a record (or given by a caller) against the rule.
    pub fn parse(s: &str) -> Result<Submitter, RecordError> {
        check_submitter(s.as_bytes())?;
        Ok(Submitter(s.into()))
    }

    pub fn daemon() -> Submitter {
        Submitter(Self::DAEMON.into())
    }

    pub fn token(name: &str) -> Submitter {
        Self::cleaned(format!("token:{name}"))
    }

    pub fn cert(name: &str) -> Submitter {
        Self::cleaned(format!("cert:{name}"))
    }

    /// An HTTP caller signed in with an OIDC JWT: `subject` is its verified `sub` claim.
    pub fn oidc(subject: &str) -> Submitter {
        Self::cleaned(format!("oidc:{subject}"))
    }

    pub fn syslog(peer: std::net::IpAddr, cert: Option<&str>) -> Submitter {
        match cert {
            Some(name) => Self::cleaned(format!("syslog:{peer} cert:{name}")),
            None => Self::cleaned(format!("syslog:{peer}")),
        }
    }

    fn cleaned(s: String) -> Submitter {
        let mut out: String = s
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        if out.len() > SUBMITTER_BYTES_MAX {
            let mut cut = SUBMITTER_BYTES_MAX;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        let s = Submitter(out.into());
        debug_assert!(check_submitter(s.as_str().as_bytes()).is_ok());
        s
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_submitter(b: &[u8]) -> Result<&str, RecordError> {
    if b.is_empty() || b.len() > SUBMITTER_BYTES_MAX {
        return Err(RecordError::Submitter("empty or over 1024 bytes"));
    }
    let s = std::str::from_utf8(b).map_err(|_| RecordError::Submitter("not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(RecordError::Submitter("holds a control character"));
    }
    Ok(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub received_at_unix_ns: u64,
    /// `None` for a version 1 record, which did not record one.
    pub submitter: Option<&'a str>,
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Record<'a>, RecordError> {
        if bytes.len() < RECORD_V1_HEADER_BYTES {
            return Err(RecordError::Short(bytes.len()));
        }
        let received_at_unix_ns = crate::be_u64(&bytes[1..9]);
        let (submitter, payload) = match bytes[0] {
            RECORD_VERSION_V1 => (None, &bytes[RECORD_V1_HEADER_BYTES..]),
            RECORD_VERSION => {
                if bytes.len() < RECORD_V2_HEADER_BYTES {
                    return Err(RecordError::Short(bytes.len()));
                }
                let n = u16::from_be_bytes([bytes[9], bytes[10]]) as usize;
                let rest = &bytes[RECORD_V2_HEADER_BYTES..];
                if rest.len() < n {
                    return Err(RecordError::Short(bytes.len()));
                }
                let (sub, payload) = rest.split_at(n);
                (Some(check_submitter(sub)?), payload)
            }
            v => return Err(RecordError::Version(v)),
        };
        if payload.is_empty() || payload.len() > PAYLOAD_BYTES_MAX {
            return Err(RecordError::PayloadSize(payload.len()));
        }
        Ok(Record {
            received_at_unix_ns,
            submitter,
            payload,
        })
    }

    pub fn encoded_len(&self) -> usize {
        match self.submitter {
            None => RECORD_V1_HEADER_BYTES + self.payload.len(),
            Some(s) => RECORD_V2_HEADER_BYTES + s.len() + self.payload.len(),
        }
    }

    /// Version 2 when there is a submitter, else version 1 (kept for fixtures of old logs).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(!self.payload.is_empty() && self.payload.len() <= PAYLOAD_BYTES_MAX);
        match self.submitter {
            None => {
                out.push(RECORD_VERSION_V1);
                out.extend_from_slice(&self.received_at_unix_ns.to_be_bytes());
            }
            Some(s) => {
                // The length bound keeps the encoding exact; the full rule (UTF-8 without
                // control characters) is `Submitter`'s, checked where one is made and by
                // every parse, not again per record on the ingest path.
                assert!(
                    !s.is_empty() && s.len() <= SUBMITTER_BYTES_MAX,
                    "submitter {s:?}"
                );
                debug_assert!(check_submitter(s.as_bytes()).is_ok(), "submitter {s:?}");
                out.push(RECORD_VERSION);
                out.extend_from_slice(&self.received_at_unix_ns.to_be_bytes());
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
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
    fn version_1_round_trip_and_refusals() {
        let r = Record {
            received_at_unix_ns: 0x0102030405060708,
            submitter: None,
            payload: b"{}",
        };
        let b = r.to_bytes();
        assert_eq!(b, [1, 1, 2, 3, 4, 5, 6, 7, 8, b'{', b'}']);
        assert_eq!(Record::parse(&b), Ok(r));
        assert_eq!(Record::parse(&b[..5]), Err(RecordError::Short(5)));
        assert_eq!(Record::parse(&b[..9]), Err(RecordError::PayloadSize(0)));
        let mut v3 = b.clone();
        v3[0] = 3;
        assert_eq!(Record::parse(&v3), Err(RecordError::Version(3)));
        let big = vec![b'x'; PAYLOAD_BYTES_MAX + 1];
        let mut raw = vec![1u8; 9];
        raw.extend_from_slice(&big);
        assert!(Record::parse(&raw).is_err());
        assert!(Record::parse(&raw[..9 + PAYLOAD_BYTES_MAX]).is_ok());
    }

    #[test]
    fn version_2_known_answer_and_refusals() {
        let r = Record {
            received_at_unix_ns: 0x0102030405060708,
            submitter: Some("token:ci"),
            payload: b"{}",
        };
        let b = r.to_bytes();
        let mut want = vec![2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 8];
        want.extend_from_slice(b"token:ci{}");
        assert_eq!(b, want);
        assert_eq!(Record::parse(&b), Ok(r));
        assert_eq!(r.encoded_len(), b.len());
        // Cut inside the fixed part, inside the submitter, and with no payload.
        assert_eq!(Record::parse(&b[..10]), Err(RecordError::Short(10)));
        assert_eq!(Record::parse(&b[..15]), Err(RecordError::Short(15)));
        assert_eq!(Record::parse(&b[..19]), Err(RecordError::PayloadSize(0)));
        // An empty submitter, one with a control character, one not UTF-8.
        let mut empty = b[..9].to_vec();
        empty.extend_from_slice(&[0, 0, b'{', b'}']);
        assert!(matches!(
            Record::parse(&empty),
            Err(RecordError::Submitter(_))
        ));
        for bad in [&b"a\nb"[..], &[0xff, 0xfe][..]] {
            let mut x = b[..9].to_vec();
            x.extend_from_slice(&(bad.len() as u16).to_be_bytes());
            x.extend_from_slice(bad);
            x.extend_from_slice(b"{}");
            assert!(matches!(Record::parse(&x), Err(RecordError::Submitter(_))));
        }
        // The largest record parses.
        let sub = "s".repeat(SUBMITTER_BYTES_MAX);
        let payload = vec![b'x'; PAYLOAD_BYTES_MAX];
        let max = Record {
            received_at_unix_ns: 1,
            submitter: Some(&sub),
            payload: &payload,
        };
        assert_eq!(max.encoded_len(), RECORD_BYTES_MAX);
        assert!(Record::parse(&max.to_bytes()).is_ok());
    }

    #[test]
    fn submitter_forms_are_always_valid() {
        assert_eq!(Submitter::daemon().as_str(), "auditlogd");
        assert_eq!(Submitter::token("ci").as_str(), "token:ci");
        assert_eq!(Submitter::cert("svc.example").as_str(), "cert:svc.example");
        let ip: std::net::IpAddr = "10.0.0.7".parse().expect("ip");
        assert_eq!(Submitter::syslog(ip, None).as_str(), "syslog:10.0.0.7");
        assert_eq!(
            Submitter::syslog(ip, Some("relay")).as_str(),
            "syslog:10.0.0.7 cert:relay"
        );
        assert_eq!(Submitter::token("a\nb").as_str(), "token:a?b");
        assert_eq!(
            Submitter::oidc("248289761001").as_str(),
            "oidc:248289761001"
        );
        assert_eq!(Submitter::oidc("a\u{7}b").as_str(), "oidc:a?b");
        let long = Submitter::oidc(&"x".repeat(SUBMITTER_BYTES_MAX));
        assert_eq!(long.as_str().len(), SUBMITTER_BYTES_MAX);
        let long = Submitter::cert(&"é".repeat(SUBMITTER_BYTES_MAX));
        assert!(long.as_str().len() <= SUBMITTER_BYTES_MAX);
        assert!(Submitter::parse(long.as_str()).is_ok());
        assert!(Submitter::parse("").is_err());
    }
}
