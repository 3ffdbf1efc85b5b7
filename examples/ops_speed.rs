//! Per-call times of the engine ops (issue 12) at SmolLM2-135M shapes: decode rows (d = 576,
//! f = 1536, vocab 49152) and a 512-token prefill, on every device (median of many calls).
//!
//! `cargo run --release --example ops_speed [-- cpu]`

use std::time::Instant;
use wattle::{DType, Device, RopeParams, Runtime, Tensor};

fn median_us(mut f: impl FnMut() -> wattle::Result<()>, dev: &Device) -> wattle::Result<f64> {
    f()?;
    dev.synchronize()?;
    let reps = if dev.is_cpu() { 400 } else { 20 };
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        t.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn main() -> wattle::Result<()> {
    let rt = match std::env::args().nth(1).as_deref() {
        Some(b) => Runtime::with_backends(b)?,
        None => Runtime::new()?,
    };
    let vals = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1021) as f32 - 510.0) / 97.0)
            .collect()
    };
    for dev in rt.devices() {
        println!("== {dev}");
        for &t in &[1usize, 512] {
            let x = Tensor::from_f32(&vals(t * 576), &[t, 576])?.to(&dev)?;
            let w = Tensor::from_f32(&vals(576), &[576])?.to(&dev)?;
            let g = Tensor::from_f32(&vals(t * 1536), &[t, 1536])?.to(&dev)?;
            let u = Tensor::from_f32(&vals(t * 1536), &[t, 1536])?.to(&dev)?;
            let q = Tensor::from_f32(&vals(t * 576), &[t, 9, 64])?.to(&dev)?;
            let k = Tensor::from_f32(&vals(t * 192), &[t, 3, 64])?.to(&dev)?;
            let p = RopeParams {
                pos0: 100,
                ..RopeParams::default()
            };
            let report = |name: &str, us: wattle::Result<f64>| match us {
                Ok(us) => println!("{name:<28} t={t:<4} {us:>9.2} us"),
                Err(e) => println!("{name:<28} t={t:<4} {e}"),
            };
            report(
                "rms_norm [t,576]",
                median_us(|| rt.rms_norm(&x, &w, 1e-5).map(drop), &dev),
            );
            report("add [t,576]", median_us(|| rt.add(&x, &x).map(drop), &dev));
            report(
                "silu_mul [t,1536]",
                median_us(|| rt.silu_mul(&g, &u).map(drop), &dev),
            );
            report(
                "rope q [t,9,64]",
                median_us(|| rt.rope(&q, &p).map(drop), &dev),
            );
            report(
                "rope k [t,3,64]",
                median_us(|| rt.rope(&k, &p).map(drop), &dev),
            );
        }
        let logits = Tensor::from_f32(&vals(49152), &[1, 49152])?.to(&dev)?;
        let report = |name: &str, us: wattle::Result<f64>| match us {
            Ok(us) => println!("{name:<28}        {us:>9.2} us"),
            Err(e) => println!("{name:<28}        {e}"),
        };
        report(
            "softmax [1,49152]",
            median_us(|| rt.softmax(&logits).map(drop), &dev),
        );
        report(
            "argmax [1,49152]",
            median_us(|| rt.argmax(&logits).map(drop), &dev),
        );
        report(
            "top_k 40 [1,49152]",
            median_us(|| rt.top_k(&logits, 40).map(drop), &dev),
        );
        let table = Tensor::from_f32(&vals(49152 * 576), &[49152, 576])?;
        for dt in [DType::Q8_0, DType::F16] {
            let tq = table.quantize(dt)?.to(&dev)?;
            report(
                &format!("get_rows {dt} 1 id"),
                median_us(|| rt.get_rows(&tq, &[1234]).map(drop), &dev),
            );
            let ids: Vec<u32> = (0..512).map(|i| i * 89 % 49152).collect();
            report(
                &format!("get_rows {dt} 512 ids"),
                median_us(|| rt.get_rows(&tq, &ids).map(drop), &dev),
            );
        }
    }
    Ok(())
}
