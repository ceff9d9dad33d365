//! A blocking client of the HTTP API (DESIGN.md "Reading and proving"). Every answer is
//! typed; a refusal carries the server's `{"error":{"code","message"}}` and its status.
//! Nothing here trusts the server: callers verify what they get with `auditlog-formats`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use auditlog_formats::hash::{from_hex, to_hex};
use auditlog_formats::record::RECORD_BYTES_MAX;
use auditlog_formats::tiles::{bundle_entries, Tile, TileKind, ENTRY_BYTES_MAX, TILE_WIDTH};
use auditlog_formats::Hash;
use serde::Deserialize;

/// Largest JSON or text answer read into memory: a receipt is about 120 bytes, so this
/// covers a full-sized NDJSON request's receipts many times over.
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Entry bundles fetched at once by `entries`, so that one request's round trip and the
/// server's read of 256 records do not set the pace.
const BUNDLE_FETCHERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error status.
    #[error("{what}: HTTP {status} {code}: {message}")]
    Api {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: connection, DNS, TLS or timeout.
    // Not `source`: the messages already hold their causes, and a chain would repeat them.
    #[error("{what}: {detail}")]
    Transport {
        what: String,
        detail: Box<ureq::Transport>,
    },
    #[error("{what}: reading the answer: {detail}")]
    Read {
        what: String,
        detail: std::io::Error,
    },
    /// An answer that is not what the API promises.
    #[error("{what}: unexpected answer: {reason}")]
    BadAnswer { what: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl HttpError {
    /// The HTTP status of a refusal, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn bad(what: &str, reason: impl Into<String>) -> HttpError {
        HttpError::BadAnswer {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, HttpError>;

/// One event's receipt: enough, with the event's bytes, to recompute its leaf hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub leaf_hash: Hash,
    pub received_at_unix_ns: u64,
    /// Who the server recorded as the submitter (HTTP answers say; TCP acks do not).
    pub submitter: Option<String>,
}

impl Receipt {
    /// The receipt as one JSON line, as the API spells it (without the newline).
    pub fn to_json_line(&self) -> String {
        let mut line = format!(
            r#"{{"index":{},"leaf_hash":"{}","received_at_unix_ns":{}"#,
            self.index,
            to_hex(&self.leaf_hash),
            self.received_at_unix_ns
        );
        if let Some(s) = &self.submitter {
            line.push_str(r#","submitter":"#);
            line.push_str(&serde_json::Value::from(s.as_str()).to_string());
        }
        line.push('}');
        line
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub hashes: Vec<Hash>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub hashes: Vec<Hash>,
}

/// `GET /v1/log`: what the server says about itself. Its keys are only a hint: pin them.
#[derive(Clone, Debug, Deserialize)]
pub struct LogInfo {
    pub origin: String,
    pub tree_hash: String,
    pub verifier_keys: Vec<String>,
    #[serde(default)]
    pub tree_size: u64,
}

/// Which leaf an inclusion proof is asked for.
#[derive(Clone, Copy, Debug)]
pub enum Leaf {
    Index(u64),
    Hash(Hash),
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Connect, read and write timeout of every request (a long poll adds its wait).
    pub timeout_ms: u64,
    /// PEM file of CA certificates to trust for `https://` instead of the web PKI roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout_ms: 30_000,
            ca_file: None,
        }
    }
}

pub struct HttpClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct RawReceipt {
    index: u64,
    leaf_hash: String,
    received_at_unix_ns: u64,
    #[serde(default)]
    submitter: Option<String>,
}

#[derive(Deserialize)]
struct RawReceipts {
    receipts: Vec<RawReceipt>,
    #[serde(default)]
    submitter: Option<String>,
}

#[derive(Deserialize)]
struct RawInclusion {
    index: u64,
    size: u64,
    hashes: Vec<String>,
}

#[derive(Deserialize)]
struct RawConsistency {
    from: u64,
    to: u64,
    hashes: Vec<String>,
}

fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| HttpError::Tls(format!("{}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| HttpError::Tls(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| HttpError::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(HttpError::Tls(format!(
            "{}: no certificate in the file",
            ca_file.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn hashes(what: &str, list: &[String]) -> Result<Vec<Hash>> {
    list.iter()
        .map(|h| from_hex(h).ok_or_else(|| HttpError::bad(what, format!("hash {h:?} is not hex"))))
        .collect()
}

impl HttpClient {
    /// A client of the server at `base` (`http://host:port` or `https://…`).
    pub fn new(base: &str, token: Option<&str>, opts: &ClientOptions) -> Result<HttpClient> {
        let timeout = Duration::from_millis(opts.timeout_ms);
        let mut b = ureq::AgentBuilder::new().timeout(timeout);
        if let Some(ca) = &opts.ca_file {
            b = b.tls_config(tls_config(ca)?);
        }
        Ok(HttpClient {
            agent: b.build(),
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            timeout,
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// Turns a ureq outcome into the answer's body, or the server's refusal.
    fn finish(
        &self,
        what: &str,
        res: std::result::Result<ureq::Response, ureq::Error>,
        max: u64,
    ) -> Result<Vec<u8>> {
        let read = |resp: ureq::Response| -> Result<Vec<u8>> {
            let mut body = Vec::new();
            resp.into_reader()
                .take(max + 1)
                .read_to_end(&mut body)
                .map_err(|detail| HttpError::Read {
                    what: what.to_string(),
                    detail,
                })?;
            if body.len() as u64 > max {
                return Err(HttpError::bad(what, format!("over {max} bytes")));
            }
            Ok(body)
        };
        match res {
            Ok(resp) => read(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let body = read(resp)?;
                let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                    Ok(e) => (e.error.code, e.error.message),
                    // Not ours (a proxy, say): show what came.
                    Err(_) => (
                        "unknown".to_string(),
                        String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                    ),
                };
                Err(HttpError::Api {
                    what: what.to_string(),
                    status,
                    code,
                    message,
                })
            }
            Err(ureq::Error::Transport(t)) => Err(HttpError::Transport {
                what: what.to_string(),
                detail: Box::new(t),
            }),
        }
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, what: &str, path: &str) -> Result<T> {
        let body = self.finish(what, self.request("GET", path).call(), RESPONSE_BYTES_MAX)?;
        serde_json::from_slice(&body).map_err(|e| HttpError::bad(what, e.to_string()))
    }

    /// `POST /v1/events` as NDJSON: all of `events` are stored, in order, or none.
    pub fn send_events(&self, events: &[&[u8]]) -> Result<Vec<Receipt>> {
        let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum());
        for e in events {
            body.extend_from_slice(e);
            body.push(b'\n');
        }
        self.post_events("application/x-ndjson", &body, events.len())
    }

    /// `POST /v1/events` of one JSON object, sent as is (it may span lines).
    pub fn send_event(&self, event: &[u8]) -> Result<Receipt> {
        let mut r = self.post_events("application/json", event, 1)?;
        r.pop()
            .ok_or_else(|| HttpError::bad("POST /v1/events", "no receipt"))
    }

    fn post_events(&self, content_type: &str, body: &[u8], want: usize) -> Result<Vec<Receipt>> {
        let what = "POST /v1/events";
        let res = self
            .request("POST", "/v1/events")
            .set("Content-Type", content_type)
            .send_bytes(body);
        let body = self.finish(what, res, RESPONSE_BYTES_MAX)?;
        let raw: RawReceipts =
            serde_json::from_slice(&body).map_err(|e| HttpError::bad(what, e.to_string()))?;
        if raw.receipts.len() != want {
            return Err(HttpError::bad(
                what,
                format!("{} receipts for {want} events", raw.receipts.len()),
            ));
        }
        let submitter = raw.submitter;
        raw.receipts
            .into_iter()
            .map(|r| {
                Ok(Receipt {
                    index: r.index,
                    leaf_hash: from_hex(&r.leaf_hash)
                        .ok_or_else(|| HttpError::bad(what, "leaf_hash is not hex"))?,
                    received_at_unix_ns: r.received_at_unix_ns,
                    submitter: submitter.clone(),
                })
            })
            .collect()
    }

    /// `GET /v1/events/{index}`: the event as the server shows it, as JSON text.
    pub fn get_event(&self, index: u64) -> Result<String> {
        let what = format!("GET /v1/events/{index}");
        let path = format!("/v1/events/{index}");
        let body = self.finish(&what, self.request("GET", &path).call(), RESPONSE_BYTES_MAX)?;
        let text = String::from_utf8(body).map_err(|_| HttpError::bad(&what, "not UTF-8"))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| HttpError::bad(&what, e.to_string()))?;
        Ok(text)
    }

    /// `GET /v1/proof/window`: the records received in `[since, until)` at `size` as an
    /// index range, its boundaries and its range proof (JSON, checked by the caller).
    pub fn window(&self, since_ns: u64, until_ns: u64, size: u64) -> Result<serde_json::Value> {
        self.get_json(
            "GET /v1/proof/window",
            &format!("/v1/proof/window?since={since_ns}&until={until_ns}&size={size}"),
        )
    }

    /// `GET /v1/search` with `query` (and `cursor` to go on): the NDJSON lines, and the
    /// cursor to go on with when the server stopped before the end.
    pub fn search(
        &self,
        query: &[(&str, String)],
        cursor: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let mut r = self.request("GET", "/v1/search");
        for (k, v) in query {
            r = r.query(k, v);
        }
        if let Some(c) = cursor {
            r = r.query("cursor", c);
        }
        let res = r.call();
        let next = res
            .as_ref()
            .ok()
            .and_then(|resp| resp.header("auditlog-cursor").map(str::to_string));
        let body = self.finish("GET /v1/search", res, RESPONSE_BYTES_MAX)?;
        Ok((body, next))
    }

    /// `GET /v1/events?start&end&format=record`: the exact record bytes of `[start, end)`,
    /// in order (asked for in pages of `page` records).
    pub fn records(&self, start: u64, end: u64, page: u64) -> Result<Vec<Vec<u8>>> {
        use base64::Engine as _;
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut at = start;
        while at < end {
            let stop = (at + page.max(1)).min(end);
            let what = format!("GET /v1/events?start={at}&end={stop}&format=record");
            let path = format!("/v1/events?start={at}&end={stop}&format=record");
            let body = self.finish(&what, self.request("GET", &path).call(), RESPONSE_BYTES_MAX)?;
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                #[derive(serde::Deserialize)]
                struct Line {
                    index: u64,
                    record: String,
                }
                let l: Line = serde_json::from_slice(line)
                    .map_err(|e| HttpError::bad(&what, e.to_string()))?;
                if l.index != start + out.len() as u64 {
                    return Err(HttpError::bad(
                        &what,
                        format!("record {} out of order", l.index),
                    ));
                }
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(l.record)
                        .map_err(|e| HttpError::bad(&what, e.to_string()))?,
                );
            }
            if out.len() as u64 != stop - start {
                return Err(HttpError::bad(&what, "fewer records than asked for"));
            }
            at = stop;
        }
        Ok(out)
    }

    /// The exact record bytes of `[start, end)` from the C2SP tlog-tiles entry bundles of
    /// the tree of `size` (`GET /tile/entries/<N>[.p/<W>]`, FORMATS.md §5.8): binary, 256
    /// records a request, instead of `records`' base64 JSON lines. The bundles
    /// `start / 256 .. ceil(end / 256)` are fetched by `BUNDLE_FETCHERS` connections at once,
    /// full ones where the tree has them and the partial one of `size` at its end; the
    /// records outside the range at either edge are dropped. `end <= size`.
    pub fn entries(&self, start: u64, end: u64, size: u64) -> Result<Vec<Vec<u8>>> {
        assert!(start <= end && end <= size, "[{start}, {end}) in {size}");
        let width = u64::from(TILE_WIDTH);
        let bundles: Vec<Tile> = (start / width..end.div_ceil(width))
            .map(|n| Tile {
                kind: TileKind::Entries,
                n,
                width: (size - n * width).min(width) as u32,
            })
            .collect();
        let per = bundles.len().div_ceil(BUNDLE_FETCHERS).max(1);
        let fetched: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
            let workers: Vec<_> = bundles
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || -> Result<Vec<Vec<u8>>> {
                        let mut out = Vec::new();
                        for t in chunk {
                            let first = t.n * width;
                            let (lo, hi) =
                                (start.max(first) - first, end.min(first + width) - first);
                            out.extend(self.bundle(*t, lo as usize..hi as usize)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut out = Vec::with_capacity((end - start) as usize);
        for part in fetched {
            out.extend(part?);
        }
        assert_eq!(
            out.len() as u64,
            end - start,
            "every bundle was checked whole"
        );
        Ok(out)
    }

    /// Entries `keep` of one bundle, checked to hold exactly its width of whole entries.
    fn bundle(&self, t: Tile, keep: std::ops::Range<usize>) -> Result<Vec<Vec<u8>>> {
        let path = format!("/{}", t.path());
        let what = format!("GET {path}");
        let bytes_max = t.width as u64 * (2 + ENTRY_BYTES_MAX as u64);
        let body = self.finish(&what, self.request("GET", &path).call(), bytes_max)?;
        let mut out = Vec::with_capacity(keep.len());
        let mut count = 0;
        for (k, e) in bundle_entries(&body).enumerate() {
            let e = e.map_err(|e| HttpError::bad(&what, e.to_string()))?;
            if keep.contains(&k) {
                out.push(e.to_vec());
            }
            count += 1;
        }
        if count != t.width as usize {
            return Err(HttpError::bad(
                &what,
                format!("{count} entries, expected {}", t.width),
            ));
        }
        Ok(out)
    }

    /// `GET /v1/events/{index}?format=record`: the exact record bytes the leaf hash covers.
    pub fn get_record(&self, index: u64) -> Result<Vec<u8>> {
        let what = format!("GET /v1/events/{index}?format=record");
        let path = format!("/v1/events/{index}?format=record");
        self.finish(
            &what,
            self.request("GET", &path).call(),
            RECORD_BYTES_MAX as u64,
        )
    }

    /// `GET /v1/checkpoint`: the latest signed note, or with `min_size`, one covering it
    /// (waiting up to `wait_ms` on the server).
    pub fn checkpoint(&self, min_size: Option<u64>, wait_ms: u64) -> Result<String> {
        let what = "GET /v1/checkpoint";
        let mut req = self.request("GET", "/v1/checkpoint");
        if let Some(n) = min_size {
            req = req
                .query("min_size", &n.to_string())
                .query("wait_ms", &wait_ms.to_string())
                .timeout(self.timeout + Duration::from_millis(wait_ms));
        }
        let body = self.finish(
            what,
            req.call(),
            auditlog_formats::note::MAX_TEXT_BYTES as u64,
        )?;
        String::from_utf8(body).map_err(|_| HttpError::bad(what, "not UTF-8"))
    }

    /// `GET /v1/proof/inclusion`, by index or by leaf hash, in the tree of `size`.
    pub fn inclusion_proof(&self, leaf: Leaf, size: u64) -> Result<InclusionProof> {
        let by = match leaf {
            Leaf::Index(i) => format!("index={i}"),
            Leaf::Hash(h) => format!("leaf_hash={}", to_hex(&h)),
        };
        let path = format!("/v1/proof/inclusion?{by}&size={size}");
        let what = format!("GET {path}");
        let raw: RawInclusion = self.get_json(&what, &path)?;
        if raw.size != size || matches!(leaf, Leaf::Index(i) if i != raw.index) {
            return Err(HttpError::bad(
                &what,
                format!("proof is for leaf {} at size {}", raw.index, raw.size),
            ));
        }
        Ok(InclusionProof {
            index: raw.index,
            size: raw.size,
            hashes: hashes(&what, &raw.hashes)?,
        })
    }

    /// `GET /v1/proof/consistency?from=&to=`.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<ConsistencyProof> {
        let path = format!("/v1/proof/consistency?from={from}&to={to}");
        let what = format!("GET {path}");
        let raw: RawConsistency = self.get_json(&what, &path)?;
        if (raw.from, raw.to) != (from, to) {
            return Err(HttpError::bad(
                &what,
                format!("proof is from {} to {}", raw.from, raw.to),
            ));
        }
        Ok(ConsistencyProof {
            from,
            to,
            hashes: hashes(&what, &raw.hashes)?,
        })
    }

    /// `GET /v1/log`.
    pub fn log_info(&self) -> Result<LogInfo> {
        self.get_json("GET /v1/log", "/v1/log")
    }
}

/// Keeps receipts: appends each as one NDJSON line to a file, flushed per batch, so a
/// sender that dies keeps every receipt of what the server acknowledged before.
pub struct Receipts {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Receipts {
    pub fn create(path: &Path) -> std::io::Result<Receipts> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Receipts {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, receipts: &[Receipt]) -> std::io::Result<()> {
        for r in receipts {
            self.out.write_all(r.to_json_line().as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }

    /// Flushes and syncs: receipts are evidence, worth one `fsync` at the end.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

/// Parses one line of a receipts file.
pub fn parse_receipt_line(line: &str) -> Option<Receipt> {
    let r: RawReceipt = serde_json::from_str(line).ok()?;
    Some(Receipt {
        index: r.index,
        leaf_hash: from_hex(&r.leaf_hash)?,
        received_at_unix_ns: r.received_at_unix_ns,
        submitter: r.submitter,
    })
}
