//! Tails: the open segment's batches on the store within `tail_interval_ms`, read by the
//! bucket verifier as the log's open end; and `durability = "remote"`, where an event is
//! acknowledged only once the store holds it. Part of the `worm` test binary.

use auditlog_tests::wait_for;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use auditlog_client::verify::Pins;
use auditlog_engine::{Durability, Engine, EngineConfig, EngineError, Receipts};
use auditlog_formats::batch::check_run;
use auditlog_tests::worm_servers::start_moto;
use auditlog_tests::{classified_event, replication, s3_options, small_config};
use auditlog_worm::{RetentionPolicy, TargetOptions, WormTarget};

use super::history_of;

fn tail_config(dir: &Path, target: &str, opts: TargetOptions, interval_ms: u64) -> EngineConfig {
    let mut cfg = small_config(dir);
    // One open segment for the whole test: everything past the last seal is in tails.
    cfg.segment_bytes = 64 << 20;
    let mut r = replication(target, opts);
    r.allow_non_worm = true;
    r.tail_interval_ms = interval_ms;
    r.tail_request_timeout_ms = 1_000;
    cfg.replication = Some(r);
    cfg
}

/// Submits one event without waiting: its answer comes on the channel.
fn submit_one(
    engine: &Engine,
    n: u64,
) -> std::sync::mpsc::Receiver<auditlog_engine::Result<Receipts>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut b = engine.new_batch(auditlog_engine::Submitter::daemon());
    b.add(&classified_event(n, "UNCLASSIFIED")).expect("valid");
    engine
        .submit(
            b,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .expect("queued");
    rx
}

fn append(engine: &Engine, from: u64, n: u64) -> Receipts {
    let evs: Vec<Vec<u8>> = (from..from + n)
        .map(|i| classified_event(i, "CUI//BASIC"))
        .collect();
    engine
        .append_payloads(evs.iter().map(|e| e.as_slice()))
        .expect("append")
}

/// The end of what the tail objects of the segment from `first` hold, read from the store.
fn tails_end(target: &dyn WormTarget, first: u64) -> u64 {
    let mut end = first;
    for o in target
        .list(&auditlog_worm::tail_prefix(first))
        .expect("list")
    {
        let bytes = target.get(&o.key).expect("get").expect("listed");
        end = check_run(&bytes, end).expect("a run of batches").0;
    }
    end
}

fn local_target(bucket: &Path) -> Arc<dyn WormTarget> {
    auditlog_worm::open(
        &format!("file://{}", bucket.display()),
        &TargetOptions::default(),
    )
    .expect("target")
    .into()
}

/// Nothing sealed: the events are on the store as tails within the interval, with a
/// checkpoint over them, and `verify` on the bucket reads them as the log's open end and
/// vouches for them. A tail altered, or the last one missing, fails naming the place.
#[test]
fn tails_put_the_open_segment_on_the_store_and_the_bucket_verifier_reads_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let bucket = tempfile::tempdir().expect("bucket");
    let url = format!("file://{}", bucket.path().display());
    let engine = Engine::open(
        tail_config(dir.path(), &url, TargetOptions::default(), 50),
        None,
    )
    .expect("open");
    let key = engine.verifier_key();
    // Each batch on the store before the next: one tail object (at least) each.
    for i in 0..5 {
        append(&engine, i * 100, 100);
        wait_for("the batch's tail", 30, || {
            engine
                .status()
                .replication
                .is_some_and(|r| r.store_end == (i + 1) * 100)
        });
    }
    let size = engine.tree_size();
    assert_eq!(size, 500);
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    let target = local_target(bucket.path());
    wait_for("the tails and a checkpoint over them", 30, || {
        let r = engine.status().replication.expect("replication");
        r.store_end == size
            && target
                .get(&format!("checkpoints/{size:020}"))
                .expect("get")
                .is_some()
    });
    let r = engine.status().replication.expect("replication");
    assert_eq!(r.tail_lag_ms, 0, "{r:?}");
    assert!(r.tails_shipped >= 1, "{r:?}");
    assert_eq!(engine.status().sealed_segments, 0);
    engine.shutdown().expect("shutdown");

    let verify = |pins: &Pins| {
        auditlog_client::bucket::verify_bucket_pinned(
            local_target(bucket.path()),
            &history_of(&key),
            pins,
            std::num::NonZeroUsize::new(2).expect("two"),
            &RetentionPolicy::default(),
            &mut |_, _| {},
        )
    };
    let (summary, _) = verify(&Pins::default()).expect("the bucket verifies");
    assert_eq!(
        (
            summary.events,
            summary.signed_size,
            summary.unsigned_records
        ),
        (500, 500, 0)
    );
    assert_eq!((summary.sealed_segments, summary.open_segments), (0, 1));

    // One byte of the middle tail object changed: the verifier names that object.
    let mut tails: Vec<_> = local_target(bucket.path())
        .list("tail/")
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    tails.sort();
    assert!(tails.len() >= 2, "several tails: {tails:?}");
    let victim = bucket.path().join(&tails[tails.len() / 2]);
    let original = std::fs::read(&victim).expect("read");
    let mut bad = original.clone();
    let at = bad.len() - 10;
    bad[at] ^= 1;
    let mut perm = std::fs::metadata(&victim).expect("stat").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&victim, perm).expect("chmod");
    std::fs::write(&victim, &bad).expect("tamper");
    let e = verify(&Pins::default()).expect_err("a tampered tail must fail");
    assert!(
        e.place.contains(&tails[tails.len() / 2]) && e.what.contains("checksum"),
        "{e}"
    );

    // The last tail gone (deleted by someone with the bucket): the checkpoint shipped over
    // it says records are missing.
    std::fs::write(&victim, &original).expect("restore");
    let last = bucket.path().join(tails.last().expect("a tail"));
    std::fs::remove_file(&last).expect("delete");
    let e = verify(&Pins::default()).expect_err("a missing tail must fail");
    assert!(e.to_string().contains("500"), "{e}");
}

/// `durability = "remote"`: when `append` returns, the store already holds the events (in
/// `local` mode, with the same long interval, it does not); with the store stopped an
/// append does not complete, and completes once the store is back; stopped again, a
/// shutdown answers the waiting append with an error, never an ack.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn remote_durability_acks_only_what_the_store_holds() {
    let moto = start_moto();
    let ep = moto.endpoint();
    let opts = s3_options(&ep);
    auditlog_worm::create_bucket("s3://tails", &opts, true).expect("bucket with lock");

    // Local mode, tails every minute: the ack comes first, the store has nothing yet.
    {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = tail_config(dir.path(), "s3://tails/local", opts.clone(), 60_000);
        let engine = Engine::open(cfg, None).expect("open");
        let target: Arc<dyn WormTarget> = auditlog_worm::open("s3://tails/local", &opts)
            .expect("target")
            .into();
        let r = append(&engine, 0, 50);
        assert!(tails_end(target.as_ref(), 0) < r.first_index + 50);
        engine.shutdown().expect("shutdown");
    }

    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = tail_config(dir.path(), "s3://tails/remote", opts.clone(), 60_000);
    cfg.replication.as_mut().expect("replication").durability = Durability::Remote;
    let engine = Engine::open(cfg, None).expect("open");
    let target: Arc<dyn WormTarget> = auditlog_worm::open("s3://tails/remote", &opts)
        .expect("target")
        .into();
    let mut next = 0;
    for _ in 0..20 {
        let r = append(&engine, next, 25);
        next = r.first_index + 25;
        assert!(
            tails_end(target.as_ref(), 0) >= next,
            "acknowledged before the store held it"
        );
    }

    // The store stops: an append waits (not acknowledged), the lag shows; back, it completes.
    moto.signal(libc::SIGSTOP);
    let rx = submit_one(&engine, 9_999);
    wait_for("the append to wait for the store", 10, || {
        engine
            .status()
            .replication
            .is_some_and(|r| r.remote_waiting_events == 1 && r.tail_lag_ms >= 500)
    });
    assert!(
        rx.try_recv().is_err(),
        "acknowledged while the store was stopped"
    );
    moto.signal(libc::SIGCONT);
    let r = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("completes once the store is back")
        .expect("acknowledged");
    assert_eq!(r.first_index, next);
    assert!(tails_end(target.as_ref(), 0) > next);

    // Stopped again, then the engine shuts down: the waiting append gets an error.
    moto.signal(libc::SIGSTOP);
    let rx = submit_one(&engine, 10_000);
    wait_for("the second append to wait", 10, || {
        engine
            .status()
            .replication
            .is_some_and(|r| r.remote_waiting_events == 1)
    });
    let _ = engine.shutdown();
    match rx.recv_timeout(Duration::from_secs(30)).expect("answered") {
        Err(EngineError::NotDurableRemotely(why)) => assert!(why.contains("shut down"), "{why}"),
        other => panic!("expected NotDurableRemotely, got {other:?}"),
    }
    moto.signal(libc::SIGCONT);
}

/// Another writer's tail on the store where this engine's first tail goes (a second writer
/// on the same bucket, or this directory restored from an old backup): tails stop with
/// the tail alarm, and in remote durability nothing more is acknowledged.
#[test]
fn a_foreign_tail_raises_the_alarm_and_remote_acks_stop() {
    let dir = tempfile::tempdir().expect("tmp");
    let bucket = tempfile::tempdir().expect("bucket");
    let url = format!("file://{}", bucket.path().display());
    // A valid run of one batch for leaf 0, with a record this engine never wrote.
    let record = auditlog_formats::record::Record {
        received_at_unix_ns: 1,
        submitter: Some("token:someone-else"),
        kind: auditlog_formats::record::PayloadKind::Event,
        payload: &classified_event(0, "UNCLASSIFIED"),
    };
    let mut body = Vec::new();
    auditlog_formats::batch::push_entry(&mut body, &record);
    let mut run = auditlog_formats::batch::encode_header(0, 1, 0, &body).to_vec();
    run.extend_from_slice(&body);
    local_target(bucket.path())
        .put_create(&auditlog_worm::tail_key(0, 0), &run, None)
        .expect("plant");

    let mut cfg = tail_config(dir.path(), &url, TargetOptions::default(), 50);
    cfg.replication.as_mut().expect("replication").durability = Durability::Remote;
    let engine = Engine::open(cfg, None).expect("open");
    let evs = [classified_event(1, "UNCLASSIFIED")];
    match engine.append_payloads(evs.iter().map(|e| e.as_slice())) {
        Err(EngineError::NotDurableRemotely(why)) => {
            assert!(why.contains("another writer"), "{why}")
        }
        other => panic!("acknowledged over another writer's tail: {other:?}"),
    }
    let r = engine.status().replication.expect("replication");
    assert!(r.tail_alarm.is_some(), "{r:?}");
    engine.shutdown().expect("shutdown");
}

/// `remote_pending_bytes_max`: with the store stopped, receipts waiting for it are bounded;
/// past the bound the sequencer takes no more, the queue fills and `offer` hands the
/// submission back (back-pressure, not memory); with the store back, every one queued
/// completes.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn receipts_waiting_for_the_store_are_bounded() {
    let moto = start_moto();
    let ep = moto.endpoint();
    let opts = s3_options(&ep);
    auditlog_worm::create_bucket("s3://bounded", &opts, true).expect("bucket with lock");
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = tail_config(dir.path(), "s3://bounded/log", opts, 60_000);
    cfg.queue_submissions_max = 4;
    let r = cfg.replication.as_mut().expect("replication");
    r.durability = Durability::Remote;
    r.remote_pending_bytes_max = 4096;
    let engine = Engine::open(cfg, None).expect("open");
    append(&engine, 0, 1);
    moto.signal(libc::SIGSTOP);
    let engine = Arc::new(engine);
    let producer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            // One event a submission, waiting for room when the queue is full.
            let mut answers = Vec::new();
            for n in 1..=300u64 {
                let (tx, rx) = std::sync::mpsc::channel();
                let mut b = engine.new_batch(auditlog_engine::Submitter::daemon());
                b.add(&classified_event(n, "UNCLASSIFIED")).expect("valid");
                engine
                    .submit(
                        b,
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    )
                    .expect("queued");
                answers.push(rx);
            }
            answers
        })
    };
    // The sequencer stops at the bound (96 bytes a receipt against 4096) with the queue
    // full behind it, and stays there while the store is stopped.
    wait_for("receipts held at the bound and the queue full", 30, || {
        let st = engine.status();
        st.queue_depth == st.queue_capacity
            && st
                .replication
                .is_some_and(|r| r.remote_waiting_events >= 40)
    });
    for _ in 0..20 {
        let held = engine
            .status()
            .replication
            .map_or(0, |r| r.remote_waiting_events);
        assert!(held <= 50, "{held} receipts held past the bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!producer.is_finished(), "the producer met no back-pressure");
    moto.signal(libc::SIGCONT);
    for rx in producer.join().expect("producer") {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("answered once the store is back")
            .expect("acknowledged");
    }
    let Ok(engine) = Arc::try_unwrap(engine) else {
        panic!("engine still shared")
    };
    engine.shutdown().expect("shutdown");
}
