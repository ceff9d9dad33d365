//! Real object stores for the WORM tests: moto's S3 server and Azurite, each started on a
//! free 127.0.0.1 port; a recording TCP proxy (to see exactly what went over the wire); a
//! small recording GCS JSON-API server (no GCS emulator enforces retention); and boto3 (it
//! ships with moto) as an independent S3 client for read-backs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tools::{azurite_blob, require, which, Tool};

pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub use crate::daemon::free_port;

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited at start: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not come up on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_moto() -> Server {
    require(Tool::Moto);
    let port = free_port();
    let mut cmd = match which("moto_server") {
        Some(p) => Command::new(p),
        None => {
            let mut c = Command::new("python3");
            c.args(["-m", "moto.server"]);
            c
        }
    };
    let mut child = cmd
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server (pip install 'moto[server]')");
    wait_port(port, &mut child, "moto_server");
    warm_up_moto(port, &mut child);
    Server { child, port }
}

/// moto answers its first S3 request only after importing its S3 backend, which took over
/// the tests' 2 s request timeout when several servers started at once on a busy machine
/// (`CreateBucket`: "timed out reading response", seen in a soak run). So one S3 request
/// (ListBuckets, with an S3 signature header so moto routes it to S3) is answered before
/// the server is handed out, with a generous deadline: any HTTP answer will do.
fn warm_up_moto(port: u16, child: &mut Child) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = agent
            .get(&format!("http://127.0.0.1:{port}/"))
            .set(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .call();
        match r {
            Ok(_) | Err(ureq::Error::Status(..)) => return,
            Err(e) => {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("moto_server exited at start: {st}");
                }
                assert!(Instant::now() < deadline, "moto_server never answered: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `azurite-blob` (see [`crate::tools::azurite_blob`]) on a free port, storing in `dir`.
pub fn start_azurite(dir: &Path) -> Server {
    require(Tool::Azurite);
    let exe = azurite_blob();
    let port = free_port();
    let mut child = Command::new(&exe)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir)
        .args(["--skipApiVersionCheck", "--loose", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {} (npm install azurite): {e}", exe.display()));
    wait_port(port, &mut child, "azurite-blob");
    Server { child, port }
}

/// Runs Python with boto3 against an S3 endpoint; `code` sees `s3` (a client) and prints
/// its answer. Returns stdout.
pub fn boto3(endpoint: &str, code: &str) -> String {
    require(Tool::Moto);
    let prog = format!(
        "import boto3, json, sys\ns3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n{code}\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&prog)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "boto3 script failed: {}\n{prog}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP proxy that records every byte clients send through it.
pub struct RecordingProxy {
    pub port: u16,
    pub sent: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    pub fn start(upstream: u16) -> RecordingProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("addr").port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let rec = sent.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c2, mut s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => continue,
                };
                let rec = rec.clone();
                let mut client = client;
                let mut server = server;
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = client.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        rec.lock().expect("lock").extend_from_slice(&buf[..n]);
                        if server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = server.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        RecordingProxy { port, sent }
    }

    /// Each request whose first line starts with `prefix`: its header lines, lower-cased names.
    pub fn requests(&self, prefix: &str) -> Vec<Vec<(String, String)>> {
        let bytes = self.sent.lock().expect("lock").clone();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(prefix) {
            let block = &rest[i..];
            let head = block.split("\r\n\r\n").next().unwrap_or("");
            let mut lines = head.split("\r\n");
            let first = lines.next().unwrap_or("").to_string();
            let mut h = vec![("request".to_string(), first)];
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    h.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            out.push(h);
            rest = &block[prefix.len()..];
        }
        out
    }
}

/// Minimal GCS JSON API over plain HTTP, enough for `auditlog-worm`'s GCS target: bucket
/// metadata, multipart uploads (recording each upload's metadata and query string) with a
/// `generation` per object that every write raises, `ifGenerationMatch` on uploads and media
/// reads (0: the object must not exist), object metadata and media reads, listing.
pub struct FakeGcs {
    pub port: u16,
    pub uploads: Arc<Mutex<Vec<serde_json::Value>>>,
    pub upload_queries: Arc<Mutex<Vec<String>>>,
}

type Objects = Arc<Mutex<std::collections::BTreeMap<String, (serde_json::Value, Vec<u8>)>>>;

impl FakeGcs {
    pub fn start() -> FakeGcs {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let uploads = Arc::new(Mutex::new(Vec::new()));
        let upload_queries = Arc::new(Mutex::new(Vec::new()));
        let objects: Objects = Arc::default();
        let (up, queries) = (uploads.clone(), upload_queries.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let _ = serve_gcs(c, &up, &queries, &objects);
            }
        });
        FakeGcs {
            port,
            uploads,
            upload_queries,
        }
    }
}

/// The object's generation as the JSON API spells it (a decimal string); 0 when absent.
fn generation_of(object: Option<&(serde_json::Value, Vec<u8>)>) -> u64 {
    object
        .and_then(|(m, _)| m["generation"].as_str()?.parse().ok())
        .unwrap_or(0)
}

/// Whether `ifGenerationMatch`, if the query has it, holds for `current`.
fn generation_matches(query: &str, current: u64) -> bool {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("ifGenerationMatch="))
        .is_none_or(|want| want.parse() == Ok(current))
}

fn serve_gcs(
    c: TcpStream,
    uploads: &Mutex<Vec<serde_json::Value>>,
    upload_queries: &Mutex<Vec<String>>,
    objects: &Objects,
) -> std::io::Result<()> {
    let req = crate::recording::read_request(&c)?;
    let (method, target, body) = (req.method.as_str(), req.target.as_str(), &req.body);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let decode = |s: &str| s.replace("%2F", "/");
    let (status, answer): (u16, Vec<u8>) = if method == "POST" && path.starts_with("/upload/") {
        // multipart/related: JSON metadata, then the media.
        let text = String::from_utf8_lossy(body).into_owned();
        let json_start = text.find("\r\n\r\n").map_or(0, |i| i + 4);
        let json_end = text[json_start..]
            .find("\r\n--")
            .map_or(0, |i| json_start + i);
        let meta: serde_json::Value =
            serde_json::from_str(&text[json_start..json_end]).unwrap_or_default();
        let media_start = body
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"\r\n\r\n")
            .nth(1)
            .map_or(body.len(), |(i, _)| i + 4);
        let media_end = body
            .windows(4)
            .rposition(|w| w == b"\r\n--")
            .unwrap_or(body.len());
        let media = body[media_start..media_end.max(media_start)].to_vec();
        uploads.lock().expect("lock").push(meta.clone());
        upload_queries.lock().expect("lock").push(query.to_string());
        let name = meta["name"].as_str().unwrap_or("").to_string();
        let mut objs = objects.lock().expect("lock");
        let generation = generation_of(objs.get(&name));
        if !generation_matches(query, generation) {
            (412, b"{}".to_vec())
        } else {
            let mut m = meta.clone();
            m["size"] = serde_json::json!(media.len().to_string());
            m["generation"] = serde_json::json!((generation + 1).to_string());
            objs.insert(name, (m.clone(), media));
            (200, m.to_string().into_bytes())
        }
    } else if let Some(rest) = path.strip_prefix("/storage/v1/b/") {
        let objs = objects.lock().expect("lock");
        match rest.split_once("/o/") {
            None if !rest.contains('/') => (
                200,
                br#"{"name":"b","objectRetention":{"mode":"Enabled"}}"#.to_vec(),
            ),
            Some((_, name)) => match objs.get(&decode(name)) {
                Some(o) if !generation_matches(query, generation_of(Some(o))) => {
                    (412, b"{}".to_vec())
                }
                Some((_, media)) if query.contains("alt=media") => (200, media.clone()),
                Some((m, _)) => (200, m.to_string().into_bytes()),
                None => (404, b"{}".to_vec()),
            },
            None => {
                let items: Vec<&serde_json::Value> = objs.values().map(|(m, _)| m).collect();
                (
                    200,
                    serde_json::json!({ "items": items })
                        .to_string()
                        .into_bytes(),
                )
            }
        }
    } else {
        (404, b"{}".to_vec())
    };
    let mut w = c;
    write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        answer.len()
    )?;
    w.write_all(&answer)?;
    w.flush()
}
