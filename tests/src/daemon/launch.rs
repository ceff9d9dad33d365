//! Starting a daemon: [`Daemon::launch`] says what differs from the usual start, then
//! [`Launch::start`] runs it with every listener on port 0 and waits until it serves.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{daemon_command, daemon_exe, Daemon, CONFIG};

/// How to start a daemon: [`Daemon::launch`], then what differs, then [`Launch::start`].
pub struct Launch {
    dir: PathBuf,
    config: LaunchConfig,
    data_dir: PathBuf,
    syslog: bool,
    tls: bool,
    constrained: bool,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    rust_log: String,
    agent_timeout: Duration,
    /// A read replica (or standby): it records no start event of its own.
    replica: bool,
}

enum LaunchConfig {
    /// Written to `<dir>/auditlogd.toml`.
    Text(String),
    /// A file the test wrote.
    File(PathBuf),
}

impl Launch {
    /// The configuration's text (default [`CONFIG`]); written to `<dir>/auditlogd.toml`.
    pub fn config(mut self, text: &str) -> Launch {
        self.config = LaunchConfig::Text(text.to_string());
        self
    }

    /// A configuration file the test wrote.
    pub fn config_file(mut self, path: &Path) -> Launch {
        self.config = LaunchConfig::File(path.to_path_buf());
        self
    }

    /// The data directory (default `<dir>/data`).
    pub fn data_dir(mut self, path: &Path) -> Launch {
        self.data_dir = path.to_path_buf();
        self
    }

    /// A syslog listener too (`--syslog-addr 127.0.0.1:0`); see [`Daemon::syslog_addr`].
    pub fn syslog(mut self) -> Launch {
        self.syslog = true;
        self
    }

    /// The HTTP listener speaks TLS: the start waits for the listeners only (no plain
    /// `/health`, no tokens' first read of the log), and [`Daemon::first`] stays 0.
    pub fn tls(mut self) -> Launch {
        self.tls = true;
        self
    }

    /// As the deployment files run it (deploy/): as uid and gid 10001 with no capabilities
    /// and no new privileges, in a private mount namespace whose root file system is
    /// read-only and where only `dir` (the configuration and the data directory) is
    /// writable. Needs root (to set that up) and util-linux's `unshare` and `setpriv`.
    pub fn constrained(mut self) -> Launch {
        self.constrained = true;
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    /// More command-line arguments.
    pub fn args<I, A>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One more environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `RUST_LOG` (default `warn`).
    pub fn rust_log(mut self, filter: &str) -> Launch {
        self.rust_log = filter.to_string();
        self
    }

    /// The HTTP client's timeout per request (default 30 s).
    pub fn agent_timeout(mut self, timeout: Duration) -> Launch {
        self.agent_timeout = timeout;
        self
    }

    fn listening_file(&self) -> PathBuf {
        self.dir.join("listening.json")
    }

    /// A read replica or standby of `source` (`--replica-of`): no start event of its own.
    pub fn replica_of(mut self, source: &str) -> Launch {
        self.replica = true;
        self.args.push("--replica-of".into());
        self.args.push(source.into());
        self
    }

    /// The whole command line, every listener on port 0, for a test that runs it itself
    /// (say, to see a start fail).
    pub fn command(&self) -> Command {
        let config = match &self.config {
            LaunchConfig::Text(text) => {
                let path = self.dir.join("auditlogd.toml");
                std::fs::write(&path, text).expect("write config");
                path
            }
            LaunchConfig::File(path) => path.clone(),
        };
        let mut command = if self.constrained {
            constrained_command(&self.dir)
        } else {
            daemon_command()
        };
        command
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--tcp-addr", "127.0.0.1:0"])
            .args(["--ops-addr", "127.0.0.1:0"])
            .arg("--listening-file")
            .arg(self.listening_file())
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null());
        if self.syslog {
            command.args(["--syslog-addr", "127.0.0.1:0"]);
        }
        command.args(&self.args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Starts the daemon and waits (30 s at most) until it serves.
    pub fn start(self) -> Daemon {
        let listening = self.listening_file();
        match std::fs::remove_file(&listening) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {}: {e}", listening.display()),
        }
        let child = self.command().spawn().expect("spawn auditlogd");
        let mut d = Daemon {
            child: Some(child),
            base: String::new(),
            ops_base: String::new(),
            http_addr: String::new(),
            tcp_addr: String::new(),
            syslog_addr: None,
            tokens: HashMap::new(),
            agent: ureq::AgentBuilder::new()
                .timeout(self.agent_timeout)
                .build(),
            first: 0,
            listening: listening.clone(),
        };
        let addrs = d.wait_listening(&listening);
        let addr = |name: &str| -> String {
            addrs[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} not in {addrs}"))
                .to_string()
        };
        d.http_addr = addr("http");
        d.base = format!("http://{}", d.http_addr);
        d.ops_base = format!("http://{}", addr("ops"));
        d.tcp_addr = addr("tcp");
        d.syslog_addr = self.syslog.then(|| addr("syslog"));
        let text = std::fs::read_to_string(self.data_dir.join("initial-tokens")).expect("tokens");
        for line in text.lines() {
            let (role, token) = line.split_once(' ').expect("<role> <token>");
            d.tokens.insert(role.to_string(), token.to_string());
        }
        assert_eq!(d.tokens.len(), 4, "one token per role");
        if self.replica {
            d.wait_healthy();
        } else if !self.tls {
            d.wait_healthy();
            d.first = d.log().2;
            assert!(
                d.first >= 1,
                "the start is recorded before the daemon serves"
            );
        }
        d
    }
}

/// `unshare … setpriv … <dir>/bin/auditlogd`: see [`Launch::constrained`].
fn constrained_command(dir: &Path) -> Command {
    use std::os::unix::fs::PermissionsExt;
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
}

impl Daemon {
    /// A daemon over `<dir>/data` with [`CONFIG`]; say what differs, then [`Launch::start`].
    pub fn launch(dir: &Path) -> Launch {
        Launch {
            dir: dir.to_path_buf(),
            config: LaunchConfig::Text(CONFIG.to_string()),
            data_dir: dir.join("data"),
            syslog: false,
            tls: false,
            constrained: false,
            args: Vec::new(),
            env: Vec::new(),
            rust_log: "warn".into(),
            agent_timeout: Duration::from_secs(30),
            replica: false,
        }
    }

    pub fn start(dir: &Path) -> Daemon {
        Daemon::launch(dir).start()
    }

    pub fn start_with(dir: &Path, config_text: &str) -> Daemon {
        Daemon::launch(dir).config(config_text).start()
    }

    /// See [`Launch::constrained`].
    pub fn start_constrained(dir: &Path, config_text: &str) -> Daemon {
        Daemon::launch(dir)
            .config(config_text)
            .constrained()
            .start()
    }

    /// Waits for the listening file (every listener bound), failing at once if the daemon
    /// exits first.
    fn wait_listening(&mut self, path: &Path) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.assert_running("at start");
            match std::fs::read(path) {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e})", path.display()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("read {}: {e}", path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "auditlogd did not bind its listeners"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The same process re-executed itself (a standby becoming the writer): waits (up to
    /// `limit`) for the listening file to name new addresses, then for them to serve.
    pub fn wait_relisten(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let old = self.http_addr.clone();
        loop {
            self.assert_running("while re-executing");
            if let Ok(bytes) = std::fs::read(&self.listening) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    if let Some(http) = v["http"].as_str().filter(|h| *h != old) {
                        self.http_addr = http.to_string();
                        self.base = format!("http://{http}");
                        self.ops_base =
                            format!("http://{}", v["ops"].as_str().expect("ops address"));
                        self.tcp_addr = v["tcp"].as_str().expect("tcp address").to_string();
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new listeners after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.wait_healthy();
    }

    /// Waits until `/health` answers: the listeners are bound, this waits for them to serve.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .agent
            .get(&format!("{}/health", self.base))
            .call()
            .is_err()
        {
            self.assert_running("at start");
            assert!(Instant::now() < deadline, "auditlogd did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn assert_running(&mut self, when: &str) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("auditlogd exited {when}: {st}");
            }
        }
    }
}
