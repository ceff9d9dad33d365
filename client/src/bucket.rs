//! Verifying a log from its WORM objects alone (`auditlog verify s3://bucket/prefix`): the
//! segments, checkpoints, tiles and metadata the replicator shipped, read through
//! `auditlog-worm`, checked by the same verifier as a data directory; then every object's
//! retention is compared with the policy its classification requires.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::Arc;

use auditlog_formats::batch::check_run;
use auditlog_formats::segment::{self, SegmentHeader, TRAILER_BYTES};
use auditlog_worm::{
    parse_tail_key, parse_tile_bundle_key, parse_tile_key, tail_prefix, tile_bundle_key, tile_key,
    RetentionPolicy, WormTarget,
};

use crate::source::{order_segments, LogSource, ReadAt, SegKind, SegRef};
use crate::verify::{
    fail, verify_source, FileHashes, HashCheck, Pins, Progress, Summary, VerifyError,
};
use auditlog_formats::keyhistory::CheckedHistory;

/// What a sealed segment's footer says about its retention.
struct SealedInfo {
    key: String,
    sealed_at_unix_s: u64,
    max_classification: u8,
}

pub struct BucketSource {
    target: Arc<dyn WormTarget>,
    sealed: RefCell<Vec<SealedInfo>>,
    /// The tail objects after the last sealed segment, per open segment (its first leaf):
    /// `(key, bytes)` in order. They are read as that segment's open file.
    tails: RefCell<BTreeMap<u64, Vec<(String, u64)>>>,
}

fn store_err(place: &str, e: auditlog_worm::WormError) -> VerifyError {
    VerifyError {
        place: place.to_string(),
        what: e.to_string(),
    }
}

impl BucketSource {
    pub fn new(target: Arc<dyn WormTarget>) -> BucketSource {
        BucketSource {
            target,
            sealed: RefCell::new(Vec::new()),
            tails: RefCell::new(BTreeMap::new()),
        }
    }

    fn at(&self, key: &str) -> String {
        let d = self.target.describe();
        if d.ends_with('/') {
            format!("{d}{key}")
        } else {
            format!("{d}/{key}")
        }
    }

    fn must_get(&self, key: &str) -> Result<Vec<u8>, VerifyError> {
        let place = self.at(key);
        match self.target.get(key) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => fail(&place, "object is missing"),
            Err(e) => Err(store_err(&place, e)),
        }
    }
}

impl LogSource for BucketSource {
    fn log_meta(&self) -> Result<(String, Vec<u8>), VerifyError> {
        Ok((self.at("log.json"), self.must_get("log.json")?))
    }

    fn checkpoints(&self) -> Result<(String, Vec<Vec<u8>>), VerifyError> {
        let place = self.at("checkpoints/");
        let list = self
            .target
            .list("checkpoints/")
            .map_err(|e| store_err(&place, e))?;
        let mut out = Vec::with_capacity(list.len());
        for o in list {
            out.push(self.must_get(&o.key)?);
        }
        Ok((place, out))
    }

    fn segments(&self) -> Result<Vec<SegRef>, VerifyError> {
        let place = self.at("segments/");
        let list = self
            .target
            .list("segments/")
            .map_err(|e| store_err(&place, e))?;
        // Sealed segments, then the tails after the last one (FORMATS.md §15.1).
        let mut segs = order_segments(list.into_iter().filter_map(|o| {
            let name = o.key.strip_prefix("segments/")?.to_string();
            name.ends_with(".seg").then_some((name, o.bytes))
        }));
        let sealed_end = segs
            .iter()
            .filter_map(|s| match s.kind {
                SegKind::Sealed(_, end) => Some(end),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        segs.extend(self.tail_segments(sealed_end)?);
        Ok(segs)
    }

    fn place(&self, seg: &SegRef) -> String {
        if seg.name.starts_with("tail/") {
            return self.at(&seg.name);
        }
        self.at(&format!("segments/{}", seg.name))
    }

    fn open_sealed(&self, seg: &SegRef) -> Result<Box<dyn ReadAt + Send>, VerifyError> {
        let key = format!("segments/{}", seg.name);
        // Streamed: ranged GETs through one window, never the whole object at once.
        let object = RangedObject {
            target: self.target.clone(),
            key: key.clone(),
            len: seg.bytes,
            window: RefCell::new((0, Vec::new())),
        };
        if let Some((sealed_at_unix_s, max_classification)) = footer_retention_facts(&object) {
            self.sealed.borrow_mut().push(SealedInfo {
                key,
                sealed_at_unix_s,
                max_classification,
            });
        }
        Ok(Box::new(object))
    }

    fn open_unsealed(&self, seg: &SegRef) -> Result<Box<dyn ReadAt + Send>, VerifyError> {
        let SegKind::Open(first) = seg.kind else {
            return fail(self.place(seg), "not an open segment");
        };
        let Some(objects) = self.tails.borrow().get(&first).cloned() else {
            return fail(self.place(seg), "open segments are shipped only as tails");
        };
        Ok(Box::new(TailRun::new(self.target.clone(), objects)))
    }

    fn hash_levels(&self) -> Result<HashCheck, VerifyError> {
        let place = self.at("tile/");
        let list = self
            .target
            .list("tile/")
            .map_err(|e| store_err(&place, e))?;
        let mut tiles: Vec<Vec<u64>> = vec![Vec::new(); 8];
        let mut bundles: BTreeMap<u64, u64> = BTreeMap::new();
        for o in list {
            if let Some((t, n)) = parse_tile_key(&o.key) {
                if (t as usize) < 8 {
                    tiles[t as usize].push(n);
                }
            } else if let Some((first, count)) = parse_tile_bundle_key(&o.key) {
                bundles.insert(first, count);
            }
        }
        let mut check = HashCheck {
            places: (0..64)
                .map(|l| self.at(&format!("tile/{}", l / 8)))
                .collect(),
            levels: (0..64).map(|_| None).collect(),
            present: vec![0; 64],
            complete: false,
            checked: 0,
        };
        for (t, ns) in tiles.iter_mut().enumerate() {
            ns.sort_unstable();
            // Tiles (and level-0 bundles) are shipped in order: take the run from tile 0,
            // each piece the next tile or a bundle starting there.
            let mut keys = Vec::new();
            let mut next = 0u64;
            let mut singles = ns.iter().peekable();
            loop {
                while singles.next_if(|n| **n < next).is_some() {}
                if singles.next_if(|n| **n == next).is_some() {
                    keys.push(tile_key(t as u8, next));
                    next += 1;
                } else if let Some(count) = bundles.get(&next).filter(|_| t == 0) {
                    keys.push(tile_bundle_key(next, *count));
                    next += count;
                } else {
                    break;
                }
            }
            if next == 0 {
                continue;
            }
            check.present[8 * t] = next * 256;
            check.levels[8 * t] = Some(Box::new(TileReader {
                target: self.target.clone(),
                keys: keys.into(),
                buf: Vec::new(),
                pos: 0,
            }));
        }
        Ok(check)
    }

    fn hashes_place(&self) -> String {
        self.at("tile/")
    }

    fn hash_reader(&self, _alg: auditlog_formats::TreeHash) -> Option<FileHashes> {
        None
    }
}

impl BucketSource {
    /// The tails after the sealed segments, from leaf `from`: one open segment per
    /// `tail/{first}/` folder, each continuing where the one before ended. Every tail
    /// object is checked here (whole batches, contiguous, starting where its key says), so
    /// a damaged one is named; a tail is never torn (an upload is all or nothing).
    fn tail_segments(&self, from: u64) -> Result<Vec<SegRef>, VerifyError> {
        let mut out = Vec::new();
        let mut first = from;
        loop {
            let prefix = tail_prefix(first);
            let place = self.at(&prefix);
            let list = self
                .target
                .list(&prefix)
                .map_err(|e| store_err(&place, e))?;
            if list.is_empty() {
                return Ok(out);
            }
            let mut end = first;
            let mut objects = Vec::with_capacity(list.len());
            for o in list {
                let here = self.at(&o.key);
                match parse_tail_key(&o.key) {
                    Some((seg, at)) if seg == first && at == end => {}
                    _ => {
                        return fail(
                            &here,
                            format!(
                            "tail object out of place: the tails of this segment reach index {end}"
                        ),
                        )
                    }
                }
                let bytes = self.must_get(&o.key)?;
                end = check_run(&bytes, end)
                    .map_err(|e| VerifyError {
                        place: format!("{here} at byte {}", e.offset),
                        what: format!("tail object: {}", e.what),
                    })?
                    .0;
                objects.push((o.key, bytes.len() as u64));
            }
            out.push(SegRef {
                kind: SegKind::Open(first),
                name: prefix,
                bytes: objects.iter().map(|o| o.1).sum(),
            });
            self.tails.borrow_mut().insert(first, objects);
            first = end;
        }
    }
}

/// The tail objects of one open segment read back to back as its file, one object held
/// at a time.
struct TailRun {
    target: Arc<dyn WormTarget>,
    /// (key, offset in the run, bytes).
    objects: Vec<(String, u64, u64)>,
    len: u64,
    held: RefCell<Option<(usize, Vec<u8>)>>,
}

impl TailRun {
    fn new(target: Arc<dyn WormTarget>, keys: Vec<(String, u64)>) -> TailRun {
        let mut at = 0;
        let objects = keys
            .into_iter()
            .map(|(k, n)| {
                let o = (k, at, n);
                at += n;
                o
            })
            .collect();
        TailRun {
            target,
            objects,
            len: at,
            held: RefCell::new(None),
        }
    }
}

impl ReadAt for TailRun {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let eof = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(eof)?;
        let mut at = offset;
        while at < end {
            let i = self.objects.partition_point(|o| o.1 + o.2 <= at);
            let (key, start, n) = self.objects.get(i).ok_or_else(eof)?;
            let mut held = self.held.borrow_mut();
            if held.as_ref().is_none_or(|h| h.0 != i) {
                let bytes = self
                    .target
                    .get(key)
                    .map_err(std::io::Error::other)?
                    .ok_or_else(|| std::io::Error::other(format!("{key} is missing")))?;
                if bytes.len() as u64 != *n {
                    return Err(std::io::Error::other(format!("{key} changed size")));
                }
                *held = Some((i, bytes));
            }
            let obj = &held.as_ref().ok_or_else(eof)?.1;
            let from = (at - start) as usize;
            let take = ((end - at) as usize).min(obj.len() - from);
            let dst = (at - offset) as usize;
            buf[dst..dst + take].copy_from_slice(&obj[from..from + take]);
            at += take as u64;
        }
        Ok(())
    }
}

/// How much of a segment object one ranged GET fetches: the most of it held at once.
pub const SEGMENT_WINDOW_BYTES: u64 = 4 << 20;

/// A segment object read through ranged GETs and one read-ahead window of
/// `SEGMENT_WINDOW_BYTES` (more only for a single larger read), so a verifier holds at most
/// that much of it however large the segment. `len` is the size the listing gave: an object
/// that changed since reads short, and fails.
struct RangedObject {
    target: Arc<dyn WormTarget>,
    key: String,
    len: u64,
    /// The bytes held: their offset in the object, and the bytes.
    window: RefCell<(u64, Vec<u8>)>,
}

impl ReadAt for RangedObject {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let want = buf.len() as u64;
        let end = offset
            .checked_add(want)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        if want == 0 {
            return Ok(());
        }
        let mut w = self.window.borrow_mut();
        let held = offset >= w.0 && end <= w.0 + w.1.len() as u64;
        if !held {
            let fetch = want.max(SEGMENT_WINDOW_BYTES).min(self.len - offset);
            let bytes = self
                .target
                .get_range(&self.key, offset, fetch)
                .map_err(std::io::Error::other)?
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "object is missing")
                })?;
            *w = (offset, bytes);
        }
        let start = (offset - w.0) as usize;
        buf.copy_from_slice(&w.1[start..start + buf.len()]);
        Ok(())
    }
}

/// (sealed_at seconds, max classification) from a sealed segment's footer; `None` if the
/// bytes do not parse (the verifier reports why).
fn footer_retention_facts(f: &dyn ReadAt) -> Option<(u64, u8)> {
    let len = f.len();
    let mut head = [0u8; segment::HEADER_BYTES];
    f.read_exact_at(&mut head, 0).ok()?;
    let header = SegmentHeader::decode(&head).ok()?;
    let mut tail = [0u8; TRAILER_BYTES];
    f.read_exact_at(&mut tail, len.checked_sub(TRAILER_BYTES as u64)?)
        .ok()?;
    let trailer = segment::decode_trailer(len, &tail).ok()?;
    // The footer's length comes from the object: bounded like the verifier bounds it.
    if trailer.footer_bytes as usize > segment::FOOTER_BYTES_MAX {
        return None;
    }
    let mut fb = vec![0u8; trailer.footer_bytes as usize];
    f.read_exact_at(&mut fb, trailer.footer_offset).ok()?;
    let footer = segment::decode_footer(&header, &trailer, &fb).ok()?;
    Some((
        footer.sealed_at_unix_ns / 1_000_000_000,
        footer.max_classification,
    ))
}

/// Streams a tile level's hashes, fetching one object (a tile, or a bundle of level-0
/// tiles) at a time.
struct TileReader {
    target: Arc<dyn WormTarget>,
    keys: VecDeque<String>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for TileReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let Some(key) = self.keys.pop_front() else {
                return Ok(0);
            };
            self.buf = self
                .target
                .get(&key)
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other(format!("{key} is missing")))?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What verifying a bucket found about retention.
#[derive(Debug, Default)]
pub struct RetentionReport {
    pub objects_checked: usize,
    /// One line per object whose retention is missing, unlocked or shorter than policy.
    pub short: Vec<String>,
}

/// Verifies the log in a bucket, then checks every object's retention against `policy`.
pub fn verify_bucket(
    target: Arc<dyn WormTarget>,
    history: &CheckedHistory,
    policy: &RetentionPolicy,
    progress: Progress<'_>,
) -> Result<(Summary, RetentionReport), VerifyError> {
    let threads = crate::verify::default_threads();
    verify_bucket_pinned(target, history, &Pins::default(), threads, policy, progress)
}

/// `verify_bucket` under `pins` as well, reading segments on `threads` threads.
pub fn verify_bucket_pinned(
    target: Arc<dyn WormTarget>,
    history: &CheckedHistory,
    pins: &Pins,
    threads: std::num::NonZeroUsize,
    policy: &RetentionPolicy,
    progress: Progress<'_>,
) -> Result<(Summary, RetentionReport), VerifyError> {
    let src = BucketSource::new(target.clone());
    let summary = verify_source(&src, history, pins, threads, progress)?;
    let mut report = RetentionReport::default();
    for s in src.sealed.borrow().iter() {
        let want = policy.retain_until(s.sealed_at_unix_s, s.max_classification);
        check_one(&src, &s.key, Some(want), &mut report)?;
    }
    // Tails read as the open end of the log: locked for their own (short) retention.
    let tails: Vec<String> = src
        .tails
        .borrow()
        .values()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    for key in tails {
        check_one(&src, &key, None, &mut report)?;
    }
    let place = src.at("");
    let others = target.list("").map_err(|e| store_err(&place, e))?;
    for o in others {
        let immutable = o.key == "log.json"
            || ["keys/", "checkpoints/", "tile/"]
                .iter()
                .any(|p| o.key.starts_with(p));
        if immutable {
            check_one(&src, &o.key, None, &mut report)?;
        }
    }
    Ok((summary, report))
}

fn check_one(
    src: &BucketSource,
    key: &str,
    want: Option<u64>,
    report: &mut RetentionReport,
) -> Result<(), VerifyError> {
    let place = src.at(key);
    let r = src
        .target
        .retention(key)
        .map_err(|e| store_err(&place, e))?;
    report.objects_checked += 1;
    let Some(r) = r else {
        report.short.push(format!("{place}: no retention"));
        return Ok(());
    };
    if !r.is_locked() {
        report.short.push(format!(
            "{place}: retention mode {:?} is not locked",
            r.mode
        ));
    }
    if let Some(want) = want {
        if r.retain_until_unix_s < want {
            report.short.push(format!(
                "{place}: retained until {}, policy requires {}",
                auditlog_worm::time::rfc3339(r.retain_until_unix_s),
                auditlog_worm::time::rfc3339(want)
            ));
        }
    }
    Ok(())
}
