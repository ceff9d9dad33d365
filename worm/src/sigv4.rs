//! AWS Signature Version 4 (header form), as the S3 API documents it: canonical request,
//! string to sign, derived key, `Authorization` header. Pure: the caller supplies the time.
//! Checked against AWS's published test vectors below.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::http::uri_encode;

#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Hand-written so a secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

pub struct SignRequest<'a> {
    pub method: &'a str,
    /// The URL path, not yet encoded (`/bucket/key`).
    pub path: &'a str,
    /// Query parameters, not yet encoded.
    pub query: &'a [(String, String)],
    /// Every header to sign (`host` included), any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (also sent as `x-amz-content-sha256`).
    pub payload_sha256: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, also sent as `x-amz-date`.
    pub amz_date: &'a str,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The encoded query string, sorted as SigV4 requires; also what goes on the URL.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Returns the `Authorization` header value.
pub fn authorization(req: &SignRequest<'_>, creds: &Credentials) -> String {
    let mut hs: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    hs.sort();
    let signed: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(req.path, true),
        canonical_query(req.query),
        canonical_headers,
        signed,
        req.payload_sha256
    );
    let date = &req.amz_date[..8];
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        req.amz_date,
        sha256_hex(canonical.as_bytes())
    );
    let k = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k = hmac(&k, req.region.as_bytes());
    let k = hmac(&k, req.service.as_bytes());
    let k = hmac(&k, b"aws4_request");
    let sig = hex::encode(hmac(&k, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}",
        creds.access_key_id
    )
}

/// One request to sign: what [`signed_headers`] needs besides the credentials.
pub struct Request<'a> {
    pub method: &'a str,
    /// `scheme://host[:port]`: the host signed is what follows the scheme.
    pub endpoint: &'a str,
    /// The URL path, not yet encoded.
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// Headers to sign besides `host`, `x-amz-date`, `x-amz-content-sha256` and the token.
    pub extra: &'a [(String, String)],
    pub body: &'a [u8],
    pub region: &'a str,
    pub service: &'a str,
    pub unix_s: u64,
}

/// The headers to send with `req` (`host` excluded: the HTTP client writes it from the
/// URL, and a second one would be a duplicate), `authorization` last.
pub fn signed_headers(req: &Request<'_>, creds: &Credentials) -> Vec<(String, String)> {
    let host = req
        .endpoint
        .split_once("://")
        .map_or(req.endpoint, |(_, h)| h)
        .to_string();
    let amz_date = crate::time::amz_date(req.unix_s);
    let payload = sha256_hex(req.body);
    let mut headers = vec![
        ("host".to_string(), host),
        ("x-amz-date".to_string(), amz_date.clone()),
        ("x-amz-content-sha256".to_string(), payload.clone()),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    headers.extend_from_slice(req.extra);
    let auth = authorization(
        &SignRequest {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: &headers,
            payload_sha256: &payload,
            region: req.region,
            service: req.service,
            amz_date: &amz_date,
        },
        creds,
    );
    headers.retain(|(k, _)| k != "host");
    headers.push(("authorization".into(), auth));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    /// AWS SigV4 test suite, `get-vanilla`.
    #[test]
    fn get_vanilla() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let headers = [
            h("Host", "example.amazonaws.com"),
            h("X-Amz-Date", "20150830T123600Z"),
        ];
        let auth = authorization(
            &SignRequest {
                method: "GET",
                path: "/",
                query: &[],
                headers: &headers,
                payload_sha256: &sha256_hex(b""),
                region: "us-east-1",
                service: "service",
                amz_date: "20150830T123600Z",
            },
            &creds,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The S3 documentation's "GET Object" example (Signature Calculations for the
    /// Authorization Header).
    #[test]
    fn s3_get_object_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let empty = sha256_hex(b"");
        let headers = [
            h("Host", "examplebucket.s3.amazonaws.com"),
            h("Range", "bytes=0-9"),
            h("x-amz-content-sha256", &empty),
            h("x-amz-date", "20130524T000000Z"),
        ];
        let auth = authorization(
            &SignRequest {
                method: "GET",
                path: "/test.txt",
                query: &[],
                headers: &headers,
                payload_sha256: &empty,
                region: "us-east-1",
                service: "s3",
                amz_date: "20130524T000000Z",
            },
            &creds,
        );
        assert!(
            auth.ends_with(
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
    }
}
