//! Network load generator for `auditlogd`: N connections over TCP (binary protocol,
//! pipelined) or HTTP (NDJSON batches, keep-alive), fixed event size, closed loop (a window
//! of batches in flight per connection) or open loop (`--rate` events/s across all
//! connections). Reports events/s, MB/s and p50/p99/p999 ack latency; writes a JSON summary.
//! `--protocol proofs` instead asks for inclusion proofs over HTTP (random leaves below the
//! latest checkpoint, at its size) and reports proofs/s, verifying a sample of them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use auditlog_benches::{event, latency_histogram};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// `tcp`, `http`, `syslog` or `proofs`.
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// host:port of the TCP listener or the HTTP server.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    #[arg(long, env = "AUDITLOG_TOKEN")]
    token: String,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events in all.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    #[arg(long, default_value_t = 256)]
    event_bytes: usize,
    /// Events per batch (TCP frame or HTTP request).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight per connection (TCP; HTTP/1.1 has one).
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Open loop: send at this many events/s in all (0: closed loop, as fast as acks allow).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long)]
    json: Option<String>,
    /// `--protocol syslog` only: the file the syslog daemon writes; the run ends when it
    /// stops growing, and its lines are counted.
    #[arg(long)]
    wait_file: Option<String>,
    /// `--protocol proofs` only: proof requests in all.
    #[arg(long, default_value_t = 300_000)]
    requests: u64,
    /// `--protocol proofs` only: verify every Nth proof against the checkpoint's root, with
    /// the leaf recomputed from the record (0: none).
    #[arg(long, default_value_t = 1000)]
    verify_every: u64,
    /// Acks of batches sent in the first this many ms are left out of the latency figures
    /// and reported on their own (the daemon's first seconds: empty caches, first segment).
    #[arg(long, default_value_t = 0)]
    warmup_ms: u64,
    /// Print p50/p99/max ack latency for each second of the run.
    #[arg(long)]
    timeline: bool,
    /// TCP: do not yield the CPU after each frame sent. By default a sender yields, because
    /// it shares the machine with the daemon it measures: on a kernel that switches to a
    /// woken thread only at the next tick (4 ms at HZ=250), a sender catching up on its
    /// schedule held a core through whole bursts of frames, and the daemon's threads and
    /// this program's own ack readers waited behind it. Remote producers cost the daemon's
    /// machine nothing of the kind. With this flag the run measures that interference too.
    #[arg(long)]
    no_yield: bool,
    /// Open loop: every connection sends its nth batch at the same moment (bursts of N
    /// batches), instead of the connections taking turns on one schedule.
    #[arg(long)]
    aligned: bool,
}

struct Result1 {
    events: u64,
    /// Per acked batch: (ms from the start of the run when it was sent, ack latency in µs).
    samples: Vec<(u32, u32)>,
    refused: u64,
}

fn main() {
    let args = Args::parse();
    if args.protocol == "proofs" {
        run_proofs(&args);
        return;
    }
    let per_conn = args.events / args.connections as u64;
    // Pre-built batches, so generation is not measured.
    let pool: Vec<Vec<Vec<u8>>> = (0..8u64)
        .map(|b| {
            (0..args.batch as u64)
                .map(|i| event(b * 1_000_000 + i, args.event_bytes))
                .collect()
        })
        .collect();
    let started = Instant::now();
    // Every connection connects, authenticates and builds its frames before any sends, so
    // that the open loop's schedule starts once all are ready: a connection still copying
    // its frames when the others began sent its first ones late, in a burst.
    let ready = std::sync::Barrier::new(args.connections);
    let results: Vec<Result1> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let (args, pool, ready) = (args.clone(), &pool, &ready);
                s.spawn(move || match args.protocol.as_str() {
                    "tcp" => run_tcp(&args, pool, per_conn, c, started, ready),
                    "http" => run_http(&args, pool, per_conn, c, started, ready),
                    "syslog" => run_syslog(&args, pool, per_conn, c),
                    p => panic!("unknown protocol {p}"),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connection thread"))
            .collect()
    });
    let mut secs = started.elapsed().as_secs_f64();
    let mut delivered = None;
    if let (Some(path), "syslog") = (&args.wait_file, args.protocol.as_str()) {
        // Syslog has no acks: the time is until the daemon's file stops growing.
        let (mut last_len, mut last_change) = (0u64, Instant::now());
        while last_change.elapsed() < Duration::from_millis(1000) {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if len != last_len {
                (last_len, last_change) = (len, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        secs = (last_change - started).as_secs_f64();
        let lines = std::fs::read(path)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        delivered = Some(lines as u64);
    }
    // Steady state (after the warm-up) is the headline; the warm-up is reported beside it.
    let (mut hist, mut warmup) = (latency_histogram(), latency_histogram());
    let mut per_second: Vec<Histogram<u64>> = Vec::new();
    let (mut events, mut refused) = (0u64, 0u64);
    for r in &results {
        for &(at_ms, latency_us) in &r.samples {
            let h = if u64::from(at_ms) < args.warmup_ms {
                &mut warmup
            } else {
                &mut hist
            };
            let _ = h.record(u64::from(latency_us));
            let second = (at_ms / 1000) as usize;
            if per_second.len() <= second {
                per_second.resize_with(second + 1, latency_histogram);
            }
            let _ = per_second[second].record(u64::from(latency_us));
        }
        events += r.events;
        refused += r.refused;
    }
    if args.timeline {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            - started.elapsed().as_millis();
        println!("run started at unix ms {}", unix_ms % 1_000_000);
        for (second, h) in per_second.iter().enumerate() {
            println!(
                "second {second:>3}: {:>6} batches, p50 {:>6} µs, p99 {:>6} µs, max {:>6} µs",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            );
        }
    }
    if args.warmup_ms > 0 {
        println!(
            "warm-up (batches sent in the first {} ms, left out below): {} batches, p50 {} µs, p99 {} µs, max {} µs",
            args.warmup_ms,
            warmup.len(),
            warmup.value_at_quantile(0.5),
            warmup.value_at_quantile(0.99),
            warmup.max()
        );
    }
    if let Some(d) = delivered {
        println!("syslog daemon wrote {d} lines of {events} sent");
        events = d;
    }
    let eps = events as f64 / secs;
    let mbps = eps * args.event_bytes as f64 / 1e6;
    println!(
        "{} x{} conns, {} B events, batch {}, {}: {:.0} events/s, {:.1} MB/s, ack latency p50 {} µs p99 {} µs p999 {} µs, {} refused",
        args.protocol,
        args.connections,
        args.event_bytes,
        args.batch,
        if args.rate > 0 { format!("open loop {} ev/s", args.rate) } else { format!("closed loop, window {}", args.window) },
        eps,
        mbps,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        refused
    );
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "protocol": args.protocol, "connections": args.connections, "event_bytes": args.event_bytes,
            "batch": args.batch, "window": args.window, "rate": args.rate, "events": events, "seconds": secs,
            "events_per_s": eps, "mb_per_s": mbps, "refused": refused,
            "latency_us": {"p50": hist.value_at_quantile(0.5), "p99": hist.value_at_quantile(0.99), "p999": hist.value_at_quantile(0.999), "max": hist.max()},
            "warmup_ms": args.warmup_ms,
            "warmup_latency_us": {"batches": warmup.len(), "p50": warmup.value_at_quantile(0.5), "p99": warmup.value_at_quantile(0.99), "max": warmup.max()},
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&j).unwrap_or_default()) {
            eprintln!("loadgen: writing {path}: {e}");
        }
    }
}

/// Open-loop pacing: when batch `n` of connection `conn` is due. The connections share one
/// schedule of batches at `--rate` in all, starting once all of them are ready, and
/// deal it out in turn: connection c sends the schedule's batches c, c+N, c+2N... With each
/// connection on its own clock instead, all of them sent their nth batch at about the same
/// moment, so batches arrived in bursts of N (4 frames of 256 KiB at once with batches of
/// 1000) and the last of each burst waited for the others to be built. `--aligned` keeps
/// that pattern, to measure it.
fn due(args: &Args, conn: usize, n: u64) -> Option<Instant> {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    (args.rate > 0).then(|| {
        let origin = *ORIGIN.get_or_init(Instant::now);
        let slot = if args.aligned {
            n * args.connections as u64
        } else {
            n * args.connections as u64 + conn as u64
        };
        origin + Duration::from_secs_f64(slot as f64 * args.batch as f64 / args.rate as f64)
    })
}

/// One latency sample: when the batch was sent (ms into the run) and how long its ack took.
fn sample(run_start: Instant, sent: Instant) -> (u32, u32) {
    let at_ms = sent.saturating_duration_since(run_start).as_millis();
    let latency_us = sent.elapsed().as_micros();
    (
        u32::try_from(at_ms).unwrap_or(u32::MAX),
        u32::try_from(latency_us).unwrap_or(u32::MAX),
    )
}

fn run_tcp(
    args: &Args,
    pool: &[Vec<Vec<u8>>],
    events: u64,
    conn: usize,
    run_start: Instant,
    ready: &std::sync::Barrier,
) -> Result1 {
    use auditlog_formats::frame::{self, FrameHeader, FrameType, FRAME_HEADER_BYTES};
    // The handshake through the client library, then the socket split in two: this thread
    // writes, a reader thread timestamps each ACK the moment it arrives. The bounded
    // channel of send times is both the window and the latency record.
    let mut stream = TcpStream::connect(&args.addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(&frame::frame(
            FrameType::Hello,
            0,
            &frame::hello_payload(&args.token),
        ))
        .expect("hello");
    let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().expect("clone"));
    let read_frame = |r: &mut BufReader<TcpStream>| -> Option<(FrameHeader, Vec<u8>)> {
        let mut h = [0u8; FRAME_HEADER_BYTES];
        r.read_exact(&mut h).ok()?;
        let h = FrameHeader::decode(&h, 64 << 20).ok()?;
        let mut p = vec![0u8; h.payload_bytes as usize];
        r.read_exact(&mut p).ok()?;
        Some((h, p))
    };
    let (h, p) = read_frame(&mut reader).expect("HELLO_OK");
    assert_eq!(
        h.frame_type,
        FrameType::HelloOk,
        "server refused: {:?}",
        frame::decode_error(&p)
    );
    let limits = frame::HelloOk::decode(&p).expect("hello ok");
    let window = args
        .window
        .clamp(1, limits.batches_in_flight_max.max(1) as usize);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Instant>(window);
    let batches = events / args.batch as u64;
    let reader_thread = std::thread::spawn(move || {
        let mut samples = Vec::with_capacity(batches as usize);
        let (mut done, mut refused) = (0u64, 0u64);
        for _ in 0..batches {
            let Some((h, p)) = read_frame(&mut reader) else {
                break;
            };
            let at = rx.recv().expect("send time");
            match h.frame_type {
                FrameType::Ack => {
                    done += frame::decode_ack(&p)
                        .map(|a| a.leaf_hashes.len() as u64)
                        .unwrap_or(0);
                    samples.push(sample(run_start, at));
                }
                _ => refused += 1,
            }
        }
        Result1 {
            events: done,
            samples,
            refused,
        }
    });
    let payloads: Vec<Vec<u8>> = pool
        .iter()
        .map(|b| {
            let mut p = vec![0u8; 4];
            for e in b {
                frame::push_batch_event(&mut p, e);
            }
            p
        })
        .collect();
    ready.wait();
    for n in 0..batches {
        if let Some(t) = due(args, conn, n) {
            if let Some(wait) = t.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let p = &payloads[(n as usize + conn) % pool.len()];
        tx.send(Instant::now()).expect("window");
        stream
            .write_all(&frame::frame(FrameType::Batch, n as u32 + 1, p))
            .expect("send");
        if !args.no_yield {
            std::thread::yield_now();
        }
    }
    drop(tx);
    reader_thread.join().expect("reader")
}

fn run_http(
    args: &Args,
    pool: &[Vec<Vec<u8>>],
    events: u64,
    conn: usize,
    run_start: Instant,
    ready: &std::sync::Barrier,
) -> Result1 {
    let mut stream = BufReader::new(TcpStream::connect(&args.addr).expect("connect"));
    stream.get_ref().set_nodelay(true).expect("nodelay");
    let bodies: Vec<Vec<u8>> = pool
        .iter()
        .map(|b| {
            let mut body = Vec::new();
            for e in b {
                body.extend_from_slice(e);
                body.push(b'\n');
            }
            body
        })
        .collect();
    let mut samples = Vec::new();
    let (mut done, mut refused) = (0u64, 0u64);
    let batches = events / args.batch as u64;
    ready.wait();
    for n in 0..batches {
        if let Some(t) = due(args, conn, n) {
            if let Some(wait) = t.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let body = &bodies[(n as usize + conn) % bodies.len()];
        let t0 = Instant::now();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            args.addr,
            args.token,
            body.len()
        );
        let w = stream.get_mut();
        w.write_all(head.as_bytes()).expect("write");
        w.write_all(body).expect("write");
        let (status, _) = read_response(&mut stream);
        if status == 200 {
            done += args.batch as u64;
            samples.push(sample(run_start, t0));
        } else {
            refused += 1;
        }
    }
    Result1 {
        events: done,
        samples,
        refused,
    }
}

fn run_syslog(args: &Args, pool: &[Vec<Vec<u8>>], events: u64, conn: usize) -> Result1 {
    // RFC 3164-style lines, LF-framed, as rsyslog's imtcp and syslog-ng take them.
    let mut s = std::io::BufWriter::with_capacity(
        1 << 20,
        TcpStream::connect(&args.addr).expect("connect"),
    );
    let lines: Vec<Vec<u8>> = pool
        .iter()
        .flatten()
        .map(|e| {
            let mut l = b"<134>Nov 23 10:00:00 host app: ".to_vec();
            l.extend_from_slice(e);
            l.push(b'\n');
            l
        })
        .collect();
    for n in 0..events {
        if n % args.batch as u64 == 0 {
            if let Some(t) = due(args, conn, n / args.batch as u64) {
                if let Some(wait) = t.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        s.write_all(&lines[(n as usize + conn) % lines.len()])
            .expect("send");
    }
    s.flush().expect("flush");
    Result1 {
        events,
        samples: Vec::new(),
        refused: 0,
    }
}

fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    (status, body)
}

/// One HTTP/1.1 GET on a kept-alive connection.
fn http_get(stream: &mut BufReader<TcpStream>, args: &Args, path: &str) -> (u16, Vec<u8>) {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        args.addr, args.token
    );
    stream
        .get_mut()
        .write_all(head.as_bytes())
        .expect("write request");
    read_response(stream)
}

fn connect_http(args: &Args) -> BufReader<TcpStream> {
    let s = TcpStream::connect(&args.addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    BufReader::with_capacity(1 << 16, s)
}

/// Proofs/s over HTTP at the latest checkpoint's size: N connection threads, each asking
/// for the proof of a pseudo-random leaf, one request at a time (HTTP/1.1 keep-alive).
fn run_proofs(args: &Args) {
    use auditlog_formats::note::{self, Checkpoint};
    use auditlog_formats::{hash, tree, TreeHash};
    let mut c = connect_http(args);
    let (st, body) = http_get(&mut c, args, "/v1/checkpoint");
    assert_eq!(st, 200, "checkpoint: {}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).expect("note is UTF-8");
    // The signature is not what is measured here; the CLI's `prove` checks it.
    let (body_text, _) = note::parse_note(&text).expect("note");
    let cp = Checkpoint::parse_text(&body_text).expect("checkpoint");
    let (st, body) = http_get(&mut c, args, "/v1/log");
    assert_eq!(st, 200, "log: {}", String::from_utf8_lossy(&body));
    let log: serde_json::Value = serde_json::from_slice(&body).expect("log JSON");
    let alg = TreeHash::from_name(log["tree_hash"].as_str().expect("tree_hash")).expect("alg");
    assert!(cp.size > 0, "the log is empty");
    println!(
        "proofs at size {} (root {}), {} connections, {} requests",
        cp.size,
        hash::to_hex(&cp.root),
        args.connections,
        args.requests
    );
    let per_conn = args.requests / args.connections as u64;
    let started = Instant::now();
    let results: Vec<(Histogram<u64>, u64, u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.connections)
            .map(|conn| {
                let cp = &cp;
                s.spawn(move || {
                    let mut c = connect_http(args);
                    let mut hist = Histogram::<u64>::new(3).expect("histogram");
                    let (mut ok, mut failed, mut verified) = (0u64, 0u64, 0u64);
                    // xorshift64*: cheap, and no two connections ask the same sequence.
                    let mut x = 0x9e37_79b9_7f4a_7c15u64
                        ^ (conn as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
                    for n in 0..per_conn {
                        x ^= x >> 12;
                        x ^= x << 25;
                        x ^= x >> 27;
                        let index = x.wrapping_mul(0x2545_f491_4f6c_dd1d) % cp.size;
                        let path = format!("/v1/proof/inclusion?index={index}&size={}", cp.size);
                        let t0 = Instant::now();
                        let (st, body) = http_get(&mut c, args, &path);
                        let _ = hist.record(t0.elapsed().as_micros() as u64);
                        if st != 200 {
                            failed += 1;
                            continue;
                        }
                        ok += 1;
                        if args.verify_every > 0 && n % args.verify_every == 0 {
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).expect("proof JSON");
                            let proof: Vec<[u8; 32]> = v["hashes"]
                                .as_array()
                                .expect("hashes")
                                .iter()
                                .map(|h| hash::from_hex(h.as_str().expect("hex")).expect("hash"))
                                .collect();
                            let (st, rec) = http_get(
                                &mut c,
                                args,
                                &format!("/v1/events/{index}?format=record"),
                            );
                            assert_eq!(st, 200, "record {index}");
                            let leaf = alg.leaf(&rec);
                            tree::verify_inclusion(alg, index, cp.size, &leaf, &proof, &cp.root)
                                .unwrap_or_else(|e| {
                                    panic!("proof of {index} does not verify: {e}")
                                });
                            verified += 1;
                        }
                    }
                    (hist, ok, failed, verified)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connection thread"))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let (mut ok, mut failed, mut verified) = (0u64, 0u64, 0u64);
    for (h, o, f, v) in &results {
        hist.add(h).expect("merge");
        ok += o;
        failed += f;
        verified += v;
    }
    let pps = ok as f64 / secs;
    println!(
        "proofs x{} conns at size {}: {:.0} proofs/s, latency p50 {} µs p99 {} µs p999 {} µs, {} failed, {} verified",
        args.connections,
        cp.size,
        pps,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        failed,
        verified
    );
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "protocol": "proofs", "connections": args.connections, "size": cp.size, "requests": ok,
            "seconds": secs, "proofs_per_s": pps, "failed": failed, "verified": verified,
            "latency_us": {"p50": hist.value_at_quantile(0.5), "p99": hist.value_at_quantile(0.99), "p999": hist.value_at_quantile(0.999), "max": hist.max()},
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&j).unwrap_or_default()) {
            eprintln!("loadgen: writing {path}: {e}");
        }
    }
}
