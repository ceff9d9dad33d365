//! Syslog over TLS (RFC 5425), both ways, with real rsyslog and its OpenSSL stream driver
//! (`rsyslog-openssl`): rsyslog relays into the TLS listener with a client certificate;
//! the listener refuses plain text and untrusted clients and frees stalled handshakes; the
//! forwarder sends CEF to a TLS collector under mutual TLS; a forwarder that distrusts its
//! collector, or that the collector refuses, keeps its cursor.
//! Part of the `siem` test binary; certificates come from a test CA (rcgen).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

use super::support::{free_port, start_daemon, wait_for, Ca, Rsyslog};
use super::{
    cef_extension, collected, collector_conf_with, ext_get, rsyslog_forwards_into_the_log,
    tricky_event, Setup, CONFIG,
};

fn quoted(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// RFC 5425: rsyslog's OpenSSL driver checks auditlogd's certificate by name and presents
/// its own, which the listener requires (`syslog_tls_client_ca_path`).
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog-openssl: ./scripts/test"
)]
fn rsyslog_omfwd_over_tls_with_a_client_certificate() {
    let pki = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("siem test CA");
    let ca_path = ca.write(pki.path(), "ca.pem");
    let (cert, key) = ca.issue(pki.path(), "auditlogd", "auditlogd", &["localhost"]);
    let (rcert, rkey) = ca.issue(pki.path(), "relay", "rsyslog-relay", &["relay.example"]);
    let setup = Setup {
        siem: format!(
            "syslog_tls = true\nsyslog_tls_cert_path = {}\nsyslog_tls_key_path = {}\nsyslog_tls_client_ca_path = {}\n",
            quoted(&cert),
            quoted(&key),
            quoted(&ca_path)
        ),
        rsyslog_global: format!(
            "DefaultNetstreamDriverCAFile={} DefaultNetstreamDriverCertFile={} DefaultNetstreamDriverKeyFile={}",
            quoted(&ca_path),
            quoted(&rcert),
            quoted(&rkey)
        ),
        omfwd: r#"StreamDriver="ossl" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost""#.into(),
        // The relay's verified certificate is recorded with its address.
        submitter: "syslog:127.0.0.1 cert:rsyslog-relay".into(),
    };
    rsyslog_forwards_into_the_log(
        "octet-counted",
        "RSYSLOG_SyslogProtocol23Format",
        "rfc5424",
        &setup,
    );
}

fn tls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .map(|c| c.expect("cert pem"))
                    .collect(),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client cert"),
    })
}

/// Octet-counted RFC 5424 messages `first..first+n`, as RFC 5425 sends them.
fn octet_counted(first: u64, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        let m = format!("<134>1 2026-12-01T10:00:00Z host{i} app - - - message {i}");
        write!(out, "{} {m}", m.len()).expect("fmt");
    }
    out
}

/// Sends `bytes` over TLS, closes with close_notify and waits for the daemon to close
/// (after storing, or after refusing). The result is whatever the end of the exchange was.
fn send_over_tls(addr: &str, cfg: Arc<ClientConfig>, bytes: &[u8]) -> std::io::Result<()> {
    let sock = std::net::TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut s = StreamOwned::new(ClientConnection::new(cfg, name).expect("client"), sock);
    s.write_all(bytes)?;
    s.conn.send_close_notify();
    s.flush()?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map(|_| ())
}

/// The TLS syslog port stores nothing from plain text, from clients without a certificate
/// or with another CA's, and keeps serving the clients it trusts.
#[test]
fn syslog_tls_refuses_plain_text_and_unknown_clients() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, other) = (Ca::new("siem test CA"), Ca::new("someone else's CA"));
    let ca_path = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.issue(dir.path(), "auditlogd", "auditlogd", &["localhost"]);
    let good = ca.issue(dir.path(), "good", "relay-1", &[]);
    let stranger = other.issue(dir.path(), "stranger", "relay-1", &[]);
    // Two slots, and handshakes that must finish within a second.
    let config = CONFIG.replace("[server]\n", "[server]\ntls_handshake_timeout_ms = 1000\n");
    let d = start_daemon(
        dir.path(),
        &format!(
            "{config}syslog_connections_max = 2\nsyslog_tls = true\nsyslog_tls_cert_path = {}\nsyslog_tls_key_path = {}\nsyslog_tls_client_ca_path = {}\n",
            quoted(&cert),
            quoted(&key),
            quoted(&ca_path)
        ),
    );

    // Clients that connect and never start a handshake hold their slots only until the
    // handshake timeout.
    let silent: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(d.syslog_addr()).expect("connect"))
        .collect();
    wait_for(
        "silent handshakes to time out",
        Duration::from_secs(10),
        || {
            d.metric("auditlog_syslog_tls_handshake_failures_total") >= Some(2)
                && d.metric("auditlog_syslog_connections") == Some(0)
        },
    );
    drop(silent);

    // Plain text, as a sender configured without TLS would send it.
    let mut plain = std::net::TcpStream::connect(d.syslog_addr()).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain.write_all(&octet_counted(0, 10)).expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"<"), "nothing syslog comes back");
    // TLS without a client certificate, and with one from another CA.
    let _ = send_over_tls(
        d.syslog_addr(),
        tls_client(&ca_path, None),
        &octet_counted(10, 10),
    );
    let _ = send_over_tls(
        d.syslog_addr(),
        tls_client(&ca_path, Some((&stranger.0, &stranger.1))),
        &octet_counted(20, 10),
    );
    wait_for(
        "three more refused handshakes",
        Duration::from_secs(10),
        || d.metric("auditlog_syslog_tls_handshake_failures_total") >= Some(5),
    );

    // A trusted client is still served, and only its messages are in the log.
    send_over_tls(
        d.syslog_addr(),
        tls_client(&ca_path, Some((&good.0, &good.1))),
        &octet_counted(100, 50),
    )
    .or_else(|e| match e.kind() {
        // The daemon may close without its own close_notify.
        std::io::ErrorKind::UnexpectedEof => Ok(()),
        _ => Err(e),
    })
    .expect("trusted client");
    let f = d.first;
    d.wait_size(f + 50, Duration::from_secs(10));
    // Every connection closed and drained: nothing more can arrive.
    wait_for("the connections to close", Duration::from_secs(10), || {
        d.metric("auditlog_syslog_connections") == Some(0)
    });
    assert_eq!(d.tree_size(), f + 50, "nothing from the refused senders");
    let body = d
        .get(
            &format!("/v1/export?format=json&start={f}&end={}", f + 50),
            "reader",
        )
        .text();
    for (k, l) in body.lines().enumerate() {
        let v: Value = serde_json::from_str(l).expect("line");
        assert_eq!(
            v["event"]["resource"],
            format!("host{}", 100 + k),
            "in order"
        );
        // The sender's verified certificate, recorded with its address.
        assert_eq!(v["submitter"], "syslog:127.0.0.1 cert:relay-1");
    }
    assert_eq!(d.metric("auditlog_syslog_stored_total"), Some(50));
    assert_eq!(d.metric("auditlog_syslog_connections"), Some(0));
}

/// A TLS collector: rsyslog's OpenSSL driver on imtcp with the given client check
/// (`anon`: any client; `x509/certvalid`: a client certificate signed by `ca`).
fn tls_collector_conf(
    port: u16,
    file: &Path,
    ca: &Path,
    cert: &(PathBuf, PathBuf),
    auth_mode: &str,
) -> String {
    collector_conf_with(
        port,
        file,
        &format!(
            "DefaultNetstreamDriverCAFile={} DefaultNetstreamDriverCertFile={} DefaultNetstreamDriverKeyFile={}",
            quoted(ca),
            quoted(&cert.0),
            quoted(&cert.1)
        ),
        &format!(r#"StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="{auth_mode}""#),
    )
}

/// A running TLS collector (rsyslog) in `dir/rsyslog`, writing to `dir/collected.log`, with
/// a certificate from `ca` for `sans`; `conf` and `rs_dir` start it again after a stop.
struct TlsCollector {
    port: u16,
    out: PathBuf,
    rs_dir: PathBuf,
    conf: String,
    rs: Rsyslog,
}

fn start_tls_collector(
    dir: &Path,
    ca: &Ca,
    ca_path: &Path,
    sans: &[&str],
    auth_mode: &str,
) -> TlsCollector {
    let collector = ca.issue(dir, "collector", "collector", sans);
    let port = free_port();
    let out = dir.join("collected.log");
    let rs_dir = dir.join("rsyslog");
    std::fs::create_dir_all(&rs_dir).expect("dir");
    let conf = tls_collector_conf(port, &out, ca_path, &collector, auth_mode);
    let rs = Rsyslog::start(&rs_dir, &conf, port);
    TlsCollector {
        port,
        out,
        rs_dir,
        conf,
        rs,
    }
}

/// CEF over TLS with mutual authentication: the collector requires the forwarder's client
/// certificate, the forwarder checks the collector's by `forward_server_name`. Every event
/// arrives with its index, also across a collector restart.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog-openssl: ./scripts/test"
)]
fn forwarder_sends_cef_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("siem test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let TlsCollector {
        port,
        out,
        rs_dir,
        conf,
        mut rs,
    } = start_tls_collector(dir.path(), &ca, &ca_path, &["localhost"], "x509/certvalid");
    let (fcert, fkey) = ca.issue(dir.path(), "forwarder", "auditlogd-forwarder", &[]);
    let cfg = format!(
        "{CONFIG}forward_addr = \"127.0.0.1:{port}\"\nforward_batch_events_max = 200\nforward_backoff_ms_max = 400\n\
         forward_tls = true\nforward_ca_path = {}\nforward_client_cert_path = {}\nforward_client_key_path = {}\nforward_server_name = \"localhost\"\n",
        quoted(&ca_path),
        quoted(&fcert),
        quoted(&fkey)
    );
    let d = start_daemon(dir.path(), &cfg);
    // The daemon's start event is forwarded first.
    let f = d.first;
    let first: Vec<Vec<u8>> = (0..2000).map(tricky_event).collect();
    d.post_events(&first);
    wait_for(
        "the collector to hold 2000 events",
        Duration::from_secs(30),
        || collected(&out).len() as u64 >= f + 2000,
    );
    assert_eq!(collected(&out), (0..f + 2000).collect::<Vec<u64>>());
    let text = std::fs::read_to_string(&out).expect("file");
    let ext = cef_extension(text.lines().nth(f as usize + 7).expect("line").trim_start());
    assert_eq!(ext_get(&ext, "suser"), Some("user-7 a=b \\ é"));
    wait_for("the cursor at 2000", Duration::from_secs(10), || {
        d.metric("auditlog_forward_cursor") == Some(f + 2000)
    });

    // The collector goes away (its TLS session ends) and comes back.
    rs.stop();
    let second: Vec<Vec<u8>> = (2000..3000).map(tricky_event).collect();
    d.post_events(&second);
    wait_for(
        "the lag to show the outage",
        Duration::from_secs(10),
        || d.metric("auditlog_forward_lag_events").unwrap_or(0) > 0,
    );
    let mut rs = Rsyslog::start(&rs_dir, &conf, port);
    wait_for("catch-up after the outage", Duration::from_secs(60), || {
        collected(&out).into_iter().collect::<BTreeSet<u64>>().len() as u64 == f + 3000
    });
    let got: BTreeSet<u64> = collected(&out).into_iter().collect();
    assert_eq!(
        got,
        (0..f + 3000).collect::<BTreeSet<u64>>(),
        "nothing missing"
    );
    wait_for("the cursor to catch up", Duration::from_secs(10), || {
        d.metric("auditlog_forward_lag_events") == Some(0)
    });
    rs.stop();
}

/// A forwarder that does not trust the collector's certificate sends nothing and keeps its
/// cursor (the lag shows it); with the right CA after a restart, every event arrives.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog-openssl: ./scripts/test"
)]
fn forwarder_with_the_wrong_ca_keeps_its_cursor_until_fixed() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, other) = (Ca::new("siem test CA"), Ca::new("someone else's CA"));
    let ca_path = ca.write(dir.path(), "ca.pem");
    let other_path = other.write(dir.path(), "other.pem");
    let TlsCollector {
        port, out, mut rs, ..
    } = start_tls_collector(
        dir.path(),
        &ca,
        &ca_path,
        &["localhost", "127.0.0.1"],
        "anon",
    );
    // forward_server_name defaults to forward_addr's host, here the IP address.
    let cfg = |trusted: &Path| {
        format!(
            "{CONFIG}forward_addr = \"127.0.0.1:{port}\"\nforward_backoff_ms_max = 400\nforward_tls = true\nforward_ca_path = {}\n",
            quoted(trusted)
        )
    };
    let mut d = start_daemon(dir.path(), &cfg(&other_path));
    let events: Vec<Vec<u8>> = (0..500).map(tricky_event).collect();
    d.post_events(&events);
    wait_for("refused handshakes", Duration::from_secs(15), || {
        d.metric("auditlog_forward_errors_total") >= Some(3)
    });
    assert_eq!(d.metric("auditlog_forward_cursor"), Some(0));
    assert_eq!(d.metric("auditlog_forward_lag_events"), Some(d.first + 500));
    assert!(collected(&out).is_empty(), "nothing reached the collector");
    d.stop();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/forwarder.cursor")).ok(),
        None,
        "no cursor written"
    );

    // The second start is recorded too: two start events and the 500.
    let d = start_daemon(dir.path(), &cfg(&ca_path));
    let all = d.first;
    assert_eq!(all, 502);
    wait_for(
        "delivery with the right CA",
        Duration::from_secs(30),
        || collected(&out).len() as u64 >= all,
    );
    assert_eq!(collected(&out), (0..all).collect::<Vec<u64>>());
    wait_for("the cursor at 500", Duration::from_secs(10), || {
        d.metric("auditlog_forward_lag_events") == Some(0)
    });
    rs.stop();
}

/// A collector that requires a client certificate refuses a forwarder without one. Under
/// TLS 1.3 the client finishes its side of the handshake first and learns of the refusal
/// only from the collector's alert (or a broken pipe), possibly after its first chunk was
/// written: the cursor must still not move.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs rsyslog-openssl: ./scripts/test"
)]
fn forwarder_refused_by_a_collector_that_requires_a_certificate_keeps_its_cursor() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new("siem test CA");
    let ca_path = ca.write(dir.path(), "ca.pem");
    let TlsCollector {
        port, out, mut rs, ..
    } = start_tls_collector(dir.path(), &ca, &ca_path, &["localhost"], "x509/certvalid");
    let d = start_daemon(
        dir.path(),
        &format!(
            "{CONFIG}forward_addr = \"127.0.0.1:{port}\"\nforward_server_name = \"localhost\"\nforward_backoff_ms_max = 400\nforward_tls = true\nforward_ca_path = {}\n",
            quoted(&ca_path)
        ),
    );
    let events: Vec<Vec<u8>> = (0..300).map(tricky_event).collect();
    d.post_events(&events);
    wait_for("refused sessions", Duration::from_secs(15), || {
        d.metric("auditlog_forward_errors_total") >= Some(3)
    });
    assert_eq!(d.metric("auditlog_forward_cursor"), Some(0));
    assert_eq!(d.metric("auditlog_forward_lag_events"), Some(d.first + 300));
    assert!(
        collected(&out).is_empty(),
        "nothing reached the collector's file"
    );
    rs.stop();
}
