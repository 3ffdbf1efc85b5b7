//! Thread pool for kernels (`WATTLE_THREADS`, default: all cores).
//!
//! PLACEHOLDER: scoped threads per call; to be replaced by a persistent spin-then-park pool.

use std::sync::OnceLock;

/// A set of worker threads that runs `tasks` closures in parallel.
#[derive(Debug)]
pub struct ThreadPool {
    threads: usize,
}

impl ThreadPool {
    /// A pool of `threads` workers (at least 1; the calling thread counts as one).
    pub fn new(threads: usize) -> Self {
        ThreadPool {
            threads: threads.max(1),
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
    pub fn run<F: Fn(usize) + Sync>(&self, tasks: usize, f: F) {
        let workers = self.threads.min(tasks);
        if workers <= 1 {
            (0..tasks).for_each(&f);
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || loop {
            let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if t >= tasks {
                break;
            }
            f(t);
        };
        std::thread::scope(|s| {
            for _ in 1..workers {
                s.spawn(work);
            }
            work();
        });
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
