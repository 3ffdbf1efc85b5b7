//! Decode attend over a KV cache at long context, every format, against the F16 cache and plain
//! `rt.attention` on F16 tensors. `cargo run --release --example kv_speed [ctx] [reps]`; env
//! `KV_SPEED_ONLY=format`, `KV_SPEED_NO_PLAIN=1` (skip `rt.attention`), `KV_SPEED_MIN=1` (fastest run).
//! Prints µs per call (median), bits per value from `memory_bytes`, GB/s of cache read.

use half::f16;
use std::time::Instant;
use wattle::{AttentionParams, KvCache, KvCacheConfig, KvFormat, Runtime, Tensor};

/// The median, or with `KV_SPEED_MIN=1` the fastest run (steadier on a busy host).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if std::env::var_os("KV_SPEED_MIN").is_some() {
        return v[0];
    }
    v[v.len() / 2]
}

fn main() -> Result<(), wattle::Error> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ctx = args.first().copied().unwrap_or(32768);
    let reps = args.get(1).copied().unwrap_or(30);
    let (h_q, h_kv, d) = (32, 8, 128);
    let rt = Runtime::new()?;
    println!(
        "ctx {ctx}, {h_q} query / {h_kv} KV heads, d {d}, ISA {}, {}",
        wattle::Isa::best(),
        rt.cpu().info().driver
    );
    let mut s = 0x1234_5678u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let n = ctx * h_kv * d;
    let k: Vec<f32> = (0..n).map(|_| rnd()).collect();
    let v: Vec<f32> = (0..n).map(|_| rnd()).collect();
    let q: Vec<f32> = (0..h_q * d).map(|_| rnd()).collect();
    let q = Tensor::from_f32(&q, &[1, h_q, d])?;
    let p = AttentionParams {
        q_pos0: ctx - 1,
        ..AttentionParams::causal()
    };
    let time = |f: &mut dyn FnMut(), reps: usize| {
        for _ in 0..3.min(reps) {
            f();
        }
        median(
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        )
    };
    // Plain attention on F16 tensors.
    let kh: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
    let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let kt = Tensor::from_f16(&kh, &[ctx, h_kv, d])?;
    let vt = Tensor::from_f16(&vh, &[ctx, h_kv, d])?;
    drop((kh, vh));
    // Skipped with KV_SPEED_NO_PLAIN=1 (the plain path is slow to time).
    let plain = if std::env::var_os("KV_SPEED_NO_PLAIN").is_some() {
        f64::NAN
    } else {
        time(
            &mut || {
                rt.attention(&q, &kt, &vt, &p).unwrap();
            },
            reps.min(5),
        )
    };
    drop((kt, vt));
    let kt = Tensor::from_f32(&k, &[ctx, h_kv, d])?;
    let vt = Tensor::from_f32(&v, &[ctx, h_kv, d])?;
    println!("rt.attention F16 K/V: {plain:.0} µs");
    println!(
        "{:<8} {:>9} {:>9} {:>8} {:>8} {:>10}",
        "format", "bits/val", "µs", "vs F16", "GB/s", "append/tok"
    );
    let mut f16_us = 0.0;
    for (name, format) in [
        ("f16", KvFormat::F16),
        ("q8_0", KvFormat::Q8_0),
        ("q4_0", KvFormat::Q4_0),
        (
            "kivi4",
            KvFormat::Kivi {
                bits: 4,
                group: 32,
                residual: 128,
            },
        ),
        (
            "kivi2",
            KvFormat::Kivi {
                bits: 2,
                group: 32,
                residual: 128,
            },
        ),
    ] {
        // KV_SPEED_ONLY=name times one format (plus f16 for the ratio).
        if let Ok(only) = std::env::var("KV_SPEED_ONLY") {
            if name != only && name != "f16" {
                continue;
            }
        }
        let cfg = KvCacheConfig {
            kv_heads: h_kv,
            head_dim: d,
            format,
            capacity: Some(ctx),
            ..Default::default()
        };
        let mut c = KvCache::new(&rt, &rt.cpu(), cfg)?;
        let t0 = Instant::now();
        c.append(0, &kt, &vt)?;
        let append = t0.elapsed().as_secs_f64() * 1e9 / ctx as f64;
        let us = time(
            &mut || {
                c.attend(0, &q, &p).unwrap();
            },
            reps,
        );
        if name == "f16" {
            f16_us = us;
        }
        let bytes = c.memory_bytes();
        let bits = bytes as f64 * 8.0 / (ctx * h_kv * 2 * d) as f64;
        println!(
            "{name:<8} {bits:>9.3} {us:>9.0} {:>8.3} {:>8.1} {:>8.0} ns",
            us / f16_us,
            bytes as f64 / us / 1e3,
            append
        );
    }
    println!("F16 cache / rt.attention F16: {:.3}", f16_us / plain);
    Ok(())
}
