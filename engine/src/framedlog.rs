//! An append-only file of framed JSON entries (the checkpoint log's framing: length, CRC,
//! bytes), synced on every append. The replication manifest and the pruned list are both
//! one: a torn tail is cut on open, so appends always follow a good entry.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use auditlog_formats::checkpoint_log::{
    encode_entry, parse_log, ENTRY_HEADER_BYTES, NOTE_BYTES_MAX,
};
use serde::Serialize;

use crate::error::{corrupt, io_err, Result};

/// Logs are read in pieces of this size on open: read whole, the checkpoint log's memory
/// grew with the log's age (a checkpoint a second under load is ~40 MB a day).
const SCAN_PIECE_BYTES: usize = 1 << 20;

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
        let mut entries = Vec::new();
        let log = FramedLog::open_file(&dir.join(name), |e| entries.push(e.to_vec()))?;
        // The entry must survive a crash before anything relies on what is appended.
        crate::io::sync_dir(dir).map_err(io_err(dir, "sync"))?;
        Ok((log, entries))
    }

    /// Opens (or creates) `path`, hands every good entry to `on_entry` in order, and cuts
    /// a torn tail (a cut-short last entry, or anything from a bad one on).
    pub(crate) fn open_file(path: &Path, on_entry: impl FnMut(&[u8])) -> Result<FramedLog> {
        FramedLog::open_in_pieces(path, SCAN_PIECE_BYTES, on_entry)
    }

    fn open_in_pieces(
        path: &Path,
        piece_bytes: usize,
        mut on_entry: impl FnMut(&[u8]),
    ) -> Result<FramedLog> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path, "open"))?;
        let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
        // Bytes from `good` on that are not yet whole entries: at most a piece and one
        // largest entry, whatever the log's length.
        let mut pending: Vec<u8> = Vec::new();
        let (mut good, mut read) = (0u64, 0u64);
        loop {
            let (entries, used) = parse_log(&pending);
            for e in entries {
                on_entry(e);
            }
            good += used as u64;
            pending.drain(..used);
            // Done at the end of the file, or at an entry that is bad rather than cut short
            // by the piece (there are bytes enough for the largest entry, and it did not parse).
            if read == file_len || pending.len() >= ENTRY_HEADER_BYTES + NOTE_BYTES_MAX {
                break;
            }
            let n = (file_len - read).min(piece_bytes as u64) as usize;
            let from = pending.len();
            pending.resize(from + n, 0);
            file.read_exact_at(&mut pending[from..], read)
                .map_err(io_err(path, "read"))?;
            read += n as u64;
        }
        assert!(
            good <= file_len,
            "parsed past the end of {}",
            path.display()
        );
        if good < file_len {
            tracing::warn!(
                "{}: cutting a torn tail of {} bytes at offset {good}",
                path.display(),
                file_len - good
            );
            file.set_len(good)
                .map_err(io_err(path, "truncate torn tail"))?;
            file.sync_all().map_err(io_err(path, "sync"))?;
        }
        Ok(FramedLog {
            path: path.to_path_buf(),
            file,
            len: good,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Read in pieces of any size, the log gives the same entries and the same good prefix
    /// as `parse_log` over the whole file: for a clean log, a torn last entry, a bad
    /// checksum in the middle, and a zero length, with entries straddling every boundary.
    #[test]
    fn reading_in_pieces_matches_parsing_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut clean = Vec::new();
        for i in 0..300usize {
            let len = match i {
                7 => NOTE_BYTES_MAX,
                _ => 1 + (i * 7919) % 3000,
            };
            let note: String = (0..len)
                .map(|k| (b'a' + ((i + k) % 26) as u8) as char)
                .collect();
            clean.extend_from_slice(&encode_entry(&note));
        }
        let mut torn = clean.clone();
        torn.extend_from_slice(&encode_entry("cut short")[..12]);
        let mut bad_crc = clean.clone();
        bad_crc[clean.len() / 2] ^= 0x40;
        let mut zero_len = clean.clone();
        zero_len.extend_from_slice(&[0u8; 8]);
        zero_len.extend_from_slice(&encode_entry("after a zero length"));
        for (name, bytes) in [
            ("clean", &clean),
            ("torn", &torn),
            ("bad", &bad_crc),
            ("zero", &zero_len),
        ] {
            let (want, want_good) = parse_log(bytes);
            for piece in [1usize, 13, 4096, 70_000, SCAN_PIECE_BYTES] {
                let path = dir.path().join(format!("{name}-{piece}.log"));
                std::fs::write(&path, bytes).expect("write");
                let mut got: Vec<Vec<u8>> = Vec::new();
                let mut log = FramedLog::open_in_pieces(&path, piece, |e| got.push(e.to_vec()))
                    .expect("open");
                assert_eq!(got.len(), want.len(), "{name}, pieces of {piece}");
                assert!(
                    got.iter().zip(&want).all(|(g, w)| g == w),
                    "{name}, pieces of {piece}"
                );
                assert_eq!(log.len, want_good as u64, "{name}, pieces of {piece}");
                let on_disk = std::fs::metadata(&path).expect("stat").len();
                assert_eq!(on_disk, want_good as u64, "{name}: torn tail not cut");
                // Appends follow the last good entry.
                log.append_framed(&encode_entry("next")).expect("append");
                let after = std::fs::read(&path).expect("read");
                let (again, good) = parse_log(&after);
                assert_eq!(
                    (again.len(), again.last().copied()),
                    (want.len() + 1, Some(&b"next"[..]))
                );
                assert_eq!(good as u64, log.len);
            }
        }
    }
}
