//! WORM replication numbers against an S3 endpoint (moto in this repository's runs):
//! `throughput`: MB/s of create-only uploads under Object Lock COMPLIANCE with retention,
//! against plain uploads of the same bytes by the same client (no lock headers, no
//! `If-None-Match`); `lag`: replication lag while an in-process engine ingests at a steady
//! rate with small segments, sampled every 100 ms; `durability`: ack latency and throughput
//! of `durability = "local"` against `"remote"` (each ack waits for its batch's tail on the
//! store), same run, alternating, closed-loop producers.

use std::time::{Duration, Instant};

use auditlog_benches::{event, median};
use auditlog_engine::{Engine, EngineConfig, ReplicationConfig};
use auditlog_worm::{Lock, TargetOptions};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (moto_server -p 9000).
    #[arg(long)]
    endpoint: String,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    Throughput {
        #[arg(long, default_value_t = 16)]
        object_mib: usize,
        #[arg(long, default_value_t = 8)]
        objects: usize,
    },
    Lag {
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 8)]
        segment_mib: u64,
    },
    Durability {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        #[arg(long, default_value_t = 4)]
        producers: usize,
        #[arg(long, default_value_t = 100)]
        batch_events: usize,
        /// Submissions in flight per producer.
        #[arg(long, default_value_t = 8)]
        window: usize,
    },
}

fn opts(endpoint: &str) -> TargetOptions {
    TargetOptions {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        access_key_id: Some("bench".into()),
        secret_access_key: Some("bench".into()),
        ..Default::default()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let o = opts(&args.endpoint);
    match args.what {
        What::Throughput {
            object_mib,
            objects,
        } => {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let data: Vec<Vec<u8>> = (0..objects)
                .map(|_| {
                    (0..object_mib << 20)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            state as u8
                        })
                        .collect()
                })
                .collect();
            let total = (objects * (object_mib << 20)) as f64 / 1e6;
            let (mut locked, mut plain) = (Vec::new(), Vec::new());
            for run in 0..args.runs {
                let bucket = format!("s3://tput-{run}-{}", std::process::id());
                auditlog_worm::create_bucket(&bucket, &o, true)?;
                let t = auditlog_worm::open(&bucket, &o)?;
                let lock = Some(Lock {
                    retain_until_unix_s: 4_102_444_800,
                    legal_hold: false,
                });
                let s = Instant::now();
                for (i, d) in data.iter().enumerate() {
                    t.put_create(&format!("locked/{i}"), d, lock)?;
                }
                locked.push(total / s.elapsed().as_secs_f64());
                let s = Instant::now();
                for (i, d) in data.iter().enumerate() {
                    t.put_mutable(&format!("plain/{i}"), d)?;
                }
                plain.push(total / s.elapsed().as_secs_f64());
                println!(
                    "run {run}: locked {:.1} MB/s, plain {:.1} MB/s",
                    locked[run], plain[run]
                );
            }
            println!(
                "median of {}: create-only + COMPLIANCE {:.1} MB/s, plain {:.1} MB/s ({} x {} MiB)",
                args.runs,
                median(&locked),
                median(&plain),
                objects,
                object_mib
            );
        }
        What::Lag {
            rate,
            seconds,
            segment_mib,
        } => {
            let (mut p50s, mut maxes, mut catchups) = (Vec::new(), Vec::new(), Vec::new());
            for run in 0..args.runs {
                let dir = tempfile_dir(run)?;
                let bucket = format!("s3://lag-{run}-{}", std::process::id());
                auditlog_worm::create_bucket(&bucket, &o, true)?;
                let mut cfg = EngineConfig::new(&dir);
                cfg.segment_bytes = segment_mib << 20;
                cfg.replication = Some(ReplicationConfig {
                    target: format!("{bucket}/log"),
                    options: o.clone(),
                    poll_interval_ms: 20,
                    ..Default::default()
                });
                let engine = Engine::open(cfg, None)?;
                let batch = 1000u64;
                let period = Duration::from_secs_f64(batch as f64 / rate as f64);
                let start = Instant::now();
                let mut next = start;
                let mut n = 0u64;
                let mut samples: Vec<f64> = Vec::new();
                let mut last_sample = start;
                while start.elapsed() < Duration::from_secs(seconds) {
                    let evs: Vec<Vec<u8>> = (n..n + batch).map(|i| event(i, 256)).collect();
                    engine.append_payloads(evs.iter().map(|e| e.as_slice()))?;
                    n += batch;
                    if last_sample.elapsed() >= Duration::from_millis(100) {
                        last_sample = Instant::now();
                        if let Some(r) = engine.status().replication {
                            samples.push(r.oldest_pending_age_ms as f64);
                        }
                    }
                    next += period;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
                let achieved = n as f64 / start.elapsed().as_secs_f64();
                let end_ingest = Instant::now();
                let sealed = engine.status().sealed_segments;
                loop {
                    let r = engine.status().replication.expect("on");
                    if r.segments_pending == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let catchup = end_ingest.elapsed().as_secs_f64() * 1000.0;
                let r = engine.status().replication.expect("on");
                samples.sort_by(f64::total_cmp);
                let p50 = median(&samples);
                let max = samples.last().copied().unwrap_or(0.0);
                println!(
                    "run {run}: {achieved:.0} events/s, {sealed} segments sealed, {:.1} MB shipped; oldest-unshipped age p50 {p50:.0} ms, max {max:.0} ms; drained {catchup:.0} ms after ingest stopped",
                    r.bytes_shipped as f64 / 1e6
                );
                p50s.push(p50);
                maxes.push(max);
                catchups.push(catchup);
                engine.shutdown()?;
                let _ = std::fs::remove_dir_all(&dir);
            }
            println!(
                "median of {}: lag p50 {:.0} ms, max {:.0} ms, drain {:.0} ms",
                args.runs,
                median(&p50s),
                median(&maxes),
                median(&catchups)
            );
        }
        What::Durability {
            events,
            producers,
            batch_events,
            window,
        } => durability(&o, args.runs, events, producers, batch_events, window)?,
    }
    Ok(())
}

/// Local against remote durability, alternating, `runs` each: events/s and ack p50/p99.
fn durability(
    o: &TargetOptions,
    runs: usize,
    events: u64,
    producers: usize,
    batch_events: usize,
    window: usize,
) -> anyhow::Result<()> {
    use auditlog_engine::Durability;
    let pools: Vec<Vec<Vec<u8>>> = (0..producers)
        .map(|p| {
            (0..1000)
                .map(|i| event((p * 1000 + i) as u64, 256))
                .collect()
        })
        .collect();
    let mut got: std::collections::BTreeMap<&str, Vec<(f64, f64, f64, f64)>> = Default::default();
    for run in 0..runs {
        for (name, mode) in [("local", Durability::Local), ("remote", Durability::Remote)] {
            let dir = tempfile_dir(run)?;
            let bucket = format!("s3://dur-{name}-{run}-{}", std::process::id());
            auditlog_worm::create_bucket(&bucket, o, true)?;
            let mut cfg = EngineConfig::new(&dir);
            cfg.replication = Some(ReplicationConfig {
                target: format!("{bucket}/log"),
                options: o.clone(),
                durability: mode,
                ..Default::default()
            });
            let engine = Engine::open(cfg, None)?;
            let r = auditlog_benches::run_load(&engine, &pools, events, batch_events, window);
            if let Some(e) = &r.error {
                anyhow::bail!("{name}: {e}");
            }
            let rate = r.events as f64 / r.elapsed.as_secs_f64();
            let (p50, p99) = (
                r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            );
            let st = engine.status().replication.expect("on");
            let per_tail = if st.tails_shipped > 0 {
                r.events as f64 / st.tails_shipped as f64
            } else {
                0.0
            };
            println!(
                "run {run} {name}: {rate:.0} events/s, ack p50 {p50:.2} ms, p99 {p99:.2} ms, {} tails ({per_tail:.0} events per tail)",
                st.tails_shipped
            );
            got.entry(name)
                .or_default()
                .push((rate, p50, p99, per_tail));
            engine.shutdown()?;
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let med = |name: &str, f: fn(&(f64, f64, f64, f64)) -> f64| {
        median(&got[name].iter().map(f).collect::<Vec<_>>())
    };
    for name in ["local", "remote"] {
        println!(
            "median of {runs} {name}: {:.0} events/s, ack p50 {:.2} ms, p99 {:.2} ms, {:.0} events per tail",
            med(name, |v| v.0),
            med(name, |v| v.1),
            med(name, |v| v.2),
            med(name, |v| v.3)
        );
    }
    println!(
        "remote / local throughput: {:.2}",
        med("remote", |v| v.0) / med("local", |v| v.0)
    );
    Ok(())
}

fn tempfile_dir(run: usize) -> anyhow::Result<std::path::PathBuf> {
    let d =
        auditlog_benches::bench_data_root().join(format!("worm-lag-{run}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
