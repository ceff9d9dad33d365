//! Key rotation on a schedule: the policy (kept in `log.json` as `rotation`, FORMATS.md §3,
//! set only by an approved admin request), the age of the signing key it is measured
//! against, and making the next key in the backend the policy names. The daemon's
//! scheduler (`server/src/rotation.rs`) decides when; adding and retiring keys stay the
//! keyring's (`keyring.rs`), under its lock.

use std::path::Path;

use auditlog_formats::keyhistory::{KeyBackend, KeyEntry, KeyHistory};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A key older than this many days is surely a typo.
pub const ROTATION_DAYS_MAX: u32 = 3650;
pub const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// When keys rotate and where the next one is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// The signing key's age (from when it was added) at which the next key is added.
    pub rotation_days: u32,
    /// Days the old and the new key both sign before the old one is retired (auditors who
    /// pinned the old key meanwhile see the new one sign beside it).
    #[serde(default = "default_overlap_days")]
    pub overlap_days: u32,
    /// Where the next key is made.
    pub backend: NextKey,
}

fn default_overlap_days() -> u32 {
    7
}

/// Where a new key is made: its key material never leaves that backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextKey {
    /// A key file in `dir` (relative to the data directory), named by the time it is made.
    File { dir: String },
    /// A key generated in the HSM's token, labelled by the time it is made.
    Pkcs11 { module: String, token_label: String },
    /// A key created in AWS KMS (`CreateKey`, `SIGN_VERIFY`) of `key_spec` `ed25519` or
    /// `p256`, in `region`, at `endpoint` when it is not AWS's own.
    AwsKms {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        key_spec: String,
    },
}

/// The AWS `KeySpec` of a policy's `key_spec`.
fn aws_key_spec(name: &str) -> Option<&'static str> {
    match name {
        "ed25519" => Some(crate::kms::aws::KEY_SPEC_ED25519),
        "p256" => Some(crate::kms::aws::KEY_SPEC_P256),
        _ => None,
    }
}

impl RotationPolicy {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.rotation_days == 0 || self.rotation_days > ROTATION_DAYS_MAX {
            return Err(format!(
                "rotation_days {} is not within 1..={ROTATION_DAYS_MAX}",
                self.rotation_days
            ));
        }
        if self.overlap_days >= self.rotation_days {
            return Err(format!(
                "overlap_days {} must be below rotation_days {}",
                self.overlap_days, self.rotation_days
            ));
        }
        self.backend.validate()
    }
}

impl NextKey {
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            NextKey::File { dir } if dir.is_empty() || Path::new(dir).is_absolute() => Err(
                format!("key directory {dir:?} must be a relative path inside the data directory"),
            ),
            NextKey::File { dir } if dir.split('/').any(|c| c == "..") => Err(format!(
                "key directory {dir:?} must not leave the data directory"
            )),
            NextKey::Pkcs11 { token_label, .. } if token_label.is_empty() => {
                Err("token_label must not be empty".into())
            }
            NextKey::AwsKms { region, .. } if region.is_empty() => {
                Err("region must not be empty".into())
            }
            NextKey::AwsKms { key_spec, .. } if aws_key_spec(key_spec).is_none() => Err(format!(
                "key_spec {key_spec:?}: expected \"ed25519\" or \"p256\""
            )),
            _ => Ok(()),
        }
    }

    /// Where the key after `current` is made when no policy says: beside it (the same
    /// directory, the same token, the same AWS region and kind of key). `None` for a key
    /// in Google's or Azure's KMS (adopted, never created here) or one supplied by the
    /// embedding program.
    pub fn beside(current: &KeyEntry) -> Option<NextKey> {
        match &current.backend {
            KeyBackend::File { path } => Some(NextKey::File {
                dir: Path::new(path)
                    .parent()
                    .map(|d| d.display().to_string())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| ".".into()),
            }),
            KeyBackend::Pkcs11 {
                module,
                token_label,
                ..
            } => Some(NextKey::Pkcs11 {
                module: module.clone(),
                token_label: token_label.clone(),
            }),
            KeyBackend::AwsKms {
                region, endpoint, ..
            } => {
                let key: auditlog_formats::note::VerifierKey = current.verifier_key.parse().ok()?;
                let ecdsa = key.algorithm() == auditlog_formats::note::ALG_ECDSA_SHA256;
                Some(NextKey::AwsKms {
                    region: region.clone(),
                    endpoint: endpoint.clone(),
                    key_spec: if ecdsa { "p256" } else { "ed25519" }.into(),
                })
            }
            KeyBackend::GcpKms { .. }
            | KeyBackend::AzureKeyVault { .. }
            | KeyBackend::External { .. } => None,
        }
    }
}

/// The key the schedule is measured against: the newest key still signing (largest
/// `from_size`, then latest added). `None` when every key is retired.
pub fn newest_signing_key(history: &KeyHistory) -> Option<&KeyEntry> {
    history
        .keys
        .iter()
        .filter(|k| k.until_size.is_none())
        .max_by_key(|k| (k.from_size, k.added_at_unix_ns))
}

/// A key's age in whole days at `now_unix_ns` (0 for a key with no recorded time).
pub fn age_days(key: &KeyEntry, now_unix_ns: u64) -> u64 {
    if key.added_at_unix_ns == 0 {
        return 0;
    }
    now_unix_ns.saturating_sub(key.added_at_unix_ns) / NANOS_PER_DAY
}

pub(crate) fn read(data_dir: &Path) -> Result<Option<RotationPolicy>> {
    crate::retention::read_meta_field(data_dir, "rotation")
}

pub(crate) fn write(data_dir: &Path, policy: &RotationPolicy) -> Result<()> {
    policy.validate().map_err(EngineError::BadRequest)?;
    crate::retention::write_meta_field(data_dir, "rotation", policy)
}

/// Makes a new key in `next`, labelled `label` (a file `dir/checkpoint-<label>.key`, or an
/// HSM key `auditlog-<label>`), and returns the backend a key history entry records.
/// Refuses to overwrite a key that exists.
pub(crate) fn create_key(
    next: &NextKey,
    label: &str,
    name: &str,
    data_dir: &Path,
    pin: Option<&crate::pkcs11::PinSource>,
) -> Result<KeyBackend> {
    next.validate().map_err(EngineError::BadRequest)?;
    match next {
        NextKey::File { dir } => {
            let path = Path::new(dir).join(format!("checkpoint-{label}.key"));
            crate::signer::KeyFileSigner::generate(&data_dir.join(&path), name)?;
            Ok(KeyBackend::File {
                path: path.display().to_string(),
            })
        }
        NextKey::Pkcs11 {
            module,
            token_label,
        } => {
            let pin = pin.ok_or_else(|| {
                EngineError::Config(format!(
                    "the next key is to be made in an HSM (token {token_label:?}) but no PKCS#11 PIN source is configured"
                ))
            })?;
            let spec = crate::pkcs11::Pkcs11Spec {
                module: module.into(),
                token_label: token_label.clone(),
                key_label: format!("auditlog-{label}"),
            };
            crate::pkcs11::generate(&spec, pin)?;
            Ok(KeyBackend::Pkcs11 {
                module: module.clone(),
                token_label: token_label.clone(),
                key_label: spec.key_label,
            })
        }
        NextKey::AwsKms {
            region,
            endpoint,
            key_spec,
        } => {
            let spec = aws_key_spec(key_spec).expect("validated above");
            let key_id = crate::kms::aws::AwsKmsSigner::create(
                region,
                endpoint.clone(),
                spec,
                &format!("auditlog checkpoint key {name}, made {label} by the rotation policy"),
                crate::kms::aws::AwsEnv::from_process(),
            )
            .map_err(|e| EngineError::Signer(e.to_string()))?;
            Ok(KeyBackend::AwsKms {
                region: region.clone(),
                key_id,
                endpoint: endpoint.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(from: u64, until: Option<u64>, added: u64) -> KeyEntry {
        KeyEntry {
            name: "log".into(),
            verifier_key: format!("k{from}"),
            from_size: from,
            until_size: until,
            backend: KeyBackend::File {
                path: "keys/checkpoint.key".into(),
            },
            added_at_unix_ns: added,
        }
    }

    #[test]
    fn policies_out_of_range_are_refused() {
        let file = NextKey::File { dir: "keys".into() };
        let p = |rotation_days, overlap_days, backend: &NextKey| RotationPolicy {
            rotation_days,
            overlap_days,
            backend: backend.clone(),
        };
        assert!(p(90, 7, &file).validate().is_ok());
        for (r, o) in [(0, 0), (3651, 7), (7, 7), (5, 9)] {
            assert!(p(r, o, &file).validate().is_err(), "{r} {o}");
        }
        for dir in ["", "/etc", "keys/../../x", ".."] {
            let e = p(90, 7, &NextKey::File { dir: dir.into() }).validate();
            assert!(e.is_err(), "{dir:?}");
        }
        let hsm = NextKey::Pkcs11 {
            module: "/m.so".into(),
            token_label: String::new(),
        };
        assert!(p(90, 7, &hsm).validate().is_err());
        for (region, spec, ok) in [
            ("us-east-1", "p256", true),
            ("", "p256", false),
            ("r", "rsa", false),
        ] {
            let aws = NextKey::AwsKms {
                region: region.into(),
                endpoint: None,
                key_spec: spec.into(),
            };
            assert_eq!(p(90, 7, &aws).validate().is_ok(), ok, "{region} {spec}");
        }
        let text = r#"{"rotation_days":90,"backend":{"type":"file","dir":"keys"}}"#;
        let parsed: RotationPolicy = serde_json::from_str(text).expect("overlap defaults");
        assert_eq!(parsed, p(90, 7, &file));
    }

    /// The schedule follows the newest key still signing; a retired key never counts.
    #[test]
    fn the_newest_signing_key_and_its_age() {
        let day = NANOS_PER_DAY;
        let h = KeyHistory {
            format: 1,
            keys: vec![
                entry(0, Some(10), day),
                entry(10, None, 5 * day),
                entry(10, None, 6 * day),
            ],
        };
        let k = newest_signing_key(&h).expect("one signs");
        assert_eq!(k.added_at_unix_ns, 6 * day);
        assert_eq!(age_days(k, 96 * day + day / 2), 90);
        assert_eq!(age_days(k, 0), 0);
        assert_eq!(age_days(&entry(0, None, 0), 100 * day), 0);
        let retired = KeyHistory {
            format: 1,
            keys: vec![entry(0, Some(10), day)],
        };
        assert!(newest_signing_key(&retired).is_none());
        let with = |backend: KeyBackend, key: &str| KeyEntry {
            backend,
            verifier_key: key.into(),
            ..entry(0, None, day)
        };
        let ed = auditlog_formats::note::NoteSigner::from_seed("log", [7; 32])
            .expect("key")
            .verifier_key()
            .to_string();
        let ed = ed.as_str();
        assert_eq!(
            NextKey::beside(&with(
                KeyBackend::File {
                    path: "keys/checkpoint.key".into()
                },
                ed
            )),
            Some(NextKey::File { dir: "keys".into() })
        );
        assert_eq!(
            NextKey::beside(&with(
                KeyBackend::File {
                    path: "k.key".into()
                },
                ed
            )),
            Some(NextKey::File { dir: ".".into() })
        );
        let aws = KeyBackend::AwsKms {
            region: "eu-west-1".into(),
            key_id: "arn:k".into(),
            endpoint: None,
        };
        assert_eq!(
            NextKey::beside(&with(aws, ed)),
            Some(NextKey::AwsKms {
                region: "eu-west-1".into(),
                endpoint: None,
                key_spec: "ed25519".into()
            })
        );
        let gcp = KeyBackend::GcpKms {
            key_version: "projects/p/cryptoKeyVersions/1".into(),
            endpoint: None,
        };
        assert_eq!(NextKey::beside(&with(gcp, ed)), None, "adopted, never made");
    }
}
