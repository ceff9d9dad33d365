//! Work on every core, results in order, memory bounded by a window: the verifier's
//! segments are independent to check but must join the tree one after the other.
//!
//! The calling thread draws jobs (lazily, in order: drawing may open a file), worker
//! threads run them, and the calling thread consumes each output in the order the jobs were
//! drawn. At most `threads + 1` jobs are drawn and not yet consumed at any time (the one
//! being consumed, and one running on each worker), so memory is bounded by the window
//! whatever the number of jobs. The first failed `consume` stops the run: no job is drawn
//! after it, the running ones are told to stop, and its error is returned; a failure in a
//! later job is never seen before an earlier job's, so the first failure in order wins.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;

/// A job and where its output goes (a one-slot channel: a worker never waits to hand over).
type Ticket<J, O> = (J, SyncSender<O>);

/// Runs `work` over `jobs` on `threads` threads and hands every output to `consume` in the
/// order of `jobs`. With one thread there is no worker: each job runs on the calling thread
/// just before its output is consumed (the sequential verifier). `work` sees a flag that
/// is set once the run has failed: a long job may check it and return early (its output is
/// then never consumed).
pub(crate) fn in_order<J, O, E>(
    threads: NonZeroUsize,
    jobs: impl Iterator<Item = J>,
    work: impl Fn(J, &AtomicBool) -> O + Sync,
    mut consume: impl FnMut(O) -> Result<(), E>,
) -> Result<(), E>
where
    J: Send,
    O: Send,
{
    let stop = AtomicBool::new(false);
    if threads.get() == 1 {
        for job in jobs {
            consume(work(job, &stop))?;
        }
        return Ok(());
    }
    let window = threads.get() + 1;
    let (to_workers, from_main) = mpsc::sync_channel::<Ticket<J, O>>(window);
    let from_main = Mutex::new(from_main);
    std::thread::scope(|s| {
        for _ in 0..threads.get() {
            s.spawn(|| worker(&from_main, &work, &stop));
        }
        let mut jobs = jobs;
        let mut pending: VecDeque<Receiver<O>> = VecDeque::with_capacity(window);
        let result = loop {
            // Top the window up; the output being consumed left room for one more.
            while pending.len() < window {
                let Some(job) = jobs.next() else { break };
                let (tx, rx) = mpsc::sync_channel(1);
                if to_workers.send((job, tx)).is_err() {
                    unreachable!("the workers live as long as the scope");
                }
                pending.push_back(rx);
            }
            let Some(next) = pending.pop_front() else {
                break Ok(());
            };
            // A worker that panicked dropped its sender; the scope re-raises its panic.
            let Ok(out) = next.recv() else {
                panic!("a verifier worker panicked");
            };
            if let Err(e) = consume(out) {
                break Err(e);
            }
        };
        // Running jobs may stop early; waiting workers see the queue closed and return.
        stop.store(true, Ordering::Relaxed);
        drop(to_workers);
        drop(pending);
        result
    })
}

/// A worker: takes the next job, runs it, hands the output back, until the queue closes.
fn worker<J, O>(
    from_main: &Mutex<Receiver<Ticket<J, O>>>,
    work: &(impl Fn(J, &AtomicBool) -> O + Sync),
    stop: &AtomicBool,
) {
    loop {
        // The lock is held only while waiting for a job, never while working on one.
        let next = match from_main.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return, // another worker panicked holding it; the scope reports that
        };
        let Ok((job, reply)) = next else {
            return;
        };
        // The run may have failed meanwhile: then nobody waits for this output.
        let _ = reply.send(work(job, stop));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Condvar, Mutex};

    fn n(k: usize) -> NonZeroUsize {
        NonZeroUsize::new(k).expect("non-zero")
    }

    /// Counts jobs drawn and not yet consumed, and the most there ever were.
    #[derive(Default)]
    struct Alive {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    impl Alive {
        fn drawn(&self) {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
        }
        fn consumed(&self) {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Outputs arrive in job order even when later jobs finish first, and no more than
    /// `threads + 1` jobs are ever drawn and not yet consumed, however many jobs there are.
    #[test]
    fn outputs_in_order_and_the_window_bounds_jobs_in_flight() {
        for threads in [1, 2, 4, 8] {
            let alive = Alive::default();
            let mut seen = Vec::new();
            let jobs = (0..1000usize).inspect(|_| alive.drawn());
            in_order(
                n(threads),
                jobs,
                |i, _stop| {
                    assert!(alive.now.load(Ordering::SeqCst) <= threads + 1);
                    // Uneven work, so that later jobs often finish first.
                    let mut x = i as u64;
                    for _ in 0..(i * 7919) % 20_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    (i * 2, x)
                },
                |(out, _)| {
                    seen.push(out);
                    alive.consumed();
                    Ok::<(), ()>(())
                },
            )
            .expect("no failure");
            assert_eq!(seen, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
            let max = alive.max.load(Ordering::SeqCst);
            assert!(
                max <= threads + 1,
                "{threads} threads: {max} jobs in flight"
            );
            if threads > 1 {
                assert_eq!(max, threads + 1, "{threads} threads: the window fills");
            }
        }
    }

    /// Job 0 finishing last still comes out first: later workers run ahead, but only
    /// within the window, and their outputs wait for it.
    #[test]
    fn a_slow_first_job_holds_the_window_not_the_order() {
        let threads = 4;
        let alive = Alive::default();
        let finished = (Mutex::new(0usize), Condvar::new());
        let mut seen = Vec::new();
        in_order(
            n(threads),
            (0..50usize).inspect(|_| alive.drawn()),
            |i, _stop| {
                let (lock, cv) = &finished;
                let mut f = lock.lock().expect("lock");
                if i == 0 {
                    // Every other job that fits in the window finishes before this one.
                    while *f < threads - 1 {
                        f = cv.wait(f).expect("wait");
                    }
                }
                *f += 1;
                cv.notify_all();
                i
            },
            |out| {
                seen.push(out);
                alive.consumed();
                Ok::<(), ()>(())
            },
        )
        .expect("no failure");
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert!(alive.max.load(Ordering::SeqCst) <= threads + 1);
    }

    /// The first failing output in order is the one returned, even if a later job failed
    /// (and finished) first; nothing is drawn past the window after it, and running jobs
    /// see the stop flag.
    #[test]
    fn the_first_failure_in_order_wins_and_stops_drawing() {
        for threads in [1, 3] {
            let drawn = AtomicUsize::new(0);
            let saw_stop = AtomicBool::new(false);
            let jobs = (0..10_000usize).inspect(|_| {
                drawn.fetch_add(1, Ordering::SeqCst);
            });
            let result = in_order(
                n(threads),
                jobs,
                |i, stop| {
                    if i > 20 && i < 20 + threads {
                        // Running when the run fails: wait for the flag (bounded by the
                        // consumer failing on job 20, which is already in the window).
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::yield_now();
                        }
                        saw_stop.store(true, Ordering::SeqCst);
                    }
                    i
                },
                |i| match i {
                    20 => Err(format!("job {i}")),
                    _ => Ok(()),
                },
            );
            assert_eq!(result, Err("job 20".to_string()));
            let drawn = drawn.load(Ordering::SeqCst);
            assert!(drawn <= 21 + threads, "{threads} threads: {drawn} drawn");
            assert_eq!(saw_stop.load(Ordering::SeqCst), threads > 1);
        }
    }
}
