//! `/metrics` lines of witness cosigning (`[witness]`), one series per witness, labelled
//! with its key name: what `/ready` summarises in one line.

use std::fmt::Write as _;

use auditlog_engine::Status;

use crate::metrics::{metric, COUNTER, GAUGE};

pub fn render(out: &mut String, status: &Status) {
    if status.witnesses.is_empty() {
        return;
    }
    metric(
        out,
        "auditlog_witness_policy",
        GAUGE,
        "Cosignatures a checkpoint needs before it is published.",
        status.witness_policy as u64,
    );
    metric(
        out,
        "auditlog_witness_policy_unmet",
        GAUGE,
        "1 when the newest checkpoint was not published: too few witnesses cosigned it.",
        status.witness_error.is_some() as u64,
    );
    let ws = &status.witnesses;
    family(
        out,
        ("auditlog_witness_cosignatures_total", COUNTER),
        "Valid cosignatures received, per witness.",
        ws.iter()
            .map(|w| (format!("witness=\"{}\"", w.name), w.cosignatures)),
    );
    family(
        out,
        ("auditlog_witness_failures_total", COUNTER),
        "Submissions that got no valid cosignature, per witness and reason (unreachable, conflict, inconsistent, refused, bad_cosignature).",
        ws.iter().flat_map(|w| {
            w.failures
                .map(|(reason, n)| (format!("witness=\"{}\",reason=\"{reason}\"", w.name), n))
        }),
    );
    family(
        out,
        ("auditlog_witness_cosigned_size", GAUGE),
        "The tree size each witness last cosigned, as far as this daemon knows (0: not yet).",
        ws.iter()
            .map(|w| (format!("witness=\"{}\"", w.name), w.cosigned_size)),
    );
}

/// One metric family: its help and type, then one line per label set.
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    series: impl Iterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}
