//! Attention speed on issue 6's cases: decode (t_q = 1) at long context in µs and GB/s of K/V
//! read, with F16/Q8_0/Q4_0/F32 K/V and sliding windows, and 512-query prefill in GFLOP/s.
//!
//! ```text
//! cargo run --release -p wattle-kernels --example attention_speed [-- decode|window|prefill ...]
//! ```
//! `WATTLE_THREADS` sizes the pool (default 2), `WATTLE_CPU_ISA` forces a path.

use half::f16;
use std::time::Instant;
use wattle_kernels::attention::{flash, AttnParams, AttnShape, KvData};
use wattle_kernels::isa;
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::quant::{BlockFormat, BlockQ4_0, BlockQ8_0};

fn vals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// K/V owned in one dtype.
enum Kv {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8(Vec<BlockQ8_0>),
    Q4(Vec<BlockQ4_0>),
}

impl Kv {
    fn new(dtype: &str, x: &[f32]) -> Kv {
        match dtype {
            "f32" => Kv::F32(x.to_vec()),
            "f16" => Kv::F16(x.iter().map(|&v| f16::from_f32(v)).collect()),
            "q8_0" => {
                let mut b = vec![<BlockQ8_0 as Zeroed>::zeroed(); x.len() / 32];
                BlockQ8_0::quantize_ref(x, &mut b);
                Kv::Q8(b)
            }
            _ => {
                let mut b = vec![<BlockQ4_0 as Zeroed>::zeroed(); x.len() / 32];
                BlockQ4_0::quantize_ref(x, &mut b);
                Kv::Q4(b)
            }
        }
    }
    fn data(&self) -> KvData<'_> {
        match self {
            Kv::F32(v) => KvData::F32(v),
            Kv::F16(v) => KvData::F16(v),
            Kv::Q8(v) => KvData::Q8_0(v),
            Kv::Q4(v) => KvData::Q4_0(v),
        }
    }
    fn bytes(&self) -> usize {
        match self {
            Kv::F32(v) => v.len() * 4,
            Kv::F16(v) => v.len() * 2,
            Kv::Q8(v) => v.len() * 34,
            Kv::Q4(v) => v.len() * 18,
        }
    }
}

trait Zeroed {
    fn zeroed() -> Self;
}
impl<T: bytemuck::Zeroable> Zeroed for T {
    fn zeroed() -> Self {
        T::zeroed()
    }
}

/// Median wall seconds of the runs (after one warm-up), repeated until ~1 s has passed.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut v = Vec::new();
    let t0 = Instant::now();
    while v.len() < 5 || (t0.elapsed().as_secs_f64() < 1.0 && v.len() < 200) {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[allow(clippy::too_many_arguments)]
fn case(
    pool: &ThreadPool,
    label: &str,
    t_q: usize,
    h_q: usize,
    h_kv: usize,
    d: usize,
    t_k: usize,
    dtype: &str,
    window: Option<usize>,
) {
    let s = AttnShape {
        t_q,
        h_q,
        t_k,
        h_kv,
        d,
        d_v: d,
    };
    let q = vals(t_q * h_q * d, 1);
    let k = Kv::new(dtype, &vals(t_k * h_kv * d, 2));
    let v = Kv::new(dtype, &vals(t_k * h_kv * d, 3));
    let p = AttnParams {
        causal: true,
        window,
        q_pos0: t_k - t_q,
        key_positions: None,
        sinks: None,
        scale: 1.0 / (d as f32).sqrt(),
        softcap: None,
    };
    let mut out = vec![0f32; t_q * h_q * d];
    let secs = time(|| flash::attention(pool, &q, k.data(), v.data(), s, &p, &mut out));
    let visited = window.map_or(t_k, |w| w.min(t_k)) as f64 / t_k as f64;
    let gbs = (k.bytes() + v.bytes()) as f64 * visited / secs / 1e9;
    // 2 flops per multiply-add, QK and PV, causal prefill sees on average t_k − t_q/2 keys.
    let keys = window.map_or(t_k as f64 - t_q as f64 / 2.0, |w| w.min(t_k) as f64);
    let gflops = 4.0 * (t_q * h_q * d) as f64 * keys / secs / 1e9;
    println!(
        "{label:<9} t_q={t_q:<4} h={h_q}/{h_kv} d={d:<3} ctx={t_k:<6} W={:<6} {dtype:<5} {:>10.1} us {:>7.1} GB/s {:>7.1} GFLOP/s",
        window.map_or("-".into(), |w| w.to_string()),
        secs * 1e6,
        gbs,
        gflops
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |w: &str| args.is_empty() || args.iter().any(|a| a == w);
    let threads = std::env::var("WATTLE_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let pool = ThreadPool::new(threads);
    println!(
        "isa {}, {threads} threads",
        isa::selected().unwrap_or(isa::Isa::Scalar)
    );
    if args.iter().any(|a| a == "one") {
        let ctx = std::env::var("CTX")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(16384);
        case(&pool, "decode", 1, 32, 8, 128, ctx, "f16", None);
    }
    if want("decode") {
        for dt in ["f16", "q8_0", "q4_0", "f32"] {
            case(&pool, "decode", 1, 32, 8, 128, 16384, dt, None);
        }
        for dt in ["f16", "q8_0", "q4_0"] {
            case(&pool, "decode", 1, 32, 2, 256, 20000, dt, None);
        }
    }
    if args.iter().any(|a| a == "bw") {
        // Streaming read probe over 64 MiB on the pool: the DRAM ceiling right now.
        let x = vals(16 << 20, 9);
        let chunks: Vec<&[f32]> = x.chunks(x.len() / threads).collect();
        let secs = time(|| {
            pool.run(chunks.len(), |i| {
                let mut acc = [0f32; 32];
                for c in chunks[i].chunks_exact(32) {
                    acc.iter_mut().zip(c).for_each(|(a, x)| *a += x);
                }
                std::hint::black_box(acc);
            })
        });
        println!("bw: {:.1} GB/s", (x.len() * 4) as f64 / secs / 1e9);
    }
    if args.iter().any(|a| a == "small") {
        // L2-resident K/V: compute speed without DRAM.
        for dt in ["f16", "q8_0", "f32"] {
            case(&pool, "small", 1, 32, 8, 128, 512, dt, None);
        }
    }
    if want("window") {
        for ctx in [4096, 65536] {
            case(&pool, "window", 1, 32, 8, 128, ctx, "f16", Some(4096));
        }
    }
    if want("prefill") {
        for dt in ["f16", "q8_0"] {
            case(&pool, "prefill", 512, 32, 2, 256, 20000, dt, None);
        }
    }
}
