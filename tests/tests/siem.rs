//! SIEM side end to end, with real processes: exports (CEF, JSON lines, CSV) from a running
//! `auditlogd` through the CLI's export client, bounded memory on a large export, syslog
//! ingest from a real rsyslog (`omfwd` over TCP, and over TLS with rsyslog's OpenSSL
//! driver and a client certificate) proven into the tree, TLS refusals on the syslog port,
//! and the forwarder sending CEF to a real rsyslog collector (plain and TLS) that is stopped
//! and restarted mid-stream, or whose certificate the forwarder does not trust.

mod siem_tls;
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use auditlog_client::export::{export, ExportRequest};
use auditlog_formats::record::Record;
use auditlog_tests::event;
use serde_json::{json, Value};
use support::{free_port, hex32, start_daemon, wait_for, Daemon, Rsyslog};

const CONFIG: &str = r#"
[engine]
submission_bytes_max = 4194304
batch_bytes_max = 4194304
segment_bytes = 8388608
block_raw_bytes = 65536
checkpoint_interval_ms = 50

[server]
body_bytes_max = 4194304
range_events_max = 1000

[siem]
cef_vendor = "Acme|Sec"
export_chunk_events = 512
"#;

/// Extension pairs of a CEF line, unescaped; header fields checked for shape.
fn cef_extension(line: &str) -> Vec<(String, String)> {
    let rest = line
        .strip_prefix("CEF:0|")
        .unwrap_or_else(|| panic!("not CEF: {line}"));
    let (mut pipes, mut i, b) = (1, 0, rest.as_bytes());
    while pipes < 7 {
        match b.get(i) {
            Some(b'\\') => i += 2,
            Some(b'|') => {
                pipes += 1;
                i += 1
            }
            Some(_) => i += 1,
            None => panic!("short CEF header: {line}"),
        }
    }
    let ext = &rest[i..];
    let (mut eqs, mut j, eb) = (Vec::new(), 0, ext.as_bytes());
    while j < eb.len() {
        match eb[j] {
            b'\\' => j += 2,
            b'=' => {
                eqs.push(j);
                j += 1
            }
            _ => j += 1,
        }
    }
    let mut out: Vec<(String, String)> = Vec::new();
    let mut value_start = 0;
    for &eq in &eqs {
        let key_start = ext[value_start..eq]
            .rfind(' ')
            .map_or(value_start, |p| value_start + p + 1);
        if let Some(last) = out.last_mut() {
            last.1 = unescape(&ext[value_start..key_start - 1]);
        }
        out.push((ext[key_start..eq].to_string(), String::new()));
        value_start = eq + 1;
    }
    if let Some(last) = out.last_mut() {
        last.1 = unescape(&ext[value_start..]);
    }
    out
}

fn unescape(v: &str) -> String {
    v.replace("\\\\", "\u{0}")
        .replace("\\=", "=")
        .replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace('\u{0}', "\\")
}

fn ext_get<'a>(ext: &'a [(String, String)], key: &str) -> Option<&'a str> {
    ext.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// RFC 4180 records (quoted fields may hold commas, quotes and CRLF).
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field, mut q) = (Vec::new(), Vec::new(), String::new(), false);
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match (q, c) {
            (true, '"') if it.peek() == Some(&'"') => {
                it.next();
                field.push('"')
            }
            (true, '"') => q = false,
            (true, c) => field.push(c),
            (false, '"') => q = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if it.peek() == Some(&'\n') => {
                it.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

fn tricky_event(n: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "timestamp": "2026-11-23T10:00:00.123Z",
        "event_type": "auth|login",
        "actor": format!("user-{n} a=b \\ é"),
        "action": "lo\ngin",
        "resource": "/srv/app,\"x\"",
        "outcome": if n.is_multiple_of(3) { "failure" } else { "success" },
        "session_id": format!("s-{n}"),
        "classification": "CUI//BASIC",
        "details": {"n": n, "text": "line1\r\nline2"}
    }))
    .expect("json")
}

fn run_export(d: &Daemon, format: &str, start: u64, end: Option<u64>) -> Vec<u8> {
    let req = ExportRequest {
        url: d.base.clone(),
        token: d.token("reader").into(),
        format: format.into(),
        start,
        end,
    };
    let mut out = Vec::new();
    let mut seen = 0;
    let s = export(&req, &mut out, &mut |n| seen = n).expect("export");
    assert_eq!(s.bytes as usize, out.len());
    assert_eq!(seen, s.events);
    out
}

#[test]
fn export_each_format_matches_the_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = start_daemon(dir.path(), CONFIG);
    let sent: Vec<Vec<u8>> = (0..1500).map(tricky_event).collect();
    let f = d.first;
    let idx = d.post_events(&sent);
    assert_eq!(idx, (f..f + 1500).collect::<Vec<u64>>());
    let (_, alg, _) = d.log();

    // JSON lines: the payload byte for byte, and a leaf hash that the record reproduces.
    let json_out = run_export(&d, "json", f, None);
    let lines: Vec<&str> = std::str::from_utf8(&json_out)
        .expect("utf8")
        .lines()
        .collect();
    assert_eq!(lines.len(), sent.len());
    let mut leaves = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(l).expect("json line");
        assert_eq!(v["index"], f + i as u64);
        let payload = &l[l.find(",\"event\":").expect("event key") + 9..l.len() - 1];
        assert_eq!(payload.as_bytes(), &sent[i][..]);
        // Who the server authenticated (the writer token), not anything the event says.
        assert_eq!(v["submitter"], "token:writer");
        let rec = Record {
            received_at_unix_ns: v["received_at_unix_ns"].as_u64().expect("ts"),
            submitter: v["submitter"].as_str(),
            kind: auditlog_formats::record::PayloadKind::Event,
            payload: payload.as_bytes(),
        }
        .to_bytes();
        let leaf = hex32(v["leaf_hash"].as_str().expect("leaf"));
        assert_eq!(alg.leaf(&rec), leaf);
        leaves.push(leaf);
    }

    // CSV: header, one record per event, the event column holding the payload.
    let csv = run_export(&d, "csv", f, None);
    let rows = csv_records(std::str::from_utf8(&csv).expect("utf8"));
    assert_eq!(rows.len(), sent.len() + 1);
    assert_eq!(rows[0][0], "index");
    for (i, r) in rows[1..].iter().enumerate() {
        assert_eq!(r.len(), 19);
        assert_eq!(r[0], (f + i as u64).to_string());
        assert_eq!(hex32(&r[1]), leaves[i]);
        assert_eq!(r[3], "token:writer");
        assert_eq!(r[6], format!("user-{i} a=b \\ é"));
        assert_eq!(r[8], "/srv/app,\"x\"");
        assert_eq!(r[18].as_bytes(), &sent[i][..]);
    }

    // CEF: one line per event, values unescaped back, index and leaf hash carried.
    let cef = run_export(&d, "cef", f + 100, Some(f + 1100));
    let lines: Vec<&str> = std::str::from_utf8(&cef).expect("utf8").lines().collect();
    assert_eq!(lines.len(), 1000);
    for (k, l) in lines.iter().enumerate() {
        let i = 100 + k;
        assert!(l.starts_with("CEF:0|Acme\\|Sec|auditlogd|"), "{l}");
        let ext = cef_extension(l);
        assert_eq!(
            ext_get(&ext, "cn1"),
            Some((f + i as u64).to_string().as_str())
        );
        assert_eq!(ext_get(&ext, "cs3"), Some(hex::encode(leaves[i]).as_str()));
        assert_eq!(
            ext_get(&ext, "suser"),
            Some(format!("user-{i} a=b \\ é").as_str())
        );
        assert_eq!(ext_get(&ext, "act"), Some("lo\ngin"));
        assert_eq!(ext_get(&ext, "flexString1"), Some("token:writer"));
        assert_eq!(ext_get(&ext, "flexString1Label"), Some("submitter"));
        assert_eq!(ext_get(&ext, "rt"), Some("1795428000123"));
        let details: Value =
            serde_json::from_str(ext_get(&ext, "msg").expect("msg")).expect("json");
        assert_eq!(details["text"], "line1\r\nline2");
    }

    // Bad requests and roles.
    assert_eq!(d.get("/v1/export?format=xml", "reader").status, 400);
    assert_eq!(d.get("/v1/export?start=5&end=2", "reader").status, 400);
    assert_eq!(d.get("/v1/export", "writer").status, 403);
    assert_eq!(
        d.get("/v1/export?format=csv&start=1400", "auditor").status,
        200
    );
}

#[test]
fn large_export_stays_within_memory_limits() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = start_daemon(dir.path(), CONFIG);
    // 64 MB of events: far over the export's buffers (a few 64 KiB chunks in flight).
    let per_post = 3000;
    let total = 64_000u64;
    let mut n = 0;
    while n < total {
        let batch: Vec<Vec<u8>> = (n..(n + per_post).min(total))
            .map(|i| event(i, 1000))
            .collect();
        d.post_events(&batch);
        n += per_post;
    }
    let before = d.vm_rss_kib();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (peak, bytes) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(d.vm_rss_kib());
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        // The sampler stops however this thread leaves the scope (a failed assertion
        // included), so a failure is reported instead of hanging the scope's join.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let stopper = StopOnDrop(&stop);
        let mut resp = d
            .agent
            .get(&format!("{}/v1/export?format=cef", d.base))
            .set("Authorization", &format!("Bearer {}", d.token("reader")))
            .call()
            .expect("export")
            .into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let (mut bytes, mut lines) = (0u64, 0u64);
        let started = Instant::now();
        loop {
            let k = std::io::Read::read(&mut resp, &mut buf).expect("read");
            if k == 0 {
                break;
            }
            bytes += k as u64;
            lines += buf[..k].iter().filter(|&&c| c == b'\n').count() as u64;
            // A slow client for a while: an unbounded server would buffer ahead.
            if bytes < (8 << 20) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Everything: the daemon's start event and the events posted.
        assert_eq!(lines, d.first + total);
        eprintln!("exported {bytes} bytes in {:?}", started.elapsed());
        drop(stopper);
        (sampler.join().expect("sampler"), bytes)
    });
    eprintln!(
        "VmRSS before {before} KiB, peak during export {peak} KiB, exported {} MiB",
        bytes >> 20
    );
    assert!(bytes > 64 << 20, "export of {bytes} bytes is not large");
    assert!(
        peak < before + 24 * 1024,
        "RSS grew from {before} KiB to {peak} KiB during a {bytes}-byte export"
    );
}

/// The event JSON embedded in an API or export line (`..."event":{…}}`), byte for byte.
fn embedded_event(line: &str) -> &[u8] {
    let at = line.find(",\"event\":").expect("event key") + 9;
    &line.as_bytes()[at..line.len() - 1]
}

/// A syslog message is stored once, as received (record version 3, FORMATS.md §4): the
/// record read back holds the message byte for byte after its header and submitter, and
/// nothing else, and every reader shows the event the mapping (§14.4) gives for that
/// message, receipt time and peer — the event the listener stored before.
#[test]
fn syslog_messages_are_stored_once_and_read_back_byte_identical() {
    use auditlog_formats::record::{PayloadKind, RECORD_V2_HEADER_BYTES};
    use auditlog_formats::syslog;
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tmp");
    let d = start_daemon(dir.path(), CONFIG);
    let (key, alg, _) = d.log();
    let mut sent: Vec<Vec<u8>> = vec![
        br#"<86>1 2026-11-23T10:00:00.5+01:00 web01 sshd 4242 LOGIN [meta@1 user="bob" q="a\"b\]"][x@2 k="v"] accepted"#.to_vec(),
        b"<13>Nov 23 10:00:00 host tag[7]: hello".to_vec(),
        b"<34>1 - - - - - - bad \xff\x01 \"q\" \\ end\nline2".to_vec(),
        b"<0>bare".to_vec(),
        b"<14>\xEF\xBB\xBFbom and a tab\there".to_vec(),
    ];
    // Long enough that the listener maps it to measure its event.
    let mut long = b"<165>1 2026-11-23T10:00:00Z h app - - - ".to_vec();
    long.extend((0..4000).map(|i| b"ab\"\\\x02"[i % 5]));
    sent.push(long);
    // Octet counted (they may hold LF), then one LF-framed with CR LF and one that is not
    // syslog (counted and dropped), then one more.
    let mut stream = Vec::new();
    for m in &sent {
        stream.extend_from_slice(format!("{} ", m.len()).as_bytes());
        stream.extend_from_slice(m);
    }
    stream.extend_from_slice(b"<13>crlf line\r\n<999>not syslog\n<13>last\n");
    sent.push(b"<13>crlf line".to_vec());
    sent.push(b"<13>last".to_vec());
    let mut c = std::net::TcpStream::connect(d.syslog_addr()).expect("connect");
    c.write_all(&stream).expect("send");
    drop(c);
    let (f, n) = (d.first, sent.len() as u64);
    d.wait_size(f + n, Duration::from_secs(10));
    wait_for("the connection to close", Duration::from_secs(10), || {
        d.metric("auditlog_syslog_connections") == Some(0)
    });
    assert_eq!(d.tree_size(), f + n);
    assert_eq!(d.metric("auditlog_syslog_refused_total"), Some(1));

    let cp = d.checkpoint(f + n, &key);
    let peer = Some("127.0.0.1".parse().expect("ip"));
    let submitter = "syslog:127.0.0.1";
    let range = d
        .get(
            &format!("/v1/events?start={f}&end={}&format=record", f + n),
            "reader",
        )
        .text();
    let export = d
        .get(
            &format!("/v1/export?format=json&start={f}&end={}", f + n),
            "reader",
        )
        .text();
    let (range, export): (Vec<&str>, Vec<&str>) =
        (range.lines().collect(), export.lines().collect());
    assert_eq!((range.len(), export.len()), (sent.len(), sent.len()));
    for (k, msg) in sent.iter().enumerate() {
        let i = f + k as u64;
        let rec = d
            .get(&format!("/v1/events/{i}?format=record"), "reader")
            .body;
        let r = Record::parse(&rec).expect("record");
        // The message exactly as sent, without framing, once: the record is its header,
        // the submitter and the message.
        assert_eq!((r.kind, r.payload), (PayloadKind::Syslog, &msg[..]), "{k}");
        assert_eq!(r.submitter, Some(submitter));
        assert_eq!(
            rec.len(),
            RECORD_V2_HEADER_BYTES + submitter.len() + msg.len()
        );
        let v: Value = serde_json::from_str(range[k]).expect("line");
        let b64 = v["record"].as_str().expect("record");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("b64"),
            rec
        );
        // The event shown: the mapping's, for this message, receipt time and peer.
        let t = r.received_at_unix_ns;
        let want = syslog::to_audit_event(&syslog::parse(msg, t).expect("parse"), msg, t, peer)
            .expect("map");
        let one = d.get(&format!("/v1/events/{i}"), "reader").text();
        assert_eq!(embedded_event(&one), &want[..], "{k}: {one}");
        assert_eq!(embedded_event(export[k]), &want[..], "{k}");
        let e: Value = serde_json::from_slice(&want).expect("json");
        assert_eq!(
            e["details"]["syslog"]["original"],
            String::from_utf8_lossy(msg).as_ref()
        );
        d.prove(alg, &cp, i, &alg.leaf(&rec));
    }
    assert_eq!(
        serde_json::from_str::<Value>(export[3]).expect("line")["event"]["timestamp"],
        auditlog_formats::time::unix_ns_to_rfc3339(
            Record::parse(
                &d.get(&format!("/v1/events/{}?format=record", f + 3), "reader")
                    .body
            )
            .expect("record")
            .received_at_unix_ns
        ),
        "a message without a TIMESTAMP shows its receipt time"
    );
}

/// How rsyslog and auditlogd are set up for one forwarding test: extra `[siem]` lines for
/// the daemon, extra `global()` parameters and extra `omfwd` parameters for rsyslog.
#[derive(Default)]
struct Setup {
    siem: String,
    rsyslog_global: String,
    omfwd: String,
    /// The submitter the records must carry (default: the plain-TCP peer).
    submitter: String,
}

/// rsyslog reads LF-framed messages on imtcp and forwards them with `omfwd` over TCP into
/// auditlogd's syslog listener, with the given framing and template.
fn rsyslog_forwards_into_the_log(framing: &str, template: &str, format: &str, setup: &Setup) {
    let dir = tempfile::tempdir().expect("tmp");
    let d = start_daemon(dir.path(), &format!("{CONFIG}{}", setup.siem));
    let (key, alg, _) = d.log();
    let in_port = free_port();
    let syslog_port = d.syslog_addr().rsplit(':').next().expect("port");
    let (global, omfwd) = (&setup.rsyslog_global, &setup.omfwd);
    let conf = format!(
        r#"global(workDirectory="WORKDIR" {global})
module(load="imtcp")
input(type="imtcp" port="{in_port}" address="127.0.0.1" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{syslog_port}" protocol="tcp"
         TCP_Framing="{framing}" template="{template}" action.resumeRetryCount="-1" {omfwd})
}}
"#
    );
    let rs_dir = dir.path().join("rsyslog");
    std::fs::create_dir_all(&rs_dir).expect("dir");
    let mut rs = Rsyslog::start(&rs_dir, &conf, in_port);
    let n = 600u64;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", in_port)).expect("connect rsyslog");
    let mut text = Vec::new();
    for i in 0..n {
        writeln!(
            text,
            "<{}>Nov 23 10:00:{:02} web{} app{}[{i}]: message {i} a=b|c",
            32 + (i % 8),
            i % 60,
            i % 3,
            i % 5
        )
        .expect("fmt");
    }
    s.write_all(&text).expect("send");
    drop(s);
    let f = d.first;
    d.wait_size(f + n, Duration::from_secs(30));
    // rsyslogd gone and its connection drained: whatever it sent is in the log now.
    rs.stop();
    wait_for(
        "the relay's connection to close",
        Duration::from_secs(10),
        || d.metric("auditlog_syslog_connections") == Some(0),
    );
    assert_eq!(d.tree_size(), f + n, "no extra events");

    let body = d
        .get(
            &format!("/v1/export?format=json&start={f}&end={}", f + n),
            "reader",
        )
        .text();
    let cp = d.checkpoint(f + n, &key);
    for (i, l) in body.lines().enumerate() {
        let v: Value = serde_json::from_str(l).expect("line");
        let e = &v["event"];
        let sys = &e["details"]["syslog"];
        assert_eq!(sys["format"], format);
        assert_eq!(
            sys["msg"].as_str().map(str::trim),
            Some(format!("message {i} a=b|c").as_str()),
            "in order"
        );
        assert_eq!(e["event_type"], "syslog");
        assert_eq!(e["actor"], format!("app{}", i % 5));
        assert_eq!(e["resource"], format!("web{}", i % 3));
        assert_eq!(e["category"], "auth");
        assert_eq!(sys["severity"], i % 8);
        assert_eq!(e["source_ip"], "127.0.0.1");
        // The peer the listener saw, outside the event (which the sender wrote).
        let want = match setup.submitter.as_str() {
            "" => "syslog:127.0.0.1",
            s => s,
        };
        assert_eq!(v["submitter"], want);
        d.prove(
            alg,
            &cp,
            f + i as u64,
            &hex32(v["leaf_hash"].as_str().expect("leaf")),
        );
    }
    assert_eq!(d.metric("auditlog_syslog_stored_total"), Some(n));
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog: ./scripts/test"
)]
fn rsyslog_omfwd_rfc5424_octet_counted() {
    rsyslog_forwards_into_the_log(
        "octet-counted",
        "RSYSLOG_SyslogProtocol23Format",
        "rfc5424",
        &Setup::default(),
    );
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog: ./scripts/test"
)]
fn rsyslog_omfwd_rfc3164_lf_framed() {
    rsyslog_forwards_into_the_log(
        "traditional",
        "RSYSLOG_ForwardFormat",
        "rfc3164",
        &Setup::default(),
    );
}

fn collector_conf(port: u16, file: &std::path::Path) -> String {
    collector_conf_with(port, file, "", "")
}

/// A collector; `global` and `imtcp` are extra parameters of its `global()` and of the
/// imtcp module (its stream driver).
fn collector_conf_with(port: u16, file: &std::path::Path, global: &str, imtcp: &str) -> String {
    format!(
        r#"global(workDirectory="WORKDIR" maxMessageSize="64k" {global})
module(load="imtcp" {imtcp})
template(name="msgonly" type="string" string="%msg%\n")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="out")
ruleset(name="out") {{
  action(type="omfile" file="{}" template="msgonly")
}}
"#,
        file.display()
    )
}

/// Log indices (cn1) of the CEF lines the collector wrote, in file order. Only whole lines:
/// the collector may be writing the last one as this reads (a cut line failed the test).
fn collected(file: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter(|l| !l.is_empty())
        .map(|l| {
            let ext = cef_extension(l.trim_start());
            assert_eq!(ext_get(&ext, "cn1Label"), Some("logIndex"), "{l}");
            ext_get(&ext, "cn1")
                .and_then(|v| v.parse().ok())
                .expect("cn1")
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog: ./scripts/test"
)]
fn forwarder_sends_cef_to_rsyslog_and_survives_an_outage() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let out = dir.path().join("collected.log");
    let rs_dir = dir.path().join("rsyslog");
    std::fs::create_dir_all(&rs_dir).expect("dir");
    let mut rs = Rsyslog::start(&rs_dir, &collector_conf(port, &out), port);
    let cfg = format!("{CONFIG}forward_addr = \"127.0.0.1:{port}\"\nforward_batch_events_max = 200\nforward_backoff_ms_max = 400\n");
    let d = start_daemon(dir.path(), &cfg);

    // Phase 1: every event arrives once, in order, as parsable CEF with its index.
    // The daemon's own start events are forwarded too: they come first.
    let f = d.first;
    let first: Vec<Vec<u8>> = (0..3000).map(tricky_event).collect();
    d.post_events(&first);
    wait_for(
        "the collector to hold 3000 events",
        Duration::from_secs(30),
        || collected(&out).len() as u64 >= f + 3000,
    );
    assert_eq!(collected(&out), (0..f + 3000).collect::<Vec<u64>>());
    let text = std::fs::read_to_string(&out).expect("file");
    let ext = cef_extension(text.lines().nth(f as usize + 7).expect("line").trim_start());
    assert_eq!(ext_get(&ext, "suser"), Some("user-7 a=b \\ é"));

    // Phase 2: the collector stops while events keep coming, then comes back.
    let second: Vec<Vec<u8>> = (3000..12000).map(tricky_event).collect();
    let poster = std::thread::scope(|s| {
        let h = s.spawn(|| {
            for chunk in second.chunks(500) {
                d.post_events(chunk);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        rs.stop();
        h.join()
    });
    poster.expect("poster");
    wait_for(
        "the lag to show the outage",
        Duration::from_secs(10),
        || d.metric("auditlog_forward_lag_events").unwrap_or(0) > 0,
    );
    let mut rs = Rsyslog::start(&rs_dir, &collector_conf(port, &out), port);
    wait_for("catch-up after the outage", Duration::from_secs(60), || {
        let got: BTreeSet<u64> = collected(&out).into_iter().collect();
        got.len() as u64 == f + 12000
    });
    let got = collected(&out);
    let set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(
        set,
        (0..f + 12000).collect::<BTreeSet<u64>>(),
        "nothing missing"
    );
    eprintln!(
        "{} lines for {} events ({} resent)",
        got.len(),
        f + 12000,
        got.len() as u64 - (f + 12000)
    );
    wait_for("the cursor to catch up", Duration::from_secs(10), || {
        d.metric("auditlog_forward_lag_events") == Some(0)
    });
    assert!(d.metric("auditlog_forward_errors_total").unwrap_or(0) >= 1);
    let cursor: u64 = std::fs::read_to_string(dir.path().join("data/forwarder.cursor"))
        .expect("cursor")
        .trim()
        .parse()
        .expect("index");
    assert_eq!(cursor, f + 12000);
    rs.stop();
}

/// Per-source caps on the syslog listener: past `syslog_connections_per_source_max` from one
/// address, a connection is closed at once (and counted), while another address still gets
/// in and is stored; the slots come back when the connections close.
#[test]
fn syslog_caps_connections_per_source() {
    use auditlog_tests::daemon::connect_from;
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tmp");
    let d = start_daemon(
        dir.path(),
        &format!("{CONFIG}syslog_connections_per_source_max = 2\n"),
    );
    // Closed at once: the read ends (EOF or reset) long before the read timeout.
    let closed_at_once = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = Instant::now();
        let mut b = [0u8; 1];
        let r = s.read(&mut b);
        matches!(r, Ok(0) | Err(_))
            && started.elapsed() < Duration::from_secs(4)
            && !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    let mut held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| connect_from([127, 0, 0, 3], d.syslog_addr()).expect("connect"))
        .collect();
    wait_for("both held", Duration::from_secs(10), || {
        d.metric("auditlog_syslog_connections") == Some(2)
    });
    let mut third = connect_from([127, 0, 0, 3], d.syslog_addr()).expect("connect");
    assert!(
        closed_at_once(&mut third),
        "a third from the same address is closed"
    );
    assert_eq!(
        d.metric("auditlog_syslog_connections_refused_total"),
        Some(1)
    );
    // Another address is not affected, and what it sends is stored.
    let mut other = connect_from([127, 0, 0, 4], d.syslog_addr()).expect("connect");
    other
        .write_all(b"<34>1 2026-11-23T10:00:00Z web1 app 1 - - from another source\n")
        .expect("send");
    drop(other);
    d.wait_size(d.first + 1, Duration::from_secs(10));
    // The held ones still work; closing one gives its slot back.
    held[0]
        .write_all(b"<34>1 2026-11-23T10:00:00Z web1 app 1 - - held\n")
        .expect("send");
    drop(held.remove(0));
    d.wait_size(d.first + 2, Duration::from_secs(10));
    wait_for("a slot back", Duration::from_secs(10), || {
        d.metric("auditlog_syslog_connections") == Some(1)
    });
    let mut again = connect_from([127, 0, 0, 3], d.syslog_addr()).expect("connect");
    again
        .write_all(b"<34>1 2026-11-23T10:00:00Z web1 app 1 - - again\n")
        .expect("send");
    drop(again);
    d.wait_size(d.first + 3, Duration::from_secs(10));
    assert_eq!(
        d.metric("auditlog_syslog_connections_refused_total"),
        Some(1)
    );
}
