//! Time windows as index ranges. `received_at` never decreases in index order (it is stamped
//! at the enqueue, `submit.rs`), so the records received in `[since, until)` are one index
//! range `[a, b)`, found by two binary searches over the search index's receipt times in
//! memory: where the time changes (then no record is read), or every 64th record (then at
//! most 64 records are read in one pass); O(log n) record reads for the unindexed tail. The boundaries `a - 1` (received before `since`) and `b` (at or after `until`),
//! with their inclusion proofs, let a client check that the range is exactly the window.

use auditlog_formats::record::Record;

use crate::{Engine, EngineError, Result};

/// The index range of a time window at a tree size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub size: u64,
    /// Records `[start, end)` were received in the window.
    pub start: u64,
    pub end: u64,
}

impl Engine {
    /// The records received in `[since_unix_ns, until_unix_ns)`, among the first `size`
    /// (a signed size: at most the newest checkpoint's).
    pub fn window(&self, since_unix_ns: u64, until_unix_ns: u64, size: u64) -> Result<Window> {
        if since_unix_ns > until_unix_ns {
            return Err(EngineError::BadRequest(format!(
                "since ({since_unix_ns}) is after until ({until_unix_ns})"
            )));
        }
        let signed = self.latest_checkpoint().map_or(0, |c| c.checkpoint.size);
        if size > signed {
            return Err(EngineError::BadRequest(format!(
                "tree size {size} is beyond the newest checkpoint ({signed})"
            )));
        }
        let start = self.first_received_at_or_after(since_unix_ns, size)?;
        let end = self.first_received_at_or_after(until_unix_ns, size)?;
        Ok(Window { size, start, end })
    }

    /// One proof for every leaf of `[a, b)` in the tree of `size` (a signed size): the
    /// hashes of the subtrees outside the range (`tree::verify_range`).
    pub fn prove_range(&self, a: u64, b: u64, size: u64) -> Result<Vec<auditlog_formats::Hash>> {
        let signed = self.latest_checkpoint().map_or(0, |c| c.checkpoint.size);
        if size > signed {
            return Err(EngineError::BadRequest(format!(
                "tree size {size} is beyond the newest checkpoint ({signed})"
            )));
        }
        auditlog_formats::tree::prove_range(self.tree_hash(), a, b, size, &self.shared.hashes)?
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// The receipt time of record `index`.
    pub fn received_at(&self, index: u64) -> Result<u64> {
        let rec = self.read_record(index)?;
        Record::parse(&rec)
            .map(|r| r.received_at_unix_ns)
            .map_err(|e| EngineError::Corrupt {
                path: format!("record {index}").into(),
                what: e.to_string(),
            })
    }

    /// The first index below `size` whose receipt time is at least `t` (`size` if none).
    /// The search index's receipt times (in memory) give it, or bracket it within
    /// `RECEIVED_AT_SAMPLE_EVERY` records read in one pass (one block); the unindexed
    /// tail is binary-searched.
    fn first_received_at_or_after(&self, t: u64, size: u64) -> Result<u64> {
        let (mut lo, mut hi) = self.shared.search.bracket(t, size);
        while hi - lo > auditlog_formats::searchindex::RECEIVED_AT_SAMPLE_EVERY {
            let mid = lo + (hi - lo) / 2;
            if self.received_at(mid)? < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut found = hi;
        self.read_records(lo, hi, &mut |i, rec| {
            let r = Record::parse(rec).map_err(|e| EngineError::Corrupt {
                path: format!("record {i}").into(),
                what: e.to_string(),
            })?;
            if r.received_at_unix_ns >= t {
                found = i;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }
}
