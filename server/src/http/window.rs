//! `GET /v1/proof/window?since=&until=&size=`: the index range `[start, end)` of the records
//! received in `[since, until)` at tree size `size` (default: the newest checkpoint), with
//! the records just outside it (`start - 1` and `end`, when they exist) and their inclusion
//! proofs, so a client checks that the range is exactly the window: the record before was
//! received before `since`, the one after at or after `until`, and `received_at` never
//! decreases in index order (FORMATS.md §4). `range_proof` is one proof for the whole range
//! (the subtrees outside it, `tree::verify_range`): with the range's records it gives the
//! root, so a client checks every record of the window at once. Times are RFC 3339 or integer Unix
//! nanoseconds; `since > until`, a malformed time or a size past the newest checkpoint is
//! 400. Locating the window costs two binary searches: O(log n) record reads.

use base64::Engine as _;
use serde_json::{json, Value};

use super::*;

/// An RFC 3339 time (to the millisecond) or integer Unix nanoseconds.
fn time_param(q: &HashMap<String, String>, name: &str) -> ApiResult<u64> {
    let text = q
        .get(name)
        .ok_or_else(|| ApiError::bad(format!("{name} is required")))?;
    auditlog_formats::time::parse_unix_ns(text).ok_or_else(|| {
        ApiError::bad(format!(
            "{name}: {text:?} is neither RFC 3339 nor Unix nanoseconds"
        ))
    })
}

/// A boundary record: its bytes (base64), receipt time, leaf hash and inclusion proof.
fn boundary(engine: &Engine, index: u64, size: u64) -> Result<Value, EngineError> {
    let record = engine.read_record(index)?;
    let received_at = Record::parse(&record)
        .map_err(|e| EngineError::Corrupt {
            path: format!("record {index}").into(),
            what: e.to_string(),
        })?
        .received_at_unix_ns;
    let proof = engine.prove_inclusion(index, size)?;
    let hex = auditlog_formats::hash::to_hex;
    Ok(json!({
        "index": index,
        "received_at_unix_ns": received_at,
        "leaf_hash": hex(&engine.tree_hash().leaf(&record)),
        "record": base64::engine::general_purpose::STANDARD.encode(&record),
        "inclusion": proof.iter().map(hex).collect::<Vec<_>>(),
    }))
}

pub(super) async fn get_window(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    authorize(&st, &caller, Access::ReadEvents).await?;
    let q = params(q)?;
    for k in q.keys() {
        if !["since", "until", "size"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!("unknown parameter {k:?}")));
        }
    }
    let since = time_param(&q, "since")?;
    let until = time_param(&q, "until")?;
    let size = match num(&q, "size")? {
        Some(s) => s,
        None => st
            .engine
            .latest_checkpoint()
            .map_or(0, |c| c.checkpoint.size),
    };
    let engine = st.engine.clone();
    let body = blocking(move || {
        let w = engine.window(since, until, size)?;
        let before = match w.start {
            0 => Value::Null,
            a => boundary(&engine, a - 1, size)?,
        };
        let after = if w.end < size {
            boundary(&engine, w.end, size)?
        } else {
            Value::Null
        };
        // One proof for the whole range: with the range's records it gives the root.
        let range_proof: Vec<String> = if w.start < w.end {
            engine
                .prove_range(w.start, w.end, size)?
                .iter()
                .map(auditlog_formats::hash::to_hex)
                .collect()
        } else {
            Vec::new()
        };
        Ok(json!({
            "size": size,
            "since_unix_ns": since,
            "until_unix_ns": until,
            "start": w.start,
            "end": w.end,
            "before": before,
            "after": after,
            "range_proof": range_proof,
        }))
    })
    .await?;
    Ok(axum::Json(body).into_response())
}
