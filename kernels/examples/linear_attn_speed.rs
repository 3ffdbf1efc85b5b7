//! Speed of both linear-attention forms per kind and ISA path.
//!
//! `cargo run --release -p wattle-kernels --example linear_attn_speed [T] [H] [DK] [DV] [THREADS]`
//! (defaults 4096 32 128 128 2). GFLOP/s count the chunked algorithm's matmul flops for the
//! chunked form and the recurrence's for the recurrent form (see `wattle bench --suite linear`).

use std::time::Instant;
use wattle_kernels::isa::Isa;
use wattle_kernels::linear_attn::{chunked, recurrent, Kind, LinShape, CHUNK};
use wattle_kernels::pool::ThreadPool;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    // Non-numeric arguments filter the rows (kind, ISA or form names).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|x| x.parse::<usize>().is_err())
        .collect();
    let s = LinShape {
        t: get(0, 4096),
        h: get(1, 32),
        dk: get(2, 128),
        dv: get(3, 128),
    };
    let pool = ThreadPool::new(get(4, 2));
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut rnd = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    };
    let q = rnd(s.t * s.h * s.dk, 1.0);
    let mut k = rnd(s.t * s.h * s.dk, 1.0);
    for r in k.chunks_exact_mut(s.dk) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        r.iter_mut().for_each(|x| *x /= n);
    }
    let v = rnd(s.t * s.h * s.dv, 1.0);
    let gamma = vec![0.99f32; s.h];
    let gla: Vec<f32> = rnd(s.t * s.h * s.dk, 0.05)
        .into_iter()
        .map(|x| -x.abs())
        .collect();
    let beta: Vec<f32> = rnd(s.t * s.h, 1.0).into_iter().map(f32::abs).collect();
    let ad: Vec<f32> = rnd(s.t * s.h, 0.05).into_iter().map(|x| -x.abs()).collect();
    let kinds = [
        ("vanilla", Kind::Vanilla),
        ("retention", Kind::Retention { gamma: &gamma }),
        ("gla", Kind::Gated { log_decay: &gla }),
        (
            "delta",
            Kind::GatedDelta {
                beta: &beta,
                log_decay: &ad,
            },
        ),
    ];
    let (t, dk, dv) = (s.t as f64, s.dk as f64, s.dv as f64);
    // Chunked matmul flops per head (see the bench for the derivation).
    let mut chunk_flops = 0.0;
    let mut delta_extra = 0.0;
    let mut t0 = 0;
    while t0 < s.t {
        let c = CHUNK.min(s.t - t0) as f64;
        let tri = c * (c + 1.0) / 2.0;
        chunk_flops += 2.0 * tri * (dk + dv) + 4.0 * c * dk * dv;
        delta_extra +=
            2.0 * (c * (c - 1.0) / 2.0) * dk + 2.0 * c * dk * dv + c * c * c / 3.0 + 2.0 * tri * dv;
        t0 += CHUNK;
    }
    // Recurrent: update 2·dk·dv + read 2·dk·dv per token, plus the decay dk·dv (not vanilla,
    // which adds 3·dk for z), plus kᵀS 2·dk·dv for the delta rule.
    let rec_flops = t * 4.0 * dk * dv;
    let peak = wattle_kernels::probe::fma_peak(&wattle_kernels::probe::FmaOptions {
        threads: pool.threads(),
        ..Default::default()
    });
    println!(
        "T {} H {} dk {} dv {} threads {}, measured FMA peak {peak:.0} GFLOP/s",
        s.t,
        s.h,
        s.dk,
        s.dv,
        pool.threads()
    );
    for (name, kind) in kinds {
        for isa in Isa::supported() {
            for (form, f) in [
                ("recurrent", recurrent::run_isa as RunFn),
                ("chunked", chunked::run_isa as RunFn),
            ] {
                if isa == Isa::Scalar && s.t * s.h * s.dk * s.dv > (1 << 26) {
                    continue;
                }
                let names = [name, isa.name(), form];
                if !filters.iter().all(|f| names.contains(&f.as_str())) {
                    continue;
                }
                let mut out = vec![0f32; s.t * s.h * s.dv];
                let mut best = f64::INFINITY;
                for _ in 0..std::env::var("REPS")
                    .ok()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(5)
                {
                    let mut st = vec![0f32; s.h * s.dk * s.dv];
                    let mut z = vec![0f32; s.h * s.dk];
                    let zz = matches!(kind, Kind::Vanilla).then_some(&mut z[..]);
                    let t0 = Instant::now();
                    f(isa, &pool, &q, &k, &v, kind, s, &mut st, zz, &mut out);
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                let flops = s.h as f64
                    * match (form, name) {
                        ("chunked", "delta") => chunk_flops + delta_extra,
                        ("chunked", _) => chunk_flops,
                        (_, "vanilla") => rec_flops + t * 3.0 * dk,
                        (_, "delta") => rec_flops + t * 3.0 * dk * dv,
                        _ => rec_flops + t * dk * dv,
                    };
                let gf = flops / best / 1e9;
                println!(
                    "{name:10} {isa:7} {form:9} {:9.2} ms {gf:8.1} GFLOP/s ({:4.1}% of peak) {:10.0} tok/s",
                    best * 1e3,
                    100.0 * gf / peak,
                    t / best
                );
            }
        }
    }
}

type RunFn = fn(
    Isa,
    &ThreadPool,
    &[f32],
    &[f32],
    &[f32],
    Kind<'_>,
    LinShape,
    &mut [f32],
    Option<&mut [f32]>,
    &mut [f32],
);
