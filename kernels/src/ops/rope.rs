//! Rotary position embeddings, as ggml's `rope` without YaRN extrapolation.
//!
//! Token `i` of `x [t, h, d]` sits at position `pos[i]`. For `j < n_dims / 2` the angle is
//! `θ_j = pos · freq_scale · freq_base^(−2j / n_dims)`, and one pair of values per `j` rotates by
//! it: `(x[2j], x[2j+1])` in [`RopeLayout::Normal`], `(x[j], x[j + n_dims/2])` in
//! [`RopeLayout::Neox`]. Values at and past `n_dims` are copied unchanged.

use super::simd::{par_units, per_isa, OpsSimd};
use crate::isa::Isa;
use crate::pool::ThreadPool;
use std::sync::{Arc, Mutex};

/// Which pairs of a head rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs `(x[2j], x[2j+1])` (ggml `GGML_ROPE_TYPE_NORMAL`).
    Normal,
    /// Pairs half a rotation apart, `(x[j], x[j + n_dims/2])` (ggml `GGML_ROPE_TYPE_NEOX`).
    Neox,
}

/// The shape and frequencies of one rope call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeArgs {
    /// Tokens.
    pub t: usize,
    /// Heads per token.
    pub h: usize,
    /// Values per head.
    pub d: usize,
    /// Leading values of each head that rotate (even, ≤ `d`).
    pub n_dims: usize,
    /// Pair layout.
    pub layout: RopeLayout,
    /// `freq_base` (10000 for Llama).
    pub freq_base: f32,
    /// `freq_scale` (1 unless positions are interpolated).
    pub freq_scale: f32,
}

impl RopeArgs {
    fn check(&self, x: &[f32], pos: &[u32], out: &[f32]) {
        assert!(
            self.n_dims.is_multiple_of(2) && self.n_dims <= self.d,
            "n_dims"
        );
        assert_eq!(x.len(), self.t * self.h * self.d, "x length");
        assert_eq!(out.len(), x.len(), "out length");
        assert_eq!(pos.len(), self.t, "positions");
    }

    /// Angle step `freq_base^(−2/n_dims)` per pair, in f64.
    fn inv_freq(&self, j: usize) -> f64 {
        f64::from(self.freq_base).powf(-2.0 * j as f64 / self.n_dims as f64)
    }

    /// Index pair of rotation `j`.
    #[inline]
    fn pair(&self, j: usize) -> (usize, usize) {
        match self.layout {
            RopeLayout::Normal => (2 * j, 2 * j + 1),
            RopeLayout::Neox => (j, j + self.n_dims / 2),
        }
    }
}

/// Scalar reference: every angle, cosine and sine in f64, the rotation rounded once to f32.
pub fn rope_ref(a: &RopeArgs, x: &[f32], pos: &[u32], out: &mut [f32]) {
    a.check(x, pos, out);
    if a.d == 0 {
        return;
    }
    for (i, (xt, yt)) in x
        .chunks_exact(a.h * a.d)
        .zip(out.chunks_exact_mut(a.h * a.d))
        .enumerate()
    {
        let p = f64::from(pos[i]) * f64::from(a.freq_scale);
        for (xr, yr) in xt.chunks_exact(a.d).zip(yt.chunks_exact_mut(a.d)) {
            yr[a.n_dims..].copy_from_slice(&xr[a.n_dims..]);
            for j in 0..a.n_dims / 2 {
                let (s, c) = (p * a.inv_freq(j)).sin_cos();
                let (i0, i1) = a.pair(j);
                let (x0, x1) = (f64::from(xr[i0]), f64::from(xr[i1]));
                yr[i0] = (x0 * c - x1 * s) as f32;
                yr[i1] = (x0 * s + x1 * c) as f32;
            }
        }
    }
}

/// Values per pool task of [`rope`].
const ROPE_PAR_MIN: usize = 1 << 13;

/// What a cosine/sine table depends on: the rotated width, the frequencies and the positions.
#[derive(PartialEq)]
struct TableKey {
    n_dims: usize,
    freq_base: u32,
    freq_scale: u32,
    pos: Vec<u32>,
}

/// The last few tables built: a decoder ropes q and k of every layer at the same positions, so
/// all but the first call of a step reuse the table.
static TABLES: Mutex<Vec<(TableKey, Arc<Vec<f32>>)>> = Mutex::new(Vec::new());
/// Tables kept.
const TABLES_KEPT: usize = 4;
/// Largest table kept (values): long prompts' tables are rebuilt rather than held.
const TABLE_MAX_CACHED: usize = 1 << 20;

/// Per token `[cos θ_0 … cos θ_{n/2−1}, sin θ_0 … sin θ_{n/2−1}]` (f64 trigonometry rounded to
/// f32; `t × n_dims` values), from a small cache of recent tables or built across `pool`. The
/// GPU kernels read the same table.
pub fn rope_table(pool: &ThreadPool, a: &RopeArgs, pos: &[u32]) -> Arc<Vec<f32>> {
    let key = TableKey {
        n_dims: a.n_dims,
        freq_base: a.freq_base.to_bits(),
        freq_scale: a.freq_scale.to_bits(),
        pos: pos.to_vec(),
    };
    {
        let cache = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return Arc::clone(t);
        }
    }
    let half = a.n_dims / 2;
    let inv: Vec<f64> = (0..half).map(|j| a.inv_freq(j)).collect();
    let mut t = vec![0f32; pos.len() * a.n_dims];
    // Trigonometry costs ~15 ns a pair: split long prompts across the pool.
    par_units(pool, &mut t, a.n_dims, 256, |t0, run| {
        for (i, row) in run.chunks_exact_mut(a.n_dims).enumerate() {
            let p = f64::from(pos[t0 + i]) * f64::from(a.freq_scale);
            let (c, s) = row.split_at_mut(half);
            for ((c, s), &f) in c.iter_mut().zip(s.iter_mut()).zip(&inv) {
                let (sv, cv) = (p * f).sin_cos();
                *c = cv as f32;
                *s = sv as f32;
            }
        }
    });
    let t = Arc::new(t);
    if t.len() > TABLE_MAX_CACHED {
        return t;
    }
    let mut cache = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= TABLES_KEPT {
        cache.remove(0);
    }
    cache.push((key, Arc::clone(&t)));
    t
}

/// [`rope_ref`] with one cosine/sine table per token (f64 trigonometry rounded to f32, cached
/// across calls at the same positions) shared by its heads, and the rotation in f32 vectors;
/// tokens split across `pool` when there are many.
pub fn rope(isa: Isa, pool: &ThreadPool, a: &RopeArgs, x: &[f32], pos: &[u32], out: &mut [f32]) {
    a.check(x, pos, out);
    let row = a.h * a.d;
    if row == 0 {
        return;
    }
    let table = if a.n_dims > 0 {
        rope_table(pool, a, pos)
    } else {
        Arc::new(Vec::new())
    };
    par_units(pool, out, row, ROPE_PAR_MIN.div_ceil(row), |t0, o| {
        let t = o.len() / row;
        let tab = &table[(t0 * a.n_dims).min(table.len())..((t0 + t) * a.n_dims).min(table.len())];
        rope_tokens(isa, a, &x[t0 * row..(t0 + t) * row], tab, o)
    });
}

per_isa!(fn rope_tokens(a: &RopeArgs, x: &[f32], table: &[f32], out: &mut [f32]) => rope_body);

#[inline(always)]
unsafe fn rope_body<S: OpsSimd>(a: &RopeArgs, x: &[f32], table: &[f32], out: &mut [f32]) {
    let (l, half, nd) = (S::LANES, a.n_dims / 2, a.n_dims);
    // Normal layout on vectors: cosines repeated per pair and sines signed (−s, +s), so that
    // y = x·C + swap_pairs(x)·S.
    let pairs = a.layout == RopeLayout::Normal && l >= 2;
    let width = if pairs { nd } else { 0 };
    let (mut cc, mut ss) = (vec![0f32; width], vec![0f32; width]);
    let row = a.h * a.d;
    for (i, (xt, yt)) in x
        .chunks_exact(row)
        .zip(out.chunks_exact_mut(row))
        .enumerate()
    {
        let (cos, sin) = table[i * nd..(i + 1) * nd].split_at(half);
        if pairs {
            for j in 0..half {
                cc[2 * j] = cos[j];
                cc[2 * j + 1] = cos[j];
                ss[2 * j] = -sin[j];
                ss[2 * j + 1] = sin[j];
            }
        }
        for (xr, yr) in xt.chunks_exact(a.d).zip(yt.chunks_exact_mut(a.d)) {
            yr[nd..].copy_from_slice(&xr[nd..]);
            let (xp, yp) = (xr.as_ptr(), yr.as_mut_ptr());
            // Pairs done with vectors; the rest below in scalar.
            let done = if pairs {
                let nv = nd / l * l;
                let mut k = 0;
                while k < nv {
                    let v = S::load(xp.add(k));
                    let r = S::mul(S::swap_pairs(v), S::load(ss.as_ptr().add(k)));
                    S::store(yp.add(k), S::fma(v, S::load(cc.as_ptr().add(k)), r));
                    k += l;
                }
                nv / 2
            } else if a.layout == RopeLayout::Neox {
                let nv = half / l * l;
                let mut j = 0;
                while j < nv {
                    let (x0, x1) = (S::load(xp.add(j)), S::load(xp.add(j + half)));
                    let (c, s) = (S::load(cos.as_ptr().add(j)), S::load(sin.as_ptr().add(j)));
                    S::store(yp.add(j), S::sub(S::mul(x0, c), S::mul(x1, s)));
                    S::store(yp.add(j + half), S::fma(x0, s, S::mul(x1, c)));
                    j += l;
                }
                nv
            } else {
                0
            };
            for j in done..half {
                let (i0, i1) = a.pair(j);
                let (x0, x1) = (xr[i0], xr[i1]);
                yr[i0] = x0 * cos[j] - x1 * sin[j];
                yr[i1] = x0 * sin[j] + x1 * cos[j];
            }
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
            for layout in [RopeLayout::Normal, RopeLayout::Neox] {
                for (t, h, d, n_dims) in [
                    (1, 1, 2, 2),
                    (1, 9, 64, 64),
                    (3, 2, 6, 4),
                    (5, 3, 34, 34),
                    (2, 2, 128, 96),
                    (70, 3, 64, 64),
                    (4, 1, 10, 0),
                ] {
                    let a = RopeArgs {
                        t,
                        h,
                        d,
                        n_dims,
                        layout,
                        freq_base: 10000.0,
                        freq_scale: 0.5,
                    };
                    let x: Vec<f32> = (0..t * h * d)
                        .map(|i| ((i * 7919 % 263) as f32 - 131.0) / 50.0)
                        .collect();
                    let pos: Vec<u32> = (0..t as u32).map(|i| i * 37 + 5).collect();
                    let (mut want, mut got) = (vec![0f32; x.len()], vec![0f32; x.len()]);
                    rope_ref(&a, &x, &pos, &mut want);
                    rope(isa, &pool, &a, &x, &pos, &mut got);
                    for (i, (p, q)) in want.iter().zip(&got).enumerate() {
                        assert!(
                            (p - q).abs() <= 2e-6 * p.abs().max(1.0),
                            "{isa} {layout:?} {t}x{h}x{d}/{n_dims} [{i}]: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }
}
