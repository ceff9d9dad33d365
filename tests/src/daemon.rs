//! The real `auditlogd` over a temporary data directory: the one harness every system test
//! that starts the daemon uses (HTTP, TCP, syslog, TLS, the CLI, HSM, WORM, the attacks).
//!
//! The binaries are this package's `test-auditlogd` and `test-auditlog` (src/bin/), the
//! shipped `main`s under other names: cargo builds them before it runs an integration test and
//! says where in `CARGO_BIN_EXE_<name>`, so no test runs a `cargo build` of its own (which
//! recompiled rustls, ring and the client whenever its features differed from the
//! workspace build's, ~25 s per test binary).
//!
//! Every listener binds `127.0.0.1:0` and the daemon writes the addresses it got to
//! `--listening-file` before it serves: no port is picked by binding, dropping and hoping.

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use auditlog_formats::note::{self, Checkpoint, VerifierKey};
use auditlog_formats::TreeHash;
use serde_json::Value;

mod launch;
pub use launch::Launch;

/// A binary of this package: `CARGO_BIN_EXE_<name>`, which cargo sets for integration tests
/// at compile time (`env!`) and, in recent versions, in their environment when it runs them;
/// read at run time because this library is not an integration test. Without it (an older
/// cargo, or a test binary run by hand) the binary is beside `deps/`, where cargo put it.
fn bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test exe in target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} missing: run the tests with cargo test -p auditlog-tests, which builds it",
        bin.display()
    );
    bin
}

/// A token added on the host (`auditlogd tokens add`) before the daemon starts; printed once.
pub fn add_token(data_dir: &Path, role: &str, name: &str) -> String {
    let out = daemon_command()
        .arg("--data-dir")
        .arg(data_dir)
        .args(["tokens", "add", "--role", role, "--name", name])
        .output()
        .expect("auditlogd tokens add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Moves every key's recorded addition in `keys.json` `days` into the past (with the daemon
/// stopped): how tests make a key old enough to rotate.
pub fn age_keys(data: &Path, days: u64) {
    let path = data.join("keys.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    for k in v["keys"].as_array_mut().expect("keys") {
        let at = k["added_at_unix_ns"].as_u64().expect("added_at");
        k["added_at_unix_ns"] = Value::from(at - days * 86_400 * 1_000_000_000);
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
}

/// `auditlogd` with its ops listener on port 0 (tests run many daemons at once; the default
/// 127.0.0.1:9090 would collide), for its key and token commands. Set `--ops-addr` after this
/// to choose one.
pub fn daemon_command() -> Command {
    let mut c = Command::new(daemon_exe());
    // What the shipped binary is called, for clap's usage and error lines.
    c.arg0("auditlogd");
    c.env("AUDITLOG_OPS_ADDR", "127.0.0.1:0");
    c
}

/// The `auditlogd` binary.
pub fn daemon_exe() -> PathBuf {
    bin("test-auditlogd")
}

/// The `auditlog` CLI binary.
pub fn client_exe() -> PathBuf {
    bin("test-auditlog")
}

/// The `auditlog` CLI, named as shipped.
pub fn client_command() -> Command {
    let mut c = Command::new(client_exe());
    c.arg0("auditlog");
    c
}

pub const CONFIG: &str = r#"
[engine]
submission_bytes_max = 131072
batch_bytes_max = 131072
segment_bytes = 1048576
block_raw_bytes = 16384
checkpoint_interval_ms = 50

[server]
body_bytes_max = 524288
request_timeout_ms = 20000
long_poll_ms_max = 10000
range_events_max = 1000
"#;

pub const BODY_BYTES_MAX: usize = 524288;

pub struct Daemon {
    child: Option<Child>,
    pub base: String,
    /// The ops listener (`/health`, `/ready`, `/metrics`).
    pub ops_base: String,
    /// The HTTP listener's `host:port` (for raw or TLS connections).
    pub http_addr: String,
    pub tcp_addr: String,
    /// The syslog listener's `host:port`, when [`Launch::syslog`] asked for one.
    syslog_addr: Option<String>,
    pub tokens: HashMap<String, String>,
    pub agent: ureq::Agent,
    /// The log's size when this daemon started serving: every start writes one event (its
    /// configuration) before it serves, so a fresh log's first client event has this index.
    pub first: u64,
    /// Where it writes its addresses (again, when it re-executes itself).
    listening: PathBuf,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// A port for a test server to bind, below the kernel's ephemeral range. A port found by
/// binding port 0 and letting go was itself ephemeral: before the server bound it, another
/// socket bound to port 0 or an outgoing connection could take it ("binding syslog
/// 127.0.0.1:…: Address already in use", seen in a soak run). Ports below the range are
/// never handed out by the kernel; here they come from a per-process counter (starting at a
/// point taken from the pid, so concurrent test processes rarely meet), each checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low < LOW + 2_000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        return l.local_addr().expect("addr").port();
    }
    let span = ephemeral_low - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

impl Daemon {
    /// The syslog listener's `host:port` (started with [`Launch::syslog`]).
    pub fn syslog_addr(&self) -> &str {
        self.syslog_addr
            .as_deref()
            .expect("started with Launch::syslog")
    }

    /// The daemon's process id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn token(&self, role: &str) -> String {
        self.tokens[role].clone()
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Reply {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some((ct, b)) => req.set("Content-Type", ct).send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let content_type = resp.header("content-type").unwrap_or("").to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .expect("read body");
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub fn get(&self, path: &str, role: &str) -> Reply {
        self.call("GET", path, Some(&self.token(role)), None)
    }

    pub fn post(&self, ct: &str, body: &[u8]) -> Reply {
        self.call(
            "POST",
            "/v1/events",
            Some(&self.token("writer")),
            Some((ct, body)),
        )
    }

    /// Sends `sig` to the daemon (SIGKILL, SIGSTOP, SIGCONT…).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, sig);
        }
    }

    /// SIGKILL and reap: the machine is gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, and the daemon must drain, sign and exit 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                assert!(st.success(), "auditlogd exited with {st}");
                return;
            }
            assert!(Instant::now() < deadline, "auditlogd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> (VerifierKey, TreeHash, u64) {
        let r = self.get("/v1/log", "auditor");
        assert_eq!(r.status, 200);
        let v = r.json();
        let key: VerifierKey = v["verifier_keys"][0]
            .as_str()
            .expect("key")
            .parse()
            .expect("verifier key");
        let alg = TreeHash::from_name(v["tree_hash"].as_str().expect("alg")).expect("alg name");
        (key, alg, v["tree_size"].as_u64().expect("tree_size"))
    }

    pub fn checkpoint(&self, min_size: u64, key: &VerifierKey) -> Checkpoint {
        let r = self.get(
            &format!("/v1/checkpoint?min_size={min_size}&wait_ms=5000"),
            "auditor",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.content_type.starts_with("text/plain"));
        let (cp, _) = note::open_checkpoint(&r.text(), std::slice::from_ref(key)).expect("signed");
        assert!(cp.size >= min_size);
        cp
    }

    /// Posts events as NDJSON; returns their indices.
    pub fn post_events(&self, events: &[Vec<u8>]) -> Vec<u64> {
        let mut body = Vec::new();
        for e in events {
            body.extend_from_slice(e);
            body.push(b'\n');
        }
        let r = self.post("application/x-ndjson", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["receipts"]
            .as_array()
            .expect("receipts")
            .iter()
            .map(|x| x["index"].as_u64().expect("index"))
            .collect()
    }

    pub fn tree_size(&self) -> u64 {
        self.get("/v1/log", "auditor").json()["tree_size"]
            .as_u64()
            .expect("tree_size")
    }

    /// Waits until the log holds `n` events.
    pub fn wait_size(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.tree_size() < n {
            assert!(
                Instant::now() < deadline,
                "log did not reach {n} events (has {})",
                self.tree_size()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fetches the inclusion proof of `index` and checks it against the checkpoint.
    pub fn prove(&self, alg: TreeHash, cp: &Checkpoint, index: u64, leaf: &[u8; 32]) {
        let r = self.get(
            &format!("/v1/proof/inclusion?index={index}&size={}", cp.size),
            "auditor",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let proof: Vec<[u8; 32]> = r.json()["hashes"]
            .as_array()
            .expect("hashes")
            .iter()
            .map(|h| hex32(h.as_str().expect("hex")))
            .collect();
        auditlog_formats::tree::verify_inclusion(alg, index, cp.size, leaf, &proof, &cp.root)
            .unwrap_or_else(|e| panic!("inclusion of {index} in {}: {e:?}", cp.size));
    }

    /// An unlabelled metric's value in `/metrics`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        crate::metric_value(&self.get("/metrics", "reader").text(), name)
    }

    /// Waits (up to `limit`) until the metric `name` satisfies `pred`; returns its value.
    pub fn wait_metric(&self, name: &str, limit: Duration, pred: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let v = self
                .metric(name)
                .unwrap_or_else(|| panic!("{name} not in /metrics"));
            if pred(v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{name} stuck at {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's resident memory (`VmRSS`), in KiB.
    pub fn vm_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// 32 bytes from 64 hex digits.
pub fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP connection to `to` (IPv4 `host:port`) from the loopback address `from` (any of
/// 127.0.0.0/8): another source address, for per-source limits.
pub fn connect_from(from: [u8; 4], to: &str) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let to: std::net::SocketAddrV4 = to.parse().expect("v4 address");
    let sa = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values; the
    // descriptor is owned by the TcpStream from here on (or closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = std::net::TcpStream::from_raw_fd(fd);
        let src = sa(from, 0);
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dst = sa(to.ip().octets(), to.port());
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}
