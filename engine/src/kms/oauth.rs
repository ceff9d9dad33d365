//! What the Google and Azure signers share: an OAuth 2 access token kept until shortly
//! before it expires, the token endpoint's answer, and JSON calls with that token whose
//! error statuses become the [`KmsError`] they mean.

use std::sync::Mutex;

use auditlog_worm::http::{Http, Resp};
use serde_json::Value;

use super::KmsError;

/// A token is fetched again this long before it expires.
pub(crate) const REFRESH_BEFORE_EXPIRY_S: u64 = 300;

/// One access token and its expiry (unix seconds).
#[derive(Default)]
pub(crate) struct TokenCache(Mutex<Option<(String, u64)>>);

impl TokenCache {
    /// The cached token while it has over [`REFRESH_BEFORE_EXPIRY_S`] left, else the one
    /// `fetch` returns (the token endpoint's answer), cached.
    pub(crate) fn get(
        &self,
        fetch: impl FnOnce() -> Result<Resp, String>,
    ) -> Result<String, String> {
        let now = super::unix_now_s();
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, exp)) = g.as_ref() {
            if now + REFRESH_BEFORE_EXPIRY_S < *exp {
                return Ok(t.clone());
            }
        }
        let r = fetch()?;
        if !r.ok() {
            return Err(format!("token: HTTP {}: {}", r.status, r.text()));
        }
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("token answer: {e}"))?;
        let token = v["access_token"]
            .as_str()
            .ok_or("no access_token in the token answer")?
            .to_string();
        // A number (RFC 6749); some endpoints send it as a string.
        let expires_in = v["expires_in"]
            .as_u64()
            .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        *g = Some((token.clone(), now + expires_in));
        Ok(token)
    }
}

/// `application/x-www-form-urlencoded` (RFC 3986 unreserved characters kept).
pub(crate) fn form_encode(form: &[(&str, String)]) -> String {
    let pairs: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    auditlog_worm::sigv4::canonical_query(&pairs)
}

/// POSTs a form to a token endpoint.
pub(crate) fn post_form(http: &Http, url: &str, form: &[(&str, String)]) -> Result<Resp, String> {
    let headers = [(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    http.send(
        "token",
        "POST",
        url,
        &headers,
        Some(form_encode(form).as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// A KMS REST endpoint reached with an OAuth bearer token: the HTTP client, the token
/// cache, and the KMS and key its errors name.
pub(crate) struct BearerClient {
    pub kms: &'static str,
    pub key: String,
    pub http: Http,
    tokens: TokenCache,
}

impl BearerClient {
    pub(crate) fn new(kms: &'static str, key: String) -> BearerClient {
        BearerClient {
            http: super::http(format!("{kms} {key}")),
            kms,
            key,
            tokens: TokenCache::default(),
        }
    }

    pub(crate) fn bad(&self, what: &'static str, why: impl Into<String>) -> KmsError {
        KmsError::BadAnswer {
            kms: self.kms,
            key: self.key.clone(),
            what,
            why: why.into(),
        }
    }

    /// One JSON call with a bearer token (cached, else from `fetch_token`, the token
    /// endpoint's answer): the answer's JSON, or 404 → key not found, 401/403 → access
    /// denied, anything else refused; `error.message` is the reason.
    pub(crate) fn call(
        &self,
        fetch_token: impl FnOnce() -> Result<Resp, String>,
        what: &'static str,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, KmsError> {
        let (kms, key) = (self.kms, self.key.clone());
        let token = self
            .tokens
            .get(fetch_token)
            .map_err(|why| KmsError::Credentials {
                kms,
                key: key.clone(),
                why,
            })?;
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
                kms,
                key: key.clone(),
                what,
                why: e.to_string(),
            })?;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if !r.ok() {
            let why = v["error"]["message"]
                .as_str()
                .map_or_else(|| r.text(), str::to_string);
            return Err(match r.status {
                404 => KmsError::KeyNotFound { kms, key, why },
                401 | 403 => KmsError::AccessDenied { kms, key, why },
                status => KmsError::Refused {
                    kms,
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
