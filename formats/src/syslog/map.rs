//! The audit event of a syslog message (FORMATS.md §14.4), written straight into a byte
//! buffer, and the RFC 5424 writer of the forwarder (§14.5).

use std::io::Write as _;
use std::net::IpAddr;

use super::parse::{lossy, ParseError, SdElement, SyslogFormat, SyslogMessage};
use crate::time::unix_ns_to_rfc3339;

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

/// `s` cut to the schema's field limit at a character boundary; `fallback` when absent or
/// empty.
fn bounded<'a>(s: Option<&'a String>, fallback: &'a str) -> &'a str {
    let v = s
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or(fallback);
    // Header fields are bounded by the RFCs, but keep the schema's 1024-byte limit whatever.
    let mut end = v.len().min(crate::schema::FIELD_BYTES_MAX);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// What follows a backslash for bytes JSON strings must escape (0: none; `u`: `\u00XX`),
/// exactly as serde_json writes them, so the mapping's bytes did not change when it stopped
/// going through `serde_json::Value`.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// True when one of the eight bytes of `w` must be escaped: below 0x20, `"` or `\`.
/// (The has-zero-byte test of "Bit Twiddling Hacks", exact for "any byte".)
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGH != 0
}

/// The next byte at or after `from` that must be escaped. Messages are mostly plain text:
/// skip eight bytes at a time, then find the byte in the word that has one.
fn next_escape(b: &[u8], mut from: usize) -> Option<usize> {
    while let Some(word) = b.get(from..from + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        if word_needs_escape(u64::from_le_bytes(w)) {
            break;
        }
        from += 8;
    }
    b[from..]
        .iter()
        .position(|&c| ESCAPE[usize::from(c)] != 0)
        .map(|p| from + p)
}

/// Appends `s` as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    while let Some(i) = next_escape(b, start) {
        out.extend_from_slice(&b[start..i]);
        let (c, e) = (b[i], ESCAPE[usize::from(b[i])]);
        if e == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

fn push_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

/// Appends `,"key":` (`first`: without the comma).
fn push_key(out: &mut Vec<u8>, key: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    push_str(out, key);
    out.push(b':');
}

/// The audit event for a received message (FORMATS.md §14.4), as one JSON line. `raw` is
/// the framed message as received, kept whole in `details.syslog.original`.
pub fn to_audit_event(
    m: &SyslogMessage,
    raw: &[u8],
    received_at_unix_ns: u64,
    peer: Option<IpAddr>,
) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(256 + 2 * raw.len());
    write_audit_event(m, raw, received_at_unix_ns, peer, &mut out)?;
    Ok(out)
}

/// Appends the event of [`to_audit_event`] to `out` without building it first: the syslog
/// listener's hot path, one reused buffer and no allocation per message. The bytes are
/// those serde_json writes for the same object (keys in sorted order, as its `Map` keeps
/// them; a repeated SD-ID keeps its last element). On error `out` is as it was.
pub fn write_audit_event(
    m: &SyslogMessage,
    raw: &[u8],
    received_at_unix_ns: u64,
    peer: Option<IpAddr>,
    out: &mut Vec<u8>,
) -> Result<(), ParseError> {
    let start = out.len();
    write_audit_event_unbounded(m, raw, received_at_unix_ns, peer, out);
    let bytes = out.len() - start;
    if bytes > crate::schema::PAYLOAD_BYTES_MAX {
        out.truncate(start);
        return Err(ParseError::EventTooLarge {
            bytes,
            max: crate::schema::PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}

/// The bytes of [`write_audit_event`] without its size limit: how a stored syslog message
/// (record version 3) shows its event, whose size was checked when it was received
/// ([`super::check_to_store`]), so that reading it never fails on a limit.
pub fn write_audit_event_unbounded(
    m: &SyslogMessage,
    raw: &[u8],
    received_at_unix_ns: u64,
    peer: Option<IpAddr>,
    out: &mut Vec<u8>,
) {
    let facility = FACILITY_NAMES[usize::from(m.facility).min(23)];
    let severity = SEVERITY_NAMES[usize::from(m.severity & 7)];
    // Keys of each object in byte order, since serde_json's map is sorted.
    out.push(b'{');
    push_key(out, "action", true);
    match &m.msgid {
        Some(id) => push_str(out, id),
        None => {
            out.push(b'"');
            out.extend_from_slice(facility.as_bytes());
            out.push(b'.');
            out.extend_from_slice(severity.as_bytes());
            out.push(b'"');
        }
    }
    push_key(out, "actor", false);
    push_str(
        out,
        bounded(m.app_name.as_ref().or(m.hostname.as_ref()), "unknown"),
    );
    push_key(out, "category", false);
    push_str(out, facility);
    push_key(out, "details", false);
    out.push(b'{');
    push_key(out, "syslog", true);
    write_syslog_details(m, raw, out);
    out.push(b'}');
    push_key(out, "event_type", false);
    push_str(out, "syslog");
    push_key(out, "outcome", false);
    push_str(out, "success");
    push_key(out, "resource", false);
    push_str(out, bounded(m.hostname.as_ref(), "unknown"));
    push_key(out, "severity", false);
    push_u8(out, AUDIT_SEVERITY[usize::from(m.severity & 7)]);
    if let Some(ip) = peer {
        push_key(out, "source_ip", false);
        // An address's text needs no escaping.
        let _ = write!(out, "\"{ip}\"");
    }
    push_key(out, "timestamp", false);
    match &m.timestamp {
        Some(t) => push_str(out, t),
        None => push_str(out, &unix_ns_to_rfc3339(received_at_unix_ns)),
    }
    out.push(b'}');
}

/// `details.syslog`: the parsed fields, MSG and the original message.
fn write_syslog_details(m: &SyslogMessage, raw: &[u8], out: &mut Vec<u8>) {
    out.push(b'{');
    let first = match &m.app_name {
        Some(v) => {
            push_key(out, "app_name", true);
            push_str(out, v);
            false
        }
        None => true,
    };
    push_key(out, "facility", first);
    push_u8(out, m.facility);
    push_key(out, "format", false);
    push_str(
        out,
        match m.format {
            SyslogFormat::Rfc5424 => "rfc5424",
            SyslogFormat::Rfc3164 => "rfc3164",
        },
    );
    let opt = |out: &mut Vec<u8>, key: &str, v: &Option<String>| {
        if let Some(v) = v {
            push_key(out, key, false);
            push_str(out, v);
        }
    };
    opt(out, "hostname", &m.hostname);
    push_key(out, "msg", false);
    push_str(out, &m.msg);
    opt(out, "msgid", &m.msgid);
    push_key(out, "original", false);
    push_str(out, &lossy(raw));
    opt(out, "procid", &m.procid);
    push_key(out, "severity", false);
    push_u8(out, m.severity);
    if !m.structured_data.is_empty() {
        push_key(out, "structured_data", false);
        write_structured_data(&m.structured_data, out);
    }
    opt(out, "timestamp", &m.timestamp);
    out.push(b'}');
}

/// `{SD-ID: [[name, value], …]}` with SD-IDs sorted and, for a repeated SD-ID, its last
/// element (as a map insert would leave it).
fn write_structured_data(sd: &[SdElement], out: &mut Vec<u8>) {
    // Few elements per message: sort indices on the stack when it fits.
    let mut on_stack = [0usize; 16];
    let mut on_heap = Vec::new();
    let order: &mut [usize] = if sd.len() <= on_stack.len() {
        for (i, slot) in on_stack.iter_mut().enumerate().take(sd.len()) {
            *slot = i;
        }
        &mut on_stack[..sd.len()]
    } else {
        on_heap.extend(0..sd.len());
        &mut on_heap
    };
    // Stable, so among equal SD-IDs the last in the message comes last.
    order.sort_by(|&a, &b| sd[a].id.cmp(&sd[b].id));
    out.push(b'{');
    let mut first = true;
    for (k, &i) in order.iter().enumerate() {
        let e = &sd[i];
        if order.get(k + 1).is_some_and(|&n| sd[n].id == e.id) {
            continue; // a later element with this SD-ID replaces it
        }
        push_key(out, &e.id, first);
        first = false;
        out.push(b'[');
        for (j, (name, value)) in e.params.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.push(b'[');
            push_str(out, name);
            out.push(b',');
            push_str(out, value);
            out.push(b']');
        }
        out.push(b']');
    }
    out.push(b'}');
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
