//! In-process load generator for the auditlog engine.
//!
//! Default mode: measures the disk's raw durable write rate (pwrite + fdatasync, appending
//! and overwriting; 64 KiB, 256 KiB, 1 MiB and 4 MiB = the engine's default group-commit
//! limit) on the data directory's file system, then runs `--runs` closed-loop
//! ingest runs against a fresh engine each and reports per-run numbers and medians.
//! `--memory-check`: RSS at 1e6 and 1e7 events on one engine.
//! `--recovery-check`: time `Engine::open` on a copy of a log whose open segment holds
//! ~1 GiB past its (old) checkpoint, so recovery must re-derive all of it.
//!
//! Every event is synced before its receipt; nothing here relaxes durability.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auditlog_benches::{
    bench_data_root, cpu_by_thread_name, event, median, process_cpu_time, run_load, vm_rss_kib,
    LoadResult,
};
use auditlog_engine::{Engine, EngineConfig, IoMode, Stats};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Io {
    Auto,
    Uring,
    Pwrite,
}

impl From<Io> for IoMode {
    fn from(io: Io) -> IoMode {
        match io {
            Io::Auto => IoMode::Auto,
            Io::Uring => IoMode::IoUring,
            Io::Pwrite => IoMode::Pwrite,
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "auditlog in-process ingest benchmark")]
struct Args {
    /// Base directory for logs and raw-disk files (default: a fresh directory under
    /// target/bench-data, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Events per run.
    #[arg(long, default_value_t = 4_000_000)]
    events: u64,
    #[arg(long, default_value_t = 256)]
    event_bytes: usize,
    /// Events per submitted EventBatch.
    #[arg(long, default_value_t = 256)]
    batch_events: usize,
    /// Submissions in flight per producer.
    #[arg(long, default_value_t = 64)]
    window: usize,
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    #[arg(long, default_value_t = 256)]
    segment_mib: u64,
    /// Engine `batch_bytes_max` (one group commit) in MiB; default: the engine's (4 MiB).
    #[arg(long)]
    batch_mib: Option<usize>,
    /// Write a JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Distinct pre-generated payloads per producer (used round-robin).
    #[arg(long, default_value_t = 8192)]
    pool: usize,
    /// Skip the raw pwrite + fdatasync measurement.
    #[arg(long)]
    no_raw: bool,
    /// Raw measurement: stop each case after this many MiB ...
    #[arg(long, default_value_t = 256)]
    raw_mib: u64,
    /// ... or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 2.0)]
    raw_secs: f64,
    /// Instead of the ingest runs: RSS at 1e6 and at 1e7 events on one engine.
    #[arg(long)]
    memory_check: bool,
    /// Instead of the ingest runs: time recovery of a ~1 GiB open segment.
    #[arg(long)]
    recovery_check: bool,
    /// Record bytes the recovery check puts in the open segment.
    #[arg(long, default_value_t = 1024)]
    recovery_mib: u64,
    /// Keep the data directory.
    #[arg(long)]
    keep: bool,
    /// Sign checkpoints with a PKCS#11 key instead of the key file: the module path (the
    /// token and key must exist; the PIN is read from $AUDITLOG_BENCH_HSM_PIN).
    #[arg(long, requires_all = ["pkcs11_token", "pkcs11_key"])]
    pkcs11_module: Option<PathBuf>,
    #[arg(long)]
    pkcs11_token: Option<String>,
    #[arg(long)]
    pkcs11_key: Option<String>,
}

fn main() {
    let args = Args::parse();
    let (base, created) = match &args.dir {
        Some(d) => (d.clone(), !d.exists()),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (
                bench_data_root().join(format!("ingest-{}-{nanos}", std::process::id())),
                true,
            )
        }
    };
    std::fs::create_dir_all(&base).unwrap_or_else(|e| die(&format!("{}: {e}", base.display())));
    println!("data directory: {}", base.display());

    let summary = if args.memory_check || args.recovery_check {
        let mut s = json!({ "config": config_json(&args) });
        if args.memory_check {
            s["memory_check"] = memory_check(&args, &base);
        }
        if args.recovery_check {
            s["recovery_check"] = recovery_check(&args, &base);
        }
        s
    } else {
        throughput(&args, &base)
    };

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary).expect("serialisable summary");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
        println!("summary written to {}", path.display());
    }
    if args.keep {
        println!("kept {}", base.display());
    } else if created {
        let _ = std::fs::remove_dir_all(&base);
    }
}

fn die(msg: &str) -> ! {
    eprintln!("ingest: {msg}");
    std::process::exit(1)
}

fn config_json(a: &Args) -> Value {
    json!({
        "producers": a.producers,
        "events": a.events,
        "event_bytes": a.event_bytes,
        "batch_events": a.batch_events,
        "window": a.window,
        "io": format!("{:?}", a.io).to_lowercase(),
        "segment_mib": a.segment_mib,
        "batch_bytes_max_mib": a.batch_mib.unwrap_or(EngineConfig::new("x").batch_bytes_max >> 20),
        "runs": a.runs,
        "pool": a.pool,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    })
}

fn engine_config(a: &Args, dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.io_mode = a.io.into();
    c.segment_bytes = a.segment_mib << 20;
    if let Some(mib) = a.batch_mib {
        c.batch_bytes_max = mib << 20;
    }
    if let (Some(module), Some(token), Some(key)) =
        (&a.pkcs11_module, &a.pkcs11_token, &a.pkcs11_key)
    {
        c.signer = auditlog_engine::SignerConfig::Pkcs11 {
            spec: auditlog_engine::Pkcs11Spec {
                module: module.clone(),
                token_label: token.clone(),
                key_label: key.clone(),
            },
            name: None,
        };
        c.pkcs11_pin = Some(auditlog_engine::PinSource::Env(
            "AUDITLOG_BENCH_HSM_PIN".into(),
        ));
    }
    c
}

/// Counters of the block device holding `path`, from `/proc/diskstats`.
#[derive(Clone, Copy, Default)]
struct DiskCounters {
    writes: u64,
    sectors_written: u64,
    flushes: u64,
}

fn disk_counters(path: &Path) -> Option<DiskCounters> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/diskstats").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[0].parse() != Ok(major) || f[1].parse() != Ok(minor) {
            return None;
        }
        let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(DiskCounters {
            writes: n(7),
            sectors_written: n(9),
            flushes: n(18),
        })
    })
}

/// Where the run's CPU went, per event, by thread (engine threads by name).
fn cpu_split(
    load: &LoadResult,
    total: Duration,
    before: &std::collections::BTreeMap<String, Duration>,
    after: &std::collections::BTreeMap<String, Duration>,
) -> Value {
    let per_event_us = |d: Duration| d.as_secs_f64() * 1e6 / load.events.max(1) as f64;
    let mut split = serde_json::Map::new();
    let mut named = Duration::ZERO;
    for (name, cpu) in after {
        if !name.starts_with("auditlog-") {
            continue;
        }
        let d = cpu.saturating_sub(before.get(name).copied().unwrap_or_default());
        named += d;
        split.insert(name.clone(), json!(per_event_us(d)));
    }
    split.insert("producers".into(), json!(per_event_us(load.producer_cpu)));
    let other = total.saturating_sub(named + load.producer_cpu);
    split.insert(
        "other (io_uring workers, main)".into(),
        json!(per_event_us(other)),
    );
    json!({
        "total_cpu_s": total.as_secs_f64(),
        "cpu_utilisation_of_all_cores": total.as_secs_f64()
            / load.elapsed.as_secs_f64()
            / std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64,
        "total_us_per_event": per_event_us(total),
        "us_per_event_by_thread": split,
    })
}

/// Distinct payloads, one pool per producer, generated before anything is timed.
fn payload_pools(a: &Args) -> Vec<Vec<Vec<u8>>> {
    (0..a.producers.max(1))
        .map(|p| {
            (0..a.pool.max(1))
                .map(|i| event((p * a.pool + i) as u64, a.event_bytes))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Throughput runs

struct RunNumbers {
    json: Value,
    events_per_s: f64,
    payload_mb_s: f64,
    disk_mb_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    batches: f64,
    events_per_commit: f64,
    bytes_per_commit: f64,
    sync_us: f64,
}

fn stats_delta(after: &Stats, before: &Stats) -> Stats {
    Stats {
        events: after.events - before.events,
        bytes: after.bytes - before.bytes,
        batches: after.batches - before.batches,
        sync_ns_total: after.sync_ns_total - before.sync_ns_total,
        ..Stats::default()
    }
}

fn run_numbers(load: &LoadResult, stats: &Stats, io_mode: &str) -> RunNumbers {
    let secs = load.elapsed.as_secs_f64();
    let h = &load.latency_us;
    let batches = stats.batches.max(1) as f64;
    let n = RunNumbers {
        json: Value::Null,
        events_per_s: load.events as f64 / secs,
        payload_mb_s: load.payload_bytes as f64 / secs / 1e6,
        disk_mb_s: stats.bytes as f64 / secs / 1e6,
        p50: h.value_at_quantile(0.50) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p999: h.value_at_quantile(0.999) as f64,
        batches: stats.batches as f64,
        events_per_commit: stats.events as f64 / batches,
        bytes_per_commit: stats.bytes as f64 / batches,
        sync_us: stats.sync_ns_total as f64 / batches / 1e3,
    };
    RunNumbers {
        json: json!({
            "io_mode": io_mode,
            "events": load.events,
            "elapsed_s": secs,
            "events_per_s": n.events_per_s,
            "payload_mb_per_s": n.payload_mb_s,
            "disk_mb_per_s": n.disk_mb_s,
            "submissions": load.submissions,
            "latency_us": {
                "p50": n.p50, "p99": n.p99, "p999": n.p999,
                "max": h.max(), "mean": h.mean(),
            },
            "batches": stats.batches,
            "events_per_group_commit": n.events_per_commit,
            "bytes_per_group_commit": n.bytes_per_commit,
            "mean_sync_us": n.sync_us,
            "stats_bytes": stats.bytes,
        }),
        ..n
    }
}

fn throughput(a: &Args, base: &Path) -> Value {
    let raw = if a.no_raw {
        Vec::new()
    } else {
        raw_disk(base, a.raw_mib << 20, Duration::from_secs_f64(a.raw_secs))
    };
    println!(
        "ingest: {} producers, {} events of {} B per run, {} events per submission, \
         {} in flight per producer, io {:?}, segments {} MiB",
        a.producers, a.events, a.event_bytes, a.batch_events, a.window, a.io, a.segment_mib
    );
    let pools = payload_pools(a);
    let mut runs = Vec::new();
    let mut io_mode = String::new();
    for r in 0..a.runs.max(1) {
        let dir = base.join(format!("run-{r}"));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Engine::open(engine_config(a, &dir), None)
            .unwrap_or_else(|e| die(&format!("open engine: {e}")));
        let before = engine.status().stats;
        let (cpu0, threads0, disk0) = (
            process_cpu_time(),
            cpu_by_thread_name(),
            disk_counters(&dir).unwrap_or_default(),
        );
        let load = run_load(&engine, &pools, a.events, a.batch_events, a.window);
        let (cpu1, threads1, disk1) = (
            process_cpu_time(),
            cpu_by_thread_name(),
            disk_counters(&dir).unwrap_or_default(),
        );
        if let Some(e) = &load.error {
            die(&format!("run {r}: {e}"));
        }
        let status = engine.status();
        io_mode = status.io_mode.to_string();
        let stats = stats_delta(&status.stats, &before);
        assert_eq!(
            stats.events, load.events,
            "engine and load disagree on events"
        );
        let mut n = run_numbers(&load, &stats, status.io_mode);
        let cpu = cpu_split(&load, cpu1 - cpu0, &threads0, &threads1);
        let secs = load.elapsed.as_secs_f64();
        let dev_bytes = (disk1.sectors_written - disk0.sectors_written) * 512;
        let device = json!({
            "write_mb_per_s": dev_bytes as f64 / secs / 1e6,
            "write_amplification": dev_bytes as f64 / stats.bytes.max(1) as f64,
            "write_requests": disk1.writes - disk0.writes,
            "flushes": disk1.flushes - disk0.flushes,
        });
        n.json["cpu"] = cpu.clone();
        n.json["device"] = device.clone();
        println!(
            "run {r}: {:>10.0} events/s  {:>7.1} MB/s payload  {:>7.1} MB/s disk  \
             p50 {:>6.0} µs  p99 {:>6.0} µs  p999 {:>6.0} µs  {} commits  {:.0} ev/commit  \
             {:.0} KiB/commit  sync {:.0} µs  [{}]",
            n.events_per_s,
            n.payload_mb_s,
            n.disk_mb_s,
            n.p50,
            n.p99,
            n.p999,
            n.batches,
            n.events_per_commit,
            n.bytes_per_commit / 1024.0,
            n.sync_us,
            status.io_mode,
        );
        println!(
            "       CPU {:.2} µs/event ({:.0}% of all cores): {}",
            cpu["total_us_per_event"].as_f64().unwrap_or(0.0),
            cpu["cpu_utilisation_of_all_cores"].as_f64().unwrap_or(0.0) * 100.0,
            cpu["us_per_event_by_thread"]
                .as_object()
                .map(|m| m
                    .iter()
                    .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        println!(
            "       device (whole disk, all processes): {:.1} MB/s written, {:.2}x the log's \
             bytes, {} write requests, {} flushes",
            device["write_mb_per_s"].as_f64().unwrap_or(0.0),
            device["write_amplification"].as_f64().unwrap_or(0.0),
            device["write_requests"],
            device["flushes"]
        );
        engine
            .shutdown()
            .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
        let _ = std::fs::remove_dir_all(&dir);
        runs.push(n);
    }
    let m = |f: fn(&RunNumbers) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let med = json!({
        "events_per_s": m(|r| r.events_per_s),
        "payload_mb_per_s": m(|r| r.payload_mb_s),
        "disk_mb_per_s": m(|r| r.disk_mb_s),
        "latency_us": { "p50": m(|r| r.p50), "p99": m(|r| r.p99), "p999": m(|r| r.p999) },
        "batches": m(|r| r.batches),
        "events_per_group_commit": m(|r| r.events_per_commit),
        "bytes_per_group_commit": m(|r| r.bytes_per_commit),
        "mean_sync_us": m(|r| r.sync_us),
    });
    println!(
        "median of {}: {:.0} events/s  {:.1} MB/s payload  {:.1} MB/s disk  \
         p50 {:.0} µs  p99 {:.0} µs  p999 {:.0} µs  {:.0} commits  {:.0} ev/commit  sync {:.0} µs",
        runs.len(),
        m(|r| r.events_per_s),
        m(|r| r.payload_mb_s),
        m(|r| r.disk_mb_s),
        m(|r| r.p50),
        m(|r| r.p99),
        m(|r| r.p999),
        m(|r| r.batches),
        m(|r| r.events_per_commit),
        m(|r| r.sync_us),
    );
    let mut summary = json!({
        "config": config_json(a),
        "io_mode": io_mode,
        "runs": runs.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        "median": med,
        "raw_disk": raw.iter().map(RawResult::json).collect::<Vec<_>>(),
    });
    if !raw.is_empty() {
        let commit_bytes = m(|r| r.bytes_per_commit);
        let disk = m(|r| r.disk_mb_s);
        let closest = raw
            .iter()
            .map(|r| r.batch_bytes)
            .min_by(|x, y| {
                let d = |b: usize| ((b as f64) / commit_bytes.max(1.0)).ln().abs();
                d(*x).total_cmp(&d(*y))
            })
            .expect("raw results");
        let rate = |mode: &str| {
            raw.iter()
                .find(|r| r.batch_bytes == closest && r.mode == mode)
                .map(|r| r.mb_s)
                .unwrap_or(f64::NAN)
        };
        let (ow, ap) = (rate("overwrite"), rate("append"));
        println!(
            "engine disk rate {disk:.1} MB/s (group commits of {:.0} KiB) vs raw at {} KiB: \
             overwrite {ow:.1} MB/s (ratio {:.2}), append {ap:.1} MB/s (ratio {:.2})",
            commit_bytes / 1024.0,
            closest >> 10,
            disk / ow,
            disk / ap
        );
        summary["engine_vs_raw"] = json!({
            "engine_disk_mb_per_s": disk,
            "engine_bytes_per_group_commit": commit_bytes,
            "closest_raw_batch_bytes": closest,
            "raw_overwrite_mb_per_s": ow,
            "raw_append_mb_per_s": ap,
            "ratio_to_overwrite": disk / ow,
            "ratio_to_append": disk / ap,
        });
    }
    summary
}

// ---------------------------------------------------------------------------------------
// Raw disk

struct RawResult {
    mode: &'static str,
    batch_bytes: usize,
    bytes: u64,
    secs: f64,
    mb_s: f64,
    sync_p50_us: u64,
    sync_p99_us: u64,
}

impl RawResult {
    fn json(&self) -> Value {
        json!({
            "mode": self.mode,
            "batch_bytes": self.batch_bytes,
            "bytes": self.bytes,
            "secs": self.secs,
            "mb_per_s": self.mb_s,
            "fdatasync_p50_us": self.sync_p50_us,
            "fdatasync_p99_us": self.sync_p99_us,
        })
    }
}

/// Incompressible-looking bytes (xorshift), so no layer below can shortcut the writes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn raw_case(
    path: &Path,
    mode: &'static str,
    bs: usize,
    max_bytes: u64,
    max: Duration,
) -> RawResult {
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    if mode == "overwrite" {
        // Written zeros (not fallocate), synced, as the engine's preallocator does.
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < max_bytes {
            let n = (max_bytes - off).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], off).expect("zero-fill");
            off += n as u64;
        }
        file.sync_all().expect("fsync");
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .expect("sync dir");
        }
    }
    let buf = noise(bs, bs as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let mut syncs: Histogram<u64> = auditlog_benches::latency_histogram();
    let started = Instant::now();
    let mut off = 0u64;
    while off + bs as u64 <= max_bytes && started.elapsed() < max {
        file.write_all_at(&buf, off).expect("pwrite");
        let t = Instant::now();
        file.sync_data().expect("fdatasync");
        syncs.saturating_record((t.elapsed().as_micros() as u64).max(1));
        off += bs as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    RawResult {
        mode,
        batch_bytes: bs,
        bytes: off,
        secs,
        mb_s: off as f64 / secs / 1e6,
        sync_p50_us: syncs.value_at_quantile(0.5),
        sync_p99_us: syncs.value_at_quantile(0.99),
    }
}

fn raw_disk(base: &Path, max_bytes: u64, max: Duration) -> Vec<RawResult> {
    println!(
        "raw durable write rate in {} (each case: {} MiB or {:.1} s):",
        base.display(),
        max_bytes >> 20,
        max.as_secs_f64()
    );
    println!(
        "  {:<10} {:>9} {:>10} {:>14} {:>14}",
        "mode", "batch", "MB/s", "fdatasync p50", "fdatasync p99"
    );
    let path = base.join("raw-disk.bin");
    let mut out = Vec::new();
    for bs in [64usize << 10, 256 << 10, 1 << 20, 4 << 20] {
        for mode in ["append", "overwrite"] {
            let r = raw_case(&path, mode, bs, max_bytes, max);
            println!(
                "  {:<10} {:>6} KiB {:>10.1} {:>11} µs {:>11} µs",
                r.mode,
                r.batch_bytes >> 10,
                r.mb_s,
                r.sync_p50_us,
                r.sync_p99_us
            );
            out.push(r);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Memory check

fn memory_check(a: &Args, base: &Path) -> Value {
    let dir = base.join("memory");
    let _ = std::fs::remove_dir_all(&dir);
    let pools = payload_pools(a);
    let rss_start = vm_rss_kib().unwrap_or(0);
    let engine = Engine::open(engine_config(a, &dir), None)
        .unwrap_or_else(|e| die(&format!("open engine: {e}")));
    let rss_open = vm_rss_kib().unwrap_or(0);
    println!(
        "memory check: {} producers, {} B events; VmRSS {rss_start} KiB before open, \
         {rss_open} KiB after open",
        a.producers, a.event_bytes
    );
    let step = 1_000_000u64;
    let mut samples = Vec::new();
    let mut total = 0u64;
    while total < 10_000_000 {
        let load = run_load(&engine, &pools, step, a.batch_events, a.window);
        if let Some(e) = &load.error {
            die(&format!("memory check: {e}"));
        }
        total += step;
        let rss = vm_rss_kib().unwrap_or(0);
        let st = engine.status();
        println!(
            "  {total:>9} events: VmRSS {rss:>8} KiB  ({:.0} events/s, {} sealed + {} open segments)",
            step as f64 / load.elapsed.as_secs_f64(),
            st.sealed_segments,
            st.open_segments
        );
        samples.push(json!({
            "events": total,
            "vm_rss_kib": rss,
            "sealed_segments": st.sealed_segments,
            "events_per_s": step as f64 / load.elapsed.as_secs_f64(),
        }));
    }
    let at = |n: u64| {
        samples
            .iter()
            .find(|s| s["events"] == n)
            .and_then(|s| s["vm_rss_kib"].as_u64())
            .unwrap_or(0)
    };
    let (r1, r10) = (at(1_000_000), at(10_000_000));
    let ratio = r10 as f64 / r1.max(1) as f64;
    println!("VmRSS at 1e6: {r1} KiB, at 1e7: {r10} KiB, ratio {ratio:.3}");
    engine
        .shutdown()
        .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "vm_rss_kib_before_open": rss_start,
        "vm_rss_kib_after_open": rss_open,
        "vm_rss_kib_at_1e6": r1,
        "vm_rss_kib_at_1e7": r10,
        "ratio_1e7_to_1e6": ratio,
        "samples": samples,
    })
}

// ---------------------------------------------------------------------------------------
// Recovery check

/// Copies a log directory for recovery timing. Preallocated (never written) segment files
/// are recreated sparse at their full length rather than copied: the engine only checks
/// their length, and copying gigabytes of zeros would dominate the check.
fn copy_log(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_dir() {
            copy_log(&from, &to)?;
        } else if name.starts_with("prealloc-") {
            if name.ends_with(".tmp") {
                File::create(&to)?.set_len(entry.metadata()?.len())?;
            }
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Syncs every file under `dir` and drops it from the page cache, so the next read is cold.
fn evict(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            evict(&entry.path())?;
        } else {
            let f = File::open(entry.path())?;
            f.sync_all()?;
            // SAFETY: a valid open descriptor; fadvise only drops clean cached pages.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
    Ok(())
}

fn recovery_check(a: &Args, base: &Path) -> Value {
    let dir = base.join("recovery");
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = engine_config(a, &dir);
    cfg.segment_bytes = 1536 << 20;
    cfg.checkpoint_interval_ms = 3_600_000;
    cfg.seal_age_ms = 0;
    // 4-byte entry prefix + 9-byte record header per event.
    let per_event = (a.event_bytes + 13) as u64;
    let events = (a.recovery_mib << 20) / per_event;
    println!(
        "recovery check: {} events of {} B (~{} MiB of records) into a 1.5 GiB open segment, \
         checkpoint interval 1 h",
        events, a.event_bytes, a.recovery_mib
    );
    let t = Instant::now();
    let engine = Engine::open(cfg.clone(), None).unwrap_or_else(|e| die(&format!("open: {e}")));
    println!(
        "  fresh open (zero-fills the first segment): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let pools = payload_pools(a);
    let load = run_load(&engine, &pools, events, a.batch_events, a.window);
    if let Some(e) = &load.error {
        die(&format!("recovery check ingest: {e}"));
    }
    let st = engine.status();
    println!(
        "  ingested in {:.2} s ({:.0} events/s); tree {} events, {} MB of records, \
         checkpoint at {:?}, {} sealed segments",
        load.elapsed.as_secs_f64(),
        events as f64 / load.elapsed.as_secs_f64(),
        st.tree_size,
        st.stats.bytes / 1_000_000,
        st.checkpoint_size,
        st.sealed_segments
    );
    // The engine is idle (every receipt is in): copy its directory as a crash would leave
    // it. The copy's newest checkpoint is the old one, so recovery re-derives every leaf
    // past it from the open segment.
    let mut cases = Vec::new();
    for (name, cold) in [("cold", true), ("warm", false)] {
        let copy = base.join(format!("recovery-copy-{name}"));
        let _ = std::fs::remove_dir_all(&copy);
        copy_log(&dir, &copy).unwrap_or_else(|e| die(&format!("copy: {e}")));
        if cold {
            evict(&copy).unwrap_or_else(|e| die(&format!("evict: {e}")));
        }
        let mut c = cfg.clone();
        c.data_dir = copy.clone();
        let t = Instant::now();
        let reopened = Engine::open(c, None).unwrap_or_else(|e| die(&format!("reopen: {e}")));
        let wall = t.elapsed();
        let rep = reopened.status().recovery;
        assert_eq!(rep.tree_size, st.tree_size, "recovered tree size differs");
        assert_eq!(reopened.head(), engine.head(), "recovered head differs");
        println!(
            "  Engine::open on a {name}-cache copy: {:.3} s wall ({} ms by the engine's \
             report); checkpoint {}, re-derived {} leaves ({:.0} leaves/s, {:.0} MB/s of \
             records), hash store rebuilt: {}",
            wall.as_secs_f64(),
            rep.duration_ms,
            rep.checkpoint_size,
            rep.rederived_leaves,
            rep.rederived_leaves as f64 / wall.as_secs_f64(),
            st.stats.bytes as f64 / wall.as_secs_f64() / 1e6,
            rep.hash_store_rebuilt
        );
        cases.push(json!({
            "cache": name,
            "open_wall_s": wall.as_secs_f64(),
            "engine_reported_ms": rep.duration_ms,
            "checkpoint_size": rep.checkpoint_size,
            "tree_size": rep.tree_size,
            "rederived_leaves": rep.rederived_leaves,
            "hash_store_rebuilt": rep.hash_store_rebuilt,
        }));
        drop(reopened);
        let _ = std::fs::remove_dir_all(&copy);
    }
    engine
        .shutdown()
        .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "events": events,
        "record_bytes": st.stats.bytes,
        "ingest_events_per_s": events as f64 / load.elapsed.as_secs_f64(),
        "checkpoint_size_in_copy": st.checkpoint_size,
        "note": "copies taken while the engine was idle; their newest checkpoint predates the ingest, so recovery re-derives every leaf past it",
        "opens": cases,
    })
}
