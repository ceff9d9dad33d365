//! C2SP signed notes (<https://c2sp.org/signed-note>) and tlog checkpoints
//! (<https://c2sp.org/tlog-checkpoint>). Keys are Ed25519 (type 0x01) or, for signers
//! that have no Ed25519 (Azure Key Vault), ECDSA P-256 with SHA-256 (type 0x02, see
//! [`ecdsa`]); private keys, and so [`NoteSigner`], are Ed25519 only.
//!
//! Byte-compatible with Go's `golang.org/x/mod/sumdb/note`: keys, key strings and notes
//! produced by either side are accepted by the other. Where this module is stricter than Go
//! (lowercase-only key ids, canonical base64, duplicate known signatures, control characters
//! in key names, the 1 MiB text limit) the difference only rejects input no honest Go signer
//! emits. The formats are written down in `NOTE-FORMATS.md`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::hash::Hash;

pub mod ecdsa;

pub use ecdsa::ALG_ECDSA_SHA256;

/// Signature type byte of Ed25519 in the key id hash and in key strings.
pub const ALG_ED25519: u8 = 0x01;
/// Signature lines beyond this make a note malformed; bounds the work an attacker can cause.
pub const MAX_SIGNATURES: usize = 100;
/// Largest accepted note text (the part that is signed), in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

const SIG_PREFIX: &str = "\u{2014} ";
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// Everything that can be wrong with a key string, a note or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    #[error("note key: invalid key name {0:?} (must be non-empty, without whitespace, '+' or control characters)")]
    InvalidKeyName(String),
    #[error("note key: {0}")]
    MalformedKey(&'static str),
    #[error("note key: unsupported algorithm byte 0x{0:02x} (supported: 0x01 Ed25519, 0x02 ECDSA P-256)")]
    UnsupportedAlgorithm(u8),
    #[error("note key: key id {found} does not match the key (computed {computed})")]
    KeyIdMismatch { found: String, computed: String },
    #[error("note: not valid UTF-8 (at byte {offset})")]
    NotUtf8 { offset: usize },
    #[error("note: control character U+{code:04X} at byte {offset}")]
    ControlCharacter { code: u32, offset: usize },
    #[error("note: {0}")]
    Malformed(&'static str),
    #[error("note: text is {0} bytes, over the limit of {limit} bytes", limit = MAX_TEXT_BYTES)]
    TextTooLong(usize),
    #[error("note: no signature lines")]
    NoSignatures,
    #[error("note: more than {limit} signatures", limit = MAX_SIGNATURES)]
    TooManySignatures,
    #[error("note: signature line {line}: {reason}")]
    MalformedSignatureLine { line: usize, reason: &'static str },
    #[error("note: more than one signature by key {name}")]
    DuplicateSignature { name: String },
    #[error("note: several different known keys share the name {name} and its key id")]
    AmbiguousKey { name: String },
    #[error("note: invalid signature by known key {name}")]
    InvalidSignature { name: String },
    #[error("note: no signature by a known key")]
    UnverifiedNote,
    #[error("checkpoint: line {line}: {reason}")]
    MalformedCheckpoint { line: usize, reason: &'static str },
}

/// Whether `name` may name a key: non-empty, no Unicode whitespace, no '+'.
///
/// Control characters are refused too (Go allows them), because a note naming such a key
/// could never be parsed: notes forbid control characters.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

/// `SHA-256(name || 0x0A || 0x01 || public_key)[..4]`: the id that, with the name, picks a key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName(name.to_owned()))
    }
}

/// A key string's parts: `name+hex8(id)+base64(alg || material)`, decoded, not checked.
struct KeyString<'a> {
    name: &'a str,
    id: [u8; 4],
    alg: u8,
    material: Vec<u8>,
}

/// Splits `name+hex8+base64` and decodes the id, the algorithm byte and the key material.
fn split_key_string(s: &str) -> Result<KeyString<'_>, NoteError> {
    let (name, rest) = s
        .split_once('+')
        .ok_or(NoteError::MalformedKey("expected name+keyid+keydata"))?;
    let (id_hex, key64) = rest
        .split_once('+')
        .ok_or(NoteError::MalformedKey("expected name+keyid+keydata"))?;
    check_name(name)?;
    // Go's ParseUint would take upper case too; Go only writes lower case, and one spelling
    // per key keeps `parse(s).to_string() == s`.
    if id_hex.len() != 8
        || !id_hex
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(NoteError::MalformedKey(
            "key id is not 8 lowercase hex digits",
        ));
    }
    let mut id = [0u8; 4];
    hex::decode_to_slice(id_hex, &mut id)
        .map_err(|_| NoteError::MalformedKey("key id is not 8 lowercase hex digits"))?;
    let mut material = B64
        .decode(key64)
        .map_err(|_| NoteError::MalformedKey("key data is not valid base64"))?;
    if material.is_empty() {
        return Err(NoteError::MalformedKey("key data is empty"));
    }
    let alg = material.remove(0);
    Ok(KeyString {
        name,
        id,
        alg,
        material,
    })
}

/// The 32 bytes of an Ed25519 key string's material (public key or seed).
fn ed25519_material(alg: u8, material: &[u8]) -> Result<[u8; 32], NoteError> {
    if alg != ALG_ED25519 {
        return Err(NoteError::UnsupportedAlgorithm(alg));
    }
    material
        .try_into()
        .map_err(|_| NoteError::MalformedKey("Ed25519 key data is not 1 + 32 bytes"))
}

fn check_id(found: [u8; 4], computed: [u8; 4]) -> Result<(), NoteError> {
    if found == computed {
        Ok(())
    } else {
        Err(NoteError::KeyIdMismatch {
            found: hex::encode(found),
            computed: hex::encode(computed),
        })
    }
}

/// The public half of a verifier key, by algorithm.
#[derive(Clone, Debug)]
enum PublicKey {
    Ed25519 {
        bytes: [u8; 32],
        // Kept decompressed so verifying many notes does not redo the point decoding.
        verifying: VerifyingKey,
    },
    EcdsaP256(ecdsa::EcdsaKey),
}

/// A named public key that verifies note signatures: Ed25519 or ECDSA P-256.
///
/// Fields are private so that every value has passed the checks of [`VerifierKey::new`] or
/// [`VerifierKey::new_ecdsa_p256`]: valid name, canonical key, and `key_id` derived from
/// them by the algorithm's rule.
#[derive(Clone, Debug)]
pub struct VerifierKey {
    name: String,
    key_id: [u8; 4],
    public: PublicKey,
}

impl PartialEq for VerifierKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.key_id == other.key_id
            && self.algorithm() == other.algorithm()
            && self.public_key() == other.public_key()
    }
}

impl Eq for VerifierKey {}

impl std::hash::Hash for VerifierKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.key_id.hash(state);
        self.algorithm().hash(state);
        self.public_key().hash(state);
    }
}

impl VerifierKey {
    /// An Ed25519 verifier for `public_key` under `name`; computes the key id.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<VerifierKey, NoteError> {
        check_name(name)?;
        let verifying = VerifyingKey::from_bytes(&public_key)
            .map_err(|_| NoteError::MalformedKey("public key is not an Ed25519 point"))?;
        // A non-canonical encoding would give one key two ids; a small-order key lets anyone
        // forge signatures under lax verification. Neither comes from a real key generator.
        if verifying.to_edwards().compress().to_bytes() != public_key {
            return Err(NoteError::MalformedKey(
                "public key is not canonically encoded",
            ));
        }
        if verifying.is_weak() {
            return Err(NoteError::MalformedKey("public key has small order"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            public: PublicKey::Ed25519 {
                bytes: public_key,
                verifying,
            },
        })
    }

    /// An ECDSA P-256 verifier for the DER SubjectPublicKeyInfo `spki_der` under `name`;
    /// the key id is the first 4 bytes of SHA-256 of the DER (not of the name).
    pub fn new_ecdsa_p256(name: &str, spki_der: &[u8]) -> Result<VerifierKey, NoteError> {
        check_name(name)?;
        let key = ecdsa::EcdsaKey::from_spki_der(spki_der)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id: key.key_id(),
            public: PublicKey::EcdsaP256(key),
        })
    }

    /// Parses `name+hex8(key_id)+base64(alg || key)`, checking the id against the key:
    /// alg 0x01 with a 32-byte Ed25519 key, or 0x02 with a P-256 SPKI DER.
    pub fn parse(s: &str) -> Result<VerifierKey, NoteError> {
        let k = split_key_string(s)?;
        let key = match k.alg {
            ALG_ECDSA_SHA256 => VerifierKey::new_ecdsa_p256(k.name, &k.material)?,
            alg => VerifierKey::new(k.name, ed25519_material(alg, &k.material)?)?,
        };
        check_id(k.id, key.key_id)?;
        Ok(key)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The signature type byte: [`ALG_ED25519`] or [`ALG_ECDSA_SHA256`].
    pub fn algorithm(&self) -> u8 {
        match self.public {
            PublicKey::Ed25519 { .. } => ALG_ED25519,
            PublicKey::EcdsaP256(_) => ALG_ECDSA_SHA256,
        }
    }

    /// The key material after the type byte: 32 bytes of Ed25519 key, or the SPKI DER.
    pub fn public_key(&self) -> &[u8] {
        match &self.public {
            PublicKey::Ed25519 { bytes, .. } => bytes,
            PublicKey::EcdsaP256(k) => k.spki_der(),
        }
    }

    /// The 32-byte public key of an Ed25519 key; `None` for an ECDSA key.
    pub fn ed25519_public_key(&self) -> Option<&[u8; 32]> {
        match &self.public {
            PublicKey::Ed25519 { bytes, .. } => Some(bytes),
            PublicKey::EcdsaP256(_) => None,
        }
    }

    /// Verifies a note signature (without its key id prefix) over `msg`.
    ///
    /// Ed25519: strict RFC 8032 verification (`verify_strict`) of a 64-byte signature,
    /// rejecting small-order `R` and non-canonical `S`, so one message has no malleated
    /// second valid signature. ECDSA: see [`ecdsa`] (DER only, high S accepted as Go does).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.public {
            PublicKey::Ed25519 { verifying, .. } => <&[u8; 64]>::try_from(sig).is_ok_and(|sig| {
                verifying
                    .verify_strict(msg, &Signature::from_bytes(sig))
                    .is_ok()
            }),
            PublicKey::EcdsaP256(k) => k.verify(msg, sig),
        }
    }

    fn matches(&self, name: &str, id: [u8; 4]) -> bool {
        self.name == name && self.key_id == id
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut material = Vec::with_capacity(1 + self.public_key().len());
        material.push(self.algorithm());
        material.extend_from_slice(self.public_key());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(material)
        )
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VerifierKey::parse(s)
    }
}

/// A named Ed25519 private key that signs notes.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: [u8; 4],
    signing_key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    // Hand-written so the secret seed can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte RFC 8032 seed; the caller draws it from the OS RNG.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let signing_key = SigningKey::from_bytes(&seed);
        let key_id = key_id(name, signing_key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id,
            signing_key,
        })
    }

    /// Parses `PRIVATE+KEY+name+hex8(key_id)+base64(0x01 || seed)`. The id names the
    /// *public* key, so it is checked after deriving that key from the seed.
    pub fn parse_private(s: &str) -> Result<NoteSigner, NoteError> {
        let rest = s
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or(NoteError::MalformedKey(
                "private key does not start with PRIVATE+KEY+",
            ))?;
        let k = split_key_string(rest)?;
        let signer = NoteSigner::from_seed(k.name, ed25519_material(k.alg, &k.material)?)?;
        check_id(k.id, signer.key_id)?;
        Ok(signer)
    }

    /// The secret key string; whoever holds it can sign as this key.
    pub fn to_private_string(&self) -> String {
        let mut material = [0u8; 33];
        material[0] = ALG_ED25519;
        material[1..].copy_from_slice(self.signing_key.as_bytes());
        format!(
            "{PRIVATE_PREFIX}{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(material)
        )
    }

    pub fn verifier_key(&self) -> VerifierKey {
        let verifying = self.signing_key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            public: PublicKey::Ed25519 {
                bytes: verifying.to_bytes(),
                verifying,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// Deterministic RFC 8032 Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing_key.sign(msg).to_bytes()
    }
}

/// One signature line of a note, decoded but not verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    /// The signature proper, without the 4-byte key id prefix.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line as it appears in a note, with its trailing newline.
    pub fn to_line(&self) -> String {
        let mut blob = Vec::with_capacity(4 + self.signature.len());
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// A note whose signatures were checked against a set of known keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Known keys whose signatures verified, in signature-line order.
    pub verified: Vec<VerifierKey>,
    /// Signatures by keys not in the known set; ignored, kept for diagnostics and re-signing.
    pub unverified: Vec<NoteSignature>,
}

/// Checks that `msg` is UTF-8 and returns it as a `&str` for [`parse_note`]/[`open_note`].
pub fn note_from_bytes(msg: &[u8]) -> Result<&str, NoteError> {
    std::str::from_utf8(msg).map_err(|e| NoteError::NotUtf8 {
        offset: e.valid_up_to(),
    })
}

fn check_no_control(s: &str) -> Result<(), NoteError> {
    match s.char_indices().find(|&(_, c)| c < ' ' && c != '\n') {
        Some((offset, c)) => Err(NoteError::ControlCharacter {
            code: u32::from(c),
            offset,
        }),
        None => Ok(()),
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(NoteError::TextTooLong(text.len()));
    }
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text does not end with a newline"));
    }
    check_no_control(text)
}

/// Decodes one signature line (without its newline); `n` is its number, for errors.
pub fn parse_signature_line(line: &str, n: usize) -> Result<NoteSignature, NoteError> {
    let bad = |reason| NoteError::MalformedSignatureLine { line: n, reason };
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(bad("does not start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(bad("no space between key name and signature"))?;
    if !is_valid_key_name(name) {
        return Err(bad("invalid key name"));
    }
    if b64.is_empty() {
        return Err(bad("empty signature"));
    }
    let blob = B64.decode(b64).map_err(|_| bad("bad base64"))?;
    if blob.len() < 5 {
        return Err(bad("signature shorter than 5 bytes"));
    }
    let (id, signature) = blob.split_at(4);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: [id[0], id[1], id[2], id[3]],
        signature: signature.to_vec(),
    })
}

/// Splits a signed note into its text and signature lines without verifying anything.
///
/// The text is everything up to and including the newline before the *last* blank line, so
/// the text may itself contain blank lines (signature lines never contain one).
pub fn parse_note(msg: &str) -> Result<(String, Vec<NoteSignature>), NoteError> {
    check_no_control(msg)?;
    let split = msg
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    if text.len() > MAX_TEXT_BYTES {
        return Err(NoteError::TextTooLong(text.len()));
    }
    if sigs.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::Malformed("last signature line has no newline"));
    };
    let mut out = Vec::new();
    for (i, line) in sigs.split('\n').enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        out.push(parse_signature_line(line, i + 1)?);
    }
    Ok((text.to_owned(), out))
}

/// Parses `msg` and verifies it against `known`, with the semantics of Go's `note.Open`.
///
/// A signature counts as by a known key only if both its name and key id match; all others
/// are ignored (listed in `unverified`, identical lines once). A known key's signature that
/// fails to verify rejects the whole note, as does a second signature by the same known key
/// (Go skips it silently; no honest signer writes one). At least one must verify.
pub fn open_note(msg: &str, known: &[VerifierKey]) -> Result<OpenedNote, NoteError> {
    let (text, sigs) = parse_note(msg)?;
    let mut verified: Vec<VerifierKey> = Vec::new();
    let mut unverified: Vec<NoteSignature> = Vec::new();
    for sig in sigs {
        let mut candidates = known.iter().filter(|k| k.matches(&sig.name, sig.key_id));
        let Some(key) = candidates.next() else {
            if !unverified.contains(&sig) {
                unverified.push(sig);
            }
            continue;
        };
        if candidates.any(|k| k.public_key() != key.public_key()) {
            return Err(NoteError::AmbiguousKey { name: sig.name });
        }
        if verified.iter().any(|v| v.matches(&sig.name, sig.key_id)) {
            return Err(NoteError::DuplicateSignature { name: sig.name });
        }
        if !key.verify(text.as_bytes(), &sig.signature) {
            return Err(NoteError::InvalidSignature { name: sig.name });
        }
        verified.push(key.clone());
    }
    if verified.is_empty() {
        return Err(NoteError::UnverifiedNote);
    }
    Ok(OpenedNote {
        text,
        verified,
        unverified,
    })
}

/// Signs `text` (which must end in a newline) with each signer, in order.
///
/// Refuses anything [`parse_note`] would refuse, so every note this returns can be opened.
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    check_text(text)?;
    if signers.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    if signers.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures);
    }
    let mut out = String::with_capacity(text.len() + 1 + signers.len() * 128);
    out.push_str(text);
    out.push('\n');
    for (i, s) in signers.iter().enumerate() {
        if signers[..i]
            .iter()
            .any(|p| p.name == s.name && p.key_id == s.key_id)
        {
            return Err(NoteError::DuplicateSignature {
                name: s.name.clone(),
            });
        }
        let line = NoteSignature {
            name: s.name.clone(),
            key_id: s.key_id,
            signature: s.sign(text.as_bytes()).to_vec(),
        };
        out.push_str(&line.to_line());
    }
    Ok(out)
}

/// The body of a tlog checkpoint: a log's signed tree head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique name of the log; by convention also the name of its signing key.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 / 9162 root hash of the tree at `size`.
    pub root: Hash,
    /// Opaque extra lines, each non-empty, without the newline.
    pub extensions: Vec<String>,
}

fn cp_err(line: usize, reason: &'static str) -> NoteError {
    NoteError::MalformedCheckpoint { line, reason }
}

fn check_origin(origin: &str) -> Result<(), NoteError> {
    if origin.is_empty() {
        return Err(cp_err(1, "empty origin"));
    }
    if origin.chars().any(char::is_control) {
        return Err(cp_err(1, "control character in origin"));
    }
    Ok(())
}

fn check_extension(ext: &str, line: usize) -> Result<(), NoteError> {
    if ext.is_empty() {
        return Err(cp_err(line, "empty extension line"));
    }
    if ext.chars().any(|c| c < ' ') {
        return Err(cp_err(line, "control character in extension line"));
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<u64, NoteError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(cp_err(2, "tree size is not a decimal number"));
    }
    // Leading zeros would let one tree head have several signed spellings.
    if s.len() > 1 && s.starts_with('0') {
        return Err(cp_err(2, "tree size has a leading zero"));
    }
    s.parse()
        .map_err(|_| cp_err(2, "tree size does not fit in 64 bits"))
}

impl Checkpoint {
    /// Checks what [`Checkpoint::to_text`] needs to produce a parseable body.
    pub fn validate(&self) -> Result<(), NoteError> {
        check_origin(&self.origin)?;
        for (i, ext) in self.extensions.iter().enumerate() {
            check_extension(ext, i + 4)?;
        }
        Ok(())
    }

    /// `origin\n<size>\n<base64 root>\n` followed by one `extension\n` per extension.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for ext in &self.extensions {
            s.push_str(ext);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint body (a note's text), strictly: one spelling per checkpoint.
    pub fn parse_text(text: &str) -> Result<Checkpoint, NoteError> {
        let Some(body) = text.strip_suffix('\n') else {
            let line = text.split('\n').count();
            return Err(cp_err(line, "missing final newline"));
        };
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        check_origin(origin)?;
        let size = parse_size(lines.next().ok_or(cp_err(2, "missing tree size"))?)?;
        let root64 = lines.next().ok_or(cp_err(3, "missing root hash"))?;
        let root_bytes = B64
            .decode(root64)
            .map_err(|_| cp_err(3, "root hash is not valid base64"))?;
        let root: Hash = root_bytes
            .as_slice()
            .try_into()
            .map_err(|_| cp_err(3, "root hash is not 32 bytes"))?;
        let mut extensions = Vec::new();
        for (i, ext) in lines.enumerate() {
            check_extension(ext, i + 4)?;
            extensions.push(ext.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// Signs a checkpoint's body as a note.
pub fn sign_checkpoint(cp: &Checkpoint, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    cp.validate()?;
    sign_note(&cp.to_text(), signers)
}

/// Opens a signed checkpoint: verifies the note against `known`, then parses its text.
///
/// Does not require the verifying key's name to equal the origin; callers pin the keys they
/// trust for a log and compare `origin` themselves.
pub fn open_checkpoint(
    msg: &str,
    known: &[VerifierKey],
) -> Result<(Checkpoint, OpenedNote), NoteError> {
    let opened = open_note(msg, known)?;
    let cp = Checkpoint::parse_text(&opened.text)?;
    Ok((cp, opened))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Constants of golang.org/x/mod/sumdb/note/note_test.go.
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter() -> VerifierKey {
        VerifierKey::parse(PETER_VKEY).unwrap()
    }

    fn enoch() -> VerifierKey {
        VerifierKey::parse(ENOCH_VKEY).unwrap()
    }

    fn note(sigs: &[&str]) -> String {
        format!("{TEXT}\n{}", sigs.concat())
    }

    fn splice(s: &str, at: usize, ins: &str) -> String {
        format!("{}{ins}{}", &s[..at], &s[at..])
    }

    #[test]
    fn go_verifier_key_parses_and_round_trips() {
        let k = peter();
        assert_eq!(k.name(), "PeterNeumann");
        assert_eq!(k.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        let public: [u8; 32] = k.public_key().try_into().unwrap();
        assert_eq!(key_id(k.name(), &public), k.key_id());
        assert_eq!(k.to_string(), PETER_VKEY);
        assert_eq!(PETER_VKEY.parse::<VerifierKey>().unwrap(), k);
        assert_eq!(VerifierKey::new("PeterNeumann", public).unwrap(), k);
    }

    #[test]
    fn go_private_key_parses_and_round_trips() {
        let s = NoteSigner::parse_private(PETER_SKEY).unwrap();
        assert_eq!(s.name(), "PeterNeumann");
        assert_eq!(s.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(s.to_private_string(), PETER_SKEY);
        assert_eq!(s.verifier_key(), peter());
        assert_eq!(s.verifier_key().to_string(), PETER_VKEY);
        assert!(!format!("{s:?}").contains("AYEKF"));
    }

    #[test]
    fn go_signature_is_reproduced_byte_for_byte() {
        let s = NoteSigner::parse_private(PETER_SKEY).unwrap();
        assert_eq!(sign_note(TEXT, &[&s]).unwrap(), note(&[PETER_SIG]));
    }

    #[test]
    fn go_note_opens() {
        let opened = open_note(&note(&[PETER_SIG]), &[peter()]).unwrap();
        assert_eq!(opened.text, TEXT);
        assert_eq!(opened.verified, vec![peter()]);
        assert!(opened.unverified.is_empty());
    }

    #[test]
    fn go_two_signature_note() {
        let msg = note(&[PETER_SIG, ENOCH_SIG]);
        let one = open_note(&msg, &[peter()]).unwrap();
        assert_eq!(one.verified, vec![peter()]);
        assert_eq!(one.unverified.len(), 1);
        assert_eq!(one.unverified[0].name, "EnochRoot");
        assert_eq!(one.unverified[0].key_id, [0xaf, 0x0c, 0xfe, 0x78]);
        assert_eq!(one.unverified[0].to_line(), ENOCH_SIG);

        let both = open_note(&msg, &[enoch(), peter()]).unwrap();
        assert_eq!(both.verified, vec![peter(), enoch()]);
        assert!(both.unverified.is_empty());

        assert_eq!(open_note(&msg, &[]), Err(NoteError::UnverifiedNote));
        let (text, sigs) = parse_note(&msg).unwrap();
        assert_eq!(text, TEXT);
        assert_eq!(sigs.len(), 2);
    }

    #[test]
    fn key_string_manglings_are_refused() {
        for skey in [PETER_VKEY, PETER_SKEY] {
            let parse = |s: &str| {
                if skey == PETER_VKEY {
                    VerifierKey::parse(s).map(|_| ())
                } else {
                    NoteSigner::parse_private(s).map(|_| ())
                }
            };
            assert!(parse(skey).is_ok());
            let b = skey.as_bytes();
            for i in 0..=b.len() {
                for j in i + 1..=b.len() {
                    if i != 0 || j != b.len() {
                        assert!(parse(&skey[i..j]).is_err(), "{:?}", &skey[i..j]);
                    }
                }
            }
            for i in 0..b.len() {
                let mut m = b.to_vec();
                m[i] += 1;
                let m = String::from_utf8(m).unwrap();
                assert!(parse(&m).is_err(), "{m:?}");
            }
        }
        // Unknown algorithm byte, with the id recomputed to match: Go's test vector.
        assert_eq!(
            VerifierKey::parse(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::UnsupportedAlgorithm(0x65))
        );
        assert!(matches!(
            VerifierKey::parse(
                "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::MalformedKey(_))
        ));
        assert!(matches!(
            VerifierKey::parse(
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::KeyIdMismatch { .. })
        ));
    }

    #[test]
    fn key_names_and_points_are_checked() {
        for bad in [
            "",
            "a b",
            "a+b",
            "a\tb",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{1}b",
        ] {
            assert!(!is_valid_key_name(bad), "{bad:?}");
            assert!(matches!(
                NoteSigner::from_seed(bad, [7; 32]),
                Err(NoteError::InvalidKeyName(_))
            ));
        }
        assert!(is_valid_key_name("example.com/log-42"));
        assert!(is_valid_key_name("ünïcödé/\u{2014}"));
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(VerifierKey::new("x", identity).is_err());
        // y = p (non-canonical encoding of y = 0).
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(VerifierKey::new("x", p).is_err());
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let s = NoteSigner::from_seed("example.com/log", [42; 32]).unwrap();
        let v = s.verifier_key();
        assert_eq!(VerifierKey::parse(&v.to_string()).unwrap(), v);
        let again = NoteSigner::parse_private(&s.to_private_string()).unwrap();
        assert_eq!(again.verifier_key(), v);
        let sig = s.sign(b"hi");
        assert!(v.verify(b"hi", &sig));
        assert!(!v.verify(b"ho", &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!v.verify(b"hi", &bad));
    }

    #[test]
    fn multi_signer_round_trip() {
        let a = NoteSigner::from_seed("a.example", [1; 32]).unwrap();
        let b = NoteSigner::from_seed("b.example", [2; 32]).unwrap();
        let text = "hello\n\nworld with a blank line\n";
        let msg = sign_note(text, &[&a, &b]).unwrap();
        let opened = open_note(&msg, &[b.verifier_key(), a.verifier_key()]).unwrap();
        assert_eq!(opened.text, text);
        assert_eq!(opened.verified, vec![a.verifier_key(), b.verifier_key()]);
        let only_b = open_note(&msg, &[b.verifier_key()]).unwrap();
        assert_eq!(only_b.verified, vec![b.verifier_key()]);
        assert_eq!(only_b.unverified[0].name, "a.example");
    }

    #[test]
    fn tampering_is_detected() {
        let tampered_text = note(&[PETER_SIG]).replace("cryptography", "cryptographY");
        let invalid = Err(NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
        });
        assert_eq!(open_note(&tampered_text, &[peter()]), invalid);
        // Go's case: four base64 characters spliced into the signature.
        let spliced = splice(PETER_SIG, 60, "ABCD");
        assert_eq!(open_note(&note(&[&spliced]), &[peter()]), invalid);
        // Same length, one bit of the signature flipped.
        let (_, mut sigs) = parse_note(&note(&[PETER_SIG])).unwrap();
        sigs[0].signature[10] ^= 0x01;
        assert_eq!(open_note(&note(&[&sigs[0].to_line()]), &[peter()]), invalid);
        // A short signature by a known key is invalid rather than malformed.
        sigs[0].signature.truncate(1);
        assert_eq!(open_note(&note(&[&sigs[0].to_line()]), &[peter()]), invalid);
        // An invalid known signature fails the note even if another one verifies.
        let msg = note(&[PETER_SIG, &splice(ENOCH_SIG, 60, "ABCD")]);
        assert_eq!(
            open_note(&msg, &[peter(), enoch()]),
            Err(NoteError::InvalidSignature {
                name: "EnochRoot".into()
            })
        );
    }

    #[test]
    fn unknown_and_wrong_id_keys_are_ignored() {
        // Same name, different key (hence id): the signature is not by a known key.
        let imposter = NoteSigner::from_seed("PeterNeumann", [9; 32]).unwrap();
        assert_ne!(imposter.key_id(), peter().key_id());
        let msg = note(&[PETER_SIG]);
        assert_eq!(
            open_note(&msg, &[imposter.verifier_key()]),
            Err(NoteError::UnverifiedNote)
        );
        let imposter_msg = sign_note(TEXT, &[&imposter]).unwrap();
        assert_eq!(
            open_note(&imposter_msg, &[peter()]),
            Err(NoteError::UnverifiedNote)
        );
        // A signature carrying a known key's id but another name.
        let (_, mut sigs) = parse_note(&msg).unwrap();
        sigs[0].name = "PeterNeuman".into();
        let renamed = note(&[&sigs[0].to_line(), PETER_SIG]);
        let opened = open_note(&renamed, &[peter()]).unwrap();
        assert_eq!(opened.verified, vec![peter()]);
        assert_eq!(opened.unverified, vec![sigs[0].clone()]);
        // Identical unknown lines are listed once, different ones each.
        let spliced = splice(ENOCH_SIG, 60, "ABCD");
        let msg = note(&[PETER_SIG, ENOCH_SIG, ENOCH_SIG, &spliced]);
        let opened = open_note(&msg, &[peter()]).unwrap();
        assert_eq!(opened.unverified.len(), 2);
    }

    #[test]
    fn duplicate_and_ambiguous_keys_are_refused() {
        let dup = NoteError::DuplicateSignature {
            name: "PeterNeumann".into(),
        };
        assert_eq!(
            open_note(&note(&[PETER_SIG, PETER_SIG]), &[peter()]),
            Err(dup.clone())
        );
        let s = NoteSigner::parse_private(PETER_SKEY).unwrap();
        assert_eq!(sign_note(TEXT, &[&s, &s]), Err(dup));
        // The same key listed twice is fine; two keys colliding on name and id are not.
        assert!(open_note(&note(&[PETER_SIG]), &[peter(), peter()]).is_ok());
        let other = NoteSigner::from_seed("PeterNeumann", [3; 32]).unwrap();
        let mut colliding = other.verifier_key();
        colliding.key_id = peter().key_id();
        assert_eq!(
            open_note(&note(&[PETER_SIG]), &[peter(), colliding]),
            Err(NoteError::AmbiguousKey {
                name: "PeterNeumann".into()
            })
        );
    }

    #[test]
    fn signature_count_is_limited() {
        let many = format!("{TEXT}\n{}", PETER_SIG.repeat(101));
        assert_eq!(
            open_note(&many, &[peter()]),
            Err(NoteError::TooManySignatures)
        );
        assert_eq!(open_note(&many, &[]), Err(NoteError::TooManySignatures));
        let hundred = format!("{TEXT}\n{}", ENOCH_SIG.repeat(100));
        assert_eq!(parse_note(&hundred).unwrap().1.len(), 100);
    }

    #[test]
    fn malformed_notes_are_refused() {
        let sig_line = |n, reason| NoteError::MalformedSignatureLine { line: n, reason };
        let body = &PETER_SIG[PETER_SIG.rfind(' ').unwrap() + 1..];
        let cases: Vec<(String, NoteError)> = vec![
            // Go's table.
            (
                TEXT.into(),
                NoteError::Malformed("no blank line before the signatures"),
            ),
            (format!("{TEXT}\n"), NoteError::NoSignatures),
            (
                format!("{TEXT}\n{}", PETER_SIG.trim_end()),
                NoteError::Malformed("last signature line has no newline"),
            ),
            (
                format!("\x01{}", note(&[PETER_SIG])),
                NoteError::ControlCharacter { code: 1, offset: 0 },
            ),
            (
                // The name ends at the first space, so "Name ..." is the base64.
                format!("{TEXT}\n\u{2014} Bad Name {body}"),
                sig_line(1, "bad base64"),
            ),
            (
                format!("{}Unexpected line.\n", note(&[PETER_SIG])),
                sig_line(2, "does not start with an em dash and a space"),
            ),
            // More.
            (
                note(&[PETER_SIG]).replace('\n', "\r\n"),
                NoteError::ControlCharacter {
                    code: 13,
                    offset: 56,
                },
            ),
            (
                format!("{TEXT}\n- PeterNeumann {body}"),
                sig_line(1, "does not start with an em dash and a space"),
            ),
            (
                format!("{TEXT}\n\u{2014}PeterNeumann {body}"),
                sig_line(1, "does not start with an em dash and a space"),
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann\n"),
                sig_line(1, "no space between key name and signature"),
            ),
            (
                format!("{TEXT}\n\u{2014}  {body}"),
                sig_line(1, "invalid key name"),
            ),
            (
                format!("{TEXT}\n\u{2014} a+b {body}"),
                sig_line(1, "invalid key name"),
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann \n"),
                sig_line(1, "empty signature"),
            ),
            (
                format!("{TEXT}\n{PETER_SIG}\u{2014} PeterNeumann x08go/ZJ!!\n"),
                sig_line(2, "bad base64"),
            ),
            (
                format!("{TEXT}\n\u{2014} PeterNeumann {}", body.replace('=', "")),
                sig_line(1, "bad base64"),
            ),
            (
                format!(
                    "{TEXT}\n\u{2014} PeterNeumann {}\n",
                    B64.encode([0xc7, 0x4f, 0x20, 0xa3])
                ),
                sig_line(1, "signature shorter than 5 bytes"),
            ),
            (
                // Non-zero trailing bits: Go's lenient decoder accepts this spelling.
                format!(
                    "{TEXT}\n\u{2014} PeterNeumann {}",
                    body.replace("AM=", "AN=")
                ),
                sig_line(1, "bad base64"),
            ),
            (
                format!("{TEXT}\n{PETER_SIG}{PETER_SIG} trailing\n"),
                sig_line(3, "does not start with an em dash and a space"),
            ),
            (
                format!("{}\n\n{PETER_SIG}", "a".repeat(MAX_TEXT_BYTES)),
                NoteError::TextTooLong(MAX_TEXT_BYTES + 1),
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(parse_note(&msg), Err(want.clone()), "{msg:?}");
            assert_eq!(open_note(&msg, &[peter()]), Err(want), "{msg:?}");
        }
        assert_eq!(
            note_from_bytes(b"\xffabc\n\n"),
            Err(NoteError::NotUtf8 { offset: 0 })
        );
        assert_eq!(note_from_bytes(TEXT.as_bytes()), Ok(TEXT));
        assert_eq!(
            sig_line(2, "bad base64").to_string(),
            "note: signature line 2: bad base64"
        );
    }

    #[test]
    fn sign_note_refuses_unopenable_notes() {
        let s = NoteSigner::parse_private(PETER_SKEY).unwrap();
        assert_eq!(
            sign_note("abc", &[&s]),
            Err(NoteError::Malformed("text does not end with a newline"))
        );
        assert!(sign_note("", &[&s]).is_err());
        assert!(matches!(
            sign_note("a\x07b\n", &[&s]),
            Err(NoteError::ControlCharacter { code: 7, .. })
        ));
        assert_eq!(sign_note(TEXT, &[]), Err(NoteError::NoSignatures));
        let big = format!("{}\n", "a".repeat(MAX_TEXT_BYTES));
        assert!(matches!(
            sign_note(&big, &[&s]),
            Err(NoteError::TextTooLong(_))
        ));
        let just_fits = format!("{}\n", "a".repeat(MAX_TEXT_BYTES - 1));
        let msg = sign_note(&just_fits, &[&s]).unwrap();
        assert_eq!(open_note(&msg, &[peter()]).unwrap().text, just_fits);
    }

    const C2SP_CHECKPOINT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".into(),
            size: 12345,
            root: [0xab; 32],
            extensions: vec!["ext one".into(), "\u{2014} two".into()],
        }
    }

    #[test]
    fn checkpoint_text_round_trips() {
        let cp = Checkpoint::parse_text(C2SP_CHECKPOINT).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20852163);
        assert_eq!(cp.root[..2], [0x0a, 0xc5]);
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.to_text(), C2SP_CHECKPOINT);

        let cp = checkpoint();
        let text = cp.to_text();
        assert_eq!(
            text,
            format!(
                "example.com/log\n12345\n{}\next one\n\u{2014} two\n",
                B64.encode([0xab; 32])
            )
        );
        assert_eq!(Checkpoint::parse_text(&text).unwrap(), cp);
        for size in [0, 1, u64::MAX] {
            let cp = Checkpoint {
                size,
                ..checkpoint()
            };
            assert_eq!(Checkpoint::parse_text(&cp.to_text()).unwrap(), cp);
        }
    }

    #[test]
    fn checkpoint_sign_and_open() {
        let s = NoteSigner::from_seed("example.com/log", [5; 32]).unwrap();
        let cp = checkpoint();
        let msg = sign_checkpoint(&cp, &[&s]).unwrap();
        let (got, opened) = open_checkpoint(&msg, &[s.verifier_key()]).unwrap();
        assert_eq!(got, cp);
        assert_eq!(opened.verified, vec![s.verifier_key()]);
        assert_eq!(
            open_checkpoint(&msg, &[peter()]),
            Err(NoteError::UnverifiedNote)
        );
        // A signed note whose text is not a checkpoint.
        let p = NoteSigner::parse_private(PETER_SKEY).unwrap();
        assert!(matches!(
            open_checkpoint(&sign_note(TEXT, &[&p]).unwrap(), &[peter()]),
            Err(NoteError::MalformedCheckpoint { line: 2, .. })
        ));
        for bad in [
            Checkpoint {
                origin: String::new(),
                ..checkpoint()
            },
            Checkpoint {
                origin: "a\nb".into(),
                ..checkpoint()
            },
            Checkpoint {
                origin: "a\u{7f}".into(),
                ..checkpoint()
            },
            Checkpoint {
                extensions: vec![String::new()],
                ..checkpoint()
            },
            Checkpoint {
                extensions: vec!["x\ny".into()],
                ..checkpoint()
            },
        ] {
            assert!(matches!(
                sign_checkpoint(&bad, &[&s]),
                Err(NoteError::MalformedCheckpoint { .. })
            ));
        }
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let root = B64.encode([1u8; 32]);
        let e = |line, reason| Err(NoteError::MalformedCheckpoint { line, reason });
        let cases: Vec<(String, Result<Checkpoint, NoteError>)> = vec![
            (
                format!("o\n01\n{root}\n"),
                e(2, "tree size has a leading zero"),
            ),
            (
                format!("o\n00\n{root}\n"),
                e(2, "tree size has a leading zero"),
            ),
            (
                format!("o\n\n{root}\n"),
                e(2, "tree size is not a decimal number"),
            ),
            (
                format!("o\n+1\n{root}\n"),
                e(2, "tree size is not a decimal number"),
            ),
            (
                format!("o\n-1\n{root}\n"),
                e(2, "tree size is not a decimal number"),
            ),
            (
                format!("o\n 1\n{root}\n"),
                e(2, "tree size is not a decimal number"),
            ),
            (
                format!("o\n1 \n{root}\n"),
                e(2, "tree size is not a decimal number"),
            ),
            (
                format!("o\n0x1\n{root}\n"),
                e(2, "tree size is not a decimal number"),
            ),
            (
                format!("o\n18446744073709551616\n{root}\n"),
                e(2, "tree size does not fit in 64 bits"),
            ),
            (format!("o\n1\n{root}"), e(3, "missing final newline")),
            (String::new(), e(1, "missing final newline")),
            (format!("\n1\n{root}\n"), e(1, "empty origin")),
            (
                format!("o\x7f\n1\n{root}\n"),
                e(1, "control character in origin"),
            ),
            ("o\n".into(), e(2, "missing tree size")),
            ("o\n1\n".into(), e(3, "missing root hash")),
            ("o\n1\n\n".into(), e(3, "root hash is not 32 bytes")),
            (
                format!("o\n1\n{}\n", &root[1..]),
                e(3, "root hash is not valid base64"),
            ),
            (
                format!("o\n1\n{}\n", root.replace('=', "")),
                e(3, "root hash is not valid base64"),
            ),
            (
                format!("o\n1\n{root} \n"),
                e(3, "root hash is not valid base64"),
            ),
            (
                format!("o\n1\n{}\n", B64.encode([1u8; 31])),
                e(3, "root hash is not 32 bytes"),
            ),
            (
                format!("o\n1\n{}\n", B64.encode([1u8; 33])),
                e(3, "root hash is not 32 bytes"),
            ),
            (format!("o\n1\n{root}\nx\n\n"), e(5, "empty extension line")),
            (
                format!("o\n1\n{root}\nx\ty\n"),
                e(4, "control character in extension line"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Checkpoint::parse_text(&text), want, "{text:?}");
        }
        assert_eq!(
            NoteError::MalformedCheckpoint {
                line: 2,
                reason: "tree size has a leading zero"
            }
            .to_string(),
            "checkpoint: line 2: tree size has a leading zero"
        );
    }

    proptest! {
        #[test]
        fn prop_sign_open_round_trip(
            lines in proptest::collection::vec("[^\\x00-\\x1f]{0,40}", 1..6),
            seed in any::<[u8; 32]>(),
            name in "[a-z0-9./\u{2014}-]{1,20}",
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let s = NoteSigner::from_seed(&name, seed).unwrap();
            let msg = sign_note(&text, &[&s]).unwrap();
            let opened = open_note(&msg, &[s.verifier_key()]).unwrap();
            prop_assert_eq!(opened.text, text);
            prop_assert_eq!(opened.verified, vec![s.verifier_key()]);
        }

        #[test]
        fn prop_checkpoint_round_trip(
            origin in "[^\\x00-\\x1f\\x7f-\\u{9f}]{1,30}",
            size in any::<u64>(),
            root in any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[^\\x00-\\x1f]{1,20}", 0..3),
        ) {
            let cp = Checkpoint { origin, size, root, extensions };
            prop_assert_eq!(Checkpoint::parse_text(&cp.to_text()).unwrap(), cp);
        }

        #[test]
        fn prop_parsers_never_panic(s in "(?s).{0,200}") {
            let _ = parse_note(&s);
            let _ = open_note(&s, &[peter()]);
            let _ = Checkpoint::parse_text(&s);
            let _ = VerifierKey::parse(&s);
            let _ = NoteSigner::parse_private(&s);
        }
    }
}
