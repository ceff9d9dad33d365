//! A recording HTTP/1.1 server on 127.0.0.1 for the cloud KMS tests: each request is
//! recorded (method, target, headers, body) and answered by the test's handler, one request
//! per connection (`Connection: close`), so the client under test sees a real server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The body as `application/x-www-form-urlencoded` pairs, percent-decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a handler answers: status and JSON (or any text) body.
pub type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

pub struct RecordingServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl RecordingServer {
    pub fn start(handler: Arc<Handler>) -> RecordingServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let rec = requests.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (rec, handler) = (rec.clone(), handler.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(c, &rec, handler.as_ref());
                });
            }
        });
        RecordingServer { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

fn serve_one(
    c: std::net::TcpStream,
    rec: &Mutex<Vec<Request>>,
    handler: &Handler,
) -> std::io::Result<()> {
    let req = read_request(&c)?;
    rec.lock().expect("lock").push(req.clone());
    let (status, answer) = handler(&req);
    let mut c = c;
    write!(
        c,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    c.flush()
}

/// Reads one HTTP/1.1 request (request line, headers, a `Content-Length` body).
pub fn read_request(c: &std::net::TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let mut parts = line.split_whitespace();
    Ok(Request {
        method: parts.next().unwrap_or("").to_string(),
        target: parts.next().unwrap_or("").to_string(),
        headers,
        body,
    })
}
