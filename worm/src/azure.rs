//! Azure Blob Storage: Put Blob with `If-None-Match: *` and `Content-MD5`, carrying a
//! locked version-level immutability policy (`x-ms-immutability-policy-until-date`, mode
//! `Locked`) on the upload itself, so no moment exists where the blob is there but not
//! locked. A blob found already there gets the policy set (`?comp=immutabilityPolicies`)
//! if it lacks it. SharedKey authentication (account name and key).
//!
//! The lease (`put_if`) is a Put Blob with `If-Match: <ETag>` or `If-None-Match: *`: 412
//! ConditionNotMet, and 409 BlobAlreadyExists for a create, are a conflict.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::{uri_encode, Http, Resp};
use crate::s3::{raise_retention, same_object, unix_now};
use crate::{
    content_md5, time, xml, Lock, ObjectInfo, PutOutcome, Result, Retention, SwapOutcome, Tagged,
    TargetOptions, WormCheck, WormError, WormTarget,
};

const API_VERSION: &str = "2021-12-02";
const LIST_PAGES_MAX: usize = 100_000;

pub(crate) struct AzureTarget {
    http: Http,
    container: String,
    prefix: String,
    /// `https://account.blob.core.windows.net`, or an emulator's `http://host:port/account`.
    endpoint: String,
    account: String,
    key: Vec<u8>,
}

type Headers = Vec<(String, String)>;

impl AzureTarget {
    pub fn new(container: &str, prefix: &str, opts: &TargetOptions) -> Result<AzureTarget> {
        let account = TargetOptions::env_or(&opts.account, &["AZURE_STORAGE_ACCOUNT"])
            .ok_or_else(|| WormError::Config("Azure: no AZURE_STORAGE_ACCOUNT".into()))?;
        let key_b64 = TargetOptions::secret_env_or(&opts.account_key, &["AZURE_STORAGE_KEY"])
            .ok_or_else(|| WormError::Config("Azure: no AZURE_STORAGE_KEY".into()))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|e| WormError::Config(format!("Azure: account key is not base64: {e}")))?;
        let endpoint = TargetOptions::env_or(&opts.endpoint, &["AZURE_STORAGE_BLOB_ENDPOINT"])
            .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"))
            .trim_end_matches('/')
            .to_string();
        Ok(AzureTarget {
            http: Http::new(format!("azure://{container}/{prefix}"), opts),
            container: container.to_string(),
            prefix: prefix.to_string(),
            endpoint,
            account,
            key,
        })
    }

    /// The SharedKey string to sign (Authorize with Shared Key, version 2015-02-21 and later).
    fn string_to_sign(
        &self,
        method: &str,
        url_path: &str,
        query: &[(String, String)],
        headers: &Headers,
        content_length: usize,
    ) -> String {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_str())
        };
        let mut ms: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        ms.sort();
        let mut s = format!(
            "{method}\n\n\n{}\n{}\n{}\n\n\n{}\n{}\n\n\n",
            if content_length == 0 {
                String::new()
            } else {
                content_length.to_string()
            },
            get("content-md5"),
            get("content-type"),
            get("if-match"),
            get("if-none-match"),
        );
        for (k, v) in &ms {
            s.push_str(&format!("{k}:{v}\n"));
        }
        s.push_str(&format!("/{}{}", self.account, uri_encode(url_path, true)));
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        q.sort();
        for (k, v) in q {
            s.push_str(&format!("\n{k}:{v}"));
        }
        s
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
        let base_path = self
            .endpoint
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default();
        let url_path = match key {
            Some(k) => format!("{base_path}/{}/{}{k}", self.container, self.prefix),
            None => format!("{base_path}/{}", self.container),
        };
        let mut headers: Headers = vec![
            ("x-ms-date".into(), time::rfc1123(unix_now())),
            ("x-ms-version".into(), API_VERSION.into()),
        ];
        headers.extend_from_slice(extra);
        let len = body.map_or(0, <[u8]>::len);
        let to_sign = self.string_to_sign(method, &url_path, query, &headers, len);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(to_sign.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        headers.push((
            "authorization".into(),
            format!("SharedKey {}:{sig}", self.account),
        ));
        let origin = match self.endpoint.split_once("://") {
            Some((scheme, rest)) => {
                format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest))
            }
            None => self.endpoint.clone(),
        };
        let mut url = format!("{origin}{}", uri_encode(&url_path, true));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&crate::sigv4::canonical_query(query));
        }
        self.http.send(what, method, &url, &headers, body)
    }

    pub fn create_container(&self) -> Result<()> {
        let what = "PUT container";
        let r = self.request(
            what,
            "PUT",
            None,
            &[("restype".into(), "container".into())],
            &[],
            None,
        )?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        Ok(())
    }

    fn head(&self, key: &str) -> Result<Option<Resp>> {
        let what = format!("HEAD {key}");
        let r = self.request(&what, "HEAD", Some(key), &[], &[], None)?;
        match r.status {
            200 => Ok(Some(r)),
            404 => Ok(None),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn lock_headers(lock: Lock) -> Headers {
        let mut h = vec![
            (
                "x-ms-immutability-policy-until-date".to_string(),
                time::rfc1123(lock.retain_until_unix_s),
            ),
            (
                "x-ms-immutability-policy-mode".to_string(),
                "Locked".to_string(),
            ),
        ];
        if lock.legal_hold {
            h.push(("x-ms-legal-hold".into(), "true".into()));
        }
        h
    }

    fn set_policy(&self, key: &str, lock: Lock) -> Result<()> {
        let what = format!("PUT {key}?comp=immutabilityPolicies");
        let mut h = Self::lock_headers(lock);
        h.retain(|(k, _)| k != "x-ms-legal-hold");
        let r = self.request(
            &what,
            "PUT",
            Some(key),
            &[("comp".into(), "immutabilityPolicies".into())],
            &h,
            None,
        )?;
        if !r.ok() {
            return Err(self.http.status_error(&what, &r));
        }
        Ok(())
    }
}

impl WormTarget for AzureTarget {
    fn describe(&self) -> String {
        self.http.target().to_string()
    }

    fn check_worm(&self) -> Result<WormCheck> {
        let what = "GET container properties";
        let r = self.request(
            what,
            "GET",
            None,
            &[("restype".into(), "container".into())],
            &[],
            None,
        )?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        let on = r.header("x-ms-immutable-storage-with-versioning-enabled") == Some("true");
        Ok(WormCheck {
            enforced: on,
            detail: if on {
                "container has version-level immutability support".into()
            } else {
                "container lacks version-level immutability (x-ms-immutable-storage-with-versioning-enabled)".into()
            },
        })
    }

    fn put_create(&self, key: &str, bytes: &[u8], lock: Option<Lock>) -> Result<PutOutcome> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
        let mut h: Headers = vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("content-md5".into(), md5.clone()),
            ("if-none-match".into(), "*".into()),
            ("x-ms-blob-type".into(), "BlockBlob".into()),
            (
                "x-ms-meta-blake3".into(),
                blake3::hash(bytes).to_hex().to_string(),
            ),
        ];
        if let Some(l) = lock {
            h.extend(Self::lock_headers(l));
        }
        let what = format!("PUT {key}");
        let r = self.request(&what, "PUT", Some(key), &[], &h, Some(bytes))?;
        match r.status {
            201 => {
                let back = r.header("content-md5").unwrap_or("");
                if back != md5 {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: format!("store reports Content-MD5 {back:?}, sent {md5}"),
                    });
                }
                Ok(PutOutcome::Created)
            }
            409 | 412 => {
                let meta = self.head(key)?.map(|r| {
                    (
                        r.header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        r.header("x-ms-meta-blake3").map(str::to_string),
                    )
                });
                if !same_object(self, key, bytes, meta)? {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: "the key already holds different bytes".into(),
                    });
                }
                raise_retention(self, key, lock, |l| self.set_policy(key, l))?;
                Ok(PutOutcome::AlreadyThere)
            }
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn put_mutable(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
        let h: Headers = vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("content-md5".into(), md5),
            ("x-ms-blob-type".into(), "BlockBlob".into()),
        ];
        let what = format!("PUT {key}");
        let r = self.request(&what, "PUT", Some(key), &[], &h, Some(bytes))?;
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
        let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
        let h: Headers = vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("content-md5".into(), md5.clone()),
            match expected {
                Some(tag) => ("if-match".into(), tag.to_string()),
                None => ("if-none-match".into(), "*".into()),
            },
            ("x-ms-blob-type".into(), "BlockBlob".into()),
        ];
        let what = format!("PUT {key} (conditional)");
        let r = self.request(&what, "PUT", Some(key), &[], &h, Some(bytes))?;
        let code = r.header("x-ms-error-code").unwrap_or("");
        match r.status {
            201 => {
                let back = r.header("content-md5").unwrap_or("");
                if back != md5 {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: format!("store reports Content-MD5 {back:?}, sent {md5}"),
                    });
                }
                let tag = r
                    .header("etag")
                    .ok_or_else(|| self.http.protocol(&what, "no ETag in the answer"))?;
                Ok(SwapOutcome::Stored {
                    tag: tag.to_string(),
                })
            }
            412 => Ok(SwapOutcome::Conflict),
            409 if expected.is_none() && code == "BlobAlreadyExists" => Ok(SwapOutcome::Conflict),
            // If-Match on an absent blob (Azurite answers 412; the service may say 404).
            404 if expected.is_some() && code == "BlobNotFound" => Ok(SwapOutcome::Conflict),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let what = format!("GET {key} (bytes {offset}+{len})");
        // Azure's own x-ms-range is signed with the other x-ms- headers.
        let (_, value) = crate::http::range_header(offset, len);
        let range = [("x-ms-range".to_string(), value)];
        let r = self.request(&what, "GET", Some(key), &[], &range, None)?;
        self.http.ranged_body(&what, r, offset, len)
    }

    fn retention(&self, key: &str) -> Result<Option<Retention>> {
        let Some(r) = self.head(key)? else {
            return Ok(None);
        };
        let legal_hold = r.header("x-ms-legal-hold") == Some("true");
        let Some(until) = r.header("x-ms-immutability-policy-until-date") else {
            return Ok(None);
        };
        let until_s = time::parse_rfc1123(until)
            .or_else(|| time::parse_rfc3339(until))
            .ok_or_else(|| {
                self.http
                    .protocol("HEAD", format!("bad immutability date {until:?}"))
            })?;
        Ok(Some(Retention {
            mode: r
                .header("x-ms-immutability-policy-mode")
                .unwrap_or("")
                .to_string(),
            retain_until_unix_s: until_s,
            legal_hold,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..LIST_PAGES_MAX {
            let mut q = vec![
                ("restype".to_string(), "container".to_string()),
                ("comp".to_string(), "list".to_string()),
                ("prefix".to_string(), format!("{}{prefix}", self.prefix)),
            ];
            if let Some(m) = &marker {
                q.push(("marker".into(), m.clone()));
            }
            let what = format!("LIST {prefix}");
            let r = self.request(&what, "GET", None, &q, &[], None)?;
            if !r.ok() {
                return Err(self.http.status_error(&what, &r));
            }
            let text = String::from_utf8_lossy(&r.body).into_owned();
            let doc = xml::parse(&text).map_err(|e| self.http.protocol(&what, e))?;
            for b in doc.all("Blob") {
                let name = b.text_of("Name").unwrap_or_default();
                let bytes = b
                    .text_of("Content-Length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if let Some(k) = name.strip_prefix(&self.prefix) {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        bytes,
                    });
                }
            }
            marker = doc.text_of("NextMarker").filter(|m| !m.is_empty());
            if marker.is_none() {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
        Err(self
            .http
            .protocol("LIST", format!("more than {LIST_PAGES_MAX} pages")))
    }
}
