//! The WORM store goes away mid-run: the real `auditlogd` replicating to moto keeps taking
//! events while moto is stopped (SIGSTOP), its lag grows and shows in `/metrics` and
//! `/ready`, and once moto runs again everything ships, each object once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_client::bucket::verify_bucket;
use auditlog_formats::note::VerifierKey;
use auditlog_tests::daemon::Daemon;
use auditlog_tests::worm_servers::{boto3, start_moto};
use auditlog_tests::{classified_event, s3_options};
use auditlog_worm::{RetentionPolicy, WormTarget};

/// What these tests ask of the daemon, on top of the shared harness.
trait Ask {
    fn get_text(&self, path: &str, role: &str) -> (u16, String);
    fn get_bytes(&self, path: &str, role: &str) -> (u16, Vec<u8>);
    fn metric_of(&self, name: &str) -> u64;
    fn ingest(&self, n0: u64, count: u64);
}

impl Ask for Daemon {
    fn get_text(&self, path: &str, role: &str) -> (u16, String) {
        let r = self.get(path, role);
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    fn get_bytes(&self, path: &str, role: &str) -> (u16, Vec<u8>) {
        let r = self.get(path, role);
        (r.status, r.body)
    }

    fn metric_of(&self, name: &str) -> u64 {
        self.metric(name)
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }

    fn ingest(&self, n0: u64, count: u64) {
        let body: Vec<u8> = (n0..n0 + count)
            .flat_map(|i| {
                let mut e = classified_event(i, "CUI//BASIC");
                e.push(b'\n');
                e
            })
            .collect();
        let started = Instant::now();
        let r = self.post("application/x-ndjson", &body);
        assert_eq!(r.status, 200, "ingest: {}", r.text());
        // Ingest never waits for the store.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "ingest took {:?}",
            started.elapsed()
        );
    }
}

/// Starts `auditlogd` in `dir` replicating to `s3://<bucket>/log` on moto at `ep`, with
/// small segments and fast retries; `extra` is appended to the `[replication]` section.
fn start_daemon(dir: &Path, ep: &str, bucket: &str, extra: &str) -> Daemon {
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
ready_lag_ms_max = 1000
{extra}

[replication.options]
endpoint = "{ep}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
connect_timeout_ms = 300
request_timeout_ms = 700
"#
        ),
    )
    .expect("config");
    Daemon::launch(dir)
        .config_file(&config)
        .rust_log("error")
        .agent_timeout(Duration::from_secs(20))
        .start()
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn store_down_lag_grows_and_shipping_resumes() {
    let moto = start_moto();
    let ep = moto.endpoint();
    auditlog_worm::create_bucket("s3://down", &s3_options(&ep), true).expect("bucket");
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = start_daemon(dir.path(), &ep, "down", "");
    // Store up: segments ship.
    let mut n = 0;
    for _ in 0..12 {
        d.ingest(n, 1000);
        n += 1000;
    }
    d.wait_metric(
        "auditlog_replication_shipped_end",
        Duration::from_secs(30),
        |v| v > 0,
    );
    d.wait_metric(
        "auditlog_replication_segments_pending",
        Duration::from_secs(30),
        |v| v == 0,
    );
    assert_eq!(d.metric_of("auditlog_replication_worm_enforced"), 1);

    // Store stopped: ingest goes on, lag grows and is reported.
    moto.signal(libc::SIGSTOP);
    let shipped_before = d.metric_of("auditlog_replication_shipped_end");
    for _ in 0..12 {
        d.ingest(n, 1000);
        n += 1000;
    }
    let pending = d.wait_metric(
        "auditlog_replication_segments_pending",
        Duration::from_secs(30),
        |v| v >= 2,
    );
    d.wait_metric(
        "auditlog_replication_failures_total",
        Duration::from_secs(30),
        |v| v > 0,
    );
    d.wait_metric(
        "auditlog_replication_oldest_pending_age_milliseconds",
        Duration::from_secs(30),
        |v| v > 1000,
    );
    assert!(d.metric_of("auditlog_replication_bytes_pending") > 0);
    assert_eq!(
        d.metric_of("auditlog_replication_shipped_end"),
        shipped_before
    );
    let (status, body) = d.get_text("/ready", "admin");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("replication lag"), "{body}");
    eprintln!("store down: {pending} segments pending");

    // Store back: everything ships, /ready recovers.
    moto.signal(libc::SIGCONT);
    d.wait_metric(
        "auditlog_replication_segments_pending",
        Duration::from_secs(30),
        |v| v == 0,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get_text("/ready", "admin").0 != 200 {
        assert!(Instant::now() < deadline, "not ready again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, log) = d.get_text("/v1/log", "auditor");
    let log: serde_json::Value = serde_json::from_str(&log).expect("log json");
    let key = VerifierKey::parse(log["verifier_keys"][0].as_str().expect("key")).expect("key");
    let shipped_end = d.metric_of("auditlog_replication_shipped_end");
    d.stop();

    // Nothing lost, nothing doubled.
    let versions = boto3(
        &ep,
        r#"
from collections import Counter
c = Counter(v['Key'] for v in s3.list_object_versions(Bucket='down').get('Versions', []))
print(max(n for k, n in c.items() if k != 'log/checkpoint'))"#,
    );
    assert_eq!(versions.trim(), "1", "an object was stored twice");
    let target: Arc<dyn WormTarget> = auditlog_worm::open("s3://down/log", &s3_options(&ep))
        .expect("target")
        .into();
    let (summary, report) = verify_bucket(
        target,
        &auditlog_formats::keyhistory::KeyHistory::single(&key)
            .check()
            .expect("one-key history"),
        &RetentionPolicy::default(),
        &mut |_, _| {},
    )
    .expect("verify");
    assert!(summary.events >= shipped_end && summary.events > shipped_before);
    assert!(report.short.is_empty(), "{:?}", report.short);
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn pruned_events_served_from_the_store_and_503_while_it_is_down() {
    let moto = start_moto();
    let ep = moto.endpoint();
    auditlog_worm::create_bucket("s3://pruned", &s3_options(&ep), true).expect("bucket");
    let dir = tempfile::tempdir().expect("tmp");
    let d = start_daemon(
        dir.path(),
        &ep,
        "pruned",
        "local_keep_ms = 0\nstore_read_cache_segments_max = 1",
    );
    // The daemon's start event is index 0; event k is at index f + k, and the log holds n.
    let (_, log) = d.get_text("/v1/log", "auditor");
    let log: serde_json::Value = serde_json::from_str(&log).expect("log json");
    let f = log["tree_size"].as_u64().expect("tree_size");
    let n = f + 12_000u64;
    for k in 0..12 {
        d.ingest(k * 1000, 1000);
    }
    d.wait_metric("auditlog_pruned_segments", Duration::from_secs(30), |v| {
        v >= 2
    });
    assert!(d.metric_of("auditlog_pruned_bytes") > 0);

    // Every event reads, as JSON and as record bytes; pruned ones come from the store.
    for i in (0..n - f).step_by(397).chain([n - f - 1]) {
        let (status, body) = d.get_text(&format!("/v1/events/{}", f + i), "reader");
        assert_eq!(status, 200, "{i}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["event"]["actor"], format!("user-{i}"), "{body}");
        let (status, rec) = d.get_bytes(&format!("/v1/events/{}?format=record", f + i), "reader");
        assert_eq!(status, 200);
        let r = auditlog_formats::record::Record::parse(&rec).expect("record");
        assert_eq!(r.payload, &classified_event(i, "CUI//BASIC")[..]);
    }
    let (status, body) = d.get_text("/v1/events?start=0&end=500", "reader");
    assert_eq!(status, 200);
    assert_eq!(body.lines().count(), 500);
    let (status, body) = d.get_text(&format!("/v1/export?format=json&start=0&end={n}"), "reader");
    assert_eq!(status, 200);
    assert_eq!(body.lines().count() as u64, n, "export incomplete");
    let (status, _) = d.get_text(
        &format!("/v1/checkpoint?min_size={n}&wait_ms=5000"),
        "auditor",
    );
    assert_eq!(status, 200);
    let (status, body) = d.get_text(&format!("/v1/proof/inclusion?index=0&size={n}"), "auditor");
    assert_eq!(status, 200, "{body}");
    assert!(d.metric_of("auditlog_store_reads_total") >= 2);

    // Store down: a pruned index gets 503 store_unavailable; everything else is served.
    moto.signal(libc::SIGSTOP);
    let (status, body) = d.get_text(&format!("/v1/events/{f}"), "reader");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    for path in [
        "/v1/events?start=0&end=10",
        "/v1/export?format=cef&start=0&end=10",
    ] {
        let (status, body) = d.get_text(path, "reader");
        assert_eq!(status, 503, "{path}: {body}");
    }
    let (status, _) = d.get_text(&format!("/v1/events/{}", n - 1), "reader");
    assert_eq!(status, 200, "the cached or local segment still reads");
    let (status, body) = d.get_text(&format!("/v1/proof/inclusion?index=0&size={n}"), "auditor");
    assert_eq!(status, 200, "proofs need no records: {body}");
    assert_eq!(d.get_text("/health", "reader").0, 200);
    assert!(d.metric_of("auditlog_store_read_failures_total") >= 1);

    // Store back: the same read works.
    moto.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = d.get_text(&format!("/v1/events/{f}"), "reader");
        if status == 200 {
            assert!(body.contains("user-0"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still {status}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[path = "worm_daemon/takeover.rs"]
mod takeover;
#[path = "worm_daemon/tiles.rs"]
mod tiles;
