//! AVX2: two ymm per 16-row tile vector; `vpmaddubsw` (unsigned × signed bytes to i16 pairs)
//! then `vpmaddwd` by ones to i32 per row. Signed Q8_0 codes use the sign trick
//! (`|w| · sign(x, w)`), which keeps every i16 pair sum in range.

use super::kernel::{run_tiles, Job, TaskRange};
use super::repack::Packed;
use super::simd::QSimd;
use crate::isa::Isa;
use core::arch::x86_64::*;

/// Proof that this CPU runs the AVX2 path; obtained from [`Avx2Q::new`] only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Q(());

impl Avx2Q {
    /// The token, when the CPU has every feature [`run`] enables.
    pub(crate) fn new() -> Option<Self> {
        Isa::Avx2.is_supported().then_some(Avx2Q(()))
    }

    /// Runs one task of `job`.
    ///
    /// # Safety
    /// As [`run_tiles`]: the caller owns those outputs and `job` is consistent.
    pub(crate) unsafe fn run<P: Packed>(self, job: &Job<'_>, r: TaskRange) {
        // SAFETY: the token proves the features `run_tf` enables were detected.
        run_tf::<P>(job, r)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_tf<P: Packed>(job: &Job<'_>, r: TaskRange) {
    run_tiles::<Avx2Q, P>(job, r)
}

/// Sum of each 4 u8 × i8 products into the i32 lanes of `acc`.
#[inline(always)]
unsafe fn dot4(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(w, x);
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

// SAFETY: AVX2, FMA and F16C intrinsics, inlined only into `run_tf`, which enables them and is
// reached only through the detected token. No closures around intrinsics: a closure does not
// inherit `run_tf`'s target features, so the intrinsic inside it becomes a call (that made
// Q6_K decode 25× slower).
unsafe impl QSimd for Avx2Q {
    type I = [__m256i; 2];
    type F = [__m256; 2];
    type W = [__m256i; 2];
    const SIGNED_VIA_BIAS: bool = false;

    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> [__m256i; 2] {
        [
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(32).cast()),
        ]
    }
    #[inline(always)]
    unsafe fn nib_lo(w: [__m256i; 2]) -> [__m256i; 2] {
        let m = _mm256_set1_epi8(0x0F);
        [_mm256_and_si256(w[0], m), _mm256_and_si256(w[1], m)]
    }
    #[inline(always)]
    unsafe fn nib_hi(w: [__m256i; 2]) -> [__m256i; 2] {
        let m = _mm256_set1_epi8(0x0F);
        [
            _mm256_and_si256(_mm256_srli_epi16::<4>(w[0]), m),
            _mm256_and_si256(_mm256_srli_epi16::<4>(w[1]), m),
        ]
    }
    #[inline(always)]
    unsafe fn shr_and(w: [__m256i; 2], n: u32, mask: u8) -> [__m256i; 2] {
        let c = _mm_cvtsi32_si128(n as i32);
        let m = _mm256_set1_epi8(mask as i8);
        [
            _mm256_and_si256(_mm256_srl_epi16(w[0], c), m),
            _mm256_and_si256(_mm256_srl_epi16(w[1], c), m),
        ]
    }
    #[inline(always)]
    unsafe fn or_shl4(lo: [__m256i; 2], hi: [__m256i; 2]) -> [__m256i; 2] {
        [
            _mm256_or_si256(lo[0], _mm256_slli_epi16::<4>(hi[0])),
            _mm256_or_si256(lo[1], _mm256_slli_epi16::<4>(hi[1])),
        ]
    }
    #[inline(always)]
    unsafe fn flip(w: [__m256i; 2]) -> [__m256i; 2] {
        let m = _mm256_set1_epi8(-128);
        [_mm256_xor_si256(w[0], m), _mm256_xor_si256(w[1], m)]
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> [__m256i; 2] {
        [_mm256_set1_epi32(v); 2]
    }
    #[inline(always)]
    unsafe fn dot_u(acc: [__m256i; 2], w: [__m256i; 2], x4: i32) -> [__m256i; 2] {
        let x = _mm256_set1_epi32(x4);
        [dot4(acc[0], w[0], x), dot4(acc[1], w[1], x)]
    }
    #[inline(always)]
    unsafe fn dot_s(acc: [__m256i; 2], w: [__m256i; 2], x4: i32) -> [__m256i; 2] {
        let x = _mm256_set1_epi32(x4);
        [
            dot4(
                acc[0],
                _mm256_sign_epi8(w[0], w[0]),
                _mm256_sign_epi8(x, w[0]),
            ),
            dot4(
                acc[1],
                _mm256_sign_epi8(w[1], w[1]),
                _mm256_sign_epi8(x, w[1]),
            ),
        ]
    }
    #[inline(always)]
    unsafe fn cvt(i: [__m256i; 2]) -> [__m256; 2] {
        [_mm256_cvtepi32_ps(i[0]), _mm256_cvtepi32_ps(i[1])]
    }
    #[inline(always)]
    unsafe fn zero_f() -> [__m256; 2] {
        [_mm256_setzero_ps(); 2]
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> [__m256; 2] {
        [_mm256_set1_ps(v); 2]
    }
    #[inline(always)]
    unsafe fn fma(a: [__m256; 2], b: [__m256; 2], c: [__m256; 2]) -> [__m256; 2] {
        [
            _mm256_fmadd_ps(a[0], b[0], c[0]),
            _mm256_fmadd_ps(a[1], b[1], c[1]),
        ]
    }
    #[inline(always)]
    unsafe fn mul(a: [__m256; 2], b: [__m256; 2]) -> [__m256; 2] {
        [_mm256_mul_ps(a[0], b[0]), _mm256_mul_ps(a[1], b[1])]
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> [__m256; 2] {
        [
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast())),
        ]
    }
    #[inline(always)]
    unsafe fn load_u8f(p: *const u8) -> [__m256; 2] {
        [
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8).cast()))),
        ]
    }
    #[inline(always)]
    unsafe fn load_i8f(p: *const u8) -> [__m256; 2] {
        [
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8).cast()))),
        ]
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [__m256; 2]) {
        _mm256_storeu_ps(p, v[0]);
        _mm256_storeu_ps(p.add(8), v[1]);
    }
}
