//! Thread pool for kernels (`WATTLE_THREADS`, default: all cores).
//!
//! A persistent pool: `threads - 1` workers plus the calling thread. Workers spin for a short
//! while after each job (a decode matvec is well under a millisecond, so waking a parked thread
//! or spawning one per call would be visible), then park on a condition variable.
//!
//! A job is published through one atomic gate word (sequence number, closed flag, count of
//! workers inside). Up to `min(tasks, threads) - 1` workers join it while it is open and claim task
//! indices from a shared counter; the caller claims too. When the caller has no task left to
//! claim it closes the gate and waits only for the workers that joined, never for one that has not
//! woken up yet (on a busy machine a descheduled worker would otherwise stall every call). The
//! borrowed closure therefore outlives every use.
//!
//! Callers from several threads are serialised by a mutex; a call from inside a task (a worker or
//! the caller while it runs tasks) runs its tasks inline on the current thread, so nesting cannot
//! deadlock. A panic in a task is caught and re-raised on the calling thread once the workers that
//! joined are done.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker (or a caller waiting for workers) spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// Gate word: `seq << SEQ_SHIFT | CLOSED? | inside`.
const SEQ_SHIFT: u32 = 32;
/// Set once the caller stops admitting workers to the current job.
const CLOSED: u64 = 1 << 31;
/// Bits counting the workers inside the current job.
const INSIDE: u64 = CLOSED - 1;
/// Gate value that tells workers to exit.
const SHUTDOWN: u64 = u64::MAX;
/// Largest pool size.
const MAX_THREADS: usize = 1 << 16;

thread_local! {
    /// True on pool workers and on a caller while it runs tasks: nested `run` calls go inline.
    static IN_POOL: Cell<bool> = const { Cell::new(false) };
}

/// One parallel call: the closure and the task counter, living on the caller's stack.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
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
    /// `seq << SEQ_SHIFT | CLOSED? | inside`; [`SHUTDOWN`] to exit.
    gate: AtomicU64,
    /// Workers with an index below this may join the current job.
    enlisted: AtomicUsize,
    /// The current job, valid while the gate counts workers inside or is open.
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
            gate: AtomicU64::new(CLOSED),
            enlisted: AtomicUsize::new(0),
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
            panic: Mutex::new(None),
        };
        let ptr: *const Job<'_> = &job;
        // Erase the closure's lifetime so workers can see the job. A worker dereferences the
        // pointer only after joining through the open gate and until it leaves; this function
        // closes the gate and waits until no worker is inside before it returns (it cannot
        // unwind earlier: `Job::work` catches panics), so the job outlives every use.
        self.shared
            .job
            .store(ptr.cast::<Job<'static>>().cast_mut(), Ordering::Relaxed);
        self.shared.enlisted.store(enlisted, Ordering::Relaxed);
        *seq = (*seq + 1) & 0x7FFF_FFFF;
        self.shared.gate.store(*seq << SEQ_SHIFT, Ordering::SeqCst);
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

        // No task left to claim: admit nobody else, wait for those inside.
        let mut gate = self.shared.gate.fetch_or(CLOSED, Ordering::AcqRel) | CLOSED;
        let start = Instant::now();
        let mut spins = 0u32;
        while gate & INSIDE != 0 {
            spins = spins.wrapping_add(1);
            if spins & 63 != 0 || start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            gate = self.shared.gate.load(Ordering::Acquire);
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
            self.shared.gate.store(SHUTDOWN, Ordering::SeqCst);
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

/// Body of worker `index`: wait for a new job, join it if enlisted and still open, help, leave.
fn worker(s: &Shared, index: usize) {
    IN_POOL.with(|c| c.set(true));
    let mut seen = 0u64;
    loop {
        let mut gate = wait_for_job(s, seen);
        if gate == SHUTDOWN {
            return;
        }
        seen = gate >> SEQ_SHIFT;
        if index >= s.enlisted.load(Ordering::Relaxed) {
            continue;
        }
        // Join: count ourselves inside, unless the caller closed the gate meanwhile.
        let joined = loop {
            if gate == SHUTDOWN || gate & CLOSED != 0 || gate >> SEQ_SHIFT != seen {
                break false;
            }
            match s
                .gate
                .compare_exchange_weak(gate, gate + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break true,
                Err(g) => gate = g,
            }
        };
        if !joined {
            continue;
        }
        let ptr = s.job.load(Ordering::Relaxed);
        // SAFETY: `ptr` was stored before the gate opened for this sequence number (our Acquire
        // CAS read that store or a later read-modify-write of it) and points to the caller's
        // `Job`, which stays alive until no worker is counted inside; we leave below and do not
        // use the reference afterwards.
        let job = unsafe { &*ptr };
        job.work();
        s.gate.fetch_sub(1, Ordering::Release);
    }
}

/// Spins for [`SPIN`], then sleeps, until the gate shows an open job newer than `seen` (or
/// shutdown); returns the gate word.
fn wait_for_job(s: &Shared, seen: u64) -> u64 {
    let fresh = |g: u64| g == SHUTDOWN || (g >> SEQ_SHIFT != seen && g & CLOSED == 0);
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = s.gate.load(Ordering::Acquire);
        if fresh(g) {
            return g;
        }
        spins = spins.wrapping_add(1);
        if spins & 63 != 0 || start.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let mut guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let g = s.gate.load(Ordering::SeqCst);
            if fresh(g) {
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
                return g;
            }
            guard = s.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
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
