//! AWS KMS: the JSON 1.1 protocol (`X-Amz-Target: TrentService.<Action>`,
//! `Content-Type: application/x-amz-json-1.1`, SigV4 for service `kms`).
//!
//! Two key specs sign notes: `ECC_NIST_EDWARDS25519` with `ED25519_SHA_512` and
//! `MessageType=RAW` (pure Ed25519, RFC 8032, so the checkpoint is an ordinary C2SP Ed25519
//! note; the pre-hashed `ED25519_PH_SHA_512` would not verify as one), and `ECC_NIST_P256`
//! with `ECDSA_SHA_256` and `MessageType=RAW` (KMS hashes the message; the DER signature is
//! the note's type 0x02 signature as it comes). Credentials come from the standard chain
//! (`auditlog_worm::aws_creds`).

use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::VerifierKey;
use auditlog_worm::aws_creds::AwsCredentials;
pub use auditlog_worm::aws_creds::AwsEnv;
use auditlog_worm::http::{Http, Resp};
use auditlog_worm::sigv4;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::KmsError;
use crate::error::Result;
use crate::signer::Signer;

const KMS: &str = "AWS KMS";
pub const KEY_SPEC_ED25519: &str = "ECC_NIST_EDWARDS25519";
pub const KEY_SPEC_P256: &str = "ECC_NIST_P256";

/// Which key: public information, kept in the key history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKmsSpec {
    pub region: String,
    /// Key id, key ARN, alias name or alias ARN.
    pub key_id: String,
    /// `scheme://host[:port]`; default `https://kms.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
}

impl AwsKmsSpec {
    fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://kms.{}.amazonaws.com", self.region),
        }
    }
}

/// A KMS endpoint with credentials: the calls, without a key.
struct Client {
    spec: AwsKmsSpec,
    endpoint: String,
    http: Http,
    creds: AwsCredentials,
}

impl Client {
    fn new(spec: AwsKmsSpec, env: AwsEnv) -> Client {
        let endpoint = spec.endpoint();
        Client {
            http: super::http(format!("aws-kms {}", spec.key_id)),
            endpoint,
            spec,
            creds: AwsCredentials::new(env),
        }
    }

    /// One JSON 1.1 call; a non-2xx answer becomes the error its `__type` names.
    fn call(&self, action: &'static str, body: &Value) -> std::result::Result<Value, KmsError> {
        let key = || self.spec.key_id.clone();
        let now = super::unix_now_s();
        let (_, creds) = self.creds.get(now).map_err(|e| KmsError::Credentials {
            kms: KMS,
            key: key(),
            why: e.to_string(),
        })?;
        let body = body.to_string();
        let extra = [
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("x-amz-target".to_string(), format!("TrentService.{action}")),
        ];
        let headers = sigv4::signed_headers(
            &sigv4::Request {
                method: "POST",
                endpoint: &self.endpoint,
                path: "/",
                query: &[],
                extra: &extra,
                body: body.as_bytes(),
                region: &self.spec.region,
                service: "kms",
                unix_s: now,
            },
            &creds,
        );
        let url = format!("{}/", self.endpoint);
        let r = self
            .http
            .send(action, "POST", &url, &headers, Some(body.as_bytes()))
            .map_err(|e| KmsError::Unreachable {
                kms: KMS,
                key: key(),
                what: action,
                why: e.to_string(),
            })?;
        if !r.ok() {
            return Err(refusal(action, &self.spec.key_id, &r));
        }
        serde_json::from_slice(&r.body).map_err(|e| KmsError::BadAnswer {
            kms: KMS,
            key: key(),
            what: action,
            why: format!("not JSON: {e}"),
        })
    }

    fn bad(&self, what: &'static str, why: impl Into<String>) -> KmsError {
        KmsError::BadAnswer {
            kms: KMS,
            key: self.spec.key_id.clone(),
            what,
            why: why.into(),
        }
    }

    fn b64_field(
        &self,
        v: &Value,
        what: &'static str,
        field: &str,
    ) -> std::result::Result<Vec<u8>, KmsError> {
        let s = v[field]
            .as_str()
            .ok_or_else(|| self.bad(what, format!("no {field}")))?;
        B64.decode(s)
            .map_err(|_| self.bad(what, format!("{field} is not base64")))
    }
}

/// The error an AWS JSON error answer names (`__type`, `message`).
fn refusal(what: &'static str, key: &str, r: &Resp) -> KmsError {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let kind = v["__type"].as_str().unwrap_or("");
    let kind = kind.rsplit('#').next().unwrap_or(kind);
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .map_or_else(|| r.text(), str::to_string);
    let why = format!("{kind}: {message}");
    let key = key.to_string();
    match (kind, r.status) {
        ("NotFoundException", _) => KmsError::KeyNotFound { kms: KMS, key, why },
        ("AccessDeniedException" | "UnrecognizedClientException", _) | (_, 403) => {
            KmsError::AccessDenied { kms: KMS, key, why }
        }
        _ => KmsError::Refused {
            kms: KMS,
            key,
            what,
            status: r.status,
            why,
        },
    }
}

pub struct AwsKmsSigner {
    client: Client,
    verifier: VerifierKey,
    signing_algorithm: &'static str,
}

impl AwsKmsSigner {
    /// Reads the key's public key and spec (`GetPublicKey`); the key must be a signing key
    /// of a spec above. Every way this fails is a distinct [`KmsError`].
    pub fn open(
        spec: AwsKmsSpec,
        name: &str,
        env: AwsEnv,
    ) -> std::result::Result<AwsKmsSigner, KmsError> {
        let client = Client::new(spec, env);
        let what = "GetPublicKey";
        let v = client.call(what, &json!({ "KeyId": client.spec.key_id }))?;
        let key_spec = v["KeySpec"]
            .as_str()
            .or_else(|| v["CustomerMasterKeySpec"].as_str())
            .unwrap_or("")
            .to_string();
        let signing_algorithm = match key_spec.as_str() {
            KEY_SPEC_ED25519 => "ED25519_SHA_512",
            KEY_SPEC_P256 => "ECDSA_SHA_256",
            _ => {
                return Err(KmsError::UnsupportedKey {
                    kms: KMS,
                    key: client.spec.key_id.clone(),
                    spec: key_spec,
                    want: "ECC_NIST_EDWARDS25519 or ECC_NIST_P256, key usage SIGN_VERIFY",
                })
            }
        };
        if v["KeyUsage"].as_str().is_some_and(|u| u != "SIGN_VERIFY") {
            return Err(KmsError::UnsupportedKey {
                kms: KMS,
                key: client.spec.key_id.clone(),
                spec: format!("{key_spec} with key usage {}", v["KeyUsage"]),
                want: "key usage SIGN_VERIFY",
            });
        }
        let der = client.b64_field(&v, what, "PublicKey")?;
        let verifier =
            super::verifier_from_spki(name, &der).map_err(|why| client.bad(what, why))?;
        Ok(AwsKmsSigner {
            client,
            verifier,
            signing_algorithm,
        })
    }

    /// Creates a signing key (`CreateKey`, `KeyUsage=SIGN_VERIFY`) of `key_spec` and
    /// returns its ARN (or id, if the answer has no ARN).
    pub fn create(
        region: &str,
        endpoint: Option<String>,
        key_spec: &str,
        description: &str,
        env: AwsEnv,
    ) -> std::result::Result<String, KmsError> {
        let spec = AwsKmsSpec {
            region: region.to_string(),
            key_id: "(new key)".into(),
            endpoint,
        };
        let client = Client::new(spec, env);
        let what = "CreateKey";
        let v = client.call(
            what,
            &json!({
                "KeySpec": key_spec,
                "KeyUsage": "SIGN_VERIFY",
                "Description": description,
            }),
        )?;
        let meta = &v["KeyMetadata"];
        meta["Arn"]
            .as_str()
            .or_else(|| meta["KeyId"].as_str())
            .map(str::to_string)
            .ok_or_else(|| client.bad(what, "no KeyMetadata.Arn"))
    }

    pub fn spec(&self) -> &AwsKmsSpec {
        &self.client.spec
    }
}

impl Signer for AwsKmsSigner {
    fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    fn backend(&self) -> KeyBackend {
        let s = &self.client.spec;
        KeyBackend::AwsKms {
            region: s.region.clone(),
            key_id: s.key_id.clone(),
            endpoint: s.endpoint.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let what = "Sign";
        let c = &self.client;
        let v = c.call(
            what,
            &json!({
                "KeyId": c.spec.key_id,
                "Message": B64.encode(message),
                "MessageType": "RAW",
                "SigningAlgorithm": self.signing_algorithm,
            }),
        )?;
        if let Some(alg) = v["SigningAlgorithm"].as_str() {
            if alg != self.signing_algorithm {
                return Err(c
                    .bad(
                        what,
                        format!("signed with {alg}, not {}", self.signing_algorithm),
                    )
                    .into());
            }
        }
        Ok(c.b64_field(&v, what, "Signature")?)
    }
}
