//! Real processes for the SIEM tests: `auditlogd` on free ports over a temporary data
//! directory (as `http.rs` starts it), and private `rsyslogd` instances with their own
//! configuration, work directory and pid file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auditlog_formats::note::{self, Checkpoint, VerifierKey};
use auditlog_formats::tree;
use auditlog_formats::TreeHash;
pub use auditlog_tests::daemon::{daemon_command, free_port};
use auditlog_tests::tools::{require, Tool};
use serde_json::Value;

pub struct Daemon {
    pub child: Option<Child>,
    pub base: String,
    pub syslog_addr: String,
    pub tokens: HashMap<String, String>,
    pub agent: ureq::Agent,
    /// The log's size when the daemon started serving (its own start event comes first).
    pub first: u64,
}

pub struct Reply {
    pub status: u16,
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

impl Daemon {
    /// Starts `auditlogd` with `config_text` and a syslog listener on a free port.
    pub fn start(dir: &Path, config_text: &str) -> Daemon {
        let config = dir.join("auditlogd.toml");
        std::fs::write(&config, config_text).expect("write config");
        let (port, tcp_port, syslog_port) = (free_port(), free_port(), free_port());
        let child = daemon_command()
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tcp-addr")
            .arg(format!("127.0.0.1:{tcp_port}"))
            .arg("--syslog-addr")
            .arg(format!("127.0.0.1:{syslog_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn auditlogd");
        let mut d = Daemon {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            syslog_addr: format!("127.0.0.1:{syslog_port}"),
            tokens: HashMap::new(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
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
        d.first = d.tree_size();
        assert!(
            d.first >= 1,
            "the start is recorded before the daemon serves"
        );
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn token(&self, role: &str) -> String {
        self.tokens[role].clone()
    }

    pub fn call(&self, method: &str, path: &str, role: &str, body: Option<(&str, &[u8])>) -> Reply {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token(role)));
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
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .expect("read body");
        Reply { status, body }
    }

    pub fn get(&self, path: &str, role: &str) -> Reply {
        self.call("GET", path, role, None)
    }

    /// Posts events as NDJSON; returns their indices.
    pub fn post_events(&self, events: &[Vec<u8>]) -> Vec<u64> {
        let mut body = Vec::new();
        for e in events {
            body.extend_from_slice(e);
            body.push(b'\n');
        }
        let r = self.call(
            "POST",
            "/v1/events",
            "writer",
            Some(("application/x-ndjson", &body)),
        );
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

    pub fn log(&self) -> (VerifierKey, TreeHash) {
        let v = self.get("/v1/log", "auditor").json();
        let key = v["verifier_keys"][0]
            .as_str()
            .expect("key")
            .parse()
            .expect("verifier key");
        let alg = TreeHash::from_name(v["tree_hash"].as_str().expect("alg")).expect("alg name");
        (key, alg)
    }

    pub fn checkpoint(&self, min_size: u64, key: &VerifierKey) -> Checkpoint {
        let r = self.get(
            &format!("/v1/checkpoint?min_size={min_size}&wait_ms=5000"),
            "auditor",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let (cp, _) = note::open_checkpoint(&r.text(), std::slice::from_ref(key)).expect("signed");
        assert!(cp.size >= min_size);
        cp
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
        tree::verify_inclusion(alg, index, cp.size, leaf, &proof, &cp.root)
            .unwrap_or_else(|e| panic!("inclusion of {index} in {}: {e:?}", cp.size));
    }

    pub fn metric(&self, name: &str) -> Option<u64> {
        auditlog_tests::metric_value(&self.get("/metrics", "reader").text(), name)
    }

    pub fn vm_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

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
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

/// A private rsyslogd: its own config, work directory and pid file under `dir`, in the
/// foreground (`-n`), stopped (SIGTERM, then waited for) on drop.
pub struct Rsyslog {
    child: Option<Child>,
    pub dir: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd with `config` (`WORKDIR` in it is replaced by the work directory),
    /// then waits until `port` accepts connections.
    pub fn start(dir: &Path, config: &str, port: u16) -> Rsyslog {
        require(Tool::Rsyslog);
        if config.contains("\"ossl\"") {
            require(Tool::RsyslogOpenssl);
        }
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("rsyslog work dir");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            config.replace("WORKDIR", &work.display().to_string()),
        )
        .expect("write rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rsyslogd not installed? (apt-get install rsyslog)");
        let mut r = Rsyslog {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(c) = r.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("rsyslogd exited at start: {st}: {err}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `f` holds, polling.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub use auditlog_tests::certs::Ca;
