//! Search by field (`GET /v1/search`): the events of an index range that match a
//! [`Filter`], in index order, at a bounded cost. The search index (`searchindex.rs`)
//! gives candidate blocks of records for the indexed records; the unindexed tail, and
//! filters with no index term (only the event's `timestamp`, or a resource prefix without
//! a separator), are scanned. Every record of a candidate block is re-checked (first by a
//! substring search of its bytes, `Filter::may_match`, then parsed), so blocks, buckets
//! and hash collisions cost only time. A search stops after `examined_max` records read or `limit`
//! matches and says where to go on; a cursor carries that, signed with a key of this run
//! of the engine, so a forged or stale one is refused.
//!
//! Records are read through the segment set: a hit in a pruned segment is fetched from the
//! store; a miss is never read, since the index covers pruned ranges.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use auditlog_formats::record::Record;
use auditlog_formats::search::{EventFields, Filter, Prefilter};
use base64::Engine as _;

use crate::error::corrupt;
use crate::shared::Shared;
use crate::{Engine, EngineError, Result};

/// One search: `filter` over the records `[start, end)` of the tree of `size`.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub filter: Filter,
    pub size: u64,
    pub start: u64,
    pub end: u64,
    /// Matches returned at most.
    pub limit: u64,
    /// Records read and re-checked at most (the request's cost limit).
    pub examined_max: u64,
}

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchEnd {
    /// Where to go on (`None`: the range is done).
    pub next: Option<u64>,
    pub examined: u64,
    pub matched: u64,
}

/// What a cursor holds: where a search goes on, for which query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub size: u64,
    pub end: u64,
    pub next: u64,
}

const CURSOR_BYTES: usize = 24 + 16;

/// What every record of one search is checked against: the request, its filter's
/// substring searchers, and the end of its range (where a stopped search would go on).
struct Check<'a> {
    q: &'a SearchRequest,
    pre: Prefilter,
    end: u64,
}

/// A record's receipt time and its event (`Record::event_json`: a syslog record's event is
/// derived from the message), whose searchable fields `EventFields::of` reads: the one place
/// records are read for search (index building and re-checks alike).
pub(crate) fn record_event(index: u64, rec: &[u8]) -> Result<(u64, Cow<'_, [u8]>)> {
    let damaged = |e: auditlog_formats::record::RecordError| {
        corrupt(format!("record {index}"), e.to_string())
    };
    let r = Record::parse(rec).map_err(damaged)?;
    Ok((r.received_at_unix_ns, r.event_json().map_err(damaged)?))
}

impl Engine {
    /// Calls `emit(index, record)` for each record of `[start, end)` matching the filter,
    /// in index order, within the request's limits; `emit` returns false to stop.
    pub fn search(
        &self,
        q: &SearchRequest,
        emit: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<SearchEnd> {
        self.proof_size_check(q.size)?;
        let end = q.end.min(q.size);
        let terms = q.filter.terms(self.shared.search.shape().bucket_bits);
        let c = Check {
            q,
            pre: q.filter.prefilter(),
            end,
        };
        let mut out = SearchEnd {
            next: None,
            examined: 0,
            matched: 0,
        };
        let mut at = q.start;
        while at < end {
            let indexed = match terms.is_empty() {
                true => None,
                false => self.shared.search.candidates(&terms, at, end)?,
            };
            let Some((blocks, run_end)) = indexed else {
                // Not indexed (or nothing to look up): scan what is left.
                return Ok(self.scan(&c, (at, end), false, out, emit)?.0);
            };
            let stopped;
            (out, stopped) = self.scan_candidates(&c, &blocks, out, emit)?;
            if stopped {
                return Ok(out);
            }
            at = run_end.min(end);
        }
        Ok(out)
    }

    /// Counts record `i` as examined and emits it if it matches: `Some(next)` when the
    /// search stops there (`next`: where it goes on, `None` at the end of the range).
    fn consider(
        &self,
        c: &Check<'_>,
        i: u64,
        rec: &[u8],
        out: &mut SearchEnd,
        emit: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<Option<Option<u64>>> {
        out.examined += 1;
        let (_, event) = record_event(i, rec)?;
        let q = c.q;
        if !c.pre.may_match(&event) || !q.filter.matches(&EventFields::of(&event)) {
            return Ok(None);
        }
        out.matched += 1;
        let more = emit(i, rec)?;
        let next = (i + 1 < c.end).then_some(i + 1);
        if !more || out.matched >= q.limit {
            return Ok(Some(next));
        }
        Ok(None)
    }

    /// Re-checks the records `[from, to)` of a search (over `[.., c.end)`), a `point` read
    /// or a scan: the search so far, and whether it stopped (a limit reached; `next` says
    /// where to go on).
    fn scan(
        &self,
        c: &Check<'_>,
        (from, to): (u64, u64),
        point: bool,
        mut out: SearchEnd,
        emit: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<(SearchEnd, bool)> {
        let mut stop = None;
        self.shared
            .segments
            .for_each_record(point, from, to, &mut |i, rec| {
                if out.examined >= c.q.examined_max {
                    stop = Some(Some(i));
                    return Ok(false);
                }
                stop = self.consider(c, i, rec, &mut out, emit)?;
                Ok(stop.is_none())
            })?;
        out.next = stop.flatten();
        Ok((out, stop.is_some()))
    }

    /// Re-checks candidate blocks in order, as `scan` does each. A candidate is a point
    /// read (its segment block decoded only as far as its records), and with
    /// `search_readers` > 1 that many threads decode the next candidates while this one
    /// checks: a query's latency is mostly decoding ~100 segment blocks, one per match.
    /// Readers run at most two candidates ahead of the check; when the search stops, they
    /// stop at their next candidate.
    fn scan_candidates(
        &self,
        c: &Check<'_>,
        blocks: &[(u64, u64)],
        mut out: SearchEnd,
        emit: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<(SearchEnd, bool)> {
        let readers = self.shared.config.search_readers.min(blocks.len());
        if readers <= 1 {
            for &range in blocks {
                let stopped;
                (out, stopped) = self.scan(c, range, true, out, emit)?;
                if stopped {
                    return Ok((out, true));
                }
            }
            return Ok((out, false));
        }
        type Records = Result<Vec<(u64, Vec<u8>)>>;
        std::thread::scope(|s| {
            let mut channels = Vec::with_capacity(readers);
            for r in 0..readers {
                let (tx, rx) = crossbeam_channel::bounded::<Records>(2);
                channels.push(rx);
                let segments = &self.shared.segments;
                s.spawn(move || {
                    for &(a, z) in blocks.iter().skip(r).step_by(readers) {
                        let mut got = Vec::with_capacity((z - a) as usize);
                        let read = segments.for_each_record(true, a, z, &mut |i, rec| {
                            got.push((i, rec.to_vec()));
                            Ok(true)
                        });
                        if tx.send(read.map(|()| got)).is_err() {
                            return; // the search stopped
                        }
                    }
                });
            }
            for (k, _) in blocks.iter().enumerate() {
                let Ok(records) = channels[k % readers].recv() else {
                    unreachable!("a reader sends every candidate of its share")
                };
                for (i, rec) in records? {
                    if out.examined >= c.q.examined_max {
                        out.next = Some(i);
                        return Ok((out, true));
                    }
                    if let Some(next) = self.consider(c, i, &rec, &mut out, emit)? {
                        out.next = next;
                        return Ok((out, true));
                    }
                }
            }
            Ok((out, false))
        })
    }

    /// A cursor for going on with a search: opaque, signed with this engine run's key and
    /// bound to the filter (`digest`).
    pub fn search_cursor(&self, c: Cursor, digest: &[u8; 16]) -> String {
        let mut b = Vec::with_capacity(CURSOR_BYTES);
        b.extend_from_slice(&c.size.to_be_bytes());
        b.extend_from_slice(&c.end.to_be_bytes());
        b.extend_from_slice(&c.next.to_be_bytes());
        let mac = self.cursor_mac(&b, digest);
        b.extend_from_slice(&mac);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// Takes a cursor back: refused (`BadRequest`) unless this engine run made it for this
    /// filter.
    pub fn open_search_cursor(&self, text: &str, digest: &[u8; 16]) -> Result<Cursor> {
        let bad = |why: &str| EngineError::BadRequest(format!("cursor: {why}"));
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad("not a cursor"))?;
        if b.len() != CURSOR_BYTES {
            return Err(bad("not a cursor"));
        }
        let mac = self.cursor_mac(&b[..24], digest);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &b[24..])) {
            return Err(bad(
                "not one this server made for these filters (forged, altered, from another query, or from before a restart)",
            ));
        }
        let n = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Ok(Cursor {
            size: n(0),
            end: n(8),
            next: n(16),
        })
    }

    fn cursor_mac(&self, body: &[u8], digest: &[u8; 16]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.shared.search_cursor_key);
        h.update(body);
        h.update(digest);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    /// Records the search index covers, its bytes on disk and its runs.
    pub fn search_index_status(&self) -> (u64, u64, usize) {
        let (bytes, runs) = self.shared.search.footprint();
        (self.shared.search.indexed_size(), bytes, runs)
    }
}

/// The search indexer's thread: indexes every checkpoint's records, off the ingest path.
/// A failure is logged and retried; searches scan what is not indexed meanwhile.
pub(crate) fn run_indexer(shared: Arc<Shared>) {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1);
    shared.checkpoints.on_published(Box::new(move |size| {
        let _ = tx.try_send(size);
    }));
    let mut backoff = Duration::from_millis(50);
    while !shared.health.shutting_down() {
        let signed = shared.checkpoints.signed_size();
        if shared.search.indexed_size() < signed {
            match shared
                .search
                .extend(&shared.segments, signed, &|| shared.health.shutting_down())
            {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!("search index: {e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            continue;
        }
        // Woken by the next checkpoint; the timeout only notices shutdown.
        let _ = rx.recv_timeout(Duration::from_millis(200));
    }
}
