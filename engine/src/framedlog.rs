//! An append-only file of framed JSON entries (the checkpoint log's framing: length, CRC,
//! bytes), synced on every append. The replication manifest and the pruned list are both
//! one: a torn tail is cut on open, so appends always follow a good entry.
//!
//! Torn or damaged: each append is synced before the next one starts, so a crash can tear
//! only the last, and no append writes more than `APPEND_BYTES_MAX`. A bad entry further
//! from the end than that is damage to bytes that were once durable, not a torn write:
//! opening refuses it and leaves the file as it is, rather than cutting every good entry
//! after it (for the checkpoint log, the signed history and the promise that recovery
//! checks the segments against).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) use auditlog_formats::checkpoint_log::APPEND_BYTES_MAX;
use auditlog_formats::checkpoint_log::{
    damaged_before_last_append, encode_entry, parse_log, ENTRY_HEADER_BYTES, NOTE_BYTES_MAX,
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
    /// a torn tail (a cut-short last entry, or anything from a bad one on within the last
    /// `APPEND_BYTES_MAX` bytes). A bad entry before that is an error, and nothing is cut.
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
        refuse_damage(path, good, file_len)?;
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

    /// Appends every value as JSON, one write and one sync for up to `APPEND_BYTES_MAX`
    /// bytes of entries (usually all of them). If a later piece fails (a full disk), the
    /// earlier ones stay: the caller retries the whole group, so readers must take an entry
    /// recorded twice (the manifest's replay is idempotent: a key, a maximum).
    pub(crate) fn append_many<T: Serialize>(&mut self, values: &[T]) -> Result<()> {
        let mut framed = Vec::new();
        for v in values {
            let json = serde_json::to_string(v).map_err(|e| corrupt(&self.path, e.to_string()))?;
            let entry = encode_entry(&json);
            if framed.len() + entry.len() > APPEND_BYTES_MAX {
                self.append_framed(&framed)?;
                framed.clear();
            }
            framed.extend_from_slice(&entry);
        }
        if !framed.is_empty() {
            self.append_framed(&framed)?;
        }
        Ok(())
    }

    /// Appends entries already framed by `encode_entry` (at most `APPEND_BYTES_MAX` bytes)
    /// and syncs them; returns the offset they were written at.
    pub(crate) fn append_framed(&mut self, framed: &[u8]) -> Result<u64> {
        // More in one write could tear further back than opening treats as torn.
        assert!(
            framed.len() <= APPEND_BYTES_MAX,
            "append of {} bytes",
            framed.len()
        );
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

/// Errs if the bytes after the last good entry, `good .. file_len`, are more than one
/// append could have torn: the entry at `good` was damaged after it was durable.
pub(crate) fn refuse_damage(path: &Path, good: u64, file_len: u64) -> Result<()> {
    let tail_bytes = file_len - good;
    if damaged_before_last_append(good, file_len) {
        return Err(corrupt(
            path,
            format!(
                "entry at offset {good} is damaged, {tail_bytes} bytes from the end; a \
                 crash tears at most the last {APPEND_BYTES_MAX}, so this is not a torn \
                 write and nothing was cut (restore the file from a copy; the \
                 replication manifest may instead be removed, it is rebuilt)"
            ),
        ));
    }
    Ok(())
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
        // Damage within the last append's reach reads as a torn write and is cut.
        let mut bad_last = clean.clone();
        let n = bad_last.len();
        bad_last[n - 10] ^= 0x40;
        let mut zero_len = clean.clone();
        zero_len.extend_from_slice(&[0u8; 8]);
        zero_len.extend_from_slice(&encode_entry("after a zero length"));
        for (name, bytes) in [
            ("clean", &clean),
            ("torn", &torn),
            ("bad last", &bad_last),
            ("zero", &zero_len),
        ] {
            let (want, want_good) = parse_log(bytes);
            assert!(want_good > 0);
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
    /// A bad entry further from the end than one append can reach is damage, not a torn
    /// write: opening fails, names the offset, and cuts nothing. The same bytes with the
    /// damage in the last entry are cut as before (above).
    #[test]
    fn damage_before_the_last_append_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for i in 0..400usize {
            offsets.push(bytes.len());
            bytes.extend_from_slice(&encode_entry(&format!("{i:0>600}")));
        }
        assert!(bytes.len() > 2 * APPEND_BYTES_MAX);
        // Entry 3's CRC, entry 3's length, and the last entry that is further back than
        // one append: all refused.
        let far = *offsets
            .iter()
            .rev()
            .find(|&&o| bytes.len() - o > APPEND_BYTES_MAX)
            .expect("an entry that far back");
        for (what, at) in [
            ("body", offsets[3] + 20),
            ("length", offsets[3] + 1),
            ("last far", far + 30),
        ] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x08;
            let bad_entry = *offsets.iter().rev().find(|&&o| o <= at).expect("entry");
            for piece in [1usize, 4096, SCAN_PIECE_BYTES] {
                let path = dir.path().join(format!("{what}-{piece}.log"));
                std::fs::write(&path, &damaged).expect("write");
                let mut seen = 0usize;
                let err = FramedLog::open_in_pieces(&path, piece, |_| seen += 1)
                    .err()
                    .unwrap_or_else(|| panic!("{what}: opened"));
                let msg = err.to_string();
                assert!(
                    msg.contains(&format!("offset {bad_entry} ")) && msg.contains("not a torn"),
                    "{what}: {msg}"
                );
                assert_eq!(std::fs::read(&path).expect("read"), damaged, "{what}: cut");
            }
        }
    }

    /// Many entries appended at once go out in pieces no larger than a torn write is
    /// allowed to be, and all of them read back.
    #[test]
    fn a_large_append_goes_out_in_pieces_that_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut log, _) = FramedLog::open(dir.path(), "many.log").expect("open");
        let values: Vec<String> = (0..1000).map(|i| format!("{i:0>300}")).collect();
        log.append_many(&values).expect("append");
        log.append(&"last").expect("append");
        let (_, entries) = FramedLog::open(dir.path(), "many.log").expect("reopen");
        assert_eq!(entries.len(), 1001);
        for (i, e) in entries.iter().take(1000).enumerate() {
            let v: String = serde_json::from_slice(e).expect("json");
            assert_eq!(v, values[i]);
        }
        assert_eq!(entries[1000], b"\"last\"");
    }
}
