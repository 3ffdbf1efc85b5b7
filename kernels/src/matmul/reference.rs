//! Scalar reference for float matmul: the truth every SIMD path is tested against.

use super::Weights;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`, one dot product at a time, f32 accumulation.
pub fn matmul(x: &[f32], w: Weights<'_>, y: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(x.len(), m * k, "x must be [m, k]");
    assert_eq!(w.len(), n * k, "w must be [n, k]");
    assert_eq!(y.len(), m * n, "y must be [m, n]");
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let r = j * k..(j + 1) * k;
            y[i * n + j] = match w {
                Weights::F32(w) => dot(xr, w[r].iter().copied()),
                Weights::F16(w) => dot(xr, w[r].iter().map(|v| v.to_f32())),
                Weights::BF16(w) => dot(xr, w[r].iter().map(|v| v.to_f32())),
            };
        }
    }
}

fn dot(x: &[f32], w: impl Iterator<Item = f32>) -> f32 {
    x.iter()
        .zip(w)
        .fold(0.0f32, |acc, (&a, b)| a.mul_add(b, acc))
}
