//! The combined attack of `auditlog_tests::attack` as a program, for `benches/attack.py`:
//! runs it against a daemon for `--seconds`, waits for the server to close what is left,
//! and prints (or writes to `--json`) a summary per kind of connection.
//!
//! ```text
//! attacker --api 127.0.0.1:8080 --tcp 127.0.0.1:7070 --syslog 127.0.0.1:6514 \
//!     --ops 127.0.0.1:9090 [--tls ADDR] --auditor-token T --reader-tokens T1,T2,… \
//!     --writer-token T [--seconds 20] [--stop-file PATH] [--idle 2000] \
//!     [--flood-mib-per-s 200] [--export-hold-ms 6000] [--drain-ms 20000] [--only KIND,…] \
//!     [--json FILE]
//! ```
//!
//! `--tls` is the listener the stalled handshakes go to (default: the syslog one).
//! `--drain-ms 0` closes everything at the end instead of waiting for the server to.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use auditlog_tests::attack::{self, Plan, Target};

fn main() {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            eprintln!("attacker: unexpected argument {k:?}");
            std::process::exit(2);
        };
        let v = it.next().unwrap_or_else(|| {
            eprintln!("attacker: --{name} needs a value");
            std::process::exit(2);
        });
        args.insert(name.to_string(), v);
    }
    let need = |k: &str| -> String {
        args.get(k).cloned().unwrap_or_else(|| {
            eprintln!("attacker: --{k} is required");
            std::process::exit(2);
        })
    };
    let addr = |k: &str| -> std::net::SocketAddrV4 {
        need(k).parse().unwrap_or_else(|e| {
            eprintln!("attacker: --{k}: {e}");
            std::process::exit(2);
        })
    };
    let num = |k: &str, default: u64| -> u64 {
        args.get(k).map_or(default, |v| {
            v.parse().unwrap_or_else(|e| {
                eprintln!("attacker: --{k}: {e}");
                std::process::exit(2);
            })
        })
    };
    let syslog = addr("syslog");
    let target = Target {
        api: addr("api"),
        tcp: addr("tcp"),
        syslog,
        ops: addr("ops"),
        tls: if args.contains_key("tls") {
            addr("tls")
        } else {
            syslog
        },
        auditor_token: need("auditor-token"),
        reader_tokens: need("reader-tokens").split(',').map(String::from).collect(),
        writer_token: need("writer-token"),
        far_size: 1 << 40,
    };
    let mut plan = Plan::full(Duration::from_secs(num("seconds", 20)));
    plan.idle_per_listener = num("idle", plan.idle_per_listener as u64) as usize;
    plan.flood_bytes_per_s = num("flood-mib-per-s", plan.flood_bytes_per_s >> 20) << 20;
    plan.long_poll_wait_ms = num("long-poll-wait-ms", plan.long_poll_wait_ms);
    plan.export_hold =
        Duration::from_millis(num("export-hold-ms", plan.export_hold.as_millis() as u64));
    plan.drain_deadline =
        Duration::from_millis(num("drain-ms", plan.drain_deadline.as_millis() as u64));
    if let Some(kinds) = args.get("only") {
        plan.only(&kinds.split(',').collect::<Vec<_>>());
    }
    // `--stop-file PATH`: the attack ends (and drains) once that file exists.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    if let Some(path) = args.get("stop-file").cloned() {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !std::path::Path::new(&path).exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let report = attack::run(&target, &plan, &stop);
    let json = serde_json::to_string_pretty(&attack::report_json(&report)).unwrap_or_default();
    match args.get("json") {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &json) {
                eprintln!("attacker: writing {path}: {e}");
                std::process::exit(1);
            }
        }
        None => println!("{json}"),
    }
}
