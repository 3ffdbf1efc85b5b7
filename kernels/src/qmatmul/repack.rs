//! Weights repacked into 16-row tiles: the layout every fast path reads.
//!
//! A tile holds 16 consecutive weight rows (the last one zero-padded) over the whole `k`. `k`
//! is cut into *chunks* of one activation block (32 values for Q8_0/Q4_0/Q4_1, 256 for the
//! K-quants), each chunk into *sub-blocks* of `S` values sharing a scale (32, or 16 for Q6_K).
//! A sub-block's codes are stored as groups of 4 values × 16 rows (64 bytes: row `r` at bytes
//! `4r..4r+4`), so one 64-byte vector times 4 broadcast activation bytes gives 16 row partial
//! sums (one `vpdpbusd`, four `sdot`). 4-bit formats keep two groups per vector: group `g` in
//! the low nibbles and group `g + S/8` in the high nibbles, so the tile is no larger than the
//! GGUF rows. Every code is unsigned (its format's offset `Z` is subtracted through activation
//! sums), except Q8_0's, which stay signed.
//!
//! A tile is `[codes of chunk 0, 1, …][header of chunk 0, 1, …]`, padded to 64 bytes: the codes
//! stay 64-byte aligned. A header holds the per-row scales of its chunk in the GGUF precision
//! (f16 scales, 6-bit or 8-bit sub-block scales), 16 rows side by side.
//!
//! Per chunk the kernels compute, for an activation row with scale `dx`, codes `x` and
//! sub-block sums `Σx`:
//! `y += dx · Σ_s [ d_s · Σ (code − Z)·x  ±  c_s · Σx ]` with `(d_s, c_s)` from [`Packed::scales`]
//! (minus for Q4_K's minimums, [`Packed::C_NEG`]).

use super::simd::QSimd;
use crate::quant::q4_k::scale_min_k4;
use crate::quant::{BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8_0, WeightFormat, QK_K};

/// Rows per tile.
pub(crate) const TR: usize = 16;

/// A weight format in the tiled layout.
pub(crate) trait Packed: WeightFormat {
    /// Values per sub-block (one scale).
    const S: usize;
    /// Sub-blocks per chunk (`BLOCK / S`).
    const SUBS: usize = Self::BLOCK / Self::S;
    /// Two codes per byte.
    const NIBBLES: bool;
    /// 6-bit codes: per pair of 16-value sub-blocks (8 groups), 4 vectors of low nibbles
    /// (group `g` in vector `g % 4` at bit `4·(g / 4)`) then 2 vectors of high 2-bit pairs
    /// (group `g` in vector `g % 2` at bit `2·(g / 2)`): 384 bytes per 32 values × 16 rows.
    const SIX: bool = false;
    /// Codes are signed bytes (Q8_0).
    const SIGNED: bool;
    /// Code offset: the weight is proportional to `code − Z`.
    const Z: i32;
    /// The format has a per-sub-block additive term `c_s · Σx`.
    const HAS_C: bool;
    /// The additive term is subtracted (`y −= c_s · Σx`): the activation sums are stored negated.
    const C_NEG: bool = false;
    /// Header bytes per chunk.
    const HEAD: usize;
    /// Code bytes per sub-block (16 rows).
    const SUB_BYTES: usize = if Self::SIX {
        Self::S * TR * 3 / 4
    } else {
        Self::S * TR / if Self::NIBBLES { 2 } else { 1 }
    };
    /// Code bytes per chunk.
    const CODES: usize = Self::SUB_BYTES * Self::SUBS;

    /// Writes chunk `c` of the tile: `rows` holds up to 16 blocks (one per row, the rest of the
    /// tile is zero), `codes` the chunk's `CODES` bytes, `head` its `HEAD` bytes (both zeroed).
    fn pack_chunk(rows: &[Self], codes: &mut [u8], head: &mut [u8]);

    /// The scale `d_s` and additive term `c_s` of sub-block `s` for the 16 rows.
    ///
    /// # Safety
    /// `head` points at a chunk header of this format; inlined into a wrapper with `Q`'s features.
    unsafe fn scales<Q: QSimd>(head: *const u8, s: usize) -> (Q::F, Q::F);
}

/// Places `code` for row `r`, value `i` of a sub-block of `s` values.
#[inline]
fn put(sub: &mut [u8], nibbles: bool, s: usize, r: usize, i: usize, code: u8) {
    let (g, j) = (i / 4, i % 4);
    if nibbles {
        let half = s / 8;
        sub[(g % half) * 64 + 4 * r + j] |= (code & 0xF) << (4 * (g / half));
    } else {
        sub[g * 64 + 4 * r + j] = code;
    }
}

/// Places 6-bit `code` for row `r`, value `i` (0..32) of a sub-block pair (384 bytes).
#[inline]
fn put6(pair: &mut [u8], r: usize, i: usize, code: u8) {
    let (g, j) = (i / 4, i % 4);
    pair[(g % 4) * 64 + 4 * r + j] |= (code & 0xF) << (4 * (g / 4));
    pair[256 + (g % 2) * 64 + 4 * r + j] |= (code >> 4) << (2 * (g / 2));
}

/// Writes 16 f16 values (row-major in the header) at `off`.
fn put_f16(head: &mut [u8], off: usize, r: usize, v: half::f16) {
    head[off + 2 * r..off + 2 * r + 2].copy_from_slice(&v.to_le_bytes());
}

/// Q4_0/Q4_1 element `e` of a block's 16 nibble bytes.
#[inline]
fn nib32(qs: &[u8; 16], e: usize) -> u8 {
    if e < 16 {
        qs[e] & 0xF
    } else {
        qs[e - 16] >> 4
    }
}

impl Packed for BlockQ8_0 {
    const S: usize = 32;
    const NIBBLES: bool = false;
    const SIGNED: bool = true;
    const Z: i32 = 0;
    const HAS_C: bool = false;
    const HEAD: usize = 32;

    fn pack_chunk(rows: &[Self], codes: &mut [u8], head: &mut [u8]) {
        for (r, b) in rows.iter().enumerate() {
            put_f16(head, 0, r, b.d);
            for (i, &q) in b.qs.iter().enumerate() {
                put(codes, false, 32, r, i, q as u8);
            }
        }
    }

    #[inline(always)]
    unsafe fn scales<Q: QSimd>(head: *const u8, _s: usize) -> (Q::F, Q::F) {
        (Q::load_f16(head), Q::zero_f())
    }
}

impl Packed for BlockQ4_0 {
    const S: usize = 32;
    const NIBBLES: bool = true;
    const SIGNED: bool = false;
    const Z: i32 = 8;
    const HAS_C: bool = false;
    const HEAD: usize = 32;

    fn pack_chunk(rows: &[Self], codes: &mut [u8], head: &mut [u8]) {
        for (r, b) in rows.iter().enumerate() {
            put_f16(head, 0, r, b.d);
            for i in 0..32 {
                put(codes, true, 32, r, i, nib32(&b.qs, i));
            }
        }
    }

    #[inline(always)]
    unsafe fn scales<Q: QSimd>(head: *const u8, _s: usize) -> (Q::F, Q::F) {
        (Q::load_f16(head), Q::zero_f())
    }
}

impl Packed for BlockQ4_1 {
    const S: usize = 32;
    const NIBBLES: bool = true;
    const SIGNED: bool = false;
    const Z: i32 = 0;
    const HAS_C: bool = true;
    const HEAD: usize = 64;

    fn pack_chunk(rows: &[Self], codes: &mut [u8], head: &mut [u8]) {
        for (r, b) in rows.iter().enumerate() {
            put_f16(head, 0, r, b.d);
            put_f16(head, 32, r, b.m);
            for i in 0..32 {
                put(codes, true, 32, r, i, nib32(&b.qs, i));
            }
        }
    }

    #[inline(always)]
    unsafe fn scales<Q: QSimd>(head: *const u8, _s: usize) -> (Q::F, Q::F) {
        (Q::load_f16(head), Q::load_f16(head.add(32)))
    }
}

impl Packed for BlockQ4K {
    const S: usize = 32;
    const NIBBLES: bool = true;
    const SIGNED: bool = false;
    const Z: i32 = 0;
    const HAS_C: bool = true;
    const C_NEG: bool = true;
    /// d (16 × f16), dmin (16 × f16), scales [8][16] u8, minimums [8][16] u8.
    const HEAD: usize = 32 + 32 + 128 + 128;

    fn pack_chunk(rows: &[Self], codes: &mut [u8], head: &mut [u8]) {
        for (r, b) in rows.iter().enumerate() {
            put_f16(head, 0, r, b.d);
            put_f16(head, 32, r, b.dmin);
            for s in 0..8 {
                let (sc, m) = scale_min_k4(s, &b.scales);
                head[64 + 16 * s + r] = sc;
                head[192 + 16 * s + r] = m;
                let q = &b.qs[32 * (s / 2)..32 * (s / 2) + 32];
                let sub = &mut codes[s * Self::SUB_BYTES..(s + 1) * Self::SUB_BYTES];
                for (i, &q) in q.iter().enumerate() {
                    put(sub, true, 32, r, i, (q >> (4 * (s % 2))) & 0xF);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn scales<Q: QSimd>(head: *const u8, s: usize) -> (Q::F, Q::F) {
        let d = Q::load_f16(head);
        let dmin = Q::load_f16(head.add(32));
        let sc = Q::load_u8f(head.add(64 + 16 * s));
        let m = Q::load_u8f(head.add(192 + 16 * s));
        (Q::mul(d, sc), Q::mul(dmin, m))
    }
}

/// The 256 6-bit codes (0..63) of a Q6_K block in value order (ggml `dequantize_row_q6_K`).
pub(crate) fn q6k_codes(b: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        let (ql, qh) = (&b.ql[64 * h..], &b.qh[32 * h..]);
        let q = &mut q[128 * h..];
        for i in 0..32 {
            q[i] = (ql[i] & 0xF) | ((qh[i] & 3) << 4);
            q[i + 32] = (ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4);
            q[i + 64] = (ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4);
            q[i + 96] = (ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4);
        }
    }
    q
}

impl Packed for BlockQ6K {
    const S: usize = 16;
    const NIBBLES: bool = false;
    const SIX: bool = true;
    const SIGNED: bool = false;
    const Z: i32 = 32;
    const HAS_C: bool = false;
    /// d (16 × f16), scales [16][16] i8.
    const HEAD: usize = 32 + 256;

    fn pack_chunk(rows: &[Self], codes: &mut [u8], head: &mut [u8]) {
        for (r, b) in rows.iter().enumerate() {
            put_f16(head, 0, r, b.d);
            for s in 0..16 {
                head[32 + 16 * s + r] = b.scales[s] as u8;
            }
            let q = q6k_codes(b);
            for (p, pair) in codes.chunks_exact_mut(384).enumerate() {
                for i in 0..32 {
                    put6(pair, r, i, q[32 * p + i]);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn scales<Q: QSimd>(head: *const u8, s: usize) -> (Q::F, Q::F) {
        let d = Q::load_f16(head);
        let sc = Q::load_i8f(head.add(32 + 16 * s));
        (Q::mul(d, sc), Q::zero_f())
    }
}

/// Bytes of one packed tile for `k` values (a multiple of the block), padded to 64.
pub(crate) fn tile_bytes<P: Packed>(k: usize) -> usize {
    let chunks = k / P::BLOCK;
    (chunks * (P::CODES + P::HEAD)).next_multiple_of(64)
}

/// Packs tile `t` of `w` (`n` rows of `kb` blocks) into `out` (`tile_bytes` zeroed bytes).
pub(crate) fn pack_tile<P: Packed>(w: &[P], n: usize, kb: usize, t: usize, out: &mut [u8]) {
    let r0 = t * TR;
    let rows = TR.min(n - r0);
    let (codes, heads) = out.split_at_mut(kb * P::CODES);
    let mut col: Vec<P> = Vec::with_capacity(TR);
    for c in 0..kb {
        col.clear();
        col.extend((0..rows).map(|r| w[(r0 + r) * kb + c]));
        P::pack_chunk(
            &col,
            &mut codes[c * P::CODES..(c + 1) * P::CODES],
            &mut heads[c * P::HEAD..(c + 1) * P::HEAD],
        );
    }
}
