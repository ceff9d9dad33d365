//! `/metrics` in the Prometheus text format, from `Engine::status()` and the server's own
//! counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use auditlog_engine::{Status, BATCH_EVENTS_BUCKETS, SYNC_BUCKETS_US};
use auditlog_formats::frame::ErrorCode;

/// Error answers by kind: `http:<code>` (the JSON error code) and `tcp:<code>` (the ERROR
/// frame's code). Errors are rare and off the hot path, so one lock is enough.
static ERRORS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn count_error(kind: String) {
    *ERRORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(kind)
        .or_insert(0) += 1;
}

pub fn count_http_error(code: &str) {
    count_error(format!("http:{code}"));
}

pub fn count_tcp_error(code: ErrorCode) {
    count_error(format!("tcp:{code:?}").to_lowercase());
}

/// Open connections per listener, from their semaphores.
pub struct Connections {
    pub http_open: usize,
    pub http_max: usize,
    pub tcp_open: usize,
    pub tcp_max: usize,
    /// Checkpoint long-polls waiting, and streamed reads (exports, ranges) running.
    pub long_polls: usize,
    pub streamed_reads: usize,
    /// HTTP request body bytes counted against `request_bytes_in_flight_max` now.
    pub request_bytes: usize,
    /// (listener, reason, connections shed).
    pub shed: Vec<(&'static str, &'static str, u64)>,
}

/// Counters the HTTP layer keeps.
#[derive(Default)]
pub struct HttpCounters {
    pub requests: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    pub queue_full: AtomicU64,
    /// Inclusion and consistency proofs answered.
    pub proofs: AtomicU64,
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

/// A Prometheus histogram from per-bucket counts (the last count is above every bound).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[u64],
    bounds_per_unit: f64,
    counts: &[u64],
    sum: f64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            // A division, not a product with 1e-6: 50 * 1e-6 printed as 4.9999999999999996e-5.
            *bound as f64 / bounds_per_unit
        );
    }
    cumulative += counts.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
}

/// One metric: name, type, help, value.
pub(crate) type Row = (&'static str, &'static str, &'static str, u64);
pub(crate) const GAUGE: &str = "gauge";
pub(crate) const COUNTER: &str = "counter";

pub(crate) fn write_rows(out: &mut String, rows: &[Row]) {
    for &(name, kind, help, value) in rows {
        metric(out, name, kind, help, value);
    }
}

pub fn render(status: &Status, http: &HttpCounters, conns: &Connections, uptime_s: u64) -> String {
    let mut out = String::new();
    let s = &status.stats;
    histogram(
        &mut out,
        "auditlog_sync_latency_seconds",
        "Time of each group commit's write and durable sync.",
        &SYNC_BUCKETS_US,
        1e6,
        &s.sync_latency_counts,
        s.sync_ns_total as f64 * 1e-9,
    );
    histogram(
        &mut out,
        "auditlog_batch_events",
        "Events per group commit.",
        &BATCH_EVENTS_BUCKETS,
        1.0,
        &s.batch_events_counts,
        s.events as f64,
    );
    write_rows(&mut out, &engine_rows(status));
    if let Some(age) = status.checkpoint_age_ms {
        metric(
            &mut out,
            "auditlog_checkpoint_age_milliseconds",
            GAUGE,
            "Age of the newest signed checkpoint.",
            age,
        );
    }
    write_rows(&mut out, &health_rows(status));
    render_pruning(&mut out, status);
    if status.search_index_on {
        render_search(&mut out, status);
    }
    write_rows(&mut out, &connection_rows(conns));
    let _ = writeln!(out, "# HELP auditlog_http_connections_shed_total Connections closed on accept: over the listener's connections_max (full) or its per-source cap (source).\n# TYPE auditlog_http_connections_shed_total counter");
    for (listener, why, n) in &conns.shed {
        let _ = writeln!(
            out,
            "auditlog_http_connections_shed_total{{listener=\"{listener}\",reason=\"{why}\"}} {n}"
        );
    }
    write_rows(&mut out, &http_rows(http));
    let _ = writeln!(out, "# HELP auditlog_errors_total Error answers by kind (http:<code>, tcp:<code>).\n# TYPE auditlog_errors_total counter");
    for (kind, n) in ERRORS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "auditlog_errors_total{{kind=\"{kind}\"}} {n}");
    }
    metric(
        &mut out,
        "auditlog_uptime_seconds",
        GAUGE,
        "Seconds since the daemon started.",
        uptime_s,
    );
    crate::siem_metrics::render(&mut out, status.tree_size);
    crate::witness_metrics::render(&mut out, status);
    if let Some(r) = &status.replication {
        render_replication(&mut out, r);
    }
    out
}

/// Ingest and the tree.
fn engine_rows(status: &Status) -> Vec<Row> {
    vec![
        (
            "auditlog_queue_depth",
            GAUGE,
            "Submissions waiting for the sequencer.",
            status.queue_depth as u64,
        ),
        (
            "auditlog_queue_capacity",
            GAUGE,
            "Limit of the submission queue.",
            status.queue_capacity as u64,
        ),
        (
            "auditlog_events_total",
            COUNTER,
            "Events appended since start.",
            status.stats.events,
        ),
        (
            "auditlog_bytes_total",
            COUNTER,
            "Record bytes appended since start.",
            status.stats.bytes,
        ),
        (
            "auditlog_batches_total",
            COUNTER,
            "Group commits since start.",
            status.stats.batches,
        ),
        (
            "auditlog_sync_seconds_total",
            COUNTER,
            "Time spent in durable syncs, in whole seconds.",
            status.stats.sync_ns_total / 1_000_000_000,
        ),
        (
            "auditlog_tree_size",
            GAUGE,
            "Leaves in the durable tree.",
            status.tree_size,
        ),
        (
            "auditlog_checkpoint_size",
            GAUGE,
            "Tree size of the newest signed checkpoint (0: none).",
            status.checkpoint_size.unwrap_or(0),
        ),
    ]
}

/// What `/ready` looks at, and the segments.
fn health_rows(status: &Status) -> Vec<Row> {
    vec![
        (
            "auditlog_failed",
            GAUGE,
            "1 when the engine refuses writes.",
            status.failed.is_some() as u64,
        ),
        (
            "auditlog_signer_error",
            GAUGE,
            "1 when the last checkpoint signing failed.",
            status.signer_error.is_some() as u64,
        ),
        (
            "auditlog_signer_failures_total",
            COUNTER,
            "Checkpoint or seal signings that failed (HSM unreachable, bad signature).",
            status.signer_failures,
        ),
        (
            "auditlog_signer_consecutive_failures",
            GAUGE,
            "Failed signings since the last success (0: the signer works).",
            status.signer_failures_in_a_row,
        ),
        (
            "auditlog_seal_error",
            GAUGE,
            "1 when the last attempt to seal a segment failed (the sealer retries).",
            status.seal_error.is_some() as u64,
        ),
        (
            "auditlog_seal_failures_total",
            COUNTER,
            "Failed attempts to seal a segment (I/O, signing, or a read-back that differs).",
            status.seal_failures,
        ),
        (
            "auditlog_preallocation_error",
            GAUGE,
            "1 when preparing the next segment failed.",
            status.preallocation_error.is_some() as u64,
        ),
        (
            "auditlog_sealed_segments",
            GAUGE,
            "Sealed segments on the local disk.",
            status.sealed_segments as u64,
        ),
        (
            "auditlog_open_segments",
            GAUGE,
            "Open segments.",
            status.open_segments as u64,
        ),
    ]
}

/// The listeners' connections and the request classes' limits.
fn connection_rows(conns: &Connections) -> Vec<Row> {
    vec![
        (
            "auditlog_http_connections",
            GAUGE,
            "Open HTTP connections.",
            conns.http_open as u64,
        ),
        (
            "auditlog_http_connections_max",
            GAUGE,
            "Limit of open HTTP connections.",
            conns.http_max as u64,
        ),
        (
            "auditlog_http_long_polls",
            GAUGE,
            "Checkpoint long-polls waiting (long_polls_max).",
            conns.long_polls as u64,
        ),
        (
            "auditlog_http_streamed_reads",
            GAUGE,
            "Exports and ranges streaming (streamed_reads_max).",
            conns.streamed_reads as u64,
        ),
        (
            "auditlog_http_request_bytes_in_flight",
            GAUGE,
            "Ingest bytes held: bodies, frames, syslog batches (request_bytes_in_flight_max).",
            conns.request_bytes as u64,
        ),
        (
            "auditlog_tcp_connections",
            GAUGE,
            "Open TCP ingest connections.",
            conns.tcp_open as u64,
        ),
        (
            "auditlog_tcp_connections_max",
            GAUGE,
            "Limit of open TCP ingest connections.",
            conns.tcp_max as u64,
        ),
    ]
}

/// HTTP answers.
fn http_rows(http: &HttpCounters) -> Vec<Row> {
    vec![
        (
            "auditlog_proofs_total",
            COUNTER,
            "Inclusion and consistency proofs served.",
            http.proofs.load(Ordering::Relaxed),
        ),
        (
            "auditlog_http_requests_total",
            COUNTER,
            "HTTP requests answered.",
            http.requests.load(Ordering::Relaxed),
        ),
        (
            "auditlog_http_client_errors_total",
            COUNTER,
            "HTTP answers with a 4xx status.",
            http.client_errors.load(Ordering::Relaxed),
        ),
        (
            "auditlog_http_server_errors_total",
            COUNTER,
            "HTTP answers with a 5xx status.",
            http.server_errors.load(Ordering::Relaxed),
        ),
        (
            "auditlog_http_queue_full_total",
            COUNTER,
            "Ingest requests refused with 429 because the engine's queue was full.",
            http.queue_full.load(Ordering::Relaxed),
        ),
    ]
}

/// Local retention: what left the local disk, and reads of it from the object store.
fn render_pruning(out: &mut String, status: &auditlog_engine::Status) {
    let r = &status.store_reads;
    let rows: [(&str, &str, &str, u64); 6] = [
        (
            "auditlog_pruned_segments",
            "gauge",
            "Sealed segments deleted locally after a verified copy reached the store.",
            status.pruned_segments as u64,
        ),
        (
            "auditlog_pruned_bytes",
            "gauge",
            "Bytes of the sealed segments deleted locally.",
            status.pruned_bytes,
        ),
        (
            "auditlog_store_reads_total",
            "counter",
            "Pruned segments fetched from the store to serve reads (cache misses).",
            r.fetches,
        ),
        (
            "auditlog_store_read_failures_total",
            "counter",
            "Fetches of pruned segments that failed: store down, object missing or not verifying.",
            r.fetch_failures,
        ),
        (
            "auditlog_store_read_bytes_total",
            "counter",
            "Bytes fetched from the store to serve reads of pruned segments.",
            r.fetched_bytes,
        ),
        (
            "auditlog_store_read_cache_bytes",
            "gauge",
            "Bytes of verified pruned segments cached in memory.",
            r.cached_bytes,
        ),
    ];
    write_rows(out, &rows);
}

/// The search index, when `search_index` is on: how far it covers the log (its lag is the
/// checkpoint size minus that), and its size.
fn render_search(out: &mut String, status: &auditlog_engine::Status) {
    let lag = status
        .checkpoint_size
        .unwrap_or(0)
        .saturating_sub(status.search_indexed);
    let rows: [(&str, &str, &str, u64); 4] = [
        (
            "auditlog_search_indexed",
            "gauge",
            "Records the search index covers, from index 0.",
            status.search_indexed,
        ),
        (
            "auditlog_search_index_lag_records",
            "gauge",
            "Checkpointed records not yet in the search index: searches scan them within search_records_examined_max.",
            lag,
        ),
        (
            "auditlog_search_index_bytes",
            "gauge",
            "Bytes of the search index on disk.",
            status.search_index_bytes,
        ),
        (
            "auditlog_search_index_runs",
            "gauge",
            "Runs of the search index (a search reads each one's terms).",
            status.search_index_runs as u64,
        ),
    ];
    write_rows(out, &rows);
}

fn render_replication(out: &mut String, r: &auditlog_engine::ReplicationStatus) {
    let rows: [(&str, &str, &str, u64); 18] = [
        (
            "auditlog_replication_tiles_pending",
            "gauge",
            "Full level-0 hash tiles under the latest checkpoint not yet on the WORM store.",
            r.tiles_pending,
        ),
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
        (
            "auditlog_replication_tail_lag_ms",
            "gauge",
            "Milliseconds the oldest locally durable batch has waited for the store (0: none): the recovery point if the machine is lost now.",
            r.tail_lag_ms,
        ),
        (
            "auditlog_replication_store_end",
            "gauge",
            "Leaves [0, N) on the store, as sealed segments or tails.",
            r.store_end,
        ),
        (
            "auditlog_replication_tails_shipped_total",
            "counter",
            "Tail objects stored since start.",
            r.tails_shipped,
        ),
        (
            "auditlog_replication_tail_bytes_shipped_total",
            "counter",
            "Bytes of tail objects stored since start.",
            r.tail_bytes_shipped,
        ),
        (
            "auditlog_replication_tail_failures_total",
            "counter",
            "Failed tail uploads since start (each retried).",
            r.tail_failures,
        ),
        (
            "auditlog_replication_tail_alarm",
            "gauge",
            "1 when tails stopped: a tail key on the store holds other bytes.",
            r.tail_alarm.is_some() as u64,
        ),
        (
            "auditlog_replication_remote_waiting_events",
            "gauge",
            "Remote durability: events synced locally whose acknowledgement waits for the store.",
            r.remote_waiting_events,
        ),
    ];
    write_rows(out, &rows);
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
    if let Some(a) = &r.tail_alarm {
        out.push(format!("replication tail alarm: {a}"));
    }
    if cfg.tail_interval_ms > 0 && r.tail_lag_ms > cfg.tail_ready_lag_ms_max {
        out.push(format!(
            "replication tail lag: {} ms since the oldest batch not on the store became durable (limit {} ms){}",
            r.tail_lag_ms,
            cfg.tail_ready_lag_ms_max,
            r.tail_last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bucket bounds print as the decimal a person (and a PromQL `le` matcher) would write,
    /// and the buckets are cumulative, ending in `+Inf` with the overflow bucket counted.
    #[test]
    fn histogram_bounds_print_exactly_and_accumulate() {
        let mut out = String::new();
        let counts = [1u64, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        histogram(
            &mut out,
            "x_seconds",
            "help",
            &SYNC_BUCKETS_US,
            1e6,
            &counts,
            0.5,
        );
        let les: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            les,
            [
                "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
                "0.025", "0.05", "0.1", "1", "+Inf"
            ]
        );
        assert!(
            out.contains("x_seconds_bucket{le=\"0.00025\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(
            out.ends_with("x_seconds_sum 0.5\nx_seconds_count 6\n"),
            "{out}"
        );
    }
}
