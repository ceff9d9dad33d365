//! The checkpoint log: every signed checkpoint the engine published, appended to
//! `checkpoints.log` as `note_bytes:u32 | crc32c:u32 | note` and synced before it is
//! announced. A torn last entry is cut on recovery.

use std::path::Path;

use auditlog_formats::note::{self, Checkpoint, VerifierKey};

use crate::error::{corrupt, Result};
use crate::framedlog::FramedLog;

pub use auditlog_formats::checkpoint_log::{encode_entry, parse_log};

#[derive(Clone, Debug)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

pub(crate) struct CheckpointLog {
    log: FramedLog,
}

impl CheckpointLog {
    /// Opens the log, cuts a torn tail, and returns the newest checkpoint after checking
    /// its signature and origin. Earlier entries are the verifier's to check.
    pub fn open(
        path: &Path,
        origin: &str,
        keys: &[VerifierKey],
    ) -> Result<(CheckpointLog, Option<SignedCheckpoint>)> {
        // Only the newest entry is kept: the log grows by a checkpoint a second under load.
        let (mut newest, mut count) = (Vec::new(), 0u64);
        let log = FramedLog::open_file(path, |e| {
            newest.clear();
            newest.extend_from_slice(e);
            count += 1;
        })?;
        let latest = match count {
            0 => None,
            _ => {
                let text = std::str::from_utf8(&newest)
                    .map_err(|_| corrupt(path, "newest checkpoint is not UTF-8"))?;
                let (cp, _) = note::open_checkpoint(text, keys)
                    .map_err(|e| corrupt(path, format!("entry {}: {e}", count - 1)))?;
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
        Ok((CheckpointLog { log }, latest))
    }

    pub fn append(&mut self, note: &str) -> Result<()> {
        let entry = encode_entry(note);
        let at = self.log.append_framed(&entry)?;
        // Read back what we just made durable: the log must hold exactly this note.
        let mut back = vec![0u8; entry.len()];
        self.log.read_at(&mut back, at)?;
        assert_eq!(
            back, entry,
            "checkpoint log read back differs from what was written"
        );
        Ok(())
    }
}
