//! Q4_0: 32 values as 4-bit codes around 8 with one f16 scale.

use super::BlockFormat;
use crate::DType;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml `block_q4_0`: `d`, then 16 bytes; element j in the low nibble of byte j, element j+16 in
/// the high nibble; value = d·(q − 8).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Packed nibbles.
    pub qs: [u8; 16],
}

impl BlockFormat for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    const BLOCK: usize = 32;

    /// ggml `quantize_row_q4_0_ref`: d = max/−8 with max the signed value of largest magnitude,
    /// q = min(15, (i8)(x·id + 8.5)).
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(32)) {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16::from_f32(d);
            let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
            for j in 0..16 {
                b.qs[j] = code(x[j]) | (code(x[j + 16]) << 4);
            }
        }
    }

    /// ggml `dequantize_row_q4_0`.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for j in 0..16 {
                y[j] = ((b.qs[j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
    }
}

impl super::WeightFormat for BlockQ4_0 {
    type Act = super::BlockQ8_0;

    /// ggml `ggml_vec_dot_q4_0_q8_0_generic`: Σ d_w·d_x·Σ (q_w − 8)·q_x.
    fn dot_ref(w: &[Self], a: &[super::BlockQ8_0]) -> f32 {
        w.iter().zip(a).fold(0.0, |acc, (w, a)| {
            let mut s = 0i32;
            for j in 0..16 {
                s += ((w.qs[j] & 0xF) as i32 - 8) * a.qs[j] as i32;
                s += ((w.qs[j] >> 4) as i32 - 8) * a.qs[j + 16] as i32;
            }
            acc + s as f32 * (w.d.to_f32() * a.d.to_f32())
        })
    }
}
