//! AVX-512 VNNI: one zmm per 16-row tile vector, `vpdpbusd` (unsigned codes × signed
//! activations, 64 multiply-adds) per 4 values of 16 rows.
//!
//! The `_mm512_*` intrinsics are stable since Rust 1.89, above the workspace `rust-version`
//! (1.86); the MSRV lint is silenced for this file as in `arch/x86_avx512.rs`.
#![allow(clippy::incompatible_msrv)]

use super::kernel::{run_tiles, Job, TaskRange};
use super::repack::Packed;
use super::simd::QSimd;
use core::arch::x86_64::*;

/// Proof that this CPU runs the AVX-512 VNNI path; obtained from [`Avx512Vnni::new`] only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Vnni(());

impl Avx512Vnni {
    /// The token, when the CPU has every feature [`run`] enables.
    pub(crate) fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma"))
        .then_some(Avx512Vnni(()))
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

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
unsafe fn run_tf<P: Packed>(job: &Job<'_>, r: TaskRange) {
    run_tiles::<Avx512Vnni, P>(job, r)
}

// SAFETY: AVX-512F/BW/VNNI, F16C and FMA intrinsics, inlined only into `run_tf`, which enables
// them and is reached only through the detected token.
unsafe impl QSimd for Avx512Vnni {
    type I = __m512i;
    type F = __m512;
    type W = __m512i;
    const SIGNED_VIA_BIAS: bool = true;

    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn nib_lo(w: __m512i) -> __m512i {
        _mm512_and_si512(w, _mm512_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn nib_hi(w: __m512i) -> __m512i {
        _mm512_and_si512(_mm512_srli_epi16::<4>(w), _mm512_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn shr_and(w: __m512i, n: u32, mask: u8) -> __m512i {
        let sh = _mm512_srl_epi16(w, _mm_cvtsi32_si128(n as i32));
        _mm512_and_si512(sh, _mm512_set1_epi8(mask as i8))
    }
    #[inline(always)]
    unsafe fn or_shl4(lo: __m512i, hi: __m512i) -> __m512i {
        _mm512_or_si512(lo, _mm512_slli_epi16::<4>(hi))
    }
    #[inline(always)]
    unsafe fn flip(w: __m512i) -> __m512i {
        _mm512_xor_si512(w, _mm512_set1_epi8(-128))
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn dot_u(acc: __m512i, w: __m512i, x4: i32) -> __m512i {
        _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(x4))
    }
    #[inline(always)]
    unsafe fn dot_s(acc: __m512i, w: __m512i, x4: i32) -> __m512i {
        // Not used (SIGNED_VIA_BIAS): the biased form plus the caller's correction.
        let _ = (w, x4);
        acc
    }
    #[inline(always)]
    unsafe fn cvt(i: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(i)
    }
    #[inline(always)]
    unsafe fn zero_f() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_u8f(p: *const u8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast())))
    }
    #[inline(always)]
    unsafe fn load_i8f(p: *const u8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast())))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
}
