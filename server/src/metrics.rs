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

pub(crate) fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
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
    crate::siem_metrics::render(&mut out, status.tree_size);
    out
}
