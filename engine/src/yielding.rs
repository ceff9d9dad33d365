//! Background threads (sealer, checkpointer, replicator) give their CPU away every
//! [`YIELD_AFTER`] of work.
//!
//! Why: on the machine class we measure on (2 vCPUs, `PREEMPT_NONE`, HZ=250), a thread
//! that wakes does not take the CPU from a running one before the next scheduler tick,
//! whatever their priorities. `perf sched timehist` showed the sequencer, woken by its
//! sync's completion, waiting 3-5 ms behind a nice-10 sealer compressing a block, a
//! replicator copying a 2 MiB tile bundle into the page cache in one `write`, or the
//! checkpointer sorting a leaf-index run: that wait sat in front of acks and made most of
//! the ack latency tail. Lower priority alone (nice 10, even `SCHED_IDLE`) did not help,
//! since the decision to switch waits for the tick either way.
//!
//! So background loops do their work in pieces (system calls of at most
//! [`PIECE_BYTES`], a block, a few thousand entries) and call [`point`] between them:
//! once the thread has run `YIELD_AFTER` since it last yielded, it yields, and a woken
//! sequencer or network thread runs at once. With nothing else runnable a yield returns
//! immediately, so a background thread on an idle machine loses nothing.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How long a background thread runs before it offers the CPU: well under the sync
/// latency we ack within (~0.2-0.5 ms), and long enough that the yields cost nothing
/// measurable (one system call per quarter millisecond).
pub(crate) const YIELD_AFTER: Duration = Duration::from_micros(250);

/// The largest single read or write a background thread makes: copying this much
/// between the page cache and memory takes well under `YIELD_AFTER`, and a system call
/// cannot be interrupted by a yield.
pub(crate) const PIECE_BYTES: usize = 256 << 10;

thread_local! {
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Yields the CPU if this thread has run `YIELD_AFTER` since it last did (or since its
/// first call). Cheap enough to call between pieces of work of a few microseconds.
/// Only background threads call it: network threads yielding per frame (tried) handed
/// the CPU to background work as often as to the sequencer, and the ack p99 got worse.
pub(crate) fn point() {
    SINCE.with(|since| {
        let now = Instant::now();
        match since.get() {
            Some(t) if now.duration_since(t) < YIELD_AFTER => {}
            Some(_) => {
                std::thread::yield_now();
                since.set(Some(Instant::now()));
            }
            None => since.set(Some(now)),
        }
    })
}

/// Calls [`point`] every `every` calls: for loops over small items (records, entries),
/// where reading the clock on each would cost more than the item.
pub(crate) struct Every {
    every: u32,
    left: u32,
}

impl Every {
    pub(crate) fn new(every: u32) -> Every {
        assert!(every > 0, "yield interval must be positive");
        Every { every, left: every }
    }

    #[inline]
    pub(crate) fn tick(&mut self) {
        self.left -= 1;
        if self.left == 0 {
            self.left = self.every;
            point();
        }
    }
}

/// `read_exact_at` in pieces of at most `PIECE_BYTES`, with a [`point`] after each.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut at = offset;
    for piece in buf.chunks_mut(PIECE_BYTES) {
        file.read_exact_at(piece, at)?;
        at += piece.len() as u64;
        point();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_exactly_the_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * PIECE_BYTES + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).expect("write");
        let f = File::open(&path).expect("open");
        let mut got = vec![0u8; data.len() - 1000];
        read_exact_at(&f, &mut got, 1000).expect("read");
        assert_eq!(got, data[1000..]);
        // Past the end is an error, as with one read.
        let mut over = vec![0u8; 10];
        assert!(read_exact_at(&f, &mut over, data.len() as u64 - 5).is_err());
    }

    #[test]
    fn every_counts_calls() {
        let mut e = Every::new(3);
        for _ in 0..7 {
            e.tick();
        }
        assert_eq!(e.left, 2);
    }
}
