//! Whole-file replacement, the one way the engine and the daemon rewrite a small file in
//! place (`log.json`, `keys.json`, `admin-requests.json`, the forwarder's cursor): write a
//! temporary file beside it, fsync it, rename it over the file, fsync the directory. A
//! crash leaves the old file or the new one, never a mix; the temporary file a crash may
//! leave (`<name>.partial`) is overwritten by the next replacement.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// The temporary file `replace_file` writes before renaming it over `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    path.with_extension("partial")
}

/// Replaces `path` with `bytes`, atomically and durably (see the module's note).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = partial_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp, "create"))?;
    f.write_all(bytes).map_err(io_err(&tmp, "write"))?;
    f.sync_all().map_err(io_err(&tmp, "fsync"))?;
    drop(f);
    install(&tmp, path)
}

/// Renames a synced `tmp` over `path` and syncs the directory, so the rename survives a
/// crash.
pub fn install(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(io_err(path, "rename into place"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::io::sync_dir(dir).map_err(io_err(dir, "sync"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("state.json");
        replace_file(&p, b"one").expect("create");
        // A leftover from a crash is overwritten, not appended to.
        std::fs::write(partial_path(&p), b"garbage from a crash, longer").expect("w");
        replace_file(&p, b"two").expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert!(!partial_path(&p).exists());
        let e = replace_file(&d.path().join("no/such/dir/f"), b"x").expect_err("no dir");
        assert!(e.to_string().contains("create"), "{e}");
    }
}
