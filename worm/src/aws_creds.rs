//! AWS credentials from the standard chain, in the SDKs' order: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); a web identity token
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`: Kubernetes service accounts, STS
//! `AssumeRoleWithWebIdentity`); the container endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! or `_RELATIVE_URI`, ECS and EKS Pod Identity); the instance metadata service (IMDSv2).
//!
//! Temporary credentials are kept until [`REFRESH_BEFORE_EXPIRY_S`] before they expire, so a
//! signer asks the source about once an hour, not once per request. The environment is read
//! once into an [`AwsEnv`] (tests build their own instead of changing the process's).

use std::sync::Mutex;

use serde::Deserialize;

use crate::http::Http;
use crate::sigv4::Credentials;
use crate::{time, Result, TargetOptions, WormError};

/// Temporary credentials are fetched again this long before they expire.
pub const REFRESH_BEFORE_EXPIRY_S: u64 = 300;
/// The instance metadata service's address unless `AWS_EC2_METADATA_SERVICE_ENDPOINT` says.
pub const IMDS_ENDPOINT_DEFAULT: &str = "http://169.254.169.254";
/// Where ECS serves `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
pub const ECS_ENDPOINT: &str = "http://169.254.170.2";
/// A metadata endpoint that does not answer within this is taken as absent.
const METADATA_TIMEOUT_MS: u64 = 1_000;
/// Answers of the credential sources are small; anything bigger is refused.
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

/// The variables the chain reads, captured once.
#[derive(Clone, Default)]
pub struct AwsEnv {
    pub vars: Vec<(String, String)>,
}

impl AwsEnv {
    const NAMES: &'static [&'static str] = &[
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_ENDPOINT_URL_STS",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_DISABLED",
    ];

    pub fn from_process() -> AwsEnv {
        AwsEnv {
            vars: Self::NAMES
                .iter()
                .filter_map(|n| Some((n.to_string(), std::env::var(n).ok()?)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn region(&self) -> Option<&str> {
        self.get("AWS_REGION")
            .or_else(|| self.get("AWS_DEFAULT_REGION"))
    }
}

/// Which link of the chain gave the credentials (for errors and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Environment,
    WebIdentity,
    Container,
    InstanceMetadata,
}

struct Cached {
    creds: Credentials,
    /// Unix seconds; `None` for credentials that do not expire.
    expires_unix_s: Option<u64>,
}

/// The chain, with its cache. One per signer or target; cheap when the cache is warm.
pub struct AwsCredentials {
    env: AwsEnv,
    http: Http,
    cached: Mutex<Option<(Source, Cached)>>,
}

fn err(what: &str) -> impl Fn(String) -> WormError + '_ {
    move |why| WormError::Config(format!("AWS credentials ({what}): {why}"))
}

/// The JSON both metadata endpoints answer with.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataCreds {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

impl AwsCredentials {
    pub fn new(env: AwsEnv) -> AwsCredentials {
        let opts = TargetOptions {
            connect_timeout_ms: Some(METADATA_TIMEOUT_MS),
            request_timeout_ms: Some(5_000),
            object_bytes_max: Some(ANSWER_BYTES_MAX),
            ..TargetOptions::default()
        };
        AwsCredentials {
            env,
            http: Http::new("aws credentials".into(), &opts),
            cached: Mutex::new(None),
        }
    }

    pub fn env(&self) -> &AwsEnv {
        &self.env
    }

    /// Credentials valid for at least [`REFRESH_BEFORE_EXPIRY_S`], from the cache or the
    /// first source of the chain that is configured. A configured source that fails is an
    /// error (it is not skipped: falling through to another identity would be a surprise).
    pub fn get(&self, now_unix_s: u64) -> Result<(Source, Credentials)> {
        let mut g = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((source, c)) = g.as_ref() {
            let fresh = c
                .expires_unix_s
                .is_none_or(|t| now_unix_s + REFRESH_BEFORE_EXPIRY_S < t);
            if fresh {
                return Ok((*source, c.creds.clone()));
            }
        }
        let (source, c) = self.fetch()?;
        let creds = c.creds.clone();
        *g = Some((source, c));
        Ok((source, creds))
    }

    fn fetch(&self) -> Result<(Source, Cached)> {
        let e = &self.env;
        if let Some(id) = e.get("AWS_ACCESS_KEY_ID") {
            let secret = e.get("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
                err("environment")("AWS_ACCESS_KEY_ID without AWS_SECRET_ACCESS_KEY".into())
            })?;
            let creds = Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: e.get("AWS_SESSION_TOKEN").map(str::to_string),
            };
            let c = Cached {
                creds,
                expires_unix_s: None,
            };
            return Ok((Source::Environment, c));
        }
        if let Some(file) = e.get("AWS_WEB_IDENTITY_TOKEN_FILE") {
            return Ok((Source::WebIdentity, self.web_identity(file)?));
        }
        if e.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
            || e.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        {
            return Ok((Source::Container, self.container()?));
        }
        if e.get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(err("chain")(
                "no credentials in the environment, no web identity or container endpoint, and instance metadata is disabled".into(),
            ));
        }
        Ok((Source::InstanceMetadata, self.imds()?))
    }

    /// STS `AssumeRoleWithWebIdentity` (unsigned: the token is the proof), form-encoded.
    fn web_identity(&self, token_file: &str) -> Result<Cached> {
        let bad = err("web identity");
        let role = self
            .env
            .get("AWS_ROLE_ARN")
            .ok_or_else(|| bad("AWS_WEB_IDENTITY_TOKEN_FILE without AWS_ROLE_ARN".into()))?;
        let token =
            std::fs::read_to_string(token_file).map_err(|e| bad(format!("{token_file}: {e}")))?;
        let session = self.env.get("AWS_ROLE_SESSION_NAME").unwrap_or("auditlog");
        let endpoint = match self.env.get("AWS_ENDPOINT_URL_STS") {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!(
                "https://sts.{}.amazonaws.com",
                self.env.region().unwrap_or("us-east-1")
            ),
        };
        let form: Vec<(String, String)> = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", session),
            ("WebIdentityToken", token.trim()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let body = crate::sigv4::canonical_query(&form);
        let headers = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        let what = "STS AssumeRoleWithWebIdentity";
        let r = self.http.send(
            what,
            "POST",
            &format!("{endpoint}/"),
            &headers,
            Some(body.as_bytes()),
        )?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        let doc = crate::xml::parse(&String::from_utf8_lossy(&r.body))
            .map_err(|e| self.http.protocol(what, e))?;
        let field = |tag: &str| {
            doc.text_of(tag)
                .ok_or_else(|| self.http.protocol(what, format!("no {tag} in the answer")))
        };
        let creds = Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        };
        let expires = time::parse_rfc3339(&field("Expiration")?).ok_or_else(|| {
            self.http
                .protocol(what, "Expiration is not an RFC 3339 time")
        })?;
        Ok(Cached {
            creds,
            expires_unix_s: Some(expires),
        })
    }

    /// The container credentials endpoint, with its authorization token if one is given.
    fn container(&self) -> Result<Cached> {
        let bad = err("container");
        let url = match self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            Some(u) => u.to_string(),
            None => format!(
                "{ECS_ENDPOINT}{}",
                self.env
                    .get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                    .unwrap_or_default()
            ),
        };
        let token = match self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| bad(format!("{f}: {e}")))?
                    .trim()
                    .to_string(),
            ),
            None => self
                .env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(str::to_string),
        };
        let headers: Vec<(String, String)> = token
            .map(|t| ("authorization".to_string(), t))
            .into_iter()
            .collect();
        self.metadata_creds("container credentials", &url, &headers)
    }

    /// IMDSv2: a session token (PUT), the role name, then the role's credentials.
    fn imds(&self) -> Result<Cached> {
        let base = self
            .env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or(IMDS_ENDPOINT_DEFAULT)
            .trim_end_matches('/')
            .to_string();
        let what = "IMDSv2 token";
        let r = self.http.send(
            what,
            "PUT",
            &format!("{base}/latest/api/token"),
            &[(
                "x-aws-ec2-metadata-token-ttl-seconds".into(),
                "21600".into(),
            )],
            Some(b""),
        )?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        let token = String::from_utf8_lossy(&r.body).trim().to_string();
        let auth = [("x-aws-ec2-metadata-token".to_string(), token)];
        let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
        let what = "IMDS role name";
        let r = self.http.send(what, "GET", &roles_url, &auth, None)?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let role = body
            .lines()
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| self.http.protocol(what, "no instance role"))?;
        self.metadata_creds("IMDS credentials", &format!("{roles_url}{role}"), &auth)
    }

    fn metadata_creds(
        &self,
        what: &str,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<Cached> {
        let r = self.http.send(what, "GET", url, headers, None)?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        let m: MetadataCreds =
            serde_json::from_slice(&r.body).map_err(|e| self.http.protocol(what, e.to_string()))?;
        let expires_unix_s = match &m.expiration {
            Some(t) => Some(time::parse_rfc3339(t).ok_or_else(|| {
                self.http
                    .protocol(what, "Expiration is not an RFC 3339 time")
            })?),
            None => None,
        };
        Ok(Cached {
            creds: Credentials {
                access_key_id: m.access_key_id,
                secret_access_key: m.secret_access_key,
                session_token: m.token,
            },
            expires_unix_s,
        })
    }
}
