//! OIDC JWT sign-in (`[auth.oidc]`) end to end: the real `auditlogd`, tokens minted here
//! with keys made here, and the JWKS served by a small HTTP server of this test that can
//! change its answer (key rotation, a malformed or oversized document).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlog_formats::record::Record;
use auditlog_tests::daemon::{Daemon, Reply, CONFIG};
use auditlog_tests::event;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.test/realms/audit";
const AUDIENCE: &str = "auditlog";

/// A signing key of the test IdP, and its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
    /// The public key as PEM (SPKI): what a key-confusion attacker uses as an HMAC secret.
    public_pem: String,
}

impl TestKey {
    /// A fresh ES256 (P-256, made by rcgen) or EdDSA (Ed25519, a random seed) key.
    fn new(kid: &str, alg: Algorithm) -> TestKey {
        use base64::Engine as _;
        let key = match alg {
            Algorithm::ES256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .expect("generate key");
                EncodingKey::from_ec_der(&pair.serialize_der())
            }
            Algorithm::EdDSA => {
                // PKCS#8 v1 around a random seed (the backend does not read ring's v2).
                let mut der = hex::decode("302e020100300506032b657004220420").expect("hex");
                der.extend_from_slice(&rand::random::<[u8; 32]>());
                EncodingKey::from_ed_der(&der)
            }
            other => panic!("no test key for {other:?}"),
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_string());
        let jwk = serde_json::to_value(&jwk).expect("JWK as JSON");
        // SubjectPublicKeyInfo as PEM, from the JWK's coordinates.
        let b64u = |f: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwk[f].as_str().expect("coordinate"))
                .expect("base64url")
        };
        let spki = match alg {
            Algorithm::ES256 => {
                let mut d = hex::decode("3059301306072a8648ce3d020106082a8648ce3d03010703420004")
                    .expect("hex");
                d.extend(b64u("x"));
                d.extend(b64u("y"));
                d
            }
            _ => {
                let mut d = hex::decode("302a300506032b6570032100").expect("hex");
                d.extend(b64u("x"));
                d
            }
        };
        let public_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki)
        );
        TestKey {
            kid: kid.to_string(),
            alg,
            key,
            jwk,
            public_pem,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid), claims)
    }

    /// Signed with this key, the header naming `kid`.
    fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &self.key).expect("sign")
    }
}

fn jwks(keys: &[&TestKey]) -> Vec<u8> {
    serde_json::to_vec(&json!({"keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>()}))
        .expect("JWKS")
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The claims of a sign-in of `sub` in `groups`, valid for five minutes.
fn claims(sub: &str, groups: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now(), "exp": now() + 300,
           "groups": groups})
}

/// The test IdP's JWKS endpoint: answers every request with the document set last, and
/// counts the requests.
struct JwksServer {
    url: String,
    addr: std::net::SocketAddr,
    body: Arc<Mutex<Vec<u8>>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    fn start(body: Vec<u8>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind JWKS server");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, h, s) = (body.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(&body);
            }
        });
        JwksServer {
            url: format!("http://{addr}/realms/audit/certs"),
            addr,
            body,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(&self, body: Vec<u8>) {
        *self.body.lock().unwrap_or_else(|e| e.into_inner()) = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The test configuration with `[auth.oidc]`: the JWKS line (`jwks_url = …` or
/// `jwks_file = …`), further settings, and three role rules.
fn config(jwks_line: &str, extra: &str) -> String {
    format!(
        "{CONFIG}\n[auth.oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{jwks_line}\n\
         {extra}\n\
         [[auth.oidc.roles]]\nclaim = \"groups\"\nvalue = \"audit-writers\"\nrole = \"writer\"\n\
         [[auth.oidc.roles]]\nclaim = \"groups\"\nvalue = \"audit-auditors\"\nrole = \"auditor\"\n\
         [[auth.oidc.roles]]\nclaim = \"role\"\nvalue = \"reader\"\nrole = \"reader\"\n"
    )
}

fn url_config(server: &JwksServer, extra: &str) -> String {
    config(&format!("jwks_url = \"{}\"", server.url), extra)
}

fn with_jwt(d: &Daemon, method: &str, path: &str, jwt: &str, body: Option<&[u8]>) -> Reply {
    d.call(
        method,
        path,
        Some(jwt),
        body.map(|b| ("application/json", b)),
    )
}

/// `GET /v1/log` with `jwt` (an auditor's route).
fn log_with(d: &Daemon, jwt: &str) -> Reply {
    with_jwt(d, "GET", "/v1/log", jwt, None)
}

/// A 401 whose JSON reason holds `want`, and nothing of the token's signature.
fn assert_refused(r: &Reply, want: &str, jwt: &str) {
    assert_eq!(r.status, 401, "{want}: {}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    let why = v["error"]["message"].as_str().expect("message");
    assert!(why.contains(want), "{want}: {why}");
    if let Some(sig) = jwt.rsplit('.').next().filter(|s| s.len() > 8) {
        assert!(!why.contains(sig), "the reason echoes the token: {why}");
    }
}

/// Polls `f` until it holds, for at most 20 s.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A signed-in caller is recorded as `oidc:<sub>` (in the answer, the event read back and
/// the record's bytes), roles come from the claim values, a token without a mapped role is
/// 403, admin routes stay closed to OIDC, API tokens work as before, and the start event
/// records the OIDC configuration.
#[test]
fn oidc_sign_in_records_the_subject_and_maps_roles() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = TestKey::new("k1", Algorithm::ES256);
    let idp = JwksServer::start(jwks(&[&key]));
    let d = Daemon::start_with(dir.path(), &url_config(&idp, ""));

    let writer = key.sign(&claims("alice@example", &["staff", "audit-writers"]));
    let r = with_jwt(&d, "POST", "/v1/events", &writer, Some(&event(1, 200)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["submitter"], "oidc:alice@example");
    let index = r.json()["receipts"][0]["index"].as_u64().expect("index");
    let v = d.get(&format!("/v1/events/{index}"), "reader").json();
    assert_eq!(v["submitter"], "oidc:alice@example", "{v}");
    let rec = d
        .get(&format!("/v1/events/{index}?format=record"), "reader")
        .body;
    assert_eq!(
        Record::parse(&rec).expect("record").submitter,
        Some("oidc:alice@example")
    );

    // A writer only writes; an auditor audits and reads but does not write.
    let r = log_with(&d, &writer);
    assert_eq!(r.status, 403, "{}", r.text());
    let auditor = key.sign(&claims("bob", &["audit-auditors"]));
    assert_eq!(log_with(&d, &auditor).status, 200);
    let r = with_jwt(&d, "POST", "/v1/events", &auditor, Some(&event(2, 200)));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("role auditor"), "{}", r.text());
    // A string claim maps too.
    let mut c = claims("carol", &[]);
    c["role"] = json!("reader");
    let reader = key.sign(&c);
    let r = with_jwt(&d, "GET", &format!("/v1/events/{index}"), &reader, None);
    assert_eq!(r.status, 200, "{}", r.text());
    // Valid, but no role: 403 with the reason.
    let nobody = key.sign(&claims("dave", &["staff"]));
    let r = log_with(&d, &nobody);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("map to no role"), "{}", r.text());

    // Admin routes: a valid sign-in is 403, an invalid one 401.
    let r = with_jwt(&d, "GET", "/v1/admin/requests", &auditor, None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("grants no admin role"), "{}", r.text());
    let mut c = claims("bob", &["audit-auditors"]);
    c["exp"] = json!(now() - 3600);
    let expired = key.sign(&c);
    assert_refused(
        &with_jwt(&d, "GET", "/v1/admin/requests", &expired, None),
        "expired",
        &expired,
    );

    // API tokens are untouched.
    let r = d.post("application/json", &event(3, 200));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["submitter"], "token:writer");
    assert_eq!(d.get("/v1/log", "auditor").status, 200);

    let start = super::last_start(&d);
    let oidc = &start["auth"]["oidc"];
    assert_eq!(oidc["issuer"], ISSUER, "{start}");
    assert_eq!(oidc["jwks_url"], idp.url.as_str());
    assert_eq!(oidc["roles"][1]["role"], "auditor");
}

/// Every refusal is a 401 with its reason: `alg: none`, HMAC (the key-confusion attack:
/// HS256 with the IdP's public key as the secret), expired, not yet valid, wrong issuer,
/// wrong audience, no `exp`, unknown `kid`, a bad signature, and a key claiming another's kid.
#[test]
fn oidc_refusals_have_reasons() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = TestKey::new("k1", Algorithm::ES256);
    let idp = JwksServer::start(jwks(&[&key]));
    let d = Daemon::start_with(dir.path(), &url_config(&idp, "leeway_s = 30"));
    let good = key.sign(&claims("erin", &["audit-auditors"]));
    assert_eq!(log_with(&d, &good).status, 200, "the control token");

    let refused = |jwt: &str, want: &str| assert_refused(&log_with(&d, jwt), want, jwt);
    let b64 = |v: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    };
    let payload = good.split('.').nth(1).expect("payload");
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "none", "kid": "k1"}),
        json!({"alg": "NONE"}),
    ] {
        let unsigned = format!("{}.{payload}.", b64(header.to_string().as_bytes()));
        refused(&unsigned, "alg none is refused");
    }
    // Key confusion: the public key (as PEM, as the JWK's JSON) used as an HMAC secret.
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        for secret in [key.public_pem.as_bytes(), key.jwk.to_string().as_bytes()] {
            let mut h = Header::new(alg);
            h.kid = Some("k1".into());
            let hs = EncodingKey::from_secret(secret).expect("secret");
            let jwt = jsonwebtoken::encode(&h, &claims("mallory", &["audit-auditors"]), &hs)
                .expect("sign");
            refused(&jwt, "HMAC algorithms (HS256, HS384, HS512) are refused");
        }
    }
    let with = |k: &str, v: Value| {
        let mut c = claims("erin", &["audit-auditors"]);
        c[k] = v;
        key.sign(&c)
    };
    refused(&with("exp", json!(now() - 120)), "expired");
    refused(&with("nbf", json!(now() + 600)), "not yet valid");
    refused(
        &with("iss", json!("https://evil.test/realms/audit")),
        "wrong issuer",
    );
    refused(&with("aud", json!(["someone-else"])), "wrong audience");
    let mut c = claims("erin", &["audit-auditors"]);
    c.as_object_mut().expect("object").remove("exp");
    refused(&key.sign(&c), "exp missing");
    refused(
        &key.sign_as(Some("not-a-kid"), &claims("erin", &["audit-auditors"])),
        "unknown key id",
    );
    // The signature's bytes changed.
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 12;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    refused(&String::from_utf8(tampered).expect("utf8"), "bad signature");
    // Claims changed under the old signature.
    let forged_claims = b64(claims("root", &["audit-auditors"]).to_string().as_bytes());
    let parts: Vec<&str> = good.split('.').collect();
    refused(
        &format!("{}.{forged_claims}.{}", parts[0], parts[2]),
        "bad signature",
    );
    // Another key of the same kind claiming k1's kid.
    let other = TestKey::new("k1", Algorithm::ES256);
    refused(
        &other.sign(&claims("erin", &["audit-auditors"])),
        "bad signature",
    );
    // An Ed25519 token naming an EC key's kid.
    let ed = TestKey::new("k1", Algorithm::EdDSA);
    refused(
        &ed.sign(&claims("erin", &["audit-auditors"])),
        "not for its algorithm",
    );
    assert_eq!(log_with(&d, &good).status, 200, "the control token still");
}

/// Key rotation through the unknown-kid refetch (the refresh interval is an hour here): a
/// token signed with a key new in the JWKS is accepted at once, and once the old key has
/// left the JWKS (and a refetch happened), tokens signed by it are refused.
#[test]
fn oidc_key_rotation_by_unknown_kid_refetch() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = TestKey::new("2026-old", Algorithm::ES256);
    let new = TestKey::new("2026-new", Algorithm::EdDSA);
    let idp = JwksServer::start(jwks(&[&old]));
    let d = Daemon::start_with(
        dir.path(),
        &url_config(&idp, "jwks_refresh_s = 3600\njwks_refetch_min_s = 1"),
    );
    let old_jwt = old.sign(&claims("frank", &["audit-auditors"]));
    let new_jwt = new.sign(&claims("frank", &["audit-auditors"]));
    assert_eq!(log_with(&d, &old_jwt).status, 200);
    assert_refused(&log_with(&d, &new_jwt), "unknown key id", &new_jwt);

    // The IdP publishes the new key beside the old one.
    idp.serve(jwks(&[&old, &new]));
    wait_for("the new key to be accepted", || {
        log_with(&d, &new_jwt).status == 200
    });
    assert_eq!(log_with(&d, &old_jwt).status, 200, "both keys in the set");

    // The old key leaves. Its kid is still known until a refetch: a made-up kid asks for
    // one (at most one a second).
    idp.serve(jwks(&[&new]));
    let probe = new.sign_as(Some("probe"), &claims("frank", &["audit-auditors"]));
    wait_for("the old key to be dropped", || {
        let _ = log_with(&d, &probe);
        log_with(&d, &old_jwt).status == 401
    });
    assert_refused(&log_with(&d, &old_jwt), "unknown key id", &old_jwt);
    assert_eq!(log_with(&d, &new_jwt).status, 200);
}

/// The refresh interval alone picks up a rotation: with nothing asking for a refetch, a key
/// removed from the JWKS stops being accepted within about `jwks_refresh_s`.
#[test]
fn oidc_refresh_interval_drops_a_removed_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = TestKey::new("old", Algorithm::EdDSA);
    let new = TestKey::new("new", Algorithm::EdDSA);
    let idp = JwksServer::start(jwks(&[&old, &new]));
    let d = Daemon::start_with(
        dir.path(),
        &url_config(&idp, "jwks_refresh_s = 1\njwks_refetch_min_s = 1"),
    );
    let old_jwt = old.sign(&claims("gina", &["audit-auditors"]));
    let new_jwt = new.sign(&claims("gina", &["audit-auditors"]));
    assert_eq!(log_with(&d, &old_jwt).status, 200);
    assert_eq!(log_with(&d, &new_jwt).status, 200);
    idp.serve(jwks(&[&new]));
    let fetched = idp.hits();
    wait_for("a refresh", || idp.hits() > fetched + 1);
    assert_refused(&log_with(&d, &old_jwt), "unknown key id", &old_jwt);
    assert_eq!(log_with(&d, &new_jwt).status, 200);
}

/// A JWKS answer that is not JSON, has no usable key, or is over `jwks_bytes_max` is
/// refused and the last good set kept (the old key still works, a key only the refused
/// answer held does not); a good answer after them is taken.
#[test]
fn oidc_bad_jwks_answer_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = TestKey::new("old", Algorithm::ES256);
    let new = TestKey::new("new", Algorithm::ES256);
    let idp = JwksServer::start(jwks(&[&old]));
    let d = Daemon::start_with(
        dir.path(),
        &url_config(
            &idp,
            "jwks_refresh_s = 1\njwks_refetch_min_s = 1\njwks_bytes_max = 4096",
        ),
    );
    let old_jwt = old.sign(&claims("hana", &["audit-auditors"]));
    let new_jwt = new.sign(&claims("hana", &["audit-auditors"]));
    assert_eq!(log_with(&d, &old_jwt).status, 200);

    // The new key, in a document padded past jwks_bytes_max.
    let mut huge = json!({"keys": [new.jwk.clone()]});
    huge["padding"] = json!("x".repeat(8192));
    let oct_key_only = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "new"}]});
    for bad in [
        b"<html>502 Bad Gateway</html>".to_vec(),
        b"{\"keys\": \"none\"}".to_vec(),
        serde_json::to_vec(&oct_key_only).expect("json"),
        serde_json::to_vec(&huge).expect("json"),
    ] {
        idp.serve(bad);
        let fetched = idp.hits();
        wait_for("two fetches of the bad answer", || {
            idp.hits() >= fetched + 2
        });
        assert_eq!(
            log_with(&d, &old_jwt).status,
            200,
            "the last good set was dropped"
        );
        assert_refused(&log_with(&d, &new_jwt), "unknown key id", &new_jwt);
    }
    idp.serve(jwks(&[&new]));
    wait_for("the good answer to be taken", || {
        log_with(&d, &new_jwt).status == 200
    });
    assert_refused(&log_with(&d, &old_jwt), "unknown key id", &old_jwt);
}

/// Made-up kids cannot make the daemon hammer the IdP: many tokens with unknown kids lead
/// to one refetch per `jwks_refetch_min_s`, not one each.
#[test]
fn oidc_unknown_kids_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = TestKey::new("k", Algorithm::EdDSA);
    let idp = JwksServer::start(jwks(&[&key]));
    let d = Daemon::start_with(
        dir.path(),
        &url_config(&idp, "jwks_refresh_s = 3600\njwks_refetch_min_s = 600"),
    );
    assert_eq!(
        log_with(&d, &key.sign(&claims("ivan", &["audit-auditors"]))).status,
        200
    );
    assert_eq!(idp.hits(), 1, "the first fetch");
    for i in 0..25 {
        let jwt = key.sign_as(Some(&format!("random-{i}")), &claims("ivan", &["x"]));
        assert_refused(&log_with(&d, &jwt), "unknown key id", &jwt);
    }
    assert_eq!(idp.hits(), 2, "one refetch for 25 unknown kids");
}

/// Keys from a file: read at start (a missing file stops the start, naming the setting);
/// tokens verify against it. Without `[auth.oidc]`, a JWT is just an unknown API token.
#[test]
fn oidc_jwks_file_and_no_oidc_without_the_section() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = TestKey::new("file-key", Algorithm::EdDSA);
    let path = dir.path().join("jwks.json");
    let text = config(&format!("jwks_file = \"{}\"", path.display()), "");

    // Missing: the start fails with the setting named.
    std::fs::write(dir.path().join("missing.toml"), &text).expect("write config");
    let out = auditlog_tests::daemon::daemon_command()
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("never"))
        .output()
        .expect("auditlogd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.oidc.jwks_file"), "{err}");

    std::fs::write(&path, jwks(&[&key])).expect("write JWKS");
    let d = Daemon::start_with(dir.path(), &text);
    let writer = key.sign(&claims("svc-batch", &["audit-writers"]));
    let r = with_jwt(&d, "POST", "/v1/events", &writer, Some(&event(1, 100)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["submitter"], "oidc:svc-batch");
    let stranger = TestKey::new("file-key", Algorithm::EdDSA);
    let jwt = stranger.sign(&claims("svc-batch", &["audit-writers"]));
    assert_refused(
        &with_jwt(&d, "POST", "/v1/events", &jwt, Some(&event(2, 100))),
        "bad signature",
        &jwt,
    );
    drop(d);

    let plain = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(plain.path());
    let r = with_jwt(&d, "POST", "/v1/events", &writer, Some(&event(3, 100)));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("unknown token"), "{}", r.text());
}
