//! The daemon with `[witness]`: real `auditlogd` processes submitting to test witnesses on
//! loopback, and what they publish.

use std::time::{Duration, Instant};

use auditlog_formats::cosignature::valid_cosignatures;
use auditlog_formats::note::{open_checkpoint, Checkpoint, VerifierKey};
use auditlog_tests::daemon::{Daemon, CONFIG};
use auditlog_tests::event;
use auditlog_tests::witness::{Mode, Witness};

pub(crate) const ORIGIN: &str = "auditlog.local/log";
const WAIT: Duration = Duration::from_secs(30);

fn config(witnesses: &[&Witness], policy: usize) -> String {
    let mut c = format!("{CONFIG}\n[witness]\npolicy = {policy}\ntimeout_ms = 2000\n");
    for w in witnesses {
        c.push_str(&format!(
            "[[witness.witnesses]]\nurl = \"{}\"\nkey = \"{}\"\n",
            w.url(),
            w.key()
        ));
    }
    c
}

pub(crate) fn witnesses(n: u8) -> Vec<Witness> {
    (0..n)
        .map(|i| Witness::start(&format!("witness.test/w{i}"), 10 + i))
        .collect()
}

/// Starts a daemon that needs `policy` of `ws`, then has every witness trust its key.
pub(crate) fn start(dir: &std::path::Path, ws: &[Witness], policy: usize) -> (Daemon, VerifierKey) {
    let refs: Vec<&Witness> = ws.iter().collect();
    let d = Daemon::start_with(dir, &config(&refs, policy));
    let (key, _, _) = d.log();
    for w in ws {
        w.trust(ORIGIN, key.clone());
    }
    (d, key)
}

/// The published checkpoint and the indices (into `ws`) of the witnesses that validly
/// cosigned it; `None` before any is published.
fn published(d: &Daemon, key: &VerifierKey, ws: &[Witness]) -> Option<(Checkpoint, Vec<usize>)> {
    let r = d.get("/v1/checkpoint", "auditor");
    if r.status != 200 {
        return None;
    }
    let (cp, opened) = open_checkpoint(&r.text(), std::slice::from_ref(key)).expect("log-signed");
    let keys: Vec<_> = ws.iter().map(Witness::key).collect();
    let mut valid: Vec<usize> = valid_cosignatures(&opened.text, &opened.unverified, &keys)
        .into_iter()
        .map(|v| v.witness)
        .collect();
    valid.sort();
    // Only valid cosignatures are attached.
    assert_eq!(valid.len(), opened.unverified.len(), "{}", r.text());
    Some((cp, valid))
}

pub(crate) fn wait_published(
    d: &Daemon,
    key: &VerifierKey,
    ws: &[Witness],
    size: u64,
) -> (Checkpoint, Vec<usize>) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((cp, valid)) = published(d, key, ws) {
            if cp.size >= size {
                return (cp, valid);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint at {size} published"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn failures(d: &Daemon, w: &Witness, reason: &str) -> u64 {
    let name = format!(
        "auditlog_witness_failures_total{{witness=\"{}\",reason=\"{reason}\"}}",
        w.key().name()
    );
    d.metric(&name)
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn wait_failures(d: &Daemon, w: &Witness, reason: &str, at_least: u64) {
    let deadline = Instant::now() + WAIT;
    while failures(d, w, reason) < at_least {
        assert!(
            Instant::now() < deadline,
            "{reason} failures of {} stuck",
            w.key().name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready(d: &Daemon) -> (u16, String) {
    match d.agent.get(&format!("{}/ready", d.ops_base)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("/ready: {e}"),
    }
}

pub(crate) fn post(d: &Daemon, n: u64) -> u64 {
    let events: Vec<Vec<u8>> = (0..n).map(|i| event(i, 200)).collect();
    let idx = d.post_events(&events);
    idx.last().expect("receipts") + 1
}

#[test]
fn two_of_three_with_one_down_publishes_with_two_cosignatures() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(3);
    ws[2].set_mode(Mode::Down);
    let (d, key) = start(dir.path(), &ws, 2);
    let size = post(&d, 10);
    let (cp, valid) = wait_published(&d, &key, &ws, size);
    assert_eq!(valid, [0, 1]);
    assert_eq!(ws[0].latest(ORIGIN), Some((cp.size, cp.root)));
    wait_failures(&d, &ws[2], "unreachable", 1);
    assert_eq!(
        d.metric("auditlog_witness_cosigned_size{witness=\"witness.test/w0\"}"),
        Some(cp.size)
    );
}

#[test]
fn two_of_three_with_two_down_publishes_nothing_newer_until_one_is_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(3);
    let (d, key) = start(dir.path(), &ws, 2);
    let (before, _) = wait_published(&d, &key, &ws, d.first);
    ws[1].set_mode(Mode::Down);
    ws[2].set_mode(Mode::Down);
    // Events are still acknowledged (post_events asserts 200 and receipts).
    let size = post(&d, 20);
    assert!(size > before.size);
    // The checkpointer tried, twice, and was refused by the policy each time.
    let tried = ws[0].requests();
    let deadline = Instant::now() + WAIT;
    while ws[0].requests() < tried + 2 {
        assert!(Instant::now() < deadline, "no retries reached the witness");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (now, _) = published(&d, &key, &ws).expect("the first checkpoint");
    assert!(now.size < size, "published {} without the policy", now.size);
    let (status, why) = ready(&d);
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains("witnesses") && why.contains("1 of the 2"),
        "{why}"
    );
    assert_eq!(d.metric("auditlog_witness_policy_unmet"), Some(1));
    // More events are still acknowledged while nothing is published.
    let size = post(&d, 5);
    ws[1].set_mode(Mode::Honest);
    let (cp, valid) = wait_published(&d, &key, &ws, size);
    assert_eq!(valid, [0, 1]);
    assert!(cp.size >= size);
    d.wait_metric("auditlog_witness_policy_unmet", WAIT, |v| v == 0);
}

#[test]
fn cosignatures_by_a_wrong_key_or_over_other_bytes_do_not_count() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(3);
    ws[0].set_mode(Mode::WrongKey);
    ws[1].set_mode(Mode::WrongBytes);
    let (d, key) = start(dir.path(), &ws, 2);
    let size = post(&d, 5);
    wait_failures(&d, &ws[0], "bad_cosignature", 1);
    wait_failures(&d, &ws[1], "bad_cosignature", 1);
    assert!(
        published(&d, &key, &ws).is_none(),
        "published with one valid cosignature"
    );
    ws[0].set_mode(Mode::Honest);
    let (_, valid) = wait_published(&d, &key, &ws, size);
    assert_eq!(valid, [0, 2]);
}

#[test]
fn a_witness_ahead_of_a_restarted_daemon_is_caught_up_after_its_409() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(2);
    let (mut d, key) = start(dir.path(), &ws, 2);
    let size = post(&d, 8);
    let (cp, _) = wait_published(&d, &key, &ws, size);
    d.stop();
    // A new process knows nothing of the witnesses: it starts from 0, they answer 409.
    let refs: Vec<&Witness> = ws.iter().collect();
    let d = Daemon::start_with(dir.path(), &config(&refs, 2));
    let size = post(&d, 8);
    let (again, valid) = wait_published(&d, &key, &ws, size);
    assert!(again.size > cp.size);
    assert_eq!(valid, [0, 1]);
    assert_eq!(failures(&d, &ws[0], "conflict"), 0);
    assert_eq!(ws[1].latest(ORIGIN), Some((again.size, again.root)));
}

#[test]
fn a_fork_is_refused_by_the_witness_and_nothing_is_published() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(1);
    let (d, key) = start(dir.path(), &ws, 1);
    let (cp, _) = wait_published(&d, &key, &ws, d.first);
    // The witness cosigned another tree at this size: the log's next checkpoint, with a
    // proof from its own tree, is inconsistent with that.
    ws[0].set_latest(ORIGIN, cp.size, [7; 32]);
    let size = post(&d, 5);
    wait_failures(&d, &ws[0], "inconsistent", 1);
    let (now, _) = published(&d, &key, &ws).expect("the first checkpoint");
    assert_eq!(now.size, cp.size);
    assert!(now.size < size);
    assert_eq!(ws[0].latest(ORIGIN), Some((cp.size, [7; 32])));
}

/// docs/benchmarks.md: the time from an acknowledged event to a published checkpoint that
/// covers it (a long-poll on `/v1/checkpoint?min_size`), with 3 local witnesses (policy 2)
/// and without witnesses, medians over 100 events one at a time.
#[test]
#[ignore = "a measurement: cargo test -p auditlog-tests --test witness publish_latency -- --ignored --nocapture"]
fn publish_latency_with_three_local_witnesses() {
    let median = |d: &Daemon, key: &VerifierKey| -> Duration {
        let mut took = Vec::new();
        for i in 0..100 {
            let size = d.post_events(&[event(i, 200)])[0] + 1;
            let t = Instant::now();
            let r = d.get(
                &format!("/v1/checkpoint?min_size={size}&wait_ms=10000"),
                "auditor",
            );
            took.push(t.elapsed());
            assert_eq!(r.status, 200);
            open_checkpoint(&r.text(), std::slice::from_ref(key)).expect("signed");
        }
        took.sort();
        took[took.len() / 2]
    };
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(3);
    let (d, key) = start(dir.path(), &ws, 2);
    wait_published(&d, &key, &ws, d.first);
    let with = median(&d, &key);
    let plain_dir = tempfile::tempdir().expect("tmp");
    let plain = Daemon::start(plain_dir.path());
    let (plain_key, _, _) = plain.log();
    let without = median(&plain, &plain_key);
    println!("checkpoint published after an ack, median of 100: with 3 local witnesses (policy 2) {with:?}, without witnesses {without:?}");
}
