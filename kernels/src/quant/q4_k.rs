//! Q4_K: 256-value super-blocks of eight 32-value sub-blocks, 4-bit codes with 6-bit sub-block
//! scales and minimums.

use super::{nearest_int, BlockFormat, QK_K};
use crate::DType;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml `block_q4_K`: super-block scale `d` and minimum scale `dmin`, 12 bytes of packed 6-bit
/// sub-block scales/minimums, 128 bytes of nibbles (64 values per 32 bytes: low nibbles first).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Scale of the sub-block scales.
    pub d: f16,
    /// Scale of the sub-block minimums.
    pub dmin: f16,
    /// Packed 6-bit scales and minimums.
    pub scales: [u8; 12],
    /// Packed nibbles.
    pub qs: [u8; QK_K / 2],
}

/// ggml `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j`.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// ggml `make_qkx2_quants` (use_mad = false): an asymmetric scale and minimum for `x` under
/// `weights`, searched over `nstep + 1` candidate scales. Returns (scale, −min).
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

impl BlockFormat for BlockQ4K {
    const DTYPE: DType = DType::Q4_K;
    const BLOCK: usize = QK_K;

    /// ggml `quantize_row_q4_K_ref`.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 32];
        let mut weights = [0.0f32; 32];
        for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
            let mut scales = [0.0f32; 8];
            let mut mins = [0.0f32; 8];
            let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
            for j in 0..8 {
                let xs = &x[32 * j..32 * j + 32];
                let sum_x2 = xs.iter().fold(0.0f32, |a, &v| a + v * v);
                let av_x = (sum_x2 / 32.0).sqrt();
                for (w, &v) in weights.iter_mut().zip(xs) {
                    *w = av_x + v.abs();
                }
                let (s, m) = make_qkx2_quants(
                    15,
                    xs,
                    &weights,
                    &mut l[32 * j..32 * j + 32],
                    &mut laux,
                    -1.0,
                    0.1,
                    20,
                );
                scales[j] = s;
                mins[j] = m;
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            let inv_scale = if max_scale > 0.0 {
                63.0 / max_scale
            } else {
                0.0
            };
            let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
            b.scales = [0; 12];
            for j in 0..8 {
                let ls = nearest_int(inv_scale * scales[j]).min(63) as u8;
                let lm = nearest_int(inv_min * mins[j]).min(63) as u8;
                if j < 4 {
                    b.scales[j] = ls;
                    b.scales[j + 4] = lm;
                } else {
                    b.scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                    b.scales[j - 4] |= (ls >> 4) << 6;
                    b.scales[j] |= (lm >> 4) << 6;
                }
            }
            b.d = f16::from_f32(max_scale / 63.0);
            b.dmin = f16::from_f32(max_min / 63.0);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &b.scales);
                let d = b.d.to_f32() * sc as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = b.dmin.to_f32() * m as f32;
                for ii in 0..32 {
                    l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
                }
            }
            for (q, l) in b.qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
                for i in 0..32 {
                    q[i] = l[i] | (l[i + 32] << 4);
                }
            }
        }
    }

    /// ggml `dequantize_row_q4_K`.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
            for (c, (q, y)) in
                b.qs.chunks_exact(32)
                    .zip(y.chunks_exact_mut(64))
                    .enumerate()
            {
                let (sc1, m1) = scale_min_k4(2 * c, &b.scales);
                let (sc2, m2) = scale_min_k4(2 * c + 1, &b.scales);
                let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
                let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
                for i in 0..32 {
                    y[i] = d1 * (q[i] & 0xF) as f32 - m1;
                    y[i + 32] = d2 * (q[i] >> 4) as f32 - m2;
                }
            }
        }
    }
}

impl super::WeightFormat for BlockQ4K {
    type Act = super::BlockQ8K;

    /// ggml `ggml_vec_dot_q4_K_q8_K_generic`: per super-block
    /// d_x·d·Σ_j sc_j·Σ q_w·q_x − d_x·dmin·Σ_j m_j·(Σ q_x over sub-block j).
    fn dot_ref(w: &[Self], a: &[super::BlockQ8K]) -> f32 {
        w.iter().zip(a).fold(0.0, |acc, (w, a)| {
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &w.scales);
                let q = &w.qs[32 * (j / 2)..32 * (j / 2) + 32];
                let x = &a.qs[32 * j..32 * j + 32];
                let shift = 4 * (j % 2);
                let s: i32 = q
                    .iter()
                    .zip(x)
                    .map(|(&q, &x)| ((q >> shift) & 0xF) as i32 * x as i32)
                    .sum();
                sumi += sc as i32 * s;
                summ += m as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
            }
            acc + a.d * w.d.to_f32() * sumi as f32 - a.d * w.dmin.to_f32() * summ as f32
        })
    }
}
