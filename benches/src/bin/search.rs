//! Search numbers (issue 21): a log of the audit schema with realistic cardinalities
//! (10^5 actors, 50 event types, 10^6 resources, sessions of ~20 events, a request id per
//! event, 10^4 source addresses), built through the in-process engine.
//!
//! `search build --events N`: ingest with and without the search index (same run, fresh
//! logs of `--compare-events`, alternating), then the log of N events with it; reports the
//! index's bytes per event, how long it took to catch up, and the time to locate a one-hour
//! window, then actor, session and request-id queries in process (`--queries` of each,
//! limit 100, the server's default cost limit), then deletes the index and times its
//! rebuild on an idle engine (the indexer's own rate). `--window`, `--block` and
//! `--bucket-bits` set the index's shape. The log stays in `--dir` for the next step.
//!
//! `search query --url U --token T`: actor queries returning 100 events over HTTP (median,
//! p99), against `auditlogd --data-dir DIR/data`; with `--cli` and `--key`, times
//! `auditlog search --since --until --verify` over a window of `--verify-records` records.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use auditlog_benches::Rng;
use auditlog_engine::{Engine, EngineConfig, SearchRequest, Submitter};
use auditlog_formats::search::{Filter, SearchField};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Build {
        #[arg(long, default_value_t = 50_000_000)]
        events: u64,
        #[arg(long, default_value_t = 2_000_000)]
        compare_events: u64,
        #[arg(long, default_value_t = 2)]
        compare_runs: usize,
        #[arg(long, default_value_t = 4096)]
        batch: u64,
        #[arg(long, default_value_t = 2)]
        producers: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value_t = 200)]
        queries: u64,
        /// Skip the same-run comparison of ingest with and without the index.
        #[arg(long)]
        no_compare: bool,
        /// Skip timing the index's rebuild.
        #[arg(long)]
        no_rebuild: bool,
    },
    /// The in-process field queries of `build` again, on the log `build` left in `--dir`.
    Fields {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        queries: u64,
        /// `search_readers` (default: the engine's).
        #[arg(long)]
        readers: Option<usize>,
    },
    Query {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 500)]
        requests: u64,
        /// The `auditlog` binary, to time `search --verify`.
        #[arg(long)]
        cli: Option<PathBuf>,
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 1_000_000)]
        verify_records: u64,
    },
}

/// The search index's shape (the engine's defaults when not given).
#[derive(clap::Args, Clone, Copy)]
struct Shape {
    #[arg(long)]
    window: Option<u64>,
    #[arg(long)]
    block: Option<u32>,
    #[arg(long)]
    bucket_bits: Option<u32>,
    /// Seal zstd blocks (segment format 1) instead of the default columnar ones: a search
    /// re-checks a candidate by decoding its segment block, so the codec sets its cost.
    #[arg(long)]
    zstd_blocks: bool,
}

const ACTIONS: [&str; 8] = [
    "login", "logout", "read", "write", "delete", "grant", "query", "update",
];
const OUTCOMES: [&str; 3] = ["success", "failure", "error"];
const CLASSES: [&str; 5] = [
    "UNCLASSIFIED",
    "CUI//BASIC",
    "CUI//SP-PRIV",
    "CUI//SP-PROP",
    "CUI//SP-LEI",
];
const AREAS: [&str; 6] = ["payroll", "hr", "eng", "ops", "finance", "logistics"];

/// Event `n` of the corpus: actors uniform over 10^5, sessions of about 20 events.
fn event(r: &mut Rng, n: u64) -> String {
    let secs = 1_767_225_600 + n / 1000;
    let (y, mo, d) = auditlog_formats::time::civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let actor = r.below(100_000);
    let res = r.below(1_000_000);
    format!(
        r#"{{"timestamp":"{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z","event_type":"type.{}","actor":"user{actor:05}@corp.example","action":"{}","resource":"urn:db:{}/{res}","outcome":"{}","source_ip":"10.0.{}.{}","session_id":"s-{actor}-{}","request_id":"r-{n:012x}","severity":{},"classification":"{}","details":{{"bytes":{}}}}}"#,
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        r.below(50),
        ACTIONS[r.below(8) as usize],
        AREAS[(res % 6) as usize],
        OUTCOMES[r.below(3) as usize],
        r.below(40),
        r.below(250),
        n / 2_000_000,
        r.below(11),
        CLASSES[r.below(5) as usize],
        r.below(1 << 20),
    )
}

fn die(msg: &str) -> ! {
    eprintln!("search bench: {msg}");
    std::process::exit(1)
}

/// Ingests `[from, to)` with `producers` threads; returns (seconds, record bytes).
fn ingest(engine: &Engine, from: u64, to: u64, batch: u64, producers: u64) -> (f64, u64) {
    let started = Instant::now();
    let bytes: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                s.spawn(move || {
                    let mut rng = Rng(0x5eed + p);
                    let mut bytes = 0u64;
                    let mut n = from + p * batch;
                    while n < to {
                        let mut b = engine.new_batch(Submitter::token("bench"));
                        for i in n..(n + batch).min(to) {
                            let e = event(&mut rng, i);
                            bytes += e.len() as u64 + 41;
                            b.add(e.as_bytes())
                                .unwrap_or_else(|e| die(&format!("event {i}: {e}")));
                        }
                        engine
                            .append(b)
                            .unwrap_or_else(|e| die(&format!("append: {e}")));
                        n += producers * batch;
                    }
                    bytes
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| die("producer panicked")))
            .sum()
    });
    (started.elapsed().as_secs_f64(), bytes)
}

fn config(dir: &Path, index: bool, shape: Shape) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.search_index = index;
    c.search_window_records = shape.window.unwrap_or(c.search_window_records);
    c.search_block_records = shape.block.unwrap_or(c.search_block_records);
    c.search_bucket_bits = shape.bucket_bits.unwrap_or(c.search_bucket_bits);
    if shape.zstd_blocks {
        c.block_codec = auditlog_formats::segment::BlockCodec::Zstd;
    }
    c
}

fn wait_indexed(engine: &Engine, size: u64) -> f64 {
    let started = Instant::now();
    engine.wait_checkpoint(size, Duration::from_secs(120));
    while engine.search_index_status().0 < size {
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed().as_secs_f64()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// This process's CPU time in seconds: a query's own cost (its thread and its readers'),
/// whatever else loads the machine (the engine's own threads are idle meanwhile).
fn process_cpu_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// In-process searches of `limit` 100 by one field, `queries` random values: latency
/// median and p99 (wall and this thread's CPU), and records examined per query.
fn field_queries(engine: &Engine, events: u64, queries: u64) {
    let size = engine.tree_size();
    let mut rng = Rng(13);
    for field in [
        SearchField::Actor,
        SearchField::SessionId,
        SearchField::RequestId,
    ] {
        let (mut ms, mut cpu_ms, mut examined, mut matched) = (Vec::new(), Vec::new(), 0u64, 0u64);
        for _ in 0..queries {
            let value = match field {
                SearchField::Actor => format!("user{:05}@corp.example", rng.below(100_000)),
                SearchField::SessionId => {
                    let n = rng.below(events);
                    format!("s-{}-{}", rng.below(100_000), n / 2_000_000)
                }
                _ => format!("r-{:012x}", rng.below(events)),
            };
            let q = SearchRequest {
                filter: Filter {
                    equals: vec![(field, value)],
                    ..Filter::default()
                },
                size,
                start: 0,
                end: size,
                limit: 100,
                examined_max: 100_000,
            };
            let (started, cpu) = (Instant::now(), process_cpu_s());
            let end = engine
                .search(&q, &mut |_, _| Ok(true))
                .unwrap_or_else(|e| die(&format!("search: {e}")));
            ms.push(started.elapsed().as_secs_f64() * 1e3);
            cpu_ms.push((process_cpu_s() - cpu) * 1e3);
            examined += end.examined;
            matched += end.matched;
        }
        println!(
            "{{\"phase\":\"query\",\"field\":\"{}\",\"queries\":{queries},\"matched_per_query\":{:.1},\"examined_per_query\":{:.0},\"ms_median\":{:.2},\"ms_p99\":{:.2},\"cpu_ms_median\":{:.2},\"cpu_ms_p99\":{:.2}}}",
            field.name(),
            matched as f64 / queries as f64,
            examined as f64 / queries as f64,
            quantile(&mut ms, 0.5),
            quantile(&mut ms, 0.99),
            quantile(&mut cpu_ms, 0.5),
            quantile(&mut cpu_ms, 0.99)
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    events: u64,
    compare: u64,
    runs: usize,
    batch: u64,
    producers: u64,
    dir: PathBuf,
    shape: Shape,
    queries: u64,
    rebuild: bool,
) {
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
    // Ingest with and without the index, alternating, on fresh logs.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for index in [false, true] {
            let d = dir.join(format!("compare-{run}-{index}"));
            let _ = std::fs::remove_dir_all(&d);
            let engine = Engine::open(config(&d, index, shape), None)
                .unwrap_or_else(|e| die(&format!("open: {e}")));
            let (secs, _) = ingest(&engine, 0, compare, batch, producers);
            let lag = if index {
                wait_indexed(&engine, compare)
            } else {
                0.0
            };
            let rate = compare as f64 / secs;
            println!(
                "{{\"phase\":\"compare\",\"run\":{run},\"index\":{index},\"events\":{compare},\"events_per_s\":{rate:.0},\"index_caught_up_s\":{lag:.2}}}"
            );
            if index {
                on.push(rate)
            } else {
                off.push(rate)
            }
            engine
                .shutdown()
                .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    if runs > 0 {
        let ratio = auditlog_benches::median(&on) / auditlog_benches::median(&off);
        println!("{{\"phase\":\"compare\",\"ratio_with_index\":{ratio:.3}}}");
    }

    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let engine = Engine::open(config(&data, true, shape), None)
        .unwrap_or_else(|e| die(&format!("open: {e}")));
    let (secs, bytes) = ingest(&engine, 0, events, batch, producers);
    let lag = wait_indexed(&engine, events);
    let (indexed, index_bytes, index_runs) = engine.search_index_status();
    println!(
        "{{\"phase\":\"build\",\"events\":{events},\"ingest_s\":{secs:.1},\"events_per_s\":{:.0},\"record_bytes\":{bytes},\"index_caught_up_s\":{lag:.1},\"indexed\":{indexed},\"index_bytes\":{index_bytes},\"index_bytes_per_event\":{:.2},\"index_runs\":{index_runs}}}",
        events as f64 / secs,
        index_bytes as f64 / indexed as f64
    );
    // Locating a one-hour window at random starts over the log's receipt times.
    let size = engine.tree_size();
    let t0 = engine
        .received_at(0)
        .unwrap_or_else(|e| die(&e.to_string()));
    let t1 = engine
        .received_at(size - 1)
        .unwrap_or_else(|e| die(&e.to_string()));
    let mut rng = Rng(7);
    let mut us = Vec::new();
    for _ in 0..2000 {
        let t = t0 + rng.below((t1 - t0).max(1));
        let started = Instant::now();
        engine
            .window(t, t + 3_600_000_000_000, size)
            .unwrap_or_else(|e| die(&format!("window: {e}")));
        us.push(started.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "{{\"phase\":\"window\",\"locate_us_median\":{:.1},\"locate_us_p99\":{:.1}}}",
        quantile(&mut us, 0.5),
        quantile(&mut us, 0.99)
    );
    field_queries(&engine, events, queries);
    engine
        .shutdown()
        .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
    if !rebuild {
        return;
    }
    // The indexer alone: the index deleted, rebuilt from the segments by an idle engine.
    let _ = std::fs::remove_dir_all(data.join("search"));
    let started = Instant::now();
    let engine = Engine::open(config(&data, true, shape), None)
        .unwrap_or_else(|e| die(&format!("open: {e}")));
    wait_indexed(&engine, events);
    let secs = started.elapsed().as_secs_f64();
    let (_, index_bytes, _) = engine.search_index_status();
    println!(
        "{{\"phase\":\"rebuild\",\"events\":{events},\"s\":{secs:.1},\"events_per_s\":{:.0},\"index_bytes_per_event\":{:.2}}}",
        events as f64 / secs,
        index_bytes as f64 / events as f64
    );
    engine
        .shutdown()
        .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
}

fn query(url: &str, token: &str, requests: u64) {
    let agent = ureq::AgentBuilder::new().build();
    let mut rng = Rng(11);
    let mut ms = Vec::new();
    let mut returned = 0u64;
    for _ in 0..requests {
        let actor = format!("user{:05}@corp.example", rng.below(100_000));
        let started = Instant::now();
        let body = agent
            .get(&format!("{url}/v1/search"))
            .query("actor", &actor)
            .query("limit", "100")
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| die(&format!("GET /v1/search: {e}")))
            .into_string()
            .unwrap_or_else(|e| die(&format!("read: {e}")));
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        returned += body.lines().count() as u64;
    }
    println!(
        "{{\"phase\":\"actor_query\",\"requests\":{requests},\"events_per_answer\":{:.1},\"ms_median\":{:.2},\"ms_p99\":{:.2}}}",
        returned as f64 / requests as f64,
        quantile(&mut ms, 0.5),
        quantile(&mut ms, 0.99)
    );
}

/// `auditlog search --verify` over the window of the records `[0, records)`.
fn verify(url: &str, token: &str, cli: &Path, key: &str, records: u64) {
    let agent = ureq::AgentBuilder::new().build();
    let received = |i: u64| -> u64 {
        let text = agent
            .get(&format!("{url}/v1/events/{i}"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| die(&format!("GET /v1/events/{i}: {e}")))
            .into_string()
            .unwrap_or_else(|e| die(&format!("event {i}: {e}")));
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| die(&format!("event {i}: {e}")));
        v["received_at_unix_ns"]
            .as_u64()
            .unwrap_or_else(|| die("no received_at"))
    };
    let (since, until) = (received(0), received(records));
    let started = Instant::now();
    let out = Command::new(cli)
        .args(["--url", url, "--token", token, "search"])
        .args(["--since", &since.to_string(), "--until", &until.to_string()])
        .args(["--verify", "--key", key, "--actor", "nobody"])
        .output()
        .unwrap_or_else(|e| die(&format!("{}: {e}", cli.display())));
    let secs = started.elapsed().as_secs_f64();
    let said = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        die(&format!("auditlog search --verify: {said}"));
    }
    let mut bytes = 0u64;
    let mut at = 0;
    while at < records {
        let end = (at + 10_000).min(records);
        let body = agent
            .get(&format!(
                "{url}/v1/events?start={at}&end={end}&format=record"
            ))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|e| die(&format!("GET /v1/events: {e}")))
            .into_string()
            .unwrap_or_else(|e| die(&format!("read: {e}")));
        for l in body.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| die(&format!("line: {e}")));
            let b64 = v["record"].as_str().unwrap_or_else(|| die("no record"));
            bytes += (b64.len() / 4 * 3) as u64;
        }
        at = end;
    }
    println!(
        "{{\"phase\":\"verify\",\"records\":{records},\"record_bytes\":{bytes},\"s\":{secs:.2},\"mb_per_s\":{:.1},\"cli\":{:?}}}",
        bytes as f64 / secs / 1e6,
        said.trim()
    );
}

fn main() {
    match Args::parse().cmd {
        Cmd::Build {
            events,
            compare_events,
            compare_runs,
            batch,
            producers,
            dir,
            shape,
            queries,
            no_compare,
            no_rebuild,
        } => build(
            events,
            compare_events,
            if no_compare { 0 } else { compare_runs },
            batch,
            producers,
            dir.unwrap_or_else(|| auditlog_benches::bench_data_root().join("search")),
            shape,
            queries,
            !no_rebuild,
        ),
        Cmd::Fields {
            dir,
            queries,
            readers,
        } => {
            let mut config = EngineConfig::new(dir.join("data"));
            config.search_readers = readers.unwrap_or(config.search_readers);
            let engine = Engine::open(config, None).unwrap_or_else(|e| die(&format!("open: {e}")));
            let events = engine.tree_size();
            wait_indexed(&engine, events);
            field_queries(&engine, events, queries);
            engine
                .shutdown()
                .unwrap_or_else(|e| die(&format!("shutdown: {e}")));
        }
        Cmd::Query {
            url,
            token,
            requests,
            cli,
            key,
            verify_records,
        } => {
            query(&url, &token, requests);
            if let (Some(cli), Some(key)) = (cli, key) {
                verify(&url, &token, &cli, &key, verify_records);
            }
        }
    }
}
