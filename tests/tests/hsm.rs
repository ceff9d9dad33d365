//! Checkpoint keys in SoftHSM2 over PKCS#11: signing, the distinct start-up errors, a token
//! that goes away and comes back, key rotation with history, and the two-person rule.
//! Each test has its own SoftHSM2 configuration and token directory.

use std::path::Path;

use auditlog_engine::{EngineError, PinSource, Pkcs11Error, Pkcs11Signer, Pkcs11Spec, Signer};
use auditlog_tests::softhsm::{self, SoftHsm};

fn spec(token: &str, key: &str) -> Pkcs11Spec {
    Pkcs11Spec {
        module: softhsm::module(),
        token_label: token.into(),
        key_label: key.into(),
    }
}

fn pin_file(dir: &Path, pin: &str) -> PinSource {
    let p = dir.join(format!("pin-{pin}"));
    std::fs::write(&p, format!("{pin}\n")).expect("write pin");
    // The daemon reads a PIN file only when group and others cannot.
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod pin");
    PinSource::File(p)
}

/// The library in this process reads `SOFTHSM2_CONF` once, at its first `C_Initialize`, so
/// every in-process check lives in this one test; the daemon tests run their own processes.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs SoftHSM2: ./scripts/test"
)]
fn library_signs_and_names_each_failure() {
    let dir = tempfile::tempdir().expect("tmp");
    let hsm = SoftHsm::new(dir.path());
    hsm.init_token("lib");
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let pin = pin_file(dir.path(), softhsm::PIN);

    let public = auditlog_engine::pkcs11::generate(&spec("lib", "k1"), &pin).expect("generate");
    // Each start-up failure is its own error. (Wrong PIN first: while another session of
    // this process is logged in, PKCS#11 answers "already logged in" without checking it.)
    let wrong = Pkcs11Signer::open(spec("lib", "k1"), pin_file(dir.path(), "9999"), "x");
    assert!(
        matches!(
            wrong,
            Err(EngineError::Pkcs11(Pkcs11Error::WrongPin { .. }))
        ),
        "{:?}",
        wrong.err()
    );
    let no_token = Pkcs11Signer::open(spec("nope", "k1"), pin.clone(), "x");
    assert!(
        matches!(
            no_token,
            Err(EngineError::Pkcs11(Pkcs11Error::TokenMissing { .. }))
        ),
        "{:?}",
        no_token.err()
    );
    let no_key = Pkcs11Signer::open(spec("lib", "absent"), pin.clone(), "x");
    assert!(
        matches!(
            no_key,
            Err(EngineError::Pkcs11(Pkcs11Error::KeyMissing { .. }))
        ),
        "{:?}",
        no_key.err()
    );
    let mut bad_module = spec("lib", "k1");
    bad_module.module = dir.path().join("libmissing.so");
    let no_module = Pkcs11Signer::open(bad_module, pin.clone(), "x");
    assert!(
        matches!(
            no_module,
            Err(EngineError::Pkcs11(Pkcs11Error::ModuleNotFound { .. }))
        ),
        "{:?}",
        no_module.err()
    );
    let no_pin = Pkcs11Signer::open(
        spec("lib", "k1"),
        PinSource::Env("AUDITLOG_TEST_NO_SUCH_PIN".into()),
        "x",
    );
    assert!(
        matches!(
            no_pin,
            Err(EngineError::Pkcs11(Pkcs11Error::PinUnavailable { .. }))
        ),
        "{:?}",
        no_pin.err()
    );

    let signer = Pkcs11Signer::open(spec("lib", "k1"), pin.clone(), "test.log").expect("open");
    assert_eq!(signer.verifier_key().public_key(), &public);
    let msg = b"origin\n1\nAAAA\n";
    let sig = signer.sign(msg).expect("sign");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("ed25519 key");
    vk.verify_strict(
        msg,
        &ed25519_dalek::Signature::from_bytes(sig.as_slice().try_into().expect("64 bytes")),
    )
    .expect("a SoftHSM2 signature verifies with ed25519-dalek");

    // The token goes away: signing fails; it comes back: signing recovers.
    let moved = dir.path().join("tokens-away");
    std::fs::rename(&hsm.token_dir, &moved).expect("move tokens away");
    let failed = signer.sign(msg);
    eprintln!("while away: {failed:?}");
    let again = signer.sign(msg);
    eprintln!("while away 2: {again:?}");
    assert!(
        failed.is_err() || again.is_err(),
        "signing must fail while the token is gone"
    );
    std::fs::rename(&moved, &hsm.token_dir).expect("move tokens back");
    let back = signer
        .sign(msg)
        .or_else(|_| signer.sign(msg))
        .expect("signing recovers");
    vk.verify_strict(
        msg,
        &ed25519_dalek::Signature::from_bytes(back.as_slice().try_into().expect("64 bytes")),
    )
    .expect("verifies after reconnect");
}

// ---- The daemon with its key in SoftHSM2 -------------------------------------------------

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use auditlog_client::verify::{load_history, verify_dir, verify_dir_with_history};
use auditlog_formats::checkpoint_log;
use auditlog_formats::keyhistory::KeyHistory;
use auditlog_formats::note::{self, Checkpoint, NoteSigner, VerifierKey};
use auditlog_tests::daemon::{daemon_command, free_port, Daemon, Launch};
use auditlog_tests::event;
use serde_json::{json, Value};

const PIN_VAR: &str = "AUDITLOG_TEST_HSM_PIN";

/// A test's world: a SoftHSM2 token directory and a data directory.
struct World {
    dir: tempfile::TempDir,
    hsm: SoftHsm,
}

impl World {
    fn new(token: &str) -> World {
        let dir = tempfile::tempdir().expect("tmp");
        let hsm = SoftHsm::new(dir.path());
        hsm.init_token(token);
        World { dir, hsm }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config(&self, signer: &str, extra: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("auditlogd-{}.toml", free_port()));
        let text = format!(
            "[engine]\nsubmission_bytes_max = 131072\nbatch_bytes_max = 131072\nsegment_bytes = 1048576\n\
             block_raw_bytes = 16384\ncheckpoint_interval_ms = 50\n\n{signer}\n{extra}\n"
        );
        std::fs::write(&p, text).expect("write config");
        p
    }

    fn command(&self, config: &Path, pin: &str) -> Command {
        let mut c = daemon_command();
        c.arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(self.data())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env(PIN_VAR, pin)
            .env("RUST_LOG", "warn");
        c
    }

    /// `auditlogd keys generate --pkcs11 …`; returns the verifier key it printed.
    fn generate(&self, token: &str, label: &str) -> VerifierKey {
        let config = self.config("", "");
        let out = self
            .command(&config, softhsm::PIN)
            .args(["keys", "generate", "--pkcs11", "--module"])
            .arg(softhsm::module())
            .args([
                "--token-label",
                token,
                "--key-label",
                label,
                "--pin-env",
                PIN_VAR,
            ])
            .output()
            .expect("run auditlogd keys generate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.lines()
            .next()
            .expect("key line")
            .parse()
            .expect("verifier key")
    }

    /// The daemon over this world's data directory and token, with `config` and `pin`.
    fn launch(&self, config: &Path, pin: &str) -> Launch {
        Daemon::launch(self.dir.path())
            .config_file(config)
            .data_dir(&self.data())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env(PIN_VAR, pin)
    }

    fn start(&self, config: &Path) -> Daemon {
        self.launch(config, softhsm::PIN).start()
    }

    /// Runs auditlogd expecting it to fail at start; returns its output.
    fn start_fails(&self, config: &Path, pin: &str) -> Output {
        let out = self
            .launch(config, pin)
            .command()
            .output()
            .expect("run auditlogd");
        assert!(
            !out.status.success(),
            "auditlogd started although it should not"
        );
        out
    }
}

fn hsm_signer(token: &str, key: &str) -> String {
    format!(
        "[signer]\nbackend = \"pkcs11\"\npkcs11_module = \"{}\"\ntoken_label = \"{token}\"\nkey_label = \"{key}\"\npin_env = \"{PIN_VAR}\"\n",
        softhsm::module().display()
    )
}

/// What these tests ask of the daemon, on top of the shared harness.
trait Ask {
    fn raw(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Vec<u8>);
    fn json(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value);
    fn ingest(&self, from: u64, n: u64);
    fn size(&self) -> u64;
    fn history(&self) -> KeyHistory;
    fn checkpoint_note(&self, min_size: u64, wait_ms: u64) -> Option<String>;
    fn metric_of(&self, name: &str) -> u64;
}

impl Ask for Daemon {
    fn raw(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("json"));
        let r = self.call(
            method,
            path,
            Some(token),
            bytes.as_deref().map(|b| ("application/json", b)),
        );
        (r.status, r.body)
    }

    fn json(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
        let (s, b) = self.raw(method, path, token, body);
        let v = serde_json::from_slice(&b).unwrap_or_else(|_| json!(String::from_utf8_lossy(&b)));
        (s, v)
    }

    fn ingest(&self, from: u64, n: u64) {
        let mut body = Vec::new();
        for i in from..from + n {
            body.extend_from_slice(&event(i, 200));
            body.push(b'\n');
        }
        let r = self.post("application/x-ndjson", &body);
        assert_eq!(r.status, 200, "ingest: {}", r.text());
    }

    fn size(&self) -> u64 {
        self.tree_size()
    }

    fn history(&self) -> KeyHistory {
        let (s, v) = self.json("GET", "/v1/log", &self.tokens["auditor"], None);
        assert_eq!(s, 200);
        serde_json::from_value(v["key_history"].clone()).expect("key_history")
    }

    /// The note of a checkpoint covering `min_size`, waiting up to `wait_ms`.
    fn checkpoint_note(&self, min_size: u64, wait_ms: u64) -> Option<String> {
        let (s, b) = self.raw(
            "GET",
            &format!("/v1/checkpoint?min_size={min_size}&wait_ms={wait_ms}"),
            &self.tokens["auditor"],
            None,
        );
        (s == 200).then(|| String::from_utf8(b).expect("utf-8"))
    }

    fn metric_of(&self, name: &str) -> u64 {
        self.metric(name)
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }
}

fn ed25519_verifies(key: &VerifierKey, note_text: &str) {
    let (text, sigs) = note::parse_note(note_text).expect("note");
    let sig = sigs
        .iter()
        .find(|s| s.name == key.name() && s.key_id == key.key_id())
        .expect("a signature by the key");
    let public: &[u8; 32] = key.public_key().try_into().expect("an Ed25519 key");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public).expect("key");
    let sig: [u8; 64] = sig.signature.as_slice().try_into().expect("64 bytes");
    vk.verify_strict(text.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .expect("ed25519-dalek verifies the HSM signature");
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs SoftHSM2: ./scripts/test"
)]
fn daemon_signs_checkpoints_in_softhsm() {
    let w = World::new("daemon");
    let key = w.generate("daemon", "cp-a");
    let mut d = w.start(&w.config(&hsm_signer("daemon", "cp-a"), ""));
    let (_, log) = d.json("GET", "/v1/log", &d.tokens["auditor"], None);
    assert_eq!(log["verifier_keys"][0], key.to_string());
    // The daemon's start event is the log's first.
    let f = d.size();
    assert_eq!(f, 1);
    d.ingest(0, 50);
    let text = d.checkpoint_note(f + 50, 10_000).expect("checkpoint");
    ed25519_verifies(&key, &text);
    let (cp, _) = note::open_checkpoint(&text, std::slice::from_ref(&key)).expect("opens");
    assert_eq!(cp.size, f + 50);
    let (s, m) = d.raw("GET", "/metrics", &d.tokens["auditor"], None);
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&m).contains("auditlog_signer_failures_total 0"));
    d.stop();
    let summary = verify_dir(&w.data(), &key, &mut |_, _| {}).expect("offline verifier");
    assert_eq!(summary.events, f + 50);
    let h = load_history(&w.data().join("keys.json")).expect("history");
    verify_dir_with_history(&w.data(), &h, &mut |_, _| {}).expect("with the history");
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs SoftHSM2: ./scripts/test"
)]
fn daemon_start_errors_name_what_failed() {
    let w = World::new("errs");
    w.generate("errs", "cp");
    let stderr = |o: Output| String::from_utf8_lossy(&o.stderr).to_string();
    let wrong_pin = stderr(w.start_fails(&w.config(&hsm_signer("errs", "cp"), ""), "0000"));
    assert!(wrong_pin.contains("wrong PIN"), "{wrong_pin}");
    let no_token = stderr(w.start_fails(&w.config(&hsm_signer("other", "cp"), ""), softhsm::PIN));
    assert!(
        no_token.contains("no token labelled \"other\""),
        "{no_token}"
    );
    let no_key = stderr(w.start_fails(&w.config(&hsm_signer("errs", "nokey"), ""), softhsm::PIN));
    assert!(
        no_key.contains("no Ed25519 key labelled \"nokey\""),
        "{no_key}"
    );
    let bad_module = hsm_signer("errs", "cp").replace(
        &softhsm::module().display().to_string(),
        "/nonexistent/libpkcs11.so",
    );
    let no_module = stderr(w.start_fails(&w.config(&bad_module, ""), softhsm::PIN));
    assert!(
        no_module.contains("/nonexistent/libpkcs11.so: cannot load it"),
        "{no_module}"
    );
    let all = [&wrong_pin, &no_token, &no_key, &no_module];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs SoftHSM2: ./scripts/test"
)]
fn token_removed_while_running_then_back() {
    let w = World::new("flaky");
    let key = w.generate("flaky", "cp");
    let d = w.start(&w.config(&hsm_signer("flaky", "cp"), ""));
    let f = d.size();
    d.ingest(0, 20);
    d.checkpoint_note(f + 20, 10_000).expect("first checkpoint");
    let away = w.dir.path().join("tokens-away");
    std::fs::rename(&w.hsm.token_dir, &away).expect("remove the token");
    // Ingest goes on without the HSM.
    d.ingest(20, 30);
    assert_eq!(d.size(), f + 50);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = d.raw("GET", "/ready", "", None);
        if s == 503 && String::from_utf8_lossy(&b).contains("signer") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never reported the signer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, m) = d.raw("GET", "/metrics", "", None);
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(m.contains("auditlog_signer_error 1"), "{m}");
    assert!(!m.contains("auditlog_signer_failures_total 0\n"), "{m}");
    assert!(
        d.checkpoint_note(50, 200).is_none(),
        "no checkpoint without the HSM"
    );
    std::fs::rename(&away, &w.hsm.token_dir).expect("token back");
    let text = d.checkpoint_note(50, 20_000).expect("signing recovers");
    ed25519_verifies(&key, &text);
    let (s, _) = d.raw("GET", "/ready", "", None);
    assert_eq!(s, 200);
}

fn admin_actions(d: &Daemon) -> Vec<(String, String, String)> {
    let size = d.size();
    let (s, b) = d.raw(
        "GET",
        &format!("/v1/events?start=0&end={size}"),
        &d.tokens["auditor"],
        None,
    );
    assert_eq!(s, 200);
    String::from_utf8_lossy(&b)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"]["event_type"] == "admin")
        .map(|v| {
            let e = &v["event"];
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("actor"), s("action"), s("outcome"))
        })
        .collect()
}

/// Key A (the development key file) → rotate to B in SoftHSM2 with an overlap → retire A,
/// every step under the two-person rule; the whole log verifies offline with the history,
/// and a checkpoint forged with A after its retirement does not.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs SoftHSM2: ./scripts/test"
)]
fn rotation_under_two_person_rule() {
    let w = World::new("rot");
    let b_key = w.generate("rot", "cp-b");
    // Named admins, added before start (tokens.json is read at start).
    // The HSM module a rotation may load is allowlisted (the log starts on a key file).
    let config = w.config(
        &format!("[signer]\npin_env = \"{PIN_VAR}\"\n"),
        &format!(
            "[admin]\napprovals_required = 1\nrequest_ttl_ms = 3000\npkcs11_modules_allowed = [\"{}\"]\n",
            softhsm::module().display()
        ),
    );
    let mut admins = HashMap::new();
    for name in ["bob", "carol"] {
        let out = w
            .command(&config, softhsm::PIN)
            .args(["tokens", "add", "--role", "admin", "--name", name])
            .output()
            .expect("tokens add");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        admins.insert(
            name,
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_string(),
        );
    }
    let mut d = w.start(&config);
    let alice = d.tokens["admin"].clone(); // the initial admin token is named "admin"
    let (bob, carol) = (admins["bob"].clone(), admins["carol"].clone());
    let a_key: VerifierKey = d.json("GET", "/v1/log", &d.tokens["auditor"], None).1
        ["verifier_keys"][0]
        .as_str()
        .expect("key")
        .parse()
        .expect("key A");
    d.ingest(0, 10);
    d.checkpoint_note(10, 10_000).expect("checkpoint by A");

    // A writer may not; a lone admin cannot rotate: requesting does not execute, and the
    // requester's own approval is refused.
    let rotate = json!({"op": "rotate_key", "backend": {"type": "pkcs11",
        "module": softhsm::module().display().to_string(), "token_label": "rot", "key_label": "cp-b"}});
    let (s, _) = d.json(
        "POST",
        "/v1/admin/requests",
        &d.tokens["writer"],
        Some(&rotate),
    );
    assert_eq!(s, 403);
    // No request may load a module outside the allowlist (it would be handed the HSM PIN),
    // nor add a key file outside the data directory: refused at once, nothing stored.
    for (bad, code) in [
        (
            json!({"op": "rotate_key", "backend": {"type": "pkcs11", "module": "/tmp/evil.so",
                "token_label": "rot", "key_label": "cp-b"}}),
            "module_not_allowed",
        ),
        (
            json!({"op": "rotate_key", "backend": {"type": "file", "path": "/etc/hostname"}}),
            "key_file_outside_data_dir",
        ),
        (
            json!({"op": "rotate_key", "backend": {"type": "file", "path": "../../etc/hostname"}}),
            "key_file_outside_data_dir",
        ),
    ] {
        let (s, v) = d.json("POST", "/v1/admin/requests", &alice, Some(&bad));
        assert_eq!((s, v["error"]["code"].as_str()), (422, Some(code)), "{v}");
    }
    let (s, req) = d.json("POST", "/v1/admin/requests", &alice, Some(&rotate));
    assert_eq!(s, 201, "{req}");
    let id = req["id"].as_str().expect("id").to_string();
    assert_eq!(d.history().keys.len(), 1, "a request alone changes nothing");
    let approve = format!("/v1/admin/requests/{id}/approve");
    let (s, v) = d.json("POST", &approve, &alice, None);
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "self_approval");
    assert_eq!(d.history().keys.len(), 1);
    let (s, v) = d.json("POST", &approve, &bob, None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "executed", "{v}");
    let (s, v) = d.json("POST", &approve, &carol, None);
    assert_eq!(s, 409, "an executed request cannot be approved again: {v}");
    let h = d.history();
    assert_eq!(h.keys.len(), 2);
    assert_eq!(h.keys[1].verifier_key, b_key.to_string());
    // Admin events are log events too: B starts one past the largest size signed so far.
    let b_from = h.keys[1].from_size;
    assert!(b_from > 10, "{b_from}");

    // The overlap: both keys sign.
    d.ingest(10, 10);
    let both = d
        .checkpoint_note(d.size(), 10_000)
        .expect("checkpoint in the overlap");
    ed25519_verifies(&a_key, &both);
    ed25519_verifies(&b_key, &both);
    // `/v1/log` names every key that signs now, so a client pinning from it sees both.
    let signing = |d: &Daemon| -> Vec<String> {
        let log = d.json("GET", "/v1/log", &d.tokens["auditor"], None).1;
        log["verifier_keys"]
            .as_array()
            .expect("verifier_keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect()
    };
    assert_eq!(signing(&d), vec![a_key.to_string(), b_key.to_string()]);

    // Retire A: bob requests, carol approves; bob's second approval would be refused.
    let retire = json!({"op": "retire_key", "key": a_key.to_string()});
    let (s, req) = d.json("POST", "/v1/admin/requests", &bob, Some(&retire));
    assert_eq!(s, 201, "{req}");
    let rid = req["id"].as_str().expect("id").to_string();
    let (s, v) = d.json(
        "POST",
        &format!("/v1/admin/requests/{rid}/approve"),
        &carol,
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "executed", "{v}");
    let h = d.history();
    let a_until = h.keys[0].until_size.expect("A retired");
    assert!(a_until > b_from, "{a_until} {b_from}");
    d.ingest(20, 10);
    let only_b = d
        .checkpoint_note(d.size(), 10_000)
        .expect("checkpoint after retirement");
    let (_, opened) =
        note::open_checkpoint(&only_b, &[a_key.clone(), b_key.clone()]).expect("opens");
    assert_eq!(
        opened.verified,
        vec![b_key.clone()],
        "only B signs after A's retirement"
    );
    assert_eq!(signing(&d), vec![b_key.to_string()]);

    // Below a class's legal floor a request is refused at once (422), whoever approves.
    let short = json!({"op": "set_retention", "retention": {"days": {"CUI//BASIC": 2554}}});
    let (s, v) = d.json("POST", "/v1/admin/requests", &carol, Some(&short));
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("legal floor"), "{v}");
    // Expiry: a request nobody approves in time is refused.
    let retention = json!({"op": "set_retention", "retention": {"days": {"CUI//BASIC": 3000}}});
    let (s, req) = d.json("POST", "/v1/admin/requests", &carol, Some(&retention));
    assert_eq!(s, 201, "{req}");
    let eid = req["id"].as_str().expect("id").to_string();
    std::thread::sleep(Duration::from_millis(3200));
    let (s, v) = d.json(
        "POST",
        &format!("/v1/admin/requests/{eid}/approve"),
        &bob,
        None,
    );
    assert_eq!(s, 410, "{v}");
    // In time, it executes and lands in log.json.
    let (_, req) = d.json("POST", "/v1/admin/requests", &carol, Some(&retention));
    let rid = req["id"].as_str().expect("id").to_string();
    let (s, v) = d.json(
        "POST",
        &format!("/v1/admin/requests/{rid}/approve"),
        &alice,
        None,
    );
    assert_eq!(s, 200, "{v}");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(w.data().join("log.json")).expect("log.json"))
            .expect("json");
    assert_eq!(meta["retention"]["days"]["CUI//BASIC"], 3000);

    // Every step is in the log, by name.
    let actions = admin_actions(&d);
    for want in [
        ("admin", "request", "success"),
        ("admin", "refuse", "failure"),
        ("bob", "approve", "success"),
        ("bob", "execute", "success"),
        ("carol", "refuse", "failure"),
        ("bob", "request", "success"),
        ("carol", "execute", "success"),
        ("bob", "refuse", "failure"),
        ("admin", "execute", "success"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()) == want),
            "{want:?} missing from {actions:?}"
        );
    }
    let total = d.size();
    d.stop();

    // Offline: the whole log verifies with the history; not with A alone.
    let hist = load_history(&w.data().join("keys.json")).expect("history");
    let s = verify_dir_with_history(&w.data(), &hist, &mut |_, _| {})
        .expect("verifies with the history");
    assert_eq!(s.events, total);
    assert!(
        verify_dir(&w.data(), &a_key, &mut |_, _| {}).is_err(),
        "A alone cannot verify after its retirement"
    );

    // A forged checkpoint: A (a key file) signs a size after its retirement.
    let a_signer = NoteSigner::parse_private(
        std::fs::read_to_string(w.data().join("keys/checkpoint.key"))
            .expect("key")
            .trim(),
    )
    .expect("A's key");
    let last = Checkpoint::parse_text(
        &note::open_note(&only_b, std::slice::from_ref(&b_key))
            .expect("open")
            .text,
    )
    .expect("checkpoint");
    let forged = note::sign_checkpoint(&last, &[&a_signer]).expect("sign");
    let err = hist
        .open_checkpoint(&forged)
        .expect_err("A outside its validity");
    assert!(err.to_string().contains("outside its validity"), "{err}");
    let mut cp_log = std::fs::read(w.data().join("checkpoints.log")).expect("read");
    cp_log.extend_from_slice(&checkpoint_log::encode_entry(&forged));
    std::fs::write(w.data().join("checkpoints.log"), cp_log).expect("write");
    let e = verify_dir_with_history(&w.data(), &hist, &mut |_, _| {})
        .expect_err("forged checkpoint fails");
    assert!(e.to_string().contains("outside its validity"), "{e}");
}

/// A writer that posts `per_post` events every `every` until told to stop, keeping every
/// receipt; a refused or failed request fails the test.
struct SteadyWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, String)>>,
}

impl SteadyWriter {
    fn start(d: &Daemon, per_post: u64, every: Duration) -> SteadyWriter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (agent, base, token) = (d.agent.clone(), d.base.clone(), d.tokens["writer"].clone());
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut n = 1_000_000u64;
            while !halt.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let mut body = Vec::new();
                for i in n..n + per_post {
                    body.extend_from_slice(&event(i, 200));
                    body.push(b'\n');
                }
                n += per_post;
                let r = agent
                    .post(&format!("{base}/v1/events"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .set("Content-Type", "application/x-ndjson")
                    .send_bytes(&body)
                    .unwrap_or_else(|e| panic!("ingest refused during the outage: {e}"));
                let v: Value = serde_json::from_reader(r.into_reader()).expect("json");
                for rc in v["receipts"].as_array().expect("receipts") {
                    acked.push((
                        rc["index"].as_u64().expect("index"),
                        rc["leaf_hash"].as_str().expect("hash").into(),
                    ));
                }
                std::thread::sleep(every.saturating_sub(started.elapsed()));
            }
            acked
        });
        SteadyWriter { stop, thread }
    }

    fn finish(self) -> Vec<(u64, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("writer")
    }
}

/// The SoftHSM2 token removed for 15 s (`AUDITLOG_TEST_HSM_OUTAGE_S`; 60 for a soak) under
/// steady ingest, with a seal queue of one and replication to moto: ingest, sealing and
/// shipping go on (every request acknowledged, segments sealed and shipped, no seal
/// failure), `/ready` names the signer while it lasts and no checkpoint is published. With
/// the token back, checkpoints resume, every acknowledged event is where its receipt says,
/// SIGTERM exits 0, and the offline verifier accepts the directory and the bucket.
///
/// 15 s is long enough for what the minute proved: the checkpointer's retry backoff reaches
/// its 5 s cap after ~6.4 s, so retries at the cap happen while the token is away; at ~1 MiB/s
/// about 15 segments seal past a seal queue of one, where a sealer that waits for the signer
/// (before e747106) stalls ingest after two and fails `sealed_before + 5`.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs SoftHSM2, moto: ./scripts/test"
)]
fn an_hsm_outage_under_steady_ingest_stops_nothing_and_loses_nothing() {
    use auditlog_tests::worm_servers::start_moto;
    let outage = Duration::from_secs(
        std::env::var("AUDITLOG_TEST_HSM_OUTAGE_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15),
    );
    let moto = start_moto();
    let ep = moto.endpoint();
    auditlog_worm::create_bucket("s3://outage", &auditlog_tests::s3_options(&ep), true)
        .expect("bucket");
    let w = World::new("outage");
    let key = w.generate("outage", "cp");
    let cfg = w.config(
        &hsm_signer("outage", "cp"),
        &format!(
            "[replication]\ntarget = \"s3://outage/log\"\nretry_ms_initial = 50\nretry_ms_max = 300\n\
             poll_interval_ms = 20\nlatest_checkpoint_interval_ms = 100\n\
             [replication.options]\nendpoint = \"{ep}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\n"
        ),
    );
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("[engine]\n", "[engine]\nseal_queue_segments_max = 1\n");
    std::fs::write(&cfg, text).expect("config");
    let mut d = w.start(&cfg);
    d.ingest(0, 20);
    let before = d.size();
    d.checkpoint_note(before, 10_000).expect("first checkpoint");
    let sealed_before = d.metric_of("auditlog_sealed_segments");
    let shipped_before = d.wait_metric(
        "auditlog_replication_shipped_end",
        Duration::from_secs(30),
        |_| true,
    );

    let away = w.dir.path().join("tokens-away");
    std::fs::rename(&w.hsm.token_dir, &away).expect("remove the token");
    let outage_began = Instant::now();
    // ~1 MB/s: a 1 MiB segment sealed about every second.
    let writer = SteadyWriter::start(&d, 500, Duration::from_millis(100));
    let mut saw_not_ready = false;
    while outage_began.elapsed() < outage {
        let (s, b) = d.raw("GET", "/ready", "", None);
        if s == 503 && String::from_utf8_lossy(&b).contains("signer") {
            saw_not_ready = true;
        }
        assert!(!writer.thread.is_finished(), "the writer stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        saw_not_ready,
        "/ready never named the signer during the outage"
    );
    assert_eq!(
        d.metric_of("auditlog_seal_error"),
        0,
        "a seal failed for want of the HSM"
    );
    assert_eq!(d.metric_of("auditlog_seal_failures_total"), 0);
    let sealed = d.metric_of("auditlog_sealed_segments");
    assert!(
        sealed >= sealed_before + 5,
        "sealing stopped: {sealed_before} -> {sealed}"
    );
    assert!(d.metric_of("auditlog_signer_error") == 1);
    let signed_during = d.metric_of("auditlog_checkpoint_size");
    assert!(
        signed_during <= before + 1,
        "a checkpoint was signed with the token gone: {signed_during}"
    );
    let shipped = d.metric_of("auditlog_replication_shipped_end");
    assert!(shipped > shipped_before, "shipping stopped: {shipped}");

    std::fs::rename(&away, &w.hsm.token_dir).expect("token back");
    let acked = writer.finish();
    assert!(
        acked.len() as u64 >= 500 * outage.as_secs(),
        "{}",
        acked.len()
    );
    let size = d.size();
    let text = d
        .checkpoint_note(size, 30_000)
        .expect("checkpoints resume with the token back");
    ed25519_verifies(&key, &text);
    let (s, _) = d.raw("GET", "/ready", "", None);
    assert_eq!(s, 200, "ready again");
    for (index, leaf) in acked.iter().step_by(997) {
        let (s, v) = d.json(
            "GET",
            &format!("/v1/proof/inclusion?leaf_hash={leaf}&size={size}"),
            &d.tokens["auditor"],
            None,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["index"].as_u64(), Some(*index), "{v}");
    }
    // Shipped: every sealed segment, and a checkpoint in the bucket covering them (segments
    // sealed during the outage carry no note; the bucket holds them as verified only under a
    // checkpoint signed after the token came back, which ships after them).
    let target: std::sync::Arc<dyn auditlog_worm::WormTarget> =
        auditlog_worm::open("s3://outage/log", &auditlog_tests::s3_options(&ep))
            .expect("target")
            .into();
    let newest_shipped_checkpoint = || {
        target
            .list("checkpoints/")
            .expect("list checkpoints")
            .iter()
            .filter_map(|o| o.key.rsplit('/').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let shipped_end = loop {
        let end = d.metric_of("auditlog_replication_shipped_end");
        if d.metric_of("auditlog_replication_segments_pending") == 0
            && newest_shipped_checkpoint() >= end
        {
            break end;
        }
        assert!(
            Instant::now() < deadline,
            "segments or their checkpoint not shipped within 60 s: shipped to {end}, checkpoint {}",
            newest_shipped_checkpoint()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    d.stop();

    let summary = verify_dir(&w.data(), &key, &mut |_, _| {}).expect("offline verifier");
    assert!(summary.events >= size);
    assert_eq!(summary.signed_size, summary.events);
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("sealed without a signed footer")),
        "{:?}",
        summary.warnings
    );
    let (bucket, _) = auditlog_client::bucket::verify_bucket(
        target,
        &KeyHistory::single(&key).check().expect("history"),
        &auditlog_worm::RetentionPolicy::default(),
        &mut |_, _| {},
    )
    .expect("the bucket verifies");
    assert!(
        bucket.events >= shipped_end,
        "{} < {shipped_end}",
        bucket.events
    );
}
