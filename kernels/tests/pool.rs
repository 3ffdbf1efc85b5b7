//! The persistent thread pool: every task runs once, concurrent and nested callers, panics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use wattle_kernels::pool::ThreadPool;

/// Runs `tasks` tasks and checks each ran exactly once.
fn check_once(pool: &ThreadPool, tasks: usize) {
    let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
    pool.run(tasks, |t| {
        hits[t].fetch_add(1, Ordering::Relaxed);
    });
    for (t, h) in hits.iter().enumerate() {
        assert_eq!(h.load(Ordering::Relaxed), 1, "task {t} of {tasks}");
    }
}

#[test]
fn every_task_runs_once() {
    for threads in [1, 2, 3, 8] {
        let pool = ThreadPool::new(threads);
        assert_eq!(pool.threads(), threads);
        for tasks in [0, 1, 2, 3, 7, 64, 1000] {
            for _ in 0..20 {
                check_once(&pool, tasks);
            }
        }
    }
}

#[test]
fn uses_several_threads() {
    let pool = ThreadPool::new(3);
    let ids = Mutex::new(std::collections::HashSet::new());
    // Tasks that wait for each other can only finish if three threads run them.
    let arrived = AtomicUsize::new(0);
    pool.run(3, |_| {
        ids.lock().unwrap().insert(std::thread::current().id());
        arrived.fetch_add(1, Ordering::SeqCst);
        let start = std::time::Instant::now();
        while arrived.load(Ordering::SeqCst) < 3 {
            assert!(
                start.elapsed().as_secs() < 30,
                "tasks did not run in parallel"
            );
            std::hint::spin_loop();
        }
    });
    assert_eq!(ids.lock().unwrap().len(), 3);
}

#[test]
fn concurrent_callers_from_eight_threads() {
    for pool in [ThreadPool::new(3), ThreadPool::new(2)] {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for c in 0..8 {
                let (pool, total) = (&pool, &total);
                s.spawn(move || {
                    for i in 0..200 {
                        let tasks = 1 + (c * 7 + i) % 13;
                        check_once(pool, tasks);
                        total.fetch_add(tasks, Ordering::Relaxed);
                    }
                });
            }
        });
        assert!(total.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn nested_calls_run_inline() {
    let pool = ThreadPool::new(3);
    let sum = AtomicUsize::new(0);
    pool.run(6, |t| {
        pool.run(5, |u| {
            pool.run(2, |v| {
                sum.fetch_add(t * 100 + u * 10 + v, Ordering::Relaxed);
            });
        });
        // Another pool from inside a task works too.
        ThreadPool::global().run(2, |v| {
            sum.fetch_add(v * 1000, Ordering::Relaxed);
        });
    });
    let want: usize = (0..6)
        .flat_map(|t| (0..5).flat_map(move |u| (0..2).map(move |v| t * 100 + u * 10 + v)))
        .sum::<usize>()
        + 6 * 1000;
    assert_eq!(sum.load(Ordering::Relaxed), want);
}

#[test]
fn panic_in_task_reaches_caller_and_pool_survives() {
    let pool = ThreadPool::new(3);
    for bad in [0, 1, 2, 5] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(6, |t| {
                if t == bad {
                    panic!("task {t} fails");
                }
            })
        }));
        assert!(r.is_err(), "panic of task {bad} was swallowed");
        check_once(&pool, 10);
    }
}

#[test]
fn sleeping_workers_wake_up() {
    let pool = ThreadPool::new(3);
    for _ in 0..3 {
        // Longer than the spin phase: the workers park.
        std::thread::sleep(std::time::Duration::from_millis(5));
        check_once(&pool, 9);
    }
}

#[test]
fn drop_joins_workers() {
    for _ in 0..50 {
        let pool = ThreadPool::new(4);
        check_once(&pool, 8);
        drop(pool);
    }
}
