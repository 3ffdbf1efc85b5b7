//! The tiled quantized-matmul body, written once over [`QSimd`] and [`Packed`], and the per-task
//! driver that walks tiles and activation rows. ISA modules wrap [`run_tiles`] in a
//! `#[target_feature]` function so the whole body compiles with their instructions.

use super::act::Acts;
use super::repack::{Packed, TR};
use super::simd::QSimd;
use super::SharedMut;
// `from_fn` only for pointers and integers: a closure does not inherit the wrapper's target
// features, so an intrinsic inside one is not inlined (Q6_K decode on AVX2 ran 25× slower).
use std::array::from_fn;

/// The tiles and activation rows of one task.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskRange {
    /// First tile.
    pub t0: usize,
    /// One past the last tile.
    pub t1: usize,
    /// First activation row.
    pub i0: usize,
    /// One past the last activation row.
    pub i1: usize,
}

/// What one task needs: packed weights, activations and the output.
pub(crate) struct Job<'a> {
    /// Packed tiles, `tile_bytes` each.
    pub w: &'a [u8],
    /// Bytes per tile.
    pub tile_bytes: usize,
    /// Weight rows.
    pub n: usize,
    /// Values per row.
    pub k: usize,
    /// The quantized activations.
    pub acts: &'a Acts,
    /// `y`, `[m, n]`.
    pub y: SharedMut<'a, f32>,
}

/// Activation rows per micro-kernel call and tiles per call, per format: K-quants keep a
/// per-chunk partial sum per output vector, so they take one tile and more rows.
const fn blocking<P: Packed>() -> (usize, usize) {
    if P::SUBS == 1 {
        (4, 2)
    } else {
        (6, 1)
    }
}

/// Multiplies `MR` activation rows from `i0` by `NT` tiles from `w` over the whole `k`;
/// returns one 16-lane vector per (row, tile).
///
/// # Safety
/// `w` points at `NT` consecutive tiles of `tile_bytes`; rows `i0..i0 + MR` exist in `acts`;
/// inlined into a wrapper with `Q`'s features.
// Register tiles are indexed [row][tile] by loop counters, as in the scalar definition.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile_body<Q: QSimd, P: Packed, const MR: usize, const NT: usize>(
    w: *const u8,
    tile_bytes: usize,
    acts: &Acts,
    i0: usize,
    k: usize,
) -> [[Q::F; NT]; MR] {
    let kb = k / P::BLOCK;
    let codes: [*const u8; NT] = from_fn(|j| w.add(j * tile_bytes));
    let heads: [*const u8; NT] = from_fn(|j| w.add(j * tile_bytes + kb * P::CODES));
    let xq: [*const i8; MR] = from_fn(|i| acts.xq.as_ptr().add((i0 + i) * k));
    let init: [*const i32; MR] = from_fn(|i| acts.init.as_ptr().add((i0 + i) * kb * P::SUBS));
    let xsf: [*const f32; MR] = from_fn(|i| {
        if P::HAS_C {
            acts.xsf.as_ptr().add((i0 + i) * kb * P::SUBS)
        } else {
            acts.xsf.as_ptr()
        }
    });
    let dx: [*const f32; MR] = from_fn(|i| acts.dx.as_ptr().add((i0 + i) * kb));

    let mut acc: [[Q::F; NT]; MR] = [[Q::zero_f(); NT]; MR];
    for c in 0..kb {
        let mut t: [[Q::F; NT]; MR] = [[Q::zero_f(); NT]; MR];
        for s in 0..P::SUBS {
            let xo = c * P::BLOCK + s * P::S;
            let si = c * P::SUBS + s;
            let cc: [*const u8; NT] = from_fn(|j| codes[j].add(c * P::CODES));
            let iv: [i32; MR] = from_fn(|i| *init[i].add(si));
            let isum = Q::sub_dot::<P, MR, NT>(cc, s, xq, xo, iv);
            let mut sc = [P::scales::<Q>(heads[0].add(c * P::HEAD), s); NT];
            for j in 1..NT {
                sc[j] = P::scales::<Q>(heads[j].add(c * P::HEAD), s);
            }
            for i in 0..MR {
                let xs = if P::HAS_C {
                    Q::splat_f(*xsf[i].add(si))
                } else {
                    Q::zero_f()
                };
                if P::SUBS == 1 {
                    let dxv = Q::splat_f(*dx[i].add(c));
                    for j in 0..NT {
                        let mut f = Q::mul(Q::cvt(isum[i][j]), sc[j].0);
                        if P::HAS_C {
                            f = Q::fma(sc[j].1, xs, f);
                        }
                        acc[i][j] = Q::fma(f, dxv, acc[i][j]);
                    }
                } else {
                    for j in 0..NT {
                        t[i][j] = Q::fma(Q::cvt(isum[i][j]), sc[j].0, t[i][j]);
                        if P::HAS_C {
                            t[i][j] = Q::fma(sc[j].1, xs, t[i][j]);
                        }
                    }
                }
            }
        }
        if P::SUBS > 1 {
            for i in 0..MR {
                let dxv = Q::splat_f(*dx[i].add(c));
                for j in 0..NT {
                    acc[i][j] = Q::fma(t[i][j], dxv, acc[i][j]);
                }
            }
        }
    }
    acc
}

/// The code vector of group `g` (4 values × 16 rows) of sub-block `s`, unpacked to one byte
/// per code (biased when the ISA multiplies signed codes as unsigned).
///
/// # Safety
/// `cc` points at a chunk's codes; inlined into a wrapper with `Q`'s features.
#[inline(always)]
pub(crate) unsafe fn code_vec<Q: QSimd, P: Packed>(cc: *const u8, s: usize, g: usize) -> Q::W {
    if P::NIBBLES {
        let half = P::S / 8;
        let raw = Q::load_w(cc.add(s * P::SUB_BYTES + 64 * (g % half)));
        if g < half {
            Q::nib_lo(raw)
        } else {
            Q::nib_hi(raw)
        }
    } else if P::SIX {
        let pair = cc.add((s / 2) * 384);
        let half = (s % 2) as u32;
        let lo = Q::shr_and(Q::load_w(pair.add(64 * g)), 4 * half, 0x0F);
        let h = Q::load_w(pair.add(256 + 64 * (g % 2)));
        Q::or_shl4(lo, Q::shr_and(h, 4 * half + 2 * (g / 2) as u32, 0x03))
    } else {
        let r = Q::load_w(cc.add(s * P::SUB_BYTES + 64 * g));
        if P::SIGNED && Q::SIGNED_VIA_BIAS {
            Q::flip(r)
        } else {
            r
        }
    }
}

/// The integer sums of sub-block `s` for `MR` activation rows × `NT` tiles, starting from the
/// offset corrections `init`: one broadcast 4-code dot product per row, tile and group.
///
/// # Safety
/// `cc` point at the chunk's codes of each tile, `xq` at activation rows holding values
/// `xo..xo + S`; inlined into a wrapper with `Q`'s features.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) unsafe fn sub_lanes<Q: QSimd, P: Packed, const MR: usize, const NT: usize>(
    cc: [*const u8; NT],
    s: usize,
    xq: [*const i8; MR],
    xo: usize,
    init: [i32; MR],
) -> [[Q::I; NT]; MR] {
    let biased = P::SIGNED && Q::SIGNED_VIA_BIAS;
    let x4 = |i: usize, off: usize| xq[i].add(off).cast::<i32>().read_unaligned();
    let cs: [*const u8; NT] = from_fn(|j| cc[j].add(s * P::SUB_BYTES));
    let mut isum = [[Q::splat_i(init[0]); NT]; MR];
    for i in 1..MR {
        isum[i] = [Q::splat_i(init[i]); NT];
    }
    if P::NIBBLES {
        let half = P::S / 8;
        for v in 0..half {
            let raw = Q::load_w(cs[0].add(64 * v));
            let (mut lo, mut hi) = ([Q::nib_lo(raw); NT], [Q::nib_hi(raw); NT]);
            for j in 1..NT {
                let raw = Q::load_w(cs[j].add(64 * v));
                (lo[j], hi[j]) = (Q::nib_lo(raw), Q::nib_hi(raw));
            }
            for i in 0..MR {
                let (xl, xh) = (x4(i, xo + 4 * v), x4(i, xo + 4 * (v + half)));
                for j in 0..NT {
                    isum[i][j] = Q::dot_u(isum[i][j], lo[j], xl);
                    isum[i][j] = Q::dot_u(isum[i][j], hi[j], xh);
                }
            }
        }
    } else {
        // One byte per code (Q8_0), or 6-bit codes rebuilt from their planes (Q6_K).
        for g in 0..P::S / 4 {
            let mut wv = [code_vec::<Q, P>(cc[0], s, g); NT];
            for j in 1..NT {
                wv[j] = code_vec::<Q, P>(cc[j], s, g);
            }
            for i in 0..MR {
                let xv = x4(i, xo + 4 * g);
                for j in 0..NT {
                    isum[i][j] = if P::SIGNED && !biased {
                        Q::dot_s(isum[i][j], wv[j], xv)
                    } else {
                        Q::dot_u(isum[i][j], wv[j], xv)
                    };
                }
            }
        }
    }
    isum
}

/// Writes the `MR × NT` result vectors of rows `i0..` and tiles `t0..` into `y`.
///
/// # Safety
/// The caller's task owns these output elements; inlined into a wrapper with `Q`'s features.
#[inline(always)]
unsafe fn store<Q: QSimd, const MR: usize, const NT: usize>(
    job: &Job<'_>,
    acc: [[Q::F; NT]; MR],
    i0: usize,
    t0: usize,
) {
    for (i, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let c0 = (t0 + j) * TR;
            let cols = TR.min(job.n - c0);
            let off = (i0 + i) * job.n + c0;
            if cols == TR {
                Q::store(job.y.ptr(off, TR), *v);
            } else {
                let mut tmp = [0.0f32; TR];
                Q::store(tmp.as_mut_ptr(), *v);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), job.y.ptr(off, cols), cols);
            }
        }
    }
}

/// Rows `i0..i0 + mr` (`mr ≤ MR`) times `NT` tiles from `t0`.
///
/// # Safety
/// As [`tile_body`] and [`store`].
#[inline(always)]
unsafe fn rows<Q: QSimd, P: Packed, const MR: usize, const NT: usize>(
    job: &Job<'_>,
    i0: usize,
    t0: usize,
) {
    let w = job.w.as_ptr().add(t0 * job.tile_bytes);
    let acc = tile_body::<Q, P, MR, NT>(w, job.tile_bytes, job.acts, i0, job.k);
    store::<Q, MR, NT>(job, acc, i0, t0);
}

/// Computes tiles `t0..t1` for activation rows `i0..i1`.
///
/// # Safety
/// The caller owns output columns `16·t0 .. min(16·t1, n)` of rows `i0..i1 ≤ m`; `job` is
/// consistent (checked by the driver); inlined into a wrapper with `Q`'s features.
#[inline(always)]
pub(crate) unsafe fn run_tiles<Q: QSimd, P: Packed>(job: &Job<'_>, r: TaskRange) {
    let TaskRange { t0, t1, i0, i1 } = r;
    if i1 - i0 == 1 {
        // Decode: one activation row, four tiles at a time (four independent dot chains
        // keep the loads flowing).
        let mut t = t0;
        while t < t1 {
            if t1 - t >= 4 {
                rows::<Q, P, 1, 4>(job, i0, t);
                t += 4;
            } else {
                rows::<Q, P, 1, 1>(job, i0, t);
                t += 1;
            }
        }
        return;
    }
    let (mr, nt) = Q::BLOCKING.unwrap_or(blocking::<P>());
    let mut t = t0;
    while t < t1 {
        let two = nt == 2 && t1 - t >= 2;
        let mut i = i0;
        while i < i1 {
            let full = i1 - i >= mr;
            match (full, two, mr) {
                (true, true, _) => rows::<Q, P, 4, 2>(job, i, t),
                (true, false, 4) => rows::<Q, P, 4, 1>(job, i, t),
                (true, false, _) => rows::<Q, P, 6, 1>(job, i, t),
                (false, true, _) => rows::<Q, P, 1, 2>(job, i, t),
                (false, false, _) => rows::<Q, P, 1, 1>(job, i, t),
            }
            i += if full { mr } else { 1 };
        }
        t += if two { 2 } else { 1 };
    }
}
