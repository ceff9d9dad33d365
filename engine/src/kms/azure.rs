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

use std::sync::Mutex;

use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::{ecdsa, VerifierKey};
use auditlog_worm::http::Http;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::KmsError;
use crate::error::Result;
use crate::signer::Signer;

const KMS: &str = "Azure Key Vault";
pub const API_VERSION: &str = "7.4";
pub const AUTHORITY_DEFAULT: &str = "https://login.microsoftonline.com";
/// A token is fetched again this long before it expires.
const REFRESH_BEFORE_EXPIRY_S: u64 = 300;

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
    /// `{vault}/keys/{name}/{version}`, for errors.
    key_label: String,
    env: AzureEnv,
    http: Http,
    /// Bearer token and its expiry (unix seconds).
    token: Mutex<Option<(String, u64)>>,
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
            key_label: format!("{url}/keys/{}/{}", spec.key, spec.version),
            http: super::http(format!("azure-kv {}", spec.key)),
            url,
            env,
            token: Mutex::new(None),
        };
        let what = "get key";
        let url = format!("{}?api-version={API_VERSION}", s.key_label);
        let v = s.call(what, "GET", &url, None)?;
        let jwk = &v["key"];
        let kty = jwk["kty"].as_str().unwrap_or("");
        let crv = jwk["crv"].as_str().unwrap_or("");
        if !matches!(kty, "EC" | "EC-HSM") || crv != "P-256" {
            return Err(KmsError::UnsupportedKey {
                kms: KMS,
                key: s.key_label.clone(),
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
        KmsError::BadAnswer {
            kms: KMS,
            key: self.key_label.clone(),
            what,
            why: why.into(),
        }
    }

    fn scope(&self) -> &'static str {
        if self.url.contains(".managedhsm.") {
            "https://managedhsm.azure.net/.default"
        } else {
            "https://vault.azure.net/.default"
        }
    }

    /// A bearer token, from the cache or the identity platform.
    fn bearer(&self) -> std::result::Result<String, KmsError> {
        let now = super::unix_now_s();
        let mut g = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, exp)) = g.as_ref() {
            if now + REFRESH_BEFORE_EXPIRY_S < *exp {
                return Ok(t.clone());
            }
        }
        let no = |why: String| KmsError::Credentials {
            kms: KMS,
            key: self.key_label.clone(),
            why,
        };
        let e = &self.env;
        let tenant = e
            .tenant_id
            .as_deref()
            .ok_or_else(|| no("AZURE_TENANT_ID is not set".into()))?;
        let client = e
            .client_id
            .as_deref()
            .ok_or_else(|| no("AZURE_CLIENT_ID is not set".into()))?;
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client.to_string()),
            ("scope", self.scope().to_string()),
        ];
        match (&e.client_secret, &e.federated_token_file) {
            (Some(secret), _) => form.push(("client_secret", secret.clone())),
            (None, Some(file)) => {
                let t =
                    std::fs::read_to_string(file).map_err(|err| no(format!("{file}: {err}")))?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", t.trim().to_string()));
            }
            (None, None) => {
                return Err(no(
                    "neither AZURE_CLIENT_SECRET nor AZURE_FEDERATED_TOKEN_FILE is set".into(),
                ))
            }
        }
        let body = form_encode(&form);
        let authority = e
            .authority_host
            .as_deref()
            .unwrap_or(AUTHORITY_DEFAULT)
            .trim_end_matches('/');
        let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
        let headers = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        let what = "token";
        let r = self
            .http
            .send(what, "POST", &url, &headers, Some(body.as_bytes()))
            .map_err(|err| no(err.to_string()))?;
        if !r.ok() {
            return Err(no(format!("{url}: HTTP {}: {}", r.status, r.text())));
        }
        let v: Value =
            serde_json::from_slice(&r.body).map_err(|err| no(format!("token answer: {err}")))?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| no("no access_token in the answer".into()))?
            .to_string();
        let expires_in = v["expires_in"]
            .as_u64()
            .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        *g = Some((token.clone(), now + expires_in));
        Ok(token)
    }

    fn call(
        &self,
        what: &'static str,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> std::result::Result<Value, KmsError> {
        let token = self.bearer()?;
        let mut headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        let body = body.map(Value::to_string);
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let r = self
            .http
            .send(
                what,
                method,
                url,
                &headers,
                body.as_deref().map(str::as_bytes),
            )
            .map_err(|e| KmsError::Unreachable {
                kms: KMS,
                key: self.key_label.clone(),
                what,
                why: e.to_string(),
            })?;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if !r.ok() {
            let why = v["error"]["message"]
                .as_str()
                .map_or_else(|| r.text(), str::to_string);
            let key = self.key_label.clone();
            return Err(match r.status {
                404 => KmsError::KeyNotFound { kms: KMS, key, why },
                401 | 403 => KmsError::AccessDenied { kms: KMS, key, why },
                status => KmsError::Refused {
                    kms: KMS,
                    key,
                    what,
                    status,
                    why,
                },
            });
        }
        if v.is_null() {
            return Err(self.bad(what, "not JSON"));
        }
        Ok(v)
    }
}

fn form_encode(form: &[(&str, String)]) -> String {
    let pairs: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    auditlog_worm::sigv4::canonical_query(&pairs)
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
        let url = format!("{}/sign?api-version={API_VERSION}", vault.key_label);
        let digest = Sha256::digest(message);
        let v = vault.call(
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
