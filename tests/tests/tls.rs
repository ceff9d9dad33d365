//! TLS and mutual TLS on both listeners, with the real `auditlogd`: certificates from a test
//! CA (rcgen), a client speaking raw HTTP/1.1 and the binary TCP protocol over rustls.
//! Refused: no client certificate, one from another CA, plain text to a TLS port. Accepted:
//! mapped certificate names act with their role; a bearer token still names its own role.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use auditlog_formats::frame::{self, FrameHeader, FrameType, FRAME_HEADER_BYTES};
use auditlog_tests::certs::Ca;
use auditlog_tests::daemon::Daemon;
use auditlog_tests::event;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn ca(name: &str) -> Ca {
    Ca::new(name)
}

/// A leaf signed by `ca`: (certificate DER, key DER, certificate PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, sans: &[&str], client: bool) -> (Vec<u8>, Vec<u8>, String, String) {
    let usage = if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    };
    let l = ca.leaf(cn, sans, &[usage]);
    (l.cert_der, l.key_der, l.cert_pem, l.key_pem)
}

fn start(dir: &Path, tls_section: &str) -> Daemon {
    Daemon::launch(dir)
        .config(&format!(
            "[engine]\ncheckpoint_interval_ms = 50\n\n[server.tls]\n{tls_section}"
        ))
        .tls()
        .start()
}

fn client_config(ca: &Ca, identity: Option<(&[u8], &[u8])>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert.der().to_vec()))
        .expect("root");
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let c = match identity {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.to_vec())],
                PrivateKeyDer::try_from(key.to_vec()).expect("key der"),
            )
            .expect("client cert"),
    };
    Arc::new(c)
}

fn connect(addr: &str, cfg: Arc<ClientConfig>) -> StreamOwned<ClientConnection, TcpStream> {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let name = ServerName::try_from("localhost").expect("name");
    StreamOwned::new(ClientConnection::new(cfg, name).expect("client"), sock)
}

/// One HTTP/1.1 request over TLS; `Err` when the handshake or the exchange fails.
fn https(
    d: &Daemon,
    cfg: Arc<ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = connect(&d.http_addr, cfg);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // Servers may close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok((status, text))
}

fn write_pem(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write pem");
    p.display().to_string()
}

#[test]
fn mutual_tls_maps_certificates_to_roles_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca1 = ca("auditlog test CA");
    let other = ca("someone else's CA");
    let (_, _, srv_pem, srv_key) = leaf(&ca1, "auditlogd", &["localhost", "127.0.0.1"], false);
    let (w_der, w_key, _, _) = leaf(&ca1, "svc-writer", &[], true);
    let (a_der, a_key, _, _) = leaf(&ca1, "auditor-1", &["auditor.example"], true);
    let (x_der, x_key, _, _) = leaf(&ca1, "unmapped", &[], true);
    let (s_der, s_key, _, _) = leaf(&other, "svc-writer", &[], true);
    let cert = write_pem(dir.path(), "server.pem", &srv_pem);
    let key = write_pem(dir.path(), "server.key", &srv_key);
    let ca_path = write_pem(dir.path(), "ca.pem", &ca1.cert.pem());
    let d = start(
        dir.path(),
        &format!(
            "cert_path = \"{cert}\"\nkey_path = \"{key}\"\nclient_ca_path = \"{ca_path}\"\n\
             [server.tls.client_roles]\n\"svc-writer\" = \"writer\"\n\"auditor.example\" = \"auditor\"\n"
        ),
    );
    let writer = client_config(&ca1, Some((&w_der, &w_key)));
    let auditor = client_config(&ca1, Some((&a_der, &a_key)));
    let unmapped = client_config(&ca1, Some((&x_der, &x_key)));

    // Refused at the handshake: no certificate, or one from another CA.
    for (what, cfg) in [
        ("no client certificate", client_config(&ca1, None)),
        ("another CA", client_config(&ca1, Some((&s_der, &s_key)))),
    ] {
        assert!(
            https(&d, cfg, "GET", "/health", None, b"").is_err(),
            "{what}: refused"
        );
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&d.http_addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "plain text is not served");

    // The writer certificate ingests without a token, and may not read proofs.
    let body = [event(1, 200), b"\n".to_vec(), event(2, 200)].concat();
    let (st, text) = https(&d, writer.clone(), "POST", "/v1/events", None, &body).expect("post");
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("\"receipts\""));
    let (st, _) = https(&d, writer.clone(), "GET", "/v1/log", None, b"").expect("get");
    assert_eq!(st, 403, "writer certificate may not audit");
    // The auditor is matched by a DNS name, not its CN.
    let (st, text) = https(&d, auditor.clone(), "GET", "/v1/log", None, b"").expect("log");
    assert_eq!(st, 200, "{text}");
    let (st, _) = https(&d, auditor, "POST", "/v1/events", None, &body).expect("post");
    assert_eq!(st, 403, "auditor certificate may not ingest");
    // A valid certificate with no mapped name needs a token; a token names its own role.
    let (st, _) = https(&d, unmapped.clone(), "GET", "/v1/log", None, b"").expect("get");
    assert_eq!(st, 401);
    let admin = d.tokens["admin"].clone();
    let (st, _) = https(&d, unmapped, "GET", "/v1/log", Some(&admin), b"").expect("get");
    assert_eq!(st, 200);
    let (st, _) = https(&d, writer.clone(), "GET", "/v1/log", Some("nonsense"), b"").expect("get");
    assert_eq!(st, 401, "a wrong token is not rescued by the certificate");

    // TCP ingest over TLS: HELLO with an empty token takes the certificate's role.
    let mut s = connect(&d.tcp_addr, writer);
    s.write_all(&frame::frame(
        FrameType::Hello,
        0,
        &frame::hello_payload(""),
    ))
    .expect("hello");
    let (h, _) = read_frame(&mut s);
    assert_eq!(h.frame_type, FrameType::HelloOk);
    let mut batch = vec![0u8; 4];
    frame::push_batch_event(&mut batch, &event(3, 200));
    frame::push_batch_event(&mut batch, &event(4, 200));
    s.write_all(&frame::frame(FrameType::Batch, 7, &batch))
        .expect("batch");
    let (h, p) = read_frame(&mut s);
    assert_eq!((h.frame_type, h.request_id), (FrameType::Ack, 7));
    let ack = frame::decode_ack(&p).expect("ack");
    assert_eq!(
        ack.first_index, 3,
        "after the daemon's start event and the two HTTP events"
    );
    // Without a certificate the TCP handshake fails too.
    let mut s = connect(&d.tcp_addr, client_config(&ca1, None));
    let refused = s
        .write_all(&frame::frame(
            FrameType::Hello,
            0,
            &frame::hello_payload(""),
        ))
        .and_then(|_| {
            let mut h = [0u8; FRAME_HEADER_BYTES];
            s.read_exact(&mut h)
        });
    assert!(
        refused.is_err(),
        "TCP without a client certificate is refused"
    );

    // The connection gauges and the sync histogram are exported.
    let admin_cfg = client_config(&ca1, Some((&x_der, &x_key)));
    let (st, text) = https(&d, admin_cfg, "GET", "/metrics", None, b"").expect("metrics");
    assert_eq!(st, 200);
    for m in [
        "auditlog_sync_latency_seconds_bucket{le=\"+Inf\"}",
        "auditlog_tcp_connections ",
        "auditlog_http_connections ",
        "auditlog_queue_depth ",
        "auditlog_errors_total{kind=\"http:unauthorized\"}",
    ] {
        assert!(text.contains(m), "metrics lack {m}");
    }
}

/// TLS without client certificates: bearer tokens as on plain HTTP, and a client that
/// trusts another CA cannot connect.
#[test]
fn tls_with_tokens_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca1 = ca("auditlog test CA");
    let (_, _, srv_pem, srv_key) = leaf(&ca1, "auditlogd", &["localhost"], false);
    let cert = write_pem(dir.path(), "server.pem", &srv_pem);
    let key = write_pem(dir.path(), "server.key", &srv_key);
    let d = start(
        dir.path(),
        &format!("cert_path = \"{cert}\"\nkey_path = \"{key}\"\n"),
    );
    let cfg = client_config(&ca1, None);
    let (st, _) = https(&d, cfg.clone(), "GET", "/v1/log", None, b"").expect("get");
    assert_eq!(st, 401);
    let auditor = d.tokens["auditor"].clone();
    let (st, text) = https(&d, cfg, "GET", "/v1/log", Some(&auditor), b"").expect("get");
    assert_eq!(st, 200, "{text}");
    let stranger = client_config(&ca("other"), None);
    assert!(https(&d, stranger, "GET", "/health", None, b"").is_err());
}

fn read_frame(s: &mut impl Read) -> (FrameHeader, Vec<u8>) {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    s.read_exact(&mut h).expect("frame header");
    let h = FrameHeader::decode(&h, 1 << 20).expect("header");
    let mut p = vec![0u8; h.payload_bytes as usize];
    s.read_exact(&mut p).expect("payload");
    (h, p)
}
