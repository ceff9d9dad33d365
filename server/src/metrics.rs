//! `/metrics` in the Prometheus text format, from `Engine::status()` and the server's own
//! counters.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use auditlog_engine::Status;

/// Counters the HTTP layer keeps.
#[derive(Default)]
pub struct HttpCounters {
    pub requests: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub queue_full: AtomicU64,
}

impl HttpCounters {
    pub fn record(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status == 429 {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
        }
        if (400..500).contains(&status) {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

pub fn render(status: &Status, http: &HttpCounters, uptime_s: u64) -> String {
    let mut out = String::new();
    let s = &status.stats;
    metric(
        &mut out,
        "auditlog_events_total",
        "counter",
        "Events appended since start.",
        s.events,
    );
    metric(
        &mut out,
        "auditlog_bytes_total",
        "counter",
        "Record bytes appended since start.",
        s.bytes,
    );
    metric(
        &mut out,
        "auditlog_batches_total",
        "counter",
        "Group commits since start.",
        s.batches,
    );
    metric(
        &mut out,
        "auditlog_sync_seconds_total",
        "counter",
        "Time spent in durable syncs, in whole seconds.",
        s.sync_ns_total / 1_000_000_000,
    );
    metric(
        &mut out,
        "auditlog_tree_size",
        "gauge",
        "Leaves in the durable tree.",
        status.tree_size,
    );
    metric(
        &mut out,
        "auditlog_checkpoint_size",
        "gauge",
        "Tree size of the newest signed checkpoint (0: none).",
        status.checkpoint_size.unwrap_or(0),
    );
    if let Some(age) = status.checkpoint_age_ms {
        metric(
            &mut out,
            "auditlog_checkpoint_age_milliseconds",
            "gauge",
            "Age of the newest signed checkpoint.",
            age,
        );
    }
    metric(
        &mut out,
        "auditlog_failed",
        "gauge",
        "1 when the engine refuses writes.",
        status.failed.is_some() as u64,
    );
    metric(
        &mut out,
        "auditlog_signer_error",
        "gauge",
        "1 when the last checkpoint signing failed.",
        status.signer_error.is_some() as u64,
    );
    metric(
        &mut out,
        "auditlog_preallocation_error",
        "gauge",
        "1 when preparing the next segment failed.",
        status.preallocation_error.is_some() as u64,
    );
    metric(
        &mut out,
        "auditlog_sealed_segments",
        "gauge",
        "Sealed segments.",
        status.sealed_segments as u64,
    );
    metric(
        &mut out,
        "auditlog_open_segments",
        "gauge",
        "Open segments.",
        status.open_segments as u64,
    );
    metric(
        &mut out,
        "auditlog_http_requests_total",
        "counter",
        "HTTP requests answered.",
        http.requests.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "auditlog_http_client_errors_total",
        "counter",
        "HTTP answers with a 4xx status.",
        http.client_errors.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "auditlog_http_server_errors_total",
        "counter",
        "HTTP answers with a 5xx status.",
        http.server_errors.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "auditlog_http_queue_full_total",
        "counter",
        "Ingest requests refused with 429 because the engine's queue was full.",
        http.queue_full.load(Ordering::Relaxed),
    );
    metric(
        &mut out,
        "auditlog_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        uptime_s,
    );
    if let Some(r) = &status.replication {
        render_replication(&mut out, r);
    }
    out
}

fn render_replication(out: &mut String, r: &auditlog_engine::ReplicationStatus) {
    let rows: [(&str, &str, &str, u64); 10] = [
        (
            "auditlog_replication_segments_pending",
            "gauge",
            "Sealed segments not yet on the WORM store.",
            r.segments_pending,
        ),
        (
            "auditlog_replication_bytes_pending",
            "gauge",
            "Bytes of sealed segments not yet on the WORM store.",
            r.bytes_pending,
        ),
        (
            "auditlog_replication_oldest_pending_age_milliseconds",
            "gauge",
            "Age of the oldest sealed segment not yet shipped (0: none).",
            r.oldest_pending_age_ms,
        ),
        (
            "auditlog_replication_shipped_end",
            "gauge",
            "Leaves [0, N) whose segments are on the WORM store.",
            r.shipped_end,
        ),
        (
            "auditlog_replication_objects_shipped_total",
            "counter",
            "Objects stored since start.",
            r.objects_shipped,
        ),
        (
            "auditlog_replication_bytes_shipped_total",
            "counter",
            "Bytes stored since start.",
            r.bytes_shipped,
        ),
        (
            "auditlog_replication_objects_already_there_total",
            "counter",
            "Uploads that found the same object already stored (resumed after a crash).",
            r.objects_already_there,
        ),
        (
            "auditlog_replication_failures_total",
            "counter",
            "Failed upload attempts since start (each retried).",
            r.failures,
        ),
        (
            "auditlog_replication_alarm",
            "gauge",
            "1 when shipping stopped on something no retry fixes.",
            r.alarm.is_some() as u64,
        ),
        (
            "auditlog_replication_worm_enforced",
            "gauge",
            "1 when the target said it enforces retention.",
            (r.worm_enforced == Some(true)) as u64,
        ),
    ];
    for (name, kind, help, value) in rows {
        metric(out, name, kind, help, value);
    }
}

/// Reasons `/ready` fails on replication: an alarm, or lag past `ready_lag_ms_max`.
pub fn replication_not_ready(
    r: Option<&auditlog_engine::ReplicationStatus>,
    cfg: Option<&auditlog_engine::ReplicationConfig>,
) -> Vec<String> {
    let (Some(r), Some(cfg)) = (r, cfg) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(a) = &r.alarm {
        out.push(format!("replication alarm: {a}"));
    }
    if r.oldest_pending_age_ms > cfg.ready_lag_ms_max {
        out.push(format!(
            "replication lag: {} segments ({} bytes) unshipped, oldest {} ms (limit {} ms){}",
            r.segments_pending,
            r.bytes_pending,
            r.oldest_pending_age_ms,
            cfg.ready_lag_ms_max,
            r.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    }
    out
}
