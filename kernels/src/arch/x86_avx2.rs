//! AVX2 + FMA + F16C bodies: 8-lane primitives and the `#[target_feature]` wrappers that
//! instantiate the generic kernels.

use super::Simd;
use crate::isa::Isa;
use crate::matmul::kernel::{self, PackBlock, WElem};
use crate::matmul::params::avx2 as p;
use core::arch::x86_64::*;

/// Proof that this CPU runs the AVX2 path; obtained from [`Avx2::new`] only.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    /// The token, when the CPU has every feature the wrappers below enable.
    pub fn new() -> Option<Self> {
        Isa::Avx2.is_supported().then_some(Avx2(()))
    }
}

// SAFETY: the primitives use AVX, AVX2, F16C and FMA intrinsics; they are inlined only into the
// wrappers below, which enable those features and are reached only through the token.
unsafe impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m256 {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [__m256]) {
        let v: &mut [__m256; 8] = v.try_into().expect("8 rows");
        let mut s = [_mm256_setzero_ps(); 8];
        for h in 0..2 {
            let (r0, r1, r2, r3) = (v[4 * h], v[4 * h + 1], v[4 * h + 2], v[4 * h + 3]);
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            // s[4h + j], 128-bit lane L: column j + 4L of rows 4h..4h+4.
            s[4 * h] = _mm256_shuffle_ps::<0x44>(t0, t2);
            s[4 * h + 1] = _mm256_shuffle_ps::<0xEE>(t0, t2);
            s[4 * h + 2] = _mm256_shuffle_ps::<0x44>(t1, t3);
            s[4 * h + 3] = _mm256_shuffle_ps::<0xEE>(t1, t3);
        }
        for j in 0..4 {
            v[j] = _mm256_permute2f128_ps::<0x20>(s[j], s[4 + j]);
            v[j + 4] = _mm256_permute2f128_ps::<0x31>(s[j], s[4 + j]);
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(p.cast())
    }
}

/// [`kernel::matvec`] on 8 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_tf<W: WElem>(x: &[f32], m: usize, w: &[W], k: usize, y: &mut [f32]) {
    kernel::matvec::<Avx2, W>(x, m, w, k, y)
}

/// [`kernel::pack`] on 8 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_tf<W: WElem>(w: &[W], b: PackBlock, nr: usize, out: &mut [f32]) {
    kernel::pack::<Avx2, W>(w, b, nr, out)
}

/// [`kernel::prefetch_block`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_tf<W: WElem>(w: &[W], b: PackBlock) {
    kernel::prefetch_block::<Avx2, W>(w, b)
}

/// [`kernel::micro`] with the `MR × NV·8` AVX2 tile.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn micro_tf(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    kernel::micro::<Avx2, { p::MR }, { p::NV }>(kc, a, b, c, ldc, accumulate)
}

super::impl_matmul_kernels!(Avx2, crate::matmul::params::avx2);
