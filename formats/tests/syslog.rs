//! Syslog framing, parsing, mapping to audit events and the RFC 5424 writer.

use auditlog_formats::schema::{self, SchemaMode};
use auditlog_formats::syslog::{
    self, next_frame, Decoder, Frame, FramingError, ParseError, Rfc5424Header, SyslogFormat,
};
use proptest::prelude::*;
use serde_json::Value;

/// 2026-11-23T10:00:00Z.
const NOW_NS: u64 = 1_795_428_000_000_000_000;

/// Every way a stream can be cut in two must give the same messages.
#[test]
fn framing_survives_every_split() {
    let msgs: Vec<&[u8]> = vec![
        b"<34>1 2026-11-23T10:00:00Z host app - ID47 - hello",
        b"<13>Nov 23 10:00:00 host tag: lf framed",
        b"<13>Nov 23 10:00:00 host tag: with\nnewline inside (octet counted)",
        b"<13>crlf line",
    ];
    let mut stream = Vec::new();
    stream.extend_from_slice(format!("{} ", msgs[0].len()).as_bytes());
    stream.extend_from_slice(msgs[0]);
    stream.extend_from_slice(msgs[1]);
    stream.extend_from_slice(b"\n\n");
    stream.extend_from_slice(format!("{} ", msgs[2].len()).as_bytes());
    stream.extend_from_slice(msgs[2]);
    stream.extend_from_slice(msgs[3]);
    stream.extend_from_slice(b"\r\n");
    for cut in 0..=stream.len() {
        for cut2 in [cut, (cut + 7).min(stream.len())] {
            let mut d = Decoder::new(1024);
            let mut got: Vec<Vec<u8>> = Vec::new();
            for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                d.extend(part);
                while let Some(m) = d.next_message().expect("valid stream") {
                    got.push(m.to_vec());
                }
            }
            assert_eq!(got, msgs, "cut at {cut}/{cut2}");
            assert_eq!(d.buffered(), 0);
        }
    }
    // Byte by byte.
    let mut d = Decoder::new(1024);
    let mut n = 0;
    for b in &stream {
        d.extend(std::slice::from_ref(b));
        while d.next_message().expect("valid").is_some() {
            n += 1;
        }
    }
    assert_eq!(n, msgs.len());
}

#[test]
fn framing_limits_and_errors() {
    assert_eq!(next_frame(b"", 10), Ok(Frame::Incomplete));
    assert_eq!(next_frame(b"12", 100), Ok(Frame::Incomplete));
    assert_eq!(next_frame(b"5 <1>x", 100), Ok(Frame::Incomplete));
    assert_eq!(
        next_frame(b"5 <1>xy", 100),
        Ok(Frame::Message {
            message: 2..7,
            consumed: 7
        })
    );
    assert_eq!(
        next_frame(b"11 <1>x", 10),
        Err(FramingError::TooLarge { bytes: 11, max: 10 })
    );
    assert_eq!(
        next_frame(b"05 <1>xy", 10),
        Err(FramingError::BadOctetCount)
    );
    assert_eq!(next_frame(b"5x<1>xy", 10), Err(FramingError::BadOctetCount));
    assert_eq!(
        next_frame(b"1234567890 ", 10),
        Err(FramingError::BadOctetCount)
    );
    // LF framing: exactly the limit is fine, one more is refused, without waiting for a LF.
    assert!(matches!(
        next_frame(b"<1>4567890\r\n", 10),
        Ok(Frame::Message { .. })
    ));
    assert_eq!(next_frame(b"<1>45678901", 10), Ok(Frame::Incomplete));
    assert!(matches!(
        next_frame(b"<1>456789012", 10),
        Err(FramingError::TooLarge { .. })
    ));
    assert!(matches!(
        next_frame(b"<1>45678901\n", 10),
        Err(FramingError::TooLarge { .. })
    ));
    assert_eq!(next_frame(b"\r\n", 10), Ok(Frame::Empty { consumed: 2 }));
}

#[test]
fn parses_rfc5424() {
    let m = syslog::parse(
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 \
          [exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ication\" eventID=\"1011\"][x@1 a=\"\\]\"] \
          \xEF\xBB\xBFAn application event log entry...",
        NOW_NS,
    )
    .expect("parse");
    assert_eq!(m.format, SyslogFormat::Rfc5424);
    assert_eq!((m.facility, m.severity), (20, 5));
    assert_eq!(m.timestamp.as_deref(), Some("2003-10-11T22:14:15.003Z"));
    assert_eq!(m.hostname.as_deref(), Some("mymachine.example.com"));
    assert_eq!(m.app_name.as_deref(), Some("evntslog"));
    assert_eq!(m.procid, None);
    assert_eq!(m.msgid.as_deref(), Some("ID47"));
    assert_eq!(m.structured_data.len(), 2);
    assert_eq!(m.structured_data[0].id, "exampleSDID@32473");
    assert_eq!(
        m.structured_data[0].params[1],
        ("eventSource".into(), "Appl\"ication".into())
    );
    assert_eq!(m.structured_data[1].params[0], ("a".into(), "]".into()));
    assert_eq!(m.msg, "An application event log entry...");

    let nil = syslog::parse(b"<0>1 - - - - - -", NOW_NS).expect("all nil");
    assert_eq!(nil.timestamp, None);
    assert_eq!(nil.msg, "");
}

#[test]
fn parses_rfc3164() {
    let m = syslog::parse(
        b"<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed",
        NOW_NS,
    )
    .expect("parse");
    assert_eq!(m.format, SyslogFormat::Rfc3164);
    assert_eq!((m.facility, m.severity), (4, 2));
    assert_eq!(m.timestamp.as_deref(), Some("2026-10-11T22:14:15Z"));
    assert_eq!(m.hostname.as_deref(), Some("mymachine"));
    assert_eq!(m.app_name.as_deref(), Some("su"));
    assert_eq!(m.procid.as_deref(), Some("123"));
    assert_eq!(m.msg, "'su root' failed");
    // A December stamp received in November would be in the future: last year.
    let dec = syslog::parse(b"<13>Dec  5 01:02:03 h t: x", NOW_NS).expect("parse");
    assert_eq!(dec.timestamp.as_deref(), Some("2025-12-05T01:02:03Z"));
    // rsyslog's RSYSLOG_ForwardFormat: an RFC 3339 stamp in a 3164 message.
    let iso =
        syslog::parse(b"<38>2026-11-23T10:00:01+00:00 web1 app[9]: hi", NOW_NS).expect("parse");
    assert_eq!(iso.format, SyslogFormat::Rfc3164);
    assert_eq!(iso.timestamp.as_deref(), Some("2026-11-23T10:00:01+00:00"));
    assert_eq!(iso.hostname.as_deref(), Some("web1"));
    assert_eq!(iso.app_name.as_deref(), Some("app"));
    assert_eq!(iso.msg, "hi");
    // No header at all: the whole text is MSG.
    let bare = syslog::parse(b"<13>just text: here", NOW_NS).expect("parse");
    assert_eq!(bare.timestamp, None);
    assert_eq!(bare.hostname, None);
    assert_eq!(bare.msg, "just text: here");
    assert_eq!(bare.app_name, None);
    let tagged = syslog::parse(b"<13>app[7]: text", NOW_NS).expect("parse");
    assert_eq!(tagged.app_name.as_deref(), Some("app"));
    assert_eq!(tagged.procid.as_deref(), Some("7"));
    assert_eq!(tagged.msg, "text");
}

#[test]
fn refuses_bad_messages() {
    let bad: &[&[u8]] = &[
        b"",
        b"no pri",
        b"<192>1 - - - - - -",
        b"<01>x",
        b"<1234>x",
        b"<13",
        b"<>x",
        b"<13>1 2026-13-01T00:00:00Z h a - - -",
        b"<13>1 - h a - - [unterminated",
        b"<13>1 - h a - - [id a=\"x]",
        b"<13>1 - h a - - [id a=x]",
        b"<13>1 - h a - - junk",
        b"<13>2 - h a - - -",
        b"<13>1 - h a - -",
    ];
    for m in bad {
        assert!(
            syslog::parse(m, NOW_NS).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(m)
        );
    }
    assert_eq!(syslog::parse(b"<999>x", NOW_NS), Err(ParseError::BadPri));
}

fn mapped(raw: &[u8]) -> Value {
    let m = syslog::parse(raw, NOW_NS).expect("parse");
    let ev = syslog::to_audit_event(&m, raw, NOW_NS, Some("192.0.2.7".parse().expect("ip")))
        .expect("map");
    schema::validate(&ev, SchemaMode::Audit).expect("a valid audit event");
    serde_json::from_slice(&ev).expect("json")
}

#[test]
fn maps_to_valid_audit_events() {
    let raw = b"<86>1 2026-11-23T10:00:00.5+01:00 web01 sshd 4242 LOGIN [meta@1 user=\"bob\"] accepted\nline2";
    let v = mapped(raw);
    assert_eq!(v["timestamp"], "2026-11-23T10:00:00.5+01:00");
    assert_eq!(v["event_type"], "syslog");
    assert_eq!(v["actor"], "sshd");
    assert_eq!(v["action"], "LOGIN");
    assert_eq!(v["resource"], "web01");
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["category"], "authpriv");
    assert_eq!(v["severity"], 3);
    assert_eq!(v["source_ip"], "192.0.2.7");
    let s = &v["details"]["syslog"];
    assert_eq!(s["original"], String::from_utf8_lossy(raw).as_ref());
    assert_eq!(s["msg"], "accepted\nline2");
    assert_eq!(s["procid"], "4242");
    assert_eq!(s["structured_data"]["meta@1"][0][1], "bob");

    let v = mapped(b"<0>bare");
    assert_eq!(v["actor"], "unknown");
    assert_eq!(v["action"], "kern.emerg");
    assert_eq!(v["severity"], 10);
    assert_eq!(v["timestamp"], "2026-11-23T10:00:00.000000Z");
}

#[test]
fn writer_output_parses_back() {
    let mut out = Vec::new();
    let h = Rfc5424Header {
        facility: 13,
        severity: 6,
        timestamp: "2026-11-23T10:00:00.123456Z",
        hostname: "host with space",
        app_name: "",
        procid: "1",
        msgid: "CEF",
    };
    syslog::write_rfc5424(&mut out, &h, "CEF:0|a|b|c|d|e|3|k=v\\nmore");
    let mut d = Decoder::new(4096);
    d.extend(&out);
    let msg = d.next_message().expect("frame").expect("whole").to_vec();
    assert_eq!(d.buffered(), 0);
    let m = syslog::parse(&msg, NOW_NS).expect("parse");
    assert_eq!((m.facility, m.severity), (13, 6));
    assert_eq!(m.hostname.as_deref(), Some("host_with_space"));
    assert_eq!(m.app_name, None);
    assert_eq!(m.msgid.as_deref(), Some("CEF"));
    assert_eq!(m.msg, "CEF:0|a|b|c|d|e|3|k=v\\nmore");
}

proptest! {
    #[test]
    fn decoder_and_parser_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
        let mut d = Decoder::new(64);
        let cut = cut.min(data.len());
        for part in [&data[..cut], &data[cut..]] {
            d.extend(part);
            while let Ok(Some(m)) = d.next_message() {
                prop_assert!(m.len() <= 64);
                if let Ok(p) = syslog::parse(m, NOW_NS) {
                    let ev = syslog::to_audit_event(&p, m, NOW_NS, None).expect("map");
                    prop_assert!(schema::validate(&ev, SchemaMode::Audit).is_ok());
                }
            }
        }
    }

    #[test]
    fn any_written_message_round_trips(msg in ".{0,200}", host in ".{0,40}", fac in 0u8..24, sev in 0u8..8) {
        let mut out = Vec::new();
        let h = Rfc5424Header { facility: fac, severity: sev, timestamp: "2026-11-23T10:00:00Z",
            hostname: &host, app_name: "auditlogd", procid: "-", msgid: "-" };
        syslog::write_rfc5424(&mut out, &h, &msg);
        let mut d = Decoder::new(1 << 16);
        d.extend(&out);
        let m = d.next_message().expect("frame").expect("whole").to_vec();
        let p = syslog::parse(&m, NOW_NS).expect("parse");
        prop_assert_eq!((p.facility, p.severity), (fac, sev));
        prop_assert_eq!(p.msg, msg.strip_prefix('\u{feff}').unwrap_or(&msg));
    }
}

/// What the listener checks before storing a message as received (record version 3): it
/// parses in any year, and its event fits the 64 KiB event limit.
#[test]
fn check_to_store_refuses_what_could_not_be_shown() {
    let peer = Some("192.0.2.7".parse().expect("ip"));
    // 2026 is not a leap year: this stamp is no stamp now, and the message parses as a
    // bare MSG; in 2028 the same bytes are a stamp without a HOSTNAME, which fails. Stored
    // now, it could not be derived, nor verified, by a reader of a record received then.
    let feb29 = b"<13>Feb 29 10:00:00 nohostname";
    assert!(syslog::parse(feb29, NOW_NS).is_ok());
    assert_eq!(
        syslog::check_to_store(feb29, NOW_NS, peer),
        Err(ParseError::Rfc3164("no HOSTNAME"))
    );
    assert_eq!(
        syslog::check_to_store(b"<13>Feb 29 10:00:00 host tag: fine", NOW_NS, peer),
        Ok(())
    );
    assert_eq!(
        syslog::check_to_store(b"<13>1 bad", NOW_NS, peer),
        Err(ParseError::Rfc5424("bad TIMESTAMP"))
    );
    // Past the size where any message's event fits, the event is mapped and measured.
    let long = |fill: u8, n: usize| {
        let mut m = b"<13>1 2026-11-23T10:00:00Z h a - - - ".to_vec();
        m.resize(m.len() + n, fill);
        m
    };
    assert_eq!(
        syslog::check_to_store(&long(b'a', 6000), NOW_NS, peer),
        Ok(())
    );
    assert!(matches!(
        syslog::check_to_store(&long(1, 6000), NOW_NS, peer),
        Err(ParseError::EventTooLarge { .. })
    ));
}

/// Bytes syslog fields are made of, weighted to the ones that grow in JSON.
fn field_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(1u8),
        Just(b'"'),
        Just(b'\\'),
        Just(0xff),
        Just(b' '),
        Just(b'['),
        Just(b']'),
        Just(b'='),
        Just(b':'),
        Just(b'-'),
        b'a'..=b'z',
    ]
}

proptest! {
    /// The bound `check_to_store` relies on to skip the mapping of short messages holds for
    /// every header form, whatever the fields hold.
    #[test]
    fn an_event_is_within_its_bound(
        head in prop_oneof![
            Just(&b"<13>Nov 23 10:00:00 "[..]),
            Just(&b"<13>2026-11-23T10:00:00Z "[..]),
            Just(&b"<13>1 2026-11-23T10:00:00Z "[..]),
            Just(&b"<13>1 - "[..]),
            Just(&b"<13>"[..]),
        ],
        body in proptest::collection::vec(field_byte(), 0..200),
    ) {
        let mut m = head.to_vec();
        m.extend_from_slice(&body);
        let peer = Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().expect("ip"));
        if let Ok(p) = syslog::parse(&m, NOW_NS) {
            let mut ev = Vec::new();
            syslog::write_audit_event_unbounded(&p, &m, NOW_NS, peer, &mut ev);
            let bound = m.len() * syslog::EVENT_BYTES_PER_MESSAGE_BYTE_MAX
                + syslog::EVENT_FIXED_BYTES_MAX;
            prop_assert!(ev.len() <= bound, "{} > {bound}", ev.len());
            prop_assert_eq!(syslog::check_to_store(&m, NOW_NS, peer), Ok(()));
        } else {
            prop_assert!(syslog::check_to_store(&m, NOW_NS, peer).is_err());
        }
    }
}
