//! The search index: posting lists of event fields, and a sparse receipt-time index.
//! Derived state like the leaf-hash index (`leafindex.rs`): built by its own thread from
//! checkpointed records, off the ingest path; never synced; checked on open, and whatever
//! is not whole (torn, altered, a gap, past the tree, another format or shape) is deleted
//! and built again from the segments.
//!
//! Layout (`search/{first:020}-{end:020}.run`, bytes in `auditlog_formats::searchindex`
//! and FORMATS.md §5.7): immutable runs, contiguous from 0, each inside one window of
//! `search_window_records` records (8 Mi by default). A posting names a block of
//! `search_block_records` records (128), and the nearly unique fields' values share
//! `2^search_bucket_bits` buckets per field: a term then costs a few bytes per block it
//! occurs in, not 12 per value, and a search re-checks every record of a candidate block.
//!
//! A checkpoint's new records make a run of their own (at most `BUILD_RECORDS_MAX`
//! records, which bounds the builder's memory). Runs are merged from their postings, never
//! by reading records again (blocks are aligned to absolute indexes, so a merge shifts
//! block numbers and unions): once a window holds `WINDOW_RUNS_MAX` runs its newest of
//! similar size (`rebuild_from`: size-tiered, so a slow log does not merge its window
//! again and again), and once its last record is indexed, all of it. The indexer thus
//! reads every record once. A lookup finds a term's 3 KiB block of the term table
//! through an in-memory fence of every `FENCE_TERMS`th key, then its bitmap.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use auditlog_formats::layout;
use auditlog_formats::searchindex::{
    check_run, decode_term, decode_terms, decode_times, encode_run, read_bitmap, term_postings,
    Postings, RunHeader, Shape, TermValue, Times, TERM_BYTES,
};
use roaring::RoaringBitmap;

use crate::error::{corrupt, io_err, Result};
use crate::segment_set::Segments;

/// Runs in one window before its newest of similar size are merged. Every run costs its
/// terms' fixed bytes (about 6 MB at 10^5 actors, 2^15 buckets), so few: a window's tail
/// holds about log2(window / run) of them.
const WINDOW_RUNS_MAX: usize = 4;
/// Term-table entries per fence block (3 KiB, one read per term per run).
const FENCE_TERMS: u64 = 256;
/// Records one run is built from at most: the builder holds every term's blocks of them
/// in memory (about 25 MB per Mi records of the audit schema).
const BUILD_RECORDS_MAX: u64 = 1 << 20;

struct Run {
    header: RunHeader,
    path: PathBuf,
    file: File,
    /// Key of term `i * FENCE_TERMS`.
    fences: Vec<u64>,
    /// Receipt times: change points, or samples at every 64th index.
    times: Times,
    bytes: u64,
}

impl Run {
    fn first(&self) -> u64 {
        self.header.first
    }
    fn end(&self) -> u64 {
        self.header.end
    }
}

/// Records `[start, end)`.
pub(crate) type RecordRange = (u64, u64);

pub(crate) struct SearchIndex {
    /// `None` when `search_index = false`: nothing is built, searches scan.
    dir: Option<PathBuf>,
    /// Runs never cross a multiple of this, and a whole window ends as one run.
    window_records: u64,
    shape: Shape,
    runs: RwLock<Vec<Arc<Run>>>,
}

impl SearchIndex {
    /// Opens the runs that are whole, of this `shape`, and cover a prefix of a tree of
    /// `tree_size`; every other file is deleted (and its records indexed again later).
    pub(crate) fn open(
        dir: Option<&Path>,
        window_records: u64,
        shape: Shape,
        tree_size: u64,
    ) -> Result<SearchIndex> {
        assert!(shape.valid(), "search index shape checked by the config");
        let Some(dir) = dir else {
            return Ok(SearchIndex {
                dir: None,
                window_records,
                shape,
                runs: RwLock::new(Vec::new()),
            });
        };
        let runs = crate::runs::open_chain(
            dir,
            "search index",
            |first, end| end <= tree_size && (end - 1) / window_records == first / window_records,
            |path, first, end| load_run(path, first, end, shape),
        )?;
        Ok(SearchIndex {
            dir: Some(dir.to_path_buf()),
            window_records,
            shape,
            runs: RwLock::new(runs),
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// How postings are made (a query's terms depend on its `bucket_bits`).
    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    fn snapshot(&self) -> Vec<Arc<Run>> {
        self.runs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records covered: `[0, indexed_size)`.
    pub(crate) fn indexed_size(&self) -> u64 {
        self.runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map_or(0, |r| r.end())
    }

    /// Bytes of the index on disk, and runs.
    pub(crate) fn footprint(&self) -> (u64, usize) {
        let runs = self.snapshot();
        (runs.iter().map(|r| r.bytes).sum(), runs.len())
    }

    /// Indexes the records up to `size` (checkpointed), at most `BUILD_RECORDS_MAX` at a
    /// time and never across a window, merging a window's runs as they crowd it and once
    /// it is whole. Stops between runs when `stopping()` says so.
    pub(crate) fn extend(
        &self,
        segments: &Segments,
        size: u64,
        stopping: &dyn Fn() -> bool,
    ) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        loop {
            let first = self.indexed_size();
            if first >= size || stopping() {
                return Ok(());
            }
            let window = first - first % self.window_records;
            let end = size
                .min(window + self.window_records)
                .min(first + BUILD_RECORDS_MAX);
            let in_window: Vec<(u64, u64)> = self
                .snapshot()
                .iter()
                .filter(|r| r.first() >= window)
                .map(|r| (r.first(), r.end() - r.first()))
                .collect();
            let from = match end == window + self.window_records {
                true => window,
                false => rebuild_from(&in_window, first, end),
            };
            let run = build_run(dir, segments, self.shape, first, end)?;
            self.replace(first, run)?;
            if from < first {
                let parts = self.snapshot();
                let parts = &parts[parts.partition_point(|r| r.first() < from)..];
                match merge_runs(dir, self.shape, parts) {
                    Ok(merged) => self.replace(from, merged)?,
                    Err(e) => {
                        // A part unreadable (damaged since it was opened): its records
                        // are built again from the segments on the next try.
                        self.truncate(from)?;
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Puts `run` in place of the runs from `from` on, and removes their files.
    fn replace(&self, from: u64, run: Run) -> Result<()> {
        self.swap(from, Some(run))
    }

    /// Drops the runs from `from` on, and removes their files.
    fn truncate(&self, from: u64) -> Result<()> {
        self.swap(from, None)
    }

    fn swap(&self, from: u64, run: Option<Run>) -> Result<()> {
        let replaced: Vec<Arc<Run>> = {
            let mut runs = self.runs.write().unwrap_or_else(|e| e.into_inner());
            let at = runs.partition_point(|r| r.first() < from);
            assert!(
                runs.get(at).is_none_or(|r| r.first() == from)
                    && run
                        .as_ref()
                        .is_none_or(|run| { runs.last().is_none_or(|r| r.end() <= run.end()) }),
                "search index runs changed while building"
            );
            let old = runs.split_off(at);
            runs.extend(run.map(Arc::new));
            old
        };
        for r in replaced {
            crate::runs::remove(&r.path)?;
        }
        Ok(())
    }

    /// The records of the candidate blocks in `[start, end)` for every term in `terms`
    /// (AND), from the run that holds `start`: `Some((ranges, run end))`, or `None` when
    /// `start` is not indexed. Ranges are ascending and disjoint.
    pub(crate) fn candidates(
        &self,
        terms: &[u64],
        start: u64,
        end: u64,
    ) -> Result<Option<(Vec<RecordRange>, u64)>> {
        let runs = self.snapshot();
        let at = runs.partition_point(|r| r.end() <= start);
        let Some(run) = runs.get(at).filter(|r| r.first() <= start) else {
            return Ok(None);
        };
        let mut acc: Option<RoaringBitmap> = None;
        for &t in terms {
            let b = postings(run, t)?.unwrap_or_default();
            acc = Some(match acc {
                Some(a) => a & b,
                None => b,
            });
            if acc.as_ref().is_some_and(|a| a.is_empty()) {
                break;
            }
        }
        let (first, shape) = (run.first(), run.header.shape);
        let end = end.min(run.end());
        let lo = shape.block_of(first, start);
        let hi = shape.block_of(first, end.max(start + 1) - 1);
        let out = acc
            .unwrap_or_default()
            .range(lo..=hi)
            .map(|b| {
                let (a, z) = shape.block_records_range(first, run.end(), b);
                (a.max(start), z.min(end))
            })
            .filter(|(a, z)| a < z)
            .collect();
        Ok(Some((out, run.end())))
    }

    /// Brackets the first index below `size` received at or after `t`: it is in
    /// `[lo, hi]` (`hi` itself when none of `[lo, hi)` is), from the receipt times in
    /// memory. Where a run keeps change points, `lo == hi`: no record is read; where it
    /// keeps samples, `hi - lo` is under 64; past the indexed records, the unindexed tail.
    pub(crate) fn bracket(&self, t: u64, size: u64) -> (u64, u64) {
        let runs = self.snapshot();
        // Runs whose first time is below `t`: the answer is in the last of them or after.
        let r = runs.partition_point(|run| run.times.points.first().is_some_and(|&(_, s)| s < t));
        let (lo, hi) = match r.checked_sub(1) {
            None => (0, runs.first().map_or(size, |run| run.first())),
            Some(k) => {
                let run = &runs[k];
                let at = |o: u32| run.first() + u64::from(o);
                let points = &run.times.points;
                let p = points.partition_point(|&(_, s)| s < t);
                let after = runs.get(k + 1).map_or(size, |next| next.first());
                let hi = points.get(p).map_or(after, |&(o, _)| at(o));
                let lo = match run.times.exact {
                    true => points.get(p).map_or(run.end(), |&(o, _)| at(o)),
                    false => at(points[p - 1].0) + 1,
                };
                (lo, hi)
            }
        };
        let hi = hi.min(size);
        (lo.min(hi), hi)
    }
}

/// Where the run that indexes `[first, end)` starts, given the window's runs
/// `(first, records)` before it: at `first`, unless the window would then hold
/// `WINDOW_RUNS_MAX` runs; then at the newest runs of similar size (each at most twice the
/// newer ones together, the new records included), which are built again with it.
fn rebuild_from(in_window: &[(u64, u64)], first: u64, end: u64) -> u64 {
    if in_window.len() + 1 < WINDOW_RUNS_MAX {
        return first;
    }
    let (mut from, mut newer) = (first, end - first);
    for &(f, count) in in_window.iter().rev() {
        if count > 2 * newer {
            break;
        }
        (from, newer) = (f, newer + count);
    }
    from
}

/// A term's postings in a run (`None`: the term is not in it).
fn postings(run: &Run, key: u64) -> Result<Option<RoaringBitmap>> {
    let h = &run.header;
    let block = (run.fences.partition_point(|&f| f <= key) as u64).checked_sub(1);
    let Some(block) = block else { return Ok(None) };
    let n = (h.terms - block * FENCE_TERMS).min(FENCE_TERMS);
    let mut buf = vec![0u8; (n as usize) * TERM_BYTES];
    let at = h.terms_at() as u64 + block * FENCE_TERMS * TERM_BYTES as u64;
    run.file
        .read_exact_at(&mut buf, at)
        .map_err(io_err(&run.path, "read search term block"))?;
    let found = buf
        .chunks_exact(TERM_BYTES)
        .map(decode_term)
        .find(|(k, _)| *k == key);
    match found {
        None => Ok(None),
        Some((_, TermValue::One(o))) => Ok(Some(std::iter::once(o).collect())),
        Some((_, TermValue::At(at))) => {
            // The portable format says its own length: read it through a buffer that
            // ends at the run's end (one read for all but the biggest bitmaps).
            let base = h.postings_at() as u64 + u64::from(at);
            let body = ReadAt {
                file: &run.file,
                at: base,
                end: run.bytes,
            };
            read_bitmap(std::io::BufReader::with_capacity(4096, body), h.blocks())
                .map(Some)
                .map_err(|e| corrupt(&run.path, format!("bitmap at {at}: {e}")))
        }
    }
}

/// A file's bytes `[at, end)` as a reader.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.end.saturating_sub(self.at)) as usize;
        let got = self.file.read_at(&mut buf[..n], self.at)?;
        self.at += got as u64;
        Ok(got)
    }
}

/// Builds the run of the records `[first, end)`: every term's blocks, and the receipt
/// times.
fn build_run(dir: &Path, segments: &Segments, shape: Shape, first: u64, end: u64) -> Result<Run> {
    let mut terms: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut received = Vec::with_capacity((end - first) as usize);
    let mut scratch = Vec::with_capacity(16);
    let mut pace = crate::yielding::Every::new(256);
    let mut next = first;
    segments.for_each_record(false, first, end, &mut |index, rec| {
        pace.tick();
        assert_eq!(index, next, "records in order");
        next += 1;
        let (received_at, event) = crate::search::record_event(index, rec)?;
        let fields = auditlog_formats::search::EventFields::of(&event);
        let block = shape.block_of(first, index);
        received.push(received_at);
        scratch.clear();
        fields.terms(shape.bucket_bits, &mut scratch);
        for &t in &scratch {
            // Records come in order, so a block already listed is the last one.
            let blocks = terms.entry(t).or_default();
            if blocks.last() != Some(&block) {
                blocks.push(block);
            }
        }
        Ok(true)
    })?;
    if next != end {
        return Err(corrupt(
            segments.dir(),
            format!("search index: records [{first}, {end}) ended at {next}"),
        ));
    }
    let mut terms: Vec<(u64, Vec<u32>)> = terms.into_iter().collect();
    terms.sort_unstable_by_key(|(k, _)| *k);
    crate::yielding::point();
    let terms: Vec<(u64, Postings)> = terms
        .into_iter()
        .map(|(k, blocks)| (k, Postings::from_sorted(&blocks)))
        .collect();
    let times = Times::of(first, &received);
    write_run(dir, encode_run(first, end, shape, &times, &terms))
}

/// Merges contiguous runs into one from their postings (no record is read): each term's
/// blocks shifted to the merged run's first block and united, terms in key order (a
/// k-way merge of the sorted term tables), receipt times merged.
fn merge_runs(dir: &Path, shape: Shape, parts: &[Arc<Run>]) -> Result<Run> {
    let (first, end) = match (parts.first(), parts.last()) {
        (Some(a), Some(z)) => (a.first(), z.end()),
        _ => panic!("a merge of no runs"),
    };
    let mut inputs = Vec::with_capacity(parts.len());
    for r in parts {
        let bytes = std::fs::read(&r.path).map_err(io_err(&r.path, "read search run"))?;
        let h = check_run(&bytes).map_err(|e| corrupt(&r.path, e.to_string()))?;
        if h != r.header {
            return Err(corrupt(&r.path, "changed on disk since it was opened"));
        }
        inputs.push((bytes, h));
    }
    let times: Vec<(u64, u64, &Times)> = parts
        .iter()
        .map(|r| (r.first(), r.end(), &r.times))
        .collect();
    let times = Times::merge(first, end, &times);
    let mut cursors: Vec<_> = inputs
        .iter()
        .map(|(bytes, h)| decode_terms(bytes, h).peekable())
        .collect();
    let mut terms: Vec<(u64, Postings)> = Vec::new();
    let mut blocks: Vec<u32> = Vec::new();
    let mut pace = crate::yielding::Every::new(256);
    while let Some(key) = cursors
        .iter_mut()
        .filter_map(|c| c.peek().map(|t| t.0))
        .min()
    {
        pace.tick();
        blocks.clear();
        for (k, cursor) in cursors.iter_mut().enumerate() {
            let Some((_, value)) = cursor.next_if(|t| t.0 == key) else {
                continue;
            };
            let (bytes, h) = &inputs[k];
            let shift = shape.block_of(first, h.first);
            let b = term_postings(&bytes[h.postings_at()..], value, h.blocks())
                .map_err(|e| corrupt(&parts[k].path, e.to_string()))?;
            // Inputs in index order: blocks ascend, the one at a boundary maybe twice.
            for v in b.iter().map(|v| v + shift) {
                if blocks.last() != Some(&v) {
                    blocks.push(v);
                }
            }
        }
        terms.push((key, Postings::from_sorted(&blocks)));
    }
    drop(cursors);
    drop(inputs);
    write_run(dir, encode_run(first, end, shape, &times, &terms))
}

/// Writes a run's bytes whole to a temporary file and renames it, not synced: a torn run
/// fails its CRC on open and is built again.
fn write_run(dir: &Path, bytes: Vec<u8>) -> Result<Run> {
    let header = check_run(&bytes).map_err(|e| corrupt(dir, e.to_string()))?;
    let path = dir.join(layout::run_name(header.first, header.end));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).map_err(io_err(&tmp, "write search run"))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename search run"))?;
    let file = File::open(&path).map_err(io_err(&path, "open search run"))?;
    Ok(Run {
        fences: fences(&bytes, &header),
        times: decode_times(&bytes, &header),
        header,
        path,
        file,
        bytes: bytes.len() as u64,
    })
}

fn fences(bytes: &[u8], h: &RunHeader) -> Vec<u64> {
    bytes[h.terms_at()..h.postings_at()]
        .chunks_exact(TERM_BYTES)
        .step_by(FENCE_TERMS as usize)
        .map(|e| decode_term(e).0)
        .collect()
}

/// Reads a whole run and checks it (`check_run`), that it is the run its name says and
/// that it was made in this `shape`.
fn load_run(path: &Path, first: u64, end: u64, shape: Shape) -> Result<Run> {
    let bytes = std::fs::read(path).map_err(io_err(path, "read search run"))?;
    let header = check_run(&bytes).map_err(|e| corrupt(path, e.to_string()))?;
    if (header.first, header.end) != (first, end) {
        return Err(corrupt(path, "header does not match the run's name"));
    }
    if header.shape != shape {
        return Err(corrupt(
            path,
            format!("made with {:?}, not the configured {shape:?}", header.shape),
        ));
    }
    let times = decode_times(&bytes, &header);
    let file = File::open(path).map_err(io_err(path, "open search run"))?;
    Ok(Run {
        fences: fences(&bytes, &header),
        header,
        path: path.to_path_buf(),
        file,
        times,
        bytes: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crowded_windows_rebuild_their_newest_runs_of_similar_size() {
        let runs = |counts: &[u64]| -> Vec<(u64, u64)> {
            let mut at = 0;
            counts
                .iter()
                .map(|&c| {
                    at += c;
                    (at - c, c)
                })
                .collect()
        };
        assert_eq!(rebuild_from(&runs(&[10, 10]), 20, 30), 20, "room left");
        let seven = runs(&[1000, 10, 10, 10, 10, 10, 10]);
        assert_eq!(
            rebuild_from(&seven, 1060, 1070),
            1000,
            "the small ones, not the big"
        );
        let equal = runs(&[10; 7]);
        assert_eq!(rebuild_from(&equal, 70, 80), 0, "all of similar size");
        let growing = runs(&[1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(
            rebuild_from(&growing, 127, 128),
            127,
            "a big run waits for small ones"
        );
        let after = runs(&[1, 2, 4, 8, 16, 32, 64, 1]);
        assert_eq!(rebuild_from(&after, 128, 129), 127);
    }
}
