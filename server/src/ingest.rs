//! `POST /v1/events`: one JSON object (`application/json`) or many (`application/x-ndjson`).
//! Every event of a request is validated before any is submitted; a request becomes one
//! engine batch, or several in order when it is over the engine's `submission_bytes_max`.

use std::sync::Arc;

use auditlog_engine::{Engine, EngineError, EventBatch, Pushed, Submitter};
use auditlog_formats::hash::to_hex;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde::Serialize;

use crate::auth::Access;
use crate::http::{authorize_submitter, ApiError, ApiResult, Caller, St};
use crate::submit::{settle, submit, Pending, WhenFull};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    One,
    Many,
}

#[derive(Serialize)]
struct Receipt {
    index: u64,
    leaf_hash: String,
    received_at_unix_ns: u64,
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body is over the {max}-byte limit"),
    )
}

fn kind_of(headers: &HeaderMap) -> ApiResult<Kind> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    match mime.to_ascii_lowercase().as_str() {
        "application/json" => Ok(Kind::One),
        "application/x-ndjson" => Ok(Kind::Many),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {ct:?}: expected application/json or application/x-ndjson"),
        )),
    }
}

/// Past `body_bytes_max`, this much more is read and thrown away before the 413, so the
/// client, still sending, reads the answer instead of a reset connection.
const DRAIN_BYTES_MAX: u64 = 64 << 20;

/// Reads a request body of at most `max` bytes, each chunk within `chunk_timeout` (a
/// client that stops sending mid-body is cut, whatever `request_timeout_ms` allows).
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
    chunk_timeout: std::time::Duration,
) -> ApiResult<Vec<u8>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64 + DRAIN_BYTES_MAX) {
        return Err(too_large(max));
    }
    let mut buf = Vec::new();
    let mut seen: u64 = 0;
    loop {
        let Ok(next) = tokio::time::timeout(chunk_timeout, body.frame()).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body stalled for {} ms (http_body_read_timeout_ms)",
                    chunk_timeout.as_millis()
                ),
            ));
        };
        let Some(frame) = next else {
            break;
        };
        let frame = frame.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen <= max as u64 {
            buf.extend_from_slice(&data);
        } else if seen > max as u64 + DRAIN_BYTES_MAX {
            break;
        }
    }
    if seen > max as u64 {
        return Err(too_large(max));
    }
    Ok(buf)
}

/// A share of `request_bytes_in_flight_max` for one request body: its Content-Length, or
/// `body_bytes_max` when it has none (chunked). Past the budget, 503 with Retry-After at once:
/// the server is full, not the caller wrong.
fn body_budget(st: &St, headers: &HeaderMap) -> ApiResult<crate::admission::Bytes> {
    let max = st.cfg.body_bytes_max as u64;
    let want = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(max)
        .min(max);
    st.admission.try_bytes(want as usize).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "event bytes in flight are at request_bytes_in_flight_max ({} bytes); retry later",
                st.cfg.request_bytes_in_flight_max
            ),
        )
    })
}

/// The first part of a request takes its place in the principal's share of the engine's
/// queue at once or is refused (nothing of the request is queued yet); later parts wait
/// for theirs, so a request is not left half-queued.
async fn queue_share(
    st: &St,
    submitter: &Submitter,
    first: bool,
) -> ApiResult<crate::admission::Share> {
    if !first {
        return Ok(st.admission.share(submitter).await);
    }
    st.admission.try_share(submitter).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_share_full",
            format!(
                "{submitter} has submissions_per_principal_max ({}) submissions waiting to be stored; retry later",
                st.admission.share_max
            ),
        )
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Splits the body into events and validates each into batches from `submitter`; nothing
/// is submitted.
pub fn build_batches(
    engine: &Engine,
    body: &[u8],
    kind: Kind,
    submitter: &Submitter,
) -> ApiResult<Vec<EventBatch>> {
    let events: Vec<&[u8]> = match kind {
        Kind::One => vec![trim(body)],
        Kind::Many => body
            .split(|b| *b == b'\n')
            .map(trim)
            .filter(|l| !l.is_empty())
            .collect(),
    };
    if events.is_empty() || events[0].is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event",
            "the request holds no event",
        ));
    }
    let refused = |position: usize, reason: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event",
            format!("event {position} refused: {reason}"),
        )
    };
    let mut batches = Vec::new();
    let mut batch = engine.new_batch(submitter.clone());
    for (position, event) in events.into_iter().enumerate() {
        match batch.push(event) {
            Ok(Pushed::Added) => continue,
            Ok(Pushed::Full) => {}
            Err(EngineError::BadEvent { reason, .. }) => return Err(refused(position, reason)),
            Err(EngineError::SubmissionTooLarge { bytes, max }) => {
                return Err(refused(
                    position,
                    format!("{bytes} bytes framed is over the {max}-byte submission limit"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        // The batch is full: start the next one with this event.
        batches.push(std::mem::replace(
            &mut batch,
            engine.new_batch(submitter.clone()),
        ));
        match batch.add(event) {
            Ok(()) => {}
            Err(EngineError::BadEvent { reason, .. }) => return Err(refused(position, reason)),
            Err(e) => return Err(refused(position, e.to_string())),
        }
    }
    batches.push(batch);
    Ok(batches)
}

pub async fn post_events(
    State(st): State<St>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (_, submitter) = authorize_submitter(&st, &caller, Access::Ingest).await?;
    let kind = kind_of(&headers)?;
    // The body's bytes count against the budget from before it is read until the request
    // ends (its events are in memory until they are stored).
    let _budget = body_budget(&st, &headers)?;
    let bytes = read_body(
        &headers,
        body,
        st.cfg.body_bytes_max,
        std::time::Duration::from_millis(st.cfg.http_body_read_timeout_ms),
    )
    .await?;
    let engine: Arc<Engine> = st.engine.clone();
    let who = submitter.clone();
    let batches =
        match tokio::task::spawn_blocking(move || build_batches(&engine, &bytes, kind, &who)).await
        {
            Ok(r) => r?,
            Err(e) => return Err(ApiError::internal(format!("validation task failed: {e}"))),
        };
    let (pending, failure) = queue_parts(&st, &submitter, batches).await?;
    let (receipts, failure) = receipts_of(pending, failure).await;
    match failure {
        // The submitter every record of the request carries: with a receipt and the event's
        // bytes, a client can rebuild its record (FORMATS.md §4) and leaf hash.
        None => Ok(axum::Json(serde_json::json!({
            "receipts": receipts,
            "submitter": submitter.as_str(),
        }))
        .into_response()),
        Some(e) if receipts.is_empty() => Err(e),
        Some(e) => {
            crate::metrics::count_http_error(e.code);
            let message = format!(
                "{}; {} events of this request were stored (their receipts are listed), the rest were not",
                e.message,
                receipts.len()
            );
            let body = serde_json::json!({
                "error": {"code": e.code, "message": message},
                "receipts": receipts,
                "submitter": submitter.as_str(),
            });
            Ok((e.status, axum::Json(body)).into_response())
        }
    }
}

/// Queues a request's parts in order. A full queue refuses the request while nothing of it
/// is queued (`Err`); once a part is queued, a later failure stops the queueing and is
/// returned beside what was queued (those parts may be stored whatever happens next: the
/// answer then lists exactly what was, so the client loses no receipt and can resend the
/// rest).
async fn queue_parts(
    st: &St,
    submitter: &Submitter,
    batches: Vec<EventBatch>,
) -> ApiResult<(Vec<Pending>, Option<ApiError>)> {
    let mut pending = Vec::with_capacity(batches.len());
    for (i, batch) in batches.into_iter().enumerate() {
        let first = i == 0;
        let queued = match queue_share(st, submitter, first).await {
            // Later parts wait their turn so the request is not left half-queued.
            Ok(share) => {
                let when_full = if first {
                    WhenFull::Refuse
                } else {
                    WhenFull::Wait
                };
                submit(&st.engine, batch, share, when_full).map_err(ApiError::from)
            }
            Err(e) => Err(e),
        };
        match queued {
            Ok(p) => pending.push(p),
            Err(e) if first => return Err(e),
            Err(e) => return Ok((pending, Some(e))),
        }
    }
    Ok((pending, None))
}

/// The receipts of every queued part, in order, and the first failure (queueing's, or the
/// engine's answer for a part).
async fn receipts_of(
    pending: Vec<Pending>,
    mut failure: Option<ApiError>,
) -> (Vec<Receipt>, Option<ApiError>) {
    let mut receipts = Vec::new();
    for p in pending {
        match settle(p).await {
            Ok(r) => receipts.extend(r.leaf_hashes.iter().enumerate().map(|(k, leaf)| Receipt {
                index: r.first_index + k as u64,
                leaf_hash: to_hex(leaf),
                received_at_unix_ns: r.received_at_unix_ns,
            })),
            Err(e) => {
                failure.get_or_insert(e.into());
            }
        }
    }
    (receipts, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_ascii_whitespace() {
        assert_eq!(trim(b"  {}\r\n"), b"{}");
        assert_eq!(trim(b" \t "), b"");
        assert_eq!(trim(b""), b"");
    }
}
