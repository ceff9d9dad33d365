//! Files that hold secrets (`initial-tokens`, `tokens.json`, `keys/checkpoint.key`, an HSM
//! PIN file) and the data directory that holds most of them.
//!
//! The data directory is 0700 and such files are 0600, so that only the daemon's user can
//! read them. A secret file is created with `O_CREAT | O_EXCL` (`create_new`) and mode 0600,
//! never opened over an existing file, and opened with `O_NOFOLLOW`: a symbolic link planted
//! at its path would otherwise make the daemon write a token where its planter can read it,
//! or sign with a key its planter chose. One found with group or other permission bits is
//! refused rather than tightened: it may have been read already, and an operator must know.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the data directory and of directories made for secret files.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file that holds a secret.
pub const FILE_MODE: u32 = 0o600;
/// Permission bits for group and others: none may be set on a secret file.
const GROUP_OTHER: u32 = 0o077;
/// A secret file larger than this is refused (`tokens.json` with thousands of tokens is
/// well under it).
pub const FILE_BYTES_MAX: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{}: is a symbolic link; a file that holds secrets is never reached through one (remove it: someone may have planted it)", path.display())]
    Symlink { path: PathBuf },
    #[error("{}: mode {mode:04o} lets group or others in; refusing a file that holds secrets (find out who may have read it, then chmod 600 it)", path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: exists already; not overwriting a file that holds secrets", path.display())]
    Exists { path: PathBuf },
    #[error("{}: larger than {FILE_BYTES_MAX} bytes; not a secret file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

impl PrivateFileError {
    /// Nothing is at the path.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PrivateFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

fn io_error<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(io::Error) -> PrivateFileError + 'a {
    move |source| PrivateFileError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// The data directory: created 0700 (with any missing parents) when absent; an existing
/// one that group or others may enter is tightened to 0700, with a warning, since what it
/// holds (tokens, the development key, the log) is the daemon's alone. The directory itself
/// may be a symbolic link an operator made (to another disk): it is followed.
pub fn ensure_private_dir(path: &Path) -> Result<(), PrivateFileError> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(PrivateFileError::NotAFile {
            path: path.to_path_buf(),
        }),
        Ok(m) if m.mode() & GROUP_OTHER != 0 => {
            let was = m.mode() & 0o7777;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_error(path, "tighten the data directory to 0700"))?;
            tracing::warn!(
                "{}: mode was {was:04o}, letting group or others in; set to 0700",
                path.display()
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_private_dir(path),
        Err(e) => Err(io_error(path, "stat the data directory")(e)),
    }
}

/// Creates `path` and any missing parents with mode 0700; an existing directory is left as
/// it is (it may be a shared parent such as `/etc/auditlog`).
pub fn create_private_dir(path: &Path) -> Result<(), PrivateFileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io_error(path, "create directory (mode 0700)"))
}

/// Creates `path` with mode 0600 and writes `bytes`, durably. Refuses if anything is at
/// the path already, a symbolic link included (`O_EXCL` never follows one).
pub fn create_private_file(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => PrivateFileError::Exists {
                path: path.to_path_buf(),
            },
            _ => io_error(path, "create (mode 0600)")(e),
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_error(path, "write"))
}

/// Writes `bytes` to `path` atomically: a fresh 0600 file next to it, renamed over it. A
/// leftover temporary file (a crash) is removed first; `remove_file` removes a symbolic
/// link itself, never what it points to.
pub fn replace_private_file(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&tmp, "remove a leftover temporary file")(e)),
    }
    create_private_file(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(io_error(path, "rename into place"))?;
    if let Some(dir) = path.parent() {
        crate::io::sync_dir(dir).map_err(io_error(dir, "sync"))?;
    }
    Ok(())
}

/// Reads a secret file: not through a symbolic link (`O_NOFOLLOW`), a regular file, with no
/// permission bit for group or others.
pub fn read_private_file(path: &Path) -> Result<Vec<u8>, PrivateFileError> {
    read(path, libc::O_NOFOLLOW)
}

/// As [`read_private_file`], but a symbolic link is followed: for files whose place the
/// operator chose outside the data directory (an HSM PIN file, which container platforms
/// often mount through links). The file reached must still be a regular file, mode 0600 or
/// stricter.
pub fn read_private_file_following(path: &Path) -> Result<Vec<u8>, PrivateFileError> {
    read(path, 0)
}

/// Checks what is at `path` without reading it: `false` if nothing; an error if it is a
/// symbolic link, not a regular file, or open to group or others.
pub fn check_private_file(path: &Path) -> Result<bool, PrivateFileError> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(path, "stat")(e)),
    };
    check_metadata(path, &m)?;
    Ok(true)
}

fn check_metadata(path: &Path, m: &std::fs::Metadata) -> Result<(), PrivateFileError> {
    if m.file_type().is_symlink() {
        return Err(PrivateFileError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if !m.is_file() {
        return Err(PrivateFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if m.mode() & GROUP_OTHER != 0 {
        return Err(PrivateFileError::TooOpen {
            path: path.to_path_buf(),
            mode: m.mode() & 0o7777,
        });
    }
    Ok(())
}

fn read(path: &Path, nofollow: libc::c_int) -> Result<Vec<u8>, PrivateFileError> {
    // O_NONBLOCK: a FIFO planted at the path must not hang the open; the type is checked
    // on the open file below, and reads of a regular file ignore the flag.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) && nofollow != 0 {
                PrivateFileError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                io_error(path, "open")(e)
            }
        })?;
    // The checks are on the file opened, not on the path, so nothing can be swapped in
    // between.
    let m = f.metadata().map_err(io_error(path, "stat"))?;
    check_metadata(path, &m)?;
    let mut bytes = Vec::new();
    f.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path, "read"))?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(PrivateFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn created_private_and_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("a/data");
        ensure_private_dir(&data).expect("create");
        assert_eq!(mode(&data), 0o700);
        let f = data.join("secret");
        create_private_file(&f, b"x").expect("create");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(read_private_file(&f).expect("read"), b"x");
        assert!(matches!(
            create_private_file(&f, b"y"),
            Err(PrivateFileError::Exists { .. })
        ));
        replace_private_file(&f, b"z").expect("replace");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(read_private_file(&f).expect("read"), b"z");
        // An existing directory open to others is tightened.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private_dir(&open).expect("tighten");
        assert_eq!(mode(&open), 0o700);
    }

    #[test]
    fn links_and_open_modes_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"planted").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.path().join("secret");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(matches!(
            read_private_file(&link),
            Err(PrivateFileError::Symlink { .. })
        ));
        assert!(matches!(
            check_private_file(&link),
            Err(PrivateFileError::Symlink { .. })
        ));
        assert!(matches!(
            create_private_file(&link, b"token"),
            Err(PrivateFileError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&target).expect("read"), b"planted");
        // Following is only for files the operator placed; the mode is still checked.
        assert_eq!(
            read_private_file_following(&link).expect("read"),
            b"planted"
        );
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = read_private_file_following(&link).expect_err("group-readable");
        assert!(e.to_string().contains("mode 0640"), "{e}");
        let e = read_private_file(&target).expect_err("group-readable");
        assert!(
            matches!(e, PrivateFileError::TooOpen { mode: 0o640, .. }),
            "{e}"
        );
        assert!(!check_private_file(&dir.path().join("absent")).expect("absent"));
        assert!(read_private_file(&dir.path().join("absent"))
            .expect_err("absent")
            .is_not_found());
    }
}
