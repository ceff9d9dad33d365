//! Checkpoint signing: one Ed25519 signature over a checkpoint's text (plus the check against
//! the public key that `sign_checkpoint` does before publishing), through the key-file signer
//! and through SoftHSM2 over PKCS#11. The HSM part runs when SoftHSM2 is installed: it makes
//! a private token in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use auditlog_engine::signer::sign_checkpoint;
use auditlog_engine::{KeyFileSigner, PinSource, Pkcs11Signer, Pkcs11Spec, Signer};
use auditlog_formats::note::Checkpoint;
use criterion::{criterion_group, criterion_main, Criterion};

fn checkpoint() -> Checkpoint {
    Checkpoint {
        origin: "auditlog.local/log".into(),
        size: 123_456_789,
        root: [7; 32],
        extensions: Vec::new(),
    }
}

fn softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn softhsm_signer(dir: &Path) -> Option<Pkcs11Signer> {
    let module = softhsm_module()?;
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).ok()?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .ok()?;
    let ok = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "5678",
            "--pin",
            "1234",
        ])
        .output()
        .ok()?
        .status
        .success();
    if !ok {
        return None;
    }
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin_path = dir.join("pin");
    std::fs::write(&pin_path, "1234").ok()?;
    // PIN files are read only when group and others cannot read them.
    std::fs::set_permissions(
        &pin_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .ok()?;
    let pin = PinSource::File(pin_path);
    let spec = Pkcs11Spec {
        module,
        token_label: "bench".into(),
        key_label: "cp".into(),
    };
    auditlog_engine::pkcs11::generate(&spec, &pin).ok()?;
    Pkcs11Signer::open(spec, pin, "auditlog.local/log").ok()
}

fn signers(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("auditlog-bench-signers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let cp = checkpoint();
    let file =
        KeyFileSigner::load_or_create(&dir.join("cp.key"), "auditlog.local/log").expect("key file");
    let mut g = c.benchmark_group("sign_checkpoint");
    g.bench_function("key_file", |b| {
        b.iter(|| sign_checkpoint(&cp, &[&file as &dyn Signer]).expect("sign"))
    });
    match softhsm_signer(&dir) {
        Some(hsm) => {
            g.bench_function("softhsm2_pkcs11", |b| {
                b.iter(|| sign_checkpoint(&cp, &[&hsm as &dyn Signer]).expect("sign"))
            });
            g.bench_function("key_file_and_softhsm2_overlap", |b| {
                b.iter(|| sign_checkpoint(&cp, &[&file as &dyn Signer, &hsm]).expect("sign"))
            });
        }
        None => eprintln!("SoftHSM2 not installed: skipping the PKCS#11 signer"),
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, signers);
criterion_main!(benches);
