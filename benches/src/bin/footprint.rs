//! Bytes per event, per component, on disk and in the bucket: ingests a realistic audit
//! corpus (seeded: random actors, resources, IPs, session and request ids, user agents, small
//! `details` objects; ~390 bytes of NDJSON each) into an engine that replicates to a local
//! `file://` bucket, waits until everything sealed is shipped, stops cleanly, and measures.
//!
//! `cargo run --release -p auditlog-benches --bin footprint -- [--events 1000000]
//!     [--segment-mib 64] [--seed 1] [--json PATH]`
//!
//! Sealed segments are counted over the events they hold (the open segment at the stop is a
//! preallocated file, not a measure of anything); the hash store, the leaf-hash index and
//! the bucket's objects over every event they cover.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auditlog_benches::Rng;
use auditlog_engine::{Engine, EngineConfig, ReplicationConfig, Submitter};
use auditlog_formats::segment::BlockCodec;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events per appended batch.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    /// The sealer's zstd level (default: the engine's).
    #[arg(long)]
    zstd_level: Option<i32>,
    /// The sealer's block codec, `columnar` or `zstd` (default: the engine's).
    #[arg(long)]
    codec: Option<String>,
    /// The sealer's raw block size in KiB (default: the engine's).
    #[arg(long)]
    block_kib: Option<usize>,
    /// Ship no level-0 tiles (`replication.ship_level0_tiles = false`).
    #[arg(long)]
    no_level0_tiles: bool,
    /// Keep the data directory and the bucket.
    #[arg(long)]
    keep: bool,
}

const EVENT_TYPES: [&str; 12] = [
    "auth.login",
    "auth.logout",
    "auth.mfa",
    "file.read",
    "file.write",
    "file.delete",
    "admin.user_create",
    "admin.role_grant",
    "db.query",
    "api.call",
    "config.change",
    "network.connect",
];
const ACTIONS: [&str; 8] = [
    "login", "logout", "read", "write", "delete", "grant", "query", "update",
];
const OUTCOMES: [&str; 3] = ["success", "failure", "error"];
const CLASSES: [&str; 3] = ["UNCLASSIFIED", "CUI//BASIC", "CUI//SP-PRIV"];
const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Safari/605.1.15",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "auditd-forwarder/1.4",
];
const DOMAINS: [&str; 4] = [
    "example.mil",
    "contractor.example",
    "corp.example",
    "lab.example",
];

/// One audit event of the seed's schema, `n`-th of the corpus.
fn event(r: &mut Rng, n: u64) -> String {
    let secs = 1_767_225_600 + n / 50; // 2026-01-01, fifty events a second
    let (y, mo, d) = auditlog_formats::time::civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let actor = format!("user{:05}@{}", r.below(100_000), r.pick(&DOMAINS));
    let resource = format!(
        "urn:{}:{}/{}",
        r.pick(&["app", "db", "fs", "api"]),
        r.pick(&["payroll", "hr", "eng", "ops", "finance", "logistics"]),
        r.below(1_000_000)
    );
    let ip = format!("10.{}.{}.{}", r.below(256), r.below(256), 1 + r.below(254));
    let details = match r.below(3) {
        0 => format!(r#"{{"method":"password","mfa":{}}}"#, r.below(2) == 1),
        1 => format!(
            r#"{{"bytes":{},"rows":{}}}"#,
            r.below(1 << 20),
            r.below(10_000)
        ),
        _ => format!(
            r#"{{"reason":"{}","attempt":{}}}"#,
            r.pick(&["expired", "denied", "ok"]),
            r.below(5)
        ),
    };
    format!(
        r#"{{"timestamp":"{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z","event_type":"{}","actor":"{actor}","action":"{}","resource":"{resource}","outcome":"{}","source_ip":"{ip}","session_id":"s-{}","request_id":"r-{}","user_agent":"{}","severity":{},"classification":"{}","details":{details}}}"#,
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        r.below(1000),
        r.pick(&EVENT_TYPES),
        r.pick(&ACTIONS),
        r.pick(&OUTCOMES),
        r.hex(16),
        r.hex(24),
        r.pick(&AGENTS),
        r.below(11),
        r.pick(&CLASSES),
    )
}

/// Bytes of every file under `dir` whose path (relative) passes `keep`.
fn bytes_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if keep(p.strip_prefix(dir).unwrap_or(&p)) => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// `[first, end)` of every sealed segment in the data directory.
fn sealed_ranges(data: &Path) -> Vec<(u64, u64)> {
    use auditlog_formats::layout::{parse_segment_name, SegmentName, SEGMENTS_DIR};
    std::fs::read_dir(data.join(SEGMENTS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(
            |e| match parse_segment_name(&e.file_name().to_string_lossy())? {
                SegmentName::Sealed(a, b) => Some((a, b)),
                _ => None,
            },
        )
        .collect()
}

fn die(msg: &str) -> ! {
    eprintln!("footprint: {msg}");
    std::process::exit(1)
}

fn main() {
    let a = Args::parse();
    let base =
        auditlog_benches::bench_data_root().join(format!("footprint-{}", std::process::id()));
    let (data, bucket) = (base.join("data"), base.join("bucket"));
    std::fs::create_dir_all(&bucket).unwrap_or_else(|e| die(&format!("{}: {e}", bucket.display())));
    let mut cfg = EngineConfig::new(&data);
    cfg.segment_bytes = a.segment_mib << 20;
    if let Some(l) = a.zstd_level {
        cfg.zstd_level = l;
    }
    if let Some(c) = &a.codec {
        cfg.block_codec =
            BlockCodec::from_name(c).unwrap_or_else(|| die("--codec: columnar or zstd"));
    }
    if let Some(k) = a.block_kib {
        cfg.block_raw_bytes = k << 10;
    }
    let (zstd_level, block_kib, codec) = (
        cfg.zstd_level,
        cfg.block_raw_bytes >> 10,
        cfg.block_codec.name(),
    );
    cfg.replication = Some(ReplicationConfig {
        target: format!("file://{}", bucket.display()),
        // A local directory keeps no retention lock; the bytes are what is measured here.
        allow_non_worm: true,
        ship_level0_tiles: !a.no_level0_tiles,
        ..Default::default()
    });
    let engine = Engine::open(cfg, None).unwrap_or_else(|e| die(&format!("open: {e}")));

    let mut rng = Rng(a.seed);
    let (mut raw_bytes, started) = (0u64, Instant::now());
    let mut n = 0;
    while n < a.events {
        let mut b = engine.new_batch(Submitter::token("footprint"));
        let end = (n + a.batch).min(a.events);
        for i in n..end {
            let e = event(&mut rng, i);
            raw_bytes += e.len() as u64 + 1; // as NDJSON
            b.add(e.as_bytes())
                .unwrap_or_else(|e| die(&format!("event {i}: {e}")));
        }
        engine
            .append(b)
            .unwrap_or_else(|e| die(&format!("append: {e}")));
        n = end;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    // Everything sealed shipped, tiles below the newest checkpoint included: every full
    // segment sealed (one open left), the shipped prefix at the last sealed end, no tiles due.
    engine.wait_checkpoint(a.events, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = engine.status();
        let r = s.replication.unwrap_or_else(|| die("replication off"));
        let sealed_end = sealed_ranges(&data)
            .iter()
            .map(|&(_, b)| b)
            .max()
            .unwrap_or(0);
        if s.open_segments == 1 && r.shipped_end == sealed_end && r.tiles_pending == 0 && r.idle {
            break;
        }
        if Instant::now() > deadline {
            die(&format!("not shipped within 10 minutes: {r:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The sealer's CPU (its thread, while it is alive): what the sealed bytes cost.
    let sealer_cpu = auditlog_benches::cpu_by_thread_name()
        .get("auditlog-sealer")
        .copied()
        .unwrap_or_default();
    engine
        .shutdown()
        .unwrap_or_else(|e| die(&format!("shutdown: {e}")));

    let sealed_events: u64 = sealed_ranges(&data).iter().map(|&(a, b)| b - a).sum();
    let is_sealed = |p: &Path| p.extension().is_some_and(|x| x == "seg");
    let under = |prefix: &'static str| move |p: &Path| p.starts_with(prefix);
    let mut rows: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    rows.insert(
        "local: sealed segments",
        (
            bytes_under(&data.join("segments"), &is_sealed),
            sealed_events,
        ),
    );
    rows.insert(
        "local: hash store",
        (bytes_under(&data.join("hashes"), &|_| true), a.events),
    );
    rows.insert(
        "local: leaf-hash index",
        (bytes_under(&data.join("leafindex"), &|_| true), a.events),
    );
    rows.insert(
        "bucket: segments",
        (bytes_under(&bucket, &under("segments")), sealed_events),
    );
    let tiles_total = bytes_under(&bucket, &under("tile"));
    let level0 = bytes_under(&bucket, &|p: &Path| {
        p.starts_with("tile/0") || p.starts_with("tile/bundle")
    });
    rows.insert("bucket: level-0 tiles", (level0, a.events));
    rows.insert("bucket: higher tiles", (tiles_total - level0, a.events));
    let per = |(b, e): (u64, u64)| if e == 0 { 0.0 } else { b as f64 / e as f64 };
    println!(
        "{} events, {:.1} bytes each as NDJSON, {} in sealed segments; ingest {:.1} s",
        a.events,
        raw_bytes as f64 / a.events as f64,
        sealed_events,
        ingest_s
    );
    let sealer_us = sealer_cpu.as_secs_f64() * 1e6 / sealed_events.max(1) as f64;
    println!(
        "sealer: {codec} blocks, zstd level {zstd_level}, {block_kib} KiB blocks, {sealer_us:.2} µs of CPU per sealed event"
    );
    let mut out = serde_json::Map::new();
    for (name, v) in &rows {
        println!("{name:28} {:>14} bytes  {:>7.1} bytes/event", v.0, per(*v));
        out.insert(
            name.to_string(),
            json!({"bytes": v.0, "events": v.1, "bytes_per_event": per(*v)}),
        );
    }
    let local = per(rows["local: sealed segments"])
        + per(rows["local: hash store"])
        + per(rows["local: leaf-hash index"]);
    let in_bucket = per(rows["bucket: segments"])
        + per(rows["bucket: level-0 tiles"])
        + per(rows["bucket: higher tiles"]);
    println!("{:28} {:>14}  {local:>7.1} bytes/event", "local total", "");
    println!(
        "{:28} {:>14}  {in_bucket:>7.1} bytes/event",
        "bucket total", ""
    );
    if let Some(p) = &a.json {
        let summary = json!({
            "events": a.events, "seed": a.seed, "segment_mib": a.segment_mib,
            "codec": codec, "zstd_level": zstd_level, "block_kib": block_kib, "sealer_cpu_us_per_event": sealer_us,
            "ndjson_bytes_per_event": raw_bytes as f64 / a.events as f64,
            "components": out, "local_bytes_per_event": local, "bucket_bytes_per_event": in_bucket,
        });
        std::fs::write(
            p,
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )
        .unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
    }
    if a.keep {
        println!("kept {}", base.display());
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
}
