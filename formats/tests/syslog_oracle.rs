//! The syslog → audit event writer against the mapping it replaced: the same message
//! mapped through `serde_json::Value` (the code as it was, kept here as the oracle) must
//! give the same bytes, for random parsed messages (control characters, non-ASCII, repeated
//! SD-IDs, absent fields, long fields) and for random raw messages through the parser.

use std::net::IpAddr;

use auditlog_formats::schema::{self, SchemaMode};
use auditlog_formats::syslog::{
    self, ParseError, SdElement, SyslogFormat, SyslogMessage, AUDIT_SEVERITY, FACILITY_NAMES,
    SEVERITY_NAMES,
};
use auditlog_formats::time::unix_ns_to_rfc3339;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// 2026-11-23T10:00:00Z.
const NOW_NS: u64 = 1_795_428_000_000_000_000;

fn bounded(s: Option<&String>, fallback: &str) -> String {
    let v = s
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or(fallback);
    let mut end = v.len().min(schema::FIELD_BYTES_MAX);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// The mapping as it was before the direct writer (commit 7a77776), unchanged.
fn oracle(
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
    let out = serde_json::to_vec(&event).map_err(|_| ParseError::Rfc5424("unencodable"))?;
    if out.len() > schema::PAYLOAD_BYTES_MAX {
        return Err(ParseError::EventTooLarge {
            bytes: out.len(),
            max: schema::PAYLOAD_BYTES_MAX,
        });
    }
    Ok(out)
}

/// Both ways, and the direct writer appends after what the buffer held.
fn check(m: &SyslogMessage, raw: &[u8], now: u64, peer: Option<IpAddr>) {
    let want = oracle(m, raw, now, peer);
    assert_eq!(syslog::to_audit_event(m, raw, now, peer), want);
    let mut buf = b"prefix".to_vec();
    let got = syslog::write_audit_event(m, raw, now, peer, &mut buf);
    match want {
        Ok(w) => {
            assert_eq!(got, Ok(()));
            assert_eq!(&buf[..6], b"prefix");
            assert_eq!(&buf[6..], &w[..]);
        }
        Err(e) => {
            assert_eq!(got, Err(e));
            assert_eq!(buf, b"prefix", "an error leaves the buffer as it was");
        }
    }
}

/// Text with the characters JSON escaping cares about, and others: dense, or long plain
/// runs with one of them somewhere (the escaper skips plain text eight bytes at a time).
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        dense_text(max),
        r#"[a-z0-9 ]{0,40}["\\\x00-\x1f\x7f]?[a-zé ]{0,40}"#
            .prop_map(move |t| t.chars().take(max).collect()),
    ]
}

fn dense_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => any::<char>(),
            2 => (0u8..0x20).prop_map(char::from),
            1 => Just('"'),
            1 => Just('\\'),
            1 => Just('\u{7f}'),
            1 => Just('é'),
            1 => Just('/'),
        ],
        0..max,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn opt_text(max: usize) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text(max))
}

fn sd() -> impl Strategy<Value = Vec<SdElement>> {
    let id = prop_oneof![Just("a".to_string()), Just("b@1".to_string()), text(6)];
    proptest::collection::vec(
        (id, proptest::collection::vec((text(5), text(10)), 0..3))
            .prop_map(|(id, params)| SdElement { id, params }),
        0..5,
    )
}

fn message() -> impl Strategy<Value = SyslogMessage> {
    (
        any::<bool>(),
        0u8..24,
        0u8..8,
        (
            opt_text(30),
            opt_text(30),
            opt_text(30),
            opt_text(10),
            opt_text(10),
        ),
        sd(),
        text(80),
    )
        .prop_map(
            |(
                v5424,
                facility,
                severity,
                (timestamp, hostname, app_name, procid, msgid),
                sd,
                msg,
            )| {
                SyslogMessage {
                    format: if v5424 {
                        SyslogFormat::Rfc5424
                    } else {
                        SyslogFormat::Rfc3164
                    },
                    facility,
                    severity,
                    timestamp,
                    hostname,
                    app_name,
                    procid,
                    msgid,
                    structured_data: sd,
                    msg,
                }
            },
        )
}

fn peer() -> impl Strategy<Value = Option<IpAddr>> {
    proptest::option::of(prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn writer_matches_the_serde_json_mapping(
        m in message(),
        raw in proptest::collection::vec(any::<u8>(), 0..120),
        now in any::<u64>(),
        peer in peer(),
    ) {
        check(&m, &raw, now, peer);
    }

    #[test]
    fn parsed_messages_map_as_before(
        raw in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (0u8..192, text(60), text(40)).prop_map(|(pri, sd_value, msg)| format!(
                "<{pri}>1 2026-11-23T10:00:00Z h\u{7}st app 12 ID [x@1 k=\"{}\"][x@1 j=\"2\"][a z=\"\\]\"] {msg}",
                sd_value.replace(['"', '\\', ']'], "_")
            ).into_bytes()),
            (0u8..192, text(60)).prop_map(|(pri, msg)| format!("<{pri}>Nov 23 10:00:01 web1 app[9]: {msg}").into_bytes()),
        ],
        peer in peer(),
    ) {
        if let Ok(m) = syslog::parse(&raw, NOW_NS) {
            check(&m, &raw, NOW_NS, peer);
        }
    }
}

/// Over the event limit: the same error, with the same size, both ways.
#[test]
fn too_large_is_refused_alike() {
    let m = syslog::parse(b"<13>1 - h a - - - x", NOW_NS).expect("parse");
    let mut big = m.clone();
    big.msg = "\u{1}".repeat(11_000); // six bytes each once escaped
    check(&big, b"raw", NOW_NS, None);
    assert!(matches!(
        syslog::to_audit_event(&big, b"raw", NOW_NS, None),
        Err(ParseError::EventTooLarge { .. })
    ));
    let ev = syslog::to_audit_event(&m, b"raw", NOW_NS, None).expect("small");
    schema::validate(&ev, SchemaMode::Audit).expect("valid");
}
