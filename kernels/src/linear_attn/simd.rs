//! SIMD bodies of both forms, written once over [`AttnSimd`] and instantiated per ISA by the
//! `#[target_feature]` wrappers at the bottom of this file. The scalar code in `recurrent` and
//! `chunked` stays the reference they are tested against.
//!
//! **Chunked form**, per head and chunk of `c ≤ 64` tokens, with padded row-major buffers (`d_k`
//! and `d_v` rounded up to whole vectors; pads stay zero) and `b` the cumulative log decay inside
//! the chunk:
//!
//! ```text
//! A   = (Q Kᵀ) ⊙ D,        D[t, j] = exp(b_t − b_j) for j ≤ t, else 0      (c × c × d_k)
//! O   = (Q ⊙ exp(b)) S + A U                                              (c × d_k × d_v, c × c × d_v)
//! S  ← exp(b_c) S + (K ⊙ exp(b_c − b))ᵀ U                                 (d_k × c × d_v)
//! ```
//!
//! `U = V`, except for the delta rule, whose pseudo-values come from the UT transform:
//! `U = (I + L)⁻¹ diag(β) (V − diag(exp(b)) K S)`, `L[t, j] = β_t exp(b_t − b_j) (k_t · k_j)` for
//! `j < t`; `(I + L)⁻¹` is found by forward substitution on the `c × c` matrix and applied as a
//! matmul. GLA's per-channel decays factor through the last token of each earlier sub-chunk of
//! [`SUB`] tokens, so the block below the diagonal is again a matmul, and only the diagonal
//! sub-blocks need one exponential per (query, key, channel). Vanilla is retention with no decay,
//! φ applied to q and k, and a column of ones appended to V so the normaliser z rides along as
//! an extra state column. Every exponent is ≤ 0. The products run on a register-tiled
//! micro-kernel ([`tile`]: `MR` rows × `NV` vectors, broadcast A, vector B).
//!
//! **Recurrent form**: one fused pass over the state per token (decay, rank-1 update and the
//! read of the output in the same sweep; the delta rule adds one read pass for `kᵀS`), vectors
//! over `d_v`, `NB` vectors of the output held in registers per column block.

#![allow(clippy::incompatible_msrv)]

use super::{Kind, LinShape, CHUNK, VANILLA_EPS};
#[cfg(target_arch = "aarch64")]
use crate::arch::aarch64_neon::Neon;
use crate::arch::Simd;
#[cfg(target_arch = "x86_64")]
use crate::arch::{x86_avx2::Avx2, x86_avx512::Avx512};
use crate::attention::simd::AttnSimd;
use crate::isa::Isa;
use crate::matmul::SharedOut;
use crate::pool::ThreadPool;

/// Sub-chunk of GLA's per-channel decays (a multiple of every ISA's lane count).
const SUB: usize = 16;

/// Output vectors held in registers per column block of the recurrent pass.
const NB: usize = 4;

/// Everything a head reads.
struct Ctx<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    kind: Kind<'a>,
    s: LinShape,
}

/// One head: `(ctx, head, state [d_k, d_v], z [d_k] (vanilla), out)`.
type HeadFn = unsafe fn(&Ctx<'_>, usize, &mut [f32], Option<&mut [f32]>, &SharedOut<'_>);

/// Which form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Recurrent,
    Chunked,
}

/// The head body of `form` on `isa`, or `None` when the CPU lacks it (or for [`Isa::Scalar`]:
/// the callers run the scalar reference then).
fn head_fn(isa: Isa, form: Form) -> Option<HeadFn> {
    match (isa, form) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Form::Chunked) if Avx512::new().is_some() => Some(chunked_avx512),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Form::Recurrent) if Avx512::new().is_some() => Some(recurrent_avx512),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Form::Chunked) if Avx2::new().is_some() => Some(chunked_avx2),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Form::Recurrent) if Avx2::new().is_some() => Some(recurrent_avx2),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, Form::Chunked) if Neon::new().is_some() => Some(chunked_neon),
        #[cfg(target_arch = "aarch64")]
        (Isa::Neon, Form::Recurrent) if Neon::new().is_some() => Some(recurrent_neon),
        _ => None,
    }
}

/// Runs the chunked form on `isa`; false (nothing done) when there is no SIMD body for it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunked(
    isa: Isa,
    pool: &ThreadPool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kind: Kind<'_>,
    s: LinShape,
    state: &mut [f32],
    z: Option<&mut [f32]>,
    out: &mut [f32],
) -> bool {
    run(isa, Form::Chunked, pool, q, k, v, kind, s, state, z, out)
}

/// Runs the recurrent form on `isa`; false (nothing done) when there is no SIMD body for it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn recurrent(
    isa: Isa,
    pool: &ThreadPool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kind: Kind<'_>,
    s: LinShape,
    state: &mut [f32],
    z: Option<&mut [f32]>,
    out: &mut [f32],
) -> bool {
    run(isa, Form::Recurrent, pool, q, k, v, kind, s, state, z, out)
}

/// Heads across the pool; each task owns its head's state, z and output rows.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    form: Form,
    pool: &ThreadPool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kind: Kind<'_>,
    s: LinShape,
    state: &mut [f32],
    z: Option<&mut [f32]>,
    out: &mut [f32],
) -> bool {
    let Some(f) = head_fn(isa, form) else {
        return false;
    };
    if s.t == 0 || s.h == 0 {
        return true;
    }
    let ctx = Ctx { q, k, v, kind, s };
    let hs = s.dk * s.dv;
    let st = SharedOut::new(state);
    let zs = z.map(SharedOut::new);
    let o = SharedOut::new(out);
    pool.run(s.h, |h| {
        // SAFETY: task h alone touches head h's state rows and z entries.
        let sth = unsafe { st.slice(h * hs, hs) };
        // SAFETY: as above.
        let zh = zs.as_ref().map(|z| unsafe { z.slice(h * s.dk, s.dk) });
        // SAFETY: `head_fn` returned this body only after run-time detection of its features;
        // the lengths were checked by the caller (`check`), and the head writes only its own
        // output rows.
        unsafe { f(&ctx, h, sth, zh, &o) };
    });
    true
}

/// Prefetches the rows of token `t` for head `head`: q, k, v, GLA's decays and the output row
/// (which the head writes later), one cache line at a time; nothing past the last token.
#[inline(always)]
unsafe fn prefetch_token<S: Simd>(c: &Ctx<'_>, head: usize, t: usize, out: &SharedOut<'_>) {
    let s = c.s;
    if t >= s.t {
        return;
    }
    let i = t * s.h + head;
    let lines = |p: *const f32, n: usize| {
        let mut j = 0;
        while j < n {
            S::prefetch(p.wrapping_add(j).cast());
            j += 16;
        }
    };
    lines(c.q.as_ptr().wrapping_add(i * s.dk), s.dk);
    lines(c.k.as_ptr().wrapping_add(i * s.dk), s.dk);
    lines(c.v.as_ptr().wrapping_add(i * s.dv), s.dv);
    lines(out.ptr(i * s.dv), s.dv);
    if let Kind::Gated { log_decay } = c.kind {
        lines(log_decay.as_ptr().wrapping_add(i * s.dk), s.dk);
    }
}

/// Prefetches quarter `part` (of 4) of the chunk starting at token `t0`.
#[inline(always)]
unsafe fn prefetch_part<S: Simd>(
    c: &Ctx<'_>,
    head: usize,
    t0: usize,
    part: usize,
    out: &SharedOut<'_>,
) {
    let q = CHUNK / 4;
    for t in t0 + part * q..t0 + (part + 1) * q {
        prefetch_token::<S>(c, head, t, out);
    }
}

/// `x − y`.
#[inline(always)]
unsafe fn sub<S: Simd>(x: S::V, y: S::V) -> S::V {
    S::fma(S::splat(-1.0), y, x)
}

/// `min(x, 0)`, so an exponent argument is never positive.
#[inline(always)]
unsafe fn nonpos<S: AttnSimd>(x: S::V) -> S::V {
    sub::<S>(x, S::max(x, S::zero()))
}

/// φ = elu + 1 of one vector: `max(x, 0) + exp(min(x, 0))`.
#[inline(always)]
unsafe fn phi_v<S: AttnSimd>(x: S::V) -> S::V {
    let p = S::max(x, S::zero());
    S::add(p, S::exp(sub::<S>(x, p)))
}

/// Applies φ to `x[..n]` in place (vectors, then a scalar tail).
#[inline(always)]
unsafe fn phi_slice<S: AttnSimd>(x: *mut f32, n: usize) {
    let l = S::LANES;
    let mut i = 0;
    while i + l <= n {
        S::store(x.add(i), phi_v::<S>(S::load(x.add(i))));
        i += l;
    }
    while i < n {
        *x.add(i) = super::phi(*x.add(i));
        i += 1;
    }
}

/// `dst[i] = exp(src[i])` for `i < n` (vectors, then a scalar tail).
#[inline(always)]
unsafe fn exp_slice<S: AttnSimd>(src: *const f32, dst: *mut f32, n: usize) {
    let l = S::LANES;
    let mut i = 0;
    while i + l <= n {
        S::store(dst.add(i), S::exp(S::load(src.add(i))));
        i += l;
    }
    while i < n {
        *dst.add(i) = (*src.add(i)).exp();
        i += 1;
    }
}

/// Which part of a product a lower-triangular operand lets [`gemm`] skip.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tri {
    /// Every row and column.
    Full,
    /// The result is needed on and below the diagonal only: rows `< i1` of a row tile stop at
    /// column `i1` (rounded up to a vector).
    Cols,
    /// `A` is lower triangular: a row tile ending at `i1` sums over `p < i1` only.
    Depth,
}

/// `c[i, j] = beta · c[i, j] + Σ_p a[i, p] · b[p, j]` for `i < m`, `j < n` (a whole number of
/// vectors), `p < k`, row strides `lda`, `ldb`, `ldc`; `beta = 0` overwrites `c`.
///
/// # Safety
/// The operands hold the rows and columns named; ISA features of `S` present.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm<S: Simd, const MR: usize, const NV: usize>(
    (m, n, k): (usize, usize, usize),
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    (c, ldc): (*mut f32, usize),
    beta: f32,
    tri: Tri,
) {
    let l = S::LANES;
    let mut i0 = 0;
    while i0 < m {
        let rows = MR.min(m - i0);
        let i1 = i0 + rows;
        let (n_eff, k_eff) = match tri {
            Tri::Full => (n, k),
            Tri::Cols => (n.min(i1.next_multiple_of(l)), k),
            Tri::Depth => (n, k.min(i1)),
        };
        let mut j0 = 0;
        while j0 < n_eff {
            let nv = NV.min((n_eff - j0) / l);
            tile_rows::<S>(
                rows,
                nv,
                k_eff,
                (a.add(i0 * lda), lda),
                (b.add(j0), ldb),
                (c.add(i0 * ldc + j0), ldc),
                beta,
            );
            j0 += nv * l;
        }
        i0 = i1;
    }
}

/// [`tile`] with `rows ≤ 8` rows and `nv ≤ 4` vectors chosen at run time.
#[inline(always)]
unsafe fn tile_rows<S: Simd>(
    rows: usize,
    nv: usize,
    k: usize,
    a: (*const f32, usize),
    b: (*const f32, usize),
    c: (*mut f32, usize),
    beta: f32,
) {
    match rows {
        1 => tile_nv::<S, 1>(nv, k, a, b, c, beta),
        2 => tile_nv::<S, 2>(nv, k, a, b, c, beta),
        3 => tile_nv::<S, 3>(nv, k, a, b, c, beta),
        4 => tile_nv::<S, 4>(nv, k, a, b, c, beta),
        5 => tile_nv::<S, 5>(nv, k, a, b, c, beta),
        6 => tile_nv::<S, 6>(nv, k, a, b, c, beta),
        7 => tile_nv::<S, 7>(nv, k, a, b, c, beta),
        _ => tile_nv::<S, 8>(nv, k, a, b, c, beta),
    }
}

#[inline(always)]
unsafe fn tile_nv<S: Simd, const R: usize>(
    nv: usize,
    k: usize,
    a: (*const f32, usize),
    b: (*const f32, usize),
    c: (*mut f32, usize),
    beta: f32,
) {
    match nv {
        1 => tile::<S, R, 1>(k, a, b, c, beta),
        2 => tile::<S, R, 2>(k, a, b, c, beta),
        3 => tile::<S, R, 3>(k, a, b, c, beta),
        _ => tile::<S, R, 4>(k, a, b, c, beta),
    }
}

/// The `R × V·LANES` micro-kernel: `c = beta · c + a[R, k] · b[k, V·LANES]`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<S: Simd, const R: usize, const V: usize>(
    k: usize,
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    (c, ldc): (*mut f32, usize),
    beta: f32,
) {
    let l = S::LANES;
    let mut acc = [[S::zero(); V]; R];
    for p in 0..k {
        let bp = b.add(p * ldb);
        let mut bv = [S::zero(); V];
        for v in 0..V {
            bv[v] = S::load(bp.add(v * l));
        }
        for i in 0..R {
            let ai = S::splat(*a.add(i * lda + p));
            for v in 0..V {
                acc[i][v] = S::fma(ai, bv[v], acc[i][v]);
            }
        }
    }
    let bb = S::splat(beta);
    for i in 0..R {
        for v in 0..V {
            let p = c.add(i * ldc + v * l);
            let r = if beta == 0.0 {
                acc[i][v]
            } else if beta == 1.0 {
                S::add(S::load(p), acc[i][v])
            } else {
                S::fma(S::load(p), bb, acc[i][v])
            };
            S::store(p, r);
        }
    }
}

/// `dst[j, i] = src[i, j]` for `i < rows`, `j < cols` (both whole numbers of vectors).
#[inline(always)]
unsafe fn transpose<S: Simd>(
    (src, lds): (*const f32, usize),
    (rows, cols): (usize, usize),
    (dst, ldd): (*mut f32, usize),
) {
    let l = S::LANES;
    let mut v = [S::zero(); 16];
    for i0 in (0..rows).step_by(l) {
        for j0 in (0..cols).step_by(l) {
            for (r, vr) in v.iter_mut().enumerate().take(l) {
                *vr = S::load(src.add((i0 + r) * lds + j0));
            }
            S::transpose(&mut v[..l]);
            for (r, &vr) in v.iter().enumerate().take(l) {
                S::store(dst.add((j0 + r) * ldd + i0), vr);
            }
        }
    }
}

/// Multiplies row `t < c` of the `c × CHUNK` score matrix `a` by `scale_t · exp(b_t − b_j)`
/// for `j ≤ t` (`j < t` when `strict`) and zeroes the rest of the row. `b` holds `CHUNK`
/// finite values.
#[inline(always)]
unsafe fn decay_mask<S: AttnSimd>(
    a: *mut f32,
    c: usize,
    b: &[f32; CHUNK],
    decay: bool,
    strict: bool,
    scale: Option<&[f32]>,
) {
    let l = S::LANES;
    for t in 0..c {
        let row = a.add(t * CHUNK);
        let last = if strict { t } else { t + 1 }; // columns kept: j < last
        let nvec = last.div_ceil(l);
        let bt = S::splat(b[t]);
        let sc = S::splat(scale.map_or(1.0, |s| s[t]));
        for jv in 0..nvec {
            let j = jv * l;
            let mut x = S::load(row.add(j));
            if decay {
                let d = S::exp(nonpos::<S>(sub::<S>(bt, S::load(b.as_ptr().add(j)))));
                x = S::mul(x, d);
            }
            S::store(row.add(j), S::mul(x, sc));
        }
        for j in last..nvec * l {
            *row.add(j) = 0.0;
        }
        let mut j = nvec * l;
        while j < CHUNK {
            S::store(row.add(j), S::zero());
            j += l;
        }
    }
}

/// A chunk's q, k, v (row pointer and stride) and output (row pointer and stride).
type Operands = (
    (*const f32, usize),
    (*const f32, usize),
    (*const f32, usize),
    (*mut f32, usize),
);

/// Per-head scratch of the chunked form.
struct Bufs {
    /// Padded state `[dkp, dvp]` (vanilla: z in column `d_v`).
    sp: Vec<f32>,
    qb: Vec<f32>,
    kb: Vec<f32>,
    vb: Vec<f32>,
    /// `[dkp, CHUNK]`: Kᵀ, then its decayed version for the state update.
    kt: Vec<f32>,
    /// `[CHUNK, CHUNK]` scores.
    a: Vec<f32>,
    /// `[CHUNK, dvp]` outputs.
    ob: Vec<f32>,
    /// Delta rule: `K Kᵀ` → L, `(I + L)⁻¹`, `R`, `U`. GLA: decayed K rows, cumulative decays.
    x1: Vec<f32>,
    x2: Vec<f32>,
    x3: Vec<f32>,
    x4: Vec<f32>,
}

/// The chunked form of one head on `S` with an `MR × NV` micro-tile.
///
/// # Safety
/// ISA features of `S` present; `st` is `[d_k, d_v]`, `z` (vanilla) `[d_k]`, the inputs have the
/// lengths of `c.s` (checked by the caller); no other task touches this head's output rows.
#[inline(always)]
unsafe fn chunked_head<S: AttnSimd, const MR: usize, const NV: usize>(
    c: &Ctx<'_>,
    head: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    out: &SharedOut<'_>,
) {
    let s = c.s;
    let l = S::LANES;
    let (dk, dv) = (s.dk, s.dv);
    let vanilla = matches!(c.kind, Kind::Vanilla);
    let dkp = dk.next_multiple_of(l);
    let dvp = (dv + usize::from(vanilla)).next_multiple_of(l);
    let gla = matches!(c.kind, Kind::Gated { .. });
    let delta = matches!(c.kind, Kind::GatedDelta { .. });
    let mut m = Bufs {
        sp: vec![0f32; dkp * dvp],
        qb: vec![0f32; CHUNK * dkp],
        kb: vec![0f32; CHUNK * dkp],
        vb: vec![0f32; CHUNK * dvp],
        kt: vec![0f32; dkp * CHUNK],
        a: vec![0f32; CHUNK * CHUNK],
        ob: vec![0f32; CHUNK * dvp],
        x1: Vec::new(),
        x2: Vec::new(),
        x3: Vec::new(),
        x4: Vec::new(),
    };
    if delta {
        m.x1 = vec![0f32; CHUNK * CHUNK];
        m.x2 = vec![0f32; CHUNK * CHUNK];
        m.x3 = vec![0f32; CHUNK * dvp];
        m.x4 = vec![0f32; CHUNK * dvp];
    }
    if gla {
        m.x1 = vec![0f32; CHUNK * dkp];
        m.x2 = vec![0f32; CHUNK * dkp];
        m.x4 = vec![0f32; CHUNK * dkp];
    }
    for (ch, row) in st.chunks_exact(dv).enumerate() {
        m.sp[ch * dvp..ch * dvp + dv].copy_from_slice(row);
    }
    if let Some(z) = z.as_deref() {
        for (ch, &zc) in z.iter().enumerate() {
            m.sp[ch * dvp + dv] = zc;
        }
    }
    if vanilla {
        for t in 0..CHUNK {
            m.vb[t * dvp + dv] = 1.0;
        }
    }
    for part in 0..4 {
        prefetch_part::<S>(c, head, 0, part, out);
    }
    let mut t0 = 0;
    while t0 < s.t {
        let n = CHUNK.min(s.t - t0);
        let buffered = chunk::<S, MR, NV>(c, head, t0, n, (dkp, dvp), &mut m, out);
        for t in (0..n).filter(|_| buffered) {
            let row = &m.ob[t * dvp..t * dvp + dv + usize::from(vanilla)];
            // SAFETY: row (t0 + t, head) of the output belongs to this head's task alone.
            let dst = out.slice(((t0 + t) * s.h + head) * dv, dv);
            if vanilla {
                let den = row[dv] + VANILLA_EPS;
                dst.iter_mut().zip(row).for_each(|(d, &x)| *d = x / den);
            } else {
                dst.copy_from_slice(&row[..dv]);
            }
        }
        t0 += n;
    }
    for (ch, row) in st.chunks_exact_mut(dv).enumerate() {
        row.copy_from_slice(&m.sp[ch * dvp..ch * dvp + dv]);
    }
    if let Some(z) = z {
        for (ch, zc) in z.iter_mut().enumerate() {
            *zc = m.sp[ch * dvp + dv];
        }
    }
}

/// One chunk of `n` tokens from `t0`: state `m.sp` advanced; the outputs go straight to `out`
/// (returns false) or, for vanilla, a short last chunk and dimensions that are not whole
/// vectors, to `m.ob` (returns true) for the caller to copy.
///
/// Full chunks of whole-vector dimensions read q, k and v where they lie (rows `h · d` apart)
/// and write the output rows in place; the others gather their rows into padded buffers first.
#[inline(always)]
unsafe fn chunk<S: AttnSimd, const MR: usize, const NV: usize>(
    c: &Ctx<'_>,
    head: usize,
    t0: usize,
    n: usize,
    (dkp, dvp): (usize, usize),
    m: &mut Bufs,
    out: &SharedOut<'_>,
) -> bool {
    let s = c.s;
    let l = S::LANES;
    let (dk, dv) = (s.dk, s.dv);
    let np = n.next_multiple_of(l);
    // The next chunk's rows come from strided addresses: fetch them a quarter at a time while
    // this chunk computes.
    let next = t0 + CHUNK;
    let direct = n == CHUNK
        && dk == dkp
        && dv == dvp
        && matches!(
            c.kind,
            Kind::Retention { .. } | Kind::Gated { .. } | Kind::GatedDelta { .. }
        );
    let first = t0 * s.h + head;
    // Operands as (pointer, row stride).
    let (qo, ko, vo, oo) = if direct {
        (
            (c.q.as_ptr().add(first * dk), s.h * dk),
            (c.k.as_ptr().add(first * dk), s.h * dk),
            (c.v.as_ptr().add(first * dv), s.h * dv),
            (out.ptr(first * dv), s.h * dv),
        )
    } else {
        // Gather the chunk's rows; rows past n are zero (a short last chunk).
        for t in 0..CHUNK {
            let (qr, kr) = (
                &mut m.qb[t * dkp..t * dkp + dk],
                &mut m.kb[t * dkp..t * dkp + dk],
            );
            let vr = &mut m.vb[t * dvp..t * dvp + dv];
            if t < n {
                let i = (t0 + t) * s.h + head;
                qr.copy_from_slice(&c.q[i * dk..(i + 1) * dk]);
                kr.copy_from_slice(&c.k[i * dk..(i + 1) * dk]);
                vr.copy_from_slice(&c.v[i * dv..(i + 1) * dv]);
                if let Kind::Vanilla = c.kind {
                    phi_slice::<S>(qr.as_mut_ptr(), dk);
                    phi_slice::<S>(kr.as_mut_ptr(), dk);
                    m.vb[t * dvp + dv] = 1.0;
                }
            } else {
                qr.fill(0.0);
                kr.fill(0.0);
                vr.fill(0.0);
                if let Kind::Vanilla = c.kind {
                    m.vb[t * dvp + dv] = 0.0;
                }
            }
        }
        (
            (m.qb.as_ptr(), dkp),
            (m.kb.as_ptr(), dkp),
            (m.vb.as_ptr(), dvp),
            (m.ob.as_mut_ptr(), dvp),
        )
    };
    prefetch_part::<S>(c, head, next, 0, out);
    if let Kind::Gated { log_decay } = c.kind {
        chunk_gla::<S, MR, NV>(log_decay, head, t0, n, (dkp, dvp), s, m, (qo, ko, vo, oo));
        for part in 1..4 {
            prefetch_part::<S>(c, head, next, part, out);
        }
        return !direct;
    }
    // Cumulative log decay inside the chunk, padded with its last value.
    let mut b = [0f32; CHUNK];
    let decay = !matches!(c.kind, Kind::Vanilla);
    let mut acc = 0f32;
    for (t, bt) in b.iter_mut().enumerate() {
        if t < n {
            acc += match c.kind {
                Kind::Retention { gamma } => gamma[head].ln(),
                Kind::GatedDelta { log_decay, .. } => log_decay[(t0 + t) * s.h + head],
                _ => 0.0,
            };
        }
        *bt = acc;
    }
    let (kt, a, sp) = (m.kt.as_mut_ptr(), m.a.as_mut_ptr(), m.sp.as_mut_ptr());
    transpose::<S>(ko, (CHUNK, dkp), (kt, CHUNK));
    // A = (Q Kᵀ) ⊙ D.
    gemm::<S, MR, NV>((n, np, dkp), qo, (kt, CHUNK), (a, CHUNK), 0.0, Tri::Cols);
    decay_mask::<S>(a, n, &b, decay, false, None);
    prefetch_part::<S>(c, head, next, 1, out);
    // The values the chunk writes: V, or the delta rule's U.
    let vals = if let Kind::GatedDelta { beta, .. } = c.kind {
        let mut bet = [0f32; CHUNK];
        for (t, bt) in bet.iter_mut().enumerate().take(n) {
            *bt = beta[(t0 + t) * s.h + head];
        }
        let (lm, tm, r, u) = (
            m.x1.as_mut_ptr(),
            m.x2.as_mut_ptr(),
            m.x3.as_mut_ptr(),
            m.x4.as_mut_ptr(),
        );
        // L = strictly lower (K Kᵀ) ⊙ D scaled by β_t.
        gemm::<S, MR, NV>((n, np, dkp), ko, (kt, CHUNK), (lm, CHUNK), 0.0, Tri::Cols);
        decay_mask::<S>(lm, n, &b, true, true, Some(&bet[..n]));
        // T = (I + L)⁻¹ by forward substitution, row by row (T[s, j] = 0 for j > s).
        for t in 0..n {
            let row = tm.add(t * CHUNK);
            for jv in 0..t.div_ceil(l) {
                let j0 = jv * l;
                let mut x = S::zero();
                for q in j0..t {
                    let w = S::splat(-*lm.add(t * CHUNK + q));
                    x = S::fma(w, S::load(tm.add(q * CHUNK + j0)), x);
                }
                S::store(row.add(j0), x);
            }
            let mut j = t.div_ceil(l) * l;
            while j < CHUNK {
                S::store(row.add(j), S::zero());
                j += l;
            }
            *row.add(t) = 1.0;
        }
        // R = diag(β)(V − diag(exp(b)) K S).
        gemm::<S, MR, NV>((n, dvp, dkp), ko, (sp, dvp), (r, dvp), 0.0, Tri::Full);
        for (t, (&bt, &bb)) in b.iter().zip(&bet).enumerate().take(n) {
            let (e, bv) = (S::splat(-bt.exp()), S::splat(bb));
            for j in (0..dvp).step_by(l) {
                let p = r.add(t * dvp + j);
                let x = S::fma(e, S::load(p), S::load(vo.0.add(t * vo.1 + j)));
                S::store(p, S::mul(bv, x));
            }
        }
        // U = T R.
        gemm::<S, MR, NV>(
            (n, dvp, n),
            (tm, CHUNK),
            (r, dvp),
            (u, dvp),
            0.0,
            Tri::Depth,
        );
        (u.cast_const(), dvp)
    } else {
        vo
    };
    // O = diag(exp(b)) (Q S) + A U.
    gemm::<S, MR, NV>((n, dvp, dkp), qo, (sp, dvp), oo, 0.0, Tri::Full);
    if decay {
        for (t, &bt) in b.iter().enumerate().take(n) {
            let e = S::splat(bt.exp());
            for j in (0..dvp).step_by(l) {
                let p = oo.0.add(t * oo.1 + j);
                S::store(p, S::mul(e, S::load(p)));
            }
        }
    }
    gemm::<S, MR, NV>((n, dvp, n), (a, CHUNK), vals, oo, 1.0, Tri::Depth);
    prefetch_part::<S>(c, head, next, 2, out);
    // S ← exp(b_c) S + (K ⊙ exp(b_c − b))ᵀ U.
    let bl = b[n - 1];
    if decay {
        // exp(b_c − b_j) (≤ 0: b is non-increasing); zero past the chunk.
        let mut f = [0f32; CHUNK];
        for (fj, &bj) in f.iter_mut().zip(&b).take(n) {
            *fj = bl - bj;
        }
        exp_slice::<S>(f.as_ptr(), f.as_mut_ptr(), np);
        for fj in f.iter_mut().skip(n) {
            *fj = 0.0;
        }
        for ch in 0..dkp {
            for j in (0..np).step_by(l) {
                let p = kt.add(ch * CHUNK + j);
                S::store(p, S::mul(S::load(p), S::load(f.as_ptr().add(j))));
            }
        }
    }
    prefetch_part::<S>(c, head, next, 3, out);
    gemm::<S, MR, NV>(
        (dkp, dvp, n),
        (kt, CHUNK),
        vals,
        (sp, dvp),
        if decay { bl.exp() } else { 1.0 },
        Tri::Full,
    );
    !direct
}

/// One GLA chunk (rows already gathered): per-channel decays, in sub-chunks of [`SUB`] rows.
///
/// Row block `I = [i0, i0 + SUB)` meets the keys before it through `e = b[i0 − 1]`:
/// `A[I, <i0] = (Q_I ⊙ exp(b_I − e)) (K_{<i0} ⊙ exp(e − b_{<i0}))ᵀ`, one matmul, both factors
/// ≤ 1. The decayed keys are kept transposed in `m.kt` and carried from one block's reference
/// to the next by `exp(e' − e)` per channel, so each key row takes its exponentials once. Inside
/// the diagonal block, `exp(b_t − b_j) = Π_{j<s≤t} exp(g_s)` is a running product of per-token
/// decays (all ≤ 1). The state update reuses the carried keys with the chunk's last token as
/// the reference.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_gla<S: AttnSimd, const MR: usize, const NV: usize>(
    log_decay: &[f32],
    head: usize,
    t0: usize,
    n: usize,
    (dkp, dvp): (usize, usize),
    s: LinShape,
    m: &mut Bufs,
    (qo, ko, vo, oo): Operands,
) {
    let l = S::LANES;
    let dk = s.dk;
    // Per-token decays exp(g_t) (x4) and cumulative log decays (x1), [CHUNK, dkp], zero in the
    // pad channels; rows ≥ n of b repeat the last row.
    let (gb, dt) = (m.x1.as_mut_ptr(), m.x4.as_mut_ptr());
    let dkv = dk / l * l;
    for t in 0..CHUNK {
        let row = gb.add(t * dkp);
        if t == 0 {
            std::ptr::write_bytes(row, 0, dkp);
        } else {
            std::ptr::copy_nonoverlapping(gb.add((t - 1) * dkp), row, dkp);
        }
        if t < n {
            let src = &log_decay[((t0 + t) * s.h + head) * dk..][..dk];
            let sp = src.as_ptr();
            for ch in (0..dkv).step_by(l) {
                S::store(
                    row.add(ch),
                    S::add(S::load(row.add(ch)), S::load(sp.add(ch))),
                );
            }
            for (ch, &g) in src.iter().enumerate().skip(dkv) {
                *row.add(ch) += g;
            }
            exp_slice::<S>(sp, dt.add(t * dkp), dk);
        }
    }
    let (a, sp) = (m.a.as_mut_ptr(), m.sp.as_mut_ptr());
    let (xg, kt) = (m.x2.as_mut_ptr(), m.kt.as_mut_ptr());
    std::ptr::write_bytes(a, 0, CHUNK * CHUNK);
    let mut f = vec![0f32; dkp];
    let zero = vec![0f32; dkp];
    let mut last_block = 0;
    for i0 in (0..n).step_by(SUB) {
        let i1 = (i0 + SUB).min(n);
        last_block = i0;
        if i0 > 0 {
            let e = gb.add((i0 - 1) * dkp);
            if i0 > SUB {
                carry_keys::<S>(kt, i0 - SUB, (gb.add((i0 - SUB - 1) * dkp), e), dkp, &mut f);
            }
            for j in i0 - SUB..i0 {
                scaled_row::<S>((xg, dkp), ko, (gb, dkp), j, e, false);
            }
            transpose::<S>(
                (xg.add((i0 - SUB) * dkp), dkp),
                (SUB, dkp),
                (kt.add(i0 - SUB), CHUNK),
            );
            for t in i0..i1 {
                scaled_row::<S>((xg, dkp), qo, (gb, dkp), t, e, true);
            }
            gemm::<S, MR, NV>(
                (i1 - i0, i0, dkp),
                (xg.add(i0 * dkp), dkp),
                (kt, CHUNK),
                (a.add(i0 * CHUNK), CHUNK),
                0.0,
                Tri::Full,
            );
        }
        // Diagonal block: running products of the per-token decays, one accumulator per
        // query row of the block in registers.
        for j in i0..i1 {
            diag_column::<S>((qo, ko, dt), dkp, j, i1, a.add(i0 * CHUNK), i0);
        }
    }
    // O = (Q ⊙ exp(b)) S + A V.
    for t in 0..n {
        scaled_row::<S>((xg, dkp), qo, (gb, dkp), t, zero.as_ptr(), true);
    }
    gemm::<S, MR, NV>((n, dvp, dkp), (xg, dkp), (sp, dvp), oo, 0.0, Tri::Full);
    gemm::<S, MR, NV>((n, dvp, n), (a, CHUNK), vo, oo, 1.0, Tri::Depth);
    // S ← diag(exp(b_c)) S + (K ⊙ exp(b_c − b))ᵀ V: the carried keys, referenced to the last
    // token, plus the last block's keys.
    let last = gb.add((n - 1) * dkp);
    if last_block > 0 {
        carry_keys::<S>(
            kt,
            last_block,
            (gb.add((last_block - 1) * dkp), last),
            dkp,
            &mut f,
        );
    }
    for j in last_block..last_block + SUB {
        if j < n {
            scaled_row::<S>((xg, dkp), ko, (gb, dkp), j, last, false);
        } else {
            std::ptr::write_bytes(xg.add(j * dkp), 0, dkp);
        }
    }
    transpose::<S>(
        (xg.add(last_block * dkp), dkp),
        (SUB, dkp),
        (kt.add(last_block), CHUNK),
    );
    exp_slice::<S>(last, f.as_mut_ptr(), dkp);
    for (ch, &e) in f.iter().enumerate() {
        let ev = S::splat(e);
        for j in (0..dvp).step_by(l) {
            let p = sp.add(ch * dvp + j);
            S::store(p, S::mul(ev, S::load(p)));
        }
    }
    gemm::<S, MR, NV>((dkp, dvp, n), (kt, CHUNK), vo, (sp, dvp), 1.0, Tri::Full);
}

/// Column `j` of a GLA diagonal block (rows `j..i1`, block from `i0`, scores `a` from row
/// `i0`): `a[t, j] = Σ_ch q_t k_j Π_{j<s≤t} d_s`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn diag_column<S: AttnSimd>(
    ((qb, ldq), (kb, ldk), dt): ((*const f32, usize), (*const f32, usize), *const f32),
    dkp: usize,
    j: usize,
    i1: usize,
    a: *mut f32,
    i0: usize,
) {
    let l = S::LANES;
    let mut acc = [S::zero(); SUB];
    for ch in (0..dkp).step_by(l) {
        let kv = S::load(kb.add(j * ldk + ch));
        let mut w = kv;
        // A constant trip count with constant indices keeps `acc` in registers.
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let t = i0 + r;
            if t < j || t >= i1 {
                continue;
            }
            if t > j {
                w = S::mul(w, S::load(dt.add(t * dkp + ch)));
            }
            *acc_r = S::fma(S::load(qb.add(t * ldq + ch)), w, *acc_r);
        }
    }
    for t in j..i1 {
        *a.add((t - i0) * CHUNK + j) = S::hsum(acc[t - i0]);
    }
}

/// Multiplies columns `< cols` of the transposed decayed keys `kt [dkp, CHUNK]` by
/// `exp(to − from)` per channel (row), moving them from reference `from` to the later `to`.
#[inline(always)]
unsafe fn carry_keys<S: AttnSimd>(
    kt: *mut f32,
    cols: usize,
    (from, to): (*const f32, *const f32),
    dkp: usize,
    f: &mut [f32],
) {
    let l = S::LANES;
    for ch in (0..dkp).step_by(l) {
        let d = nonpos::<S>(sub::<S>(S::load(to.add(ch)), S::load(from.add(ch))));
        S::store(f.as_mut_ptr().add(ch), S::exp(d));
    }
    for (ch, &fc) in f.iter().enumerate().take(dkp) {
        let fv = S::splat(fc);
        for j in (0..cols).step_by(l) {
            let p = kt.add(ch * CHUNK + j);
            S::store(p, S::mul(fv, S::load(p)));
        }
    }
}

/// `dst[t] = src[t] ⊙ exp(gb[t] − e)` (`later`) or `⊙ exp(e − gb[t])`, rows of `dkp`; the
/// argument is clamped to ≤ 0 (it is by construction).
#[inline(always)]
unsafe fn scaled_row<S: AttnSimd>(
    (dst, ldd): (*mut f32, usize),
    (src, lds): (*const f32, usize),
    (gb, dkp): (*const f32, usize),
    t: usize,
    e: *const f32,
    later: bool,
) {
    let l = S::LANES;
    for j in (0..dkp).step_by(l) {
        let g = S::load(gb.add(t * dkp + j));
        let r = S::load(e.add(j));
        let arg = if later {
            sub::<S>(g, r)
        } else {
            sub::<S>(r, g)
        };
        let x = S::mul(S::load(src.add(t * lds + j)), S::exp(nonpos::<S>(arg)));
        S::store(dst.add(t * ldd + j), x);
    }
}

/// The recurrent form of one head on `S`.
///
/// # Safety
/// As [`chunked_head`].
#[inline(always)]
unsafe fn recurrent_head<S: AttnSimd>(
    c: &Ctx<'_>,
    head: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    out: &SharedOut<'_>,
) {
    let s = c.s;
    let (dk, dv) = (s.dk, s.dv);
    let mut fq = vec![0f32; dk];
    let mut fk = vec![0f32; dk];
    let mut dec = vec![0f32; dk];
    let mut p = vec![0f32; dv];
    let mut w = vec![0f32; dv];
    let mut z = z;
    let sp = st.as_mut_ptr();
    for t in 0..s.t {
        let i = t * s.h + head;
        let (qt, kt, vt) = (
            &c.q[i * dk..(i + 1) * dk],
            &c.k[i * dk..(i + 1) * dk],
            &c.v[i * dv..(i + 1) * dv],
        );
        prefetch_token::<S>(c, head, t + 2, out);
        // SAFETY: row (t, head) of the output belongs to this head's task alone.
        let ot = out.slice(i * dv, dv);
        match c.kind {
            Kind::Vanilla => {
                fq.copy_from_slice(qt);
                fk.copy_from_slice(kt);
                phi_slice::<S>(fq.as_mut_ptr(), dk);
                phi_slice::<S>(fk.as_mut_ptr(), dk);
                let zh = z.as_deref_mut().expect("vanilla state has z");
                zh.iter_mut().zip(&fk).for_each(|(z, f)| *z += f);
                let den = zh.iter().zip(&fq).map(|(z, f)| z * f).sum::<f32>() + VANILLA_EPS;
                pass::<S>(sp, (dk, dv), Decay::None, &fk, vt, &fq, ot);
                ot.iter_mut().for_each(|x| *x /= den);
            }
            Kind::Retention { gamma } => {
                pass::<S>(sp, (dk, dv), Decay::Uniform(gamma[head]), kt, vt, qt, ot);
            }
            Kind::Gated { log_decay } => {
                exp_slice::<S>(log_decay[i * dk..].as_ptr(), dec.as_mut_ptr(), dk);
                pass::<S>(sp, (dk, dv), Decay::Rows(&dec), kt, vt, qt, ot);
            }
            Kind::GatedDelta { beta, log_decay } => {
                // S ← a·S + k wᵀ with w = β(v − a·Sᵀk).
                let (a, bt) = (log_decay[i].exp(), beta[i]);
                read::<S>(sp, (dk, dv), kt, &mut p);
                w.iter_mut()
                    .zip(vt)
                    .zip(&p)
                    .for_each(|((w, &v), &p)| *w = bt * (v - a * p));
                pass::<S>(sp, (dk, dv), Decay::Uniform(a), kt, &w, qt, ot);
            }
        }
    }
}

/// How the state decays before the rank-1 update.
#[derive(Clone, Copy)]
enum Decay<'a> {
    None,
    Uniform(f32),
    Rows(&'a [f32]),
}

/// One fused sweep: `S[c] ← d_c · S[c] + k_c v` for every row `c`, then `o = Sᵀ q` (read in
/// the same sweep).
#[inline(always)]
unsafe fn pass<S: AttnSimd>(
    sp: *mut f32,
    (dk, dv): (usize, usize),
    d: Decay<'_>,
    k: &[f32],
    v: &[f32],
    q: &[f32],
    o: &mut [f32],
) {
    let l = S::LANES;
    let dvv = dv / l * l;
    let mut j0 = 0;
    while j0 + NB * l <= dvv {
        pass_block::<S, NB>(sp, (dk, dv), j0, d, k, v, q, o);
        j0 += NB * l;
    }
    while j0 < dvv {
        pass_block::<S, 1>(sp, (dk, dv), j0, d, k, v, q, o);
        j0 += l;
    }
    for j in dvv..dv {
        let mut acc = 0f32;
        for c in 0..dk {
            let x = sp.add(c * dv + j);
            let dc = match d {
                Decay::None => 1.0,
                Decay::Uniform(g) => g,
                Decay::Rows(r) => r[c],
            };
            *x = dc * *x + k[c] * v[j];
            acc += q[c] * *x;
        }
        o[j] = acc;
    }
}

/// [`pass`] over columns `j0..j0 + V·LANES`, the output in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn pass_block<S: AttnSimd, const V: usize>(
    sp: *mut f32,
    (dk, dv): (usize, usize),
    j0: usize,
    d: Decay<'_>,
    k: &[f32],
    v: &[f32],
    q: &[f32],
    o: &mut [f32],
) {
    let l = S::LANES;
    let mut vv = [S::zero(); V];
    let mut acc = [S::zero(); V];
    for x in 0..V {
        vv[x] = S::load(v.as_ptr().add(j0 + x * l));
    }
    for c in 0..dk {
        let row = sp.add(c * dv + j0);
        let (kc, qc) = (S::splat(k[c]), S::splat(q[c]));
        let dc = match d {
            Decay::None => None,
            Decay::Uniform(g) => Some(S::splat(g)),
            Decay::Rows(r) => Some(S::splat(r[c])),
        };
        for x in 0..V {
            let p = row.add(x * l);
            let old = S::load(p);
            let sv = match dc {
                None => S::fma(kc, vv[x], old),
                Some(g) => S::fma(kc, vv[x], S::mul(g, old)),
            };
            S::store(p, sv);
            acc[x] = S::fma(qc, sv, acc[x]);
        }
    }
    for x in 0..V {
        S::store(o.as_mut_ptr().add(j0 + x * l), acc[x]);
    }
}

/// `o = Sᵀ x` (the delta rule's `kᵀS`).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn read<S: AttnSimd>(sp: *const f32, (dk, dv): (usize, usize), x: &[f32], o: &mut [f32]) {
    let l = S::LANES;
    let dvv = dv / l * l;
    let mut j0 = 0;
    while j0 < dvv {
        let nb = NB.min((dvv - j0) / l);
        let mut acc = [S::zero(); NB];
        for c in 0..dk {
            let xc = S::splat(x[c]);
            let row = sp.add(c * dv + j0);
            for b in 0..NB {
                if b < nb {
                    acc[b] = S::fma(xc, S::load(row.add(b * l)), acc[b]);
                }
            }
        }
        for b in 0..nb {
            S::store(o.as_mut_ptr().add(j0 + b * l), acc[b]);
        }
        j0 += nb * l;
    }
    for j in dvv..dv {
        o[j] = (0..dk).map(|c| x[c] * *sp.add(c * dv + j)).sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn chunked_avx512(
    c: &Ctx<'_>,
    h: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &SharedOut<'_>,
) {
    chunked_head::<Avx512, 6, 4>(c, h, st, z, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn recurrent_avx512(
    c: &Ctx<'_>,
    h: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &SharedOut<'_>,
) {
    recurrent_head::<Avx512>(c, h, st, z, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunked_avx2(
    c: &Ctx<'_>,
    h: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &SharedOut<'_>,
) {
    chunked_head::<Avx2, 6, 2>(c, h, st, z, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn recurrent_avx2(
    c: &Ctx<'_>,
    h: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &SharedOut<'_>,
) {
    recurrent_head::<Avx2>(c, h, st, z, o)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn chunked_neon(
    c: &Ctx<'_>,
    h: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &SharedOut<'_>,
) {
    chunked_head::<Neon, 8, 3>(c, h, st, z, o)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn recurrent_neon(
    c: &Ctx<'_>,
    h: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &SharedOut<'_>,
) {
    recurrent_head::<Neon>(c, h, st, z, o)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::time::Instant;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
    unsafe fn gemm512(mnk: (usize, usize, usize), a: &[f32], b: &[f32], c: &mut [f32]) {
        let (_, n, k) = mnk;
        gemm::<Avx512, 6, 4>(
            mnk,
            (a.as_ptr(), k),
            (b.as_ptr(), n),
            (c.as_mut_ptr(), n),
            1.0,
            Tri::Full,
        )
    }

    /// GFLOP/s of the chunk-sized products on one thread, operands cache-resident.
    #[test]
    #[ignore = "measures the machine; run with --ignored --nocapture"]
    fn chunk_gemm_speed() {
        if Avx512::new().is_none() {
            return;
        }
        for (m, n, k) in [
            (64, 128, 128),
            (128, 128, 64),
            (64, 64, 128),
            (60, 128, 128),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0f32; m * n];
            let mut best = f64::INFINITY;
            for _ in 0..200 {
                let t0 = Instant::now();
                for _ in 0..100 {
                    // SAFETY: AVX-512 detected above; the operands hold m×k, k×n and m×n.
                    unsafe { gemm512((m, n, k), &a, &b, &mut c) };
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let gf = 2.0 * (m * n * k * 100) as f64 / best / 1e9;
            println!("{m}x{n}x{k}: {gf:.1} GFLOP/s");
        }
    }
}
