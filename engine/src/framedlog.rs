//! An append-only file of framed JSON entries (the checkpoint log's framing: length, CRC,
//! bytes), synced on every append. The replication manifest and the pruned list are both
//! one: a torn tail is cut on open, so appends always follow a good entry.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use auditlog_formats::checkpoint_log::{encode_entry, parse_log};
use serde::Serialize;

use crate::error::{corrupt, io_err, Result};

pub(crate) struct FramedLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl FramedLog {
    /// Opens (or creates) `dir/name`, cuts a torn tail, makes the file's directory entry
    /// durable, and returns the good entries.
    pub(crate) fn open(dir: &Path, name: &str) -> Result<(FramedLog, Vec<Vec<u8>>)> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        let bytes = std::fs::read(&path).map_err(io_err(&path, "read"))?;
        let (entries, good) = parse_log(&bytes);
        let entries: Vec<Vec<u8>> = entries.into_iter().map(<[u8]>::to_vec).collect();
        if good < bytes.len() {
            tracing::warn!(
                "{}: cutting a torn tail of {} bytes at offset {good}",
                path.display(),
                bytes.len() - good
            );
            file.set_len(good as u64)
                .map_err(io_err(&path, "truncate torn tail"))?;
            file.sync_all().map_err(io_err(&path, "sync"))?;
        }
        // The entry must survive a crash before anything relies on what is appended.
        crate::io::sync_dir(dir).map_err(io_err(dir, "sync"))?;
        let log = FramedLog {
            path,
            file,
            len: good as u64,
        };
        Ok((log, entries))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `value` as JSON and syncs it: after this returns, the entry survives a crash.
    pub(crate) fn append<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let json = serde_json::to_string(value).map_err(|e| corrupt(&self.path, e.to_string()))?;
        let entry = encode_entry(&json);
        self.file
            .write_all_at(&entry, self.len)
            .map_err(io_err(&self.path, "append"))?;
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "fdatasync"))?;
        self.len += entry.len() as u64;
        Ok(())
    }
}
