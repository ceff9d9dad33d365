//! Google Cloud Storage (JSON API): a multipart upload whose metadata carries the object's
//! retention (`retention: {mode: "Locked", retainUntilTime}`) and `md5Hash`, create-only by
//! `ifGenerationMatch=0`; the `md5Hash` the store answers is checked. Authentication is an
//! OAuth bearer token (`GOOGLE_OAUTH_ACCESS_TOKEN`, e.g. from `gcloud auth
//! print-access-token`); service-account key files are not read here.
//!
//! The lease (`put_if`) is an upload with `ifGenerationMatch=<generation>` (`0`: the object
//! must not exist); 412 is a conflict, and the tag is the object's `generation`.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::http::{uri_encode, Http, Resp};
use crate::s3::{raise_retention, same_object};
use crate::{
    content_md5, time, Lock, ObjectInfo, PutOutcome, Result, Retention, SwapOutcome, Tagged,
    TargetOptions, WormCheck, WormError, WormTarget,
};

const LIST_PAGES_MAX: usize = 100_000;
const BOUNDARY: &str = "auditlog-worm-7f3c1e9a2b";
/// `get_tagged` attempts when the object keeps changing between its metadata and its bytes.
const TAGGED_READ_ATTEMPTS: usize = 8;

/// A generation as the JSON API spells it: a decimal string (or, leniently, a number).
fn generation_of(v: &Value) -> Option<String> {
    let g = match &v["generation"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!g.is_empty() && g.bytes().all(|b| b.is_ascii_digit())).then_some(g)
}

pub(crate) struct GcsTarget {
    http: Http,
    bucket: String,
    prefix: String,
    endpoint: String,
    token: Option<String>,
}

impl GcsTarget {
    pub fn new(bucket: &str, prefix: &str, opts: &TargetOptions) -> Result<GcsTarget> {
        Ok(GcsTarget {
            http: Http::new(format!("gs://{bucket}/{prefix}"), opts),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: TargetOptions::env_or(&opts.endpoint, &["STORAGE_EMULATOR_HOST"])
                .unwrap_or_else(|| "https://storage.googleapis.com".into())
                .trim_end_matches('/')
                .to_string(),
            token: TargetOptions::secret_env_or(&opts.bearer_token, &["GOOGLE_OAUTH_ACCESS_TOKEN"]),
        })
    }

    fn send(
        &self,
        what: &str,
        method: &str,
        url: &str,
        mut headers: Vec<(String, String)>,
        body: Option<&[u8]>,
    ) -> Result<Resp> {
        if let Some(t) = &self.token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        self.http.send(what, method, url, &headers, body)
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            uri_encode(&self.bucket, false),
            uri_encode(&format!("{}{key}", self.prefix), false)
        )
    }

    fn json(&self, what: &str, r: &Resp) -> Result<Value> {
        serde_json::from_slice(&r.body)
            .map_err(|e| self.http.protocol(what, format!("not JSON: {e}")))
    }

    fn metadata(&self, key: &str) -> Result<Option<Value>> {
        let what = format!("GET {key} metadata");
        let r = self.send(&what, "GET", &self.object_url(key), vec![], None)?;
        match r.status {
            200 => Ok(Some(self.json(&what, &r)?)),
            404 => Ok(None),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    /// The upload request: multipart/related, JSON metadata then the bytes.
    pub(crate) fn upload_body(name: &str, bytes: &[u8], lock: Option<Lock>) -> (Vec<u8>, String) {
        let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
        let mut meta = json!({
            "name": name,
            "md5Hash": md5,
            "contentType": "application/octet-stream",
            "metadata": {"blake3": blake3::hash(bytes).to_hex().to_string()},
        });
        if let Some(l) = lock {
            meta["retention"] = json!({
                "mode": "Locked",
                "retainUntilTime": time::rfc3339(l.retain_until_unix_s),
            });
            if l.legal_hold {
                meta["temporaryHold"] = json!(true);
            }
        }
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        (body, md5)
    }

    /// Uploads `key`; with `if_generation`, only if the object's generation is that (`"0"`:
    /// only if it does not exist).
    fn upload(
        &self,
        key: &str,
        bytes: &[u8],
        lock: Option<Lock>,
        if_generation: Option<&str>,
    ) -> Result<Resp> {
        let name = format!("{}{key}", self.prefix);
        let (body, _) = Self::upload_body(&name, bytes, lock);
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart",
            self.endpoint,
            uri_encode(&self.bucket, false)
        );
        if let Some(g) = if_generation {
            url.push_str(&format!("&ifGenerationMatch={}", uri_encode(g, false)));
        }
        let headers = vec![(
            "content-type".to_string(),
            format!("multipart/related; boundary={BOUNDARY}"),
        )];
        self.send(&format!("POST {key}"), "POST", &url, headers, Some(&body))
    }

    fn set_retention(&self, key: &str, lock: Lock) -> Result<()> {
        let what = format!("PATCH {key} retention");
        let body = json!({"retention": {"mode": "Locked", "retainUntilTime": time::rfc3339(lock.retain_until_unix_s)}});
        let r = self.send(
            &what,
            "PATCH",
            &format!("{}?overrideUnlockedRetention=true", self.object_url(key)),
            vec![("content-type".into(), "application/json".into())],
            Some(body.to_string().as_bytes()),
        )?;
        if !r.ok() {
            return Err(self.http.status_error(&what, &r));
        }
        Ok(())
    }
}

impl WormTarget for GcsTarget {
    fn describe(&self) -> String {
        self.http.target().to_string()
    }

    fn check_worm(&self) -> Result<WormCheck> {
        let what = "GET bucket";
        let url = format!(
            "{}/storage/v1/b/{}",
            self.endpoint,
            uri_encode(&self.bucket, false)
        );
        let r = self.send(what, "GET", &url, vec![], None)?;
        if !r.ok() {
            return Err(self.http.status_error(what, &r));
        }
        let b = self.json(what, &r)?;
        let object_retention = b["objectRetention"]["mode"] == "Enabled";
        let locked_policy = b["retentionPolicy"]["isLocked"] == true;
        Ok(WormCheck {
            enforced: object_retention || locked_policy,
            detail: match (object_retention, locked_policy) {
                (true, _) => "bucket has object retention enabled".into(),
                (_, true) => "bucket has a locked retention policy".into(),
                _ => "bucket has neither object retention nor a locked retention policy".into(),
            },
        })
    }

    fn put_create(&self, key: &str, bytes: &[u8], lock: Option<Lock>) -> Result<PutOutcome> {
        let what = format!("POST {key}");
        let r = self.upload(key, bytes, lock, Some("0"))?;
        match r.status {
            200 => {
                let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
                let v = self.json(&what, &r)?;
                let back = v["md5Hash"].as_str().unwrap_or("");
                if back != md5 {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: format!("store reports md5Hash {back:?}, sent {md5}"),
                    });
                }
                Ok(PutOutcome::Created)
            }
            412 => {
                let meta = self.metadata(key)?.map(|m| {
                    (
                        m["size"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
                        m["metadata"]["blake3"].as_str().map(str::to_string),
                    )
                });
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
        let r = self.upload(key, bytes, None, None)?;
        if !r.ok() {
            return Err(self.http.status_error(&format!("POST {key}"), &r));
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("GET {key}");
        let r = self.send(
            &what,
            "GET",
            &format!("{}?alt=media", self.object_url(key)),
            vec![],
            None,
        )?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        // The generation from the metadata, then that generation's bytes: the media read is
        // conditional on it (`ifGenerationMatch`), and a write in between (412) starts over.
        let what = format!("GET {key} (tagged)");
        for _ in 0..TAGGED_READ_ATTEMPTS {
            let Some(m) = self.metadata(key)? else {
                return Ok(None);
            };
            let tag = generation_of(&m)
                .ok_or_else(|| self.http.protocol(&what, "no generation in the metadata"))?;
            let r = self.send(
                &what,
                "GET",
                &format!("{}?alt=media&ifGenerationMatch={tag}", self.object_url(key)),
                vec![],
                None,
            )?;
            match r.status {
                200 => return Ok(Some(Tagged { bytes: r.body, tag })),
                404 | 412 => continue,
                _ => return Err(self.http.status_error(&what, &r)),
            }
        }
        Err(self.http.protocol(
            &what,
            format!("the object changed under each of {TAGGED_READ_ATTEMPTS} reads"),
        ))
    }

    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&str>) -> Result<SwapOutcome> {
        let what = format!("POST {key} (conditional)");
        let generation = expected.unwrap_or("0");
        // A tag is a generation (digits): anything else cannot be sent as a precondition.
        if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WormError::Config(format!(
                "{}: {key}: {generation:?} is not a GCS generation",
                self.describe()
            )));
        }
        let r = self.upload(key, bytes, None, Some(generation))?;
        match r.status {
            200 => {
                let md5 = base64::engine::general_purpose::STANDARD.encode(content_md5(bytes));
                let v = self.json(&what, &r)?;
                let back = v["md5Hash"].as_str().unwrap_or("");
                if back != md5 {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: format!("store reports md5Hash {back:?}, sent {md5}"),
                    });
                }
                let tag = generation_of(&v)
                    .ok_or_else(|| self.http.protocol(&what, "no generation in the answer"))?;
                Ok(SwapOutcome::Stored { tag })
            }
            412 => Ok(SwapOutcome::Conflict),
            _ => Err(self.http.status_error(&what, &r)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let what = format!("GET {key} (bytes {offset}+{len})");
        let r = self.send(
            &what,
            "GET",
            &format!("{}?alt=media", self.object_url(key)),
            vec![crate::http::range_header(offset, len)],
            None,
        )?;
        self.http.ranged_body(&what, r, offset, len)
    }

    fn retention(&self, key: &str) -> Result<Option<Retention>> {
        let Some(m) = self.metadata(key)? else {
            return Ok(None);
        };
        let Some(until) = m["retention"]["retainUntilTime"].as_str() else {
            return Ok(None);
        };
        let until_s = time::parse_rfc3339(until).ok_or_else(|| {
            self.http
                .protocol("metadata", format!("bad retainUntilTime {until:?}"))
        })?;
        Ok(Some(Retention {
            mode: m["retention"]["mode"].as_str().unwrap_or("").to_string(),
            retain_until_unix_s: until_s,
            legal_hold: m["temporaryHold"] == true || m["eventBasedHold"] == true,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..LIST_PAGES_MAX {
            let mut url = format!(
                "{}/storage/v1/b/{}/o?prefix={}",
                self.endpoint,
                uri_encode(&self.bucket, false),
                uri_encode(&format!("{}{prefix}", self.prefix), false)
            );
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={}", uri_encode(t, false)));
            }
            let what = format!("LIST {prefix}");
            let r = self.send(&what, "GET", &url, vec![], None)?;
            if !r.ok() {
                return Err(self.http.status_error(&what, &r));
            }
            let v = self.json(&what, &r)?;
            for item in v["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap_or("");
                let bytes = item["size"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if let Some(k) = name.strip_prefix(&self.prefix) {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        bytes,
                    });
                }
            }
            token = v["nextPageToken"].as_str().map(str::to_string);
            if token.is_none() {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
        Err(self
            .http
            .protocol("LIST", format!("more than {LIST_PAGES_MAX} pages")))
    }
}
