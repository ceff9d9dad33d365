//! Real processes for the SIEM tests: `auditlogd` with a syslog listener (the shared
//! harness, `auditlog_tests::daemon`), and private `rsyslogd` instances with their own
//! configuration, work directory and pid file.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use auditlog_tests::daemon::{free_port, hex32, Daemon};
use auditlog_tests::tools::{require, Tool};

/// `auditlogd` with `config_text` and a syslog listener, as every SIEM test runs it.
pub fn start_daemon(dir: &Path, config_text: &str) -> Daemon {
    Daemon::launch(dir)
        .config(config_text)
        .syslog()
        .agent_timeout(Duration::from_secs(60))
        .start()
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
