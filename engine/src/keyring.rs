//! The keyring: the log's key history (`keys.json`, FORMATS.md §13) and a signer for each of
//! its keys. Every checkpoint (the checkpointer's and the sealer's footers) is signed here by
//! every key valid at its size, under one lock that rotation and retirement also take, so a
//! change of keys never lands between choosing the keys and publishing what they signed.
//!
//! Boundaries: a key added or retired takes effect at `max_signed + 1`, one past the largest
//! size any key has signed, so every note already published stays valid under the new
//! history, and every later checkpoint (sizes only grow) falls under it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use auditlog_formats::keyhistory::{CheckedHistory, KeyBackend, KeyEntry, KeyHistory};
use auditlog_formats::note::{Checkpoint, VerifierKey};

use crate::config::{EngineConfig, SignerConfig};
use crate::error::{io_err, EngineError, Result};
use crate::pkcs11::{PinSource, Pkcs11Signer, Pkcs11Spec};
use crate::signer::{KeyFileSigner, Signer};

/// The development key, relative to the data directory.
pub use auditlog_formats::layout::DEV_KEY_FILE;
pub use auditlog_formats::layout::KEYS_FILE;

struct Inner {
    checked: CheckedHistory,
    /// One per history entry; `None` for a retired key whose backend could not be opened.
    signers: Vec<Option<Arc<dyn Signer>>>,
    max_signed: u64,
}

pub(crate) struct Keyring {
    path: PathBuf,
    data_dir: PathBuf,
    pin: Option<PinSource>,
    inner: Mutex<Inner>,
    /// The writer's lease: nothing is signed unless it is held before and after signing
    /// (a note signed across a lapse is thrown away, never published).
    fence: std::sync::OnceLock<Arc<crate::lease::Lease>>,
}

/// Opens a key from its backend, as the history records it.
pub fn open_backend(
    backend: &KeyBackend,
    name: &str,
    data_dir: &Path,
    pin: Option<&PinSource>,
) -> Result<Arc<dyn Signer>> {
    match backend {
        KeyBackend::File { path } => {
            let p = data_dir.join(path);
            Ok(Arc::new(KeyFileSigner::load(&p)?.with_backend_path(path)))
        }
        KeyBackend::Pkcs11 {
            module,
            token_label,
            key_label,
        } => {
            let pin = pin.ok_or_else(|| {
                EngineError::Config(format!(
                    "key {name} is in an HSM (token {token_label:?}) but no PKCS#11 PIN source is configured"
                ))
            })?;
            let spec = Pkcs11Spec {
                module: module.into(),
                token_label: token_label.clone(),
                key_label: key_label.clone(),
            };
            Ok(Arc::new(Pkcs11Signer::open(spec, pin.clone(), name)?))
        }
        KeyBackend::AwsKms {
            region,
            key_id,
            endpoint,
        } => {
            let spec = crate::kms::aws::AwsKmsSpec {
                region: region.clone(),
                key_id: key_id.clone(),
                endpoint: endpoint.clone(),
            };
            let env = auditlog_worm::aws_creds::AwsEnv::from_process();
            Ok(Arc::new(crate::kms::aws::AwsKmsSigner::open(spec, name, env)?))
        }
        KeyBackend::GcpKms {
            key_version,
            endpoint,
        } => {
            let spec = crate::kms::gcp::GcpKeySpec {
                key_version: key_version.clone(),
                endpoint: endpoint.clone(),
            };
            let env = crate::kms::gcp::GcpEnv::from_process();
            Ok(Arc::new(crate::kms::gcp::GcpKmsSigner::open(spec, name, env)?))
        }
        KeyBackend::AzureKeyVault {
            vault,
            key,
            version,
        } => {
            let spec = crate::kms::azure::AzureKeySpec {
                vault: vault.clone(),
                key: key.clone(),
                version: version.clone(),
            };
            let env = crate::kms::azure::AzureEnv::from_process();
            Ok(Arc::new(crate::kms::azure::AzureKeySigner::open(spec, name, env)?))
        }
        KeyBackend::External { description } => Err(EngineError::Config(format!(
            "key {name} was supplied by the embedding program ({description}) and cannot be reopened"
        ))),
    }
}

fn configured_signer(cfg: &EngineConfig) -> Result<Arc<dyn Signer>> {
    let default_name = crate::recovery::key_name(&cfg.origin);
    match &cfg.signer {
        SignerConfig::DevKeyFile => Ok(Arc::new(
            KeyFileSigner::load_or_create(&cfg.data_dir.join(DEV_KEY_FILE), &default_name)?
                .with_backend_path(DEV_KEY_FILE),
        )),
        SignerConfig::Pkcs11 { spec, name } => {
            let pin = cfg.pkcs11_pin.as_ref().ok_or_else(|| {
                EngineError::Config(
                    "the PKCS#11 signer needs a PIN source (pin_env or pin_file)".into(),
                )
            })?;
            Ok(Arc::new(Pkcs11Signer::open(
                spec.clone(),
                pin.clone(),
                name.as_deref().unwrap_or(&default_name),
            )?))
        }
        SignerConfig::Kms { backend, name } => open_backend(
            backend,
            name.as_deref().unwrap_or(&default_name),
            &cfg.data_dir,
            None,
        ),
    }
}

fn entry_for(signer: &dyn Signer, from_size: u64) -> KeyEntry {
    let key = signer.verifier_key();
    KeyEntry {
        name: key.name().to_string(),
        verifier_key: key.to_string(),
        from_size,
        until_size: None,
        backend: signer.backend(),
        added_at_unix_ns: crate::now_unix_ns(),
    }
}

impl Keyring {
    /// Loads `keys.json` (creating it with the configured key, valid from size 0, on first
    /// start) and opens a signer for every key. A current key that cannot be opened stops
    /// the start; a retired one only warns.
    pub fn open(cfg: &EngineConfig, given: Option<Arc<dyn Signer>>) -> Result<Keyring> {
        let configured = match given {
            Some(s) => s,
            None => configured_signer(cfg)?,
        };
        let path = cfg.data_dir.join(KEYS_FILE);
        let checked = match std::fs::read(&path) {
            Ok(bytes) => KeyHistory::parse(&bytes)
                .map_err(|e| crate::error::corrupt(&path, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let h = KeyHistory {
                    format: 1,
                    keys: vec![entry_for(configured.as_ref(), 0)],
                };
                let checked = h
                    .check()
                    .map_err(|e| EngineError::Signer(format!("initial key history: {e}")))?;
                write_atomically(&path, &checked.history)?;
                checked
            }
            Err(e) => return Err(io_err(&path, "read")(e)),
        };
        let want = configured.verifier_key();
        if !checked.keys.contains(&want) {
            return Err(EngineError::Config(format!(
                "the configured signing key {want} is not in the key history {}; add it by rotation (POST /v1/admin/requests rotate_key)",
                path.display()
            )));
        }
        let mut signers = Vec::with_capacity(checked.keys.len());
        for (e, k) in checked.history.keys.iter().zip(&checked.keys) {
            if *k == want {
                signers.push(Some(configured.clone()));
                continue;
            }
            match open_backend(&e.backend, &e.name, &cfg.data_dir, cfg.pkcs11_pin.as_ref()) {
                Ok(s) if s.verifier_key() == *k => signers.push(Some(s)),
                Ok(s) => {
                    return Err(EngineError::Signer(format!(
                        "key history lists {k} but its backend holds {}",
                        s.verifier_key()
                    )))
                }
                Err(err) if e.until_size.is_none() => return Err(err),
                Err(err) => {
                    tracing::warn!("retired key {} cannot be opened: {err}", e.name);
                    signers.push(None);
                }
            }
        }
        Ok(Keyring {
            path,
            data_dir: cfg.data_dir.clone(),
            pin: cfg.pkcs11_pin.clone(),
            inner: Mutex::new(Inner {
                checked,
                signers,
                max_signed: 0,
            }),
            fence: std::sync::OnceLock::new(),
        })
    }

    /// A read replica's keyring: the key history as the replica fetched it (`keys.json`),
    /// no signer. It verifies checkpoints; signing fails.
    pub fn open_verify_only(cfg: &EngineConfig) -> Result<Keyring> {
        let path = cfg.data_dir.join(KEYS_FILE);
        let bytes = std::fs::read(&path).map_err(io_err(&path, "read"))?;
        let checked =
            KeyHistory::parse(&bytes).map_err(|e| crate::error::corrupt(&path, e.to_string()))?;
        let signers = vec![None; checked.keys.len()];
        Ok(Keyring {
            path,
            data_dir: cfg.data_dir.clone(),
            pin: None,
            inner: Mutex::new(Inner {
                checked,
                signers,
                max_signed: 0,
            }),
            fence: std::sync::OnceLock::new(),
        })
    }

    /// A replica's history replaced by a newer one it fetched (already checked to extend it).
    pub fn adopt_history(&self, checked: CheckedHistory) {
        let mut g = self.lock();
        g.signers = vec![None; checked.keys.len()];
        g.checked = checked;
    }

    /// Opens a checkpoint note under the history (a replica's check of the writer's notes).
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint> {
        self.lock()
            .checked
            .open_checkpoint(note)
            .map_err(|e| EngineError::Signer(format!("checkpoint does not verify: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises the largest size already signed (recovery: the checkpoint log, sealed footers).
    pub fn note_signed(&self, size: u64) {
        let mut g = self.lock();
        g.max_signed = g.max_signed.max(size);
    }

    /// Every key of the history, for reading notes signed at any time.
    pub fn all_keys(&self) -> Vec<VerifierKey> {
        self.lock().checked.keys.clone()
    }

    pub fn history(&self) -> KeyHistory {
        self.lock().checked.history.clone()
    }

    /// The newest key without an end: what a client that pins one key should pin.
    pub fn current_key(&self) -> VerifierKey {
        let g = self.lock();
        let i = g
            .checked
            .history
            .keys
            .iter()
            .rposition(|e| e.until_size.is_none())
            .expect("a checked history has a current key");
        g.checked.keys[i].clone()
    }

    /// Every key without an end, oldest first: the keys that sign new checkpoints (two
    /// or more during a rotation's overlap).
    pub fn current_keys(&self) -> Vec<VerifierKey> {
        let g = self.lock();
        let h = &g.checked.history.keys;
        (0..h.len())
            .filter(|&i| h[i].until_size.is_none())
            .map(|i| g.checked.keys[i].clone())
            .collect()
    }

    /// From now on, signing needs `lease` held.
    pub fn fence(&self, lease: Arc<crate::lease::Lease>) {
        let _ = self.fence.set(lease);
    }

    fn fenced(&self) -> Result<()> {
        self.fence.get().map_or(Ok(()), |l| l.check())
    }

    /// Signs `cp` with every key valid at its size and checks the note under the history.
    pub fn sign(&self, cp: &Checkpoint) -> Result<String> {
        self.fenced()?;
        let note = self.sign_unfenced(cp)?;
        // A lease that lapsed while the signer worked: the note is dropped, never published.
        self.fenced()?;
        Ok(note)
    }

    fn sign_unfenced(&self, cp: &Checkpoint) -> Result<String> {
        let mut g = self.lock();
        let mut signers: Vec<&dyn Signer> = Vec::new();
        for (i, e) in g.checked.history.keys.iter().enumerate() {
            if e.valid_at(cp.size) {
                match &g.signers[i] {
                    Some(s) => signers.push(s.as_ref()),
                    None => {
                        return Err(EngineError::Signer(format!(
                            "key {} is valid at size {} but could not be opened",
                            e.name, cp.size
                        )))
                    }
                }
            }
        }
        let note = crate::signer::sign_checkpoint(cp, &signers)?;
        g.checked
            .open_checkpoint(&note)
            .map_err(|e| EngineError::Signer(format!("signed note fails the key history: {e}")))?;
        g.max_signed = g.max_signed.max(cp.size);
        Ok(note)
    }

    /// Opens the key at `backend` and adds it to the history, valid from the next size
    /// signed. Both keys then sign until the old one is retired.
    pub fn add(&self, backend: &KeyBackend, name: &str) -> Result<KeyEntry> {
        let signer = open_backend(backend, name, &self.data_dir, self.pin.as_ref())?;
        let mut g = self.lock();
        let key = signer.verifier_key();
        if g.checked.keys.contains(&key) {
            return Err(EngineError::BadRequest(format!(
                "key {key} is already in the key history"
            )));
        }
        let mut entry = entry_for(signer.as_ref(), g.max_signed + 1);
        entry.backend = backend.clone();
        let mut h = g.checked.history.clone();
        h.keys.push(entry.clone());
        let checked = h
            .check()
            .map_err(|e| EngineError::BadRequest(format!("new key history: {e}")))?;
        write_atomically(&self.path, &checked.history)?;
        g.checked = checked;
        g.signers.push(Some(signer));
        tracing::info!("key {key} added; signs from tree size {}", entry.from_size);
        Ok(entry)
    }

    /// Ends the key named by `which` (its verifier key string or `name+hex8(id)`) after the
    /// largest size signed so far.
    pub fn retire(&self, which: &str) -> Result<KeyEntry> {
        let mut g = self.lock();
        let i = g
            .checked
            .keys
            .iter()
            .position(|k| {
                let s = k.to_string();
                s == which || s.splitn(3, '+').take(2).collect::<Vec<_>>().join("+") == which
            })
            .ok_or_else(|| {
                EngineError::BadRequest(format!("no key {which:?} in the key history"))
            })?;
        let e = &g.checked.history.keys[i];
        if e.until_size.is_some() {
            return Err(EngineError::BadRequest(format!(
                "key {which} is already retired"
            )));
        }
        let until = g.max_signed + 1;
        if until <= e.from_size {
            return Err(EngineError::BadRequest(format!(
                "key {which} has not signed yet (valid from size {}); retire it after a checkpoint at that size",
                e.from_size
            )));
        }
        let mut h = g.checked.history.clone();
        h.keys[i].until_size = Some(until);
        let checked = h.check().map_err(|e| {
            EngineError::BadRequest(format!(
                "retiring {which} would leave the log unsigned: {e}"
            ))
        })?;
        write_atomically(&self.path, &checked.history)?;
        g.checked = checked;
        tracing::info!("key {which} retired; signs sizes below {until}");
        Ok(g.checked.history.keys[i].clone())
    }
}

/// The file is always one whole history (`files::replace_file`).
fn write_atomically(path: &Path, h: &KeyHistory) -> Result<()> {
    crate::files::replace_file(path, h.to_json().as_bytes())
}
