//! Helpers shared by the system tests and the crash child.

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
pub fn small_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.batch_bytes_max = 128 << 10;
    c.submission_bytes_max = 128 << 10;
    c.segment_bytes = 1 << 20;
    c.block_raw_bytes = 16 << 10;
    c.checkpoint_interval_ms = 20;
    c
}
