//! A small pool for a decode step's many short ops: helper threads that spin between jobs.
//!
//! A decode step on the CPU is ~200 ops of 5-50 µs. rayon's idle workers fall asleep after a few
//! microseconds without work, and waking one costs more than such an op (measured on the 2-core
//! dev machine: a 576x576 product took 28-34 µs in a decode step against 13 µs back to back).
//! Here the helpers spin for `SPIN` after each job before they park, so that the next op finds
//! them awake, and the caller never waits on a sleeping helper: tasks are claimed one at a time,
//! the caller claims them too, and it waits only for tasks a helper has already claimed. A helper
//! that wakes late finds the job done and goes back to waiting.
//!
//! The pool has one helper less than RAYON_NUM_THREADS (or than the cores), the caller making up
//! the count, started at the first job. One job runs at a time: a call made while another is in
//! flight (from a task, or from a second thread) runs its tasks on its own thread, as does a
//! call from inside a one-thread rayon pool (`ThreadPool::install` still chooses one thread).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long a helper spins after a job before it parks: longer than the gaps between a decode
/// step's ops (and between steps), short enough not to hold a core through a prompt's GEMMs,
/// which rayon runs.
const SPIN: Duration = Duration::from_micros(300);

type Task<'a> = &'a (dyn Fn(usize) + Sync);

struct Pool {
    helpers: usize,
    /// The job in flight: epoch in the high 32 bits, the next unclaimed task in the low 32.
    claim: AtomicU64,
    /// The job's task count and the address of its `Task` reference (valid while the job is in
    /// flight: the caller returns only after every claimed task has finished).
    tasks: AtomicUsize,
    job: AtomicUsize,
    /// Tasks finished by helpers in this job.
    done: AtomicUsize,
    /// Set when a task panicked on a helper; the caller then panics.
    panicked: AtomicBool,
    /// Held by the caller of the job in flight.
    busy: Mutex<()>,
    sleeping: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let helpers = super::configured_threads() - 1;
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            helpers,
            claim: AtomicU64::new(0),
            tasks: AtomicUsize::new(0),
            job: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            busy: Mutex::new(()),
            sleeping: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 0..helpers {
            // A helper that cannot be started leaves its share to the others and the caller.
            let _ = std::thread::Builder::new().name(format!("scalpel-spin-{i}")).spawn(move || pool.help());
        }
        pool
    })
}

/// Runs `f(0)`, ..., `f(n - 1)`, each once, on the caller and the pool's helpers; returns when
/// all have finished. A panic in a task is re-raised here.
pub fn run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    if n == 0 {
        return;
    }
    let pool = pool();
    let parallel = n > 1 && pool.helpers > 0 && n < u32::MAX as usize && rayon::current_num_threads() > 1;
    // A job that panicked poisons `busy` while it unwinds; the pool itself is sound then (every
    // claimed task had finished), so a poisoned lock is taken like a free one.
    let guard = match pool.busy.try_lock() {
        _ if !parallel => None,
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    let Some(_guard) = guard else {
        (0..n).for_each(f);
        return;
    };
    pool.run(n, f);
}

/// Calls `f(i, &mut items[i])` for every item, each once, as `run` does: each task has its item
/// to itself (its output slot, its rows of y), with no lock.
pub fn for_each_mut<T: Send>(items: &mut [T], f: &(dyn Fn(usize, &mut T) + Sync)) {
    let base = ItemsPtr(items.as_mut_ptr());
    run(items.len(), &|i| {
        // SAFETY: `run` calls every index below `items.len()` exactly once, so no two tasks reach
        // the same item, and `items` stays mutably borrowed until `run` has returned.
        let item = unsafe { &mut *base.at(i) };
        f(i, item)
    });
}

/// The items of `for_each_mut`, shared by its tasks.
struct ItemsPtr<T>(*mut T);

// SAFETY: each task dereferences a different item (see `for_each_mut`), and a `T: Send` may be
// used from the thread that runs its task.
unsafe impl<T: Send> Sync for ItemsPtr<T> {}

impl<T> ItemsPtr<T> {
    /// A method, so that closures capture the whole wrapper (which is Sync), not the raw field.
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

fn epoch(v: u64) -> u64 {
    v >> 32
}

impl Pool {
    /// The caller's side; `busy` is held.
    fn run(&self, n: usize, f: Task) {
        let epoch = epoch(self.claim.load(Ordering::Relaxed)) + 1;
        self.tasks.store(n, Ordering::Relaxed);
        self.job.store(&f as *const Task as usize, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.panicked.store(false, Ordering::Relaxed);
        // Publishes the job (SeqCst, paired with a parking helper's: either it sees this epoch
        // before it sleeps, or this sees it sleeping and wakes it).
        self.claim.store(epoch << 32, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            let _lock = self.park.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        // The caller's own tasks are caught too: unwinding out of here while a helper still runs
        // a task would free `f` under it.
        let mut mine = 0;
        let mut caught = None;
        while let Some(i) = self.claim_task(epoch, n) {
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                caught.get_or_insert(e);
            }
            mine += 1;
        }
        // Every task is claimed; wait for the helpers' (they are running, not asleep).
        while self.done.load(Ordering::Acquire) + mine < n {
            std::hint::spin_loop();
        }
        if let Some(e) = caught {
            resume_unwind(e);
        }
        if self.panicked.load(Ordering::Relaxed) {
            resume_unwind(Box::new("a task of the CPU spin pool panicked"));
        }
    }

    /// The next task of job `epoch`, if that job is still in flight and has one left.
    fn claim_task(&self, epoch: u64, n: usize) -> Option<usize> {
        let mut v = self.claim.load(Ordering::Acquire);
        loop {
            let i = (v & 0xffff_ffff) as usize;
            if self::epoch(v) != epoch || i >= n {
                return None;
            }
            match self.claim.compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(i),
                Err(now) => v = now,
            }
        }
    }

    /// A helper's loop: wait for a new job (spinning, then parked), take its tasks, repeat.
    fn help(&self) {
        let mut seen = epoch(self.claim.load(Ordering::Acquire));
        loop {
            let since = Instant::now();
            let mut spins = 0u32;
            let current = loop {
                let e = epoch(self.claim.load(Ordering::Acquire));
                if e != seen {
                    break e;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256) && since.elapsed() > SPIN {
                    let lock = self.park.lock().unwrap_or_else(|e| e.into_inner());
                    self.sleeping.fetch_add(1, Ordering::SeqCst);
                    let mut lock = lock;
                    while epoch(self.claim.load(Ordering::SeqCst)) == seen {
                        lock = self.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
                    }
                    self.sleeping.fetch_sub(1, Ordering::SeqCst);
                    drop(lock);
                } else {
                    std::hint::spin_loop();
                }
            };
            seen = current;
            // Read before claiming: a claim that succeeds proves the job was still `current`
            // when these were read (the caller writes the next job's only after this one's tasks
            // have all finished, and one of them is ours until we count it done).
            let n = self.tasks.load(Ordering::Relaxed);
            let job = self.job.load(Ordering::Relaxed);
            while let Some(i) = self.claim_task(current, n) {
                // SAFETY: `job` is the address of the caller's `Task` reference for job
                // `current` (see above), and the caller keeps it alive until `done` counts this
                // task.
                let f: Task = unsafe { *(job as *const Task) };
                if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.done.fetch_add(1, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_over_many_jobs() {
        for n in [1, 2, 3, 7, 64, 1000] {
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{n} tasks");
            }
        }
    }

    #[test]
    fn for_each_mut_hands_every_item_to_one_task() {
        for n in [0, 1, 5, 300] {
            let mut items: Vec<(usize, usize)> = (0..n).map(|i| (i, 0)).collect();
            for_each_mut(&mut items, &|i, item| {
                assert_eq!(item.0, i);
                item.1 += 1;
            });
            assert!(items.iter().all(|&(_, hits)| hits == 1), "{n} items");
        }
    }

    #[test]
    fn nested_and_concurrent_jobs_run_inline() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        run(4, &|_| {
                            run(5, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 100 * 4 * 5);
    }

    #[test]
    fn a_job_after_the_helpers_parked_still_runs() {
        run(8, &|_| ());
        std::thread::sleep(SPIN * 20);
        let count = AtomicUsize::new(0);
        run(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn a_panicking_task_panics_the_caller() {
        let r = catch_unwind(|| run(64, &|i| assert!(i != 40, "task 40")));
        assert!(r.is_err());
        // The pool still works, and still in parallel: a task waits until a helper has taken
        // the other one (run inline, on one thread, it never would). Other tests may hold the
        // pool at the moment (a call then runs inline), hence several tries.
        if pool().helpers > 0 && rayon::current_num_threads() > 1 {
            let parallel = (0..20).any(|_| {
                // Two tasks inside at once prove two threads.
                let inside = AtomicUsize::new(0);
                let both = AtomicBool::new(false);
                run(2, &|_| {
                    inside.fetch_add(1, Ordering::SeqCst);
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(200) {
                        if inside.load(Ordering::SeqCst) == 2 {
                            both.store(true, Ordering::SeqCst);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
                both.load(Ordering::SeqCst)
            });
            assert!(parallel, "after a panic the pool ran its tasks on one thread");
        }
    }
}
