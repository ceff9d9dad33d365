//! Replication to WORM storage against real stores: moto's S3 server (Object Lock enforced),
//! Azurite (immutability accepted, not enforced: the requests are checked instead) and a
//! recording GCS server (no emulator enforces retention). Each test has its own store
//! process, bucket and data directory.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_client::bucket::verify_bucket;
use auditlog_engine::{Engine, EngineConfig, EngineError, ReplicationStatus};
use auditlog_formats::segment::{self, SegmentHeader, TRAILER_BYTES};
use auditlog_tests::daemon::client_command;
use auditlog_tests::worm_servers::*;
use auditlog_tests::{classified_event, replication, s3_options, small_config};
use auditlog_worm::{Lock, PutOutcome, RetentionPolicy, TargetOptions, WormError, WormTarget};
use rand::{Rng, SeedableRng};

#[path = "worm/lease_store.rs"]
mod lease_store;
#[path = "worm/prune.rs"]
mod prune;
#[path = "worm/replica.rs"]
mod replica;
#[path = "worm/tail.rs"]
mod tail;

const CLASSES: [&str; 3] = ["UNCLASSIFIED", "CUI//SP-PRIV", "CUI//BASIC"];

/// Ingests until `segments` segments are sealed, one classification per segment.
fn ingest_sealed(engine: &Engine, segments: usize) {
    let mut n = engine.tree_size();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.status().sealed_segments < segments {
        assert!(Instant::now() < deadline, "segments did not seal");
        // By the segment being written (the sealed ones, plus those rotated out and still
        // being sealed), not by the sealed count alone: sealing runs behind, and a slow
        // sealer left every segment with one class.
        let st = engine.status();
        let rotated = st.sealed_segments + st.open_segments.saturating_sub(1);
        let class = CLASSES[rotated % CLASSES.len()];
        let evs: Vec<Vec<u8>> = (n..n + 200).map(|i| classified_event(i, class)).collect();
        engine
            .append_payloads(evs.iter().map(|e| e.as_slice()))
            .expect("append");
        n += 200;
    }
}

fn wait_shipped(engine: &Engine) -> ReplicationStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settled = 0;
    loop {
        let st = engine.status();
        let r = st.replication.clone().expect("replication on");
        assert!(r.alarm.is_none(), "alarm: {r:?}");
        // Nothing left to seal, nothing to ship, and still so a few polls later (the
        // replicator's idle flag can predate a segment the sealer just finished).
        if r.segments_pending == 0 && r.idle && st.sealed_segments > 0 && st.open_segments == 1 {
            settled += 1;
            if settled == 3 {
                return r;
            }
            std::thread::sleep(Duration::from_millis(60));
            continue;
        }
        settled = 0;
        assert!(Instant::now() < deadline, "not shipped: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (file name, sealed_at seconds, max classification) of every sealed segment in `dir`.
fn sealed_footers(dir: &Path) -> Vec<(String, u64, u8)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("segments")).expect("list") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with(".seg") {
            continue;
        }
        let b = std::fs::read(e.path()).expect("read");
        let header = SegmentHeader::decode(&b[..segment::HEADER_BYTES]).expect("header");
        let trailer = segment::decode_trailer(b.len() as u64, &b[b.len() - TRAILER_BYTES..])
            .expect("trailer");
        let at = trailer.footer_offset as usize;
        let footer = segment::decode_footer(
            &header,
            &trailer,
            &b[at..at + trailer.footer_bytes as usize],
        )
        .expect("footer");
        out.push((
            name,
            footer.sealed_at_unix_ns / 1_000_000_000,
            footer.max_classification,
        ));
    }
    out.sort();
    out
}

/// `key -> (versions, mode, retain_until unix s)` for every object, read with boto3.
fn s3_objects(endpoint: &str, bucket: &str) -> BTreeMap<String, (u64, String, u64)> {
    let out = boto3(
        endpoint,
        &format!(
            r#"
res = {{}}
for v in s3.list_object_versions(Bucket='{bucket}').get('Versions', []):
    k = v['Key']
    r = res.setdefault(k, [0, '', 0])
    r[0] += 1
    h = s3.head_object(Bucket='{bucket}', Key=k, VersionId=v['VersionId'])
    if 'ObjectLockMode' in h:
        r[1] = h['ObjectLockMode']; r[2] = int(h['ObjectLockRetainUntilDate'].timestamp())
print(json.dumps(res))"#
        ),
    );
    let v: HashMap<String, (u64, String, u64)> = serde_json::from_str(out.trim()).expect("json");
    v.into_iter().collect()
}

fn engine_with(
    dir: &Path,
    target: &str,
    opts: TargetOptions,
    allow_non_worm: bool,
) -> Result<Engine, EngineError> {
    let mut cfg: EngineConfig = small_config(dir);
    let mut r = replication(target, opts);
    r.allow_non_worm = allow_non_worm;
    // Small bundles, so that these few segments ship some (and the verifier reads them).
    r.tile_bundle_tiles = 4;
    cfg.replication = Some(r);
    Engine::open(cfg, None)
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn s3_object_lock_retention_refusals_and_verify() {
    let moto = start_moto();
    let ep = moto.endpoint();
    let opts = s3_options(&ep);
    auditlog_worm::create_bucket("s3://locked", &opts, true).expect("bucket with lock");
    auditlog_worm::create_bucket("s3://plain", &opts, false).expect("bucket");

    // A bucket without Object Lock cannot keep the promise: the engine refuses to start.
    let d0 = tempfile::tempdir().expect("tmp");
    match engine_with(d0.path(), "s3://plain/log", opts.clone(), false) {
        Err(EngineError::Config(why)) => assert!(
            why.contains("WORM") && why.contains("without Object Lock"),
            "{why}"
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("engine started with a non-WORM target"),
    }

    let dir = tempfile::tempdir().expect("tmp");
    let engine = engine_with(dir.path(), "s3://locked/log", opts.clone(), false).expect("open");
    let key = engine.verifier_key();
    ingest_sealed(&engine, 4);
    let st = wait_shipped(&engine);
    assert_eq!(st.worm_enforced, Some(true));
    engine.shutdown().expect("shutdown");

    let policy = RetentionPolicy::default();
    let objects = s3_objects(&ep, "locked");
    let footers = sealed_footers(dir.path());
    let mut classes: Vec<u8> = footers.iter().map(|f| f.2).collect();
    classes.dedup();
    assert!(
        classes.len() >= 2,
        "segments of different classes: {classes:?}"
    );
    for (name, sealed_at, class) in &footers {
        let (versions, mode, until) = objects
            .get(&format!("log/segments/{name}"))
            .unwrap_or_else(|| panic!("{name} not shipped"));
        assert_eq!(*versions, 1, "{name}");
        assert_eq!(mode, "COMPLIANCE", "{name}");
        assert_eq!(
            *until,
            policy.retain_until(*sealed_at, *class),
            "{name}: class {class}"
        );
    }
    let now = auditlog_engine::now_unix_ns() / 1_000_000_000;
    assert!(
        objects.keys().any(|k| k.starts_with("log/tile/bundle/")),
        "{objects:?}"
    );
    assert!(objects.keys().any(|k| k.starts_with("log/checkpoints/")));
    for (k, (versions, mode, until)) in &objects {
        if k == "log/checkpoint" {
            continue; // the mutable pointer to the newest checkpoint
        }
        assert_eq!(*versions, 1, "{k}");
        assert_eq!(mode, "COMPLIANCE", "{k}");
        if k.starts_with("log/tail/") {
            // Tails: their own short retention (`tail_retention_days`, 7), superseded by
            // the sealed segments, which carry their classes'.
            assert!(
                (now + 7 * 86_400 - 120..=now + 7 * 86_400).contains(until),
                "{k}: retained until {until}"
            );
            continue;
        }
        assert!(*until >= now + 1800 * 86_400, "{k}: retained until {until}");
    }
    assert!(
        objects.keys().any(|k| k.starts_with("log/tail/")),
        "{objects:?}"
    );

    // Deleting the locked version, and overwriting the key, are refused by the store.
    let seg = format!("log/segments/{}", footers[0].0);
    let refused = boto3(
        &ep,
        &format!(
            r#"
v = s3.list_object_versions(Bucket='locked', Prefix='{seg}')['Versions'][0]['VersionId']
try:
    s3.delete_object(Bucket='locked', Key='{seg}', VersionId=v); print('deleted')
except Exception as e:
    print('refused', e.response['Error']['Code'])
try:
    s3.put_object(Bucket='locked', Key='{seg}', Body=b'x', IfNoneMatch='*'); print('overwritten')
except Exception as e:
    print('refused', e.response['Error']['Code'])"#
        ),
    );
    assert_eq!(
        refused.lines().filter(|l| l.starts_with("refused")).count(),
        2,
        "{refused}"
    );
    let target = auditlog_worm::open("s3://locked/log", &opts).expect("target");
    let seg_key = format!("segments/{}", footers[0].0);
    assert!(matches!(
        target.put_create(&seg_key, b"other bytes", None),
        Err(WormError::Checksum { .. })
    ));
    let local = std::fs::read(dir.path().join("segments").join(&footers[0].0)).expect("read");
    assert_eq!(
        target
            .put_create(&seg_key, &local, None)
            .expect("same bytes"),
        PutOutcome::AlreadyThere
    );
    assert_eq!(
        target.get(&seg_key).expect("get").as_deref(),
        Some(local.as_slice())
    );
    ranged_reads_agree(target.as_ref(), &seg_key, &local);

    // The CLI verifies the log from the bucket alone, retention included.
    let out = client_command()
        .args([
            "verify",
            "s3://locked/log",
            "--endpoint",
            &ep,
            "--key",
            &key.to_string(),
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdin(Stdio::null())
        .output()
        .expect("run auditlog");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK:") && stdout.contains("objects checked against policy"),
        "{stdout}"
    );

    // A copy outside the lock can be changed, and the verifier catches it.
    let copy_dir = tempfile::tempdir().expect("tmp");
    let copy = auditlog_worm::open(
        &copy_dir.path().display().to_string(),
        &TargetOptions::default(),
    )
    .expect("local");
    for o in target.list("").expect("list") {
        let b = target.get(&o.key).expect("get").expect("present");
        copy.put_create(&o.key, &b, None).expect("copy");
    }
    let victim = copy_dir.path().join(&seg_key);
    let mut b = std::fs::read(&victim).expect("read");
    b[100] ^= 1;
    std::fs::remove_file(&victim).expect("rm");
    std::fs::write(&victim, &b).expect("write");
    let copy: Arc<dyn WormTarget> = copy.into();
    let err = verify_bucket(copy, &history_of(&key), &policy, &mut |_, _| {})
        .expect_err("tampered copy fails");
    assert!(err.place.contains(&footers[0].0), "{err}");
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn s3_kill_during_upload_then_restart_ships_exactly_once() {
    let moto = start_moto();
    let ep = moto.endpoint();
    let opts = s3_options(&ep);
    auditlog_worm::create_bucket("s3://crash", &opts, true).expect("bucket");
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed5);
    let run = |mode: &str| {
        Command::new(env!("CARGO_BIN_EXE_worm-child"))
            .args([
                dir.path().to_str().expect("utf8"),
                "s3://crash/log",
                &ep,
                mode,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worm-child")
    };
    for _ in 0..5 {
        let mut child = run("ingest");
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..900)));
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        child.wait().expect("reap");
    }
    let out = run("drain").wait_with_output().expect("drain");
    assert!(out.status.success(), "drain failed");
    let shipped_end: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("drained ")
        .and_then(|n| n.parse().ok())
        .expect("drained N");

    // Every object once on the store, once in the manifest, and the same set in both.
    let objects = s3_objects(&ep, "crash");
    for (k, (versions, _, _)) in &objects {
        if k != "log/checkpoint" {
            assert_eq!(*versions, 1, "{k} stored {versions} times");
        }
    }
    let manifest = std::fs::read(dir.path().join("replication/manifest.log")).expect("manifest");
    let (entries, good) = auditlog_formats::checkpoint_log::parse_log(&manifest);
    assert_eq!(good, manifest.len());
    let mut keys: Vec<String> = entries
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(e).expect("entry");
            format!("log/{}", v["key"].as_str().expect("key"))
        })
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a key recorded twice");
    // Tails are not in the manifest: each open segment's are found on the store itself
    // (FORMATS.md §15.2).
    let stored: Vec<String> = objects
        .keys()
        .filter(|k| *k != "log/checkpoint" && !k.starts_with("log/tail/"))
        .cloned()
        .collect();
    assert_eq!(keys, stored);
    let sealed = sealed_footers(dir.path());
    assert!(sealed.len() >= 3, "{} segments", sealed.len());
    for (name, _, _) in &sealed {
        assert!(
            objects.contains_key(&format!("log/segments/{name}")),
            "{name} missing"
        );
    }

    let target: Arc<dyn WormTarget> = auditlog_worm::open("s3://crash/log", &opts)
        .expect("target")
        .into();
    let key = auditlog_engine::KeyFileSigner::load_or_create(
        &dir.path().join("keys/checkpoint.key"),
        "auditlog.local/log",
    )
    .map(|s| auditlog_engine::Signer::verifier_key(&s))
    .expect("key");
    let (summary, report) = verify_bucket(
        target,
        &history_of(&key),
        &RetentionPolicy::default(),
        &mut |_, _| {},
    )
    .expect("verify");
    // The sealed segments, then the open segment's tails (shipped by five killed runs and
    // the drain): every record on the store, and all of it signed.
    assert!(summary.events >= shipped_end, "{summary:?}");
    assert_eq!(summary.signed_size, summary.events, "{summary:?}");
    assert_eq!(summary.sealed_segments, sealed.len());
    assert!(report.short.is_empty(), "{:?}", report.short);
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs Azurite: ./scripts/test"
)]
fn azure_uploads_carry_locked_immutability_and_verify() {
    let store = tempfile::tempdir().expect("tmp");
    let azurite = start_azurite(store.path());
    let proxy = RecordingProxy::start(azurite.port);
    let opts = |port: u16| TargetOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")),
        account: Some(AZURITE_ACCOUNT.into()),
        account_key: Some(AZURITE_KEY.into()),
        connect_timeout_ms: Some(500),
        request_timeout_ms: Some(5000),
        ..Default::default()
    };
    auditlog_worm::create_bucket("azure://audit", &opts(azurite.port), false).expect("container");

    // Azurite does not report version-level immutability: refused unless allowed.
    let d0 = tempfile::tempdir().expect("tmp");
    assert!(matches!(
        engine_with(d0.path(), "azure://audit/log", opts(proxy.port), false),
        Err(EngineError::Config(_))
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let engine =
        engine_with(dir.path(), "azure://audit/log", opts(proxy.port), true).expect("open");
    let key = engine.verifier_key();
    ingest_sealed(&engine, 3);
    let st = wait_shipped(&engine);
    assert_eq!(st.worm_enforced, Some(false));
    let size = engine.tree_size();
    engine.shutdown().expect("shutdown");

    let policy = RetentionPolicy::default();
    let puts = proxy.requests(&format!("PUT /{AZURITE_ACCOUNT}/audit/log/segments/"));
    let footers = sealed_footers(dir.path());
    assert_eq!(puts.len(), footers.len(), "one upload per segment");
    for (name, sealed_at, class) in &footers {
        let h = puts
            .iter()
            .find(|h| h[0].1.contains(name.as_str()))
            .unwrap_or_else(|| panic!("no upload of {name}"));
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("x-ms-immutability-policy-mode"),
            Some("Locked"),
            "{name}"
        );
        assert_eq!(
            get("x-ms-immutability-policy-until-date"),
            Some(auditlog_worm::time::rfc1123(policy.retain_until(*sealed_at, *class)).as_str()),
            "{name}"
        );
        assert_eq!(get("if-none-match"), Some("*"));
        assert!(get("content-md5").is_some());
    }
    let target: Arc<dyn WormTarget> = auditlog_worm::open("azure://audit/log", &opts(azurite.port))
        .expect("target")
        .into();
    let seg_key = format!("segments/{}", footers[0].0);
    let local = std::fs::read(dir.path().join("segments").join(&footers[0].0)).expect("read");
    ranged_reads_agree(target.as_ref(), &seg_key, &local);
    let (summary, _) = verify_bucket(target, &history_of(&key), &policy, &mut |_, _| {})
        .expect("verify from Azurite");
    assert_eq!(summary.sealed_segments, footers.len());
    // The sealed segments, and the open one's tails after them: every event.
    assert!(st.shipped_end < size);
    assert_eq!(summary.events, size);
}

#[test]
fn gcs_upload_carries_locked_object_retention() {
    let gcs = FakeGcs::start();
    let opts = TargetOptions {
        endpoint: Some(format!("http://127.0.0.1:{}", gcs.port)),
        bearer_token: Some("t".into()),
        ..Default::default()
    };
    let t = auditlog_worm::open("gs://bkt/log", &opts).expect("target");
    assert!(t.check_worm().expect("check").enforced);
    let lock = Lock {
        retain_until_unix_s: 4_102_444_800,
        legal_hold: false,
    };
    let bytes = b"sealed segment bytes".to_vec();
    assert_eq!(
        t.put_create("segments/a.seg", &bytes, Some(lock))
            .expect("put"),
        PutOutcome::Created
    );
    let up = gcs.uploads.lock().expect("lock")[0].clone();
    assert_eq!(up["name"], "log/segments/a.seg");
    assert_eq!(up["retention"]["mode"], "Locked");
    assert_eq!(up["retention"]["retainUntilTime"], "2100-01-01T00:00:00Z");
    use base64::Engine as _;
    let md5 = base64::engine::general_purpose::STANDARD.encode(auditlog_worm::content_md5(&bytes));
    assert_eq!(up["md5Hash"], md5.as_str());
    assert_eq!(
        t.put_create("segments/a.seg", &bytes, Some(lock))
            .expect("again"),
        PutOutcome::AlreadyThere
    );
    assert!(matches!(
        t.put_create("segments/a.seg", b"other", Some(lock)),
        Err(WormError::Checksum { .. })
    ));
    assert_eq!(t.get("segments/a.seg").expect("get"), Some(bytes));
    assert_eq!(
        t.retention("segments/a.seg")
            .expect("ret")
            .map(|r| r.retain_until_unix_s),
        Some(lock.retain_until_unix_s)
    );
    assert_eq!(t.list("segments/").expect("list").len(), 1);
}

/// `get_range` against a real store agrees with the object's bytes: a middle range, the
/// last byte, the whole object; an absent key is `None`.
fn ranged_reads_agree(target: &dyn WormTarget, key: &str, object: &[u8]) {
    let n = object.len() as u64;
    for (offset, len) in [(10, 100), (n - 1, 1), (0, n)] {
        assert_eq!(
            target
                .get_range(key, offset, len)
                .expect("range")
                .as_deref(),
            Some(&object[offset as usize..(offset + len) as usize]),
            "{key} bytes {offset}+{len}"
        );
    }
    assert_eq!(
        target
            .get_range("segments/absent.seg", 0, 1)
            .expect("absent"),
        None
    );
}

/// A history of the one key these logs are signed with.
fn history_of(
    key: &auditlog_formats::note::VerifierKey,
) -> auditlog_formats::keyhistory::CheckedHistory {
    auditlog_formats::keyhistory::KeyHistory::single(key)
        .check()
        .expect("a one-key history")
}

/// Full tiles go out in groups (one manifest sync each), one per object or in bundles,
/// every byte the hash store's; the tile lag comes back to zero, and the bucket verifies.
/// The checkpoint log damaged while the engine runs (in bytes the replicator has not read
/// yet): the replicator reports it, naming the file and the offset, where it used to stop
/// shipping checkpoints without a word.
#[test]
fn a_checkpoint_log_damaged_while_running_is_reported_by_the_replicator() {
    use auditlog_formats::checkpoint_log::{encode_entry, parse_log};
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg: EngineConfig = small_config(dir.path());
    cfg.replication = Some(replication("", TargetOptions::default()));
    let engine = Engine::open(cfg, None).expect("open");
    ingest_sealed(&engine, 1);
    engine
        .wait_checkpoint(engine.tree_size(), Duration::from_secs(10))
        .expect("checkpoint");
    let r = wait_shipped(&engine);
    assert!(r.last_error.is_none(), "{r:?}");
    // Nothing more is ingested, so the engine appends no checkpoint of its own from here.
    let path = dir.path().join("checkpoints.log");
    let log = std::fs::read(&path).expect("read");
    let (notes, good) = parse_log(&log);
    assert_eq!(good, log.len());
    let newest = std::str::from_utf8(notes.last().expect("a checkpoint")).expect("utf8");
    let mut more = Vec::new();
    while more.len() < 80 << 10 {
        more.extend(encode_entry(newest));
    }
    more[20] ^= 0x20;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(&more).expect("append");
    }
    let want = format!("offset {} is damaged", log.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = engine.status().replication.expect("replication on");
        if let Some(e) = &r.last_error {
            if e.contains("checkpoints.log") && e.contains(&want) {
                assert!(r.failures > 0, "{r:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "not reported: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    engine.shutdown().expect("shutdown");
}

#[test]
fn tiles_ship_in_groups_and_bundles_byte_for_byte() {
    for (bundle, step) in [(1u64, 3usize), (4, 8)] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg: EngineConfig = small_config(dir.path());
        let mut r = replication("", TargetOptions::default());
        r.tiles_per_step_max = step;
        r.tile_bundle_tiles = bundle;
        cfg.replication = Some(r);
        let engine = Engine::open(cfg, None).expect("open");
        let key = engine.verifier_key();
        ingest_sealed(&engine, 2);
        wait_shipped(&engine);
        let deadline = Instant::now() + Duration::from_secs(30);
        let shipped_end = loop {
            let r = engine.status().replication.expect("replication on");
            // Tiles ship under the latest checkpoint: wait for one over every shipped leaf.
            let signed = engine.latest_checkpoint().map_or(0, |c| c.checkpoint.size);
            if r.tiles_pending == 0
                && r.idle
                && r.shipped_end >= 10 * 256
                && signed >= r.shipped_end
            {
                break r.shipped_end;
            }
            assert!(Instant::now() < deadline, "tiles did not ship: {r:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        engine.shutdown().expect("shutdown");

        let level0 = std::fs::read(dir.path().join("hashes/level-00.bin")).expect("level 0");
        let worm = dir.path().join("worm");
        let objects = shipped_end / 256 / bundle;
        for i in 0..objects {
            let first = i * bundle;
            let key = if bundle == 1 {
                auditlog_worm::tile_key(0, first)
            } else {
                auditlog_worm::tile_bundle_key(first, bundle)
            };
            let got = std::fs::read(worm.join(&key)).unwrap_or_else(|e| panic!("{key}: {e}"));
            let at = first as usize * 8192;
            assert_eq!(got, level0[at..at + bundle as usize * 8192], "{key}");
        }
        // In order, each object once: the manifest records each by its last tile.
        let manifest =
            std::fs::read(dir.path().join("replication/manifest.log")).expect("manifest");
        let (entries, _) = auditlog_formats::checkpoint_log::parse_log(&manifest);
        let lasts: Vec<u64> = entries
            .iter()
            .filter_map(|raw| {
                let e: auditlog_engine::ManifestEntry = serde_json::from_slice(raw).expect("entry");
                (e.kind == auditlog_engine::ManifestKind::Tile && e.first == Some(0))
                    .then(|| e.end.expect("tile index"))
            })
            .collect();
        let want: Vec<u64> = (1..=lasts.len() as u64).map(|i| i * bundle - 1).collect();
        assert_eq!(lasts, want, "bundle {bundle}");
        assert!(
            lasts.len() as u64 >= objects,
            "{} of {objects}",
            lasts.len()
        );

        // The verifier reads the level-0 hashes back from those objects.
        let target: Arc<dyn WormTarget> = Arc::from(
            auditlog_worm::open(&worm.display().to_string(), &TargetOptions::default())
                .expect("open the directory"),
        );
        let (summary, _) = verify_bucket(
            target,
            &history_of(&key),
            &RetentionPolicy::default(),
            &mut |_, _| {},
        )
        .expect("verify the directory");
        assert!(summary.events >= shipped_end, "{summary:?}");
        assert!(
            summary.hash_nodes_checked >= objects * bundle * 256,
            "{summary:?}"
        );
        // One changed hash in the first object, and the verifier names that level.
        let first_key = if bundle == 1 {
            auditlog_worm::tile_key(0, 0)
        } else {
            auditlog_worm::tile_bundle_key(0, bundle)
        };
        let path = worm.join(&first_key);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[8192 * bundle as usize - 1] ^= 1;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        std::fs::write(&path, &bytes).expect("tamper");
        let target: Arc<dyn WormTarget> = Arc::from(
            auditlog_worm::open(&worm.display().to_string(), &TargetOptions::default())
                .expect("open the directory"),
        );
        let err = verify_bucket(
            target,
            &history_of(&key),
            &RetentionPolicy::default(),
            &mut |_, _| {},
        )
        .expect_err("a changed tile hash is found");
        assert!(err.place.contains("tile/0"), "{err}");
    }
}

/// Retention: what the replicator applies is the approved policy (`log.json`, changed only
/// under the two-person rule), not just the configured one (the approved value used to be
/// stored and ignored); neither an approved policy nor the configuration can go below a
/// class's legal floor (the configuration refuses to open, naming the class).
#[test]
fn the_approved_retention_is_applied_and_the_legal_floor_holds() {
    use auditlog_engine::retention::{RetentionPolicy as Approved, CLASSIFICATIONS};
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg: EngineConfig = small_config(dir.path());
    cfg.replication = Some(replication("", TargetOptions::default()));
    let engine = Engine::open(cfg, None).expect("open");
    let days: BTreeMap<String, u32> = CLASSIFICATIONS
        .iter()
        .map(|c| (c.to_string(), 4000))
        .collect();
    engine
        .set_retention(&Approved { days })
        .expect("an approved policy above the floor");
    let mut low = BTreeMap::new();
    low.insert("UNCLASSIFIED".to_string(), 30);
    let err = engine
        .set_retention(&Approved { days: low })
        .expect_err("below the floor");
    assert!(err.to_string().contains("legal floor"), "{err}");
    ingest_sealed(&engine, 2);
    let r = wait_shipped(&engine);
    assert!(r.last_error.is_none(), "{r:?}");
    let target = auditlog_worm::open(
        &format!("file://{}", dir.path().join("worm").display()),
        &TargetOptions::default(),
    )
    .expect("open target");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let segs = target.list("segments/").expect("list");
    assert!(segs.len() >= 2, "{segs:?}");
    for o in segs {
        let until = target
            .retention(&o.key)
            .expect("retention")
            .expect("set")
            .retain_until_unix_s;
        // 4000 days from sealing (the configured default is at most 3650).
        assert!(until > now + 3999 * 86_400, "{}: {until}", o.key);
    }
    engine.shutdown().expect("shutdown");

    // The configuration below a floor: the engine refuses to open, naming the class.
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg: EngineConfig = small_config(dir.path());
    let mut r = replication("", TargetOptions::default());
    let mut short = RetentionPolicy::default();
    short.set("CUI//BASIC", 100).expect("set");
    r.retention_days = short;
    cfg.replication = Some(r);
    let err = match Engine::open(cfg, None) {
        Ok(_) => panic!("a policy below the legal floor opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("CUI//BASIC") && err.contains("legal floor"),
        "{err}"
    );
}

/// What a verifier reads from a store: whole-object GETs of segments (there must be none)
/// and the largest ranged GET.
struct Recording {
    inner: Arc<dyn WormTarget>,
    segment_gets: std::sync::atomic::AtomicU64,
    ranges: std::sync::atomic::AtomicU64,
    largest_range: std::sync::atomic::AtomicU64,
}

impl WormTarget for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn check_worm(&self) -> auditlog_worm::Result<auditlog_worm::WormCheck> {
        self.inner.check_worm()
    }
    fn put_create(
        &self,
        key: &str,
        bytes: &[u8],
        lock: Option<Lock>,
    ) -> auditlog_worm::Result<PutOutcome> {
        self.inner.put_create(key, bytes, lock)
    }
    fn put_mutable(&self, key: &str, bytes: &[u8]) -> auditlog_worm::Result<()> {
        self.inner.put_mutable(key, bytes)
    }
    fn get_tagged(&self, key: &str) -> auditlog_worm::Result<Option<auditlog_worm::Tagged>> {
        self.inner.get_tagged(key)
    }
    fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&str>,
    ) -> auditlog_worm::Result<auditlog_worm::SwapOutcome> {
        self.inner.put_if(key, bytes, expected)
    }
    fn get(&self, key: &str) -> auditlog_worm::Result<Option<Vec<u8>>> {
        if key.starts_with("segments/") {
            self.segment_gets
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.get(key)
    }
    fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> auditlog_worm::Result<Option<Vec<u8>>> {
        self.ranges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.largest_range
            .fetch_max(len, std::sync::atomic::Ordering::Relaxed);
        self.inner.get_range(key, offset, len)
    }
    fn retention(&self, key: &str) -> auditlog_worm::Result<Option<auditlog_worm::Retention>> {
        self.inner.retention(key)
    }
    fn list(&self, prefix: &str) -> auditlog_worm::Result<Vec<auditlog_worm::ObjectInfo>> {
        self.inner.list(prefix)
    }
}

/// The bucket verifier streams segments: a sealed segment several times larger than the
/// read window is read through ranged GETs no larger than the window, never fetched whole,
/// and verifies; the same segment changed in one byte still fails.
#[test]
fn the_bucket_verifier_streams_segments_in_bounded_ranges() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = tempfile::tempdir().expect("store");
    let mut cfg: EngineConfig = small_config(dir.path());
    cfg.segment_bytes = 24 << 20;
    cfg.block_raw_bytes = 256 << 10;
    let mut r = replication(
        &store.path().display().to_string(),
        TargetOptions::default(),
    );
    r.allow_non_worm = true;
    cfg.replication = Some(r);
    let engine = Engine::open(cfg, None).expect("open");
    // Payloads zstd cannot shrink much (random hex), so the sealed object is large.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut n = 0u64;
    while engine.status().sealed_segments < 1 {
        let evs: Vec<Vec<u8>> = (n..n + 50)
            .map(|i| {
                let noise: String = (0..1500)
                    .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("hex"))
                    .collect();
                let mut e = auditlog_tests::event(i, 0);
                let at = e.len() - 3;
                e.splice(at..at, noise.into_bytes());
                e
            })
            .collect();
        engine
            .append_payloads(evs.iter().map(|e| e.as_slice()))
            .expect("append");
        n += 50;
        assert!(n < 100_000, "no segment sealed");
    }
    wait_shipped(&engine);
    let key = engine.verifier_key();
    engine.shutdown().expect("shutdown");
    let target: Arc<dyn WormTarget> = auditlog_worm::open(
        &store.path().display().to_string(),
        &TargetOptions::default(),
    )
    .expect("local")
    .into();
    let objects = target.list("segments/").expect("list");
    let largest = objects.iter().map(|o| o.bytes).max().expect("a segment");
    let window = auditlog_client::bucket::SEGMENT_WINDOW_BYTES;
    assert!(
        largest > 2 * window,
        "the test needs a segment much larger than the window: {largest} bytes"
    );
    let recording = Arc::new(Recording {
        inner: target.clone(),
        segment_gets: Default::default(),
        ranges: Default::default(),
        largest_range: Default::default(),
    });
    let (summary, _) = verify_bucket(
        recording.clone(),
        &history_of(&key),
        &RetentionPolicy::default(),
        &mut |_, _| {},
    )
    .expect("verifies");
    assert!(summary.events > 0 && summary.signed_size == summary.events);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&recording.segment_gets), 0, "a segment fetched whole");
    assert!(load(&recording.ranges) >= largest / window);
    assert!(
        load(&recording.largest_range) <= window,
        "a read of {} bytes",
        load(&recording.largest_range)
    );

    // One byte changed in the middle of the large object, past the first window.
    let victim = objects.iter().max_by_key(|o| o.bytes).expect("largest");
    let path = store.path().join(&victim.key);
    let mut b = std::fs::read(&path).expect("read");
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::remove_file(&path).expect("rm");
    std::fs::write(&path, &b).expect("write");
    let err = verify_bucket(
        target,
        &history_of(&key),
        &RetentionPolicy::default(),
        &mut |_, _| {},
    )
    .expect_err("a changed segment fails");
    assert!(err.place.contains(&victim.key), "{err}");
}

/// `ship_level0_tiles = false`: the bucket holds no level-0 tile (neither `tile/0/…` nor a
/// bundle) while every segment and checkpoint ships, the replicator reports no level-0 lag,
/// and the bucket still verifies (the verifier rebuilds the tree from the segments). The same
/// log with the default ships level-0 bundles: the switch is what removes them.
#[test]
fn without_level0_tiles_the_bucket_holds_none_and_still_verifies() {
    for ship_level0 in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let bucket = tempfile::tempdir().expect("bucket");
        let mut cfg: EngineConfig = small_config(dir.path());
        let mut r = replication(
            &format!("file://{}", bucket.path().display()),
            TargetOptions::default(),
        );
        r.allow_non_worm = true;
        r.tile_bundle_tiles = 4;
        r.ship_level0_tiles = ship_level0;
        cfg.replication = Some(r);
        let engine = Engine::open(cfg, None).expect("open");
        let key = engine.verifier_key();
        ingest_sealed(&engine, 3);
        let size = engine.tree_size();
        engine
            .wait_checkpoint(size, Duration::from_secs(10))
            .expect("checkpoint");
        let st = wait_shipped(&engine);
        assert!(
            st.shipped_end >= 1024,
            "a bundle of 4 level-0 tiles is due: {st:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine
            .status()
            .replication
            .is_some_and(|r| r.tiles_pending > 0 || !r.idle)
        {
            assert!(Instant::now() < deadline, "tiles not shipped");
            std::thread::sleep(Duration::from_millis(20));
        }
        engine.shutdown().expect("shutdown");

        let target: Arc<dyn WormTarget> = auditlog_worm::open(
            &format!("file://{}", bucket.path().display()),
            &TargetOptions::default(),
        )
        .expect("target")
        .into();
        let level0: Vec<String> = target
            .list("tile/")
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.starts_with("tile/0/") || k.starts_with("tile/bundle/"))
            .collect();
        assert_eq!(level0.is_empty(), !ship_level0, "{level0:?}");
        let segments = target.list("segments/").expect("list").len();
        assert!(segments >= 3, "{segments} segments shipped");
        let (summary, _) = verify_bucket(
            target,
            &history_of(&key),
            &RetentionPolicy::default(),
            &mut |_, _| {},
        )
        .expect("the bucket verifies without level-0 tiles");
        assert!(st.shipped_end < size);
        assert_eq!(
            summary.events, size,
            "sealed segments and the tails after them"
        );
    }
}
