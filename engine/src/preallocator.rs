//! The preallocator: keeps one zero-filled segment file ready ahead of the writer, made
//! by zeroing a recycled (sealed, retired) open segment in place when no reader holds it,
//! or by creating a new one. A failure is reported in `Health` (disk full is typed) and
//! retried every second; the sequencer waits at a rotation, never the producers' acks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::health::Fault;
use crate::shared::Shared;

/// Sealed open segments, renamed to `recycle-*.old`, for the preallocator to zero in
/// place. Each keeps its open handle: while a reader holds another, it is not reused.
pub(crate) struct Recycled {
    list: Mutex<Vec<(PathBuf, Option<Arc<std::fs::File>>)>>,
}

impl Recycled {
    /// What recovery found in `segments/` (no reader holds those).
    pub fn new(found: Vec<PathBuf>) -> Recycled {
        Recycled {
            list: Mutex::new(found.into_iter().map(|p| (p, None)).collect()),
        }
    }

    /// Hands a sealed open segment to the preallocator (see `take`).
    pub fn push(&self, path: PathBuf, file: Arc<std::fs::File>) {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((path, Some(file)));
    }

    /// Moves a recycled segment no reader holds open to `partial`; `None` if there is none.
    fn take(&self, partial: &std::path::Path) -> Option<()> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        // The sealer's handle is the only one left once no reader is still inside the file
        // (readers clone the segment's handle for as long as they read it).
        let i = list
            .iter()
            .position(|(_, f)| f.as_ref().is_none_or(|f| Arc::strong_count(f) == 1))?;
        let (path, _) = list.swap_remove(i);
        drop(list);
        match std::fs::rename(&path, partial) {
            Ok(()) => Some(()),
            Err(e) => {
                tracing::warn!("cannot recycle {}: {e}", path.display());
                None
            }
        }
    }
}

/// Keeps one zero-filled segment file ready ahead of the writer.
pub(crate) fn run(
    shared: Arc<Shared>,
    existing: Vec<PathBuf>,
    mut n: u64,
    tx: crossbeam_channel::Sender<PathBuf>,
) {
    let dir = shared.segments_dir();
    let bytes = shared.config.segment_bytes;
    let mut ready: Vec<PathBuf> = existing
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.len() == bytes)
                .unwrap_or(false)
                || std::fs::remove_file(p).is_err()
        })
        .collect();
    loop {
        crate::config::FaultHooks::maybe_panic(shared.config.faults.as_ref(), "auditlog-prealloc");
        let path = match ready.pop() {
            Some(p) => p,
            None => {
                loop {
                    let path = dir.join(format!("prealloc-{n:06}.tmp"));
                    let partial = dir.join(format!("prealloc-{n:06}.partial"));
                    n += 1;
                    let _ = std::fs::remove_file(&partial);
                    // A sealed open segment is zeroed in place rather than unlinked: freeing
                    // 256 MiB (with online discard) stalled the disk under the sequencer's
                    // syncs, and writing over allocated blocks needs no allocation either.
                    let made = match shared.recycled.take(&partial) {
                        Some(()) => crate::io::zero_in_place(&partial, bytes),
                        None => crate::io::create_zeroed(&partial, bytes),
                    }
                    .and_then(|()| std::fs::rename(&partial, &path));
                    match made {
                        Ok(()) => {
                            shared.health.set_prealloc_error(None);
                            break path;
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&partial);
                            let why = if e.raw_os_error() == Some(libc::ENOSPC) {
                                Fault::disk_full(format!(
                                    "cannot zero-fill the next {bytes}-byte segment in {}",
                                    dir.display()
                                ))
                            } else {
                                Fault::other(format!(
                                    "cannot prepare the next segment in {}: {e}",
                                    dir.display()
                                ))
                            };
                            tracing::warn!("{}", why.text());
                            shared.health.set_prealloc_error(Some(why));
                            if shared.health.shutting_down() {
                                return;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            }
        };
        let mut item = path;
        loop {
            match tx.send_timeout(item, Duration::from_millis(200)) {
                Ok(()) => break,
                Err(crossbeam_channel::SendTimeoutError::Timeout(p)) => {
                    if shared.health.shutting_down() {
                        return;
                    }
                    item = p;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
            }
        }
    }
}
