//! The operations the two-person rule guards (`admin.rs` runs the requests): what each
//! one is, what no approval can make acceptable, and carrying it out.

use std::path::Path as FsPath;

use auditlog_engine::retention::RetentionPolicy;
use auditlog_engine::rotation::{NextKey, RotationPolicy};
use auditlog_engine::KeyBackend;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::config::AdminConfig;
use crate::http::{ApiError, St};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Add an existing key (a key file or an HSM key) to the key history.
    RotateKey {
        backend: KeyBackend,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// End a key's validity: `key` is its verifier key or `name+hex8(id)`.
    RetireKey {
        key: String,
    },
    SetRetention {
        retention: RetentionPolicy,
    },
    /// Add an admin identity. `token_sha256` is the lowercase hex SHA-256 of a token the new
    /// admin made themselves (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`), so that
    /// nobody else, the approvers included, ever sees it.
    AddAdmin {
        name: String,
        token_sha256: String,
    },
    /// Rotate keys on a schedule (`rotation.rs`): the policy is stored in `log.json`.
    SetRotationPolicy {
        rotation: RotationPolicy,
    },
}

impl Operation {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Operation::RotateKey { .. } => "rotate_key",
            Operation::RetireKey { .. } => "retire_key",
            Operation::SetRetention { .. } => "set_retention",
            Operation::AddAdmin { .. } => "add_admin",
            Operation::SetRotationPolicy { .. } => "set_rotation_policy",
        }
    }
}

/// Whether a KMS endpoint is the cloud's own or allowlisted (`admin.kms_endpoints_allowed`,
/// or the `[signer]` section's).
fn kms_endpoint_allowed(cfg: &AdminConfig, endpoint: &str) -> bool {
    let e = endpoint.trim_end_matches('/');
    cfg.kms_endpoints_allowed.iter().any(|a| a == e)
}

/// A public-cloud Key Vault or Managed HSM URL: `https://<name>.vault.azure.net` or
/// `https://<name>.managedhsm.azure.net`, nothing else in its authority.
fn is_azure_vault_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    !host.contains(['@', ':'])
        && [".vault.azure.net", ".managedhsm.azure.net"]
            .iter()
            .any(|d| {
                host.strip_suffix(d)
                    .is_some_and(|n| !n.is_empty() && !n.contains('.'))
            })
}

/// What no approval can make acceptable: retention below the legal floor, a PKCS#11 module
/// outside `admin.pkcs11_modules_allowed` (it would be loaded into the daemon and handed
/// the HSM PIN), a key file outside the data directory, a KMS endpoint not the cloud's own
/// nor allowlisted. Checked when a request is made and
/// again before it executes (the configuration may have changed in between).
pub(super) fn check_operation(cfg: &AdminConfig, op: &Operation) -> Result<(), ApiError> {
    let refuse = |code: &'static str, why: String| {
        Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, why))
    };
    match op {
        Operation::SetRetention { retention } => {
            if let Some(why) = retention.below_floor() {
                return refuse("below_legal_floor", why);
            }
            retention.validate().map_err(ApiError::bad)
        }
        Operation::RotateKey { backend, .. } => match backend {
            KeyBackend::Pkcs11 { module, .. } => {
                if module_allowed(cfg, module) {
                    Ok(())
                } else {
                    refuse(
                        "module_not_allowed",
                        format!("PKCS#11 module {module:?} is not in admin.pkcs11_modules_allowed (nor the [signer] module)"),
                    )
                }
            }
            KeyBackend::File { path } => {
                let inside = cfg
                    .data_dir
                    .join(path)
                    .canonicalize()
                    .ok()
                    .zip(cfg.data_dir.canonicalize().ok());
                match inside {
                    Some((p, d)) if p.starts_with(&d) => Ok(()),
                    _ => refuse(
                        "key_file_outside_data_dir",
                        format!("key file {path:?} is not a file inside the data directory"),
                    ),
                }
            }
            // The daemon reaches a KMS key with its own cloud identity, so a request may
            // name only the cloud's own endpoints or allowlisted ones: anywhere else would
            // receive the daemon's signed requests or bearer tokens.
            KeyBackend::AwsKms { endpoint, .. } | KeyBackend::GcpKms { endpoint, .. } => {
                match endpoint {
                    None => Ok(()),
                    Some(e) if kms_endpoint_allowed(cfg, e) => Ok(()),
                    Some(e) => refuse(
                        "kms_endpoint_not_allowed",
                        format!("KMS endpoint {e:?} is not in admin.kms_endpoints_allowed (nor the [signer] endpoint)"),
                    ),
                }
            }
            KeyBackend::AzureKeyVault { vault, .. } => {
                if is_azure_vault_url(vault) || kms_endpoint_allowed(cfg, vault) {
                    Ok(())
                } else {
                    refuse(
                        "kms_endpoint_not_allowed",
                        format!("vault {vault:?} is neither https://*.vault.azure.net nor https://*.managedhsm.azure.net, nor in admin.kms_endpoints_allowed"),
                    )
                }
            }
            KeyBackend::External { .. } => refuse(
                "backend_not_allowed",
                "an external key cannot be added by request".into(),
            ),
        },
        Operation::RetireKey { .. } => Ok(()),
        Operation::SetRotationPolicy { rotation } => {
            rotation.validate().map_err(ApiError::bad)?;
            match &rotation.backend {
                NextKey::Pkcs11 { module, .. } if !module_allowed(cfg, module) => refuse(
                    "module_not_allowed",
                    format!("PKCS#11 module {module:?} is not in admin.pkcs11_modules_allowed (nor the [signer] module)"),
                ),
                NextKey::AwsKms {
                    endpoint: Some(e), ..
                } if !kms_endpoint_allowed(cfg, e) => refuse(
                    "kms_endpoint_not_allowed",
                    format!("KMS endpoint {e:?} is not in admin.kms_endpoints_allowed (nor the [signer] endpoint)"),
                ),
                _ => Ok(()),
            }
        }
        Operation::AddAdmin { name, token_sha256 } => {
            crate::auth::check_token_name(name).map_err(|e| ApiError::bad(e.to_string()))?;
            if token_hash(token_sha256).is_none() {
                return Err(ApiError::bad(
                    "token_sha256 must be 64 lowercase hex digits (the SHA-256 of the token)",
                ));
            }
            Ok(())
        }
    }
}

/// Whether `module` is one of `admin.pkcs11_modules_allowed` (by path, or the same file).
fn module_allowed(cfg: &AdminConfig, module: &str) -> bool {
    let b = FsPath::new(module);
    cfg.pkcs11_modules_allowed
        .iter()
        .any(|a| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y))
}

fn token_hash(hex_text: &str) -> Option<[u8; 32]> {
    if hex_text.len() != 64 || hex_text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// Carries out an approved operation; the text is what the audit event and the answer say.
pub(super) fn execute(st: &St, op: &Operation) -> Result<String, String> {
    let engine = &st.engine;
    match op {
        Operation::RotateKey { backend, name } => engine
            .add_key(backend, name.as_deref())
            .map(|e| {
                format!(
                    "key {} added, signs from size {}",
                    e.verifier_key, e.from_size
                )
            })
            .map_err(|e| e.to_string()),
        Operation::RetireKey { key } => engine
            .retire_key(key)
            .map(|e| {
                format!(
                    "key {} retired, signs sizes below {}",
                    e.verifier_key,
                    e.until_size.unwrap_or(0)
                )
            })
            .map_err(|e| e.to_string()),
        Operation::SetRetention { retention } => engine
            .set_retention(retention)
            .map(|()| "retention policy stored in log.json".to_string())
            .map_err(|e| e.to_string()),
        Operation::SetRotationPolicy { rotation } => engine
            .set_rotation_policy(rotation)
            .map(|()| {
                format!(
                    "rotation policy stored in log.json: a key rotates at {} days, the old one retired {} days later",
                    rotation.rotation_days, rotation.overlap_days
                )
            })
            .map_err(|e| e.to_string()),
        Operation::AddAdmin { name, token_sha256 } => {
            let hash = token_hash(token_sha256).ok_or("token_sha256 is not a SHA-256")?;
            // In tokens.json first (refused for a name or token in use), then accepted.
            crate::auth::add_token_hash(&st.admin.cfg.data_dir, Role::Admin, name, hash, false)
                .map_err(|e| format!("{e:#}"))?;
            st.tokens.insert(hash, Role::Admin, name);
            Ok(format!(
                "admin {name} added (token sha256 {})",
                &token_sha256[..16]
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    /// Only a vault's own host in the Azure public cloud passes without an allowlist.
    #[test]
    fn azure_vault_urls() {
        for ok in [
            "https://v1.vault.azure.net",
            "https://v1.vault.azure.net/",
            "https://hsm.managedhsm.azure.net",
        ] {
            assert!(super::is_azure_vault_url(ok), "{ok}");
        }
        for bad in [
            "http://v1.vault.azure.net",
            "https://vault.azure.net",
            "https://a.b.vault.azure.net",
            "https://v1.vault.azure.net.evil.example",
            "https://v1.vault.azure.net@evil.example",
            "https://v1.vault.azure.net:8443",
            "https://evil.example/v1.vault.azure.net",
        ] {
            assert!(!super::is_azure_vault_url(bad), "{bad}");
        }
    }
}
