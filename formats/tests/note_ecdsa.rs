//! ECDSA P-256 note keys and signatures (C2SP signed-note type 0x02): a known answer from
//! transparency-dev's own tests (the Sigstore Rekor key and one of its checkpoints), tamper
//! tests, the DER strictness rules, and notes signed here with a local P-256 key.

use auditlog_formats::note::ecdsa::{der_from_fixed, spki_der_from_sec1};
use auditlog_formats::note::{
    open_checkpoint, open_note, Checkpoint, NoteError, NoteSignature, VerifierKey, ALG_ECDSA_SHA256,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;

// github.com/transparency-dev/formats note/note_verifier_test.go.
const REKOR_MATERIAL: &str = "AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNhtmPtrWm3U1eQXBogSMdGvXwBcK5AW5i0hrZLOC96l+smGNM7nwZ4QvFK/4sueRoVj//QP22Ni4Qt9DPfkWLc=";
const REKOR_NOTE: &str = "Rekor\n798034\nf+7CoKgXKE/tNys9TTXcr/ad6U/K3xvznmzew9y6SP0=\n\n\u{2014} rekor.sigstore.dev wNI9ajBEAiARInWIWyCdyG27CO6LPnPekyw20qO0YJfoaPaowGp/XgIgc+qEHS3+GKVClgqq20uDLet7MCoTURUCRdxwWBHHufk=\n";
const PIXEL_VKEY: &str = "pixel6_transparency_log+91c16e30+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABN+4x0Jk1yTwvLFI9A4NDdGZcX0aiWVdWM5XJVy0M4VWD3AvyW5Q6Hs9A0mcDkpUoYgn+KKPNzFC0H3nN3q6JQ8=";

fn rekor_vkey() -> String {
    format!("rekor.sigstore.dev+c0d23d6a+{REKOR_MATERIAL}")
}

#[test]
fn transparency_dev_known_answer_opens() {
    let key = VerifierKey::parse(&rekor_vkey()).expect("Rekor key");
    assert_eq!(key.algorithm(), ALG_ECDSA_SHA256);
    assert_eq!(hex::encode(key.key_id()), "c0d23d6a");
    assert_eq!(key.to_string(), rekor_vkey(), "one spelling per key");
    let opened = open_note(REKOR_NOTE, std::slice::from_ref(&key)).expect("verifies");
    assert_eq!(opened.verified, vec![key]);
    let pixel = VerifierKey::parse(PIXEL_VKEY).expect("Pixel key");
    assert_eq!(pixel.to_string(), PIXEL_VKEY);
}

#[test]
fn the_key_id_covers_the_key_not_the_name() {
    // Go's rule for 0x02: the same id under another name; the signature still does not
    // count for a key of another name.
    let other = VerifierKey::parse(&format!("bananas.sigstore.dev+c0d23d6a+{REKOR_MATERIAL}"))
        .expect("same id, other name");
    assert_eq!(
        open_note(REKOR_NOTE, &[other]),
        Err(NoteError::UnverifiedNote)
    );
}

#[test]
fn tampered_text_or_signature_is_refused() {
    let key = VerifierKey::parse(&rekor_vkey()).expect("key");
    let text = REKOR_NOTE.replace("798034", "798035");
    assert!(matches!(
        open_note(&text, std::slice::from_ref(&key)),
        Err(NoteError::InvalidSignature { .. })
    ));
    let (body, line) = REKOR_NOTE.split_once("\n\n").expect("split");
    let blob = B64
        .decode(line.trim_end().rsplit_once(' ').expect("sig").1)
        .expect("b64");
    for i in 4..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let note = format!(
            "{body}\n\n\u{2014} rekor.sigstore.dev {}\n",
            B64.encode(&bad)
        );
        assert!(
            open_note(&note, std::slice::from_ref(&key)).is_err(),
            "byte {i} flipped"
        );
    }
}

#[test]
fn malformed_keys_are_refused() {
    let wrong_id = format!("rekor.sigstore.dev+00000000+{REKOR_MATERIAL}");
    assert!(matches!(
        VerifierKey::parse(&wrong_id),
        Err(NoteError::KeyIdMismatch { .. })
    ));
    assert!(matches!(
        VerifierKey::parse("k+12345678+AgEB"),
        Err(NoteError::MalformedKey(_))
    ));
    assert_eq!(
        VerifierKey::parse("k+12345678+AwEB"),
        Err(NoteError::UnsupportedAlgorithm(3))
    );
    // An Ed25519 public key's SPKI under type 0x02.
    let mut ed = vec![0x02];
    ed.extend_from_slice(&hex::decode("302a300506032b6570032100").expect("hex"));
    ed.extend_from_slice(&[9u8; 32]);
    assert!(VerifierKey::new_ecdsa_p256("k", &ed[1..]).is_err());
    // The same P-256 key with a compressed point: valid SPKI, but a second spelling.
    let signing = SigningKey::from_slice(&[7u8; 32]).expect("scalar");
    let point = signing.verifying_key().to_sec1_point(true);
    let mut compressed =
        hex::decode("3039301306072a8648ce3d020106082a8648ce3d030107032200").expect("hex");
    compressed.extend_from_slice(point.as_bytes());
    assert!(matches!(
        VerifierKey::new_ecdsa_p256("k", &compressed),
        Err(NoteError::MalformedKey(_))
    ));
    // Trailing bytes after the DER.
    let mut der = signing
        .verifying_key()
        .to_public_key_der()
        .expect("der")
        .as_bytes()
        .to_vec();
    der.push(0);
    assert!(VerifierKey::new_ecdsa_p256("k", &der).is_err());
}

fn local_key() -> (SigningKey, VerifierKey) {
    let signing = SigningKey::from_slice(&[42u8; 32]).expect("scalar");
    let der = signing.verifying_key().to_public_key_der().expect("der");
    let key = VerifierKey::new_ecdsa_p256("example.com/log", der.as_bytes()).expect("key");
    (signing, key)
}

fn note_with(text: &str, key: &VerifierKey, sig: &[u8]) -> String {
    let line = NoteSignature {
        name: key.name().to_string(),
        key_id: key.key_id(),
        signature: sig.to_vec(),
    };
    format!("{text}\n{}", line.to_line())
}

#[test]
fn a_checkpoint_signed_with_a_local_key_opens() {
    let (signing, key) = local_key();
    let cp = Checkpoint {
        origin: "example.com/log".into(),
        size: 12,
        root: [3u8; 32],
        extensions: vec![],
    };
    let text = cp.to_text();
    let sig: Signature = signing.sign(text.as_bytes());
    let der = sig.to_der();
    assert!(key.verify(text.as_bytes(), der.as_bytes()));
    let (opened, _) = open_checkpoint(
        &note_with(&text, &key, der.as_bytes()),
        std::slice::from_ref(&key),
    )
    .expect("opens");
    assert_eq!(opened, cp);
    // The fixed-width form (JOSE, Azure) converts to the same DER; it is not itself accepted.
    assert_eq!(
        der_from_fixed(&sig.to_bytes()).expect("r||s"),
        der.as_bytes()
    );
    assert!(!key.verify(text.as_bytes(), &sig.to_bytes()));
    // A JWK's point gives the same SPKI.
    let point = signing.verifying_key().to_sec1_point(false);
    assert_eq!(
        spki_der_from_sec1(point.as_bytes()).expect("spki"),
        key.public_key()
    );
    let reparsed = VerifierKey::parse(&key.to_string()).expect("round trip");
    assert_eq!(reparsed, key);
}

#[test]
fn high_s_is_accepted_as_go_does_and_non_canonical_der_is_not() {
    let (signing, key) = local_key();
    let msg = b"example.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    let sig: Signature = signing.sign(msg);
    let flipped = Signature::from_scalars(sig.r(), -sig.s()).expect("n - s");
    assert!(key.verify(msg, sig.to_der().as_bytes()));
    assert!(
        key.verify(msg, flipped.to_der().as_bytes()),
        "(r, n - s) verifies, as with Go's ecdsa.VerifyASN1"
    );
    let der = sig.to_der().as_bytes().to_vec();
    // A trailing byte; a longer outer length; r padded with a needless zero byte.
    let mut trailing = der.clone();
    trailing.push(0);
    assert!(!key.verify(msg, &trailing));
    let mut long_form = vec![0x30, 0x81, der[1]];
    long_form.extend_from_slice(&der[2..]);
    assert!(!key.verify(msg, &long_form));
    let r_len = usize::from(der[3]);
    let mut padded = vec![0x30, der[1] + 1, 0x02, der[3] + 1, 0x00];
    padded.extend_from_slice(&der[4..4 + r_len]);
    padded.extend_from_slice(&der[4 + r_len..]);
    assert!(!key.verify(msg, &padded));
    assert!(!key.verify(msg, &[]));
}
