//! Crash and tamper tests: a child process killed mid-ingest, and single-byte changes to
//! every kind of file the engine writes, caught by the offline verifier.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use auditlog_client::verify::{verify_dir, Summary, VerifyError};
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
        let mut b = engine.new_batch();
        for i in 0..400u64 {
            b.push(&event(chunk * 400 + i, 256)).expect("valid");
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

#[test]
fn tampering_with_any_file_fails_verification_at_the_right_place() {
    let base = tempfile::tempdir().expect("tmp");
    let key = build_log(base.path());
    let ok = verify(base.path(), &key).expect("untouched log verifies");
    assert_eq!(ok.events, 8000);
    assert!(ok.sealed_segments >= 2 && ok.checkpoints >= 20, "{ok:?}");
    assert!(ok.hash_nodes_checked >= 15_000, "{ok:?}");

    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Tamper, &str)> = vec![
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
            Box::new(|d: &Path| flip(&d.join("hashes/level-03.bin"), 32 * 5 + 1)),
            "level-03.bin: node 5",
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
    ];
    let bin = cli_binary();
    for (name, tamper, expect) in cases {
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
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: 8000 events"));
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

/// The `auditlog` binary, built beside this test by `cargo test --workspace`.
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let bin = dir.join("auditlog");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "auditlog-client", "--bin", "auditlog"])
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    bin
}
