//! Softmax attention (SPEC §6): GQA/MQA, causal and sliding-window masks, explicit key
//! positions, per-head sink logits, scale and logit softcap, K/V in F32, F16, Q8_0 or Q4_0.
//!
//! Layouts are token-major as in ggml/llama: `q [t_q, h_q, d]`, `k [t_k, h_kv, d]`,
//! `v [t_k, h_kv, d_v]`, output `[t_q, h_q, d_v]` f32. Query head `h` reads KV head
//! `h / (h_q / h_kv)`.

use crate::quant::{BlockQ4_0, BlockQ8_0};
use half::f16;

pub mod flash;
pub mod reference;
pub(crate) mod simd;

/// Keys or values in one of the formats attention reads directly (no dequantized copy).
#[derive(Clone, Copy, Debug)]
pub enum KvData<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// f16 rows.
    F16(&'a [f16]),
    /// Q8_0 blocks along the head dimension.
    Q8_0(&'a [BlockQ8_0]),
    /// Q4_0 blocks along the head dimension.
    Q4_0(&'a [BlockQ4_0]),
}

impl KvData<'_> {
    /// Number of values held.
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(v) => v.len(),
            KvData::F16(v) => v.len(),
            KvData::Q8_0(b) => b.len() * 32,
            KvData::Q4_0(b) => b.len() * 32,
        }
    }

    /// True when no values are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the `dim` values of row `row` (a row is one head of one token) into `out`.
    #[inline]
    pub fn row_f32(&self, row: usize, dim: usize, out: &mut [f32]) {
        let r = row * dim..(row + 1) * dim;
        match self {
            KvData::F32(v) => out.copy_from_slice(&v[r]),
            KvData::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[r]) {
                    *o = x.to_f32();
                }
            }
            KvData::Q8_0(b) => {
                for (blk, o) in b[r.start / 32..r.end / 32]
                    .iter()
                    .zip(out.chunks_exact_mut(32))
                {
                    let d = blk.d.to_f32();
                    for (o, &q) in o.iter_mut().zip(&blk.qs) {
                        *o = q as f32 * d;
                    }
                }
            }
            KvData::Q4_0(b) => {
                for (blk, o) in b[r.start / 32..r.end / 32]
                    .iter()
                    .zip(out.chunks_exact_mut(32))
                {
                    let d = blk.d.to_f32();
                    for j in 0..16 {
                        o[j] = ((blk.qs[j] & 0xF) as i32 - 8) as f32 * d;
                        o[j + 16] = ((blk.qs[j] >> 4) as i32 - 8) as f32 * d;
                    }
                }
            }
        }
    }

    /// Dot product of row `row` with `q` (`q.len()` values), reading the row's blocks directly.
    #[inline]
    pub fn dot_row(&self, row: usize, q: &[f32]) -> f32 {
        let dim = q.len();
        let r = row * dim..(row + 1) * dim;
        match self {
            KvData::F32(v) => v[r].iter().zip(q).map(|(a, b)| a * b).sum(),
            KvData::F16(v) => v[r].iter().zip(q).map(|(a, b)| a.to_f32() * b).sum(),
            KvData::Q8_0(b) => b[r.start / 32..r.end / 32]
                .iter()
                .zip(q.chunks_exact(32))
                .map(|(blk, q)| {
                    let s: f32 = blk.qs.iter().zip(q).map(|(&a, b)| a as f32 * b).sum();
                    s * blk.d.to_f32()
                })
                .sum(),
            KvData::Q4_0(b) => b[r.start / 32..r.end / 32]
                .iter()
                .zip(q.chunks_exact(32))
                .map(|(blk, q)| {
                    let mut s = 0.0f32;
                    for j in 0..16 {
                        s += ((blk.qs[j] & 0xF) as i32 - 8) as f32 * q[j];
                        s += ((blk.qs[j] >> 4) as i32 - 8) as f32 * q[j + 16];
                    }
                    s * blk.d.to_f32()
                })
                .sum(),
        }
    }

    /// `acc += p · row`, reading the row's blocks directly.
    #[inline]
    pub fn axpy_row(&self, row: usize, p: f32, acc: &mut [f32]) {
        let dim = acc.len();
        let r = row * dim..(row + 1) * dim;
        match self {
            KvData::F32(v) => acc.iter_mut().zip(&v[r]).for_each(|(a, x)| *a += p * x),
            KvData::F16(v) => acc
                .iter_mut()
                .zip(&v[r])
                .for_each(|(a, x)| *a += p * x.to_f32()),
            KvData::Q8_0(b) => {
                for (blk, a) in b[r.start / 32..r.end / 32]
                    .iter()
                    .zip(acc.chunks_exact_mut(32))
                {
                    let pd = p * blk.d.to_f32();
                    a.iter_mut()
                        .zip(&blk.qs)
                        .for_each(|(a, &q)| *a += pd * q as f32);
                }
            }
            KvData::Q4_0(b) => {
                for (blk, a) in b[r.start / 32..r.end / 32]
                    .iter()
                    .zip(acc.chunks_exact_mut(32))
                {
                    let pd = p * blk.d.to_f32();
                    for j in 0..16 {
                        a[j] += pd * ((blk.qs[j] & 0xF) as i32 - 8) as f32;
                        a[j + 16] += pd * ((blk.qs[j] >> 4) as i32 - 8) as f32;
                    }
                }
            }
        }
    }
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Queries.
    pub t_q: usize,
    /// Query heads (a multiple of `h_kv`).
    pub h_q: usize,
    /// Keys (and values).
    pub t_k: usize,
    /// Key/value heads.
    pub h_kv: usize,
    /// Query/key head dimension.
    pub d: usize,
    /// Value head dimension.
    pub d_v: usize,
}

impl AttnShape {
    /// Panics unless `q [t_q, h_q, d]`, `k [t_k, h_kv, d]`, `v [t_k, h_kv, d_v]` and
    /// `out [t_q, h_q, d_v]` have the lengths this shape implies (callers validate first).
    pub fn assert_lens(&self, q: &[f32], k: KvData<'_>, v: KvData<'_>, out: &[f32]) {
        let s = self;
        assert_eq!(q.len(), s.t_q * s.h_q * s.d, "q must be [t_q, h_q, d]");
        assert_eq!(k.len(), s.t_k * s.h_kv * s.d, "k must be [t_k, h_kv, d]");
        assert_eq!(
            v.len(),
            s.t_k * s.h_kv * s.d_v,
            "v must be [t_k, h_kv, d_v]"
        );
        assert_eq!(
            out.len(),
            s.t_q * s.h_q * s.d_v,
            "out must be [t_q, h_q, d_v]"
        );
    }
}

/// Masking and scaling of one attention call (SPEC §6), with the scale already resolved.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams<'a> {
    /// A key is visible only at or before the query's position.
    pub causal: bool,
    /// Sliding window W: a key is visible only when `(query position) − (key position) < W`.
    pub window: Option<usize>,
    /// Absolute position of query 0 (query i sits at `q_pos0 + i`).
    pub q_pos0: usize,
    /// Position of each key (`t_k` entries), else key j sits at j.
    pub key_positions: Option<&'a [u32]>,
    /// Per-query-head sink logit added as one extra column of the softmax denominator.
    pub sinks: Option<&'a [f32]>,
    /// Logit scale (usually 1/√d).
    pub scale: f32,
    /// Logit softcap c: logits become c·tanh(logit / c).
    pub softcap: Option<f32>,
}

impl AttnParams<'_> {
    /// Position of key `j`.
    #[inline]
    pub fn key_pos(&self, j: usize) -> i64 {
        match self.key_positions {
            Some(p) => p[j] as i64,
            None => j as i64,
        }
    }

    /// True when a query at absolute position `p` sees a key at position `kp`.
    #[inline]
    pub fn visible(&self, p: i64, kp: i64) -> bool {
        (!self.causal || kp <= p) && self.window.is_none_or(|w| p - kp < w as i64)
    }

    /// The range of key indices a query at position `p` can see when keys sit at their
    /// indices (no explicit positions): every other key is skipped without being visited.
    #[inline]
    pub fn key_range(&self, p: i64, t_k: usize) -> std::ops::Range<usize> {
        if self.key_positions.is_some() {
            return 0..t_k;
        }
        let hi = if self.causal {
            (p + 1).clamp(0, t_k as i64) as usize
        } else {
            t_k
        };
        let lo = match self.window {
            Some(w) => (p - w as i64 + 1).clamp(0, t_k as i64) as usize,
            None => 0,
        };
        lo.min(hi)..hi
    }

    /// Applies the softcap to a scaled logit.
    #[inline]
    pub fn cap(&self, s: f32) -> f32 {
        match self.softcap {
            Some(c) if c > 0.0 => c * (s / c).tanh(),
            _ => s,
        }
    }
}
