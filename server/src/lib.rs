//! `auditlogd`: opens (and recovers) the log, serves the HTTP API of DESIGN.md "Reading and
//! proving", and on SIGINT / SIGTERM stops accepting, drains what is in flight, signs a
//! final checkpoint and exits 0.
//!
//! The daemon is a library with one entry, [`main`], so that `src/main.rs` (the shipped
//! `auditlogd`) and the system tests' copy of it (`tests/src/bin/test-auditlogd.rs`, which
//! the tests reach through `CARGO_BIN_EXE_…` without a `cargo build` of their own) are the
//! same code. Nothing else is public.

mod admin;
mod admission;
mod auth;
mod config;
mod export;
mod forwarder;
mod http;
mod ingest;
mod keys;
mod listener;
mod metrics;
mod oidc;
mod oidc_config;
mod rotation;
mod serve;
mod siem_config;
mod siem_metrics;
mod standby;
mod start_record;
mod submit;
mod syslog;
mod tcp;
mod tls;
mod witness_metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use auditlog_engine::Engine;
use clap::Parser;

#[derive(Parser)]
#[command(name = "auditlogd", version, about = "auditlog daemon")]
struct Args {
    /// TOML configuration: `[engine]` (the engine's limits) and `[server]` (HTTP limits).
    #[arg(long, env = "AUDITLOG_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default ./data); overrides the file's `engine.data_dir`.
    #[arg(long, env = "AUDITLOG_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (default 127.0.0.1:8080); overrides `server.http_addr`.
    #[arg(long, env = "AUDITLOG_HTTP_ADDR")]
    http_addr: Option<String>,
    /// TCP ingest listen address (default 127.0.0.1:7070); overrides `server.tcp_addr`.
    #[arg(long, env = "AUDITLOG_TCP_ADDR")]
    tcp_addr: Option<String>,
    /// Run a key or token command instead of the daemon.
    #[command(subcommand)]
    command: Option<keys::Cmd>,
    /// Syslog TCP listen address (default: disabled); overrides `siem.syslog_addr`.
    #[arg(long, env = "AUDITLOG_SYSLOG_ADDR")]
    syslog_addr: Option<String>,
    /// Ops listener for /health, /ready and /metrics (default 127.0.0.1:9090); overrides
    /// `server.ops_addr`.
    #[arg(long, env = "AUDITLOG_OPS_ADDR")]
    ops_addr: Option<String>,
    /// Log lines as `text` (colour only when stderr is a terminal) or `json` (one object a
    /// line, stable keys: timestamp, level, target, fields).
    #[arg(long, env = "AUDITLOG_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Once every listener is bound, write their addresses here as JSON (atomically), for
    /// whoever started the daemon with port 0 and must learn the ports it got.
    #[arg(long, env = "AUDITLOG_LISTENING_FILE")]
    listening_file: Option<PathBuf>,
    /// Run as a read replica of this bucket (`s3://bucket/prefix`, `azure://…`, `gs://…`,
    /// `file://…`: the writer's replication target): follow it, serve reads and proofs,
    /// refuse writes. Credentials and polling: `[replica]`.
    #[arg(long, env = "AUDITLOG_REPLICA_OF")]
    replica_of: Option<String>,
    /// With `--replica-of`: a standby. When the writer's lease goes unrenewed for a whole
    /// period, take it, catch up with the bucket, and become the writer (the process
    /// re-executes itself without `--standby` and `--replica-of`).
    #[arg(long, requires = "replica_of")]
    standby: bool,
}

/// `--version`: the daemon's version and the version of the formats it reads and writes.
fn version_line() -> String {
    format!(
        "{} (formats {})",
        env!("CARGO_PKG_VERSION"),
        auditlog_formats::FORMATS_VERSION
    )
}

/// `auditlogd check-config FILE`: parses and validates the file as a start would, prints the
/// effective values (secrets redacted) and exits 0, or exits non-zero naming what is wrong.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let cfg = config::load(Some(file), config::Overrides::default())
        .with_context(|| format!("{}", file.display()))?;
    if let Some(warning) = cfg.server.siem.check_syslog_senders()? {
        eprintln!("warning: {warning}");
    }
    println!("{cfg:#?}");
    eprintln!("{}: OK", file.display());
    Ok(())
}

/// How long a runtime shutdown waits for blocking engine calls still running.
const DRAIN_BLOCKING: Duration = Duration::from_secs(10);

/// `auditlogd`: parses the command line, runs a key or configuration command or the daemon.
pub fn main() -> anyhow::Result<()> {
    // glibc gives each thread that allocates its own arena; with producers on many threads
    // resident memory then creeps up to a plateau (measured: 1e6 -> 1e7 events, RSS x1.37 with
    // default arenas, x1.05 with one). Two arenas keep memory flat at no measured cost.
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Block the stop signals before any thread starts, so only `sigwait` sees them.
    let signals = stop_signals();
    let args = parse_args();
    init_logging(&args.log_format);
    if let Some(keys::Cmd::CheckConfig { file }) = &args.command {
        return check_config(file);
    }
    // Still one thread (the subscriber above starts none): `load` removes the HSM PIN's
    // variable from the environment, which must not race with another thread reading it.
    let mut cfg = config::load(
        args.config.as_deref(),
        config::Overrides {
            data_dir: args.data_dir,
            http_addr: args.http_addr,
            tcp_addr: args.tcp_addr,
            ops_addr: args.ops_addr,
            replica_of: args.replica_of,
        },
    )?;
    if let Some(cmd) = args.command {
        return keys::run(cmd, &cfg);
    }
    cfg.server.siem.override_syslog_addr(args.syslog_addr)?;
    if let Some(warning) = cfg.server.siem.check_syslog_senders()? {
        eprintln!("auditlogd: warning: {warning}");
    }
    let took_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    run(
        &cfg,
        args.config.as_deref(),
        args.listening_file.as_deref(),
        &signals,
        args.standby.then(|| took_over.clone()),
    )?;
    if took_over.load(std::sync::atomic::Ordering::SeqCst) {
        standby::become_writer()?;
    }
    Ok(())
}

fn parse_args() -> Args {
    use clap::{CommandFactory, FromArgMatches};
    // Once per process: clap keeps the version as a `&'static str`.
    let version: &'static str = Box::leak(version_line().into_boxed_str());
    let matches = Args::command().version(version).get_matches();
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn init_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().init();
    } else {
        // No ANSI escapes into files and journals: colour only on a terminal.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// The daemon's life: open the log, record the start, bind, serve until a stop signal,
/// drain, sign a final checkpoint.
fn run(
    cfg: &config::Config,
    config_file: Option<&Path>,
    listening_file: Option<&Path>,
    signals: &libc::sigset_t,
    standby: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> anyhow::Result<()> {
    let data_dir = cfg.engine.data_dir.clone();
    // 0700: it holds the tokens and the development key (an existing one is tightened).
    auditlog_engine::private::ensure_private_dir(&data_dir)?;
    let (tokens, initial) = auth::Tokens::load_or_create(&data_dir)?;
    if let Some(path) = initial {
        println!(
            "auditlogd: first start: tokens written to {}",
            path.display()
        );
    }
    // A `jwks_file` that cannot be read stops the start here; a `jwks_url` is fetched by the
    // verifier's own thread.
    let oidc = cfg.oidc.clone().map(oidc::Oidc::start).transpose()?;
    let engine = Engine::open(cfg.engine.clone(), None)
        .with_context(|| format!("opening the log in {}", data_dir.display()))?;
    let engine = Arc::new(engine);
    let replica = cfg.engine.replica.as_ref().map(|r| r.source.clone());
    // Before anything is served: token changes since the last start, and the security
    // configuration in effect (with a digest of the file), written into the log itself.
    // A read replica writes nothing into the log (the writer records its own starts).
    if replica.is_none() {
        start_record::record_start(cfg, &engine, config_file)
            .context("recording the start in the log")?;
    } else if let Some(src) = &replica {
        println!("auditlogd: read replica of {src}");
    }
    if let Some(took_over) = standby {
        standby::watch(cfg, &engine, took_over)?;
    }
    let status = engine.status();
    println!(
        "auditlogd: log open in {} ({} events, io {})",
        data_dir.display(),
        status.tree_size,
        status.io_mode
    );
    println!("verifier key: {}", engine.verifier_key());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("auditlogd-http")
        .build()
        .context("starting the async runtime")?;
    let shared = Shared::new(cfg, engine.clone(), tokens)?;
    let state = app_state(cfg, &shared, oidc)?;
    let stopped = spawn_signal_thread(*signals, &engine)?;

    let forward_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer forwards to the SIEM; a replica doing it too would send every event twice.
    let forwarder = match replica {
        None => forwarder::start(
            engine.clone(),
            cfg.server.siem.clone(),
            forward_stop.clone(),
        )?,
        Some(_) => None,
    };
    if replica.is_none() {
        // Stops with the runtime; a step in flight is a blocking task the runtime drains.
        runtime.spawn(rotation::run(state.clone()));
    }
    let served = runtime.block_on(async {
        let listeners = Listeners::bind(cfg)?;
        if let Some(path) = listening_file {
            listeners.write_file(path)?;
        }
        serve_until_stopped(cfg, listeners, shared, state, stopped).await
    });
    runtime.shutdown_timeout(DRAIN_BLOCKING);
    forward_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(f) = forwarder {
        let _ = f.join();
    }
    served?;
    eprintln!("auditlogd: draining the engine and signing a final checkpoint");
    shut_down(engine)
}

/// What the listeners share: the engine, the tokens, TLS, and the limits that span them.
struct Shared {
    engine: Arc<Engine>,
    tokens: Arc<auth::Tokens>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Client certificate name -> role, under mutual TLS.
    client_roles: BTreeMap<String, auth::Role>,
    http_connections: Arc<tokio::sync::Semaphore>,
    tcp_connections: Arc<tokio::sync::Semaphore>,
    admission: Arc<admission::Admission>,
}

impl Shared {
    fn new(
        cfg: &config::Config,
        engine: Arc<Engine>,
        tokens: auth::Tokens,
    ) -> anyhow::Result<Self> {
        let tls = cfg.server.tls.as_ref().map(tls::load).transpose()?;
        Ok(Shared {
            engine,
            tokens: Arc::new(tokens),
            client_roles: tls
                .as_ref()
                .map(|t| t.client_roles.clone())
                .unwrap_or_default(),
            acceptor: tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone())),
            http_connections: Arc::new(tokio::sync::Semaphore::new(cfg.server.connections_max)),
            tcp_connections: Arc::new(tokio::sync::Semaphore::new(cfg.server.tcp_connections_max)),
            admission: admission::Admission::new(
                cfg.server.request_bytes_in_flight_max,
                cfg.server.submissions_per_principal_max,
            ),
        })
    }
}

/// The HTTP routers' state.
fn app_state(
    cfg: &config::Config,
    shared: &Shared,
    oidc: Option<oidc::Oidc>,
) -> anyhow::Result<Arc<http::AppState>> {
    let engine = &shared.engine;
    let admin = Arc::new(admin::Admin::open(&cfg.engine.data_dir, cfg.admin.clone())?);
    // Checkpoint long-polls wait on this, not on a thread.
    let (checkpoint_tx, checkpoints) =
        tokio::sync::watch::channel(engine.latest_checkpoint().map_or(0, |c| c.checkpoint.size));
    engine.on_checkpoint(Box::new(move |size| {
        checkpoint_tx.send_replace(size);
    }));
    Ok(Arc::new(http::AppState {
        engine: engine.clone(),
        tokens: shared.tokens.clone(),
        cfg: cfg.server.clone(),
        http: metrics::HttpCounters::default(),
        admin,
        rotation: Default::default(),
        started: Instant::now(),
        client_roles: shared.client_roles.clone(),
        oidc,
        http_connections: shared.http_connections.clone(),
        tcp_connections: shared.tcp_connections.clone(),
        api_shed: Default::default(),
        ops_shed: Default::default(),
        checkpoints,
        long_polls: http::ClassLimits::new(
            cfg.server.long_polls_max,
            cfg.server.long_polls_per_principal_max,
            "too_many_long_polls",
            ("long_polls_max", "long_polls_per_principal_max"),
        ),
        streamed_reads: http::ClassLimits::new(
            cfg.server.streamed_reads_max,
            cfg.server.streamed_reads_per_principal_max,
            "too_many_streamed_reads",
            ("streamed_reads_max", "streamed_reads_per_principal_max"),
        ),
        admission: shared.admission.clone(),
    }))
}

/// A thread that waits for SIGINT or SIGTERM, begins the engine's shutdown and tells the
/// listeners to stop.
fn spawn_signal_thread(
    signals: libc::sigset_t,
    engine: &Arc<Engine>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = Arc::downgrade(engine);
    std::thread::Builder::new()
        .name("auditlogd-signals".into())
        .spawn(move || {
            wait_for(&signals);
            // Before the requests drain: one waiting on a sealer that keeps failing (say,
            // with the HSM gone) would otherwise hold the drain for good.
            if let Some(engine) = draining.upgrade() {
                engine.begin_shutdown();
            }
            let _ = stop_tx.send(());
        })
        .context("starting the signal thread")?;
    Ok(stop_rx)
}

/// Every listener, bound (so connections queue in the backlog) but not yet served.
struct Listeners {
    ingest: tokio::net::TcpListener,
    syslog: Option<(tokio::net::TcpListener, Option<syslog::ListenerTls>)>,
    http: tokio::net::TcpListener,
    ops: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds them all (inside the runtime), saying where each one listens.
    fn bind(cfg: &config::Config) -> anyhow::Result<Listeners> {
        let backlog = cfg.server.listen_backlog;
        let ingest = listener::bind(cfg.server.tcp_addr, backlog)
            .with_context(|| format!("binding {}", cfg.server.tcp_addr))?;
        println!("auditlogd: TCP ingest on {}", ingest.local_addr()?);
        let syslog = match cfg.server.siem.syslog_addr {
            None => None,
            Some(addr) => {
                let l = listener::bind(addr, backlog)
                    .with_context(|| format!("binding syslog {addr}"))?;
                let tls = match &cfg.server.siem.syslog_tls {
                    None => None,
                    Some(t) => Some(syslog::ListenerTls::load(
                        t,
                        Duration::from_millis(cfg.server.tls_handshake_timeout_ms),
                    )?),
                };
                let scheme = if tls.is_some() {
                    "syslog over TLS"
                } else {
                    "syslog"
                };
                println!("auditlogd: {scheme} on {}", l.local_addr()?);
                Some((l, tls))
            }
        };
        let http = listener::bind(cfg.server.http_addr, backlog)
            .with_context(|| format!("binding {}", cfg.server.http_addr))?;
        let ops = listener::bind(cfg.server.ops_addr, backlog)
            .with_context(|| format!("binding the ops listener {}", cfg.server.ops_addr))?;
        let scheme = if cfg.server.tls.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        };
        println!("auditlogd: {scheme} on {}", http.local_addr()?);
        println!(
            "auditlogd: ops (health, ready, metrics) on {}",
            ops.local_addr()?
        );
        Ok(Listeners {
            ingest,
            syslog,
            http,
            ops,
        })
    }

    /// `--listening-file`: `{"http": "127.0.0.1:41234", "tcp": …, "ops": …, "syslog": …}`
    /// (`syslog` only when it listens), the addresses the kernel bound (port 0 resolved).
    /// Replaced atomically, so a reader sees the whole file or none; written before any
    /// listener is served, so `/health` answering means the file is there.
    fn write_file(&self, path: &Path) -> anyhow::Result<()> {
        let mut addrs = serde_json::Map::new();
        addrs.insert("http".into(), self.http.local_addr()?.to_string().into());
        addrs.insert("tcp".into(), self.ingest.local_addr()?.to_string().into());
        addrs.insert("ops".into(), self.ops.local_addr()?.to_string().into());
        if let Some((l, _)) = &self.syslog {
            addrs.insert("syslog".into(), l.local_addr()?.to_string().into());
        }
        let mut text = serde_json::to_vec_pretty(&serde_json::Value::Object(addrs))?;
        text.push(b'\n');
        auditlog_engine::files::replace_file(path, &text)
            .with_context(|| format!("writing the listening file {}", path.display()))?;
        println!("auditlogd: listening addresses in {}", path.display());
        Ok(())
    }
}

/// Serves every listener until `stopped`, then stops accepting and drains them.
async fn serve_until_stopped(
    cfg: &config::Config,
    listeners: Listeners,
    shared: Shared,
    state: Arc<http::AppState>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let (tcp_stop_tx, tcp_stop_rx) = tokio::sync::watch::channel(false);
    let s = &cfg.server;
    let limits = tcp::TcpLimits {
        frame_bytes_max: s.tcp_frame_bytes_max,
        batches_in_flight_max: s.tcp_batches_in_flight_max,
        hello_timeout_ms: s.tcp_hello_timeout_ms,
        idle_timeout_ms: s.tcp_idle_timeout_ms,
        write_timeout_ms: s.tcp_write_timeout_ms,
        connections_per_source_max: s.tcp_connections_per_source_max,
    };
    let ctx = Arc::new(tcp::TcpContext {
        engine: shared.engine.clone(),
        tokens: shared.tokens.clone(),
        limits,
        tls: shared.acceptor.clone(),
        client_roles: shared.client_roles,
        connections: shared.tcp_connections,
        admission: shared.admission.clone(),
    });
    let tcp_task = tokio::spawn(tcp::serve(listeners.ingest, ctx, tcp_stop_rx.clone()));
    let syslog_task = listeners.syslog.map(|(l, tls)| {
        tokio::spawn(syslog::serve(
            l,
            shared.engine.clone(),
            s.siem.clone(),
            tls,
            shared.admission.clone(),
            tcp_stop_rx,
        ))
    });
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let api_limits = serve::HttpLimits {
        connections_max: s.connections_max,
        connections_per_source_max: s.http_connections_per_source_max,
        header_read_timeout_ms: s.http_header_read_timeout_ms,
        write_timeout_ms: s.http_write_timeout_ms,
        tls_handshake_timeout_ms: s.tls_handshake_timeout_ms,
    };
    let ops_limits = serve::HttpLimits {
        connections_max: s.ops_connections_max,
        connections_per_source_max: (s.ops_connections_max / 4).max(1),
        ..api_limits.clone()
    };
    // The routers hold the only handles on the engine besides `engine` itself: once the
    // listeners have drained, shutdown finds it free.
    let ops_router = http::ops_router(state.clone());
    let (api_shed, ops_shed) = (state.api_shed.clone(), state.ops_shed.clone());
    let api_task = tokio::spawn(serve::serve(
        listeners.http,
        shared.acceptor,
        http::router(state),
        api_limits,
        shared.http_connections,
        api_shed,
        http_stop_rx.clone(),
    ));
    let ops_task = tokio::spawn(serve::serve(
        listeners.ops,
        None,
        ops_router,
        ops_limits.clone(),
        Arc::new(tokio::sync::Semaphore::new(ops_limits.connections_max)),
        ops_shed,
        http_stop_rx,
    ));
    drop(shared.engine);
    let _ = stopped.await;
    eprintln!("auditlogd: stopping: draining requests");
    let _ = http_stop_tx.send(true);
    let _ = tcp_stop_tx.send(true);
    api_task.await.context("serving HTTP")?;
    ops_task.await.context("serving ops")?;
    let _ = tcp_task.await;
    if let Some(t) = syslog_task {
        let _ = t.await;
    }
    Ok(())
}

/// Waits (up to [`DRAIN_BLOCKING`]) until nothing else holds the engine, then shuts it down,
/// which signs the final checkpoint.
fn shut_down(mut engine: Arc<Engine>) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_BLOCKING;
    loop {
        match Arc::try_unwrap(engine) {
            Ok(e) => return e.shutdown().context("shutting down"),
            Err(shared) if Instant::now() < deadline => {
                // A blocking engine call detached by the runtime still holds a handle.
                engine = shared;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                anyhow::bail!("engine still in use after the drain; not signing a final checkpoint")
            }
        }
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
}
