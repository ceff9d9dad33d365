//! S3 and S3-compatible stores: create-only PUT (`If-None-Match: *`) under Object Lock
//! COMPLIANCE mode with a retain-until per object, `Content-MD5` on every write (S3 demands
//! a checksum on any PUT that carries lock headers) and the returned ETag checked against
//! it. Every `x-amz-*` header is SigV4-signed.
//!
//! The lease (`put_if`) is a PutObject with `If-Match: <ETag>` or `If-None-Match: *` (S3
//! conditional writes): 412 PreconditionFailed, 409 ConditionalRequestConflict (another
//! conditional write to the key was in flight) and, for `If-Match`, 404 NoSuchKey are a
//! conflict.

use base64::Engine as _;

use crate::http::{uri_encode, Http, Resp};
use crate::sigv4::{self, Credentials};
use crate::{
    content_md5, time, xml, Lock, ObjectInfo, PutOutcome, Result, Retention, SwapOutcome, Tagged,
    TargetOptions, WormCheck, WormError, WormTarget,
};

pub(crate) struct S3Target {
    http: Http,
    bucket: String,
    prefix: String,
    /// `scheme://host[:port]`.
    endpoint: String,
    path_style: bool,
    region: String,
    creds: S3Credentials,
}

/// Keys given in the options or the environment, else the rest of the AWS chain (web
/// identity, container, instance metadata), asked when a request needs them.
enum S3Credentials {
    Static(Credentials),
    Chain(crate::aws_creds::AwsCredentials),
}

const LIST_PAGES_MAX: usize = 100_000;

impl S3Target {
    pub fn new(bucket: &str, prefix: &str, opts: &TargetOptions) -> Result<S3Target> {
        let region = TargetOptions::env_or(&opts.region, &["AWS_REGION", "AWS_DEFAULT_REGION"])
            .unwrap_or_else(|| "us-east-1".into());
        let custom =
            TargetOptions::env_or(&opts.endpoint, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]);
        let (endpoint, path_style) = match custom {
            Some(e) => (e.trim_end_matches('/').to_string(), true),
            None => (format!("https://{bucket}.s3.{region}.amazonaws.com"), false),
        };
        let creds = match TargetOptions::env_or(&opts.access_key_id, &["AWS_ACCESS_KEY_ID"]) {
            Some(access_key_id) => S3Credentials::Static(Credentials {
                access_key_id,
                secret_access_key: TargetOptions::secret_env_or(
                    &opts.secret_access_key,
                    &["AWS_SECRET_ACCESS_KEY"],
                )
                .ok_or_else(|| WormError::Config("S3: no AWS_SECRET_ACCESS_KEY".into()))?,
                session_token: TargetOptions::secret_env_or(
                    &opts.session_token,
                    &["AWS_SESSION_TOKEN"],
                ),
            }),
            None => S3Credentials::Chain(crate::aws_creds::AwsCredentials::new(
                crate::aws_creds::AwsEnv::from_process(),
            )),
        };
        Ok(S3Target {
            http: Http::new(format!("s3://{bucket}/{prefix}"), opts),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint,
            path_style,
            region,
            creds,
        })
    }

    fn path(&self, key: Option<&str>) -> String {
        let key = key.map(|k| format!("{}{k}", self.prefix));
        match (self.path_style, key) {
            (true, Some(k)) => format!("/{}/{k}", self.bucket),
            (true, None) => format!("/{}", self.bucket),
            (false, Some(k)) => format!("/{k}"),
            (false, None) => "/".to_string(),
        }
    }

    fn request(
        &self,
        what: &str,
        method: &str,
        key: Option<&str>,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Resp> {
        let path = self.path(key);
        let now = unix_now();
        let chained;
        let creds = match &self.creds {
            S3Credentials::Static(c) => c,
            S3Credentials::Chain(chain) => {
                chained = chain.get(now)?.1;
                &chained
            }
        };
        let headers = sigv4::signed_headers(
            &sigv4::Request {
                method,
                endpoint: &self.endpoint,
                path: &path,
                query,
                extra,
                body: body.unwrap_or(b""),
                region: &self.region,
                service: "s3",
                unix_s: now,
            },
            creds,
        );
        let mut url = format!("{}{}", self.endpoint, uri_encode(&path, true));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&sigv4::canonical_query(query));
        }
        self.http.send(what, method, &url, &headers, body)
    }

    pub fn create_bucket(&self, object_lock: bool) -> Result<()> {
        let mut h = Vec::new();
        if object_lock {
            h.push((
                "x-amz-bucket-object-lock-enabled".to_string(),
                "true".to_string(),
            ));
        }
        let what = "PUT bucket (CreateBucket)";
        let r = self.request(what, "PUT", None, &[], &h, None)?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        Ok(())
    }

    fn head_blake3(&self, key: &str) -> Result<Option<(u64, Option<String>)>> {
        let what = format!("HEAD {key}");
        let r = self.request(&what, "HEAD", Some(key), &[], &[], None)?;
        match r.status {
            200 => Ok(Some((
                r.header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                r.header("x-amz-meta-blake3").map(str::to_string),
            ))),
            404 => Ok(None),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn set_retention(&self, key: &str, lock: Lock) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            time::rfc3339(lock.retain_until_unix_s)
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(body.as_bytes()));
        let what = format!("PUT {key}?retention");
        let r = self.request(
            &what,
            "PUT",
            Some(key),
            &[("retention".into(), String::new())],
            &[("content-md5".into(), md5)],
            Some(body.as_bytes()),
        )?;
        if !r.ok() {
            return Err(self.http.status_error(&what, &r));
        }
        Ok(())
    }
}

/// The `<Code>` of an S3 error answer.
fn error_code(r: &Resp) -> Option<String> {
    xml::parse(&String::from_utf8_lossy(&r.body))
        .ok()
        .and_then(|d| d.text_of("Code"))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Same bytes? Compared by the BLAKE3 digest stored as metadata, else by reading them.
pub(crate) fn same_object(
    target: &dyn WormTarget,
    key: &str,
    bytes: &[u8],
    size_and_digest: Option<(u64, Option<String>)>,
) -> Result<bool> {
    let ours = blake3::hash(bytes).to_hex().to_string();
    if let Some((size, Some(d))) = &size_and_digest {
        return Ok(*size == bytes.len() as u64 && *d == ours);
    }
    Ok(target
        .get(key)?
        .is_some_and(|theirs| blake3::hash(&theirs).to_hex().as_str() == ours))
}

/// After finding a key taken by the same bytes: make sure it holds at least `lock`.
pub(crate) fn raise_retention(
    target: &dyn WormTarget,
    key: &str,
    lock: Option<Lock>,
    set: impl FnOnce(Lock) -> Result<()>,
) -> Result<()> {
    let Some(lock) = lock else { return Ok(()) };
    let have = target.retention(key)?;
    if have.is_none_or(|h| h.retain_until_unix_s < lock.retain_until_unix_s) {
        set(lock)?;
    }
    Ok(())
}

impl WormTarget for S3Target {
    fn describe(&self) -> String {
        self.http.target().to_string()
    }

    fn check_worm(&self) -> Result<WormCheck> {
        let what = "GET ?object-lock (GetObjectLockConfiguration)";
        let r = self.request(
            what,
            "GET",
            None,
            &[("object-lock".into(), String::new())],
            &[],
            None,
        )?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        match r.status {
            200 => {
                let on = xml::parse(&text)
                    .ok()
                    .and_then(|d| d.text_of("ObjectLockEnabled"))
                    .as_deref()
                    == Some("Enabled");
                Ok(WormCheck {
                    enforced: on,
                    detail: if on {
                        "bucket has Object Lock enabled".into()
                    } else {
                        "bucket's Object Lock configuration is not Enabled".into()
                    },
                })
            }
            // The error's code element, not a substring of the body.
            404 if xml::parse(&text)
                .ok()
                .and_then(|d| d.text_of("Code"))
                .is_some_and(|c| c.starts_with("ObjectLockConfigurationNotFound")) =>
            {
                Ok(WormCheck {
                    enforced: false,
                    detail: "bucket was created without Object Lock".into(),
                })
            }
            _ => Err(self.http.status_error(what, &r)),
        }
    }

    fn put_create(&self, key: &str, bytes: &[u8], lock: Option<Lock>) -> Result<PutOutcome> {
        let md5 = content_md5(bytes);
        let mut headers = vec![
            (
                "content-md5".to_string(),
                base64::engine::general_purpose::STANDARD.encode(md5),
            ),
            ("if-none-match".into(), "*".into()),
            (
                "x-amz-meta-blake3".into(),
                blake3::hash(bytes).to_hex().to_string(),
            ),
        ];
        if let Some(l) = lock {
            headers.push(("x-amz-object-lock-mode".into(), "COMPLIANCE".into()));
            headers.push((
                "x-amz-object-lock-retain-until-date".into(),
                time::rfc3339(l.retain_until_unix_s),
            ));
            if l.legal_hold {
                headers.push(("x-amz-object-lock-legal-hold".into(), "ON".into()));
            }
        }
        let what = format!("PUT {key}");
        let r = self.request(&what, "PUT", Some(key), &[], &headers, Some(bytes))?;
        match r.status {
            200 => {
                let etag = r.header("etag").unwrap_or("").trim_matches('"').to_string();
                if etag != hex::encode(md5) {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: format!("store reports ETag {etag}, sent MD5 {}", hex::encode(md5)),
                    });
                }
                Ok(PutOutcome::Created)
            }
            412 => {
                let meta = self.head_blake3(key)?;
                if !same_object(self, key, bytes, meta)? {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: "the key already holds different bytes".into(),
                    });
                }
                raise_retention(self, key, lock, |l| self.set_retention(key, l))?;
                Ok(PutOutcome::AlreadyThere)
            }
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn put_mutable(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
        let what = format!("PUT {key}");
        let r = self.request(
            &what,
            "PUT",
            Some(key),
            &[],
            &[("content-md5".into(), md5)],
            Some(bytes),
        )?;
        if !r.ok() {
            return Err(self.http.status_error(&what, &r));
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("GET {key}");
        let r = self.request(&what, "GET", Some(key), &[], &[], None)?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        let what = format!("GET {key}");
        let r = self.request(&what, "GET", Some(key), &[], &[], None)?;
        self.http.etag_tagged(&what, r)
    }

    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&str>) -> Result<SwapOutcome> {
        if let Some(tag) = expected {
            crate::check_if_match(&self.describe(), key, tag)?;
        }
        let md5 = content_md5(bytes);
        // Content-MD5 stays: S3 wants an integrity header on every PUT to an Object Lock
        // bucket, and it checks the bytes.
        let headers = [
            (
                "content-md5".to_string(),
                base64::engine::general_purpose::STANDARD.encode(md5),
            ),
            match expected {
                Some(tag) => ("if-match".to_string(), tag.to_string()),
                None => ("if-none-match".to_string(), "*".to_string()),
            },
        ];
        let what = format!("PUT {key} (conditional)");
        let r = self.request(&what, "PUT", Some(key), &[], &headers, Some(bytes))?;
        match r.status {
            200 => {
                let tag = r
                    .header("etag")
                    .ok_or_else(|| self.http.protocol(&what, "no ETag in the answer"))?;
                if tag.trim_matches('"') != hex::encode(md5) {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: format!("store reports ETag {tag}, sent MD5 {}", hex::encode(md5)),
                    });
                }
                Ok(SwapOutcome::Stored {
                    tag: tag.to_string(),
                })
            }
            412 => Ok(SwapOutcome::Conflict),
            409 if error_code(&r).as_deref() == Some("ConditionalRequestConflict") => {
                Ok(SwapOutcome::Conflict)
            }
            // If-Match on a key with no current version.
            404 if expected.is_some() && error_code(&r).as_deref() == Some("NoSuchKey") => {
                Ok(SwapOutcome::Conflict)
            }
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let what = format!("GET {key} (bytes {offset}+{len})");
        let range = [crate::http::range_header(offset, len)];
        let r = self.request(&what, "GET", Some(key), &[], &range, None)?;
        self.http.ranged_body(&what, r, offset, len)
    }

    fn retention(&self, key: &str) -> Result<Option<Retention>> {
        // HeadObject reports the lock (x-amz-object-lock-*) to callers allowed to read it;
        // unlike GetObjectRetention it also carries the legal hold, in one request.
        let what = format!("HEAD {key} (object lock)");
        let r = self.request(&what, "HEAD", Some(key), &[], &[], None)?;
        if r.status == 404 {
            return Ok(None);
        }
        if !r.ok() {
            return Err(self.http.status_error(&what, &r));
        }
        let legal_hold = r.header("x-amz-object-lock-legal-hold") == Some("ON");
        let (Some(mode), Some(until)) = (
            r.header("x-amz-object-lock-mode"),
            r.header("x-amz-object-lock-retain-until-date"),
        ) else {
            return Ok(None);
        };
        let until_s = time::parse_rfc3339(until).ok_or_else(|| {
            self.http
                .protocol(&what, format!("bad retain-until date {until:?}"))
        })?;
        Ok(Some(Retention {
            mode: mode.to_string(),
            retain_until_unix_s: until_s,
            legal_hold,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..LIST_PAGES_MAX {
            let mut q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), format!("{}{prefix}", self.prefix)),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".into(), t.clone()));
            }
            let what = format!("LIST {prefix}");
            let r = self.request(&what, "GET", None, &q, &[], None)?;
            if !r.ok() {
                return Err(self.http.status_error(&what, &r));
            }
            let text = String::from_utf8_lossy(&r.body).into_owned();
            let doc = xml::parse(&text).map_err(|e| self.http.protocol(&what, e))?;
            for c in doc.all("Contents") {
                let key = c.text_of("Key").unwrap_or_default();
                let bytes = c.text_of("Size").and_then(|s| s.parse().ok()).unwrap_or(0);
                if let Some(k) = key.strip_prefix(&self.prefix) {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        bytes,
                    });
                }
            }
            token = doc.text_of("NextContinuationToken");
            if doc.text_of("IsTruncated").as_deref() != Some("true") || token.is_none() {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
        Err(self
            .http
            .protocol("LIST", format!("more than {LIST_PAGES_MAX} pages")))
    }
}
