//! `GET /v1/export?format=cef|json|csv&start=&end=`: a range of any length, streamed.
//!
//! Memory stays bounded whatever the range: a blocking task reads `export_chunk_events`
//! records at a time from the engine, renders them into a buffer that is handed to the
//! response body every `EXPORT_CHUNK_BYTES`, and the body channel holds at most
//! `EXPORT_CHUNKS_IN_FLIGHT` of those; a slow client therefore slows the reader instead of
//! growing a queue. `end` defaults to the tree size when the request arrives.

use auditlog_engine::EngineError;
use auditlog_formats::cef;
use auditlog_formats::export::{self, ExportFormat, StoredEvent};
use auditlog_formats::record::Record;
use axum::body::{Body, Bytes};
use axum::extract::State;
use tokio::sync::mpsc;

use crate::auth::Access;
use crate::http::{
    authorize_submitter, num, params, with_type, ApiError, ApiResult, Caller, ChannelBody, Params,
    St,
};

/// A body chunk is sent once the buffer holds this much.
const EXPORT_CHUNK_BYTES: usize = 64 << 10;
/// Chunks waiting for the client, per export.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 4;

/// The format parameter of an export or a search (default: JSON lines).
pub(crate) fn format_param(
    q: &std::collections::HashMap<String, String>,
) -> ApiResult<ExportFormat> {
    match q.get("format").map(String::as_str) {
        None => Ok(ExportFormat::JsonLines),
        Some(f) => ExportFormat::parse(f)
            .ok_or_else(|| ApiError::bad(format!("format={f:?}: expected cef, json or csv"))),
    }
}

/// Appends one record as an export line (FORMATS.md §14) in `format`.
pub(crate) fn render_event(
    alg: auditlog_formats::TreeHash,
    format: ExportFormat,
    device: &cef::CefDevice,
    index: u64,
    rec: &[u8],
    buf: &mut String,
) -> Result<(), EngineError> {
    with_stored_event(alg, index, rec, |_, e| {
        let rendered = match format {
            ExportFormat::JsonLines => export::render_json_line(e, buf),
            ExportFormat::Csv => export::render_csv_row(e, buf),
            ExportFormat::Cef => cef::render(device, e, buf).map(|_| buf.push('\n')),
        };
        rendered.map_err(|e| EngineError::BadRequest(e.to_string()))
    })
}

/// Record `index` as exports and the forwarder show it: parsed, its event
/// (`Record::event_json`, derived for a syslog record) and its leaf hash. The one place
/// stored records become `StoredEvent`s; a record that does not parse is named.
pub(crate) fn with_stored_event<T>(
    alg: auditlog_formats::TreeHash,
    index: u64,
    rec: &[u8],
    f: impl FnOnce(&Record<'_>, &StoredEvent<'_>) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let damaged = |e| EngineError::BadRequest(format!("record {index} is damaged: {e}"));
    let r = Record::parse(rec).map_err(damaged)?;
    let event = r.event_json().map_err(damaged)?;
    let leaf = alg.leaf(rec);
    f(&r, &StoredEvent::of(index, &leaf, &r, &event))
}

pub async fn get_export(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    let (_, who) = authorize_submitter(&st, &caller, Access::ReadEvents).await?;
    let q = params(q)?;
    let format = format_param(&q)?;
    let size = st.engine.tree_size();
    let start = num(&q, "start")?.unwrap_or(0);
    let asked_end = num(&q, "end")?;
    if let Some(e) = asked_end.filter(|e| *e < start) {
        return Err(ApiError::bad(format!("end {e} is before start {start}")));
    }
    // Past the head there is nothing (yet): the export stops at the tree size.
    let end = asked_end.unwrap_or(size).min(size);
    // Held until the stream ends (a client that stops reading is cut by the write timeout).
    let slot = st.streamed_reads.take(&who)?;
    crate::http::first_record_readable(&st.engine, start, end).await?;
    let (tx, rx) = mpsc::channel(EXPORT_CHUNKS_IN_FLIGHT);
    let engine = st.engine.clone();
    let device = st.cfg.siem.cef.clone();
    let chunk_events = st.cfg.siem.export_chunk_events;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let alg = engine.tree_hash();
        let mut buf = String::with_capacity(EXPORT_CHUNK_BYTES + (80 << 10));
        if format == ExportFormat::Csv {
            export::render_csv_header(&mut buf);
        }
        let mut render = |index: u64, rec: &[u8]| -> Result<bool, EngineError> {
            render_event(alg, format, &device, index, rec, &mut buf)?;
            if buf.len() >= EXPORT_CHUNK_BYTES {
                let chunk = Bytes::from(std::mem::take(&mut buf));
                buf.reserve(EXPORT_CHUNK_BYTES + (80 << 10));
                // The client went away: stop reading.
                return Ok(tx.blocking_send(Ok(chunk)).is_ok());
            }
            Ok(true)
        };
        let mut at = start;
        let mut outcome = Ok(());
        while at < end && !tx.is_closed() {
            let stop = end.min(at.saturating_add(chunk_events));
            if let Err(e) = engine.read_records(at, stop, &mut render) {
                outcome = Err(e);
                break;
            }
            at = stop;
        }
        let last = match outcome {
            Ok(()) => Ok(Bytes::from(buf)),
            // The status is already sent; cutting the stream short tells the client.
            Err(e) => {
                tracing::warn!("export {start}..{end} stopped: {e}");
                Err(std::io::Error::other(e.to_string()))
            }
        };
        let _ = tx.blocking_send(last);
    });
    Ok(with_type(Body::new(ChannelBody(rx)), format.content_type()))
}
