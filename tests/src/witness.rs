//! A transparency-log witness for the tests, written from c2sp.org/tlog-witness (no witness
//! implementation installs from the registries CI reaches: the Go witnesses are not in
//! Debian). It serves `POST <prefix>/add-checkpoint` over real HTTP on 127.0.0.1 and
//! answers every status the spec names:
//!
//! - 400: a malformed body, or an old size above the checkpoint's size;
//! - 404: a checkpoint for an origin it does not know;
//! - 403: no valid signature by a key it trusts for the origin (or one that fails);
//! - 409 with a `text/x.tlog.size` body: the old size is not the size it last cosigned;
//! - 422: a proof that does not verify, a non-empty proof from size 0, the same size with
//!   another root, or size 0 with a root other than the empty tree's;
//! - 200: one Ed25519 v1 cosignature line.
//!
//! Checking the old size and recording the new checkpoint happen under one lock, as the
//! spec demands (two racing requests must not roll the witness's view back). State is in
//! memory: a test that restarts a witness means a new witness. [`Mode`] makes it misbehave
//! for the tests of the daemon's policy.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use auditlog_formats::cosignature::{AddCheckpoint, WitnessKey, WitnessSigner, SIZE_CONTENT_TYPE};
use auditlog_formats::note::{self, Checkpoint, NoteError, VerifierKey};
use auditlog_formats::{tree, Hash, TreeHash};

/// Largest request body read; a bigger one is refused with 413.
pub const BODY_BYTES_MAX: usize = 1 << 20;

/// How the witness behaves; it keeps its state honestly in every mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Honest = 0,
    /// Accepts connections and closes them unanswered: a witness that is down.
    Down = 1,
    /// Cosigns with another key under its own name.
    WrongKey = 2,
    /// Cosigns, with its key, a checkpoint one leaf larger than the one submitted.
    WrongBytes = 3,
}

/// An answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    fn plain(status: u16, text: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.into().into_bytes(),
        }
    }
}

struct Inner {
    signer: WitnessSigner,
    impostor: WitnessSigner,
    /// The log keys trusted per origin.
    logs: Mutex<HashMap<String, Vec<VerifierKey>>>,
    /// Per origin, the size and root of the latest cosigned checkpoint.
    latest: Mutex<HashMap<String, (u64, Hash)>>,
    mode: AtomicU8,
    requests: AtomicU64,
    stop: AtomicBool,
}

/// A witness serving on `127.0.0.1:<port>`; stops accepting when dropped.
pub struct Witness {
    pub port: u16,
    inner: Arc<Inner>,
}

impl Witness {
    /// A witness named `name` whose key derives from `seed`, serving at once.
    pub fn start(name: &str, seed: u8) -> Witness {
        let inner = Arc::new(Inner {
            signer: WitnessSigner::from_seed(name, [seed; 32]).expect("witness name"),
            impostor: WitnessSigner::from_seed(name, [seed ^ 0xff; 32]).expect("witness name"),
            logs: Mutex::default(),
            latest: Mutex::default(),
            mode: AtomicU8::new(Mode::Honest as u8),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let serving = inner.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                if serving.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(c) = c else { continue };
                let inner = serving.clone();
                std::thread::spawn(move || serve(&inner, c));
            }
        });
        Witness { port, inner }
    }

    pub fn key(&self) -> WitnessKey {
        self.inner.signer.witness_key().clone()
    }

    /// The submission prefix (`add-checkpoint` is under it).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/witness", self.port)
    }

    /// Trusts `key` for checkpoints of `origin`.
    pub fn trust(&self, origin: &str, key: VerifierKey) {
        let mut logs = self.inner.logs.lock().expect("lock");
        logs.entry(origin.to_string()).or_default().push(key);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// The latest cosigned size and root for `origin`.
    pub fn latest(&self, origin: &str) -> Option<(u64, Hash)> {
        self.inner.latest.lock().expect("lock").get(origin).copied()
    }

    /// Sets the witness's view of `origin`, as if it had cosigned that checkpoint before.
    pub fn set_latest(&self, origin: &str, size: u64, root: Hash) {
        let mut latest = self.inner.latest.lock().expect("lock");
        latest.insert(origin.to_string(), (size, root));
    }

    /// `add-checkpoint` requests received (those answered while [`Mode::Down`] excluded).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// The `add-checkpoint` handler itself, without HTTP.
    pub fn add_checkpoint(&self, body: &[u8]) -> Answer {
        self.inner.add_checkpoint(body)
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs())
}

impl Inner {
    fn add_checkpoint(&self, body: &[u8]) -> Answer {
        let req = match AddCheckpoint::parse(body) {
            Ok(r) => r,
            Err(e) => return Answer::plain(400, e.to_string()),
        };
        let (text, _) = match note::parse_note(&req.note) {
            Ok(n) => n,
            Err(e) => return Answer::plain(400, e.to_string()),
        };
        let cp = match Checkpoint::parse_text(&text) {
            Ok(cp) => cp,
            Err(e) => return Answer::plain(400, e.to_string()),
        };
        let Some(keys) = self.logs.lock().expect("lock").get(&cp.origin).cloned() else {
            return Answer::plain(404, format!("unknown origin {:?}", cp.origin));
        };
        match note::open_note(&req.note, &keys) {
            Ok(_) => {}
            Err(e @ (NoteError::UnverifiedNote | NoteError::InvalidSignature { .. })) => {
                return Answer::plain(403, e.to_string())
            }
            Err(e) => return Answer::plain(400, e.to_string()),
        }
        if req.old_size > cp.size {
            return Answer::plain(400, "old size is above the checkpoint's size");
        }
        // Check and update under one lock: see the module comment.
        let mut latest = self.latest.lock().expect("lock");
        let (old_size, old_root) = latest
            .get(&cp.origin)
            .copied()
            .unwrap_or((0, TreeHash::Sha256.empty()));
        if req.old_size != old_size {
            return Answer {
                status: 409,
                content_type: SIZE_CONTENT_TYPE,
                body: format!("{old_size}\n").into_bytes(),
            };
        }
        if cp.size == 0 && cp.root != TreeHash::Sha256.empty() {
            return Answer::plain(422, "size 0 with a root other than the empty tree's");
        }
        if old_size == 0 && !req.proof.is_empty() {
            return Answer::plain(422, "a proof from size 0 must be empty");
        }
        if old_size != 0 {
            if let Err(e) = tree::verify_consistency(
                TreeHash::Sha256,
                old_size,
                cp.size,
                &old_root,
                &cp.root,
                &req.proof,
            ) {
                return Answer::plain(422, format!("consistency: {e}"));
            }
        }
        latest.insert(cp.origin.clone(), (cp.size, cp.root));
        drop(latest);
        let line = match self.mode() {
            Mode::WrongKey => self.impostor.cosign(&text, now_s()),
            Mode::WrongBytes => {
                let other = Checkpoint {
                    size: cp.size + 1,
                    ..cp
                };
                self.signer.cosign(&other.to_text(), now_s())
            }
            Mode::Honest | Mode::Down => self.signer.cosign(&text, now_s()),
        };
        Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: line.to_line().into_bytes(),
        }
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Down,
            2 => Mode::WrongKey,
            3 => Mode::WrongBytes,
            _ => Mode::Honest,
        }
    }
}

/// One connection: requests until the client closes it (keep-alive, as the spec asks).
fn serve(inner: &Inner, c: TcpStream) {
    let Ok(read_half) = c.try_clone() else { return };
    let mut r = BufReader::new(read_half);
    let mut w = c;
    loop {
        if inner.mode() == Mode::Down {
            return;
        }
        let Some((method, path, body)) = read_request(&mut r) else {
            return;
        };
        // A body left unread leaves the stream unusable: answer, then close.
        let close = body.is_none();
        let answer = match body {
            None => Answer::plain(413, "body too large"),
            Some(_) if method != "POST" => Answer::plain(405, "POST only"),
            Some(_) if path != "/witness/add-checkpoint" => Answer::plain(404, "no such path"),
            Some(body) => {
                inner.requests.fetch_add(1, Ordering::SeqCst);
                inner.add_checkpoint(&body)
            }
        };
        if inner.mode() == Mode::Down {
            return;
        }
        // One write: a head and a body in two small segments would wait out the client's
        // delayed ACK (Nagle), 40 ms a request.
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            answer.status,
            answer.content_type,
            answer.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&answer.body);
        if w.write_all(&out).is_err() || w.flush().is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

/// Method, path and body (None when over [`BODY_BYTES_MAX`]); None at end of stream.
fn read_request(r: &mut impl BufRead) -> Option<(String, String, Option<Vec<u8>>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    if len > BODY_BYTES_MAX {
        return Some((method, path, None));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, Some(body)))
}
