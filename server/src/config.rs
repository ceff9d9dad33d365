//! The daemon's configuration: a TOML file with an `[engine]` section (the engine's named
//! limits) and a `[server]` section (every HTTP limit), overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use auditlog_engine::{EngineConfig, IoMode, KeyBackend, PinSource};
use auditlog_formats::schema::SchemaMode;
use auditlog_formats::segment::BlockCodec;
use auditlog_formats::TreeHash;
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "./data";

/// The whole file. Every field is optional; absent ones keep their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub signer: SignerSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub siem: crate::siem_config::SiemSection,
    /// `[auth.oidc]`: OIDC JWT sign-in for HTTP callers (`oidc_config.rs`).
    #[serde(default)]
    pub auth: crate::oidc_config::AuthSection,
    /// Shipping to WORM storage; absent: the embedded default (`<data_dir>/worm`).
    pub replication: Option<auditlog_engine::ReplicationConfig>,
    /// `[replica]`: how a read replica (`--replica-of URL`) reaches the bucket; its
    /// `source` is the command line's.
    pub replica: Option<auditlog_engine::follower::ReplicaConfig>,
    /// `[witness]`: witnesses that must cosign a checkpoint before it is published.
    pub witness: Option<auditlog_engine::WitnessConfig>,
}

/// `[signer]`: which key signs checkpoints when the log is created. The PIN is never here,
/// only where to read it (`pin_env` or `pin_file`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerSection {
    /// "file" (the development key file, default) or "pkcs11".
    pub backend: Option<String>,
    /// Note key name (default: the origin with spaces and '+' replaced by '_').
    pub key_name: Option<String>,
    pub pkcs11_module: Option<PathBuf>,
    pub token_label: Option<String>,
    pub key_label: Option<String>,
    /// Name of the environment variable holding the HSM user PIN.
    pub pin_env: Option<String>,
    /// File holding the HSM user PIN (trailing newline ignored).
    pub pin_file: Option<PathBuf>,
    /// `aws_kms`: the key's region and id (key id, key ARN or alias).
    pub region: Option<String>,
    pub key_id: Option<String>,
    /// `aws_kms`, `gcp_kms`: the KMS endpoint when not the cloud's default.
    pub endpoint: Option<String>,
    /// `gcp_kms`: the full key version name (`projects/…/cryptoKeyVersions/N`);
    /// `azure_key_vault`: the key version.
    pub key_version: Option<String>,
    /// `azure_key_vault`: the vault (or Managed HSM) URL and the key's name in it.
    pub vault_url: Option<String>,
    pub vault_key: Option<String>,
}

/// `[admin]`: the two-person rule for critical operations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub approvals_required: Option<u32>,
    pub request_ttl_ms: Option<u64>,
    pub requests_pending_max: Option<usize>,
    pub pkcs11_modules_allowed: Option<Vec<PathBuf>>,
    pub kms_endpoints_allowed: Option<Vec<String>>,
    pub rotation_check_interval_ms: Option<u64>,
    pub rotation_days_default: Option<u32>,
}

/// The two-person rule, resolved.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Distinct admins other than the requester who must approve (at least 1).
    pub approvals_required: u32,
    /// A request not approved within this time from its creation is refused.
    pub request_ttl_ms: u64,
    /// Requests waiting for approval; more are refused.
    pub requests_pending_max: usize,
    /// PKCS#11 modules a `rotate_key` request may name (the module is loaded into the
    /// daemon and handed the HSM PIN): these, and the `[signer]` section's own module.
    pub pkcs11_modules_allowed: Vec<PathBuf>,
    /// KMS endpoints (AWS, Google) and vault URLs (Azure) other than the clouds' own that a
    /// `rotate_key` request may name (the daemon sends them requests signed with, or bearer
    /// tokens of, its cloud identity): these, and the `[signer]` section's own.
    pub kms_endpoints_allowed: Vec<String>,
    /// The data directory: a `rotate_key` key file must be inside it.
    pub data_dir: PathBuf,
    /// How often the key rotation scheduler looks at the signing key's age.
    pub rotation_check_interval_ms: u64,
    /// Without an approved rotation policy, a signing key this many days old is overdue.
    pub rotation_days_default: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub data_dir: Option<PathBuf>,
    pub origin: Option<String>,
    /// "sha256" or "blake3".
    pub tree_hash: Option<String>,
    /// "audit" or "raw".
    pub schema: Option<String>,
    pub queue_submissions_max: Option<usize>,
    pub submission_bytes_max: Option<usize>,
    pub batch_bytes_max: Option<usize>,
    pub batch_events_max: Option<usize>,
    pub segment_bytes: Option<u64>,
    pub seal_age_ms: Option<u64>,
    pub seal_queue_segments_max: Option<usize>,
    pub checkpoint_interval_ms: Option<u64>,
    pub block_raw_bytes: Option<usize>,
    pub zstd_level: Option<i32>,
    /// "columnar" or "zstd".
    pub block_codec: Option<String>,
    pub seal_check_leaves: Option<bool>,
    pub hash_cache_bytes_max: Option<u64>,
    pub block_cache_bytes: Option<usize>,
    pub search_index: Option<bool>,
    pub search_window_records: Option<u64>,
    pub search_block_records: Option<u32>,
    pub search_bucket_bits: Option<u32>,
    pub search_readers: Option<usize>,
    /// "auto", "io_uring" or "pwrite".
    pub io_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub http_addr: Option<String>,
    pub body_bytes_max: Option<usize>,
    pub connections_max: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub long_poll_ms_max: Option<u64>,
    pub range_events_max: Option<u64>,
    pub search_limit_max: Option<u64>,
    pub search_records_examined_max: Option<u64>,
    pub tiles_public: Option<bool>,
    pub tcp_addr: Option<String>,
    pub tcp_frame_bytes_max: Option<u32>,
    pub tcp_batches_in_flight_max: Option<u32>,
    pub tcp_connections_max: Option<usize>,
    pub tcp_hello_timeout_ms: Option<u64>,
    pub tcp_idle_timeout_ms: Option<u64>,
    pub tcp_write_timeout_ms: Option<u64>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub ops_addr: Option<String>,
    pub ops_connections_max: Option<usize>,
    pub http_connections_per_source_max: Option<usize>,
    pub http_header_read_timeout_ms: Option<u64>,
    pub http_body_read_timeout_ms: Option<u64>,
    pub http_write_timeout_ms: Option<u64>,
    pub tcp_connections_per_source_max: Option<usize>,
    pub ready_checkpoint_intervals_max: Option<u64>,
    pub long_polls_max: Option<usize>,
    pub long_polls_per_principal_max: Option<usize>,
    pub streamed_reads_max: Option<usize>,
    pub streamed_reads_per_principal_max: Option<usize>,
    pub request_bytes_in_flight_max: Option<usize>,
    pub submissions_per_principal_max: Option<usize>,
    pub listen_backlog: Option<u32>,
    /// TLS for both listeners (and mutual TLS with `client_ca_path`).
    pub tls: Option<crate::tls::TlsSection>,
}

/// The HTTP side's limits, resolved.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    /// One request body; larger ones get 413.
    pub body_bytes_max: usize,
    /// Open connections; further ones wait in the kernel's accept queue.
    pub connections_max: usize,
    /// One request, from headers read to response ready; past it, 503.
    pub request_timeout_ms: u64,
    /// Cap on `wait_ms` of `GET /v1/checkpoint`; must be under `request_timeout_ms`.
    pub long_poll_ms_max: u64,
    /// Events in one `GET /v1/events?start=&end=` answer.
    pub range_events_max: u64,
    /// Events one `GET /v1/search` returns at most (its `limit`).
    pub search_limit_max: u64,
    /// Records one `GET /v1/search` reads and re-checks at most (its cost limit).
    pub search_records_examined_max: u64,
    /// The C2SP tlog-tiles read API (`/checkpoint`, `/tile/…`) without credentials: for
    /// a log whose entries anyone may read and witness. Off, it asks what proofs and event
    /// reads ask.
    pub tiles_public: bool,
    /// TCP ingest listener (FORMATS.md §12.1).
    pub tcp_addr: SocketAddr,
    /// One TCP frame's payload; larger frames are refused and the connection closed.
    pub tcp_frame_bytes_max: u32,
    /// BATCH frames one TCP connection may have unacknowledged; beyond, it is not read.
    pub tcp_batches_in_flight_max: u32,
    /// Open TCP ingest connections; further ones get an ERROR and are closed.
    pub tcp_connections_max: usize,
    /// Time from connect to HELLO.
    pub tcp_hello_timeout_ms: u64,
    /// A TCP connection idle this long is closed.
    pub tcp_idle_timeout_ms: u64,
    /// A write of acknowledgements that makes no progress this long (the client stopped
    /// reading them) cuts the connection.
    pub tcp_write_timeout_ms: u64,
    /// A TLS handshake (HTTP or TCP) must finish within this.
    pub tls_handshake_timeout_ms: u64,
    /// The ops listener: `/health`, `/ready`, `/metrics` on their own port.
    pub ops_addr: SocketAddr,
    /// Open connections to the ops listener; past it, 503.
    pub ops_connections_max: usize,
    /// Open HTTP connections from one source address; past it, 503 (the API listener;
    /// the ops listener allows a quarter of `ops_connections_max`).
    pub http_connections_per_source_max: usize,
    /// From connect (or the end of the last response) to a request's complete headers.
    pub http_header_read_timeout_ms: u64,
    /// Between two chunks of a request body.
    pub http_body_read_timeout_ms: u64,
    /// A response write that makes no progress (the client stopped reading) this long
    /// cuts the connection.
    pub http_write_timeout_ms: u64,
    /// Open TCP ingest connections from one source address; past it, closed.
    pub tcp_connections_per_source_max: usize,
    /// `/ready` fails while events wait beyond the newest checkpoint and that checkpoint is
    /// older than this many checkpoint intervals (a stuck signer or checkpointer); 0: off.
    pub ready_checkpoint_intervals_max: u64,
    /// Checkpoint long-polls (`GET /v1/checkpoint?min_size=&wait_ms=`) waiting at once, in
    /// all and per principal; past either, 429 at once. A waiting long-poll holds no thread.
    pub long_polls_max: usize,
    pub long_polls_per_principal_max: usize,
    /// Streamed reads (`GET /v1/export`, `GET /v1/events?start=&end=`) running at once, in
    /// all and per principal; past either, 429 at once. Each holds a blocking-pool thread
    /// while it reads, so these bound how much of the pool reads can take.
    pub streamed_reads_max: usize,
    pub streamed_reads_per_principal_max: usize,
    /// Event bytes held at once across all ingest (`admission.rs`): an HTTP body counts its
    /// Content-Length (or `body_bytes_max` if chunked) from before it is read until the
    /// request ends, a TCP frame its payload from its header until the engine answers it,
    /// a syslog read's batches until the engine answers them. Past it HTTP gets 503 with
    /// Retry-After at once; TCP and syslog connections wait (and are not read meanwhile).
    /// At least `body_bytes_max`.
    pub request_bytes_in_flight_max: usize,
    /// Submissions one principal (a token's holder, a certificate, a syslog peer) may have
    /// in the engine's queue or being written at once: its fair share of
    /// `engine.queue_submissions_max` (default a quarter of it). Past it HTTP gets 429
    /// `queue_share_full` with Retry-After; TCP and syslog connections wait.
    pub submissions_per_principal_max: usize,
    /// Connections each listener's kernel accept queue holds (capped by
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    pub tls: Option<crate::tls::TlsSection>,
    /// `[siem]`: CEF, export, syslog listener and forwarder (`siem_config.rs`).
    pub siem: crate::siem_config::SiemConfig,
}

impl ServerConfig {
    pub fn defaults() -> ServerConfig {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_bytes_max: 4 << 20,
            connections_max: 1024,
            request_timeout_ms: 60_000,
            long_poll_ms_max: 30_000,
            range_events_max: 10_000,
            search_limit_max: 1000,
            search_records_examined_max: 100_000,
            tiles_public: false,
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tcp_frame_bytes_max: 4 << 20,
            tcp_batches_in_flight_max: 64,
            tcp_connections_max: 256,
            tcp_hello_timeout_ms: 10_000,
            tcp_idle_timeout_ms: 300_000,
            tcp_write_timeout_ms: 30_000,
            tls_handshake_timeout_ms: 10_000,
            ops_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            ops_connections_max: 64,
            http_connections_per_source_max: 256,
            http_header_read_timeout_ms: 10_000,
            http_body_read_timeout_ms: 10_000,
            http_write_timeout_ms: 30_000,
            tcp_connections_per_source_max: 64,
            ready_checkpoint_intervals_max: 20,
            long_polls_max: 1024,
            long_polls_per_principal_max: 64,
            streamed_reads_max: 64,
            streamed_reads_per_principal_max: 8,
            request_bytes_in_flight_max: 256 << 20,
            submissions_per_principal_max: 1024,
            listen_backlog: 4096,
            tls: None,
            siem: crate::siem_config::SiemConfig::defaults(),
        }
    }
}

/// Command-line overrides.
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http_addr: Option<String>,
    pub tcp_addr: Option<String>,
    pub ops_addr: Option<String>,
    /// `--replica-of`: run as a read replica of this bucket.
    pub replica_of: Option<String>,
}

/// Everything resolved. `Debug` shows no secret: the PIN and the object-store keys are
/// `Secret`s, which print `<redacted>`.
#[derive(Debug)]
pub struct Config {
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    /// `[auth.oidc]`; `None`: bearer values are API tokens only.
    pub oidc: Option<crate::oidc_config::OidcConfig>,
}

pub fn load(path: Option<&Path>, over: Overrides) -> anyhow::Result<Config> {
    let file = match path {
        None => FileConfig::default(),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
    };
    let mut cfg = resolve(file, over)?;
    // The PIN leaves the environment as soon as it is known where it is. `main` loads the
    // configuration before it starts any thread, as `take_from_env` requires.
    cfg.engine.pkcs11_pin = cfg.engine.pkcs11_pin.map(PinSource::take_from_env);
    Ok(cfg)
}

pub fn resolve(file: FileConfig, mut over: Overrides) -> anyhow::Result<Config> {
    let mut engine = resolve_engine(file.engine, over.data_dir.take())?;
    resolve_signer(&file.signer, &mut engine)?;
    let mut admin = resolve_admin(&file.admin)?;
    admin.data_dir = engine.data_dir.clone();
    if let Some(m) = &file.signer.pkcs11_module {
        admin.pkcs11_modules_allowed.push(m.clone());
    }
    for e in [&file.signer.endpoint, &file.signer.vault_url]
        .into_iter()
        .flatten()
    {
        admin
            .kms_endpoints_allowed
            .push(e.trim_end_matches('/').to_string());
    }
    engine.replication = Some(file.replication.unwrap_or_default());
    if let Some(w) = &file.witness {
        // Named at start, before anything is opened: a bad key or policy is a config error.
        w.check(engine.tree_hash).map_err(anyhow::Error::msg)?;
    }
    engine.witness = file.witness;
    if let Some(source) = over.replica_of.take() {
        engine.replica = Some(auditlog_engine::follower::ReplicaConfig {
            source,
            ..file.replica.unwrap_or_default()
        });
    }
    let server = resolve_server(file.server, file.siem, over, engine.queue_submissions_max)?;
    let oidc = crate::oidc_config::resolve(file.auth)?;
    Ok(Config {
        engine,
        server,
        admin,
        oidc,
    })
}

/// `[engine]` over the engine's defaults; the data directory from the command line first.
fn resolve_engine(e: EngineSection, data_dir: Option<PathBuf>) -> anyhow::Result<EngineConfig> {
    let data_dir = data_dir
        .or(e.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let mut engine = EngineConfig::new(data_dir);
    if let Some(v) = e.origin {
        engine.origin = v;
    }
    if let Some(v) = e.tree_hash {
        engine.tree_hash = TreeHash::from_name(&v)
            .with_context(|| format!("engine.tree_hash {v:?}: expected sha256 or blake3"))?;
    }
    if let Some(v) = e.schema {
        engine.schema = match v.as_str() {
            "audit" => SchemaMode::Audit,
            "raw" => SchemaMode::Raw,
            _ => bail!("engine.schema {v:?}: expected audit or raw"),
        };
    }
    if let Some(v) = e.block_codec {
        engine.block_codec = BlockCodec::from_name(&v)
            .with_context(|| format!("engine.block_codec {v:?}: expected columnar or zstd"))?;
    }
    if let Some(v) = e.io_mode {
        engine.io_mode = match v.as_str() {
            "auto" => IoMode::Auto,
            "io_uring" => IoMode::IoUring,
            "pwrite" => IoMode::Pwrite,
            _ => bail!("engine.io_mode {v:?}: expected auto, io_uring or pwrite"),
        };
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = e.$f { engine.$f = v; } )* };
    }
    set!(
        queue_submissions_max,
        submission_bytes_max,
        batch_bytes_max,
        batch_events_max,
        segment_bytes,
        seal_age_ms,
        seal_queue_segments_max,
        checkpoint_interval_ms,
        block_raw_bytes,
        zstd_level,
        seal_check_leaves,
        hash_cache_bytes_max,
        block_cache_bytes,
        search_index,
        search_window_records,
        search_block_records,
        search_bucket_bits,
        search_readers
    );
    Ok(engine)
}

/// `[server]` (with `[siem]`) over the server's defaults; the listen addresses from the
/// command line first. `queue_submissions_max` bounds one principal's share.
fn resolve_server(
    s: ServerSection,
    siem: crate::siem_config::SiemSection,
    over: Overrides,
    queue_submissions_max: usize,
) -> anyhow::Result<ServerConfig> {
    let mut server = ServerConfig::defaults();
    server.siem = crate::siem_config::resolve(siem, s.tls.as_ref())?;
    if let Some(a) = over.http_addr.or(s.http_addr) {
        server.http_addr = parse_addr("http_addr", &a)?;
    }
    if let Some(a) = over.tcp_addr.or(s.tcp_addr) {
        server.tcp_addr = parse_addr("tcp_addr", &a)?;
    }
    macro_rules! set_s {
        ($($f:ident),*) => { $( if let Some(v) = s.$f { server.$f = v; } )* };
    }
    set_s!(
        body_bytes_max,
        connections_max,
        request_timeout_ms,
        long_poll_ms_max,
        range_events_max,
        search_limit_max,
        search_records_examined_max,
        tiles_public,
        tcp_frame_bytes_max,
        tcp_batches_in_flight_max,
        tcp_connections_max,
        tcp_hello_timeout_ms,
        tcp_idle_timeout_ms,
        tcp_write_timeout_ms,
        tls_handshake_timeout_ms,
        ops_connections_max,
        http_connections_per_source_max,
        http_header_read_timeout_ms,
        http_body_read_timeout_ms,
        http_write_timeout_ms,
        tcp_connections_per_source_max,
        ready_checkpoint_intervals_max,
        long_polls_max,
        long_polls_per_principal_max,
        streamed_reads_max,
        streamed_reads_per_principal_max,
        request_bytes_in_flight_max,
        listen_backlog
    );
    if let Some(a) = over.ops_addr.or(s.ops_addr) {
        server.ops_addr = parse_addr("ops_addr", &a)?;
    }
    server.submissions_per_principal_max = s
        .submissions_per_principal_max
        .unwrap_or((queue_submissions_max / 4).max(1));
    server.tls = s.tls;
    check_server(&server, queue_submissions_max)?;
    Ok(server)
}

/// A listen address; a bad one is named by the setting it came from.
pub(crate) fn parse_addr(field: &str, a: &str) -> anyhow::Result<SocketAddr> {
    a.parse()
        .with_context(|| format!("{field} {a:?} is not host:port"))
}

/// The server's limits must make sense together; the first rule broken is named.
fn check_server(server: &ServerConfig, queue_submissions_max: usize) -> anyhow::Result<()> {
    if server.ops_connections_max < 4
        || server.http_connections_per_source_max == 0
        || server.tcp_connections_per_source_max == 0
        || server.http_header_read_timeout_ms == 0
        || server.http_body_read_timeout_ms == 0
        || server.http_write_timeout_ms == 0
        || server.tcp_write_timeout_ms == 0
        || server.long_polls_max == 0
        || server.long_polls_per_principal_max == 0
        || server.streamed_reads_max == 0
        || server.streamed_reads_per_principal_max == 0
        || server.request_bytes_in_flight_max < server.body_bytes_max
        || server.request_bytes_in_flight_max > u32::MAX as usize
        || server.listen_backlog == 0
        || server.listen_backlog > 65_535
    {
        bail!("server: ops_connections_max must be at least 4; the per-source caps, the long-poll and streamed-read limits, the http_*_timeout_ms and tcp_write_timeout_ms must be positive; request_bytes_in_flight_max must be at least body_bytes_max and under 4 GiB; listen_backlog 1 to 65535");
    }
    if server.submissions_per_principal_max == 0
        || server.submissions_per_principal_max > queue_submissions_max
    {
        bail!(
            "server.submissions_per_principal_max must be 1 to engine.queue_submissions_max ({})",
            queue_submissions_max
        );
    }
    if server.tcp_frame_bytes_max < 65_536 + 8
        || server.tcp_batches_in_flight_max == 0
        || server.tcp_connections_max == 0
    {
        bail!("server.tcp_frame_bytes_max must hold one largest event; tcp_batches_in_flight_max and tcp_connections_max must be positive");
    }
    if server.search_limit_max == 0 || server.search_records_examined_max == 0 {
        bail!("server.search_limit_max and search_records_examined_max must be positive");
    }
    if server.body_bytes_max == 0 || server.connections_max == 0 || server.range_events_max == 0 {
        bail!("server.body_bytes_max, connections_max and range_events_max must be positive");
    }
    if server.long_poll_ms_max >= server.request_timeout_ms {
        bail!("server.long_poll_ms_max must be under server.request_timeout_ms");
    }
    Ok(())
}

fn resolve_signer(s: &SignerSection, engine: &mut EngineConfig) -> anyhow::Result<()> {
    engine.pkcs11_pin = match (&s.pin_env, &s.pin_file) {
        (Some(_), Some(_)) => bail!("signer: give pin_env or pin_file, not both"),
        (Some(v), None) => Some(PinSource::Env(v.clone())),
        (None, Some(p)) => Some(PinSource::File(p.clone())),
        (None, None) => None,
    };
    match s.backend.as_deref().unwrap_or("file") {
        "file" => {}
        "pkcs11" => {
            let (Some(module), Some(token), Some(key)) =
                (&s.pkcs11_module, &s.token_label, &s.key_label)
            else {
                bail!("signer.backend = \"pkcs11\" needs pkcs11_module, token_label and key_label");
            };
            if engine.pkcs11_pin.is_none() {
                bail!("signer.backend = \"pkcs11\" needs pin_env or pin_file");
            }
            engine.signer = auditlog_engine::SignerConfig::Pkcs11 {
                spec: auditlog_engine::Pkcs11Spec {
                    module: module.clone(),
                    token_label: token.clone(),
                    key_label: key.clone(),
                },
                name: s.key_name.clone(),
            };
        }
        "aws_kms" => {
            let (Some(region), Some(key_id)) = (&s.region, &s.key_id) else {
                bail!("signer.backend = \"aws_kms\" needs region and key_id");
            };
            engine.signer = kms_signer(
                s,
                KeyBackend::AwsKms {
                    region: region.clone(),
                    key_id: key_id.clone(),
                    endpoint: s.endpoint.clone(),
                },
            );
        }
        "gcp_kms" => {
            let Some(key_version) = &s.key_version else {
                bail!("signer.backend = \"gcp_kms\" needs key_version (projects/…/cryptoKeyVersions/N)");
            };
            engine.signer = kms_signer(
                s,
                KeyBackend::GcpKms {
                    key_version: key_version.clone(),
                    endpoint: s.endpoint.clone(),
                },
            );
        }
        "azure_key_vault" => {
            let (Some(vault), Some(key), Some(version)) =
                (&s.vault_url, &s.vault_key, &s.key_version)
            else {
                bail!("signer.backend = \"azure_key_vault\" needs vault_url, vault_key and key_version");
            };
            engine.signer = kms_signer(
                s,
                KeyBackend::AzureKeyVault {
                    vault: vault.clone(),
                    key: key.clone(),
                    version: version.clone(),
                },
            );
        }
        other => bail!(
            "signer.backend {other:?}: expected file, pkcs11, aws_kms, gcp_kms or azure_key_vault"
        ),
    }
    Ok(())
}

fn kms_signer(s: &SignerSection, backend: KeyBackend) -> auditlog_engine::SignerConfig {
    auditlog_engine::SignerConfig::Kms {
        backend,
        name: s.key_name.clone(),
    }
}

fn resolve_admin(a: &AdminSection) -> anyhow::Result<AdminConfig> {
    let c = AdminConfig {
        approvals_required: a.approvals_required.unwrap_or(1),
        request_ttl_ms: a.request_ttl_ms.unwrap_or(86_400_000),
        requests_pending_max: a.requests_pending_max.unwrap_or(64),
        pkcs11_modules_allowed: a.pkcs11_modules_allowed.clone().unwrap_or_default(),
        kms_endpoints_allowed: a
            .kms_endpoints_allowed
            .iter()
            .flatten()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect(),
        data_dir: PathBuf::new(),
        rotation_check_interval_ms: a.rotation_check_interval_ms.unwrap_or(3_600_000),
        rotation_days_default: a.rotation_days_default.unwrap_or(90),
    };
    if c.rotation_check_interval_ms == 0
        || c.rotation_days_default == 0
        || c.rotation_days_default > auditlog_engine::rotation::ROTATION_DAYS_MAX
    {
        bail!(
            "admin.rotation_check_interval_ms must be positive, admin.rotation_days_default within 1..={}",
            auditlog_engine::rotation::ROTATION_DAYS_MAX
        );
    }
    if c.approvals_required == 0 {
        bail!(
            "admin.approvals_required must be at least 1: critical operations need a second admin"
        );
    }
    if c.request_ttl_ms == 0 || c.requests_pending_max == 0 {
        bail!("admin.request_ttl_ms and admin.requests_pending_max must be positive");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let c = resolve(FileConfig::default(), Overrides::default()).expect("defaults");
        assert_eq!(c.engine.data_dir, PathBuf::from("./data"));
        assert_eq!(c.server.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.body_bytes_max, 4 << 20);
    }

    #[test]
    fn file_and_flags() {
        let file: FileConfig = toml::from_str(
            "[engine]\ndata_dir = \"/x\"\nschema = \"raw\"\nsubmission_bytes_max = 1000\n\
             [server]\nhttp_addr = \"0.0.0.0:1\"\nlong_poll_ms_max = 5\n",
        )
        .expect("parse");
        let c = resolve(
            file,
            Overrides {
                data_dir: None,
                http_addr: Some("127.0.0.1:9".into()),
                tcp_addr: None,
                ops_addr: Some("127.0.0.1:19".into()),
                replica_of: None,
            },
        )
        .expect("resolve");
        assert_eq!(c.engine.data_dir, PathBuf::from("/x"));
        assert_eq!(c.engine.schema, SchemaMode::Raw);
        assert_eq!(c.engine.submission_bytes_max, 1000);
        assert_eq!(c.server.http_addr.to_string(), "127.0.0.1:9");
        assert_eq!(c.server.ops_addr.to_string(), "127.0.0.1:19");
        assert_eq!(c.server.long_poll_ms_max, 5);
    }

    /// The HSM PIN named by `pin_env` is read once by `load` and its variable removed, and
    /// no secret of the configuration shows in `Debug`.
    #[test]
    fn pin_leaves_the_environment_and_debug_shows_no_secret() {
        let dir = tempfile::tempdir().expect("tmp");
        let var = format!("AUDITLOG_TEST_PIN_{}", std::process::id());
        let path = dir.path().join("auditlogd.toml");
        std::fs::write(
            &path,
            format!(
                "[signer]\npin_env = \"{var}\"\n\
                 [replication]\ntarget = \"s3://b/p\"\n\
                 [replication.options]\naccess_key_id = \"AKID\"\n\
                 secret_access_key = \"s3-secret-9\"\nsession_token = \"sts-9\"\n\
                 account_key = \"azure-key-9\"\nbearer_token = \"gcs-9\"\n"
            ),
        )
        .expect("write config");
        // A name no other test uses; std serialises its own environment calls.
        std::env::set_var(&var, "pin-4711");
        let cfg = load(Some(&path), Overrides::default()).expect("load");
        assert!(
            std::env::var_os(&var).is_none(),
            "{var} still in the environment after loading the configuration"
        );
        match &cfg.engine.pkcs11_pin {
            Some(PinSource::Value(pin)) => assert_eq!(pin.expose(), "pin-4711"),
            other => panic!("the PIN was not kept: {other:?}"),
        }
        let shown = format!("{cfg:?}");
        for secret in ["pin-4711", "s3-secret-9", "sts-9", "azure-key-9", "gcs-9"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("<redacted>"));
        // The file as parsed, before resolving, is as discreet.
        let text = std::fs::read_to_string(&path).expect("read");
        let file: FileConfig = toml::from_str(&text).expect("parse");
        let shown = format!("{file:?}");
        assert!(!shown.contains("s3-secret-9") && !shown.contains("azure-key-9"));
    }

    #[test]
    fn witness_section_is_checked_at_load() {
        let w0 = "witness.test/w0+23fc7de5+BEOnLnFEAXYt9mtowm373yaCquyfJHTspGE+QkoPuv08";
        let w1 = "witness.test/w1+202e6e51+BGa+fjMsekUzMr2dCn99sFX1xe8aBq2mbZizn7aBDEc6";
        let text = |engine: &str, policy: usize, keys: &[&str]| {
            let mut t = format!("{engine}[witness]\npolicy = {policy}\ntimeout_ms = 700\n");
            for k in keys {
                t.push_str(&format!(
                    "[[witness.witnesses]]\nurl = \"http://127.0.0.1:1/w\"\nkey = \"{k}\"\n"
                ));
            }
            t
        };
        let resolve_text = |t: &str| -> anyhow::Result<Config> {
            resolve(toml::from_str(t)?, Overrides::default())
        };
        let c = resolve_text(&text("", 2, &[w0, w1])).expect("valid");
        let w = c.engine.witness.expect("witness section");
        assert_eq!(
            (w.policy, w.timeout_ms, w.body_bytes_max),
            (2, 700, 16 << 10)
        );
        assert_eq!(w.witnesses[1].key, w1);
        for (t, why) in [
            (text("", 3, &[w0, w1]), "between 1 and the 2"),
            (text("", 0, &[w0]), "between 1 and the 1"),
            (text("", 1, &[w0, w0]), "listed twice"),
            (text("", 1, &["nope"]), "witness key"),
            (
                text("[engine]\ntree_hash = \"blake3\"\n", 1, &[w0]),
                "SHA-256",
            ),
        ] {
            let e = format!("{:#}", resolve_text(&t).expect_err(why));
            assert!(e.contains(why), "{e}");
        }
        assert!(
            toml::from_str::<FileConfig>("[witness]\npolicy = 1\nwitnesses = []\nk = 1\n").is_err()
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("[server]\nbody_max = 1\n").is_err());
    }
}
