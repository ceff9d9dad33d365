//! Syslog over TCP (FORMATS.md §14.3–14.5): RFC 6587 framing (octet counting and LF
//! termination, detected per message), RFC 5424 and RFC 3164 parsing, the mapping of a
//! message to an audit event, and an RFC 5424 writer with octet counting for the forwarder.
//! Pure: the caller owns sockets, buffers and clocks.
//!
//! Three files: framing here, message parsing in `parse.rs`, the audit-event mapping and
//! the RFC 5424 writer in `map.rs`.

use std::net::IpAddr;
use std::ops::Range;

mod map;
mod parse;

pub use map::{
    to_audit_event, write_audit_event, write_audit_event_unbounded, write_rfc5424, Rfc5424Header,
    AUDIT_SEVERITY, FACILITY_NAMES, SEVERITY_NAMES,
};
pub use parse::{parse, ParseError, SdElement, SyslogFormat, SyslogMessage};

/// Digits of an octet count: enough for any length a receiver would accept.
const OCTET_COUNT_DIGITS_MAX: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("syslog message of {bytes} bytes is over the {max}-byte limit")]
    TooLarge { bytes: usize, max: usize },
    #[error(
        "syslog octet count is malformed (expected 1-9 digits, no leading zero, then a space)"
    )]
    BadOctetCount,
}

/// An upper bound on the event bytes (§14.4) per message byte: a byte is in `original` at
/// most once and in one parsed field, and a field is written at most three times (HOSTNAME:
/// `details.syslog.hostname`, `resource`, `actor`); a byte grows to at most 6 (`\u00XX`;
/// invalid UTF-8 becomes the 3-byte U+FFFD).
pub const EVENT_BYTES_PER_MESSAGE_BYTE_MAX: usize = 6 + 3 * 6;
/// And the bytes of an event that no message byte accounts for: keys, names, the peer
/// address, the receipt time standing in for a missing TIMESTAMP.
pub const EVENT_FIXED_BYTES_MAX: usize = 1024;

/// The check a message passes before it is stored as received (record version 3), so that
/// its event can always be derived later and is the event the listener mapped before
/// messages were stored once: it parses (whatever year it is received in: the only
/// year-dependent case is an RFC 3164 stamp of Feb 29, which must parse both in a leap
/// year and in another), and its event fits the 64 KiB event limit. A message short enough
/// for its event to fit whatever its bytes (2,688 bytes) is not mapped here.
pub fn check_to_store(m: &[u8], now_unix_ns: u64, peer: Option<IpAddr>) -> Result<(), ParseError> {
    // 2024-03-01 and 2025-03-01, 00:00 UTC: a Feb 29 stamp is in a leap year, then not.
    const LEAP_UNIX_NS: u64 = 1_709_251_200_000_000_000;
    const NOT_LEAP_UNIX_NS: u64 = 1_740_787_200_000_000_000;
    let parsed = parse(m, now_unix_ns)?;
    if parse::has_feb_29_stamp(m) {
        parse(m, LEAP_UNIX_NS)?;
        parse(m, NOT_LEAP_UNIX_NS)?;
    }
    let bound = m.len() * EVENT_BYTES_PER_MESSAGE_BYTE_MAX + EVENT_FIXED_BYTES_MAX;
    if bound > crate::schema::PAYLOAD_BYTES_MAX {
        let mut event = Vec::with_capacity(256 + 2 * m.len());
        write_audit_event(&parsed, m, now_unix_ns, peer, &mut event)?;
    }
    Ok(())
}

/// What `next_frame` found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// More bytes are needed.
    Incomplete,
    /// A message at `message` (without its count or line end); `consumed` bytes are done.
    Message {
        message: Range<usize>,
        consumed: usize,
    },
    /// `consumed` bytes held only an empty line: skip them.
    Empty { consumed: usize },
}

/// Decodes the first frame of `buf`. A leading digit means octet counting
/// (`MSG-LEN SP SYSLOG-MSG`, RFC 6587 §3.4.1); anything else is one message ending at LF
/// (§3.4.2), a CR before the LF dropped. Every syslog message starts with `<`, so the two
/// cannot be confused. An error leaves the stream unsynchronised: close the connection.
pub fn next_frame(buf: &[u8], message_bytes_max: usize) -> Result<Frame, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(Frame::Incomplete);
    };
    if first.is_ascii_digit() {
        if first == b'0' {
            return Err(FramingError::BadOctetCount);
        }
        let digits = buf.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > OCTET_COUNT_DIGITS_MAX {
            return Err(FramingError::BadOctetCount);
        }
        match buf.get(digits) {
            None => return Ok(Frame::Incomplete),
            Some(b' ') => {}
            Some(_) => return Err(FramingError::BadOctetCount),
        }
        let len = buf[..digits]
            .iter()
            .fold(0usize, |n, &c| n * 10 + usize::from(c - b'0'));
        if len > message_bytes_max {
            return Err(FramingError::TooLarge {
                bytes: len,
                max: message_bytes_max,
            });
        }
        let start = digits + 1;
        if buf.len() < start + len {
            return Ok(Frame::Incomplete);
        }
        return Ok(Frame::Message {
            message: start..start + len,
            consumed: start + len,
        });
    }
    // A CR may precede the LF, so the limit allows one more byte before giving up.
    let window = &buf[..buf.len().min(message_bytes_max + 2)];
    // memchr: the byte-at-a-time search was 4% of the daemon's CPU at 400k messages/s.
    let Some(lf) = memchr::memchr(b'\n', window) else {
        if buf.len() > message_bytes_max + 1 {
            return Err(FramingError::TooLarge {
                bytes: buf.len(),
                max: message_bytes_max,
            });
        }
        return Ok(Frame::Incomplete);
    };
    let end = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    if end > message_bytes_max {
        return Err(FramingError::TooLarge {
            bytes: end,
            max: message_bytes_max,
        });
    }
    if end == 0 {
        return Ok(Frame::Empty { consumed: lf + 1 });
    }
    Ok(Frame::Message {
        message: 0..end,
        consumed: lf + 1,
    })
}

/// A buffering decoder over a byte stream: `extend` with what the socket gave, then take
/// messages with `next` until it returns `None`.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    message_bytes_max: usize,
}

impl Decoder {
    pub fn new(message_bytes_max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            message_bytes_max,
        }
    }

    /// Appends received bytes, first dropping what earlier messages used.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that are not yet part of a returned message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn next_message(&mut self) -> Result<Option<&[u8]>, FramingError> {
        loop {
            match next_frame(&self.buf[self.start..], self.message_bytes_max)? {
                Frame::Incomplete => return Ok(None),
                Frame::Empty { consumed } => self.start += consumed,
                Frame::Message { message, consumed } => {
                    let at = self.start;
                    self.start += consumed;
                    return Ok(Some(&self.buf[at + message.start..at + message.end]));
                }
            }
        }
    }
}
