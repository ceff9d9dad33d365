//! Checkpoint signers behind one trait: an Ed25519 key file (the development default),
//! PKCS#11 (`pkcs11.rs`) and the cloud KMSs (`kms/`). A signature is checked against the
//! signer's public key before a checkpoint is published, so a faulty signer cannot publish a
//! bad checkpoint.

use std::path::Path;

use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::{self, Checkpoint, NoteSignature, NoteSigner, VerifierKey};

use crate::error::{io_err, EngineError, Result};
use crate::private;

pub trait Signer: Send + Sync {
    /// The public key; its type (Ed25519 or ECDSA P-256) says what `sign` returns.
    fn verifier_key(&self) -> VerifierKey;
    /// A note signature of `message` for the verifier key's type (FORMATS.md §9): 64 bytes
    /// of pure Ed25519, or the DER of an ECDSA P-256 / SHA-256 signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
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
            signature: sig,
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
    /// Loads the key at `path`, creating it (mode 0600, in a directory made 0700) with a
    /// fresh random seed if nothing is there. Anything at the path, a symbolic link
    /// included, is loaded by [`KeyFileSigner::load`], which refuses links and open modes.
    pub fn load_or_create(path: &Path, name: &str) -> Result<KeyFileSigner> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path, "stat key file")(e)),
        }
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| EngineError::Signer(format!("no randomness for a key: {e}")))?;
        let key = NoteSigner::from_seed(name, seed)
            .map_err(|e| EngineError::Signer(format!("key name {name:?}: {e}")))?;
        if let Some(dir) = path.parent() {
            private::create_private_dir(dir)?;
        }
        let text = format!("{}\n", key.to_private_string());
        private::replace_private_file(path, text.as_bytes())?;
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
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(EngineError::Signer(format!(
                "{} exists; not overwriting a key",
                path.display()
            )));
        }
        Self::load_or_create(path, name)
    }

    /// Loads the key at `path`: not through a symbolic link, and only from a file that
    /// group and others cannot read (a key others could read may be a copy elsewhere).
    pub fn load(path: &Path) -> Result<KeyFileSigner> {
        let bytes = private::read_private_file(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| EngineError::Signer(format!("{}: not UTF-8", path.display())))?;
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

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        Ok(self.key.sign(message).to_vec())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A key file reached through a planted link (to a key its planter knows) is refused,
    /// as is one group or others may read; the one the daemon makes is 0600 in a 0700
    /// directory.
    #[test]
    fn key_file_links_and_open_modes_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let planted = dir.path().join("planted.key");
        KeyFileSigner::load_or_create(&planted, "attacker").expect("a key the planter knows");
        let keys = dir.path().join("data/keys");
        std::fs::create_dir_all(&keys).expect("mkdir");
        let path = keys.join("checkpoint.key");
        std::os::unix::fs::symlink(&planted, &path).expect("link");
        let e = KeyFileSigner::load_or_create(&path, "log")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(KeyFileSigner::load(&path).is_err());
        std::fs::remove_file(&path).expect("unlink");

        let fresh = dir.path().join("new/keys/checkpoint.key");
        KeyFileSigner::load_or_create(&fresh, "log").expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(mode(&dir.path().join("new/keys")), 0o700);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = KeyFileSigner::load_or_create(&fresh, "log")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("mode 0644"), "{e}");
    }
}
