//! `GET /v1/search?[since=&until=][&size=][&actor=…][&resource=prefix*][&timestamp_since=
//! &timestamp_until=][&limit=][&cursor=][&format=cef|json|csv]`: the events matching every
//! filter given (AND), in index order, as `/v1/export` writes them (index, leaf hash and
//! event). `since`/`until` bound the receipt time (the window of `/v1/proof/window`),
//! `timestamp_since`/`timestamp_until` the event's own `timestamp`; `resource=p*` matches
//! by prefix. `size` (default: the newest checkpoint) pins the tree searched.
//!
//! Each request costs at most `search_records_examined_max` records read and returns at
//! most `limit` (≤ `search_limit_max`) events; when it stops before the end, the
//! `Auditlog-Cursor` header holds a cursor to go on with (same filters, `cursor=`): signed
//! by the engine, so a forged, altered or stale one (from before a restart, or for other
//! filters) is 400. So is any bad input, before anything is read. The answer is held until
//! complete (bounded by the limits) so the cursor can go in a header.

use auditlog_engine::{Cursor, SearchRequest};
use auditlog_formats::search::{Filter, SearchField};

use super::*;

/// Parameters other than the fields.
const PARAMS: [&str; 9] = [
    "since",
    "until",
    "size",
    "timestamp_since",
    "timestamp_until",
    "limit",
    "cursor",
    "format",
    "resource",
];

fn time(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|text| {
            auditlog_formats::time::parse_unix_ns(text).ok_or_else(|| {
                ApiError::bad(format!(
                    "{name}: {text:?} is neither RFC 3339 nor Unix nanoseconds"
                ))
            })
        })
        .transpose()
}

/// The filter the query asks for; unknown parameters are refused.
fn filter(q: &HashMap<String, String>) -> ApiResult<Filter> {
    let mut f = Filter::default();
    for (k, v) in q {
        match SearchField::parse(k) {
            Some(SearchField::Resource) => match v.strip_suffix('*') {
                Some(p) => f.resource_prefix = Some(p.to_string()),
                None => f.equals.push((SearchField::Resource, v.clone())),
            },
            Some(field) => f.equals.push((field, v.clone())),
            None if PARAMS.contains(&k.as_str()) => {}
            None => return Err(ApiError::bad(format!("unknown parameter {k:?}"))),
        }
    }
    f.timestamp_since_unix_ns = time(q, "timestamp_since")?;
    f.timestamp_until_unix_ns = time(q, "timestamp_until")?;
    if let (Some(a), Some(b)) = (f.timestamp_since_unix_ns, f.timestamp_until_unix_ns) {
        if a > b {
            return Err(ApiError::bad(format!(
                "timestamp_since ({a}) is after timestamp_until ({b})"
            )));
        }
    }
    Ok(f)
}

pub(super) async fn get_search(State(st): State<St>, caller: Caller, q: Params) -> ApiResult {
    let (_, who) = authorize_submitter(&st, &caller, Access::ReadEvents).await?;
    let q = params(q)?;
    let f = filter(&q)?;
    let format = crate::export::format_param(&q)?;
    let (limit_max, examined_max) = (st.cfg.search_limit_max, st.cfg.search_records_examined_max);
    let limit = num(&q, "limit")?.unwrap_or(limit_max.min(100));
    if limit == 0 || limit > limit_max {
        return Err(ApiError::bad(format!(
            "limit {limit} is not from 1 to search_limit_max ({limit_max})"
        )));
    }
    let (since, until) = (time(&q, "since")?, time(&q, "until")?);
    if let (Some(a), Some(b)) = (since, until) {
        if a > b {
            return Err(ApiError::bad(format!("since ({a}) is after until ({b})")));
        }
    }
    let cursor = q
        .get("cursor")
        .map(|c| st.engine.open_search_cursor(c, &f.digest()))
        .transpose()?;
    let signed = st
        .engine
        .latest_checkpoint()
        .map_or(0, |c| c.checkpoint.size);
    let size = match (num(&q, "size")?, cursor) {
        (Some(s), Some(c)) if s != c.size => {
            return Err(ApiError::bad(format!(
                "size {s} is not the cursor's ({})",
                c.size
            )))
        }
        (Some(s), _) => s,
        (None, Some(c)) => c.size,
        (None, None) => signed,
    };
    if size > signed {
        return Err(ApiError::bad(format!(
            "tree size {size} is beyond the newest checkpoint ({signed})"
        )));
    }
    let slot = st.streamed_reads.take(&who)?;
    let engine = st.engine.clone();
    let device = st.cfg.siem.cef.clone();
    let digest = f.digest();
    let (body, next) = blocking(move || {
        let _slot = slot;
        let (start, end) = match (since, until) {
            (None, None) => (0, size),
            (a, b) => {
                let w = engine.window(a.unwrap_or(0), b.unwrap_or(u64::MAX), size)?;
                (w.start, w.end)
            }
        };
        let start = match cursor {
            None => start,
            Some(c) if c.end == end && (start..=end).contains(&c.next) => c.next,
            Some(_) => {
                return Err(EngineError::BadRequest(
                    "cursor: it belongs to another window (since, until)".into(),
                ))
            }
        };
        let mut buf = String::new();
        if format == auditlog_formats::export::ExportFormat::Csv {
            auditlog_formats::export::render_csv_header(&mut buf);
        }
        let alg = engine.tree_hash();
        let req = SearchRequest {
            filter: f,
            size,
            start,
            end,
            limit,
            examined_max,
        };
        let got = engine.search(&req, &mut |i, rec| {
            crate::export::render_event(alg, format, &device, i, rec, &mut buf)?;
            Ok(true)
        })?;
        let next = got
            .next
            .map(|next| engine.search_cursor(Cursor { size, end, next }, &digest));
        Ok((buf, next))
    })
    .await?;
    let mut r = with_type(body, format.content_type());
    if let Some(c) = next {
        r.headers_mut().insert(
            "auditlog-cursor",
            HeaderValue::from_str(&c).map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    Ok(r)
}
