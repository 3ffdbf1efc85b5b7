//! Q8_K: the K-quants' activation format, 256 values as i8 with an f32 scale and block sums.

use super::{nearest_int, BlockFormat, QK_K};
use crate::DType;
use bytemuck::{Pod, Zeroable};

/// ggml `block_q8_K`: f32 `d`, 256 quants, and the sums of each 16 quants; value = d·q.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of each group of 16 quants.
    pub bsums: [i16; QK_K / 16],
}

impl BlockFormat for BlockQ8K {
    const DTYPE: DType = DType::Q8_K;
    const BLOCK: usize = QK_K;

    /// ggml `quantize_row_q8_K_ref`: iscale = −127/max (max the signed value of largest
    /// magnitude), q = min(127, nearest_int(iscale·x)), d = 1/iscale.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                *b = BlockQ8K::zeroed();
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| v as i16).sum();
            }
            b.d = 1.0 / iscale;
        }
    }

    /// ggml `dequantize_row_q8_K`.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            for (y, &q) in y.iter_mut().zip(&b.qs) {
                *y = b.d * q as f32;
            }
        }
    }
}
