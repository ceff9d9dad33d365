//! The HTTP API of DESIGN.md "Reading and proving": routes, auth, errors and the read side.
//! Ingest is in `ingest.rs`. Every engine call that may block runs on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use auditlog_engine::{Engine, EngineError};
use auditlog_formats::export::{self, StoredEvent};
use auditlog_formats::record::{Record, Submitter};
use auditlog_formats::TreeHash;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::auth::{Access, AuthError, Role, Tokens};
use crate::config::ServerConfig;
use crate::listener::Peer;
use crate::metrics::{self, HttpCounters};
use crate::tls::ClientNames;

mod search;
mod tiles;
mod window;

pub struct AppState {
    pub engine: Arc<Engine>,
    pub tokens: Arc<Tokens>,
    pub cfg: ServerConfig,
    pub http: HttpCounters,
    pub admin: Arc<crate::admin::Admin>,
    /// What the key rotation scheduler last found (`rotation.rs`).
    pub rotation: crate::rotation::Rotation,
    pub started: Instant,
    /// Client certificate name -> role, under mutual TLS.
    pub client_roles: BTreeMap<String, Role>,
    /// `[auth.oidc]`: bearer values shaped as JWTs are verified here.
    pub oidc: Option<crate::oidc::Oidc>,
    /// Open-connection limits of the two listeners, for `/metrics`.
    pub http_connections: Arc<Semaphore>,
    pub tcp_connections: Arc<Semaphore>,
    /// Connections the API and ops listeners shed (over a connection cap).
    pub api_shed: Arc<crate::serve::ShedCounts>,
    pub ops_shed: Arc<crate::serve::ShedCounts>,
    /// The newest checkpoint's size, sent by the engine as each is published: long-polls
    /// wait on it, holding no thread.
    pub checkpoints: tokio::sync::watch::Receiver<u64>,
    /// Long-polls waiting, in all and per principal.
    pub long_polls: ClassLimits,
    /// Streamed reads (exports and ranges) running, in all and per principal.
    pub streamed_reads: ClassLimits,
    /// Event bytes in memory and each principal's share of the engine's queue, shared
    /// with the TCP and syslog listeners.
    pub admission: Arc<crate::admission::Admission>,
}

/// The concurrency limits of one route class: in all, and per principal. A request over
/// either is refused with 429 at once; nothing waits for a slot.
pub struct ClassLimits {
    all: Arc<Semaphore>,
    max: usize,
    per_principal: Arc<crate::listener::SourceSlots<String>>,
    /// The error code, and the two settings' names for the message.
    code: &'static str,
    names: (&'static str, &'static str),
}

/// A request's place in its class; given back when dropped (with the response's stream).
pub struct ClassSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: crate::listener::SourceSlot<String>,
}

impl ClassLimits {
    pub fn new(
        all: usize,
        per_principal: usize,
        code: &'static str,
        names: (&'static str, &'static str),
    ) -> ClassLimits {
        ClassLimits {
            all: Arc::new(Semaphore::new(all)),
            max: all,
            per_principal: crate::listener::SourceSlots::new(per_principal),
            code,
            names,
        }
    }

    /// Requests of this class running now.
    pub fn running(&self) -> usize {
        self.max - self.all.available_permits()
    }

    pub fn take(&self, who: &Submitter) -> ApiResult<ClassSlot> {
        self.take_key(who.as_str())
    }

    /// As `take`, for a caller named otherwise than by a submitter (a source address).
    pub fn take_key(&self, who: &str) -> ApiResult<ClassSlot> {
        let busy = |what: String| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                self.code,
                format!("{what}; retry later"),
            )
        };
        let slot = self
            .per_principal
            .take(who.to_string())
            .ok_or_else(|| busy(format!("{who} has {} of these running", self.names.1)))?;
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy(format!("{} of these are running", self.names.0)))?;
        Ok(ClassSlot {
            _permit: permit,
            _slot: slot,
        })
    }
}

pub type St = Arc<AppState>;

/// An error answer: `{"error":{"code","message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::count_http_error(self.code);
        if self.status.is_server_error() && self.status != StatusCode::NOT_IMPLEMENTED {
            tracing::warn!("answering {}: {}: {}", self.status, self.code, self.message);
        }
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of an oversized body may still be on its way.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        use StatusCode as S;
        let (status, code) = match &e {
            EngineError::BadEvent { .. } => (S::BAD_REQUEST, "bad_event"),
            EngineError::SubmissionTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "too_large"),
            EngineError::QueueFull(_) => (S::TOO_MANY_REQUESTS, "queue_full"),
            EngineError::Failed(_) | EngineError::DiskFull(_) => {
                (S::SERVICE_UNAVAILABLE, "engine_failed")
            }
            EngineError::ShuttingDown => (S::SERVICE_UNAVAILABLE, "shutting_down"),
            EngineError::NotFound { .. } => (S::NOT_FOUND, "not_found"),
            EngineError::BadRequest(_) => (S::BAD_REQUEST, "bad_request"),
            // A pruned segment's store did not answer: the data is safe, come back later.
            EngineError::StoreUnavailable { .. } => (S::SERVICE_UNAVAILABLE, "store_unavailable"),
            EngineError::ReadOnly(_) => (S::FORBIDDEN, "read_only_replica"),
            // Remote durability: written locally, not confirmed by the store: not acked.
            EngineError::NotDurableRemotely(_) => (S::SERVICE_UNAVAILABLE, "not_durable_remotely"),
            EngineError::Corrupt { .. } => (S::INTERNAL_SERVER_ERROR, "corrupt"),
            _ => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

/// Who is calling: the `Authorization` header and, under mutual TLS, the names in the
/// client's verified certificate.
pub struct Caller {
    authorization: Option<HeaderValue>,
    client: ClientNames,
    /// The source address, where the listener knows it.
    addr: Option<std::net::IpAddr>,
}

impl axum::extract::FromRequestParts<St> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &St,
    ) -> Result<Caller, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<Peer>>();
        Ok(Caller {
            authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
            client: peer.map(|c| c.0.client.clone()).unwrap_or_default(),
            addr: peer.and_then(|c| c.0.addr).map(|a| a.ip()),
        })
    }
}

/// Checks the caller against what the route needs: a bearer token if one is sent (it
/// names the role explicitly), else the role mapped from the client certificate. With
/// `[auth.oidc]`, a bearer value shaped as a JWT is an OIDC sign-in (`oidc.rs`); any other
/// is an API token, looked up as without it.
pub async fn authorize(st: &AppState, caller: &Caller, access: Access) -> ApiResult<Role> {
    let result = match (&caller.authorization, caller.client.role(&st.client_roles)) {
        (None, Some((_, role))) if access.allows(role) => Ok(role),
        (None, Some((_, role))) => Err(AuthError::Forbidden(role)),
        (value, _) => match oidc_bearer(st, value.as_ref()) {
            Some((oidc, jwt)) => oidc.check(jwt, access).await.map(|(role, _)| role),
            None => st
                .tokens
                .check_role(value.as_ref().map(|v| v.as_bytes()), access),
        },
    };
    result.map_err(auth_error)
}

/// As `authorize`, also returning who the caller is in the form records carry
/// (`token:<name>`, `cert:<name>`, `oidc:<sub>`): the server's own name for the credential
/// (for OIDC, the verified subject), never anything the request says about itself.
pub async fn authorize_submitter(
    st: &AppState,
    caller: &Caller,
    access: Access,
) -> ApiResult<(Role, Submitter)> {
    let result = match (&caller.authorization, caller.client.role(&st.client_roles)) {
        (None, Some((name, role))) if access.allows(role) => Ok((role, Submitter::cert(name))),
        (None, Some((_, role))) => Err(AuthError::Forbidden(role)),
        (value, _) => match oidc_bearer(st, value.as_ref()) {
            Some((oidc, jwt)) => oidc
                .check(jwt, access)
                .await
                .map(|(role, sub)| (role, Submitter::oidc(&sub))),
            None => st
                .tokens
                .check_principal(value.as_ref().map(|v| v.as_bytes()), access)
                .map(|p| (p.role, Submitter::token(&p.name))),
        },
    };
    result.map_err(auth_error)
}

/// The verifier and the JWT, when OIDC sign-in is on and the bearer value is shaped as one.
pub fn oidc_bearer<'a>(
    st: &'a AppState,
    authorization: Option<&'a HeaderValue>,
) -> Option<(&'a crate::oidc::Oidc, &'a [u8])> {
    let oidc = st.oidc.as_ref()?;
    let token = crate::auth::bearer(authorization.map(|v| v.as_bytes())).ok()?;
    crate::oidc::looks_like_jwt(token).then_some((oidc, token))
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Unauthenticated(why) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
        }
        AuthError::Forbidden(role) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not use this route", role.name()),
        ),
        AuthError::NoRole => ApiError::new(StatusCode::FORBIDDEN, "forbidden", NO_ROLE),
    }
}

/// The 403 of a valid OIDC sign-in whose claims grant no role.
pub const NO_ROLE: &str = "signed in, but the token's claims map to no role ([[auth.oidc.roles]])";

/// Reads the first record of a range before a streamed answer starts, so that a pruned
/// segment whose store is down (or that does not verify) gets its status (503, 500) instead
/// of a 200 cut short. Later segments of a long range can still cut the stream.
pub async fn first_record_readable(engine: &Arc<Engine>, start: u64, end: u64) -> ApiResult<()> {
    if start >= end {
        return Ok(());
    }
    let engine = engine.clone();
    blocking(move || engine.read_records(start, start + 1, &mut |_, _| Ok(false))).await
}

/// Runs an engine call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("engine task failed: {e}"))),
    }
}

/// The ops listener's routes: probes and metrics only, on their own port and connection
/// limit, so they answer whatever the API listener is going through.
pub fn ops_router(st: St) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(get_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

pub fn router(st: St) -> Router {
    Router::new()
        .route(
            "/v1/events",
            get(get_range).post(crate::ingest::post_events),
        )
        .route("/v1/events/{index}", get(get_event))
        .route("/v1/checkpoint", get(get_checkpoint))
        .route("/v1/proof/inclusion", get(get_inclusion))
        .route("/v1/proof/window", get(window::get_window))
        .route("/v1/proof/consistency", get(get_consistency))
        .route("/v1/log", get(get_log))
        .route("/v1/export", get(crate::export::get_export))
        .route("/v1/search", get(search::get_search))
        // C2SP tlog-tiles (`tiles.rs`): paths fixed by the spec, not under /v1.
        .route("/checkpoint", get(tiles::get_checkpoint))
        .route("/tile/{*path}", get(tiles::get_tile))
        // Also on the ops listener (`ops_router`), which is where probes should go.
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(get_metrics))
        .merge(crate::admin::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

/// Bounds each request's time and counts the answers.
async fn guard(State(st): State<St>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(st.cfg.request_timeout_ms);
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("request took over {} ms", st.cfg.request_timeout_ms),
        )
        .into_response(),
    };
    st.http.record(resp.status().as_u16());
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

pub(crate) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(crate) fn params(q: Params) -> ApiResult<HashMap<String, String>> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad(format!("query string: {e}")))
}

pub(crate) fn num(m: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    match m.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad(format!("{name}={v:?} is not a non-negative integer"))),
    }
}

fn need(m: &HashMap<String, String>, name: &str) -> ApiResult<u64> {
    num(m, name)?.ok_or_else(|| ApiError::bad(format!("{name} is required")))
}

/// One event as the API shows it: the export's JSON line (FORMATS.md §14.1) without its
/// newline. The event (`Record::event_json`) is a JSON object, so it is embedded as is.
fn event_json(alg: TreeHash, index: u64, record: &[u8]) -> ApiResult<String> {
    let damaged = |e| ApiError::internal(format!("record {index} is damaged: {e}"));
    let r = Record::parse(record).map_err(damaged)?;
    let event = r.event_json().map_err(damaged)?;
    let leaf = alg.leaf(record);
    let mut out = String::with_capacity(event.len() + 160);
    export::render_json_line(&StoredEvent::of(index, &leaf, &r, &event), &mut out)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    out.pop();
    Ok(out)
}

pub(crate) fn with_type(body: impl Into<Body>, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const JSON: &str = "application/json";

async fn get_event(
    State(st): State<St>,
    caller: Caller,
    Path(index): Path<String>,
    q: Params,
) -> ApiResult {
    authorize(&st, &caller, Access::ReadEvents).await?;
    let q = params(q)?;
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::bad(format!("event index {index:?} is not an integer")))?;
    let raw = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("record") => true,
        Some(f) => {
            return Err(ApiError::bad(format!(
                "format={f:?}: expected json or record"
            )))
        }
    };
    let engine = st.engine.clone();
    let record = blocking(move || engine.read_record(index)).await?;
    if raw {
        return Ok(with_type(record, "application/octet-stream"));
    }
    Ok(with_type(
        event_json(st.engine.tree_hash(), index, &record)?,
        JSON,
    ))
}

/// A response body fed by the blocking task that reads the records.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

const RANGE_CHUNK_BYTES: usize = 64 << 10;

async fn get_range(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    let (_, who) = authorize_submitter(&st, &caller, Access::ReadEvents).await?;
    let q = params(q)?;
    let max = st.cfg.range_events_max;
    let size = st.engine.tree_size();
    let start = num(&q, "start")?.unwrap_or(0);
    let end = match num(&q, "end")? {
        Some(e) => e,
        None => start.saturating_add(max).min(size),
    };
    if end < start {
        return Err(ApiError::bad(format!("end {end} is before start {start}")));
    }
    if end - start > max {
        return Err(ApiError::bad(format!(
            "range of {} events is over the {max}-event limit per request",
            end - start
        )));
    }
    // `format=record`: each line `{"index","record"}`, the exact record bytes in base64 (what
    // a client re-hashes to check a range against a proof).
    let raw = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("record") => true,
        Some(f) => return Err(ApiError::bad(format!("format {f:?}: json or record"))),
    };
    // Held until the stream ends.
    let slot = st.streamed_reads.take(&who)?;
    first_record_readable(&st.engine, start, end).await?;
    let (tx, rx) = mpsc::channel(8);
    let engine = st.engine.clone();
    let alg = engine.tree_hash();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut buf = String::new();
        let r = engine.read_records(start, end, &mut |i, rec| {
            if raw {
                use base64::Engine as _;
                buf.push_str(&format!(
                    "{{\"index\":{i},\"record\":\"{}\"}}",
                    base64::engine::general_purpose::STANDARD.encode(rec)
                ));
                buf.push('\n');
                return Ok(true);
            }
            match event_json(alg, i, rec) {
                Ok(line) => buf.push_str(&line),
                Err(e) => return Err(EngineError::BadRequest(e.message)),
            }
            buf.push('\n');
            if buf.len() >= RANGE_CHUNK_BYTES {
                let chunk = Bytes::from(std::mem::take(&mut buf));
                // The client went away: stop reading.
                return Ok(tx.blocking_send(Ok(chunk)).is_ok());
            }
            Ok(true)
        });
        let last = match r {
            Ok(()) => Ok(Bytes::from(buf)),
            // A status is already sent; cutting the stream short tells the client.
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let _ = tx.blocking_send(last);
    });
    Ok(with_type(
        Body::new(ChannelBody(rx)),
        "application/x-ndjson",
    ))
}

async fn get_checkpoint(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    let (_, who) = authorize_submitter(&st, &caller, Access::Audit).await?;
    let q = params(q)?;
    let wait_ms = num(&q, "wait_ms")?
        .unwrap_or(0)
        .min(st.cfg.long_poll_ms_max);
    let cp = match num(&q, "min_size")? {
        None => st.engine.latest_checkpoint(),
        Some(min) => {
            // The limits first: past either, refused at once, nothing waits.
            let _slot = st.long_polls.take(&who)?;
            wait_checkpoint(&st, min, Duration::from_millis(wait_ms)).await
        }
    };
    match cp {
        Some(cp) => Ok(with_type(cp.note.clone(), "text/plain; charset=utf-8")),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "checkpoint_pending",
            "no signed checkpoint covers the size asked for yet",
        )),
    }
}

/// Waits for a checkpoint covering `min_size` without holding a thread: on the engine's
/// checkpoint notifications (`on_checkpoint`, fed into `st.checkpoints`), asking again after
/// each one (the engine keeps only the smallest size above its head that was asked for).
async fn wait_checkpoint(
    st: &AppState,
    min_size: u64,
    wait: Duration,
) -> Option<Arc<auditlog_engine::SignedCheckpoint>> {
    let deadline = tokio::time::Instant::now() + wait;
    let covering = || {
        st.engine
            .latest_checkpoint()
            .filter(|cp| cp.checkpoint.size >= min_size)
    };
    let mut published = st.checkpoints.clone();
    loop {
        published.mark_unchanged();
        if let Some(cp) = covering() {
            return Some(cp);
        }
        st.engine.want_checkpoint(min_size);
        tokio::select! {
            r = published.changed() => if r.is_err() { return None },
            _ = tokio::time::sleep_until(deadline) => return covering(),
        }
    }
}

/// `{"<a>":A,"<b>":B,"hashes":["hex",…]}` written straight into one buffer: proofs are
/// served at tens of thousands per second, and a `serde_json::Value` per answer showed in
/// the profile. The keys are fixed and the values are digits, so nothing needs escaping.
fn proof_json(a: (&str, u64), b: (&str, u64), hashes: &[[u8; 32]]) -> Response {
    use std::fmt::Write;
    let mut out = String::with_capacity(64 + hashes.len() * 67);
    let _ = write!(
        out,
        "{{\"{}\":{},\"{}\":{},\"hashes\":[",
        a.0, a.1, b.0, b.1
    );
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        auditlog_formats::hash::push_hex(&mut out, h);
        out.push('"');
    }
    out.push_str("]}");
    with_type(out, JSON)
}

async fn get_inclusion(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    authorize(&st, &caller, Access::Audit).await?;
    let q = params(q)?;
    let size = need(&q, "size")?;
    let engine = st.engine.clone();
    let index = match q.get("leaf_hash") {
        None => need(&q, "index")?,
        Some(text) => {
            let leaf = auditlog_formats::hash::from_hex(text).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "leaf_hash must be 64 lowercase hex digits",
                )
            })?;
            let engine = engine.clone();
            blocking(move || engine.index_of_leaf(&leaf, size))
                .await?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("no leaf with that hash in the tree of size {size}"),
                    )
                })?
        }
    };
    // Inline when memory and the page cache hold the answer (a few µs); the hand-off to
    // the blocking pool cost more than such a proof (profiled: ~40% of the daemon's CPU
    // went to waking pool threads). One that needs the disk goes to the pool, so a cold
    // cache never stalls an async worker.
    let hashes = match engine.prove_inclusion_cached(index, size) {
        Err(EngineError::WouldBlock) => {
            blocking(move || engine.prove_inclusion(index, size)).await?
        }
        r => r?,
    };
    st.http
        .proofs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(proof_json(("index", index), ("size", size), &hashes))
}

async fn get_consistency(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    authorize(&st, &caller, Access::Audit).await?;
    let q = params(q)?;
    let from = need(&q, "from")?;
    let to = need(&q, "to")?;
    // Inline when cached, for the reasons given in `get_inclusion`.
    let hashes = match st.engine.prove_consistency_cached(from, to) {
        Err(EngineError::WouldBlock) => {
            let engine = st.engine.clone();
            blocking(move || engine.prove_consistency(from, to)).await?
        }
        r => r?,
    };
    st.http
        .proofs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(proof_json(("from", from), ("to", to), &hashes))
}

async fn get_log(State(st): State<St>, caller: Caller) -> ApiResult {
    authorize(&st, &caller, Access::Audit).await?;
    let e = &st.engine;
    Ok(axum::Json(json!({
        "origin": e.config().origin,
        "tree_hash": e.tree_hash().name(),
        "verifier_keys": e.verifier_keys().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        "key_history": e.key_history(),
        "tree_size": e.tree_size(),
    }))
    .into_response())
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Why `/ready` fails for the checkpoints, if it does: events wait beyond the newest
/// checkpoint, and none was signed for `intervals_max` checkpoint intervals (since start,
/// if none was signed since) — a signer or checkpointer stuck without reporting an error.
/// An idle log whose newest checkpoint covers everything is ready however old that is.
fn checkpoint_stale(
    s: &auditlog_engine::Status,
    uptime_ms: u64,
    interval_ms: u64,
    intervals_max: u64,
) -> Option<String> {
    let signed = s.checkpoint_size.unwrap_or(0);
    if intervals_max == 0 || signed >= s.tree_size {
        return None;
    }
    let limit = interval_ms.saturating_mul(intervals_max);
    let age = s.checkpoint_age_ms.unwrap_or(uptime_ms);
    (age > limit).then(|| {
        format!(
            "checkpoints: {} events wait beyond the newest checkpoint, none signed for {age} ms (limit {limit} ms: {intervals_max} checkpoint intervals)",
            s.tree_size - signed
        )
    })
}

async fn ready(State(st): State<St>) -> ApiResult {
    let s = st.engine.status();
    let mut reasons = Vec::new();
    if let Some(f) = &s.failed {
        reasons.push(format!("engine failed: {f}"));
    }
    if let Some(f) = &s.signer_error {
        reasons.push(format!("signer: {f}"));
    }
    if let Some(f) = &s.preallocation_error {
        reasons.push(format!("preallocation: {f}"));
    }
    if let Some(f) = &s.seal_error {
        reasons.push(format!("sealing: {f}"));
    }
    if let Some(f) = &s.witness_error {
        reasons.push(format!("witnesses: {f}"));
    }
    reasons.extend(checkpoint_stale(
        &s,
        st.engine.uptime().as_millis() as u64,
        st.engine.config().checkpoint_interval_ms,
        st.cfg.ready_checkpoint_intervals_max,
    ));
    reasons.extend(crate::metrics::replication_not_ready(
        s.replication.as_ref(),
        st.engine.config().replication.as_ref(),
    ));
    // Not a reason to take the node out of service, but said where operators look.
    let warnings: Vec<String> = st.rotation.status().warning.into_iter().collect();
    if reasons.is_empty() {
        let mut body = json!({"status": "ready"});
        if !warnings.is_empty() {
            body["warnings"] = json!(warnings);
        }
        Ok(axum::Json(body).into_response())
    } else {
        reasons.extend(warnings.into_iter().map(|w| format!("warning: {w}")));
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reasons.join("; "),
        ))
    }
}

async fn get_metrics(State(st): State<St>) -> Response {
    let conns = metrics::Connections {
        http_open: st.cfg.connections_max - st.http_connections.available_permits(),
        http_max: st.cfg.connections_max,
        tcp_open: st.cfg.tcp_connections_max - st.tcp_connections.available_permits(),
        tcp_max: st.cfg.tcp_connections_max,
        long_polls: st.long_polls.running(),
        streamed_reads: st.streamed_reads.running(),
        request_bytes: st.admission.bytes_in_flight(),
        shed: [("api", &st.api_shed), ("ops", &st.ops_shed)]
            .into_iter()
            .flat_map(|(l, c)| {
                [
                    (l, "full", c.full.load(std::sync::atomic::Ordering::Relaxed)),
                    (
                        l,
                        "source",
                        c.source.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                ]
            })
            .collect(),
    };
    let mut text = metrics::render(
        &st.engine.status(),
        &st.http,
        &conns,
        st.started.elapsed().as_secs(),
    );
    let r = st.rotation.status();
    metrics::write_rows(
        &mut text,
        &[
            (
                "auditlog_signing_key_age_days",
                metrics::GAUGE,
                "Age of the newest signing key, in whole days since it was added to the key history.",
                r.key_age_days,
            ),
            (
                "auditlog_signing_key_rotation_overdue",
                metrics::GAUGE,
                "1 while the newest signing key is past its rotation age and not rotated (no approved policy, or a step failed).",
                u64::from(r.overdue),
            ),
            (
                "auditlog_key_rotation_checks_total",
                metrics::COUNTER,
                "Key rotation checks made since the start (admin.rotation_check_interval_ms apart).",
                r.checks,
            ),
        ],
    );
    with_type(text, "text/plain; version=0.0.4; charset=utf-8")
}

#[cfg(test)]
mod ready_tests {
    use super::checkpoint_stale;
    use auditlog_engine::Status;

    fn status(tree_size: u64, checkpoint_size: Option<u64>, age_ms: Option<u64>) -> Status {
        Status {
            tree_size,
            checkpoint_size,
            checkpoint_age_ms: age_ms,
            ..Status::default()
        }
    }

    /// Interval 1000 ms, limit 20 intervals.
    #[test]
    fn ready_fails_only_while_events_wait_on_a_stale_checkpoint() {
        let stale = |s: &Status, up: u64| checkpoint_stale(s, up, 1000, 20);
        // Events wait and the newest checkpoint is 25 s old: not ready, and why.
        let why = stale(&status(100, Some(90), Some(25_000)), 60_000).expect("stale");
        assert!(
            why.contains("10 events wait") && why.contains("20000 ms"),
            "{why}"
        );
        // Within the limit, or nothing waiting (an idle log), or the check off: ready.
        assert_eq!(stale(&status(100, Some(90), Some(19_000)), 60_000), None);
        assert_eq!(
            stale(&status(100, Some(100), Some(3_600_000)), 60_000),
            None
        );
        assert_eq!(
            checkpoint_stale(&status(100, Some(90), Some(25_000)), 60_000, 1000, 0),
            None
        );
        // None signed since start: measured from the start.
        assert_eq!(stale(&status(5, None, None), 2_000), None);
        assert!(stale(&status(5, None, None), 21_000).is_some());
    }
}
