//! Losing the writer: a standby (`--replica-of … --standby`) follows the bucket, takes the
//! writer's lease when it lapses, and becomes the writer; every acknowledged event is there,
//! at its index, with its leaf hash, and the log continues from the old writer's last
//! checkpoint. Part of the `worm_daemon` test binary.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlog_formats::note::{self, VerifierKey};
use auditlog_formats::tree;
use auditlog_tests::daemon::{hex32, Daemon};
use auditlog_tests::worm_servers::start_moto;
use auditlog_tests::{classified_event, s3_options};
use auditlog_worm::{RetentionPolicy, WormTarget};

/// The configuration of one node of the pair: same bucket, its own name.
fn node_config(
    dir: &Path,
    ep: &str,
    bucket: &str,
    node: &str,
    durability: &str,
) -> std::path::PathBuf {
    let config = dir.join("auditlogd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
submission_bytes_max = 524288
batch_bytes_max = 524288
segment_bytes = 1048576
block_raw_bytes = 16384
checkpoint_interval_ms = 50

[server]
body_bytes_max = 1048576

[replication]
target = "s3://{bucket}/log"
retry_ms_initial = 50
retry_ms_max = 300
poll_interval_ms = 20
latest_checkpoint_interval_ms = 100
tail_interval_ms = 100
durability = "{durability}"
lease_ms = 1500
node_name = "{node}"

[replication.options]
endpoint = "{ep}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
connect_timeout_ms = 300
request_timeout_ms = 2000

[replica]
poll_interval_ms = 50

[replica.options]
endpoint = "{ep}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
connect_timeout_ms = 300
request_timeout_ms = 2000
"#
        ),
    )
    .expect("config");
    config
}

/// Acknowledged events: index → leaf hash, as the receipts said, and when each came.
type Acked = Arc<Mutex<Vec<(u64, [u8; 32])>>>;
type AckTimes = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Posts batches of 50 events until `stop`, recording every receipt; a refused or failed
/// post (the writer gone) records nothing.
fn ingest_until(base: String, token: String, stop: Arc<AtomicBool>, acked: Acked) {
    ingest_timed(base, token, stop, acked, AckTimes::default())
}

/// `ingest_until`, noting when each batch's receipts came (first index of the batch).
fn ingest_timed(base: String, token: String, stop: Arc<AtomicBool>, acked: Acked, times: AckTimes) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let body: Vec<u8> = (n..n + 50)
            .flat_map(|i| {
                let mut e = classified_event(i, "UNCLASSIFIED");
                e.push(b'\n');
                e
            })
            .collect();
        n += 50;
        let Ok(r) = agent
            .post(&format!("{base}/v1/events"))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/x-ndjson")
            .send_bytes(&body)
        else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let text = r.into_string().expect("body");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let now = Instant::now();
        let mut a = acked.lock().expect("lock");
        if let Some(first) = v["receipts"][0]["index"].as_u64() {
            times.lock().expect("lock").push((first, now));
        }
        for x in v["receipts"].as_array().expect("receipts") {
            a.push((
                x["index"].as_u64().expect("index"),
                hex32(x["leaf_hash"].as_str().expect("leaf")),
            ));
        }
    }
}

/// `index → leaf hash` of `[start, end)` as `d` serves it (`/v1/events?start&end`).
fn leaves(d: &Daemon, start: u64, end: u64) -> Vec<(u64, [u8; 32])> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let stop = (at + 5000).min(end);
        let r = d.get(&format!("/v1/events?start={at}&end={stop}"), "auditor");
        assert_eq!(r.status, 200, "{}", r.text());
        for line in r.text().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            out.push((
                v["index"].as_u64().expect("index"),
                hex32(v["leaf_hash"].as_str().expect("leaf")),
            ));
        }
        at = stop;
    }
    out
}

fn signed_note(d: &Daemon, min_size: u64, key: &VerifierKey) -> note::Checkpoint {
    d.checkpoint(min_size, key)
}

/// Kill -9 the writer under steady ingest in `remote` durability: the standby takes over
/// within the lease period plus its catch-up; every acknowledged event is present at its
/// index with its leaf hash; the first checkpoint after takeover is consistent with the
/// last one before; the new writer takes events; the bucket verifies.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn kill_the_writer_in_remote_mode_and_the_standby_loses_nothing() {
    let moto = start_moto();
    let ep = moto.endpoint();
    auditlog_worm::create_bucket("s3://pair", &s3_options(&ep), true).expect("bucket");
    let a = tempfile::tempdir().expect("tmp");
    let b = tempfile::tempdir().expect("tmp");
    // The signing key both nodes reach (an HSM in production): here the same key file.
    let (mut writer, mut standby, key, alg) = pair(&ep, "pair", "remote", a.path(), b.path());

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let ingest = {
        let (base, token, stop, acked) = (
            writer.base.clone(),
            writer.token("writer"),
            stop.clone(),
            acked.clone(),
        );
        std::thread::spawn(move || ingest_until(base, token, stop, acked))
    };
    // Steady ingest for a while, the standby following.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 20_000 {
        assert!(Instant::now() < deadline, "ingest too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = signed_note(&writer, 1, &key);
    writer.kill9();
    let killed = Instant::now();
    stop.store(true, Ordering::SeqCst);
    ingest.join().expect("ingest thread");
    let acked = acked.lock().expect("lock").clone();
    let last_acked = acked.iter().map(|x| x.0).max().expect("acked some");

    // The standby takes the lease, catches up and re-executes itself as the writer.
    standby.wait_relisten(Duration::from_secs(60));
    let took = killed.elapsed();
    println!(
        "takeover {:.2} s after kill -9 (lease 1.5 s); {} events acknowledged",
        took.as_secs_f64(),
        acked.len()
    );
    let size = standby.tree_size();
    assert!(size > last_acked, "size {size}, last acked {last_acked}");
    let served: std::collections::HashMap<u64, [u8; 32]> =
        leaves(&standby, 0, size).into_iter().collect();
    for (i, leaf) in &acked {
        assert_eq!(served.get(i), Some(leaf), "acknowledged event {i}");
    }
    // The new writer's checkpoint extends the old one's.
    let after = signed_note(&standby, size, &key);
    assert!(after.size >= before.size);
    let r = standby.get(
        &format!(
            "/v1/proof/consistency?from={}&to={}",
            before.size, after.size
        ),
        "auditor",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let proof: Vec<[u8; 32]> = r.json()["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| hex32(h.as_str().expect("hex")))
        .collect();
    tree::verify_consistency(
        alg,
        before.size,
        after.size,
        &before.root,
        &after.root,
        &proof,
    )
    .expect("the checkpoint after takeover is consistent with the one before");
    // It writes now.
    let idx = standby.post_events(&[classified_event(1_000_000, "UNCLASSIFIED")]);
    assert_eq!(idx, vec![size]);
    standby.stop();
    // The segments it followed count as shipped: none went to the store again.
    let manifest = std::fs::read(b.path().join("data/replication/manifest.log")).expect("manifest");
    let (entries, _) = auditlog_formats::checkpoint_log::parse_log(&manifest);
    let segments: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(e).expect("entry"))
        .filter(|v| v["kind"] == "segment")
        .collect();
    assert!(
        segments.iter().any(|v| v["outcome"] == "followed"),
        "the standby followed sealed segments: {segments:?}"
    );
    assert!(
        segments.iter().all(|v| v["outcome"] != "already_there"),
        "a followed segment was uploaded again: {segments:?}"
    );

    // The bucket, read alone, verifies to its end.
    let target: Arc<dyn WormTarget> = auditlog_worm::open("s3://pair/log", &s3_options(&ep))
        .expect("target")
        .into();
    let history = auditlog_formats::keyhistory::KeyHistory::single(&key)
        .check()
        .expect("history");
    let (summary, _) = auditlog_client::bucket::verify_bucket(
        target,
        &history,
        &RetentionPolicy::default(),
        &mut |_, _| {},
    )
    .expect("the bucket verifies after takeover");
    assert_eq!(summary.events, size + 1);
}

/// Starts a writer (node-a) and its standby (node-b) on `bucket`; the signing key both
/// reach (an HSM in production) is here the same key file.
fn pair(
    ep: &str,
    bucket: &str,
    durability: &str,
    a: &Path,
    b: &Path,
) -> (Daemon, Daemon, VerifierKey, auditlog_formats::TreeHash) {
    let cfg_a = node_config(a, ep, bucket, "node-a", durability);
    let writer = Daemon::launch(a)
        .config_file(&cfg_a)
        .rust_log("error")
        .start();
    let (key, alg, _) = writer.log();
    let key_dir = b.join("data/keys");
    std::fs::create_dir_all(&key_dir).expect("key dir");
    std::fs::copy(
        a.join("data/keys/checkpoint.key"),
        key_dir.join("checkpoint.key"),
    )
    .expect("copy key");
    let cfg_b = node_config(b, ep, bucket, "node-b", durability);
    let standby = Daemon::launch(b)
        .config_file(&cfg_b)
        .rust_log("error")
        .replica_of(&format!("s3://{bucket}/log"))
        .arg("--standby")
        .start();
    (writer, standby, key, alg)
}

/// `local` durability, the writer's machine lost (killed, its data directory destroyed):
/// what is missing after takeover is only what was acknowledged in the last tail interval
/// (100 ms) plus one upload before the kill; the test reports how many.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn lose_the_writer_and_its_disk_in_local_mode_and_lose_at_most_the_tail_interval() {
    let moto = start_moto();
    let ep = moto.endpoint();
    auditlog_worm::create_bucket("s3://local-pair", &s3_options(&ep), true).expect("bucket");
    let a = tempfile::tempdir().expect("tmp");
    let b = tempfile::tempdir().expect("tmp");
    let (mut writer, mut standby, _, _) = pair(&ep, "local-pair", "local", a.path(), b.path());
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let times: AckTimes = Arc::default();
    let ingest = {
        let (base, token, stop, acked, times) = (
            writer.base.clone(),
            writer.token("writer"),
            stop.clone(),
            acked.clone(),
            times.clone(),
        );
        std::thread::spawn(move || ingest_timed(base, token, stop, acked, times))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 20_000 {
        assert!(Instant::now() < deadline, "ingest too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.kill9();
    let killed = Instant::now();
    std::fs::remove_dir_all(a.path().join("data")).expect("the disk is gone");
    stop.store(true, Ordering::SeqCst);
    ingest.join().expect("ingest thread");
    standby.wait_relisten(Duration::from_secs(60));
    let size = standby.tree_size();
    let acked = acked.lock().expect("lock").clone();
    let times = times.lock().expect("lock").clone();
    let served: std::collections::HashMap<u64, [u8; 32]> =
        leaves(&standby, 0, size).into_iter().collect();
    // Lost: absent, or (the new writer went on from where the store ended) another event
    // now at its index.
    let missing: Vec<u64> = acked
        .iter()
        .filter(|(i, leaf)| served.get(i) != Some(leaf))
        .map(|(i, _)| *i)
        .collect();
    // What was lost is a suffix: the store holds a prefix of the acknowledged log.
    if let Some(first_lost) = missing.iter().min() {
        assert!(
            acked
                .iter()
                .filter(|(i, _)| i > first_lost)
                .all(|(i, _)| missing.contains(i)),
            "losses are the end of the log only"
        );
    }
    // Every missing event is one acknowledged within the tail interval plus one upload
    // (here at most 1 s: a 100 ms interval and uploads to moto on loopback) of the kill.
    let window = Duration::from_secs(1);
    for i in &missing {
        let (_, at) = times
            .iter()
            .rev()
            .find(|(first, _)| first <= i)
            .expect("ack time");
        assert!(
            killed.duration_since(*at) <= window,
            "event {i} was acknowledged {:?} before the kill and is lost",
            killed.duration_since(*at)
        );
    }
    println!(
        "local durability, disk lost: {} of {} acknowledged events missing after takeover (all acknowledged in the last {window:?})",
        missing.len(),
        acked.len()
    );
    standby.stop();
}

/// The writer paused (SIGSTOP) past its lease: the standby takes over and continues;
/// resumed (SIGCONT), the old writer acknowledges nothing more, never signs a checkpoint
/// the new history does not contain, and started again as a replica it follows the new
/// writer (its own files set aside).
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn a_paused_writer_is_fenced_when_it_wakes_and_rejoins_as_a_replica() {
    let moto = start_moto();
    let ep = moto.endpoint();
    auditlog_worm::create_bucket("s3://paused", &s3_options(&ep), true).expect("bucket");
    let a = tempfile::tempdir().expect("tmp");
    let b = tempfile::tempdir().expect("tmp");
    let (mut writer, mut standby, key, alg) = pair(&ep, "paused", "remote", a.path(), b.path());
    let events: Vec<Vec<u8>> = (0..500)
        .map(|i| classified_event(i, "UNCLASSIFIED"))
        .collect();
    writer.post_events(&events);
    // An HTTP client that will still be talking to the old writer when it wakes.
    let old_base = writer.base.clone();
    let old_token = writer.token("writer");
    writer.signal(libc::SIGSTOP);
    standby.wait_relisten(Duration::from_secs(60));
    let new_size = standby.post_events(&events[..100]);
    assert!(!new_size.is_empty());
    let after = signed_note(&standby, standby.tree_size(), &key);

    writer.signal(libc::SIGCONT);
    // It takes no more events: refused, or the request fails; never a receipt.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let body = [classified_event(7, "UNCLASSIFIED"), b"\n".to_vec()].concat();
    for _ in 0..5 {
        let r = agent
            .post(&format!("{old_base}/v1/events"))
            .set("Authorization", &format!("Bearer {old_token}"))
            .set("Content-Type", "application/x-ndjson")
            .send_bytes(&body);
        match r {
            Ok(resp) => panic!(
                "the fenced writer acknowledged: {}",
                resp.into_string().unwrap_or_default()
            ),
            Err(ureq::Error::Status(code, _)) => assert!(code >= 500, "status {code}"),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whatever it signed is in the new history: its newest checkpoint has the new writer's
    // root at its size.
    if writer.exited().is_none() {
        let r = writer.get("/v1/checkpoint", "auditor");
        if r.status == 200 {
            let (cp, _) =
                note::open_checkpoint(&r.text(), std::slice::from_ref(&key)).expect("signed");
            let r = standby.get(
                &format!("/v1/proof/consistency?from={}&to={}", cp.size, after.size),
                "auditor",
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let proof: Vec<[u8; 32]> = r.json()["hashes"]
                .as_array()
                .expect("hashes")
                .iter()
                .map(|h| hex32(h.as_str().expect("hex")))
                .collect();
            tree::verify_consistency(alg, cp.size, after.size, &cp.root, &after.root, &proof)
                .expect("the old writer's newest checkpoint is in the new history");
        }
    }
    drop(writer);
    // Restarted as a replica of the bucket, it follows the new writer.
    let cfg_a = a.path().join("auditlogd.toml");
    let replica = Daemon::launch(a.path())
        .config_file(&cfg_a)
        .rust_log("error")
        .replica_of("s3://paused/log")
        .start();
    let n = standby.tree_size();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.tree_size() < n {
        assert!(
            Instant::now() < deadline,
            "the rejoined replica does not follow"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let set_aside = std::fs::read_dir(a.path().join("data"))
        .expect("list")
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("former-writer-")
        });
    assert!(set_aside, "the former writer's files are kept aside");
    // Writes are refused, naming the writer (the lease's holder).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = replica.post("application/x-ndjson", &body);
        assert_eq!(r.status, 403, "{}", r.text());
        if r.text().contains("node-b") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer is not named: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    standby.stop();
}
