//! The HTTP API end to end: the real `auditlogd` binary on a free port over a temporary data
//! directory, driven by a blocking HTTP client. Ingest, read back, checkpoints and proofs
//! checked against the verifier key, a restart, the auth matrix, and bad input.

use std::io::Read;
use std::time::{Duration, Instant};

use auditlog_formats::note::Checkpoint;
use auditlog_formats::record::Record;
use auditlog_formats::tree;
use auditlog_formats::TreeHash;
use auditlog_tests::daemon::{Daemon, Reply, BODY_BYTES_MAX, CONFIG};
use auditlog_tests::event;
use serde_json::Value;

#[path = "http/oidc.rs"]
mod oidc;
#[path = "http/rotation.rs"]
mod rotation;

fn hash(v: &Value) -> [u8; 32] {
    let h = hex::decode(v.as_str().expect("hex string")).expect("hex");
    h.try_into().expect("32 bytes")
}

fn receipts(r: &Reply) -> Vec<(u64, [u8; 32])> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|x| (x["index"].as_u64().expect("index"), hash(&x["leaf_hash"])))
        .collect()
}

fn check_inclusion(d: &Daemon, alg: TreeHash, cp: &Checkpoint, index: u64, leaf: &[u8; 32]) {
    let r = d.get(
        &format!("/v1/proof/inclusion?index={index}&size={}", cp.size),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["index"], index);
    assert_eq!(v["size"], cp.size);
    let proof: Vec<[u8; 32]> = v["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(hash)
        .collect();
    tree::verify_inclusion(alg, index, cp.size, leaf, &proof, &cp.root).expect("inclusion");
    // The same proof, asked for by leaf hash (the leaf-hash index).
    let r = d.get(
        &format!(
            "/v1/proof/inclusion?leaf_hash={}&size={}",
            auditlog_formats::hash::to_hex(leaf),
            cp.size
        ),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["index"], index, "found by leaf hash");
    assert_eq!(r.json()["hashes"], v["hashes"]);
}

fn check_consistency(d: &Daemon, alg: TreeHash, old: &Checkpoint, new: &Checkpoint) {
    let r = d.get(
        &format!("/v1/proof/consistency?from={}&to={}", old.size, new.size),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["from"], old.size);
    assert_eq!(v["to"], new.size);
    let proof: Vec<[u8; 32]> = v["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(hash)
        .collect();
    tree::verify_consistency(alg, old.size, new.size, &old.root, &new.root, &proof)
        .expect("consistency");
}

#[test]
fn ingest_read_prove_and_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = Daemon::start(dir.path());
    let (key, alg, size0) = d.log();
    // The daemon's own start event comes first.
    let f = d.first;
    assert_eq!(size0, f);
    let start_event = d.get(&format!("/v1/events/{}", f - 1), "reader").json();
    assert_eq!(start_event["submitter"], "auditlogd");
    assert_eq!(start_event["event"]["action"], "start");

    let mut sent: Vec<Vec<u8>> = vec![event(0, 300)];
    let one = receipts(&d.post("application/json", &sent[0]));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, f);
    let cp1 = d.checkpoint(f + 1, &key);

    // Over the engine's 128 KiB submission limit: several batches, in order.
    let batch: Vec<Vec<u8>> = (1..=120).map(|n| event(n, 2000)).collect();
    let mut ndjson = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        ndjson.extend_from_slice(e);
        ndjson.extend_from_slice(if i % 10 == 0 { b"\n\n" } else { b"\r\n" });
    }
    let many = receipts(&d.post("application/x-ndjson", &ndjson));
    assert_eq!(many.len(), batch.len());
    for (k, (index, _)) in many.iter().enumerate() {
        assert_eq!(*index, f + 1 + k as u64);
    }
    sent.extend(batch);
    let leaves: Vec<[u8; 32]> = one.iter().chain(&many).map(|r| r.1).collect();

    for i in [0u64, 1, 60, 120] {
        let r = d.get(&format!("/v1/events/{}", f + i), "reader");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["index"], f + i);
        assert_eq!(hash(&v["leaf_hash"]), leaves[i as usize]);
        let want: Value = serde_json::from_slice(&sent[i as usize]).expect("event JSON");
        assert_eq!(v["event"], want);
        let raw = d.get(&format!("/v1/events/{}?format=record", f + i), "auditor");
        assert_eq!(raw.status, 200);
        assert_eq!(raw.content_type, "application/octet-stream");
        let rec = Record::parse(&raw.body).expect("record");
        assert_eq!(rec.payload, &sent[i as usize][..]);
        assert_eq!(
            Some(rec.received_at_unix_ns),
            v["received_at_unix_ns"].as_u64()
        );
        assert_eq!(alg.leaf(&raw.body), leaves[i as usize]);
    }
    let range = d.get(&format!("/v1/events?start={f}&end={}", f + 121), "reader");
    assert_eq!(range.status, 200);
    assert!(range.content_type.starts_with("application/x-ndjson"));
    let lines: Vec<Value> = range
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert_eq!(lines.len(), 121);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["index"], f + i as u64);
        assert_eq!(hash(&v["leaf_hash"]), leaves[i]);
        let want: Value = serde_json::from_slice(&sent[i]).expect("event JSON");
        assert_eq!(v["event"], want);
    }

    let cp2 = d.checkpoint(f + 121, &key);
    for i in [0u64, 1, 59, 120] {
        check_inclusion(&d, alg, &cp2, f + i, &leaves[i as usize]);
    }
    check_consistency(&d, alg, &cp1, &cp2);

    d.stop();
    let d = Daemon::start(dir.path());
    let (key2, alg2, size) = d.log();
    assert_eq!(key2.to_string(), key.to_string(), "same key after restart");
    assert_eq!(alg2, alg);
    // The restart is recorded too.
    assert_eq!(size, f + 122);
    assert_eq!(d.first, f + 122);
    let cp3 = d.checkpoint(size, &key);
    check_consistency(&d, alg, &cp2, &cp3);
    let again = receipts(&d.post("application/json", &event(999, 400)));
    assert_eq!(again[0].0, size);
    let cp4 = d.checkpoint(size + 1, &key);
    check_consistency(&d, alg, &cp1, &cp4);
    check_inclusion(&d, alg, &cp4, size, &again[0].1);
    check_inclusion(&d, alg, &cp4, f + 60, &leaves[60]);
    let r = d.get(&format!("/v1/events/{}", f + 60), "admin");
    assert_eq!(hash(&r.json()["leaf_hash"]), leaves[60]);
}

/// (method, path, body, roles allowed besides admin); `None` roles: no token needed.
type Route<'a> = (&'a str, &'a str, Option<&'a [u8]>, Option<&'a [&'a str]>);

/// Who wrote an event is what the server authenticated, not what the event claims: a
/// writer's event dressed as the daemon's own admin record carries `token:writer`, the
/// daemon's own record `auditlogd`; both are in the record, so the leaf hash, the proofs and
/// the exports carry them, and a changed submitter no longer matches the leaf.
#[test]
fn the_submitter_is_who_the_server_authenticated() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let (key, alg, _) = d.log();
    let forged = br#"{"timestamp":"2026-01-01T00:00:00Z","event_type":"admin","actor":"auditlogd","action":"approve","resource":"admin/requests/x","outcome":"success","submitter":"auditlogd"}"#;
    let r = d.post("application/json", forged);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["submitter"], "token:writer");
    let forged_at = receipts(&r)[0].0;
    // A request the daemon records itself.
    let retention = serde_json::json!({"op": "set_retention",
        "retention": {"days": {"CUI//BASIC": 3000}}});
    let body = serde_json::to_vec(&retention).expect("json");
    let r = d.call(
        "POST",
        "/v1/admin/requests",
        Some(&d.token("admin")),
        Some(("application/json", &body)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let size = d.log().2;
    assert!(size > forged_at + 1, "the daemon recorded the request");
    let cp = d.checkpoint(size, &key);
    for (index, want) in [(forged_at, "token:writer"), (size - 1, "auditlogd")] {
        let v = d.get(&format!("/v1/events/{index}"), "reader").json();
        assert_eq!(v["submitter"], want, "{v}");
        let rec = d
            .get(&format!("/v1/events/{index}?format=record"), "reader")
            .body;
        let parsed = Record::parse(&rec).expect("record");
        assert_eq!(parsed.submitter, Some(want));
        let leaf = alg.leaf(&rec);
        check_inclusion(&d, alg, &cp, index, &leaf);
        // Claiming another submitter for the same event is another leaf: no proof.
        let claimed = Record {
            submitter: Some("auditlogd"),
            ..parsed
        };
        if want != "auditlogd" {
            assert_ne!(alg.leaf(&claimed.to_bytes()), leaf);
        }
    }
}

/// `auditlogd tokens …` against the data directory of a test daemon (stopped or not).
fn tokens_cmd(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    auditlog_tests::daemon::daemon_command()
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("tokens")
        .args(args)
        .output()
        .expect("auditlogd tokens")
}

/// An admin route called with `token` and an optional JSON body.
fn admin_call(d: &Daemon, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
    d.call(
        method,
        path,
        Some(token),
        bytes.as_deref().map(|b| ("application/json", b)),
    )
}

/// The details of the newest start event in the log.
fn last_start(d: &Daemon) -> Value {
    let v = d
        .get(&format!("/v1/events/{}", d.first - 1), "reader")
        .json();
    assert_eq!(v["submitter"], "auditlogd", "{v}");
    assert_eq!(v["event"]["action"], "start", "{v}");
    v["event"]["details"].clone()
}

/// No single person changes who may act: the host's `tokens add --role admin` works only
/// before the log exists, a later admin comes by an `add_admin` request another admin
/// approves (the new admin's token is known only to them: the request carries its hash),
/// and every token added or revoked, and the configuration of every start with its file's
/// digest, is in the log.
#[test]
fn governance_changes_need_two_people_and_are_all_in_the_log() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    // Bootstrap: the first admins, before the first start.
    let bob = tokens_cmd(dir.path(), &["add", "--role", "admin", "--name", "bob"]);
    assert!(
        bob.status.success(),
        "{}",
        String::from_utf8_lossy(&bob.stderr)
    );
    let bob = String::from_utf8(bob.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let mut d = Daemon::start(dir.path());
    let start = last_start(&d);
    let config = std::fs::read(dir.path().join("auditlogd.toml")).expect("config");
    assert_eq!(
        start["configuration_file"]["sha256"],
        hex::encode(sha2::Sha256::digest(&config))
    );
    assert_eq!(start["auth"]["approvals_required"], 1);
    // The configured address (the record is written before the listeners bind; the harness
    // asks for port 0).
    assert_eq!(start["listeners"]["http"], "127.0.0.1:0");
    let added: Vec<&str> = start["token_changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(added, ["writer", "reader", "auditor", "admin", "bob"]);

    // Once the log exists, the host cannot add an admin.
    let late = tokens_cmd(dir.path(), &["add", "--role", "admin", "--name", "mallory"]);
    assert!(!late.status.success());
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("add_admin"),
        "{}",
        String::from_utf8_lossy(&late.stderr)
    );

    // add_admin: requested by one admin, refused to approve by the same, approved by another.
    let dave = "d".repeat(64);
    let dave_hash = hex::encode(sha2::Sha256::digest(dave.as_bytes()));
    let r = admin_call(
        &d,
        "POST",
        "/v1/admin/requests",
        &d.token("admin"),
        Some(serde_json::json!({"op": "add_admin", "name": "dave", "token_sha256": dave_hash})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    let approve = format!("/v1/admin/requests/{id}/approve");
    assert_eq!(
        admin_call(&d, "GET", "/v1/admin/requests", &dave, None).status,
        401
    );
    let r = admin_call(&d, "POST", &approve, &d.token("admin"), None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        admin_call(&d, "GET", "/v1/admin/requests", &dave, None).status,
        401
    );
    let r = admin_call(&d, "POST", &approve, &bob, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "executed", "{}", r.text());
    // At once, and the token itself was never sent to the server.
    assert_eq!(
        admin_call(&d, "GET", "/v1/admin/requests", &dave, None).status,
        200
    );
    let size = d.log().2;
    let executed = d.get(&format!("/v1/events/{}", size - 1), "reader").json();
    assert_eq!(executed["submitter"], "auditlogd");
    assert_eq!(executed["event"]["action"], "execute");
    assert_eq!(executed["event"]["details"]["op"], "add_admin");
    assert!(!executed.to_string().contains(&dave));
    // A malformed hash is refused when requested.
    let r = admin_call(
        &d,
        "POST",
        "/v1/admin/requests",
        &bob,
        Some(serde_json::json!({"op": "add_admin", "name": "eve", "token_sha256": "00"})),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // Offline changes: a writer added and bob revoked on the host; the next start records
    // both (and not dave again), and bob's token is refused.
    d.stop();
    let svc = tokens_cmd(dir.path(), &["add", "--role", "writer", "--name", "svc"]);
    assert!(
        svc.status.success(),
        "{}",
        String::from_utf8_lossy(&svc.stderr)
    );
    let revoke = tokens_cmd(dir.path(), &["revoke", "--name", "bob"]);
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let mut config = String::from_utf8(config).expect("utf-8");
    config.push_str("\n[admin]\napprovals_required = 2\n");
    let d = Daemon::start_with(dir.path(), &config);
    let start = last_start(&d);
    assert_eq!(
        start["configuration_file"]["sha256"],
        hex::encode(sha2::Sha256::digest(config.as_bytes())),
        "the changed file's digest"
    );
    assert_eq!(start["auth"]["approvals_required"], 2);
    let changes: Vec<(String, String)> = start["token_changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["action"].as_str().expect("action").to_string(),
                c["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("token_revoked".to_string(), "bob".to_string()),
            ("token_added".to_string(), "svc".to_string()),
        ]
    );
    assert_eq!(
        admin_call(&d, "GET", "/v1/admin/requests", &bob, None).status,
        401
    );
    assert_eq!(
        admin_call(&d, "GET", "/v1/admin/requests", &dave, None).status,
        200
    );
}

#[test]
fn auth_matrix() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let (key, _, _) = d.log();
    receipts(&d.post("application/json", &event(1, 300)));
    d.checkpoint(1, &key);
    let ev = event(2, 300);
    let routes: Vec<Route> = vec![
        ("POST", "/v1/events", Some(&ev), Some(&["writer"])),
        ("GET", "/v1/events/0", None, Some(&["reader", "auditor"])),
        (
            "GET",
            "/v1/events?start=0&end=1",
            None,
            Some(&["reader", "auditor"]),
        ),
        (
            "GET",
            "/v1/search?actor=user-1",
            None,
            Some(&["reader", "auditor"]),
        ),
        ("GET", "/v1/checkpoint", None, Some(&["auditor"])),
        (
            "GET",
            "/v1/proof/inclusion?index=0&size=1",
            None,
            Some(&["auditor"]),
        ),
        (
            "GET",
            "/v1/proof/consistency?from=1&to=1",
            None,
            Some(&["auditor"]),
        ),
        ("GET", "/v1/log", None, Some(&["auditor"])),
        ("GET", "/health", None, None),
        ("GET", "/ready", None, None),
        ("GET", "/metrics", None, None),
    ];
    for (method, path, body, allowed) in routes {
        let body = body.map(|b| ("application/json", b));
        let mut cases: Vec<(String, Option<String>, u16)> = Vec::new();
        let open = allowed.is_none();
        cases.push(("none".into(), None, if open { 200 } else { 401 }));
        cases.push((
            "wrong".into(),
            Some("not-a-token".into()),
            if open { 200 } else { 401 },
        ));
        for role in ["writer", "reader", "auditor", "admin"] {
            let ok = allowed.is_none_or(|a| role == "admin" || a.contains(&role));
            cases.push((role.into(), Some(d.token(role)), if ok { 200 } else { 403 }));
        }
        for (who, token, want) in cases {
            let r = d.call(method, path, token.as_deref(), body);
            assert_eq!(r.status, want, "{method} {path} as {who}: {}", r.text());
            if want != 200 {
                let v = r.json();
                assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string());
            }
        }
    }
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    receipts(&d.post("application/json", &event(1, 300)));
    let (_, _, size) = d.log();
    assert_eq!(size, d.first + 1);

    let good = event(2, 300);
    let mut mixed = good.clone();
    mixed.extend_from_slice(b"\n{\"not\": \"an audit event\"\n");
    let mut bad_utf8 = good.clone();
    let at = bad_utf8.len() - 4;
    bad_utf8[at] = 0xff;
    let oversized_body: Vec<u8> = std::iter::repeat_n(b'x', BODY_BYTES_MAX + 100_000).collect();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"a\":".to_vec(),
            400,
            "event 0",
        ),
        (
            "invalid UTF-8",
            "application/json",
            bad_utf8,
            400,
            "event 0",
        ),
        (
            "not an object",
            "application/json",
            b"[1,2,3]".to_vec(),
            400,
            "event 0",
        ),
        ("a bad line", "application/x-ndjson", mixed, 400, "event 1"),
        ("empty", "application/x-ndjson", b"\n\n".to_vec(), 400, ""),
        (
            "oversized event",
            "application/json",
            event(3, 70_000),
            400,
            "event 0",
        ),
        (
            "oversized body",
            "application/x-ndjson",
            oversized_body,
            413,
            "",
        ),
        ("wrong type", "text/plain", good.clone(), 415, ""),
    ];
    for (what, ct, body, want, names) in cases {
        let r = d.post(ct, &body);
        assert_eq!(r.status, want, "{what}: {}", r.text());
        assert!(r.content_type.starts_with("application/json"), "{what}");
        let v = r.json();
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(v["error"]["code"].is_string(), "{what}");
        assert!(msg.contains(names), "{what}: {msg}");
        assert_eq!(d.log().2, size, "{what}: nothing stored");
        assert_eq!(d.call("GET", "/health", None, None).status, 200);
    }
    for (path, want) in [
        ("/v1/events/5", 404),
        ("/v1/events/x", 400),
        ("/v1/events?start=0&end=5000", 400),
        ("/v1/proof/inclusion?index=0", 400),
        ("/v1/proof/inclusion?leaf_hash=00&size=1", 400),
        (
            "/v1/proof/inclusion?leaf_hash=0000000000000000000000000000000000000000000000000000000000000000&size=0",
            404,
        ),
        ("/v1/proof/inclusion?index=0&size=99", 400),
        ("/v1/nope", 404),
    ] {
        let r = d.get(path, "admin");
        assert_eq!(r.status, want, "{path}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string(), "{path}");
    }
    let r = d.call("DELETE", "/v1/events/0", Some(&d.token("admin")), None);
    assert_eq!(r.status, 405);
    assert!(r.json()["error"]["code"].is_string());
    // A long poll for a size the log has not reached answers 503 once its wait is over.
    let t = Instant::now();
    let r = d.get("/v1/checkpoint?min_size=1000&wait_ms=300", "auditor");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Still serving, and what it holds is what was acknowledged.
    let r = d.get(&format!("/v1/events/{}", d.first), "reader");
    let want: Value = serde_json::from_slice(&event(1, 300)).expect("JSON");
    assert_eq!(r.json()["event"], want);
}

#[test]
fn concurrent_ingest_is_all_or_429_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = CONFIG.replace("[engine]\n", "[engine]\nqueue_submissions_max = 1\n");
    let d = Daemon::start_with(dir.path(), &config);
    let (threads, posts, per_post) = (8u64, 20u64, 5u64);
    let results: Vec<(u16, Vec<u64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let d = &d;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for p in 0..posts {
                        let mut body = Vec::new();
                        for k in 0..per_post {
                            body.extend_from_slice(&event((t * posts + p) * per_post + k, 500));
                            body.push(b'\n');
                        }
                        let r = d.post("application/x-ndjson", &body);
                        match r.status {
                            200 => out.push((200, receipts(&r).iter().map(|x| x.0).collect())),
                            429 => {
                                // The queue, or this writer's share of it (a quarter of a
                                // queue of one is one).
                                let code = r.json()["error"]["code"].clone();
                                assert!(
                                    code == "queue_full" || code == "queue_share_full",
                                    "{code}"
                                );
                                out.push((429, Vec::new()));
                            }
                            other => panic!("status {other}: {}", r.text()),
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut indices: Vec<u64> = results.iter().flat_map(|r| r.1.clone()).collect();
    let accepted = results.iter().filter(|r| r.0 == 200).count() as u64;
    eprintln!(
        "{accepted} of {} requests accepted, the rest 429",
        results.len()
    );
    for (_, idx) in &results {
        // One request's events are contiguous: one batch.
        assert!(idx.windows(2).all(|w| w[1] == w[0] + 1), "{idx:?}");
    }
    indices.sort_unstable();
    let size = d.log().2;
    assert_eq!(
        size,
        d.first + accepted * per_post,
        "refused requests stored nothing"
    );
    assert_eq!(
        indices,
        (d.first..size).collect::<Vec<_>>(),
        "no index lost or repeated"
    );
    let metrics = d.call("GET", "/metrics", None, None).text();
    assert!(
        metrics.contains(&format!("auditlog_tree_size {size}")),
        "{metrics}"
    );
}

// ---- TCP ingest (FORMATS.md §12.1) ----

mod tcp {
    use super::*;
    use auditlog_client::tcp::{Outcome, TcpError, TcpIngest};
    use auditlog_formats::frame::{self, ErrorCode, FrameHeader, FrameType, FRAME_HEADER_BYTES};
    use std::io::Write;
    use std::net::TcpStream;

    fn read_frame(s: &mut TcpStream) -> Option<(FrameHeader, Vec<u8>)> {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        s.read_exact(&mut h).ok()?;
        let h = FrameHeader::decode(&h, 64 << 20).ok()?;
        let mut p = vec![0u8; h.payload_bytes as usize];
        s.read_exact(&mut p).ok()?;
        Some((h, p))
    }

    fn raw_hello(d: &Daemon, role: &str) -> TcpStream {
        let mut s = TcpStream::connect(&d.tcp_addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(&frame::frame(
            FrameType::Hello,
            0,
            &frame::hello_payload(&d.token(role)),
        ))
        .expect("hello");
        let (h, _) = read_frame(&mut s).expect("HELLO_OK");
        assert_eq!(h.frame_type, FrameType::HelloOk);
        s
    }

    /// The server's answer on a raw connection, then whether it closed.
    fn error_then_close(s: &mut TcpStream) -> (ErrorCode, String, bool) {
        let (h, p) = read_frame(s).expect("an ERROR frame");
        assert_eq!(h.frame_type, FrameType::Error);
        let (code, msg) = frame::decode_error(&p).expect("error payload");
        let mut one = [0u8; 1];
        let closed = matches!(s.read(&mut one), Ok(0));
        (code.expect("known code"), msg, closed)
    }

    #[test]
    fn pipelined_batches_are_acked_in_order_and_prove() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Daemon::start(dir.path());
        let mut c = TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(30))
            .expect("connect");
        assert!(c.server_limits().batches_in_flight_max >= 2);
        let batches: Vec<Vec<Vec<u8>>> = (0..40u64)
            .map(|b| (0..100u64).map(|i| event(b * 1000 + i, 256)).collect())
            .collect();
        let mut outcomes = Vec::new();
        for b in &batches {
            let (_, done) = c.send(b.iter().map(|e| e.as_slice())).expect("send");
            outcomes.extend(done);
            assert!(c.in_flight() as u32 <= c.server_limits().batches_in_flight_max);
        }
        outcomes.extend(c.drain().expect("drain"));
        assert_eq!(outcomes.len(), 40);
        let (key, alg, _) = d.log();
        // Who the server records for this connection: the token's holder.
        let submitter = c.server_limits().submitter.clone();
        assert_eq!(submitter.as_deref(), Some("token:writer"));
        let mut next = None;
        let mut all = Vec::new();
        for (k, (id, o)) in outcomes.into_iter().enumerate() {
            assert_eq!(id, k as u32 + 1, "acks come in send order");
            let Outcome::Acked(a) = o else {
                panic!("batch {k} refused: {o:?}")
            };
            if let Some(n) = next {
                assert_eq!(a.first_index, n, "one connection's batches are contiguous");
            }
            next = Some(a.first_index + a.leaf_hashes.len() as u64);
            for (i, leaf) in a.leaf_hashes.iter().enumerate() {
                // The client recomputes its leaf hash from its bytes and the receipt alone.
                let rec = Record {
                    received_at_unix_ns: a.received_at_unix_ns,
                    submitter: submitter.as_deref(),
                    kind: auditlog_formats::record::PayloadKind::Event,
                    payload: &batches[k][i],
                }
                .to_bytes();
                assert_eq!(alg.leaf(&rec), *leaf);
                all.push((a.first_index + i as u64, *leaf));
            }
        }
        let size = next.expect("acked");
        let cp = d.checkpoint(size, &key);
        for &(index, leaf) in all.iter().step_by(391) {
            check_inclusion(&d, alg, &cp, index, &leaf);
            let r = d.get(&format!("/v1/events/{index}?format=record"), "reader");
            assert_eq!(alg.leaf(&r.body), leaf, "HTTP serves what TCP stored");
        }
    }

    /// A writer that keeps sending batches but never reads its acknowledgements fills the
    /// socket's buffers; the server's write then makes no progress, and after
    /// `tcp_write_timeout_ms` the connection is cut and its slot given back (without the
    /// timeout it held the slot for good: the idle timeout covers reads only).
    #[test]
    fn a_writer_that_stops_reading_acks_is_cut() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = format!("{CONFIG}tcp_write_timeout_ms = 1000\n");
        let d = Daemon::start_with(dir.path(), &config);
        let gauge = || {
            let text = d.call("GET", "/metrics", None, None).text();
            auditlog_tests::metric_value(&text, "auditlog_tcp_connections")
                .expect("auditlog_tcp_connections")
        };
        let mut s = std::net::TcpStream::connect(&d.tcp_addr).expect("connect");
        let hello = frame::frame(
            FrameType::Hello,
            0,
            &frame::hello_payload(&d.token("writer")),
        );
        s.write_all(&hello).expect("hello");
        let writer = std::thread::spawn(move || {
            let mut sent = 0u32;
            // Until the server stops reading (or cuts the connection); acks are never read.
            for id in 1..=4_000u32 {
                let mut p = vec![0u8; 4];
                for i in 0..500u64 {
                    frame::push_batch_event(&mut p, &event(u64::from(id) * 1000 + i, 100));
                }
                if s.write_all(&frame::frame(FrameType::Batch, id, &p))
                    .is_err()
                {
                    break;
                }
                sent = id;
            }
            (sent, s)
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while gauge() == 0 {
            assert!(Instant::now() < deadline, "the connection never opened");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Cut within the write timeout once the buffers are full, the client still silent.
        let deadline = Instant::now() + Duration::from_secs(60);
        while gauge() != 0 {
            assert!(
                Instant::now() < deadline,
                "a writer that reads no acks still holds its connection"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (sent, _socket) = writer.join().expect("writer");
        assert!(sent > 0);
        // The daemon serves on.
        let mut c = TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(10))
            .expect("connect");
        let one = event(1, 100);
        c.send(std::iter::once(one.as_slice())).expect("send");
        assert!(matches!(c.drain().expect("ack")[0].1, Outcome::Acked(_)));
    }

    #[test]
    fn refusals_are_clear_and_nothing_is_stored() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = format!("{CONFIG}tcp_hello_timeout_ms = 300\ntcp_frame_bytes_max = 70000\n");
        let d = Daemon::start_with(dir.path(), &config);
        // Client events only: the daemon's own start event is not counted.
        let size = || d.log().2 - d.first;

        // Wrong token; a role that may not ingest.
        match TcpIngest::connect(&d.tcp_addr, "not-a-token", Duration::from_secs(10)) {
            Err(TcpError::Refused {
                code: Some(ErrorCode::Unauthorized),
                ..
            }) => {}
            other => panic!("wrong token: {:?}", other.err()),
        }
        match TcpIngest::connect(&d.tcp_addr, &d.token("reader"), Duration::from_secs(10)) {
            Err(TcpError::Refused {
                code: Some(ErrorCode::Forbidden),
                ..
            }) => {}
            other => panic!("reader token: {:?}", other.err()),
        }

        // A bad event refuses its whole batch, names it, and the connection goes on.
        let mut c = TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(10))
            .expect("connect");
        let good = event(1, 256);
        let bad: &[&[u8]] = &[&good, b"[1,2]"];
        c.send(bad.iter().copied()).expect("send");
        match c.recv().expect("reply") {
            (
                _,
                Outcome::Refused {
                    code: Some(ErrorCode::BadEvent),
                    message,
                },
            ) => {
                assert!(message.contains("event 1"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(size(), 0, "nothing of a refused batch is stored");
        c.send([good.as_slice()]).expect("send");
        assert!(matches!(c.recv().expect("reply").1, Outcome::Acked(_)));
        assert_eq!(size(), 1);

        // Unknown frame type: ERROR, then the server closes.
        let mut s = raw_hello(&d, "writer");
        let mut f = frame::frame(FrameType::Batch, 1, &[0, 0, 0, 0]);
        f[0] = 0x42;
        s.write_all(&f).expect("write");
        let (code, _, closed) = error_then_close(&mut s);
        assert_eq!(code, ErrorCode::BadFrame);
        assert!(closed);

        // A frame larger than the limit is refused from its header alone.
        let mut s = raw_hello(&d, "writer");
        let h = FrameHeader {
            frame_type: FrameType::Batch,
            request_id: 1,
            payload_bytes: 1 << 30,
        }
        .encode();
        s.write_all(&h).expect("write");
        let (code, msg, closed) = error_then_close(&mut s);
        assert_eq!(code, ErrorCode::TooLarge, "{msg}");
        assert!(closed);

        // A malformed batch payload (count says 3, holds 1).
        let mut s = raw_hello(&d, "writer");
        let mut p = vec![0u8; 4];
        frame::push_batch_event(&mut p, &good);
        p[3] = 3;
        s.write_all(&frame::frame(FrameType::Batch, 9, &p))
            .expect("write");
        let (h, payload) = read_frame(&mut s).expect("reply");
        assert_eq!((h.frame_type, h.request_id), (FrameType::Error, 9));
        assert_eq!(
            frame::decode_error(&payload).expect("error").0,
            Some(ErrorCode::BadFrame)
        );

        // A truncated frame, then the client goes away; and a client that never says HELLO.
        let mut s = raw_hello(&d, "writer");
        s.write_all(&frame::frame(FrameType::Batch, 1, &p)[..20])
            .expect("write");
        drop(s);
        let mut silent = TcpStream::connect(&d.tcp_addr).expect("connect");
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (code, msg, closed) = error_then_close(&mut silent);
        assert_eq!(code, ErrorCode::BadFrame, "{msg}");
        assert!(msg.contains("HELLO") && closed, "{msg}");

        // Through all of it the daemon kept serving, and stored only the one good event.
        let mut c = TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(10))
            .expect("connect");
        c.send([event(2, 256).as_slice()]).expect("send");
        assert!(matches!(c.recv().expect("reply").1, Outcome::Acked(_)));
        assert_eq!(size(), 2);
    }
}

// ---- Limits: slow clients, connection counts, back-pressure ----

mod limits {
    use super::*;
    use auditlog_client::tcp::{Outcome, TcpIngest};
    use auditlog_tests::daemon::connect_from;
    use std::io::Write;
    use std::net::TcpStream;

    const LIMITS: &str = r#"
[engine]
queue_submissions_max = 8
submission_bytes_max = 1048576
batch_bytes_max = 1048576
segment_bytes = 16777216
checkpoint_interval_ms = 50

[server]
connections_max = 4
request_timeout_ms = 1500
long_poll_ms_max = 1000
http_header_read_timeout_ms = 1000
tcp_connections_max = 2
tcp_batches_in_flight_max = 4
tcp_frame_bytes_max = 1048576
"#;

    /// 600 checkpoint long-polls by one auditor hold no thread: a writer's POST (which
    /// validates on the blocking pool) is stored at once while they wait; past
    /// long_polls_per_principal_max one principal is refused with 429 at once while another
    /// principal still long-polls; and a long-poll is answered when its checkpoint comes.
    #[test]
    fn long_polls_hold_no_thread_and_are_capped_per_principal() {
        let dir = tempfile::tempdir().expect("tmp");
        // Long enough that none of the 600 expires while a loaded machine admits them all.
        let config = CONFIG
            .replace("long_poll_ms_max = 10000", "long_poll_ms_max = 100000")
            .replace("request_timeout_ms = 20000", "request_timeout_ms = 120000")
            .replace(
                "[server]\n",
                "[server]\nconnections_max = 2000\nhttp_connections_per_source_max = 2000\nlong_polls_max = 1500\nlong_polls_per_principal_max = 600\n",
            );
        let d = Daemon::start_with(dir.path(), &config);
        let addr = d.base.trim_start_matches("http://").to_string();
        let far = d.first + 1_000_000;
        let poll = |token: &str| {
            format!(
                "GET /v1/checkpoint?min_size={far}&wait_ms=100000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
        };
        let auditor = poll(&d.token("auditor"));
        let mut held = Vec::new();
        for _ in 0..600 {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(auditor.as_bytes()).expect("long-poll");
            held.push(s);
        }
        // Once every one of them waits (the gauge says so), the 601st by the same principal
        // is refused at once.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d
            .call("GET", "/metrics", None, None)
            .text()
            .contains("auditlog_http_long_polls 600\n")
        {
            assert!(
                Instant::now() < deadline,
                "the 600 long-polls never all waited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let refused = d.get(
            &format!("/v1/checkpoint?min_size={far}&wait_ms=1"),
            "auditor",
        );
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert!(
            refused.text().contains("too_many_long_polls"),
            "{}",
            refused.text()
        );
        // A writer is served at once meanwhile (its validation runs on the blocking pool,
        // which the long-polls used to fill).
        let started = Instant::now();
        let r = d.post("application/json", &event(1, 300));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a POST took {:?} behind 600 long-polls",
            started.elapsed()
        );
        // Another principal still long-polls, and is answered when its checkpoint comes.
        let size = d.log().2;
        let r = d.get(
            &format!("/v1/checkpoint?min_size={size}&wait_ms=10000"),
            "admin",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains(&format!("\n{size}\n")), "{}", r.text());
        drop(held);
    }

    /// Exports and ranges take a streamed-read slot for as long as they stream: two exports
    /// by one reader that never read hold theirs, a third by the same principal is refused
    /// with 429 at once while another principal exports, and a slot comes back when its
    /// client goes away.
    #[test]
    fn streamed_reads_are_capped_per_principal() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = CONFIG.replace(
            "[server]\n",
            "[server]\nstreamed_reads_per_principal_max = 2\nhttp_write_timeout_ms = 60000\n",
        );
        let d = Daemon::start_with(dir.path(), &config);
        // Far more than the export's chunks in flight and the socket buffers hold.
        let mut n = 0;
        while n < 24_000 {
            let body: Vec<u8> = (n..n + 400)
                .flat_map(|i| [event(i, 1000), b"\n".to_vec()].concat())
                .collect();
            assert_eq!(d.post("application/x-ndjson", &body).status, 200);
            n += 400;
        }
        let addr = d.base.trim_start_matches("http://").to_string();
        let export = format!(
            "GET /v1/export?format=json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            d.token("reader")
        );
        let held: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.write_all(export.as_bytes()).expect("export");
                s
            })
            .collect();
        // Both stream (and hold their slots) before anything else is asked: a read sent
        // before the second took its slot could leave that one refused instead.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d
            .call("GET", "/metrics", None, None)
            .text()
            .contains("auditlog_http_streamed_reads 2\n")
        {
            assert!(
                Instant::now() < deadline,
                "the two exports never both streamed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let refused = d.get("/v1/events?start=0&end=1", "reader");
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert!(
            refused.text().contains("too_many_streamed_reads"),
            "{}",
            refused.text()
        );
        // Another principal streams meanwhile.
        let r = d.get("/v1/events?start=0&end=10", "auditor");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text().lines().count(), 10);
        // One client goes away: its slot comes back.
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.get("/v1/events?start=0&end=1", "reader").status != 200 {
            assert!(Instant::now() < deadline, "the slots did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Request bodies share one memory budget: two stalled uploads that declared 512 KiB
    /// each hold a 1 MiB budget, so a third request is answered 503 with Retry-After at
    /// once (not queued, nothing stored); when one upload goes, its share comes back.
    #[test]
    fn request_bodies_share_one_byte_budget() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = CONFIG.replace(
            "[server]\n",
            "[server]\nrequest_bytes_in_flight_max = 1048576\nhttp_body_read_timeout_ms = 30000\n",
        );
        let d = Daemon::start_with(dir.path(), &config);
        let addr = d.base.trim_start_matches("http://").to_string();
        let stalled = || {
            let mut s = TcpStream::connect(&addr).expect("connect");
            let head = format!(
                "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {BODY_BYTES_MAX}\r\n\r\n",
                d.token("writer")
            );
            s.write_all(head.as_bytes()).expect("head");
            s.write_all(&event(9, 300)).expect("part of the body");
            s
        };
        let first = stalled();
        let _second = stalled();
        // Both are being read, and hold their shares (nothing else is in flight: a request
        // sent before they took theirs could leave the second short of its share).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d
            .call("GET", "/metrics", None, None)
            .text()
            .contains("auditlog_http_request_bytes_in_flight 1048576\n")
        {
            assert!(
                Instant::now() < deadline,
                "the stalled uploads never held the budget"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let refused = d.post("application/json", &event(1, 300));
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert!(
            refused.text().contains("request_bytes_in_flight_max"),
            "{}",
            refused.text()
        );
        let size = d.log().2;
        let r = d.post("application/json", &event(2, 300));
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(d.log().2, size, "nothing of a refused request is stored");
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.post("application/json", &event(3, 300)).status != 200 {
            assert!(Instant::now() < deadline, "the share did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rss_kib(pid: u32) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// A client that sends half a body and stalls gets 503 at the request deadline, holds
    /// one connection slot until then, stores nothing, and everyone else is served meanwhile.
    #[test]
    fn slow_client_times_out_and_others_are_served() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Daemon::start_with(dir.path(), LIMITS);
        let addr = d.base.trim_start_matches("http://").to_string();
        let mut slow = TcpStream::connect(&addr).expect("connect");
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n",
            d.token("writer")
        );
        slow.write_all(head.as_bytes()).expect("head");
        slow.write_all(&event(999, 300)).expect("part of the body");
        let started = Instant::now();
        for i in 0..5 {
            assert_eq!(d.post("application/json", &event(i, 200)).status, 200);
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "served while the slow client stalls"
        );
        let mut answer = Vec::new();
        let _ = slow.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 503"),
            "the slow request times out: {answer}"
        );
        assert!(answer.contains("\"timeout\""), "{answer}");
        let (_, _, size) = d.log();
        assert_eq!(
            size,
            d.first + 5,
            "nothing of the stalled request is stored"
        );
    }

    /// Past `connections_max`, an HTTP connection is answered 503 with `Retry-After` at once
    /// (never queued behind the open ones), the probes on the ops listener answer all the
    /// while, and connections that send nothing are cut after the header-read timeout;
    /// past `tcp_connections_max`, TCP ingest answers ERROR busy and closes.
    #[test]
    fn connection_limits_hold() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Daemon::start_with(dir.path(), LIMITS);
        let addr = d.base.trim_start_matches("http://").to_string();
        let mut idle: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(&addr).expect("connect"))
            .collect();
        let quick = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(700))
            .build();
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let mut fifth = TcpStream::connect(&addr).expect("connect");
            fifth
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut answer = Vec::new();
            let _ = fifth.read_to_end(&mut answer);
            let answer = String::from_utf8_lossy(&answer).to_string();
            // Until the four are accepted, the fifth may still get one of their slots.
            if answer.starts_with("HTTP/1.1 503") || Instant::now() > deadline {
                break answer;
            }
        };
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("Retry-After: 1"), "{answer}");
        quick
            .get(&format!("{}/health", d.ops_base))
            .call()
            .expect("the ops listener answers while the API listener is full");
        // The four never sent a byte: cut after the header-read timeout (1 s here).
        for s in &mut idle {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            // Read to the end (a busy answer may come first, if this one was shed).
            let started = Instant::now();
            let mut rest = Vec::new();
            let r = s.read_to_end(&mut rest);
            assert!(
                r.is_ok() || started.elapsed() < Duration::from_secs(4),
                "an idle connection is closed: {r:?} {}",
                String::from_utf8_lossy(&rest)
            );
            assert!(started.elapsed() < Duration::from_secs(4));
        }
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(10);
        while quick.get(&format!("{}/health", d.base)).call().is_err() {
            assert!(Instant::now() < deadline, "served once slots free up");
            std::thread::sleep(Duration::from_millis(50));
        }

        let a = tcp_hello(&d);
        let b = tcp_hello(&d);
        let mut c = TcpStream::connect(&d.tcp_addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut h = [0u8; auditlog_formats::frame::FRAME_HEADER_BYTES];
        c.read_exact(&mut h).expect("an answer");
        let h = auditlog_formats::frame::FrameHeader::decode(&h, 1 << 20).expect("header");
        let mut p = vec![0u8; h.payload_bytes as usize];
        c.read_exact(&mut p).expect("payload");
        let (code, msg) = auditlog_formats::frame::decode_error(&p).expect("ERROR");
        assert_eq!(
            code,
            Some(auditlog_formats::frame::ErrorCode::Busy),
            "{msg}"
        );
        let mut one = [0u8; 1];
        assert!(matches!(c.read(&mut one), Ok(0)), "then closed");
        drop(a);
        // The daemon frees the slot once it sees the close.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut again = loop {
            match TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) => assert!(Instant::now() < deadline, "a slot is free again: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (_, _) = again.send([event(1, 200).as_slice()]).expect("send");
        assert!(matches!(
            again.drain().expect("ack")[0].1,
            Outcome::Acked(_)
        ));
        drop(b);
    }

    const FLOOD: &str = r#"
[engine]
submission_bytes_max = 131072
batch_bytes_max = 131072
segment_bytes = 1048576
checkpoint_interval_ms = 50

[server]
connections_max = 128
http_connections_per_source_max = 32
http_header_read_timeout_ms = 1500
http_write_timeout_ms = 1500
request_timeout_ms = 20000
long_poll_ms_max = 10000
ops_connections_max = 16
tcp_connections_max = 64
tcp_connections_per_source_max = 16
tcp_hello_timeout_ms = 1500
tls_handshake_timeout_ms = 1500
"#;

    /// The attack from an address of its own: 2,000 sockets on the API port that send half
    /// a request line, 2,000 silent ones on the TCP ingest port, 500 on the ops port, and
    /// clients that stop reading a large export. Meanwhile a writer from another address
    /// posts over HTTP and TCP and every receipt is honoured, and `/health` on the ops port
    /// answers; every attack connection is shed at once or cut within its timeout, and the
    /// daemon serves normally afterwards. (With `axum::serve` and no header-read timeout,
    /// the accept loop stopped at `connections_max` and every route timed out.)
    #[test]
    fn a_flood_of_idle_sockets_freezes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Daemon::start_with(dir.path(), FLOOD);
        let api = d.base.trim_start_matches("http://").to_string();
        let ops = d.ops_base.trim_start_matches("http://").to_string();
        for i in 0..300 {
            assert_eq!(d.post("application/json", &event(i, 300)).status, 200);
        }
        let attacker = [127, 0, 0, 2];
        let mut sockets: Vec<TcpStream> = Vec::new();
        for _ in 0..2000 {
            if let Ok(mut s) = connect_from(attacker, &api) {
                let _ = s.write_all(b"GET /v1/log HTTP/1.1\r\nHo");
                sockets.push(s);
            }
        }
        for _ in 0..2000 {
            if let Ok(s) = connect_from(attacker, &d.tcp_addr) {
                sockets.push(s);
            }
        }
        for _ in 0..500 {
            if let Ok(s) = connect_from(attacker, &ops) {
                sockets.push(s);
            }
        }
        // Exports whose client never reads: the response write stalls and is cut.
        let export = format!(
            "GET /v1/export?format=json&start=0&end=300 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            d.token("reader")
        );
        for _ in 0..16 {
            if let Ok(mut s) = connect_from(attacker, &api) {
                let _ = s.write_all(export.as_bytes());
                sockets.push(s);
            }
        }
        let attack_started = Instant::now();
        assert!(sockets.len() > 4000, "{} attack sockets", sockets.len());

        // The writer and the prober, from 127.0.0.1, throughout.
        let quick = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let mut tcp = TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(5))
            .expect("a writer connects over TCP during the attack");
        for i in 0..20u64 {
            quick
                .get(&format!("{}/health", d.ops_base))
                .call()
                .expect("the probe answers during the attack");
            let r = d.post("application/json", &event(1000 + i, 300));
            assert_eq!(r.status, 200, "{}", r.text());
            tcp.send([event(2000 + i, 300).as_slice()]).expect("send");
            assert!(matches!(tcp.recv().expect("ack").1, Outcome::Acked(_)));
        }
        // Every attack connection is shed or cut within its timeout (1.5 s) and slack.
        for s in &mut sockets {
            let left = Duration::from_secs(8).saturating_sub(attack_started.elapsed());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue, // a 503, or the part of an export sent before the cut
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!(
                        "an attack connection still open after {:?}: {e}",
                        attack_started.elapsed()
                    ),
                }
            }
        }
        drop(sockets);
        let metrics = quick
            .get(&format!("{}/metrics", d.ops_base))
            .set("Authorization", &format!("Bearer {}", d.token("admin")))
            .call()
            .expect("metrics")
            .into_string()
            .expect("text");
        assert!(
            metrics.contains(
                "auditlog_http_connections_shed_total{listener=\"api\",reason=\"source\"}"
            ),
            "{metrics}"
        );
        // And afterwards, normal service.
        let r = d.post("application/json", &event(5000, 300));
        assert_eq!(r.status, 200);
        let (_, _, size) = d.log();
        assert_eq!(
            size,
            d.first + 300 + 20 + 20 + 1,
            "every acknowledged event is in the log"
        );
    }

    fn tcp_hello(d: &Daemon) -> TcpIngest {
        TcpIngest::connect(&d.tcp_addr, &d.token("writer"), Duration::from_secs(10))
            .expect("connect")
    }

    /// Two producers that never wait for acks, faster than the log can take: they are slowed
    /// by TCP flow control, the daemon's memory stays within what its limits allow, and
    /// every acknowledged event is in the log.
    #[test]
    fn back_pressure_bounds_memory() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Daemon::start_with(dir.path(), LIMITS);
        let before = rss_kib(d.pid());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let watcher = {
            let (stop, peak, p) = (stop.clone(), peak.clone(), d.pid());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(p), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let producers: Vec<_> = (0..2u64)
            .map(|k| {
                let (addr, token) = (d.tcp_addr.clone(), d.token("writer"));
                std::thread::spawn(move || {
                    let mut c = TcpIngest::connect(&addr, &token, Duration::from_secs(30))
                        .expect("connect");
                    // ~900 KiB batches: each fills most of one engine submission.
                    let batch: Vec<Vec<u8>> =
                        (0..3500).map(|i| event(k * 1_000_000 + i, 256)).collect();
                    let mut acked = 0u64;
                    let until = Instant::now() + Duration::from_secs(3);
                    let mut count = |o: Option<(u32, Outcome)>| {
                        if let Some((_, Outcome::Acked(a))) = o {
                            acked += a.leaf_hashes.len() as u64;
                        }
                    };
                    while Instant::now() < until {
                        let (_, done) = c.send(batch.iter().map(|e| e.as_slice())).expect("send");
                        count(done);
                    }
                    for o in c.drain().expect("drain") {
                        count(Some(o));
                    }
                    acked
                })
            })
            .collect();
        let acked: u64 = producers
            .into_iter()
            .map(|p| p.join().expect("producer"))
            .sum();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().expect("watcher");
        let grew_kib = peak.load(std::sync::atomic::Ordering::Relaxed) - before;
        // Allowed by the limits: 8 queued submissions of 1 MiB, 2 connections x 4 batches in
        // flight x 1 MiB, their validated copies, read buffers and the group-commit buffer;
        // well under 128 MiB. Unbounded buffering of 3 s of sending would be gigabytes.
        assert!(
            grew_kib < 128 * 1024,
            "daemon RSS grew by {grew_kib} KiB under back-pressure"
        );
        let (_, _, size) = d.log();
        assert!(acked > 0);
        assert_eq!(
            size,
            d.first + acked,
            "every acknowledged event is in the log, nothing else"
        );
    }
}

/// Every file under `dir`, recursively: its path, mode and bytes.
fn tree_snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("list") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("stat");
            let mode = m.permissions().mode();
            if m.is_dir() {
                out.push((p.clone(), mode, Vec::new()));
                todo.push(p);
            } else {
                out.push((p.clone(), mode, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// The data directory ends up 0700 (a group-readable one made beforehand is tightened) and
/// the files holding secrets 0600; an `initial-tokens` later opened to others stops the
/// next start with its path and mode named, and nothing in the directory changes.
#[test]
fn secret_files_are_private_and_an_open_one_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut d = Daemon::start(dir.path());
    d.stop();
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode();
    assert_eq!(mode(&data) & 0o777, 0o700, "data directory");
    for f in ["initial-tokens", "tokens.json", "keys/checkpoint.key"] {
        assert_eq!(mode(&data.join(f)) & 0o777, 0o600, "{f}");
    }

    let initial = data.join("initial-tokens");
    std::fs::set_permissions(&initial, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let before = tree_snapshot(&data);
    let mut child = Daemon::launch(dir.path())
        .command()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn auditlogd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("auditlogd started with a group- and world-readable initial-tokens");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&initial.display().to_string()) && stderr.contains("0644"),
        "the refusal names the file and its mode: {stderr}"
    );
    assert_eq!(
        tree_snapshot(&data),
        before,
        "the refused start changed the data directory"
    );
}

/// `GET /v1/proof/window`: the records received in `[since, until)` are one index range,
/// returned with the records just outside it and their inclusion proofs, which verify
/// against the checkpoint at that size; bad times, `since > until`, a size past the newest
/// checkpoint and unknown parameters are refused with 400.
#[test]
fn a_time_window_is_an_index_range_with_proven_boundaries() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let (key, alg, _) = d.log();
    let group = |from: u64| -> Vec<(u64, u64)> {
        let body: Vec<u8> = (from..from + 10)
            .flat_map(|i| {
                let mut e = event(i, 100);
                e.push(b'\n');
                e
            })
            .collect();
        let r = d.post("application/x-ndjson", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["receipts"]
            .as_array()
            .expect("receipts")
            .iter()
            .map(|x| {
                (
                    x["index"].as_u64().expect("index"),
                    x["received_at_unix_ns"].as_u64().expect("time"),
                )
            })
            .collect()
    };
    let a = group(0);
    let b = group(10);
    let c = group(20);
    assert!(a[9].1 < b[0].1 && b[9].1 < c[0].1, "groups stamped apart");
    let size = d.tree_size();
    let cp = d.checkpoint(size, &key);
    let r = d.get(
        &format!(
            "/v1/proof/window?since={}&until={}&size={}",
            b[0].1, c[0].1, cp.size
        ),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let w = r.json();
    assert_eq!(
        (w["start"].as_u64(), w["end"].as_u64()),
        (Some(b[0].0), Some(c[0].0)),
        "{w}"
    );
    for (side, want_index) in [("before", a[9].0), ("after", c[0].0)] {
        let x = &w[side];
        assert_eq!(x["index"].as_u64(), Some(want_index), "{side}: {x}");
        use base64::Engine as _;
        let record = base64::engine::general_purpose::STANDARD
            .decode(x["record"].as_str().expect("record"))
            .expect("base64");
        let leaf = alg.leaf(&record);
        assert_eq!(
            Record::parse(&record).expect("record").received_at_unix_ns,
            x["received_at_unix_ns"].as_u64().expect("time")
        );
        let proof: Vec<[u8; 32]> = x["inclusion"]
            .as_array()
            .expect("proof")
            .iter()
            .map(|h| auditlog_tests::daemon::hex32(h.as_str().expect("hex")))
            .collect();
        tree::verify_inclusion(alg, want_index, cp.size, &leaf, &proof, &cp.root)
            .unwrap_or_else(|e| panic!("{side} boundary proof: {e}"));
    }
    // Every record of the window at once: their leaves and the one range proof give the
    // checkpoint's root; a record of the range altered does not.
    let mut range_leaves: Vec<[u8; 32]> = (b[0].0..c[0].0)
        .map(|i| {
            let r = d.get(&format!("/v1/events/{i}?format=record"), "auditor");
            assert_eq!(r.status, 200);
            alg.leaf(&r.body)
        })
        .collect();
    let range_proof: Vec<[u8; 32]> = w["range_proof"]
        .as_array()
        .expect("range proof")
        .iter()
        .map(|h| auditlog_tests::daemon::hex32(h.as_str().expect("hex")))
        .collect();
    tree::verify_range(
        alg,
        b[0].0,
        c[0].0,
        cp.size,
        &range_leaves,
        &range_proof,
        &cp.root,
    )
    .expect("the window's records are in the checkpointed tree");
    range_leaves[3][0] ^= 1;
    assert!(tree::verify_range(
        alg,
        b[0].0,
        c[0].0,
        cp.size,
        &range_leaves,
        &range_proof,
        &cp.root
    )
    .is_err());
    search_verifies_the_window_and_catches_a_lying_server(&d, &key, (b[0].1, c[0].1), &w);
    let before_t = w["before"]["received_at_unix_ns"].as_u64().expect("t");
    let after_t = w["after"]["received_at_unix_ns"].as_u64().expect("t");
    assert!(before_t < b[0].1 && after_t >= c[0].1);
    // RFC 3339 works too (to the millisecond): a window over everything so far.
    let r = d.get(
        "/v1/proof/window?since=2000-01-01T00:00:00Z&until=2200-01-01T00:00:00Z",
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["start"].as_u64(), Some(0));
    assert!(r.json()["before"].is_null());
    for bad in [
        format!("since={}&until={}", c[0].1, b[0].1),
        "since=yesterday&until=1".to_string(),
        format!("since=0&until=1&size={}", cp.size + 1000),
        "since=0&until=1&actor=x".to_string(),
        "until=1".to_string(),
    ] {
        let r = d.get(&format!("/v1/proof/window?{bad}"), "auditor");
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
}

/// `auditlog search --verify` over the window: every matching event, checked; and the
/// checks refuse an answer that leaves out, adds or alters one event of the window.
fn search_verifies_the_window_and_catches_a_lying_server(
    d: &Daemon,
    key: &auditlog_formats::note::VerifierKey,
    (since, until): (u64, u64),
    w: &Value,
) {
    use auditlog_client::search::{check_window, WindowAnswer};
    use base64::Engine as _;
    let out = auditlog_tests::daemon::client_command()
        .args(["--url", &d.base, "--token", &d.token("auditor")])
        .args([
            "search",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
        ])
        .args(["--verify", "--key", &key.to_string(), "--actor", "user-13"])
        .output()
        .expect("run auditlog search");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"]["actor"], "user-13");
    assert!(String::from_utf8_lossy(&out.stderr).contains("10 records, every one verified"));

    // The same checks, in process, on the honest answer and on lies about it.
    let (alg, size) = (TreeHash::Sha256, w["size"].as_u64().expect("size"));
    let (start, end) = (
        w["start"].as_u64().expect("s"),
        w["end"].as_u64().expect("e"),
    );
    let r = d.get(
        &format!("/v1/events?start={start}&end={end}&format=record"),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let records: Vec<Vec<u8>> = r
        .text()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("line");
            base64::engine::general_purpose::STANDARD
                .decode(v["record"].as_str().expect("record"))
                .expect("b64")
        })
        .collect();
    // The CLI reads them from the tlog-tiles entry bundles: the same bytes, the edges of
    // the bundles dropped (the window starts and ends inside one).
    let client = auditlog_client::http::HttpClient::new(
        &d.base,
        Some(&d.token("auditor")),
        &Default::default(),
    )
    .expect("client");
    assert!(start % 256 != 0 || end % 256 != 0);
    assert_eq!(
        client.entries(start, end, size).expect("bundles"),
        records,
        "the bundles hold the records exactly"
    );
    assert_eq!(
        client.entries(0, size, size).expect("all").len() as u64,
        size
    );
    let cp = d.checkpoint(size, key);
    assert_eq!(cp.size, size);
    let check = |window: &Value, records: &[Vec<u8>]| {
        check_window(
            alg,
            &WindowAnswer {
                since,
                until,
                size,
                root: cp.root,
                window,
                records,
            },
        )
    };
    check(w, &records).expect("the honest answer verifies");
    // One event left out.
    let mut fewer = records.clone();
    fewer.remove(4);
    assert!(check(w, &fewer).is_err(), "an event left out");
    // ... and the range shrunk to match: the record after is then inside the window.
    let mut shrunk = w.clone();
    shrunk["end"] = (end - 1).into();
    shrunk["after"] = json_boundary(d, end - 1, size);
    let e = check(&shrunk, &records[..records.len() - 1]).expect_err("a shrunk window");
    assert!(e.to_string().contains("inside the window"), "{e:#}");
    // One event added (a forged record), or one altered.
    let mut more = records.clone();
    more.insert(3, records[3].clone());
    assert!(check(w, &more).is_err(), "an event added");
    let mut altered = records.clone();
    let n = altered[5].len();
    altered[5][n - 3] ^= 1;
    let e = check(w, &altered).expect_err("an event altered");
    assert!(e.to_string().contains("records"), "{e:#}");
}

/// A boundary as the window endpoint gives it, for record `index` at `size`.
fn json_boundary(d: &Daemon, index: u64, size: u64) -> Value {
    use base64::Engine as _;
    let r = d.get(&format!("/v1/events/{index}?format=record"), "auditor");
    let rec = r.body.clone();
    let p = d.get(
        &format!("/v1/proof/inclusion?index={index}&size={size}"),
        "auditor",
    );
    assert_eq!(p.status, 200, "{}", p.text());
    serde_json::json!({
        "index": index,
        "received_at_unix_ns": Record::parse(&rec).expect("record").received_at_unix_ns,
        "record": base64::engine::general_purpose::STANDARD.encode(&rec),
        "inclusion": p.json()["hashes"].clone(),
    })
}

/// `GET /v1/search`: the matching events in index order with index and leaf hash, pages
/// that follow cursors to exactly the full answer, prefixes, CSV, the CLI through it; and
/// every bad input refused with 400 and its reason, before anything is read.
#[test]
fn search_by_field_pages_with_cursors_and_refuses_bad_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let (key, alg, _) = d.log();
    let events: Vec<Vec<u8>> = (0..60u64)
        .map(|i| {
            format!(
                r#"{{"timestamp":"2026-11-23T10:{:02}:00Z","event_type":"auth","actor":"user-{}","action":"login","resource":"db/{}/row{i}","outcome":"success"}}"#,
                i % 60,
                i % 5,
                i % 3
            )
            .into_bytes()
        })
        .collect();
    // The daemon's own records come first: `at(i)` is event i's index.
    let first = d.post_events(&events)[0];
    let at = |i: u64| first + i;
    let size = d.tree_size();
    let cp = d.checkpoint(size, &key);
    let token = d.token("auditor");
    // The index's coverage and lag are metrics: the lag reaches 0 once it catches up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = d.call("GET", "/metrics", None, None).text();
        let value = |name: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse::<u64>().ok())
        };
        let indexed = value("auditlog_search_indexed").expect("the index's metric");
        if indexed >= size && value("auditlog_search_index_lag_records") == Some(0) {
            assert!(
                value("auditlog_search_index_bytes").is_some_and(|b| b > 0),
                "{m}"
            );
            assert!(
                value("auditlog_search_index_runs").is_some_and(|r| r > 0),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the index never caught up: {m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let get = |q: &str| -> (u16, Option<String>, String) {
        let r = ureq::get(&format!("{}/v1/search?{q}", d.base))
            .set("Authorization", &format!("Bearer {token}"))
            .call();
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{q}: {e}"),
        };
        let status = resp.status();
        let cursor = resp.header("auditlog-cursor").map(str::to_string);
        (status, cursor, resp.into_string().expect("body"))
    };
    let indexes = |body: &str| -> Vec<u64> {
        body.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json line");
                let leaf = auditlog_tests::daemon::hex32(v["leaf_hash"].as_str().expect("leaf"));
                let i = v["index"].as_u64().expect("index");
                d.prove(alg, &cp, i, &leaf);
                i
            })
            .collect()
    };
    let (status, cursor, body) = get("actor=user-2");
    assert_eq!((status, cursor), (200, None), "{body}");
    let want: Vec<u64> = (0..60).filter(|i| i % 5 == 2).map(at).collect();
    assert_eq!(indexes(&body), want);
    // Pages of 5 (cursors signed, then followed) give the same answer.
    let mut got = Vec::new();
    let mut q = "actor=user-2&limit=5".to_string();
    loop {
        let (status, cursor, body) = get(&q);
        assert_eq!(status, 200, "{body}");
        got.extend(indexes(&body));
        match cursor {
            Some(c) => q = format!("actor=user-2&limit=5&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(got, want);
    let (_, _, body) = get("resource=db/1/*&outcome=success");
    let want_prefix: Vec<u64> = (0..60).filter(|i| i % 3 == 1).map(at).collect();
    assert_eq!(indexes(&body), want_prefix);
    let (_, _, body) = get("resource=db/1/row4");
    assert_eq!(indexes(&body), [at(4)]);
    let (_, _, body) = get(
        "actor=user-0&timestamp_since=2026-11-23T10:10:00Z&timestamp_until=2026-11-23T10:20:00Z",
    );
    assert_eq!(indexes(&body), [at(10), at(15)]);
    let (status, _, body) = get("actor=user-1&format=csv");
    assert_eq!(status, 200);
    assert_eq!(body.lines().count(), 1 + 12, "header and rows: {body}");

    // The CLI goes through it, cursors and all.
    let out = auditlog_tests::daemon::client_command()
        .args(["--url", &d.base, "--token", &token])
        .args(["search", "--actor", "user-2", "--limit", "7"])
        .output()
        .expect("run auditlog search");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 7);

    // Bad input: 400 with its reason.
    let (_, c, _) = get("actor=user-2&limit=5");
    let c = c.expect("a cursor");
    let mut forged = c.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    for (q, reason) in [
        ("colour=red".to_string(), "unknown parameter"),
        ("since=yesterday".to_string(), "neither RFC 3339"),
        ("timestamp_until=soon".to_string(), "neither RFC 3339"),
        ("since=20&until=10".to_string(), "after until"),
        (
            "timestamp_since=20&timestamp_until=10".to_string(),
            "after timestamp_until",
        ),
        (
            format!("size={}", cp.size + 1),
            "beyond the newest checkpoint",
        ),
        ("limit=100000".to_string(), "search_limit_max"),
        ("limit=0".to_string(), "search_limit_max"),
        ("actor=user-2&cursor=xyz".to_string(), "cursor"),
        (format!("actor=user-2&limit=5&cursor={forged}"), "cursor"),
        (format!("actor=user-3&limit=5&cursor={c}"), "cursor"),
        (
            format!("actor=user-2&limit=5&since=0&until=1&cursor={c}"),
            "cursor",
        ),
        ("format=xml".to_string(), "format"),
    ] {
        let (status, _, body) = get(&q);
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(reason), "{q}: {body}");
    }
}
