//! What the daemon writes into the log about itself at every start, before it serves
//! anything: one event with the effective security configuration, a digest of the
//! configuration file, and the tokens added or revoked since the last start (`auditlogd
//! tokens add` and `revoke` run offline, so their changes are recorded by the first start
//! that loads them). An
//! auditor reading the log sees every change of either, with `auditlogd` as the submitter.

use std::path::Path;

use anyhow::Context;
use auditlog_engine::retention::CLASSIFICATIONS;
use auditlog_engine::{Engine, SignerConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::admin::admin_event;
use crate::auth;
use crate::config::Config;

/// The security-relevant configuration in effect, as the start event's `details`.
pub fn security_configuration(
    cfg: &Config,
    engine: &Engine,
    config_file: Option<&Path>,
) -> anyhow::Result<Value> {
    let file = match config_file {
        None => json!({"path": null, "sha256": null}),
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            json!({"path": p.display().to_string(), "sha256": hex::encode(Sha256::digest(&bytes))})
        }
    };
    let replication = match &cfg.engine.replication {
        None => Value::Null,
        Some(r) => {
            // What the replicator applies: an approved policy over the TOML's, never below
            // the legal floor.
            let applied = match engine.retention()? {
                Some(approved) => approved.applied_over(&r.retention_days),
                None => r.retention_days,
            };
            let days: serde_json::Map<String, Value> = CLASSIFICATIONS
                .iter()
                .enumerate()
                .map(|(c, name)| (name.to_string(), json!(applied.days(c as u8))))
                .collect();
            let worm = engine
                .status()
                .replication
                .and_then(|s| s.worm_enforced)
                .map_or(json!("not checked yet"), Value::Bool);
            json!({
                "target": r.target,
                "worm_enforces_retention": worm,
                "allow_non_worm": r.allow_non_worm,
                "legal_hold": r.legal_hold,
                "retention_days": days,
                "local_keep_ms": r.local_keep_ms,
            })
        }
    };
    let signer = match &cfg.engine.signer {
        SignerConfig::DevKeyFile => json!({"backend": "key_file"}),
        SignerConfig::Pkcs11 { spec, .. } => json!({
            "backend": "pkcs11",
            "module": spec.module.display().to_string(),
            "token_label": spec.token_label,
            "key_label": spec.key_label,
        }),
        // Public information only (the key history records the same).
        SignerConfig::Kms { backend, .. } => json!({ "backend": backend }),
    };
    let s = &cfg.server;
    let tls = s.tls.as_ref();
    let syslog = &s.siem;
    Ok(json!({
        "configuration_file": file,
        "origin": cfg.engine.origin,
        "replication": replication,
        "signer": signer,
        "verifier_keys": engine.verifier_keys().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        "auth": {
            "bearer_tokens": true,
            "tls": tls.is_some(),
            "client_certificates": tls.is_some_and(|t| t.client_ca_path.is_some()),
            "client_roles": tls.map(|t| t.client_roles.iter()
                .map(|(n, r)| (n.clone(), json!(r.name())))
                .collect::<serde_json::Map<_, _>>()),
            "oidc": cfg.oidc.as_ref().map(oidc_details),
            "approvals_required": cfg.admin.approvals_required,
            "pkcs11_modules_allowed": cfg.admin.pkcs11_modules_allowed.iter()
                .map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "kms_endpoints_allowed": cfg.admin.kms_endpoints_allowed,
        },
        "listeners": {
            "http": s.http_addr.to_string(),
            "tcp": s.tcp_addr.to_string(),
            "ops": s.ops_addr.to_string(),
            "syslog": syslog.syslog_addr.map(|a| a.to_string()),
            "syslog_tls": syslog.syslog_tls.is_some(),
            "syslog_client_certificates": syslog.syslog_tls.as_ref().is_some_and(|t| t.client_ca_path.is_some()),
            "syslog_allow_unauthenticated": syslog.syslog_allow_unauthenticated,
        },
    }))
}

/// `[auth.oidc]` as the start event records it: whom sign-ins are trusted from, and what
/// they may do.
fn oidc_details(o: &crate::oidc_config::OidcConfig) -> Value {
    use crate::oidc_config::{alg_name, JwksSource};
    let (jwks_file, jwks_url) = match &o.jwks {
        JwksSource::File(p) => (Some(p.display().to_string()), None),
        JwksSource::Url(u) => (None, Some(u.clone())),
    };
    json!({
        "issuer": o.issuer,
        "audience": o.audience,
        "jwks_file": jwks_file,
        "jwks_url": jwks_url,
        "algorithms": o.algorithms.iter().map(|a| alg_name(*a)).collect::<Vec<_>>(),
        "leeway_s": o.leeway_s,
        "roles": o.roles.iter()
            .map(|r| json!({"claim": r.claim, "value": r.value, "role": r.role.name()}))
            .collect::<Vec<_>>(),
    })
}

/// The start event: the security configuration in effect and the token changes since the
/// last start, one `admin` event by `auditlogd`, durable before anything is served. The
/// token changes are marked recorded in `tokens.json` after it is durable: a crash between
/// the two records them again at the next start, never not at all.
pub fn record_start(
    cfg: &Config,
    engine: &Engine,
    config_file: Option<&Path>,
) -> anyhow::Result<()> {
    let data_dir = &cfg.engine.data_dir;
    let changes = auth::unrecorded_changes(data_dir)?;
    let mut details = security_configuration(cfg, engine, config_file)?;
    details["token_changes"] = changes
        .iter()
        .map(|c| {
            // A prefix names the token; the whole hash stays in tokens.json.
            let prefix = c.sha256.get(..16).unwrap_or(&c.sha256);
            json!({"action": c.action, "name": c.name, "role": c.role.name(), "sha256_prefix": prefix})
        })
        .collect();
    admin_event(
        engine,
        "auditlogd",
        "start",
        "configuration",
        "success",
        details,
    )
    .context("recording the start in the log")?;
    auth::mark_recorded(data_dir, &changes)
}
