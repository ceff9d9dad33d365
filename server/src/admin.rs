//! The two-person rule for critical operations (key rotation and retirement, retention
//! policy): one admin requests, `approvals_required` distinct other admins approve within
//! `request_ttl_ms`, and only then does the daemon carry it out. Every request, approval,
//! refusal and execution is appended to the log itself as an `admin` audit event, before
//! the answer is sent. Pending requests live in `<data-dir>/admin-requests.json`, rewritten
//! atomically on every change, so a restart keeps them.
//!
//! Routes: `POST /v1/admin/requests` (create), `GET /v1/admin/requests` (list),
//! `GET /v1/admin/requests/{id}`, `POST /v1/admin/requests/{id}/approve`.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use auditlog_engine::Engine;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Access, AuthError, Principal, Role};
use crate::config::AdminConfig;
use crate::http::{ApiError, ApiResult, St};

mod ops;

pub use auditlog_formats::layout::ADMIN_REQUESTS_FILE as REQUESTS_FILE;
pub use ops::Operation;
use ops::{check_operation, execute};
/// Finished requests kept in the file for `GET`; the log holds the full record.
const FINISHED_KEPT_MAX: usize = 256;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Executed,
    Failed,
    Expired,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approval {
    pub admin: String,
    pub at_unix_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminRequest {
    pub id: String,
    #[serde(flatten)]
    pub op: Operation,
    pub requester: String,
    pub created_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub approvals: Vec<Approval>,
    pub state: RequestState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct RequestFile {
    requests: Vec<AdminRequest>,
}

pub struct Admin {
    pub(crate) cfg: AdminConfig,
    path: PathBuf,
    requests: Mutex<Vec<AdminRequest>>,
}

fn now_ms() -> u64 {
    auditlog_engine::now_unix_ns() / 1_000_000
}

impl Admin {
    pub fn open(data_dir: &FsPath, cfg: AdminConfig) -> anyhow::Result<Admin> {
        let path = data_dir.join(REQUESTS_FILE);
        let requests = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice::<RequestFile>(&b)
                    .with_context(|| format!("parsing {}", path.display()))?
                    .requests
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Admin {
            cfg,
            path,
            requests: Mutex::new(requests),
        })
    }

    /// How many requests `f` holds for.
    pub(crate) fn requests_where(&self, f: impl Fn(&AdminRequest) -> bool) -> usize {
        let reqs = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        reqs.iter().filter(|r| f(r)).count()
    }

    fn save(&self, requests: &[AdminRequest]) -> anyhow::Result<()> {
        let body = serde_json::to_vec_pretty(&RequestFile {
            requests: requests.to_vec(),
        })?;
        auditlog_engine::files::replace_file(&self.path, &body)?;
        Ok(())
    }
}

/// Appends one `admin` audit event about a request; the answer waits until it is durable.
fn record(
    engine: &Engine,
    actor: &str,
    action: &str,
    id: &str,
    outcome: &str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let resource = format!("admin/requests/{id}");
    admin_event(engine, actor, action, &resource, outcome, details).map_err(ApiError::from)
}

/// Appends one `admin` audit event, submitted by the daemon (`auditlogd`), and returns once
/// it is durable: the one way the daemon writes about itself into the log.
pub(crate) fn admin_event(
    engine: &Engine,
    actor: &str,
    action: &str,
    resource: &str,
    outcome: &str,
    details: serde_json::Value,
) -> Result<(), auditlog_engine::EngineError> {
    let event = json!({
        "timestamp": rfc3339_now(),
        "event_type": "admin",
        "actor": actor,
        "action": action,
        "resource": resource,
        "outcome": outcome,
        "details": details,
    });
    let bytes = serde_json::to_vec(&event)
        .map_err(|e| auditlog_engine::EngineError::BadRequest(e.to_string()))?;
    engine.append_payloads([bytes.as_slice()]).map(|_| ())
}

/// RFC 3339 UTC from the system clock (`formats::time`, the one formatter of audit
/// timestamps).
fn rfc3339_now() -> String {
    auditlog_formats::time::unix_ns_to_rfc3339(auditlog_engine::now_unix_ns())
}

/// The admin calling, by API token only: OIDC sign-in grants no admin role (admins are the
/// people the two-person rule counts, added by approved `add_admin` requests), so a JWT is
/// verified for its 401 reasons and then refused with 403.
async fn admin_principal(st: &St, headers: &HeaderMap) -> ApiResult<Principal> {
    let header = headers.get(header::AUTHORIZATION);
    if let Some((oidc, jwt)) = crate::http::oidc_bearer(st, header) {
        let refused = match oidc.verify(jwt).await {
            Ok(_) => AuthError::Forbidden(Role::Admin),
            Err(e) => e,
        };
        return Err(match refused {
            AuthError::Unauthenticated(why) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
            }
            _ => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "admin routes take an admin's API token; OIDC sign-in grants no admin role",
            ),
        });
    }
    match st
        .tokens
        .check_principal(header.map(|v| v.as_bytes()), Access::Admin)
    {
        Ok(p) => Ok(p),
        Err(AuthError::Unauthenticated(why)) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why))
        }
        Err(AuthError::Forbidden(role)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {} may not use admin routes", role.name()),
        )),
        Err(AuthError::NoRole) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            crate::http::NO_ROLE,
        )),
    }
}

pub fn routes() -> Router<St> {
    Router::new()
        .route("/v1/admin/requests", post(create).get(list))
        .route("/v1/admin/requests/{id}", get(show))
        .route("/v1/admin/requests/{id}/approve", post(approve))
}

async fn list(State(st): State<St>, headers: HeaderMap) -> ApiResult {
    admin_principal(&st, &headers).await?;
    let reqs = st
        .admin
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(axum::Json(json!({ "requests": reqs })).into_response())
}

async fn show(State(st): State<St>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    admin_principal(&st, &headers).await?;
    let reqs = st.admin.requests.lock().unwrap_or_else(|e| e.into_inner());
    match reqs.iter().find(|r| r.id == id) {
        Some(r) => Ok(axum::Json(r).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such request",
        )),
    }
}

async fn create(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = admin_principal(&st, &headers).await?;
    let op: Operation =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("request body: {e}")))?;
    check_operation(&st.admin.cfg, &op)?;
    let st2 = st.clone();
    run_blocking(move || create_blocking(&st2, who, op)).await
}

fn create_blocking(st: &St, who: Principal, op: Operation) -> ApiResult {
    let req = file_request(st, &who.name, op)?;
    Ok((StatusCode::CREATED, axum::Json(req)).into_response())
}

/// Files a request by `requester` (an admin, or the daemon's rotation scheduler), recorded
/// in the log before anyone can act on it.
pub(crate) fn file_request(
    st: &St,
    requester: &str,
    op: Operation,
) -> Result<AdminRequest, ApiError> {
    let admin = &st.admin;
    let mut reqs = admin.requests.lock().unwrap_or_else(|e| e.into_inner());
    let now = now_ms();
    let pending = reqs
        .iter()
        .filter(|r| r.state == RequestState::Pending && r.expires_at_unix_ms > now)
        .count();
    let mut raw = [0u8; 8];
    getrandom::getrandom(&mut raw).map_err(|e| ApiError::internal(e.to_string()))?;
    let id = hex::encode(raw);
    if pending >= admin.cfg.requests_pending_max {
        let why = format!(
            "{pending} requests are pending, the limit is {}",
            admin.cfg.requests_pending_max
        );
        record(
            &st.engine,
            requester,
            "refuse",
            &id,
            "failure",
            json!({"op": op.name(), "reason": why}),
        )?;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            why,
        ));
    }
    let req = AdminRequest {
        id: id.clone(),
        op,
        requester: requester.to_string(),
        created_at_unix_ms: now,
        expires_at_unix_ms: now + admin.cfg.request_ttl_ms,
        approvals: Vec::new(),
        state: RequestState::Pending,
        result: None,
    };
    // The log records the request before anyone can act on it.
    record(
        &st.engine,
        requester,
        "request",
        &id,
        "success",
        json!({"request": &req, "approvals_required": admin.cfg.approvals_required}),
    )?;
    reqs.push(req.clone());
    prune(&mut reqs);
    admin
        .save(&reqs)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(req)
}

async fn approve(State(st): State<St>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let who = admin_principal(&st, &headers).await?;
    let st2 = st.clone();
    run_blocking(move || approve_blocking(&st2, who, &id)).await
}

fn approve_blocking(st: &St, who: Principal, id: &str) -> ApiResult {
    let admin = &st.admin;
    let mut reqs = admin.requests.lock().unwrap_or_else(|e| e.into_inner());
    let now = now_ms();
    let Some(i) = reqs.iter().position(|r| r.id == id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such request",
        ));
    };
    if reqs[i].state == RequestState::Pending && now >= reqs[i].expires_at_unix_ms {
        reqs[i].state = RequestState::Expired;
        admin
            .save(&reqs)
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    }
    if let Some((status, code, why)) = why_not_approvable(&reqs[i], &who.name, id) {
        record(
            &st.engine,
            &who.name,
            "refuse",
            id,
            "failure",
            json!({"op": reqs[i].op.name(), "reason": why}),
        )?;
        return Err(ApiError::new(status, code, why));
    }
    record(
        &st.engine,
        &who.name,
        "approve",
        id,
        "success",
        json!({"op": reqs[i].op.name()}),
    )?;
    reqs[i].approvals.push(Approval {
        admin: who.name.clone(),
        at_unix_ms: now,
    });
    if reqs[i].approvals.len() >= admin.cfg.approvals_required as usize {
        execute_approved(st, &who, id, &mut reqs[i])?;
    }
    let out = reqs[i].clone();
    prune(&mut reqs);
    admin
        .save(&reqs)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(axum::Json(out).into_response())
}

/// Why `approver` may not approve `req` (its id `id`): it is no longer pending, it is the
/// requester's own, or this admin approved it already. `None`: the approval counts.
fn why_not_approvable(
    req: &AdminRequest,
    approver: &str,
    id: &str,
) -> Option<(StatusCode, &'static str, String)> {
    match req.state {
        RequestState::Pending => {}
        RequestState::Expired => {
            let why = format!("request {id} expired without enough approvals");
            return Some((StatusCode::GONE, "expired", why));
        }
        _ => {
            let why = format!("request {id} is already {:?}", req.state).to_lowercase();
            return Some((StatusCode::CONFLICT, "not_pending", why));
        }
    }
    if req.requester == approver {
        let why = format!("{approver} requested this operation and cannot approve it");
        return Some((StatusCode::FORBIDDEN, "self_approval", why));
    }
    if req.approvals.iter().any(|a| a.admin == approver) {
        let why = format!("{approver} has already approved request {id}");
        return Some((StatusCode::CONFLICT, "duplicate_approval", why));
    }
    None
}

/// Runs a request that has its approvals (checking it once more first), records the
/// outcome in the log, and leaves it executed or failed with the result's text.
fn execute_approved(
    st: &St,
    who: &Principal,
    id: &str,
    req: &mut AdminRequest,
) -> Result<(), ApiError> {
    let admin = &st.admin;
    let result = match check_operation(&admin.cfg, &req.op) {
        Ok(()) => execute(st, &req.op),
        Err(e) => Err(e.message),
    };
    let (state, outcome, text) = match result {
        Ok(v) => (RequestState::Executed, "success", v),
        Err(e) => (RequestState::Failed, "failure", e),
    };
    record(
        &st.engine,
        &who.name,
        "execute",
        id,
        outcome,
        json!({"op": req.op.name(), "requester": req.requester, "approvers": req.approvals.iter().map(|a| a.admin.clone()).collect::<Vec<_>>(), "result": text}),
    )?;
    if let (RequestState::Executed, Operation::AddAdmin { token_sha256, name }) = (&state, &req.op)
    {
        // The execute event above is the new token's record in the log.
        let change = crate::auth::UnrecordedChange {
            action: "token_added",
            name: name.clone(),
            role: Role::Admin,
            sha256: token_sha256.clone(),
        };
        crate::auth::mark_recorded(&admin.cfg.data_dir, &[change])
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    }
    req.state = state;
    req.result = Some(text);
    Ok(())
}

/// Keeps every pending request and the newest finished ones.
fn prune(reqs: &mut Vec<AdminRequest>) {
    let finished = reqs
        .iter()
        .filter(|r| r.state != RequestState::Pending)
        .count();
    let mut drop_n = finished.saturating_sub(FINISHED_KEPT_MAX);
    reqs.retain(|r| {
        if drop_n > 0 && r.state != RequestState::Pending {
            drop_n -= 1;
            return false;
        }
        true
    });
}

async fn run_blocking(f: impl FnOnce() -> ApiResult + Send + 'static) -> ApiResult {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::internal(format!("admin task failed: {e}"))),
    }
}

/// `auditlogd tokens add --role R --name N`: prints the new token once.
pub fn tokens_add(data_dir: &FsPath, role: &str, name: &str) -> anyhow::Result<()> {
    let role = crate::auth::ROLES
        .into_iter()
        .find(|r| r.name() == role)
        .with_context(|| format!("role {role:?}: expected writer, reader, auditor or admin"))?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let token = crate::auth::add_token(data_dir, role, name)?;
    println!("{token}");
    eprintln!(
        "auditlogd: token for {name} ({}) added; restart the daemon to use it",
        role.name()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_is_valid_audit_timestamp() {
        let t = super::rfc3339_now();
        let ev = format!(
            r#"{{"timestamp":"{t}","event_type":"admin","actor":"a","action":"x","resource":"r","outcome":"success"}}"#
        );
        auditlog_formats::schema::validate(
            ev.as_bytes(),
            auditlog_formats::schema::SchemaMode::Audit,
        )
        .expect("valid audit event");
        assert!(t.starts_with("20"), "{t}");
    }
}
