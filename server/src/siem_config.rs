//! The `[siem]` section of the daemon's configuration: CEF identity, export, the syslog
//! listener and the forwarder, each with its named limits. Kept apart from `config.rs`
//! so the SIEM side's settings live next to each other.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    pub syslog_connections_per_source_max: Option<usize>,
    pub syslog_idle_timeout_ms: Option<u64>,
    pub syslog_batches_in_flight_max: Option<usize>,
    pub syslog_read_bytes_max: Option<usize>,
    pub syslog_tls: Option<bool>,
    pub syslog_tls_cert_path: Option<PathBuf>,
    pub syslog_tls_key_path: Option<PathBuf>,
    pub syslog_tls_client_ca_path: Option<PathBuf>,
    pub syslog_allow_unauthenticated: Option<bool>,
    pub forward_addr: Option<String>,
    pub forward_batch_events_max: Option<u64>,
    pub forward_poll_ms: Option<u64>,
    pub forward_backoff_ms_max: Option<u64>,
    pub forward_connect_timeout_ms: Option<u64>,
    pub forward_hostname: Option<String>,
    pub forward_tls: Option<bool>,
    pub forward_ca_path: Option<PathBuf>,
    pub forward_client_cert_path: Option<PathBuf>,
    pub forward_client_key_path: Option<PathBuf>,
    pub forward_server_name: Option<String>,
}

/// Syslog over TLS (RFC 5425) on the syslog listener, resolved.
#[derive(Clone, Debug)]
pub struct SyslogTls {
    /// PEM certificate chain and key of the listener (default: `[server.tls]`'s).
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Set: every sender must present a certificate signed by one of these CAs.
    pub client_ca_path: Option<PathBuf>,
}

/// TLS (RFC 5425) from the forwarder to the collector, resolved.
#[derive(Clone, Debug)]
pub struct ForwardTls {
    /// PEM CA certificates trusted for the collector's certificate (only these).
    pub ca_path: PathBuf,
    /// PEM certificate chain and key presented to the collector (mutual TLS).
    pub client_cert_path: Option<PathBuf>,
    pub client_key_path: Option<PathBuf>,
    /// Name the collector's certificate must carry (DNS name or IP address).
    pub server_name: String,
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
    /// Open syslog connections from one source address; further ones are closed at once.
    pub syslog_connections_per_source_max: usize,
    /// A syslog connection silent this long is closed.
    pub syslog_idle_timeout_ms: u64,
    /// Engine submissions one syslog connection may have waiting for durability; beyond,
    /// it stops reading (TCP flow control then slows the sender).
    pub syslog_batches_in_flight_max: usize,
    /// Bytes taken from a syslog socket per read, so the most one submission holds. Under
    /// load reads fill up and submissions grow: fewer, larger group commits per message
    /// (256 KiB ingests about 10% faster than 64 KiB on one connection). Memory: this much
    /// per open connection.
    pub syslog_read_bytes_max: usize,
    /// `syslog_tls = true`: the syslog listener speaks TLS only; `None` is plain TCP.
    pub syslog_tls: Option<SyslogTls>,
    /// Accept syslog senders on a non-loopback address without client certificates.
    pub syslog_allow_unauthenticated: bool,
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
    /// `forward_tls = true`: the forwarder speaks TLS only; `None` is plain TCP.
    pub forward_tls: Option<ForwardTls>,
}

impl SiemConfig {
    pub fn defaults() -> SiemConfig {
        SiemConfig {
            cef: CefDevice::default(),
            export_chunk_events: 4096,
            syslog_addr: None,
            syslog_message_bytes_max: 8192,
            syslog_connections_max: 256,
            syslog_connections_per_source_max: 64,
            syslog_idle_timeout_ms: 300_000,
            syslog_batches_in_flight_max: 16,
            syslog_read_bytes_max: 256 << 10,
            syslog_tls: None,
            syslog_allow_unauthenticated: false,
            forward_addr: None,
            forward_batch_events_max: 2048,
            forward_poll_ms: 200,
            forward_backoff_ms_max: 30_000,
            forward_connect_timeout_ms: 5_000,
            forward_hostname: "auditlogd".into(),
            forward_tls: None,
        }
    }

    /// Whether the syslog listener may run as configured: on a non-loopback address, syslog
    /// senders must present client certificates (`syslog_tls_client_ca_path`) unless
    /// `syslog_allow_unauthenticated = true`, since anyone who reaches the port could
    /// otherwise submit events. Returns the warning to print at start, if any.
    pub fn check_syslog_senders(&self) -> anyhow::Result<Option<String>> {
        let Some(addr) = self.syslog_addr else {
            return Ok(None);
        };
        let authenticated = self
            .syslog_tls
            .as_ref()
            .is_some_and(|t| t.client_ca_path.is_some());
        if addr.ip().is_loopback() || authenticated {
            return Ok(None);
        }
        if !self.syslog_allow_unauthenticated {
            bail!(
                "siem.syslog_addr {addr} is not a loopback address and syslog senders are not \
                 authenticated: set siem.syslog_tls_client_ca_path (client certificates), or \
                 siem.syslog_allow_unauthenticated = true to accept any sender that reaches it"
            );
        }
        Ok(Some(format!(
            "syslog on {addr} accepts unauthenticated senders (siem.syslog_allow_unauthenticated = true): anyone who reaches the port can submit events"
        )))
    }

    /// `--syslog-addr` wins over the file.
    pub fn override_syslog_addr(&mut self, addr: Option<String>) -> anyhow::Result<()> {
        if let Some(a) = addr {
            self.syslog_addr = Some(crate::config::parse_addr("--syslog-addr", &a)?);
        }
        Ok(())
    }
}

/// Syslog messages become events of at most 64 KiB, which hold the message twice (parsed
/// and original), escaped: 32 KiB keeps ordinary messages within it.
const SYSLOG_MESSAGE_BYTES_LIMIT: usize = 32 << 10;
/// Reads smaller than a page cost a syscall per few messages; larger than 4 MiB only hold
/// memory (a submission is split at the engine's `submission_bytes_max` anyway).
const SYSLOG_READ_BYTES_MIN: usize = 4 << 10;
const SYSLOG_READ_BYTES_LIMIT: usize = 4 << 20;

/// `server_tls` is `[server.tls]`: the syslog listener's certificate and key default to it.
pub fn resolve(
    s: SiemSection,
    server_tls: Option<&crate::tls::TlsSection>,
) -> anyhow::Result<SiemConfig> {
    let mut c = SiemConfig::defaults();
    c.syslog_tls = resolve_syslog_tls(&s, server_tls)?;
    c.forward_tls = resolve_forward_tls(&s)?;
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
        c.syslog_addr = Some(crate::config::parse_addr("siem.syslog_addr", &a)?);
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
        syslog_connections_per_source_max,
        syslog_idle_timeout_ms,
        syslog_batches_in_flight_max,
        syslog_read_bytes_max,
        forward_batch_events_max,
        forward_poll_ms,
        forward_backoff_ms_max,
        forward_connect_timeout_ms,
        syslog_allow_unauthenticated
    );
    if c.export_chunk_events == 0
        || c.syslog_connections_max == 0
        || c.syslog_connections_per_source_max == 0
        || c.syslog_batches_in_flight_max == 0
        || c.forward_batch_events_max == 0
        || c.forward_poll_ms == 0
    {
        bail!("siem: export_chunk_events, syslog_connections_max, syslog_connections_per_source_max, syslog_batches_in_flight_max, forward_batch_events_max and forward_poll_ms must be positive");
    }
    if !(SYSLOG_READ_BYTES_MIN..=SYSLOG_READ_BYTES_LIMIT).contains(&c.syslog_read_bytes_max) {
        bail!("siem.syslog_read_bytes_max must be {SYSLOG_READ_BYTES_MIN} to {SYSLOG_READ_BYTES_LIMIT}");
    }
    if !(64..=SYSLOG_MESSAGE_BYTES_LIMIT).contains(&c.syslog_message_bytes_max) {
        bail!("siem.syslog_message_bytes_max must be 64 to {SYSLOG_MESSAGE_BYTES_LIMIT}");
    }
    Ok(c)
}

fn resolve_syslog_tls(
    s: &SiemSection,
    server_tls: Option<&crate::tls::TlsSection>,
) -> anyhow::Result<Option<SyslogTls>> {
    if !s.syslog_tls.unwrap_or(false) {
        // A certificate without `syslog_tls = true` would silently leave syslog in plain text.
        if s.syslog_tls_cert_path.is_some()
            || s.syslog_tls_key_path.is_some()
            || s.syslog_tls_client_ca_path.is_some()
        {
            bail!("siem.syslog_tls_* paths are set but siem.syslog_tls is not true");
        }
        return Ok(None);
    }
    let (cert_path, key_path) = match (&s.syslog_tls_cert_path, &s.syslog_tls_key_path) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => match server_tls {
            Some(t) => (t.cert_path.clone(), t.key_path.clone()),
            None => bail!("siem.syslog_tls needs siem.syslog_tls_cert_path and syslog_tls_key_path, or [server.tls]"),
        },
        _ => bail!("siem: give both syslog_tls_cert_path and syslog_tls_key_path, or neither"),
    };
    Ok(Some(SyslogTls {
        cert_path,
        key_path,
        client_ca_path: s.syslog_tls_client_ca_path.clone(),
    }))
}

fn resolve_forward_tls(s: &SiemSection) -> anyhow::Result<Option<ForwardTls>> {
    if !s.forward_tls.unwrap_or(false) {
        if s.forward_ca_path.is_some()
            || s.forward_client_cert_path.is_some()
            || s.forward_client_key_path.is_some()
            || s.forward_server_name.is_some()
        {
            bail!("siem.forward_ca_path / forward_client_* / forward_server_name are set but siem.forward_tls is not true");
        }
        return Ok(None);
    }
    let Some(ca_path) = s.forward_ca_path.clone() else {
        bail!("siem.forward_tls needs siem.forward_ca_path (the CA that signed the collector's certificate)");
    };
    if s.forward_client_cert_path.is_some() != s.forward_client_key_path.is_some() {
        bail!("siem: give both forward_client_cert_path and forward_client_key_path, or neither");
    }
    // Default: the host of forward_addr, so `siem.example:6514` checks `siem.example`.
    let server_name = match (&s.forward_server_name, &s.forward_addr) {
        (Some(n), _) => n.clone(),
        (None, Some(a)) => host_of(a).to_string(),
        (None, None) => bail!("siem.forward_tls needs siem.forward_addr"),
    };
    rustls_pki_types::ServerName::try_from(server_name.as_str()).with_context(|| {
        format!("siem.forward_server_name {server_name:?} is not a DNS name or IP address")
    })?;
    Ok(Some(ForwardTls {
        ca_path,
        client_cert_path: s.forward_client_cert_path.clone(),
        client_key_path: s.forward_client_key_path.clone(),
        server_name,
    }))
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_file() {
        let c = resolve(SiemSection::default(), None).expect("defaults");
        assert!(c.syslog_addr.is_none() && c.forward_addr.is_none());
        let s: SiemSection = toml::from_str(
            "syslog_addr = \"127.0.0.1:6514\"\ncef_vendor = \"Acme\"\nforward_addr = \"siem:514\"\n",
        )
        .expect("parse");
        let c = resolve(s, None).expect("resolve");
        assert_eq!(c.syslog_addr.map(|a| a.port()), Some(6514));
        assert_eq!(c.cef.vendor, "Acme");
        assert_eq!(c.forward_addr.as_deref(), Some("siem:514"));
        let big: SiemSection = toml::from_str("syslog_message_bytes_max = 1000000").expect("parse");
        assert!(resolve(big, None).is_err());
    }

    fn section(text: &str) -> SiemSection {
        toml::from_str(text).expect("parse")
    }

    /// A syslog listener on a non-loopback address without client certificates is refused
    /// unless allowed in so many words (then it warns); loopback is accepted as it is.
    #[test]
    fn unauthenticated_syslog_off_loopback_needs_saying_so() {
        let c = resolve(section("syslog_addr = \"0.0.0.0:5514\"\n"), None).expect("resolve");
        let e = c.check_syslog_senders().expect_err("refused");
        assert!(
            e.to_string().contains("syslog_allow_unauthenticated"),
            "{e}"
        );
        let mut c = c;
        c.override_syslog_addr(Some("127.0.0.1:5514".into()))
            .expect("addr");
        assert_eq!(c.check_syslog_senders().expect("loopback"), None);
        let c = resolve(
            section("syslog_addr = \"0.0.0.0:5514\"\nsyslog_allow_unauthenticated = true\n"),
            None,
        )
        .expect("resolve");
        let w = c
            .check_syslog_senders()
            .expect("allowed")
            .expect("a warning");
        assert!(w.contains("unauthenticated"), "{w}");
    }

    #[test]
    fn tls_settings() {
        let server = crate::tls::TlsSection {
            cert_path: "srv.pem".into(),
            key_path: "srv.key".into(),
            ..Default::default()
        };
        // The listener inherits [server.tls]'s certificate unless it has its own.
        let c = resolve(section("syslog_tls = true"), Some(&server)).expect("inherit");
        let t = c.syslog_tls.expect("tls");
        assert_eq!(t.cert_path, PathBuf::from("srv.pem"));
        assert!(t.client_ca_path.is_none());
        let own = "syslog_tls = true\nsyslog_tls_cert_path = \"s.pem\"\nsyslog_tls_key_path = \"s.key\"\nsyslog_tls_client_ca_path = \"ca.pem\"";
        let t = resolve(section(own), Some(&server))
            .expect("own")
            .syslog_tls
            .expect("tls");
        assert_eq!(
            (t.cert_path, t.client_ca_path),
            ("s.pem".into(), Some("ca.pem".into()))
        );
        for bad in [
            "syslog_tls = true",
            "syslog_tls = true\nsyslog_tls_cert_path = \"s.pem\"",
            "syslog_tls_client_ca_path = \"ca.pem\"",
            "forward_tls = true\nforward_addr = \"siem:6514\"",
            "forward_ca_path = \"ca.pem\"\nforward_addr = \"siem:6514\"",
            "forward_tls = true\nforward_ca_path = \"ca.pem\"\nforward_addr = \"siem:6514\"\nforward_client_cert_path = \"c.pem\"",
            "forward_tls = true\nforward_ca_path = \"ca.pem\"\nforward_addr = \"siem:6514\"\nforward_server_name = \"no spaces allowed\"",
        ] {
            assert!(resolve(section(bad), None).is_err(), "{bad}");
        }
        // The collector's name defaults to forward_addr's host.
        let f = resolve(
            section(
                "forward_tls = true\nforward_ca_path = \"ca.pem\"\nforward_addr = \"[::1]:6514\"",
            ),
            None,
        )
        .expect("forward")
        .forward_tls
        .expect("tls");
        assert_eq!(f.server_name, "::1");
        let f = resolve(
            section("forward_tls = true\nforward_ca_path = \"ca.pem\"\nforward_addr = \"siem.example:6514\"\nforward_server_name = \"collector.example\""),
            None,
        )
        .expect("forward")
        .forward_tls
        .expect("tls");
        assert_eq!(f.server_name, "collector.example");
    }
}
