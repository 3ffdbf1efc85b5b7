//! RMS normalisation: `y = x / sqrt(mean(x²) + eps) * w` per row (ggml `rms_norm` then `mul`).

use super::simd::{par_units, per_isa, OpsSimd};
use super::softmax::SUM_BLOCK;
use crate::isa::Isa;
use crate::pool::ThreadPool;

/// Least values per pool task: below this a pool wake-up costs more than it saves.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Scalar reference: rows of `w.len()` values; the sum of squares in f64 as ggml does.
pub fn rms_norm_ref(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len());
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let sum: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let mean = (sum / d as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((y, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
            *y = v * scale * g;
        }
    }
}

/// [`rms_norm_ref`] on the `isa` path (f32 lanes for the sum of squares), rows split across
/// `pool` when there are many.
pub fn rms_norm(isa: Isa, pool: &ThreadPool, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert!(d > 0 && x.len().is_multiple_of(d) && out.len() == x.len());
    par_units(pool, out, d, PAR_MIN.div_ceil(d), |r0, o| {
        rows(isa, &x[r0 * d..r0 * d + o.len()], w, eps, o)
    });
}

per_isa!(fn rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) => rms_norm_body);

#[inline(always)]
unsafe fn rms_norm_body<S: OpsSimd>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let l = S::LANES;
    let n = d / l * l;
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let (xp, wp, yp) = (xr.as_ptr(), w.as_ptr(), yr.as_mut_ptr());
        // f32 lane sums over blocks, the blocks summed in f64 (as the reference).
        let mut sum = 0f64;
        let mut i = 0;
        while i < n {
            let end = (i + SUM_BLOCK).min(n);
            let (mut a0, mut a1) = (S::zero(), S::zero());
            while i + 2 * l <= end {
                let (v0, v1) = (S::load(xp.add(i)), S::load(xp.add(i + l)));
                a0 = S::fma(v0, v0, a0);
                a1 = S::fma(v1, v1, a1);
                i += 2 * l;
            }
            if i < end {
                let v = S::load(xp.add(i));
                a0 = S::fma(v, v, a0);
                i += l;
            }
            sum += f64::from(S::hsum(S::add(a0, a1)));
        }
        for &v in &xr[n..] {
            sum += f64::from(v * v);
        }
        let scale = 1.0 / ((sum / d as f64) as f32 + eps).sqrt();
        let s = S::splat(scale);
        let mut i = 0;
        while i < n {
            let v = S::mul(S::load(xp.add(i)), s);
            S::store(yp.add(i), S::mul(v, S::load(wp.add(i))));
            i += l;
        }
        for j in n..d {
            yr[j] = xr[j] * scale * w[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_matches_the_reference() {
        let pool = ThreadPool::new(3);
        for isa in Isa::supported() {
            for (m, d) in [(1, 1), (3, 7), (2, 576), (5, 33), (64, 1000), (300, 129)] {
                let x: Vec<f32> = (0..m * d)
                    .map(|i| ((i * 7919 % 263) as f32 - 131.0) / 50.0)
                    .collect();
                let w: Vec<f32> = (0..d).map(|i| 0.5 + (i % 13) as f32 / 10.0).collect();
                let mut want = vec![0f32; m * d];
                rms_norm_ref(&x, &w, 1e-6, &mut want);
                let mut got = vec![0f32; m * d];
                rms_norm(isa, &pool, &x, &w, 1e-6, &mut got);
                for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                        "{isa} {m}x{d} [{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}
