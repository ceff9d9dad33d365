//! The engine through its public API, on real files.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use auditlog_engine::{Engine, EngineError, FaultHooks};
use auditlog_formats::note;
use auditlog_formats::record::Record;
use auditlog_formats::tree;
use auditlog_tests::{event, small_config};

#[path = "engine/search.rs"]
mod search;

fn append_n(engine: &Engine, start: u64, n: u64, per_batch: u64) -> Vec<(u64, [u8; 32])> {
    let mut out = Vec::new();
    let mut i = start;
    while i < start + n {
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        let end = (i + per_batch).min(start + n);
        for k in i..end {
            b.add(&event(k, 256)).expect("valid event");
        }
        let r = engine.append(b).expect("append");
        for (k, h) in r.leaf_hashes.iter().enumerate() {
            out.push((r.first_index + k as u64, *h));
        }
        i = end;
    }
    out
}

fn check_everything(engine: &Engine, receipts: &[(u64, [u8; 32])]) {
    let alg = engine.tree_hash();
    let size = engine.tree_size();
    let cp = engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    let (c, _) =
        note::open_checkpoint(&cp.note, &[engine.verifier_key()]).expect("signature verifies");
    assert_eq!(c.size, size);
    assert_eq!(c.root, engine.root_at(size).expect("root"));
    for &(index, leaf) in receipts.iter().step_by(97) {
        let rec = engine.read_record(index).expect("read");
        assert_eq!(alg.leaf(&rec), leaf, "record {index} hashes to its receipt");
        assert_eq!(engine.leaf_hash(index).expect("leaf"), leaf);
        let p = engine.prove_inclusion(index, size).expect("proof");
        tree::verify_inclusion(alg, index, size, &leaf, &p, &c.root).expect("inclusion verifies");
        let old = index + 1;
        let cp_old = engine.root_at(old).expect("old root");
        let cons = engine.prove_consistency(old, size).expect("consistency");
        tree::verify_consistency(alg, old, size, &cp_old, &c.root, &cons)
            .expect("consistency verifies");
    }
}

/// Waits (up to 4 s) for the sealer to have sealed `n` segments.
fn wait_sealed(engine: &Engine, n: usize) {
    for _ in 0..200 {
        if engine.status().sealed_segments >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("fewer than {n} segments sealed: {:?}", engine.status());
}

#[test]
fn append_read_prove_seal_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = small_config(dir.path());
    let engine = Engine::open(cfg.clone(), None).expect("open");
    let mut receipts = append_n(&engine, 0, 12_000, 300);
    assert_eq!(engine.tree_size(), 12_000);
    // 12k × ~270 B over 1 MiB segments: several rotations; wait for the sealer.
    wait_sealed(&engine, 2);
    check_everything(&engine, &receipts);
    // Range reads cross sealed and open segments in order.
    let mut seen = 0u64;
    engine
        .read_records(0, 12_000, &mut |i, rec| {
            assert_eq!(i, seen);
            assert_eq!(
                Record::parse(rec).expect("record").payload,
                event(i, 256).as_slice()
            );
            seen += 1;
            Ok(true)
        })
        .expect("range");
    assert_eq!(seen, 12_000);
    let root_before = engine.head().root;
    engine.shutdown().expect("clean shutdown");

    let engine = Engine::open(cfg, None).expect("reopen");
    assert_eq!(engine.tree_size(), 12_000);
    assert_eq!(engine.head().root, root_before);
    receipts.extend(append_n(&engine, 12_000, 3_000, 400));
    check_everything(&engine, &receipts);
}

/// With `seal_check_leaves` the sealer also re-derives the tree from the sealed records.
#[test]
fn sealing_with_the_leaf_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.seal_check_leaves = true;
    let engine = Engine::open(cfg, None).expect("open");
    let receipts = append_n(&engine, 0, 12_000, 300);
    wait_sealed(&engine, 2);
    check_everything(&engine, &receipts);
}

#[test]
fn blake3_log_and_raw_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.tree_hash = auditlog_formats::TreeHash::Blake3;
    cfg.schema = auditlog_formats::schema::SchemaMode::Raw;
    let engine = Engine::open(cfg.clone(), None).expect("open");
    let r = engine
        .append_payloads([&b"{\"free\":\"form\"}"[..]])
        .expect("raw accepts any object");
    let rec = engine.read_record(r.first_index).expect("read");
    assert_eq!(
        auditlog_formats::TreeHash::Blake3.leaf(&rec),
        r.leaf_hashes[0]
    );
    drop(engine);
    cfg.tree_hash = auditlog_formats::TreeHash::Sha256;
    let err = Engine::open(cfg, None)
        .err()
        .expect("hash is fixed at creation");
    assert!(err.to_string().contains("tree hash"), "{err}");
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(small_config(dir.path()), None).expect("open");
    append_n(&engine, 0, 10, 10);
    let mut big = event(0, 256);
    big.resize(70_000, b' ');
    let missing = br#"{"timestamp":"2026-11-23T10:00:00Z","event_type":"x","actor":"a","action":"b","resource":"c"}"#;
    let cases: Vec<(&[u8], &str)> = vec![
        (&big, "limit"),
        (b"{\"a\":\"\xff\"}", "UTF-8"),
        (b"[1,2,3]", "object"),
        (b"not json", "JSON"),
        (missing, "outcome"),
    ];
    for (payload, why) in cases {
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        b.add(&event(99, 256)).expect("good one");
        let err = b.add(payload).expect_err("refused");
        let msg = err.to_string().to_lowercase();
        assert!(
            msg.contains(&why.to_lowercase()),
            "{msg} should mention {why}"
        );
        assert!(
            matches!(err, EngineError::BadEvent { position: 1, .. }),
            "{err:?}"
        );
        assert_eq!(b.len(), 1, "the refused event left nothing in the batch");
    }
    assert_eq!(engine.tree_size(), 10, "nothing was written");
}

#[test]
fn failed_sync_stops_writes_and_acks_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    let faults = Arc::new(FaultHooks::default());
    cfg.faults = Some(faults.clone());
    let engine = Engine::open(cfg, None).expect("open");
    append_n(&engine, 0, 100, 50);
    faults.fail_next_sync.store(true, Ordering::SeqCst);
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    b.add(&event(100, 256)).expect("valid");
    let err = engine
        .append(b)
        .expect_err("no receipt for an unsynced event");
    assert!(matches!(err, EngineError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    assert_eq!(
        engine.tree_size(),
        100,
        "the unsynced batch was not published"
    );
    let status = engine.status();
    assert!(
        status.failed.as_deref().unwrap_or("").contains("fdatasync"),
        "{status:?}"
    );
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    b.add(&event(101, 256)).expect("valid");
    assert!(
        matches!(engine.append(b), Err(EngineError::Failed(_))),
        "writes stay refused"
    );
    // Reads still work.
    assert!(engine.read_record(5).is_ok());
}

/// A panic in any engine thread is a broken invariant and stops the engine (fail-stop):
/// the failure names the thread and the message, no append is acknowledged after it, and
/// `shutdown` returns it (so the daemon exits non-zero). Without the supervisor the thread
/// ended quietly and the rest ran on: writes kept being acknowledged, `status().failed` was
/// empty, and `shutdown` returned Ok.
#[test]
fn a_panic_in_any_engine_thread_stops_the_engine() {
    for thread in [
        "auditlog-sequencer",
        "auditlog-sealer",
        "auditlog-checkpointer",
        "auditlog-replicator",
        "auditlog-prealloc",
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg = small_config(dir.path());
        cfg.replication = Some(auditlog_tests::replication(
            "",
            auditlog_worm::TargetOptions::default(),
        ));
        let faults = Arc::new(FaultHooks::default());
        cfg.faults = Some(faults.clone());
        let engine = Engine::open(cfg, None).expect("open");
        append_n(&engine, 0, 100, 50);
        *faults.panic_thread.lock().expect("lock") = Some(thread.to_string());
        // Keep the threads turning (rotations for the sealer and the preallocator, batches
        // for the sequencer; the checkpointer and the replicator tick on their own) until
        // the failure shows.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut next = 100u64;
        let failed = loop {
            if let Some(f) = engine.status().failed {
                break f;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{thread}: the panic did not stop the engine"
            );
            let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
            for k in next..next + 200 {
                b.add(&event(k, 256)).expect("valid");
            }
            if engine.append(b).is_ok() {
                next += 200;
            }
        };
        assert!(
            failed.contains(thread) && failed.contains("panicked"),
            "{thread}: {failed}"
        );
        let size = engine.tree_size();
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        b.add(&event(next, 256)).expect("valid");
        assert!(
            matches!(engine.append(b), Err(EngineError::Failed(_))),
            "{thread}: no acknowledgement after the failure"
        );
        assert_eq!(
            engine.tree_size(),
            size,
            "{thread}: nothing more was written"
        );
        let err = engine.shutdown().expect_err("shutdown reports the failure");
        assert!(err.to_string().contains(thread), "{thread}: {err}");
    }
}

#[test]
fn full_disk_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    let faults = Arc::new(FaultHooks::default());
    cfg.faults = Some(faults.clone());
    let engine = Engine::open(cfg, None).expect("open");
    faults.enospc_next_write.store(true, Ordering::SeqCst);
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    b.add(&event(0, 256)).expect("valid");
    let err = engine.append(b).expect_err("disk full");
    assert!(matches!(err, EngineError::DiskFull(_)), "{err:?}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(engine.tree_size(), 0);
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    b.add(&event(1, 256)).expect("valid");
    assert!(matches!(engine.append(b), Err(EngineError::DiskFull(_))));
}

/// How many open segment files the data directory holds.
fn open_segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("segments"))
        .expect("ls")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".open"))
                .unwrap_or(false)
        })
        .count()
}

fn open_segment_path(dir: &std::path::Path) -> std::path::PathBuf {
    let mut opens: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().map(|x| x == "open").unwrap_or(false))
        .collect();
    opens.sort();
    opens.pop().expect("an open segment")
}

#[test]
fn torn_tail_is_cut_and_ingest_continues() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.segment_bytes = 8 << 20;
    let engine = Engine::open(cfg.clone(), None).expect("open");
    append_n(&engine, 0, 500, 100);
    engine.shutdown().expect("shutdown");
    // A torn write: half a batch header and some body bytes after the last batch.
    let path = open_segment_path(dir.path());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let mut end = 0u64;
    let mut buf = vec![0u8; 8 << 20];
    f.read_exact_at(&mut buf, 0).expect("read");
    while let Ok(h) = auditlog_formats::batch::decode_header(&buf[end as usize..]) {
        end += h.total_bytes() as u64;
    }
    f.write_all_at(&[0x41, 0x4c, 0x42, 0x31, 0, 0, 1, 0, 9, 9, 9], end)
        .expect("tear");
    drop(f);
    let engine = Engine::open(cfg, None).expect("recovers");
    assert_eq!(engine.tree_size(), 500);
    assert!(engine.status().recovery.torn_tail.is_some());
    append_n(&engine, 500, 100, 100);
    assert_eq!(engine.tree_size(), 600);
    check_everything(&engine, &[]);
}

/// A stopped log of 300 events in one open segment, with a checkpoint covering all of them.
fn three_hundred_events_checkpointed(dir: &std::path::Path) -> auditlog_engine::EngineConfig {
    let mut cfg = small_config(dir);
    cfg.segment_bytes = 8 << 20;
    let engine = Engine::open(cfg.clone(), None).expect("open");
    append_n(&engine, 0, 300, 100);
    engine
        .wait_checkpoint(300, Duration::from_secs(5))
        .expect("checkpoint");
    engine.shutdown().expect("shutdown");
    cfg
}

#[test]
fn checkpoint_beyond_segments_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = three_hundred_events_checkpointed(dir.path());
    // Lose the last batch (zeroed as if never written): the checkpoint now promises more.
    let path = open_segment_path(dir.path());
    let bytes = std::fs::read(&path).expect("read");
    let mut at = 0usize;
    let mut last = 0usize;
    while let Ok(h) = auditlog_formats::batch::decode_header(&bytes[at..]) {
        last = at;
        at += h.total_bytes();
    }
    let mut cut = bytes.clone();
    cut[last..at].fill(0);
    std::fs::write(&path, &cut).expect("write");
    let err = Engine::open(cfg.clone(), None).err().expect("refuses");
    assert!(err.to_string().contains("checkpoint covers 300"), "{err}");

    // Alter one record byte instead: the root at the checkpoint differs.
    let mut altered = bytes.clone();
    altered[last + 60] ^= 1;
    // Keep the batch checksum valid so only the tree can notice.
    let h = auditlog_formats::batch::decode_header(&altered[last..]).expect("header");
    let body = altered[last + 32..last + h.total_bytes()].to_vec();
    let header =
        auditlog_formats::batch::encode_header(h.first_index, h.count, h.max_classification, &body);
    altered[last..last + 32].copy_from_slice(&header);
    std::fs::write(&path, &altered).expect("write");
    // Startup trusts the synced hash store below the checkpoint (the offline verifier
    // re-hashes everything); without it, the store is rebuilt from the segments and the
    // altered record shows as a different root.
    std::fs::remove_dir_all(dir.path().join("hashes")).expect("rm hashes");
    let err = Engine::open(cfg, None).err().expect("refuses");
    assert!(err.to_string().contains("different root"), "{err}");
}

/// A damaged checkpoint-log entry with more than one append's worth of good entries after
/// it is not a torn write: the engine refuses to open and leaves the log as it was, where it
/// used to cut the signed history from there on (and with it the newest checkpoint, the
/// promise that recovery checks the segments against). Restored, the log opens again.
#[test]
fn a_checkpoint_log_damaged_before_its_last_append_refuses_to_start() {
    use auditlog_formats::checkpoint_log::{encode_entry, parse_log};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = three_hundred_events_checkpointed(dir.path());
    // Longer than one append can tear, by repeating the newest entry: still a good log.
    let path = dir.path().join("checkpoints.log");
    let log = std::fs::read(&path).expect("read");
    let (notes, good) = parse_log(&log);
    assert_eq!(good, log.len());
    let newest = std::str::from_utf8(notes.last().expect("a checkpoint")).expect("utf8");
    let mut grown = log.clone();
    while grown.len() < log.len() + (80 << 10) {
        grown.extend(encode_entry(newest));
    }
    std::fs::write(&path, &grown).expect("write");
    let engine = Engine::open(cfg.clone(), None).expect("a long good log opens");
    assert_eq!(engine.tree_size(), 300);
    engine.shutdown().expect("shutdown");
    let grown = std::fs::read(&path).expect("read");

    // One bit of the first checkpoint's note.
    let mut damaged = grown.clone();
    damaged[20] ^= 0x20;
    std::fs::write(&path, &damaged).expect("write");
    let err = Engine::open(cfg.clone(), None).err().expect("refuses");
    let msg = err.to_string();
    assert!(
        msg.contains("checkpoints.log") && msg.contains("offset 0 ") && msg.contains("not a torn"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), damaged, "log changed");

    std::fs::write(&path, &grown).expect("restore");
    let engine = Engine::open(cfg, None).expect("restored log opens");
    assert_eq!(engine.tree_size(), 300);
    engine.shutdown().expect("shutdown");
}

#[test]
fn queue_limit_gives_back_pressure() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.queue_submissions_max = 2;
    let engine = Engine::open(cfg, None).expect("open");
    let mut full = 0;
    for i in 0..2000 {
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        b.add(&event(i, 256)).expect("valid");
        match engine.offer(b, Box::new(|_| {})) {
            Ok(None) => {}
            Ok(Some(waiting)) => match waiting.refuse() {
                EngineError::QueueFull(2) => full += 1,
                e => panic!("{e}"),
            },
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        full > 0,
        "a producer faster than the disk is told the queue is full"
    );
}

/// `push` says what it did: an event added, a full batch (nothing added, the event goes in
/// the next one), or a refusal (an invalid event; one too large for any submission).
#[test]
fn push_says_added_full_or_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.submission_bytes_max = 16 << 10;
    let max = cfg.submission_bytes_max;
    let engine = Engine::open(cfg, None).expect("open");
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    let mut n = 0u64;
    while b.push(&event(n, 1000)).expect("valid") == auditlog_engine::Pushed::Added {
        n += 1;
        assert!(n < 1_000, "never full");
    }
    assert_eq!(b.len() as u64, n, "a full batch keeps nothing of the event");
    assert!(b.body_bytes() <= max);
    assert!(matches!(
        b.push(b"{not json"),
        Err(EngineError::BadEvent { .. })
    ));
    let mut empty = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    assert!(matches!(
        empty.push(&event(0, max + 1)),
        Err(EngineError::SubmissionTooLarge { .. })
    ));
    assert!(empty.is_empty());
    let receipts = engine.append(b).expect("append");
    assert_eq!(receipts.leaf_hashes.len() as u64, n);
}

/// `offer` never waits: with the queue full it hands the submission back, and
/// `Waiting::wait` queues it once there is room; every submission is answered once.
#[test]
fn offer_hands_back_what_a_full_queue_cannot_take() {
    use std::sync::atomic::AtomicU64;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.queue_submissions_max = 2;
    let engine = Engine::open(cfg, None).expect("open");
    let answered = Arc::new(AtomicU64::new(0));
    let (mut handed_back, mut n) = (0u64, 0u64);
    while handed_back < 20 && n < 100_000 {
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        b.add(&event(n, 256)).expect("valid");
        n += 1;
        let a = answered.clone();
        let done: auditlog_engine::Done = Box::new(move |r| {
            r.expect("stored");
            a.fetch_add(1, Ordering::SeqCst);
        });
        let started = std::time::Instant::now();
        match engine.offer(b, done).expect("offer") {
            None => {}
            Some(waiting) => {
                handed_back += 1;
                waiting.wait(&engine).expect("queued once there is room");
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(
        handed_back > 0,
        "a full queue handed nothing back in {n} offers"
    );
    // The head is published just before the receipts are handed out: wait for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        n,
        "every submission answered once"
    );
    assert_eq!(engine.tree_size(), n);
}

#[test]
fn old_segments_are_sealed_by_age() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.segment_bytes = 64 << 20; // far from full: only age can seal it
    cfg.seal_age_ms = 200;
    let engine = Engine::open(cfg.clone(), None).expect("open");
    let receipts = append_n(&engine, 0, 50, 50);
    for _ in 0..100 {
        if engine.status().sealed_segments == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(engine.status().sealed_segments, 1, "{:?}", engine.status());
    // Reads now come from the sealed file, and ingest goes on in a new open segment.
    check_everything(&engine, &receipts);
    append_n(&engine, 50, 10, 10);
    // A version 2 record: 11 header bytes, the submitter, the payload.
    assert_eq!(
        engine.read_record(55).map(|r| r.len()).ok(),
        Some(11 + "token:test-writer".len() + 256)
    );
    let sealed: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(
        sealed,
        vec!["00000000000000000000-00000000000000000050.seg".to_string()]
    );
}

#[test]
fn a_record_altered_on_disk_is_refused_on_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.segment_bytes = 8 << 20;
    let engine = Engine::open(cfg.clone(), None).expect("open");
    append_n(&engine, 0, 400, 400); // one batch of ~110 KB: single reads walk it in steps
    engine
        .wait_checkpoint(400, Duration::from_secs(5))
        .expect("checkpoint");
    engine.shutdown().expect("shutdown");
    let path = open_segment_path(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    let h = auditlog_formats::batch::decode_header(&bytes).expect("header");
    let end = h.total_bytes();
    bytes[end - 10] ^= 1; // inside the last record's payload
                          // Re-forge the batch checksum so only the leaf hash can tell.
    let header = auditlog_formats::batch::encode_header(
        h.first_index,
        h.count,
        h.max_classification,
        &bytes[32..end],
    );
    bytes[..32].copy_from_slice(&header);
    std::fs::write(&path, &bytes).expect("write");
    let engine = Engine::open(cfg, None).expect("opens: the record is below the checkpoint");
    assert!(engine.read_record(398).is_ok());
    let err = engine.read_record(399).expect_err("altered record refused");
    assert!(
        err.to_string()
            .contains("record 399 does not hash to its stored leaf hash"),
        "{err}"
    );
}

/// Proofs by leaf hash: every leaf is found at its first index, across many small runs and
/// their merges, after a restart, and after a run file was damaged (it is dropped and rebuilt).
#[test]
fn leaf_hash_index_finds_every_leaf() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = small_config(dir.path());
    let engine = Engine::open(cfg.clone(), None).expect("open");
    let mut receipts = Vec::new();
    // Many checkpoints of a few batches each: many runs, merged as they pile up.
    for round in 0..30u64 {
        let got = append_n(&engine, round * 200, 200, 50);
        engine
            .wait_checkpoint(engine.tree_size(), Duration::from_secs(10))
            .expect("checkpoint");
        receipts.extend(got);
    }
    let size = engine.tree_size();
    let check = |engine: &Engine| {
        for &(index, leaf) in &receipts {
            assert_eq!(
                engine.index_of_leaf(&leaf, size).expect("lookup"),
                Some(index),
                "leaf {index}"
            );
            // Not in a smaller tree.
            assert_eq!(engine.index_of_leaf(&leaf, index).expect("lookup"), None);
        }
        assert_eq!(
            engine.index_of_leaf(&[7u8; 32], size).expect("lookup"),
            None
        );
    };
    check(&engine);
    let runs = std::fs::read_dir(dir.path().join("leafindex"))
        .expect("index dir")
        .count();
    assert!(runs < 10, "runs were merged ({runs} left)");
    engine.shutdown().expect("shutdown");

    // Damage one run: it is dropped on open, rebuilt at the next checkpoint, and lookups are
    // right in between (the unindexed tail is scanned).
    let mut victim = std::fs::read_dir(dir.path().join("leafindex"))
        .expect("index dir")
        .map(|e| e.expect("entry").path())
        .collect::<Vec<_>>();
    victim.sort();
    let bytes = std::fs::read(&victim[0]).expect("read run");
    let mut bad = bytes.clone();
    bad[40] ^= 1;
    std::fs::write(&victim[0], &bad).expect("write run");
    let engine = Engine::open(cfg, None).expect("reopen");
    assert_ne!(
        std::fs::read(&victim[0]).ok(),
        Some(bad),
        "the damaged run was dropped"
    );
    check(&engine);
    let more = append_n(&engine, 6000, 10, 10);
    engine
        .wait_checkpoint(engine.tree_size(), Duration::from_secs(10))
        .expect("checkpoint");
    check(&engine);
    for (index, leaf) in more {
        assert_eq!(
            engine
                .index_of_leaf(&leaf, engine.tree_size())
                .expect("lookup"),
            Some(index)
        );
    }
    engine.shutdown().expect("shutdown");
}

/// Sealed open segments are not unlinked (freeing them stalled the disk under the
/// sequencer's syncs) but zeroed in place and reused: the same inode comes back as a later
/// open segment, none of its old batches is ever read as new, and a `recycle-*.old` file
/// full of valid batches found at start is neither replayed nor in the way.
#[test]
fn sealed_open_segments_are_recycled_never_replayed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = small_config(dir.path());
    let segs = dir.path().join("segments");
    let engine = Engine::open(cfg.clone(), None).expect("open");
    let first_inode = std::fs::metadata(open_segment_path(dir.path()))
        .expect("stat")
        .ino();
    let mut receipts = Vec::new();
    let mut reused = false;
    for round in 0..20u64 {
        receipts.extend(append_n(&engine, round * 2_000, 2_000, 250));
        std::thread::sleep(Duration::from_millis(50));
        if std::fs::metadata(open_segment_path(dir.path()))
            .map(|m| m.ino())
            .ok()
            == Some(first_inode)
        {
            reused = true;
            break;
        }
    }
    assert!(
        reused,
        "the first segment's file never came back as an open segment"
    );
    check_everything(&engine, &receipts);
    let size = engine.tree_size();
    engine.shutdown().expect("shutdown");

    // A retired segment full of valid batches, as a crash could leave it.
    let stale = segs.join("recycle-00000000000000000007.old");
    std::fs::copy(open_segment_path(dir.path()), &stale).expect("copy");
    let engine = Engine::open(cfg.clone(), None).expect("reopen");
    assert_eq!(engine.tree_size(), size, "a recycle file was replayed");
    receipts.extend(append_n(&engine, size, 6_000, 250));
    check_everything(&engine, &receipts);
    let size = engine.tree_size();
    engine.shutdown().expect("shutdown");
    let engine = Engine::open(cfg, None).expect("reopen again");
    assert_eq!(engine.tree_size(), size);
    assert_eq!(
        engine.status().recovery.torn_tail,
        None,
        "old bytes in a reused file looked like a torn tail"
    );
    check_everything(&engine, &receipts);
}

/// A sealer that falls behind slows appends instead of letting unsealed segments pile up:
/// with it held, the open files stop at the one being written, the one it holds, the
/// queue's `seal_queue_segments_max` and the one the sequencer waits to hand over, and the
/// producer waits. Released, everything is acked, sealed
/// and provable.
#[test]
fn slow_sealing_gives_back_pressure_not_a_pile_of_segments() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.seal_queue_segments_max = 2;
    cfg.seal_age_ms = 0;
    let faults = Arc::new(FaultHooks::default());
    faults.hold_sealer.store(true, Ordering::SeqCst);
    cfg.faults = Some(faults.clone());
    let engine = Arc::new(Engine::open(cfg, None).expect("open"));
    let open_files = || open_segment_files(dir.path());
    // ~12 segments of 1 MiB: three times what the bound lets through.
    let total = 40_000u64;
    let producer = {
        let engine = engine.clone();
        std::thread::spawn(move || append_n(&engine, 0, total, 250))
    };
    let mut stuck_at = None;
    for _ in 0..250 {
        std::thread::sleep(Duration::from_millis(20));
        let size = engine.tree_size();
        if open_files() == 2 + 3 && stuck_at == Some(size) {
            break;
        }
        stuck_at = (open_files() == 2 + 3).then_some(size);
    }
    let size = stuck_at.expect("the open files reached the bound and appends stopped");
    assert!(
        size < total / 2,
        "appends went on past the bound: {size} of {total}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        engine.tree_size(),
        size,
        "appends went on with the queue full"
    );
    assert_eq!(
        open_files(),
        2 + 3,
        "more unsealed segments than the bound allows"
    );
    assert!(!producer.is_finished(), "the producer was not held back");

    faults.hold_sealer.store(false, Ordering::SeqCst);
    let receipts = producer.join().expect("producer");
    assert_eq!(receipts.len() as u64, total);
    assert_eq!(engine.tree_size(), total);
    wait_sealed(&engine, 10);
    check_everything(&engine, &receipts);
}

/// A sealed file whose blocks do not decompress to the open segment's records (a stand-in
/// for a compressor or re-blocking bug: one record byte changed between hashing and
/// compressing) is refused by the read-back: the open file stays the truth, the failure is
/// counted and shown until a seal succeeds, and the retry seals the records unchanged.
#[test]
fn a_seal_that_reads_back_different_records_is_refused_and_retried() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    let faults = Arc::new(FaultHooks::default());
    faults.damage_seals.store(3, Ordering::SeqCst);
    cfg.faults = Some(faults.clone());
    let engine = Engine::open(cfg, None).expect("open");
    // A little over one 1 MiB segment: exactly one seal, of the first segment.
    let receipts = append_n(&engine, 0, 4_500, 250);
    let mut seen_error = None;
    for _ in 0..2_000 {
        let s = engine.status();
        if let Some(e) = s.seal_error {
            assert_eq!(s.sealed_segments, 0, "a damaged seal was installed");
            seen_error = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let e = seen_error.expect("the failed seal is shown in the status");
    assert!(e.contains("sealed records differ"), "{e}");
    wait_sealed(&engine, 1);
    // The segment is in place just before the sealer records its success.
    let mut s = engine.status();
    for _ in 0..500 {
        if s.seal_error.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        s = engine.status();
    }
    assert_eq!(s.seal_error, None, "a successful seal clears the error");
    assert_eq!(s.seal_failures, 3, "each damaged attempt failed: {s:?}");
    // Every record, not a sample: the damage was one byte of one record.
    let alg = engine.tree_hash();
    for &(index, leaf) in &receipts {
        let rec = engine.read_record(index).expect("read");
        assert_eq!(alg.leaf(&rec), leaf, "record {index} hashes to its receipt");
    }
    check_everything(&engine, &receipts);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("segments"))
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".tmp") && !n.starts_with("prealloc-"))
        .collect();
    assert!(leftovers.is_empty(), "staged seals left: {leftovers:?}");
}

/// Shutdown while every seal fails (say, the HSM is gone) and the seal queue is full: the
/// sequencer waits at a rotation for a sealer that keeps retrying. Shutdown gives up on
/// sealing instead of hanging (the open files stay, and the next start seals them), acks
/// or refuses every queued batch, and loses nothing acknowledged.
#[test]
fn shutdown_with_seals_failing_and_the_seal_queue_full_completes() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.seal_queue_segments_max = 1;
    let faults = Arc::new(FaultHooks::default());
    faults.damage_seals.store(u32::MAX, Ordering::SeqCst);
    cfg.faults = Some(faults);
    let engine = Engine::open(cfg.clone(), None).expect("open");
    type Acked = Arc<Mutex<Vec<(u64, [u8; 32])>>>;
    let (acked, answered): (Acked, Arc<Mutex<u64>>) = Default::default();
    let (mut submitted, mut last_size, mut still_ms) = (0u64, 0u64, 0u64);
    // Submit without blocking until appends stop with the open files at the bound: the one
    // written, the one the sealer retries, one queued, one waiting to be queued.
    while still_ms < 500 || open_segment_files(dir.path()) < 1 + 3 {
        if submitted < 60_000 {
            let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
            for k in submitted..submitted + 250 {
                b.add(&event(k, 256)).expect("valid event");
            }
            let (acked, answered) = (acked.clone(), answered.clone());
            let done: auditlog_engine::Done = Box::new(move |r| {
                if let Ok(r) = r {
                    let mut a = acked.lock().expect("lock");
                    for (k, h) in r.leaf_hashes.iter().enumerate() {
                        a.push((r.first_index + k as u64, *h));
                    }
                }
                *answered.lock().expect("lock") += 1;
            });
            // A full queue hands the batch back (its `done` never runs): look again later.
            if engine.offer(b, done).expect("offer").is_none() {
                submitted += 250;
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
        let size = engine.tree_size();
        still_ms = if size == last_size { still_ms + 10 } else { 0 };
        last_size = size;
    }
    assert!(last_size < submitted, "appends never waited for the sealer");
    // The sealer's first attempt may still be encoding when appends stall.
    auditlog_tests::wait_for("a failed seal", 60, || {
        let s = engine.status();
        s.seal_failures > 0 && s.seal_error.is_some()
    });
    assert_eq!(engine.status().sealed_segments, 0);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(engine.shutdown()));
    rx.recv_timeout(Duration::from_secs(30))
        .expect("shutdown finished")
        .expect("shutdown succeeded");
    assert_eq!(
        *answered.lock().expect("lock"),
        submitted / 250,
        "every submitted batch was answered"
    );
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() as u64 >= last_size);

    // Reopened without the fault: the open files are sealed, and every ack holds.
    cfg.faults = None;
    let engine = Engine::open(cfg, None).expect("reopen");
    assert!(engine.tree_size() >= acked.len() as u64);
    wait_sealed(&engine, 1);
    check_everything(&engine, &acked);
    for &(index, leaf) in &acked {
        let rec = engine.read_record(index).expect("read");
        assert_eq!(engine.tree_hash().leaf(&rec), leaf, "record {index}");
    }
}

fn flaky_key() -> note::NoteSigner {
    note::NoteSigner::from_seed("auditlog.local/log", [7u8; 32]).expect("key")
}

/// A signer that fails while `down` is set (an HSM outage).
struct FlakySigner {
    key: note::NoteSigner,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl auditlog_engine::Signer for FlakySigner {
    fn verifier_key(&self) -> note::VerifierKey {
        self.key.verifier_key()
    }

    fn sign(&self, message: &[u8]) -> auditlog_engine::Result<Vec<u8>> {
        if self.down.load(Ordering::SeqCst) {
            return Err(EngineError::Signer("the HSM is gone".into()));
        }
        Ok(self.key.sign(message).to_vec())
    }
}

/// Sealed segments with no note in their footer, by end, and the checkpoint log's sizes.
fn unsigned_footers_and_logged_sizes(dir: &std::path::Path) -> (Vec<u64>, Vec<u64>) {
    use auditlog_formats::segment as sg;
    let mut ends = Vec::new();
    for e in std::fs::read_dir(dir.join("segments")).expect("ls") {
        let p = e.expect("entry").path();
        if p.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let b = std::fs::read(&p).expect("read");
        let h = sg::SegmentHeader::decode(&b[..sg::HEADER_BYTES]).expect("header");
        let t =
            sg::decode_trailer(b.len() as u64, &b[b.len() - sg::TRAILER_BYTES..]).expect("trailer");
        let fo = t.footer_offset as usize;
        let f = sg::decode_footer(&h, &t, &b[fo..fo + t.footer_bytes as usize]).expect("footer");
        if f.checkpoint_note.is_empty() {
            ends.push(h.first_index + h.count);
        }
    }
    ends.sort();
    let log = std::fs::read(dir.join("checkpoints.log")).expect("checkpoint log");
    let key = flaky_key().verifier_key();
    let sizes = auditlog_formats::checkpoint_log::parse_log(&log)
        .0
        .iter()
        .map(|b| {
            let text = std::str::from_utf8(b).expect("utf-8");
            note::open_checkpoint(text, std::slice::from_ref(&key))
                .expect("checkpoint verifies")
                .0
                .size
        })
        .collect();
    (ends, sizes)
}

/// Appends `n` events from `start` on another thread and waits (up to 60 s) for all of them
/// to be acknowledged: ingest must not stop while the signer is down.
fn append_within_a_minute(engine: &Arc<Engine>, start: u64, n: u64) -> Vec<(u64, [u8; 32])> {
    let (tx, rx) = std::sync::mpsc::channel();
    let e = engine.clone();
    let t = std::thread::spawn(move || {
        let receipts = append_n(&e, start, n, 250);
        // The engine is let go before the answer: the caller may need it unshared.
        drop(e);
        tx.send(receipts)
    });
    let receipts = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("ingest stopped with the signer down: {:?}", engine.status()));
    t.join().expect("appender thread").expect("answer sent");
    receipts
}

/// An HSM outage stops no write: with the signer failing and a seal queue of one, ten
/// segments' worth of events are acknowledged and sealed (footers without a note), and no
/// checkpoint is published. When the signer is back, the checkpointer signs a checkpoint at
/// each such segment's end, in order, then the head. An outage that lasts through a
/// shutdown is picked up by the next start, which finds the unsigned footers and signs them.
/// The verifier accepts both directories.
#[test]
fn a_signer_outage_stops_no_write_and_footers_are_signed_when_it_returns() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.seal_queue_segments_max = 1;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signer = || {
        Arc::new(FlakySigner {
            key: flaky_key(),
            down: down.clone(),
        }) as Arc<dyn auditlog_engine::Signer>
    };
    let engine = Arc::new(Engine::open(cfg.clone(), Some(signer())).expect("open"));
    let mut receipts = append_n(&engine, 0, 1_000, 250);
    let before = engine
        .wait_checkpoint(1_000, Duration::from_secs(10))
        .expect("checkpoint")
        .checkpoint
        .size;

    // Outage while running: ~10 segments of 1 MiB.
    down.store(true, Ordering::SeqCst);
    receipts.extend(append_within_a_minute(&engine, 1_000, 40_000));
    wait_sealed(&engine, 8);
    let s = engine.status();
    assert!(s.signer_error.is_some(), "{s:?}");
    assert_eq!(s.seal_error, None, "seals do not fail for want of a signer");
    let (unsigned, logged) = unsigned_footers_and_logged_sizes(dir.path());
    assert!(unsigned.len() >= 8, "{unsigned:?}");
    assert!(
        logged.iter().all(|&s| s <= before),
        "signed with the HSM gone: {logged:?}"
    );

    down.store(false, Ordering::SeqCst);
    check_everything(&engine, &receipts);
    let (unsigned, logged) = unsigned_footers_and_logged_sizes(dir.path());
    assert!(
        logged.windows(2).all(|w| w[0] < w[1]),
        "out of order: {logged:?}"
    );
    for end in &unsigned {
        assert!(logged.contains(end), "no checkpoint at {end}: {logged:?}");
    }

    // An outage through a shutdown: the next start signs what the footers lack.
    down.store(true, Ordering::SeqCst);
    let (size, sealed) = (engine.tree_size(), engine.status().sealed_segments);
    receipts.extend(append_within_a_minute(&engine, size, 20_000));
    wait_sealed(&engine, sealed + 3);
    // Segments queued before this outage may end below checkpoints already published: a
    // checkpoint at their end cannot follow in order, and the newest one covers them.
    let signed_before_outage = engine.status().checkpoint_size.unwrap_or(0);
    let (unsigned_now, _) = unsigned_footers_and_logged_sizes(dir.path());
    let Ok(engine) = Arc::try_unwrap(engine) else {
        panic!("engine still shared")
    };
    engine.shutdown().expect("shutdown with the signer down");
    assert!(unsigned_now.len() >= unsigned.len() + 3, "{unsigned_now:?}");
    down.store(false, Ordering::SeqCst);
    let engine = Engine::open(cfg, Some(signer())).expect("reopen");
    check_everything(&engine, &receipts);
    engine.shutdown().expect("shutdown");
    let (unsigned, logged) = unsigned_footers_and_logged_sizes(dir.path());
    assert!(
        logged.windows(2).all(|w| w[0] < w[1]),
        "out of order: {logged:?}"
    );
    for end in &unsigned {
        assert!(
            logged.contains(end) || *end <= signed_before_outage,
            "no checkpoint at {end}: {logged:?}"
        );
    }
    let key = flaky_key().verifier_key();
    let s = auditlog_client::verify::verify_dir(dir.path(), &key, &mut |_, _| {})
        .expect("the offline verifier accepts the log");
    assert_eq!((s.signed_size, s.unsigned_records), (s.events, 0));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("sealed without a signed footer")),
        "{:?}",
        s.warnings
    );
}

/// Checkpoints asked for are waited for on notifications, never a clock: with the
/// checkpointer's own interval at an hour, a request for a size the log does not have yet
/// is signed as soon as a group commit reaches that size. A request for a far-off size
/// costs no signature per batch.
#[test]
fn a_checkpoint_asked_for_a_size_to_come_is_signed_when_the_log_reaches_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.checkpoint_interval_ms = 3_600_000;
    let engine = Engine::open(cfg, None).expect("open");
    let (tx, published) = std::sync::mpsc::channel();
    engine.on_checkpoint(Box::new(move |size| {
        let _ = tx.send(size);
    }));
    append_n(&engine, 0, 500, 250);
    let size = engine
        .wait_checkpoint(500, Duration::from_secs(10))
        .expect("a size the log has is signed at once")
        .checkpoint
        .size;
    assert_eq!(size, 500);

    // A far-off size asked for, then batches: the next checkpoint is the one asked for
    // below, with none between (the log would show each batch signed).
    engine.want_checkpoint(1 << 40);
    append_n(&engine, 500, 2_000, 250);
    // A size to come, asked for without waiting in the engine: the listener hears of it.
    engine.want_checkpoint(3_000);
    append_n(&engine, 2_500, 500, 250);
    let mut heard = Vec::new();
    while heard.last().is_none_or(|&s| s < 3_000) {
        match published.recv_timeout(Duration::from_secs(10)) {
            Ok(s) => heard.push(s),
            Err(_) => panic!("no checkpoint at 3000 before the hour-long clock: {heard:?}"),
        }
    }
    let key = engine.verifier_key();
    engine.shutdown().expect("shutdown");
    let log = std::fs::read(dir.path().join("checkpoints.log")).expect("checkpoint log");
    let logged: Vec<u64> = auditlog_formats::checkpoint_log::parse_log(&log)
        .0
        .iter()
        .map(|b| {
            let text = std::str::from_utf8(b).expect("utf-8");
            let (cp, _) =
                note::open_checkpoint(text, std::slice::from_ref(&key)).expect("verifies");
            cp.size
        })
        .collect();
    assert_eq!(&logged[..2], &[500, 3_000], "{logged:?}");
}

/// `received_at` never decreases in index order, whatever the producers' concurrency: it is
/// stamped at the enqueue, under the queue's order. (Stamped when a producer began its
/// batch, four producers left 17% of records below an earlier index's.) Every receipt's
/// time and leaf hash are the record's.
#[test]
fn received_at_never_decreases_in_index_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Arc::new(Engine::open(small_config(dir.path()), None).expect("open"));
    let receipts: Vec<auditlog_engine::Receipts> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|p| {
                let engine = engine.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for b in 0..100u64 {
                        let mut batch = engine.new_batch(auditlog_engine::Submitter::token("t"));
                        for i in 0..20u64 {
                            batch
                                .add(&event(p * 1_000_000 + b * 100 + i, 200))
                                .expect("valid");
                            // A producer that takes its time building a batch.
                            if i % 5 == 0 {
                                std::thread::yield_now();
                            }
                        }
                        out.push(engine.append(batch).expect("append"));
                    }
                    out
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("producer"))
            .collect()
    });
    let size = engine.tree_size();
    assert_eq!(size, 4 * 100 * 20);
    let mut last = 0u64;
    let mut times = vec![0u64; size as usize];
    engine
        .read_records(0, size, &mut |i, rec| {
            let r = auditlog_formats::record::Record::parse(rec).expect("record");
            assert!(
                r.received_at_unix_ns >= last,
                "record {i} received at {} < {last}, an earlier index's",
                r.received_at_unix_ns
            );
            last = r.received_at_unix_ns;
            times[i as usize] = r.received_at_unix_ns;
            Ok(true)
        })
        .expect("read");
    for r in &receipts {
        for (k, leaf) in r.leaf_hashes.iter().enumerate() {
            let i = r.first_index + k as u64;
            assert_eq!(
                times[i as usize], r.received_at_unix_ns,
                "receipt time of {i}"
            );
            assert_eq!(*leaf, engine.leaf_hash(i).expect("leaf"), "leaf of {i}");
        }
    }
}

/// A new record is at most one tlog-tiles entry (65,535 bytes, FORMATS.md §4): the payload
/// limit is what the header and the submitter leave, and one byte more is refused with a
/// reason naming both limits. The record then comes back byte for byte in its entry bundle,
/// hashing (RFC 9162, SHA-256) to the leaf in the level-0 tile. Fails if ingest still
/// takes a 65,536-byte payload, or a bundle or tile differs from the record and its leaf.
#[test]
fn a_record_is_at_most_one_tiles_entry_and_its_bundle_holds_it() {
    use auditlog_engine::{Pushed, Submitter, TileError};
    use auditlog_formats::tiles::{bundle_entries, Tile, ENTRY_BYTES_MAX};
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(small_config(dir.path()), None).expect("open");
    let who = Submitter::token("test-writer");
    let payload_max = ENTRY_BYTES_MAX - 11 - who.as_str().len();
    let mut b = engine.new_batch(who);
    assert_eq!(b.push(&event(0, payload_max)).expect("fits"), Pushed::Added);
    match b.push(&event(1, payload_max + 1)) {
        Err(EngineError::BadEvent { reason, .. }) => assert!(
            reason.contains("65535") && reason.contains(&format!("at most {payload_max} bytes")),
            "{reason}"
        ),
        other => panic!("a record over one entry: {other:?}"),
    }
    assert_eq!(b.len(), 1, "the refused event is not kept");
    engine.append(b).expect("append");
    let size = engine.tree_size();
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    let tile = |p: &str| engine.read_tile(Tile::parse(p).expect("path"));
    let last = size - 1;
    let bundle = tile(&format!("tile/entries/000.p/{size}")).expect("bundle");
    let entries: Vec<&[u8]> = bundle_entries(&bundle)
        .collect::<Result<_, _>>()
        .expect("whole entries");
    let record = engine.read_record(last).expect("record");
    assert_eq!(entries.len() as u64, size);
    assert_eq!(entries[last as usize], record.as_slice());
    assert_eq!(record.len(), ENTRY_BYTES_MAX);
    let leaves = tile(&format!("tile/0/000.p/{size}")).expect("tile");
    let leaf = auditlog_formats::TreeHash::Sha256.leaf(&record);
    assert_eq!(&leaves[32 * last as usize..], leaf.as_slice());
    // Past the newest checkpoint: nothing, with the sizes named.
    match tile(&format!("tile/entries/000.p/{}", size + 1)) {
        Err(e @ TileError::Beyond { .. }) => assert!(e.to_string().contains(&size.to_string())),
        other => panic!("past the checkpoint: {other:?}"),
    }
    assert!(matches!(tile("tile/0/000"), Err(TileError::Beyond { .. })));
}
