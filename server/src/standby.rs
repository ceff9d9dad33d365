//! `--standby`: a read replica that becomes the writer when the writer's lease lapses.
//!
//! A thread watches the lease (`auditlog_engine::lease`): it tries to take it, which
//! succeeds only once the lease went unrenewed for a whole period (its holder renewing it
//! sends the thread back to watching). With the lease held it waits for the follower to
//! have everything the bucket holds, then stops the daemon (a SIGTERM to itself, the one
//! way the daemon stops), and the process re-executes itself as the writer: same
//! arguments, without `--standby` and `--replica-of`. The new process takes the same lease
//! again (it is its own: same node name, same epoch) and recovery continues the open
//! segment the tails built, under the same tail keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auditlog_engine::lease::Lease;
use auditlog_engine::EngineError;

/// Starts the watching thread; `took_over` is set before the daemon is told to stop.
pub fn watch(
    cfg: &crate::config::Config,
    engine: &Arc<auditlog_engine::Engine>,
    took_over: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let engine = Arc::downgrade(engine);
    let replica = cfg
        .engine
        .replica
        .clone()
        .context("--standby needs --replica-of")?;
    let rc = cfg.engine.replication.clone().unwrap_or_default();
    anyhow::ensure!(
        rc.lease_ms > 0,
        "--standby needs [replication] lease_ms > 0 (the lease it takes over)"
    );
    let node = rc.node(&cfg.engine.data_dir);
    let period = Duration::from_millis(rc.lease_ms);
    let writer_url = rc.writer_url.clone();
    std::thread::Builder::new()
        .name("auditlogd-standby".into())
        .spawn(move || loop {
            match Lease::acquire_at(&replica.source, &replica.options, &node, &writer_url, period) {
                Ok(lease) => {
                    let r = lease.record();
                    println!(
                        "auditlogd: standby took the writer's lease (epoch {}); becoming the writer",
                        r.epoch
                    );
                    // Everything the old writer stored must be here before this node writes:
                    // wait for a look at the bucket that found nothing new, after the lease
                    // was taken (the old writer can add nothing since).
                    let taken = std::time::Instant::now();
                    loop {
                        let Some(e) = engine.upgrade() else { return };
                        let caught_up = e.status().replica.is_some_and(|s| {
                            u128::from(s.caught_up_age_ms) < taken.elapsed().as_millis()
                        });
                        if caught_up {
                            break;
                        }
                        if let Some(a) = e.status().replica.and_then(|s| s.alarm) {
                            eprintln!("auditlogd: standby cannot take over: {a}");
                            return;
                        }
                        drop(e);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    took_over.store(true, Ordering::SeqCst);
                    // SAFETY: kill(2) on this process; the signal thread's sigwait takes it.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGTERM);
                    }
                    return;
                }
                // Its holder renewed it while we watched: watch again.
                Err(EngineError::Fenced(why)) => tracing::debug!("standby: {why}"),
                Err(e) => {
                    tracing::warn!("standby: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .context("starting the standby thread")?;
    Ok(())
}

/// Re-executes this daemon as the writer (only returns on failure).
pub fn become_writer() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut args = Vec::new();
    let mut skip_value = false;
    for a in std::env::args_os().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.to_str() {
            Some("--standby") => continue,
            Some("--replica-of") => {
                skip_value = true;
                continue;
            }
            Some(s) if s.starts_with("--replica-of=") => continue,
            _ => args.push(a),
        }
    }
    let err = std::process::Command::new(exe)
        .args(args)
        .env_remove("AUDITLOG_REPLICA_OF")
        .exec();
    Err(err).context("re-executing as the writer")
}
