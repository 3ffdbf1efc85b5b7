//! Q8_0: 32 values as i8 with one f16 scale.

use super::BlockFormat;
use crate::DType;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml `block_q8_0`: `d`, then 32 signed quants; value = d·q.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; 32],
}

impl BlockFormat for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;
    const BLOCK: usize = 32;

    /// ggml `quantize_row_q8_0_ref`: d = amax/127, q = roundf(x/d) via the reciprocal.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(32)) {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16::from_f32(d);
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = (v * id).round() as i8;
            }
        }
    }

    /// ggml `dequantize_row_q8_0`.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (y, &q) in y.iter_mut().zip(&b.qs) {
                *y = q as f32 * d;
            }
        }
    }
}

impl super::WeightFormat for BlockQ8_0 {
    type Act = BlockQ8_0;

    /// ggml `ggml_vec_dot_q8_0_q8_0_generic`: Σ d_w·d_x·Σ q_w·q_x.
    fn dot_ref(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        w.iter().zip(a).fold(0.0, |acc, (w, a)| {
            let s: i32 =
                w.qs.iter()
                    .zip(&a.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            acc + s as f32 * (w.d.to_f32() * a.d.to_f32())
        })
    }
}
