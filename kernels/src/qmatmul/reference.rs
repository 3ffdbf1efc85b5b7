//! Scalar reference for quantized matmul: the truth every SIMD path is tested against.

use crate::quant::{BlockFormat, WeightFormat};
use bytemuck::Zeroable;

/// Quantizes the `m` rows of `x` (`[m, k]`) to `W`'s activation format, as ggml does once per
/// matmul (`quantize_row_q8_0` / `quantize_row_q8_K`).
pub fn quantize_activations<W: WeightFormat>(x: &[f32], m: usize, k: usize) -> Vec<W::Act> {
    assert_eq!(x.len(), m * k, "x must be [m, k]");
    let mut act = vec![W::Act::zeroed(); m * k / W::Act::BLOCK];
    W::Act::quantize_ref(x, &mut act);
    act
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`: quantized activations, one block dot product at a time.
pub fn qmatmul<W: WeightFormat>(x: &[f32], w: &[W], y: &mut [f32], m: usize, n: usize, k: usize) {
    let kb = k / W::BLOCK;
    assert_eq!(w.len(), n * kb, "w must be [n, k]");
    assert_eq!(y.len(), m * n, "y must be [m, n]");
    let act = quantize_activations::<W>(x, m, k);
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = W::dot_ref(&w[j * kb..(j + 1) * kb], &act[i * kb..(i + 1) * kb]);
        }
    }
}
