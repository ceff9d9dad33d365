//! `/metrics` lines of the syslog listener and the forwarder. Their counters are statics
//! of those modules, so the shared HTTP state needs no new fields.

use std::sync::atomic::Ordering::Relaxed;

use crate::metrics::metric;
use crate::{forwarder, syslog};

pub fn render(out: &mut String, tree_size: u64) {
    let s = &syslog::COUNTERS;
    for (name, kind, help, v) in [
        (
            "auditlog_syslog_messages_total",
            "counter",
            "Syslog messages received.",
            s.messages.load(Relaxed),
        ),
        (
            "auditlog_syslog_stored_total",
            "counter",
            "Syslog messages stored as events (durable).",
            s.stored.load(Relaxed),
        ),
        (
            "auditlog_syslog_refused_total",
            "counter",
            "Syslog messages dropped: unparsable or not a valid event.",
            s.refused.load(Relaxed),
        ),
        (
            "auditlog_syslog_framing_errors_total",
            "counter",
            "Syslog connections closed for a framing error or an over-long message.",
            s.framing_errors.load(Relaxed),
        ),
        (
            "auditlog_syslog_connections",
            "gauge",
            "Open syslog connections.",
            s.connections.load(Relaxed),
        ),
        (
            "auditlog_syslog_connections_refused_total",
            "counter",
            "Syslog connections closed at once: over syslog_connections_max or syslog_connections_per_source_max.",
            s.connections_refused.load(Relaxed),
        ),
        (
            "auditlog_syslog_tls_handshake_failures_total",
            "counter",
            "Syslog TLS connections closed at the handshake: plain text, a bad or missing certificate, or the timeout.",
            s.tls_handshake_failures.load(Relaxed),
        ),
    ] {
        metric(out, name, kind, help, v);
    }
    let f = &forwarder::COUNTERS;
    if f.enabled.load(Relaxed) == 0 {
        return;
    }
    let cursor = f.cursor.load(Relaxed);
    for (name, kind, help, v) in [
        (
            "auditlog_forward_sent_total",
            "counter",
            "Events written to the collector, resends included.",
            f.sent.load(Relaxed),
        ),
        (
            "auditlog_forward_cursor",
            "gauge",
            "Durable forwarder cursor: events before it are confirmed.",
            cursor,
        ),
        (
            "auditlog_forward_lag_events",
            "gauge",
            "Events not yet confirmed by the collector.",
            tree_size.saturating_sub(cursor),
        ),
        (
            "auditlog_forward_errors_total",
            "counter",
            "Forwarder connection or send failures.",
            f.errors.load(Relaxed),
        ),
        (
            "auditlog_forward_connects_total",
            "counter",
            "Connections made to the collector.",
            f.connects.load(Relaxed),
        ),
    ] {
        metric(out, name, kind, help, v);
    }
}
