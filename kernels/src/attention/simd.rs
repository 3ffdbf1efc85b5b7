//! The few primitives attention needs beyond [`crate::arch::Simd`]: lane max, a vectorised
//! `exp`, multiply, and i8 widening. Implemented for each detected-ISA token of `crate::arch`
//! and for the one-lane [`Scalar`].

#![allow(clippy::incompatible_msrv)]

use crate::arch::{Scalar, Simd};

/// Attention's extra vector primitives.
///
/// # Safety
/// Same contract as [`Simd`]: the methods run only inside functions compiled with the ISA's
/// features, reached through the detected token; pointers are valid for `LANES` elements.
pub(crate) unsafe trait AttnSimd: Simd {
    /// `a * b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Largest lane.
    unsafe fn hmax(v: Self::V) -> f32;
    /// Lane-wise `eˣ` (relative error ≲ 2e-7); exactly 0 for `x < −87` (incl. −∞).
    unsafe fn exp(x: Self::V) -> Self::V;
    /// Loads `LANES` i8 widened to f32.
    unsafe fn load_i8(p: *const i8) -> Self::V;
    /// Loads `LANES` bytes, each as its low (`hi` false) or high nibble, widened to f32.
    unsafe fn load_nib(p: *const u8, hi: bool) -> Self::V;
    /// Lane `i` = `(w >> (bits·i)) & (2^bits − 1)` as f32, for `bits` 2 or 4
    /// (`bits·LANES ≤ 32`): little-endian packed codes.
    unsafe fn unpack_bits(w: u32, bits: u32) -> Self::V;
    /// The lane sums of four vectors (one reduction tree for all four where the ISA has one).
    #[inline(always)]
    unsafe fn hsum4(v: [Self::V; 4]) -> [f32; 4] {
        [
            Self::hsum(v[0]),
            Self::hsum(v[1]),
            Self::hsum(v[2]),
            Self::hsum(v[3]),
        ]
    }
}

// SAFETY: plain Rust, no instruction-set requirement.
unsafe impl AttnSimd for Scalar {
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn hmax(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn exp(x: f32) -> f32 {
        x.exp()
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> f32 {
        *p as f32
    }
    #[inline(always)]
    unsafe fn load_nib(p: *const u8, hi: bool) -> f32 {
        ((*p >> if hi { 4 } else { 0 }) & 0xF) as f32
    }
    #[inline(always)]
    unsafe fn unpack_bits(w: u32, bits: u32) -> f32 {
        (w & ((1 << bits) - 1)) as f32
    }
}

/// Coefficients of the degree-6 Taylor polynomial of `eʳ`, |r| ≤ ln2/2, highest first.
const EXP_POLY: [f32; 6] = [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
/// ln 2 split into a high part exact in f32 and a low correction.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Below this, `exp` returns 0.
const EXP_LO: f32 = -87.0;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::arch::x86_avx2::Avx2;
    use crate::arch::x86_avx512::Avx512;
    use core::arch::x86_64::*;

    // SAFETY: AVX-512F/BW/DQ intrinsics, inlined only into wrappers enabling them, reached
    // through the `Avx512` token (run-time detection).
    unsafe impl AttnSimd for Avx512 {
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn hmax(v: __m512) -> f32 {
            _mm512_reduce_max_ps(v)
        }
        #[inline(always)]
        unsafe fn exp(x: __m512) -> __m512 {
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_LO));
            let x = _mm512_min_ps(
                _mm512_max_ps(x, _mm512_set1_ps(EXP_LO)),
                _mm512_set1_ps(88.0),
            );
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::LOG2_E)),
            );
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
            let mut p = _mm512_set1_ps(1.0 / 720.0);
            for c in EXP_POLY {
                p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
            }
            _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n))
        }
        #[inline(always)]
        unsafe fn load_i8(p: *const i8) -> __m512 {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast())))
        }
        #[inline(always)]
        unsafe fn load_nib(p: *const u8, hi: bool) -> __m512 {
            let x = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
            let x = _mm512_srl_epi32(x, _mm_cvtsi32_si128(if hi { 4 } else { 0 }));
            _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32(0xF)))
        }
        #[inline(always)]
        unsafe fn unpack_bits(w: u32, bits: u32) -> __m512 {
            // 16 lanes of 2 bits fill the word; 4-bit codes need a 64-bit word (LANES·bits
            // ≤ 32 is the contract), so only 2 bits occur here.
            let sh = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(bits as i32),
            );
            let x = _mm512_srlv_epi32(_mm512_set1_epi32(w as i32), sh);
            _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32((1 << bits) - 1)))
        }
        #[inline(always)]
        unsafe fn hsum4(v: [__m512; 4]) -> [f32; 4] {
            // Interleave pairs so every add works for two vectors, then four: per 128-bit lane
            // [v0, v1] partials, then [v0, v1, v2, v3], then the four lanes summed.
            let a01 = _mm512_add_ps(
                _mm512_unpacklo_ps(v[0], v[1]),
                _mm512_unpackhi_ps(v[0], v[1]),
            );
            let a23 = _mm512_add_ps(
                _mm512_unpacklo_ps(v[2], v[3]),
                _mm512_unpackhi_ps(v[2], v[3]),
            );
            let s = _mm512_add_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(a01, a23),
                _mm512_shuffle_ps::<0b11_10_11_10>(a01, a23),
            );
            let s = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps::<1>(s));
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), s);
            out
        }
    }

    // SAFETY: AVX2/FMA intrinsics, inlined only into wrappers enabling them, reached through the
    // `Avx2` token (run-time detection).
    unsafe impl AttnSimd for Avx2 {
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn hmax(v: __m256) -> f32 {
            let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
            _mm_cvtss_f32(m)
        }
        #[inline(always)]
        unsafe fn hsum4(v: [__m256; 4]) -> [f32; 4] {
            // As for AVX-512: pairs interleaved so each add serves two vectors, then four,
            // then the two 128-bit lanes.
            let a01 = _mm256_add_ps(
                _mm256_unpacklo_ps(v[0], v[1]),
                _mm256_unpackhi_ps(v[0], v[1]),
            );
            let a23 = _mm256_add_ps(
                _mm256_unpacklo_ps(v[2], v[3]),
                _mm256_unpackhi_ps(v[2], v[3]),
            );
            let s = _mm256_add_ps(
                _mm256_shuffle_ps::<0b01_00_01_00>(a01, a23),
                _mm256_shuffle_ps::<0b11_10_11_10>(a01, a23),
            );
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), s);
            out
        }
        #[inline(always)]
        unsafe fn exp(x: __m256) -> __m256 {
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_LO));
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
                _mm256_set1_ps(88.0),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::LOG2_E)),
            );
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut p = _mm256_set1_ps(1.0 / 720.0);
            for c in EXP_POLY {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            // p · 2ⁿ by adding n to the exponent field (n ∈ [−126, 127] after the clamp).
            let e = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(n));
            let y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
            _mm256_and_ps(y, keep)
        }
        #[inline(always)]
        unsafe fn load_i8(p: *const i8) -> __m256 {
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())))
        }
        #[inline(always)]
        unsafe fn load_nib(p: *const u8, hi: bool) -> __m256 {
            let x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
            let x = _mm256_srl_epi32(x, _mm_cvtsi32_si128(if hi { 4 } else { 0 }));
            _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(0xF)))
        }
        #[inline(always)]
        unsafe fn unpack_bits(w: u32, bits: u32) -> __m256 {
            let sh = if bits == 2 {
                _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)
            } else {
                _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
            };
            let x = _mm256_srlv_epi32(_mm256_set1_epi32(w as i32), sh);
            _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32((1 << bits) - 1)))
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::arch::aarch64_neon::Neon;
    use core::arch::aarch64::*;

    // SAFETY: NEON intrinsics, inlined only into wrappers enabling NEON, reached through the
    // `Neon` token (run-time detection).
    unsafe impl AttnSimd for Neon {
        #[inline(always)]
        unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vmulq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vmaxq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn hmax(v: float32x4_t) -> f32 {
            vmaxvq_f32(v)
        }
        #[inline(always)]
        unsafe fn exp(x: float32x4_t) -> float32x4_t {
            let keep = vcgeq_f32(x, vdupq_n_f32(EXP_LO));
            let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(88.0));
            let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(core::f32::consts::LOG2_E)));
            let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
            let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
            let mut p = vdupq_n_f32(1.0 / 720.0);
            for c in EXP_POLY {
                p = vfmaq_f32(vdupq_n_f32(c), p, r);
            }
            let e = vshlq_n_s32::<23>(vcvtq_s32_f32(n));
            let y = vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e));
            vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), keep))
        }
        #[inline(always)]
        unsafe fn load_i8(p: *const i8) -> float32x4_t {
            let w = p.cast::<i32>().read_unaligned();
            let h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w)));
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)))
        }
        #[inline(always)]
        unsafe fn load_nib(p: *const u8, hi: bool) -> float32x4_t {
            let w = p.cast::<u32>().read_unaligned();
            let h = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(w)));
            let x = vmovl_u16(vget_low_u16(h));
            let x = vshlq_u32(x, vdupq_n_s32(if hi { -4 } else { 0 }));
            vcvtq_f32_u32(vandq_u32(x, vdupq_n_u32(0xF)))
        }
        #[inline(always)]
        unsafe fn unpack_bits(w: u32, bits: u32) -> float32x4_t {
            let b = bits as i32;
            let sh = vmulq_n_s32(vld1q_s32([0, -1, -2, -3].as_ptr()), b);
            let x = vshlq_u32(vdupq_n_u32(w), sh);
            vcvtq_f32_u32(vandq_u32(x, vdupq_n_u32((1 << bits) - 1)))
        }
    }
}
