//! `auditlog prove`, `checkpoint` and `verify` with `--witness` and `--witness-policy`.

use std::process::Output;

use auditlog_formats::note::parse_note;
use auditlog_tests::daemon::client_command;
use auditlog_tests::witness::Mode;

use super::daemon::{post, start, wait_published, witnesses};

fn cli(d: Option<&auditlog_tests::daemon::Daemon>, args: &[&str]) -> (bool, String) {
    let mut c = client_command();
    c.args(args).env_remove("AUDITLOG_VERIFIER_KEY");
    if let Some(d) = d {
        c.env("AUDITLOG_URL", &d.base)
            .env("AUDITLOG_TOKEN", d.token("auditor"));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run auditlog");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    eprintln!("$ auditlog {}\n{text}-> {status}", args.join(" "));
    (status.success(), text)
}

/// The note with the cosignature line of `name` replaced by `line` (None: removed).
fn with_line(note: &str, name: &str, line: Option<&str>) -> String {
    let prefix = format!("\u{2014} {name} ");
    note.lines()
        .filter_map(|l| match l.starts_with(&prefix) {
            true => line.map(str::to_string),
            false => Some(l.to_string()),
        })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn prove_checkpoint_and_verify_require_the_witness_policy() {
    let dir = tempfile::tempdir().expect("tmp");
    let ws = witnesses(3);
    ws[2].set_mode(Mode::Down);
    let (mut d, key) = start(dir.path(), &ws, 2);
    let k = key.to_string();
    let (w0, w1, w2) = (
        ws[0].key().to_string(),
        ws[1].key().to_string(),
        ws[2].key().to_string(),
    );
    let size = post(&d, 10);
    wait_published(&d, &key, &ws, size);
    let index = (size - 1).to_string();
    let prove = |extra: &[&str]| {
        let mut args = vec!["prove", "--index", &index, "--key", &k];
        args.extend_from_slice(extra);
        cli(Some(&d), &args)
    };

    // All three listed, with a policy of `k`.
    let all_three = |k: &str| {
        prove(&[
            "--witness",
            &w0,
            "--witness",
            &w1,
            "--witness",
            &w2,
            "--witness-policy",
            k,
        ])
    };
    // Policy met: 2 of the 3 listed.
    let (ok, out) = all_three("2");
    assert!(ok, "{out}");
    assert!(out.contains("2 of 2 required cosignatures OK"), "{out}");
    // One more than cosigned: refused, naming the witness missing.
    let (ok, out) = all_three("3");
    assert!(!ok, "{out}");
    assert!(
        out.contains("2 of the 3") && out.contains("witness.test/w2: no cosignature"),
        "{out}"
    );
    // The default policy is every witness given.
    let (ok, out) = prove(&["--witness", &w0, "--witness", &w2]);
    assert!(!ok && out.contains("1 of the 2"), "{out}");
    // The same witness twice is one witness.
    let (ok, out) = prove(&["--witness", &w0, "--witness", &w0, "--witness-policy", "2"]);
    assert!(!ok && out.contains("1 distinct witness"), "{out}");
    // A log key is not a witness key.
    let (ok, out) = prove(&["--witness", &k]);
    assert!(!ok && out.contains("0x04"), "{out}");

    // The checkpoint an auditor keeps, checked as it is fetched.
    let (ok, note) = {
        let mut c = client_command();
        c.args([
            "checkpoint",
            "--key",
            &k,
            "--witness",
            &w0,
            "--witness",
            &w1,
        ])
        .env_remove("AUDITLOG_VERIFIER_KEY")
        .env("AUDITLOG_URL", &d.base)
        .env("AUDITLOG_TOKEN", d.token("auditor"));
        let out = c.output().expect("checkpoint");
        (
            out.status.success(),
            String::from_utf8(out.stdout).expect("utf-8"),
        )
    };
    assert!(ok, "{note}");
    post(&d, 3);
    d.stop();
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");
    let kept = dir.path().join("kept");
    let verify = |note: &str| {
        std::fs::write(&kept, note).expect("write");
        cli(
            None,
            &[
                "verify",
                data,
                "--key",
                &k,
                "--since",
                kept.to_str().unwrap(),
                "--witness",
                &w0,
                "--witness",
                &w1,
            ],
        )
    };
    let (ok, out) = verify(&note);
    assert!(ok, "{out}");
    assert!(out.contains("witnesses: 2 of 2"), "{out}");

    // An altered cosignature: refused, naming whose.
    let line = parse_note(&note)
        .expect("note")
        .1
        .into_iter()
        .find(|s| s.name == ws[0].key().name())
        .expect("w0 cosigned");
    let mut forged = line.clone();
    forged.signature[40] ^= 1;
    let (ok, out) = verify(&with_line(
        &note,
        forged.name.as_str(),
        Some(forged.to_line().trim_end()),
    ));
    assert!(
        !ok && out
            .contains("witness.test/w0: cosignature by witness.test/w0: signature does not verify"),
        "{out}"
    );
    // A cosignature by w1's key over another checkpoint.
    let other =
        auditlog_formats::cosignature::WitnessSigner::from_seed("witness.test/w1", [11; 32])
            .expect("w1's key")
            .cosign(
                "auditlog.local/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                5,
            );
    assert_eq!(other.key_id, ws[1].key().key_id());
    let (ok, out) = verify(&with_line(
        &note,
        "witness.test/w1",
        Some(other.to_line().trim_end()),
    ));
    assert!(
        !ok && out.contains("witness.test/w1") && out.contains("does not verify"),
        "{out}"
    );
    // w0's line twice and no w1: one witness, refused.
    let twice = with_line(&note, "witness.test/w1", Some(line.to_line().trim_end()));
    let (ok, out) = verify(&twice);
    assert!(
        !ok && out.contains("1 of the 2") && out.contains("witness.test/w1: no cosignature"),
        "{out}"
    );
    // --witness without a kept checkpoint to check.
    let (ok, out) = cli(None, &["verify", data, "--key", &k, "--witness", &w0]);
    assert!(!ok && out.contains("--since"), "{out}");
}
