//! The real `auditlogd` on free ports over a temporary data directory, shared by the
//! system tests that talk to it (HTTP, TCP, the CLI).

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use auditlog_formats::note::{self, Checkpoint, VerifierKey};
use auditlog_formats::TreeHash;
use serde_json::Value;

/// `target/<profile>/<bin>` of another package of the workspace, next to this test's
/// `deps/` directory, (re)built once per run so it is never older than the source.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test exe in target/<profile>/deps")
        .to_path_buf();
    let bin = profile_dir.join(name);
    // `cargo test -p auditlog-tests` does not build other packages' binaries; a build
    // here is quick when nothing changed and keeps a stale binary from being tested.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package, "--bin", name]);
    // What cargo sets for this test's own package must not leak into the nested build:
    // build scripts that watch these (ring's does) would be rebuilt on every run.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || matches!(
                k.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(st) => assert!(st.success(), "cargo build -p {package} failed"),
        // No cargo (the test run by hand): use the binary that is there.
        Err(e) => eprintln!("cannot run cargo ({e}); using {}", bin.display()),
    }
    assert!(bin.exists(), "{} missing", bin.display());
    built.push((name.to_string(), bin.clone()));
    bin
}

/// The `auditlogd` binary.
/// `auditlogd` with its ops listener on a free port (tests run many daemons at once; the
/// default 127.0.0.1:9090 would collide). Set `--ops-addr` after this to choose one.
pub fn daemon_command() -> Command {
    let mut c = Command::new(daemon_exe());
    c.env("AUDITLOG_OPS_ADDR", "127.0.0.1:0");
    c
}

pub fn daemon_exe() -> PathBuf {
    workspace_bin("auditlog-server", "auditlogd")
}

/// The `auditlog` CLI binary.
pub fn client_exe() -> PathBuf {
    workspace_bin("auditlog-client", "auditlog")
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
    pub tcp_addr: String,
    pub tokens: HashMap<String, String>,
    pub agent: ureq::Agent,
    /// The log's size when this daemon started serving: every start writes one event (its
    /// configuration) before it serves, so a fresh log's first client event has this index.
    pub first: u64,
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
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, CONFIG)
    }

    pub fn start_with(dir: &Path, config_text: &str) -> Daemon {
        Daemon::launch(dir, config_text, false)
    }

    /// As the deployment files run it (deploy/): as uid and gid 10001 with no capabilities
    /// and no new privileges, in a private mount namespace whose root file system is
    /// read-only and where only `dir` (the configuration and the data directory) is
    /// writable. Needs root (to set that up) and util-linux's `unshare` and `setpriv`.
    pub fn start_constrained(dir: &Path, config_text: &str) -> Daemon {
        Daemon::launch(dir, config_text, true)
    }

    fn launch(dir: &Path, config_text: &str, constrained: bool) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let config = dir.join("auditlogd.toml");
        std::fs::write(&config, config_text).expect("write config");
        let port = free_port();
        let tcp_port = free_port();
        let ops_port = free_port();
        let args: Vec<std::ffi::OsString> = vec![
            "--ops-addr".into(),
            format!("127.0.0.1:{ops_port}").into(),
            "--tcp-addr".into(),
            format!("127.0.0.1:{tcp_port}").into(),
            "--config".into(),
            config.clone().into(),
            "--data-dir".into(),
            dir.join("data").into(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}").into(),
        ];
        let mut command = if constrained {
            // The binary where uid 10001 can run it, and `dir` theirs.
            let bin = dir.join("bin");
            std::fs::create_dir_all(&bin).expect("bin dir");
            let exe = bin.join("auditlogd");
            std::fs::copy(daemon_exe(), &exe).expect("copy auditlogd");
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let owned = Command::new("chown")
                .args(["-R", "10001:10001"])
                .arg(dir)
                .status()
                .expect("chown");
            assert!(owned.success(), "chown -R 10001:10001 {}", dir.display());
            let script = r#"set -e
d=$1; shift
mount --bind "$d" "$d"
mount -o remount,bind,ro /
exec setpriv --reuid=10001 --regid=10001 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs "$@""#;
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(dir)
            .arg(&exe);
            c
        } else {
            daemon_command()
        };
        let child = command
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn auditlogd");
        let mut d = Daemon {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            ops_base: format!("http://127.0.0.1:{ops_port}"),
            tcp_addr: format!("127.0.0.1:{tcp_port}"),
            tokens: HashMap::new(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            first: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = d.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("auditlogd exited at start: {st}");
                }
            }
            if d.agent.get(&format!("{}/health", d.base)).call().is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "auditlogd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(dir.join("data/initial-tokens")).expect("tokens");
        for line in text.lines() {
            let (role, token) = line.split_once(' ').expect("<role> <token>");
            d.tokens.insert(role.to_string(), token.to_string());
        }
        assert_eq!(d.tokens.len(), 4, "one token per role");
        d.first = d.log().2;
        assert!(
            d.first >= 1,
            "the start is recorded before the daemon serves"
        );
        d
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
