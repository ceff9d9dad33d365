//! Ingests until killed, printing one line per acknowledged event (`index leafhex`) and
//! flushing after each receipt: the parent's record of what was acknowledged.

use std::io::Write;
use std::sync::{Arc, Mutex};

use auditlog_engine::Engine;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("data dir");
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).expect("seed");
    let mut cfg = auditlog_tests::small_config(std::path::Path::new(&dir));
    cfg.segment_bytes = 2 << 20;
    let engine = Arc::new(Engine::open(cfg, None).expect("open"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let producers: Vec<_> = (0..3u64)
        .map(|p| {
            let engine = engine.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                let mut n = seed * 1_000_000_000 + p * 100_000_000;
                loop {
                    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
                    for _ in 0..(1 + n % 50) {
                        b.add(&auditlog_tests::event(n, 200 + (n % 100) as usize))
                            .expect("valid");
                        n += 1;
                    }
                    let r = engine.append(b).expect("append");
                    let mut s = String::with_capacity(r.leaf_hashes.len() * 90);
                    for (i, h) in r.leaf_hashes.iter().enumerate() {
                        s.push_str(&format!(
                            "{} {}\n",
                            r.first_index + i as u64,
                            hex::encode(h)
                        ));
                    }
                    let mut o = out.lock().expect("stdout");
                    o.write_all(s.as_bytes()).expect("write");
                    o.flush().expect("flush");
                }
            })
        })
        .collect();
    for p in producers {
        let _ = p.join();
    }
}
