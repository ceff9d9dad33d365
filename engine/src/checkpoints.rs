//! The checkpoint log: every signed checkpoint the engine published, appended to
//! `checkpoints.log` as `note_bytes:u32 | crc32c:u32 | note` and synced before it is
//! announced. A torn last entry is cut on recovery.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use auditlog_formats::note::{self, Checkpoint, VerifierKey};

use crate::error::{corrupt, io_err, Result};

pub use auditlog_formats::checkpoint_log::{encode_entry, parse_log};

#[derive(Clone, Debug)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

pub(crate) struct CheckpointLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl CheckpointLog {
    /// Opens the log, cuts a torn tail, and returns the newest checkpoint after checking
    /// its signature and origin. Earlier entries are the verifier's to check.
    pub fn open(
        path: &Path,
        origin: &str,
        keys: &[VerifierKey],
    ) -> Result<(CheckpointLog, Option<SignedCheckpoint>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path, "open checkpoint log"))?;
        let bytes = std::fs::read(path).map_err(io_err(path, "read checkpoint log"))?;
        let (entries, good) = parse_log(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                "{}: cutting a torn tail of {} bytes at offset {good}",
                path.display(),
                bytes.len() - good
            );
            file.set_len(good as u64)
                .map_err(io_err(path, "truncate torn tail"))?;
            file.sync_all().map_err(io_err(path, "sync"))?;
        }
        let latest = match entries.last() {
            None => None,
            Some(raw) => {
                let text = std::str::from_utf8(raw)
                    .map_err(|_| corrupt(path, "newest checkpoint is not UTF-8"))?;
                let (cp, _) = note::open_checkpoint(text, keys)
                    .map_err(|e| corrupt(path, format!("entry {}: {e}", entries.len() - 1)))?;
                if cp.origin != origin {
                    return Err(corrupt(
                        path,
                        format!(
                            "newest checkpoint is for origin {:?}, not {origin:?}",
                            cp.origin
                        ),
                    ));
                }
                Some(SignedCheckpoint {
                    checkpoint: cp,
                    note: text.to_string(),
                })
            }
        };
        Ok((
            CheckpointLog {
                path: path.to_path_buf(),
                file,
                len: good as u64,
            },
            latest,
        ))
    }

    pub fn append(&mut self, note: &str) -> Result<()> {
        let entry = encode_entry(note);
        crate::io::pwritev_all(&self.file, self.len, &[&entry])
            .map_err(io_err(&self.path, "append checkpoint"))?;
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "fdatasync"))?;
        self.len += entry.len() as u64;
        // Read back what we just made durable: the log must hold exactly this note.
        let mut back = vec![0u8; entry.len()];
        self.file
            .read_exact_at(&mut back, self.len - entry.len() as u64)
            .map_err(io_err(&self.path, "read back checkpoint"))?;
        assert_eq!(
            back, entry,
            "checkpoint log read back differs from what was written"
        );
        Ok(())
    }
}
