//! Flash attention over a compressed KV cache: each KV head has its own keys, values and
//! (ascending) positions. Work units are (KV head, query tile, key split); the query heads of a
//! GQA group and the queries of a tile share every read of a key or value row; key splits
//! (flash-decoding) are merged by log-sum-exp; only the keys a tile can see are visited.
//!
//! Dequantization is folded into the dot products: Q8_0/Q4_0/f16 rows are widened 16 lanes at a
//! time in registers; KIVI keys fold each group's per-channel scales into the query once per
//! group and run on the packed codes plus one correction term for the minimums; quantized values
//! fold their per-token scale into the softmax weight and add the minimums once per block.
//! With [`ScoreOut`], every key's softmax probability (summed over the rows asked for) comes out
//! of the same pass: the logits of the scored rows are kept and normalised after the merge.

use super::simd::{Scalar, Simd, Wide, L};
use super::{kivi, HeadKv, KeyView, ValView};
#[cfg(target_arch = "aarch64")]
use crate::arch::aarch64_neon::Neon;
#[cfg(target_arch = "x86_64")]
use crate::arch::x86_avx2::Avx2;
use crate::pool::ThreadPool;
use crate::quant::{BlockQ4_0, BlockQ8_0};
use crate::Isa;
use half::f16;
use std::sync::Mutex;

/// f16 → f32 without a call or a branch (finite inputs): the exponent is rebased by one
/// multiply, which also handles zeros and subnormals, and the sign bit is moved over.
#[inline(always)]
fn h2f(h: f16) -> f32 {
    let x = h.to_bits() as u32;
    let mag = f32::from_bits((x & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(mag.to_bits() | (x & 0x8000) << 16)
}

/// Row access of one storage format, as plain structs (not closures) so every call inlines
/// into the ISA wrapper. `row` gives 16 lanes of row `j` from channel `c`: dequantized values
/// for keys, codes for affine values (whose `params` give scale and minimum per channel group).
trait Rows<S: Simd>: Copy {
    fn row(self, s: S, j: usize, c: usize) -> S::V;
    #[inline(always)]
    fn params(self, _j: usize, _g: usize) -> (f32, f32) {
        (1.0, 0.0)
    }
    /// Key rows only: the four dot products of key `j` with the rows `q` (16-lane chunks of
    /// one head each), as lane vectors still to be summed. Formats override it to walk the row
    /// as fixed-size chunks, with one bounds check per key instead of several per chunk.
    #[inline(always)]
    fn dot4(self, s: S, j: usize, q: [&[[f32; L]]; 4]) -> [S::V; 4] {
        let mut acc = [s.zero(); 4];
        for ci in 0..q[0].len() {
            let kv = self.row(s, j, ci * L);
            for (a, qi) in acc.iter_mut().zip(q) {
                *a = s.fma(kv, s.load(&qi[ci]), *a);
            }
        }
        acc
    }
}

/// `acc[i] += k · q[i]` for one 16-lane key chunk and four query chunks.
#[inline(always)]
fn fma4<S: Simd>(s: S, k: S::V, q: [&[f32; L]; 4], acc: &mut [S::V; 4]) {
    for (a, qi) in acc.iter_mut().zip(q) {
        *a = s.fma(k, s.load(qi), *a);
    }
}

#[derive(Clone, Copy)]
struct F16R<'a>(&'a [f16], usize);
impl<S: Simd> Rows<S> for F16R<'_> {
    #[inline(always)]
    fn row(self, s: S, j: usize, c: usize) -> S::V {
        s.f16(&self.0[j * self.1 + c..])
    }
    #[inline(always)]
    fn dot4(self, s: S, j: usize, q: [&[[f32; L]]; 4]) -> [S::V; 4] {
        let (kc, _) = self.0[j * self.1..(j + 1) * self.1].as_chunks::<L>();
        let mut acc = [s.zero(); 4];
        for ((((k, a), b), c), d) in kc.iter().zip(q[0]).zip(q[1]).zip(q[2]).zip(q[3]) {
            fma4(s, s.f16(k), [a, b, c, d], &mut acc);
        }
        acc
    }
}

/// The query chunks of one 32-channel block: `q[i]` as pairs of 16-lane chunks.
#[inline(always)]
fn pairs(q: [&[[f32; L]]; 4]) -> [&[[[f32; L]; 2]]; 4] {
    q.map(|x| x.as_chunks::<2>().0)
}

#[derive(Clone, Copy)]
struct Q8K<'a>(&'a [BlockQ8_0], usize);
impl<S: Simd> Rows<S> for Q8K<'_> {
    #[inline(always)]
    fn row(self, s: S, j: usize, c: usize) -> S::V {
        let blk = &self.0[(j * self.1 + c) / 32];
        s.fma(s.i8(&blk.qs[c % 32..]), s.splat(h2f(blk.d)), s.zero())
    }
    #[inline(always)]
    fn dot4(self, s: S, j: usize, q: [&[[f32; L]]; 4]) -> [S::V; 4] {
        let nb = self.1 / 32;
        let [q0, q1, q2, q3] = pairs(q);
        let mut acc = [s.zero(); 4];
        for ((((blk, a), b), c), d) in self.0[j * nb..(j + 1) * nb]
            .iter()
            .zip(q0)
            .zip(q1)
            .zip(q2)
            .zip(q3)
        {
            let dd = s.splat(h2f(blk.d));
            let (lo, hi) = blk.qs.split_at(L);
            let k0 = s.fma(s.i8(lo), dd, s.zero());
            fma4(s, k0, [&a[0], &b[0], &c[0], &d[0]], &mut acc);
            let k1 = s.fma(s.i8(hi), dd, s.zero());
            fma4(s, k1, [&a[1], &b[1], &c[1], &d[1]], &mut acc);
        }
        acc
    }
}

#[derive(Clone, Copy)]
struct Q4K<'a>(&'a [BlockQ4_0], usize);
impl<S: Simd> Rows<S> for Q4K<'_> {
    #[inline(always)]
    fn row(self, s: S, j: usize, c: usize) -> S::V {
        let blk = &self.0[(j * self.1 + c) / 32];
        let dd = h2f(blk.d);
        s.fma(
            s.nib(&blk.qs, !c.is_multiple_of(32)),
            s.splat(dd),
            s.splat(-8.0 * dd),
        )
    }
    #[inline(always)]
    fn dot4(self, s: S, j: usize, q: [&[[f32; L]]; 4]) -> [S::V; 4] {
        let nb = self.1 / 32;
        let [q0, q1, q2, q3] = pairs(q);
        let mut acc = [s.zero(); 4];
        for ((((blk, a), b), c), d) in self.0[j * nb..(j + 1) * nb]
            .iter()
            .zip(q0)
            .zip(q1)
            .zip(q2)
            .zip(q3)
        {
            let dd = h2f(blk.d);
            let (sc, off) = (s.splat(dd), s.splat(-8.0 * dd));
            let k0 = s.fma(s.nib(&blk.qs, false), sc, off);
            fma4(s, k0, [&a[0], &b[0], &c[0], &d[0]], &mut acc);
            let k1 = s.fma(s.nib(&blk.qs, true), sc, off);
            fma4(s, k1, [&a[1], &b[1], &c[1], &d[1]], &mut acc);
        }
        acc
    }
}

#[derive(Clone, Copy)]
struct Q8V<'a>(&'a [BlockQ8_0], usize);
impl<S: Simd> Rows<S> for Q8V<'_> {
    #[inline(always)]
    fn row(self, s: S, j: usize, c: usize) -> S::V {
        s.i8(&self.0[(j * self.1 + c) / 32].qs[c % 32..])
    }
    #[inline(always)]
    fn params(self, j: usize, g: usize) -> (f32, f32) {
        (h2f(self.0[j * self.1 / 32 + g].d), 0.0)
    }
}

#[derive(Clone, Copy)]
struct Q4V<'a>(&'a [BlockQ4_0], usize);
impl<S: Simd> Rows<S> for Q4V<'_> {
    #[inline(always)]
    fn row(self, s: S, j: usize, c: usize) -> S::V {
        s.nib(&self.0[(j * self.1 + c) / 32].qs, !c.is_multiple_of(32))
    }
    #[inline(always)]
    fn params(self, j: usize, g: usize) -> (f32, f32) {
        let dd = h2f(self.0[j * self.1 / 32 + g].d);
        (dd, -8.0 * dd)
    }
}

#[derive(Clone, Copy)]
struct KiviV<'a> {
    v: super::KiviVals<'a>,
    ng: usize,
    vb: usize,
}
impl<S: Simd> Rows<S> for KiviV<'_> {
    #[inline(always)]
    fn row(self, s: S, j: usize, c: usize) -> S::V {
        let bits = self.v.bits as usize;
        let off = j * self.vb + c * bits / 8;
        s.codes(&self.v.codes[off..off + 2 * bits], self.v.bits)
    }
    #[inline(always)]
    fn params(self, j: usize, g: usize) -> (f32, f32) {
        let p = &self.v.params[j * 2 * self.ng + 2 * g..];
        (h2f(p[0]), h2f(p[1]))
    }
}

/// Queries per tile.
const QT: usize = 16;
/// Keys scored together before one rescale of the running state (a multiple of 16).
const KB: usize = 64;
/// Fewest keys worth a split of their own.
const MIN_SPLIT: usize = 512;

/// Sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheShape {
    /// Queries.
    pub t_q: usize,
    /// Query heads (a multiple of `h_kv`).
    pub h_q: usize,
    /// KV heads.
    pub h_kv: usize,
    /// Query/key head dimension (a multiple of 16).
    pub d: usize,
    /// Value head dimension (a multiple of 16).
    pub dv: usize,
}

/// Which keys a query sees, and the logit transform.
#[derive(Clone, Copy, Debug)]
pub struct CacheMask<'a> {
    /// A key is visible only at or before the query's position.
    pub causal: bool,
    /// The call's window W: `p − pos < W` (hides sinks too).
    pub window: Option<usize>,
    /// The cache's StreamingLLM rule `(window, sinks)`: `pos < sinks || p − pos < window`.
    pub cache_window: Option<(usize, usize)>,
    /// Position of query 0.
    pub q_pos0: usize,
    /// Per-query-head sink logits (one extra softmax column).
    pub sinks: Option<&'a [f32]>,
    /// Logit scale.
    pub scale: f32,
    /// Logit softcap.
    pub softcap: Option<f32>,
}

impl CacheMask<'_> {
    /// True when a query at position `p` sees a key at `kp`.
    #[inline(always)]
    pub fn visible(&self, p: i64, kp: i64) -> bool {
        (!self.causal || kp <= p)
            && self.window.is_none_or(|w| p - kp < w as i64)
            && self
                .cache_window
                .is_none_or(|(w, s)| kp < s as i64 || p - kp < w as i64)
    }

    /// As [`CacheMask::visible`] without the sinks' exception: monotone in both positions
    /// (a later key or an earlier query only loses visibility), so a block of keys is visible
    /// to a tile of queries when its corners are.
    #[inline(always)]
    fn visible_strict(&self, p: i64, kp: i64) -> bool {
        (!self.causal || kp <= p)
            && self.window.is_none_or(|w| p - kp < w as i64)
            && self.cache_window.is_none_or(|(w, _)| p - kp < w as i64)
    }

    #[inline(always)]
    fn cap(&self, s: f32) -> f32 {
        match self.softcap {
            Some(c) if c > 0.0 => c * (s / c).tanh(),
            _ => s,
        }
    }
}

/// Per-key probabilities wanted from a call: for queries `from_query..t_q`, each key's softmax
/// probability summed over those queries and the query heads of its group is added to
/// `scores[kv_head][key]` (`scores[g].len()` = keys of head `g`).
#[derive(Debug)]
pub struct ScoreOut<'a> {
    /// First query that counts.
    pub from_query: usize,
    /// One vector per KV head.
    pub scores: &'a mut [Vec<f32>],
}

struct Unit {
    g: usize,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

struct Ctx<'a> {
    q: &'a [f32],
    heads: &'a [HeadKv<'a>],
    s: CacheShape,
    m: &'a CacheMask<'a>,
    /// Per head, KIVI group starts (with the end of the quantized part last).
    gstart: Vec<Vec<usize>>,
    score_from: Option<usize>,
}

struct Partial {
    /// Per row: m, l, acc[dv].
    state: Vec<f32>,
    /// Logits of the scored rows over the unit's keys.
    logits: Vec<f32>,
}

/// Attention of `q [t_q, h_q, d]` over the cache heads (`heads.len() == h_kv`) into
/// `out [t_q, h_q, dv]`; a query that sees no key (and has no sink) gets zeros.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    pool: &ThreadPool,
    isa: Isa,
    q: &[f32],
    heads: &[HeadKv<'_>],
    s: CacheShape,
    m: &CacheMask<'_>,
    out: &mut [f32],
    mut scores: Option<ScoreOut<'_>>,
) {
    assert_eq!(q.len(), s.t_q * s.h_q * s.d, "q must be [t_q, h_q, d]");
    assert_eq!(
        out.len(),
        s.t_q * s.h_q * s.dv,
        "out must be [t_q, h_q, dv]"
    );
    assert_eq!(heads.len(), s.h_kv, "one view per KV head");
    assert!(
        s.d.is_multiple_of(L) && s.dv.is_multiple_of(L),
        "head dims must be multiples of 16"
    );
    let gstart = heads
        .iter()
        .map(|h| match h.keys {
            KeyView::Kivi(k) => {
                let mut v = Vec::with_capacity(k.counts.len() + 1);
                let mut t = 0;
                v.push(0);
                for &c in k.counts {
                    t += c as usize;
                    v.push(t);
                }
                v
            }
            _ => Vec::new(),
        })
        .collect();
    let ctx = Ctx {
        q,
        heads,
        s,
        m,
        gstart,
        score_from: scores.as_ref().map(|o| o.from_query),
    };
    let units = plan(&ctx, pool.threads());
    let partials: Vec<Mutex<Option<Partial>>> = units.iter().map(|_| Mutex::new(None)).collect();
    let path = Path::for_isa(isa);
    pool.run(units.len(), |u| {
        let p = path.run(&ctx, &units[u]);
        *partials[u].lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    });
    let parts: Vec<Partial> = partials
        .into_iter()
        .map(|p| {
            p.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Partial {
                    state: Vec::new(),
                    logits: Vec::new(),
                })
        })
        .collect();
    merge(&ctx, &units, &parts, out, scores.as_mut());
}

/// The vector path a call runs on: the token of the best ISA at or below the one asked for.
#[derive(Clone, Copy)]
enum Path {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx512(super::simd::Avx512),
    #[cfg(target_arch = "x86_64")]
    Avx2(Wide<Avx2, 2>),
    #[cfg(target_arch = "aarch64")]
    Neon(Wide<Neon, 4>),
}

impl Path {
    fn for_isa(isa: Isa) -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if isa == Isa::Avx512 {
                if let Some(t) = super::simd::Avx512::new() {
                    return Path::Avx512(t);
                }
            }
            if matches!(isa, Isa::Avx512 | Isa::Avx2) {
                if let Some(t) = Avx2::new() {
                    return Path::Avx2(Wide::new(t));
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        if isa == Isa::Neon {
            if let Some(t) = Neon::new() {
                return Path::Neon(Wide::new(t));
            }
        }
        let _ = isa;
        Path::Scalar
    }

    fn run(self, ctx: &Ctx<'_>, u: &Unit) -> Partial {
        match self {
            Path::Scalar => run_unit(Scalar, ctx, u),
            // SAFETY (all three): the token exists, so the CPU has every feature the wrapper
            // enables.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512(t) => unsafe { unit_avx512(t, ctx, u) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx2(t) => unsafe { unit_avx2(t, ctx, u) },
            #[cfg(target_arch = "aarch64")]
            Path::Neon(t) => unsafe { unit_neon(t, ctx, u) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
fn unit_avx512(t: super::simd::Avx512, ctx: &Ctx<'_>, u: &Unit) -> Partial {
    run_unit(t, ctx, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn unit_avx2(t: Wide<Avx2, 2>, ctx: &Ctx<'_>, u: &Unit) -> Partial {
    run_unit(t, ctx, u)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn unit_neon(t: Wide<Neon, 4>, ctx: &Ctx<'_>, u: &Unit) -> Partial {
    run_unit(t, ctx, u)
}

/// Index ranges of head `g` that queries `i0..i1` may see (the main range, then the sinks).
fn ranges(ctx: &Ctx<'_>, g: usize, i0: usize, i1: usize) -> Vec<(usize, usize)> {
    let m = ctx.m;
    let pos = ctx.heads[g].pos;
    let n = pos.len();
    let (pf, pl) = ((m.q_pos0 + i0) as i64, (m.q_pos0 + i1 - 1) as i64);
    let hi = if m.causal {
        pos.partition_point(|&x| x as i64 <= pl)
    } else {
        n
    };
    let lo_for = |w: usize| pos.partition_point(|&x| pf - (x as i64) >= w as i64);
    let w_eff = match (m.window, m.cache_window) {
        (Some(a), Some((b, _))) => Some(a.min(b)),
        (a, b) => a.or(b.map(|x| x.0)),
    };
    let lo = w_eff.map_or(0, lo_for).min(hi);
    let mut r = Vec::with_capacity(2);
    if let Some((_, sinks)) = m.cache_window {
        let ns = pos.partition_point(|&x| (x as i64) < sinks as i64);
        let slo = m.window.map_or(0, lo_for);
        let shi = ns.min(lo).min(hi);
        if slo < shi {
            r.push((slo, shi));
        }
    }
    if lo < hi {
        r.push((lo, hi));
    }
    r
}

fn plan(ctx: &Ctx<'_>, threads: usize) -> Vec<Unit> {
    let s = ctx.s;
    let tiles = s.t_q.div_ceil(QT);
    let per_tile = (4 * threads).div_ceil((tiles * s.h_kv).max(1)).max(1);
    let mut units = Vec::new();
    for g in 0..s.h_kv {
        for t in 0..tiles {
            let (i0, i1) = (t * QT, ((t + 1) * QT).min(s.t_q));
            let rs = ranges(ctx, g, i0, i1);
            let total: usize = rs.iter().map(|r| r.1 - r.0).sum();
            let splits = per_tile.min(total / MIN_SPLIT).max(1);
            let chunk = total.div_ceil(splits).max(1);
            for (lo, hi) in rs {
                let mut j0 = lo;
                while j0 < hi {
                    let j1 = (j0 + chunk).min(hi);
                    units.push(Unit { g, i0, i1, j0, j1 });
                    j0 = j1;
                }
            }
        }
    }
    units
}

/// Scratch of one unit.
struct Scratch {
    kf: Vec<f32>,
    qs: Vec<f32>,
    corr: Vec<f32>,
    ws: Vec<f32>,
    /// Per key of a block, one channel group's value scale and minimum.
    pscale: Vec<f32>,
    pmin: Vec<f32>,
}

#[inline(always)]
fn run_unit<S: Simd>(s: S, ctx: &Ctx<'_>, u: &Unit) -> Partial {
    let sh = ctx.s;
    let m = ctx.m;
    let (d, dv) = (sh.d, sh.dv);
    let group = sh.h_q / sh.h_kv;
    let rows = (u.i1 - u.i0) * group;
    let stride = dv + 2;
    let head = &ctx.heads[u.g];
    let mut state = vec![0f32; rows * stride];
    for st in state.chunks_exact_mut(stride) {
        st[0] = f32::NEG_INFINITY;
    }
    let s0 = ctx.score_from.map(|f| f.max(u.i0));
    let scored_rows = s0.map_or(0, |f| u.i1.saturating_sub(f) * group);
    let width = u.j1 - u.j0;
    let mut logits = vec![0f32; scored_rows * width];
    let mut qr = vec![0f32; rows * d];
    for i in u.i0..u.i1 {
        for hg in 0..group {
            let r = (i - u.i0) * group + hg;
            let src = &ctx.q[(i * sh.h_q + u.g * group + hg) * d..][..d];
            for (o, x) in qr[r * d..(r + 1) * d].iter_mut().zip(src) {
                *o = x * m.scale;
            }
        }
    }
    let mut sc = vec![0f32; rows * KB];
    let mut w = vec![0f32; rows * KB];
    let mut scr = Scratch {
        kf: vec![0f32; d.max(dv)],
        qs: vec![0f32; rows * d],
        corr: vec![0f32; rows],
        ws: vec![0f32; 4 * KB],
        pscale: vec![0f32; KB],
        pmin: vec![0f32; KB],
    };
    let gst = &ctx.gstart[u.g];
    let nq = gst.last().copied().unwrap_or(0);
    let p_last = (m.q_pos0 + u.i1 - 1) as i64;
    let mut j = u.j0;
    while j < u.j1 {
        if m.causal && head.pos[j] as i64 > p_last {
            break;
        }
        let mut jb = (j + KB).min(u.j1);
        let mut grp = None;
        if j < nq {
            let gi = gst.partition_point(|&x| x <= j) - 1;
            jb = jb.min(gst[gi + 1]);
            grp = Some((gi, gst[gi]));
        }
        let nb = jb - j;
        // Every query of the tile sees every key of the block. The corners suffice under the
        // rule without the sinks' exception (positions ascend); with it they do not: a sink at
        // the block's start is visible while the keys after it may have left the window.
        let (pf, kp0, kp1) = (
            (m.q_pos0 + u.i0) as i64,
            head.pos[j] as i64,
            head.pos[jb - 1] as i64,
        );
        let all_visible = m.softcap.is_none()
            && m.visible_strict(pf, kp1)
            && m.visible_strict(pf, kp0)
            && m.visible_strict(p_last, kp0)
            && m.visible_strict(p_last, kp1);
        score_block(
            s, head.keys, j, jb, grp, nq, &qr, rows, d, &mut sc, &mut scr,
        );
        for r in 0..rows {
            let i = u.i0 + r / group;
            let p = (m.q_pos0 + i) as i64;
            let row = &mut sc[r * KB..(r + 1) * KB];
            let mut bmax = f32::NEG_INFINITY;
            if all_visible {
                row[nb..nb.next_multiple_of(L)].fill(f32::NEG_INFINITY);
                let mut mv = s.splat(f32::NEG_INFINITY);
                for c0 in (0..nb).step_by(L) {
                    mv = s.max(mv, s.load(&row[c0..]));
                }
                bmax = s.hmax(mv);
            }
            for (jj, x) in row[..if all_visible { 0 } else { nb }]
                .iter_mut()
                .enumerate()
            {
                if m.visible(p, head.pos[j + jj] as i64) {
                    *x = m.cap(*x);
                    bmax = bmax.max(*x);
                } else {
                    *x = f32::NEG_INFINITY;
                }
            }
            if let Some(f) = s0 {
                if i >= f {
                    let rs = (i - f) * group + r % group;
                    logits[rs * width + (j - u.j0)..][..nb].copy_from_slice(&row[..nb]);
                }
            }
            let wrow = &mut w[r * KB..(r + 1) * KB];
            if bmax == f32::NEG_INFINITY {
                wrow.fill(0.0);
                continue;
            }
            let st = &mut state[r * stride..(r + 1) * stride];
            let m_new = st[0].max(bmax);
            if st[0] != m_new {
                let c = (st[0] - m_new).exp();
                st[1] *= c;
                st[2..].iter_mut().for_each(|a| *a *= c);
                st[0] = m_new;
            }
            let mv = s.splat(-m_new);
            let mut lv = s.zero();
            if !nb.is_multiple_of(L) {
                row[nb..nb.next_multiple_of(L)].fill(f32::NEG_INFINITY);
            }
            for c0 in (0..nb).step_by(L) {
                let e = s.exp(s.add(s.load(&row[c0..]), mv));
                lv = s.add(lv, e);
                s.store(&mut wrow[c0..], e);
            }
            st[1] += s.sum(lv);
        }
        accum_block(s, head.vals, j, jb, nq, &w, rows, dv, &mut state, &mut scr);
        j = jb;
    }
    Partial { state, logits }
}

/// `sc[r·KB + (j − a)]` = q_r · key j for keys `a..b` (the scale is in `qr`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn score_block<S: Simd>(
    s: S,
    keys: KeyView<'_>,
    a: usize,
    b: usize,
    grp: Option<(usize, usize)>,
    nq: usize,
    qr: &[f32],
    rows: usize,
    d: usize,
    sc: &mut [f32],
    scr: &mut Scratch,
) {
    match keys {
        KeyView::F16(k) => rows_score(s, a, b, qr, rows, d, sc, &mut scr.kf, F16R(k, d)),
        KeyView::Q8_0(k) => rows_score(s, a, b, qr, rows, d, sc, &mut scr.kf, Q8K(k, d)),
        KeyView::Q4_0(k) => rows_score(s, a, b, qr, rows, d, sc, &mut scr.kf, Q4K(k, d)),
        KeyView::Kivi(kk) => match grp {
            Some((gi, g0)) => kivi_score(s, kk, gi, a - g0, b - g0, qr, rows, d, sc, scr),
            None => rows_score(
                s,
                a - nq,
                b - nq,
                qr,
                rows,
                d,
                sc,
                &mut scr.kf,
                F16R(kk.tail, d),
            ),
        },
    }
}

/// Dot products of `rows` query rows with keys `a..b`, each key row widened once into `kf`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_score<S: Simd>(
    s: S,
    a: usize,
    b: usize,
    qr: &[f32],
    rows: usize,
    d: usize,
    sc: &mut [f32],
    kf: &mut [f32],
    decode: impl Rows<S>,
) {
    if rows == 4 {
        // Decode: the GQA group's 4 rows share each widened chunk in registers.
        let (qc, _) = qr[..4 * d].as_chunks::<L>();
        let (q01, q23) = qc.split_at(2 * d / L);
        let (q0, q1) = q01.split_at(d / L);
        let (q2, q3) = q23.split_at(d / L);
        for j in a..b {
            let acc = decode.dot4(s, j, [q0, q1, q2, q3]);
            for (i, v) in s.sum4(acc).into_iter().enumerate() {
                sc[i * KB + j - a] = v;
            }
        }
        return;
    }
    for j in a..b {
        for c in (0..d).step_by(L) {
            s.store(&mut kf[c..], decode.row(s, j, c));
        }
        let mut r0 = 0;
        while r0 + 4 <= rows {
            let mut acc = [s.zero(); 4];
            for c in (0..d).step_by(L) {
                let kv = s.load(&kf[c..]);
                for (i, v) in acc.iter_mut().enumerate() {
                    *v = s.fma(kv, s.load(&qr[(r0 + i) * d + c..]), *v);
                }
            }
            for (i, v) in s.sum4(acc).into_iter().enumerate() {
                sc[(r0 + i) * KB + j - a] = v;
            }
            r0 += 4;
        }
        for r in r0..rows {
            let mut acc = s.zero();
            for c in (0..d).step_by(L) {
                acc = s.fma(s.load(&kf[c..]), s.load(&qr[r * d + c..]), acc);
            }
            sc[r * KB + j - a] = s.sum(acc);
        }
    }
}

/// KIVI keys `t0..t1` of group `gi` (slot indices): the group's per-channel scales are folded
/// into the query rows once, the loop runs on packed codes (16 tokens per vector), and one
/// correction term per row adds the minimums.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn kivi_score<S: Simd>(
    s: S,
    kk: super::KiviKeys<'_>,
    gi: usize,
    t0: usize,
    t1: usize,
    qr: &[f32],
    rows: usize,
    d: usize,
    sc: &mut [f32],
    scr: &mut Scratch,
) {
    let bits = kk.bits;
    let rb = kivi::run_bytes(kk.slots, bits);
    let par = &kk.params[gi * 2 * d..(gi + 1) * 2 * d];
    let codes = &kk.codes[gi * d * rb..(gi + 1) * d * rb];
    let (scale, min) = par.split_at(d);
    for r in 0..rows {
        let q = &qr[r * d..(r + 1) * d];
        let qs = &mut scr.qs[r * d..(r + 1) * d];
        let mut corr = s.zero();
        for c in (0..d).step_by(L) {
            let qv = s.load(&q[c..]);
            s.store(&mut qs[c..], s.fma(qv, s.f16(&scale[c..]), s.zero()));
            corr = s.fma(qv, s.f16(&min[c..]), corr);
        }
        scr.corr[r] = s.sum(corr);
    }
    let step = L * bits as usize / 8;
    let mut tmp = [0f32; L];
    for tc in (t0 / L * L..t1).step_by(L) {
        let off = tc * bits as usize / 8;
        let (lo, hi) = (t0.max(tc), t1.min(tc + L));
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(4);
            let mut acc = [s.zero(); 4];
            for c in 0..d {
                let x = s.codes(&codes[c * rb + off..c * rb + off + step], bits);
                for (i, v) in acc.iter_mut().enumerate().take(n) {
                    *v = s.fma(x, s.splat(scr.qs[(r0 + i) * d + c]), *v);
                }
            }
            for (i, v) in acc.iter().enumerate().take(n) {
                s.store(&mut tmp, *v);
                let corr = scr.corr[r0 + i];
                for t in lo..hi {
                    sc[(r0 + i) * KB + t - t0] = tmp[t - tc] + corr;
                }
            }
            r0 += n;
        }
    }
}

/// `acc_r += Σ_j w[r·KB + (j − a)] · value j` for values `a..b`, into the unit's state rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accum_block<S: Simd>(
    s: S,
    vals: ValView<'_>,
    a: usize,
    b: usize,
    nq: usize,
    w: &[f32],
    rows: usize,
    dv: usize,
    state: &mut [f32],
    scr: &mut Scratch,
) {
    match vals {
        ValView::F16(v) => rows_accum(s, a, b, w, rows, dv, state, F16R(v, dv)),
        ValView::Q8_0(v) => affine_accum(s, a, b, w, rows, dv, 32, state, scr, Q8V(v, dv)),
        ValView::Q4_0(v) => affine_accum(s, a, b, w, rows, dv, 32, state, scr, Q4V(v, dv)),
        ValView::Kivi(kv) if a < nq => {
            let r = KiviV {
                v: kv,
                ng: dv / kv.group,
                vb: kivi::run_bytes(dv, kv.bits),
            };
            affine_accum(s, a, b, w, rows, dv, kv.group, state, scr, r)
        }
        ValView::Kivi(kv) => rows_accum(s, a - nq, b - nq, w, rows, dv, state, F16R(kv.tail, dv)),
    }
}

/// Float value rows: for each 16-channel chunk, 4 rows' accumulators stay in registers while
/// the keys stream by.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_accum<S: Simd>(
    s: S,
    a: usize,
    b: usize,
    w: &[f32],
    rows: usize,
    dv: usize,
    state: &mut [f32],
    decode: impl Rows<S>,
) {
    let stride = dv + 2;
    for c in (0..dv).step_by(L) {
        let mut r0 = 0;
        while r0 < rows {
            let (wr, acc) = (&w[r0 * KB..], &mut state[r0 * stride + 2 + c..]);
            r0 += if rows - r0 >= 4 {
                weigh::<S, 4>(s, a, b, wr, KB, acc, stride, decode, c)
            } else {
                weigh::<S, 1>(s, a, b, wr, KB, acc, stride, decode, c)
            };
        }
    }
}

/// `acc_i[..16] += Σ_j w[i·ws + j − a] · src.row(j, c)` for the `R` rows
/// `acc_i = &acc[i·stride..]` and keys `a..b`, the accumulators in registers. Returns `R`.
/// (A trait object, not a closure: closures do not inherit the wrapper's target features, so
/// the intrinsics in them would not inline.)
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn weigh<S: Simd, const R: usize>(
    s: S,
    a: usize,
    b: usize,
    w: &[f32],
    ws: usize,
    acc: &mut [f32],
    stride: usize,
    src: impl Rows<S>,
    c: usize,
) -> usize {
    let nb = b - a;
    let mut av = [s.zero(); R];
    let mut wr = [&w[..0]; R];
    for i in 0..R {
        av[i] = s.load(&acc[i * stride..]);
        wr[i] = &w[i * ws..][..nb];
    }
    for jj in 0..nb {
        let xv = src.row(s, a + jj, c);
        for i in 0..R {
            av[i] = s.fma(xv, s.splat(wr[i][jj]), av[i]);
        }
    }
    for (i, v) in av.iter().enumerate() {
        s.store(&mut acc[i * stride..], *v);
    }
    R
}

/// Values `scale·code + min` per (token, channel group of `gs`): the scale is folded into the
/// softmax weight, the minimums are added once per block. Each group's parameters are read once
/// per block and shared by the rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn affine_accum<S: Simd>(
    s: S,
    a: usize,
    b: usize,
    w: &[f32],
    rows: usize,
    dv: usize,
    gs: usize,
    state: &mut [f32],
    scr: &mut Scratch,
    src: impl Rows<S>,
) {
    let stride = dv + 2;
    let nb = b - a;
    // Weights past `nb` are 0 up to the next multiple of 16 (see `run_unit`), so the padded
    // parameters only need to be finite.
    let nv = nb.next_multiple_of(L);
    for g in 0..dv / gs {
        let (ps, pm) = (&mut scr.pscale[..nv], &mut scr.pmin[..nv]);
        for jj in 0..nb {
            (ps[jj], pm[jj]) = src.params(a + jj, g);
        }
        ps[nb..].fill(0.0);
        pm[nb..].fill(0.0);
        let mut r0 = 0;
        while r0 < rows {
            let n = if rows - r0 >= 4 { 4 } else { 1 };
            for i in 0..n {
                let wr = &w[(r0 + i) * KB..][..nv];
                let wo = &mut scr.ws[i * KB..][..nv];
                let mut mv = s.zero();
                for c0 in (0..nv).step_by(L) {
                    let wt = s.load(&wr[c0..]);
                    s.store(&mut wo[c0..], s.fma(wt, s.load(&ps[c0..]), s.zero()));
                    mv = s.fma(wt, s.load(&pm[c0..]), mv);
                }
                // The minimums' share, added once to every channel of the group.
                let msum = s.sum(mv);
                if msum != 0.0 {
                    let row = &mut state[(r0 + i) * stride + 2 + g * gs..][..gs];
                    row.iter_mut().for_each(|v| *v += msum);
                }
            }
            for c in (g * gs..(g + 1) * gs).step_by(L) {
                let acc = &mut state[r0 * stride + 2 + c..];
                if n == 4 {
                    weigh::<S, 4>(s, a, b, &scr.ws, KB, acc, stride, src, c);
                } else {
                    weigh::<S, 1>(s, a, b, &scr.ws, KB, acc, stride, src, c);
                }
            }
            r0 += n;
        }
    }
}

/// Merges key splits by log-sum-exp, adds the sink column, normalises into `out`, and turns
/// the kept logits into probabilities.
fn merge(
    ctx: &Ctx<'_>,
    units: &[Unit],
    parts: &[Partial],
    out: &mut [f32],
    scores: Option<&mut ScoreOut<'_>>,
) {
    let s = ctx.s;
    let group = s.h_q / s.h_kv;
    let stride = s.dv + 2;
    let sink = |ih: usize| ctx.m.sinks.map_or(f32::NEG_INFINITY, |sk| sk[ih % s.h_q]);
    let mut gmax: Vec<f32> = (0..s.t_q * s.h_q).map(sink).collect();
    for (u, p) in units.iter().zip(parts) {
        for (r, st) in p.state.chunks_exact(stride).enumerate() {
            let ih = (u.i0 + r / group) * s.h_q + u.g * group + r % group;
            gmax[ih] = gmax[ih].max(st[0]);
        }
    }
    let mut sums: Vec<f32> = (0..s.t_q * s.h_q)
        .map(|ih| {
            if gmax[ih] > f32::NEG_INFINITY && ctx.m.sinks.is_some() {
                (sink(ih) - gmax[ih]).exp()
            } else {
                0.0
            }
        })
        .collect();
    out.fill(0.0);
    for (u, p) in units.iter().zip(parts) {
        for (r, st) in p.state.chunks_exact(stride).enumerate() {
            if st[0] == f32::NEG_INFINITY {
                continue;
            }
            let ih = (u.i0 + r / group) * s.h_q + u.g * group + r % group;
            let c = (st[0] - gmax[ih]).exp();
            sums[ih] += st[1] * c;
            let o = &mut out[ih * s.dv..(ih + 1) * s.dv];
            o.iter_mut().zip(&st[2..]).for_each(|(o, a)| *o += a * c);
        }
    }
    for (o, &l) in out.chunks_exact_mut(s.dv).zip(&sums) {
        if l > 0.0 {
            o.iter_mut().for_each(|x| *x /= l);
        }
    }
    let Some(so) = scores else { return };
    for (u, p) in units.iter().zip(parts) {
        let f = so.from_query.max(u.i0);
        if f >= u.i1 {
            continue;
        }
        let width = u.j1 - u.j0;
        let dst = &mut so.scores[u.g][u.j0..u.j1];
        for (rs, lg) in p.logits.chunks_exact(width).enumerate() {
            let ih = (f + rs / group) * s.h_q + u.g * group + rs % group;
            let (mx, l) = (gmax[ih], sums[ih]);
            if l <= 0.0 {
                continue;
            }
            for (o, &x) in dst.iter_mut().zip(lg) {
                if x > f32::NEG_INFINITY {
                    *o += (x - mx).exp() / l;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::h2f;
    use half::f16;

    #[test]
    fn h2f_equals_half_on_every_finite_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_finite() {
                assert_eq!(
                    h2f(h).to_bits(),
                    h.to_f32().to_bits(),
                    "f16 bits {bits:#06x}"
                );
            }
        }
    }
}
