//! Helpers shared by the system tests and the crash child.

pub mod attack;
pub mod certs;
pub mod recording;
pub mod tools;
pub mod witness;
pub mod worm_servers;

use auditlog_engine::EngineConfig;

/// A valid audit event of about `bytes` bytes, distinct per `n`.
pub fn event(n: u64, bytes: usize) -> Vec<u8> {
    let mut e = format!(
        r#"{{"timestamp":"2026-11-23T10:00:00.123Z","event_type":"auth","actor":"user-{n}","action":"login","resource":"/srv/app","outcome":"success","classification":"CUI//BASIC","details":{{"pad":""}}}}"#
    )
    .into_bytes();
    if e.len() < bytes {
        let pad = bytes - e.len();
        let at = e.len() - 3; // inside the "pad" string
        e.splice(at..at, std::iter::repeat_n(b'x', pad));
    }
    e
}

/// Small segments and fast checkpoints, so tests exercise sealing and rotation.
/// Waits (polling every 20 ms, up to `secs`) until `ok`; panics naming `what` on timeout.
pub fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn small_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.batch_bytes_max = 128 << 10;
    c.submission_bytes_max = 128 << 10;
    c.segment_bytes = 1 << 20;
    c.block_raw_bytes = 16 << 10;
    c.checkpoint_interval_ms = 20;
    c
}
pub mod daemon;

/// The value of an unlabelled metric in a Prometheus text answer (`/metrics`).
pub fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// SoftHSM2 for the HSM tests: a private configuration and token directory per test, so
/// tests never share a token, and `softhsm2-util` to create tokens in it.
pub mod softhsm {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub const SO_PIN: &str = "5678";
    pub const PIN: &str = "1234";

    /// The module's path on this machine.
    pub fn module() -> PathBuf {
        crate::tools::require(crate::tools::Tool::Softhsm2);
        crate::tools::softhsm2_module().expect("checked by require")
    }

    pub struct SoftHsm {
        /// The file to put in `SOFTHSM2_CONF`.
        pub conf: PathBuf,
        pub token_dir: PathBuf,
    }

    impl SoftHsm {
        /// A configuration whose token directory is `<dir>/tokens`.
        pub fn new(dir: &Path) -> SoftHsm {
            crate::tools::require(crate::tools::Tool::Softhsm2);
            let token_dir = dir.join("tokens");
            std::fs::create_dir_all(&token_dir).expect("token dir");
            let conf = dir.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                    token_dir.display()
                ),
            )
            .expect("write softhsm2.conf");
            SoftHsm { conf, token_dir }
        }

        /// Initialises a fresh token with the user PIN [`PIN`].
        pub fn init_token(&self, label: &str) {
            let out = Command::new("softhsm2-util")
                .env("SOFTHSM2_CONF", &self.conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", PIN])
                .output()
                .expect("run softhsm2-util (install softhsm2)");
            assert!(
                out.status.success(),
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// An audit event of class `class` (a marking such as `CUI//SP-PRIV`).
pub fn classified_event(n: u64, class: &str) -> Vec<u8> {
    format!(
        r#"{{"timestamp":"2026-11-23T10:00:00Z","event_type":"auth","actor":"user-{n}","action":"login","resource":"/srv/app/{n}","outcome":"success","classification":"{class}","details":{{"pad":"{}"}}}}"#,
        "p".repeat(120)
    )
    .into_bytes()
}

/// S3 client options for a moto server: any credentials, short timeouts so a stopped
/// server shows up as failures quickly.
pub fn s3_options(endpoint: &str) -> auditlog_worm::TargetOptions {
    auditlog_worm::TargetOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        connect_timeout_ms: Some(500),
        request_timeout_ms: Some(2000),
        ..Default::default()
    }
}

/// Replication with fast retries and polling, for tests.
pub fn replication(
    target: &str,
    options: auditlog_worm::TargetOptions,
) -> auditlog_engine::ReplicationConfig {
    auditlog_engine::ReplicationConfig {
        target: target.to_string(),
        options,
        retry_ms_initial: 50,
        retry_ms_max: 400,
        poll_interval_ms: 20,
        latest_checkpoint_interval_ms: 100,
        ..Default::default()
    }
}
