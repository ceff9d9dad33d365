//! The leaf-hash index: the index of a leaf from its hash, for inclusion proofs asked for by
//! leaf hash (DESIGN.md "Reading and proving"). Derived state like the hash store: built by
//! the checkpointer from the level-0 hashes before it publishes a checkpoint, so every size a
//! proof may be asked at is covered; never synced, checked on open, rebuilt when it is not
//! whole.
//!
//! Layout (`leafindex/{first:020}-{end:020}.run`, bytes in `auditlog_formats::leafindex` and
//! FORMATS.md §5.6): immutable sorted runs, each covering the leaves `[first, end)` exactly
//! once, entries (the leaf hash's first 4 bytes as a key, the leaf index) sorted and
//! delta-coded, ~5 bytes each. The newest
//! `MERGE_RUNS` runs are merged into one while the oldest of them is at most twice the
//! others together (size-tiered, as in an LSM tree), up to `RUN_ENTRIES_MERGED_MAX`, so a
//! lookup reads one block of 256 entries (~1.3 KiB) in each of a few runs, found through the
//! run's directory (the key and offset of every block) held in memory.
//!
//! Keys are 4 bytes, not 32: a key match is a candidate whose full leaf hash is then read
//! from the hash store, so a collision (about one lookup in 256 per run of 2^24 leaves)
//! costs one extra read and never a wrong answer. Runs of the first format (`AUDLIDX1`,
//! 16-byte entries) fail the magic check on open and are rebuilt in this one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use auditlog_formats::layout;
use auditlog_formats::leafindex::{
    decode_block, key_of, BlockRef, RunDecoder, RunEncoder, RunHeader, ENTRY_BYTES_MAX,
    RUN_ENTRIES_MAX, RUN_HEADER_BYTES,
};
use auditlog_formats::tree::{HashReader, NodeId};
use auditlog_formats::Hash;

use crate::error::{corrupt, io_err, Result};
use crate::hashstore::HashFiles;

/// Leaves read from the hash store and sorted at once when building a run (32 MiB of hashes).
const RUN_ENTRIES_NEW_MAX: u64 = 1 << 20;
/// Runs stop merging at this size (~80 MiB), bounding the cost of one merge; it is also the
/// most one run can hold.
const RUN_ENTRIES_MERGED_MAX: u64 = RUN_ENTRIES_MAX;
/// Runs merged at once. Merging two at a time (the older while at most twice the newer)
/// wrote each entry 5.4 times by 24 M leaves at a run a second of ~550 k leaves; four at a
/// time 3.8 times, with about as many runs for a lookup to probe (simulated; a run a
/// second of 20 k leaves: 9.9 against 7.4). Those writes, their reads and the discards of
/// the runs they replace compete with the sequencer's syncs.
const MERGE_RUNS: usize = 4;
/// The unindexed tail scanned by a lookup is read this many hashes at a time.
const SCAN_HASHES_STEP: u64 = 8192;

struct Run {
    first: u64,
    end: u64,
    path: PathBuf,
    file: File,
    /// Per block: the key of its first entry and where it starts.
    directory: Vec<BlockRef>,
    /// Where the directory starts: the end of the last block.
    directory_at: u64,
}

impl Run {
    fn count(&self) -> u64 {
        self.end - self.first
    }
}

pub(crate) struct LeafIndex {
    dir: PathBuf,
    /// Runs in leaf order, contiguous from 0.
    runs: RwLock<Vec<Arc<Run>>>,
}

impl LeafIndex {
    /// Opens the runs that are whole and cover a prefix of a tree of `tree_size`; anything
    /// else (a torn or altered run, a gap, a run past the tree) is deleted and rebuilt later.
    pub(crate) fn open(dir: &Path, tree_size: u64) -> Result<LeafIndex> {
        let runs = crate::runs::open_chain(dir, "leaf index", |_, end| end <= tree_size, load_run)?;
        Ok(LeafIndex {
            dir: dir.to_path_buf(),
            runs: RwLock::new(runs),
        })
    }

    /// Leaves covered: `[0, indexed_size)`.
    pub(crate) fn indexed_size(&self) -> u64 {
        self.runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map_or(0, |r| r.end)
    }

    /// Indexes the leaves up to `size` (whose hashes are in the hash store) in new runs.
    pub(crate) fn extend(&self, hashes: &HashFiles, size: u64) -> Result<()> {
        let level0 = match hashes.level_file(0) {
            Some(f) => f,
            None => return Ok(()),
        };
        let mut first = self.indexed_size();
        while first < size {
            let end = size.min(first + RUN_ENTRIES_NEW_MAX);
            let mut bytes = vec![0u8; ((end - first) * 32) as usize];
            crate::yielding::read_exact_at(&level0, &mut bytes, first * 32)
                .map_err(io_err(&self.dir, "read leaf hashes"))?;
            let mut pace = crate::yielding::Every::new(1024);
            let entries: Vec<(u32, u64)> = bytes
                .chunks_exact(32)
                .zip(first..end)
                .map(|(h, i)| {
                    pace.tick();
                    (key_of(h), i)
                })
                .collect();
            let entries = sort_entries(entries);
            let run = write_run(&self.dir, first, end, entries.into_iter().map(Ok))?;
            self.runs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::new(run));
            first = end;
        }
        Ok(())
    }

    /// Merges the newest runs while they are of similar size. Lookups keep using the old
    /// runs until the merged one replaces them.
    pub(crate) fn compact(&self) -> Result<()> {
        loop {
            let group: Vec<Arc<Run>> = {
                let runs = self.runs.read().unwrap_or_else(|e| e.into_inner());
                match merge_group(&runs.iter().map(|r| r.count()).collect::<Vec<_>>()) {
                    Some(from) => runs[from..].to_vec(),
                    None => return Ok(()),
                }
            };
            let (first, end) = (group[0].first, group[group.len() - 1].end);
            let merged = write_run(&self.dir, first, end, merge(&group)?)?;
            {
                let mut runs = self.runs.write().unwrap_or_else(|e| e.into_inner());
                let from = runs.len().checked_sub(group.len());
                assert!(
                    from.is_some_and(|f| runs[f].first == first && runs[runs.len() - 1].end == end),
                    "leaf index runs changed during a merge"
                );
                runs.truncate(from.unwrap_or(0));
                runs.push(Arc::new(merged));
            }
            for run in group {
                retire(run)?;
            }
        }
    }

    /// The first index below `size` whose leaf hash is `leaf`, if any. Leaves past the
    /// indexed size (only when indexing failed) are scanned from the hash store.
    pub(crate) fn find(&self, hashes: &HashFiles, leaf: &Hash, size: u64) -> Result<Option<u64>> {
        let key = key_of(leaf);
        let runs: Vec<Arc<Run>> = self.runs.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut scanned_from = 0;
        for run in &runs {
            if run.first >= size {
                break;
            }
            for index in run_candidates(run, key)? {
                if index < size && hashes.read_hashes(&[NodeId::new(0, index)])?[0] == *leaf {
                    // Runs are in leaf order and a run's candidates come sorted: the first
                    // match is the first occurrence.
                    return Ok(Some(index));
                }
            }
            scanned_from = run.end;
        }
        scan_tail(hashes, leaf, scanned_from, size)
    }
}

/// Where the newest `MERGE_RUNS` runs start, given every run's entry count in leaf order,
/// if they are to be merged: the oldest of them at most twice the others together (so a
/// big run waits for the small ones to grow), and the result within
/// `RUN_ENTRIES_MERGED_MAX`.
fn merge_group(counts: &[u64]) -> Option<usize> {
    let from = counts.len().checked_sub(MERGE_RUNS)?;
    let (oldest, rest) = (counts[from], counts[from + 1..].iter().sum::<u64>());
    (oldest <= 2 * rest && oldest + rest <= RUN_ENTRIES_MERGED_MAX).then_some(from)
}

/// Removes a run replaced by a merge. Runs reach 256 MiB, and freeing one at once (with
/// online discard) stalled the disk under the sequencer's syncs, so a run no lookup holds
/// any more is cut from the end in steps first; one still read is just unlinked (its
/// reader keeps the bytes until it lets go).
fn retire(run: Arc<Run>) -> Result<()> {
    match Arc::try_unwrap(run) {
        Ok(run) => crate::io::remove_gently(&run.path, &run.file)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(io_err(&run.path, "remove")),
        Err(shared) => crate::runs::remove(&shared.path),
    }
}

/// Candidate indexes (key matches) in `run`, ascending.
fn run_candidates(run: &Run, key: u32) -> Result<Vec<u64>> {
    let dir = &run.directory;
    // The first block that may hold `key`: the one before the first fence >= key.
    let mut block = dir.partition_point(|b| b.fence < key).saturating_sub(1);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while block < dir.len() {
        let start = u64::from(dir[block].start);
        let stop = dir
            .get(block + 1)
            .map_or(run.directory_at, |b| u64::from(b.start));
        buf.resize((stop - start) as usize, 0);
        run.file
            .read_exact_at(&mut buf, start)
            .map_err(io_err(&run.path, "read leaf index block"))?;
        let mut past = false;
        // Checked after reading, like every stored value: a block decodes whole, in order,
        // within its run's range.
        for entry in decode_block(&buf, run.first, run.end) {
            let (k, index) = entry.map_err(|e| {
                corrupt(
                    &run.path,
                    format!("block {block}: {e} (changed since it was loaded)"),
                )
            })?;
            if k == key {
                out.push(index);
            } else if k > key {
                past = true;
                break;
            }
        }
        if past {
            break;
        }
        block += 1;
    }
    Ok(out)
}

fn scan_tail(hashes: &HashFiles, leaf: &Hash, from: u64, size: u64) -> Result<Option<u64>> {
    let mut start = from;
    while start < size {
        let end = size.min(start + SCAN_HASHES_STEP);
        let level0 = hashes
            .level_file(0)
            .ok_or_else(|| corrupt(PathBuf::from("hashes/level-00.bin"), "missing level 0"))?;
        let mut bytes = vec![0u8; ((end - start) * 32) as usize];
        level0
            .read_exact_at(&mut bytes, start * 32)
            .map_err(io_err("hashes/level-00.bin", "read leaf hashes"))?;
        if let Some(pos) = bytes.chunks_exact(32).position(|h| h == leaf) {
            return Ok(Some(start + pos as u64));
        }
        start = end;
    }
    Ok(None)
}

/// Sorts entries as `sort_unstable` does, in pieces the checkpointer can give the CPU away
/// between (`yielding`): one `sort_unstable` of a 2^20-entry run held it for tens of
/// milliseconds. The entries go to 256 buckets by the key's top byte, and each bucket is
/// sorted on its own; keys are hash prefixes, so the buckets are even (an uneven one is
/// only slower).
fn sort_entries(entries: Vec<(u32, u64)>) -> Vec<(u32, u64)> {
    let bucket = |key: u32| (key >> 24) as usize;
    let mut starts = [0usize; 257];
    for &(key, _) in &entries {
        starts[bucket(key) + 1] += 1;
    }
    for b in 0..256 {
        starts[b + 1] += starts[b];
    }
    let mut next = starts;
    let mut out = vec![(0u32, 0u64); entries.len()];
    let mut pace = crate::yielding::Every::new(4096);
    for e in entries {
        let b = bucket(e.0);
        out[next[b]] = e;
        next[b] += 1;
        pace.tick();
    }
    for b in 0..256 {
        out[starts[b]..starts[b + 1]].sort_unstable();
        crate::yielding::point();
    }
    out
}

/// Writes a run from sorted entries (temp file, then rename): not synced, since a torn run
/// fails its CRC on open and is rebuilt.
fn write_run(
    dir: &Path,
    first: u64,
    end: u64,
    entries: impl Iterator<Item = Result<(u32, u64)>>,
) -> Result<Run> {
    let path = dir.join(layout::run_name(first, end));
    let tmp = path.with_extension("tmp");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp, "create leaf index run"))?;
    // Written back in steps as it grows: merged runs reach tens of MiB, and the kernel's own
    // writeback of that much at once queued ahead of the sequencer's syncs.
    let mut w = crate::io::WriteBehind::new(&file);
    w.write_all(&[0u8; RUN_HEADER_BYTES])
        .map_err(io_err(&tmp, "write"))?;
    let mut enc = RunEncoder::new(first, end);
    let mut pace = crate::yielding::Every::new(256);
    let mut bytes = Vec::with_capacity(64 << 10);
    for entry in entries {
        pace.tick();
        let (key, index) = entry?;
        enc.entry(key, index, &mut bytes);
        if bytes.len() >= 60 << 10 {
            w.write_all(&bytes).map_err(io_err(&tmp, "write"))?;
            bytes.clear();
        }
    }
    // Asserts that the run holds each leaf of its range once.
    let directory_at = RUN_HEADER_BYTES as u64 + enc.bytes_written();
    let (dir_bytes, header, directory) = enc.finish();
    bytes.extend_from_slice(&dir_bytes);
    w.write_all(&bytes).map_err(io_err(&tmp, "write"))?;
    w.flush().map_err(io_err(&tmp, "write"))?;
    drop(w);
    file.write_all_at(&header, 0)
        .map_err(io_err(&tmp, "write header"))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path, "rename leaf index run"))?;
    Ok(Run {
        first,
        end,
        path,
        file,
        directory,
        directory_at,
    })
}

/// A run's entries read from its file in order and checked as they come: the header against
/// the run's name, each entry's form, order and range, and at the end the directory, the
/// length and the CRC. Reads at its own offset, not through the file's shared cursor.
struct RunStream<'a> {
    path: &'a Path,
    file: &'a File,
    dec: Option<RunDecoder>,
    buf: Vec<u8>,
    /// `buf[pos..]` is unread; the file is read up to `file_at`.
    pos: usize,
    file_at: u64,
    file_len: u64,
    directory: Option<(Vec<BlockRef>, u64)>,
}

impl<'a> RunStream<'a> {
    fn open(path: &'a Path, file: &'a File, first: u64, end: u64) -> Result<RunStream<'a>> {
        let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let mut h = [0u8; RUN_HEADER_BYTES];
        if file_len < h.len() as u64 {
            return Err(corrupt(path, format!("{file_len} bytes: no run header")));
        }
        file.read_exact_at(&mut h, 0)
            .map_err(io_err(path, "read run header"))?;
        let header = RunHeader::decode(&h).map_err(|e| corrupt(path, e.to_string()))?;
        if (header.first, header.end) != (first, end) {
            return Err(corrupt(path, "header does not match the run"));
        }
        Ok(RunStream {
            path,
            file,
            dec: Some(RunDecoder::new(header)),
            buf: Vec::new(),
            pos: 0,
            file_at: RUN_HEADER_BYTES as u64,
            file_len,
            directory: None,
        })
    }

    /// Keeps at least `want` unread bytes in the buffer, or all the file has left.
    fn fill(&mut self, want: usize) -> Result<()> {
        if self.buf.len() - self.pos >= want || self.file_at == self.file_len {
            return Ok(());
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let have = self.buf.len();
        let more = (self.file_len - self.file_at).min(crate::yielding::PIECE_BYTES as u64);
        self.buf.resize(have + more as usize, 0);
        self.file
            .read_exact_at(&mut self.buf[have..], self.file_at)
            .map_err(io_err(self.path, "read run"))?;
        self.file_at += more;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<(u32, u64)>> {
        let Some(dec) = self.dec.as_mut() else {
            return Ok(None);
        };
        if !dec.done() {
            self.fill(ENTRY_BYTES_MAX)?;
            let dec = self.dec.as_mut().expect("checked above");
            let (entry, used) = dec
                .entry(&self.buf[self.pos..])
                .map_err(|e| corrupt(self.path, e.to_string()))?;
            self.pos += used;
            return Ok(Some(entry));
        }
        // The rest of the file is the directory.
        let directory_at = dec.directory_at();
        let rest = self.file_len.saturating_sub(directory_at);
        let want = usize::try_from(rest).map_err(|_| corrupt(self.path, "too long"))?;
        self.fill(want)?;
        let dec = self.dec.take().expect("checked above");
        let directory = dec
            .finish(&self.buf[self.pos..])
            .map_err(|e| corrupt(self.path, e.to_string()))?;
        self.directory = Some((directory, directory_at));
        Ok(None)
    }
}

/// Reads a whole run and checks header, length, entries, directory and CRC.
fn load_run(path: &Path, first: u64, end: u64) -> Result<Run> {
    // Writable, though never written: a merge retires the run by cutting it from the end
    // (`io::remove_gently`), which a read-only descriptor refuses (EINVAL).
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path, "open leaf index run"))?;
    let mut stream = RunStream::open(path, &file, first, end)?;
    while stream.next()?.is_some() {}
    let (directory, directory_at) = stream.directory.take().expect("read to the end");
    Ok(Run {
        first,
        end,
        path: path.to_path_buf(),
        file,
        directory,
        directory_at,
    })
}

/// The entries of a few runs, merged in order, streamed. Entries are unique across runs (each
/// leaf index is in exactly one), so the order is total.
///
/// A run was checked when it was loaded, but its bytes are read again here: each source is
/// checked again as it streams (form, order, range, and at its end the directory and the
/// header's CRC), so a byte changed on disk since is reported as corruption instead of
/// being carried into the merged run under a fresh CRC, or tripping `write_run`'s order
/// assertion.
fn merge(runs: &[Arc<Run>]) -> Result<impl Iterator<Item = Result<(u32, u64)>> + '_> {
    let mut sources = Vec::with_capacity(runs.len());
    let mut heads = Vec::with_capacity(runs.len());
    for run in runs {
        let mut src = RunStream::open(&run.path, &run.file, run.first, run.end)?;
        heads.push(src.next()?);
        sources.push(src);
    }
    Ok(std::iter::from_fn(move || {
        // A linear scan for the smallest head: there are `MERGE_RUNS` of them.
        let (at, out) = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|h| (i, h)))
            .min_by_key(|&(_, h)| h)?;
        match sources[at].next() {
            Ok(next) => {
                heads[at] = next;
                Some(Ok(out))
            }
            Err(e) => {
                heads[at] = None;
                Some(Err(e))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merging four runs streams exactly the sorted union of their entries, and the result
    /// loads back as a valid run (entries, directory, CRC).
    #[test]
    fn four_runs_merge_into_their_sorted_union() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let bounds = [0u64, 1000, 1001, 1700, 5000];
        let mut runs = Vec::new();
        let mut all = Vec::new();
        for w in bounds.windows(2) {
            // Small keys so that runs share keys (ties are broken by the leaf index).
            let entries = sort_entries((w[0]..w[1]).map(|i| ((next() % 500) as u32, i)).collect());
            all.extend_from_slice(&entries);
            let run = write_run(dir.path(), w[0], w[1], entries.into_iter().map(Ok)).expect("run");
            runs.push(Arc::new(run));
        }
        all.sort_unstable();
        let merged: Vec<(u32, u64)> = merge(&runs)
            .expect("merge")
            .collect::<Result<_>>()
            .expect("entries");
        assert_eq!(merged, all);
        let out = write_run(dir.path(), 0, 5000, merged.into_iter().map(Ok)).expect("write");
        let back = load_run(&out.path, 0, 5000).expect("a valid run");
        assert_eq!(
            (back.directory.clone(), back.directory_at),
            (out.directory.clone(), out.directory_at)
        );
        // Every key is found where it is, through the directory, block by block.
        for (key, index) in all.iter().step_by(97) {
            assert!(run_candidates(&back, *key).expect("lookup").contains(index));
        }
    }

    /// Bytes of the LEB128 form of `v`.
    fn leb_len(v: u32) -> u64 {
        (1..=5)
            .find(|n| u64::from(v) < 1u64 << (7 * n))
            .expect("u32")
    }

    /// A byte changed on disk after a run was loaded is reported by the merge as corruption
    /// of that run: one that breaks the order (which `write_run` would otherwise assert
    /// on) and one that keeps it (a duplicated leaf index, caught by the CRC); and by a
    /// lookup that reads the changed block.
    #[test]
    fn a_run_damaged_after_loading_fails_the_merge_not_the_process() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tmp");
        let bounds = [0u64, 300, 600, 900, 1200];
        type Built = (Vec<Arc<Run>>, Vec<Vec<(u32, u64)>>);
        let build = |tag: &str| -> Built {
            let sub = dir.path().join(tag);
            std::fs::create_dir_all(&sub).expect("dir");
            let mut keys = Vec::new();
            let runs = bounds
                .windows(2)
                .map(|w| {
                    let entries = sort_entries(
                        (w[0]..w[1])
                            .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32, i))
                            .collect(),
                    );
                    keys.push(entries.clone());
                    Arc::new(write_run(&sub, w[0], w[1], entries.into_iter().map(Ok)).expect("run"))
                })
                .collect();
            (runs, keys)
        };

        // Out of range: the second entry's offset becomes 2^24 - 1.
        let (runs, keys) = build("order");
        let e = &keys[2];
        let at = RUN_HEADER_BYTES as u64 + leb_len(e[0].0) + 3 + leb_len(e[1].0 - e[0].0);
        runs[2].file.write_all_at(&[0xff; 3], at).expect("damage");
        let err = merge(&runs)
            .expect("merge")
            .collect::<Result<Vec<_>>>()
            .unwrap_err();
        assert!(err.to_string().contains("out of order or range"), "{err}");
        assert!(
            err.to_string().contains("00000000000000000600"),
            "names the run: {err}"
        );
        let err = run_candidates(&runs[2], e[1].0).unwrap_err();
        assert!(err.to_string().contains("block 0"), "{err}");

        // Still in order, but wrong: the last entry (the largest key) takes its run's first
        // index, so that leaf is in the run twice and another of its leaves is missing.
        let (runs, _) = build("crc");
        runs[1]
            .file
            .write_all_at(&[0; 3], runs[1].directory_at - 3)
            .expect("damage");
        let err = write_run(dir.path(), 0, 1200, merge(&runs).expect("merge"))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("CRC"), "{err}");
    }

    /// Runs loaded from disk (a restart) are merged and retired like runs this process
    /// wrote: retiring cuts a run from the end first, which a read-only descriptor refused
    /// (EINVAL), so the merge failed and the old runs stayed on disk.
    #[test]
    fn runs_loaded_on_open_are_merged_and_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let per_run = 300_000u64; // ~1.5 MiB a run: past `remove_gently`'s first step
        for r in 0..MERGE_RUNS as u64 {
            let (first, end) = (r * per_run, (r + 1) * per_run);
            let entries = sort_entries(
                (first..end)
                    .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32, i))
                    .collect(),
            );
            write_run(dir.path(), first, end, entries.into_iter().map(Ok)).expect("run");
        }
        let size = MERGE_RUNS as u64 * per_run;
        let index = LeafIndex::open(dir.path(), size).expect("open");
        index.compact().expect("merge runs loaded from disk");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from(layout::run_name(0, size))]);
    }

    /// Which runs are merged: the newest four, when the oldest of them is at most twice the
    /// other three together and the sum stays within the cap.
    #[test]
    fn merge_group_picks_the_newest_four_of_similar_size() {
        assert_eq!(merge_group(&[]), None);
        assert_eq!(merge_group(&[5, 5, 5]), None, "fewer than four");
        assert_eq!(merge_group(&[5, 5, 5, 5]), Some(0));
        assert_eq!(merge_group(&[99, 5, 5, 5, 5]), Some(1));
        assert_eq!(merge_group(&[30, 5, 5, 5]), Some(0), "30 <= 2 * 15");
        assert_eq!(merge_group(&[31, 5, 5, 5]), None, "a big run waits");
        let cap = RUN_ENTRIES_MERGED_MAX;
        assert_eq!(
            merge_group(&[cap - 3, 1, 1, 1]),
            None,
            "over twice the rest"
        );
        assert_eq!(
            merge_group(&[cap / 2, cap / 4, cap / 4, 1]),
            None,
            "over the cap"
        );
        assert_eq!(merge_group(&[cap / 4, cap / 4, cap / 4, cap / 4]), Some(0));
    }

    /// The bucketed sort orders exactly as `sort_unstable`: random keys, keys that all share
    /// one top byte (one bucket takes everything), equal keys, and nothing.
    #[test]
    fn sort_entries_matches_sort_unstable() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let random: Vec<(u32, u64)> = (0..100_000u64).map(|i| (next() as u32, i)).collect();
        let one_bucket: Vec<(u32, u64)> = (0..5_000u64)
            .map(|i| ((0xab << 24) | (next() as u32 >> 8), i))
            .collect();
        let equal_keys: Vec<(u32, u64)> = (0..1_000u64).map(|i| (7, 1_000 - i)).collect();
        for entries in [random, one_bucket, equal_keys, Vec::new()] {
            let mut want = entries.clone();
            want.sort_unstable();
            assert_eq!(sort_entries(entries), want);
        }
    }
}
