//! `/metrics` lines of witness cosigning (`[witness]`), one series per witness, labelled
//! with its key name: what `/ready` summarises in one line.

use std::fmt::Write as _;

use auditlog_engine::Status;

use crate::metrics::metric;

pub fn render(out: &mut String, status: &Status) {
    if status.witnesses.is_empty() {
        return;
    }
    metric(
        out,
        "auditlog_witness_policy",
        "gauge",
        "Cosignatures a checkpoint needs before it is published.",
        status.witness_policy as u64,
    );
    metric(
        out,
        "auditlog_witness_policy_unmet",
        "gauge",
        "1 when the newest checkpoint was not published: too few witnesses cosigned it.",
        status.witness_error.is_some() as u64,
    );
    let _ = writeln!(out, "# HELP auditlog_witness_cosignatures_total Valid cosignatures received, per witness.\n# TYPE auditlog_witness_cosignatures_total counter");
    for w in &status.witnesses {
        let _ = writeln!(
            out,
            "auditlog_witness_cosignatures_total{{witness=\"{}\"}} {}",
            w.name, w.cosignatures
        );
    }
    let _ = writeln!(out, "# HELP auditlog_witness_failures_total Submissions that got no valid cosignature, per witness and reason (unreachable, conflict, inconsistent, refused, bad_cosignature).\n# TYPE auditlog_witness_failures_total counter");
    for w in &status.witnesses {
        for (reason, n) in w.failures {
            let _ = writeln!(
                out,
                "auditlog_witness_failures_total{{witness=\"{}\",reason=\"{reason}\"}} {n}",
                w.name
            );
        }
    }
    let _ = writeln!(out, "# HELP auditlog_witness_cosigned_size The tree size each witness last cosigned, as far as this daemon knows (0: not yet).\n# TYPE auditlog_witness_cosigned_size gauge");
    for w in &status.witnesses {
        let _ = writeln!(
            out,
            "auditlog_witness_cosigned_size{{witness=\"{}\"}} {}",
            w.name, w.cosigned_size
        );
    }
}
