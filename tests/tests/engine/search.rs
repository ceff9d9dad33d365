//! Search by field through the engine: answers equal a brute-force scan of the same log
//! (property test over random logs and filters), through index rebuilds after deletion
//! and damage, and over pruned segments without fetching them. Part of the `engine` binary.

use std::path::Path;
use std::time::{Duration, Instant};

use auditlog_engine::{Engine, EngineConfig, SearchRequest};
use auditlog_formats::record::Record;
use auditlog_formats::search::{Filter, SearchField};
use auditlog_tests::small_config;
use proptest::prelude::*;
use serde_json::Value;

/// One event of a random log: small value sets, so filters hit.
#[derive(Clone, Debug)]
struct Ev {
    actor: u8,
    event_type: u8,
    outcome: u8,
    resource: (u8, u8),
    session: Option<u8>,
    request: u8,
    minute: u8,
}

fn payload(e: &Ev) -> Vec<u8> {
    let session = e
        .session
        .map_or(String::new(), |s| format!(r#","session_id":"s{s}""#));
    format!(
        r#"{{"timestamp":"2026-11-23T10:{:02}:00Z","event_type":"t{}","actor":"user-{}","action":"read","resource":"db/{}/row{}","outcome":"{}","classification":"UNCLASSIFIED","request_id":"q{}"{session}}}"#,
        e.minute,
        e.event_type,
        e.actor,
        e.resource.0,
        e.resource.1,
        ["success", "failure", "error"][e.outcome as usize % 3],
        e.request,
    )
    .into_bytes()
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0u8..6,
        0u8..3,
        0u8..3,
        (0u8..4, 0u8..5),
        proptest::option::of(0u8..5),
        0u8..40,
        0u8..60,
    )
        .prop_map(
            |(actor, event_type, outcome, resource, session, request, minute)| Ev {
                actor,
                event_type,
                outcome,
                resource,
                session,
                request,
                minute,
            },
        )
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        proptest::option::of(0u8..7),
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..3),
        proptest::option::of(0u8..6),
        proptest::option::of(0u8..5),
        proptest::option::of((0u8..60, 1u8..30)),
        proptest::option::of((0u8..41, 0u8..5, 0u8..5)),
    )
        .prop_map(
            |(actor, event_type, outcome, resource, session, time, ids)| {
                let mut f = Filter::default();
                if let Some(a) = actor {
                    f.equals.push((SearchField::Actor, format!("user-{a}")));
                }
                if let Some(t) = event_type {
                    f.equals.push((SearchField::EventType, format!("t{t}")));
                }
                if let Some(o) = outcome {
                    let o = ["success", "failure", "error"][o as usize];
                    f.equals.push((SearchField::Outcome, o.to_string()));
                }
                // Prefixes with and without an indexed form ("db/1/" is one, "db/1/ro" is
                // answered from it, "d" from none: scanned).
                f.resource_prefix = resource.map(|r| match r {
                    4 => "d".to_string(),
                    5 => "db/".to_string(),
                    r => format!("db/{r}/ro"),
                });
                if let Some(s) = session {
                    f.equals.push((SearchField::SessionId, format!("s{s}")));
                }
                // The bucketed fields: a request id (40 is in no event), a whole resource.
                if let Some((request, r, row)) = ids {
                    match request % 3 {
                        0 => f
                            .equals
                            .push((SearchField::RequestId, format!("q{request}"))),
                        1 => f
                            .equals
                            .push((SearchField::Resource, format!("db/{r}/row{row}"))),
                        _ => {}
                    }
                }
                if let Some((from, len)) = time {
                    let at = |m: u64| 1_795_428_000_000_000_000 + m * 60_000_000_000;
                    f.timestamp_since_unix_ns = Some(at(u64::from(from)));
                    f.timestamp_until_unix_ns = Some(at(u64::from(from) + u64::from(len)));
                }
                f
            },
        )
}

/// The oracle: the filter applied to each event as a JSON document, written without the
/// search code.
fn oracle(f: &Filter, payload: &[u8]) -> bool {
    let v: Value = serde_json::from_slice(payload).expect("json");
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let equal = f.equals.iter().all(|(k, want)| s(k.name()) == Some(want));
    let prefix = f
        .resource_prefix
        .as_deref()
        .is_none_or(|p| s("resource").is_some_and(|r| r.starts_with(p)));
    let ts = s("timestamp")
        .and_then(auditlog_formats::time::rfc3339_to_unix_ms)
        .map(|ms| ms as u64 * 1_000_000);
    let time = match (f.timestamp_since_unix_ns, f.timestamp_until_unix_ns) {
        (None, None) => true,
        (a, b) => ts.is_some_and(|t| a.is_none_or(|a| t >= a) && b.is_none_or(|b| t < b)),
    };
    equal && prefix && time
}

fn brute_force(engine: &Engine, f: &Filter, start: u64, end: u64) -> Vec<u64> {
    let mut out = Vec::new();
    engine
        .read_records(start, end, &mut |i, rec| {
            if oracle(f, Record::parse(rec).expect("record").payload) {
                out.push(i);
            }
            Ok(true)
        })
        .expect("scan");
    out
}

/// Every match of `[start, end)`, page by page (`limit`, `examined_max` small so that
/// pages end on both), as a client following cursors gets them.
fn search_all(engine: &Engine, f: &Filter, start: u64, end: u64, limit: u64) -> Vec<u64> {
    let size = engine
        .latest_checkpoint()
        .expect("checkpoint")
        .checkpoint
        .size;
    let mut out = Vec::new();
    let mut at = start;
    for _ in 0..100_000 {
        let q = SearchRequest {
            filter: f.clone(),
            size,
            start: at,
            end,
            limit,
            examined_max: 37,
        };
        let got = engine
            .search(&q, &mut |i, _| {
                out.push(i);
                Ok(true)
            })
            .expect("search");
        match got.next {
            Some(n) => {
                assert!(n > at || got.examined == 0, "a page makes progress");
                at = n;
            }
            None => return out,
        }
    }
    panic!("search did not finish");
}

fn wait_indexed(engine: &Engine, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.search_index_status().0 < size {
        assert!(
            Instant::now() < deadline,
            "index stuck at {:?}",
            engine.search_index_status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn config(dir: &Path) -> EngineConfig {
    shaped(dir, 128, 4, 2)
}

/// Small windows (a few hundred events span several, with runs merged in each), small
/// blocks, and few buckets (at 0 bits, one per field: every value collides).
fn shaped(dir: &Path, window: u64, block: u32, bucket_bits: u32) -> EngineConfig {
    let mut c = small_config(dir);
    c.search_window_records = window;
    c.search_block_records = block;
    c.search_bucket_bits = bucket_bits;
    c
}

fn append(engine: &Engine, evs: &[Ev]) {
    let payloads: Vec<Vec<u8>> = evs.iter().map(payload).collect();
    engine
        .append_payloads(payloads.iter().map(|p| p.as_slice()))
        .expect("append");
}

fn check(engine: &Engine, filters: &[(Filter, u64, u64, u64)], size: u64) {
    for (f, a, b, limit) in filters {
        let (a, b) = ((*a).min(size), (*b).min(size));
        let (a, b) = (a.min(b), a.max(b));
        assert_eq!(
            search_all(engine, f, a, b, *limit),
            brute_force(engine, f, a, b),
            "{f:?} over [{a}, {b})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Random logs (appended over many checkpoints, so many runs and rebuilt windows) and
    /// random filters over random ranges: the search's pages, followed to the end, hold
    /// exactly what a scan finds; with the index whole, with the tail unindexed, after the
    /// index is deleted, and after a run is torn (a crash mid-build).
    #[test]
    fn search_answers_equal_a_brute_force_scan(
        rounds in proptest::collection::vec(proptest::collection::vec(ev(), 1..120), 1..8),
        filters in proptest::collection::vec((filter(), 0u64..900, 0u64..900, 1u64..6), 1..25),
        (window, block, bucket_bits) in (prop_oneof![Just(128u64), Just(100), Just(1000)], 1u32..10, 0u32..4),
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let config = |d: &Path| shaped(d, window, block, bucket_bits);
        let engine = Engine::open(config(dir.path()), None).expect("open");
        for r in &rounds {
            append(&engine, r);
            engine.wait_checkpoint(engine.tree_size(), Duration::from_secs(10)).expect("checkpoint");
        }
        let size = engine.tree_size();
        wait_indexed(&engine, size);
        check(&engine, &filters, size);
        engine.shutdown().expect("shutdown");

        // Deleted: searched by scanning until rebuilt, then from the rebuilt index.
        std::fs::remove_dir_all(dir.path().join("search")).expect("rm index");
        let engine = Engine::open(config(dir.path()), None).expect("reopen");
        check(&engine, &filters, size);
        wait_indexed(&engine, size);
        check(&engine, &filters, size);
        engine.shutdown().expect("shutdown");

        // A run torn as a crash mid-write leaves it, and one altered: both rebuilt.
        let runs = run_files(dir.path());
        let torn = std::fs::read(&runs[0]).expect("run");
        std::fs::write(&runs[0], &torn[..torn.len() / 2]).expect("tear");
        let last = runs.last().expect("a run");
        let mut altered = std::fs::read(last).expect("run");
        let at = altered.len() - 1;
        altered[at] ^= 0x40;
        std::fs::write(last, &altered).expect("alter");
        let engine = Engine::open(config(dir.path()), None).expect("reopen");
        check(&engine, &filters, size);
        wait_indexed(&engine, size);
        check(&engine, &filters, size);
        engine.shutdown().expect("shutdown");
    }
}

/// `n` events whose fields cycle through small sets, with sessions or without.
fn cyclic(n: u32, sessions: bool) -> Vec<Ev> {
    (0..n)
        .map(|i| Ev {
            actor: (i % 7) as u8,
            event_type: (i % 3) as u8,
            outcome: (i % 2) as u8,
            resource: ((i % 4) as u8, (i % 5) as u8),
            session: sessions.then_some((i % 5) as u8),
            request: (i % 40) as u8,
            minute: (i % 60) as u8,
        })
        .collect()
}

fn actor_is(actor: u8) -> Filter {
    Filter {
        equals: vec![(SearchField::Actor, format!("user-{actor}"))],
        ..Filter::default()
    }
}

/// A search of the whole log, cursors followed: it equals a scan.
fn same_as_scan(engine: &Engine, f: &Filter, size: u64) -> Vec<u64> {
    let got = search_all(engine, f, 0, size, 1000);
    assert_eq!(got, brute_force(engine, f, 0, size), "{f:?}");
    got
}

/// The index's run files, sorted.
fn run_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut runs: Vec<_> = std::fs::read_dir(dir.join("search"))
        .expect("index dir")
        .map(|e| e.expect("entry").path())
        .collect();
    runs.sort();
    runs
}

/// A run of the first format (`ALSRCH01`: a posting per record, no buckets), and runs
/// made with another block size or bucket count, are deleted on open and built again, with
/// the same answers. Fails when such runs are read as they are.
#[test]
fn runs_of_another_format_or_shape_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(config(dir.path()), None).expect("open");
    let evs = cyclic(300, true);
    append(&engine, &evs);
    let size = engine.tree_size();
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    wait_indexed(&engine, size);
    engine.shutdown().expect("shutdown");
    let runs = run_files(dir.path());
    // The first run as the first format: its magic, its CRC made right again.
    let mut old = std::fs::read(&runs[0]).expect("run");
    old[..8].copy_from_slice(b"ALSRCH01");
    let crc = crc32c::crc32c_append(crc32c::crc32c(&old[..32]), &old[36..]);
    old[32..36].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&runs[0], &old).expect("write");
    let filters = [
        Filter {
            equals: vec![(SearchField::Actor, "user-3".into())],
            ..Filter::default()
        },
        Filter {
            equals: vec![(SearchField::RequestId, "q7".into())],
            ..Filter::default()
        },
        Filter {
            equals: vec![(SearchField::SessionId, "s2".into())],
            resource_prefix: Some("db/1/".into()),
            ..Filter::default()
        },
    ];
    let answers = |engine: &Engine| -> Vec<Vec<u64>> {
        filters
            .iter()
            .map(|f| same_as_scan(engine, f, size))
            .collect()
    };
    // Every run on disk is of this format and shape (block size at bytes 40..44, bucket
    // bits at 44..48).
    let shapes = |dir: &Path| -> Vec<(Vec<u8>, u32, u32)> {
        run_files(dir)
            .iter()
            .map(|p| {
                let b = std::fs::read(p).expect("run");
                let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4"));
                (b[..8].to_vec(), u32_at(40), u32_at(44))
            })
            .collect()
    };
    let engine = Engine::open(config(dir.path()), None).expect("reopen");
    wait_indexed(&engine, size);
    let before = answers(&engine);
    assert!(before.iter().all(|a| !a.is_empty()));
    engine.shutdown().expect("shutdown");
    assert!(shapes(dir.path())
        .iter()
        .all(|s| *s == (b"ALSRCH02".to_vec(), 4, 2)));
    for (block, bits) in [(5, 2), (4, 0)] {
        let engine = Engine::open(shaped(dir.path(), 128, block, bits), None).expect("reopen");
        wait_indexed(&engine, size);
        assert_eq!(answers(&engine), before);
        engine.shutdown().expect("shutdown");
        let want = (b"ALSRCH02".to_vec(), block, bits);
        assert!(
            shapes(dir.path()).iter().all(|s| *s == want),
            "{block} {bits}"
        );
    }
}

/// A run damaged on disk after it was opened is found when its window is merged: the
/// merge drops it and what follows, and the records are indexed again from the segments,
/// with the same answers. Fails when a failed merge leaves the damaged run in place.
#[test]
fn a_run_damaged_before_its_merge_is_built_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(config(dir.path()), None).expect("open");
    let evs = cyclic(120, true);
    append(&engine, &evs[..50]);
    engine
        .wait_checkpoint(50, Duration::from_secs(10))
        .expect("checkpoint");
    wait_indexed(&engine, 50);
    let damaged = run_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&damaged).expect("run");
    bytes[60] ^= 0x10;
    std::fs::write(&damaged, &bytes).expect("damage");
    // The window of 128 fills: its runs are merged, the damaged one among them.
    append(&engine, &evs[50..]);
    append(&engine, &evs[..20]);
    let size = engine.tree_size();
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    wait_indexed(&engine, size);
    let whole = run_files(dir.path());
    assert!(
        whole
            .iter()
            .all(|p| std::fs::read(p).expect("run") != bytes),
        "the damaged run stayed"
    );
    for actor in 0..7 {
        same_as_scan(&engine, &actor_is(actor), size);
    }
    engine.shutdown().expect("shutdown");
}

/// Without the index (`search_index = false`) answers are the same, found by scanning.
#[test]
fn search_without_the_index_scans_to_the_same_answers() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path());
    cfg.search_index = false;
    let engine = Engine::open(cfg, None).expect("open");
    let evs = cyclic(300, false);
    append(&engine, &evs);
    let size = engine.tree_size();
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    assert_eq!(engine.search_index_status(), (0, 0, 0));
    assert!(!dir.path().join("search").exists());
    same_as_scan(&engine, &actor_is(3), size);
    engine.shutdown().expect("shutdown");
}

/// Locating a window from the index's receipt times (change points, or samples) gives what
/// a scan of the receipt times gives, for every time in and around the log; so does the
/// binary search over records alone (no index).
#[test]
fn windows_located_from_the_samples_equal_a_scan() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(config(dir.path()), None).expect("open");
    let mut ev = Ev {
        actor: 0,
        event_type: 0,
        outcome: 0,
        resource: (0, 0),
        session: None,
        request: 0,
        minute: 0,
    };
    // Single events (a time each: windows keep samples), then bursts sharing a stamp
    // (windows keep change points).
    for _ in 0..200 {
        append(&engine, std::slice::from_ref(&ev));
    }
    for round in 0..40u8 {
        ev.actor = round % 6;
        append(&engine, &vec![ev.clone(); 1 + (round as usize * 7) % 50]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let size = engine.tree_size();
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    wait_indexed(&engine, size);
    let mut times = Vec::new();
    engine
        .read_records(0, size, &mut |_, rec| {
            times.push(Record::parse(rec).expect("record").received_at_unix_ns);
            Ok(true)
        })
        .expect("scan");
    let first_at_or_after = |t: u64| times.partition_point(|&x| x < t) as u64;
    let mut probes: Vec<u64> = times.iter().flat_map(|&t| [t - 1, t, t + 1]).collect();
    probes.extend([0, u64::MAX]);
    let check = |engine: &Engine| {
        for (k, &t) in probes.iter().enumerate() {
            let until = probes[(k * 7 + 3) % probes.len()].max(t);
            for at in [size, size / 2] {
                let w = engine.window(t, until, at).expect("window");
                let clip = |i: u64| i.min(at);
                assert_eq!(
                    (w.start, w.end),
                    (clip(first_at_or_after(t)), clip(first_at_or_after(until))),
                    "window [{t}, {until}) at size {at}"
                );
            }
        }
    };
    check(&engine);
    engine.shutdown().expect("shutdown");
    let mut cfg = config(dir.path());
    cfg.search_index = false;
    let engine = Engine::open(cfg, None).expect("reopen");
    check(&engine);
    engine.shutdown().expect("shutdown");
}

/// Over pruned segments the index answers: a search whose matches are all local reads no
/// pruned segment (none fetched, none from the cache), one whose matches are pruned gets
/// them from the store, and both equal a scan.
#[test]
fn search_over_pruned_segments_fetches_only_hits() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path());
    // Embedded default target (`<data_dir>/worm`), sealed segments pruned at once.
    let mut r = auditlog_tests::replication("", auditlog_worm::TargetOptions::default());
    r.local_keep_ms = Some(0);
    cfg.replication = Some(r);
    let engine = Engine::open(cfg, None).expect("open");
    let old = Ev {
        actor: 1,
        event_type: 0,
        outcome: 0,
        resource: (0, 0),
        session: None,
        request: 0,
        minute: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.status().pruned_segments < 2 {
        assert!(
            Instant::now() < deadline,
            "not pruned: {:?}",
            engine.status()
        );
        append(&engine, &vec![old.clone(); 500]);
        std::thread::sleep(Duration::from_millis(5));
    }
    let recent = Ev {
        actor: 2,
        ..old.clone()
    };
    append(&engine, &vec![recent; 30]);
    let size = engine.tree_size();
    engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    wait_indexed(&engine, size);
    let reads = |e: &Engine| {
        let s = e.status().store_reads;
        s.fetches + s.cache_hits
    };
    let before = reads(&engine);
    let f = Filter {
        equals: vec![(SearchField::Actor, "user-2".into())],
        ..Filter::default()
    };
    let got = search_all(&engine, &f, 0, size, 1000);
    assert_eq!(got.len(), 30);
    assert_eq!(
        reads(&engine),
        before,
        "a search with local hits read pruned segments"
    );
    assert_eq!(got, brute_force(&engine, &f, 0, size));
    let f = Filter {
        equals: vec![(SearchField::Actor, "user-1".into())],
        ..Filter::default()
    };
    let first = search_all(&engine, &f, 0, 10, 1000);
    assert_eq!(
        first,
        (0..10).collect::<Vec<u64>>(),
        "pruned hits come from the store"
    );
    engine.shutdown().expect("shutdown");
}

/// Syslog records (version 3: the message stored once) are indexed and filtered by the
/// fields of the event derived from them (`Record::event_json`): `actor` is the app name,
/// `source_ip` the peer. Fails when search reads the stored payload, a syslog message with
/// no JSON fields, so that nothing matches.
#[test]
fn syslog_events_are_found_by_their_mapped_fields() {
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(config(dir.path()), None).expect("open");
    let peer: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
    let mut b = engine.new_batch(auditlog_engine::Submitter::syslog(peer, None));
    for i in 0..300u64 {
        let app = if i % 3 == 0 { "sshd" } else { "cron" };
        let msg = format!("<34>Oct 11 22:14:15 host{i} {app}[{i}]: message {i}");
        let _ = b.push_syslog(msg.as_bytes()).expect("a syslog message");
    }
    engine.append(b).expect("append");
    engine
        .wait_checkpoint(300, Duration::from_secs(10))
        .expect("checkpoint");
    wait_indexed(&engine, 300);
    let mut f = Filter::default();
    f.equals.push((SearchField::Actor, "sshd".to_string()));
    let sshd: Vec<u64> = (0..300).filter(|i| i % 3 == 0).collect();
    assert_eq!(search_all(&engine, &f, 0, 300, 1000), sshd);
    f.equals
        .push((SearchField::SourceIp, "10.1.2.3".to_string()));
    assert_eq!(search_all(&engine, &f, 0, 300, 7), sshd, "paged");
    f.equals
        .push((SearchField::SourceIp, "10.9.9.9".to_string()));
    assert!(search_all(&engine, &f, 0, 300, 1000).is_empty());
    engine.shutdown().expect("shutdown");
}

/// A damaged block among a search's candidates fails the search with a clear error, with
/// one reader or several (none left waiting on a search that stopped), never a short or
/// wrong answer. The block cache is off so the damaged bytes are what is read.
#[test]
fn a_damaged_candidate_block_fails_the_search_with_any_number_of_readers() {
    for readers in [1, 2, 3] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cfg = config(dir.path());
        cfg.block_cache_bytes = 0;
        cfg.search_readers = readers;
        let engine = Engine::open(cfg, None).expect("open");
        let deadline = Instant::now() + Duration::from_secs(60);
        while engine.status().sealed_segments < 1 {
            assert!(Instant::now() < deadline, "nothing sealed");
            append(&engine, &cyclic(500, false));
            std::thread::sleep(Duration::from_millis(5));
        }
        let size = engine.tree_size();
        engine
            .wait_checkpoint(size, Duration::from_secs(10))
            .expect("checkpoint");
        wait_indexed(&engine, size);
        let seg = std::fs::read_dir(dir.path().join("segments"))
            .expect("segments")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .expect("a sealed segment");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .expect("open segment");
        let at = file.metadata().expect("stat").len() / 3;
        let mut b = [0u8];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut b, at).expect("read");
        std::os::unix::fs::FileExt::write_all_at(&file, &[b[0] ^ 0x40], at).expect("damage");
        let q = SearchRequest {
            filter: actor_is(3),
            size,
            start: 0,
            end: size,
            limit: u64::MAX,
            examined_max: u64::MAX,
        };
        let e = engine
            .search(&q, &mut |_, _| Ok(true))
            .expect_err("the damage is found");
        assert!(
            e.to_string().contains("checksum mismatch"),
            "{readers}: {e}"
        );
        engine.shutdown().expect("shutdown");
    }
}
