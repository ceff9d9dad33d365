//! The C2SP tlog-tiles read API checked by a client written elsewhere: Go's
//! `golang.org/x/mod/sumdb/tlog` and `note` (tests/go/tilesclient), knowing only the base
//! URL, the origin and the verifier key, verifies the checkpoint's signature, recomputes
//! the root from hash tiles and proves random entries from their entry bundles — against
//! the writer, and against a read replica following the writer's bucket (`file://`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use auditlog_formats::note::NoteSigner;
use auditlog_tests::classified_event;
use auditlog_tests::daemon::Daemon;
use auditlog_tests::tools::build_go;
use serde_json::Value;

/// Over 256·256 leaves and not a multiple of 256: full level-0 and level-1 tiles, and a
/// partial tile at levels 0, 1 and 2 (C2SP's own example size is 70,000).
const EVENTS: u64 = 70_000;

fn writer_config(bucket: &Path) -> String {
    format!(
        r#"
[engine]
submission_bytes_max = 1048576
batch_bytes_max = 1048576
segment_bytes = 4194304
block_raw_bytes = 65536
checkpoint_interval_ms = 50

[server]
body_bytes_max = 4194304

[replication]
target = "file://{}"
allow_non_worm = true
tail_interval_ms = 50
poll_interval_ms = 20
latest_checkpoint_interval_ms = 100
"#,
        bucket.display()
    )
}

const REPLICA_CONFIG: &str = r#"
[replica]
poll_interval_ms = 50
"#;

/// Runs the Go client; its JSON summary and whether it exited 0.
fn tilesclient(exe: &Path, d: &Daemon, origin: &str, vkey: &str, k: u32) -> (Value, bool) {
    let out = Command::new(exe)
        .args(["-url", &d.base, "-origin", origin, "-vkey", vkey])
        .args(["-k", &k.to_string(), "-token", &d.token("auditor")])
        .output()
        .expect("run tilesclient");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tilesclient printed no JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (summary, out.status.success())
}

/// A GET with the auditor's token: status and `Cache-Control`.
fn head(d: &Daemon, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = d.agent.get(&format!("{}{path}", d.base));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let cache = resp.header("cache-control").unwrap_or("").to_string();
    (resp.status(), cache)
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs Go and golang.org/x/mod: ./scripts/test"
)]
fn a_go_tlog_client_verifies_the_writer_and_a_replica_through_the_tiles_api() {
    let dir = tempfile::tempdir().expect("tmp");
    let exe = build_go("tilesclient", dir.path());
    let bucket = dir.path().join("bucket");
    for d in ["bucket", "writer", "replica"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    let w = Daemon::launch(&dir.path().join("writer"))
        .config(&writer_config(&bucket))
        .rust_log("error")
        .start();
    let mut n = 0;
    while n < EVENTS {
        let count = (EVENTS - n).min(10_000);
        let events: Vec<Vec<u8>> = (n..n + count)
            .map(|i| classified_event(i, "CUI//BASIC"))
            .collect();
        w.post_events(&events);
        n += count;
    }
    let (key, _, _) = w.log();
    let origin = w.get("/v1/log", "auditor").json()["origin"]
        .as_str()
        .expect("origin")
        .to_string();
    let size = w.tree_size();
    assert!(size >= EVENTS && !size.is_multiple_of(256), "size {size}");
    let cp = w.checkpoint(size, &key);
    let vkey = key.to_string();

    let (s, ok) = tilesclient(&exe, &w, &origin, &vkey, 40);
    assert!(ok, "the Go client failed against the writer: {s}");
    eprintln!("tilesclient, writer: {s}");
    assert_eq!(s["root_verified"], true, "{s}");
    assert_eq!(s["entries_proved"], 40, "{s}");
    let served = s["size"].as_u64().expect("size");
    let root = s["root"].clone();
    assert!(served >= cp.size, "{s}");

    // A key that did not sign the checkpoint: refused before any tile is trusted.
    let other = NoteSigner::from_seed(key.name(), [9; 32])
        .expect("signer")
        .verifier_key()
        .to_string();
    let (s, ok) = tilesclient(&exe, &w, &origin, &other, 1);
    assert!(!ok, "a wrong key passed: {s}");
    assert!(
        s["error"].as_str().unwrap_or("").contains("signature"),
        "{s}"
    );
    assert_eq!(s["root_verified"], false);

    // Around the edges, on the writer: past the newest checkpoint is 404, a malformed path
    // 400, no credentials 401; full tiles are immutable (private: the API asks for a
    // token), partial ones and the checkpoint short-lived.
    let auditor = w.token("auditor");
    let t = Some(auditor.as_str());
    let beyond = served.div_ceil(256) + 1;
    assert_eq!(head(&w, &format!("/tile/entries/{beyond:03}"), t).0, 404);
    assert_eq!(head(&w, "/tile/entries/000.p/0", t).0, 400);
    assert_eq!(head(&w, "/tile/0/x000/001", t).0, 400);
    assert_eq!(head(&w, "/tile/0/000", None).0, 401);
    assert_eq!(head(&w, "/checkpoint", None).0, 401);
    let (status, cache) = head(&w, "/tile/1/000", t);
    assert_eq!(status, 200);
    assert_eq!(cache, "private, max-age=31536000, immutable");
    let (status, cache) = head(&w, "/tile/entries/100", t);
    assert_eq!(
        (status, cache.as_str()),
        (200, "private, max-age=31536000, immutable")
    );
    let (status, cache) = head(&w, "/checkpoint", t);
    assert_eq!((status, cache.as_str()), (200, "private, max-age=2"));
    let reader = w.token("reader");
    assert_eq!(head(&w, "/tile/entries/000", Some(&reader)).0, 200);
    assert_eq!(head(&w, "/tile/0/000", Some(&reader)).0, 403);

    // A read replica of the bucket serves the same log up to the checkpoint it verified.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bucket.join("log.json").exists() {
        assert!(
            Instant::now() < deadline,
            "the writer's metadata never shipped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = Daemon::launch(&dir.path().join("replica"))
        .config(REPLICA_CONFIG)
        .rust_log("error")
        .replica_of(&format!("file://{}", bucket.display()))
        .start();
    while r.tree_size() < served {
        assert!(
            Instant::now() < deadline,
            "the replica did not reach {served}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, ok) = tilesclient(&exe, &r, &origin, &vkey, 20);
    assert!(ok, "the Go client failed against the replica: {s}");
    eprintln!("tilesclient, replica: {s}");
    assert_eq!(s["root_verified"], true, "{s}");
    assert_eq!(s["entries_proved"], 20, "{s}");
    // Nothing was ingested since: the same tree.
    assert_eq!((s["size"].as_u64(), &s["root"]), (Some(served), &root));
}
