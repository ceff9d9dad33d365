//! Google Cloud KMS: `EC_SIGN_ED25519` keys, `asymmetricSign` over the note text (pure
//! Ed25519, so the checkpoint is an ordinary C2SP Ed25519 note).
//!
//! - Public key: `GET {endpoint}/v1/{keyVersion}/publicKey` (a PEM SPKI).
//! - Sign: `POST {endpoint}/v1/{keyVersion}:asymmetricSign` with
//!   `{"data": base64(text), "dataCrc32c": "<decimal>"}`; the answer must say
//!   `verifiedDataCrc32c: true`, name the key version, and carry a signature whose CRC32C
//!   matches `signatureCrc32c` (Google's integrity checks for data in transit).
//! - OAuth 2 access token, scope `https://www.googleapis.com/auth/cloudkms`: from a
//!   service-account key file (`GOOGLE_APPLICATION_CREDENTIALS`, a JWT bearer grant signed
//!   RS256 with the file's key), else from the metadata server (`GCE_METADATA_HOST`
//!   overrides `metadata.google.internal`). Kept until 5 minutes before it expires.

use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::VerifierKey;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{oauth, KmsError};
use crate::error::Result;
use crate::signer::Signer;

const KMS: &str = "Google Cloud KMS";
pub const ENDPOINT_DEFAULT: &str = "https://cloudkms.googleapis.com";
pub const METADATA_HOST_DEFAULT: &str = "metadata.google.internal";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

/// Which key: public information, kept in the key history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpKeySpec {
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`.
    pub key_version: String,
    /// Default [`ENDPOINT_DEFAULT`].
    pub endpoint: Option<String>,
}

/// Where the access token comes from, read once from the environment.
#[derive(Clone, Default)]
pub struct GcpEnv {
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key file.
    pub credentials_file: Option<String>,
    /// `GCE_METADATA_HOST`.
    pub metadata_host: Option<String>,
}

impl GcpEnv {
    pub fn from_process() -> GcpEnv {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        GcpEnv {
            credentials_file: var("GOOGLE_APPLICATION_CREDENTIALS"),
            metadata_host: var("GCE_METADATA_HOST"),
        }
    }
}

#[derive(serde::Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

pub struct GcpKmsSigner {
    api: Api,
    verifier: VerifierKey,
}

/// The KMS endpoint with an identity: the calls, for one key version.
struct Api {
    spec: GcpKeySpec,
    endpoint: String,
    env: GcpEnv,
    client: oauth::BearerClient,
}

impl GcpKmsSigner {
    /// Reads the key version's public key; it must be `EC_SIGN_ED25519`. Every way this
    /// fails is a distinct [`KmsError`].
    pub fn open(
        spec: GcpKeySpec,
        name: &str,
        env: GcpEnv,
    ) -> std::result::Result<GcpKmsSigner, KmsError> {
        let endpoint = spec
            .endpoint
            .as_deref()
            .unwrap_or(ENDPOINT_DEFAULT)
            .trim_end_matches('/')
            .to_string();
        let s = Api {
            client: oauth::BearerClient::new(KMS, spec.key_version.clone()),
            endpoint,
            env,
            spec,
        };
        let what = "getPublicKey";
        let url = format!("{}/v1/{}/publicKey", s.endpoint, s.spec.key_version);
        let v = s.client.call(|| s.fetch_token(), what, "GET", &url, None)?;
        let alg = v["algorithm"].as_str().unwrap_or("");
        if alg != "EC_SIGN_ED25519" {
            return Err(KmsError::UnsupportedKey {
                kms: KMS,
                key: s.spec.key_version.clone(),
                spec: alg.to_string(),
                want: "EC_SIGN_ED25519",
            });
        }
        let pem = v["pem"].as_str().ok_or_else(|| s.bad(what, "no pem"))?;
        if let Some(crc) = v["pemCrc32c"].as_str() {
            if crc.parse::<u32>().ok() != Some(crc32c::crc32c(pem.as_bytes())) {
                return Err(s.bad(what, "pemCrc32c does not match the PEM"));
            }
        }
        let der =
            pem_der(pem, "PUBLIC KEY").ok_or_else(|| s.bad(what, "pem is not a PUBLIC KEY"))?;
        let verifier = super::verifier_from_spki(name, &der).map_err(|why| s.bad(what, why))?;
        Ok(GcpKmsSigner { api: s, verifier })
    }
}

impl Api {
    fn bad(&self, what: &'static str, why: impl Into<String>) -> KmsError {
        self.client.bad(what, why)
    }

    /// A token from a service-account key or the metadata server.
    fn fetch_token(&self) -> std::result::Result<auditlog_worm::http::Resp, String> {
        match &self.env.credentials_file {
            Some(file) => self
                .token_from_key_file(file, super::unix_now_s())
                .map_err(|why| format!("{file}: {why}")),
            None => {
                let host = self
                    .env
                    .metadata_host
                    .as_deref()
                    .unwrap_or(METADATA_HOST_DEFAULT);
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                let h = [("metadata-flavor".to_string(), "Google".to_string())];
                self.client
                    .http
                    .send("metadata token", "GET", &url, &h, None)
                    .map_err(|e| format!("metadata server: {e}"))
            }
        }
    }

    /// The JWT bearer grant (RFC 7523) with the service account's RSA key.
    fn token_from_key_file(
        &self,
        file: &str,
        now: u64,
    ) -> std::result::Result<auditlog_worm::http::Resp, String> {
        let text = std::fs::read(file).map_err(|e| e.to_string())?;
        let sa: ServiceAccount =
            serde_json::from_slice(&text).map_err(|e| format!("not a service-account key: {e}"))?;
        let key = rsa_key(&sa.private_key).map_err(|e| format!("private_key: {e}"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = sa.private_key_id.clone();
        let claims = json!({
            "iss": sa.client_email,
            "scope": SCOPE,
            "aud": sa.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let assertion =
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("JWT: {e}"))?;
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string(),
            ),
            ("assertion", assertion),
        ];
        oauth::post_form(&self.client.http, &sa.token_uri, &form)
    }
}

/// The DER inside a `-----BEGIN {label}-----` PEM.
fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix(&format!("-----BEGIN {label}-----"))?
        .strip_suffix(&format!("-----END {label}-----"))?;
    let b64: String = body.split_whitespace().collect();
    B64.decode(b64).ok()
}

/// A service account's `private_key` (PKCS#8 RSA, PEM) as the JWT library takes it
/// (PKCS#1 DER).
fn rsa_key(pem: &str) -> std::result::Result<jsonwebtoken::EncodingKey, String> {
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::DecodePrivateKey as _;
    let der = pem_der(pem, "PRIVATE KEY").ok_or("not a PKCS#8 PEM")?;
    let key = rsa::PrivateKey::from_pkcs8_der(&der).map_err(|e| e.to_string())?;
    let pkcs1 = key.to_pkcs1_der().map_err(|e| e.to_string())?;
    Ok(jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()))
}

/// A decimal CRC32C as Google's JSON spells int64 values (a string).
fn crc_of(v: &Value) -> Option<u32> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64().and_then(|n| u32::try_from(n).ok()))
}

impl Signer for GcpKmsSigner {
    fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    fn backend(&self) -> KeyBackend {
        KeyBackend::GcpKms {
            key_version: self.api.spec.key_version.clone(),
            endpoint: self.api.spec.endpoint.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let what = "asymmetricSign";
        let api = &self.api;
        let url = format!(
            "{}/v1/{}:asymmetricSign",
            api.endpoint, api.spec.key_version
        );
        let body = json!({
            "data": B64.encode(message),
            "dataCrc32c": crc32c::crc32c(message).to_string(),
        });
        let v = api
            .client
            .call(|| api.fetch_token(), what, "POST", &url, Some(&body))?;
        if v["verifiedDataCrc32c"] != Value::Bool(true) {
            return Err(api
                .bad(
                    what,
                    "verifiedDataCrc32c is not true: the message was damaged in transit",
                )
                .into());
        }
        if v["name"]
            .as_str()
            .is_some_and(|n| n != api.spec.key_version)
        {
            return Err(api
                .bad(
                    what,
                    format!("signed by {}, not the key version asked", v["name"]),
                )
                .into());
        }
        let sig = v["signature"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| api.bad(what, "signature is not base64"))?;
        if crc_of(&v["signatureCrc32c"]) != Some(crc32c::crc32c(&sig)) {
            return Err(api
                .bad(what, "signatureCrc32c does not match the signature")
                .into());
        }
        Ok(sig)
    }
}
