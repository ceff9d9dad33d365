//! Accept/refuse validation of audit event payloads (see `SCHEMA-FORMATS.md`).
//!
//! The engine stores the client's bytes unchanged, so validation never builds a document: it
//! walks the bytes once with serde_json and checks each known field's value in place, from
//! the visitor callbacks. Strings are seen as `&str`, borrowed from the payload or, when they
//! contain escapes, from the deserializer's scratch buffer, so the common case allocates
//! nothing and escaped strings are checked exactly like plain ones.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer as _};

/// Largest accepted event (64 KiB). The record holding it has a tighter limit, one
/// tlog-tiles entry of 65,535 bytes with its header and submitter (FORMATS.md §4), which
/// the engine checks when it frames the record.
pub const PAYLOAD_BYTES_MAX: usize = 65536;

/// Largest accepted value, in UTF-8 bytes after unescaping, of `event_type`, `actor`,
/// `action` and `resource`.
pub const FIELD_BYTES_MAX: usize = 1024;

/// How much a log checks of each event. Fixed per log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SchemaMode {
    /// The audit event schema: required fields, types and value ranges.
    #[default]
    Audit,
    /// Any single-line JSON object; for logs whose producers have their own schema.
    Raw,
}

/// Handling marking of an event, which retention and export rules are keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Classification {
    #[default]
    Unclassified,
    CuiBasic,
    CuiSpPriv,
    CuiSpProp,
    CuiSpLei,
}

impl Classification {
    pub const ALL: [Classification; 5] = [
        Classification::Unclassified,
        Classification::CuiBasic,
        Classification::CuiSpPriv,
        Classification::CuiSpProp,
        Classification::CuiSpLei,
    ];

    /// The marking as written in events, e.g. `CUI//SP-PRIV`.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Unclassified => "UNCLASSIFIED",
            Classification::CuiBasic => "CUI//BASIC",
            Classification::CuiSpPriv => "CUI//SP-PRIV",
            Classification::CuiSpProp => "CUI//SP-PROP",
            Classification::CuiSpLei => "CUI//SP-LEI",
        }
    }

    /// The inverse of [`Classification::as_str`]. Exact match only: a marking that is
    /// spelled differently is refused rather than guessed at.
    pub fn parse(s: &str) -> Option<Classification> {
        match s {
            "UNCLASSIFIED" => Some(Classification::Unclassified),
            "CUI//BASIC" => Some(Classification::CuiBasic),
            "CUI//SP-PRIV" => Some(Classification::CuiSpPriv),
            "CUI//SP-PROP" => Some(Classification::CuiSpProp),
            "CUI//SP-LEI" => Some(Classification::CuiSpLei),
            _ => None,
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine keeps from a validated event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventInfo {
    /// `classification` of an audit event, [`Classification::Unclassified`] when absent.
    /// Always `Unclassified` in [`SchemaMode::Raw`], which does not look at fields.
    pub classification: Classification,
}

/// Why an event was refused. The messages are shown to client developers as they are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("event is empty")]
    Empty,
    #[error("event is {bytes} bytes; the limit is {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    #[error(
        "event contains a raw line feed at byte offset {offset}; an event must be a single \
         line (write newlines inside strings as \\n)"
    )]
    ContainsNewline { offset: usize },
    #[error("event is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("event is not valid JSON: {reason}")]
    NotJson { reason: String },
    #[error("event must be a JSON object, not {found}")]
    NotObject { found: &'static str },
    #[error("event: required field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("event: field `{field}` appears more than once")]
    Duplicate { field: &'static str },
    #[error("event: field `{field}`: {reason}")]
    Field {
        field: &'static str,
        reason: &'static str,
    },
}

/// Decides whether `payload` (one event, without its NDJSON newline) is accepted.
///
/// When a payload breaks several rules, the first problem met reading it from the start is
/// reported; missing required fields are only known, and reported, after the whole object.
pub fn validate(payload: &[u8], mode: SchemaMode) -> Result<EventInfo, SchemaError> {
    if payload.is_empty() {
        return Err(SchemaError::Empty);
    }
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(SchemaError::TooLarge {
            bytes: payload.len(),
            max: PAYLOAD_BYTES_MAX,
        });
    }
    // `contains` is memchr-accelerated; the position is only needed once we refuse.
    if payload.contains(&b'\n') {
        let offset = payload.iter().position(|&b| b == b'\n').unwrap_or(0);
        return Err(SchemaError::ContainsNewline { offset });
    }
    let text = std::str::from_utf8(payload).map_err(|e| SchemaError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    // Deciding "not an object" from the first byte keeps the visitors free of that case and
    // lets the refusal name what was sent instead of serde's "invalid type" wording.
    if let Some(first) = text.bytes().find(|b| !is_json_whitespace(*b)) {
        if first != b'{' {
            return Err(refuse_non_object(text, first));
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    match mode {
        SchemaMode::Raw => {
            Skip::deserialize(&mut de)
                .and_then(|_| de.end())
                .map_err(not_json)?;
            Ok(EventInfo::default())
        }
        SchemaMode::Audit => {
            let mut checker = Checker::default();
            let read = (&mut de)
                .deserialize_map(EventVisitor(&mut checker))
                .and_then(|()| de.end());
            if let Err(e) = read {
                // A schema violation aborts the parse through serde's error channel; the
                // violation itself was left in the checker.
                return Err(checker.error.take().unwrap_or_else(|| not_json(e)));
            }
            if let Some(field) = Field::REQUIRED.iter().find(|f| checker.seen & f.bit() == 0) {
                return Err(SchemaError::Missing {
                    field: field.name(),
                });
            }
            Ok(EventInfo {
                classification: checker.classification,
            })
        }
    }
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn not_json(e: serde_json::Error) -> SchemaError {
    SchemaError::NotJson {
        reason: e.to_string(),
    }
}

/// Syntax errors take precedence: "not an object" is only claimed for valid JSON.
fn refuse_non_object(text: &str, first: u8) -> SchemaError {
    let mut de = serde_json::Deserializer::from_str(text);
    if let Err(e) = Skip::deserialize(&mut de).and_then(|_| de.end()) {
        return not_json(e);
    }
    let found = match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    };
    SchemaError::NotObject { found }
}

/// The audit schema's known keys. Any other key is allowed and its value skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Timestamp,
    EventType,
    Actor,
    Action,
    Resource,
    Outcome,
    Category,
    SourceIp,
    SessionId,
    RequestId,
    UserAgent,
    Severity,
    Classification,
    Details,
}

const OUTCOME_REASON: &str = "must be one of success, failure, error";
const SEVERITY_REASON: &str = "must be an integer from 0 to 10";
const CLASSIFICATION_REASON: &str =
    "must be one of UNCLASSIFIED, CUI//BASIC, CUI//SP-PRIV, CUI//SP-PROP, CUI//SP-LEI";
const TIMESTAMP_REASON: &str =
    "must be an RFC 3339 date-time string, YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or \
     +HH:MM/-HH:MM, e.g. 2024-05-01T12:00:00Z";

impl Field {
    /// In the order a missing one is reported.
    const REQUIRED: [Field; 6] = [
        Field::Timestamp,
        Field::EventType,
        Field::Actor,
        Field::Action,
        Field::Resource,
        Field::Outcome,
    ];

    fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "timestamp" => Field::Timestamp,
            "event_type" => Field::EventType,
            "actor" => Field::Actor,
            "action" => Field::Action,
            "resource" => Field::Resource,
            "outcome" => Field::Outcome,
            "category" => Field::Category,
            "source_ip" => Field::SourceIp,
            "session_id" => Field::SessionId,
            "request_id" => Field::RequestId,
            "user_agent" => Field::UserAgent,
            "severity" => Field::Severity,
            "classification" => Field::Classification,
            "details" => Field::Details,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp",
            Field::EventType => "event_type",
            Field::Actor => "actor",
            Field::Action => "action",
            Field::Resource => "resource",
            Field::Outcome => "outcome",
            Field::Category => "category",
            Field::SourceIp => "source_ip",
            Field::SessionId => "session_id",
            Field::RequestId => "request_id",
            Field::UserAgent => "user_agent",
            Field::Severity => "severity",
            Field::Classification => "classification",
            Field::Details => "details",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The reason given when the value has the wrong JSON type.
    fn type_reason(self) -> &'static str {
        match self {
            Field::Timestamp => TIMESTAMP_REASON,
            Field::EventType | Field::Actor | Field::Action | Field::Resource => {
                "must be a non-empty string of at most 1024 bytes"
            }
            Field::Outcome => OUTCOME_REASON,
            Field::Category | Field::SessionId | Field::RequestId | Field::UserAgent => {
                "must be a string"
            }
            Field::SourceIp => "must be a string holding an IPv4 or IPv6 address",
            Field::Severity => SEVERITY_REASON,
            Field::Classification => CLASSIFICATION_REASON,
            Field::Details => "must be a JSON object",
        }
    }

    fn check_str(self, v: &str) -> Result<Option<Classification>, &'static str> {
        match self {
            Field::Timestamp => check_timestamp(v)?,
            Field::EventType | Field::Actor | Field::Action | Field::Resource => {
                if v.is_empty() {
                    return Err("must not be empty");
                }
                if v.len() > FIELD_BYTES_MAX {
                    return Err("must be at most 1024 bytes (UTF-8)");
                }
            }
            Field::Outcome => {
                if !matches!(v, "success" | "failure" | "error") {
                    return Err(OUTCOME_REASON);
                }
            }
            Field::Category | Field::SessionId | Field::RequestId | Field::UserAgent => {}
            Field::SourceIp => {
                if v.parse::<IpAddr>().is_err() {
                    return Err("must be an IPv4 or IPv6 address, e.g. 192.0.2.1 or 2001:db8::1");
                }
            }
            Field::Classification => {
                return Classification::parse(v)
                    .map(Some)
                    .ok_or(CLASSIFICATION_REASON)
            }
            Field::Severity | Field::Details => return Err(self.type_reason()),
        }
        Ok(None)
    }
}

#[derive(Default)]
struct Checker {
    /// Bit per [`Field`] already met, for duplicate and missing-field checks.
    seen: u16,
    classification: Classification,
    /// The schema violation that aborted the parse, if that is what aborted it.
    error: Option<SchemaError>,
}

impl Checker {
    fn refuse<E: de::Error>(&mut self, error: SchemaError) -> E {
        self.error = Some(error);
        E::custom("audit event schema violation")
    }

    fn refuse_field<E: de::Error>(&mut self, field: Field, reason: &'static str) -> E {
        self.refuse(SchemaError::Field {
            field: field.name(),
            reason,
        })
    }
}

struct EventVisitor<'c>(&'c mut Checker);

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an audit event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let checker = self.0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some(field) = key else {
                map.next_value::<Skip>()?;
                continue;
            };
            // Refused rather than last-wins: readers of the stored bytes may pick either
            // copy, so a second copy could hide what the first one says.
            if checker.seen & field.bit() != 0 {
                return Err(checker.refuse(SchemaError::Duplicate {
                    field: field.name(),
                }));
            }
            checker.seen |= field.bit();
            map.next_value_seed(ValueSeed {
                field,
                checker: &mut *checker,
            })?;
        }
        Ok(())
    }
}

/// Decodes keys, escapes included, so `"\u0061ctor"` counts as `actor` for duplicates.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Option<Field>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Option<Field>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::from_key(v))
    }
}

struct ValueSeed<'c> {
    field: Field,
    checker: &'c mut Checker,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn wrong_type<E: de::Error>(self) -> Result<(), E> {
        Err(self
            .checker
            .refuse_field(self.field, self.field.type_reason()))
    }

    fn severity<E: de::Error>(self, ok: bool) -> Result<(), E> {
        if self.field == Field::Severity && ok {
            Ok(())
        } else {
            self.wrong_type()
        }
    }
}

// Every type serde_json can report from `deserialize_any` is handled here, so any error
// leaving this visitor is either a recorded schema violation or a syntax error.
impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.field.type_reason())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.field.check_str(v) {
            Ok(Some(classification)) => {
                self.checker.classification = classification;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(reason) => Err(self.checker.refuse_field(self.field, reason)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.severity(v <= 10)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.severity((0..=10).contains(&v))
    }

    // `5.0` is refused: severity is an integer and a float could carry a fraction.
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.wrong_type()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.wrong_type()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.wrong_type()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.wrong_type()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.wrong_type()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.field != Field::Details {
            return self.wrong_type();
        }
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(())
    }
}

/// Walks any JSON value without keeping it. Unlike `IgnoredAny`, which serde_json skips
/// without decoding (so lone surrogate escapes, unbounded nesting and out-of-range numbers
/// pass), this decodes keys, strings and numbers under serde_json's nesting limit (127
/// arrays and objects deep, the event object included).
/// Hence every accepted payload also parses as a `serde_json::Value`, which readers of the
/// stored events can rely on.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// RFC 3339 §5.6 `date-time`, with ranges checked; leap seconds (`:60`) are accepted on
/// any date since knowing the real ones needs a table that changes.
fn check_timestamp(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Result<u32, &'static str> {
        let digits = b.get(at..at + len).ok_or(TIMESTAMP_REASON)?;
        digits.iter().try_fold(0u32, |n, &d| {
            if d.is_ascii_digit() {
                Ok(n * 10 + u32::from(d - b'0'))
            } else {
                Err(TIMESTAMP_REASON)
            }
        })
    };
    let punct = |at: usize, ok: &[u8]| -> Result<(), &'static str> {
        match b.get(at) {
            Some(c) if ok.contains(c) => Ok(()),
            _ => Err(TIMESTAMP_REASON),
        }
    };

    let year = num(0, 4)?;
    punct(4, b"-")?;
    let month = num(5, 2)?;
    punct(7, b"-")?;
    let day = num(8, 2)?;
    punct(10, b"Tt")?;
    let hour = num(11, 2)?;
    punct(13, b":")?;
    let minute = num(14, 2)?;
    punct(16, b":")?;
    let second = num(17, 2)?;
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err(TIMESTAMP_REASON);
        }
    }
    match b.get(at) {
        Some(b'Z' | b'z') => at += 1,
        Some(b'+' | b'-') => {
            let offset_hour = num(at + 1, 2)?;
            punct(at + 3, b":")?;
            let offset_minute = num(at + 4, 2)?;
            if offset_hour > 23 || offset_minute > 59 {
                return Err("must be an RFC 3339 date-time: UTC offset out of range");
            }
            at += 6;
        }
        _ => return Err(TIMESTAMP_REASON),
    }
    if at != b.len() {
        return Err(TIMESTAMP_REASON);
    }

    if !(1..=12).contains(&month) {
        return Err("must be an RFC 3339 date-time: month must be 01 to 12");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("must be an RFC 3339 date-time: day does not exist in that month");
    }
    if hour > 23 {
        return Err("must be an RFC 3339 date-time: hour must be 00 to 23");
    }
    if minute > 59 {
        return Err("must be an RFC 3339 date-time: minute must be 00 to 59");
    }
    if second > 60 {
        return Err("must be an RFC 3339 date-time: second must be 00 to 60");
    }
    Ok(())
}

// `is_multiple_of` needs Rust 1.87; the workspace declares rust-version 1.80.
#[allow(clippy::manual_is_multiple_of)]
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &[(&str, &str)] = &[
        ("timestamp", r#""2024-05-01T12:34:56Z""#),
        ("event_type", r#""auth.login""#),
        ("actor", r#""alice""#),
        ("action", r#""login""#),
        ("resource", r#""urn:app:session""#),
        ("outcome", r#""success""#),
    ];

    /// BASE with `key` set to the raw JSON `value` (appended if new); `None` removes it.
    fn with(key: &str, value: Option<&str>) -> String {
        let mut pairs: Vec<(&str, &str)> = BASE.to_vec();
        let at = pairs.iter().position(|(k, _)| *k == key);
        match (at, value) {
            (Some(i), Some(v)) => pairs[i].1 = v,
            (Some(i), None) => {
                pairs.remove(i);
            }
            (None, Some(v)) => pairs.push((key, v)),
            (None, None) => {}
        }
        object(&pairs)
    }

    fn object(pairs: &[(&str, &str)]) -> String {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    fn audit(payload: &str) -> Result<EventInfo, SchemaError> {
        validate(payload.as_bytes(), SchemaMode::Audit)
    }

    fn field_err(field: &'static str, reason: &'static str) -> SchemaError {
        SchemaError::Field { field, reason }
    }

    const FULL: &str = r#"{"timestamp":"2024-05-01T12:34:56.789+02:00","event_type":"auth.login","actor":"alice@example.com","action":"login","resource":"urn:app:session","outcome":"failure","category":"authentication","source_ip":"2001:db8::7","session_id":"s-1","request_id":"r-1","user_agent":"curl/8.5","severity":7,"classification":"CUI//SP-PRIV","details":{"method":"password","mfa":[true,{"n":null}],"x":1.5},"extra":[1,2,{"a":"b"}]}"#;

    #[test]
    fn accepts_full_event() {
        assert_eq!(
            audit(FULL),
            Ok(EventInfo {
                classification: Classification::CuiSpPriv
            })
        );
    }

    #[test]
    fn accepts_minimal_event_as_unclassified() {
        assert_eq!(audit(&with("x", None)), Ok(EventInfo::default()));
        assert_eq!(
            audit(&format!(" \t\r{} \r", with("x", None))),
            Ok(EventInfo::default())
        );
    }

    #[test]
    fn classification_round_trips() {
        for c in Classification::ALL {
            assert_eq!(Classification::parse(c.as_str()), Some(c));
            let quoted = format!("\"{c}\"");
            let info = audit(&with("classification", Some(&quoted)));
            assert_eq!(info, Ok(EventInfo { classification: c }));
        }
        assert_eq!(Classification::parse("cui//basic"), None);
    }

    #[test]
    fn accepts_optional_field_variants() {
        for (key, value) in [
            ("source_ip", r#""192.0.2.1""#),
            ("source_ip", r#""::1""#),
            ("severity", "0"),
            ("severity", "10"),
            ("details", "{}"),
            ("category", r#""""#),
            ("outcome", r#""error""#),
            ("unknown", "null"),
            ("unknown", r#"{"timestamp":1,"timestamp":2}"#),
        ] {
            assert_eq!(
                audit(&with(key, Some(value))),
                Ok(EventInfo::default()),
                "{key}={value}"
            );
        }
    }

    #[test]
    fn refuses_each_schema_rule() {
        let long = format!("\"{}\"", "a".repeat(FIELD_BYTES_MAX + 1));
        let cases: Vec<(String, SchemaError)> = vec![
            (
                with("timestamp", None),
                SchemaError::Missing { field: "timestamp" },
            ),
            (
                with("event_type", None),
                SchemaError::Missing {
                    field: "event_type",
                },
            ),
            (with("actor", None), SchemaError::Missing { field: "actor" }),
            (
                with("action", None),
                SchemaError::Missing { field: "action" },
            ),
            (
                with("resource", None),
                SchemaError::Missing { field: "resource" },
            ),
            (
                with("outcome", None),
                SchemaError::Missing { field: "outcome" },
            ),
            ("{}".into(), SchemaError::Missing { field: "timestamp" }),
            (
                with("timestamp", Some("1714567896")),
                field_err("timestamp", TIMESTAMP_REASON),
            ),
            (
                with("timestamp", Some(r#""yesterday""#)),
                field_err("timestamp", TIMESTAMP_REASON),
            ),
            (
                with("actor", Some(r#""""#)),
                field_err("actor", "must not be empty"),
            ),
            (
                with("actor", Some(&long)),
                field_err("actor", "must be at most 1024 bytes (UTF-8)"),
            ),
            (
                with("resource", Some(&long)),
                field_err("resource", "must be at most 1024 bytes (UTF-8)"),
            ),
            (
                with("event_type", Some("null")),
                field_err(
                    "event_type",
                    "must be a non-empty string of at most 1024 bytes",
                ),
            ),
            (
                with("action", Some("[]")),
                field_err("action", "must be a non-empty string of at most 1024 bytes"),
            ),
            (
                with("outcome", Some(r#""ok""#)),
                field_err("outcome", OUTCOME_REASON),
            ),
            (
                with("outcome", Some(r#""Success""#)),
                field_err("outcome", OUTCOME_REASON),
            ),
            (
                with("outcome", Some("true")),
                field_err("outcome", OUTCOME_REASON),
            ),
            (
                with("category", Some("1")),
                field_err("category", "must be a string"),
            ),
            (
                with("session_id", Some("null")),
                field_err("session_id", "must be a string"),
            ),
            (
                with("request_id", Some("{}")),
                field_err("request_id", "must be a string"),
            ),
            (
                with("user_agent", Some("false")),
                field_err("user_agent", "must be a string"),
            ),
            (
                with("source_ip", Some(r#""10.0.0.256""#)),
                field_err(
                    "source_ip",
                    "must be an IPv4 or IPv6 address, e.g. 192.0.2.1 or 2001:db8::1",
                ),
            ),
            (
                with("source_ip", Some(r#""example.com""#)),
                field_err(
                    "source_ip",
                    "must be an IPv4 or IPv6 address, e.g. 192.0.2.1 or 2001:db8::1",
                ),
            ),
            (
                with("source_ip", Some("3232235777")),
                field_err(
                    "source_ip",
                    "must be a string holding an IPv4 or IPv6 address",
                ),
            ),
            (
                with("severity", Some("11")),
                field_err("severity", SEVERITY_REASON),
            ),
            (
                with("severity", Some("-1")),
                field_err("severity", SEVERITY_REASON),
            ),
            (
                with("severity", Some("5.0")),
                field_err("severity", SEVERITY_REASON),
            ),
            (
                with("severity", Some("1e1")),
                field_err("severity", SEVERITY_REASON),
            ),
            (
                with("severity", Some(r#""5""#)),
                field_err("severity", SEVERITY_REASON),
            ),
            (
                with("severity", Some("18446744073709551616")),
                field_err("severity", SEVERITY_REASON),
            ),
            (
                with("classification", Some(r#""cui//basic""#)),
                field_err("classification", CLASSIFICATION_REASON),
            ),
            (
                with("classification", Some(r#""SECRET""#)),
                field_err("classification", CLASSIFICATION_REASON),
            ),
            (
                with("classification", Some("null")),
                field_err("classification", CLASSIFICATION_REASON),
            ),
            (
                with("details", Some(r#""text""#)),
                field_err("details", "must be a JSON object"),
            ),
            (
                with("details", Some("[]")),
                field_err("details", "must be a JSON object"),
            ),
            (
                with("details", Some("null")),
                field_err("details", "must be a JSON object"),
            ),
            (
                format!(r#"{{"actor":"x",{}"#, &with("x", None)[1..]),
                SchemaError::Duplicate { field: "actor" },
            ),
            (
                with("severity", Some(r#"1,"severity":1"#)),
                SchemaError::Duplicate { field: "severity" },
            ),
            // An escaped key is still the same key.
            (
                with("\\u0061ctor", Some(r#""mallory""#)),
                SchemaError::Duplicate { field: "actor" },
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(audit(&payload), Err(want), "{payload}");
        }
    }

    #[test]
    fn first_problem_in_document_order_wins() {
        let p = r#"{"outcome":"nope","actor":""}"#;
        assert_eq!(audit(p), Err(field_err("outcome", OUTCOME_REASON)));
        // A field error ahead of a syntax error is found first.
        let p = r#"{"outcome":"nope","actor":"#;
        assert_eq!(audit(p), Err(field_err("outcome", OUTCOME_REASON)));
    }

    #[test]
    fn escaped_and_unicode_strings() {
        let cases = [
            ("actor", r#""a\"b""#),
            ("actor", r#""\u00e9l\u00e8ve\ud83d\ude00""#),
            ("actor", r#""line\nbreak\ttab\\""#),
            ("actor", "\"élève 😀 名前\""),
            ("outcome", r#""succ\u0065ss""#),
            ("timestamp", r#""2024-05-01\u005412:00:00Z""#),
            ("classification", r#""CUI\/\/BASIC""#),
            ("source_ip", r#""192.0.2.\u0031""#),
            ("détails", r#""unknown key with unicode""#),
        ];
        for (key, value) in cases {
            let info = audit(&with(key, Some(value)));
            assert!(info.is_ok(), "{key}={value}: {info:?}");
        }
        let c = audit(&with("classification", Some(r#""CUI\/\/BASIC""#)));
        assert_eq!(c.map(|i| i.classification), Ok(Classification::CuiBasic));
        // Limits count decoded bytes: 512 two-byte characters fit, 513 do not.
        let fits = format!("\"{}\"", "é".repeat(512));
        assert!(audit(&with("actor", Some(&fits))).is_ok());
        let over = format!("\"{}\"", "é".repeat(513));
        assert!(audit(&with("actor", Some(&over))).is_err());
        // A lone surrogate is not a Unicode string.
        let lone = audit(&with("actor", Some(r#""\ud800""#)));
        assert!(matches!(lone, Err(SchemaError::NotJson { .. })), "{lone:?}");
    }

    fn padded_to(len: usize) -> String {
        let base = with("x", None);
        let fill = len - base.len() - r#","pad":"""#.len();
        format!(
            r#"{},"pad":"{}"}}"#,
            &base[..base.len() - 1],
            "p".repeat(fill)
        )
    }

    #[test]
    fn size_boundary() {
        let max = padded_to(PAYLOAD_BYTES_MAX);
        assert_eq!(max.len(), PAYLOAD_BYTES_MAX);
        for mode in [SchemaMode::Audit, SchemaMode::Raw] {
            assert!(validate(max.as_bytes(), mode).is_ok());
            let over = padded_to(PAYLOAD_BYTES_MAX + 1);
            assert_eq!(
                validate(over.as_bytes(), mode),
                Err(SchemaError::TooLarge {
                    bytes: PAYLOAD_BYTES_MAX + 1,
                    max: PAYLOAD_BYTES_MAX
                })
            );
        }
    }

    #[test]
    fn refuses_non_events_in_both_modes() {
        let ok = with("x", None);
        let cases: Vec<(Vec<u8>, SchemaError)> = vec![
            (b"".to_vec(), SchemaError::Empty),
            (
                b"[1,2]".to_vec(),
                SchemaError::NotObject { found: "an array" },
            ),
            (
                b" 42 ".to_vec(),
                SchemaError::NotObject { found: "a number" },
            ),
            (b"-1".to_vec(), SchemaError::NotObject { found: "a number" }),
            (
                br#""{}""#.to_vec(),
                SchemaError::NotObject { found: "a string" },
            ),
            (b"null".to_vec(), SchemaError::NotObject { found: "null" }),
            (
                b"true".to_vec(),
                SchemaError::NotObject { found: "a boolean" },
            ),
            (
                format!("{ok}\n").into_bytes(),
                SchemaError::ContainsNewline { offset: ok.len() },
            ),
            (b"{\n}".to_vec(), SchemaError::ContainsNewline { offset: 1 }),
            (
                b"{\"a\":\"\xff\"}".to_vec(),
                SchemaError::InvalidUtf8 { offset: 6 },
            ),
            (
                b"{\"a\":\"\xc3\"}".to_vec(),
                SchemaError::InvalidUtf8 { offset: 6 },
            ),
            (
                b"\xef\xbb\xbf{}".to_vec(),
                SchemaError::NotJson {
                    reason: "expected value at line 1 column 1".into(),
                },
            ),
        ];
        for mode in [SchemaMode::Audit, SchemaMode::Raw] {
            for (payload, want) in &cases {
                let got = validate(payload, mode);
                assert_eq!(
                    got.as_ref(),
                    Err(want),
                    "{mode:?} {}",
                    String::from_utf8_lossy(payload)
                );
            }
        }
    }

    #[test]
    fn refuses_malformed_json_in_both_modes() {
        let ok = with("x", None);
        let cases = [
            format!("{ok}x"),
            format!("{ok}{ok}"),
            format!("{ok} {{}}"),
            format!("{ok},"),
            ok[..ok.len() - 1].to_string(),
            r#"{"a":1,}"#.into(),
            r#"{"a" 1}"#.into(),
            r#"{'a':1}"#.into(),
            "{\"a\":\"tab\there\"}".into(),
            "[1,2".into(),
            "   ".into(),
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            format!(
                r#"{{"details":{{"a":{}{}}}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            format!(r#"{{"x":{}{}}}"#, "[".repeat(128), "]".repeat(128)),
            r#"{"x":"\ud800"}"#.into(),
            r#"{"\udc00":1}"#.into(),
            r#"{"x":1e400}"#.into(),
            r#"{"x":"\q"}"#.into(),
        ];
        for mode in [SchemaMode::Audit, SchemaMode::Raw] {
            for payload in &cases {
                let got = validate(payload.as_bytes(), mode);
                let reason = match got {
                    Err(SchemaError::NotJson { reason }) => reason,
                    other => panic!("{mode:?} {payload}: {other:?}"),
                };
                assert!(reason.contains("line 1 column"), "{reason}");
            }
        }
        let e = audit(&format!("{ok}{ok}")).map_err(|e| e.to_string());
        assert_eq!(
            e,
            Err(format!(
                "event is not valid JSON: trailing characters at line 1 column {}",
                ok.len() + 1
            ))
        );
    }

    #[test]
    fn accepted_events_parse_as_serde_json_values() {
        let deep = |n: usize| format!(r#"{{"x":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        // The event object itself is one of serde_json's 128 levels.
        // 127 nested containers, the event object included, is serde_json's limit.
        for mode in [SchemaMode::Audit, SchemaMode::Raw] {
            let details = format!(r#"{{"a":{}{}}}"#, "[".repeat(125), "]".repeat(125));
            let fits = with("details", Some(&details));
            assert!(validate(fits.as_bytes(), mode).is_ok());
            assert!(serde_json::from_str::<serde_json::Value>(&fits).is_ok());
            let details = format!(r#"{{"a":{}{}}}"#, "[".repeat(126), "]".repeat(126));
            let over = with("details", Some(&details));
            assert!(validate(over.as_bytes(), mode).is_err());
            assert!(serde_json::from_str::<serde_json::Value>(&over).is_err());
        }
        assert!(validate(deep(126).as_bytes(), SchemaMode::Raw).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&deep(126)).is_ok());
        assert!(validate(deep(127).as_bytes(), SchemaMode::Raw).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&deep(127)).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(FULL).is_ok());
    }

    #[test]
    fn raw_mode_only_needs_an_object() {
        for p in [
            "{}",
            r#"{"a":[1,{"b":null}],"a":2}"#,
            r#" {"outcome":"nope"} "#,
        ] {
            assert_eq!(
                validate(p.as_bytes(), SchemaMode::Raw),
                Ok(EventInfo::default())
            );
        }
        let marked = with("classification", Some(r#""CUI//SP-LEI""#));
        assert_eq!(
            validate(marked.as_bytes(), SchemaMode::Raw),
            Ok(EventInfo::default())
        );
        assert!(audit("{}").is_err());
    }

    #[test]
    fn error_messages_read_well() {
        let cases = [
            (field_err("outcome", OUTCOME_REASON), "event: field `outcome`: must be one of success, failure, error"),
            (SchemaError::Missing { field: "actor" }, "event: required field `actor` is missing"),
            (SchemaError::Duplicate { field: "actor" }, "event: field `actor` appears more than once"),
            (SchemaError::TooLarge { bytes: 70000, max: 65536 }, "event is 70000 bytes; the limit is 65536 bytes"),
            (SchemaError::NotObject { found: "an array" }, "event must be a JSON object, not an array"),
            (SchemaError::InvalidUtf8 { offset: 3 }, "event is not valid UTF-8 (first invalid byte at offset 3)"),
            (SchemaError::ContainsNewline { offset: 9 }, "event contains a raw line feed at byte offset 9; an event must be a single line (write newlines inside strings as \\n)"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn timestamps() {
        let good = [
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "2023-12-31T23:59:60Z",
            "2024-05-01t12:00:00z",
            "2024-05-01T12:00:00.1Z",
            "2024-05-01T12:00:00.123456789123Z",
            "2024-05-01T12:00:00+05:30",
            "2024-05-01T12:00:00-23:59",
            "2024-05-01T12:00:00.5-00:00",
            "0000-01-01T00:00:00Z",
            "2024-04-30T00:00:00Z",
        ];
        for t in good {
            assert_eq!(check_timestamp(t), Ok(()), "{t}");
        }
        let bad = [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-13-10T00:00:00Z",
            "2024-05-00T00:00:00Z",
            "2024-05-32T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "2024-05-01T12:00:00+24:00",
            "2024-05-01T12:00:00+05:60",
            "2024-05-01T12:00:00",
            "2024-05-01 12:00:00Z",
            "2024-05-01T12:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00,5Z",
            "2024-05-01T12:00:00+0530",
            "2024-05-01T12:00:00+05",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00+05:30 ",
            " 2024-05-01T12:00:00Z",
            "24-05-01T12:00:00Z",
            "2024-5-01T12:00:00Z",
            "+2024-05-01T12:00:00Z",
            "２０２４-05-01T12:00:00Z",
            "2024-05-01",
            "",
        ];
        for t in bad {
            assert!(check_timestamp(t).is_err(), "{t}");
        }
        assert_eq!(
            audit(&with("timestamp", Some(r#""2023-02-29T00:00:00Z""#))),
            Err(field_err(
                "timestamp",
                "must be an RFC 3339 date-time: day does not exist in that month"
            ))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate(&bytes, SchemaMode::Audit);
            let _ = validate(&bytes, SchemaMode::Raw);
        }

        #[test]
        fn mutated_events_never_panic(at in 0usize..FULL.len(), len in 0usize..8, b in any::<u8>()) {
            let mut bytes = FULL.as_bytes().to_vec();
            let end = (at + len).min(bytes.len());
            bytes.splice(at..end, [b]);
            let _ = validate(&bytes, SchemaMode::Audit);
        }

        #[test]
        fn any_string_value_round_trips_through_escaping(s in "\\PC*") {
            let value = serde_json::to_string(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = audit(&with("actor", Some(&value)));
            prop_assert_eq!(got.is_ok(), !s.is_empty() && s.len() <= FIELD_BYTES_MAX);
        }

        #[test]
        fn timestamp_strings_never_panic(s in "[0-9Tt:.+zZ-]{0,40}") {
            let _ = check_timestamp(&s);
        }
    }

    /// By hand: `cargo test --release -p auditlog-formats schema -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing_typical_event() {
        let event = br#"{"timestamp":"2024-05-01T12:34:56.789Z","event_type":"auth.login","actor":"alice@example.com","action":"login","resource":"urn:app:session/42","outcome":"success","source_ip":"203.0.113.7","severity":3,"classification":"CUI//BASIC","details":{"method":"password","mfa":true}}"#;
        const ROUNDS: u32 = 1_000_000;
        let mut accepted = 0u32;
        let start = std::time::Instant::now();
        for _ in 0..ROUNDS {
            let payload = std::hint::black_box(&event[..]);
            accepted += u32::from(validate(payload, SchemaMode::Audit).is_ok());
        }
        let elapsed = start.elapsed();
        assert_eq!(accepted, ROUNDS);
        println!(
            "schema::validate: {} bytes, {:.0} ns/event",
            event.len(),
            elapsed.as_nanos() as f64 / f64::from(ROUNDS)
        );
    }
}
