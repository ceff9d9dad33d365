//! The test witness (tests/src/witness.rs) against hand-built add-checkpoint requests,
//! including the spec's example shapes, then the daemon submitting to witnesses
//! (tests/tests/witness/daemon.rs).

use auditlog_formats::cosignature::{parse_response, valid_cosignatures, AddCheckpoint};
use auditlog_formats::note::{sign_checkpoint, Checkpoint, NoteSigner};
use auditlog_formats::tree::{self, MemoryTree};
use auditlog_formats::TreeHash;
use auditlog_tests::witness::{Answer, Witness};

#[path = "witness/client.rs"]
mod client;
#[path = "witness/daemon.rs"]
mod daemon;

const ORIGIN: &str = "example.com/behind-the-sofa";

/// The request body of c2sp.org/tlog-witness, verbatim.
const SPEC_REQUEST: &str = include_str!("../../formats/fuzz/seeds/cosignature/request");

struct Log {
    key: NoteSigner,
    tree: MemoryTree,
}

impl Log {
    fn new(seed: u8) -> Log {
        Log {
            key: NoteSigner::from_seed(ORIGIN, [seed; 32]).expect("key"),
            tree: MemoryTree::new(TreeHash::Sha256),
        }
    }

    fn grow(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.tree.size();
            self.tree
                .append_leaf_hash(TreeHash::Sha256.leaf(&i.to_be_bytes()));
        }
    }

    fn note(&self, size: u64) -> String {
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: self.tree.root_at(size),
            extensions: Vec::new(),
        };
        sign_checkpoint(&cp, &[&self.key]).expect("sign")
    }

    fn request(&self, old: u64, size: u64) -> Vec<u8> {
        let proof = if old == 0 {
            Vec::new()
        } else {
            tree::prove_consistency(TreeHash::Sha256, old, size, &self.tree.hashes)
                .expect("read")
                .expect("proof")
        };
        AddCheckpoint {
            old_size: old,
            proof,
            note: self.note(size),
        }
        .to_body()
        .into_bytes()
    }
}

fn status(a: &Answer) -> u16 {
    a.status
}

fn witness_for(log: &Log) -> Witness {
    let w = Witness::start("witness.example/w1", 1);
    w.trust(ORIGIN, log.key.verifier_key());
    w
}

#[test]
fn cosigns_a_first_checkpoint_and_then_a_consistent_one() {
    let mut log = Log::new(9);
    log.grow(5);
    let w = witness_for(&log);
    let a = w.add_checkpoint(&log.request(0, 5));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let sigs = parse_response(&a.body).expect("signature lines");
    let text = Checkpoint {
        origin: ORIGIN.into(),
        size: 5,
        root: log.tree.root_at(5),
        extensions: Vec::new(),
    }
    .to_text();
    assert_eq!(valid_cosignatures(&text, &sigs, &[w.key()]).len(), 1);
    assert_eq!(w.latest(ORIGIN), Some((5, log.tree.root_at(5))));
    log.grow(12);
    assert_eq!(status(&w.add_checkpoint(&log.request(5, 17))), 200);
    // The same size again, same root: cosigned again.
    assert_eq!(status(&w.add_checkpoint(&log.request(17, 17))), 200);
}

#[test]
fn every_refusal_has_the_spec_status() {
    let mut log = Log::new(9);
    log.grow(8);
    let w = witness_for(&log);
    // The spec's example: its log key is not ours, so 404 (unknown origin) until the
    // witness knows the origin, then 403 (no signature by a trusted key).
    let other = Witness::start("witness.example/w2", 2);
    assert_eq!(status(&other.add_checkpoint(SPEC_REQUEST.as_bytes())), 404);
    other.trust(ORIGIN, log.key.verifier_key());
    assert_eq!(status(&other.add_checkpoint(SPEC_REQUEST.as_bytes())), 403);
    // A trusted key's signature that fails: 403.
    let mut forged = log.request(0, 8);
    let at = forged.len() - 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    assert_eq!(status(&w.add_checkpoint(&forged)), 403);
    // Malformed bodies, and an old size above the checkpoint's: 400.
    assert_eq!(status(&w.add_checkpoint(b"old 01\n\nx\n")), 400);
    assert_eq!(status(&w.add_checkpoint(b"hello")), 400);
    assert_eq!(status(&w.add_checkpoint(&log.request(0, 8)[..20])), 400);
    let above = String::from_utf8(log.request(0, 8))
        .unwrap()
        .replacen("old 0", "old 9", 1);
    assert_eq!(status(&w.add_checkpoint(above.as_bytes())), 400);
    // A non-empty proof from 0: 422.
    let mut with_proof = log.request(3, 8);
    with_proof[4] = b'0';
    assert_eq!(status(&w.add_checkpoint(&with_proof)), 422);
    // Size 0 with a root other than the empty tree's: 422 (its own root is fine).
    let bad_empty = Checkpoint {
        origin: ORIGIN.into(),
        size: 0,
        root: [7; 32],
        extensions: Vec::new(),
    };
    let body = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        note: sign_checkpoint(&bad_empty, &[&log.key]).expect("sign"),
    };
    assert_eq!(status(&w.add_checkpoint(body.to_body().as_bytes())), 422);
    assert_eq!(status(&w.add_checkpoint(&log.request(0, 0))), 200);
    assert_eq!(status(&w.add_checkpoint(&log.request(0, 3))), 200);
    // The old size is not the one it cosigned: 409 with that size.
    let a = w.add_checkpoint(&log.request(2, 8));
    assert_eq!(a.status, 409);
    assert_eq!(a.content_type, "text/x.tlog.size");
    assert_eq!(a.body, b"3\n");
    assert_eq!(status(&w.add_checkpoint(&log.request(0, 8))), 409);
    // A proof that does not verify: 422.
    let mut bad = String::from_utf8(log.request(3, 8)).unwrap();
    let line = bad.lines().nth(1).unwrap().to_string();
    bad = bad.replacen(&line, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1);
    assert_eq!(status(&w.add_checkpoint(bad.as_bytes())), 422);
    // A fork: another log at the witness's size with another root, and at a larger size.
    let mut fork = Log::new(9);
    fork.grow(2);
    fork.tree.append_leaf_hash([1; 32]);
    fork.grow(5);
    assert_eq!(status(&w.add_checkpoint(&fork.request(3, 3))), 422);
    assert_eq!(status(&w.add_checkpoint(&fork.request(3, 8))), 422);
    assert_eq!(w.latest(ORIGIN), Some((3, log.tree.root_at(3))));
    assert_eq!(status(&w.add_checkpoint(&log.request(3, 8))), 200);
}

#[test]
fn racing_requests_from_one_size_are_cosigned_once() {
    let mut log = Log::new(9);
    log.grow(40);
    let w = std::sync::Arc::new(witness_for(&log));
    assert_eq!(status(&w.add_checkpoint(&log.request(0, 10))), 200);
    let bodies: Vec<Vec<u8>> = (11..=40).map(|n| log.request(10, n)).collect();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| {
                let w = w.clone();
                s.spawn(move || w.add_checkpoint(b).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1);
    assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), 29);
}

#[test]
fn answers_over_http_with_the_spec_content_types() {
    let mut log = Log::new(9);
    log.grow(4);
    let w = witness_for(&log);
    let agent = ureq::AgentBuilder::new().build();
    let url = format!("{}/add-checkpoint", w.url());
    let r = agent
        .post(&url)
        .send_bytes(&log.request(0, 4))
        .expect("200");
    let body = r.into_string().expect("body");
    assert!(body.starts_with("\u{2014} witness.example/w1 "), "{body}");
    match agent.post(&url).send_bytes(&log.request(0, 4)) {
        Err(ureq::Error::Status(409, r)) => {
            assert_eq!(r.content_type(), "text/x.tlog.size");
            assert_eq!(r.into_string().unwrap(), "4\n");
        }
        other => panic!("expected 409, got {other:?}"),
    }
    match agent.get(&url).call() {
        Err(ureq::Error::Status(405, _)) => {}
        other => panic!("expected 405, got {other:?}"),
    }
    assert_eq!(w.requests(), 2);
}
