//! Cosignatures and add-checkpoint bodies against the examples of c2sp.org/tlog-cosignature
//! and c2sp.org/tlog-witness, and vectors of transparency-dev/formats (Go).

use auditlog_formats::cosignature::{
    attach, cosigned_message, key_id, parse_response, parse_size_body, valid_cosignatures,
    AddCheckpoint, CosignatureError, WitnessKey, WitnessSigner, ALG_COSIGNATURE_V1,
    PROOF_LINES_MAX,
};
use auditlog_formats::note::{parse_note, parse_signature_line, sign_note, NoteSigner};

/// A native 0x04 vkey from transparency-dev/formats note/note_cosigv1_test.go.
const REMORA: &str = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
/// A plain Ed25519 (0x01) vkey from the same test: Go converts it; we refuse it.
const TEST_ED25519: &str = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";

const SPEC_CHECKPOINT: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

const SPEC_REQUEST: &str = "old 20852014\n\
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
\n\
example.com/behind-the-sofa\n\
20852163\n\
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
\n\
\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n";

const SPEC_RESPONSE: &str = "\u{2014} witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n\
\u{2014} witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n\
\u{2014} witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n";

fn witness(name: &str, seed: u8) -> WitnessSigner {
    WitnessSigner::from_seed(name, [seed; 32]).expect("witness key")
}

#[test]
fn go_native_cosignature_vkey_parses_and_round_trips() {
    let k = WitnessKey::parse(REMORA).expect("remora");
    assert_eq!(k.name(), "remora.n621.de");
    assert_eq!(k.key_id(), [0xda, 0x77, 0xad, 0xe7]);
    assert_eq!(key_id(k.name(), k.public_key()), k.key_id());
    assert_eq!(k.to_string(), REMORA);
}

#[test]
fn vkeys_of_other_types_and_malformed_vkeys_are_refused() {
    assert_eq!(
        WitnessKey::parse(TEST_ED25519),
        Err(CosignatureError::UnsupportedAlgorithm(0x01))
    );
    for bad in [
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
        "remora.n621.de+DA77ADE7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmt",
        "remora.n621.de+da77ade7+",
        "remora n621+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    ] {
        assert!(WitnessKey::parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        WitnessKey::parse("remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"),
        Err(CosignatureError::KeyIdMismatch { .. })
    ));
    // The same name and key under another name: another id.
    let k = WitnessKey::parse(REMORA).expect("remora");
    let other = WitnessKey::new("remora.example", *k.public_key()).expect("key");
    assert_ne!(other.key_id(), k.key_id());
}

#[test]
fn signed_message_is_the_spec_example() {
    assert_eq!(
        cosigned_message(SPEC_CHECKPOINT, 1679315147),
        format!("cosignature/v1\ntime 1679315147\n{SPEC_CHECKPOINT}")
    );
    assert_eq!(ALG_COSIGNATURE_V1, 4);
}

#[test]
fn example_cosignature_lines_have_the_timestamped_layout() {
    // c2sp.org/tlog-cosignature's example line; the timestamp is its message's 1679315147.
    let line = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
    let sig = parse_signature_line(line, 1).expect("line");
    assert_eq!(sig.signature.len(), 72);
    assert_eq!(
        u64::from_be_bytes(sig.signature[..8].try_into().unwrap()),
        1679315147
    );
    // transparency-dev/formats TestCoSigV1Timestamp.
    let go = "\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==";
    let sig = parse_signature_line(go, 1).expect("line");
    assert_eq!(
        u64::from_be_bytes(sig.signature[..8].try_into().unwrap()),
        1727964367
    );
}

#[test]
fn cosignature_verifies_over_exactly_its_checkpoint() {
    let w = witness("witness.example/w1", 1);
    let key = w.witness_key().clone();
    let sig = w.cosign(SPEC_CHECKPOINT, 1679315147);
    assert_eq!(sig.key_id, key.key_id());
    assert_eq!(key.verify(SPEC_CHECKPOINT, &sig), Ok(1679315147));
    // Another body, another time, another key, or a plain Ed25519 note key: not valid.
    let other_body = SPEC_CHECKPOINT.replace("20852163", "20852164");
    assert!(key.verify(&other_body, &sig).is_err());
    let mut later = sig.clone();
    later.signature[7] ^= 1;
    assert!(matches!(
        key.verify(SPEC_CHECKPOINT, &later),
        Err(CosignatureError::Invalid { .. })
    ));
    let stranger = witness("witness.example/w1", 2);
    assert!(stranger
        .witness_key()
        .verify(SPEC_CHECKPOINT, &sig)
        .is_err());
    let mut short = sig.clone();
    short.signature.truncate(64);
    assert!(matches!(
        key.verify(SPEC_CHECKPOINT, &short),
        Err(CosignatureError::Malformed { .. })
    ));
    let mut future = w.cosign(SPEC_CHECKPOINT, 5);
    future.signature[0] = 0x80;
    assert!(matches!(
        key.verify(SPEC_CHECKPOINT, &future),
        Err(CosignatureError::Malformed { .. })
    ));
    // The note key of the same seed signs plain notes under id type 0x01: not a cosignature.
    let note_key = NoteSigner::from_seed("witness.example/w1", [1; 32]).expect("key");
    let plain = sign_note(SPEC_CHECKPOINT, &[&note_key]).expect("note");
    let (_, sigs) = parse_note(&plain).expect("parse");
    assert!(valid_cosignatures(SPEC_CHECKPOINT, &sigs, &[key]).is_empty());
}

#[test]
fn spec_response_parses_into_its_three_lines() {
    let sigs = parse_response(SPEC_RESPONSE.as_bytes()).expect("response");
    let names: Vec<&str> = sigs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "witness.example/w1",
            "witness.example/w1",
            "witness.example/w2"
        ]
    );
    assert!(sigs.iter().all(|s| s.signature.len() == 72));
}

#[test]
fn malformed_responses_are_refused() {
    let one = SPEC_RESPONSE.lines().next().unwrap();
    for bad in [
        String::new(),
        "\n".to_string(),
        one.to_string(),
        format!("{one}\n\n"),
        format!("{one}\nhello\n"),
        format!("{one}\r\n"),
        "\u{2014} w !!!\n".to_string(),
        format!("{one}\n").repeat(17),
    ] {
        assert!(parse_response(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert!(parse_response(&[0xff, b'\n']).is_err());
}

#[test]
fn valid_cosignatures_count_each_listed_witness_once() {
    let (a, b, c) = (witness("w/a", 1), witness("w/b", 2), witness("w/c", 3));
    let keys = [
        a.witness_key().clone(),
        b.witness_key().clone(),
        c.witness_key().clone(),
    ];
    let forged = {
        let mut s = c.cosign(SPEC_CHECKPOINT, 9);
        s.signature[20] ^= 1;
        s
    };
    let sigs = [
        a.cosign(SPEC_CHECKPOINT, 7),
        a.cosign(SPEC_CHECKPOINT, 8),
        b.cosign(
            "other\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            7,
        ),
        forged,
        witness("w/d", 4).cosign(SPEC_CHECKPOINT, 7),
    ];
    let valid = valid_cosignatures(SPEC_CHECKPOINT, &sigs, &keys);
    assert_eq!(valid.len(), 1);
    assert_eq!(valid[0].witness, 0);
    assert_eq!(valid[0].timestamp, 7);
    // A key listed twice is still one witness.
    let twice = [keys[0].clone(), keys[0].clone()];
    assert_eq!(valid_cosignatures(SPEC_CHECKPOINT, &sigs, &twice).len(), 1);
}

#[test]
fn attached_cosignatures_open_as_unknown_signatures_of_the_note() {
    let log = NoteSigner::from_seed("example.com/log", [9; 32]).expect("key");
    let note = sign_note(SPEC_CHECKPOINT, &[&log]).expect("note");
    let w = witness("w/a", 1);
    let cosigned = attach(&note, &[w.cosign(SPEC_CHECKPOINT, 3)]);
    let opened = auditlog_formats::note::open_note(&cosigned, &[log.verifier_key()]).expect("open");
    assert_eq!(opened.unverified.len(), 1);
    let valid = valid_cosignatures(&opened.text, &opened.unverified, &[w.witness_key().clone()]);
    assert_eq!(valid.len(), 1);
}

#[test]
fn spec_request_parses_and_round_trips() {
    let req = AddCheckpoint::parse(SPEC_REQUEST.as_bytes()).expect("request");
    assert_eq!(req.old_size, 20852014);
    assert_eq!(req.proof.len(), 4);
    assert!(req
        .note
        .starts_with("example.com/behind-the-sofa\n20852163\n"));
    assert_eq!(req.to_body(), SPEC_REQUEST);
    let empty = AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        note: req.note.clone(),
    };
    assert!(empty.to_body().starts_with("old 0\n\nexample.com/"));
    assert_eq!(AddCheckpoint::parse(empty.to_body().as_bytes()), Ok(empty));
}

#[test]
fn malformed_requests_are_refused() {
    let note = SPEC_REQUEST.split_once("\n\n").unwrap().1;
    let h = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n";
    for (bad, line) in [
        format!("old 01\n\n{note}"),
        format!("old -1\n\n{note}"),
        format!("old 1 \n\n{note}"),
        format!("Old 1\n\n{note}"),
        format!("old 18446744073709551616\n\n{note}"),
        format!("old 1\n{h}"),
        format!("old 1\n{h}\n"),
        format!("old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw\n\n{note}"),
        format!("old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw==\n\n{note}"),
        format!("old 1\nAAAA\n\n{note}"),
        format!("old 1\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkax=\n\n{note}"),
        format!("old 1\n{}\n{note}", h.repeat(PROOF_LINES_MAX + 1)),
    ]
    .iter()
    .zip(1..)
    {
        assert!(
            AddCheckpoint::parse(bad.as_bytes()).is_err(),
            "case {line}: {bad:?}"
        );
    }
    let max = format!("old 1\n{}\n{note}", h.repeat(PROOF_LINES_MAX));
    assert_eq!(
        AddCheckpoint::parse(max.as_bytes())
            .expect("63 lines")
            .proof
            .len(),
        63
    );
}

#[test]
fn size_bodies_parse_strictly() {
    assert_eq!(parse_size_body(b"0\n"), Some(0));
    assert_eq!(parse_size_body(b"20852014\n"), Some(20852014));
    for bad in [
        &b"20852014"[..],
        b"020\n",
        b"\n",
        b"1 \n",
        b"-1\n",
        b"1\n\n",
    ] {
        assert_eq!(parse_size_body(bad), None, "{bad:?}");
    }
}
