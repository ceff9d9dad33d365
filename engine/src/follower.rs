//! A read replica's one writing thread: it follows the log in the bucket (sealed segments,
//! tails, the newest checkpoint) into its own data directory and derived state, so the
//! replica serves reads, ranges and proofs for everything up to the newest checkpoint it
//! has verified, without touching the writer.
//!
//! The local files mirror the writer's: a sealed segment object is written byte for byte
//! under its own name, and the tails of an open segment are appended, batch for batch, to
//! a local `{first}.open` file — so segment boundaries are the writer's, and a standby that
//! takes over continues the same open segment and the same tail keys. Everything is checked
//! before it is adopted: a tail must be whole batches continuing the log (FORMATS.md
//! §15.1), a sealed segment its digest, header and a root equal to the tree the replica
//! already holds, a checkpoint its signatures under the key history and its root. Anything
//! that fails is refused, named, and following stops (`ReplicaStatus::alarm`): the replica
//! keeps serving what it verified.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlog_formats::batch::check_run;
use auditlog_formats::layout;
use auditlog_formats::tree::{self, RightEdge};
use auditlog_worm::{parse_tail_key, tail_prefix, TargetOptions, WormTarget};
use serde::Deserialize;

use crate::checkpoints::{CheckpointLog, SignedCheckpoint};
use crate::error::{corrupt, io_err, EngineError, Result};
use crate::hashstore::PendingNodes;
use crate::head::TreeHead;
use crate::segments::BatchLoc;
use crate::sequencer::OpenSegment;
use crate::Shared;

/// `[replica]`: the bucket a read replica follows.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaConfig {
    /// `s3://bucket/prefix`, `azure://…`, `gs://…` or `file://…`: the writer's
    /// replication target.
    pub source: String,
    pub options: TargetOptions,
    /// How often to look for new tails, segments and checkpoints.
    pub poll_interval_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            source: String::new(),
            options: TargetOptions::default(),
            poll_interval_ms: 200,
        }
    }
}

/// What the follower says about itself (`Engine::status().replica`).
#[derive(Clone, Debug, Default)]
pub struct ReplicaStatus {
    pub source: String,
    /// Leaves `[0, followed)` are local and checked.
    pub followed: u64,
    /// The newest checkpoint verified and published here.
    pub checkpoint_size: u64,
    pub tails_applied: u64,
    pub segments_adopted: u64,
    /// The last attempt's error (the store did not answer), until one works.
    pub last_error: Option<String>,
    /// An object that failed its checks, named: following stopped.
    pub alarm: Option<String>,
    /// Milliseconds since the follower last found the bucket with nothing new.
    pub caught_up_age_ms: u64,
    /// Who holds the writer's lease, as the bucket's `lease` object says (`holder`, and
    /// where it takes writes if it said): named in the answer to a write.
    pub writer: Option<String>,
}

#[derive(Default)]
pub(crate) struct ReplicaMonitor {
    status: Mutex<ReplicaStatus>,
    caught_up_at: Mutex<Option<Instant>>,
}

impl ReplicaMonitor {
    pub fn snapshot(&self) -> ReplicaStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.caught_up_age_ms = self
            .caught_up_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(u64::MAX, |t| t.elapsed().as_millis() as u64);
        s
    }

    fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The source target, opened.
pub(crate) fn open_source(cfg: &ReplicaConfig) -> Result<Box<dyn WormTarget>> {
    auditlog_worm::open(&cfg.source, &cfg.options)
        .map_err(|e| EngineError::Config(format!("replica source {}: {e}", cfg.source)))
}

/// Where `key` is on `source`, for messages.
fn place(source: &dyn WormTarget, key: &str) -> String {
    format!("{}/{key}", source.describe().trim_end_matches('/'))
}

/// The `map_err` of a request about `key`: the store did not answer (retried later).
fn unavailable(
    source: &dyn WormTarget,
    key: &str,
) -> impl FnOnce(auditlog_worm::WormError) -> EngineError {
    let place = place(source, key);
    move |e| EngineError::StoreUnavailable {
        place,
        reason: e.to_string(),
    }
}

/// A new replica's data directory: `log.json` and the newest key history from the bucket
/// (a directory that has them already is left alone).
pub(crate) fn bootstrap(data_dir: &std::path::Path, source: &dyn WormTarget) -> Result<()> {
    crate::private::ensure_private_dir(data_dir)?;
    set_aside_a_former_writer(data_dir)?;
    let meta = data_dir.join(layout::LOG_META_FILE);
    if !meta.exists() {
        let bytes = source
            .get(layout::LOG_META_FILE)
            .map_err(unavailable(source, layout::LOG_META_FILE))?
            .ok_or_else(|| {
                corrupt(
                    place(source, layout::LOG_META_FILE),
                    "the bucket has no log.json",
                )
            })?;
        crate::files::replace_file(&meta, &bytes)?;
    }
    let Some((keys, _)) = newest_history(source)? else {
        return Err(corrupt(
            place(source, "keys/"),
            "the bucket has no key history",
        ));
    };
    crate::files::replace_file(&data_dir.join(layout::KEYS_FILE), &keys)?;
    Ok(())
}

/// The bucket's newest key history: every version is kept, and a history only grows (keys
/// are added, and retired once, never removed), so the newest has the most entries and,
/// among those, the most retired. (Entries alone tie between a rotation's add and its
/// retirement, and the older of the two was taken as often as not.)
fn newest_history(
    source: &dyn WormTarget,
) -> Result<Option<(Vec<u8>, auditlog_formats::keyhistory::CheckedHistory)>> {
    let mut newest: Option<(Vec<u8>, auditlog_formats::keyhistory::CheckedHistory)> = None;
    for o in source.list("keys/").map_err(unavailable(source, "keys/"))? {
        let Some(bytes) = source.get(&o.key).map_err(unavailable(source, &o.key))? else {
            continue;
        };
        let h = auditlog_formats::keyhistory::KeyHistory::parse(&bytes)
            .map_err(|e| corrupt(place(source, &o.key), e.to_string()))?;
        let growth = |h: &auditlog_formats::keyhistory::KeyHistory| {
            let retired = h.keys.iter().filter(|k| k.until_size.is_some()).count();
            (h.keys.len(), retired)
        };
        if newest
            .as_ref()
            .is_none_or(|(_, n)| growth(&h.history) > growth(&n.history))
        {
            newest = Some((bytes, h));
        }
    }
    Ok(newest)
}

/// A directory a writer used (its replication manifest records objects it shipped itself)
/// becoming a replica — a fenced
/// writer rejoining — may hold records past what the store has, which no one else ever
/// saw: its log files are moved to `former-writer-<unix ms>/`, kept as evidence, never
/// served, and the replica starts from the bucket.
fn set_aside_a_former_writer(data_dir: &std::path::Path) -> Result<()> {
    if !crate::replication::Manifest::shipped_any_itself(&data_dir.join(layout::REPLICATION_DIR))? {
        return Ok(());
    }
    let aside = data_dir.join(format!(
        "former-writer-{}",
        crate::now_unix_ns() / 1_000_000
    ));
    std::fs::create_dir_all(&aside).map_err(io_err(&aside, "create"))?;
    for name in [
        layout::SEGMENTS_DIR,
        layout::HASHES_DIR,
        layout::LEAF_INDEX_DIR,
        layout::CHECKPOINT_LOG_FILE,
        layout::REPLICATION_DIR,
        layout::LOG_META_FILE,
        layout::KEYS_FILE,
    ] {
        let from = data_dir.join(name);
        if from.exists() {
            let to = aside.join(name);
            std::fs::rename(&from, &to).map_err(io_err(&from, "set aside"))?;
        }
    }
    crate::io::sync_dir(data_dir).map_err(io_err(data_dir, "sync"))?;
    tracing::warn!(
        "{} held a writer's log; moved to {} and rebuilding from the bucket as a replica",
        data_dir.display(),
        aside.display()
    );
    Ok(())
}

/// How far the store holds the log, walking from leaf `from` (a segment boundary): sealed
/// segments, then each open segment's tails. A writer that takes the lease checks that its
/// directory holds at least this much before it extends the log.
pub(crate) fn store_end(source: &dyn WormTarget, from: u64) -> Result<u64> {
    let err = |k: &str| unavailable(source, k);
    let mut p = from;
    loop {
        let prefix = format!("segments/{p:020}-");
        let sealed = source.list(&prefix).map_err(err(&prefix))?;
        if let Some(b) = sealed.iter().find_map(|o| {
            match layout::parse_segment_name(o.key.trim_start_matches("segments/")) {
                Some(layout::SegmentName::Sealed(a, b)) if a == p => Some(b),
                _ => None,
            }
        }) {
            p = b;
            continue;
        }
        let prefix = tail_prefix(p);
        let tails = source.list(&prefix).map_err(err(&prefix))?;
        let Some(last) = tails.last() else {
            return Ok(p);
        };
        let first = parse_tail_key(&last.key).map_or(p, |k| k.1);
        let bytes = source
            .get(&last.key)
            .map_err(err(&last.key))?
            .unwrap_or_default();
        let end = check_run(&bytes, first)
            .map_err(|e| corrupt(&last.key, format!("tail object: {e}")))?
            .0;
        if end <= p {
            return Ok(p);
        }
        p = end;
    }
}

/// The open segment the follower appends tails to.
struct Open {
    first: u64,
    path: PathBuf,
    file: Arc<std::fs::File>,
    write_offset: u64,
}

pub(crate) struct Follower {
    source: Box<dyn WormTarget>,
    cfg: ReplicaConfig,
    monitor: Arc<ReplicaMonitor>,
    edge: RightEdge,
    pending: PendingNodes,
    cp_log: CheckpointLog,
    open: Option<Open>,
    /// `replication/manifest.log`: the segments adopted, recorded as shipped (`FOLLOWED`).
    manifest: Option<crate::replication::Manifest>,
    /// The pointer size for which the key histories were last looked at.
    keys_asked_at: Option<u64>,
}

enum Step {
    Applied,
    Nothing,
}

impl Follower {
    pub(crate) fn new(
        source: Box<dyn WormTarget>,
        cfg: ReplicaConfig,
        monitor: Arc<ReplicaMonitor>,
        edge: RightEdge,
        pending: PendingNodes,
        cp_log: CheckpointLog,
        open: Option<OpenSegment>,
    ) -> Follower {
        monitor.update(|s| s.source = source.describe());
        Follower {
            source,
            cfg,
            monitor,
            edge,
            pending,
            cp_log,
            open: open.map(|o| Open {
                first: o.first,
                path: o.path,
                file: o.file,
                write_offset: o.write_offset,
            }),
            manifest: None,
            keys_asked_at: None,
        }
    }

    fn manifest(&mut self, shared: &Shared) -> Result<&mut crate::replication::Manifest> {
        if self.manifest.is_none() {
            let dir = shared.config.data_dir.join(layout::REPLICATION_DIR);
            self.manifest = Some(crate::replication::Manifest::open(&dir)?.0);
        }
        Ok(self.manifest.as_mut().expect("opened above"))
    }

    pub(crate) fn run(mut self, shared: Arc<Shared>) {
        let poll = Duration::from_millis(self.cfg.poll_interval_ms.max(1));
        while !shared.health.shutting_down() {
            if self.monitor.snapshot().alarm.is_some() {
                std::thread::sleep(poll.min(Duration::from_millis(100)));
                continue;
            }
            match self.step(&shared) {
                Ok(Step::Applied) => {
                    self.monitor.update(|s| s.last_error = None);
                    continue;
                }
                Ok(Step::Nothing) => {
                    self.read_lease();
                    *self
                        .monitor
                        .caught_up_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                Err(EngineError::StoreUnavailable { place, reason }) => {
                    let text = format!("{place}: {reason}");
                    tracing::warn!("replica: {text}; retrying");
                    self.monitor.update(|s| s.last_error = Some(text));
                }
                // An object that fails its checks: refused, named; following stops.
                Err(e @ EngineError::Corrupt { .. }) => {
                    let text = e.to_string();
                    tracing::error!("replica: refused: {text}; following stops");
                    self.monitor.update(|s| s.alarm = Some(text));
                }
                // The replica's own disk (a failed write or sync, a full disk): as for the
                // writer, the files can no longer be trusted to hold what was written:
                // fail-stop (reads of what was verified go on; `/ready` says why).
                Err(e) => {
                    tracing::error!("replica: {e}; following stops");
                    self.monitor.update(|s| s.alarm = Some(e.to_string()));
                    shared.health.fail(crate::health::Fault::of(&e));
                    return;
                }
            }
            let until = Instant::now() + poll;
            while Instant::now() < until && !shared.health.shutting_down() {
                std::thread::sleep(Duration::from_millis(10).min(poll));
            }
        }
    }

    /// Notes who writes the log (the lease's holder), when idle.
    fn read_lease(&self) {
        if let Ok(Some((_, r))) = crate::lease::read(self.source.as_ref()) {
            let writer = if r.writer_url.is_empty() {
                format!("{} (lease epoch {})", r.holder, r.epoch)
            } else {
                format!("{} at {} (lease epoch {})", r.holder, r.writer_url, r.epoch)
            };
            self.monitor.update(|s| s.writer = Some(writer));
        }
    }

    fn place(&self, key: &str) -> String {
        place(self.source.as_ref(), key)
    }

    fn store_err(&self, key: &str) -> impl FnOnce(auditlog_worm::WormError) -> EngineError {
        unavailable(self.source.as_ref(), key)
    }

    /// One thing new from the bucket, in the order the log needs them.
    fn step(&mut self, shared: &Shared) -> Result<Step> {
        if let Step::Applied = self.adopt_sealed(shared)? {
            return Ok(Step::Applied);
        }
        if let Step::Applied = self.apply_tails(shared)? {
            return Ok(Step::Applied);
        }
        self.checkpoint(shared)
    }

    /// The end of the local sealed segments.
    fn sealed_end(shared: &Shared) -> u64 {
        shared.segments.read().sealed.last().map_or(0, |s| s.end)
    }

    /// The sealed segment that follows the local ones, if the bucket has it: checked, then
    /// written under its own name, replacing the open segment its tails built.
    fn adopt_sealed(&mut self, shared: &Shared) -> Result<Step> {
        let first = Self::sealed_end(shared);
        let prefix = format!("segments/{first:020}-");
        let list = self.source.list(&prefix).map_err(self.store_err(&prefix))?;
        let Some(o) = list.into_iter().find(|o| o.key.ends_with(".seg")) else {
            return Ok(Step::Nothing);
        };
        let name = o.key.trim_start_matches("segments/").to_string();
        let Some(layout::SegmentName::Sealed(a, b)) = layout::parse_segment_name(&name) else {
            return Err(corrupt(self.place(&o.key), "not a segment name"));
        };
        let bytes = self
            .source
            .get(&o.key)
            .map_err(self.store_err(&o.key))?
            .ok_or_else(|| corrupt(self.place(&o.key), "listed, then missing"))?;
        let dir = shared.segments_dir();
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp, "create"))?;
            f.write_all(&bytes).map_err(io_err(&tmp, "write"))?;
            f.sync_all().map_err(io_err(&tmp, "fsync"))?;
        }
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let object_bytes = bytes.len() as u64;
        drop(bytes);
        let checked = (|| {
            let seg = crate::recovery::load_sealed(&tmp, (a, b), shared.config.tree_hash)?;
            crate::segments::check_digest(&tmp, seg.file.as_ref())?;
            Ok::<_, EngineError>(seg)
        })();
        let seg = match checked {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(corrupt(self.place(&o.key), e.to_string()));
            }
        };
        // Leaves the tails did not bring yet come from the segment itself.
        let head = self.edge.size();
        if b > head {
            let (edge, pending) = (&mut self.edge, &mut self.pending);
            seg.for_each_record(crate::segments::Reads::Uncached, head, b, &mut |_, rec| {
                edge.append(shared.config.tree_hash.leaf(rec), |n, h| pending.push(n, h));
                Ok(true)
            })?;
            self.pending.flush(&shared.hashes)?;
        }
        // Its root must be the tree's at its end: the records are the ones already held.
        let root = tree::tree_hash(shared.config.tree_hash, b, &shared.hashes)?;
        let footer_root = match &seg.body {
            crate::segments::Body::Sealed { footer } => footer.root,
            crate::segments::Body::Open { .. } => {
                unreachable!("load_sealed gives a sealed segment")
            }
        };
        if root != footer_root {
            let _ = std::fs::remove_file(&tmp);
            return Err(corrupt(
                self.place(&o.key),
                "its records are not the ones the tails and earlier segments gave (root differs)",
            ));
        }
        crate::files::install(&tmp, &path)?;
        // Recorded as shipped: should this replica become the writer (a standby), it does
        // not upload the segment again, and the store's end counts it at once.
        let retain_until = self
            .source
            .retention(&o.key)
            .map_err(self.store_err(&o.key))?
            .map_or(0, |r| r.retain_until_unix_s);
        self.manifest(shared)?
            .append(&[crate::replication::ManifestEntry {
                kind: crate::replication::ManifestKind::Segment,
                key: o.key.clone(),
                bytes: object_bytes,
                blake3: digest,
                retain_until_unix_s: retain_until,
                shipped_at_unix_s: crate::now_unix_ns() / 1_000_000_000,
                first: Some(a),
                end: Some(b),
                outcome: crate::replication::FOLLOWED.into(),
            }])?;
        let seg = crate::recovery::load_sealed(&path, (a, b), shared.config.tree_hash)?;
        shared.segments.replace_with_sealed(seg);
        if let Some(open) = self.open.take_if(|o| o.first == a) {
            let _ = std::fs::remove_file(&open.path);
        }
        if b > head {
            shared
                .head
                .advance(TreeHead { size: b, root }, b - head, 0, 0);
        }
        self.monitor.update(|s| {
            s.segments_adopted += 1;
            s.followed = b.max(s.followed);
        });
        Ok(Step::Applied)
    }

    /// New tails of the open segment (or of the next one, once the writer moved on),
    /// appended to the local open file batch for batch.
    fn apply_tails(&mut self, shared: &Shared) -> Result<Step> {
        let head = self.edge.size();
        let segment = self.open.as_ref().map_or(head, |o| o.first);
        let mut applied = self.apply_tails_of(shared, segment)?;
        if !applied && segment != head {
            // The writer moved to a segment starting where this one ends.
            applied = self.apply_tails_of(shared, head)?;
        }
        Ok(if applied {
            Step::Applied
        } else {
            Step::Nothing
        })
    }

    fn apply_tails_of(&mut self, shared: &Shared, segment: u64) -> Result<bool> {
        let prefix = tail_prefix(segment);
        let list = self.source.list(&prefix).map_err(self.store_err(&prefix))?;
        let mut applied = false;
        for o in list {
            let Some((seg, first)) = parse_tail_key(&o.key) else {
                return Err(corrupt(self.place(&o.key), "not a tail key"));
            };
            let head = self.edge.size();
            if seg != segment || first < head {
                continue;
            }
            if first > head {
                return Err(corrupt(
                    self.place(&o.key),
                    format!("starts at index {first}, but the tails before it end at {head}"),
                ));
            }
            let bytes = self
                .source
                .get(&o.key)
                .map_err(self.store_err(&o.key))?
                .ok_or_else(|| corrupt(self.place(&o.key), "listed, then missing"))?;
            let (end, batches) = check_run(&bytes, head).map_err(|e| {
                corrupt(
                    self.place(&o.key),
                    format!("tail object at byte {}: {}", e.offset, e.what),
                )
            })?;
            self.append(shared, segment, &bytes, &batches, end)?;
            applied = true;
        }
        Ok(applied)
    }

    /// Appends a checked run of batches to the local open segment and adds its leaves.
    fn append(
        &mut self,
        shared: &Shared,
        segment: u64,
        bytes: &[u8],
        batches: &[(usize, auditlog_formats::batch::BatchHeader)],
        end: u64,
    ) -> Result<()> {
        if self.open.as_ref().is_none_or(|o| o.first != segment) {
            let dir = shared.segments_dir();
            let path = dir.join(layout::open_name(segment));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err(&path, "create open segment"))?;
            crate::io::sync_dir(&dir).map_err(io_err(&dir, "sync"))?;
            let open = OpenSegment {
                first: segment,
                path: path.clone(),
                file: Arc::new(file),
                write_offset: 0,
                opened_at: Instant::now(),
                max_classification: 0,
            };
            shared.segments.add_open(&open);
            self.open = Some(Open {
                first: segment,
                path,
                file: open.file,
                write_offset: 0,
            });
        }
        let Some(open) = self.open.as_mut() else {
            unreachable!("opened above")
        };
        open.file
            .write_all_at(bytes, open.write_offset)
            .map_err(io_err(&open.path, "append tail"))?;
        open.file
            .sync_data()
            .map_err(io_err(&open.path, "fdatasync"))?;
        let base = open.write_offset;
        open.write_offset += bytes.len() as u64;
        let alg = shared.config.tree_hash;
        for (at, h) in batches {
            let body =
                &bytes[at + auditlog_formats::batch::BATCH_HEADER_BYTES..at + h.total_bytes()];
            let (edge, pending) = (&mut self.edge, &mut self.pending);
            for rec in auditlog_formats::batch::Entries::new(body) {
                let rec = rec.map_err(|(p, r)| corrupt(&open.path, format!("record {p}: {r}")))?;
                edge.append(alg.leaf(rec), |n, hash| pending.push(n, hash));
            }
            self.pending.flush(&shared.hashes)?;
            let size = self.edge.size();
            shared.segments.add_batch(
                segment,
                BatchLoc {
                    first_index: h.first_index,
                    offset: base + *at as u64,
                    total_bytes: h.total_bytes() as u32,
                },
                size,
            );
            shared.head.advance(
                TreeHead {
                    size,
                    root: self.edge.root(),
                },
                u64::from(h.count),
                h.body_bytes as u64,
                0,
            );
        }
        assert_eq!(self.edge.size(), end, "tail and tree disagree");
        self.monitor.update(|s| {
            s.tails_applied += 1;
            s.followed = end;
        });
        Ok(())
    }

    /// Adopts the bucket's newest key history if it extends the replica's as of what the
    /// replica has verified (FORMATS.md §13, "Extension": no key added or removed for sizes
    /// already signed); one that does not is refused, named.
    fn refresh_keys(&self, shared: &Shared) -> Result<()> {
        let Some((bytes, newest)) = newest_history(self.source.as_ref())? else {
            return Ok(());
        };
        let current = shared.keyring.history();
        if newest.history == current {
            return Ok(());
        }
        let pinned = current
            .check()
            .map_err(|e| corrupt(self.place("keys/"), e.to_string()))?;
        newest
            .extends(&pinned, shared.checkpoints.signed_size())
            .map_err(|e| {
                corrupt(
                    self.place("keys/"),
                    format!("the newest key history does not extend the replica's: {e}"),
                )
            })?;
        crate::files::replace_file(&shared.config.data_dir.join(layout::KEYS_FILE), &bytes)?;
        shared.keyring.adopt_history(newest);
        tracing::info!("replica: key history updated from the bucket");
        Ok(())
    }

    /// Whether a new checkpoint (past what the replica holds signed, read before it is
    /// verified, only to decide this) carries a signature by a key the replica does not
    /// know. Asked once per pointer size, so a note with a signer that is never a log key
    /// does not make every poll list the bucket's key histories.
    fn signed_by_unknown_key(&mut self, shared: &Shared, note: &str) -> bool {
        let Ok((text, sigs)) = auditlog_formats::note::parse_note(note) else {
            return false;
        };
        let Ok(cp) = auditlog_formats::note::Checkpoint::parse_text(&text) else {
            return false;
        };
        if cp.size <= shared.checkpoints.signed_size() || self.keys_asked_at == Some(cp.size) {
            return false;
        }
        self.keys_asked_at = Some(cp.size);
        let known = shared.keyring.all_keys();
        sigs.iter().any(|s| {
            !known
                .iter()
                .any(|k| k.name() == s.name && k.key_id() == s.key_id)
        })
    }

    /// The writer's newest checkpoint (the bucket's `checkpoint` pointer), once the
    /// replica holds its records: signatures under the key history, root equal to the
    /// replica's tree; then it is the replica's newest checkpoint.
    fn checkpoint(&mut self, shared: &Shared) -> Result<Step> {
        let Some(bytes) = self
            .source
            .get("checkpoint")
            .map_err(self.store_err("checkpoint"))?
        else {
            return Ok(Step::Nothing);
        };
        let place = self.place("checkpoint");
        let note = String::from_utf8(bytes).map_err(|_| corrupt(&place, "not UTF-8"))?;
        if self.signed_by_unknown_key(shared, &note) {
            // A rotation under way: the writer ships the key history before a checkpoint
            // its new key signs, so take it now, before this size is verified; after, the
            // new key would start below a size the replica holds signed (retroactive).
            self.refresh_keys(shared)?;
        }
        let cp = match shared.keyring.open_checkpoint(&note) {
            Ok(cp) => cp,
            // Signed by a key the replica's history does not have yet (a rotation): take
            // the bucket's newest history if it extends the replica's, and try again.
            Err(first) => {
                self.refresh_keys(shared)?;
                shared
                    .keyring
                    .open_checkpoint(&note)
                    .map_err(|_| corrupt(&place, first.to_string()))?
            }
        };
        if cp.origin != shared.config.origin {
            return Err(corrupt(&place, format!("origin {:?}", cp.origin)));
        }
        let signed = shared.checkpoints.signed_size();
        if cp.size <= signed || cp.size > self.edge.size() {
            return Ok(Step::Nothing);
        }
        shared.hashes.sync()?;
        let root = tree::tree_hash(shared.config.tree_hash, cp.size, &shared.hashes)?;
        if root != cp.root {
            return Err(corrupt(
                &place,
                format!(
                    "signed root at size {} differs from the records the replica holds: a tail or segment on the store was altered",
                    cp.size
                ),
            ));
        }
        if let Err(e) = shared.leaf_index.extend(&shared.hashes, cp.size) {
            tracing::warn!("leaf index: {e}");
        }
        self.cp_log.append(&note)?;
        shared.keyring.note_signed(cp.size);
        let size = cp.size;
        shared.checkpoints.publish(SignedCheckpoint {
            checkpoint: cp,
            note,
        });
        self.monitor.update(|s| s.checkpoint_size = size);
        Ok(Step::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_formats::keyhistory::KeyHistory;
    use auditlog_formats::note::NoteSigner;

    /// A rotation leaves two versions of the history with as many keys (the new key added,
    /// then the old one retired): the newest is the one with the retirement, in whichever
    /// order the store lists them. (Counting entries alone took the older half the time,
    /// and the replica then refused the checkpoints signed by the new key alone.)
    #[test]
    fn the_newest_key_history_is_the_one_with_the_retirement() {
        let key = |seed| {
            NoteSigner::from_seed("auditlog.local/log", [seed; 32])
                .expect("key")
                .verifier_key()
        };
        let mut added = KeyHistory::single(&key(1));
        let mut next = added.keys[0].clone();
        next.verifier_key = key(2).to_string();
        next.from_size = 101;
        added.keys.push(next);
        let mut retired = added.clone();
        retired.keys[0].until_size = Some(300);
        // Objects are listed by name: each version first once.
        for names in [["a", "b"], ["b", "a"]] {
            let dir = tempfile::tempdir().expect("tmp");
            let url = format!("file://{}", dir.path().display());
            let store =
                auditlog_worm::open(&url, &auditlog_worm::TargetOptions::default()).expect("store");
            for (name, h) in names.iter().zip([&added, &retired]) {
                store
                    .put_create(&format!("keys/{name}.json"), h.to_json().as_bytes(), None)
                    .expect("put");
            }
            let (_, newest) = newest_history(store.as_ref())
                .expect("read")
                .expect("a history");
            assert_eq!(newest.history, retired, "listed as {names:?}");
        }
    }
}
