//! The log's retention policy, kept in `log.json` (`retention`, FORMATS.md §3): days to keep
//! events of each classification in WORM storage. Changed only by an approved admin request;
//! the replicator reads it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{corrupt, io_err, EngineError, Result};

/// Classification names of the audit schema, in FORMATS.md §1 order.
pub const CLASSIFICATIONS: [&str; 5] = [
    "UNCLASSIFIED",
    "CUI//BASIC",
    "CUI//SP-PRIV",
    "CUI//SP-PROP",
    "CUI//SP-LEI",
];
/// About a century: longer is surely a typo.
pub const RETENTION_DAYS_MAX: u32 = 36_500;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Days to retain, by classification name; absent classifications keep the defaults.
    pub days: BTreeMap<String, u32>,
}

impl RetentionPolicy {
    /// The first class this policy would keep for less than its legal floor.
    pub fn below_floor(&self) -> Option<String> {
        CLASSIFICATIONS.iter().enumerate().find_map(|(c, name)| {
            let floor = auditlog_worm::LEGAL_FLOOR_DAYS[c];
            let d = *self.days.get(*name)?;
            (d < floor)
                .then(|| format!("{name}: {d} days is below the legal floor of {floor} days"))
        })
    }

    /// The policy the replicator applies: this approved policy's days where it names a
    /// class, `configured` (the TOML, itself at or above the floor) elsewhere, never below
    /// the legal floor.
    pub fn applied_over(
        &self,
        configured: &auditlog_worm::RetentionPolicy,
    ) -> auditlog_worm::RetentionPolicy {
        let mut out = *configured;
        for (c, name) in CLASSIFICATIONS.iter().enumerate() {
            if let Some(&d) = self.days.get(*name) {
                // `set` knows every name of CLASSIFICATIONS.
                let _ = out.set(name, d.max(auditlog_worm::LEGAL_FLOOR_DAYS[c]));
            }
        }
        out
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.days.is_empty() {
            return Err("retention policy names no classification".into());
        }
        for (c, d) in &self.days {
            if !CLASSIFICATIONS.contains(&c.as_str()) {
                return Err(format!("unknown classification {c:?}"));
            }
            if *d == 0 || *d > RETENTION_DAYS_MAX {
                return Err(format!(
                    "{c}: {d} days is not within 1..={RETENTION_DAYS_MAX}"
                ));
            }
        }
        match self.below_floor() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

pub(crate) fn read(data_dir: &Path) -> Result<Option<RetentionPolicy>> {
    read_meta_field(data_dir, "retention")
}

/// Stores `policy` in `log.json` (`read_meta_field`'s durable counterpart).
pub(crate) fn write(data_dir: &Path, policy: &RetentionPolicy) -> Result<()> {
    policy.validate().map_err(EngineError::BadRequest)?;
    write_meta_field(data_dir, "retention", policy)
}

/// Serialises read-modify-write of `log.json`.
static META_LOCK: Mutex<()> = Mutex::new(());

/// A policy field of `log.json` (`retention`, `rotation`): `None` when absent or null.
pub(crate) fn read_meta_field<T: serde::de::DeserializeOwned>(
    data_dir: &Path,
    field: &str,
) -> Result<Option<T>> {
    let path = data_dir.join(auditlog_formats::layout::LOG_META_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path, "read"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(&path, e.to_string()))?;
    match v.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(r) => serde_json::from_value(r.clone())
            .map(Some)
            .map_err(|e| corrupt(&path, format!("{field}: {e}"))),
    }
}

/// Rewrites `log.json` with `field` set to `value`, keeping every other field: temp, fsync,
/// rename, fsync.
pub(crate) fn write_meta_field<T: Serialize>(
    data_dir: &Path,
    field: &str,
    value: &T,
) -> Result<()> {
    let _g = META_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = data_dir.join(auditlog_formats::layout::LOG_META_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path, "read"))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(&path, e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| corrupt(&path, "not a JSON object"))?;
    obj.insert(
        field.into(),
        serde_json::to_value(value).map_err(|e| EngineError::BadRequest(e.to_string()))?,
    );
    let out =
        serde_json::to_string_pretty(&v).map_err(|e| EngineError::BadRequest(e.to_string()))?;
    crate::files::replace_file(&path, (out + "\n").as_bytes())
}
