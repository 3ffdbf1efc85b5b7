//! Threaded flash attention: online softmax over key blocks, never materialising the score
//! matrix. One plan serves prefill and decode: work units are (KV head, query tile, key split);
//! the query heads of a GQA group share each read of a K/V row, keys outside a query tile's
//! window are never visited, and partial results of key splits (flash-decoding) are merged by
//! log-sum-exp.

use super::simd::AttnSimd;
use super::{AttnParams, AttnShape, KvData};
#[cfg(target_arch = "aarch64")]
use crate::arch::aarch64_neon::Neon;
#[cfg(target_arch = "x86_64")]
use crate::arch::{x86_avx2::Avx2, x86_avx512::Avx512};
use crate::arch::{Scalar, Simd};
use crate::isa::{self, Isa};
use crate::pool::ThreadPool;
use std::sync::Mutex;

/// Queries per tile.
const QT: usize = 16;
/// Keys scored together before one rescale of the running state.
const KB: usize = 64;
/// Decode prefetch distance, in tokens.
const PF: usize = 12;
/// Fewest keys worth a split of their own.
const MIN_SPLIT: usize = 256;

struct Unit {
    g0: usize,
    g1: usize,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

/// Computes attention like [`super::reference::attention`], spread over `pool`, on the path
/// `WATTLE_CPU_ISA` selects (else the best this CPU has).
pub fn attention(
    pool: &ThreadPool,
    q: &[f32],
    k: KvData<'_>,
    v: KvData<'_>,
    s: AttnShape,
    p: &AttnParams<'_>,
    out: &mut [f32],
) {
    let isa = isa::selected().unwrap_or(Isa::Scalar);
    attention_isa(isa, pool, q, k, v, s, p, out)
}

/// [`attention`] on the vector path `isa` (scalar when the CPU lacks it, or when the head
/// dimensions are not a multiple of its lanes).
#[allow(clippy::too_many_arguments)]
pub fn attention_isa(
    isa: Isa,
    pool: &ThreadPool,
    q: &[f32],
    k: KvData<'_>,
    v: KvData<'_>,
    s: AttnShape,
    p: &AttnParams<'_>,
    out: &mut [f32],
) {
    s.assert_lens(q, k, v, out);
    let group = s.h_q / s.h_kv;
    let units = plan(s, p, pool.threads());
    let run = unit_fn(isa, s);
    let ctx = Ctx { q, k, v, s, p };
    // Per unit: for each (query, head of the group): [m, l, acc[d_v]].
    let stride = s.d_v + 2;
    let partials: Vec<Mutex<Vec<f32>>> = units.iter().map(|_| Mutex::new(Vec::new())).collect();
    pool.run(units.len(), |u| {
        let unit = &units[u];
        let mut buf = vec![0f32; (unit.g1 - unit.g0) * (unit.i1 - unit.i0) * group * stride];
        for st in buf.chunks_exact_mut(stride) {
            st[0] = f32::NEG_INFINITY;
        }
        run(&ctx, unit, &mut buf);
        *partials[u].lock().unwrap_or_else(|e| e.into_inner()) = buf;
    });
    merge(s, p, &units, partials, out);
}

/// Splits the work into (KV head, query tile, key split) units, about 4 per thread.
fn plan(s: AttnShape, p: &AttnParams<'_>, threads: usize) -> Vec<Unit> {
    let mut units = Vec::new();
    let tiles = s.t_q.div_ceil(QT);
    // Few query tiles (decode): every KV head in each unit, so a unit streams contiguous
    // token rows; many: one head per unit.
    let heads = if tiles > 1 && tiles * s.h_kv >= 2 * threads {
        1
    } else {
        s.h_kv
    };
    let per_tile = (4 * threads)
        .div_ceil((tiles * s.h_kv / heads).max(1))
        .max(1);
    for g0 in (0..s.h_kv).step_by(heads) {
        let g1 = (g0 + heads).min(s.h_kv);
        for t in 0..tiles {
            let (i0, i1) = (t * QT, ((t + 1) * QT).min(s.t_q));
            let first = p.key_range((p.q_pos0 + i0) as i64, s.t_k);
            let last = p.key_range((p.q_pos0 + i1 - 1) as i64, s.t_k);
            let (lo, hi) = (first.start.min(last.start), first.end.max(last.end));
            let splits = per_tile.min((hi - lo) / MIN_SPLIT).max(1);
            let chunk = (hi - lo).div_ceil(splits).max(1);
            let mut j0 = lo;
            loop {
                let j1 = (j0 + chunk).min(hi);
                units.push(Unit {
                    g0,
                    g1,
                    i0,
                    i1,
                    j0,
                    j1,
                });
                j0 = j1;
                if j0 >= hi {
                    break;
                }
            }
        }
    }
    units
}

/// Everything a unit reads.
struct Ctx<'a> {
    q: &'a [f32],
    k: KvData<'a>,
    v: KvData<'a>,
    s: AttnShape,
    p: &'a AttnParams<'a>,
}

/// Runs one unit into its state rows `buf` (per (query, group head): `[m, l, acc[d_v]]`).
type UnitFn = fn(&Ctx<'_>, &Unit, &mut [f32]);

/// The unit runner for `isa`, falling back to scalar when the CPU lacks it or the head
/// dimensions are not a multiple of its lanes.
fn unit_fn(isa: Isa, s: AttnShape) -> UnitFn {
    fn fits<S: Simd>(s: AttnShape) -> bool {
        s.d.is_multiple_of(S::LANES) && s.d_v.is_multiple_of(S::LANES)
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Avx512::new().is_some() && fits::<Avx512>(s) => |c, u, b| {
            // SAFETY: `Avx512::new()` succeeded above (run-time detection of AVX-512F/BW/VL/DQ,
            // AVX2, FMA, F16C), the features the wrapper enables.
            unsafe { unit_avx512(c, u, b) }
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 if Avx2::new().is_some() && fits::<Avx2>(s) => |c, u, b| {
            // SAFETY: `Avx2::new()` succeeded above (run-time detection of AVX2, FMA, F16C),
            // the features the wrapper enables.
            unsafe { unit_avx2(c, u, b) }
        },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if Neon::new().is_some() && fits::<Neon>(s) => |c, u, b| {
            // SAFETY: `Neon::new()` succeeded above (run-time detection of NEON), the feature
            // the wrapper enables.
            unsafe { unit_neon(c, u, b) }
        },
        _ => |c, u, b| {
            // SAFETY: the scalar primitives need no CPU feature.
            unsafe { unit_body::<Scalar>(c, u, b) }
        },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn unit_avx512(c: &Ctx<'_>, u: &Unit, buf: &mut [f32]) {
    unit_body::<Avx512>(c, u, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unit_avx2(c: &Ctx<'_>, u: &Unit, buf: &mut [f32]) {
    unit_body::<Avx2>(c, u, buf)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn unit_neon(c: &Ctx<'_>, u: &Unit, buf: &mut [f32]) {
    unit_body::<Neon>(c, u, buf)
}

/// A K or V row ready for vector loads: f32 or f16 in place, quantized rows widened into a
/// per-row scratch.
#[derive(Clone, Copy)]
enum Row {
    F32(*const f32),
    F16(*const u16),
}

impl Row {
    /// Vector `c` (elements `c·LANES..`) of the row as f32.
    #[inline(always)]
    unsafe fn load<S: Simd>(self, c: usize) -> S::V {
        match self {
            Row::F32(p) => S::load(p.add(c * S::LANES)),
            Row::F16(p) => S::load_f16(p.add(c * S::LANES)),
        }
    }
}

/// Row `row` (of `dim` values) of `kv`; quantized rows are widened into `scratch`.
#[inline(always)]
unsafe fn row<S: AttnSimd>(kv: KvData<'_>, row: usize, dim: usize, scratch: &mut [f32]) -> Row {
    match kv {
        KvData::F32(v) => Row::F32(v[row * dim..][..dim].as_ptr()),
        KvData::F16(v) => Row::F16(v[row * dim..][..dim].as_ptr().cast()),
        KvData::Q8_0(b) => {
            for (blk, o) in b[row * dim / 32..][..dim / 32]
                .iter()
                .zip(scratch.chunks_exact_mut(32))
            {
                let d = S::splat(blk.d.to_f32());
                for c in 0..32 / S::LANES {
                    let x = S::load_i8(blk.qs.as_ptr().add(c * S::LANES));
                    S::store(o.as_mut_ptr().add(c * S::LANES), S::mul(x, d));
                }
            }
            Row::F32(scratch.as_ptr())
        }
        KvData::Q4_0(b) => {
            let mut t = [0i8; 32];
            for (blk, o) in b[row * dim / 32..][..dim / 32]
                .iter()
                .zip(scratch.chunks_exact_mut(32))
            {
                for j in 0..16 {
                    t[j] = (blk.qs[j] & 0xF) as i8 - 8;
                    t[j + 16] = (blk.qs[j] >> 4) as i8 - 8;
                }
                let d = S::splat(blk.d.to_f32());
                for c in 0..32 / S::LANES {
                    let x = S::load_i8(t.as_ptr().add(c * S::LANES));
                    S::store(o.as_mut_ptr().add(c * S::LANES), S::mul(x, d));
                }
            }
            Row::F32(scratch.as_ptr())
        }
    }
}

/// Prefetches rows `row0..row0 + n` (of `dim` values) of `kv`.
#[inline(always)]
unsafe fn prefetch_rows<S: Simd>(kv: KvData<'_>, row0: usize, n: usize, dim: usize) {
    let (ptr, bytes) = match kv {
        KvData::F32(v) => (
            v[row0 * dim..][..n * dim].as_ptr().cast::<u8>(),
            n * dim * 4,
        ),
        KvData::F16(v) => (
            v[row0 * dim..][..n * dim].as_ptr().cast::<u8>(),
            n * dim * 2,
        ),
        KvData::Q8_0(b) => {
            let b = &b[row0 * dim / 32..][..n * dim / 32];
            (b.as_ptr().cast::<u8>(), std::mem::size_of_val(b))
        }
        KvData::Q4_0(b) => {
            let b = &b[row0 * dim / 32..][..n * dim / 32];
            (b.as_ptr().cast::<u8>(), std::mem::size_of_val(b))
        }
    };
    for o in (0..bytes).step_by(64) {
        S::prefetch(ptr.add(o));
    }
}

/// `out[r·KB] = q_r · k` for the `n` query rows at `q` (row stride `d`).
#[inline(always)]
unsafe fn dot_rows<S: AttnSimd>(k: Row, q: &[f32], n: usize, d: usize, out: &mut [f32]) {
    let nc = d / S::LANES;
    let mut r = 0;
    while r + 4 <= n {
        let qp = q.as_ptr().add(r * d);
        // Two chains per row (even and odd vectors) halve the FMA latency per key.
        let (mut a, mut b) = ([S::zero(); 4], [S::zero(); 4]);
        let mut c = 0;
        while c + 2 <= nc {
            let (k0, k1) = (k.load::<S>(c), k.load::<S>(c + 1));
            for x in 0..4 {
                let qx = qp.add(x * d + c * S::LANES);
                a[x] = S::fma(S::load(qx), k0, a[x]);
                b[x] = S::fma(S::load(qx.add(S::LANES)), k1, b[x]);
            }
            c += 2;
        }
        if c < nc {
            let k0 = k.load::<S>(c);
            for (x, acc) in a.iter_mut().enumerate() {
                *acc = S::fma(S::load(qp.add(x * d + c * S::LANES)), k0, *acc);
            }
        }
        let a = [
            S::add(a[0], b[0]),
            S::add(a[1], b[1]),
            S::add(a[2], b[2]),
            S::add(a[3], b[3]),
        ];
        for (x, sum) in S::hsum4(a).into_iter().enumerate() {
            out[(r + x) * KB] = sum;
        }
        r += 4;
    }
    while r < n {
        let qp = q.as_ptr().add(r * d);
        let mut a = S::zero();
        for c in 0..nc {
            a = S::fma(S::load(qp.add(c * S::LANES)), k.load::<S>(c), a);
        }
        out[r * KB] = S::hsum(a);
        r += 1;
    }
}

/// Rows (queries × heads of a group) from which a unit scores a key block as a small matrix
/// product over transposed keys instead of one dot product per key and row.
const GEMM_ROWS: usize = 8;

/// Keys `j..j + nb` of KV head `g`, widened to f32 (quantized rows into `scr`, `LANES × d`)
/// and transposed into `kt` (`[d][KB]`, column `jj` = key `j + jj`; columns past `nb` are
/// zero).
///
/// # Safety
/// The keys exist; `d` is a multiple of the lanes; inlined into a wrapper with `S`'s features.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn transpose_keys<S: AttnSimd>(
    k: KvData<'_>,
    j: usize,
    nb: usize,
    h_kv: usize,
    g: usize,
    d: usize,
    kt: &mut [f32],
    scr: &mut [f32],
) {
    let l = S::LANES;
    let mut rows = [Row::F32(core::ptr::null()); 16];
    let mut tile = [S::zero(); 16];
    let tile = &mut tile[..l];
    for k0 in (0..KB).step_by(l) {
        let n = nb.saturating_sub(k0).min(l);
        for (x, r) in rows[..n].iter_mut().enumerate() {
            *r = row::<S>(k, (j + k0 + x) * h_kv + g, d, &mut scr[x * d..(x + 1) * d]);
        }
        for c0 in (0..d).step_by(l) {
            for (x, t) in tile.iter_mut().enumerate() {
                *t = if x < n {
                    rows[x].load::<S>(c0 / l)
                } else {
                    S::zero()
                };
            }
            S::transpose(tile);
            for (y, t) in tile.iter().enumerate() {
                S::store(kt.as_mut_ptr().add((c0 + y) * KB + k0), *t);
            }
        }
    }
}

/// `sc[r·KB + jj] = q_r · k_jj` for the `nr` rows of `q` (`[nr][d]`) and the KB keys of `kt`
/// (`[d][KB]`): 4 rows × 2 key vectors of accumulators, a broadcast query value against two
/// key vectors per step.
///
/// # Safety
/// Slices as described; `KB` is a multiple of twice the lanes; inlined into a wrapper with
/// `S`'s features.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn block_scores<S: AttnSimd>(q: &[f32], nr: usize, kt: &[f32], d: usize, sc: &mut [f32]) {
    let l = S::LANES;
    let mut r = 0;
    while r < nr {
        let n = (nr - r).min(4);
        for v0 in (0..KB).step_by(2 * l) {
            let mut a = [[S::zero(); 2]; 4];
            for c in 0..d {
                let kp = kt.as_ptr().add(c * KB + v0);
                let (k0, k1) = (S::load(kp), S::load(kp.add(l)));
                for x in 0..n {
                    let qv = S::splat(*q.get_unchecked((r + x) * d + c));
                    a[x][0] = S::fma(qv, k0, a[x][0]);
                    a[x][1] = S::fma(qv, k1, a[x][1]);
                }
            }
            for x in 0..n {
                let o = sc.as_mut_ptr().add((r + x) * KB + v0);
                S::store(o, a[x][0]);
                S::store(o.add(l), a[x][1]);
            }
        }
        r += n;
    }
}

/// The unit body, written once over the vector primitives.
#[inline(always)]
unsafe fn unit_body<S: AttnSimd>(c: &Ctx<'_>, u: &Unit, buf: &mut [f32]) {
    let (s, p) = (c.s, c.p);
    let (d, dv) = (s.d, s.d_v);
    let group = s.h_q / s.h_kv;
    let nq = u.i1 - u.i0;
    let nr = nq * group;
    let stride = dv + 2;
    let lanes = S::LANES;
    // Scaled queries, row gi·nr + r of head g0 + gi with r = (i − i0)·group + hg.
    let nh = u.g1 - u.g0;
    let mut qs = vec![0f32; nh * nr * d];
    for gi in 0..nh {
        for i in 0..nq {
            for hg in 0..group {
                let src = &c.q[((u.i0 + i) * s.h_q + (u.g0 + gi) * group + hg) * d..][..d];
                let dst = &mut qs[((gi * nq + i) * group + hg) * d..][..d];
                dst.iter_mut().zip(src).for_each(|(o, x)| *o = x * p.scale);
            }
        }
    }
    let ranges: Vec<_> = (u.i0..u.i1)
        .map(|i| p.key_range((p.q_pos0 + i) as i64, s.t_k))
        .collect();
    // Prefill (several queries, many rows): key blocks scored as a matrix product.
    let gemm = nq > 1 && nr >= GEMM_ROWS;
    // Widened key rows: one, or a tile of LANES for the transposition.
    let mut kscr = vec![0f32; d * lanes];
    // The block's keys of one head transposed: [d][KB] (prefill only).
    let mut kt = vec![0f32; if gemm { d * KB } else { 0 }];
    let mut vscr = vec![0f32; 4 * dv];
    let all = nh * nr;
    let mut sc = vec![f32::NEG_INFINITY; all * KB];
    let zrow = vec![0f32; dv];
    let mut live = [false; KB];
    let mut j = u.j0;
    while j < u.j1 {
        let jb = (j + KB).min(u.j1);
        let nb = jb - j;
        sc.fill(f32::NEG_INFINITY);
        live[..nb].fill(false);
        // Whether query `i` of the tile sees key `jj`.
        let seen = |i: usize, jj: usize| {
            let rg = &ranges[i];
            jj >= rg.start
                && jj < rg.end
                && (p.key_positions.is_none()
                    || p.visible((p.q_pos0 + u.i0 + i) as i64, p.key_pos(jj)))
        };
        if gemm {
            // Many rows (prefill): the block's keys transposed once per head, then a
            // register-blocked product of every row with every key, then the mask.
            for gi in 0..nh {
                transpose_keys::<S>(c.k, j, nb, s.h_kv, u.g0 + gi, d, &mut kt, &mut kscr);
                let q0 = gi * nr;
                block_scores::<S>(&qs[q0 * d..(q0 + nr) * d], nr, &kt, d, &mut sc[q0 * KB..]);
            }
            for (jj, lv) in live[..nb].iter_mut().enumerate() {
                for i in 0..nq {
                    if seen(i, j + jj) {
                        *lv = true;
                        continue;
                    }
                    for gi in 0..nh {
                        let r0 = gi * nr + i * group;
                        for r in r0..r0 + group {
                            sc[r * KB + jj] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            for r in 0..all {
                sc[r * KB + nb..(r + 1) * KB].fill(f32::NEG_INFINITY);
            }
        } else {
            // Scores, key-major so the heads' rows of a token are read in address order.
            for jj in j..jb {
                if nh > 1 {
                    // Every head's rows of a token are contiguous: fetch the keys `PF` tokens
                    // ahead, spread over the loop, so DRAM streams while this token computes,
                    // and this token's values, which the value pass reads after the scores.
                    if jj + PF < u.j1 {
                        prefetch_rows::<S>(c.k, (jj + PF) * s.h_kv, s.h_kv, d);
                    }
                    prefetch_rows::<S>(c.v, jj * s.h_kv, s.h_kv, dv);
                }
                for i in (0..nq).filter(|&i| seen(i, jj)) {
                    for gi in 0..nh {
                        let k = row::<S>(c.k, jj * s.h_kv + u.g0 + gi, d, &mut kscr);
                        let r0 = gi * nr + i * group;
                        dot_rows::<S>(
                            k,
                            &qs[r0 * d..(r0 + group) * d],
                            group,
                            d,
                            &mut sc[r0 * KB + (jj - j)..],
                        );
                    }
                    live[jj - j] = true;
                }
            }
        }
        if !live[..nb].contains(&true) {
            j = jb;
            continue;
        }
        // One softmax pass per row: max, rescale, exp in place.
        for r in 0..all {
            let row_sc = &mut sc[r * KB..r * KB + KB];
            if p.softcap.is_some() {
                for x in row_sc[..nb].iter_mut() {
                    if *x > f32::NEG_INFINITY {
                        *x = p.cap(*x);
                    }
                }
            }
            let mut mv = S::splat(f32::NEG_INFINITY);
            let mut t = 0;
            while t + lanes <= nb {
                mv = S::max(mv, S::load(row_sc.as_ptr().add(t)));
                t += lanes;
            }
            let mut bmax = S::hmax(mv);
            for &x in &row_sc[t..nb] {
                bmax = bmax.max(x);
            }
            if bmax == f32::NEG_INFINITY {
                row_sc.fill(0.0);
                continue;
            }
            let st = &mut buf[r * stride..][..stride];
            let m_new = st[0].max(bmax);
            if st[0] != m_new {
                let cf = (st[0] - m_new).exp();
                st[1] *= cf;
                let cv = S::splat(cf);
                for cc in 0..dv / lanes {
                    let pa = st.as_mut_ptr().add(2 + cc * lanes);
                    S::store(pa, S::mul(S::load(pa), cv));
                }
                st[0] = m_new;
            }
            let mn = S::splat(-m_new);
            let mut sum = S::zero();
            let mut t = 0;
            while t + lanes <= KB {
                let pa = row_sc.as_mut_ptr().add(t);
                let w = S::exp(S::add(S::load(pa), mn));
                S::store(pa, w);
                sum = S::add(sum, w);
                t += lanes;
            }
            st[1] += S::hsum(sum);
        }
        // Weighted values, token-major in groups of 4 tokens so the V rows stream in address
        // order: the accumulators (a few KiB per head) stay in L1 while the rows pass once.
        // Tokens no row sees point at a zero row; their weights are 0.
        let f16v = matches!(c.v, KvData::F16(_));
        let mut jq = j;
        while jq < jb {
            let jn = (jq + 4).min(jb);
            for gi in 0..nh {
                let mut vp = [zrow.as_ptr().cast::<u8>(); 4];
                for t in jq..jn {
                    if live[t - j] {
                        let scr = &mut vscr[(t - jq) * dv..][..dv];
                        vp[t - jq] = match row::<S>(c.v, t * s.h_kv + u.g0 + gi, dv, scr) {
                            Row::F32(p) => p.cast(),
                            Row::F16(p) => p.cast(),
                        };
                    }
                }
                let mut r = gi * nr;
                while r < (gi + 1) * nr {
                    let n = (gi + 1) * nr - r;
                    let w = sc.as_ptr().add(r * KB + (jq - j));
                    let acc = buf.as_mut_ptr().add(r * stride + 2);
                    r += match (n, f16v) {
                        (4.., true) => weigh_values::<S, 4, true>(&vp, w, acc, stride, dv),
                        (4.., false) => weigh_values::<S, 4, false>(&vp, w, acc, stride, dv),
                        (2 | 3, true) => weigh_values::<S, 2, true>(&vp, w, acc, stride, dv),
                        (2 | 3, false) => weigh_values::<S, 2, false>(&vp, w, acc, stride, dv),
                        (_, true) => weigh_values::<S, 1, true>(&vp, w, acc, stride, dv),
                        (_, false) => weigh_values::<S, 1, false>(&vp, w, acc, stride, dv),
                    };
                }
            }
            jq = jn;
        }
        j = jb;
    }
}

/// Adds `Σ_t w[x][t]·v_t` over four tokens to the `R` accumulator rows at `acc` (row stride
/// `stride`): `vp` are the tokens' value rows (f16 when `H`, else f32; `dv` values each), `w`
/// the weights (row stride [`KB`], four consecutive tokens). Returns `R`.
#[inline(always)]
unsafe fn weigh_values<S: AttnSimd, const R: usize, const H: bool>(
    vp: &[*const u8; 4],
    w: *const f32,
    acc: *mut f32,
    stride: usize,
    dv: usize,
) -> usize {
    let lanes = S::LANES;
    let ld = |p: *const u8, cc: usize| {
        if H {
            S::load_f16(p.cast::<u16>().add(cc * lanes))
        } else {
            S::load(p.cast::<f32>().add(cc * lanes))
        }
    };
    let mut ws = [[S::zero(); 4]; R];
    for (x, wx) in ws.iter_mut().enumerate() {
        for (t, wt) in wx.iter_mut().enumerate() {
            *wt = S::splat(*w.add(x * KB + t));
        }
    }
    for cc in 0..dv / lanes {
        let v = [ld(vp[0], cc), ld(vp[1], cc), ld(vp[2], cc), ld(vp[3], cc)];
        for (x, wx) in ws.iter().enumerate() {
            let pa = acc.add(x * stride + cc * lanes);
            let s01 = S::fma(wx[1], v[1], S::mul(wx[0], v[0]));
            let s23 = S::fma(wx[3], v[3], S::mul(wx[2], v[2]));
            S::store(pa, S::add(S::load(pa), S::add(s01, s23)));
        }
    }
    R
}

/// Merges the key splits of every (query, head) by log-sum-exp, adds the sink column, and
/// normalises into `out`.
fn merge(
    s: AttnShape,
    p: &AttnParams<'_>,
    units: &[Unit],
    partials: Vec<Mutex<Vec<f32>>>,
    out: &mut [f32],
) {
    let group = s.h_q / s.h_kv;
    let stride = s.d_v + 2;
    // Global max per (query, head) first.
    let mut gmax: Vec<f32> = (0..s.t_q * s.h_q)
        .map(|ih| p.sinks.map_or(f32::NEG_INFINITY, |sk| sk[ih % s.h_q]))
        .collect();
    let parts: Vec<Vec<f32>> = partials
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    for (u, buf) in units.iter().zip(&parts) {
        let nr = (u.i1 - u.i0) * group;
        for (r, st) in buf.chunks_exact(stride).enumerate() {
            let (g, r) = (u.g0 + r / nr, r % nr);
            let (i, hg) = (u.i0 + r / group, r % group);
            let ih = i * s.h_q + g * group + hg;
            gmax[ih] = gmax[ih].max(st[0]);
        }
    }
    let mut sums: Vec<f32> = (0..s.t_q * s.h_q)
        .map(|ih| match p.sinks {
            Some(sk) if gmax[ih] > f32::NEG_INFINITY => (sk[ih % s.h_q] - gmax[ih]).exp(),
            _ => 0.0,
        })
        .collect();
    out.fill(0.0);
    for (u, buf) in units.iter().zip(&parts) {
        let nr = (u.i1 - u.i0) * group;
        for (r, st) in buf.chunks_exact(stride).enumerate() {
            if st[0] == f32::NEG_INFINITY {
                continue;
            }
            let (g, r) = (u.g0 + r / nr, r % nr);
            let (i, hg) = (u.i0 + r / group, r % group);
            let ih = i * s.h_q + g * group + hg;
            let c = (st[0] - gmax[ih]).exp();
            sums[ih] += st[1] * c;
            let o = &mut out[ih * s.d_v..][..s.d_v];
            o.iter_mut().zip(&st[2..]).for_each(|(o, a)| *o += a * c);
        }
    }
    for (o, &l) in out.chunks_exact_mut(s.d_v).zip(&sums) {
        if l > 0.0 {
            o.iter_mut().for_each(|x| *x /= l);
        }
    }
}
