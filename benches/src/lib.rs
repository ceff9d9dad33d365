//! Helpers shared by the `ingest` load generator and the criterion benches.
//!
//! Deliberately independent of the `auditlog-tests` crate: benches must build on their own.

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use auditlog_engine::Engine;
use hdrhistogram::Histogram;

/// A valid audit event of about `bytes` bytes, distinct per `n` (same shape as the system
/// tests' `event`).
pub fn event(n: u64, bytes: usize) -> Vec<u8> {
    let mut e = format!(
        r#"{{"timestamp":"2026-11-23T10:00:00.123Z","event_type":"auth","actor":"user-{n}","action":"login","resource":"/srv/app","outcome":"success","classification":"CUI//BASIC","details":{{"pad":""}}}}"#
    )
    .into_bytes();
    if e.len() < bytes {
        let pad = bytes - e.len();
        let at = e.len() - 3; // inside the "pad" string
        e.splice(at..at, std::iter::repeat_n(b'x', pad));
    }
    e
}

/// SplitMix64: a small, seeded generator (the corpus must be the same on every machine).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }

    pub fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(digits);
        s
    }
}

/// Where benchmark data lives: `$CARGO_TARGET_DIR/bench-data`, else the workspace's
/// `target/bench-data`.
pub fn bench_data_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let target = target.canonicalize().unwrap_or(target);
    target.join("bench-data")
}

/// The process's resident set size in KiB (`VmRSS` of `/proc/self/status`).
pub fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The median of `v` (mean of the middle two for an even count); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// What one closed-loop load run measured.
pub struct LoadResult {
    /// From the moment every producer was released to the last receipt.
    pub elapsed: Duration,
    pub events: u64,
    pub payload_bytes: u64,
    pub submissions: u64,
    /// Submit → receipt callback, in microseconds, all producers merged.
    pub latency_us: Histogram<u64>,
    /// The first refusal seen, if any submission failed.
    pub error: Option<String>,
    /// CPU time the producer threads used (building batches, submitting), all summed.
    pub producer_cpu: Duration,
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of the whole process, including threads that have exited.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) of each live thread of this process, summed by thread name.
pub fn cpu_by_thread_name() -> std::collections::BTreeMap<String, Duration> {
    let mut out = std::collections::BTreeMap::new();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime are fields 14 and 15, counted after the ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let cpu = Duration::from_nanos((ticks(11) + ticks(12)) * 1_000_000_000 / hz);
        *out.entry(name).or_insert(Duration::ZERO) += cpu;
    }
    out
}

/// A fresh latency histogram: 1 µs to 10 min, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

type Token = Option<(Duration, Option<String>)>;

fn record_token(tok: Token, hist: &mut Histogram<u64>, error: &mut Option<String>) {
    if let Some((lat, err)) = tok {
        hist.saturating_record((lat.as_micros() as u64).max(1));
        if error.is_none() {
            *error = err;
        }
    }
}

/// Closed-loop load: `pools.len()` producer threads share `events` between them; each
/// builds `EventBatch`es of `batch_events` payloads taken round-robin from its own pool
/// (so payload generation is not measured) and keeps at most `window` submissions in
/// flight, recording each one's submit → receipt latency. Batch building (validation,
/// framing and leaf hashing) runs on the producer threads and *is* measured: it is part
/// of the engine's cost per event.
pub fn run_load(
    engine: &Engine,
    pools: &[Vec<Vec<u8>>],
    events: u64,
    batch_events: usize,
    window: usize,
) -> LoadResult {
    assert!(!pools.is_empty() && batch_events > 0 && window > 0);
    let producers = pools.len() as u64;
    let barrier = Barrier::new(pools.len() + 1);
    struct ProducerOut {
        finished: Instant,
        cpu: Duration,
        hist: Histogram<u64>,
        payload_bytes: u64,
        submissions: u64,
        error: Option<String>,
    }
    let (outs, started) = std::thread::scope(|scope| {
        let handles: Vec<_> = pools
            .iter()
            .enumerate()
            .map(|(p, pool)| {
                let share = events / producers + u64::from((p as u64) < events % producers);
                let barrier = &barrier;
                scope.spawn(move || {
                    // Tokens: `window` of them exist; one is taken per submission and
                    // given back (carrying the latency) by its receipt callback.
                    let (tx, rx) = sync_channel::<Token>(window);
                    for _ in 0..window {
                        tx.send(None).expect("token channel open");
                    }
                    let mut hist = latency_histogram();
                    let mut error: Option<String> = None;
                    let (mut left, mut at, mut payload_bytes, mut submissions) =
                        (share, 0usize, 0u64, 0u64);
                    let mut lost_tokens = 0usize;
                    barrier.wait();
                    let cpu0 = thread_cpu_time();
                    while left > 0 {
                        let tok = rx.recv().expect("token channel open");
                        record_token(tok, &mut hist, &mut error);
                        let k = (batch_events as u64).min(left);
                        let mut b =
                            engine.new_batch(auditlog_engine::Submitter::token("bench-writer"));
                        for _ in 0..k {
                            let payload = &pool[at];
                            at = if at + 1 == pool.len() { 0 } else { at + 1 };
                            b.add(payload).expect("payload accepted");
                            payload_bytes += payload.len() as u64;
                        }
                        let back = tx.clone();
                        let t0 = Instant::now();
                        let submitted = engine.submit(
                            b,
                            Box::new(move |r| {
                                let lat = t0.elapsed();
                                let _ = back.send(Some((lat, r.err().map(|e| e.to_string()))));
                            }),
                        );
                        if let Err(e) = submitted {
                            // The callback was dropped unrun: its token is gone.
                            error.get_or_insert(e.to_string());
                            lost_tokens = 1;
                            break;
                        }
                        submissions += 1;
                        left -= k;
                    }
                    // Every token back: nothing of ours is in flight any more.
                    for _ in 0..window - lost_tokens {
                        match rx.recv_timeout(Duration::from_secs(120)) {
                            Ok(tok) => record_token(tok, &mut hist, &mut error),
                            Err(_) => {
                                error.get_or_insert("timed out waiting for receipts".into());
                                break;
                            }
                        }
                    }
                    ProducerOut {
                        finished: Instant::now(),
                        cpu: thread_cpu_time() - cpu0,
                        hist,
                        payload_bytes,
                        submissions,
                        error,
                    }
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let outs: Vec<ProducerOut> = handles
            .into_iter()
            .map(|h| h.join().expect("producer thread panicked"))
            .collect();
        (outs, started)
    });
    let mut latency_us = latency_histogram();
    let mut result = LoadResult {
        elapsed: Duration::ZERO,
        events,
        payload_bytes: 0,
        submissions: 0,
        latency_us: latency_histogram(),
        error: None,
        producer_cpu: Duration::ZERO,
    };
    for o in outs {
        result.elapsed = result.elapsed.max(o.finished.duration_since(started));
        latency_us.add(&o.hist).expect("same histogram bounds");
        result.payload_bytes += o.payload_bytes;
        result.submissions += o.submissions;
        result.producer_cpu += o.cpu;
        if result.error.is_none() {
            result.error = o.error;
        }
    }
    result.latency_us = latency_us;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlog_formats::schema::{validate, SchemaMode};

    #[test]
    fn events_are_valid_and_sized() {
        for bytes in [64, 256, 1024] {
            let e = event(7, bytes);
            assert!(e.len() >= bytes.min(e.len()));
            validate(&e, SchemaMode::Audit).unwrap();
        }
        assert_eq!(event(1, 256).len(), 256);
        assert_ne!(event(1, 256), event(2, 256));
    }

    #[test]
    fn median_works() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
