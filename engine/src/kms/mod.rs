//! Checkpoint signers whose keys live in a cloud KMS: AWS KMS (`aws.rs`), Google Cloud KMS
//! (`gcp.rs`), Azure Key Vault and Managed HSM (`azure.rs`). Each is a few REST calls over the WORM crate's bounded HTTP
//! client (and, for AWS, its SigV4 and credential chain); no cloud SDK (README: "Checkpoint
//! keys in a cloud KMS" says why).
//!
//! Failure handling is the HSM's, because it is the checkpointer's, not the signer's: a
//! signer that fails returns an error, the checkpointer backs off and retries, `/ready`
//! names the error (`Health::set_signer_error`) and the failure counters feed the metrics;
//! ingest never waits for a signature. At start, every way of failing is a distinct
//! [`KmsError`], so the daemon's first line says what to fix.
//!
//! Trust: the public key is read from the KMS when the signer is opened and compared with
//! the key history (the keyring refuses a backend that holds another key), and every
//! signature is verified against that pinned key before a checkpoint is published
//! (`signer::sign_checkpoint`), so a KMS that answers with a wrong signature, or with
//! another key's, publishes nothing.

pub mod aws;
pub mod azure;
pub mod gcp;
mod oauth;

use auditlog_formats::note::VerifierKey;

/// Connecting to a KMS endpoint.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// One KMS request, start to end of the answer.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// KMS answers are small JSON documents; anything bigger is refused.
pub const ANSWER_BYTES_MAX: u64 = 64 * 1024;

/// What can go wrong with a KMS key; each names the KMS, the key and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{kms} key {key}: no credentials: {why}")]
    Credentials {
        kms: &'static str,
        key: String,
        why: String,
    },
    #[error("{kms} key {key}: {what}: cannot reach the KMS: {why}")]
    Unreachable {
        kms: &'static str,
        key: String,
        what: &'static str,
        why: String,
    },
    #[error("{kms} key {key}: not found: {why}")]
    KeyNotFound {
        kms: &'static str,
        key: String,
        why: String,
    },
    #[error("{kms} key {key}: access denied: {why}")]
    AccessDenied {
        kms: &'static str,
        key: String,
        why: String,
    },
    #[error("{kms} key {key}: {what}: HTTP {status}: {why}")]
    Refused {
        kms: &'static str,
        key: String,
        what: &'static str,
        status: u16,
        why: String,
    },
    #[error("{kms} key {key}: key type {spec} cannot sign C2SP notes (use {want})")]
    UnsupportedKey {
        kms: &'static str,
        key: String,
        spec: String,
        want: &'static str,
    },
    #[error("{kms} key {key}: {what}: unexpected answer: {why}")]
    BadAnswer {
        kms: &'static str,
        key: String,
        what: &'static str,
        why: String,
    },
}

/// The Ed25519 SubjectPublicKeyInfo prefix (RFC 8410): `SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 } BIT STRING }`, followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The verifier key for a public key a KMS returned as SPKI DER: Ed25519 or P-256.
pub(crate) fn verifier_from_spki(
    name: &str,
    der: &[u8],
) -> std::result::Result<VerifierKey, String> {
    if let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| format!("Ed25519 key of {} bytes", raw.len()))?;
        return VerifierKey::new(name, raw).map_err(|e| e.to_string());
    }
    VerifierKey::new_ecdsa_p256(name, der).map_err(|e| e.to_string())
}

/// The bounded HTTP client a KMS signer uses.
pub(crate) fn http(target: String) -> auditlog_worm::http::Http {
    let opts = auditlog_worm::TargetOptions {
        connect_timeout_ms: Some(CONNECT_TIMEOUT_MS_DEFAULT),
        request_timeout_ms: Some(REQUEST_TIMEOUT_MS_DEFAULT),
        object_bytes_max: Some(ANSWER_BYTES_MAX),
        ..auditlog_worm::TargetOptions::default()
    };
    auditlog_worm::http::Http::new(target, &opts)
}

pub(crate) fn unix_now_s() -> u64 {
    crate::now_unix_ns() / 1_000_000_000
}

impl From<KmsError> for crate::error::EngineError {
    fn from(e: KmsError) -> Self {
        crate::error::EngineError::Kms(e)
    }
}
