//! `/metrics` lines of the syslog listener and the forwarder. Their counters are statics
//! of those modules, so the shared HTTP state needs no new fields.

use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::{write_rows, Row, COUNTER, GAUGE};
use crate::{forwarder, syslog};

pub fn render(out: &mut String, tree_size: u64) {
    write_rows(out, &syslog_rows());
    if let Some(rows) = forward_rows(tree_size) {
        write_rows(out, &rows);
    }
}

fn syslog_rows() -> [Row; 7] {
    let s = &syslog::COUNTERS;
    [
        (
            "auditlog_syslog_messages_total",
            COUNTER,
            "Syslog messages received.",
            s.messages.load(Relaxed),
        ),
        (
            "auditlog_syslog_stored_total",
            COUNTER,
            "Syslog messages stored as events (durable).",
            s.stored.load(Relaxed),
        ),
        (
            "auditlog_syslog_refused_total",
            COUNTER,
            "Syslog messages dropped: unparsable or not a valid event.",
            s.refused.load(Relaxed),
        ),
        (
            "auditlog_syslog_framing_errors_total",
            COUNTER,
            "Syslog connections closed for a framing error or an over-long message.",
            s.framing_errors.load(Relaxed),
        ),
        (
            "auditlog_syslog_connections",
            GAUGE,
            "Open syslog connections.",
            s.connections.load(Relaxed),
        ),
        (
            "auditlog_syslog_connections_refused_total",
            COUNTER,
            "Syslog connections closed at once: over syslog_connections_max or syslog_connections_per_source_max.",
            s.connections_refused.load(Relaxed),
        ),
        (
            "auditlog_syslog_tls_handshake_failures_total",
            COUNTER,
            "Syslog TLS connections closed at the handshake: plain text, a bad or missing certificate, or the timeout.",
            s.tls_handshake_failures.load(Relaxed),
        ),
    ]
}

/// `None` while no forwarder runs.
fn forward_rows(tree_size: u64) -> Option<[Row; 5]> {
    let f = &forwarder::COUNTERS;
    if f.enabled.load(Relaxed) == 0 {
        return None;
    }
    let cursor = f.cursor.load(Relaxed);
    Some([
        (
            "auditlog_forward_sent_total",
            COUNTER,
            "Events written to the collector, resends included.",
            f.sent.load(Relaxed),
        ),
        (
            "auditlog_forward_cursor",
            GAUGE,
            "Durable forwarder cursor: events before it are confirmed.",
            cursor,
        ),
        (
            "auditlog_forward_lag_events",
            GAUGE,
            "Events not yet confirmed by the collector.",
            tree_size.saturating_sub(cursor),
        ),
        (
            "auditlog_forward_errors_total",
            COUNTER,
            "Forwarder connection or send failures.",
            f.errors.load(Relaxed),
        ),
        (
            "auditlog_forward_connects_total",
            COUNTER,
            "Connections made to the collector.",
            f.connects.load(Relaxed),
        ),
    ])
}
