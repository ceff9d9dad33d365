//! WORM replication numbers against an S3 endpoint (moto in this repository's runs):
//! `throughput`: MB/s of create-only uploads under Object Lock COMPLIANCE with retention,
//! against plain uploads of the same bytes by the same client (no lock headers, no
//! `If-None-Match`); `lag`: replication lag while an in-process engine ingests at a steady
//! rate with small segments, sampled every 100 ms; `durability`: ack latency and throughput
//! of `durability = "local"` against `"remote"` (each ack waits for its batch's tail on the
//! store), same run, alternating, closed-loop producers; `replica`: a read replica
//! following a writer driven at half its measured maximum (lag, and the replica's in-process
//! inclusion-proof rate meanwhile), then a fresh replica catching up with the whole bucket
//! (what a standby's cold rebuild costs per GiB).

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
    Replica {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        producers: usize,
        /// A local directory as the bucket instead of the S3 endpoint (moto on this machine
        /// stores ~95 MB/s, less than the writer's half maximum of tails and segments).
        #[arg(long)]
        local: bool,
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
        What::Replica {
            seconds,
            producers,
            local,
        } => replica(&o, args.runs, seconds, producers, local)?,
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

fn writer_config(dir: &std::path::Path, bucket: &str, o: &TargetOptions) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.segment_bytes = 64 << 20;
    cfg.replication = Some(ReplicationConfig {
        target: format!("{bucket}/log"),
        options: o.clone(),
        allow_non_worm: bucket.starts_with("file://"),
        ..Default::default()
    });
    cfg
}

fn replica_engine(
    dir: &std::path::Path,
    bucket: &str,
    o: &TargetOptions,
) -> anyhow::Result<Engine> {
    let mut cfg = EngineConfig::new(dir);
    cfg.replica = Some(auditlog_engine::follower::ReplicaConfig {
        source: format!("{bucket}/log"),
        options: o.clone(),
        poll_interval_ms: 200,
    });
    Ok(Engine::open(cfg, None)?)
}

/// Replica lag and proof rate at half the writer's maximum, then a cold catch-up.
fn replica(
    o: &TargetOptions,
    runs: usize,
    seconds: u64,
    producers: usize,
    local: bool,
) -> anyhow::Result<()> {
    let pools: Vec<Vec<Vec<u8>>> = (0..producers)
        .map(|p| {
            (0..1000)
                .map(|i| event((p * 1000 + i) as u64, 256))
                .collect()
        })
        .collect();
    let (mut lags, mut maxes, mut proofs, mut colds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let bucket = if local {
            let d = tempfile_dir(run + 3000)?;
            format!("file://{}", d.display())
        } else {
            let b = format!("s3://replica-{run}-{}", std::process::id());
            auditlog_worm::create_bucket(&b, o, true)?;
            b
        };
        let wdir = tempfile_dir(run)?;
        let writer = Engine::open(writer_config(&wdir, &bucket, o), None)?;
        // The writer's maximum, closed loop, on this machine now.
        let r = auditlog_benches::run_load(&writer, &pools, 300_000, 100, 8);
        let max = r.events as f64 / r.elapsed.as_secs_f64();
        let rate = max / 2.0;
        writer
            .wait_checkpoint(writer.tree_size(), Duration::from_secs(30))
            .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
        let rdir = tempfile_dir(run + 1000)?;
        // Wait for the metadata on the store before the replica starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        let rep = loop {
            match replica_engine(&rdir, &bucket, o) {
                Ok(e) => break e,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let reached: std::sync::Mutex<Vec<(u64, Instant)>> = Default::default();
        let (lag_samples, proof_count) = std::thread::scope(|s| {
            // Proofs on the replica, at its newest checkpoint, as fast as one thread goes.
            let prover = s.spawn(|| {
                let mut n = 0u64;
                let mut x = 0x9e37_79b9u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(cp) = rep.latest_checkpoint() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let size = cp.checkpoint.size;
                    for _ in 0..1000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if rep.prove_inclusion(x % size, size).is_ok() {
                            n += 1;
                        }
                    }
                }
                n
            });
            // The writer at half its maximum, 1000-event batches on a clock.
            let started = Instant::now();
            let batch = 1000u64;
            let period = Duration::from_secs_f64(batch as f64 / rate);
            let mut next = started;
            let mut at = 0usize;
            let mut samples = Vec::new();
            let mut last_sample = started;
            while started.elapsed() < Duration::from_secs(seconds) {
                let mut b = writer.new_batch(auditlog_engine::Submitter::daemon());
                for _ in 0..batch {
                    b.add(&pools[0][at % 1000]).expect("valid");
                    at += 1;
                }
                writer.append(b).expect("append");
                reached
                    .lock()
                    .expect("lock")
                    .push((writer.tree_size(), Instant::now()));
                if last_sample.elapsed() >= Duration::from_millis(100) {
                    last_sample = Instant::now();
                    // Lag: how long ago the writer first held more than the replica has
                    // verified now (0 when the replica has all the writer has).
                    let have = rep.latest_checkpoint().map_or(0, |c| c.checkpoint.size);
                    let r = reached.lock().expect("lock");
                    let newest = r.last().map_or(0, |x| x.0);
                    let since = r
                        .iter()
                        .find(|(size, _)| *size > have)
                        .map(|(_, t)| t.elapsed().as_secs_f64() * 1000.0);
                    samples.push(if newest <= have {
                        0.0
                    } else {
                        since.unwrap_or(0.0)
                    });
                }
                next += period;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let n = prover.join().expect("prover");
            (samples, n as f64 / elapsed)
        });
        let mut lag_samples = lag_samples;
        lag_samples.sort_by(f64::total_cmp);
        let p50 = median(&lag_samples);
        let max_lag = lag_samples.last().copied().unwrap_or(0.0);
        rep.shutdown()?;
        let size = writer.tree_size();
        writer
            .wait_checkpoint(size, Duration::from_secs(30))
            .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
        // Everything on the store before the writer stops (a shutdown does not wait for it).
        let deadline = Instant::now() + Duration::from_secs(300);
        while writer
            .status()
            .replication
            .is_some_and(|r| r.store_end < size || r.segments_pending > 0)
        {
            anyhow::ensure!(Instant::now() < deadline, "the store does not keep up");
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.shutdown()?;
        // A cold replica: the whole bucket, from nothing.
        let bytes: u64 = auditlog_worm::open(&format!("{bucket}/log"), o)?
            .list("")?
            .iter()
            .filter(|x| x.key.starts_with("segments/") || x.key.starts_with("tail/"))
            .map(|x| x.bytes)
            .sum();
        let cdir = tempfile_dir(run + 2000)?;
        let cold_started = Instant::now();
        let cold = replica_engine(&cdir, &bucket, o)?;
        while cold.latest_checkpoint().map_or(0, |c| c.checkpoint.size) < size {
            if let Some(a) = cold.status().replica.and_then(|s| s.alarm) {
                anyhow::bail!("cold replica: {a}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let cold_s = cold_started.elapsed().as_secs_f64();
        cold.shutdown()?;
        let per_gib = cold_s / (bytes as f64 / (1u64 << 30) as f64);
        println!(
            "run {run}: writer max {max:.0} events/s, driven at {rate:.0}; replica lag p50 {p50:.0} ms, max {max_lag:.0} ms; {proof_count:.0} proofs/s on the replica meanwhile; cold catch-up of {size} events ({:.1} MB of segments and tails) in {cold_s:.2} s = {per_gib:.1} s per GiB",
            bytes as f64 / 1e6
        );
        lags.push(p50);
        maxes.push(max_lag);
        proofs.push(proof_count);
        colds.push(per_gib);
        for d in [wdir, rdir, cdir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    println!(
        "median of {runs}: replica lag p50 {:.0} ms, max {:.0} ms; {:.0} proofs/s; cold catch-up {:.1} s per GiB",
        median(&lags),
        median(&maxes),
        median(&proofs),
        median(&colds)
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
