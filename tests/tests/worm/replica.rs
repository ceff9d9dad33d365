//! Read replicas: an engine that follows the writer's bucket (segments, tails, the newest
//! checkpoint) into its own directory and serves reads and proofs up to the newest
//! checkpoint it verified; it refuses writes, and refuses, naming it, an object on the
//! store that was altered. Part of the `worm` test binary.

use auditlog_tests::wait_for;
use std::path::Path;
use std::time::Duration;

use auditlog_engine::follower::ReplicaConfig;
use auditlog_engine::{Engine, EngineConfig, EngineError};
use auditlog_formats::tree;
use auditlog_tests::{classified_event, replication, small_config};
use auditlog_worm::TargetOptions;

fn writer(dir: &Path, bucket: &Path) -> Engine {
    let mut cfg = small_config(dir);
    let mut r = replication(
        &format!("file://{}", bucket.display()),
        TargetOptions::default(),
    );
    r.allow_non_worm = true;
    r.tail_interval_ms = 20;
    cfg.replication = Some(r);
    Engine::open(cfg, None).expect("open the writer")
}

pub(crate) fn replica_config(dir: &Path, source: &str) -> EngineConfig {
    let mut cfg = small_config(dir);
    cfg.replica = Some(ReplicaConfig {
        source: source.to_string(),
        options: TargetOptions::default(),
        poll_interval_ms: 20,
    });
    cfg
}

fn append(engine: &Engine, from: u64, n: u64) {
    let evs: Vec<Vec<u8>> = (from..from + n)
        .map(|i| classified_event(i, "UNCLASSIFIED"))
        .collect();
    engine
        .append_payloads(evs.iter().map(|e| e.as_slice()))
        .expect("append");
}

/// While the writer ingests (sealing segments as it goes), the replica follows: every
/// record it holds is the writer's, byte for byte; its checkpoints are the writer's; its
/// inclusion proofs verify against them; it refuses writes. A replica started on a copy
/// of the bucket with one altered segment refuses that object and says which.
#[test]
fn a_replica_follows_the_bucket_serves_proofs_and_refuses_writes_and_altered_objects() {
    let wdir = tempfile::tempdir().expect("tmp");
    let bucket = tempfile::tempdir().expect("bucket");
    let w = writer(wdir.path(), bucket.path());
    append(&w, 0, 300);
    w.wait_checkpoint(300, Duration::from_secs(10))
        .expect("checkpoint");
    let source = format!("file://{}", bucket.path().display());
    // A replica starts from the bucket's log.json and key history: once they are there.
    wait_for("the writer's metadata on the store", 30, || {
        bucket.path().join("log.json").exists()
            && std::fs::read_dir(bucket.path().join("keys")).is_ok_and(|mut d| d.next().is_some())
    });
    let rdir = tempfile::tempdir().expect("tmp");
    let r = Engine::open(replica_config(rdir.path(), &source), None).expect("open the replica");
    let mut n = 300;
    // Ingest while it follows, through several sealed segments (1 MiB each).
    while w.status().sealed_segments < 3 {
        append(&w, n, 200);
        n += 200;
    }
    let size = w.tree_size();
    w.wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    wait_for(
        "the replica to verify the writer's newest checkpoint",
        60,
        || {
            r.latest_checkpoint()
                .is_some_and(|c| c.checkpoint.size == size)
        },
    );
    let st = r.status();
    let rs = st.replica.clone().expect("replica status");
    assert!(rs.alarm.is_none(), "{rs:?}");
    assert!(rs.segments_adopted >= 1 && rs.tails_applied >= 1, "{rs:?}");
    assert_eq!(r.tree_size(), size);
    let cp = r.latest_checkpoint().expect("checkpoint");
    assert_eq!(
        cp.checkpoint.root,
        w.root_at(size).expect("writer root"),
        "the replica's tree is the writer's"
    );
    for i in (0..size).step_by(37).chain([size - 1]) {
        assert_eq!(
            r.read_record(i).expect("replica read"),
            w.read_record(i).expect("writer read"),
            "record {i}"
        );
        let leaf = r.leaf_hash(i).expect("leaf");
        let proof = r.prove_inclusion(i, size).expect("proof");
        tree::verify_inclusion(w.tree_hash(), i, size, &leaf, &proof, &cp.checkpoint.root)
            .expect("an inclusion proof from the replica verifies");
    }
    match r.append_payloads([classified_event(0, "UNCLASSIFIED").as_slice()]) {
        Err(EngineError::ReadOnly(why)) => assert!(why.contains(&source), "{why}"),
        other => panic!("a replica took a write: {other:?}"),
    }
    r.shutdown().expect("replica shutdown");
    w.shutdown().expect("writer shutdown");

    // A copy of the bucket with one byte of a sealed segment changed.
    let copy = tempfile::tempdir().expect("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", bucket.path().display()))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let seg_dir = copy.path().join("segments");
    let mut segs: Vec<_> = std::fs::read_dir(&seg_dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).expect("read");
    bytes[100] ^= 1;
    let mut perm = std::fs::metadata(victim).expect("stat").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(victim, perm).expect("chmod");
    std::fs::write(victim, &bytes).expect("tamper");
    let name = victim
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let r2dir = tempfile::tempdir().expect("tmp");
    let r2 = Engine::open(
        replica_config(r2dir.path(), &format!("file://{}", copy.path().display())),
        None,
    )
    .expect("open");
    wait_for("the replica to refuse the altered segment", 30, || {
        r2.status()
            .replica
            .and_then(|s| s.alarm)
            .is_some_and(|a| a.contains(&name))
    });
    // It holds only what precedes the altered segment, and never passes it.
    let first_bad: u64 = name[..20].parse().expect("first");
    assert!(r2.tree_size() <= first_bad, "{}", r2.tree_size());
    r2.shutdown().expect("shutdown");
}

/// The writer rotates its key (a new key added, the old one retired) while a replica
/// follows: the replica takes the bucket's newer key history, which extends its own, and
/// goes on verifying checkpoints signed by the new key only.
#[test]
fn a_replica_follows_a_key_rotation() {
    let wdir = tempfile::tempdir().expect("tmp");
    let bucket = tempfile::tempdir().expect("bucket");
    let w = writer(wdir.path(), bucket.path());
    append(&w, 0, 100);
    w.wait_checkpoint(100, Duration::from_secs(10))
        .expect("checkpoint");
    wait_for("the writer's metadata on the store", 30, || {
        std::fs::read_dir(bucket.path().join("keys")).is_ok_and(|mut d| d.next().is_some())
    });
    let source = format!("file://{}", bucket.path().display());
    let rdir = tempfile::tempdir().expect("tmp");
    let r = Engine::open(replica_config(rdir.path(), &source), None).expect("open the replica");
    wait_for("the replica at 100", 30, || {
        r.latest_checkpoint()
            .is_some_and(|c| c.checkpoint.size >= 100)
    });
    let old = w.verifier_key();
    auditlog_engine::KeyFileSigner::load_or_create(
        &wdir.path().join("keys/next.key"),
        "auditlog.local/log",
    )
    .expect("new key");
    w.add_key(
        &auditlog_engine::KeyBackend::File {
            path: "keys/next.key".into(),
        },
        Some("auditlog.local/log"),
    )
    .expect("add key");
    append(&w, 100, 100);
    w.wait_checkpoint(200, Duration::from_secs(10))
        .expect("checkpoint");
    w.retire_key(&old.to_string()).expect("retire");
    append(&w, 200, 100);
    let size = w.tree_size();
    w.wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    wait_for("the replica past the rotation", 30, || {
        r.latest_checkpoint()
            .is_some_and(|c| c.checkpoint.size == size)
    });
    let rs = r.status().replica.expect("replica");
    assert!(rs.alarm.is_none(), "{rs:?}");
    assert_eq!(
        r.key_history().keys.len(),
        2,
        "the replica took the new history"
    );
    r.shutdown().expect("shutdown");
    w.shutdown().expect("shutdown");
}
