//! A small blocking HTTP client over ureq: one agent per target, bounded answers, errors
//! that say which target and which operation failed.

use std::io::Read;
use std::time::Duration;

use crate::{Result, TargetOptions, WormError};

pub struct Http {
    agent: ureq::Agent,
    target: String,
    /// Largest answer body read; a bigger one is an error, not an allocation.
    pub body_bytes_max: u64,
}

pub struct Resp {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn text(&self) -> String {
        let n = self.body.len().min(600);
        String::from_utf8_lossy(&self.body[..n]).into_owned()
    }
}

impl Http {
    pub fn new(target: String, opts: &TargetOptions) -> Http {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(
                opts.connect_timeout_ms
                    .unwrap_or(crate::CONNECT_TIMEOUT_MS_DEFAULT),
            ))
            .timeout(Duration::from_millis(
                opts.request_timeout_ms
                    .unwrap_or(crate::REQUEST_TIMEOUT_MS_DEFAULT),
            ))
            // Redirects would re-send signed requests elsewhere; the stores never need them.
            .redirects(0)
            .build();
        Http {
            agent,
            target,
            body_bytes_max: opts
                .object_bytes_max
                .unwrap_or(crate::OBJECT_BYTES_MAX_DEFAULT),
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sends one request; any status comes back as a `Resp`, only transport failures as errors.
    pub fn send(
        &self,
        what: &str,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Resp> {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(WormError::Transport {
                    target: self.target.clone(),
                    what: what.to_string(),
                    reason: t.to_string(),
                })
            }
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut body = Vec::new();
        resp.into_reader()
            .take(self.body_bytes_max + 1)
            .read_to_end(&mut body)
            .map_err(|e| WormError::Transport {
                target: self.target.clone(),
                what: what.to_string(),
                reason: format!("reading the answer: {e}"),
            })?;
        if body.len() as u64 > self.body_bytes_max {
            return Err(WormError::TooLarge {
                target: self.target.clone(),
                key: what.to_string(),
                bytes: body.len() as u64,
                max: self.body_bytes_max,
            });
        }
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub fn status_error(&self, what: &str, r: &Resp) -> WormError {
        WormError::Status {
            target: self.target.clone(),
            what: what.to_string(),
            status: r.status,
            body: r.text(),
        }
    }

    /// A GET's answer as a tagged object (S3 and Azure: the tag is the ETag): `None` for 404.
    pub fn etag_tagged(&self, what: &str, r: Resp) -> Result<Option<crate::Tagged>> {
        match r.status {
            200 => {
                let tag = r
                    .header("etag")
                    .ok_or_else(|| self.protocol(what, "no ETag in the answer"))?
                    .to_string();
                Ok(Some(crate::Tagged { bytes: r.body, tag }))
            }
            404 => Ok(None),
            _ => Err(self.status_error(what, &r)),
        }
    }

    pub fn protocol(&self, what: &str, reason: impl Into<String>) -> WormError {
        WormError::Protocol {
            target: self.target.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    /// The body of a ranged GET (`range_header`) for bytes `[offset, offset + len)`: 206
    /// with exactly those bytes, or 200 with the whole object (RFC 9110 §14.2 lets a server
    /// ignore Range) cut to them; 404 is `None`; anything else, or a short answer, an error.
    pub fn ranged_body(
        &self,
        what: &str,
        r: Resp,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, WormError> {
        let body = match r.status {
            206 => r.body,
            200 => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                match r.body.get(start..end) {
                    Some(b) => b.to_vec(),
                    None => return Err(self.protocol(what, "the object is shorter than the range")),
                }
            }
            404 => return Ok(None),
            _ => return Err(self.status_error(what, &r)),
        };
        if body.len() as u64 != len {
            return Err(self.protocol(
                what,
                format!("{} bytes answered for a range of {len}", body.len()),
            ));
        }
        Ok(Some(body))
    }
}

/// The `Range` header (RFC 9110 §14.2) for bytes `[offset, offset + len)`; `len` ≥ 1.
pub(crate) fn range_header(offset: u64, len: u64) -> (String, String) {
    debug_assert!(len >= 1);
    (
        "range".into(),
        format!("bytes={offset}-{}", offset + len - 1),
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` if `keep_slash`),
/// as SigV4 and the stores' URLs want.
pub(crate) fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
