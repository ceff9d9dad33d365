//! Durable appends to the open segment: one vectored write and one `fdatasync` per batch,
//! through io_uring (write and sync linked, so the caller hashes while the kernel works) or
//! through `pwritev` + `fdatasync`. Also the zero-filling of segment files ahead of the
//! writer: overwriting synced zeros needs no metadata journaling on each sync, which on
//! this machine class makes syncs several times faster than appending to a growing file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{FaultHooks, IoMode};

pub(crate) enum Appender {
    Uring(Box<io_uring::IoUring>),
    Pwrite,
}

/// What the caller does while the write and sync are in flight.
pub(crate) type WhileSyncing<'a> = &'a mut dyn FnMut();

impl Appender {
    pub fn new(mode: IoMode) -> io::Result<(Appender, &'static str)> {
        match mode {
            IoMode::Pwrite => Ok((Appender::Pwrite, "pwrite")),
            IoMode::IoUring => Ok((Appender::Uring(Box::new(probe_uring()?)), "io_uring")),
            IoMode::Auto => match probe_uring() {
                Ok(ring) => Ok((Appender::Uring(Box::new(ring)), "io_uring")),
                Err(e) => {
                    tracing::info!("io_uring unavailable ({e}); using pwrite + fdatasync");
                    Ok((Appender::Pwrite, "pwrite"))
                }
            },
        }
    }

    /// Writes `bufs` at `offset` and makes them durable; runs `meanwhile` once in between.
    /// Returns only when every byte is written and synced, or with the error that stopped it.
    pub fn write_and_sync(
        &mut self,
        file: &File,
        offset: u64,
        bufs: &[&[u8]],
        faults: Option<&Arc<FaultHooks>>,
        meanwhile: WhileSyncing<'_>,
    ) -> io::Result<()> {
        if let Some(f) = faults {
            if f.enospc_next_write.swap(false, Ordering::SeqCst) {
                meanwhile();
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let result = match self {
            Appender::Pwrite => {
                let r = pwritev_all(file, offset, bufs);
                meanwhile();
                r.and_then(|()| datasync(file))
            }
            Appender::Uring(ring) => uring_write_and_sync(ring, file, offset, bufs, meanwhile),
        };
        if let Some(f) = faults {
            if f.fail_next_sync.swap(false, Ordering::SeqCst) {
                return Err(io::Error::other("fdatasync failed (injected EIO)"));
            }
        }
        result
    }
}

fn probe_uring() -> io::Result<io_uring::IoUring> {
    let ring = io_uring::IoUring::new(8)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    if !probe.is_supported(io_uring::opcode::Writev::CODE)
        || !probe.is_supported(io_uring::opcode::Fsync::CODE)
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel lacks IORING_OP_WRITEV or FSYNC",
        ));
    }
    Ok(ring)
}

fn uring_write_and_sync(
    ring: &mut io_uring::IoUring,
    file: &File,
    offset: u64,
    bufs: &[&[u8]],
    meanwhile: WhileSyncing<'_>,
) -> io::Result<()> {
    use io_uring::{opcode, squeue, types};
    let iovecs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let fd = types::Fd(file.as_raw_fd());
    // Chunk the iovec list to the kernel's IOV_MAX; only the last write links to the sync.
    const IOV_MAX: usize = 1024;
    let chunks: Vec<&[libc::iovec]> = iovecs.chunks(IOV_MAX).collect();
    let mut chunk_offset = offset;
    let mut expected = Vec::with_capacity(chunks.len());
    // From the first push on, the kernel may read `iovecs` and `bufs` until it completes
    // the operation: `InFlight` waits for every pushed operation before this function
    // returns or unwinds, whatever happened (a failed push or submit, an interrupted wait,
    // a panic in `meanwhile`).
    let mut flight = InFlight { ring, pending: 0 };
    let mut failure: Option<io::Error> = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let len: usize = chunk.iter().map(|v| v.iov_len).sum();
        let entry = opcode::Writev::new(fd, chunk.as_ptr(), chunk.len() as u32)
            .offset(chunk_offset)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(i as u64);
        expected.push((chunk_offset, len));
        chunk_offset += len as u64;
        if let Err(e) = flight.push(&entry) {
            failure = Some(e);
            break;
        }
    }
    if failure.is_none() {
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(u64::MAX);
        failure = flight.push(&sync).and_then(|()| flight.submit()).err();
    }
    if failure.is_none() {
        meanwhile();
    }
    let mut short = false;
    let mut first_error: Option<io::Error> = failure;
    while flight.pending > 0 {
        let cqe = flight.next()?;
        let res = cqe.result();
        let tag = cqe.user_data();
        if res < 0 {
            if res == -libc::ECANCELED {
                // The link broke (a short or failed write before it): reported by that one.
                continue;
            }
            first_error.get_or_insert(io::Error::from_raw_os_error(-res));
        } else if tag != u64::MAX && (res as usize) < expected[tag as usize].1 {
            short = true;
        }
    }
    drop(flight);
    if let Some(e) = first_error {
        return Err(e);
    }
    if short {
        // A short write (rare: a signal or a nearly full device) breaks the link; finish the
        // whole range synchronously and sync, rewriting what may already be there.
        tracing::warn!(
            "io_uring short write at offset {offset} ({total} bytes); completing with pwrite"
        );
        pwritev_all(file, offset, bufs)?;
        datasync(file)?;
    }
    Ok(())
}

/// Operations pushed to the ring and not yet completed. Dropped with some pending (an early
/// return, a panic), it waits for them: the kernel reads the caller's buffers until then.
/// If even that wait fails, nothing safe is left to do with the buffers, and the process
/// aborts rather than free memory the kernel may still read.
struct InFlight<'r> {
    ring: &'r mut io_uring::IoUring,
    pending: usize,
}

impl InFlight<'_> {
    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        push_sqe(self.ring, entry)?;
        self.pending += 1;
        Ok(())
    }

    /// Submits what is queued; an interrupted call is retried.
    fn submit(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map(|_| ()),
            }
        }
    }

    /// The next completion, submitting what is queued and waiting; interruptions retried.
    fn next(&mut self) -> io::Result<io_uring::cqueue::Entry> {
        debug_assert!(self.pending > 0);
        loop {
            if let Some(cqe) = self.ring.completion().next() {
                self.pending -= 1;
                return Ok(cqe);
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        while self.pending > 0 {
            if let Err(e) = self.next() {
                eprintln!(
                    "auditlog: io_uring: cannot wait for {} operations still reading buffers \
                     about to be freed ({e}); aborting",
                    self.pending
                );
                std::process::abort();
            }
        }
    }
}

fn push_sqe(ring: &mut io_uring::IoUring, entry: &io_uring::squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer an entry points at (the iovec array and the slices it names)
    // outlives the wait for its completion in `uring_write_and_sync`.
    unsafe {
        if ring.submission().push(entry).is_err() {
            ring.submit()?;
            ring.submission()
                .push(entry)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
    }
    Ok(())
}

/// `pwritev` until every byte is written; short writes continue where they stopped.
pub(crate) fn pwritev_all(file: &File, mut offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
    for buf in bufs {
        let mut rest: &[u8] = buf;
        while !rest.is_empty() {
            match file.write_at(rest, offset) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
                Ok(n) => {
                    rest = &rest[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

pub(crate) fn datasync(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// A writer for big background files (sealed segments, leaf-index runs) that starts
/// writeback every `WRITE_BEHIND_BYTES` and waits for the chunk before, so at most two
/// chunks are dirty. Without it the final fsync pushed a whole sealed segment (tens of MB)
/// at the disk at once, and the sequencer's small syncs queued behind it.
///
/// The chunk is also the size of the requests the disk sees: the virtual disk serves a
/// request whole, and a sync queued behind a 4 MiB write waited ~2.5 ms for it (block
/// trace at 763k events/s, batches of 1000). At 512 KiB the wait is a fraction of that.
pub(crate) struct WriteBehind<'a> {
    file: &'a File,
    buf: Vec<u8>,
    written: u64,
    started: u64,
}

const WRITE_BEHIND_BYTES: u64 = 512 << 10;

impl<'a> WriteBehind<'a> {
    pub(crate) fn new(file: &'a File) -> WriteBehind<'a> {
        WriteBehind {
            file,
            buf: Vec::with_capacity(crate::yielding::PIECE_BYTES),
            written: 0,
            started: 0,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        let mut f = self.file;
        f.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        if self.written - self.started >= WRITE_BEHIND_BYTES {
            let fd = self.file.as_raw_fd();
            let (from, to) = (self.started, self.written);
            let prev = from.saturating_sub(WRITE_BEHIND_BYTES);
            // Hints only (durability comes from the caller's fsync, which reports errors):
            // wait for the previous chunk, start the new one.
            // SAFETY: a system call on a descriptor the borrow keeps open, no pointers.
            unsafe {
                libc::sync_file_range(
                    fd,
                    prev as libc::off64_t,
                    (from - prev) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
            start_writeback(self.file, from, to - from);
            self.started = to;
        }
        Ok(())
    }
}

impl Write for WriteBehind<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        // Written in pieces, with a yield after each: the writers are background threads
        // (sealer, checkpointer), and a `write` cannot be interrupted by one.
        if self.buf.len() >= crate::yielding::PIECE_BYTES {
            self.drain()?;
            crate::yielding::point();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()
    }
}

/// Unlinks a large file without freeing it all at once: cuts it from the end in steps
/// first, pausing between them. Only for a file nobody else reads: unlike an unlink, a
/// truncation takes the bytes from every open handle too.
///
/// With online discard, each step's freed blocks become one discard request, which holds
/// the disk for its whole length: `ftruncate` by 8 MiB took 2.0 ms here, by 1 MiB 0.35 ms
/// (medians, a 64 MiB file). A sync arriving meanwhile waits that long.
pub(crate) fn remove_gently(path: &Path, file: &File) -> io::Result<()> {
    const STEP_BYTES: u64 = 1 << 20;
    let mut len = file.metadata()?.len();
    while len > STEP_BYTES {
        len -= STEP_BYTES;
        file.set_len(len)?;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::fs::remove_file(path)
}

/// Asks the kernel to start writing `[offset, offset + len)` of `file` back, without
/// waiting: a hint that spreads a file's writeback over time. Durability still comes only
/// from fsync, which reports any error, so the result is ignored.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: a system call on a descriptor the borrow keeps open, with no pointers.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// How much a background thread yields to the write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Background {
    /// Its disk requests wait while the log's own are queued (the I/O scheduler's idle
    /// class; the kernel ages them in after a few seconds, so it is slowed, not starved).
    /// For sealing and shipping, whose lag costs nothing but disk space for a while.
    IdleIo,
    /// The lowest best-effort level: the preallocator, which the sequencer waits for
    /// at each segment rotation and so must not be left behind.
    LowIo,
}

/// Sealing, zero-filling and shipping may run seconds behind without harm; an ack may not.
/// These threads take a lower CPU weight (nice 10) and a lower I/O priority, so that on a
/// busy machine the sequencer's sync and the network threads go first: the ack latency
/// tail at steady load came from their bursts (a sealed segment's fsync, thousands of
/// tile uploads to a local target). Best effort: where the kernel refuses, defaults stay.
pub(crate) fn lower_thread_priority(kind: Background) {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    let prio = match kind {
        Background::IdleIo => IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        Background::LowIo => (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7,
    };
    // SAFETY: two system calls about the calling thread itself, with no pointers.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid as libc::c_long,
            prio,
        );
    }
}

/// Reads `out` at `offset` only if the page cache holds all of it (`preadv2` with
/// `RWF_NOWAIT`): `Ok(false)` when any of it would have to come from the disk, or the
/// kernel does not support the flag.
pub(crate) fn pread_cached(file: &File, out: &mut [u8], offset: u64) -> io::Result<bool> {
    let iov = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    // SAFETY: one iovec over `out`, which lives across the call; the descriptor is open.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(false),
            _ => Err(e),
        };
    }
    // A short read is part cached, part not (or a short file, which the waiting read
    // reports properly).
    Ok(n as usize == out.len())
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` as `bytes` of synced zeros (writing them, not `fallocate`, so that later
/// overwrites find initialised extents and need no metadata update to sync). The zeros go
/// around the page cache (O_DIRECT) where the file system allows: they would otherwise be
/// copied into memory and written back, competing with the log's own syncs.
pub(crate) fn create_zeroed(path: &Path, bytes: u64) -> io::Result<()> {
    let f = open_for_zeros(path, bytes, true)?;
    fill_zeroed(f, path, bytes)
}

/// Overwrites the existing file at `path` with `bytes` of synced zeros (a recycled segment:
/// its blocks are already allocated, so nothing is freed or allocated).
pub(crate) fn zero_in_place(path: &Path, bytes: u64) -> io::Result<()> {
    let f = open_for_zeros(path, bytes, false)?;
    if f.metadata()?.len() != bytes {
        f.set_len(bytes)?;
    }
    fill_zeroed(f, path, bytes)
}

fn open_for_zeros(path: &Path, bytes: u64, create: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.write(true).create_new(create);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(path)
    };
    if bytes.is_multiple_of(ZERO_ALIGN as u64) {
        if let Ok(f) = open(true) {
            return Ok(f);
        }
    }
    if create {
        let _ = std::fs::remove_file(path);
    }
    open(false)
}

const ZERO_ALIGN: usize = 4096;

fn fill_zeroed(mut f: File, path: &Path, bytes: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    const ALIGN: usize = ZERO_ALIGN;
    // An aligned window inside a plain Vec satisfies O_DIRECT's alignment without unsafe code.
    let backing = vec![0u8; CHUNK + ALIGN];
    let off = backing.as_ptr().align_offset(ALIGN);
    let zeros = &backing[off..off + CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    drop(f);
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while the write and sync are in flight (in the caller's `meanwhile`, say)
    /// leaves nothing in flight: every completion is reaped before the buffers go, and the
    /// next write on the same ring is correct. Before `InFlight`, the unwind left the
    /// operations running and their completions queued, to be read as the next write's.
    #[test]
    fn io_uring_never_leaves_operations_in_flight() {
        let Ok((mut appender, "io_uring")) = Appender::new(IoMode::IoUring) else {
            eprintln!("io_uring unavailable here: nothing to check");
            return;
        };
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let first = vec![7u8; 1 << 20];
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            appender.write_and_sync(&file, 0, &[&first], None, &mut || {
                panic!("a broken invariant while the kernel writes")
            })
        }));
        assert!(panicked.is_err());
        let Appender::Uring(ring) = &mut appender else {
            unreachable!()
        };
        assert_eq!(ring.completion().len(), 0, "completions left behind");
        // The next write on the same ring sees only its own completions.
        let second = vec![9u8; 4096];
        let mut ran = false;
        appender
            .write_and_sync(&file, 1 << 20, &[&second], None, &mut || ran = true)
            .expect("second write");
        assert!(ran);
        let mut back = vec![0u8; (1 << 20) + 4096];
        file.read_exact_at(&mut back, 0).expect("read");
        assert!(back[..1 << 20].iter().all(|&b| b == 7));
        assert!(back[1 << 20..].iter().all(|&b| b == 9));
    }
}
