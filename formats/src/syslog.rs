//! Syslog over TCP (FORMATS.md §12.3–12.5): RFC 6587 framing (octet counting and LF
//! termination, detected per message), RFC 5424 and RFC 3164 parsing, the mapping of a
//! message to an audit event, and an RFC 5424 writer with octet counting for the forwarder.
//! Pure: the caller owns sockets, buffers and clocks.

use std::net::IpAddr;
use std::ops::Range;

use serde_json::{json, Map, Value};

use crate::time::{civil_from_days, days_from_civil, days_in_month, unix_ns_to_rfc3339};

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
    let Some(lf) = window.iter().position(|&c| c == b'\n') else {
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("syslog message does not start with <PRI> (a number 0-191 in angle brackets)")]
    BadPri,
    #[error("RFC 5424 header: {0}")]
    Rfc5424(&'static str),
    #[error("RFC 3164 header: {0}")]
    Rfc3164(&'static str),
    #[error("mapped event is {bytes} bytes, over the {max}-byte event limit")]
    EventTooLarge { bytes: usize, max: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

/// One structured-data element: its SD-ID and its parameters in order (names may repeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    pub id: String,
    pub params: Vec<(String, String)>,
}

/// A parsed message. Absent (NILVALUE `-` or missing) fields are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    pub format: SyslogFormat,
    pub facility: u8,
    pub severity: u8,
    /// As an RFC 3339 `date-time` (RFC 3164 stamps are completed with a year, as UTC).
    pub timestamp: Option<String>,
    pub hostname: Option<String>,
    pub app_name: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub structured_data: Vec<SdElement>,
    /// MSG, UTF-8 (invalid bytes replaced by U+FFFD; a leading BOM dropped).
    pub msg: String,
}

fn parse_pri(m: &[u8]) -> Result<(u8, usize), ParseError> {
    if m.first() != Some(&b'<') {
        return Err(ParseError::BadPri);
    }
    let digits = m[1..]
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(1..=3).contains(&digits) || m.get(1 + digits) != Some(&b'>') {
        return Err(ParseError::BadPri);
    }
    if digits > 1 && m[1] == b'0' {
        return Err(ParseError::BadPri);
    }
    let pri = m[1..1 + digits]
        .iter()
        .fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
    if pri > 191 {
        return Err(ParseError::BadPri);
    }
    Ok((pri as u8, digits + 2))
}

/// Parses one message: RFC 5424 when `<PRI>` is followed by a version digit and a space,
/// RFC 3164 otherwise. `received_at_unix_ns` completes RFC 3164 stamps, which have no year.
pub fn parse(m: &[u8], received_at_unix_ns: u64) -> Result<SyslogMessage, ParseError> {
    let (pri, at) = parse_pri(m)?;
    let rest = &m[at..];
    let versioned = rest.first().is_some_and(|c| (b'1'..=b'9').contains(c))
        && rest
            .iter()
            .position(|&c| c == b' ')
            .is_some_and(|sp| sp <= 3 && rest[..sp].iter().all(u8::is_ascii_digit));
    let (facility, severity) = (pri >> 3, pri & 7);
    if versioned {
        parse_5424(rest, facility, severity)
    } else {
        parse_3164(rest, facility, severity, received_at_unix_ns)
    }
}

/// Splits off one space-terminated header field.
fn field<'a>(s: &mut &'a [u8], what: &'static str, max: usize) -> Result<&'a [u8], ParseError> {
    let sp = s
        .iter()
        .position(|&c| c == b' ')
        .ok_or(ParseError::Rfc5424(what))?;
    let f = &s[..sp];
    if f.is_empty() || f.len() > max || !f.iter().all(|c| (33..=126).contains(c)) {
        return Err(ParseError::Rfc5424(what));
    }
    *s = &s[sp + 1..];
    Ok(f)
}

fn nil(f: &[u8]) -> Option<String> {
    (f != b"-").then(|| String::from_utf8_lossy(f).into_owned())
}

fn text(b: &[u8]) -> String {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    String::from_utf8_lossy(b).into_owned()
}

fn parse_5424(m: &[u8], facility: u8, severity: u8) -> Result<SyslogMessage, ParseError> {
    let mut s = m;
    let version = field(&mut s, "bad VERSION", 3)?;
    if version != b"1" {
        return Err(ParseError::Rfc5424("VERSION is not 1"));
    }
    // A message may end right after the structured data, without the space before MSG;
    // let the last header field end at the end of the message too.
    let ts = field(&mut s, "bad TIMESTAMP", 64)?;
    let timestamp = match ts {
        b"-" => None,
        t => {
            let t = std::str::from_utf8(t).map_err(|_| ParseError::Rfc5424("bad TIMESTAMP"))?;
            if crate::time::rfc3339_to_unix_ms(t).is_none() {
                return Err(ParseError::Rfc5424(
                    "TIMESTAMP is not an RFC 3339 date-time",
                ));
            }
            Some(t.to_string())
        }
    };
    let hostname = nil(field(&mut s, "bad HOSTNAME", 255)?);
    let app_name = nil(field(&mut s, "bad APP-NAME", 48)?);
    let procid = nil(field(&mut s, "bad PROCID", 128)?);
    let msgid = nil(field(&mut s, "bad MSGID", 32)?);
    let (structured_data, used) = parse_sd(s)?;
    let msg = match &s[used..] {
        [] => String::new(),
        [b' ', rest @ ..] => text(rest),
        _ => {
            return Err(ParseError::Rfc5424(
                "STRUCTURED-DATA not followed by a space",
            ))
        }
    };
    Ok(SyslogMessage {
        format: SyslogFormat::Rfc5424,
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
    })
}

fn sd_name(s: &[u8], at: &mut usize, what: &'static str) -> Result<String, ParseError> {
    let start = *at;
    while s
        .get(*at)
        .is_some_and(|&c| (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"'))
    {
        *at += 1;
    }
    if *at == start || *at - start > 32 {
        return Err(ParseError::Rfc5424(what));
    }
    Ok(String::from_utf8_lossy(&s[start..*at]).into_owned())
}

/// STRUCTURED-DATA: `-` or one or more `[SD-ID *(SP NAME="VALUE")]`, where VALUE escapes
/// `"`, `\` and `]` with a backslash. Returns the elements and the bytes used.
fn parse_sd(s: &[u8]) -> Result<(Vec<SdElement>, usize), ParseError> {
    if s.first() == Some(&b'-') {
        return Ok((Vec::new(), 1));
    }
    let bad = ParseError::Rfc5424("bad STRUCTURED-DATA");
    let mut out = Vec::new();
    let mut at = 0;
    while s.get(at) == Some(&b'[') {
        at += 1;
        let id = sd_name(s, &mut at, "bad SD-ID")?;
        let mut params = Vec::new();
        loop {
            match s.get(at) {
                Some(b']') => {
                    at += 1;
                    break;
                }
                Some(b' ') => at += 1,
                _ => return Err(bad),
            }
            let name = sd_name(s, &mut at, "bad PARAM-NAME")?;
            if s.get(at..at + 2) != Some(b"=\"") {
                return Err(bad);
            }
            at += 2;
            let mut value = Vec::new();
            loop {
                match s.get(at) {
                    None => return Err(bad),
                    Some(b'"') => break,
                    Some(b'\\') if matches!(s.get(at + 1), Some(b'"' | b'\\' | b']')) => {
                        value.push(s[at + 1]);
                        at += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        at += 1;
                    }
                }
            }
            at += 1;
            params.push((name, String::from_utf8_lossy(&value).into_owned()));
        }
        out.push(SdElement { id, params });
    }
    if out.is_empty() {
        return Err(bad);
    }
    Ok((out, at))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Mmm dd hh:mm:ss` (day space- or zero-padded) as an RFC 3339 UTC stamp in the year of
/// `received_at`, or the year before when that would put it more than a day in the future
/// (a December message received in January).
fn bsd_timestamp(t: &[u8], received_at_unix_ns: u64) -> Option<String> {
    if t.len() != 15 || t[3] != b' ' || t[6] != b' ' || t[9] != b':' || t[12] != b':' {
        return None;
    }
    let month = MONTHS.iter().position(|m| &t[..3] == *m)? as u32 + 1;
    let two = |a: u8, b: u8| -> Option<u32> {
        let hi = if a == b' ' {
            0
        } else {
            a.is_ascii_digit().then(|| u32::from(a - b'0'))?
        };
        b.is_ascii_digit().then(|| hi * 10 + u32::from(b - b'0'))
    };
    let day = two(t[4], t[5])?;
    let (h, mi, s) = (two(t[7], t[8])?, two(t[10], t[11])?, two(t[13], t[14])?);
    if h > 23 || mi > 59 || s > 60 || day == 0 {
        return None;
    }
    let now_s = (received_at_unix_ns / 1_000_000_000) as i64;
    let (mut year, _, _) = civil_from_days(now_s.div_euclid(86_400));
    let at = |y: i64| days_from_civil(y, month, day) * 86_400;
    if at(year) > now_s + 86_400 {
        year -= 1;
    }
    if day > days_in_month(year, month) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{mi:02}:{s:02}Z"
    ))
}

/// RFC 3164 as relays send it, read leniently (§4.3 of that RFC): `TIMESTAMP SP HOSTNAME
/// SP` is optional (TIMESTAMP BSD-style or RFC 3339; absent: no timestamp, no hostname); then an optional TAG of up to 48
/// characters from `[A-Za-z0-9_.-/]`, with `[PID]`, ended by `:`; the rest is MSG.
fn parse_3164(
    m: &[u8],
    facility: u8,
    severity: u8,
    received_at_unix_ns: u64,
) -> Result<SyslogMessage, ParseError> {
    let mut s = m;
    let mut timestamp = None;
    let mut hostname = None;
    // rsyslog's and syslog-ng's forwarding formats put an RFC 3339 stamp where RFC 3164
    // has its BSD one: take either.
    let rfc3339 = s
        .iter()
        .position(|&c| c == b' ')
        .filter(|&sp| s[..sp].first().is_some_and(u8::is_ascii_digit))
        .and_then(|sp| {
            let t = std::str::from_utf8(&s[..sp]).ok()?;
            crate::time::rfc3339_to_unix_ms(t).map(|_| (t.to_string(), sp))
        });
    let stamp = rfc3339.or_else(|| {
        s.get(..15)
            .and_then(|t| bsd_timestamp(t, received_at_unix_ns))
            .map(|t| (t, 15))
    });
    if let Some((ts, len)) = stamp {
        timestamp = Some(ts);
        s = s[len..]
            .strip_prefix(b" ")
            .ok_or(ParseError::Rfc3164("no space after TIMESTAMP"))?;
        let sp = s
            .iter()
            .position(|&c| c == b' ')
            .ok_or(ParseError::Rfc3164("no HOSTNAME"))?;
        if sp == 0 || sp > 255 {
            return Err(ParseError::Rfc3164("bad HOSTNAME"));
        }
        hostname = Some(String::from_utf8_lossy(&s[..sp]).into_owned());
        s = &s[sp + 1..];
    }
    let tag_len = s
        .iter()
        .take(49)
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/'))
        .count();
    let (mut app_name, mut procid) = (None, None);
    if (1..=48).contains(&tag_len) {
        let after = &s[tag_len..];
        let (pid, rest) = match after.first() {
            Some(b'[') => match after.iter().position(|&c| c == b']') {
                Some(close) if close <= 129 => (Some(&after[1..close]), &after[close + 1..]),
                _ => (None, after),
            },
            _ => (None, after),
        };
        if let Some(rest) = rest.strip_prefix(b":") {
            app_name = Some(String::from_utf8_lossy(&s[..tag_len]).into_owned());
            procid = pid.map(|p| String::from_utf8_lossy(p).into_owned());
            s = rest.strip_prefix(b" ").unwrap_or(rest);
        }
    }
    Ok(SyslogMessage {
        format: SyslogFormat::Rfc3164,
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid: None,
        structured_data: Vec::new(),
        msg: text(s),
    })
}

pub const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
pub const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
/// Syslog severity (0 emergency … 7 debug) to audit severity (0–10, higher is worse).
pub const AUDIT_SEVERITY: [u8; 8] = [10, 9, 8, 7, 5, 4, 3, 1];

fn bounded(s: Option<&String>, fallback: &str) -> String {
    let v = s
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or(fallback);
    // Header fields are bounded by the RFCs, but keep the schema's 1024-byte limit whatever.
    let mut end = v.len().min(crate::schema::FIELD_BYTES_MAX);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// The audit event for a received message (FORMATS.md §12.4), as one JSON line. `raw` is
/// the framed message as received, kept whole in `details.syslog.original`.
pub fn to_audit_event(
    m: &SyslogMessage,
    raw: &[u8],
    received_at_unix_ns: u64,
    peer: Option<IpAddr>,
) -> Result<Vec<u8>, ParseError> {
    let facility = FACILITY_NAMES[usize::from(m.facility).min(23)];
    let severity = SEVERITY_NAMES[usize::from(m.severity & 7)];
    let mut sd = Map::new();
    for e in &m.structured_data {
        let params: Vec<Value> = e.params.iter().map(|(k, v)| json!([k, v])).collect();
        sd.insert(e.id.clone(), Value::Array(params));
    }
    let mut syslog = json!({
        "format": match m.format { SyslogFormat::Rfc5424 => "rfc5424", SyslogFormat::Rfc3164 => "rfc3164" },
        "facility": m.facility,
        "severity": m.severity,
        "msg": m.msg,
        "original": String::from_utf8_lossy(raw),
    });
    for (k, v) in [
        ("timestamp", &m.timestamp),
        ("hostname", &m.hostname),
        ("app_name", &m.app_name),
        ("procid", &m.procid),
        ("msgid", &m.msgid),
    ] {
        if let Some(v) = v {
            syslog[k] = Value::String(v.clone());
        }
    }
    if !sd.is_empty() {
        syslog["structured_data"] = Value::Object(sd);
    }
    let timestamp = m
        .timestamp
        .clone()
        .unwrap_or_else(|| unix_ns_to_rfc3339(received_at_unix_ns));
    let mut event = json!({
        "timestamp": timestamp,
        "event_type": "syslog",
        "actor": bounded(m.app_name.as_ref().or(m.hostname.as_ref()), "unknown"),
        "action": m.msgid.clone().unwrap_or_else(|| format!("{facility}.{severity}")),
        "resource": bounded(m.hostname.as_ref(), "unknown"),
        "outcome": "success",
        "category": facility,
        "severity": AUDIT_SEVERITY[usize::from(m.severity & 7)],
        "details": {"syslog": syslog},
    });
    if let Some(ip) = peer {
        event["source_ip"] = Value::String(ip.to_string());
    }
    // serde_json escapes control characters, so the line holds no raw LF.
    let out = serde_json::to_vec(&event).map_err(|_| ParseError::Rfc5424("unencodable"))?;
    if out.len() > crate::schema::PAYLOAD_BYTES_MAX {
        return Err(ParseError::EventTooLarge {
            bytes: out.len(),
            max: crate::schema::PAYLOAD_BYTES_MAX,
        });
    }
    Ok(out)
}

/// Header values of an RFC 5424 message written by [`write_rfc5424`].
#[derive(Debug, Clone)]
pub struct Rfc5424Header<'a> {
    pub facility: u8,
    pub severity: u8,
    /// RFC 3339, at most microseconds (RFC 5424 allows six fraction digits).
    pub timestamp: &'a str,
    pub hostname: &'a str,
    pub app_name: &'a str,
    pub procid: &'a str,
    pub msgid: &'a str,
}

/// A header field as RFC 5424 allows it: printable ASCII without spaces, at most `max`
/// bytes, `-` when empty.
fn push_header_field(out: &mut Vec<u8>, v: &str, max: usize) {
    let before = out.len();
    out.extend(
        v.bytes()
            .take(max)
            .map(|c| if (33..=126).contains(&c) { c } else { b'_' }),
    );
    if out.len() == before {
        out.push(b'-');
    }
}

/// Appends `MSG-LEN SP <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`: one RFC 5424
/// message with no structured data, octet-counted (RFC 6587 §3.4.1). MSG is UTF-8 and goes
/// as is (no BOM: CEF receivers compare the text from its first byte).
pub fn write_rfc5424(out: &mut Vec<u8>, h: &Rfc5424Header, msg: &str) {
    let mut m = Vec::with_capacity(64 + msg.len());
    m.push(b'<');
    m.extend_from_slice(
        (u16::from(h.facility.min(23)) * 8 + u16::from(h.severity & 7))
            .to_string()
            .as_bytes(),
    );
    m.extend_from_slice(b">1 ");
    push_header_field(&mut m, h.timestamp, 64);
    m.push(b' ');
    push_header_field(&mut m, h.hostname, 255);
    m.push(b' ');
    push_header_field(&mut m, h.app_name, 48);
    m.push(b' ');
    push_header_field(&mut m, h.procid, 128);
    m.push(b' ');
    push_header_field(&mut m, h.msgid, 32);
    m.extend_from_slice(b" - ");
    m.extend_from_slice(msg.as_bytes());
    out.extend_from_slice(m.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(&m);
}
