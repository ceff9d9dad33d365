//! Checkpoint signers behind one trait: an Ed25519 key file (the development default) and,
//! later, PKCS#11. A signature is checked against the signer's public key before a
//! checkpoint is published, so a faulty signer cannot publish a bad checkpoint.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::{self, Checkpoint, NoteSignature, NoteSigner, VerifierKey};

use crate::error::{io_err, EngineError, Result};

pub trait Signer: Send + Sync {
    fn verifier_key(&self) -> VerifierKey;
    /// A pure Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64]>;
    /// Where the private key lives, as the key history records it (public information).
    fn backend(&self) -> KeyBackend {
        KeyBackend::External {
            description: "supplied by the embedding program".into(),
        }
    }
}

/// Signs a checkpoint with every signer and checks each signature before returning the note.
pub fn sign_checkpoint(checkpoint: &Checkpoint, signers: &[&dyn Signer]) -> Result<String> {
    let text = checkpoint.to_text();
    let mut note_text = text.clone();
    note_text.push('\n');
    let mut keys = Vec::with_capacity(signers.len());
    for s in signers {
        let key = s.verifier_key();
        let sig = s.sign(text.as_bytes())?;
        if !key.verify(text.as_bytes(), &sig) {
            return Err(EngineError::Signer(format!(
                "key {}: signature does not verify; not publishing",
                key.name()
            )));
        }
        let line = NoteSignature {
            name: key.name().to_string(),
            key_id: key.key_id(),
            signature: sig.to_vec(),
        };
        note_text.push_str(&line.to_line());
        keys.push(key);
    }
    // Parse what we are about to publish with the same strict reader auditors use.
    note::open_checkpoint(&note_text, &keys)
        .map_err(|e| EngineError::Signer(format!("produced an unreadable note: {e}")))?;
    Ok(note_text)
}

/// An Ed25519 key in a file, in the note private-key form `PRIVATE+KEY+name+id+base64`.
pub struct KeyFileSigner {
    key: NoteSigner,
    /// The path the key history records (relative to the data directory when relative).
    backend_path: Option<String>,
}

impl KeyFileSigner {
    /// Loads the key at `path`, creating it (mode 0600) with a fresh random seed if absent.
    pub fn load_or_create(path: &Path, name: &str) -> Result<KeyFileSigner> {
        if path.exists() {
            return Self::load(path);
        }
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| EngineError::Signer(format!("no randomness for a key: {e}")))?;
        let key = NoteSigner::from_seed(name, seed)
            .map_err(|e| EngineError::Signer(format!("key name {name:?}: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir, "create key directory"))?;
        }
        let tmp = path.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp, "create key file"))?;
        f.write_all(format!("{}\n", key.to_private_string()).as_bytes())
            .map_err(io_err(&tmp, "write key"))?;
        f.sync_all().map_err(io_err(&tmp, "sync key"))?;
        std::fs::rename(&tmp, path).map_err(io_err(path, "install key file"))?;
        if let Some(dir) = path.parent() {
            crate::io::sync_dir(dir).map_err(io_err(dir, "sync"))?;
        }
        tracing::info!(
            "created development signing key {} ({})",
            path.display(),
            key.verifier_key()
        );
        Ok(KeyFileSigner {
            key,
            backend_path: None,
        })
    }

    /// Records `path` as this key's place in the key history.
    pub fn with_backend_path(mut self, path: &str) -> KeyFileSigner {
        self.backend_path = Some(path.to_string());
        self
    }

    /// Writes a fresh key to `path` (mode 0600); refuses to overwrite one.
    pub fn generate(path: &Path, name: &str) -> Result<KeyFileSigner> {
        if path.exists() {
            return Err(EngineError::Signer(format!(
                "{} exists; not overwriting a key",
                path.display()
            )));
        }
        Self::load_or_create(path, name)
    }

    pub fn load(path: &Path) -> Result<KeyFileSigner> {
        let text = std::fs::read_to_string(path).map_err(io_err(path, "read key file"))?;
        let key = NoteSigner::parse_private(text.trim())
            .map_err(|e| EngineError::Signer(format!("{}: {e}", path.display())))?;
        Ok(KeyFileSigner {
            key,
            backend_path: Some(path.display().to_string()),
        })
    }
}

impl Signer for KeyFileSigner {
    fn verifier_key(&self) -> VerifierKey {
        self.key.verifier_key()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64]> {
        Ok(self.key.sign(message))
    }

    fn backend(&self) -> KeyBackend {
        match &self.backend_path {
            Some(path) => KeyBackend::File { path: path.clone() },
            None => KeyBackend::External {
                description: "key file".into(),
            },
        }
    }
}
