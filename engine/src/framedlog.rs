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
        let (log, bytes) = FramedLog::open_file(&dir.join(name))?;
        // The entry must survive a crash before anything relies on what is appended.
        crate::io::sync_dir(dir).map_err(io_err(dir, "sync"))?;
        let entries = parse_log(&bytes)
            .0
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        Ok((log, entries))
    }

    /// Opens (or creates) `path` and cuts a torn tail; returns the good bytes, for
    /// `parse_log`.
    pub(crate) fn open_file(path: &Path) -> Result<(FramedLog, Vec<u8>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path, "open"))?;
        let mut bytes = std::fs::read(path).map_err(io_err(path, "read"))?;
        let (_, good) = parse_log(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                "{}: cutting a torn tail of {} bytes at offset {good}",
                path.display(),
                bytes.len() - good
            );
            file.set_len(good as u64)
                .map_err(io_err(path, "truncate torn tail"))?;
            file.sync_all().map_err(io_err(path, "sync"))?;
            bytes.truncate(good);
        }
        let log = FramedLog {
            path: path.to_path_buf(),
            file,
            len: good as u64,
        };
        Ok((log, bytes))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `value` as JSON and syncs it: after this returns, the entry survives a crash.
    pub(crate) fn append<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let json = serde_json::to_string(value).map_err(|e| corrupt(&self.path, e.to_string()))?;
        self.append_framed(&encode_entry(&json)).map(|_| ())
    }

    /// Appends every value as JSON with one write and one sync.
    pub(crate) fn append_many<T: Serialize>(&mut self, values: &[T]) -> Result<()> {
        let mut framed = Vec::new();
        for v in values {
            let json = serde_json::to_string(v).map_err(|e| corrupt(&self.path, e.to_string()))?;
            framed.extend_from_slice(&encode_entry(&json));
        }
        self.append_framed(&framed).map(|_| ())
    }

    /// Appends entries already framed by `encode_entry` and syncs them; returns the offset
    /// they were written at.
    pub(crate) fn append_framed(&mut self, framed: &[u8]) -> Result<u64> {
        let at = self.len;
        self.file
            .write_all_at(framed, at)
            .map_err(io_err(&self.path, "append"))?;
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "fdatasync"))?;
        self.len += framed.len() as u64;
        Ok(at)
    }

    /// Reads back `buf.len()` bytes at `offset` (to check what was just made durable).
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(io_err(&self.path, "read back"))
    }
}
