//! The pruned list, `<data_dir>/replication/pruned.log`: one entry per sealed segment whose
//! local file was deleted because a verified copy is on the object store (FORMATS.md §15.3).
//! Same framing as the replication manifest (`bytes:u32 | crc32c:u32 | JSON`). An entry is
//! appended and `fdatasync`ed *before* the file is unlinked, so after a crash a segment is
//! either present, or absent and explained here; recovery refuses any other gap.

use std::path::{Path, PathBuf};

use auditlog_formats::checkpoint_log::parse_log;
use serde::{Deserialize, Serialize};

use crate::error::{corrupt, io_err, Result};
use crate::framedlog::FramedLog;

use auditlog_formats::layout::{PRUNED_FILE, REPLICATION_DIR};

/// A sealed segment that lives only on the object store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedSegment {
    pub first: u64,
    pub end: u64,
    /// The object's key under the target's prefix (`segments/<name>.seg`).
    pub key: String,
    pub bytes: u64,
    /// BLAKE3 of the whole object (hex), as shipped and as read back before pruning: a
    /// read fetches the object and refuses it unless it hashes to this.
    pub blake3: String,
    pub sealed_at_unix_ns: u64,
    pub pruned_at_unix_ns: u64,
    /// The object's retention on the store, as shipped.
    pub retain_until_unix_s: u64,
}

/// Where the pruned list lives in a data directory.
pub fn pruned_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REPLICATION_DIR).join(PRUNED_FILE)
}

/// Reads the pruned list (absent: nothing pruned). A torn last entry is ignored: its
/// segment's file was not yet unlinked when the crash came (the entry is synced first).
/// An entry damaged further back is an error: ignored, the segments it and the entries
/// after it explain would look missing.
pub fn read(data_dir: &Path) -> Result<Vec<PrunedSegment>> {
    let path = pruned_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path, "read")(e)),
    };
    let (entries, good) = parse_log(&bytes);
    crate::framedlog::refuse_damage(&path, good as u64, bytes.len() as u64)?;
    let mut out = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let p: PrunedSegment =
            serde_json::from_slice(raw).map_err(|e| corrupt(&path, format!("entry {i}: {e}")))?;
        if p.end <= p.first {
            return Err(corrupt(&path, format!("entry {i}: empty range")));
        }
        out.push(p);
    }
    out.sort_by_key(|p| p.first);
    Ok(out)
}

/// The appender, owned by the replicator thread.
pub(crate) struct PrunedLog {
    log: FramedLog,
}

impl PrunedLog {
    /// Opens (or creates) the list and cuts a torn tail, so appends follow a good entry.
    pub fn open(data_dir: &Path) -> Result<PrunedLog> {
        let (log, _) = FramedLog::open(&data_dir.join(REPLICATION_DIR), PRUNED_FILE)?;
        Ok(PrunedLog { log })
    }

    /// Appends and syncs one entry: after this returns, the segment may be unlinked.
    pub fn append(&mut self, p: &PrunedSegment) -> Result<()> {
        self.log.append(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_and_torn_tail_is_ignored() {
        let d = tempfile::tempdir().expect("tmp");
        assert!(read(d.path()).expect("empty").is_empty());
        let p = |first, end| PrunedSegment {
            first,
            end,
            key: format!("segments/{first}"),
            bytes: 10,
            blake3: "00".into(),
            sealed_at_unix_ns: 1,
            pruned_at_unix_ns: 2,
            retain_until_unix_s: 3,
        };
        {
            let mut log = PrunedLog::open(d.path()).expect("open");
            log.append(&p(10, 20)).expect("append");
            log.append(&p(0, 10)).expect("append");
        }
        let path = pruned_path(d.path());
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0, 0, 0, 9, 1]);
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(read(d.path()).expect("read"), vec![p(0, 10), p(10, 20)]);
        let mut log = PrunedLog::open(d.path()).expect("reopen");
        log.append(&p(20, 30)).expect("append");
        assert_eq!(read(d.path()).expect("read").len(), 3);

        // Damage to the first entry with more than one append after it: both the reader
        // and the appender refuse, and the list is left as it is.
        for k in 3..1000u64 {
            log.append(&p(k * 10, k * 10 + 10)).expect("append");
        }
        let good = std::fs::read(&path).expect("read");
        assert!(good.len() > crate::framedlog::APPEND_BYTES_MAX);
        let mut damaged = good.clone();
        damaged[12] ^= 1;
        std::fs::write(&path, &damaged).expect("write");
        let err = read(d.path()).expect_err("damaged list read");
        assert!(err.to_string().contains("offset 0 is damaged"), "{err}");
        let err = PrunedLog::open(d.path())
            .err()
            .expect("damaged list opened");
        assert!(err.to_string().contains("offset 0 is damaged"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), damaged);
        std::fs::write(&path, &good).expect("restore");
        assert_eq!(read(d.path()).expect("read").len(), 1000);
    }
}
