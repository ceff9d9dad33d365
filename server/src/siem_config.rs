//! The `[siem]` section of the daemon's configuration: CEF identity, export, the syslog
//! listener and the forwarder, each with its named limits. Kept apart from `config.rs`
//! so the SIEM side's settings live next to each other.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use auditlog_formats::cef::CefDevice;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemSection {
    pub cef_vendor: Option<String>,
    pub cef_product: Option<String>,
    pub cef_version: Option<String>,
    pub export_chunk_events: Option<u64>,
    pub syslog_addr: Option<String>,
    pub syslog_message_bytes_max: Option<usize>,
    pub syslog_connections_max: Option<usize>,
    pub syslog_idle_timeout_ms: Option<u64>,
    pub syslog_batches_in_flight_max: Option<usize>,
    pub forward_addr: Option<String>,
    pub forward_batch_events_max: Option<u64>,
    pub forward_poll_ms: Option<u64>,
    pub forward_backoff_ms_max: Option<u64>,
    pub forward_connect_timeout_ms: Option<u64>,
    pub forward_hostname: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SiemConfig {
    /// CEF header vendor / product / version.
    pub cef: CefDevice,
    /// Events read from the engine per step of an export; bounds the memory of one export.
    pub export_chunk_events: u64,
    /// Syslog TCP listener; `None` (the default) disables it.
    pub syslog_addr: Option<SocketAddr>,
    /// One syslog message, without framing; longer ones close the connection.
    pub syslog_message_bytes_max: usize,
    /// Open syslog connections; further ones are closed at once.
    pub syslog_connections_max: usize,
    /// A syslog connection silent this long is closed.
    pub syslog_idle_timeout_ms: u64,
    /// Engine submissions one syslog connection may have waiting for durability; beyond,
    /// it stops reading (TCP flow control then slows the sender).
    pub syslog_batches_in_flight_max: usize,
    /// Collector (`host:port`) the forwarder sends CEF to; `None` (the default) disables it.
    pub forward_addr: Option<String>,
    /// Events per forwarded chunk; the cursor is synced after each accepted chunk.
    pub forward_batch_events_max: u64,
    /// How often the forwarder looks for new events when it has caught up.
    pub forward_poll_ms: u64,
    /// Cap of the reconnect backoff (it doubles from 100 ms).
    pub forward_backoff_ms_max: u64,
    pub forward_connect_timeout_ms: u64,
    /// HOSTNAME of forwarded RFC 5424 messages.
    pub forward_hostname: String,
}

impl SiemConfig {
    pub fn defaults() -> SiemConfig {
        SiemConfig {
            cef: CefDevice::default(),
            export_chunk_events: 4096,
            syslog_addr: None,
            syslog_message_bytes_max: 8192,
            syslog_connections_max: 256,
            syslog_idle_timeout_ms: 300_000,
            syslog_batches_in_flight_max: 16,
            forward_addr: None,
            forward_batch_events_max: 2048,
            forward_poll_ms: 200,
            forward_backoff_ms_max: 30_000,
            forward_connect_timeout_ms: 5_000,
            forward_hostname: "auditlogd".into(),
        }
    }

    /// `--syslog-addr` wins over the file.
    pub fn override_syslog_addr(&mut self, addr: Option<String>) -> anyhow::Result<()> {
        if let Some(a) = addr {
            self.syslog_addr = Some(
                a.parse()
                    .with_context(|| format!("--syslog-addr {a:?} is not host:port"))?,
            );
        }
        Ok(())
    }
}

/// Syslog messages become events of at most 64 KiB, which hold the message twice (parsed
/// and original), escaped: 32 KiB keeps ordinary messages within it.
const SYSLOG_MESSAGE_BYTES_LIMIT: usize = 32 << 10;

pub fn resolve(s: SiemSection) -> anyhow::Result<SiemConfig> {
    let mut c = SiemConfig::defaults();
    if let Some(v) = s.cef_vendor {
        c.cef.vendor = v;
    }
    if let Some(v) = s.cef_product {
        c.cef.product = v;
    }
    if let Some(v) = s.cef_version {
        c.cef.version = v;
    }
    if let Some(a) = s.syslog_addr {
        c.syslog_addr = Some(
            a.parse()
                .with_context(|| format!("siem.syslog_addr {a:?} is not host:port"))?,
        );
    }
    c.forward_addr = s.forward_addr.or(c.forward_addr);
    if let Some(h) = s.forward_hostname {
        c.forward_hostname = h;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = s.$f { c.$f = v; } )* };
    }
    set!(
        export_chunk_events,
        syslog_message_bytes_max,
        syslog_connections_max,
        syslog_idle_timeout_ms,
        syslog_batches_in_flight_max,
        forward_batch_events_max,
        forward_poll_ms,
        forward_backoff_ms_max,
        forward_connect_timeout_ms
    );
    if c.export_chunk_events == 0
        || c.syslog_connections_max == 0
        || c.syslog_batches_in_flight_max == 0
        || c.forward_batch_events_max == 0
        || c.forward_poll_ms == 0
    {
        bail!("siem: export_chunk_events, syslog_connections_max, syslog_batches_in_flight_max, forward_batch_events_max and forward_poll_ms must be positive");
    }
    if !(64..=SYSLOG_MESSAGE_BYTES_LIMIT).contains(&c.syslog_message_bytes_max) {
        bail!("siem.syslog_message_bytes_max must be 64 to {SYSLOG_MESSAGE_BYTES_LIMIT}");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file() {
        let c = resolve(SiemSection::default()).expect("defaults");
        assert!(c.syslog_addr.is_none() && c.forward_addr.is_none());
        let s: SiemSection = toml::from_str(
            "syslog_addr = \"127.0.0.1:6514\"\ncef_vendor = \"Acme\"\nforward_addr = \"siem:514\"\n",
        )
        .expect("parse");
        let c = resolve(s).expect("resolve");
        assert_eq!(c.syslog_addr.map(|a| a.port()), Some(6514));
        assert_eq!(c.cef.vendor, "Acme");
        assert_eq!(c.forward_addr.as_deref(), Some("siem:514"));
        let big: SiemSection = toml::from_str("syslog_message_bytes_max = 1000000").expect("parse");
        assert!(resolve(big).is_err());
    }
}
