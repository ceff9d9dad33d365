//! A hostile client load for `auditlogd`, shared by the combined-attack system test
//! (`tests/tests/attack.rs`) and the `attacker` binary of the attack benchmark
//! (`benches/attack.py`): thousands of plain sockets driven by one epoll loop, spread over
//! several loopback source addresses so that the listeners' global caps are reached and not
//! only their per-source ones.
//!
//! What it does, for [`Plan::duration`], reopening every connection the server closes after
//! [`Plan::reopen_pause`]:
//!
//! - idle sockets on every listener: the HTTP API and the ops listener get half a request
//!   line or nothing, TCP ingest half a frame header or nothing, syslog (TLS) nothing;
//! - TLS handshakes that stall after half a ClientHello;
//! - checkpoint long-polls by one principal, for a size the log will not reach;
//! - exports that never read their response (a small receive buffer, so the server's write
//!   stalls at once), drained only after [`Plan::export_hold`] to see how they ended;
//! - 4 MiB request bodies, with and without a writer token, sent as fast as allowed (under
//!   [`Plan::flood_bytes_per_s`] in all) or a little at a time.
//!
//! Every connection's life is recorded ([`Closed`]): when it connected, last sent, first and
//! last received, how it ended and the first bytes of the answer, so a caller can check that
//! the server shed it or cut it within the timeout that applies.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Linux's `IP_BIND_ADDRESS_NO_PORT` (not in the libc crate): the local port of a socket
/// bound to an address is chosen at `connect`, per destination, so thousands of sockets
/// from one source address do not use up its ephemeral ports.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

/// What a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// HTTP API: half a request line (even slots) or nothing (odd slots).
    IdleApi,
    /// TCP ingest: half a frame header or nothing.
    IdleTcp,
    /// Syslog listener: nothing (with TLS on it, a handshake that never starts).
    IdleSyslog,
    /// Ops listener: half a request line or nothing.
    IdleOps,
    /// Half a ClientHello to a TLS listener, then nothing.
    StalledHandshake,
    /// `GET /v1/checkpoint?min_size=<far>&wait_ms=…`, answer read.
    LongPoll,
    /// `GET /v1/export`, answer not read for `export_hold`, then drained.
    Export,
    /// 4 MiB POST without a token, as fast as allowed.
    BodyFastAnonymous,
    /// 4 MiB POST without a token, a little at a time.
    BodySlowAnonymous,
    /// 4 MiB POST of events that fail validation, with a writer token, as fast as allowed.
    BodyFastWriter,
    /// 4 MiB POST with a writer token, a little at a time.
    BodySlowWriter,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::IdleApi,
        Kind::IdleTcp,
        Kind::IdleSyslog,
        Kind::IdleOps,
        Kind::StalledHandshake,
        Kind::LongPoll,
        Kind::Export,
        Kind::BodyFastAnonymous,
        Kind::BodySlowAnonymous,
        Kind::BodyFastWriter,
        Kind::BodySlowWriter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::IdleApi => "idle_api",
            Kind::IdleTcp => "idle_tcp",
            Kind::IdleSyslog => "idle_syslog",
            Kind::IdleOps => "idle_ops",
            Kind::StalledHandshake => "stalled_tls_handshake",
            Kind::LongPoll => "long_poll",
            Kind::Export => "export_never_read",
            Kind::BodyFastAnonymous => "body_fast_anonymous",
            Kind::BodySlowAnonymous => "body_slow_anonymous",
            Kind::BodyFastWriter => "body_fast_writer",
            Kind::BodySlowWriter => "body_slow_writer",
        }
    }
}

/// Where to attack, and the credentials a hostile insider holds.
#[derive(Clone, Debug)]
pub struct Target {
    pub api: SocketAddrV4,
    pub tcp: SocketAddrV4,
    pub syslog: SocketAddrV4,
    pub ops: SocketAddrV4,
    /// The listener the stalled handshakes go to (one that speaks TLS).
    pub tls: SocketAddrV4,
    /// The long-polls' principal.
    pub auditor_token: String,
    /// The exports' principals, used in turn.
    pub reader_tokens: Vec<String>,
    /// The writer token of the authenticated body flood.
    pub writer_token: String,
    /// A log size the long-polls wait for (far beyond what the run writes).
    pub far_size: u64,
}

/// How much of each, and for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Source addresses (127.0.0.0/8), used in turn.
    pub sources: Vec<[u8; 4]>,
    /// Idle sockets on each of the listeners in `idle_kinds`.
    pub idle_per_listener: usize,
    /// The idle kinds used (all four unless [`Plan::only`] left some out).
    pub idle_kinds: Vec<Kind>,
    pub stalled_handshakes: usize,
    pub long_polls: usize,
    pub long_poll_wait_ms: u64,
    pub exports: usize,
    /// How long an export's answer is left unread before it is drained.
    pub export_hold: Duration,
    pub bodies_fast_anonymous: usize,
    pub bodies_slow_anonymous: usize,
    pub bodies_fast_writer: usize,
    pub bodies_slow_writer: usize,
    /// Declared (and, if the server reads it, sent) length of each body.
    pub body_bytes: usize,
    /// Slow bodies: this many bytes per `slow_every`.
    pub slow_chunk: usize,
    pub slow_every: Duration,
    /// Bytes per second of fast bodies in all (0: as fast as the sockets take them).
    pub flood_bytes_per_s: u64,
    /// How long connections are reopened.
    pub duration: Duration,
    /// Pause before a closed connection is reopened.
    pub reopen_pause: Duration,
    /// After `duration`: how long connections still open may take to be closed by the
    /// server before they are counted as never cut and closed here.
    pub drain_deadline: Duration,
}

impl Plan {
    /// The attack of the issue: 2,000 idle sockets on each listener, 600 long-polls, 600
    /// exports that never read, 256 stalled TLS handshakes and a flood of 4 MiB bodies.
    pub fn full(duration: Duration) -> Plan {
        Plan {
            sources: (2..=9).map(|i| [127, 0, 0, i]).collect(),
            idle_per_listener: 2000,
            idle_kinds: vec![
                Kind::IdleApi,
                Kind::IdleTcp,
                Kind::IdleSyslog,
                Kind::IdleOps,
            ],
            stalled_handshakes: 256,
            long_polls: 600,
            long_poll_wait_ms: 5000,
            exports: 600,
            export_hold: Duration::from_secs(6),
            bodies_fast_anonymous: 8,
            bodies_slow_anonymous: 8,
            bodies_fast_writer: 8,
            bodies_slow_writer: 8,
            body_bytes: 4 << 20,
            slow_chunk: 4096,
            slow_every: Duration::from_millis(250),
            flood_bytes_per_s: 200 << 20,
            duration,
            reopen_pause: Duration::from_secs(1),
            drain_deadline: Duration::from_secs(20),
        }
    }

    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::IdleApi | Kind::IdleTcp | Kind::IdleSyslog | Kind::IdleOps => {
                if self.idle_kinds.contains(&kind) {
                    self.idle_per_listener
                } else {
                    0
                }
            }
            Kind::StalledHandshake => self.stalled_handshakes,
            Kind::LongPoll => self.long_polls,
            Kind::Export => self.exports,
            Kind::BodyFastAnonymous => self.bodies_fast_anonymous,
            Kind::BodySlowAnonymous => self.bodies_slow_anonymous,
            Kind::BodyFastWriter => self.bodies_fast_writer,
            Kind::BodySlowWriter => self.bodies_slow_writer,
        }
    }

    /// Keeps only the kinds named (by [`Kind::name`]); the others are left out.
    pub fn only(&mut self, names: &[&str]) {
        for k in Kind::ALL {
            if !names.contains(&k.name()) {
                match k {
                    Kind::IdleApi | Kind::IdleTcp | Kind::IdleSyslog | Kind::IdleOps => {}
                    Kind::StalledHandshake => self.stalled_handshakes = 0,
                    Kind::LongPoll => self.long_polls = 0,
                    Kind::Export => self.exports = 0,
                    Kind::BodyFastAnonymous => self.bodies_fast_anonymous = 0,
                    Kind::BodySlowAnonymous => self.bodies_slow_anonymous = 0,
                    Kind::BodyFastWriter => self.bodies_fast_writer = 0,
                    Kind::BodySlowWriter => self.bodies_slow_writer = 0,
                }
            }
        }
        let idle = [
            Kind::IdleApi,
            Kind::IdleTcp,
            Kind::IdleSyslog,
            Kind::IdleOps,
        ];
        self.idle_kinds = idle
            .into_iter()
            .filter(|k| names.contains(&k.name()))
            .collect();
    }

    /// Sockets open at once at most (the caller's file descriptors).
    pub fn sockets(&self) -> usize {
        Kind::ALL.iter().map(|&k| self.count(k)).sum()
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed it (end of stream).
    Eof,
    /// The server reset it (or a write found it closed).
    Reset,
    /// It never connected.
    ConnectFailed,
    /// Still open after the drain deadline, and the server still has its end of it (in
    /// its accept queue or accepted): closed here.
    NeverCut,
    /// Still open after the drain deadline, but the server has no socket for it: the
    /// kernel completed the connection (a SYN cookie) while the listener's accept queue
    /// was full and then dropped it; a client that sends nothing never learns. Not a
    /// connection the daemon holds.
    NoServerSide,
}

/// One connection's life. Times are from the start of the run.
#[derive(Clone, Debug)]
pub struct Closed {
    pub kind: Kind,
    pub slot: usize,
    pub end: End,
    pub opened: Duration,
    pub connected: Option<Duration>,
    /// When its last byte was sent (or it connected, if it sent nothing).
    pub last_sent: Option<Duration>,
    pub first_received: Option<Duration>,
    pub last_received: Option<Duration>,
    pub closed: Duration,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The first bytes received (an HTTP status line, a TCP frame header).
    pub head: Vec<u8>,
    /// The last bytes received (the end of a chunked body shows whether it completed).
    pub tail: Vec<u8>,
}

impl Closed {
    /// The HTTP status of the answer, if it began with one.
    pub fn http_status(&self) -> Option<u16> {
        let s = std::str::from_utf8(self.head.get(..12)?).ok()?;
        s.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    /// An HTTP answer with a chunked body that ended (`0\r\n\r\n`).
    pub fn chunked_complete(&self) -> bool {
        self.tail.ends_with(b"\r\n0\r\n\r\n")
    }

    /// What the answer was, for counting: `http 503 busy`, `tcp Error Busy`, `nothing`.
    pub fn answer(&self) -> String {
        if let Some(s) = self.http_status() {
            // The JSON error's code, when the answer's first bytes hold it.
            let text = String::from_utf8_lossy(&self.head);
            let code = text
                .split_once("\"code\":\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(c, _)| c);
            return match code {
                Some(c) => format!("http {s} {c}"),
                None => format!("http {s}"),
            };
        }
        if let Some(f) = self.tcp_frame() {
            return f;
        }
        if self.head.is_empty() {
            return "nothing".into();
        }
        format!("{} bytes", self.bytes_received)
    }

    /// A TCP ingest frame's type, and an ERROR frame's code: `tcp Error Busy`.
    pub fn tcp_frame(&self) -> Option<String> {
        use auditlog_formats::frame::{ErrorCode, FrameType, FRAME_HEADER_BYTES};
        let h = self.head.get(..FRAME_HEADER_BYTES)?;
        if h[1..4] != [0, 0, 0] {
            return None;
        }
        let t = FrameType::from_u8(h[0])?;
        let code = self
            .head
            .get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + 2)
            .filter(|_| t == FrameType::Error)
            .and_then(|c| ErrorCode::from_u16(u16::from_be_bytes([c[0], c[1]])));
        Some(match code {
            Some(c) => format!("tcp {t:?} {c:?}"),
            None => format!("tcp {t:?}"),
        })
    }

    /// From connecting (or last sending) to the server's close.
    pub fn lifetime(&self) -> Duration {
        self.closed
            .saturating_sub(self.connected.unwrap_or(self.opened))
    }

    /// From the last byte either way to the server's close: how long the server let it
    /// sit idle.
    pub fn idle_before_close(&self) -> Duration {
        let last = [self.connected, self.last_sent, self.last_received]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.opened);
        self.closed.saturating_sub(last)
    }
}

/// Everything the run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub closed: Vec<Closed>,
    /// Open attack sockets, sampled every 100 ms: (time, count).
    pub open_samples: Vec<(Duration, usize)>,
    pub elapsed: Duration,
    /// Errors opening sockets (EMFILE and the like), by message.
    pub socket_errors: BTreeMap<String, u64>,
}

impl Report {
    /// Per kind: connections, and their answers counted.
    pub fn summary(&self) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
        let mut out: BTreeMap<&'static str, BTreeMap<String, u64>> = BTreeMap::new();
        for c in &self.closed {
            let m = out.entry(c.kind.name()).or_default();
            *m.entry("connections".into()).or_default() += 1;
            *m.entry(format!("end {:?}", c.end)).or_default() += 1;
            *m.entry(c.answer()).or_default() += 1;
        }
        out
    }

    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &Closed> {
        self.closed.iter().filter(move |c| c.kind == kind)
    }

    /// The most open at once.
    pub fn peak_open(&self) -> usize {
        self.open_samples.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

#[derive(PartialEq, Eq, Debug)]
enum State {
    Connecting,
    /// Sending `out` (possibly paced).
    Sending,
    /// Everything sent (or nothing to send): reading the answer.
    Reading,
    /// An export not read until `hold_until`.
    Holding,
}

struct Conn {
    fd: RawFd,
    to: SocketAddrV4,
    kind: Kind,
    slot: usize,
    state: State,
    out: Arc<Vec<u8>>,
    /// Bytes of `out` that are the request head (sent at once; the body may be paced).
    head_len: usize,
    sent: usize,
    /// Paced sending: the next chunk's time.
    next_send: Option<Instant>,
    hold_until: Option<Instant>,
    opened: Instant,
    connected: Option<Instant>,
    last_sent: Option<Instant>,
    first_received: Option<Instant>,
    last_received: Option<Instant>,
    bytes_received: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this connection's own.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// What each kind sends, prepared once.
struct Payloads {
    api_half: Arc<Vec<u8>>,
    ops_half: Arc<Vec<u8>>,
    tcp_half: Arc<Vec<u8>>,
    client_hello_half: Arc<Vec<u8>>,
    nothing: Arc<Vec<u8>>,
    long_poll: Arc<Vec<u8>>,
    exports: Vec<Arc<Vec<u8>>>,
    body_anonymous: Arc<Vec<u8>>,
    body_writer: Arc<Vec<u8>>,
}

impl Payloads {
    fn new(t: &Target, p: &Plan) -> Payloads {
        // Exactly `body_bytes` after the head, of lines that are JSON but not audit events:
        // refused once read, never stored.
        let post = |token: Option<&str>| {
            let mut head = format!(
                "POST /v1/events HTTP/1.1\r\nHost: auditlogd\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n",
                p.body_bytes
            );
            if let Some(t) = token {
                head.push_str(&format!("Authorization: Bearer {t}\r\n"));
            }
            head.push_str("\r\n");
            let mut v = head.into_bytes();
            let end = v.len() + p.body_bytes;
            let line = format!("{{\"junk\":\"{}\"}}\n", "j".repeat(1000));
            while v.len() < end {
                v.extend_from_slice(line.as_bytes());
            }
            v.truncate(end);
            Arc::new(v)
        };
        // A TLS record of 512 bytes announced, a ClientHello begun, then nothing.
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        hello.extend_from_slice(&[0x5a; 16]);
        Payloads {
            api_half: Arc::new(b"GET /v1/log HTTP/1.1\r\nHo".to_vec()),
            ops_half: Arc::new(b"GET /hea".to_vec()),
            // Half a HELLO frame's header.
            tcp_half: Arc::new(vec![auditlog_formats::frame::FrameType::Hello as u8, 0, 0, 0, 0, 0]),
            client_hello_half: Arc::new(hello),
            nothing: Arc::new(Vec::new()),
            long_poll: Arc::new(
                format!(
                    "GET /v1/checkpoint?min_size={}&wait_ms={} HTTP/1.1\r\nHost: auditlogd\r\nAuthorization: Bearer {}\r\n\r\n",
                    t.far_size, p.long_poll_wait_ms, t.auditor_token
                )
                .into_bytes(),
            ),
            exports: t
                .reader_tokens
                .iter()
                .map(|tok| {
                    Arc::new(
                        format!(
                            "GET /v1/export?format=json HTTP/1.1\r\nHost: auditlogd\r\nAuthorization: Bearer {tok}\r\n\r\n"
                        )
                        .into_bytes(),
                    )
                })
                .collect(),
            body_anonymous: post(None),
            body_writer: post(Some(&t.writer_token)),
        }
    }

    fn of(&self, kind: Kind, slot: usize) -> Arc<Vec<u8>> {
        let half = |p: &Arc<Vec<u8>>| {
            if slot.is_multiple_of(2) {
                p.clone()
            } else {
                self.nothing.clone()
            }
        };
        match kind {
            Kind::IdleApi => half(&self.api_half),
            Kind::IdleOps => half(&self.ops_half),
            Kind::IdleTcp => half(&self.tcp_half),
            Kind::IdleSyslog => self.nothing.clone(),
            Kind::StalledHandshake => self.client_hello_half.clone(),
            Kind::LongPoll => self.long_poll.clone(),
            Kind::Export => self.exports[slot % self.exports.len()].clone(),
            Kind::BodyFastAnonymous | Kind::BodySlowAnonymous => self.body_anonymous.clone(),
            Kind::BodyFastWriter | Kind::BodySlowWriter => self.body_writer.clone(),
        }
    }
}

fn addr_of(t: &Target, kind: Kind) -> SocketAddrV4 {
    match kind {
        Kind::IdleApi
        | Kind::LongPoll
        | Kind::Export
        | Kind::BodyFastAnonymous
        | Kind::BodySlowAnonymous
        | Kind::BodyFastWriter
        | Kind::BodySlowWriter => t.api,
        Kind::IdleTcp => t.tcp,
        Kind::IdleSyslog => t.syslog,
        Kind::IdleOps => t.ops,
        Kind::StalledHandshake => t.tls,
    }
}

fn sockaddr(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    }
}

/// A non-blocking connect from `from` to `to`; the socket, its connect in progress.
fn open(from: [u8; 4], to: SocketAddrV4, rcvbuf: Option<i32>) -> std::io::Result<RawFd> {
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket configured and connected with valid arguments; closed here on
    // any error, owned by the caller otherwise.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fail = |fd| {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        let one: libc::c_int = 1;
        let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            int,
        );
        if let Some(n) = rcvbuf {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&n as *const libc::c_int).cast(),
                int,
            );
        }
        let src = sockaddr(from, 0);
        if libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0 {
            return fail(fd);
        }
        let dst = sockaddr(to.ip().octets(), to.port());
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                libc::close(fd);
                return Err(e);
            }
        }
        Ok(fd)
    }
}

struct Loop {
    epoll: RawFd,
    started: Instant,
    conns: Vec<Option<Conn>>,
    /// Generation per slot, so an event for a closed connection is not taken for the
    /// connection that reused its slot.
    generation: Vec<u32>,
    reopen_at: Vec<Option<Instant>>,
    kinds: Vec<(Kind, usize)>,
    closed: Vec<Closed>,
    socket_errors: BTreeMap<String, u64>,
    open: usize,
    /// Fast-body byte allowance (token bucket).
    allowance: f64,
    allowance_at: Instant,
}

const HEAD_BYTES: usize = 512;
const TAIL_BYTES: usize = 16;

impl Loop {
    fn since(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.started)
    }

    fn interest(&self, i: usize) -> u32 {
        let Some(c) = &self.conns[i] else { return 0 };
        let base = (libc::EPOLLRDHUP) as u32;
        match c.state {
            State::Connecting => libc::EPOLLOUT as u32,
            State::Sending if c.next_send.is_none() => {
                libc::EPOLLOUT as u32 | libc::EPOLLIN as u32 | base
            }
            State::Sending => libc::EPOLLIN as u32 | base,
            State::Reading => libc::EPOLLIN as u32 | base,
            // Not read: level-triggered readiness would wake the loop for nothing.
            State::Holding => 0,
        }
    }

    fn ctl(&self, op: libc::c_int, i: usize) {
        let Some(c) = &self.conns[i] else { return };
        let mut ev = libc::epoll_event {
            events: self.interest(i),
            u64: ((self.generation[i] as u64) << 32) | i as u64,
        };
        // SAFETY: a registered (or to be registered) descriptor and a valid event.
        unsafe {
            libc::epoll_ctl(self.epoll, op, c.fd, &mut ev);
        }
    }

    fn connect(&mut self, i: usize, plan: &Plan, target: &Target, payloads: &Payloads) {
        let (kind, k) = self.kinds[i];
        let from = plan.sources[k % plan.sources.len()];
        let rcvbuf = (kind == Kind::Export).then_some(4096);
        let now = Instant::now();
        let to = addr_of(target, kind);
        match open(from, to, rcvbuf) {
            Ok(fd) => {
                self.generation[i] = self.generation[i].wrapping_add(1);
                self.conns[i] = Some(Conn {
                    fd,
                    to,
                    kind,
                    slot: k,
                    state: State::Connecting,
                    head_len: {
                        let out = payloads.of(kind, k);
                        out.windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(out.len(), |p| p + 4)
                    },
                    out: payloads.of(kind, k),
                    sent: 0,
                    next_send: None,
                    hold_until: None,
                    opened: now,
                    connected: None,
                    last_sent: None,
                    first_received: None,
                    last_received: None,
                    bytes_received: 0,
                    head: Vec::new(),
                    tail: Vec::new(),
                });
                self.open += 1;
                self.ctl(libc::EPOLL_CTL_ADD, i);
            }
            Err(e) => {
                *self.socket_errors.entry(e.to_string()).or_default() += 1;
                let t = self.since(now);
                self.closed.push(Closed {
                    kind,
                    slot: k,
                    end: End::ConnectFailed,
                    opened: t,
                    connected: None,
                    last_sent: None,
                    first_received: None,
                    last_received: None,
                    closed: t,
                    bytes_sent: 0,
                    bytes_received: 0,
                    head: Vec::new(),
                    tail: Vec::new(),
                });
                self.reopen_at[i] = Some(now + plan.reopen_pause);
            }
        }
    }

    fn finish(&mut self, i: usize, end: End, reopen: Option<Instant>) {
        let Some(c) = self.conns[i].take() else {
            return;
        };
        // SAFETY: removing the connection's own descriptor from the epoll set.
        unsafe {
            libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, c.fd, std::ptr::null_mut());
        }
        let now = Instant::now();
        let s = |t: Option<Instant>| t.map(|t| self.since(t));
        self.closed.push(Closed {
            kind: c.kind,
            slot: c.slot,
            end,
            opened: self.since(c.opened),
            connected: s(c.connected),
            last_sent: s(c.last_sent),
            first_received: s(c.first_received),
            last_received: s(c.last_received),
            closed: self.since(now),
            bytes_sent: c.sent as u64,
            bytes_received: c.bytes_received,
            head: c.head.clone(),
            tail: c.tail.clone(),
        });
        self.open -= 1;
        self.reopen_at[i] = reopen;
        drop(c);
    }

    /// Sends what is due; `Err` when the server closed the connection.
    fn send(&mut self, i: usize, plan: &Plan, budget: &mut f64) -> Result<(), End> {
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let slow = matches!(c.kind, Kind::BodySlowAnonymous | Kind::BodySlowWriter);
        let fast = matches!(c.kind, Kind::BodyFastAnonymous | Kind::BodyFastWriter);
        let paced = slow || (fast && plan.flood_bytes_per_s > 0);
        loop {
            if c.sent >= c.out.len() {
                break;
            }
            let mut want = (c.out.len() - c.sent).min(1 << 20);
            if c.sent >= c.head_len && paced {
                if c.next_send.is_some_and(|t| t > now) {
                    break;
                }
                if slow {
                    want = want.min(plan.slow_chunk);
                } else {
                    if *budget < 1.0 {
                        c.next_send = Some(now + Duration::from_millis(10));
                        break;
                    }
                    want = want.min(*budget as usize).min(256 << 10);
                }
            } else if c.sent < c.head_len {
                want = want.min(c.head_len - c.sent);
            }
            // SAFETY: sending from a live buffer on the connection's descriptor.
            let n = unsafe {
                libc::send(
                    c.fd,
                    c.out[c.sent..].as_ptr().cast(),
                    want,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    c.next_send = None;
                    break;
                }
                return Err(End::Reset);
            }
            let n = n as usize;
            let body = c.sent >= c.head_len;
            c.sent += n;
            c.last_sent = Some(now);
            if body && fast && paced {
                *budget -= n as f64;
            }
            if body && slow {
                c.next_send = Some(now + plan.slow_every);
                break;
            }
            c.next_send = None;
        }
        if c.sent >= c.out.len() {
            c.next_send = None;
            if c.kind == Kind::Export {
                c.state = State::Holding;
                c.hold_until = Some(now + plan.export_hold);
            } else {
                c.state = State::Reading;
            }
        }
        Ok(())
    }

    /// Reads what is there; `Err` when the connection ended.
    fn read(&mut self, i: usize, scratch: &mut [u8]) -> Result<(), End> {
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        loop {
            // SAFETY: reading into a live scratch buffer.
            let n = unsafe { libc::read(c.fd, scratch.as_mut_ptr().cast(), scratch.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    return Ok(());
                }
                return Err(End::Reset);
            }
            if n == 0 {
                return Err(End::Eof);
            }
            let n = n as usize;
            let now = Instant::now();
            c.first_received.get_or_insert(now);
            c.last_received = Some(now);
            c.bytes_received += n as u64;
            let data = &scratch[..n];
            if c.head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - c.head.len()).min(n);
                c.head.extend_from_slice(&data[..take]);
            }
            c.tail
                .extend_from_slice(&data[n.saturating_sub(TAIL_BYTES)..]);
            if c.tail.len() > TAIL_BYTES {
                c.tail.drain(..c.tail.len() - TAIL_BYTES);
            }
        }
    }

    fn event(&mut self, i: usize, events: u32, plan: &Plan, scratch: &mut [u8], stop: bool) {
        let reopen = (!stop).then(|| Instant::now() + plan.reopen_pause);
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        if c.state == State::Connecting {
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: reading SO_ERROR into a local.
            unsafe {
                libc::getsockopt(
                    c.fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                );
            }
            if err != 0 {
                *self
                    .socket_errors
                    .entry(std::io::Error::from_raw_os_error(err).to_string())
                    .or_default() += 1;
                self.finish(i, End::ConnectFailed, reopen);
                return;
            }
            let now = Instant::now();
            c.connected = Some(now);
            c.last_sent = Some(now);
            c.state = if c.out.is_empty() {
                State::Reading
            } else {
                State::Sending
            };
            let mut budget = self.allowance;
            let r = self.send(i, plan, &mut budget);
            self.allowance = budget;
            if let Err(end) = r {
                let _ = self.read(i, scratch);
                self.finish(i, end, reopen);
                return;
            }
            self.ctl(libc::EPOLL_CTL_MOD, i);
            return;
        }
        if events & libc::EPOLLOUT as u32 != 0 && c.state == State::Sending {
            let mut budget = self.allowance;
            let r = self.send(i, plan, &mut budget);
            self.allowance = budget;
            if let Err(end) = r {
                let _ = self.read(i, scratch);
                self.finish(i, end, reopen);
                return;
            }
            self.ctl(libc::EPOLL_CTL_MOD, i);
        }
        let readable = libc::EPOLLIN as u32
            | libc::EPOLLRDHUP as u32
            | libc::EPOLLHUP as u32
            | libc::EPOLLERR as u32;
        let holding = self.conns[i]
            .as_ref()
            .is_some_and(|c| c.state == State::Holding);
        if events & readable != 0 && !holding {
            if let Err(end) = self.read(i, scratch) {
                self.finish(i, end, reopen);
            }
        } else if events & (libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0 && holding {
            // Reset while held: nothing more to read.
            if let Err(end) = self.read(i, scratch) {
                self.finish(i, end, reopen);
            }
        }
    }

    /// Paced sends due, holds ended, reopenings due.
    fn tick(
        &mut self,
        plan: &Plan,
        target: &Target,
        payloads: &Payloads,
        stop: bool,
        scratch: &mut [u8],
    ) {
        let now = Instant::now();
        if plan.flood_bytes_per_s > 0 {
            let dt = now.duration_since(self.allowance_at).as_secs_f64();
            self.allowance_at = now;
            let cap = plan.flood_bytes_per_s as f64 / 10.0;
            self.allowance = (self.allowance + dt * plan.flood_bytes_per_s as f64).min(cap);
        }
        for i in 0..self.conns.len() {
            if let Some(c) = &self.conns[i] {
                match c.state {
                    State::Sending if c.next_send.is_some_and(|t| t <= now) => {
                        let mut budget = self.allowance;
                        let r = self.send(i, plan, &mut budget);
                        self.allowance = budget;
                        match r {
                            Ok(()) => self.ctl(libc::EPOLL_CTL_MOD, i),
                            Err(end) => {
                                let _ = self.read(i, scratch);
                                let reopen = (!stop).then(|| now + plan.reopen_pause);
                                self.finish(i, end, reopen);
                            }
                        }
                    }
                    State::Holding if c.hold_until.is_some_and(|t| t <= now) => {
                        if let Some(c) = self.conns[i].as_mut() {
                            c.state = State::Reading;
                        }
                        self.ctl(libc::EPOLL_CTL_MOD, i);
                    }
                    _ => {}
                }
            } else if !stop && self.reopen_at[i].is_some_and(|t| t <= now) {
                self.reopen_at[i] = None;
                self.connect(i, plan, target, payloads);
            }
        }
    }
}

/// Runs the attack until `plan.duration` has passed or `stop` is set, then waits up to
/// `plan.drain_deadline` for the server to close what is still open.
pub fn run(target: &Target, plan: &Plan, stop: &AtomicBool) -> Report {
    let payloads = Payloads::new(target, plan);
    // SAFETY: a new epoll instance, closed at the end.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1");
    // The order they open in: what must get in before the listeners fill first.
    let order = [
        Kind::LongPoll,
        Kind::Export,
        Kind::BodySlowWriter,
        Kind::BodySlowAnonymous,
        Kind::BodyFastWriter,
        Kind::BodyFastAnonymous,
        Kind::StalledHandshake,
        Kind::IdleApi,
        Kind::IdleTcp,
        Kind::IdleSyslog,
        Kind::IdleOps,
    ];
    let kinds: Vec<(Kind, usize)> = order
        .iter()
        .flat_map(|&k| (0..plan.count(k)).map(move |n| (k, n)))
        .collect();
    let n = kinds.len();
    let started = Instant::now();
    let mut l = Loop {
        epoll,
        started,
        conns: (0..n).map(|_| None).collect(),
        generation: vec![0; n],
        reopen_at: vec![None; n],
        kinds,
        closed: Vec::new(),
        socket_errors: BTreeMap::new(),
        open: 0,
        allowance: 0.0,
        allowance_at: started,
    };
    let mut scratch = vec![0u8; 64 << 10];
    let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut open_samples = Vec::new();
    let mut next_sample = started;
    let mut next_tick = started;
    let mut opened_all = 0usize;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let stopping = stopped_at.is_some();
        if !stopping && (now >= started + plan.duration || stop.load(Ordering::Relaxed)) {
            stopped_at = Some(now);
            for r in l.reopen_at.iter_mut() {
                *r = None;
            }
        }
        if let Some(t) = stopped_at {
            if l.open == 0 {
                break;
            }
            if now >= t + plan.drain_deadline {
                let server = server_ends();
                for i in 0..n {
                    let Some(c) = &l.conns[i] else { continue };
                    let end = match (&c.state, local_addr(c.fd)) {
                        (State::Connecting, _) | (_, None) => End::NeverCut,
                        (_, Some(me)) if server.contains(&(c.to, me)) => End::NeverCut,
                        _ => End::NoServerSide,
                    };
                    l.finish(i, end, None);
                }
                break;
            }
        }
        // Open at most 10,000 a second, so the first burst alone does not overflow the
        // listeners' accept queues.
        if stopped_at.is_none() && opened_all < n {
            let due = (now.duration_since(started).as_millis() as usize * 10).max(256);
            let until = due.min(n).max(opened_all);
            for i in opened_all..until {
                l.connect(i, plan, target, &payloads);
            }
            opened_all = until;
        }
        if now >= next_sample {
            open_samples.push((l.since(now), l.open));
            next_sample = now + Duration::from_millis(100);
        }
        // SAFETY: waiting on our epoll instance into a buffer of the length given.
        let got = unsafe {
            libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as libc::c_int, 10)
        };
        for ev in events.iter().take(got.max(0) as usize) {
            let (gen, i) = ((ev.u64 >> 32) as u32, (ev.u64 & 0xffff_ffff) as usize);
            if i < n && l.generation[i] == gen && l.conns[i].is_some() {
                l.event(i, ev.events, plan, &mut scratch, stopped_at.is_some());
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            l.tick(plan, target, &payloads, stopped_at.is_some(), &mut scratch);
            next_tick = now + Duration::from_millis(20);
        }
    }
    // SAFETY: our own epoll descriptor.
    unsafe {
        libc::close(epoll);
    }
    Report {
        closed: std::mem::take(&mut l.closed),
        open_samples,
        elapsed: started.elapsed(),
        socket_errors: std::mem::take(&mut l.socket_errors),
    }
}

/// A socket's own address.
fn local_addr(fd: RawFd) -> Option<SocketAddrV4> {
    // SAFETY: getsockname into a local sockaddr_in of the length given.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return None;
        }
        Some(SocketAddrV4::new(
            sa.sin_addr.s_addr.to_ne_bytes().into(),
            u16::from_be(sa.sin_port),
        ))
    }
}

/// Every IPv4 TCP socket of this network namespace as (local, remote), from
/// `/proc/net/tcp`: the server's end of a loopback connection is (listener, client). Request
/// sockets (SYN_RECV) and connections waiting in an accept queue are listed too.
fn server_ends() -> std::collections::HashSet<(SocketAddrV4, SocketAddrV4)> {
    let parse = |f: &str| -> Option<SocketAddrV4> {
        let (ip, port) = f.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
        Some(SocketAddrV4::new(
            ip.into(),
            u16::from_str_radix(port, 16).ok()?,
        ))
    };
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(1);
            Some((parse(f.next()?)?, parse(f.next()?)?))
        })
        .collect()
}

/// Listen queue overflows of this network namespace so far (`TcpExtListenOverflows`): SYNs
/// or handshake ends dropped because a listener's accept queue was full.
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows");
        if let Some(v) = i.and_then(|i| values.split_whitespace().nth(i)) {
            return v.parse().unwrap_or(0);
        }
    }
    0
}

/// The daemon's memory from `/proc/<pid>/status`: (VmRSS, VmHWM) in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples a process's VmRSS every `every` until `stop`: (peak VmRSS, VmHWM at the end), KiB.
pub fn watch_rss(pid: u32, every: Duration, stop: &AtomicBool) -> (u64, u64) {
    let mut peak = 0;
    let mut hwm = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some((rss, h)) = rss_kib(pid) {
            peak = peak.max(rss);
            hwm = h;
        }
        std::thread::sleep(every);
    }
    if let Some((rss, h)) = rss_kib(pid) {
        peak = peak.max(rss);
        hwm = h;
    }
    (peak, hwm)
}

/// A one-line JSON object of the report, for the benchmark.
pub fn report_json(r: &Report) -> serde_json::Value {
    let mut kinds = serde_json::Map::new();
    for k in Kind::ALL {
        let all: Vec<&Closed> = r.of(k).collect();
        if all.is_empty() {
            continue;
        }
        let mut answers: BTreeMap<String, u64> = BTreeMap::new();
        for c in &all {
            *answers.entry(c.answer()).or_default() += 1;
        }
        let max_life = all
            .iter()
            .filter(|c| matches!(c.end, End::Eof | End::Reset))
            .map(|c| c.lifetime().as_millis() as u64)
            .max()
            .unwrap_or(0);
        let max_idle = all
            .iter()
            .filter(|c| matches!(c.end, End::Eof | End::Reset))
            .map(|c| c.idle_before_close().as_millis() as u64)
            .max()
            .unwrap_or(0);
        kinds.insert(
            k.name().into(),
            serde_json::json!({
                "connections": all.len(),
                "never_cut": all.iter().filter(|c| c.end == End::NeverCut).count(),
                "no_server_side": all.iter().filter(|c| c.end == End::NoServerSide).count(),
                "connect_failed": all.iter().filter(|c| c.end == End::ConnectFailed).count(),
                "answers": answers,
                "max_lifetime_ms": max_life,
                "max_idle_before_close_ms": max_idle,
            }),
        );
    }
    serde_json::json!({
        "elapsed_s": r.elapsed.as_secs_f64(),
        "peak_open": r.peak_open(),
        "socket_errors": r.socket_errors,
        "kinds": kinds,
    })
}
