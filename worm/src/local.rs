//! A local directory as the target: the embedded default and the tests' stand-in. Objects
//! are written to a temporary file, synced, hard-linked into place (which fails if the name
//! is taken: create-only), read back and compared, then made read-only. The retention asked
//! for is recorded in a sidecar (`.meta/<key>.json`); nothing here can enforce it against
//! an administrator, which is why [`WormTarget::check_worm`] says so.
//!
//! Conditional writes (`put_if`, the lease) compare the BLAKE3 of the object's bytes with the
//! expected tag and replace the file (staged, synced, renamed, directory synced) while holding
//! an exclusive `flock` on `.locks/<key>.lock`: `flock` locks belong to an open file, so two
//! threads of one process exclude each other as two processes do.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{
    Lock, ObjectInfo, PutOutcome, Result, Retention, SwapOutcome, Tagged, WormCheck, WormError,
    WormTarget,
};

pub(crate) struct LocalTarget {
    root: PathBuf,
}

const META_DIR: &str = ".meta";
const PARTIAL_DIR: &str = ".partial";
/// One lock file per key written with `put_if`; never removed (removing a lock file while
/// another writer waits on it would let a third lock a new file of the same name).
const LOCK_DIR: &str = ".locks";

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// An exclusive `flock` on an open file, released when dropped (by closing the file).
struct Flock {
    _file: File,
}

impl Flock {
    fn exclusive(path: &Path) -> Result<Flock> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path, "open lock file"))?;
        loop {
            // SAFETY: flock(2) on a descriptor `f` keeps open, with no pointers.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Flock { _file: f });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(path, "lock")(e));
            }
        }
    }
}

/// The `map_err` for an I/O error on `path`. Nothing is copied until there is an error:
/// it sits in per-piece loops (writes and read-backs of large objects).
fn io<'a>(path: &'a Path, what: &'a str) -> impl FnOnce(std::io::Error) -> WormError + 'a {
    move |source| WormError::Io {
        path: path.display().to_string(),
        what: what.to_string(),
        source,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sidecar {
    retain_until_unix_s: u64,
    legal_hold: bool,
}

/// Waits for the step before `[at, at + len)` to reach the disk and starts this one: hints
/// only, the caller's fsync reports any error.
fn write_behind(f: &File, at: usize, len: usize, step: usize) {
    let prev = at.saturating_sub(step);
    // SAFETY: system calls on a descriptor `f` keeps open, with no pointers.
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            prev as libc::off64_t,
            (at - prev) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
        libc::sync_file_range(
            f.as_raw_fd(),
            at as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// The largest single write or read of an object: the replicator runs beside the log's
/// writer, and a woken thread may wait for a running one until the next scheduler tick
/// (4 ms here) while it is inside one system call. Copying a 2 MiB tile bundle into the
/// page cache in one `write` was measured holding a CPU for 5 ms in front of the
/// sequencer; in pieces of this size, with a yield between them, it gives way at once.
const PIECE_BYTES: usize = 256 << 10;

/// Offers the CPU to whatever woke up meanwhile (returns at once when nothing did).
fn give_way() {
    std::thread::yield_now();
}

/// Whether `path` holds exactly `bytes`, read back in pieces.
fn same_bytes(path: &Path, bytes: &[u8]) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).map_err(io(path, "read back"))?;
    let len = f.metadata().map_err(io(path, "read back"))?.len();
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    let mut buf = vec![0u8; PIECE_BYTES.min(bytes.len())];
    let mut at = 0usize;
    for want in bytes.chunks(PIECE_BYTES) {
        let got = &mut buf[..want.len()];
        f.read_exact_at(got, at as u64)
            .map_err(io(path, "read back"))?;
        if got != want {
            return Ok(false);
        }
        at += want.len();
        give_way();
    }
    Ok(true)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "sync directory"))
}

impl LocalTarget {
    pub fn open(root: &Path) -> Result<LocalTarget> {
        for d in [
            root.to_path_buf(),
            root.join(META_DIR),
            root.join(PARTIAL_DIR),
        ] {
            fs::create_dir_all(&d).map_err(io(&d, "create directory"))?;
        }
        Ok(LocalTarget {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, base: &Path, key: &str) -> Result<PathBuf> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == ".." || p.starts_with('.'));
        if bad {
            return Err(WormError::Config(format!(
                "object key {key:?} is not a plain relative path"
            )));
        }
        Ok(base.join(key))
    }

    /// Writes a synced temporary copy and returns its path. A large object (a sealed
    /// segment) is written back in steps as it goes: one sync at the end pushed all of it
    /// at the disk at once, and the log's own small syncs queued behind it.
    fn stage(&self, key: &str, bytes: &[u8]) -> Result<PathBuf> {
        const STEP_BYTES: usize = 4 << 20;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self.root.join(PARTIAL_DIR).join(format!(
            "{}.{}.{nanos}",
            key.replace('/', "_"),
            std::process::id()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp, "create"))?;
        let (mut done, mut step_start) = (0usize, 0usize);
        for piece in bytes.chunks(PIECE_BYTES) {
            f.write_all(piece).map_err(io(&tmp, "write"))?;
            done += piece.len();
            if bytes.len() > STEP_BYTES && (done - step_start == STEP_BYTES || done == bytes.len())
            {
                write_behind(&f, step_start, done - step_start, STEP_BYTES);
                step_start = done;
            }
            give_way();
        }
        f.sync_all().map_err(io(&tmp, "fsync"))?;
        Ok(tmp)
    }

    /// The object's bytes, or `None` if absent.
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path, "read")(e)),
        }
    }

    fn write_sidecar(&self, key: &str, lock: Lock) -> Result<()> {
        let path = self.path(&self.root.join(META_DIR), &format!("{key}.json"))?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
        }
        let text = serde_json::to_vec(&Sidecar {
            retain_until_unix_s: lock.retain_until_unix_s,
            legal_hold: lock.legal_hold,
        })
        .map_err(|e| WormError::Config(e.to_string()))?;
        let tmp = self.stage(&format!("{key}.json"), &text)?;
        fs::rename(&tmp, &path).map_err(io(&path, "install retention sidecar"))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl WormTarget for LocalTarget {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn check_worm(&self) -> Result<WormCheck> {
        Ok(WormCheck {
            enforced: false,
            detail: "a local directory: objects are read-only files, but an administrator can remove them".into(),
        })
    }

    fn put_create(&self, key: &str, bytes: &[u8], lock: Option<Lock>) -> Result<PutOutcome> {
        let path = self.path(&self.root, key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
        // Retention is recorded before the object appears, so no object is ever seen without it.
        if let Some(l) = lock {
            self.write_sidecar(key, l)?;
        }
        let tmp = self.stage(key, bytes)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !same_bytes(&path, bytes)? {
                    return Err(WormError::Checksum {
                        target: self.describe(),
                        key: key.to_string(),
                        what: "the key already holds different bytes".into(),
                    });
                }
                return Ok(PutOutcome::AlreadyThere);
            }
            Err(e) => return Err(io(&path, "link into place")(e)),
        }
        sync_dir(&dir)?;
        // Compared directly, not by digest: two MD5s over every tile bundle were a third
        // of the replicator's CPU.
        if !same_bytes(&path, bytes)? {
            return Err(WormError::Checksum {
                target: self.describe(),
                key: key.to_string(),
                what: "read back differs from what was written".into(),
            });
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444))
            .map_err(io(&path, "make read-only"))?;
        Ok(PutOutcome::Created)
    }

    fn put_mutable(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(&self.root, key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
        let tmp = self.stage(key, bytes)?;
        fs::rename(&tmp, &path).map_err(io(&path, "install"))?;
        sync_dir(&dir)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(&self.path(&self.root, key)?)
    }

    fn get_tagged(&self, key: &str) -> Result<Option<Tagged>> {
        // One open and read: a rename by `put_if` replaces the file whole, so the bytes are
        // one version's and the tag is theirs.
        Ok(self
            .read(&self.path(&self.root, key)?)?
            .map(|bytes| Tagged {
                tag: blake3_hex(&bytes),
                bytes,
            }))
    }

    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&str>) -> Result<SwapOutcome> {
        let path = self.path(&self.root, key)?;
        let lock_path = self.path(&self.root.join(LOCK_DIR), &format!("{key}.lock"))?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        for d in [&dir, lock_path.parent().unwrap_or(&self.root)] {
            fs::create_dir_all(d).map_err(io(d, "create directory"))?;
        }
        let _lock = Flock::exclusive(&lock_path)?;
        let current = self.read(&path)?.map(|b| blake3_hex(&b));
        if current.as_deref() != expected {
            return Ok(SwapOutcome::Conflict);
        }
        let tmp = self.stage(key, bytes)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io(&path, "install")(e));
        }
        sync_dir(&dir)?;
        Ok(SwapOutcome::Stored {
            tag: blake3_hex(bytes),
        })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        let path = self.path(&self.root, key)?;
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, "open")(e)),
        };
        let n = usize::try_from(len)
            .map_err(|_| io(&path, "read")(std::io::Error::other("range too large")))?;
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, offset)
            .map_err(io(&path, "read"))?;
        Ok(Some(buf))
    }

    fn retention(&self, key: &str) -> Result<Option<Retention>> {
        let path = self.path(&self.root.join(META_DIR), &format!("{key}.json"))?;
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, "read")(e)),
        };
        let s: Sidecar = serde_json::from_slice(&text).map_err(|e| WormError::Protocol {
            target: self.describe(),
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(Retention {
            mode: "local".into(),
            retain_until_unix_s: s.retain_until_unix_s,
            legal_hold: s.legal_hold,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&dir, "list")(e)),
            };
            for e in rd {
                let e = e.map_err(io(&dir, "list"))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // sidecars and partial uploads
                }
                let key = format!("{rel}{name}");
                let ft = e.file_type().map_err(io(&e.path(), "stat"))?;
                if ft.is_dir() {
                    let sub = format!("{key}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        stack.push((e.path(), sub));
                    }
                } else if key.starts_with(prefix) {
                    let bytes = e.metadata().map_err(io(&e.path(), "stat"))?.len();
                    out.push(ObjectInfo { key, bytes });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewObject;

    #[test]
    fn create_only_read_only_and_listed() {
        let d = tempfile::tempdir().expect("tmp");
        let t = LocalTarget::open(d.path()).expect("open");
        let lock = Lock {
            retain_until_unix_s: 1234,
            legal_hold: false,
        };
        assert_eq!(
            t.put_create("a/b", b"one", Some(lock)).expect("put"),
            PutOutcome::Created
        );
        assert_eq!(
            t.put_create("a/b", b"one", Some(lock)).expect("again"),
            PutOutcome::AlreadyThere
        );
        assert!(matches!(
            t.put_create("a/b", b"two", Some(lock)),
            Err(WormError::Checksum { .. })
        ));
        assert_eq!(t.get("a/b").expect("get").as_deref(), Some(&b"one"[..]));
        assert_eq!(
            t.retention("a/b")
                .expect("ret")
                .map(|r| r.retain_until_unix_s),
            Some(1234)
        );
        let mode = fs::metadata(d.path().join("a/b"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "objects are read-only");
        t.put_mutable("checkpoint", b"x").expect("mutable");
        t.put_mutable("checkpoint", b"y").expect("mutable again");
        let keys: Vec<String> = t
            .list("")
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["a/b", "checkpoint"]);
        assert_eq!(t.list("a/").expect("list").len(), 1);
        assert!(t.put_create("../x", b"", None).is_err());
    }

    /// `put_if`: a create that finds the key taken, a swap from the tag read, a stale tag and
    /// a tag for an absent key are answered as the stores answer them; `.locks` is not an
    /// object.
    #[test]
    fn conditional_writes() {
        let d = tempfile::tempdir().expect("tmp");
        let t = LocalTarget::open(d.path()).expect("open");
        assert_eq!(t.get_tagged("lease/w").expect("absent"), None);
        let SwapOutcome::Stored { tag: t1 } = t.put_if("lease/w", b"one", None).expect("create")
        else {
            panic!("create refused")
        };
        assert_eq!(t1, blake3_hex(b"one"));
        assert_eq!(
            t.put_if("lease/w", b"other", None).expect("create again"),
            SwapOutcome::Conflict
        );
        let got = t.get_tagged("lease/w").expect("get").expect("there");
        assert_eq!(
            got,
            Tagged {
                bytes: b"one".to_vec(),
                tag: t1.clone()
            }
        );
        let SwapOutcome::Stored { tag: t2 } = t.put_if("lease/w", b"two", Some(&t1)).expect("swap")
        else {
            panic!("swap from the current tag refused")
        };
        assert_ne!(t2, t1);
        assert_eq!(
            t.put_if("lease/w", b"three", Some(&t1)).expect("stale"),
            SwapOutcome::Conflict
        );
        assert_eq!(t.get("lease/w").expect("get").as_deref(), Some(&b"two"[..]));
        assert_eq!(
            t.put_if("lease/absent", b"x", Some(&t2)).expect("absent"),
            SwapOutcome::Conflict
        );
        assert_eq!(t.get("lease/absent").expect("get"), None);
        assert!(t.put_if("../x", b"", None).is_err());
        let keys: Vec<String> = t
            .list("")
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["lease/w"], "lock files are not objects");
        let partial = fs::read_dir(d.path().join(PARTIAL_DIR))
            .expect("list")
            .count();
        assert_eq!(partial, 0, "no staged copy is left behind");
    }

    /// Threads that read the same tag and then swap at once: exactly one wins, every round,
    /// and the object holds the winner's bytes.
    #[test]
    fn racing_threads_swap_exactly_once() {
        const THREADS: usize = 12;
        let d = tempfile::tempdir().expect("tmp");
        let t = LocalTarget::open(d.path()).expect("open");
        t.put_if("lease", b"round -1", None).expect("create");
        for round in 0..25 {
            let start = std::sync::Barrier::new(THREADS);
            let outcomes: Vec<(String, SwapOutcome)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|i| {
                        let (t, start) = (&t, &start);
                        s.spawn(move || {
                            let tag = t.get_tagged("lease").expect("get").expect("there").tag;
                            let mine = format!("round {round} writer {i}");
                            start.wait();
                            let out = t
                                .put_if("lease", mine.as_bytes(), Some(&tag))
                                .expect("put_if");
                            (mine, out)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("join"))
                    .collect()
            });
            let won: Vec<&(String, SwapOutcome)> = outcomes
                .iter()
                .filter(|(_, o)| matches!(o, SwapOutcome::Stored { .. }))
                .collect();
            assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
            let now = t.get_tagged("lease").expect("get").expect("there");
            assert_eq!(now.bytes, won[0].0.as_bytes(), "round {round}");
            assert_eq!(
                SwapOutcome::Stored { tag: now.tag },
                won[0].1,
                "round {round}"
            );
        }
    }

    const RACE_DIR: &str = "AUDITLOG_WORM_PUT_IF_RACE_DIR";

    /// Processes racing: each child (this test binary, running `put_if_race_child`) reads
    /// the tag, waits for the others, then swaps; exactly one says it stored.
    #[test]
    fn racing_processes_swap_exactly_once() {
        const CHILDREN: usize = 6;
        let d = tempfile::tempdir().expect("tmp");
        let t = LocalTarget::open(&d.path().join("store")).expect("open");
        t.put_if("lease", b"first", None).expect("create");
        let exe = std::env::current_exe().expect("test binary");
        let children: Vec<_> = (0..CHILDREN)
            .map(|i| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "local::tests::put_if_race_child",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(RACE_DIR, d.path())
                    .env("AUDITLOG_WORM_PUT_IF_RACE_ID", i.to_string())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        // Every child has read the tag (its ready file) before any may write.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while (0..CHILDREN).any(|i| !d.path().join(format!("ready.{i}")).exists()) {
            assert!(std::time::Instant::now() < deadline, "children not ready");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        fs::write(d.path().join("go"), b"").expect("go");
        let mut stored = Vec::new();
        for (i, c) in children.into_iter().enumerate() {
            let out = c.wait_with_output().expect("child");
            assert!(out.status.success(), "child {i}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            match (
                text.contains("PUT_IF stored"),
                text.contains("PUT_IF conflict"),
            ) {
                (true, false) => stored.push(i),
                (false, true) => {}
                _ => panic!("child {i} said {text:?}"),
            }
        }
        assert_eq!(stored.len(), 1, "winners: {stored:?}");
        assert_eq!(
            t.get("lease").expect("get"),
            Some(format!("child {}", stored[0]).into_bytes())
        );
    }

    /// The child of `racing_processes_swap_exactly_once`; does nothing when run by hand.
    #[test]
    #[ignore = "a child process of racing_processes_swap_exactly_once"]
    fn put_if_race_child() {
        let Some(dir) = std::env::var_os(RACE_DIR) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let id = std::env::var("AUDITLOG_WORM_PUT_IF_RACE_ID").expect("id");
        let t = LocalTarget::open(&dir.join("store")).expect("open");
        let tag = t.get_tagged("lease").expect("get").expect("there").tag;
        fs::write(dir.join(format!("ready.{id}")), b"").expect("ready");
        while !dir.join("go").exists() {
            std::thread::yield_now();
        }
        let out = t
            .put_if("lease", format!("child {id}").as_bytes(), Some(&tag))
            .expect("put_if");
        match out {
            SwapOutcome::Stored { .. } => println!("PUT_IF stored"),
            SwapOutcome::Conflict => println!("PUT_IF conflict"),
        }
    }

    /// A group gives one outcome per object, in order; a large object (written back in
    /// steps) arrives whole; a clash stops the group with the objects before it stored.
    #[test]
    fn groups_and_large_objects() {
        let d = tempfile::tempdir().expect("tmp");
        let t = LocalTarget::open(d.path()).expect("open");
        let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        t.put_create("g/1", b"one", None).expect("put");
        let group = [
            NewObject {
                key: "g/0",
                bytes: b"zero",
                lock: None,
            },
            NewObject {
                key: "g/1",
                bytes: b"one",
                lock: None,
            },
            NewObject {
                key: "g/big",
                bytes: &big,
                lock: None,
            },
        ];
        assert_eq!(
            t.put_create_many(&group).expect("group"),
            vec![
                PutOutcome::Created,
                PutOutcome::AlreadyThere,
                PutOutcome::Created
            ]
        );
        assert_eq!(t.get("g/big").expect("get").as_deref(), Some(&big[..]));
        let clash = [
            NewObject {
                key: "g/2",
                bytes: b"two",
                lock: None,
            },
            NewObject {
                key: "g/0",
                bytes: b"not zero",
                lock: None,
            },
            NewObject {
                key: "g/3",
                bytes: b"three",
                lock: None,
            },
        ];
        assert!(matches!(
            t.put_create_many(&clash),
            Err(WormError::Checksum { .. })
        ));
        assert_eq!(t.get("g/2").expect("get").as_deref(), Some(&b"two"[..]));
        assert_eq!(t.get("g/3").expect("get"), None);
        let partial = fs::read_dir(d.path().join(PARTIAL_DIR))
            .expect("list")
            .count();
        assert_eq!(partial, 0, "no staged copy is left behind");
    }
}
