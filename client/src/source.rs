//! Where a verifier reads a log from. The verification itself (`verify.rs`) is the same for
//! every source; a source only lists and reads: a data directory, or the objects the
//! replicator shipped to a bucket (`bucket.rs`).

use auditlog_formats::layout;
use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use auditlog_formats::checkpoint_log;

use crate::verify::{fail, FileHashes, HashCheck, VerifyError};

/// Random access to a sealed segment's bytes.
pub trait ReadAt {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

pub struct FileAt(pub File, pub u64);

impl ReadAt for FileAt {
    fn len(&self) -> u64 {
        self.1
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegKind {
    Sealed(u64, u64),
    Open(u64),
    /// Deleted from a data directory by local retention (listed in
    /// `replication/pruned.log`); its records are on the object store only.
    Pruned(u64, u64),
}

/// A segment as listed: its kind and range from the name, its name, its size.
#[derive(Clone, Debug)]
pub struct SegRef {
    pub kind: SegKind,
    pub name: String,
    pub bytes: u64,
}

pub trait LogSource {
    /// `log.json`: where it is, and its bytes.
    fn log_meta(&self) -> Result<(String, Vec<u8>), VerifyError>;
    /// Every checkpoint note in order, and where they come from.
    fn checkpoints(&self) -> Result<(String, Vec<Vec<u8>>), VerifyError>;
    /// Segments in index order (see [`order_segments`]).
    fn segments(&self) -> Result<Vec<SegRef>, VerifyError>;
    fn place(&self, seg: &SegRef) -> String;
    /// A sealed segment's file. Opened on the verifier's calling thread, in index order,
    /// and read on a worker thread.
    fn open_sealed(&self, seg: &SegRef) -> Result<Box<dyn ReadAt + Send>, VerifyError>;
    /// An open segment's file, read in pieces (a whole segment is never held in memory).
    /// Called more than once for one segment: once to find where its batches start, then
    /// once for each chunk of batches a worker reads (all on the calling thread).
    fn open_unsealed(&self, seg: &SegRef) -> Result<Box<dyn ReadAt + Send>, VerifyError>;
    /// The stored hashes to compare with the recomputed tree.
    fn hash_levels(&self) -> Result<HashCheck, VerifyError>;
    fn hashes_place(&self) -> String;
    /// Stored hashes for consistency proofs, if the source keeps a hash store.
    fn hash_reader(&self, alg: auditlog_formats::TreeHash) -> Option<FileHashes>;
    /// The stored leaf hashes (level 0, 32 bytes each), standing in for the records of
    /// pruned segments. Only a data directory has pruned segments.
    fn leaf_hashes(&self) -> Option<Box<dyn ReadAt>> {
        None
    }
}

/// Orders segment names as FORMATS.md §3 says: sealed then open by first index; an open
/// segment below the end of a sealed one is a leftover of a finished sealing.
pub fn order_segments(names: impl IntoIterator<Item = (String, u64)>) -> Vec<SegRef> {
    let mut out = Vec::new();
    for (name, bytes) in names {
        use auditlog_formats::layout::{parse_segment_name, SegmentName};
        let kind = match parse_segment_name(&name) {
            Some(SegmentName::Open(first)) => Some(SegKind::Open(first)),
            Some(SegmentName::Sealed(a, b)) => Some(SegKind::Sealed(a, b)),
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(SegRef { kind, name, bytes });
        }
    }
    out.sort_by_key(|s| match s.kind {
        SegKind::Sealed(a, _) | SegKind::Pruned(a, _) => (a, 0),
        SegKind::Open(a) => (a, 1),
    });
    let mut kept: Vec<SegRef> = Vec::with_capacity(out.len());
    for s in out {
        if let (SegKind::Open(a), Some(SegKind::Sealed(_, end))) =
            (s.kind, kept.last().map(|k| k.kind))
        {
            if a < end {
                continue;
            }
        }
        kept.push(s);
    }
    kept
}

#[derive(serde::Deserialize)]
struct PrunedEntry {
    first: u64,
    end: u64,
    key: String,
}

/// `(first, end, object key)` of every segment `replication/pruned.log` records (FORMATS.md
/// §15.3). A torn last entry is ignored, as the engine does: its file was not yet unlinked.
/// A bad entry further back than one append is damage, reported as such (ignored, the
/// segments it and the later entries explain would only show as missing).
fn read_pruned(dir: &Path) -> Result<Vec<(u64, u64, String)>, VerifyError> {
    let p = dir
        .join(auditlog_formats::layout::REPLICATION_DIR)
        .join(auditlog_formats::layout::PRUNED_FILE);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return fail(&p, format!("cannot read: {e}")),
    };
    let (entries, good) = checkpoint_log::parse_log(&bytes);
    if checkpoint_log::damaged_before_last_append(good as u64, bytes.len() as u64) {
        return fail(
            &p,
            format!(
                "entry {} at offset {good}: damaged, {} bytes from the end (more than a \
                 crash can tear)",
                entries.len(),
                bytes.len() - good
            ),
        );
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, raw) in entries.iter().enumerate() {
        let e: PrunedEntry =
            serde_json::from_slice(raw).or_else(|e| fail(&p, format!("entry {i}: {e}")))?;
        out.push((e.first, e.end, e.key));
    }
    Ok(out)
}

/// A data directory.
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    pub fn new(dir: &Path) -> DirSource {
        DirSource {
            dir: dir.to_path_buf(),
        }
    }
}

impl LogSource for DirSource {
    fn log_meta(&self) -> Result<(String, Vec<u8>), VerifyError> {
        let p = self.dir.join(layout::LOG_META_FILE);
        let b = std::fs::read(&p).or_else(|e| fail(&p, format!("cannot read: {e}")))?;
        Ok((p.display().to_string(), b))
    }

    fn checkpoints(&self) -> Result<(String, Vec<Vec<u8>>), VerifyError> {
        let cp_path = self.dir.join(layout::CHECKPOINT_LOG_FILE);
        // Missing is not "no checkpoints": the engine writes one before its first ack.
        let bytes = std::fs::read(&cp_path)
            .or_else(|e| fail(&cp_path, format!("cannot read the checkpoint log: {e}")))?;
        let (entries, good) = checkpoint_log::parse_log(&bytes);
        if good != bytes.len() {
            return fail(
                &cp_path,
                format!(
                    "entry {} at offset {good}: bad length or checksum",
                    entries.len()
                ),
            );
        }
        Ok((
            cp_path.display().to_string(),
            entries.into_iter().map(<[u8]>::to_vec).collect(),
        ))
    }

    fn segments(&self) -> Result<Vec<SegRef>, VerifyError> {
        let seg_dir = self.dir.join(layout::SEGMENTS_DIR);
        let rd =
            std::fs::read_dir(&seg_dir).or_else(|e| fail(&seg_dir, format!("cannot list: {e}")))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.or_else(|e| fail(&seg_dir, e.to_string()))?;
            let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
            names.push((e.file_name().to_string_lossy().to_string(), bytes));
        }
        let mut segs = order_segments(names);
        // Pruned segments fill their places; a file still present (a crash between the
        // record and the unlink) is verified instead.
        for (first, end, key) in read_pruned(&self.dir)? {
            if !segs.iter().any(|s| s.kind == SegKind::Sealed(first, end)) {
                segs.push(SegRef {
                    kind: SegKind::Pruned(first, end),
                    // Where its file was (the object key is `segments/<same name>`).
                    name: key.rsplit('/').next().unwrap_or(&key).to_string(),
                    bytes: 0,
                });
            }
        }
        segs.sort_by_key(|s| match s.kind {
            SegKind::Sealed(a, _) | SegKind::Pruned(a, _) => (a, 0),
            SegKind::Open(a) => (a, 1),
        });
        Ok(segs)
    }

    fn leaf_hashes(&self) -> Option<Box<dyn ReadAt>> {
        let f = File::open(
            self.dir
                .join(auditlog_formats::layout::HASHES_DIR)
                .join(auditlog_formats::layout::hash_level_file(0)),
        )
        .ok()?;
        let len = f.metadata().ok()?.len();
        Some(Box::new(FileAt(f, len)))
    }

    fn place(&self, seg: &SegRef) -> String {
        self.dir
            .join(layout::SEGMENTS_DIR)
            .join(&seg.name)
            .display()
            .to_string()
    }

    fn open_sealed(&self, seg: &SegRef) -> Result<Box<dyn ReadAt + Send>, VerifyError> {
        let p = self.place(seg);
        let f = File::open(&p).or_else(|e| fail(&p, format!("open: {e}")))?;
        let len = f.metadata().or_else(|e| fail(&p, e.to_string()))?.len();
        Ok(Box::new(FileAt(f, len)))
    }

    fn open_unsealed(&self, seg: &SegRef) -> Result<Box<dyn ReadAt + Send>, VerifyError> {
        self.open_sealed(seg)
    }

    fn hash_levels(&self) -> Result<HashCheck, VerifyError> {
        let dir = self.dir.join(auditlog_formats::layout::HASHES_DIR);
        let mut check = HashCheck {
            places: Vec::new(),
            levels: Vec::new(),
            present: Vec::new(),
            complete: true,
            checked: 0,
        };
        for level in 0..64 {
            let p = dir.join(format!("level-{level:02}.bin"));
            check.places.push(p.display().to_string());
            match File::open(&p) {
                Ok(f) => {
                    check
                        .present
                        .push(f.metadata().map(|m| m.len() / 32).unwrap_or(0));
                    check
                        .levels
                        .push(Some(Box::new(BufReader::with_capacity(1 << 16, f))));
                }
                Err(_) => {
                    check.present.push(0);
                    check.levels.push(None);
                }
            }
        }
        Ok(check)
    }

    fn hashes_place(&self) -> String {
        self.dir
            .join(auditlog_formats::layout::HASHES_DIR)
            .display()
            .to_string()
    }

    fn hash_reader(&self, alg: auditlog_formats::TreeHash) -> Option<FileHashes> {
        Some(FileHashes {
            alg,
            dir: self.dir.join(auditlog_formats::layout::HASHES_DIR),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pruned list as the verifier reads it: a torn last entry is left out, damage
    /// further back than one append is reported where it is.
    #[test]
    fn pruned_list_torn_tail_and_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("replication").join("pruned.log");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let mut log = Vec::new();
        for k in 0..2000u64 {
            let json = format!(
                r#"{{"first":{},"end":{},"key":"segments/{k:020}.seg","bytes":1}}"#,
                k * 10,
                k * 10 + 10
            );
            log.extend(checkpoint_log::encode_entry(&json));
        }
        assert!(log.len() > 2 * checkpoint_log::APPEND_BYTES_MAX);
        std::fs::write(&path, &log).expect("write");
        assert_eq!(read_pruned(dir.path()).expect("clean").len(), 2000);

        let mut torn = log.clone();
        torn.extend(&checkpoint_log::encode_entry("{\"first\":10000")[..12]);
        std::fs::write(&path, &torn).expect("write");
        assert_eq!(read_pruned(dir.path()).expect("torn").len(), 2000);

        let mut damaged = log.clone();
        damaged[20] ^= 1;
        std::fs::write(&path, &damaged).expect("write");
        let err = read_pruned(dir.path()).expect_err("damage found");
        assert!(
            err.to_string().contains("entry 0 at offset 0: damaged"),
            "{err}"
        );
    }
}
