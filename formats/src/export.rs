//! SIEM export renderings of stored events (FORMATS.md §14): JSON lines and CSV here, CEF in
//! `cef.rs`. Each takes one record's coordinates (index, leaf hash, receipt time) and its
//! payload, and appends one line to a caller-owned buffer, so an exporter streams a range
//! of any length through one reused buffer.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::hash::{to_hex, Hash};
use crate::record::Record;

/// One stored event as the exporters see it.
#[derive(Clone, Copy, Debug)]
pub struct StoredEvent<'a> {
    pub index: u64,
    pub leaf_hash: &'a Hash,
    pub received_at_unix_ns: u64,
    /// Who the server authenticated for it (record version 2); `None` for version 1.
    pub submitter: Option<&'a str>,
    /// The event's JSON object ([`Record::event_json`]): the payload as stored, or the
    /// event derived from a stored syslog message.
    pub payload: &'a [u8],
}

impl<'a> StoredEvent<'a> {
    /// Record `index` as the exporters see it; `event` is `record.event_json()`.
    pub fn of(index: u64, leaf_hash: &'a Hash, record: &Record<'a>, event: &'a [u8]) -> Self {
        StoredEvent {
            index,
            leaf_hash,
            received_at_unix_ns: record.received_at_unix_ns,
            submitter: record.submitter,
            payload: event,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("event {index}: payload is not UTF-8")]
    NotUtf8 { index: u64 },
    #[error("event {index}: payload is not a JSON object: {reason}")]
    NotObject { index: u64, reason: String },
}

/// Export formats by their query-string name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Cef,
    JsonLines,
    Csv,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<ExportFormat> {
        match s {
            "cef" => Some(ExportFormat::Cef),
            "json" | "jsonl" | "ndjson" => Some(ExportFormat::JsonLines),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Cef => "text/plain; charset=utf-8",
            ExportFormat::JsonLines => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8; header=present",
        }
    }
}

/// `{"index":…,"leaf_hash":"…","received_at_unix_ns":…,"submitter":"…","event":{…}}` and
/// `\n` (`submitter` only for a version 2 record). The payload was validated as a
/// single-line JSON object on ingest and is embedded byte for byte, so a reader can rebuild
/// the record and its leaf hash from the line.
pub fn render_json_line(e: &StoredEvent, out: &mut String) -> Result<(), ExportError> {
    let payload =
        std::str::from_utf8(e.payload).map_err(|_| ExportError::NotUtf8 { index: e.index })?;
    let _ = write!(
        out,
        r#"{{"index":{},"leaf_hash":"{}","received_at_unix_ns":{},"#,
        e.index,
        to_hex(e.leaf_hash),
        e.received_at_unix_ns
    );
    if let Some(sub) = e.submitter {
        out.push_str(r#""submitter":"#);
        json_string(sub, out);
        out.push(',');
    }
    let _ = write!(out, r#""event":{payload}}}"#);
    out.push('\n');
    Ok(())
}

/// A JSON string literal (RFC 8259 §7): `"` and `\` escaped, control characters as `\u00XX`.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The audit-schema fields of an event, read leniently: a log in `raw` mode may store any
/// object, so a missing field is `None` and a non-string value is shown as its JSON text.
pub struct AuditFields {
    map: Map<String, Value>,
}

impl AuditFields {
    pub fn parse(e: &StoredEvent) -> Result<AuditFields, ExportError> {
        match serde_json::from_slice::<Value>(e.payload) {
            Ok(Value::Object(map)) => Ok(AuditFields { map }),
            Ok(_) => Err(ExportError::NotObject {
                index: e.index,
                reason: "not an object".into(),
            }),
            Err(err) => Err(ExportError::NotObject {
                index: e.index,
                reason: err.to_string(),
            }),
        }
    }

    /// A field as text: strings as they are, other values (numbers, objects) as JSON.
    pub fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.map.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(Cow::Borrowed(s)),
            v => Some(Cow::Owned(v.to_string())),
        }
    }

    /// A field when it is a JSON string.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.map.get(key)?.as_str()
    }

    /// `severity` when it is an integer 0–10.
    pub fn severity(&self) -> Option<u8> {
        self.map
            .get("severity")?
            .as_u64()
            .filter(|s| *s <= 10)
            .map(|s| s as u8)
    }
}

/// CSV columns, in order. `event` is the whole payload, so no field is lost whatever the
/// event holds; the others are its audit-schema fields for spreadsheet filtering.
pub const CSV_COLUMNS: [&str; 19] = [
    "index",
    "leaf_hash",
    "received_at_unix_ns",
    "submitter",
    "timestamp",
    "event_type",
    "actor",
    "action",
    "resource",
    "outcome",
    "category",
    "source_ip",
    "session_id",
    "request_id",
    "user_agent",
    "severity",
    "classification",
    "details",
    "event",
];

/// Appends one RFC 4180 field: quoted (with `"` doubled) when it holds `,`, `"`, CR or LF,
/// or starts or ends with a space (which some readers trim), as is otherwise.
pub fn csv_field(s: &str, out: &mut String) {
    let quote = s.bytes().any(|c| matches!(c, b',' | b'"' | b'\r' | b'\n'))
        || s.starts_with(' ')
        || s.ends_with(' ');
    if !quote {
        out.push_str(s);
        return;
    }
    out.push('"');
    for (i, part) in s.split('"').enumerate() {
        if i > 0 {
            out.push_str("\"\"");
        }
        out.push_str(part);
    }
    out.push('"');
}

/// First characters that make a spreadsheet (Excel, LibreOffice, Google Sheets) read a
/// cell as a formula, or that some of them strip before doing so (tab, CR).
pub const CSV_FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Appends a text field taken from the event: as [`csv_field`], but a value that starts
/// with one of [`CSV_FORMULA_TRIGGERS`] gets a single quote `'` in front (OWASP "CSV
/// injection"), so a spreadsheet shows it as text instead of running it as a formula
/// (`=HYPERLINK(…)`, `@SUM(…)`, `-2+3+cmd|…`). The quote goes inside the field's quoting.
///
/// Only text from the event passes through here: the columns the exporter writes itself
/// (index, leaf hash, receipt time: unsigned decimal and hex) and non-string JSON values
/// (a JSON number such as `-3` or `-1e5` cannot hold a formula, and objects start with
/// `{`) are left as they are, so numbers stay numbers.
pub fn csv_text_field(s: &str, out: &mut String) {
    if s.starts_with(CSV_FORMULA_TRIGGERS) {
        let mut guarded = String::with_capacity(s.len() + 1);
        guarded.push('\'');
        guarded.push_str(s);
        csv_field(&guarded, out);
    } else {
        csv_field(s, out);
    }
}

/// The header row, CRLF-terminated as RFC 4180 says.
pub fn render_csv_header(out: &mut String) {
    out.push_str(&CSV_COLUMNS.join(","));
    out.push_str("\r\n");
}

/// One CSV row in `CSV_COLUMNS` order, CRLF-terminated. Absent fields are empty.
pub fn render_csv_row(e: &StoredEvent, out: &mut String) -> Result<(), ExportError> {
    let payload =
        std::str::from_utf8(e.payload).map_err(|_| ExportError::NotUtf8 { index: e.index })?;
    let f = AuditFields::parse(e)?;
    let _ = write!(
        out,
        "{},{},{}",
        e.index,
        to_hex(e.leaf_hash),
        e.received_at_unix_ns
    );
    // The submitter is the server's, but its names (a token's, a certificate's) are
    // someone's text: neutralised like the event's strings. Empty for version 1 records.
    out.push(',');
    if let Some(sub) = e.submitter {
        csv_text_field(sub, out);
    }
    for col in &CSV_COLUMNS[4..18] {
        out.push(',');
        if let Some(text) = f.string(col) {
            csv_text_field(text, out);
        } else if let Some(json) = f.get(col) {
            // A number, boolean, object or array, as compact JSON.
            csv_field(&json, out);
        }
    }
    out.push(',');
    csv_field(payload, out);
    out.push_str("\r\n");
    Ok(())
}
