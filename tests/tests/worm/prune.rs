//! Local retention (pruning): sealed segments leave the local disk once a verified copy is
//! on the store, and their records, proofs and exports are then served from the store.
//! Part of the `worm` test binary.

use auditlog_tests::wait_for;
use std::path::Path;
use std::time::{Duration, Instant};

use auditlog_client::verify::verify_dir;
use auditlog_engine::{Engine, EngineConfig, EngineError};
use auditlog_formats::record::Record;
use auditlog_formats::tree;
use auditlog_tests::worm_servers::start_moto;
use auditlog_tests::{classified_event, replication, s3_options, small_config};
use auditlog_worm::TargetOptions;

fn prune_config(dir: &Path, target: &str, opts: TargetOptions, keep_ms: u64) -> EngineConfig {
    let mut cfg = small_config(dir);
    let mut r = replication(target, opts);
    r.local_keep_ms = Some(keep_ms);
    // One cached segment, so reads of different pruned segments go to the store.
    r.store_read_cache_segments_max = 1;
    cfg.replication = Some(r);
    // No search indexer: one lagging behind the pruner reads pruned segments from the store,
    // and the segment it left in the cache is what a tampering test then reads (a flake).
    cfg.search_index = false;
    cfg
}

/// Ingests batches until `segments` segments are sealed (local or pruned); returns every
/// payload sent, by index.
fn ingest_until_sealed(engine: &Engine, sent: &mut Vec<Vec<u8>>, segments: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = engine.status();
        if st.sealed_segments + st.pruned_segments >= segments {
            return;
        }
        assert!(Instant::now() < deadline, "segments did not seal");
        let n = sent.len() as u64;
        let evs: Vec<Vec<u8>> = (n..n + 200)
            .map(|i| classified_event(i, "CUI//BASIC"))
            .collect();
        let r = engine
            .append_payloads(evs.iter().map(|e| e.as_slice()))
            .expect("append");
        assert_eq!(r.first_index, n);
        sent.extend(evs);
    }
}

fn local_sealed_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("segments"))
        .expect("list")
        .filter_map(|e| {
            let n = e.expect("entry").file_name().to_string_lossy().to_string();
            n.ends_with(".seg").then_some(n)
        })
        .collect();
    v.sort();
    v
}

/// Every record (one by one and as one range) has the bytes sent, and inclusion proofs of
/// `probes` verify against a signed checkpoint.
fn check_all_reads(engine: &Engine, sent: &[Vec<u8>], probes: &[u64]) {
    let size = sent.len() as u64;
    for (i, payload) in sent.iter().enumerate() {
        let rec = engine.read_record(i as u64).expect("read_record");
        assert_eq!(Record::parse(&rec).expect("record").payload, &payload[..]);
    }
    let mut next = 0u64;
    engine
        .read_records(0, size, &mut |i, rec| {
            assert_eq!(i, next);
            assert_eq!(
                Record::parse(rec).expect("record").payload,
                &sent[i as usize][..]
            );
            next += 1;
            Ok(true)
        })
        .expect("read_records");
    assert_eq!(next, size, "range read incomplete");
    let cp = engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    let alg = engine.tree_hash();
    for &i in probes {
        let leaf = alg.leaf(&engine.read_record(i).expect("read"));
        let proof = engine
            .prove_inclusion(i, cp.checkpoint.size)
            .expect("prove");
        tree::verify_inclusion(
            alg,
            i,
            cp.checkpoint.size,
            &leaf,
            &proof,
            &cp.checkpoint.root,
        )
        .expect("inclusion proof verifies");
    }
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn s3_pruned_segments_read_prove_export_restart_and_store_down() {
    let moto = start_moto();
    let ep = moto.endpoint();
    let opts = s3_options(&ep);
    auditlog_worm::create_bucket("s3://prune", &opts, true).expect("bucket with lock");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = prune_config(dir.path(), "s3://prune/log", opts.clone(), 0);
    let engine = Engine::open(cfg.clone(), None).expect("open");
    let key = engine.verifier_key();
    let mut sent = Vec::new();
    ingest_until_sealed(&engine, &mut sent, 4);
    wait_for("every sealed segment pruned", 30, || {
        let st = engine.status();
        st.sealed_segments == 0 && st.pruned_segments >= 4
    });
    assert!(local_sealed_files(dir.path()).is_empty());
    let st = engine.status();
    assert!(st.pruned_bytes > 0);
    let r = st.replication.expect("replication");
    assert!(r.alarm.is_none(), "{r:?}");

    // Pruned and local records alike, proofs at pruned indexes, the whole range.
    let size = sent.len() as u64;
    let probes = [0, 1, 250, 777, size / 2, size - 1];
    check_all_reads(&engine, &sent, &probes);
    let reads = engine.status().store_reads;
    assert!(reads.fetches >= 4, "{reads:?}");
    assert_eq!(reads.fetch_failures, 0);

    // Store down: a pruned segment not in the cache cannot be read, and says so; the open
    // segment and proofs are still served. Sealed segments stay local until shipped.
    moto.signal(libc::SIGSTOP);
    let pruned_before = engine.status().pruned_segments;
    engine
        .read_record(size - 1)
        .expect("cache the last pruned segment");
    match engine.read_record(0) {
        Err(EngineError::StoreUnavailable { place, .. }) => {
            assert!(place.contains("segments/"), "{place}")
        }
        other => panic!("expected StoreUnavailable, got {other:?}"),
    }
    // Two segments more than there are now, whatever sealed or pruned meanwhile (counting
    // from `pruned_before` alone returned at once when two segments had sealed and not yet
    // shipped as the store stopped, and nothing was ingested: seen in a soak run).
    let st = engine.status();
    ingest_until_sealed(
        &engine,
        &mut sent,
        st.sealed_segments + st.pruned_segments + 2,
    );
    // The replicator has tried the new segments and failed (twice, so a try that began
    // before they sealed does not count): had it shipped one, pruning would follow.
    let failures = |st: &auditlog_engine::Status| st.replication.as_ref().map_or(0, |r| r.failures);
    let failed_before = failures(&engine.status());
    wait_for("the replicator to fail on the stopped store", 30, || {
        failures(&engine.status()) >= failed_before + 2
    });
    let st = engine.status();
    assert_eq!(
        st.pruned_segments, pruned_before,
        "pruned while the store was down"
    );
    assert!(st.sealed_segments >= 2);
    assert!(st.store_reads.fetch_failures >= 1);
    let last = sent.len() as u64 - 1;
    engine.read_record(last).expect("open segment still served");
    assert!(engine.prove_inclusion(0, 1).is_ok());

    // Store back: reads work again, the new segments ship and are pruned.
    moto.signal(libc::SIGCONT);
    engine
        .read_record(0)
        .expect("read after the store came back");
    wait_for("new segments pruned", 30, || {
        engine.status().sealed_segments == 0
    });
    engine.shutdown().expect("shutdown");

    // A crash between recording a segment as pruned and unlinking it leaves the file:
    // recovery finishes the unlink.
    let target = auditlog_worm::open("s3://prune/log", &opts).expect("target");
    let first_obj = target
        .list("segments/")
        .expect("list")
        .into_iter()
        .next()
        .expect("a segment object");
    let name = first_obj.key.trim_start_matches("segments/").to_string();
    let bytes = target.get(&first_obj.key).expect("get").expect("present");
    std::fs::write(dir.path().join("segments").join(&name), bytes).expect("put back");

    // Restart: recovery accepts the recorded pruning; everything still reads and proves.
    let engine = Engine::open(cfg, None).expect("reopen with pruned segments");
    assert!(engine.status().pruned_segments >= pruned_before + 2);
    assert!(local_sealed_files(dir.path()).is_empty(), "unlink finished");
    check_all_reads(&engine, &sent, &[0, size / 2, size + 5]);
    engine.shutdown().expect("shutdown");

    // The offline verifier reports pruned segments instead of failing on them.
    let summary = verify_dir(dir.path(), &key, &mut |_, _| {}).expect("verify data dir");
    assert_eq!(summary.events, sent.len() as u64);
    assert!(summary.pruned_segments >= 6, "{summary:?}");
    assert!(
        summary.warnings.iter().any(|w| w.contains("pruned")),
        "{:?}",
        summary.warnings
    );
    let out = auditlog_tests::daemon::client_command()
        .arg("verify")
        .arg(dir.path())
        .args(["--key", &key.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run auditlog verify");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("pruned segments"), "{stdout}");
    assert!(stderr.contains("pruned locally"), "{stderr}");
}

#[test]
fn prune_refuses_bad_copies_reads_refuse_tampered_objects_and_gaps_stay_refused() {
    // Embedded default target (`<data_dir>/worm`): objects are files a test can alter.
    let local = TargetOptions::default();

    // A pruned segment's object altered on the store: the read fails, naming it.
    let a = tempfile::tempdir().expect("tmp");
    let cfg_a = prune_config(a.path(), "", local.clone(), 0);
    let engine = Engine::open(cfg_a.clone(), None).expect("open");
    let mut sent = Vec::new();
    ingest_until_sealed(&engine, &mut sent, 3);
    wait_for("two segments pruned", 30, || {
        engine.status().pruned_segments >= 2
    });
    let worm_segs = a.path().join("worm/segments");
    let mut objects: Vec<_> = std::fs::read_dir(&worm_segs)
        .expect("list store")
        .map(|e| e.expect("entry").path())
        .collect();
    objects.sort();
    let victim = &objects[0];
    let name = victim
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(
        !a.path().join("segments").join(&name).exists(),
        "{name} pruned"
    );
    let mut b = std::fs::read(victim).expect("read object");
    b[100] ^= 1;
    std::fs::remove_file(victim).expect("rm");
    std::fs::write(victim, &b).expect("write");
    match engine.read_record(0) {
        Err(EngineError::Corrupt { path, what }) => {
            assert!(
                path.display().to_string().contains(&name),
                "{path:?}: {what}"
            )
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    let err = engine
        .read_records(0, 10, &mut |_, _| Ok(true))
        .expect_err("range over a tampered object fails");
    assert!(err.to_string().contains(&name), "{err}");
    engine
        .read_record(sent.len() as u64 - 1)
        .expect("others still read");
    engine.shutdown().expect("shutdown");

    // Without the pruned list, the pruned segments are an unexplained gap: refused.
    std::fs::rename(
        a.path().join("replication/pruned.log"),
        a.path().join("pruned.log.aside"),
    )
    .expect("move pruned list");
    match Engine::open(cfg_a.clone(), None) {
        Err(EngineError::Corrupt { what, .. }) => {
            assert!(what.contains("a segment is missing"), "{what}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("started with segments missing"),
    }
    // With it, but a hash store that must be rebuilt over pruned ranges: refused, saying why.
    std::fs::rename(
        a.path().join("pruned.log.aside"),
        a.path().join("replication/pruned.log"),
    )
    .expect("restore pruned list");
    std::fs::remove_dir_all(a.path().join("hashes")).expect("rm hashes");
    match Engine::open(cfg_a, None) {
        Err(EngineError::Corrupt { what, .. }) => {
            assert!(what.contains("was pruned locally"), "{what}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("rebuilt a hash store over pruned segments"),
    }

    // A shipped segment whose store copy differs is never pruned: the replicator raises
    // an alarm and the local file stays.
    // The copy is changed while no engine runs: shipped and read back under a keep time
    // nothing reaches, then reopened with one that every segment has passed, so the
    // prune's comparison is the first to see the changed copy (changed while running, the
    // upload's own read-back could see it first: seen in a soak run).
    let c = tempfile::tempdir().expect("tmp");
    let engine =
        Engine::open(prune_config(c.path(), "", local.clone(), 3_600_000), None).expect("open");
    let mut sent = Vec::new();
    ingest_until_sealed(&engine, &mut sent, 2);
    let first = local_sealed_files(c.path())[0].clone();
    let first_end: u64 = first
        .trim_end_matches(".seg")
        .split_once('-')
        .and_then(|(_, end)| end.parse().ok())
        .expect("segment file name");
    wait_for("first segment shipped", 30, || {
        engine
            .status()
            .replication
            .is_some_and(|r| r.shipped_end >= first_end)
    });
    engine.shutdown().expect("shutdown");
    let object = c.path().join("worm/segments").join(&first);
    let mut b = std::fs::read(&object).expect("read object");
    b[100] ^= 1;
    std::fs::remove_file(&object).expect("rm");
    std::fs::write(&object, &b).expect("write");
    let cfg_c = prune_config(c.path(), "", local, 1);
    let engine = Engine::open(cfg_c.clone(), None).expect("reopen");
    wait_for("prune alarm", 30, || {
        engine
            .status()
            .replication
            .is_some_and(|r| r.alarm.is_some())
    });
    let alarm = engine
        .status()
        .replication
        .expect("r")
        .alarm
        .expect("alarm");
    assert!(
        alarm.contains(&first) && alarm.contains("not pruned"),
        "{alarm}"
    );
    assert_eq!(engine.status().pruned_segments, 0);
    assert!(c.path().join("segments").join(&first).exists());
    engine.read_record(0).expect("still read locally");
    engine.shutdown().expect("shutdown");

    // An unexplained missing segment still stops recovery.
    let files = local_sealed_files(c.path());
    std::fs::remove_file(c.path().join("segments").join(&files[0])).expect("rm");
    match Engine::open(cfg_c, None) {
        Err(EngineError::Corrupt { what, .. }) => {
            assert!(what.contains("a segment is missing"), "{what}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("started with a segment missing"),
    }
}
