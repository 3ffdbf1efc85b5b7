//! Rotary position embeddings, as ggml's `rope` without YaRN extrapolation.
//!
//! Token `i` of `x [t, h, d]` sits at position `pos[i]`. For `j < n_dims / 2` the angle is
//! `θ_j = pos · freq_scale · freq_base^(−2j / n_dims)`, and one pair of values per `j` rotates by
//! it: `(x[2j], x[2j+1])` in [`RopeLayout::Normal`], `(x[j], x[j + n_dims/2])` in
//! [`RopeLayout::Neox`]. Values at and past `n_dims` are copied unchanged.

use crate::isa::Isa;
use crate::pool::ThreadPool;

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

/// [`rope_ref`] with one cosine/sine table per token shared by its heads, tokens split across
/// `pool` when there are many.
pub fn rope(isa: Isa, pool: &ThreadPool, a: &RopeArgs, x: &[f32], pos: &[u32], out: &mut [f32]) {
    let _ = (isa, pool);
    a.check(x, pos, out);
    if a.d == 0 {
        return;
    }
    let half = a.n_dims / 2;
    let inv: Vec<f64> = (0..half).map(|j| a.inv_freq(j)).collect();
    let mut cos = vec![0f32; half];
    let mut sin = vec![0f32; half];
    for (i, (xt, yt)) in x
        .chunks_exact(a.h * a.d)
        .zip(out.chunks_exact_mut(a.h * a.d))
        .enumerate()
    {
        let p = f64::from(pos[i]) * f64::from(a.freq_scale);
        for j in 0..half {
            let (s, c) = (p * inv[j]).sin_cos();
            cos[j] = c as f32;
            sin[j] = s as f32;
        }
        for (xr, yr) in xt.chunks_exact(a.d).zip(yt.chunks_exact_mut(a.d)) {
            yr[a.n_dims..].copy_from_slice(&xr[a.n_dims..]);
            for j in 0..half {
                let (i0, i1) = a.pair(j);
                let (x0, x1) = (xr[i0], xr[i1]);
                yr[i0] = x0 * cos[j] - x1 * sin[j];
                yr[i1] = x0 * sin[j] + x1 * cos[j];
            }
        }
    }
}
