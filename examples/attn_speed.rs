//! `rt.attention` decode (one query) or prefill on the CPU at long context, for one K/V dtype.
//! `cargo run --release --example attn_speed [ctx] [h_q] [h_kv] [d] [dtype] [reps] [t_q]`
//! (defaults: 16384 32 8 128 f16 30 1; `t_q` > 1 times a prefill of the last `t_q` positions).
//! Prints the median µs per call, GB/s of K/V read and GFLOP/s.

use std::time::Instant;
use wattle::{AttentionParams, DType, Runtime, Tensor};

fn main() -> Result<(), wattle::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, def: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(def);
    let (ctx, h_q, h_kv, d) = (num(0, 16384), num(1, 32), num(2, 8), num(3, 128));
    let dtype = match args.get(4).map(String::as_str).unwrap_or("f16") {
        "f32" => DType::F32,
        "q8_0" => DType::Q8_0,
        "q4_0" => DType::Q4_0,
        _ => DType::F16,
    };
    let reps = num(5, 30);
    let t_q = num(6, 1).clamp(1, ctx);
    let rt = Runtime::new()?;
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let n = ctx * h_kv * d;
    let kv = |rnd: &mut dyn FnMut() -> f32| -> Result<Tensor, wattle::Error> {
        let x: Vec<f32> = (0..n).map(|_| rnd()).collect();
        let t = Tensor::from_f32(&x, &[ctx, h_kv, d])?;
        if dtype == DType::F32 {
            Ok(t)
        } else {
            t.quantize(dtype)
        }
    };
    let k = kv(&mut rnd)?;
    let v = kv(&mut rnd)?;
    let q: Vec<f32> = (0..t_q * h_q * d).map(|_| rnd()).collect();
    let q = Tensor::from_f32(&q, &[t_q, h_q, d])?;
    let p = AttentionParams {
        q_pos0: ctx - t_q,
        ..AttentionParams::causal()
    };
    for _ in 0..3 {
        rt.attention(&q, &k, &v, &p)?;
    }
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            let r = rt.attention(&q, &k, &v, &p);
            let us = t0.elapsed().as_secs_f64() * 1e6;
            r.map(|_| us)
        })
        .collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    let med = t[t.len() / 2];
    let bytes = (k.storage_bytes() + v.storage_bytes()) as f64;
    // 4·d flops per (query head, visible key): causal, the last t_q positions.
    let visible = (0..t_q).map(|i| (ctx - t_q + i + 1) as f64).sum::<f64>();
    let flops = 4.0 * d as f64 * h_q as f64 * visible;
    println!(
        "ctx {ctx} t_q {t_q} {h_q}/{h_kv} heads d {d} {dtype:?}: {med:.0} µs (min {:.0}), {:.1} GB/s, {:.1} GFLOP/s",
        t[0],
        bytes / med / 1e3,
        flops / med / 1e3
    );
    Ok(())
}
