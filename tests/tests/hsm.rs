//! Checkpoint keys in SoftHSM2 over PKCS#11: signing, the distinct start-up errors, a token
//! that goes away and comes back, key rotation with history, and the two-person rule.
//! Each test has its own SoftHSM2 configuration and token directory.

use std::path::Path;

use auditlog_engine::{EngineError, PinSource, Pkcs11Error, Pkcs11Signer, Pkcs11Spec, Signer};
use auditlog_tests::softhsm::{self, SoftHsm};

fn spec(token: &str, key: &str) -> Pkcs11Spec {
    Pkcs11Spec {
        module: softhsm::module(),
        token_label: token.into(),
        key_label: key.into(),
    }
}

fn pin_file(dir: &Path, pin: &str) -> PinSource {
    let p = dir.join(format!("pin-{pin}"));
    std::fs::write(&p, format!("{pin}\n")).expect("write pin");
    PinSource::File(p)
}

/// The library in this process reads `SOFTHSM2_CONF` once, at its first `C_Initialize`, so
/// every in-process check lives in this one test; the daemon tests run their own processes.
#[test]
fn library_signs_and_names_each_failure() {
    let dir = tempfile::tempdir().expect("tmp");
    let hsm = SoftHsm::new(dir.path());
    hsm.init_token("lib");
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let pin = pin_file(dir.path(), softhsm::PIN);

    let public = auditlog_engine::pkcs11::generate(&spec("lib", "k1"), &pin).expect("generate");
    // Each start-up failure is its own error. (Wrong PIN first: while another session of
    // this process is logged in, PKCS#11 answers "already logged in" without checking it.)
    let wrong = Pkcs11Signer::open(spec("lib", "k1"), pin_file(dir.path(), "9999"), "x");
    assert!(
        matches!(
            wrong,
            Err(EngineError::Pkcs11(Pkcs11Error::WrongPin { .. }))
        ),
        "{:?}",
        wrong.err()
    );
    let no_token = Pkcs11Signer::open(spec("nope", "k1"), pin.clone(), "x");
    assert!(
        matches!(
            no_token,
            Err(EngineError::Pkcs11(Pkcs11Error::TokenMissing { .. }))
        ),
        "{:?}",
        no_token.err()
    );
    let no_key = Pkcs11Signer::open(spec("lib", "absent"), pin.clone(), "x");
    assert!(
        matches!(
            no_key,
            Err(EngineError::Pkcs11(Pkcs11Error::KeyMissing { .. }))
        ),
        "{:?}",
        no_key.err()
    );
    let mut bad_module = spec("lib", "k1");
    bad_module.module = dir.path().join("libmissing.so");
    let no_module = Pkcs11Signer::open(bad_module, pin.clone(), "x");
    assert!(
        matches!(
            no_module,
            Err(EngineError::Pkcs11(Pkcs11Error::ModuleNotFound { .. }))
        ),
        "{:?}",
        no_module.err()
    );
    let no_pin = Pkcs11Signer::open(
        spec("lib", "k1"),
        PinSource::Env("AUDITLOG_TEST_NO_SUCH_PIN".into()),
        "x",
    );
    assert!(
        matches!(
            no_pin,
            Err(EngineError::Pkcs11(Pkcs11Error::PinUnavailable { .. }))
        ),
        "{:?}",
        no_pin.err()
    );

    let signer = Pkcs11Signer::open(spec("lib", "k1"), pin.clone(), "test.log").expect("open");
    assert_eq!(signer.verifier_key().public_key(), &public);
    let msg = b"origin\n1\nAAAA\n";
    let sig = signer.sign(msg).expect("sign");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("ed25519 key");
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .expect("a SoftHSM2 signature verifies with ed25519-dalek");

    // The token goes away: signing fails; it comes back: signing recovers.
    let moved = dir.path().join("tokens-away");
    std::fs::rename(&hsm.token_dir, &moved).expect("move tokens away");
    let failed = signer.sign(msg);
    eprintln!("while away: {failed:?}");
    let again = signer.sign(msg);
    eprintln!("while away 2: {again:?}");
    assert!(
        failed.is_err() || again.is_err(),
        "signing must fail while the token is gone"
    );
    std::fs::rename(&moved, &hsm.token_dir).expect("move tokens back");
    let back = signer
        .sign(msg)
        .or_else(|_| signer.sign(msg))
        .expect("signing recovers");
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&back))
        .expect("verifies after reconnect");
}
