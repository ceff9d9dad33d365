//! SIEM renderings read back by independent parsers written here from the specs: a CEF
//! parser (ArcSight CEF rev. 25 escaping) and an RFC 4180 CSV parser. Arbitrary strings in
//! every field must come back unchanged.

use auditlog_formats::cef::{self, CefDevice};
use auditlog_formats::export::{self, StoredEvent, CSV_COLUMNS};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A parsed CEF line: the seven header fields and the extension pairs in order.
#[derive(Debug)]
struct Cef {
    header: Vec<String>,
    ext: Vec<(String, String)>,
}

impl Cef {
    fn get(&self, key: &str) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_cef(line: &str) -> Result<Cef, String> {
    let rest = line.strip_prefix("CEF:").ok_or("no CEF: prefix")?;
    // Header: fields split at unescaped pipes; `\\` and `\|` are the only escapes.
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '|'))) => cur.push(e),
                other => return Err(format!("bad header escape {other:?}")),
            },
            '|' => {
                header.push(std::mem::take(&mut cur));
                if header.len() == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            '\r' | '\n' => return Err("line break in header".into()),
            c => cur.push(c),
        }
    }
    let ext_text = &rest[ext_start.ok_or("fewer than 7 header fields")?..];
    if ext_text.contains(['\r', '\n']) {
        return Err("raw line break in extension".into());
    }
    // Extension: each unescaped `=` ends a key, which is the word before it; the previous
    // value runs up to the space before that key.
    let b = ext_text.as_bytes();
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'=' => {
                eqs.push(i);
                i += 1
            }
            _ => i += 1,
        }
    }
    let mut ext = Vec::new();
    let mut value_start = 0;
    let mut pending_key: Option<String> = None;
    for &eq in &eqs {
        let key_start = ext_text[value_start..eq]
            .rfind(' ')
            .map(|p| value_start + p + 1)
            .unwrap_or(value_start);
        let key = &ext_text[key_start..eq];
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("bad key {key:?}"));
        }
        if let Some(k) = pending_key.take() {
            if key_start == value_start {
                return Err("two keys without a space".into());
            }
            ext.push((k, unescape(&ext_text[value_start..key_start - 1])?));
        } else if key_start != 0 {
            return Err("text before the first key".into());
        }
        pending_key = Some(key.to_string());
        value_start = eq + 1;
    }
    if let Some(k) = pending_key {
        ext.push((k, unescape(&ext_text[value_start..])?));
    }
    Ok(Cef { header, ext })
}

fn unescape(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('=') => out.push('='),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => return Err(format!("bad value escape {other:?}")),
        }
    }
    Ok(out)
}

/// RFC 4180: records end in CRLF, fields are split at commas, a quoted field may hold
/// commas, quotes (doubled) and line breaks.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut it = text.chars().peekable();
    let mut quoted_field = false;
    while let Some(c) = it.next() {
        match c {
            '"' if field.is_empty() && !quoted_field => {
                quoted_field = true;
                loop {
                    match it.next() {
                        None => return Err("unterminated quote".into()),
                        Some('"') if it.peek() == Some(&'"') => {
                            it.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                    }
                }
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' if it.peek() == Some(&'\n') => {
                it.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                quoted_field = false;
            }
            '"' | '\r' | '\n' => return Err(format!("stray {c:?} in an unquoted field")),
            c if quoted_field => return Err(format!("{c:?} after a closing quote")),
            c => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        return Err("last record not CRLF-terminated".into());
    }
    Ok(rows)
}

fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z|\\\\=+@ \r\n\"',é中😀\t-]{0,24}",
        any::<String>(),
        Just(String::new()),
        Just("\\".to_string()),
        Just(" a=b | c\\ ".to_string()),
    ]
}

const FIELDS: [&str; 11] = [
    "event_type",
    "actor",
    "action",
    "resource",
    "outcome",
    "category",
    "session_id",
    "request_id",
    "user_agent",
    "classification",
    "timestamp",
];

fn header_form(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn cef_round_trips_every_field(
        values in proptest::collection::vec(nasty(), FIELDS.len()),
        device in proptest::collection::vec(nasty(), 3),
        detail in nasty(),
        index in any::<u64>(),
        received in any::<u64>(),
        leaf in any::<[u8; 32]>(),
        submitter in proptest::option::of("[^\\p{Cc}]{1,40}"),
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in FIELDS.iter().zip(&values) {
            obj.insert(k.to_string(), Value::String(v.clone()));
        }
        obj.insert("details".into(), json!({"k": detail}));
        let payload = serde_json::to_vec(&Value::Object(obj.clone())).expect("json");
        let dev = CefDevice { vendor: device[0].clone(), product: device[1].clone(), version: device[2].clone() };
        let e = StoredEvent { index, leaf_hash: &leaf, received_at_unix_ns: received, submitter: submitter.as_deref(), payload: &payload };
        let mut line = String::new();
        cef::render(&dev, &e, &mut line).expect("render");
        let p = parse_cef(&line).map_err(|err| TestCaseError::fail(format!("{err}: {line:?}")))?;
        prop_assert_eq!(&p.header[0], "0");
        prop_assert_eq!(&p.header[1], &header_form(&device[0]));
        prop_assert_eq!(&p.header[2], &header_form(&device[1]));
        prop_assert_eq!(&p.header[3], &header_form(&device[2]));
        prop_assert_eq!(&p.header[4], &header_form(&values[0]));
        prop_assert_eq!(&p.header[5], &header_form(&values[2]));
        let sev: u8 = p.header[6].parse().expect("severity number");
        prop_assert!(sev <= 10);
        let f = |k: &str| obj[k].as_str().map(str::to_string);
        for (key, field) in [("suser", "actor"), ("act", "action"), ("request", "resource"),
            ("outcome", "outcome"), ("requestClientApplication", "user_agent"), ("cs1", "session_id"),
            ("cs2", "classification"), ("cs4", "category"), ("cs5", "event_type"), ("cs6", "request_id")] {
            prop_assert_eq!(p.get(key).map(str::to_string), f(field), "{}", key);
        }
        prop_assert_eq!(p.get("cs3").map(str::to_string), Some(hex::encode(leaf)));
        prop_assert_eq!(p.get("cs3Label"), Some("leafHash"));
        prop_assert_eq!(p.get("cn1").map(str::to_string), Some(index.to_string()));
        prop_assert_eq!(p.get("cn1Label"), Some("logIndex"));
        prop_assert_eq!(p.get("flexString1"), submitter.as_deref());
        prop_assert_eq!(p.get("flexString1Label"), submitter.as_ref().map(|_| "submitter"));
        let msg: Value = serde_json::from_str(p.get("msg").expect("msg")).expect("details JSON");
        prop_assert_eq!(msg, json!({"k": detail}));
        // rt: the timestamp when it parses, else the receipt time.
        let rt = auditlog_formats::time::rfc3339_to_unix_ms(&values[10])
            .unwrap_or((received / 1_000_000) as i64);
        prop_assert_eq!(p.get("rt").map(str::to_string), Some(rt.to_string()));
    }

    #[test]
    fn csv_round_trips_every_field(
        values in proptest::collection::vec(nasty(), FIELDS.len()),
        index in any::<u64>(),
        leaf in any::<[u8; 32]>(),
        submitter in proptest::option::of("[^\\p{Cc}]{1,40}"),
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in FIELDS.iter().zip(&values) {
            obj.insert(k.to_string(), Value::String(v.clone()));
        }
        let payload = serde_json::to_vec(&Value::Object(obj.clone())).expect("json");
        let e = StoredEvent { index, leaf_hash: &leaf, received_at_unix_ns: 7, submitter: submitter.as_deref(), payload: &payload };
        let mut text = String::new();
        export::render_csv_header(&mut text);
        export::render_csv_row(&e, &mut text).expect("row");
        export::render_csv_row(&e, &mut text).expect("row");
        let rows = parse_csv(&text).map_err(|err| TestCaseError::fail(format!("{err}: {text:?}")))?;
        prop_assert_eq!(rows.len(), 3);
        prop_assert_eq!(&rows[0], &CSV_COLUMNS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        prop_assert_eq!(&rows[1], &rows[2]);
        let row = &rows[1];
        prop_assert_eq!(row.len(), CSV_COLUMNS.len());
        prop_assert_eq!(&row[0], &index.to_string());
        prop_assert_eq!(&row[1], &hex::encode(leaf));
        let sub = submitter.as_deref().unwrap_or("");
        let want_sub = if sub.starts_with(export::CSV_FORMULA_TRIGGERS) { format!("'{sub}") } else { sub.to_string() };
        prop_assert_eq!(&row[3], &want_sub);
        for (col, name) in CSV_COLUMNS.iter().enumerate() {
            if let Some(v) = obj.get(*name) {
                // Text that a spreadsheet would run as a formula comes back behind a `'`.
                let v = v.as_str().expect("string");
                let want = if v.starts_with(export::CSV_FORMULA_TRIGGERS) {
                    format!("'{v}")
                } else {
                    v.to_string()
                };
                prop_assert_eq!(&row[col], &want, "{}", name);
            }
        }
        prop_assert_eq!(row[18].as_bytes(), &payload[..]);
    }
}

#[test]
fn cef_known_answer() {
    let payload = br#"{"timestamp":"2026-11-23T10:00:00.123Z","event_type":"auth","actor":"alice","action":"login","resource":"/app|x","outcome":"failure","source_ip":"10.0.0.1","session_id":"s=1","classification":"CUI//BASIC","severity":9}"#;
    let leaf = [0xab; 32];
    let e = StoredEvent {
        index: 42,
        leaf_hash: &leaf,
        received_at_unix_ns: 1_795_428_000_500_000_000,
        submitter: Some("token:app=1"),
        payload,
    };
    let mut line = String::new();
    let dev = CefDevice {
        vendor: "Acme|Corp".into(),
        product: "auditlog".into(),
        version: "1.0".into(),
    };
    cef::render(&dev, &e, &mut line).expect("render");
    assert_eq!(
        line,
        format!(
            "CEF:0|Acme\\|Corp|auditlog|1.0|auth|login|9|rt=1795428000123 suser=alice act=login \
             request=/app|x outcome=failure src=10.0.0.1 cs1=s\\=1 cs1Label=sessionId \
             cs2=CUI//BASIC cs2Label=classification cs5=auth cs5Label=eventType cs3={} \
             cs3Label=leafHash cn1=42 cn1Label=logIndex cn2=1795428000500 cn2Label=receivedAtMs \
             flexString1=token:app\\=1 flexString1Label=submitter",
            "ab".repeat(32)
        )
    );
    // Outcome decides the severity when the event has none.
    let p2 = br#"{"outcome":"error","source_ip":"::1"}"#;
    let mut l2 = String::new();
    cef::render(&dev, &StoredEvent { payload: p2, ..e }, &mut l2).expect("render");
    let c = parse_cef(&l2).expect("parse");
    assert_eq!(c.header[6], "8");
    assert_eq!(c.get("c6a2"), Some("::1"));
    assert_eq!(c.get("src"), None);
}

#[test]
fn json_line_embeds_the_payload() {
    let payload = br#"{"a":"x\ny"}"#;
    let e = StoredEvent {
        index: 3,
        leaf_hash: &[1; 32],
        received_at_unix_ns: 5,
        submitter: Some("cert:a\"b\\c"),
        payload,
    };
    let mut s = String::new();
    export::render_json_line(&e, &mut s).expect("render");
    assert!(s.ends_with('\n') && s.matches('\n').count() == 1);
    let v: Value = serde_json::from_str(&s).expect("json");
    assert_eq!(v["index"], 3);
    assert_eq!(v["leaf_hash"], hex::encode([1u8; 32]));
    assert_eq!(v["received_at_unix_ns"], 5);
    assert_eq!(v["event"]["a"], "x\ny");
    assert_eq!(v["submitter"], "cert:a\"b\\c");
    let keys: Vec<&str> = [
        "index",
        "leaf_hash",
        "received_at_unix_ns",
        "submitter",
        "event",
    ]
    .to_vec();
    let mut at = 0;
    for k in keys {
        let p = s[at..].find(&format!("\"{k}\"")).expect("key order") + at;
        at = p;
    }
    // A version 1 record has no submitter, and the line no key for it.
    let mut s = String::new();
    export::render_json_line(
        &StoredEvent {
            submitter: None,
            ..e
        },
        &mut s,
    )
    .expect("render");
    let v: Value = serde_json::from_str(&s).expect("json");
    assert!(v.get("submitter").is_none(), "{s}");
}

/// OWASP CSV injection: every formula trigger at the start of a text cell gets a `'` in
/// front, inside the field's quoting; other text, numbers the event holds (a negative
/// severity in a raw log) and the whole-payload column are left alone.
#[test]
fn csv_neutralises_cells_that_start_a_formula() {
    let cells = |payload: &[u8]| {
        let e = StoredEvent {
            index: 1,
            leaf_hash: &[2; 32],
            received_at_unix_ns: 3,
            submitter: Some("token:=cmd"),
            payload,
        };
        let mut text = String::new();
        export::render_csv_row(&e, &mut text).expect("row");
        let rows = parse_csv(&text).expect("parse");
        assert_eq!(rows.len(), 1);
        (text, rows[0].clone())
    };
    for (value, want) in [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        (
            "@SUM(1+1)*cmd|' /C calc'!A0",
            "'@SUM(1+1)*cmd|' /C calc'!A0",
        ),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        // Not at the start, or not a trigger: unchanged.
        ("alice=admin", "alice=admin"),
        ("a-b+c@d", "a-b+c@d"),
        (" =1", " =1"),
        ("'=1", "'=1"),
        ("", ""),
    ] {
        let payload = serde_json::to_vec(&json!({"actor": value, "severity": -3})).expect("json");
        let (text, row) = cells(&payload);
        assert_eq!(row[3], "token:=cmd", "the submitter starts with a letter");
        assert_eq!(row[6], want, "actor {value:?} in {text:?}");
        assert_eq!(row[15], "-3", "a number is not text: {text:?}");
        assert_eq!(
            row[18].as_bytes(),
            &payload[..],
            "the event column is the payload"
        );
    }
    // The quote is inside the RFC 4180 quoting, never outside it.
    let mut out = String::new();
    export::csv_text_field("=1,2", &mut out);
    assert_eq!(out, "\"'=1,2\"");
    out.clear();
    export::csv_text_field("=1", &mut out);
    assert_eq!(out, "'=1");
    out.clear();
    export::csv_text_field("\r", &mut out);
    assert_eq!(out, "\"'\r\"");
}
