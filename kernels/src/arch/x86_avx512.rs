//! AVX-512 (F/BW/VL/DQ + F16C/FMA) bodies: 16-lane primitives and the `#[target_feature]`
//! wrappers that instantiate the generic kernels.
//!
//! The `_mm512_*` intrinsics are stable since Rust 1.89, above the workspace `rust-version`
//! (1.86): building this crate needs 1.89 (the toolchain here is 1.95), so the MSRV lint is
//! silenced for this file only until the workspace's `rust-version` is raised.
#![allow(clippy::incompatible_msrv)]

use super::Simd;
use crate::isa::Isa;
use crate::matmul::kernel::{self, PackBlock, WElem};
use crate::matmul::params::avx512 as p;
use core::arch::x86_64::*;

/// Proof that this CPU runs the AVX-512 path; obtained from [`Avx512::new`] only.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    /// The token, when the CPU has every feature the wrappers below enable.
    pub fn new() -> Option<Self> {
        Isa::Avx512.is_supported().then_some(Avx512(()))
    }
}

// SAFETY: the primitives use AVX-512F/BW, F16C and FMA intrinsics; they are inlined only into
// the wrappers below, which enable those features and are reached only through the token.
unsafe impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m512 {
        let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [__m512]) {
        let v: &mut [__m512; 16] = v.try_into().expect("16 rows");
        // 32-bit then 64-bit interleaves within 128-bit lanes: u[4g + j] lane L holds column
        // j + 4L of rows 4g..4g+4.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let a0 = _mm512_castps_pd(t[4 * g]);
            let a1 = _mm512_castps_pd(t[4 * g + 1]);
            let a2 = _mm512_castps_pd(t[4 * g + 2]);
            let a3 = _mm512_castps_pd(t[4 * g + 3]);
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
        }
        // Gather lane L of the four groups: column j + 4L.
        for j in 0..4 {
            let lo01 = _mm512_shuffle_f32x4::<0b01_00_01_00>(u[j], u[4 + j]);
            let hi01 = _mm512_shuffle_f32x4::<0b11_10_11_10>(u[j], u[4 + j]);
            let lo23 = _mm512_shuffle_f32x4::<0b01_00_01_00>(u[8 + j], u[12 + j]);
            let hi23 = _mm512_shuffle_f32x4::<0b11_10_11_10>(u[8 + j], u[12 + j]);
            v[j] = _mm512_shuffle_f32x4::<0b10_00_10_00>(lo01, lo23);
            v[j + 4] = _mm512_shuffle_f32x4::<0b11_01_11_01>(lo01, lo23);
            v[j + 8] = _mm512_shuffle_f32x4::<0b10_00_10_00>(hi01, hi23);
            v[j + 12] = _mm512_shuffle_f32x4::<0b11_01_11_01>(hi01, hi23);
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(p.cast())
    }
}

/// [`kernel::matvec`] on 16 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn matvec_tf<W: WElem>(x: &[f32], m: usize, w: &[W], k: usize, y: &mut [f32]) {
    kernel::matvec::<Avx512, W>(x, m, w, k, y)
}

/// [`kernel::pack`] on 16 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn pack_tf<W: WElem>(w: &[W], b: PackBlock, nr: usize, out: &mut [f32]) {
    kernel::pack::<Avx512, W>(w, b, nr, out)
}

/// [`kernel::prefetch_block`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn prefetch_tf<W: WElem>(w: &[W], b: PackBlock) {
    kernel::prefetch_block::<Avx512, W>(w, b)
}

/// [`kernel::micro`] with the `MR × NV·16` AVX-512 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn micro_tf(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    kernel::micro::<Avx512, { p::MR }, { p::NV }>(kc, a, b, c, ldc, accumulate)
}

super::impl_matmul_kernels!(Avx512, crate::matmul::params::avx512);
