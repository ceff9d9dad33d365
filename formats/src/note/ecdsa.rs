//! ECDSA P-256 with SHA-256 note keys and signatures: C2SP signed-note type 0x02, "ECDSA
//! as implemented by github.com/transparency-dev/witness" (`note.NewECDSAVerifier` in
//! github.com/transparency-dev/formats/note). It exists for signers that cannot make
//! Ed25519 signatures (Azure Key Vault and Managed HSM).
//!
//! - Verifier key: `name+hex8(key_id)+base64(0x02 || SPKI DER)`, the DER being an X.509
//!   SubjectPublicKeyInfo of an id-ecPublicKey on prime256v1 with an uncompressed point.
//! - Key id: the first 4 bytes of SHA-256(SPKI DER). Unlike Ed25519's, it does not cover
//!   the name (Go's rule; the name still has to match for a signature to count).
//! - Signature: ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }` over SHA-256(message), as Go's
//!   `ecdsa.SignASN1`/`VerifyASN1`.
//!
//! Strictness: only the canonical DER of a key is accepted (a compressed point or any other
//! spelling would give one key a second id), and only the canonical DER of a signature
//! (Go's `VerifyASN1` refuses non-minimal integers and trailing bytes too). A high `s` is
//! accepted, as Go accepts it: cloud KMSs do not normalise `s`, so refusing it would reject
//! half of their honest signatures. ECDSA signatures are therefore malleable (`(r, n - s)`
//! also verifies); nothing here identifies a checkpoint by its signature bytes.

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use sha2::{Digest, Sha256};

use super::NoteError;

/// Signature type byte of ECDSA P-256 / SHA-256 in key strings.
pub const ALG_ECDSA_SHA256: u8 = 0x02;
/// Longest DER ECDSA P-256 signature: two 33-byte integers with their headers, in a sequence.
pub const MAX_SIGNATURE_BYTES: usize = 72;

/// A P-256 public key, parsed and checked once.
#[derive(Clone, Debug)]
pub(super) struct EcdsaKey {
    spki_der: Vec<u8>,
    verifying: VerifyingKey,
}

impl EcdsaKey {
    pub(super) fn from_spki_der(der: &[u8]) -> Result<EcdsaKey, NoteError> {
        let verifying = VerifyingKey::from_public_key_der(der).map_err(|_| {
            NoteError::MalformedKey("ECDSA key data is not a P-256 SubjectPublicKeyInfo")
        })?;
        let canonical = verifying
            .to_public_key_der()
            .map_err(|_| NoteError::MalformedKey("ECDSA key cannot be re-encoded"))?;
        if canonical.as_bytes() != der {
            return Err(NoteError::MalformedKey(
                "ECDSA key data is not the canonical DER of an uncompressed P-256 point",
            ));
        }
        Ok(EcdsaKey {
            spki_der: der.to_vec(),
            verifying,
        })
    }

    pub(super) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// `SHA-256(SPKI DER)[..4]`.
    pub(super) fn key_id(&self) -> [u8; 4] {
        let d = Sha256::digest(&self.spki_der);
        [d[0], d[1], d[2], d[3]]
    }

    /// Whether `sig` is the canonical DER of a valid signature of SHA-256(`msg`).
    pub(super) fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() > MAX_SIGNATURE_BYTES {
            return false;
        }
        let Ok(parsed) = Signature::from_der(sig) else {
            return false;
        };
        if parsed.to_der().as_bytes() != sig {
            return false;
        }
        self.verifying.verify(msg, &parsed).is_ok()
    }
}

/// The SPKI DER of an uncompressed SEC1 P-256 point (`0x04 || x || y`), e.g. from a JWK.
pub fn spki_der_from_sec1(point: &[u8]) -> Result<Vec<u8>, NoteError> {
    let key = VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| NoteError::MalformedKey("not a P-256 point"))?;
    let der = key
        .to_public_key_der()
        .map_err(|_| NoteError::MalformedKey("ECDSA key cannot be encoded"))?;
    Ok(der.as_bytes().to_vec())
}

/// The note encoding (DER) of a fixed-width `r || s` signature, as JOSE's ES256 returns it.
pub fn der_from_fixed(r_s: &[u8]) -> Result<Vec<u8>, NoteError> {
    let sig = Signature::from_slice(r_s)
        .map_err(|_| NoteError::Malformed("ECDSA signature is not 64 bytes of nonzero r || s"))?;
    Ok(sig.to_der().as_bytes().to_vec())
}
