//! A child process for the WORM crash test: opens the log in `<dir>` with replication to
//! `<url>` on an S3 endpoint and either ingests until killed (`ingest`), or waits until every
//! sealed segment is shipped and exits cleanly (`drain`), printing the shipped end.

use std::time::{Duration, Instant};

use auditlog_engine::Engine;
use auditlog_tests::{classified_event, replication, s3_options, small_config};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, url, endpoint, mode] = &args[..] else {
        eprintln!("usage: worm-child DIR URL ENDPOINT ingest|drain");
        std::process::exit(2);
    };
    let mut cfg = small_config(std::path::Path::new(dir));
    cfg.replication = Some(replication(url, s3_options(endpoint)));
    let engine = match Engine::open(cfg, None) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("worm-child: open: {e}");
            std::process::exit(1);
        }
    };
    let classes = ["UNCLASSIFIED", "CUI//BASIC", "CUI//SP-PRIV"];
    if mode == "ingest" {
        let mut n = engine.tree_size();
        loop {
            let class = classes[(n / 5000) as usize % classes.len()];
            let evs: Vec<Vec<u8>> = (n..n + 200).map(|i| classified_event(i, class)).collect();
            if let Err(e) = engine.append_payloads(evs.iter().map(|e| e.as_slice())) {
                eprintln!("worm-child: append: {e}");
                std::process::exit(1);
            }
            n += 200;
            // A steady pace: a few segments a second, so the test's store stays small.
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = engine.status();
        let r = st.replication.expect("replication on");
        // Drained: nothing left to seal (only the open segment) and every sealed file on
        // disk shipped. The replicator's own counters lag a seal by one poll: read alone,
        // they said "nothing pending" while a segment recovery had queued was being sealed,
        // which then stayed unshipped (seen twice in soak runs).
        if st.open_segments <= 1
            && r.shipped_end >= sealed_end(std::path::Path::new(dir))
            && r.segments_pending == 0
            && r.idle
            && r.alarm.is_none()
            && st.sealed_segments > 0
        {
            println!("drained {}", r.shipped_end);
            break;
        }
        if Instant::now() > deadline {
            eprintln!("worm-child: not drained: {r:?}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = engine.shutdown() {
        eprintln!("worm-child: shutdown: {e}");
        std::process::exit(1);
    }
}

/// The end index of the newest sealed segment file (`FIRST-END.seg`) in `<dir>/segments`.
fn sealed_end(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("segments"))
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().to_string();
                let (_, end) = name.strip_suffix(".seg")?.split_once('-')?;
                end.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0)
        })
        .unwrap_or(0)
}
