//! Q6_K: 256-value super-blocks of sixteen 16-value sub-blocks, 6-bit codes with 8-bit scales.

use super::{nearest_int, BlockFormat, QK_K};
use crate::DType;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// ggml `block_q6_K`: low 4 bits `ql`, high 2 bits `qh`, signed 8-bit sub-block `scales`, then
/// the f16 super-block scale `d`; value = d·scale·(q − 32).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits of each code.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of each code.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

/// ggml's `GROUP_MAX_EPS`: groups whose largest magnitude is below it quantize to zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml `make_qx_quants` with `rmse_type = 1` and no importance weights: a symmetric scale for
/// `x` with codes in `[-nmax, nmax)`, stored in `l` offset by `nmax`.
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let iscale = -(nmax as f32) / max;
    for (l, &v) in l.iter_mut().zip(x) {
        *l = (code(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (l, &v) in l.iter_mut().zip(x) {
                *l = (code(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

impl BlockFormat for BlockQ6K {
    const DTYPE: DType = DType::Q6_K;
    const BLOCK: usize = QK_K;

    /// ggml `quantize_row_q6_K_ref`.
    fn quantize_ref(x: &[f32], out: &mut [Self]) {
        let mut l = [0i8; QK_K];
        for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
            let mut scales = [0.0f32; QK_K / 16];
            let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
            for ib in 0..QK_K / 16 {
                let s =
                    make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
                scales[ib] = s;
                if s.abs() > max_abs_scale {
                    max_abs_scale = s.abs();
                    max_scale = s;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                *b = BlockQ6K::zeroed();
                continue;
            }
            let iscale = -128.0 / max_scale;
            b.d = f16::from_f32(1.0 / iscale);
            for (s, &v) in b.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * v).min(127) as i8;
            }
            for j in 0..QK_K / 16 {
                let d = b.d.to_f32() * b.scales[j] as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                    l[16 * j + ii] = (q + 32) as i8;
                }
            }
            for h in 0..2 {
                let l = &l[128 * h..128 * h + 128];
                let ql = &mut b.ql[64 * h..64 * h + 64];
                for i in 0..32 {
                    let q = |o: usize| l[i + o] as u8;
                    ql[i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
                    ql[i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
                    b.qh[32 * h + i] = (q(0) >> 4)
                        | ((q(32) >> 4) << 2)
                        | ((q(64) >> 4) << 4)
                        | ((q(96) >> 4) << 6);
                }
            }
        }
    }

    /// ggml `dequantize_row_q6_K`.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]) {
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = b.d.to_f32();
            for h in 0..2 {
                let (ql, qh) = (&b.ql[64 * h..], &b.qh[32 * h..]);
                let sc = &b.scales[8 * h..];
                let y = &mut y[128 * h..128 * h + 128];
                for i in 0..32 {
                    let is = i / 16;
                    let q1 = ((ql[i] & 0xF) | ((qh[i] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
                    y[i] = d * sc[is] as f32 * q1 as f32;
                    y[i + 32] = d * sc[is + 2] as f32 * q2 as f32;
                    y[i + 64] = d * sc[is + 4] as f32 * q3 as f32;
                    y[i + 96] = d * sc[is + 6] as f32 * q4 as f32;
                }
            }
        }
    }
}

impl super::WeightFormat for BlockQ6K {
    type Act = super::BlockQ8K;

    /// ggml `ggml_vec_dot_q6_K_q8_K_generic`: d_x·d·Σ_j scale_j·Σ (q_w − 32)·q_x.
    fn dot_ref(w: &[Self], a: &[super::BlockQ8K]) -> f32 {
        w.iter().zip(a).fold(0.0, |acc, (w, a)| {
            let mut q = [0i32; QK_K];
            for h in 0..2 {
                let (ql, qh) = (&w.ql[64 * h..], &w.qh[32 * h..]);
                let q = &mut q[128 * h..];
                for i in 0..32 {
                    q[i] = ((ql[i] & 0xF) | ((qh[i] & 3) << 4)) as i32 - 32;
                    q[i + 32] = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
                    q[i + 64] = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
                    q[i + 96] = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
                }
            }
            let sumi: i32 = (0..QK_K / 16)
                .map(|j| {
                    let s: i32 = (16 * j..16 * j + 16).map(|i| q[i] * a.qs[i] as i32).sum();
                    w.scales[j] as i32 * s
                })
                .sum();
            acc + a.d * w.d.to_f32() * sumi as f32
        })
    }
}
