//! Thread pool for kernels (`WATTLE_THREADS`, default: all cores).
//!
//! A persistent pool: `threads - 1` workers plus the calling thread. Workers spin for a short
//! while after each job (a decode matvec is well under a millisecond, so waking a parked thread
//! or spawning one per call would be visible), then park on a condition variable.
//!
//! A job is broadcast to the first `min(tasks, threads) - 1` workers; each one claims task
//! indices from a shared counter, and the caller claims too. The caller returns only after every
//! enlisted worker has acknowledged the job, so a job never outlives the borrowed closure.
//!
//! Callers from several threads are serialised by a mutex; a call from inside a task (a worker or
//! the caller while it runs tasks) runs its tasks inline on the current thread, so nesting cannot
//! deadlock. A panic in a task is caught and re-raised on the calling thread once all enlisted
//! workers are done.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker (or a caller waiting for workers) spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Low bits of the epoch word: the number of workers enlisted for the current job.
const ENLIST_BITS: u32 = 16;
/// Largest pool size (the enlisted count must fit in [`ENLIST_BITS`]).
const MAX_THREADS: usize = (1 << ENLIST_BITS) - 1;
/// Epoch value that tells workers to exit.
const SHUTDOWN: u64 = u64::MAX;

thread_local! {
    /// True on pool workers and on a caller while it runs tasks: nested `run` calls go inline.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// One parallel call: the closure and the task counter, living on the caller's stack.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    /// Enlisted workers that have finished with this job.
    acks: AtomicUsize,
    /// The first panic payload of a task, re-raised by the caller.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job<'_> {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= self.tasks {
                return;
            }
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| (self.f)(t))) {
                // Skip the remaining tasks; the caller re-raises the panic.
                self.next.store(self.tasks, Ordering::Relaxed);
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(p);
            }
        }
    }
}

/// State shared by the caller and the workers.
struct Shared {
    /// `(sequence << ENLIST_BITS) | enlisted`, bumped once per job; [`SHUTDOWN`] to exit.
    epoch: AtomicU64,
    /// The current job, valid while enlisted workers have not acknowledged it.
    job: AtomicPtr<Job<'static>>,
    /// Workers currently asleep (or about to sleep) on `cv`.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    cv: Condvar,
}

/// A set of worker threads that runs `tasks` closures in parallel.
pub struct ThreadPool {
    threads: usize,
    shared: Arc<Shared>,
    /// Serialises callers; holds the sequence number of the last job.
    caller: Mutex<u64>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl ThreadPool {
    /// A pool of `threads` workers (at least 1; the calling thread counts as one).
    ///
    /// Starts `threads - 1` OS threads that live until the pool is dropped. If the OS refuses
    /// to start a thread, the pool is smaller.
    pub fn new(threads: usize) -> Self {
        let wanted = threads.clamp(1, MAX_THREADS);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(wanted - 1);
        for index in 0..wanted - 1 {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("wattle-{index}"))
                .spawn(move || worker(&s, index));
            match spawned {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        ThreadPool {
            threads: workers.len() + 1,
            shared,
            caller: Mutex::new(0),
            workers,
        }
    }

    /// The process-wide pool, sized by `WATTLE_THREADS` or the number of cores.
    pub fn global() -> &'static ThreadPool {
        static POOL: OnceLock<ThreadPool> = OnceLock::new();
        POOL.get_or_init(|| ThreadPool::new(default_threads()))
    }

    /// Number of workers, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(task)` for every `task` in `0..tasks`, spread over the workers; returns when all are done.
    ///
    /// Safe to call from several threads at once (callers take turns) and from inside a task
    /// (the nested call runs inline). A panic in `f` is re-raised here after all workers stopped.
    pub fn run<F: Fn(usize) + Sync>(&self, tasks: usize, f: F) {
        let enlisted = self.threads.min(tasks).saturating_sub(1);
        if enlisted == 0 || IN_POOL.with(Cell::get) {
            (0..tasks).for_each(&f);
            return;
        }
        let mut seq = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let job = Job {
            f: &f,
            tasks,
            next: AtomicUsize::new(0),
            acks: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        let ptr: *const Job<'_> = &job;
        // Erase the closure's lifetime so workers can see the job. Workers dereference the
        // pointer only between reading this job's epoch and incrementing `acks`, and this
        // function does not return (nor unwind: `Job::work` catches panics) before every
        // enlisted worker has incremented `acks`, so the job outlives every use.
        self.shared
            .job
            .store(ptr.cast::<Job<'static>>().cast_mut(), Ordering::Relaxed);
        *seq = (*seq + 1) & (u64::MAX >> (ENLIST_BITS + 1));
        let epoch = (*seq << ENLIST_BITS) | enlisted as u64;
        self.shared.epoch.store(epoch, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }

        IN_POOL.with(|c| c.set(true));
        job.work();
        IN_POOL.with(|c| c.set(false));

        let start = Instant::now();
        let mut spins = 0u32;
        while job.acks.load(Ordering::Acquire) < enlisted {
            spins = spins.wrapping_add(1);
            if spins & 63 != 0 || start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        drop(seq);
        let payload = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = payload {
            resume_unwind(p);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _g = self.caller.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.epoch.store(SHUTDOWN, Ordering::SeqCst);
            let _s = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Body of worker `index`: wait for a new epoch, help with the job if enlisted, acknowledge.
fn worker(s: &Shared, index: usize) {
    IN_POOL.with(|c| c.set(true));
    let mut seen = 0u64;
    loop {
        let epoch = wait_for_epoch(s, seen);
        if epoch == SHUTDOWN {
            return;
        }
        seen = epoch;
        let enlisted = (epoch & ((1 << ENLIST_BITS) - 1)) as usize;
        if index >= enlisted {
            continue;
        }
        let ptr = s.job.load(Ordering::Acquire);
        // SAFETY: `ptr` was stored before this epoch (the SeqCst epoch store/load orders it) and
        // points to the caller's `Job`, which stays alive until this worker, being enlisted,
        // increments `acks` below; the reference is not used after that.
        let job = unsafe { &*ptr };
        job.work();
        job.acks.fetch_add(1, Ordering::Release);
    }
}

/// Spins for [`SPIN`], then sleeps, until the epoch differs from `seen`; returns it.
fn wait_for_epoch(s: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = s.epoch.load(Ordering::Acquire);
        if e != seen {
            return e;
        }
        spins = spins.wrapping_add(1);
        if spins & 63 != 0 || start.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let mut g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = s.epoch.load(Ordering::SeqCst);
            if e != seen {
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                return e;
            }
            g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// `WATTLE_THREADS` if set to a positive number, else the available parallelism.
pub fn default_threads() -> usize {
    std::env::var("WATTLE_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
