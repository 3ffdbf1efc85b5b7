//! Q4_1: 32 values as 4-bit codes with an f16 scale and an f16 minimum.

use super::BlockFormat;
use crate::DType;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml `block_q4_1`: `d`, `m`, then 16 bytes of nibbles (as Q4_0); value = d·q + m.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Packed nibbles.
    pub qs: [u8; 16],
}

impl BlockFormat for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;
    const BLOCK: usize = 32;

    /// ggml `quantize_row_q4_1_ref`: d = (max − min)/15, q = min(15, (i8)((x − min)·id + 0.5)).
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(32)) {
            let (mut min, mut max) = (f32::MAX, -f32::MAX);
            for &v in x {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16::from_f32(d);
            b.m = f16::from_f32(min);
            let code = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
            for j in 0..16 {
                b.qs[j] = code(x[j]) | (code(x[j + 16]) << 4);
            }
        }
    }

    /// ggml `dequantize_row_q4_1`.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let (d, m) = (b.d.to_f32(), b.m.to_f32());
            for j in 0..16 {
                y[j] = (b.qs[j] & 0xF) as f32 * d + m;
                y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
            }
        }
    }
}

impl super::WeightFormat for BlockQ4_1 {
    type Act = super::BlockQ8_0;

    /// Σ d_w·d_x·Σ q_w·q_x + m_w·d_x·Σ q_x (ggml pairs Q4_1 with Q8_1, which carries d_x·Σ q_x;
    /// here the sum is taken from the Q8_0 block).
    fn dot_ref(w: &[Self], a: &[super::BlockQ8_0]) -> f32 {
        w.iter().zip(a).fold(0.0, |acc, (w, a)| {
            let mut s = 0i32;
            for j in 0..16 {
                s += (w.qs[j] & 0xF) as i32 * a.qs[j] as i32;
                s += (w.qs[j] >> 4) as i32 * a.qs[j + 16] as i32;
            }
            let sx: i32 = a.qs.iter().map(|&q| q as i32).sum();
            let dx = a.d.to_f32();
            acc + s as f32 * (w.d.to_f32() * dx) + w.m.to_f32() * (dx * sx as f32)
        })
    }
}
