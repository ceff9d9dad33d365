//! The `auditlog` CLI end to end: the real binary against a real `auditlogd` on free ports.
//! Send (stdin, file, one object), receipts, get, checkpoint, prove (by index, leaf hash,
//! event file, older size, since an older checkpoint), and failures that must be named.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use auditlog_formats::note::{self, NoteSigner, VerifierKey};
use auditlog_formats::record::Record;
use auditlog_tests::daemon::{client_command, client_exe, Daemon};
use auditlog_tests::event;
use serde_json::Value;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `auditlog ARGS` as `role` against `d`, with `stdin` piped in.
fn run(d: &Daemon, role: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = client_command();
    cmd.args(args)
        .env("AUDITLOG_URL", &d.base)
        .env("AUDITLOG_TOKEN", d.token(role))
        .env_remove("AUDITLOG_VERIFIER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("spawn auditlog");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default().to_vec();
    // Written from a thread: a large input could fill the pipe while the CLI writes output.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("auditlog output");
    writer.join().expect("stdin writer");
    let r = Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    eprintln!(
        "$ auditlog {}\n{}{}-> {status} in {:?}",
        args.join(" "),
        r.stdout,
        r.stderr,
        started.elapsed()
    );
    r
}

fn must(r: Run) -> Run {
    assert!(r.ok, "failed:\n{}\n{}", r.stdout, r.stderr);
    r
}

fn ndjson(events: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        out.extend_from_slice(e);
        // Blank lines and CRLF are part of what senders produce.
        out.extend_from_slice(if i % 5 == 0 { b"\n\n" } else { b"\r\n" });
    }
    out
}

/// Each receipts line: (index, leaf hash, received_at); must match what was sent.
fn read_receipts(path: &Path, sent: &[Vec<u8>], alg: auditlog_formats::TreeHash) -> Vec<u64> {
    let text = std::fs::read_to_string(path).expect("receipts file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), sent.len(), "one receipt per event");
    lines
        .iter()
        .zip(sent)
        .map(|(l, e)| {
            let r = auditlog_client::http::parse_receipt_line(l).expect("receipt line");
            // The server says who it recorded: the token's holder, never the client.
            assert_eq!(r.submitter.as_deref(), Some("token:writer"), "{l}");
            let rec = Record {
                received_at_unix_ns: r.received_at_unix_ns,
                submitter: r.submitter.as_deref(),
                kind: auditlog_formats::record::PayloadKind::Event,
                payload: e,
            }
            .to_bytes();
            assert_eq!(
                alg.leaf(&rec),
                r.leaf_hash,
                "receipt recomputes from the bytes"
            );
            r.index
        })
        .collect()
}

fn contiguous(indexes: &[u64], first: u64) {
    let want: Vec<u64> = (first..first + indexes.len() as u64).collect();
    assert_eq!(indexes, want);
}

#[test]
fn send_get_checkpoint_and_prove() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let (key, alg, _) = d.log();
    let k = key.to_string();
    // Client events start after the daemon's own start event.
    let f = d.first;
    let at = |i: u64| (f + i).to_string();
    let tmp = |name: &str| dir.path().join(name).display().to_string();

    // NDJSON on stdin, in batches of 7.
    let first: Vec<Vec<u8>> = (0..30).map(|n| event(n, 300)).collect();
    let r = must(run(
        &d,
        "writer",
        &["send", "--batch", "7", "--receipts", &tmp("r1")],
        Some(&ndjson(&first)),
    ));
    assert!(
        r.stdout.contains(&format!(
            "sent 30 events in 5 requests: indexes {f}..={}",
            f + 29
        )),
        "{}",
        r.stdout
    );
    contiguous(&read_receipts(&dir.path().join("r1"), &first, alg), f);

    // A checkpoint at 30 saved for `--since`; verified with the key.
    let r = must(run(
        &d,
        "auditor",
        &["checkpoint", "--min-size", "30", "--key", &k],
        None,
    ));
    assert!(r.stderr.contains("verified: signed by"), "{}", r.stderr);
    let (old, _) = note::open_checkpoint(&r.stdout, std::slice::from_ref(&key)).expect("note");
    assert!(old.size >= 30);
    std::fs::write(tmp("old.cp"), &r.stdout).expect("write");

    // NDJSON from a file, then one pretty-printed object from a file.
    let second: Vec<Vec<u8>> = (100..125).map(|n| event(n, 500)).collect();
    std::fs::write(tmp("events.ndjson"), ndjson(&second)).expect("write");
    let r = must(run(
        &d,
        "writer",
        &[
            "send",
            &tmp("events.ndjson"),
            "--batch",
            "10",
            "--receipts",
            &tmp("r2"),
        ],
        None,
    ));
    assert!(
        r.stdout.contains("sent 25 events in 3 requests"),
        "{}",
        r.stdout
    );
    contiguous(&read_receipts(&dir.path().join("r2"), &second, alg), f + 30);
    let pretty = serde_json::to_vec_pretty(
        &serde_json::from_slice::<Value>(&event(999, 200)).expect("json"),
    )
    .expect("pretty");
    std::fs::write(tmp("one.json"), &pretty).expect("write");
    let r = must(run(&d, "writer", &["send", &tmp("one.json")], None));
    assert!(
        r.stdout.contains(&format!(
            "sent 1 events in 1 requests: indexes {0}..={0}",
            f + 55
        )),
        "{}",
        r.stdout
    );

    // get: JSON, and the exact record bytes.
    let r = must(run(&d, "reader", &["get", &at(33)], None));
    let v: Value = serde_json::from_str(&r.stdout).expect("event JSON");
    assert_eq!(v["index"], f + 33);
    assert_eq!(
        v["event"],
        serde_json::from_slice::<Value>(&second[3]).expect("json")
    );
    must(run(
        &d,
        "reader",
        &["get", &at(55), "--record", "-o", &tmp("55.rec")],
        None,
    ));
    let rec55 = std::fs::read(tmp("55.rec")).expect("record");
    // Sent as one line: the same JSON, without a line break.
    let payload = Record::parse(&rec55).expect("record").payload;
    assert!(!payload.contains(&b'\n'));
    assert_eq!(
        serde_json::from_slice::<Value>(payload).expect("json"),
        serde_json::from_slice::<Value>(&pretty).expect("json")
    );
    must(run(
        &d,
        "reader",
        &["get", &at(7), "--record", "-o", &tmp("7.rec")],
        None,
    ));
    let rec7 = std::fs::read(tmp("7.rec")).expect("record");
    assert_eq!(Record::parse(&rec7).expect("record").payload, &first[7][..]);

    // prove by index, with every step printed.
    let r = must(run(
        &d,
        "auditor",
        &["prove", "--index", "5", "--key", &k],
        None,
    ));
    for want in [
        "(given)",
        "checkpoint   signature OK",
        "origin auditlog.local/log",
        "record       index 5,",
        "recomputed here",
        "inclusion    leaf 5 in tree of size",
        "hashes: OK",
        "OK: event 5 is in the log",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?} in\n{}", r.stdout);
    }
    // by leaf hash, from a receipt.
    let receipt40 = std::fs::read_to_string(tmp("r2")).expect("r2");
    let receipt40 =
        auditlog_client::http::parse_receipt_line(receipt40.lines().nth(10).expect("line"))
            .expect("receipt");
    assert_eq!(receipt40.index, f + 40);
    let h = hex::encode(receipt40.leaf_hash);
    let r = must(run(
        &d,
        "auditor",
        &["prove", "--leaf-hash", &h, "--key", &k],
        None,
    ));
    assert!(
        r.stdout
            .contains(&format!("record       index {},", f + 40)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&h), "{}", r.stdout);
    // by event file: the saved record, and the JSON with its receipt's time.
    let r = must(run(
        &d,
        "auditor",
        &["prove", "--event-file", &tmp("55.rec"), "--key", &k],
        None,
    ));
    assert!(
        r.stdout.contains(&format!("OK: event {}", f + 55)),
        "{}",
        r.stdout
    );
    std::fs::write(tmp("40.json"), [&second[10][..], b"\n"].concat()).expect("write");
    let at = receipt40.received_at_unix_ns.to_string();
    let r = must(run(
        &d,
        "auditor",
        &[
            "prove",
            "--event-file",
            &tmp("40.json"),
            "--received-at-ns",
            &at,
            "--submitter",
            receipt40.submitter.as_deref().expect("submitter"),
            "--key",
            &k,
        ],
        None,
    ));
    assert!(
        r.stdout.contains(&format!("OK: event {}", f + 40)),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("submitter token:writer"), "{}", r.stdout);
    // At an older size, tied to the checkpoint by a consistency proof; and since the old
    // checkpoint.
    let r = must(run(
        &d,
        "auditor",
        &["prove", "--index", "2", "--size", "31", "--key", &k],
        None,
    ));
    assert!(
        r.stdout.contains("inclusion    leaf 2 in tree of size 31"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("consistency  31 -> "), "{}", r.stdout);
    let r = must(run(
        &d,
        "auditor",
        &[
            "prove",
            "--index",
            "50",
            "--since",
            &tmp("old.cp"),
            "--key",
            &k,
        ],
        None,
    ));
    assert!(
        r.stdout.contains(&format!("since        {} -> ", old.size)),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("is a prefix of the checkpoint"),
        "{}",
        r.stdout
    );

    // Without --key it refuses: the server's own key proves nothing against it.
    let r = run(&d, "auditor", &["prove", "--index", "1"], None);
    assert!(!r.ok, "{}", r.stdout);
    assert!(r.stderr.contains("--key"), "{}", r.stderr);
    // With --insecure it checks, but says the key is the server's own.
    let r = must(run(
        &d,
        "auditor",
        &["prove", "--index", "1", "--insecure"],
        None,
    ));
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("pin it"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("NOT pinned"), "{}", r.stdout);
}

#[test]
fn failures_are_named_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let (key, alg, _) = d.log();
    let tmp = |name: &str| dir.path().join(name).display().to_string();
    let events: Vec<Vec<u8>> = (0..12).map(|n| event(n, 300)).collect();
    must(run(&d, "writer", &["send"], Some(&ndjson(&events))));

    // A key of the same name that did not sign.
    let wrong: VerifierKey = NoteSigner::from_seed(key.name(), [7u8; 32])
        .expect("signer")
        .verifier_key();
    assert_ne!(wrong, key);
    let w = wrong.to_string();
    // `--min-size` waits for the checkpoint that covers the sends (without it a busy
    // machine could answer 503 before the first one is signed).
    let r = run(
        &d,
        "auditor",
        &["checkpoint", "--min-size", "12", "--key", &w],
        None,
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("signature check") && r.stderr.contains("FAILED"),
        "{}",
        r.stderr
    );
    let r = run(&d, "auditor", &["prove", "--index", "3", "--key", &w], None);
    assert!(!r.ok);
    assert!(
        r.stdout
            .contains("checkpoint   FAILED: signature check with key"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("OK: event"), "{}", r.stdout);

    // A record file with one byte changed: its leaf is not in the log.
    must(run(
        &d,
        "reader",
        &["get", "4", "--record", "-o", &tmp("4.rec")],
        None,
    ));
    let mut rec = std::fs::read(tmp("4.rec")).expect("record");
    let at = rec.len() - 10;
    rec[at] ^= 0x01;
    std::fs::write(tmp("4.rec"), &rec).expect("write");
    let k = key.to_string();
    let r = run(
        &d,
        "auditor",
        &["prove", "--event-file", &tmp("4.rec"), "--key", &k],
        None,
    );
    assert!(!r.ok);
    assert!(
        r.stdout.contains("inclusion    FAILED: no leaf")
            && r.stdout.contains(&hex::encode(alg.leaf(&rec))),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("OK: event"), "{}", r.stdout);

    // Bad line 7 of 12, batches of 4: the first batch is stored, the second refused at
    // line 7, nothing after.
    let size0 = d.log().2;
    let mut lines: Vec<Vec<u8>> = (100..112).map(|n| event(n, 300)).collect();
    lines[6] = br#"{"not": "an audit event"}"#.to_vec();
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|l| [&l[..], b"\n"].concat())
        .collect();
    let r = run(
        &d,
        "writer",
        &["send", "--batch", "4", "--receipts", &tmp("r")],
        Some(&body),
    );
    assert!(!r.ok);
    for want in [
        "batch 2 (stdin lines 5..=8) refused at stdin line 7".to_string(),
        "HTTP 400 bad_event".to_string(),
        format!(
            "4 events in 1 requests were stored before it (indexes {}..={})",
            size0,
            size0 + 3
        ),
    ] {
        assert!(r.stderr.contains(&want), "missing {want:?} in {}", r.stderr);
    }
    assert_eq!(d.log().2, size0 + 4, "only the first batch is stored");
    let kept = std::fs::read_to_string(tmp("r")).expect("receipts");
    assert_eq!(
        kept.lines().count(),
        4,
        "receipts of what was stored are kept"
    );

    // Wrong token: the server's refusal is shown.
    let r = run(&d, "writer", &["--token", "nope", "get", "0"], None);
    assert!(!r.ok);
    assert!(r.stderr.contains("HTTP 401 unauthorized"), "{}", r.stderr);
}

/// `--token-file`: the token is read from a file (its line break ignored) instead of the
/// command line; a missing, empty or many-line file and `--token` alongside are refused,
/// with the file named. Also for `export`, which takes its own connection flags.
#[test]
fn token_file_instead_of_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path());
    let file = dir.path().join("auditor.token");
    std::fs::write(&file, format!("{}\n", d.token("auditor"))).expect("write token");
    let file_arg = file.to_str().expect("utf-8 path");
    let cli = |args: &[&str]| {
        let out = client_command()
            .args(args)
            .env("AUDITLOG_URL", &d.base)
            .env_remove("AUDITLOG_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run auditlog");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("$ auditlog {}\n{stderr}-> {}", args.join(" "), out.status);
        (out.status.success(), stderr)
    };

    // `--min-size 0` waits for the first checkpoint (a fresh daemon may not have signed it
    // yet: without it the call was refused 503 under load, seen in a soak run).
    let (ok, stderr) = cli(&["--token-file", file_arg, "checkpoint", "--min-size", "0"]);
    assert!(ok, "{stderr}");
    // Without any token the same call is refused: the file's token was the one sent.
    let (ok, stderr) = cli(&["checkpoint", "--min-size", "0"]);
    assert!(!ok && stderr.contains("401"), "{stderr}");
    let (ok, stderr) = cli(&["export", "--token-file", file_arg, "--format", "csv"]);
    assert!(ok, "{stderr}");

    let (ok, stderr) = cli(&[
        "--token",
        "x",
        "--token-file",
        file_arg,
        "checkpoint",
        "--min-size",
        "0",
    ]);
    assert!(!ok && stderr.contains("--token-file"), "{stderr}");
    // The file overrides the environment's token rather than conflicting with it.
    let out = client_command()
        .args(["--token-file", file_arg, "checkpoint", "--min-size", "0"])
        .env("AUDITLOG_URL", &d.base)
        .env("AUDITLOG_TOKEN", "not-a-token")
        .output()
        .expect("run auditlog");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = dir.path().join("missing.token");
    let (ok, stderr) = cli(&[
        "--token-file",
        missing.to_str().expect("utf-8"),
        "checkpoint",
    ]);
    assert!(!ok && stderr.contains("missing.token"), "{stderr}");
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n").expect("write");
    let (ok, stderr) = cli(&[
        "--token-file",
        empty.to_str().expect("utf-8"),
        "checkpoint",
        "--min-size",
        "0",
    ]);
    assert!(!ok && stderr.contains("empty"), "{stderr}");
    let initial = dir.path().join("data/initial-tokens");
    let (ok, stderr) = cli(&[
        "--token-file",
        initial.to_str().expect("utf-8"),
        "checkpoint",
    ]);
    assert!(!ok && stderr.contains("more than one line"), "{stderr}");
}

/// The daemon's front-door flags: `--version` of both binaries names the formats version;
/// `check-config` prints the effective values with secrets redacted and exits 0, or exits
/// non-zero naming the bad field; `--log-format json` writes one JSON object a line, and
/// text logs carry no ANSI escapes when stderr is not a terminal.
#[test]
fn version_check_config_and_log_formats() {
    use auditlog_tests::daemon::{daemon_command, daemon_exe};
    use std::io::{BufRead, BufReader};
    for exe in [daemon_exe(), client_exe()] {
        let out = Command::new(&exe).arg("--version").output().expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("(formats 2)"),
            "{text}"
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nconnections_max = 7\n[replication]\ntarget = \"s3://b/p\"\n[replication.options]\nsecret_access_key = \"TOPSECRETVALUE\"\n",
    )
    .expect("write");
    let out = daemon_command()
        .args(["check-config"])
        .arg(&good)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("connections_max: 7"), "{text}");
    assert!(
        !text.contains("TOPSECRETVALUE") && text.contains("redacted"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nconnections_maks = 7\n").expect("write");
    let out = daemon_command()
        .args(["check-config"])
        .arg(&bad)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connections_maks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One start per log format; the first lines it logs are read, then it is stopped.
    // Small segments: the default 256 MiB would be zero-filled before the first line.
    for format in ["json", "text"] {
        let mut child = Daemon::launch(dir.path())
            .data_dir(&dir.path().join(format!("data-{format}")))
            .args(["--log-format", format])
            .rust_log("info")
            .command()
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn auditlogd");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let first = lines.next().expect("a log line").expect("utf-8 log line");
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(child.wait().expect("wait").success());
        for line in std::iter::once(&first).chain(rest.iter()) {
            assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
        }
        if format == "json" {
            let v: Value = serde_json::from_str(&first).expect("a JSON log line");
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "{key} missing in {first}");
            }
        }
    }
}

/// The deployment files are valid as their tools read them: every Kubernetes manifest
/// against the API schemas (`kubernetes-validate --strict`), the ConfigMap's configuration
/// by `auditlogd check-config`, the systemd unit by `systemd-analyze verify`; and each
/// check fails on a broken copy, so it can fail. The pod's constraints are the ones the
/// docs promise.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs kubernetes-validate, systemd-analyze: ./scripts/test"
)]
fn deployment_files_validate() {
    use auditlog_tests::daemon::{daemon_command, daemon_exe};
    use auditlog_tests::tools::{require, Tool};
    require(Tool::KubernetesValidate);
    require(Tool::SystemdAnalyze);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let k8s = root.join("deploy/kubernetes");
    let tmp = tempfile::tempdir().expect("tmp");
    let validate = |file: &Path| {
        Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(file)
            .output()
            .expect("kubernetes-validate")
    };
    let mut manifests: Vec<_> = std::fs::read_dir(&k8s)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 5, "{manifests:?}");
    for m in &manifests {
        let out = validate(m);
        assert!(
            out.status.success(),
            "{}: {}{}",
            m.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sts = std::fs::read_to_string(k8s.join("statefulset.yaml")).expect("statefulset");
    for want in [
        "runAsNonRoot: true",
        "runAsUser: 10001",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "path: /health",
        "path: /ready",
        "prometheus.io/port: \"9090\"",
        "containerPort: 9090",
        "mountPath: /var/lib/auditlog",
    ] {
        assert!(sts.contains(want), "statefulset.yaml lacks {want:?}");
    }
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(&broken, sts.replace("replicas: 1", "replicas: one")).expect("write");
    assert!(
        !validate(&broken).status.success(),
        "a broken manifest passed"
    );

    // The ConfigMap's TOML: the lines under `auditlogd.toml: |`, less their indent.
    let cm = std::fs::read_to_string(k8s.join("configmap.yaml")).expect("configmap");
    let toml: String = cm
        .split_once("auditlogd.toml: |\n")
        .expect("the config key")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim()))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(toml.contains("ops_addr = \"0.0.0.0:9090\""), "{toml}");
    assert!(toml.contains("data_dir = \"/var/lib/auditlog\""), "{toml}");
    let config = tmp.path().join("auditlogd.toml");
    std::fs::write(&config, &toml).expect("write");
    let out = daemon_command()
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The unit, with ExecStart pointing at this build (systemd-analyze wants it to exist).
    let unit =
        std::fs::read_to_string(root.join("deploy/systemd/auditlogd.service")).expect("unit");
    for want in [
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/auditlog",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "LimitNOFILE=",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(want), "auditlogd.service lacks {want}");
    }
    let verify = |text: &str| {
        let path = tmp.path().join("auditlogd.service");
        std::fs::write(&path, text).expect("write");
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze")
    };
    let here = unit.replace(
        "/usr/local/bin/auditlogd",
        &daemon_exe().display().to_string(),
    );
    // Clean: exit 0 and not a word (systemd-analyze only warns, exit 0, on a bad setting).
    let out = verify(&here);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(&here.replace("Type=simple", "Type=sometimes"));
    assert!(!out.stderr.is_empty(), "a bad setting passed unnoticed");
    let out = verify(&here.replace(
        &daemon_exe().display().to_string(),
        "/nonexistent/auditlogd",
    ));
    assert!(!out.status.success(), "a missing binary passed");
}

/// The daemon runs under the constraints the deployment files declare (deploy/): uid and gid
/// 10001, no capabilities, no new privileges, a read-only root file system with only its
/// directory writable; there it ingests, signs, proves, shuts down cleanly, and the log it
/// wrote verifies offline.
#[test]
fn runs_under_the_deployment_constraints() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "setting up the constrained run needs root (./scripts/test and CI run as root)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = Daemon::start_constrained(dir.path(), auditlog_tests::daemon::CONFIG);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(field("Uid:").iter().all(|u| u == "10001"), "{status}");
    assert!(field("Gid:").iter().all(|g| g == "10001"), "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    // Its root is mounted read-only; its directory is not.
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).expect("mountinfo");
    let options = |point: &str| {
        mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 5 && f[4] == point)
            .map(|f| f[5].to_string())
            .next_back()
            .unwrap_or_else(|| panic!("no mount at {point} in\n{mounts}"))
    };
    assert!(options("/").starts_with("ro"), "{}", options("/"));
    let own = dir.path().canonicalize().expect("dir");
    assert!(
        options(&own.display().to_string()).starts_with("rw"),
        "{mounts}"
    );

    let (key, _, _) = d.log();
    let k = key.to_string();
    let events: Vec<Vec<u8>> = (0..50).map(|n| event(n, 300)).collect();
    let r = d.post("application/x-ndjson", &ndjson(&events));
    assert_eq!(r.status, 200, "{}", r.text());
    let cp = d.checkpoint(d.first + 50, &key);
    assert!(cp.size >= d.first + 50);
    let r = must(run(
        &d,
        "auditor",
        &["prove", "--index", &(d.first + 7).to_string(), "--key", &k],
        None,
    ));
    assert!(r.stdout.contains("OK: event"), "{}", r.stdout);
    d.stop();
    let out = client_command()
        .args(["verify"])
        .arg(dir.path().join("data"))
        .args(["--key", &k])
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
