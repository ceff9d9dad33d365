//! Witness cosignatures (<https://c2sp.org/tlog-cosignature>, Ed25519 type 0x04) and the
//! bodies of the witness protocol's `add-checkpoint` call (<https://c2sp.org/tlog-witness>).
//!
//! A cosignature is one more signature line on a checkpoint note, by a witness key:
//! `— <witness name> base64(key_id || timestamp:u64be || ed25519_sig[64])`, with
//! `key_id = SHA-256(name || 0x0A || 0x04 || public_key)[:4]`, over the message
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint body (the note text).
//! The witness states that, at that time, this was the largest consistent tree it had seen
//! for the origin. ML-DSA-44 cosignatures (type 0x06) are not supported: their lines carry
//! a different key id, so they are ignored as signatures by unknown keys.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::hash::Hash;
use crate::note::{parse_signature_line, NoteError, NoteSignature, NoteSigner, VerifierKey};

/// Signature type byte of timestamped Ed25519 cosignatures, in key ids and verifier keys.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// `timestamp:u64be || ed25519 signature`: the signature of a cosignature line, after the id.
pub const COSIGNATURE_BYTES: usize = 8 + 64;
/// Most consistency proof lines an `add-checkpoint` body may carry (the spec's bound).
pub const PROOF_LINES_MAX: usize = 63;
/// Most signature lines accepted in a witness's answer; bounds a hostile witness's work.
pub const RESPONSE_LINES_MAX: usize = 16;
/// The `Content-Type` of a 409 answer, whose body is the witness's latest cosigned size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CosignatureError {
    #[error("witness key: {0}")]
    MalformedKey(&'static str),
    #[error("witness key: invalid key name {0:?}")]
    InvalidKeyName(String),
    #[error("witness key: type byte 0x{0:02x} is not 0x04 (timestamped Ed25519 cosignature)")]
    UnsupportedAlgorithm(u8),
    #[error("witness key: key id {found} does not match the key (computed {computed})")]
    KeyIdMismatch { found: String, computed: String },
    #[error("cosignature by {name}: {reason}")]
    Malformed { name: String, reason: &'static str },
    #[error("cosignature by {name}: signature does not verify over this checkpoint")]
    Invalid { name: String },
    #[error("witness response: {0}")]
    MalformedResponse(String),
    #[error("add-checkpoint body: line {line}: {reason}")]
    MalformedRequest { line: usize, reason: &'static str },
    #[error("add-checkpoint body: {0}")]
    Note(#[from] NoteError),
    #[error("witness policy: {have} of the {need} cosignatures required ({missing})")]
    PolicyNotMet {
        have: usize,
        need: usize,
        missing: String,
    },
}

/// `SHA-256(name || 0x0A || 0x04 || public_key)[..4]`: a cosigner key's id.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_COSIGNATURE_V1]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The bytes an Ed25519 v1 cosignature signs: two header lines, then the checkpoint body.
pub fn cosigned_message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}")
}

/// A witness's public key: `name+hex8(key_id)+base64(0x04 || ed25519_public_key)`.
///
/// The Ed25519 key is held as a note [`VerifierKey`] of the same name: its checks (valid
/// name, canonical point of full order) and its strict verification are the ones every log
/// key gets; only the id (type 0x04) and the signed message differ. Fields are private so
/// every value passed [`WitnessKey::new`]'s checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    ed25519: VerifierKey,
    key_id: [u8; 4],
}

impl WitnessKey {
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<WitnessKey, CosignatureError> {
        let ed25519 = VerifierKey::new(name, public_key).map_err(|e| match e {
            NoteError::InvalidKeyName(n) => CosignatureError::InvalidKeyName(n),
            NoteError::MalformedKey(why) => CosignatureError::MalformedKey(why),
            _ => CosignatureError::MalformedKey("not an Ed25519 public key"),
        })?;
        Ok(WitnessKey {
            key_id: key_id(name, &public_key),
            ed25519,
        })
    }

    /// Parses a vkey of signature type 0x04. A plain Ed25519 vkey (0x01) is refused: the
    /// same key under another type byte has another id, and naming the type keeps one
    /// spelling per witness key.
    pub fn parse(s: &str) -> Result<WitnessKey, CosignatureError> {
        let bad = CosignatureError::MalformedKey;
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name+keyid+keydata"));
        };
        if id_hex.len() != 8
            || !id_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad("key id is not 8 lowercase hex digits"));
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id)
            .map_err(|_| bad("key id is not 8 lowercase hex digits"))?;
        let material = B64
            .decode(key64)
            .map_err(|_| bad("key data is not valid base64"))?;
        let Some((&alg, key)) = material.split_first() else {
            return Err(bad("key data is empty"));
        };
        if alg != ALG_COSIGNATURE_V1 {
            return Err(CosignatureError::UnsupportedAlgorithm(alg));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("key data is not 1 + 32 bytes"))?;
        let k = WitnessKey::new(name, key)?;
        if k.key_id != id {
            return Err(CosignatureError::KeyIdMismatch {
                found: hex::encode(id),
                computed: hex::encode(k.key_id),
            });
        }
        Ok(k)
    }

    pub fn name(&self) -> &str {
        self.ed25519.name()
    }

    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    pub fn public_key(&self) -> &[u8; 32] {
        self.ed25519
            .ed25519_public_key()
            .expect("a witness key is built from an Ed25519 key")
    }

    /// Whether a signature line is by this key (name and id); says nothing of validity.
    pub fn names(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name() && sig.key_id == self.key_id
    }

    /// Verifies `sig` as this key's cosignature over `checkpoint_text` (strict RFC 8032),
    /// returning its timestamp.
    pub fn verify(
        &self,
        checkpoint_text: &str,
        sig: &NoteSignature,
    ) -> Result<u64, CosignatureError> {
        let malformed = |reason| CosignatureError::Malformed {
            name: sig.name.clone(),
            reason,
        };
        if !self.names(sig) {
            return Err(malformed("not by this witness key (name or key id differ)"));
        }
        let bytes: &[u8; COSIGNATURE_BYTES] = sig
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| malformed("not 8 + 64 bytes"))?;
        let (ts, ed) = bytes.split_at(8);
        let timestamp = crate::be_u64(ts);
        if timestamp > i64::MAX as u64 {
            return Err(malformed("timestamp over 2^63 - 1"));
        }
        let ed: &[u8; 64] = ed.try_into().expect("split at 8 of 72");
        let msg = cosigned_message(checkpoint_text, timestamp);
        if !self.ed25519.verify(msg.as_bytes(), ed) {
            return Err(CosignatureError::Invalid {
                name: sig.name.clone(),
            });
        }
        Ok(timestamp)
    }
}

impl fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut material = [0u8; 33];
        material[0] = ALG_COSIGNATURE_V1;
        material[1..].copy_from_slice(self.public_key());
        write!(
            f,
            "{}+{}+{}",
            self.name(),
            hex::encode(self.key_id),
            B64.encode(material)
        )
    }
}

impl FromStr for WitnessKey {
    type Err = CosignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WitnessKey::parse(s)
    }
}

/// A witness's private key; signs cosignatures (the test witness and tests use it). The
/// Ed25519 signing is a note [`NoteSigner`]'s (whose `Debug` shows no secret).
#[derive(Clone, Debug)]
pub struct WitnessSigner {
    key: WitnessKey,
    ed25519: NoteSigner,
}

impl WitnessSigner {
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<WitnessSigner, CosignatureError> {
        let ed25519 = NoteSigner::from_seed(name, seed)
            .map_err(|_| CosignatureError::InvalidKeyName(name.to_owned()))?;
        let key = WitnessKey::new(name, ed25519.public_key())?;
        Ok(WitnessSigner { key, ed25519 })
    }

    pub fn witness_key(&self) -> &WitnessKey {
        &self.key
    }

    /// The cosignature line over `checkpoint_text` at `timestamp` (POSIX seconds).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> NoteSignature {
        assert!(
            timestamp <= i64::MAX as u64,
            "cosignature timestamp over 2^63 - 1"
        );
        let msg = cosigned_message(checkpoint_text, timestamp);
        let mut signature = Vec::with_capacity(COSIGNATURE_BYTES);
        signature.extend_from_slice(&timestamp.to_be_bytes());
        signature.extend_from_slice(&self.ed25519.sign(msg.as_bytes()));
        NoteSignature {
            name: self.key.name().to_string(),
            key_id: self.key.key_id,
            signature,
        }
    }
}

/// Parses a witness's 200 answer: one or more note signature lines, each ending in a
/// newline. Nothing is verified here; lines by unknown keys are the caller's to ignore.
pub fn parse_response(body: &[u8]) -> Result<Vec<NoteSignature>, CosignatureError> {
    let bad = |s: String| CosignatureError::MalformedResponse(s);
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
    let Some(text) = text.strip_suffix('\n') else {
        return Err(bad("empty, or the last line has no newline".into()));
    };
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if i >= RESPONSE_LINES_MAX {
            return Err(bad(format!("more than {RESPONSE_LINES_MAX} lines")));
        }
        if line.chars().any(|c| c < ' ') {
            return Err(bad(format!("line {}: control character", i + 1)));
        }
        out.push(parse_signature_line(line, i + 1).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// A cosignature line that verified, by the witness at `witness` in the list checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidCosignature {
    pub witness: usize,
    pub line: NoteSignature,
    pub timestamp: u64,
}

/// The valid cosignatures in `sigs` by keys in `witnesses` over `checkpoint_text`: for each
/// distinct witness (counted once however often it is listed or signed) the first line that
/// verifies. Lines by other keys are ignored; a witness's invalid line counts for nothing.
pub fn valid_cosignatures(
    checkpoint_text: &str,
    sigs: &[NoteSignature],
    witnesses: &[WitnessKey],
) -> Vec<ValidCosignature> {
    let mut out: Vec<ValidCosignature> = Vec::new();
    for (i, w) in witnesses.iter().enumerate() {
        if witnesses[..i].contains(w) {
            continue;
        }
        let found = sigs
            .iter()
            .filter(|s| w.names(s))
            .find_map(|s| Some((s, w.verify(checkpoint_text, s).ok()?)));
        if let Some((line, timestamp)) = found {
            out.push(ValidCosignature {
                witness: i,
                line: line.clone(),
                timestamp,
            });
        }
    }
    out
}

/// Checks that a signed checkpoint `note` carries valid cosignatures from at least `need`
/// distinct `witnesses`; the error names each listed witness that did not validly cosign,
/// and why (no line by its name and key id, or a line that does not verify).
pub fn require_cosignatures(
    note: &str,
    witnesses: &[WitnessKey],
    need: usize,
) -> Result<Vec<ValidCosignature>, CosignatureError> {
    let (text, sigs) = crate::note::parse_note(note)?;
    let valid = valid_cosignatures(&text, &sigs, witnesses);
    if valid.len() >= need {
        return Ok(valid);
    }
    let mut missing: Vec<String> = Vec::new();
    for (i, w) in witnesses.iter().enumerate() {
        if witnesses[..i].contains(w) || valid.iter().any(|v| v.witness == i) {
            continue;
        }
        let why = match sigs.iter().find(|s| w.names(s)) {
            None => "no cosignature".to_string(),
            Some(s) => match w.verify(&text, s) {
                Err(e) => e.to_string(),
                Ok(_) => unreachable!("a verifying line is counted as valid"),
            },
        };
        missing.push(format!("{}: {why}", w.name()));
    }
    Err(CosignatureError::PolicyNotMet {
        have: valid.len(),
        need,
        missing: missing.join("; "),
    })
}

/// The body of `POST <prefix>/add-checkpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size the submitter believes the witness last cosigned (0: none).
    pub old_size: u64,
    /// RFC 6962 consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, signature lines included.
    pub note: String,
}

fn req_err(line: usize, reason: &'static str) -> CosignatureError {
    CosignatureError::MalformedRequest { line, reason }
}

impl AddCheckpoint {
    /// `old <n>\n`, one base64 hash per line, an empty line, the note.
    pub fn to_body(&self) -> String {
        assert!(self.proof.len() <= PROOF_LINES_MAX, "proof over 63 lines");
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.note);
        s
    }

    /// Parses a body strictly. The note is returned unparsed: the witness opens it with the
    /// log's keys (403 and 404 depend on which keys it knows).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, CosignatureError> {
        let text = std::str::from_utf8(body).map_err(|_| req_err(1, "not UTF-8"))?;
        let (old_line, mut rest) = text
            .split_once('\n')
            .ok_or(req_err(1, "no old size line"))?;
        let old = old_line
            .strip_prefix("old ")
            .ok_or(req_err(1, "does not start with \"old \""))?;
        let old_size = parse_decimal(old).ok_or(req_err(1, "old size is not a decimal number"))?;
        let mut proof = Vec::new();
        let mut line = 1;
        loop {
            line += 1;
            let (l, after) = rest
                .split_once('\n')
                .ok_or(req_err(line, "no empty line before the checkpoint"))?;
            rest = after;
            if l.is_empty() {
                break;
            }
            if proof.len() == PROOF_LINES_MAX {
                return Err(req_err(line, "more than 63 proof lines"));
            }
            let bytes = B64
                .decode(l)
                .map_err(|_| req_err(line, "proof line is not base64"))?;
            let h: Hash = bytes
                .as_slice()
                .try_into()
                .map_err(|_| req_err(line, "proof line is not a 32-byte hash"))?;
            // One spelling per body: base64 with stray padding bits would decode too.
            if B64.encode(h) != l {
                return Err(req_err(line, "proof line is not canonical base64"));
            }
            proof.push(h);
        }
        if rest.is_empty() {
            return Err(req_err(line + 1, "no checkpoint"));
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note: rest.to_owned(),
        })
    }
}

/// An ASCII decimal without leading zeros (`0` itself allowed), fitting in 64 bits.
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Parses a 409 answer's body: the witness's latest cosigned size and a newline.
pub fn parse_size_body(body: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(body).ok()?.strip_suffix('\n')?;
    parse_decimal(s)
}

/// Appends cosignature lines to a signed note (after its own signatures).
pub fn attach(note: &str, cosignatures: &[NoteSignature]) -> String {
    debug_assert!(note.ends_with('\n'));
    let mut out = String::with_capacity(note.len() + cosignatures.len() * 130);
    out.push_str(note);
    for c in cosignatures {
        out.push_str(&c.to_line());
    }
    out
}
