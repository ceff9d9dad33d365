//! Opening a log: check its metadata, load the newest checkpoint, scan segments (cutting a
//! torn tail of the open one), bring the hash store to the checkpoint and re-derive it past
//! that from the records, refuse to start if the checkpoint and the segments disagree, then
//! start the threads.

use auditlog_formats::layout;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use auditlog_formats::tree::{self, RightEdge};
use auditlog_formats::{Hash, TreeHash};

use crate::checkpoints::CheckpointLog;
use crate::config::EngineConfig;
use crate::error::{corrupt, io_err, EngineError, Result};
use crate::hashstore::{HashFiles, PendingNodes};
use crate::io::Appender;
use crate::keyring::Keyring;
use crate::segments::{self, parse_name, Body, Segment, SegmentName};
use crate::sequencer::{OpenSegment, Sequencer};
use crate::shared::Fault;
use crate::signer::Signer;
use crate::{Engine, OpenView, SegmentSet, Shared, Stats, TreeHead};

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

pub(crate) fn open(cfg: EngineConfig, signer: Option<Arc<dyn Signer>>) -> Result<Engine> {
    let started = Instant::now();
    cfg.validate().map_err(EngineError::Config)?;
    // The data directory is the daemon's alone (tokens, the development key): 0700.
    crate::private::ensure_private_dir(&cfg.data_dir)?;
    // Before anything else is touched: a target that cannot keep the WORM promise refuses start.
    let replicator = crate::replication::prepare(&cfg)?;
    let seg_dir = cfg.data_dir.join(layout::SEGMENTS_DIR);
    std::fs::create_dir_all(&seg_dir).map_err(io_err(&seg_dir, "create data directory"))?;
    let _meta = load_or_create_meta(&cfg)?;
    let keyring = Keyring::open(&cfg, signer)?;
    let alg = cfg.tree_hash;
    let mut report = RecoveryReport::default();

    // 1. The newest checkpoint: a promise about what the segments hold.
    let (cp_log, latest) = CheckpointLog::open(
        &cfg.data_dir.join(layout::CHECKPOINT_LOG_FILE),
        &cfg.origin,
        &keyring.all_keys(),
    )?;
    let (cp_size, cp_root) = latest
        .as_ref()
        .map(|c| (c.checkpoint.size, c.checkpoint.root))
        .unwrap_or((0, alg.empty()));
    report.checkpoint_size = cp_size;
    keyring.note_signed(cp_size);

    // 2. The hash store, brought back to exactly the checkpoint.
    let hashes = HashFiles::open(&cfg.data_dir.join("hashes"), cfg.hash_cache_bytes_max)?;
    let mut derive_from = cp_size;
    let store_ok = hashes.truncate_to(cp_size)?
        && tree::tree_hash(alg, cp_size, &hashes)
            .map(|r| r == cp_root)
            .unwrap_or(false);
    if !store_ok {
        tracing::warn!(
            "hash store does not match checkpoint {cp_size}; rebuilding it from the segments"
        );
        hashes.clear()?;
        derive_from = 0;
        report.hash_store_rebuilt = true;
    }
    let mut edge = if derive_from == 0 {
        RightEdge::new(alg)
    } else {
        RightEdge::load(alg, derive_from, &hashes)?
    };
    let mut pending = PendingNodes::new();
    let mut root_at_cp: Option<Hash> = (derive_from == cp_size).then_some(cp_root);
    let mut derive =
        |index: u64, rec: &[u8], edge: &mut RightEdge, pending: &mut PendingNodes| -> Result<()> {
            if index < derive_from {
                return Ok(());
            }
            assert_eq!(index, edge.size(), "re-derivation out of order");
            edge.append(alg.leaf(rec), |n, h| pending.push(n, h));
            if edge.size() == cp_size {
                root_at_cp = Some(edge.root());
            }
            if edge.size().is_multiple_of(65536) {
                pending.flush(&hashes)?;
            }
            Ok(())
        };

    // 3. Segments in order: sealed ones, then open ones; contiguous from leaf 0.
    let mut sealed_list = Vec::new();
    let mut open_list = Vec::new();
    let mut prealloc = Vec::new();
    let mut recycle = Vec::new();
    for entry in std::fs::read_dir(&seg_dir).map_err(io_err(&seg_dir, "list"))? {
        let entry = entry.map_err(io_err(&seg_dir, "list"))?;
        let name = entry.file_name().to_string_lossy().to_string();
        match parse_name(&name) {
            Some(SegmentName::Sealed(a, b)) => sealed_list.push((a, b, entry.path())),
            Some(SegmentName::Open(a)) => open_list.push((a, entry.path())),
            Some(SegmentName::Prealloc) => prealloc.push(entry.path()),
            Some(SegmentName::Recycle) => recycle.push(entry.path()),
            Some(SegmentName::Temporary) => {
                std::fs::remove_file(entry.path())
                    .map_err(io_err(entry.path(), "remove leftover"))?;
            }
            None => tracing::warn!("ignoring unknown file {}", entry.path().display()),
        }
    }
    sealed_list.sort();
    open_list.sort();
    let mut unsigned_footers = std::collections::VecDeque::new();
    let mut set = SegmentSet {
        sealed: Vec::new(),
        open: Vec::new(),
        pruned: Vec::new(),
    };
    // Segments deleted locally by local retention are explained by the pruned list; any
    // other gap is still refused below.
    let pruned_path = crate::pruned::pruned_path(&cfg.data_dir);
    let mut pieces: Vec<(u64, u64, Piece)> = Vec::new();
    let mut unlinked = false;
    let mut pruned = crate::pruned::read(&cfg.data_dir)?.into_iter().peekable();
    for (a, b, path) in sealed_list {
        while let Some(p) = pruned.next_if(|p| p.first < a) {
            pieces.push((p.first, p.end, Piece::Pruned(p)));
        }
        if let Some(p) = pruned.next_if(|p| p.first == a && p.end == b) {
            // Recorded as pruned, then a crash before the unlink: finish it.
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
    let mut end = 0u64;
    for (a, b, piece) in pieces {
        let path = match piece {
            Piece::Local(path) => path,
            Piece::Pruned(p) => {
                if a != end {
                    return Err(corrupt(
                        &pruned_path,
                        format!("pruned segment [{a}, {b}) does not follow leaf {end}: a segment is missing"),
                    ));
                }
                if b > derive_from {
                    return Err(corrupt(
                        &pruned_path,
                        format!("the hash store must be re-derived from leaf {derive_from}, but segment [{a}, {b}) was pruned locally (its records are only on the store, {}); copy that object back into segments/ to start", p.key),
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
        let file = std::fs::File::open(&path).map_err(io_err(&path, "open"))?;
        let (header, footer) = segments::load_sealed(&path, &file)?;
        if header.first_index != a
            || header.first_index + header.count != b
            || header.tree_hash != alg
        {
            return Err(corrupt(
                &path,
                "header does not match the file name or the log's tree hash",
            ));
        }
        // Sealed while the signer was down: the checkpointer signs a checkpoint at its end.
        let signed_footer = !footer.checkpoint_note.is_empty();
        if !signed_footer {
            unsigned_footers.push_back(b);
        }
        let seg = Segment {
            first: a,
            end: b,
            path: path.clone(),
            file: Arc::new(file),
            body: Body::Sealed {
                footer: Arc::new(footer),
            },
        };
        if b > derive_from {
            seg.for_each_record(derive_from.max(a), b, &mut |i, rec| {
                derive(i, rec, &mut edge, &mut pending)?;
                Ok(true)
            })?;
        }
        set.sealed.push(Arc::new(seg));
        if signed_footer {
            keyring.note_signed(b);
        }
        end = b;
    }
    let mut open_state: Option<OpenSegment> = None;
    let mut to_seal = Vec::new();
    let open_count = open_list.len();
    for (n, (a, path)) in open_list.into_iter().enumerate() {
        if a < end {
            // Sealed before the crash; only its retirement was lost.
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
        let allowance = auditlog_formats::batch::torn_tail_allowance_bytes(cfg.batch_bytes_max);
        let mut max_class = 0u8;
        let scan = segments::scan_open(&path, &file, a, allowance, |i, rec| {
            derive(i, rec, &mut edge, &mut pending)
        })?;
        for b in &scan.batches {
            let mut h = [0u8; auditlog_formats::batch::BATCH_HEADER_BYTES];
            use std::os::unix::fs::FileExt;
            file.read_exact_at(&mut h, b.offset)
                .map_err(io_err(&path, "read"))?;
            let header = auditlog_formats::batch::decode_header(&h)
                .map_err(|e| corrupt(&path, format!("batch at offset {}: {e}", b.offset)))?;
            max_class = max_class.max(header.max_classification);
        }
        if let Some((at, why)) = &scan.torn {
            if n + 1 != open_count {
                return Err(corrupt(
                    &path,
                    format!("batch at offset {at}: {why}, in a segment that is not the last"),
                ));
            }
            let msg = format!("{}: cut torn tail at offset {at} ({why})", path.display());
            tracing::warn!("{msg}");
            report.torn_tail = Some(msg);
            // Zero what the torn write left, so no stale bytes sit after the next batch.
            let file_len = file.metadata().map_err(io_err(&path, "stat"))?.len();
            let zero_to = (at + allowance).min(file_len);
            let zeros = vec![0u8; (zero_to - at) as usize];
            crate::io::pwritev_all(&file, *at, &[&zeros])
                .map_err(io_err(&path, "zero torn tail"))?;
            file.sync_data().map_err(io_err(&path, "fdatasync"))?;
        }
        let file = Arc::new(file);
        set.open.push(OpenView {
            first: a,
            end: scan.end_index,
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
            max_classification: max_class,
        };
        if let Some(prev) = open_state.replace(seg) {
            to_seal.push(prev);
        }
        end = scan.end_index;
    }
    pending.flush(&hashes)?;
    report.rederived_leaves = end.saturating_sub(derive_from);

    // 4. The checkpoint must be a prefix of what the segments hold.
    if cp_size > end {
        return Err(corrupt(
            cfg.data_dir.join(layout::CHECKPOINT_LOG_FILE),
            format!("the newest checkpoint covers {cp_size} events but the segments hold {end}: segments were lost or cut; refusing to start"),
        ));
    }
    if root_at_cp != Some(cp_root) && cp_size > 0 {
        return Err(corrupt(
            cfg.data_dir.join(layout::CHECKPOINT_LOG_FILE),
            format!("the segments give a different root at the checkpointed size {cp_size}: records were altered; refusing to start"),
        ));
    }
    assert_eq!(
        edge.size(),
        end,
        "tree and segments disagree after recovery"
    );
    report.tree_size = end;

    let (appender, io_name) = Appender::new(cfg.io_mode).map_err(io_err(&seg_dir, "set up I/O"))?;
    let leaf_index = crate::leafindex::LeafIndex::open(&cfg.data_dir.join("leafindex"), end)?;
    let remote = read_target(&cfg)?;
    let shared = Arc::new(Shared {
        remote,
        hashes: hashes.clone(),
        leaf_index,
        keyring,
        io_mode_name: io_name,
        head: Mutex::new(TreeHead {
            size: end,
            root: edge.root(),
        }),
        size: AtomicU64::new(end),
        segments: RwLock::new(set),
        checkpoint: Mutex::new(latest.map(Arc::new)),
        checkpoint_cv: Condvar::new(),
        checkpoint_wanted: Mutex::new(0),
        checkpoint_wake: Condvar::new(),
        checkpoint_at: Mutex::new(None),
        failed: Mutex::new(None),
        failed_flag: AtomicBool::new(false),
        prealloc_error: Mutex::new(None),
        recycle: Mutex::new(recycle.into_iter().map(|p| (p, None)).collect()),
        signer_error: Mutex::new(None),
        signer_failures: AtomicU64::new(0),
        signer_failures_in_a_row: AtomicU64::new(0),
        signing_down: AtomicBool::new(false),
        unsigned_footers: Mutex::new(unsigned_footers),
        seal_error: Mutex::new(None),
        seal_failures: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
        stats: Mutex::new(Stats::default()),
        queued: std::sync::OnceLock::new(),
        checkpoint_listeners: Mutex::new(Vec::new()),
        config: cfg,
    });

    // 5. Threads: preallocator, sealer, sequencer, checkpointer.
    // A rendezvous channel: the preallocator holds one ready file, not one more in a queue.
    let (prealloc_tx, prealloc_rx) = crossbeam_channel::bounded::<PathBuf>(0);
    let next_n = prealloc
        .iter()
        .filter_map(|p| {
            p.file_stem()?
                .to_str()?
                .strip_prefix("prealloc-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1);
    let mut threads = Vec::new();
    {
        let shared = shared.clone();
        threads.push(spawn(&shared.clone(), "auditlog-prealloc", move || {
            crate::io::lower_thread_priority(crate::io::Background::LowIo);
            preallocate(shared, prealloc, next_n, prealloc_tx)
        })?);
    }
    // Bounded: the sequencer waits at a rotation once sealing is this far behind. The
    // segments recovery found unsealed all fit, whatever their number.
    let (seal_tx, seal_rx) =
        crossbeam_channel::bounded(shared.config.seal_queue_segments_max.max(to_seal.len()));
    for old in to_seal {
        let end = shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .iter()
            .find(|v| v.first == old.first)
            .map(|v| v.end)
            .unwrap_or(old.first);
        seal_tx
            .send(crate::sequencer::SealJob {
                first: old.first,
                end,
                path: old.path,
                file: old.file,
                max_classification: old.max_classification,
            })
            .map_err(|_| EngineError::Failed("sealer gone".into()))?;
    }
    let open = match open_state {
        Some(o) => o,
        None => {
            let p = prealloc_rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| {
                    EngineError::Failed(
                        shared
                            .prealloc_error()
                            .unwrap_or_else(|| "could not prepare the first segment".into()),
                    )
                })?;
            let path = shared.segments_dir().join(segments::open_name(end));
            std::fs::rename(&p, &path).map_err(io_err(&path, "activate segment"))?;
            crate::io::sync_dir(&shared.segments_dir()).map_err(io_err(&path, "sync"))?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path, "open"))?;
            let o = OpenSegment {
                first: end,
                path,
                file: Arc::new(file),
                write_offset: 0,
                opened_at: Instant::now(),
                max_classification: 0,
            };
            shared.add_open_segment(&o);
            o
        }
    };
    let (submit_tx, submit_rx) = crossbeam_channel::bounded(shared.config.queue_submissions_max);
    // Set once, here, before any submission exists.
    let _ = shared.queued.set(submit_rx.clone());
    let seq = Sequencer {
        shared: shared.clone(),
        rx: submit_rx,
        appender,
        open,
        edge,
        pending,
        prealloc_rx,
        seal_tx,
    };
    // The sequencer is joined first on shutdown, so queued work drains before the final checkpoint.
    threads.insert(0, spawn(&shared, "auditlog-sequencer", move || seq.run())?);
    {
        let shared = shared.clone();
        threads.push(spawn(&shared.clone(), "auditlog-sealer", move || {
            crate::io::lower_thread_priority(crate::io::Background::IdleIo);
            crate::sealer::run(shared, seal_rx)
        })?);
    }
    {
        let shared = shared.clone();
        threads.push(spawn(
            &shared.clone(),
            "auditlog-checkpointer",
            move || {
                // Checkpoints are off the ack path; building the leaf index for them is ~0.13
                // of a core at 526k events/s. At nice 10 the ack p99 at 596k went from 8.3 to
                // 6.9 ms (medians of 10, A/B). Under saturation checkpoints come later
                // (`auditlog_checkpoint_age_milliseconds` shows it), acks do not.
                crate::io::lower_thread_priority(crate::io::Background::LowIo);
                crate::checkpointer::run(shared, cp_log)
            },
        )?);
    }
    let replication = match replicator {
        Some((r, monitor)) => {
            let shared = shared.clone();
            threads.push(spawn(&shared.clone(), "auditlog-replicator", move || {
                crate::io::lower_thread_priority(crate::io::Background::IdleIo);
                r.run(shared)
            })?);
            Some(monitor)
        }
        None => None,
    };
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        "log open: {} events, checkpoint {}, recovery {:?}",
        report.tree_size,
        report.checkpoint_size,
        report
    );
    Ok(Engine {
        shared,
        submit_tx: Some(submit_tx),
        threads,
        recovery: report,
        started,
        replication,
    })
}

/// The store pruned segments are read from: a target of its own, so readers never wait
/// on the replicator's uploads.
fn read_target(cfg: &EngineConfig) -> Result<crate::remote::RemoteSegments> {
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
fn spawn(
    shared: &Arc<Shared>,
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                shared.fail(Fault::other(format!("thread {name} panicked: {msg}")));
                // What was queued will never be written: answer it (a panicked sequencer
                // answers nothing itself).
                shared.refuse_queued();
                // Wake whoever waits on the engine (appenders, checkpoint waiters).
                let _want = shared
                    .checkpoint_wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                shared.checkpoint_wake.notify_all();
            }
        })
        .map_err(|e| EngineError::Failed(format!("cannot start thread {name}: {e}")))
}

/// A key name from the origin (`layout::default_key_name`).
pub(crate) fn key_name(origin: &str) -> String {
    auditlog_formats::layout::default_key_name(origin)
}

/// Moves a recycled segment no reader holds open to `partial`; `None` if there is none.
fn take_recycled(shared: &Shared, partial: &std::path::Path) -> Option<()> {
    let mut list = shared.recycle.lock().unwrap_or_else(|e| e.into_inner());
    // The sealer's handle is the only one left once no reader is still inside the file
    // (readers clone the segment's handle for as long as they read it).
    let i = list
        .iter()
        .position(|(_, f)| f.as_ref().is_none_or(|f| Arc::strong_count(f) == 1))?;
    let (path, _) = list.swap_remove(i);
    drop(list);
    match std::fs::rename(&path, partial) {
        Ok(()) => Some(()),
        Err(e) => {
            tracing::warn!("cannot recycle {}: {e}", path.display());
            None
        }
    }
}

/// Hands a sealed open segment to the preallocator (see `take_recycled`).
pub(crate) fn recycle(shared: &Shared, path: PathBuf, file: Arc<std::fs::File>) {
    shared
        .recycle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path, Some(file)));
}

/// Keeps one zero-filled segment file ready ahead of the writer.
fn preallocate(
    shared: Arc<Shared>,
    existing: Vec<PathBuf>,
    mut n: u64,
    tx: crossbeam_channel::Sender<PathBuf>,
) {
    let dir = shared.segments_dir();
    let bytes = shared.config.segment_bytes;
    let mut ready: Vec<PathBuf> = existing
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.len() == bytes)
                .unwrap_or(false)
                || std::fs::remove_file(p).is_err()
        })
        .collect();
    loop {
        crate::config::FaultHooks::maybe_panic(shared.config.faults.as_ref(), "auditlog-prealloc");
        let path = match ready.pop() {
            Some(p) => p,
            None => {
                loop {
                    let path = dir.join(format!("prealloc-{n:06}.tmp"));
                    let partial = dir.join(format!("prealloc-{n:06}.partial"));
                    n += 1;
                    let _ = std::fs::remove_file(&partial);
                    // A sealed open segment is zeroed in place rather than unlinked: freeing
                    // 256 MiB (with online discard) stalled the disk under the sequencer's
                    // syncs, and writing over allocated blocks needs no allocation either.
                    let made = match take_recycled(&shared, &partial) {
                        Some(()) => crate::io::zero_in_place(&partial, bytes),
                        None => crate::io::create_zeroed(&partial, bytes),
                    }
                    .and_then(|()| std::fs::rename(&partial, &path));
                    match made {
                        Ok(()) => {
                            shared.set_prealloc_error(None);
                            break path;
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&partial);
                            let why = if e.raw_os_error() == Some(libc::ENOSPC) {
                                Fault::disk_full(format!(
                                    "cannot zero-fill the next {bytes}-byte segment in {}",
                                    dir.display()
                                ))
                            } else {
                                Fault::other(format!(
                                    "cannot prepare the next segment in {}: {e}",
                                    dir.display()
                                ))
                            };
                            tracing::warn!("{}", why.text());
                            shared.set_prealloc_error(Some(why));
                            if shared.shutting_down.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            }
        };
        let mut item = path;
        loop {
            match tx.send_timeout(item, Duration::from_millis(200)) {
                Ok(()) => break,
                Err(crossbeam_channel::SendTimeoutError::Timeout(p)) => {
                    if shared.shutting_down.load(Ordering::SeqCst) {
                        return;
                    }
                    item = p;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
            }
        }
    }
}
