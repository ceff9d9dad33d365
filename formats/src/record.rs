//! The leaf input (FORMATS.md §4). Three versions, all readable:
//!
//! ```text
//! v1 = 0x01 | received_at_unix_ns:u64 BE | payload
//! v2 = 0x02 | received_at_unix_ns:u64 BE | submitter_bytes:u16 BE | submitter | payload
//! v3 = 0x03 | received_at_unix_ns:u64 BE | submitter_bytes:u16 BE | submitter | message
//! ```
//! The payload is the client's bytes exactly; the index is the leaf's position, not stored.
//! `submitter` (v2, v3) is who the server authenticated for the submission — never anything
//! the client wrote — in the forms `Submitter` builds. The engine writes v2 for events
//! (JSON) and v3 for syslog messages, stored once, as received; v1 records (logs written
//! before submitters were recorded) stay readable and verifiable.
//!
//! Whatever shows a record's event (the API, exports, the forwarder, the client) takes it
//! from [`Record::event_json`]: a v1/v2 payload as stored, a v3 message's event derived by
//! the syslog mapping (FORMATS.md §14.4), deterministically from the record alone.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::syslog;

pub const RECORD_VERSION_V1: u8 = 1;
/// The version the engine writes for an event (a JSON object).
pub const RECORD_VERSION: u8 = 2;
/// The version the engine writes for a syslog message (its event is derived at read time).
pub const RECORD_VERSION_SYSLOG: u8 = 3;
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
/// The largest payload a reader accepts. New records are limited further, to one
/// tlog-tiles entry whole (`tiles::ENTRY_BYTES_MAX`, FORMATS.md §4); records of older logs
/// may reach this.
pub const PAYLOAD_BYTES_MAX: usize = 65536;
/// A submitter is 1 to this many bytes of UTF-8 without control characters.
pub const SUBMITTER_BYTES_MAX: usize = 1024;
pub const RECORD_BYTES_MAX: usize =
    RECORD_V2_HEADER_BYTES + SUBMITTER_BYTES_MAX + PAYLOAD_BYTES_MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record version {0} is unknown (expected 1, 2 or 3)")]
    Version(u8),
    #[error("record payload of {0} bytes is empty or over the 65536-byte limit")]
    PayloadSize(usize),
    #[error("record submitter: {0}")]
    Submitter(&'static str),
    #[error("syslog record: submitter {0:?} is not syslog:<ip>")]
    SyslogSubmitter(String),
    #[error("syslog record: {0}")]
    Syslog(#[from] syslog::ParseError),
}

/// What a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// One JSON object (FORMATS.md §10): versions 1 and 2.
    Event,
    /// One syslog message as received, without its RFC 6587 framing: version 3. Its event
    /// is derived when read ([`Record::event_json`]).
    Syslog,
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

    /// The peer address of a `syslog:<ip>` or `syslog:<ip> cert:<name>` form; `None` for
    /// any other text.
    pub fn syslog_peer(s: &str) -> Option<IpAddr> {
        let rest = s.strip_prefix("syslog:")?;
        let ip = rest.split_once(' ').map_or(rest, |(ip, _)| ip);
        ip.parse().ok()
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
    /// `Syslog` (version 3) needs a submitter of the form `syslog:<ip>…`.
    pub kind: PayloadKind,
    /// As stored: the event's JSON, or the syslog message. Shown through `event_json`.
    pub payload: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Record<'a>, RecordError> {
        if bytes.len() < RECORD_V1_HEADER_BYTES {
            return Err(RecordError::Short(bytes.len()));
        }
        let received_at_unix_ns = crate::be_u64(&bytes[1..9]);
        let (submitter, payload, kind) = match bytes[0] {
            RECORD_VERSION_V1 => (None, &bytes[RECORD_V1_HEADER_BYTES..], PayloadKind::Event),
            v @ (RECORD_VERSION | RECORD_VERSION_SYSLOG) => {
                if bytes.len() < RECORD_V2_HEADER_BYTES {
                    return Err(RecordError::Short(bytes.len()));
                }
                let n = u16::from_be_bytes([bytes[9], bytes[10]]) as usize;
                let rest = &bytes[RECORD_V2_HEADER_BYTES..];
                if rest.len() < n {
                    return Err(RecordError::Short(bytes.len()));
                }
                let (sub, payload) = rest.split_at(n);
                let kind = if v == RECORD_VERSION {
                    PayloadKind::Event
                } else {
                    PayloadKind::Syslog
                };
                (Some(check_submitter(sub)?), payload, kind)
            }
            v => return Err(RecordError::Version(v)),
        };
        if payload.is_empty() || payload.len() > PAYLOAD_BYTES_MAX {
            return Err(RecordError::PayloadSize(payload.len()));
        }
        Ok(Record {
            received_at_unix_ns,
            submitter,
            kind,
            payload,
        })
    }

    /// The event this record shows, as one JSON object: the payload itself (versions 1
    /// and 2), or (version 3) the audit event of its syslog message, derived by the mapping
    /// of FORMATS.md §14.4 from the message, the receipt time and the peer address in the
    /// submitter, so the same record always gives the same bytes. Fails only for a version
    /// 3 record that no listener would have written (`check_payload` says the same).
    pub fn event_json(&self) -> Result<Cow<'a, [u8]>, RecordError> {
        match self.kind {
            PayloadKind::Event => Ok(Cow::Borrowed(self.payload)),
            PayloadKind::Syslog => {
                let peer = self.syslog_peer()?;
                let m = syslog::parse(self.payload, self.received_at_unix_ns)?;
                let mut out = Vec::with_capacity(512 + 2 * self.payload.len());
                syslog::write_audit_event_unbounded(
                    &m,
                    self.payload,
                    self.received_at_unix_ns,
                    Some(peer),
                    &mut out,
                );
                Ok(Cow::Owned(out))
            }
        }
    }

    /// What a verifier checks of a payload beyond the record's framing. Version 3: the
    /// submitter names a peer and the message parses as syslog at the record's receipt
    /// time (else the record was altered, or never written by a listener), so its event
    /// can be derived. Versions 1 and 2: nothing (the schema check is optional, §11).
    pub fn check_payload(&self) -> Result<(), RecordError> {
        match self.kind {
            PayloadKind::Event => Ok(()),
            PayloadKind::Syslog => {
                self.syslog_peer()?;
                syslog::parse(self.payload, self.received_at_unix_ns)?;
                Ok(())
            }
        }
    }

    fn syslog_peer(&self) -> Result<IpAddr, RecordError> {
        let s = self.submitter.unwrap_or_default();
        Submitter::syslog_peer(s).ok_or_else(|| RecordError::SyslogSubmitter(s.to_string()))
    }

    pub fn encoded_len(&self) -> usize {
        match self.submitter {
            None => RECORD_V1_HEADER_BYTES + self.payload.len(),
            Some(s) => RECORD_V2_HEADER_BYTES + s.len() + self.payload.len(),
        }
    }

    /// Version 3 for a syslog message; for an event version 2 when there is a submitter,
    /// else version 1 (kept for fixtures of old logs).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(!self.payload.is_empty() && self.payload.len() <= PAYLOAD_BYTES_MAX);
        assert!(
            self.kind == PayloadKind::Event || self.submitter.is_some(),
            "a syslog record has a submitter"
        );
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
                out.push(match self.kind {
                    PayloadKind::Event => RECORD_VERSION,
                    PayloadKind::Syslog => RECORD_VERSION_SYSLOG,
                });
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
            kind: PayloadKind::Event,
            payload: b"{}",
        };
        let b = r.to_bytes();
        assert_eq!(b, [1, 1, 2, 3, 4, 5, 6, 7, 8, b'{', b'}']);
        assert_eq!(Record::parse(&b), Ok(r));
        assert_eq!(Record::parse(&b[..5]), Err(RecordError::Short(5)));
        assert_eq!(Record::parse(&b[..9]), Err(RecordError::PayloadSize(0)));
        let mut v4 = b.clone();
        v4[0] = 4;
        assert_eq!(Record::parse(&v4), Err(RecordError::Version(4)));
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
            kind: PayloadKind::Event,
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
            kind: PayloadKind::Event,
            payload: &payload,
        };
        assert_eq!(max.encoded_len(), RECORD_BYTES_MAX);
        assert!(Record::parse(&max.to_bytes()).is_ok());
    }

    /// Version 3: v2's layout with the syslog message as the payload, byte for byte; its
    /// event is the mapping's (§14.4) of the message, receipt time and submitter's peer.
    #[test]
    fn version_3_known_answer_event_and_refusals() {
        let msg = b"<34>1 2026-11-23T10:00:00Z web1 su - ID47 - 'su root' failed";
        let r = Record {
            received_at_unix_ns: 0x0102030405060708,
            submitter: Some("syslog:10.0.0.7"),
            kind: PayloadKind::Syslog,
            payload: msg,
        };
        let b = r.to_bytes();
        let mut want = vec![3, 1, 2, 3, 4, 5, 6, 7, 8, 0, 15];
        want.extend_from_slice(b"syslog:10.0.0.7");
        want.extend_from_slice(msg);
        assert_eq!(b, want);
        assert_eq!(b.len(), RECORD_V2_HEADER_BYTES + 15 + msg.len());
        assert_eq!(Record::parse(&b), Ok(r));
        assert_eq!(r.check_payload(), Ok(()));
        assert_eq!(
            std::str::from_utf8(&r.event_json().expect("event")).expect("utf8"),
            concat!(
                r#"{"action":"ID47","actor":"su","category":"auth","details":{"syslog":"#,
                r#"{"app_name":"su","facility":4,"format":"rfc5424","hostname":"web1","#,
                r#""msg":"'su root' failed","#,
                r#""msgid":"ID47","original":"<34>1 2026-11-23T10:00:00Z web1 su - ID47 - 'su root' failed","#,
                r#""severity":2,"timestamp":"2026-11-23T10:00:00Z"}},"event_type":"syslog","#,
                r#""outcome":"success","resource":"web1","severity":8,"source_ip":"10.0.0.7","#,
                r#""timestamp":"2026-11-23T10:00:00Z"}"#
            )
        );
        // A v1/v2 event is shown as stored, with no copy.
        let v2 = Record {
            kind: PayloadKind::Event,
            payload: b"{}",
            ..r
        };
        assert!(matches!(v2.event_json(), Ok(Cow::Borrowed(b"{}"))));
        // A message that is not syslog, and a submitter that names no peer, are refused
        // by the check and cannot show an event.
        let bad = Record {
            payload: b"(34)1 altered",
            ..r
        };
        assert_eq!(
            bad.check_payload(),
            Err(RecordError::Syslog(syslog::ParseError::BadPri))
        );
        assert!(bad.event_json().is_err());
        for sub in ["token:ci", "syslog:", "syslog:not-an-ip cert:x"] {
            let x = Record {
                submitter: Some(sub),
                ..r
            };
            assert_eq!(
                x.check_payload(),
                Err(RecordError::SyslogSubmitter(sub.to_string()))
            );
        }
        assert_eq!(
            Submitter::syslog_peer("syslog:::1 cert:relay"),
            "::1".parse().ok()
        );
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
