//! Compressed KV-cache storage and attention over it (SPEC §8), CPU side.
//!
//! One [`HeadStore`] holds the keys and values of one (layer, KV head): positions (ascending),
//! optional heavy-hitter scores, and the rows in their format. [`attend`] runs flash attention
//! directly on every head's storage (each head with its own keys and positions), folding the
//! dequantization into the dot products and, when asked, returning each key's attention
//! probability for score-based eviction.

use crate::quant::{BlockFormat, BlockQ4_0, BlockQ8_0};
use half::f16;

pub mod attend;
pub mod kivi;
pub mod simd;

pub use attend::{attend, CacheMask, CacheShape, ScoreOut};

/// Storage format of a KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvFmt {
    /// f16 rows.
    F16,
    /// ggml Q8_0 blocks along the head dimension.
    Q8_0,
    /// ggml Q4_0 blocks along the head dimension.
    Q4_0,
    /// KIVI: keys per channel over `group` tokens, values per token over `group` channels,
    /// `bits` = 2 or 4; at least the `residual` newest tokens stay f16.
    Kivi {
        /// Bits per code (2 or 4).
        bits: u32,
        /// Group length (tokens for keys, channels for values); a multiple of 16.
        group: usize,
        /// Newest tokens kept in f16.
        residual: usize,
    },
}

/// Keys of one head as the attention kernel reads them.
#[derive(Clone, Copy, Debug)]
pub enum KeyView<'a> {
    /// f16 rows `[n, d]`.
    F16(&'a [f16]),
    /// Q8_0 rows.
    Q8_0(&'a [BlockQ8_0]),
    /// Q4_0 rows.
    Q4_0(&'a [BlockQ4_0]),
    /// KIVI groups then f16 tail rows.
    Kivi(KiviKeys<'a>),
}

/// KIVI keys: channel-major groups (quantized, oldest first), then f16 rows.
#[derive(Clone, Copy, Debug)]
pub struct KiviKeys<'a> {
    /// Bits per code.
    pub bits: u32,
    /// Token slots per group.
    pub slots: usize,
    /// Tokens held by each group.
    pub counts: &'a [u32],
    /// Per group: `d` scales then `d` minimums.
    pub params: &'a [f16],
    /// Per group: `d` runs of `slots` codes.
    pub codes: &'a [u8],
    /// f16 rows of the newest tokens.
    pub tail: &'a [f16],
}

/// Values of one head as the attention kernel reads them.
#[derive(Clone, Copy, Debug)]
pub enum ValView<'a> {
    /// f16 rows `[n, dv]`.
    F16(&'a [f16]),
    /// Q8_0 rows.
    Q8_0(&'a [BlockQ8_0]),
    /// Q4_0 rows.
    Q4_0(&'a [BlockQ4_0]),
    /// KIVI rows then f16 tail rows.
    Kivi(KiviVals<'a>),
}

/// KIVI values: per-token rows (quantized, oldest first), then f16 rows.
#[derive(Clone, Copy, Debug)]
pub struct KiviVals<'a> {
    /// Bits per code.
    pub bits: u32,
    /// Channels per group.
    pub group: usize,
    /// Per row: (scale, min) per channel group.
    pub params: &'a [f16],
    /// Per row: one run of `dv` codes.
    pub codes: &'a [u8],
    /// f16 rows of the newest tokens.
    pub tail: &'a [f16],
}

/// One head's cache as [`attend`] reads it.
#[derive(Clone, Copy, Debug)]
pub struct HeadKv<'a> {
    /// Position of each key, ascending.
    pub pos: &'a [u32],
    /// Keys.
    pub keys: KeyView<'a>,
    /// Values.
    pub vals: ValView<'a>,
}

/// The keys and values of one (layer, KV head).
#[derive(Clone, Debug)]
pub struct HeadStore {
    fmt: KvFmt,
    d: usize,
    dv: usize,
    pos: Vec<u32>,
    score: Vec<f32>,
    scored: bool,
    // F16 rows (F16 format) or the f16 tail (KIVI).
    k16: Vec<f16>,
    v16: Vec<f16>,
    kq8: Vec<BlockQ8_0>,
    vq8: Vec<BlockQ8_0>,
    kq4: Vec<BlockQ4_0>,
    vq4: Vec<BlockQ4_0>,
    // KIVI quantized part.
    gcount: Vec<u32>,
    kpar: Vec<f16>,
    kcode: Vec<u8>,
    vpar: Vec<f16>,
    vcode: Vec<u8>,
}

/// Removes the rows (of `row` elements) whose index is not kept, in one pass.
fn retain_rows<T: Copy>(v: &mut Vec<T>, row: usize, keep: &[bool]) {
    let mut w = 0;
    for (i, &k) in keep.iter().enumerate() {
        if k {
            if w != i {
                v.copy_within(i * row..(i + 1) * row, w * row);
            }
            w += 1;
        }
    }
    v.truncate(w * row);
}

impl HeadStore {
    /// An empty head of `d`-wide keys and `dv`-wide values with room for `capacity` tokens;
    /// `scored` keeps a per-token score (heavy-hitter eviction).
    pub fn new(fmt: KvFmt, d: usize, dv: usize, scored: bool, capacity: usize) -> HeadStore {
        let mut h = HeadStore {
            fmt,
            d,
            dv,
            pos: Vec::with_capacity(capacity),
            score: Vec::with_capacity(if scored { capacity } else { 0 }),
            scored,
            k16: Vec::new(),
            v16: Vec::new(),
            kq8: Vec::new(),
            vq8: Vec::new(),
            kq4: Vec::new(),
            vq4: Vec::new(),
            gcount: Vec::new(),
            kpar: Vec::new(),
            kcode: Vec::new(),
            vpar: Vec::new(),
            vcode: Vec::new(),
        };
        match fmt {
            KvFmt::F16 => {
                h.k16.reserve_exact(capacity * d);
                h.v16.reserve_exact(capacity * dv);
            }
            KvFmt::Q8_0 => {
                h.kq8.reserve_exact(capacity * d / 32);
                h.vq8.reserve_exact(capacity * dv / 32);
            }
            KvFmt::Q4_0 => {
                h.kq4.reserve_exact(capacity * d / 32);
                h.vq4.reserve_exact(capacity * dv / 32);
            }
            KvFmt::Kivi {
                bits,
                group,
                residual,
            } => {
                let tail = (residual + 2 * group).min(capacity);
                h.k16.reserve_exact(tail * d);
                h.v16.reserve_exact(tail * dv);
                let q = capacity.saturating_sub(residual);
                let groups = q.div_ceil(group);
                h.gcount.reserve_exact(groups);
                h.kpar.reserve_exact(groups * 2 * d);
                h.kcode
                    .reserve_exact(groups * d * kivi::run_bytes(group, bits));
                h.vpar.reserve_exact(q * 2 * (dv / group));
                h.vcode.reserve_exact(q * kivi::run_bytes(dv, bits));
            }
        }
        h
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    /// True when no token is held.
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }

    /// Positions, oldest first.
    pub fn positions(&self) -> &[u32] {
        &self.pos
    }

    /// Heavy-hitter scores (one per token; empty when not scored).
    pub fn scores(&self) -> &[f32] {
        &self.score
    }

    /// Mutable heavy-hitter scores.
    pub fn scores_mut(&mut self) -> &mut [f32] {
        &mut self.score
    }

    /// Tokens in the KIVI quantized part.
    fn quantized(&self) -> usize {
        self.vpar.len() / (2 * (self.dv / self.group()).max(1))
    }

    fn group(&self) -> usize {
        match self.fmt {
            KvFmt::Kivi { group, .. } => group,
            _ => 32,
        }
    }

    /// Exact bytes held (reserved capacity included).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.pos.capacity() * 4
            + self.score.capacity() * 4
            + (self.k16.capacity() + self.v16.capacity()) * 2
            + (self.kq8.capacity() + self.vq8.capacity()) * size_of::<BlockQ8_0>()
            + (self.kq4.capacity() + self.vq4.capacity()) * size_of::<BlockQ4_0>()
            + self.gcount.capacity() * 4
            + (self.kpar.capacity() + self.vpar.capacity()) * 2
            + self.kcode.capacity()
            + self.vcode.capacity()
    }

    /// Appends `t` tokens at positions `pos0..pos0 + t`: `k` is `[t, d]`, `v` `[t, dv]`, all
    /// finite (the caller checks).
    pub fn append(&mut self, k: &[f32], v: &[f32], pos0: u32) {
        let t = k.len() / self.d;
        self.pos.extend((0..t as u32).map(|i| pos0 + i));
        if self.scored {
            self.score.extend(std::iter::repeat_n(0.0, t));
        }
        match self.fmt {
            KvFmt::F16 => {
                self.k16.extend(k.iter().map(|&x| f16::from_f32(x)));
                self.v16.extend(v.iter().map(|&x| f16::from_f32(x)));
            }
            KvFmt::Kivi { group, .. } => {
                // A group at a time, so the f16 tail never outgrows `residual + 2·group`.
                let (d, dv) = (self.d, self.dv);
                for i in (0..t).step_by(group) {
                    let e = (i + group).min(t);
                    self.k16
                        .extend(k[i * d..e * d].iter().map(|&x| f16::from_f32(x)));
                    self.v16
                        .extend(v[i * dv..e * dv].iter().map(|&x| f16::from_f32(x)));
                    self.flush();
                }
                return;
            }
            KvFmt::Q8_0 => {
                push_blocks(&mut self.kq8, k);
                push_blocks(&mut self.vq8, v);
            }
            KvFmt::Q4_0 => {
                push_blocks(&mut self.kq4, k);
                push_blocks(&mut self.vq4, v);
            }
        }
        self.flush();
    }

    /// KIVI: quantizes the oldest whole group of the f16 tail while the tail holds more than
    /// `residual + group` tokens.
    fn flush(&mut self) {
        let KvFmt::Kivi {
            bits,
            group,
            residual,
        } = self.fmt
        else {
            return;
        };
        let (d, dv) = (self.d, self.dv);
        let tail = self.k16.len() / d;
        let groups = tail.saturating_sub(residual) / group;
        if groups == 0 {
            return;
        }
        let rb = kivi::run_bytes(group, bits);
        let vb = kivi::run_bytes(dv, bits);
        let mut kf = vec![0f32; group * d];
        let mut vf = vec![0f32; dv];
        for g in 0..groups {
            let rows = &self.k16[g * group * d..(g + 1) * group * d];
            kf.iter_mut().zip(rows).for_each(|(o, x)| *o = x.to_f32());
            let p0 = self.kpar.len();
            self.kpar.resize(p0 + 2 * d, f16::ZERO);
            let c0 = self.kcode.len();
            self.kcode.resize(c0 + d * rb, 0);
            kivi::quantize_key_group(
                &kf,
                group,
                d,
                group,
                bits,
                &mut self.kpar[p0..],
                &mut self.kcode[c0..],
            );
            self.gcount.push(group as u32);
            for t in 0..group {
                let row = &self.v16[(g * group + t) * dv..][..dv];
                vf.iter_mut().zip(row).for_each(|(o, x)| *o = x.to_f32());
                let p0 = self.vpar.len();
                self.vpar.resize(p0 + 2 * (dv / group), f16::ZERO);
                let c0 = self.vcode.len();
                self.vcode.resize(c0 + vb, 0);
                kivi::quantize_value_row(
                    &vf,
                    group,
                    bits,
                    &mut self.vpar[p0..],
                    &mut self.vcode[c0..],
                );
            }
        }
        let n = groups * group;
        self.k16.drain(..n * d);
        self.v16.drain(..n * dv);
    }

    /// Keeps only the tokens `keep[i]` says (a quantized KIVI key group keeps its scales and
    /// minimums for the tokens left).
    pub fn retain(&mut self, keep: &[bool]) {
        debug_assert_eq!(keep.len(), self.len());
        if keep.iter().all(|&k| k) {
            return;
        }
        let (d, dv) = (self.d, self.dv);
        retain_rows(&mut self.pos, 1, keep);
        if self.scored {
            retain_rows(&mut self.score, 1, keep);
        }
        match self.fmt {
            KvFmt::F16 => {
                retain_rows(&mut self.k16, d, keep);
                retain_rows(&mut self.v16, dv, keep);
            }
            KvFmt::Q8_0 => {
                retain_rows(&mut self.kq8, d / 32, keep);
                retain_rows(&mut self.vq8, dv / 32, keep);
            }
            KvFmt::Q4_0 => {
                retain_rows(&mut self.kq4, d / 32, keep);
                retain_rows(&mut self.vq4, dv / 32, keep);
            }
            KvFmt::Kivi { bits, group, .. } => {
                let nq = self.quantized();
                let (kq, kt) = keep.split_at(nq);
                retain_rows(&mut self.k16, d, kt);
                retain_rows(&mut self.v16, dv, kt);
                retain_rows(&mut self.vpar, 2 * (dv / group), kq);
                retain_rows(&mut self.vcode, kivi::run_bytes(dv, bits), kq);
                let gb = d * kivi::run_bytes(group, bits);
                let mut keep_g = vec![true; self.gcount.len()];
                let mut t0 = 0;
                for (g, cnt) in self.gcount.iter_mut().enumerate() {
                    let n = *cnt as usize;
                    let kg = &kq[t0..t0 + n];
                    if kg.iter().any(|&k| !k) {
                        let codes = &mut self.kcode[g * gb..(g + 1) * gb];
                        *cnt = kivi::compact_key_group(codes, d, group, n, bits, |t| kg[t]) as u32;
                        keep_g[g] = *cnt > 0;
                    }
                    t0 += n;
                }
                retain_rows(&mut self.kpar, 2 * d, &keep_g);
                retain_rows(&mut self.kcode, gb, &keep_g);
                retain_rows(&mut self.gcount, 1, &keep_g);
            }
        }
    }

    /// Drops every token at or after `position`.
    pub fn truncate(&mut self, position: u32) {
        let keep: Vec<bool> = self.pos.iter().map(|&p| p < position).collect();
        self.retain(&keep);
    }

    /// Drops everything (capacity stays).
    pub fn clear(&mut self) {
        let keep = vec![false; self.len()];
        self.retain(&keep);
    }

    /// Writes keys `[len, d]` and values `[len, dv]` as f32 (rows in position order).
    pub fn dequantize(&self, k: &mut [f32], v: &mut [f32]) {
        let (d, dv) = (self.d, self.dv);
        match self.fmt {
            KvFmt::F16 => {
                k.iter_mut()
                    .zip(&self.k16)
                    .for_each(|(o, x)| *o = x.to_f32());
                v.iter_mut()
                    .zip(&self.v16)
                    .for_each(|(o, x)| *o = x.to_f32());
            }
            KvFmt::Q8_0 => {
                BlockQ8_0::dequantize_ref(&self.kq8, &mut k[..self.kq8.len() * 32]);
                BlockQ8_0::dequantize_ref(&self.vq8, &mut v[..self.vq8.len() * 32]);
            }
            KvFmt::Q4_0 => {
                BlockQ4_0::dequantize_ref(&self.kq4, &mut k[..self.kq4.len() * 32]);
                BlockQ4_0::dequantize_ref(&self.vq4, &mut v[..self.vq4.len() * 32]);
            }
            KvFmt::Kivi { bits, group, .. } => {
                let nq = self.quantized();
                let rb = kivi::run_bytes(group, bits);
                let mut t0 = 0;
                for (g, &cnt) in self.gcount.iter().enumerate() {
                    let par = &self.kpar[g * 2 * d..(g + 1) * 2 * d];
                    let codes = &self.kcode[g * d * rb..(g + 1) * d * rb];
                    for t in 0..cnt as usize {
                        for c in 0..d {
                            let q = kivi::get(&codes[c * rb..], t, bits) as f32;
                            k[(t0 + t) * d + c] = q * par[c].to_f32() + par[d + c].to_f32();
                        }
                    }
                    t0 += cnt as usize;
                }
                let vb = kivi::run_bytes(dv, bits);
                let ng = dv / group;
                for t in 0..nq {
                    let par = &self.vpar[t * 2 * ng..(t + 1) * 2 * ng];
                    let codes = &self.vcode[t * vb..(t + 1) * vb];
                    for c in 0..dv {
                        let g = c / group;
                        let q = kivi::get(codes, c, bits) as f32;
                        v[t * dv + c] = q * par[2 * g].to_f32() + par[2 * g + 1].to_f32();
                    }
                }
                for (o, x) in k[nq * d..].iter_mut().zip(&self.k16) {
                    *o = x.to_f32();
                }
                for (o, x) in v[nq * dv..].iter_mut().zip(&self.v16) {
                    *o = x.to_f32();
                }
            }
        }
    }

    /// The view [`attend`] reads.
    pub fn view(&self) -> HeadKv<'_> {
        let (keys, vals) = match self.fmt {
            KvFmt::F16 => (KeyView::F16(&self.k16), ValView::F16(&self.v16)),
            KvFmt::Q8_0 => (KeyView::Q8_0(&self.kq8), ValView::Q8_0(&self.vq8)),
            KvFmt::Q4_0 => (KeyView::Q4_0(&self.kq4), ValView::Q4_0(&self.vq4)),
            KvFmt::Kivi { bits, group, .. } => (
                KeyView::Kivi(KiviKeys {
                    bits,
                    slots: group,
                    counts: &self.gcount,
                    params: &self.kpar,
                    codes: &self.kcode,
                    tail: &self.k16,
                }),
                ValView::Kivi(KiviVals {
                    bits,
                    group,
                    params: &self.vpar,
                    codes: &self.vcode,
                    tail: &self.v16,
                }),
            ),
        };
        HeadKv {
            pos: &self.pos,
            keys,
            vals,
        }
    }
}

fn push_blocks<B: BlockFormat>(v: &mut Vec<B>, x: &[f32]) {
    let n = v.len();
    v.resize(n + x.len() / B::BLOCK, B::zeroed());
    B::quantize_ref(x, &mut v[n..]);
}
