//! Quantized matmul speed on the benchmark shape (n = 4096 weight rows of k = 14336, ggml-perf's
//! `m=4096,k=14336`; ggml's `n` is our `m`): decode (m = 1: µs and GB/s of GGUF weight bytes)
//! and prefill (m = 512: µs and GOPS = 2·m·n·k / time) per weight format. Hot mode: the same
//! repacked weights every run (as ggml's perf mode).
//!
//! ```text
//! cargo run --release -p wattle-kernels --example qmatmul_speed [-- q4_0 q4_K ... m=NUM ... path=avx2]
//! ```
//! Format names pick formats (default: all five); `m=NUM` replaces the default m = 1 and 512;
//! `path=NAME` forces a path (default: the best for `WATTLE_CPU_ISA` / this CPU);
//! `bw` first prints read-bandwidth ceilings; `WATTLE_THREADS` sizes the pool.

use std::time::Instant;
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::probe::{read_bandwidth_report, BandwidthOptions};
use wattle_kernels::qmatmul::{qmatmul_packed, PackedWeights, Path};
use wattle_kernels::DType;

const N: usize = 4096;
const K: usize = 14336;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
    ];
    let mut dtypes: Vec<DType> = args
        .iter()
        .filter(|a| a.starts_with('q'))
        .filter_map(|a| a.parse().ok())
        .collect();
    dtypes.retain(|d| all.contains(d));
    if dtypes.is_empty() {
        dtypes = all.to_vec();
    }
    let mut ms: Vec<usize> = args
        .iter()
        .filter_map(|a| a.strip_prefix("m=")?.parse().ok())
        .collect();
    if ms.is_empty() {
        ms = vec![1, 512];
    }
    let isa = match wattle_kernels::isa::selected() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("qmatmul_speed: {e}");
            std::process::exit(2);
        }
    };
    let path = args
        .iter()
        .find_map(|a| a.strip_prefix("path="))
        .map(|p| {
            Path::ALL
                .into_iter()
                .find(|q| q.name() == p)
                .unwrap_or_else(|| {
                    eprintln!("qmatmul_speed: unknown path {p}");
                    std::process::exit(2)
                })
        })
        .unwrap_or_else(|| Path::for_isa(isa));
    if !path.is_supported() {
        eprintln!("qmatmul_speed: this CPU lacks the {path} path");
        std::process::exit(2);
    }
    let pool = ThreadPool::global();
    if args.iter().any(|a| a == "bw") {
        // Read ceilings for a buffer the size of the Q4_0 weights (hot: partly in L3) and a
        // large one (cold), per thread count.
        for bytes in [N * K / 32 * 18, 512 << 20] {
            let opts = BandwidthOptions {
                bytes,
                max_threads: pool.threads(),
                ..BandwidthOptions::quick()
            };
            let r = read_bandwidth_report(&opts);
            for t in 1..=pool.threads() {
                let best = r
                    .samples
                    .iter()
                    .filter(|s| s.threads == t)
                    .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s));
                if let Some(s) = best {
                    println!(
                        "read ceiling {} MB, {t} threads: {:.1} GB/s ({} {})",
                        bytes >> 20,
                        s.gb_per_s,
                        s.pattern,
                        s.vector
                    );
                }
            }
        }
    }
    println!(
        "qmatmul_speed: isa {isa}, path {path}, {} threads, n={N} k={K}",
        pool.threads()
    );
    // Deterministic weights with some spread.
    let mut s = 0x1234_5678u32;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let w: Vec<f32> = (0..N * K).map(|_| rnd()).collect();
    let xmax = *ms.iter().max().unwrap_or(&1);
    let x: Vec<f32> = (0..xmax * K).map(|_| rnd()).collect();
    for d in dtypes {
        let mut wb = vec![0u8; N * K / d.block_size() * d.block_bytes()];
        if let Err(e) = wattle_kernels::quant::quantize(d, &w, &mut wb) {
            eprintln!("quantize {d}: {e}");
            continue;
        }
        let t0 = Instant::now();
        let packed = match PackedWeights::new(pool, d, &wb, N, K) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("pack {d}: {e}");
                continue;
            }
        };
        let pack_ms = t0.elapsed().as_secs_f64() * 1e3;
        for &m in &ms {
            let mut y = vec![0.0f32; m * N];
            let reps = if m == 1 { 200 } else { 5 };
            for _ in 0..(if m == 1 { 20 } else { 1 }) {
                qmatmul_packed(path, pool, &x[..m * K], &packed, &mut y, m);
            }
            let times: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    qmatmul_packed(path, pool, &x[..m * K], &packed, &mut y, m);
                    t.elapsed().as_secs_f64()
                })
                .collect();
            let (med, min) = (
                median(times.clone()),
                times.iter().copied().fold(f64::MAX, f64::min),
            );
            let gbs = wb.len() as f64 / med / 1e9;
            let gops = 2.0 * (m * N * K) as f64 / med / 1e9;
            println!(
                "{:<5} m={m:<4} {:>10.1} us (min {:>10.1})  {:>7.1} GB/s  {:>8.1} GOPS   (packed {} MB in {pack_ms:.0} ms, gguf {} MB)",
                d.to_string(),
                med * 1e6,
                min * 1e6,
                gbs,
                gops,
                packed.size_bytes() >> 20,
                wb.len() >> 20
            );
        }
    }
}
