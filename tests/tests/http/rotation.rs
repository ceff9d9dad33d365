//! Key rotation on a schedule (issue 22 §2, `server/src/rotation.rs`): an overdue key is
//! reported and its rotation filed for admins to approve; an approved policy rotates and
//! retires by itself; nothing adds a key the two-person rule did not allow. A key's age is
//! its `added_at_unix_ns` in `keys.json`, which these tests set in the past while the daemon
//! is stopped (the clock cannot be moved 90 days in a test).

use std::path::Path;

use auditlog_formats::keyhistory::KeyHistory;
use auditlog_formats::note::{self, VerifierKey};
use auditlog_tests::daemon::{add_token, age_keys, Daemon, CONFIG};
use auditlog_tests::wait_for;
use serde_json::{json, Value};

fn config() -> String {
    format!("{CONFIG}\n[admin]\napprovals_required = 1\nrotation_check_interval_ms = 100\n")
}

fn history(data: &Path) -> KeyHistory {
    let bytes = std::fs::read(data.join("keys.json")).expect("keys.json");
    KeyHistory::parse(&bytes).expect("a valid history").history
}

fn call(d: &Daemon, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(b).expect("json"));
    let r = d.call(
        method,
        path,
        Some(token),
        bytes.as_deref().map(|b| ("application/json", b)),
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn ready(d: &Daemon) -> Value {
    let r = d.call("GET", "/ready", None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The `admin` events in the log: (actor, action, outcome).
fn admin_events(d: &Daemon) -> Vec<(String, String, String)> {
    let size = d.tree_size();
    let r = d.get(&format!("/v1/events?start=0&end={size}"), "auditor");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"]["event_type"] == "admin")
        .map(|v| {
            let s = |k: &str| v["event"][k].as_str().unwrap_or("").to_string();
            (s("actor"), s("action"), s("outcome"))
        })
        .collect()
}

fn signed_by(d: &Daemon, keys: &[VerifierKey]) -> Vec<VerifierKey> {
    let size = d.tree_size();
    d.post_events(&[auditlog_tests::event(size, 0)]);
    let r = d.get(
        &format!("/v1/checkpoint?min_size={}&wait_ms=10000", size + 1),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    note::open_checkpoint(&r.text(), keys)
        .expect("the checkpoint opens")
        .1
        .verified
}

/// Without a policy, a key over `rotation_days_default` (90) is overdue: `/ready` says so
/// (and stays ready), the metric is 1, and the daemon makes the next key beside the old one
/// and files one rotate_key request, which it cannot approve itself. An admin's approval
/// adds the key, and the warning and the metric clear.
#[test]
fn an_overdue_key_is_reported_and_its_rotation_filed_for_approval() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut d = Daemon::start_with(dir.path(), &config());
    let old: VerifierKey = history(&data).keys[0].verifier_key.parse().expect("key");
    d.stop();
    age_keys(&data, 91);
    let d = Daemon::start_with(dir.path(), &config());
    let admin = d.token("admin");

    d.wait_metric("auditlog_signing_key_rotation_overdue", secs(10), |v| {
        v == 1
    });
    let warning = ready(&d)["warnings"][0].as_str().unwrap_or("").to_string();
    assert!(
        warning.contains(&old.to_string()) && warning.contains("91 days old"),
        "{warning}"
    );
    assert_eq!(d.metric("auditlog_signing_key_age_days"), Some(91));
    let filed = || {
        let (s, v) = call(&d, "GET", "/v1/admin/requests", &admin, None);
        assert_eq!(s, 200, "{v}");
        v["requests"].as_array().expect("requests").clone()
    };
    wait_for("the rotate_key request", 10, || !filed().is_empty());
    // Five checks later there is still one request.
    let checks = d
        .metric("auditlog_key_rotation_checks_total")
        .expect("checks");
    d.wait_metric("auditlog_key_rotation_checks_total", secs(10), |v| {
        v >= checks + 5
    });
    let reqs = filed();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let req = &reqs[0];
    assert_eq!(
        (
            req["op"].as_str(),
            req["requester"].as_str(),
            req["state"].as_str()
        ),
        (Some("rotate_key"), Some("auditlogd"), Some("pending"))
    );
    let path = req["backend"]["path"]
        .as_str()
        .expect("a key file")
        .to_string();
    assert!(path.starts_with("keys/checkpoint-"), "{path}");
    assert!(data.join(&path).exists(), "made beside the old key");
    assert_eq!(history(&data).keys.len(), 1, "filing adds no key");

    let id = req["id"].as_str().expect("id");
    let (s, v) = call(
        &d,
        "POST",
        &format!("/v1/admin/requests/{id}/approve"),
        &admin,
        None,
    );
    assert_eq!((s, v["state"].as_str()), (200, Some("executed")), "{v}");
    let h = history(&data);
    assert_eq!(h.keys.len(), 2);
    let new: VerifierKey = h.keys[1].verifier_key.parse().expect("key");
    d.wait_metric("auditlog_signing_key_rotation_overdue", secs(10), |v| {
        v == 0
    });
    assert!(ready(&d).get("warnings").is_none(), "{}", ready(&d));
    assert_eq!(signed_by(&d, &[old.clone(), new.clone()]), vec![old, new]);
    let events = admin_events(&d);
    for (actor, action) in [
        ("auditlogd", "request"),
        ("admin", "approve"),
        ("admin", "execute"),
    ] {
        assert!(
            events
                .iter()
                .any(|(a, b, o)| a == actor && b == action && o == "success"),
            "{actor} {action}: {events:?}"
        );
    }
}

/// An approved policy rotates a due key by itself (a new key file, added, both sign), and
/// after the overlap retires the old one (only the new one signs). Bad policies are refused
/// at once; one admin alone cannot set a policy.
#[test]
fn an_approved_policy_rotates_and_then_retires_on_schedule() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // A second admin, set up before the first start (later only by an add_admin request).
    let bob = add_token(&data, "admin", "bob");
    let mut d = Daemon::start_with(dir.path(), &config());
    let old: VerifierKey = history(&data).keys[0].verifier_key.parse().expect("key");
    d.stop();
    age_keys(&data, 30);
    let mut d = Daemon::start_with(dir.path(), &config());
    let alice = d.token("admin");
    d.wait_metric("auditlog_signing_key_age_days", secs(10), |v| v == 30);
    assert_eq!(
        d.metric("auditlog_signing_key_rotation_overdue"),
        Some(0),
        "30 < 90"
    );

    for (bad, status) in [
        (
            json!({"rotation_days": 0, "backend": {"type": "file", "dir": "keys"}}),
            400,
        ),
        (
            json!({"rotation_days": 20, "overlap_days": 20, "backend": {"type": "file", "dir": "keys"}}),
            400,
        ),
        (
            json!({"rotation_days": 20, "backend": {"type": "file", "dir": "../elsewhere"}}),
            400,
        ),
        (
            json!({"rotation_days": 20, "backend": {"type": "pkcs11", "module": "/tmp/evil.so", "token_label": "t"}}),
            422,
        ),
    ] {
        let op = json!({"op": "set_rotation_policy", "rotation": bad});
        let (s, v) = call(&d, "POST", "/v1/admin/requests", &alice, Some(&op));
        assert_eq!(s, status, "{op}: {v}");
    }
    let policy =
        json!({"rotation_days": 20, "overlap_days": 5, "backend": {"type": "file", "dir": "keys"}});
    let op = json!({"op": "set_rotation_policy", "rotation": policy});
    let (s, req) = call(&d, "POST", "/v1/admin/requests", &alice, Some(&op));
    assert_eq!(s, 201, "{req}");
    let approve = format!(
        "/v1/admin/requests/{}/approve",
        req["id"].as_str().expect("id")
    );
    let (s, v) = call(&d, "POST", &approve, &alice, None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("self_approval")),
        "{v}"
    );
    assert_eq!(
        history(&data).keys.len(),
        1,
        "nothing rotates on one admin's word"
    );
    let (s, v) = call(&d, "POST", &approve, &bob, None);
    assert_eq!((s, v["state"].as_str()), (200, Some("executed")), "{v}");

    // 30 days >= 20: the next check adds a key made in keys/.
    wait_for("the scheduled rotation", 10, || {
        history(&data).keys.len() == 2
    });
    let h = history(&data);
    let new: VerifierKey = h.keys[1].verifier_key.parse().expect("key");
    assert!(
        h.keys.iter().all(|k| k.until_size.is_none()),
        "both sign in the overlap"
    );
    d.wait_metric("auditlog_signing_key_age_days", secs(10), |v| v == 0);
    assert_eq!(
        signed_by(&d, &[old.clone(), new.clone()]),
        vec![old.clone(), new.clone()]
    );
    d.stop();

    // Six days later (> 5 of overlap): the old key is retired; only the new one signs.
    age_keys(&data, 6);
    let d = Daemon::start_with(dir.path(), &config());
    wait_for("the scheduled retirement", 10, || {
        history(&data).keys[0].until_size.is_some()
    });
    assert_eq!(signed_by(&d, &[old.clone(), new.clone()]), vec![new]);
    let events = admin_events(&d);
    for action in ["rotate_key", "retire_key"] {
        assert!(
            events
                .iter()
                .any(|(a, b, o)| a == "auditlogd" && b == action && o == "success"),
            "{action}: {events:?}"
        );
    }
}

fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}
