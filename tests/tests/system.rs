//! Crash and tamper tests: a child process killed mid-ingest, and single-byte changes to
//! every kind of file the engine writes, caught by the offline verifier.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use auditlog_client::verify::{verify_dir, verify_dir_pinned, Pins, Summary, VerifyError};
use auditlog_engine::Engine;
use auditlog_formats::note::{self, VerifierKey};
use auditlog_formats::tree;
use auditlog_tests::{event, small_config};
use rand::{Rng, SeedableRng};

fn verify(dir: &Path, key: &VerifierKey) -> Result<Summary, VerifyError> {
    verify_dir(dir, key, &mut |_, _| {})
}

#[test]
fn crash_mid_ingest_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut acked: HashMap<u64, String> = HashMap::new();
    let mut prev_cp: Option<(u64, [u8; 32])> = None;
    let rounds = 20;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
            .arg(dir.path())
            .arg((round + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..600)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        child.wait().expect("reap");
        let before = acked.len();
        for line in out.lines() {
            let Some((i, h)) = line.split_once(' ') else {
                continue;
            };
            if h.len() != 64 {
                continue; // a line cut by the kill; its event may or may not have been acked
            }
            let i: u64 = i.parse().expect("index");
            if let Some(old) = acked.insert(i, h.to_string()) {
                assert_eq!(
                    old, h,
                    "round {round}: index {i} was acknowledged with two hashes"
                );
            }
        }
        // Restart in-process: every acknowledged event is there, with its hash.
        let engine = Engine::open(small_config(dir.path()), None).expect("recovers after SIGKILL");
        let size = engine.tree_size();
        let max = acked.keys().max().copied().unwrap_or(0);
        assert!(
            acked.is_empty() || max < size,
            "round {round}: acked index {max} beyond size {size}"
        );
        let mut found = 0usize;
        engine
            .read_records(0, size, &mut |i, rec| {
                if let Some(h) = acked.get(&i) {
                    assert_eq!(
                        &hex::encode(engine.tree_hash().leaf(rec)),
                        h,
                        "round {round}: index {i} changed"
                    );
                    found += 1;
                }
                Ok(true)
            })
            .expect("read all");
        assert_eq!(
            found,
            acked.len(),
            "round {round}: every acknowledged event present"
        );
        let cp = engine
            .wait_checkpoint(size, Duration::from_secs(10))
            .expect("checkpoint");
        let (c, _) =
            note::open_checkpoint(&cp.note, &[engine.verifier_key()]).expect("checkpoint verifies");
        assert_eq!(c.size, size);
        if let Some((old_size, old_root)) = prev_cp {
            let p = engine
                .prove_consistency(old_size, size)
                .expect("consistency proof");
            tree::verify_consistency(engine.tree_hash(), old_size, size, &old_root, &c.root, &p)
                .expect("the log only grew");
        }
        prev_cp = Some((size, c.root));
        assert!(
            round == 0 || acked.len() > before || out.is_empty(),
            "round {round}: ingest continued"
        );
        let key = engine.verifier_key();
        engine.shutdown().expect("shutdown");
        if round % 5 == 4 {
            verify(dir.path(), &key).expect("verifies after crash and restart");
        }
    }
    assert!(
        acked.len() > 1000,
        "the crash test acknowledged only {} events",
        acked.len()
    );
}

/// A log with sealed segments, an open segment and several checkpoints, closed cleanly.
fn build_log(dir: &Path) -> VerifierKey {
    let engine = Engine::open(small_config(dir), None).expect("open");
    for chunk in 0..20u64 {
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        for i in 0..400u64 {
            b.add(&event(chunk * 400 + i, 256)).expect("valid");
        }
        engine.append(b).expect("append");
        engine
            .wait_checkpoint(engine.tree_size(), Duration::from_secs(5))
            .expect("checkpoint");
    }
    for _ in 0..200 {
        if engine.status().open_segments == 1 && engine.status().sealed_segments >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        engine.status().sealed_segments >= 2,
        "{:?}",
        engine.status()
    );
    let key = engine.verifier_key();
    engine.shutdown().expect("shutdown");
    key
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("e").path())
        .filter(|p| p.extension().map(|x| x == ext).unwrap_or(false))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).expect("read");
    b[at] ^= 0x20;
    std::fs::write(path, b).expect("write");
}

/// Offset of the `n`th batch of an open segment, and its length.
fn batch_at(path: &Path, n: usize) -> (usize, usize) {
    let b = std::fs::read(path).expect("read");
    let mut at = 0;
    for _ in 0..n {
        at += auditlog_formats::batch::decode_header(&b[at..])
            .expect("batch")
            .total_bytes();
    }
    (
        at,
        auditlog_formats::batch::decode_header(&b[at..])
            .expect("batch")
            .total_bytes(),
    )
}

type Tamper = Box<dyn Fn(&Path)>;

/// A one-place change to every kind of file the engine writes, and what the verifier's
/// failure must mention.
fn tamper_cases() -> Vec<(&'static str, Tamper, &'static str)> {
    vec![
        (
            "open segment record byte",
            Box::new(|d: &Path| {
                let p = files(&d.join("segments"), "open").pop().expect("open");
                let (at, _) = batch_at(&p, 1);
                flip(&p, at + 32 + 4 + 9 + 20);
            }),
            ".open: batch at offset",
        ),
        (
            "sealed segment block byte",
            Box::new(|d: &Path| {
                let p = files(&d.join("segments"), "seg")[1].clone();
                flip(&p, 100);
            }),
            "-00000000000000",
        ),
        (
            "sealed segment footer byte",
            Box::new(|d: &Path| {
                let p = files(&d.join("segments"), "seg")[0].clone();
                let len = std::fs::metadata(&p).expect("meta").len() as usize;
                flip(&p, len - 120);
            }),
            "digest mismatch",
        ),
        (
            "tile byte",
            Box::new(|d: &Path| flip(&d.join("hashes/level-00.bin"), 32 * 777 + 5)),
            "level-00.bin: node 777",
        ),
        (
            "upper tile byte",
            Box::new(|d: &Path| flip(&d.join("hashes/level-04.bin"), 32 * 5 + 1)),
            "level-04.bin: node 5",
        ),
        (
            "checkpoint byte",
            Box::new(|d: &Path| flip(&d.join("checkpoints.log"), 30)),
            "checkpoints.log: entry 0",
        ),
        (
            "checkpoint re-signed root",
            Box::new(|d: &Path| {
                // Change the root inside a note and fix the entry's CRC: only the signature can tell.
                let p = d.join("checkpoints.log");
                let b = std::fs::read(&p).expect("read");
                let (notes, _) = auditlog_formats::checkpoint_log::parse_log(&b);
                let mut out = Vec::new();
                for (i, n) in notes.iter().enumerate() {
                    let mut t = String::from_utf8(n.to_vec()).expect("utf8");
                    if i == 3 {
                        let line = t.lines().nth(2).expect("root line").to_string();
                        let mut alt = line.clone().into_bytes();
                        alt[0] = if alt[0] == b'A' { b'B' } else { b'A' };
                        t = t.replacen(&line, std::str::from_utf8(&alt).expect("ascii"), 1);
                    }
                    out.extend(auditlog_formats::checkpoint_log::encode_entry(&t));
                }
                std::fs::write(&p, out).expect("write");
            }),
            "checkpoints.log: entry 3",
        ),
        (
            "batch removed from the middle",
            Box::new(|d: &Path| {
                let p = files(&d.join("segments"), "open").pop().expect("open");
                let (at, len) = batch_at(&p, 1);
                let mut b = std::fs::read(&p).expect("read");
                b.drain(at..at + len);
                std::fs::write(&p, b).expect("write");
            }),
            "events are missing",
        ),
        (
            "sealed segment deleted",
            Box::new(|d: &Path| {
                std::fs::remove_file(&files(&d.join("segments"), "seg")[1]).expect("rm");
            }),
            "a segment is missing",
        ),
    ]
}

#[test]
fn tampering_with_any_file_fails_verification_at_the_right_place() {
    let base = tempfile::tempdir().expect("tmp");
    let key = build_log(base.path());
    let ok = verify(base.path(), &key).expect("untouched log verifies");
    assert_eq!(ok.events, 8000);
    assert!(ok.sealed_segments >= 2 && ok.checkpoints >= 20, "{ok:?}");
    // Every node of the stored levels 0, 4, 8 and 12 (FORMATS.md §5.5): 8000 + 500 + 31 + 1.
    assert_eq!(ok.hash_nodes_checked, 8532, "{ok:?}");

    let bin = auditlog_tests::daemon::client_exe();
    for (name, tamper, expect) in tamper_cases() {
        let work = tempfile::tempdir().expect("tmp");
        copy_dir(base.path(), work.path());
        tamper(work.path());
        let err = verify(work.path(), &key).expect_err(name);
        assert!(
            err.to_string().contains(expect),
            "{name}: {err} (expected to mention {expect:?})"
        );
        // The CLI says the same and exits non-zero.
        let out = Command::new(&bin)
            .arg("verify")
            .arg(work.path())
            .arg("--key")
            .arg(key.to_string())
            .output()
            .expect("run cli");
        assert!(!out.status.success(), "{name}: CLI exit status");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expect),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = Command::new(&bin)
        .arg("verify")
        .arg(base.path())
        .arg("--key")
        .arg(key.to_string())
        .output()
        .expect("run cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: signed size 8000"));
    // A wrong key fails on the first checkpoint.
    let other = note::NoteSigner::from_seed("auditlog.local/log", [9u8; 32])
        .expect("key")
        .verifier_key();
    let err = verify(base.path(), &other).expect_err("wrong key");
    assert!(
        err.to_string().contains("checkpoints.log: entry 0"),
        "{err}"
    );
}

/// A syslog message is stored as received (record version 3) beside JSON events (version
/// 2), and the verifier checks it is still syslog: the mixed log verifies; a message
/// altered so it no longer parses — its batch's checksum fixed, as anyone with the disk
/// could — fails at its index, named as a syslog record, not later at a root.
#[test]
fn an_altered_syslog_record_fails_verification_at_its_index() {
    use auditlog_engine::{Pushed, Submitter};
    use auditlog_formats::batch;
    use auditlog_formats::record::RECORD_VERSION_SYSLOG;
    let base = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(small_config(base.path()), None).expect("open");
    let peer: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
    for chunk in 0..3u64 {
        let mut b = engine.new_batch(Submitter::token("test-writer"));
        for i in 0..10u64 {
            b.add(&event(chunk * 20 + i, 200)).expect("valid");
        }
        engine.append(b).expect("append");
        if chunk < 2 {
            let mut s = engine.new_batch(Submitter::syslog(peer, None));
            for i in 0..10u64 {
                let m = format!("<34>1 2026-11-23T10:00:00Z web1 app {i} - - message {i}");
                assert_eq!(s.push_syslog(m.as_bytes()).expect("syslog"), Pushed::Added);
            }
            // Not syslog: refused, as the listener counts and drops it.
            assert!(s.push_syslog(b"(34) not syslog").is_err());
            engine.append(s).expect("append");
        }
    }
    engine
        .wait_checkpoint(50, Duration::from_secs(5))
        .expect("checkpoint");
    let key = engine.verifier_key();
    engine.shutdown().expect("shutdown");
    assert_eq!(verify(base.path(), &key).expect("clean").events, 50);

    // Index 15 is the 6th message of the first syslog submission.
    let p = files(&base.path().join("segments"), "open")
        .pop()
        .expect("open");
    let mut b = std::fs::read(&p).expect("read");
    let mut at = 0;
    let h = loop {
        let h = batch::decode_header(&b[at..]).expect("batch");
        if (h.first_index..h.end_index()).contains(&15) {
            break h;
        }
        at += h.total_bytes();
    };
    let body_at = at + batch::BATCH_HEADER_BYTES;
    let mut body = b[body_at..body_at + h.body_bytes as usize].to_vec();
    let mut e = 0;
    for _ in h.first_index..15 {
        e += batch::ENTRY_PREFIX_BYTES + batch::decode_entry_prefix(&body[e..]).expect("entry");
    }
    let rec = e + batch::ENTRY_PREFIX_BYTES;
    assert_eq!(body[rec], RECORD_VERSION_SYSLOG);
    let msg = rec + 11 + "syslog:192.0.2.7".len();
    assert_eq!(body[msg], b'<');
    body[msg] = b'(';
    let head = batch::encode_header(h.first_index, h.count, h.max_classification, &body);
    b[at..body_at].copy_from_slice(&head);
    b[body_at..body_at + body.len()].copy_from_slice(&body);
    std::fs::write(&p, b).expect("write");
    let err = verify(base.path(), &key).expect_err("altered");
    assert!(err.to_string().contains("index 15: syslog record"), "{err}");
}

/// Rewrites a sealed segment's footer note (and the digest over it), as someone with the
/// disk or the bucket could: the records and the tree head stay as they were.
/// A data directory the previous version wrote (every hash level stored, leaf-index runs of
/// 16-byte entries, `AUDLIDX1`) verifies as it is, its extra levels checked node by node so
/// that damage there is still named; and the engine opens it: the levels no longer stored
/// are removed, the old runs rebuilt in the current form, lookups right, and it verifies
/// again. (FORMATS.md §5.5, §5.6.)
#[test]
fn a_directory_of_the_previous_layout_verifies_and_then_opens() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = build_log(dir.path());
    let hashes = dir.path().join("hashes");
    let level0 = std::fs::read(hashes.join("level-00.bin")).expect("level 0");
    let mut t = tree::MemoryTree::new(auditlog_formats::TreeHash::Sha256);
    for h in level0.chunks_exact(32) {
        t.append_leaf_hash(h.try_into().expect("32 bytes"));
    }
    let size = t.size();
    let levels: Vec<u8> = (0..64u8).take_while(|l| size >> l > 0).collect();
    for &level in &levels {
        let bytes: Vec<u8> = (0..size >> level)
            .flat_map(|i| *t.hashes.get(tree::NodeId::new(level, i)).expect("node"))
            .collect();
        std::fs::write(hashes.join(format!("level-{level:02}.bin")), bytes).expect("write");
    }
    // The previous leaf index: one run of every leaf, (key:u64, index:u64) sorted, CRC-32C.
    let runs = dir.path().join("leafindex");
    for f in files(&runs, "run") {
        std::fs::remove_file(f).expect("rm run");
    }
    let mut entries: Vec<(u64, u64)> = level0
        .chunks_exact(32)
        .zip(0..)
        .map(|(h, i)| (u64::from_be_bytes(h[..8].try_into().expect("8")), i))
        .collect();
    entries.sort_unstable();
    let body: Vec<u8> = entries
        .iter()
        .flat_map(|(k, i)| [k.to_be_bytes(), i.to_be_bytes()].concat())
        .collect();
    let mut v1 = b"AUDLIDX1".to_vec();
    v1.extend(0u64.to_be_bytes());
    v1.extend(size.to_be_bytes());
    v1.extend(crc32c::crc32c(&body).to_be_bytes());
    v1.extend([0; 4]);
    v1.extend(body);
    let v1_path = runs.join(format!("{:020}-{size:020}.run", 0));
    std::fs::write(&v1_path, &v1).expect("write v1 run");

    let every_level: u64 = levels.iter().map(|l| size >> l).sum();
    let ok = verify(dir.path(), &key).expect("the previous layout verifies");
    assert_eq!(ok.hash_nodes_checked, every_level, "{ok:?}");
    let work = tempfile::tempdir().expect("tmp");
    copy_dir(dir.path(), work.path());
    flip(&work.path().join("hashes/level-03.bin"), 32 * 5 + 1);
    let err = verify(work.path(), &key).expect_err("damage in an old level is found");
    assert!(err.to_string().contains("level-03.bin: node 5"), "{err}");

    let engine = Engine::open(small_config(dir.path()), None).expect("open the old layout");
    let mut names: Vec<String> = std::fs::read_dir(&hashes)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "level-00.bin",
            "level-04.bin",
            "level-08.bin",
            "level-12.bin"
        ]
    );
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    b.add(&event(size, 256)).expect("valid");
    engine.append(b).expect("append");
    engine
        .wait_checkpoint(size + 1, Duration::from_secs(10))
        .expect("checkpoint");
    let magics: Vec<Vec<u8>> = files(&runs, "run")
        .iter()
        .map(|p| std::fs::read(p).expect("run")[..8].to_vec())
        .collect();
    assert!(
        !magics.is_empty() && magics.iter().all(|m| m == b"AUDLIDX2"),
        "the old run was rebuilt in the current form"
    );
    for index in [0, 1234, size - 1] {
        let leaf: [u8; 32] = level0[index as usize * 32..][..32].try_into().expect("32");
        assert_eq!(
            engine.index_of_leaf(&leaf, size).expect("lookup"),
            Some(index)
        );
    }
    engine.shutdown().expect("shutdown");
    let again = verify(dir.path(), &key).expect("verifies after opening");
    assert_eq!(again.events, size + 1);
}

fn reseal_with_note(path: &Path, note: &str) {
    use auditlog_formats::segment::{decode_trailer, TRAILER_BYTES, TRAILER_MAGIC};
    let b = std::fs::read(path).expect("read");
    let t = decode_trailer(b.len() as u64, &b[b.len() - TRAILER_BYTES..]).expect("trailer");
    let fo = t.footer_offset as usize;
    let footer = &b[fo..fo + t.footer_bytes as usize];
    // The footer ends with note_len:u32 || note.
    let mut cut = footer.len() - 4;
    while u32::from_be_bytes(footer[cut..cut + 4].try_into().expect("4")) as usize
        != footer.len() - cut - 4
    {
        cut -= 1;
    }
    let mut out = b[..fo].to_vec();
    out.extend_from_slice(&footer[..cut]);
    out.extend_from_slice(&(note.len() as u32).to_be_bytes());
    out.extend_from_slice(note.as_bytes());
    let footer_bytes = (out.len() - fo) as u32;
    out.extend_from_slice(&(fo as u64).to_be_bytes());
    out.extend_from_slice(&footer_bytes.to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let digest = blake3::hash(&out);
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(TRAILER_MAGIC);
    std::fs::write(path, out).expect("write");
}

/// Appends one well-formed, CRC-valid batch after the last one of the newest open segment:
/// a forged `admin` approval, as anyone who can write the directory could add.
fn append_forged_batch(dir: &Path) -> u64 {
    use auditlog_formats::batch;
    use auditlog_formats::record::Record;
    let p = files(&dir.join("segments"), "open").pop().expect("open");
    let mut b = std::fs::read(&p).expect("read");
    let (mut at, mut next) = (0usize, 0u64);
    while let Ok(h) = batch::decode_header(&b[at..]) {
        next = h.end_index();
        at += h.total_bytes();
    }
    let payload = br#"{"timestamp":"2026-01-01T00:00:00Z","event_type":"admin","actor":"auditlogd","action":"approve","resource":"retention","outcome":"success"}"#;
    let mut body = Vec::new();
    batch::push_entry(
        &mut body,
        &Record {
            received_at_unix_ns: 1,
            submitter: Some("auditlogd"),
            kind: auditlog_formats::record::PayloadKind::Event,
            payload,
        },
    );
    let head = batch::encode_header(next, 1, 0, &body);
    if b.len() < at + 32 + body.len() {
        b.resize(at + 32 + body.len(), 0);
    }
    b[at..at + 32].copy_from_slice(&head);
    b[at + 32..at + 32 + body.len()].copy_from_slice(&body);
    std::fs::write(&p, b).expect("write");
    next
}

/// The verifier's verdicts over fixtures the engine writes, one rule each (FORMATS.md §6,
/// §11): a clean log verifies to its signed size; a forged tail, a missing checkpoint log
/// and an empty or foreign footer note fail; a torn tail in the last open segment is
/// reported and not counted; a damaged batch with data after it fails; records past the
/// signed size pass only with `allow_unsigned_tail`, and are never counted as verified.
#[test]
fn the_verifier_vouches_only_for_signed_data() {
    let base = tempfile::tempdir().expect("tmp");
    let key = build_log(base.path());
    let history = auditlog_formats::keyhistory::KeyHistory::single(&key)
        .check()
        .expect("history");
    let run = |dir: &Path, pins: &Pins| verify_dir_pinned(dir, &history, pins, &mut |_, _| {});
    let strict = Pins::default();
    let lenient = Pins {
        allow_unsigned_tail: true,
        ..Pins::default()
    };
    let clean = run(base.path(), &strict).expect("clean");
    assert_eq!((clean.signed_size, clean.unsigned_records), (8000, 0));
    let fixture = |tamper: &dyn Fn(&Path)| {
        let work = tempfile::tempdir().expect("tmp");
        copy_dir(base.path(), work.path());
        tamper(work.path());
        work
    };
    let fails = |dir: &Path, pins: &Pins, expect: &str| {
        let e = run(dir, pins).expect_err(expect);
        assert!(e.to_string().contains(expect), "{e} (expected {expect:?})");
    };

    // Forged tail: a valid batch past the last signed record.
    let forged = fixture(&|d| assert_eq!(append_forged_batch(d), 8000));
    fails(
        forged.path(),
        &strict,
        "1 record(s) past the signed size 8000",
    );
    let s = run(forged.path(), &lenient).expect("allowed as unsigned");
    assert_eq!(
        (s.signed_size, s.unsigned_records, s.events),
        (8000, 1, 8001)
    );
    // The CLI: non-zero without the flag, OK with it and the unsigned count printed.
    let bin = auditlog_tests::daemon::client_exe();
    let cli = |dir: &Path, extra: &[&str]| {
        Command::new(&bin)
            .arg("verify")
            .arg(dir)
            .args(["--key", &key.to_string()])
            .args(extra)
            .output()
            .expect("run cli")
    };
    let out = cli(forged.path(), &[]);
    assert!(!out.status.success());
    let out = cli(forged.path(), &["--allow-unsigned-tail"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("OK: signed size 8000") && stdout.contains("UNSIGNED: 1 record(s)"),
        "{stdout}"
    );

    // No checkpoint log.
    let no_log = fixture(&|d| std::fs::remove_file(d.join("checkpoints.log")).expect("rm"));
    fails(no_log.path(), &lenient, "checkpoints.log: cannot read");
    // An empty checkpoint log: only the sealed footers sign, the open segment is unsigned.
    let empty_log = fixture(&|d| std::fs::write(d.join("checkpoints.log"), b"").expect("w"));
    fails(empty_log.path(), &strict, "past the signed size");

    // Sealed footers: an empty note, and one signed by another key. An empty note is what
    // a seal during a signer outage writes: it passes only under a signed checkpoint that
    // covers the segment's end, and is named when none does.
    let seg = |d: &Path| files(&d.join("segments"), "seg")[0].clone();
    let last_seg = |d: &Path| files(&d.join("segments"), "seg").pop().expect("sealed");
    let empty_note = fixture(&|d| reseal_with_note(&seg(d), ""));
    let s = run(empty_note.path(), &strict).expect("covered by the checkpoint log");
    assert_eq!((s.signed_size, s.unsigned_records), (8000, 0));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("1 segment(s) sealed without a signed footer")),
        "{:?}",
        s.warnings
    );
    let uncovered = fixture(&|d| {
        reseal_with_note(&last_seg(d), "");
        std::fs::write(d.join("checkpoints.log"), b"").expect("w");
    });
    let last_name = last_seg(uncovered.path())
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let e = run(uncovered.path(), &strict).expect_err("nothing signs the last segment");
    assert!(
        e.to_string().contains("footer has no checkpoint note")
            && e.to_string().contains(&last_name),
        "{e}"
    );
    // Allowed as an unsigned tail, never counted as verified.
    let s = run(uncovered.path(), &lenient).expect("allowed as unsigned");
    assert!(s.unsigned_records > 0 && s.signed_size < s.events, "{s:?}");
    let other = note::NoteSigner::from_seed("auditlog.local/log", [9u8; 32]).expect("key");
    let foreign = fixture(&|d| {
        use auditlog_formats::segment as sg;
        let b = std::fs::read(seg(d)).expect("read");
        let h = sg::SegmentHeader::decode(&b[..sg::HEADER_BYTES]).expect("header");
        let t =
            sg::decode_trailer(b.len() as u64, &b[b.len() - sg::TRAILER_BYTES..]).expect("trailer");
        let fo = t.footer_offset as usize;
        let f = sg::decode_footer(&h, &t, &b[fo..fo + t.footer_bytes as usize]).expect("footer");
        let cp = note::Checkpoint {
            origin: "auditlog.local/log".into(),
            size: h.first_index + h.count,
            root: f.root,
            extensions: vec![],
        };
        let text = note::sign_checkpoint(&cp, &[&other]).expect("sign");
        reseal_with_note(&seg(d), &text);
    });
    fails(foreign.path(), &lenient, "footer checkpoint");

    // A torn tail in the last open segment: reported, its records not counted.
    let torn = fixture(&|d| {
        let n = append_forged_batch(d);
        assert_eq!(n, 8000);
        let p = files(&d.join("segments"), "open").pop().expect("open");
        let (at, len) = batch_at_index(&p, n);
        let mut b = std::fs::read(&p).expect("read");
        b[at + len - 3] ^= 0x40; // the batch's CRC no longer matches: a torn write
        std::fs::write(&p, b).expect("write");
    });
    let s = run(torn.path(), &strict).expect("a torn tail is not a failure");
    assert_eq!((s.signed_size, s.events), (8000, 8000));
    assert!(
        s.torn_tail
            .as_deref()
            .is_some_and(|t| t.contains("torn tail")),
        "{s:?}"
    );
    // A damaged batch of signed records looks torn to the format's rule here (the file is
    // shorter than the largest batch), but the records a checkpoint signed are then missing.
    let damaged = fixture(&|d| {
        let p = files(&d.join("segments"), "open").pop().expect("open");
        let (at, _) = batch_at(&p, 0);
        flip(&p, at + 10);
    });
    fails(damaged.path(), &lenient, "events are missing");
}

/// What the auditor pinned decides, not the directory: a kept checkpoint the log does not
/// extend (rolled back, or forked with the same key), a wrong origin, a signed size below
/// the pinned minimum, and a key history that adds a key for sizes already signed all fail,
/// in the library and in the CLI; `verify` refuses to run without a pinned key.
#[test]
fn pins_catch_rollback_fork_wrong_origin_and_retroactive_keys() {
    use auditlog_formats::keyhistory::{KeyBackend, KeyEntry, KeyHistory};
    let base = tempfile::tempdir().expect("tmp");
    let key = build_log(base.path());
    let history = KeyHistory::single(&key).check().expect("history");
    let signer = note::NoteSigner::parse_private(
        std::fs::read_to_string(base.path().join("keys/checkpoint.key"))
            .expect("key file")
            .trim(),
    )
    .expect("signer");
    let run = |pins: &Pins| verify_dir_pinned(base.path(), &history, pins, &mut |_, _| {});
    let fails = |pins: &Pins, expect: &str| {
        let e = run(pins).expect_err(expect);
        assert!(e.to_string().contains(expect), "{e} (expected {expect:?})");
    };
    let log_bytes = std::fs::read(base.path().join("checkpoints.log")).expect("read");
    let (notes, _) = auditlog_formats::checkpoint_log::parse_log(&log_bytes);
    let kept_text = String::from_utf8(notes[notes.len() / 2].to_vec()).expect("utf8");
    let kept = history.open_checkpoint(&kept_text).expect("kept");
    assert!(kept.size > 0 && kept.size < 8000);
    // The honest case: the log extends the kept checkpoint.
    let s = run(&Pins {
        since: Some(kept.clone()),
        min_size: Some(8000),
        origin: Some(kept.origin.clone()),
        ..Pins::default()
    })
    .expect("extends the kept checkpoint");
    assert_eq!(s.signed_size, 8000);
    // Rolled back: the auditor kept a checkpoint newer than anything the log holds.
    let later = note::Checkpoint {
        size: 9000,
        ..kept.clone()
    };
    fails(
        &Pins {
            since: Some(later),
            ..Pins::default()
        },
        "rolled back",
    );
    // Forked: same key, same size, another root.
    let fork = note::Checkpoint {
        root: [7u8; 32],
        ..kept.clone()
    };
    fails(
        &Pins {
            since: Some(fork.clone()),
            ..Pins::default()
        },
        "forked",
    );
    fails(
        &Pins {
            origin: Some("another.example/log".into()),
            ..Pins::default()
        },
        "pinned origin",
    );
    fails(
        &Pins {
            min_size: Some(8001),
            ..Pins::default()
        },
        "below the pinned minimum",
    );

    // The CLI: no pinned key, no run; a kept note that is a fork; a retroactive key.
    let work = tempfile::tempdir().expect("tmp");
    let w = |name: &str, text: &str| {
        let p = work.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let bin = auditlog_tests::daemon::client_exe();
    let cli = |args: &[&str]| {
        let out = Command::new(&bin)
            .arg("verify")
            .arg(base.path())
            .args(args)
            .output()
            .expect("run cli");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&[]);
    assert!(!ok && out.contains("no pinned key"), "{out}");
    let (ok, out) = cli(&["--insecure"]);
    assert!(ok && out.contains("trusting"), "{out}");
    let k = key.to_string();
    let kept_file = w("kept.note", &kept_text);
    let (ok, out) = cli(&["--key", &k, "--since", &kept_file, "--min-size", "8000"]);
    assert!(ok, "{out}");
    let fork_file = w(
        "fork.note",
        &note::sign_checkpoint(&fork, &[&signer]).expect("sign"),
    );
    let (ok, out) = cli(&["--key", &k, "--since", &fork_file]);
    assert!(!ok && out.contains("forked"), "{out}");
    // A history that adds a second key from size 1 (long signed when the auditor kept its
    // history and checkpoint) fails against the kept history.
    let extra = note::NoteSigner::from_seed("auditlog.local/log", [5u8; 32]).expect("key");
    let entry = |k: &VerifierKey, from: u64| KeyEntry {
        name: k.name().to_string(),
        verifier_key: k.to_string(),
        from_size: from,
        until_size: None,
        backend: KeyBackend::External {
            description: "test".into(),
        },
        added_at_unix_ns: 0,
    };
    let prev = w("prev.json", &KeyHistory::single(&key).to_json());
    let retro = KeyHistory {
        format: 1,
        keys: vec![entry(&key, 0), entry(&extra.verifier_key(), 1)],
    };
    let retro = w("retro.json", &retro.to_json());
    let (ok, out) = cli(&[
        "--history",
        &retro,
        "--prev-history",
        &prev,
        "--since",
        &kept_file,
    ]);
    assert!(!ok && out.contains("retroactive"), "{out}");
}

/// Offset and length of the batch that starts at leaf `index` in an open segment.
fn batch_at_index(path: &Path, index: u64) -> (usize, usize) {
    let b = std::fs::read(path).expect("read");
    let mut at = 0;
    loop {
        let h = auditlog_formats::batch::decode_header(&b[at..]).expect("batch");
        if h.first_index == index {
            return (at, h.total_bytes());
        }
        at += h.total_bytes();
    }
}

/// A log of many small sealed segments (256 KiB open segments, 16 KiB blocks), an open one
/// of several batches and many checkpoints, replicated to a local bucket at `store` and
/// closed cleanly once everything sealed is shipped.
fn build_many_segment_log(dir: &Path, store: &Path) -> VerifierKey {
    let mut cfg = small_config(dir);
    cfg.segment_bytes = 256 << 10;
    let mut r = auditlog_tests::replication(
        &format!("file://{}", store.display()),
        auditlog_worm::TargetOptions::default(),
    );
    r.allow_non_worm = true;
    cfg.replication = Some(r);
    let engine = Engine::open(cfg, None).expect("open");
    let mut n = 0u64;
    let mut append = |events: u64| {
        let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
        for i in n..n + events {
            b.add(&event(i, 256)).expect("valid");
        }
        engine.append(b).expect("append");
        n += events;
        engine
            .wait_checkpoint(engine.tree_size(), Duration::from_secs(5))
            .expect("checkpoint");
    };
    for _ in 0..40 {
        append(400);
    }
    // Small batches until the open segment has a few (the fixtures change its second).
    let open_batches = |d: &Path| {
        let b =
            std::fs::read(files(&d.join("segments"), "open").pop().expect("open")).expect("read");
        let mut at = 0;
        let mut count = 0;
        while let Ok(h) = auditlog_formats::batch::decode_header(&b[at..]) {
            at += h.total_bytes();
            count += 1;
        }
        count
    };
    while open_batches(dir) < 3 {
        append(20);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = engine.status();
        let r = st.replication.clone().expect("replication on");
        let sealed_end = files(&dir.join("segments"), "seg")
            .iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_string_lossy().to_string();
                match auditlog_formats::layout::parse_segment_name(&name)? {
                    auditlog_formats::layout::SegmentName::Sealed(_, end) => Some(end),
                    _ => None,
                }
            })
            .max()
            .unwrap_or(0);
        if st.open_segments == 1 && r.shipped_end == sealed_end && r.tiles_pending == 0 && r.idle {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not shipped: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = engine.verifier_key();
    engine.shutdown().expect("shutdown");
    key
}

/// Rewrites a sealed segment's digest to match its bytes: a change made by someone who
/// also recomputed the digest, so that the blocks and records themselves are what fail.
fn redigest(path: &Path) {
    use auditlog_formats::segment::DIGEST_COVERS_ALL_BUT;
    let mut b = std::fs::read(path).expect("read");
    let covered = b.len() - DIGEST_COVERS_ALL_BUT;
    let digest = blake3::hash(&b[..covered]);
    b[covered..covered + 32].copy_from_slice(digest.as_bytes());
    std::fs::write(path, b).expect("write");
}

/// Flips a byte inside block `n` of a sealed segment (its CRC no longer matches) and
/// recomputes the digest; returns the index of the block's first record.
fn break_block(path: &Path, n: usize) -> u64 {
    use auditlog_formats::segment as sg;
    let b = std::fs::read(path).expect("read");
    let h = sg::SegmentHeader::decode(&b[..sg::HEADER_BYTES]).expect("header");
    let t = sg::decode_trailer(b.len() as u64, &b[b.len() - sg::TRAILER_BYTES..]).expect("trailer");
    let fo = t.footer_offset as usize;
    let f = sg::decode_footer(&h, &t, &b[fo..fo + t.footer_bytes as usize]).expect("footer");
    assert!(f.blocks.len() > n, "{} blocks", f.blocks.len());
    let first = h.first_index
        + f.blocks[..n]
            .iter()
            .map(|b| b.record_count as u64)
            .sum::<u64>();
    flip(path, f.blocks[n].offset as usize + 7);
    redigest(path);
    first
}

/// The verdict as a line to compare: the summary, or where and what failed.
fn outcome(r: Result<Summary, VerifyError>) -> String {
    match r {
        Ok(s) => format!("OK {s:?}"),
        Err(e) => format!("FAILED {}: {}", e.place, e.what),
    }
}

/// The parallel verifier against the sequential one (`--threads 1`), over every fixture
/// the verifier tests make, on a log of many sealed segments, in the library and the CLI,
/// from a data directory and from a bucket: the same verdict, and for a failure the same
/// first bad place and message; for a clean log the same summary. Fixtures with damage in
/// several segments at once, and in the hash store before a bad block of the same segment,
/// check that the first failure in index order is named whichever worker finds its own
/// first.
#[test]
fn the_parallel_verifier_names_the_same_first_failure_as_the_sequential_one() {
    use auditlog_client::bucket::verify_bucket_pinned;
    use auditlog_client::verify::{verify_source, DirSource};
    use std::num::NonZeroUsize;
    let base = tempfile::tempdir().expect("tmp");
    let store = tempfile::tempdir().expect("store");
    let key = build_many_segment_log(base.path(), store.path());
    let history = auditlog_formats::keyhistory::KeyHistory::single(&key)
        .check()
        .expect("history");
    let one = NonZeroUsize::MIN;
    let four = NonZeroUsize::new(4).expect("4");
    let strict = Pins::default();
    let lenient = Pins {
        allow_unsigned_tail: true,
        ..Pins::default()
    };
    let run = |dir: &Path, pins: &Pins, threads| {
        outcome(verify_source(
            &DirSource::new(dir),
            &history,
            pins,
            threads,
            &mut |_, _| {},
        ))
    };
    let clean = verify_dir_pinned(base.path(), &history, &strict, &mut |_, _| {}).expect("clean");
    assert!(clean.sealed_segments >= 10, "{clean:?}");
    assert_eq!(clean.open_segments, 1, "{clean:?}");
    let segs = |d: &Path| files(&d.join("segments"), "seg");
    let n_segs = segs(base.path()).len();

    // Every fixture of the verifier tests, and some with damage in several places.
    let mut fixtures: Vec<(&str, Tamper, Option<&str>)> = tamper_cases()
        .into_iter()
        .map(|(name, tamper, expect)| (name, tamper, Some(expect)))
        .collect();
    let other = note::NoteSigner::from_seed("auditlog.local/log", [9u8; 32]).expect("key");
    let more: Vec<(&str, Tamper, Option<&str>)> = vec![
        ("clean", Box::new(|_: &Path| {}), None),
        (
            "forged tail",
            Box::new(|d: &Path| {
                append_forged_batch(d);
            }),
            Some("past the signed size"),
        ),
        (
            "no checkpoint log",
            Box::new(|d: &Path| std::fs::remove_file(d.join("checkpoints.log")).expect("rm")),
            Some("cannot read"),
        ),
        (
            "empty checkpoint log",
            Box::new(|d: &Path| std::fs::write(d.join("checkpoints.log"), b"").expect("w")),
            Some("past the signed size"),
        ),
        (
            "empty footer note",
            Box::new(move |d: &Path| reseal_with_note(&segs(d)[3], "")),
            None,
        ),
        (
            "uncovered empty footer note",
            Box::new(move |d: &Path| {
                reseal_with_note(&segs(d).pop().expect("sealed"), "");
                std::fs::write(d.join("checkpoints.log"), b"").expect("w");
            }),
            Some("footer has no checkpoint note"),
        ),
        (
            "foreign footer note",
            Box::new(move |d: &Path| {
                let p = &segs(d)[2];
                let end = auditlog_formats::layout::parse_segment_name(
                    &p.file_name().expect("name").to_string_lossy(),
                );
                let Some(auditlog_formats::layout::SegmentName::Sealed(_, end)) = end else {
                    panic!("sealed name");
                };
                let cp = note::Checkpoint {
                    origin: "auditlog.local/log".into(),
                    size: end,
                    root: [1u8; 32],
                    extensions: vec![],
                };
                reseal_with_note(p, &note::sign_checkpoint(&cp, &[&other]).expect("sign"));
            }),
            Some("footer checkpoint"),
        ),
        (
            "torn tail",
            Box::new(|d: &Path| {
                let n = append_forged_batch(d);
                let p = files(&d.join("segments"), "open").pop().expect("open");
                let (at, len) = batch_at_index(&p, n);
                flip(&p, at + len - 3);
            }),
            None,
        ),
        (
            "damaged first batch",
            Box::new(|d: &Path| {
                let p = files(&d.join("segments"), "open").pop().expect("open");
                let (at, _) = batch_at(&p, 0);
                flip(&p, at + 10);
            }),
            Some("events are missing"),
        ),
        (
            "two sealed segments changed: the earlier is named",
            Box::new(move |d: &Path| {
                let s = segs(d);
                flip(&s[n_segs - 2], 100);
                flip(&s[n_segs / 2], 100);
            }),
            Some("digest mismatch"),
        ),
        (
            "a bad block: named after the blocks before it",
            Box::new(move |d: &Path| {
                break_block(&segs(d)[n_segs / 2], 3);
            }),
            Some(": block 3: "),
        ),
        (
            "a bad block, and a stored hash of a record before it",
            Box::new(move |d: &Path| {
                let first = break_block(&segs(d)[n_segs / 2], 3);
                flip(
                    &d.join("hashes/level-00.bin"),
                    32 * (first as usize - 5) + 1,
                );
            }),
            Some("level-00.bin: node"),
        ),
        (
            "bad blocks in several segments",
            Box::new(move |d: &Path| {
                let s = segs(d);
                for k in [n_segs - 1, n_segs / 2 + 1, 1] {
                    break_block(&s[k], 2);
                }
            }),
            Some(": block 2: "),
        ),
        (
            "a sealed segment deleted, and a later one changed",
            Box::new(move |d: &Path| {
                let s = segs(d);
                flip(&s[n_segs - 1], 100);
                std::fs::remove_file(&s[n_segs / 2]).expect("rm");
            }),
            Some("a segment is missing"),
        ),
        (
            "a bad block, and an open segment batch",
            Box::new(move |d: &Path| {
                break_block(&segs(d)[n_segs - 1], 1);
                let p = files(&d.join("segments"), "open").pop().expect("open");
                let (at, _) = batch_at(&p, 1);
                flip(&p, at + 32 + 4 + 9 + 20);
            }),
            Some(": block 1: "),
        ),
    ];
    fixtures.extend(more);

    let bin = auditlog_tests::daemon::client_exe();
    let cli = |dir: &str, extra: &[&str], threads: &str| {
        let out = Command::new(&bin)
            .arg("verify")
            .arg(dir)
            .args(["--key", &key.to_string(), "--threads", threads])
            .args(extra)
            .output()
            .expect("run cli");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    for (name, tamper, expect) in &fixtures {
        let work = tempfile::tempdir().expect("tmp");
        copy_dir(base.path(), work.path());
        tamper(work.path());
        for pins in [&strict, &lenient] {
            let sequential = run(work.path(), pins, one);
            match expect {
                Some(e) if pins.allow_unsigned_tail == strict.allow_unsigned_tail => assert!(
                    sequential.starts_with("FAILED") && sequential.contains(e),
                    "{name}: {sequential} (expected to mention {e:?})"
                ),
                None => assert!(sequential.starts_with("OK"), "{name}: {sequential}"),
                Some(_) => {}
            }
            assert_eq!(run(work.path(), pins, four), sequential, "{name}");
        }
        let dir = work.path().display().to_string();
        let sequential = cli(&dir, &[], "1");
        assert_eq!(cli(&dir, &[], "4"), sequential, "{name}: CLI");
        assert_eq!(cli(&dir, &[], "2"), sequential, "{name}: CLI");
    }

    // From the bucket: the log as shipped, and copies with changed or missing objects.
    let bucket_fixtures: Vec<(&str, Tamper)> = vec![
        ("clean bucket", Box::new(|_: &Path| {})),
        (
            "segment objects changed",
            Box::new(|b: &Path| {
                let s = files(&b.join("segments"), "seg");
                flip(&s[s.len() - 1], 100);
                flip(&s[s.len() / 2], 200);
            }),
        ),
        (
            "a bad block in a segment object",
            Box::new(|b: &Path| {
                let s = files(&b.join("segments"), "seg");
                break_block(&s[s.len() / 2], 1);
            }),
        ),
        (
            "a segment object missing",
            Box::new(|b: &Path| {
                let s = files(&b.join("segments"), "seg");
                std::fs::remove_file(&s[s.len() / 2]).expect("rm");
            }),
        ),
    ];
    let policy = auditlog_worm::RetentionPolicy::default();
    for (name, tamper) in &bucket_fixtures {
        let work = tempfile::tempdir().expect("tmp");
        copy_dir(store.path(), work.path());
        tamper(work.path());
        let url = format!("file://{}", work.path().display());
        let bucket = |threads| {
            let target = auditlog_worm::open(&url, &auditlog_worm::TargetOptions::default())
                .expect("local bucket");
            match verify_bucket_pinned(
                target.into(),
                &history,
                &strict,
                threads,
                &policy,
                &mut |_, _| {},
            ) {
                Ok((s, r)) => format!("OK {s:?} {r:?}"),
                Err(e) => format!("FAILED {}: {}", e.place, e.what),
            }
        };
        let sequential = bucket(one);
        assert_eq!(
            sequential.starts_with("OK"),
            *name == "clean bucket",
            "{name}: {sequential}"
        );
        assert_eq!(bucket(four), sequential, "{name}");
        assert_eq!(cli(&url, &[], "4"), cli(&url, &[], "1"), "{name}: CLI");
    }
}
