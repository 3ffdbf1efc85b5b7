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
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T1>(p.cast())
    }
}

/// [`kernel::matvec`] on 16 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn matvec_tf<W: WElem>(x: &[f32], w: &[W], k: usize, y: &mut [f32]) {
    kernel::matvec::<Avx512, W>(x, w, k, y)
}

/// [`kernel::pack_w`] on 16 lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn pack_w_tf<W: WElem>(w: &[W], b: PackBlock, nr: usize, out: &mut [f32]) {
    kernel::pack_w::<Avx512, W>(w, b, nr, out)
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
