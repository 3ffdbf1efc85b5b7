//! Generic kernel bodies for float matmul, written once over [`Simd`] and instantiated per ISA by
//! the `#[target_feature]` wrappers in `crate::arch`.
//!
//! * [`matvec`]: `y[j] = x · w[j]` for a run of weight rows and up to eight activation rows,
//!   several weight rows in flight, each weight byte read once, f32 accumulators.
//! * [`pack`]: copies blocks of `x` and `w` into the panel layouts the micro-kernel reads (`w`
//!   converted to f32 on the way, so one micro-kernel serves every weight dtype).
//! * [`micro`]: the register-tiled `MR × NR` GEMM micro-kernel (broadcast `x`, vector `w`).

use crate::arch::Simd;
use half::{bf16, f16};

/// A weight element that widens to f32.
pub(crate) trait WElem: Copy + Send + Sync + 'static {
    /// Loads `S::LANES` elements from `p` as f32.
    ///
    /// # Safety
    /// As [`Simd`]'s methods: `p` valid for `S::LANES` elements, ISA features present.
    unsafe fn load<S: Simd>(p: *const Self) -> S::V;
    /// One element as f32.
    fn to_f32(self) -> f32;
}

impl WElem for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::V {
        S::load(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl WElem for f16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f16) -> S::V {
        // `f16` is `repr(transparent)` over its `u16` bits.
        S::load_f16(p.cast())
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl WElem for bf16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const bf16) -> S::V {
        // `bf16` is `repr(transparent)` over its `u16` bits.
        S::load_bf16(p.cast())
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

/// Panics unless the operands of a [`MatmulKernels::matvec`] call fit.
pub(crate) fn check_matvec(x: usize, m: usize, w: usize, k: usize, y: usize) {
    assert!((1..=MATVEC_MAX_M).contains(&m), "matvec takes 1..=8 rows");
    assert!(y.is_multiple_of(m), "y must be [m, rows]");
    assert!(
        x / m >= k && w / k.max(1) >= y / m,
        "matvec operand too short"
    );
}

/// The per-ISA entry points of the float matmul. Implemented by the detected-ISA tokens in
/// `crate::arch` (holding a token proves the CPU has the features) and by [`crate::arch::Scalar`].
pub(crate) trait MatmulKernels: Copy + Send + Sync {
    /// Micro-tile rows (rows of `x` / `y`).
    const MR: usize;
    /// Micro-tile columns (rows of `w`, columns of `y`): a whole number of vectors.
    const NR: usize;
    /// Depth of a packed block (L1: one `KC × NR` panel of `w`).
    const KC: usize;
    /// Rows of `x` per packed block (L2: `MC × KC`).
    const MC: usize;
    /// Rows of `w` per packed block (L3: `NC × KC`).
    const NC: usize;

    /// [`matvec`]: `y[i · rows + j] = Σ_p x[i · k + p] · w[j · k + p]`, `rows = y.len() / m`.
    ///
    /// # Panics
    /// Unless `1 <= m <= MATVEC_MAX_M`, `m` divides `y.len()`, `x.len() >= m · k` and
    /// `w.len() >= rows · k`.
    fn matvec<W: WElem>(self, x: &[f32], m: usize, w: &[W], k: usize, y: &mut [f32]);

    /// [`pack`] of a block of `w` into panels of `NR` rows, widened to f32.
    ///
    /// # Panics
    /// When the block lies outside `w` or `out` is too short.
    fn pack_w<W: WElem>(self, w: &[W], b: PackBlock, out: &mut [f32]);

    /// Prefetches every cache line of block `b` of `w` (rows past `b.rows` skipped), so a
    /// later [`MatmulKernels::pack_w`] of it finds it in cache.
    ///
    /// # Panics
    /// When the block lies outside `w`.
    fn prefetch_w<W: WElem>(self, w: &[W], b: PackBlock);

    /// [`pack`] of a block of `x` into panels of `MR` rows.
    ///
    /// # Panics
    /// When the block lies outside `x` or `out` is too short.
    fn pack_x(self, x: &[f32], b: PackBlock, out: &mut [f32]);

    /// [`micro`] with this ISA's `MR × NR` tile.
    ///
    /// # Safety
    /// `a` valid for `kc · MR` reads, `b` for `kc · NR`, and `c` for reads and writes of
    /// `MR` rows of `NR` f32 at row stride `ldc`, not accessed by anyone else meanwhile.
    unsafe fn micro(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    );
}

/// A block of a row-major `[rows, k]` matrix to pack: rows `r0..r0 + nr_rows` (rows at or past
/// `rows` read as zero) and columns `p0..p0 + kc`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackBlock {
    /// Total rows of the matrix.
    pub rows: usize,
    /// Row length of the matrix.
    pub k: usize,
    /// First row of the block.
    pub r0: usize,
    /// Rows in the block (padded up to whole panels in the output).
    pub nr_rows: usize,
    /// First column of the block.
    pub p0: usize,
    /// Columns in the block.
    pub kc: usize,
}

impl PackBlock {
    /// Number of f32 the packed block takes with panels of `panel` rows.
    pub fn packed_len(&self, panel: usize) -> usize {
        self.nr_rows.div_ceil(panel) * panel * self.kc
    }

    /// Panics unless the block's existing rows lie inside a matrix of `len` elements.
    pub fn check_src(&self, len: usize) {
        let last_row = (self.r0 + self.nr_rows).min(self.rows);
        assert!(self.p0 + self.kc <= self.k, "pack block past the row end");
        assert!(last_row * self.k <= len, "pack block past the matrix end");
    }

    /// Panics unless the block lies inside a matrix of `len` elements and `out_len` holds it.
    pub fn check(&self, len: usize, out_len: usize, panel: usize) {
        self.check_src(len);
        assert!(self.packed_len(panel) <= out_len, "pack buffer too short");
        assert!(panel <= 64, "panels of at most 64 rows");
    }
}

/// Most activation rows the matvec path takes; more go to the GEMM.
pub(crate) const MATVEC_MAX_M: usize = 8;

/// `y[i · rows + j] = Σ_p x[i · k + p] · w[j · k + p]` for `i < m`, `j < rows = y.len() / m`:
/// the matvec (decode) path for `m <= MATVEC_MAX_M` activation rows.
///
/// Weight rows go four at a time; each group of four is used by every group of up to four
/// activation rows while it is still in L1/L2, so each weight byte comes from memory once.
///
/// # Safety
/// `1 <= m <= MATVEC_MAX_M`, `x.len() >= m · k`, `w.len() >= rows · k`; ISA features of `S`
/// present.
#[inline(always)]
pub(crate) unsafe fn matvec<S: Simd, W: WElem>(
    x: &[f32],
    m: usize,
    w: &[W],
    k: usize,
    y: &mut [f32],
) {
    let rows = y.len() / m;
    let mut j = 0;
    while j + 4 <= rows {
        for_x_groups::<S, W, 4>(x, m, w, k, rows, j, y);
        j += 4;
    }
    while j < rows {
        for_x_groups::<S, W, 1>(x, m, w, k, rows, j, y);
        j += 1;
    }
}

/// Weight rows `j..j + R` (`R` is 4 or 1) against every group of up to four activation rows.
#[inline(always)]
unsafe fn for_x_groups<S: Simd, W: WElem, const R: usize>(
    x: &[f32],
    m: usize,
    w: &[W],
    k: usize,
    rows: usize,
    j: usize,
    y: &mut [f32],
) {
    let mut i = 0;
    while i < m {
        let g = (m - i).min(4);
        let (x, y) = (&x[i * k..], &mut y[i * rows..]);
        // (activation rows, weight rows in flight, unroll): at most 16 accumulators.
        match (g, R) {
            (1, 4) => dot_rows::<S, W, 1, 4, 2>(x, w, k, rows, j, y),
            (2, 4) => dot_rows::<S, W, 2, 4, 1>(x, w, k, rows, j, y),
            (3, 4) => {
                dot_rows::<S, W, 3, 2, 1>(x, w, k, rows, j, y);
                dot_rows::<S, W, 3, 2, 1>(x, w, k, rows, j + 2, y);
            }
            (_, 4) => {
                dot_rows::<S, W, 4, 2, 1>(x, w, k, rows, j, y);
                dot_rows::<S, W, 4, 2, 1>(x, w, k, rows, j + 2, y);
            }
            (1, _) => dot_rows::<S, W, 1, 1, 2>(x, w, k, rows, j, y),
            (2, _) => dot_rows::<S, W, 2, 1, 1>(x, w, k, rows, j, y),
            (3, _) => dot_rows::<S, W, 3, 1, 1>(x, w, k, rows, j, y),
            _ => dot_rows::<S, W, 4, 1, 1>(x, w, k, rows, j, y),
        }
        i += g;
    }
}

/// `y[i · rows + j + r] = x[i] · w[j + r]` for `i < M`, `r < R`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn dot_rows<S: Simd, W: WElem, const M: usize, const R: usize, const U: usize>(
    x: &[f32],
    w: &[W],
    k: usize,
    rows: usize,
    j: usize,
    y: &mut [f32],
) {
    let l = S::LANES;
    let ku = k - k % (U * l);
    let k1 = k - k % l;
    let xp = x.as_ptr();
    let mut wr = [w.as_ptr(); R];
    for r in 0..R {
        wr[r] = w.as_ptr().add((j + r) * k);
    }
    let mut acc = [[[S::zero(); U]; R]; M];
    let mut p = 0;
    while p < ku {
        for u in 0..U {
            let mut xv = [S::zero(); M];
            for i in 0..M {
                xv[i] = S::load(xp.add(i * k + p + u * l));
            }
            for r in 0..R {
                let wv = W::load::<S>(wr[r].add(p + u * l));
                for i in 0..M {
                    acc[i][r][u] = S::fma(wv, xv[i], acc[i][r][u]);
                }
            }
        }
        p += U * l;
    }
    while p < k1 {
        for r in 0..R {
            let wv = W::load::<S>(wr[r].add(p));
            for i in 0..M {
                acc[i][r][0] = S::fma(wv, S::load(xp.add(i * k + p)), acc[i][r][0]);
            }
        }
        p += l;
    }
    for i in 0..M {
        for r in 0..R {
            let mut v = acc[i][r][0];
            for u in 1..U {
                v = S::add(v, acc[i][r][u]);
            }
            let mut s = S::hsum(v);
            for q in k1..k {
                s = x[i * k + q].mul_add((*wr[r].add(q)).to_f32(), s);
            }
            y[i * rows + j + r] = s;
        }
    }
}

/// Packs block `b` of the row-major `[rows, k]` matrix `w` into panels of `nr` rows:
/// `out[(panel · kc + p) · nr + r] = w[(r0 + panel · nr + r) · k + p0 + p]` as f32, zero past `rows`.
///
/// The rows of a panel are read side by side, `LANES` columns at a time (`nr` streams in flight,
/// not one short segment after another). When `nr` is a multiple of `LANES`, each
/// `LANES × LANES` block is transposed in registers; otherwise through a small buffer.
///
/// # Safety
/// `b.check(w.len(), out.len(), nr)` holds (so `nr <= 64`); `S::LANES <= 16`; ISA features of
/// `S` present.
#[inline(always)]
pub(crate) unsafe fn pack<S: Simd, W: WElem>(w: &[W], b: PackBlock, nr: usize, out: &mut [f32]) {
    const MAX_NR: usize = 64;
    let l = S::LANES;
    let kv = b.kc - b.kc % l;
    let mut src = [w.as_ptr(); MAX_NR];
    let op = out.as_mut_ptr();
    for panel in 0..b.nr_rows.div_ceil(nr) {
        let base = op.add(panel * b.kc * nr);
        // Rows past the block (or the matrix) read as zero.
        let live = nr
            .min(b.nr_rows - panel * nr)
            .min(b.rows.saturating_sub(b.r0 + panel * nr));
        for (r, s) in src.iter_mut().enumerate().take(live) {
            *s = w.as_ptr().add((b.r0 + panel * nr + r) * b.k + b.p0);
        }
        let mut p = 0;
        if nr.is_multiple_of(l) {
            let mut v = [S::zero(); 16];
            while p < kv {
                for g in 0..nr / l {
                    for (q, vq) in v.iter_mut().enumerate().take(l) {
                        let r = g * l + q;
                        *vq = if r < live {
                            W::load::<S>(src[r].add(p))
                        } else {
                            S::zero()
                        };
                    }
                    S::transpose(&mut v[..l]);
                    for (q, &vq) in v.iter().enumerate().take(l) {
                        S::store(base.add((p + q) * nr + g * l), vq);
                    }
                }
                p += l;
            }
        } else {
            let mut tmp = [0.0f32; MAX_NR * 16];
            if live < nr {
                tmp.fill(0.0);
            }
            while p < kv {
                for (r, &s) in src.iter().enumerate().take(live) {
                    S::store(tmp.as_mut_ptr().add(r * l), W::load::<S>(s.add(p)));
                }
                for q in 0..l {
                    let dst = base.add((p + q) * nr);
                    for r in 0..nr {
                        *dst.add(r) = tmp[r * l + q];
                    }
                }
                p += l;
            }
        }
        while p < b.kc {
            let dst = base.add(p * nr);
            for (r, &s) in src.iter().enumerate().take(nr) {
                *dst.add(r) = if r < live { (*s.add(p)).to_f32() } else { 0.0 };
            }
            p += 1;
        }
    }
}

/// Prefetches every cache line of block `b` of `w` (rows past `b.rows` skipped).
///
/// # Safety
/// The block's existing rows lie inside `w`; ISA features of `S` present.
#[inline(always)]
pub(crate) unsafe fn prefetch_block<S: Simd, W: WElem>(w: &[W], b: PackBlock) {
    let line = (64 / std::mem::size_of::<W>()).max(1);
    let last = (b.r0 + b.nr_rows).min(b.rows);
    for row in b.r0..last {
        let src = w.as_ptr().add(row * b.k + b.p0);
        let mut p = 0;
        while p < b.kc {
            S::prefetch(src.add(p).cast());
            p += line;
        }
    }
}

/// The `MR × (NV · LANES)` micro-kernel: `c[i·ldc + j] (+)= Σ_p a[p·MR + i] · b[p·NR + j]`.
///
/// # Safety
/// As [`MatmulKernels::micro`]; ISA features of `S` present.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn micro<S: Simd, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    let nr = NV * l;
    if accumulate {
        for i in 0..MR {
            S::prefetch(c.add(i * ldc).cast());
            S::prefetch(c.add(i * ldc + nr - 1).cast());
        }
    }
    let mut acc = [[S::zero(); NV]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let mut bv = [S::zero(); NV];
        for v in 0..NV {
            bv[v] = S::load(b.add(v * l));
        }
        for i in 0..MR {
            let ai = S::splat(*a.add(i));
            for v in 0..NV {
                acc[i][v] = S::fma(ai, bv[v], acc[i][v]);
            }
        }
        a = a.add(MR);
        b = b.add(nr);
    }
    for i in 0..MR {
        for v in 0..NV {
            let p = c.add(i * ldc + v * l);
            let r = if accumulate {
                S::add(S::load(p), acc[i][v])
            } else {
                acc[i][v]
            };
            S::store(p, r);
        }
    }
}
