//! Float matmul speed on the benchmark shape (n = 4096 rows of k = 14336, ggml-perf's
//! `m=4096,k=14336`): decode (m = 1, GB/s of weights) and prefill (m = 512, GFLOP/s and % of the
//! measured f32 FMA peak), for F32, F16 and BF16 weights. Hot mode: the same weights each run.
//!
//! ```text
//! cargo run --release -p wattle-kernels --example matmul_speed [-- decode|prefill|peak|pool ...]
//! ```
//! `m=NUM` adds a run with that many activation rows; `f32`, `f16`, `bf16` pick dtypes.
//! `WATTLE_THREADS` sizes the pool, `WATTLE_CPU_ISA` forces a path.
//!
//! Besides wall time, each line shows on-CPU time divided by the thread count ("cpu"): on a
//! shared machine the wall time swings with the neighbours' load, the CPU time much less. The
//! FMA peak probe is wall-clock, so its "% of peak" is only meaningful on a quiet machine.

use half::{bf16, f16};
use std::time::Instant;
use wattle_kernels::matmul::{matmul, Weights};
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::probe::{fma_peak_report, FmaOptions};

const N: usize = 4096;
const K: usize = 14336;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// On-CPU seconds of this process so far (all threads; Linux `schedstat`), if available.
fn cpu_secs() -> Option<f64> {
    let mut ns = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// Median and min wall seconds of `reps` runs after `warm` warm-up runs, and the median
/// on-CPU seconds per run divided by `threads` (what the run would take on otherwise idle
/// cores: the machine is shared, so wall times swing with the neighbours' load).
fn time(warm: usize, reps: usize, threads: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..warm {
        f();
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let c0 = cpu_secs();
        let t0 = Instant::now();
        f();
        wall.push(t0.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c0, cpu_secs()) {
            cpu.push((c1 - c0) / threads as f64);
        }
    }
    let min = wall.iter().copied().fold(f64::INFINITY, f64::min);
    let cpu = if cpu.is_empty() { 0.0 } else { median(cpu) };
    (median(wall), min, cpu)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let extra_m: Vec<usize> = args
        .iter()
        .filter_map(|a| a.strip_prefix("m=")?.parse().ok())
        .collect();
    let dtypes: Vec<&str> = ["f32", "f16", "bf16"]
        .into_iter()
        .filter(|d| args.iter().any(|a| a == d))
        .collect();
    let args: Vec<String> = args
        .into_iter()
        .filter(|a| !["f32", "f16", "bf16"].contains(&a.as_str()))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let isa = match wattle_kernels::isa::selected() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("matmul_speed: {e}");
            std::process::exit(2);
        }
    };
    let pool = ThreadPool::global();
    let threads = pool.threads();
    println!(
        "isa {isa}, {} threads, n={N} k={K} (weights [n, k]), hot",
        pool.threads()
    );

    if want("pool") {
        // Fork/join cost of an empty job: back to back (workers spinning) and after a pause
        // long enough for them to park.
        let (hot, _, _) = time(100, 2000, threads, || pool.run(threads, |_| {}));
        let cold = median(
            (0..20)
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    let t0 = Instant::now();
                    pool.run(threads, |_| {});
                    t0.elapsed().as_secs_f64()
                })
                .collect(),
        );
        // A job that needs every thread: each task waits until all tasks have started.
        let started = std::sync::atomic::AtomicUsize::new(0);
        let all = median(
            (0..20)
                .map(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    started.store(0, std::sync::atomic::Ordering::SeqCst);
                    let t0 = Instant::now();
                    pool.run(threads, |_| {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        while started.load(std::sync::atomic::Ordering::SeqCst) < threads {
                            std::hint::spin_loop();
                        }
                    });
                    t0.elapsed().as_secs_f64()
                })
                .collect(),
        );
        println!(
            "pool    empty run: {:.2} us back to back, {:.1} us after 2 ms idle; \
             all {threads} threads joined after 2 ms idle: {:.1} us",
            hot * 1e6,
            cold * 1e6,
            all * 1e6
        );
    }

    let mut peak = 0.0f64;
    if want("peak") || want("prefill") || !extra_m.is_empty() {
        // All threads at once, and one thread times the thread count: on a shared machine the
        // single-thread figure is the one a neighbour's load disturbs least.
        let one = FmaOptions {
            threads: 1,
            ..FmaOptions::default()
        };
        for (s, scale) in fma_peak_report(&FmaOptions::default())
            .into_iter()
            .map(|s| (s, 1.0))
            .chain(
                fma_peak_report(&one)
                    .into_iter()
                    .map(|s| (s, threads as f64)),
            )
        {
            println!(
                "fma peak {:?} x{} threads: {:.1} GFLOP/s",
                s.vector, s.threads, s.gflops
            );
            peak = peak.max(s.gflops * scale);
        }
        println!("fma peak used for %: {peak:.1} GFLOP/s ({threads} threads)");
    }

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let wf: Vec<f32> = (0..N * K).map(|_| rnd()).collect();
    let x: Vec<f32> = (0..512 * K).map(|_| rnd()).collect();
    let dtypes = if dtypes.is_empty() {
        vec!["f32", "f16", "bf16"]
    } else {
        dtypes
    };
    for dt in dtypes {
        let (wh, wb): (Vec<f16>, Vec<bf16>) = match dt {
            "f16" => (wf.iter().map(|&v| f16::from_f32(v)).collect(), Vec::new()),
            "bf16" => (Vec::new(), wf.iter().map(|&v| bf16::from_f32(v)).collect()),
            _ => (Vec::new(), Vec::new()),
        };
        let (w, bytes) = match dt {
            "f16" => (Weights::F16(&wh), 2),
            "bf16" => (Weights::BF16(&wb), 2),
            _ => (Weights::F32(&wf), 4),
        };
        if want("decode") {
            let mut y = vec![0.0f32; N];
            let (med, min, cpu) = time(5, 30, threads, || {
                matmul(isa, pool, &x[..K], w, &mut y, 1, N, K)
            });
            let gb = (N * K * bytes) as f64 / 1e9;
            println!(
                "decode  {dt:<4} m=1   {:>9.1} us (min {:>8.1})  {:>6.1} GB/s  | cpu {:>9.1} us {:>6.1} GB/s",
                med * 1e6,
                min * 1e6,
                gb / med,
                cpu * 1e6,
                gb / cpu
            );
        }
        let mut ms = extra_m.clone();
        if want("prefill") {
            ms.push(512);
        }
        for &m in &ms {
            let m = m.clamp(1, 512);
            let mut y = vec![0.0f32; m * N];
            let (med, min, cpu) = time(1, 5, threads, || {
                matmul(isa, pool, &x[..m * K], w, &mut y, m, N, K)
            });
            let gflop = 2.0 * (m * N * K) as f64 / 1e9;
            let pct = |t: f64| {
                if peak > 0.0 {
                    100.0 * gflop / t / peak
                } else {
                    0.0
                }
            };
            println!(
                "prefill {dt:<4} m={m:<3} {:>9.1} us (min {:>8.1})  {:>6.1} GFLOP/s {:>5.1}% of peak | cpu {:>9.1} us {:>6.1} GFLOP/s {:>5.1}%",
                med * 1e6,
                min * 1e6,
                gflop / med,
                pct(med),
                cpu * 1e6,
                gflop / cpu,
                pct(cpu)
            );
        }
    }
}
