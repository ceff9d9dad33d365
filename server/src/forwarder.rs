//! The SIEM forwarder (FORMATS.md §14.5): streams every event, in index order, as CEF in
//! RFC 5424 messages with RFC 6587 octet counting over TCP to a collector.
//!
//! At least once, never skipping: the durable cursor (`<data_dir>/forwarder.cursor`, one
//! decimal index and `\n`, replaced atomically and fsynced) only moves past events the
//! collector has taken. Syslog over TCP has no application acknowledgement, so "taken"
//! means: the collector's TCP stack acknowledged every byte (the send queue, `TIOCOUTQ`,
//! is empty) and the connection was still healthy `CONFIRM_MS` later, time for the
//! collector to move the bytes from its socket into its own queue. After any failure the
//! forwarder reconnects with capped exponential backoff and resends from the cursor, so a
//! collector that stops mid-stream gets some events twice and none never.
//!
//!
//! With `[siem] forward_tls` the same stream runs inside TLS (RFC 5425), trusting only
//! `forward_ca_path` and optionally presenting a client certificate. The acknowledgement
//! check then needs two steps: each chunk is flushed through rustls, so every TLS record of
//! it sits in the socket, and the socket's byte count (TLS records, not plaintext) is
//! compared with its send queue as on plain TCP. Alerts and close_notify from the collector
//! are read between chunks; a handshake failure (an untrusted certificate, a wrong name)
//! is an error like any other: the cursor stays, the lag grows, and it retries with backoff.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use auditlog_engine::{Engine, EngineError};
use auditlog_formats::cef::{self, CefDevice};
use auditlog_formats::syslog::{write_rfc5424, Rfc5424Header};
use auditlog_formats::time::unix_ns_to_rfc3339;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::siem_config::{ForwardTls, SiemConfig};

/// How long a connection must stay healthy after the collector's TCP acknowledged a chunk
/// before the cursor moves past it.
const CONFIRM_MS: u64 = 500;
/// First reconnect delay; it doubles up to `forward_backoff_ms_max`.
const BACKOFF_MS_MIN: u64 = 100;
/// `local4`: the facility of forwarded messages.
const FACILITY: u8 = 20;

pub use auditlog_formats::layout::FORWARDER_CURSOR_FILE as CURSOR_FILE;

/// Forwarder counters, shown by `/metrics`.
pub struct ForwardCounters {
    /// Events written to the collector (resends included).
    pub sent: AtomicU64,
    /// The durable cursor: events before it are confirmed.
    pub cursor: AtomicU64,
    pub errors: AtomicU64,
    pub connects: AtomicU64,
    /// 1 when a forwarder is configured.
    pub enabled: AtomicU64,
}

pub static COUNTERS: ForwardCounters = ForwardCounters {
    sent: AtomicU64::new(0),
    cursor: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    connects: AtomicU64::new(0),
    enabled: AtomicU64::new(0),
};

pub fn read_cursor(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{}: not a log index: {s:?}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_cursor(path: &Path, at: u64) -> anyhow::Result<()> {
    auditlog_engine::files::replace_file(path, format!("{at}\n").as_bytes())?;
    Ok(())
}

/// Starts the forwarder thread; it runs until `stop` is set.
pub fn start(
    engine: Arc<Engine>,
    cfg: SiemConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(addr) = cfg.forward_addr.clone() else {
        return Ok(None);
    };
    let tls = cfg.forward_tls.as_ref().map(client_tls).transpose()?;
    let cursor_path = engine.config().data_dir.join(CURSOR_FILE);
    let cursor = read_cursor(&cursor_path)?;
    COUNTERS.cursor.store(cursor, Ordering::Relaxed);
    COUNTERS.enabled.store(1, Ordering::Relaxed);
    let f = Forwarder {
        engine,
        cfg,
        addr,
        tls,
        cursor_path,
        cursor,
        stop,
    };
    let h = std::thread::Builder::new()
        .name("auditlogd-forwarder".into())
        .spawn(move || f.run())
        .context("starting the forwarder thread")?;
    Ok(Some(h))
}

struct Forwarder {
    engine: Arc<Engine>,
    cfg: SiemConfig,
    addr: String,
    /// `forward_tls`: the client configuration and the name the collector must carry.
    tls: Option<ClientTls>,
    cursor_path: PathBuf,
    /// Durable: everything before it is confirmed.
    cursor: u64,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn run(mut self) {
        let mut backoff = BACKOFF_MS_MIN;
        while !self.stop.load(Ordering::Relaxed) {
            match self.session() {
                Ok(()) => backoff = BACKOFF_MS_MIN,
                Err(e) => {
                    COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "forwarder to {}: {e:#}; resending from index {} in {backoff} ms",
                        self.addr,
                        self.cursor
                    );
                    self.sleep(Duration::from_millis(backoff));
                    backoff =
                        (backoff * 2).min(self.cfg.forward_backoff_ms_max.max(BACKOFF_MS_MIN));
                }
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
    }

    /// One connection: send from the cursor until stopped or something fails.
    fn session(&mut self) -> anyhow::Result<()> {
        let timeout = Duration::from_millis(self.cfg.forward_connect_timeout_ms);
        let target = self
            .addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.addr))?
            .next()
            .with_context(|| format!("{} resolves to nothing", self.addr))?;
        let sock = TcpStream::connect_timeout(&target, timeout).context("connecting")?;
        sock.set_write_timeout(Some(timeout.max(Duration::from_secs(5))))?;
        // Bounds the TLS handshake; later reads never block (`DontWait`).
        sock.set_read_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        sock.set_nodelay(true)?;
        let mut link = Link::open(sock, self.tls.as_ref())?;
        COUNTERS.connects.fetch_add(1, Ordering::Relaxed);
        // Chunks written, waiting for the collector's TCP: (end index, end byte offset).
        let mut pending: std::collections::VecDeque<(u64, u64)> = Default::default();
        // Chunks it acknowledged, waiting out CONFIRM_MS: (end index, when).
        let mut acked: std::collections::VecDeque<(u64, Instant)> = Default::default();
        let mut sent = self.cursor;
        let mut buf = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let size = self.engine.tree_size();
            if sent < size {
                let end = size.min(sent + self.cfg.forward_batch_events_max);
                buf.clear();
                render_chunk(&self.engine, &self.cfg, sent, end, &mut buf)?;
                if let Err(e) = link.send(&buf) {
                    // A refusing collector's TLS alert explains a broken pipe better than
                    // the pipe does.
                    link.check_alive()?;
                    return Err(e).context("sending");
                }
                COUNTERS.sent.fetch_add(end - sent, Ordering::Relaxed);
                pending.push_back((end, link.socket_bytes()));
                sent = end;
            } else {
                self.sleep(Duration::from_millis(
                    self.cfg.forward_poll_ms.min(CONFIRM_MS),
                ));
            }
            link.check_alive()?;
            let acked_bytes = link
                .socket_bytes()
                .saturating_sub(unacked_bytes(link.socket())? as u64);
            while let Some(&(end, byte_end)) = pending.front() {
                if byte_end > acked_bytes {
                    break;
                }
                acked.push_back((end, Instant::now()));
                pending.pop_front();
            }
            let mut confirmed = None;
            while let Some(&(end, at)) = acked.front() {
                if at.elapsed() < Duration::from_millis(CONFIRM_MS) {
                    break;
                }
                confirmed = Some(end);
                acked.pop_front();
            }
            if let Some(end) = confirmed.filter(|e| *e > self.cursor) {
                write_cursor(&self.cursor_path, end)?;
                self.cursor = end;
                COUNTERS.cursor.store(end, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// `forward_tls`, loaded: the client configuration and the collector's expected name.
struct ClientTls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

fn client_tls(t: &ForwardTls) -> anyhow::Result<ClientTls> {
    let identity = match (&t.client_cert_path, &t.client_key_path) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let config = crate::tls::client_config(&t.ca_path, identity).context("siem.forward_tls")?;
    let server_name = ServerName::try_from(t.server_name.clone())
        .with_context(|| format!("siem.forward_server_name {:?}", t.server_name))?;
    Ok(ClientTls {
        config,
        server_name,
    })
}

/// The socket to the collector, counting the bytes written into it: with TLS these are
/// records, more than the plaintext, and they are what the send queue is compared with.
struct Counted {
    sock: TcpStream,
    written: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sock.read(buf)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sock.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// Reads what the socket holds without waiting: the collector sends nothing but TLS
/// session tickets, alerts and close_notify, which must not stall the send loop.
struct DontWait<'a>(&'a TcpStream);

impl Read for DontWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: recv into `buf`, valid for `buf.len()` bytes, on an open fd.
        let r = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

/// One connection to the collector, plain or TLS.
enum Link {
    Plain(Counted),
    Tls(Box<StreamOwned<ClientConnection, Counted>>),
}

impl Link {
    /// Wraps a connected socket; with TLS, completes the handshake (bounded by the
    /// socket's read timeout) so a refused certificate is reported as such.
    fn open(sock: TcpStream, tls: Option<&ClientTls>) -> anyhow::Result<Link> {
        let mut io = Counted { sock, written: 0 };
        let Some(tls) = tls else {
            return Ok(Link::Plain(io));
        };
        let mut conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .context("starting TLS")?;
        while conn.is_handshaking() {
            let (read, wrote) = conn
                .complete_io(&mut io)
                .context("TLS handshake with the collector")?;
            if read == 0 && wrote == 0 && conn.is_handshaking() {
                bail!("TLS handshake with the collector: no progress");
            }
        }
        Ok(Link::Tls(Box::new(StreamOwned::new(conn, io))))
    }

    /// Writes all of `buf` and pushes it into the socket: with TLS, every record of it.
    fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Plain(io) => io.write_all(buf),
            Link::Tls(s) => {
                s.write_all(buf)?;
                s.flush()?;
                if s.conn.wants_write() {
                    return Err(std::io::Error::other(
                        "TLS records left unsent after a flush",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Bytes put into the socket since it was opened (TLS: handshake and records).
    fn socket_bytes(&self) -> u64 {
        match self {
            Link::Plain(io) => io.written,
            Link::Tls(s) => s.sock.written,
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Link::Plain(io) => &io.sock,
            Link::Tls(s) => &s.sock.sock,
        }
    }

    /// Fails when the collector closed, reset, or (TLS) sent an alert or close_notify.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let s = match self {
            Link::Plain(io) => return check_alive(&io.sock),
            Link::Tls(s) => s,
        };
        let mut discard = [0u8; 4096];
        loop {
            match s.conn.read_tls(&mut DontWait(&s.sock.sock)) {
                Ok(0) => bail!("the collector closed the connection"),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e).context("connection"),
            }
            s.conn
                .process_new_packets()
                .context("TLS from the collector")?;
            // Collectors send no data; any is dropped, and the end of it is a close_notify.
            loop {
                match s.conn.reader().read(&mut discard) {
                    Ok(0) => bail!("the collector ended the TLS session"),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("TLS from the collector"),
                }
            }
        }
    }
}

/// Bytes written but not yet acknowledged by the peer's TCP.
fn unacked_bytes(sock: &TcpStream) -> anyhow::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int to the pointer; the fd is open for the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the send queue");
    }
    Ok(n)
}

/// A collector that closed or reset the connection shows as EOF or an error on a
/// non-blocking peek; a healthy one as "would block" (collectors send nothing back).
fn check_alive(sock: &TcpStream) -> anyhow::Result<()> {
    let mut b = [0u8; 1];
    // SAFETY: recv into a 1-byte local buffer on an open fd.
    let r = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r == 0 {
        bail!("the collector closed the connection");
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return Err(e).context("connection");
        }
    }
    Ok(())
}

/// Severity of the syslog header from the CEF severity (0–10).
fn syslog_severity(cef_severity: u8) -> u8 {
    match cef_severity {
        9.. => 2,
        7..=8 => 3,
        5..=6 => 4,
        3..=4 => 5,
        _ => 6,
    }
}

/// Renders events `[start, end)` as octet-counted RFC 5424 messages carrying CEF.
fn render_chunk(
    engine: &Engine,
    cfg: &SiemConfig,
    start: u64,
    end: u64,
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let alg = engine.tree_hash();
    let device: &CefDevice = &cfg.cef;
    let mut line = String::new();
    engine
        .read_records(start, end, &mut |index, rec| {
            line.clear();
            let (sev, received_at) = crate::export::with_stored_event(alg, index, rec, |r, e| {
                let sev = cef::render(device, e, &mut line)
                    .map_err(|e| EngineError::BadRequest(e.to_string()))?;
                Ok((sev, r.received_at_unix_ns))
            })?;
            let ts = unix_ns_to_rfc3339(received_at);
            let h = Rfc5424Header {
                facility: FACILITY,
                severity: syslog_severity(sev),
                timestamp: &ts,
                hostname: &cfg.forward_hostname,
                app_name: "auditlogd",
                procid: "-",
                msgid: "CEF",
            };
            write_rfc5424(out, &h, &line);
            Ok(true)
        })
        .with_context(|| format!("reading events {start}..{end}"))
}
