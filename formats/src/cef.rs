//! CEF (ArcSight Common Event Format, rev. 25) rendering of stored audit events, mapped as
//! FORMATS.md §14.2 states. One event is one line:
//!
//! `CEF:0|vendor|product|version|event_type|action|severity|key=value key=value…`
//!
//! Header fields escape `\` and `|`; CEF has no escape for line breaks in the header, so
//! CR and LF there become spaces (the exact values are repeated losslessly in extensions).
//! Extension values escape `\`, `=`, CR (`\r`) and LF (`\n`); keys are fixed ASCII names.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::export::{AuditFields, ExportError, StoredEvent};
use crate::hash::to_hex;
use crate::time::rfc3339_to_unix_ms;

/// Who the events come from, as the header's first three fields. Configurable per daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CefDevice {
    pub vendor: String,
    pub product: String,
    pub version: String,
}

impl Default for CefDevice {
    fn default() -> CefDevice {
        CefDevice {
            vendor: "auditlog".into(),
            product: "auditlogd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Appends a header field, escaped.
pub fn escape_header(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends an extension value, escaped.
pub fn escape_value(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Severity 0–10: the event's own `severity` if it has one, else from its outcome
/// (success 3, failure 6, error 8; anything else 5).
pub fn severity_of(f: &AuditFields) -> u8 {
    if let Some(s) = f.severity() {
        return s;
    }
    match f.get("outcome").as_deref() {
        Some("success") => 3,
        Some("failure") => 6,
        Some("error") => 8,
        _ => 5,
    }
}

/// Custom-string slots: (CEF key, its label, the audit field it carries).
const CUSTOM_STRINGS: [(&str, &str, &str); 5] = [
    ("cs1", "sessionId", "session_id"),
    ("cs2", "classification", "classification"),
    ("cs4", "category", "category"),
    ("cs5", "eventType", "event_type"),
    ("cs6", "requestId", "request_id"),
];

/// Renders one event as a CEF line (no line terminator); returns its severity.
pub fn render(device: &CefDevice, e: &StoredEvent, out: &mut String) -> Result<u8, ExportError> {
    let f = AuditFields::parse(e)?;
    out.push_str("CEF:0|");
    for h in [&device.vendor, &device.product, &device.version] {
        escape_header(h, out);
        out.push('|');
    }
    escape_header(f.get("event_type").as_deref().unwrap_or("audit"), out);
    out.push('|');
    escape_header(f.get("action").as_deref().unwrap_or("event"), out);
    let severity = severity_of(&f);
    let _ = write!(out, "|{severity}|");

    // Extensions. Keys are fixed, so only values need escaping.
    let mut first = true;
    let mut ext = |key: &str, value: &str, out: &mut String| {
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(key);
        out.push('=');
        escape_value(value, out);
    };
    let rt = f
        .get("timestamp")
        .and_then(|t| rfc3339_to_unix_ms(&t))
        .unwrap_or((e.received_at_unix_ns / 1_000_000) as i64);
    ext("rt", &rt.to_string(), out);
    for (key, field) in [
        ("suser", "actor"),
        ("act", "action"),
        ("request", "resource"),
        ("outcome", "outcome"),
        ("requestClientApplication", "user_agent"),
    ] {
        if let Some(v) = f.get(field) {
            ext(key, &v, out);
        }
    }
    if let Some(ip) = f.get("source_ip") {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => ext("src", &ip, out),
            // CEF's `src` is IPv4 only; ArcSight maps source IPv6 to c6a2.
            Ok(IpAddr::V6(_)) => {
                ext("c6a2", &ip, out);
                ext("c6a2Label", "sourceIPv6Address", out);
            }
            Err(_) => {}
        }
    }
    for (key, label, field) in CUSTOM_STRINGS {
        if let Some(v) = f.get(field) {
            ext(key, &v, out);
            ext(&format!("{key}Label"), label, out);
        }
    }
    ext("cs3", &to_hex(e.leaf_hash), out);
    ext("cs3Label", "leafHash", out);
    ext("cn1", &e.index.to_string(), out);
    ext("cn1Label", "logIndex", out);
    ext("cn2", &(e.received_at_unix_ns / 1_000_000).to_string(), out);
    ext("cn2Label", "receivedAtMs", out);
    if let Some(sub) = e.submitter {
        ext("flexString1", sub, out);
        ext("flexString1Label", "submitter", out);
    }
    if let Some(d) = f.get("details") {
        ext("msg", &d, out);
    }
    Ok(severity)
}
