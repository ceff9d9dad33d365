//! Work on every core, results in order, memory bounded: the verifier's segments are
//! independent to check but must join the tree one after the other.
//!
//! The calling thread draws jobs (lazily, in order: drawing may open a file), worker
//! threads run them, and the calling thread consumes what each job hands over (its parts,
//! as the job makes them) in the order the jobs were drawn. So the calling thread works on
//! the oldest job's parts while that job still runs, instead of waiting for its end; the
//! parts of later jobs wait in their own queues.
//!
//! Two limits bound what waits, whatever the number of jobs or their sizes:
//! - At most `2 * threads + 1` jobs are drawn and not yet consumed to their end: one on
//!   each worker, and as many again finished or queued, so that a worker that finishes
//!   small jobs behind a large one finds more to do (with only `threads + 1`, on the
//!   footprint corpus, chunks of the open segment finished behind the last sealed segment
//!   left one of two cores idle for 80 of the run's 500 ms).
//! - A worker ahead of the calling thread (on any job but the oldest) waits while the
//!   parts handed over and not yet consumed weigh more than `waiting_bytes_max`, so
//!   memory does not grow with the size of a job. The oldest job's worker never waits:
//!   the calling thread is consuming its parts.
//!
//! The first failed `consume` stops the run: no job is drawn after it, the running ones
//! are told to stop, and its error is returned; a later job's parts are never seen before
//! an earlier job's, so the first failure in order wins.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};

/// How many threads work, and how much of what they hand over may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) threads: NonZeroUsize,
    /// Parts handed over by jobs ahead of the oldest and not yet consumed weigh at most
    /// this, plus one part per worker.
    pub(crate) waiting_bytes_max: usize,
}

/// A job's parts, each with its weight; `None` after the last (a queue that closes
/// without it lost its worker to a panic).
type Parts<P> = Option<(P, usize)>;

/// A job, its place in the order, and where its parts go.
type Ticket<J, P> = (u64, J, Sender<Parts<P>>);

/// Runs `work` over `jobs` on `window.threads` threads and hands every part it emits to
/// `consume`, job after job in the order of `jobs`, each job's parts in the order it
/// emitted them; `weigh` says what a part costs to keep. With one thread there is no
/// worker: each job runs on the calling thread and its parts are consumed as it emits them
/// (the sequential verifier). `work` sees a flag that is set once the run has failed: a
/// long job may check it and return early (what it emits then is never consumed).
pub(crate) fn in_order<J, P, E>(
    window: Window,
    jobs: impl Iterator<Item = J>,
    work: impl Fn(J, &mut dyn FnMut(P), &AtomicBool) + Sync,
    weigh: impl Fn(&P) -> usize + Sync,
    mut consume: impl FnMut(P) -> Result<(), E>,
) -> Result<(), E>
where
    J: Send,
    P: Send,
{
    let stop = AtomicBool::new(false);
    let threads = window.threads.get();
    if threads == 1 {
        let mut failed = None;
        for job in jobs {
            work(
                job,
                &mut |part| {
                    if failed.is_none() {
                        if let Err(e) = consume(part) {
                            failed = Some(e);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                },
                &stop,
            );
            if let Some(e) = failed {
                return Err(e);
            }
        }
        return Ok(());
    }
    let jobs_max = 2 * threads + 1;
    let (to_workers, from_main) = mpsc::sync_channel::<Ticket<J, P>>(jobs_max);
    let from_main = Mutex::new(from_main);
    let flow = Flow {
        state: Mutex::new(FlowState {
            oldest: 0,
            waiting_bytes: 0,
        }),
        moved: Condvar::new(),
        waiting_bytes_max: window.waiting_bytes_max,
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| worker(&from_main, &work, &weigh, &flow, &stop));
        }
        let mut jobs = jobs.zip(0u64..);
        let mut pending: VecDeque<(u64, Receiver<Parts<P>>)> = VecDeque::with_capacity(jobs_max);
        let result = 'run: loop {
            // Top the window up; the job consumed last left room for one more.
            while pending.len() < jobs_max {
                let Some((job, seq)) = jobs.next() else { break };
                let (tx, rx) = mpsc::channel();
                if to_workers.send((seq, job, tx)).is_err() {
                    unreachable!("the workers' queue lives as long as the scope");
                }
                pending.push_back((seq, rx));
            }
            let Some((seq, oldest)) = pending.pop_front() else {
                break Ok(());
            };
            flow.lock().oldest = seq;
            flow.moved.notify_all();
            loop {
                match oldest.recv() {
                    Ok(Some((part, weight))) => {
                        let consumed = consume(part);
                        flow.lock().waiting_bytes -= weight;
                        flow.moved.notify_all();
                        if let Err(e) = consumed {
                            break 'run Err(e);
                        }
                    }
                    Ok(None) => break,
                    // The worker dropped the queue without its end: the scope re-raises
                    // its panic.
                    Err(_) => panic!("a verifier worker panicked"),
                }
            }
        };
        // Running jobs may stop early, waiting ones wake to see it, and idle workers see
        // the queue closed and return.
        stop.store(true, Ordering::Relaxed);
        // A worker between its look at the flag and its wait holds the lock: once we hold
        // it, every such worker waits, and the signal reaches it.
        drop(flow.lock());
        flow.moved.notify_all();
        drop(to_workers);
        drop(pending);
        result
    })
}

/// What the workers ahead of the calling thread wait on.
struct Flow {
    state: Mutex<FlowState>,
    /// Signalled when the oldest job changes, a part is consumed, or the run stops.
    moved: Condvar,
    waiting_bytes_max: usize,
}

struct FlowState {
    /// The job whose parts are being consumed.
    oldest: u64,
    /// The weight of the parts handed over and not yet consumed.
    waiting_bytes: usize,
}

impl Flow {
    fn lock(&self) -> MutexGuard<'_, FlowState> {
        // A panic while holding it (no code here panics) is re-raised by the scope.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a part over for job `seq`, then waits while that job is ahead of the oldest
    /// and too much waits to be consumed.
    fn hand_over<P>(
        &self,
        seq: u64,
        part: P,
        weight: usize,
        parts: &Sender<Parts<P>>,
        stop: &AtomicBool,
    ) {
        let mut st = self.lock();
        st.waiting_bytes += weight;
        drop(st);
        if parts.send(Some((part, weight))).is_err() {
            // The run failed: nobody will consume it.
            self.lock().waiting_bytes -= weight;
            return;
        }
        let mut st = self.lock();
        while st.oldest != seq
            && st.waiting_bytes > self.waiting_bytes_max
            && !stop.load(Ordering::Relaxed)
        {
            st = self.moved.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A worker: takes the next job, runs it, hands its parts over, until the queue closes.
fn worker<J, P>(
    from_main: &Mutex<Receiver<Ticket<J, P>>>,
    work: &(impl Fn(J, &mut dyn FnMut(P), &AtomicBool) + Sync),
    weigh: &(impl Fn(&P) -> usize + Sync),
    flow: &Flow,
    stop: &AtomicBool,
) {
    loop {
        // The lock is held only while waiting for a job, never while working on one.
        let next = match from_main.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return, // another worker panicked holding it; the scope reports that
        };
        let Ok((seq, job, parts)) = next else {
            return;
        };
        let mut hand_over = |part| {
            let weight = weigh(&part);
            flow.hand_over(seq, part, weight, &parts, stop)
        };
        work(job, &mut hand_over, stop);
        let _ = parts.send(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn window(threads: usize, waiting_bytes_max: usize) -> Window {
        Window {
            threads: NonZeroUsize::new(threads).expect("non-zero"),
            waiting_bytes_max,
        }
    }

    /// Counts jobs drawn and not yet consumed to their end, and the most there ever were.
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

    /// Parts arrive job after job, each job's in its order, even when later jobs finish
    /// first; and no more than `2 * threads + 1` jobs are ever drawn and not yet consumed,
    /// however many jobs there are.
    #[test]
    fn parts_in_order_and_the_window_bounds_jobs_in_flight() {
        for threads in [1, 2, 4, 8] {
            let alive = Alive::default();
            let mut seen = Vec::new();
            let jobs = (0..1000usize).inspect(|_| alive.drawn());
            in_order(
                window(threads, usize::MAX),
                jobs,
                |i, emit, _stop| {
                    assert!(alive.now.load(Ordering::SeqCst) <= 2 * threads + 1);
                    for part in 0..3 {
                        // Uneven work, so that later jobs often finish first.
                        let mut x = i as u64;
                        for _ in 0..(i * 7919 + part * 31) % 7_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                        emit((i, part, x));
                    }
                },
                |_| 0,
                |(i, part, _)| {
                    seen.push((i, part));
                    if part == 2 {
                        alive.consumed();
                    }
                    Ok::<(), ()>(())
                },
            )
            .expect("no failure");
            let want: Vec<(usize, usize)> = (0..1000)
                .flat_map(|i| (0..3).map(move |p| (i, p)))
                .collect();
            assert_eq!(seen, want, "{threads} threads");
            let max = alive.max.load(Ordering::SeqCst);
            if threads > 1 {
                assert_eq!(max, 2 * threads + 1, "{threads} threads: the window fills");
            } else {
                assert_eq!(max, 1, "one thread: one job at a time");
            }
        }
    }

    /// The oldest job's parts are consumed while it still runs: job 0 waits, after its
    /// first part, until that part was consumed (this would never end if parts waited
    /// for their job's end), and meanwhile the later jobs in the window run and wait.
    #[test]
    fn the_oldest_jobs_parts_are_consumed_while_it_runs() {
        for threads in [1, 3] {
            let consumed_first = AtomicBool::new(false);
            let mut seen = Vec::new();
            in_order(
                window(threads, usize::MAX),
                0..20usize,
                |i, emit, _stop| {
                    emit((i, 0));
                    if i == 0 {
                        while !consumed_first.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                    emit((i, 1));
                },
                |_| 0,
                |part| {
                    if part == (0, 0) {
                        consumed_first.store(true, Ordering::SeqCst);
                    }
                    seen.push(part);
                    Ok::<(), ()>(())
                },
            )
            .expect("no failure");
            let want: Vec<(usize, usize)> = (0..20).flat_map(|i| [(i, 0), (i, 1)]).collect();
            assert_eq!(seen, want);
        }
    }

    /// Workers ahead of the oldest job stop handing over once what waits weighs more
    /// than the limit: while job 0 holds back (after one part), jobs 1.. hand over 100
    /// parts each and would all be waiting; they never get more than one part each past
    /// the limit. Job 0 itself is never held back.
    #[test]
    fn waiting_parts_stay_within_the_limit() {
        let threads = 4;
        let limit = 50;
        let emitted = AtomicUsize::new(0);
        let consumed = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut seen = 0usize;
        in_order(
            window(threads, limit),
            0..40usize,
            |i, emit, _stop| {
                for part in 0..100 {
                    emitted.fetch_add(1, Ordering::SeqCst);
                    emit((i, part));
                    let waiting = emitted.load(Ordering::SeqCst) - consumed.load(Ordering::SeqCst);
                    most.fetch_max(waiting, Ordering::SeqCst);
                    if i == 0 && part == 0 {
                        // Hold back until the others have reached the limit (they do: it is
                        // below what they have to hand over).
                        while emitted.load(Ordering::SeqCst) < limit {
                            std::thread::yield_now();
                        }
                    }
                }
            },
            |_| 1,
            |_| {
                consumed.fetch_add(1, Ordering::SeqCst);
                seen += 1;
                Ok::<(), ()>(())
            },
        )
        .expect("no failure");
        assert_eq!(seen, 40 * 100);
        // The oldest job's own parts (handed over ahead of the consumer, but never held)
        // and one part per worker past the limit.
        let most = most.load(Ordering::SeqCst);
        assert!(most <= limit + 100 + threads, "{most} parts waited");
    }

    /// The first failing part in order is the one returned, even if a later job failed
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
                window(threads, usize::MAX),
                jobs,
                |i, emit, stop| {
                    if i > 20 && i < 20 + threads {
                        // Running when the run fails: wait for the flag (bounded by the
                        // consumer failing on job 20, which is already in the window).
                        emit(Err(format!("later job {i}")));
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::yield_now();
                        }
                        saw_stop.store(true, Ordering::SeqCst);
                    }
                    emit(Ok(i));
                    if i == 20 {
                        emit(Err(format!("job {i}")));
                    }
                },
                |_| 0,
                |part| part.map(|_| ()),
            );
            assert_eq!(result, Err("job 20".to_string()));
            let drawn = drawn.load(Ordering::SeqCst);
            assert!(
                drawn <= 21 + 2 * threads,
                "{threads} threads: {drawn} drawn"
            );
            assert_eq!(saw_stop.load(Ordering::SeqCst), threads > 1);
        }
    }
}
