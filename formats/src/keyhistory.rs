//! The key history (`keys.json`, FORMATS.md §13): every checkpoint key a log has used, with
//! the tree sizes it signs, and the rule a checkpoint must meet against it.
//!
//! A key is *valid at size N* when `from_size <= N` and (`until_size` is absent or
//! `N < until_size`). A checkpoint at size N must carry a verified signature by every key
//! valid at N, and none by a key of the history that is not valid at N. Signature lines by
//! keys outside the history (witness cosignatures, say) are ignored.

use serde::{Deserialize, Serialize};

use crate::note::{self, Checkpoint, NoteError, VerifierKey};

pub const KEY_HISTORY_FORMAT: u32 = 1;
/// Keys in one history; more is refused (a note carries at most 100 signatures anyway).
pub const KEYS_MAX: usize = 100;

/// Where a key's private half lives: public information only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeyBackend {
    /// A key file (`PRIVATE+KEY+…`); a relative path is relative to the data directory.
    File { path: String },
    /// A key in an HSM, found by module, token label and key label.
    Pkcs11 {
        module: String,
        token_label: String,
        key_label: String,
    },
    /// A key in AWS KMS: region, key id or ARN, and the endpoint when it is not AWS's
    /// default for the region. Credentials are the daemon's (the AWS chain), never here.
    AwsKms {
        region: String,
        key_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// A key version in Google Cloud KMS (`projects/…/cryptoKeyVersions/N`), and the
    /// endpoint when it is not Google's.
    GcpKms {
        key_version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// A key in Azure Key Vault or Managed HSM: the vault URL, key name and key version.
    AzureKeyVault {
        vault: String,
        key: String,
        version: String,
    },
    /// Supplied by the embedding program; cannot be reopened from the history alone.
    External { description: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub name: String,
    /// The note verifier key string, `name+hex8(key_id)+base64(0x01 || pubkey)`.
    pub verifier_key: String,
    pub from_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_size: Option<u64>,
    pub backend: KeyBackend,
    #[serde(default)]
    pub added_at_unix_ns: u64,
}

impl KeyEntry {
    pub fn valid_at(&self, size: u64) -> bool {
        self.from_size <= size && self.until_size.is_none_or(|u| size < u)
    }

    /// `[from, until)` for messages.
    pub fn range(&self) -> String {
        match self.until_size {
            Some(u) => format!("[{}, {u})", self.from_size),
            None => format!("[{}, ∞)", self.from_size),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistory {
    pub format: u32,
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyHistoryError {
    #[error("key history is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("key history format {0} is not supported (expected 1)")]
    Format(u32),
    #[error("key history lists no keys")]
    Empty,
    #[error("key history lists {0} keys, over the limit of 100")]
    TooMany(usize),
    #[error("key {index}: {what}")]
    Key { index: usize, what: String },
    #[error("no key is valid at tree size {0}: the history has a gap")]
    Gap(u64),
    #[error("every key is retired: no key signs past size {0}")]
    NoCurrentKey(u64),
    #[error("checkpoint at size {size}: {what}")]
    Checkpoint { size: u64, what: String },
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("does not extend the pinned key history: {0}")]
    NotAnExtension(String),
}

/// A parsed, checked history with its keys decoded, in file order.
#[derive(Clone, Debug)]
pub struct CheckedHistory {
    pub history: KeyHistory,
    pub keys: Vec<VerifierKey>,
}

impl CheckedHistory {
    /// Whether this history extends `pinned`, one an auditor kept when the log had signed up
    /// to `signed_size` (FORMATS.md §13, "Extension"): every pinned key is still there with
    /// the same `from_size`; a retirement the pinned history had is unchanged, and a new one
    /// only retires sizes past `signed_size`; every new key starts past `signed_size` and
    /// past every pinned key's start. So no key can be added, or taken away, for sizes that
    /// were already signed: a retroactive key fails.
    pub fn extends(
        &self,
        pinned: &CheckedHistory,
        signed_size: u64,
    ) -> Result<(), KeyHistoryError> {
        let bad = |what: String| Err(KeyHistoryError::NotAnExtension(what));
        let ours = &self.history.keys;
        let theirs = &pinned.history.keys;
        let signed_before = theirs
            .iter()
            .map(|k| k.from_size)
            .max()
            .unwrap_or(0)
            .max(signed_size);
        for old in theirs {
            let Some(new) = ours.iter().find(|k| k.verifier_key == old.verifier_key) else {
                return bad(format!("key {} {} is gone", old.verifier_key, old.range()));
            };
            if new.from_size != old.from_size {
                return bad(format!(
                    "key {} now starts at {}, pinned at {}",
                    old.verifier_key, new.from_size, old.from_size
                ));
            }
            match (old.until_size, new.until_size) {
                (a, b) if a == b => {}
                (None, Some(u)) if u > signed_before => {}
                (a, b) => {
                    return bad(format!(
                        "key {} retired at {b:?}, pinned as {a:?} with sizes up to {signed_before} signed",
                        old.verifier_key
                    ))
                }
            }
        }
        for new in ours {
            if theirs.iter().any(|k| k.verifier_key == new.verifier_key) {
                continue;
            }
            if new.from_size <= signed_before {
                return bad(format!(
                    "key {} {} was added for sizes already signed (up to {signed_before}): a retroactive key",
                    new.verifier_key,
                    new.range()
                ));
            }
        }
        Ok(())
    }
}

impl KeyHistory {
    /// One key valid at every size: what a single `--key` means.
    pub fn single(key: &VerifierKey) -> KeyHistory {
        KeyHistory {
            format: KEY_HISTORY_FORMAT,
            keys: vec![KeyEntry {
                name: key.name().to_string(),
                verifier_key: key.to_string(),
                from_size: 0,
                until_size: None,
                backend: KeyBackend::External {
                    description: "given on the command line".into(),
                },
                added_at_unix_ns: 0,
            }],
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<CheckedHistory, KeyHistoryError> {
        let h: KeyHistory =
            serde_json::from_slice(bytes).map_err(|e| KeyHistoryError::Json(e.to_string()))?;
        h.check()
    }

    /// Pretty JSON ending in a newline, as `keys.json` holds it.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Checks every rule of FORMATS.md §13 and decodes the keys.
    pub fn check(self) -> Result<CheckedHistory, KeyHistoryError> {
        if self.format != KEY_HISTORY_FORMAT {
            return Err(KeyHistoryError::Format(self.format));
        }
        if self.keys.is_empty() {
            return Err(KeyHistoryError::Empty);
        }
        if self.keys.len() > KEYS_MAX {
            return Err(KeyHistoryError::TooMany(self.keys.len()));
        }
        let mut keys: Vec<VerifierKey> = Vec::with_capacity(self.keys.len());
        for (index, e) in self.keys.iter().enumerate() {
            let bad = |what: String| KeyHistoryError::Key { index, what };
            let k = VerifierKey::parse(&e.verifier_key)
                .map_err(|err| bad(format!("verifier key {:?}: {err}", e.verifier_key)))?;
            if k.name() != e.name {
                return Err(bad(format!(
                    "name {:?} differs from the verifier key's {:?}",
                    e.name,
                    k.name()
                )));
            }
            if let Some(u) = e.until_size {
                if u <= e.from_size {
                    return Err(bad(format!(
                        "until_size {u} is not above from_size {}",
                        e.from_size
                    )));
                }
            }
            if keys
                .iter()
                .any(|o| o.name() == k.name() && o.key_id() == k.key_id())
            {
                return Err(bad("the same name and key id appear twice".into()));
            }
            keys.push(k);
        }
        // Every size from 0 on must have a valid key.
        let mut ranges: Vec<(u64, Option<u64>)> = self
            .keys
            .iter()
            .map(|e| (e.from_size, e.until_size))
            .collect();
        ranges.sort();
        let mut covered: Option<u64> = Some(0); // None: to infinity
        for (from, until) in ranges {
            let Some(c) = covered else { break };
            if from > c {
                return Err(KeyHistoryError::Gap(c));
            }
            covered = until.map(|u| u.max(c));
        }
        if let Some(c) = covered {
            return Err(KeyHistoryError::NoCurrentKey(c));
        }
        Ok(CheckedHistory {
            history: self,
            keys,
        })
    }
}

impl CheckedHistory {
    /// Keys valid at `size`, in file order.
    pub fn valid_at(&self, size: u64) -> Vec<&VerifierKey> {
        self.history
            .keys
            .iter()
            .zip(&self.keys)
            .filter(|(e, _)| e.valid_at(size))
            .map(|(_, k)| k)
            .collect()
    }

    /// Opens a checkpoint note under the history's rule: every signature by a history key
    /// verifies, every key valid at its size signed it, and no other history key did.
    pub fn open_checkpoint(&self, msg: &str) -> Result<Checkpoint, KeyHistoryError> {
        let (cp, opened) = note::open_checkpoint(msg, &self.keys)?;
        let size = cp.size;
        for v in &opened.verified {
            let i = self
                .keys
                .iter()
                .position(|k| k == v)
                .expect("verified keys come from the history");
            let e = &self.history.keys[i];
            if !e.valid_at(size) {
                return Err(KeyHistoryError::Checkpoint {
                    size,
                    what: format!(
                        "signed by key {} outside its validity {}",
                        v.to_string()
                            .split('+')
                            .take(2)
                            .collect::<Vec<_>>()
                            .join("+"),
                        e.range()
                    ),
                });
            }
        }
        for k in self.valid_at(size) {
            if !opened.verified.contains(k) {
                return Err(KeyHistoryError::Checkpoint {
                    size,
                    what: format!(
                        "no signature by key {}, which is valid at this size",
                        k.to_string()
                            .split('+')
                            .take(2)
                            .collect::<Vec<_>>()
                            .join("+")
                    ),
                });
            }
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;

    fn entry(s: &NoteSigner, from: u64, until: Option<u64>) -> KeyEntry {
        KeyEntry {
            name: s.name().to_string(),
            verifier_key: s.verifier_key().to_string(),
            from_size: from,
            until_size: until,
            backend: KeyBackend::File {
                path: "keys/x.key".into(),
            },
            added_at_unix_ns: 0,
        }
    }

    fn cp(size: u64) -> Checkpoint {
        Checkpoint {
            origin: "o".into(),
            size,
            root: [7; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn rotation_rule() {
        let a = NoteSigner::from_seed("log", [1; 32]).unwrap();
        let b = NoteSigner::from_seed("log", [2; 32]).unwrap();
        let w = NoteSigner::from_seed("witness", [3; 32]).unwrap();
        let h = KeyHistory {
            format: 1,
            keys: vec![entry(&a, 0, Some(20)), entry(&b, 10, None)],
        };
        let h = KeyHistory::parse(h.to_json().as_bytes()).unwrap();
        let sign = |size, s: &[&NoteSigner]| note::sign_checkpoint(&cp(size), s).unwrap();
        assert!(h.open_checkpoint(&sign(5, &[&a])).is_ok());
        assert!(
            h.open_checkpoint(&sign(5, &[&a, &w])).is_ok(),
            "unknown keys are ignored"
        );
        assert!(
            h.open_checkpoint(&sign(5, &[&a, &b])).is_err(),
            "b before its range"
        );
        assert!(
            h.open_checkpoint(&sign(15, &[&a])).is_err(),
            "b missing in the overlap"
        );
        assert!(h.open_checkpoint(&sign(15, &[&a, &b])).is_ok());
        assert!(h.open_checkpoint(&sign(20, &[&b])).is_ok());
        assert!(
            h.open_checkpoint(&sign(20, &[&a, &b])).is_err(),
            "a after retirement"
        );
        assert!(h.open_checkpoint(&sign(25, &[&a])).is_err());
        assert!(
            h.open_checkpoint(&sign(25, &[&w])).is_err(),
            "no history key at all"
        );
    }

    /// A history extends a pinned one only by keys and retirements for sizes not yet
    /// signed when it was pinned; anything that rewrites signed sizes is refused.
    #[test]
    fn extension_rule() {
        let a = NoteSigner::from_seed("log", [1; 32]).unwrap();
        let b = NoteSigner::from_seed("log", [2; 32]).unwrap();
        let c = NoteSigner::from_seed("log", [3; 32]).unwrap();
        let h = |keys: Vec<KeyEntry>| KeyHistory { format: 1, keys }.check().unwrap();
        let pinned = h(vec![entry(&a, 0, None)]);
        // Signed up to 100 when pinned.
        assert_eq!(pinned.extends(&pinned, 100), Ok(()));
        let rotated = h(vec![entry(&a, 0, Some(202)), entry(&b, 151, None)]);
        assert_eq!(rotated.extends(&pinned, 100), Ok(()), "a later rotation");
        assert_eq!(rotated.extends(&rotated, 150), Ok(()));
        let early = h(vec![entry(&a, 0, Some(202)), entry(&b, 50, None)]);
        assert!(
            matches!(early.extends(&pinned, 100), Err(KeyHistoryError::NotAnExtension(m)) if m.contains("retroactive")),
            "a key added for sizes already signed"
        );
        let retired_early = h(vec![entry(&a, 0, Some(60)), entry(&b, 60, None)]);
        assert!(
            retired_early.extends(&pinned, 100).is_err(),
            "a key retired below the signed size"
        );
        let replaced = h(vec![entry(&c, 0, None)]);
        assert!(
            replaced.extends(&pinned, 100).is_err(),
            "the pinned key gone"
        );
        let moved = h(vec![entry(&b, 0, None), entry(&a, 5, None)]);
        assert!(
            moved.extends(&pinned, 0).is_err(),
            "a pinned key's start moved"
        );
        let unretired = h(vec![entry(&a, 0, None), entry(&b, 151, None)]);
        assert!(
            unretired.extends(&rotated, 150).is_err(),
            "a retirement undone"
        );
    }

    #[test]
    fn shape_rules() {
        let a = NoteSigner::from_seed("log", [1; 32]).unwrap();
        let b = NoteSigner::from_seed("log", [2; 32]).unwrap();
        let check = |keys: Vec<KeyEntry>| KeyHistory { format: 1, keys }.check().map(|_| ());
        assert_eq!(check(vec![]), Err(KeyHistoryError::Empty));
        assert_eq!(
            check(vec![entry(&a, 1, None)]),
            Err(KeyHistoryError::Gap(0))
        );
        assert_eq!(
            check(vec![entry(&a, 0, Some(5)), entry(&b, 6, None)]),
            Err(KeyHistoryError::Gap(5))
        );
        assert_eq!(
            check(vec![entry(&a, 0, Some(5))]),
            Err(KeyHistoryError::NoCurrentKey(5))
        );
        assert!(check(vec![entry(&a, 0, Some(5)), entry(&a, 5, None)]).is_err());
        assert!(check(vec![entry(&a, 3, Some(3)), entry(&b, 0, None)]).is_err());
        let mut wrong_name = entry(&a, 0, None);
        wrong_name.name = "other".into();
        assert!(check(vec![wrong_name]).is_err());
        assert!(check(vec![entry(&a, 0, Some(5)), entry(&b, 5, None)]).is_ok());
        assert!(KeyHistory {
            format: 2,
            keys: vec![entry(&a, 0, None)]
        }
        .check()
        .is_err());
    }
}
