//! Recovering a log: check its metadata, load the newest checkpoint, scan segments (cutting a
//! torn tail of the open one), bring the hash store to the checkpoint and re-derive it past
//! that from the records, and refuse to start if the checkpoint and the segments disagree.
//! What it finds goes to the engine (`Engine::open`) and the supervisor starts the threads.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use auditlog_formats::layout;
use auditlog_formats::tree::{self, RightEdge};
use auditlog_formats::{Hash, TreeHash};

use crate::checkpoints::{CheckpointLog, SignedCheckpoint};
use crate::config::EngineConfig;
use crate::error::{corrupt, io_err, EngineError, Result};
use crate::hashstore::{HashFiles, PendingNodes};
use crate::keyring::Keyring;
use crate::segment_set::{OpenView, SegmentSet};
use crate::segments::{self, parse_name, Body, Segment, SegmentName};
use crate::sequencer::{OpenSegment, SealJob};
use crate::signer::Signer;

/// What recovery found and did, for the operator.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub tree_size: u64,
    pub checkpoint_size: u64,
    pub rederived_leaves: u64,
    pub hash_store_rebuilt: bool,
    pub torn_tail: Option<String>,
    pub duration_ms: u64,
}

pub use auditlog_formats::layout::LogMeta;

pub(crate) fn load_or_create_meta(cfg: &EngineConfig) -> Result<LogMeta> {
    let path = cfg.data_dir.join(layout::LOG_META_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io_err(&path, "read"))?;
        let meta: LogMeta =
            serde_json::from_str(&text).map_err(|e| corrupt(&path, e.to_string()))?;
        if meta.origin != cfg.origin {
            return Err(EngineError::Config(format!(
                "{}: the log's origin is {:?}, the configuration says {:?}",
                path.display(),
                meta.origin,
                cfg.origin
            )));
        }
        if TreeHash::from_name(&meta.tree_hash) != Some(cfg.tree_hash) {
            return Err(EngineError::Config(format!(
                "{}: the log's tree hash is {}, fixed at creation; the configuration says {}",
                path.display(),
                meta.tree_hash,
                cfg.tree_hash.name()
            )));
        }
        return Ok(meta);
    }
    let meta = LogMeta {
        format: 1,
        origin: cfg.origin.clone(),
        tree_hash: cfg.tree_hash.name().to_string(),
        created_at_unix_ns: crate::now_unix_ns(),
    };
    let text =
        serde_json::to_string_pretty(&meta).map_err(|e| EngineError::Config(e.to_string()))?;
    crate::files::replace_file(&path, (text + "\n").as_bytes())?;
    Ok(meta)
}

/// A sealed segment as recovery meets it: a local file, or recorded as pruned.
enum Piece {
    Local(PathBuf),
    Pruned(crate::pruned::PrunedSegment),
}

/// What recovery hands the engine: the state to share and what the threads start from.
pub(crate) struct Recovered {
    pub keyring: Keyring,
    pub cp_log: CheckpointLog,
    pub latest: Option<SignedCheckpoint>,
    pub hashes: HashFiles,
    pub edge: RightEdge,
    pub pending: PendingNodes,
    pub set: SegmentSet,
    /// The segment to append to, if recovery found one (else a preallocated file is used).
    pub open: Option<OpenSegment>,
    /// Open segments the crash left before the last one: sealed first thing.
    pub to_seal: Vec<SealJob>,
    pub prealloc: Vec<PathBuf>,
    pub recycle: Vec<PathBuf>,
    pub unsigned_footers: VecDeque<u64>,
    pub replicator: Option<(
        crate::replication::Replicator,
        Arc<crate::replication::Monitor>,
    )>,
    pub report: RecoveryReport,
}

/// Recovers the log in `cfg.data_dir`; refuses (an error, nothing changed that a later
/// start could not redo) when the checkpoint and the segments disagree.
pub(crate) fn recover(cfg: &EngineConfig, signer: Option<Arc<dyn Signer>>) -> Result<Recovered> {
    cfg.validate().map_err(EngineError::Config)?;
    // The data directory is the daemon's alone (tokens, the development key): 0700.
    crate::private::ensure_private_dir(&cfg.data_dir)?;
    // Before anything else is touched: a target that cannot keep the WORM promise refuses start.
    // A read replica ships nothing (it follows the writer's bucket) and signs nothing.
    let replica = cfg.replica.is_some();
    let replicator = if replica {
        None
    } else {
        crate::replication::prepare(cfg)?
    };
    let seg_dir = cfg.data_dir.join(layout::SEGMENTS_DIR);
    std::fs::create_dir_all(&seg_dir).map_err(io_err(&seg_dir, "create data directory"))?;
    let _meta = load_or_create_meta(cfg)?;
    let keyring = if replica {
        Keyring::open_verify_only(cfg)?
    } else {
        Keyring::open(cfg, signer)?
    };
    let mut report = RecoveryReport::default();

    // 1. The newest checkpoint: a promise about what the segments hold.
    let (cp_log, latest) = CheckpointLog::open(
        &cfg.data_dir.join(layout::CHECKPOINT_LOG_FILE),
        &cfg.origin,
        &keyring.all_keys(),
    )?;
    let promise = latest
        .as_ref()
        .map(|c| (c.checkpoint.size, c.checkpoint.root))
        .unwrap_or((0, cfg.tree_hash.empty()));
    report.checkpoint_size = promise.0;
    keyring.note_signed(promise.0);

    // 2. The hash store, brought back to exactly the checkpoint.
    let mut tree = Rederive::start(cfg, promise, &mut report)?;

    // 3. Segments in order: sealed ones, then open ones; contiguous from leaf 0.
    let listing = Listing::read(&seg_dir)?;
    let mut set = SegmentSet {
        sealed: Vec::new(),
        open: Vec::new(),
        pruned: Vec::new(),
    };
    let mut unsigned_footers = VecDeque::new();
    let end = recover_sealed(
        cfg,
        &listing.sealed,
        &keyring,
        &mut tree,
        &mut set,
        &mut unsigned_footers,
    )?;
    let mut recycle = listing.recycle;
    let opened = recover_open(cfg, listing.open, end, &mut tree, &mut set, &mut recycle)?;
    report.torn_tail = opened.torn_tail;
    let end = opened.end;
    tree.pending.flush(&tree.hashes)?;
    report.rederived_leaves = end.saturating_sub(tree.from);

    // 4. The checkpoint must be a prefix of what the segments hold.
    tree.check_promise(cfg, end)?;
    report.tree_size = end;
    Ok(Recovered {
        keyring,
        cp_log,
        latest,
        hashes: tree.hashes,
        edge: tree.edge,
        pending: tree.pending,
        set,
        open: opened.last,
        to_seal: opened.to_seal,
        prealloc: listing.prealloc,
        recycle,
        unsigned_footers,
        replicator,
        report,
    })
}

/// The tree brought back: the hash store as the checkpoint left it, and the leaves past
/// `from` re-derived from the records as recovery reads them.
struct Rederive {
    alg: TreeHash,
    hashes: HashFiles,
    /// Leaves before this are in the hash store; from here on they are derived.
    from: u64,
    /// The newest checkpoint's size and root.
    promise: (u64, Hash),
    edge: RightEdge,
    pending: PendingNodes,
    /// The root the records give at the checkpoint's size, once the tree passes it.
    root_at_promise: Option<Hash>,
}

impl Rederive {
    fn start(
        cfg: &EngineConfig,
        promise: (u64, Hash),
        report: &mut RecoveryReport,
    ) -> Result<Rederive> {
        let alg = cfg.tree_hash;
        let (cp_size, cp_root) = promise;
        let hashes = HashFiles::open(
            &cfg.data_dir.join(layout::HASHES_DIR),
            cfg.hash_cache_bytes_max,
            alg,
        )?;
        let mut from = cp_size;
        let store_ok = hashes.truncate_to(cp_size)?
            && tree::tree_hash(alg, cp_size, &hashes)
                .map(|r| r == cp_root)
                .unwrap_or(false);
        if !store_ok {
            tracing::warn!(
                "hash store does not match checkpoint {cp_size}; rebuilding it from the segments"
            );
            hashes.clear()?;
            from = 0;
            report.hash_store_rebuilt = true;
        }
        let edge = if from == 0 {
            RightEdge::new(alg)
        } else {
            RightEdge::load(alg, from, &hashes)?
        };
        Ok(Rederive {
            alg,
            hashes,
            from,
            promise,
            edge,
            pending: PendingNodes::new(),
            root_at_promise: (from == cp_size).then_some(cp_root),
        })
    }

    /// Record `index` as read back from a segment.
    fn leaf(&mut self, index: u64, rec: &[u8]) -> Result<()> {
        if index < self.from {
            return Ok(());
        }
        assert_eq!(index, self.edge.size(), "re-derivation out of order");
        let pending = &mut self.pending;
        self.edge
            .append(self.alg.leaf(rec), |n, h| pending.push(n, h));
        if self.edge.size() == self.promise.0 {
            self.root_at_promise = Some(self.edge.root());
        }
        if self.edge.size().is_multiple_of(65536) {
            self.pending.flush(&self.hashes)?;
        }
        Ok(())
    }

    /// The checkpoint must be a prefix of the `end` leaves the segments hold.
    fn check_promise(&self, cfg: &EngineConfig, end: u64) -> Result<()> {
        let (cp_size, cp_root) = self.promise;
        let cp_path = cfg.data_dir.join(layout::CHECKPOINT_LOG_FILE);
        if cp_size > end {
            return Err(corrupt(
                &cp_path,
                format!("the newest checkpoint covers {cp_size} events but the segments hold {end}: segments were lost or cut; refusing to start"),
            ));
        }
        if self.root_at_promise != Some(cp_root) && cp_size > 0 {
            return Err(corrupt(
                &cp_path,
                format!("the segments give a different root at the checkpointed size {cp_size}: records were altered; refusing to start"),
            ));
        }
        assert_eq!(
            self.edge.size(),
            end,
            "tree and segments disagree after recovery"
        );
        Ok(())
    }
}

/// The files of `segments/` by kind (leftover temporaries removed).
struct Listing {
    sealed: Vec<(u64, u64, PathBuf)>,
    open: Vec<(u64, PathBuf)>,
    prealloc: Vec<PathBuf>,
    recycle: Vec<PathBuf>,
}

impl Listing {
    fn read(seg_dir: &Path) -> Result<Listing> {
        let mut l = Listing {
            sealed: Vec::new(),
            open: Vec::new(),
            prealloc: Vec::new(),
            recycle: Vec::new(),
        };
        for entry in std::fs::read_dir(seg_dir).map_err(io_err(seg_dir, "list"))? {
            let entry = entry.map_err(io_err(seg_dir, "list"))?;
            let name = entry.file_name().to_string_lossy().to_string();
            match parse_name(&name) {
                Some(SegmentName::Sealed(a, b)) => l.sealed.push((a, b, entry.path())),
                Some(SegmentName::Open(a)) => l.open.push((a, entry.path())),
                Some(SegmentName::Prealloc) => l.prealloc.push(entry.path()),
                Some(SegmentName::Recycle) => l.recycle.push(entry.path()),
                Some(SegmentName::Temporary) => {
                    std::fs::remove_file(entry.path())
                        .map_err(io_err(entry.path(), "remove leftover"))?;
                }
                None => tracing::warn!("ignoring unknown file {}", entry.path().display()),
            }
        }
        l.sealed.sort();
        l.open.sort();
        Ok(l)
    }
}

/// The sealed files and the pruned list merged in leaf order. A segment recorded as pruned
/// whose file is still there (a crash before the unlink) is unlinked now.
fn sealed_pieces(
    cfg: &EngineConfig,
    sealed: &[(u64, u64, PathBuf)],
) -> Result<Vec<(u64, u64, Piece)>> {
    let seg_dir = cfg.data_dir.join(layout::SEGMENTS_DIR);
    let mut pieces = Vec::new();
    let mut unlinked = false;
    let mut pruned = crate::pruned::read(&cfg.data_dir)?.into_iter().peekable();
    for (a, b, path) in sealed.iter().cloned() {
        while let Some(p) = pruned.next_if(|p| p.first < a) {
            pieces.push((p.first, p.end, Piece::Pruned(p)));
        }
        if let Some(p) = pruned.next_if(|p| p.first == a && p.end == b) {
            tracing::info!("{}: recorded as pruned; removing it", path.display());
            std::fs::remove_file(&path).map_err(io_err(&path, "unlink pruned segment"))?;
            unlinked = true;
            pieces.push((a, b, Piece::Pruned(p)));
            continue;
        }
        pieces.push((a, b, Piece::Local(path)));
    }
    pieces.extend(pruned.map(|p| (p.first, p.end, Piece::Pruned(p))));
    if unlinked {
        crate::io::sync_dir(&seg_dir).map_err(io_err(&seg_dir, "sync"))?;
    }
    Ok(pieces)
}

/// Loads the sealed (and pruned) segments, contiguous from leaf 0, re-deriving the tree
/// from their records where the hash store lacks it; returns where they end. Segments
/// deleted by local retention are explained by the pruned list; any other gap is refused.
fn recover_sealed(
    cfg: &EngineConfig,
    sealed: &[(u64, u64, PathBuf)],
    keyring: &Keyring,
    tree: &mut Rederive,
    set: &mut SegmentSet,
    unsigned_footers: &mut VecDeque<u64>,
) -> Result<u64> {
    let pruned_path = crate::pruned::pruned_path(&cfg.data_dir);
    let mut end = 0u64;
    for (a, b, piece) in sealed_pieces(cfg, sealed)? {
        let path = match piece {
            Piece::Local(path) => path,
            Piece::Pruned(p) => {
                if a != end {
                    return Err(corrupt(
                        &pruned_path,
                        format!("pruned segment [{a}, {b}) does not follow leaf {end}: a segment is missing"),
                    ));
                }
                if b > tree.from {
                    return Err(corrupt(
                        &pruned_path,
                        format!("the hash store must be re-derived from leaf {}, but segment [{a}, {b}) was pruned locally (its records are only on the store, {}); copy that object back into segments/ to start", tree.from, p.key),
                    ));
                }
                keyring.note_signed(b);
                set.pruned.push(Arc::new(p));
                end = b;
                continue;
            }
        };
        if a != end || b <= a {
            return Err(corrupt(
                &path,
                format!(
                    "sealed segment [{a}, {b}) does not follow leaf {end}: a segment is missing"
                ),
            ));
        }
        let seg = load_sealed(&path, (a, b), tree.alg)?;
        // Sealed while the signer was down: the checkpointer signs a checkpoint at its end.
        let signed_footer = match &seg.body {
            Body::Sealed { footer } => !footer.checkpoint_note.is_empty(),
            Body::Open { .. } => unreachable!("load_sealed gives a sealed segment"),
        };
        if !signed_footer {
            unsigned_footers.push_back(b);
        }
        if b > tree.from {
            seg.for_each_record(
                crate::segments::Reads::Uncached,
                tree.from.max(a),
                b,
                &mut |i, rec| {
                    tree.leaf(i, rec)?;
                    Ok(true)
                },
            )?;
        }
        set.sealed.push(Arc::new(seg));
        if signed_footer {
            keyring.note_signed(b);
        }
        end = b;
    }
    Ok(end)
}

/// A sealed segment file whose header agrees with its name `[a, b)` and the log's hash.
pub(crate) fn load_sealed(path: &Path, (a, b): (u64, u64), alg: TreeHash) -> Result<Segment> {
    let file = std::fs::File::open(path).map_err(io_err(path, "open"))?;
    let (header, footer) = segments::load_sealed(path, &file)?;
    if header.first_index != a || header.first_index + header.count != b || header.tree_hash != alg
    {
        return Err(corrupt(
            path,
            "header does not match the file name or the log's tree hash",
        ));
    }
    Ok(Segment {
        first: a,
        end: b,
        path: path.to_path_buf(),
        file: Arc::new(file),
        body: Body::Sealed {
            footer: Arc::new(footer),
        },
    })
}

/// What the open segments gave.
struct Opened {
    end: u64,
    last: Option<OpenSegment>,
    to_seal: Vec<SealJob>,
    torn_tail: Option<String>,
}

/// Scans the open segments from `end` on, cutting a torn tail of the last one (a torn batch
/// anywhere else is corruption). An open segment that starts before `end` was sealed
/// before the crash: only its retirement was lost, done now.
fn recover_open(
    cfg: &EngineConfig,
    open_list: Vec<(u64, PathBuf)>,
    mut end: u64,
    tree: &mut Rederive,
    set: &mut SegmentSet,
    recycle: &mut Vec<PathBuf>,
) -> Result<Opened> {
    let seg_dir = cfg.data_dir.join(layout::SEGMENTS_DIR);
    let allowance = auditlog_formats::batch::torn_tail_allowance_bytes(cfg.batch_bytes_max);
    let mut opened = Opened {
        end,
        last: None,
        to_seal: Vec::new(),
        torn_tail: None,
    };
    let count = open_list.len();
    for (n, (a, path)) in open_list.into_iter().enumerate() {
        if a < end {
            let retired = seg_dir.join(segments::recycle_name(a));
            std::fs::rename(&path, &retired)
                .map_err(io_err(&path, "retire sealed open segment"))?;
            recycle.push(retired);
            continue;
        }
        if a != end {
            return Err(corrupt(
                &path,
                format!("open segment starts at {a}, expected {end}: a segment is missing"),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        let scan = segments::scan_open(&path, &file, a, allowance, |i, rec| tree.leaf(i, rec))?;
        let max_classification = max_classification(&path, &file, &scan.batches)?;
        if let Some((at, why)) = &scan.torn {
            if n + 1 != count {
                return Err(corrupt(
                    &path,
                    format!("batch at offset {at}: {why}, in a segment that is not the last"),
                ));
            }
            opened.torn_tail = Some(cut_torn_tail(&path, &file, *at, why, allowance)?);
        }
        let file = Arc::new(file);
        end = scan.end_index;
        set.open.push(OpenView {
            first: a,
            end,
            path: path.clone(),
            file: file.clone(),
            batches: scan.batches,
        });
        let seg = OpenSegment {
            first: a,
            path,
            file,
            write_offset: scan.valid_bytes,
            opened_at: Instant::now(),
            max_classification,
        };
        // A replica's open segments mirror the writer's tails: the writer seals them.
        if cfg.replica.is_some() {
            opened.last = Some(seg);
            continue;
        }
        if let Some(prev) = opened.last.replace(seg) {
            opened.to_seal.push(SealJob {
                first: prev.first,
                end: a,
                path: prev.path,
                file: prev.file,
                max_classification: prev.max_classification,
            });
        }
    }
    opened.end = end;
    Ok(opened)
}

/// The highest classification of the batches in an open segment (its footer will say it).
fn max_classification(
    path: &Path,
    file: &std::fs::File,
    batches: &[crate::segments::BatchLoc],
) -> Result<u8> {
    use std::os::unix::fs::FileExt;
    let mut max = 0u8;
    for b in batches {
        let mut h = [0u8; auditlog_formats::batch::BATCH_HEADER_BYTES];
        file.read_exact_at(&mut h, b.offset)
            .map_err(io_err(path, "read"))?;
        let header = auditlog_formats::batch::decode_header(&h)
            .map_err(|e| corrupt(path, format!("batch at offset {}: {e}", b.offset)))?;
        max = max.max(header.max_classification);
    }
    Ok(max)
}

/// Zeroes what a torn write left at `at`, so no stale bytes sit after the next batch.
fn cut_torn_tail(
    path: &Path,
    file: &std::fs::File,
    at: u64,
    why: &dyn std::fmt::Display,
    allowance: u64,
) -> Result<String> {
    let msg = format!("{}: cut torn tail at offset {at} ({why})", path.display());
    tracing::warn!("{msg}");
    let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
    let zero_to = (at + allowance).min(file_len);
    let zeros = vec![0u8; (zero_to - at) as usize];
    crate::io::pwritev_all(file, at, &[&zeros]).map_err(io_err(path, "zero torn tail"))?;
    file.sync_data().map_err(io_err(path, "fdatasync"))?;
    Ok(msg)
}

/// The store pruned segments are read from: a target of its own, so readers never wait
/// on the replicator's uploads.
pub(crate) fn read_target(cfg: &EngineConfig) -> Result<crate::remote::RemoteSegments> {
    let Some(r) = cfg.replication.as_ref().filter(|r| r.enabled) else {
        return Ok(crate::remote::RemoteSegments::new(None, 0, 0));
    };
    let url = r.target_url(&cfg.data_dir);
    let mut options = r.options.clone();
    let upload_timeout_ms = options
        .request_timeout_ms
        .unwrap_or(auditlog_worm::REQUEST_TIMEOUT_MS_DEFAULT);
    options.request_timeout_ms = Some(upload_timeout_ms.min(r.store_read_timeout_ms));
    let target = auditlog_worm::open(&url, &options)
        .map_err(|e| EngineError::Config(format!("replication target {url}: {e}")))?;
    Ok(crate::remote::RemoteSegments::new(
        Some(target),
        r.store_read_cache_segments_max,
        r.store_read_cache_bytes_max,
    ))
}

/// Starts an engine thread under supervision: a panic in it is a broken invariant, and
/// stops the engine (fail-stop, as a failed fsync does) instead of ending one thread while
/// the rest run on. The failure names the thread and the panic message; writes stop (the
/// sequencer acknowledges nothing after it), `/ready` shows it, and `shutdown` returns it,
/// so the daemon exits non-zero.
/// A key name from the origin (`layout::default_key_name`).
pub(crate) fn key_name(origin: &str) -> String {
    auditlog_formats::layout::default_key_name(origin)
}
