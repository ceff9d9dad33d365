//! Azure Key Vault and Managed HSM: no Ed25519 there, so ECDSA P-256 (`ES256`), producing
//! the C2SP signed-note ECDSA signature (type 0x02, FORMATS.md §9.1.1).
//!
//! - Public key: `GET {vault}/keys/{name}/{version}?api-version=7.4`, a JWK (`crv` P-256,
//!   `x`, `y`), turned into the SPKI DER the verifier key holds.
//! - Sign: `POST {vault}/keys/{name}/{version}/sign?api-version=7.4` with
//!   `{"alg":"ES256","value":base64url(SHA-256(text))}`; the answer's `value` is JOSE's
//!   fixed-width `r || s`, converted to DER for the note.
//! - OAuth 2 client credentials at `{authority}/{tenant}/oauth2/v2.0/token`, scope
//!   `https://vault.azure.net/.default` (`https://managedhsm.azure.net/.default` for a
//!   Managed HSM): a client secret (`AZURE_CLIENT_SECRET`) or a workload identity token
//!   (`AZURE_FEDERATED_TOKEN_FILE`, sent as a `client_assertion`); `AZURE_TENANT_ID`,
//!   `AZURE_CLIENT_ID`, and `AZURE_AUTHORITY_HOST` to override the authority. The token is
//!   kept until 5 minutes before it expires.

use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::{ecdsa, VerifierKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{oauth, KmsError};
use crate::error::Result;
use crate::signer::Signer;

const KMS: &str = "Azure Key Vault";
pub const API_VERSION: &str = "7.4";
pub const AUTHORITY_DEFAULT: &str = "https://login.microsoftonline.com";

/// Which key: public information, kept in the key history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureKeySpec {
    /// `https://<vault>.vault.azure.net` or `https://<hsm>.managedhsm.azure.net`.
    pub vault: String,
    pub key: String,
    /// The key version: pinned, so a new version (a new key) needs a rotation.
    pub version: String,
}

/// The Azure identity settings, read once from the environment (tests build their own).
#[derive(Clone, Default)]
pub struct AzureEnv {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub federated_token_file: Option<String>,
    pub authority_host: Option<String>,
}

impl AzureEnv {
    pub fn from_process() -> AzureEnv {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        AzureEnv {
            tenant_id: var("AZURE_TENANT_ID"),
            client_id: var("AZURE_CLIENT_ID"),
            client_secret: var("AZURE_CLIENT_SECRET"),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE"),
            authority_host: var("AZURE_AUTHORITY_HOST"),
        }
    }
}

pub struct AzureKeySigner {
    spec: AzureKeySpec,
    vault: Vault,
    verifier: VerifierKey,
}

/// A vault (or Managed HSM) with an identity: the calls, for one key.
struct Vault {
    /// The vault URL without a trailing `/`.
    url: String,
    env: AzureEnv,
    /// Names the key `{vault}/keys/{name}/{version}` in errors.
    client: oauth::BearerClient,
}

impl AzureKeySigner {
    /// Reads the key (a P-256 EC key) from the vault. Every way this fails is a distinct
    /// [`KmsError`].
    pub fn open(
        spec: AzureKeySpec,
        name: &str,
        env: AzureEnv,
    ) -> std::result::Result<AzureKeySigner, KmsError> {
        let url = spec.vault.trim_end_matches('/').to_string();
        let s = Vault {
            client: oauth::BearerClient::new(
                KMS,
                format!("{url}/keys/{}/{}", spec.key, spec.version),
            ),
            url,
            env,
        };
        let what = "get key";
        let url = format!("{}?api-version={API_VERSION}", s.client.key);
        let v = s.client.call(|| s.fetch_token(), what, "GET", &url, None)?;
        let jwk = &v["key"];
        let kty = jwk["kty"].as_str().unwrap_or("");
        let crv = jwk["crv"].as_str().unwrap_or("");
        if !matches!(kty, "EC" | "EC-HSM") || crv != "P-256" {
            return Err(KmsError::UnsupportedKey {
                kms: KMS,
                key: s.client.key.clone(),
                spec: format!("{kty} {crv}"),
                want: "an EC key on P-256 (ES256)",
            });
        }
        let coord = |c: &str| -> std::result::Result<Vec<u8>, KmsError> {
            let b = jwk[c]
                .as_str()
                .and_then(|t| B64URL.decode(t.trim_end_matches('=')).ok())
                .ok_or_else(|| s.bad(what, format!("JWK {c} is not base64url")))?;
            if b.len() != 32 {
                return Err(s.bad(what, format!("JWK {c} is {} bytes, not 32", b.len())));
            }
            Ok(b)
        };
        let mut point = vec![0x04];
        point.extend_from_slice(&coord("x")?);
        point.extend_from_slice(&coord("y")?);
        let der = ecdsa::spki_der_from_sec1(&point).map_err(|e| s.bad(what, e.to_string()))?;
        let verifier =
            VerifierKey::new_ecdsa_p256(name, &der).map_err(|e| s.bad(what, e.to_string()))?;
        Ok(AzureKeySigner {
            spec,
            vault: s,
            verifier,
        })
    }

    pub fn spec(&self) -> &AzureKeySpec {
        &self.spec
    }
}

impl Vault {
    fn bad(&self, what: &'static str, why: impl Into<String>) -> KmsError {
        self.client.bad(what, why)
    }

    fn scope(&self) -> &'static str {
        if self.url.contains(".managedhsm.") {
            "https://managedhsm.azure.net/.default"
        } else {
            "https://vault.azure.net/.default"
        }
    }

    /// A token from the identity platform (client secret or workload identity).
    fn fetch_token(&self) -> std::result::Result<auditlog_worm::http::Resp, String> {
        let e = &self.env;
        let tenant = e.tenant_id.as_deref().ok_or("AZURE_TENANT_ID is not set")?;
        let client = e.client_id.as_deref().ok_or("AZURE_CLIENT_ID is not set")?;
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client.to_string()),
            ("scope", self.scope().to_string()),
        ];
        match (&e.client_secret, &e.federated_token_file) {
            (Some(secret), _) => form.push(("client_secret", secret.clone())),
            (None, Some(file)) => {
                let t = std::fs::read_to_string(file).map_err(|err| format!("{file}: {err}"))?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", t.trim().to_string()));
            }
            (None, None) => {
                return Err(
                    "neither AZURE_CLIENT_SECRET nor AZURE_FEDERATED_TOKEN_FILE is set".into(),
                )
            }
        }
        let authority = e
            .authority_host
            .as_deref()
            .unwrap_or(AUTHORITY_DEFAULT)
            .trim_end_matches('/');
        let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
        oauth::post_form(&self.client.http, &url, &form).map_err(|why| format!("{url}: {why}"))
    }
}

impl Signer for AzureKeySigner {
    fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    fn backend(&self) -> KeyBackend {
        KeyBackend::AzureKeyVault {
            vault: self.spec.vault.clone(),
            key: self.spec.key.clone(),
            version: self.spec.version.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let what = "sign";
        let vault = &self.vault;
        let url = format!("{}/sign?api-version={API_VERSION}", vault.client.key);
        let digest = Sha256::digest(message);
        let v = vault.client.call(
            || vault.fetch_token(),
            what,
            "POST",
            &url,
            Some(&json!({ "alg": "ES256", "value": B64URL.encode(digest) })),
        )?;
        let fixed = v["value"]
            .as_str()
            .and_then(|t| B64URL.decode(t.trim_end_matches('=')).ok())
            .ok_or_else(|| vault.bad(what, "value is not base64url"))?;
        Ok(ecdsa::der_from_fixed(&fixed).map_err(|e| vault.bad(what, e.to_string()))?)
    }
}
