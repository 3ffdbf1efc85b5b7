//! SIMD primitives per instruction set.
//!
//! Each ISA module defines a zero-sized token type that can only be obtained after run-time
//! feature detection (`new() -> Option<Self>`), implements [`Simd`] for it (the handful of
//! primitives the generic kernel bodies use) and holds the thin `#[target_feature]` wrappers
//! that instantiate those bodies. Kernel loops are written once, generic over [`Simd`]
//! (`matmul::kernel`), and inlined into each wrapper so they compile with the ISA's features.

use crate::matmul::kernel::{self, MatmulKernels, PackBlock, WElem};
use crate::matmul::params;

#[cfg(target_arch = "aarch64")]
pub mod aarch64_neon;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;

/// The vector primitives a generic kernel body needs.
///
/// # Safety
/// Implementations use intrinsics of their instruction set: every method may only run inside a
/// function compiled with (and on a CPU that has) those features, i.e. inlined into one of the
/// ISA module's `#[target_feature]` wrappers, which are reached only through the detected token.
/// Pointer arguments must be valid for `LANES` elements.
pub(crate) unsafe trait Simd: Copy {
    /// A vector of `LANES` f32.
    type V: Copy;
    /// Number of f32 lanes in [`Simd::V`].
    const LANES: usize;

    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self::V;
    /// Loads `LANES` f32 (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` f32 (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Sum of all lanes.
    unsafe fn hsum(v: Self::V) -> f32;
    /// Loads `LANES` IEEE binary16 values (as raw bits) widened to f32.
    unsafe fn load_f16(p: *const u16) -> Self::V;
    /// Loads `LANES` bfloat16 values (as raw bits) widened to f32.
    unsafe fn load_bf16(p: *const u16) -> Self::V;
    /// Transposes the `LANES × LANES` block held in `v[..LANES]` (row `i` = `v[i]`) in place.
    unsafe fn transpose(v: &mut [Self::V]);
    /// Hints that the cache line at `p` will be read soon (may do nothing; `p` need not be
    /// valid).
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        let _ = p;
    }
}

/// Portable scalar "vectors" of one lane: runs the generic bodies everywhere.
#[derive(Clone, Copy, Debug)]
pub struct Scalar;

// SAFETY: plain Rust, no instruction-set requirement; pointers are valid for 1 element per the
// trait contract.
unsafe impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v;
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn hsum(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> f32 {
        half::f16::from_bits(*p).to_f32()
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> f32 {
        f32::from_bits(u32::from(*p) << 16)
    }
    #[inline(always)]
    unsafe fn transpose(_: &mut [f32]) {}
}

impl MatmulKernels for Scalar {
    const MR: usize = params::scalar::MR;
    const NR: usize = params::scalar::NV;
    const KC: usize = params::scalar::KC;
    const MC: usize = params::scalar::MC;
    const NC: usize = params::scalar::NC;

    fn matvec<W: WElem>(self, x: &[f32], m: usize, w: &[W], k: usize, y: &mut [f32]) {
        kernel::check_matvec(x.len(), m, w.len(), k, y.len());
        // SAFETY: operands checked above; the scalar primitives need no CPU feature.
        unsafe { kernel::matvec::<Scalar, W>(x, m, w, k, y) }
    }

    fn pack_w<W: WElem>(self, w: &[W], b: PackBlock, out: &mut [f32]) {
        b.check(w.len(), out.len(), Self::NR);
        // SAFETY: block checked above; the scalar primitives need no CPU feature.
        unsafe { kernel::pack::<Scalar, W>(w, b, Self::NR, out) }
    }

    fn prefetch_w<W: WElem>(self, _: &[W], _: PackBlock) {}

    fn pack_x(self, x: &[f32], b: PackBlock, out: &mut [f32]) {
        b.check(x.len(), out.len(), Self::MR);
        // SAFETY: block checked above; the scalar primitives need no CPU feature.
        unsafe { kernel::pack::<Scalar, f32>(x, b, Self::MR, out) }
    }

    unsafe fn micro(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        kernel::micro::<Scalar, { params::scalar::MR }, { params::scalar::NV }>(
            kc, a, b, c, ldc, accumulate,
        )
    }
}

/// Implements [`MatmulKernels`] for a detected-ISA token whose module defines the
/// `#[target_feature]` wrappers `matvec_tf`, `pack_tf`, `prefetch_tf` and `micro_tf`.
macro_rules! impl_matmul_kernels {
    ($token:ty, $params:path) => {
        impl $crate::matmul::kernel::MatmulKernels for $token {
            const MR: usize = {
                use $params as p;
                p::MR
            };
            const NR: usize = {
                use $params as p;
                p::NV * <$token as $crate::arch::Simd>::LANES
            };
            const KC: usize = {
                use $params as p;
                p::KC
            };
            const MC: usize = {
                use $params as p;
                p::MC
            };
            const NC: usize = {
                use $params as p;
                p::NC
            };

            fn matvec<W: $crate::matmul::kernel::WElem>(
                self,
                x: &[f32],
                m: usize,
                w: &[W],
                k: usize,
                y: &mut [f32],
            ) {
                $crate::matmul::kernel::check_matvec(x.len(), m, w.len(), k, y.len());
                // SAFETY: the token exists only after run-time detection of the wrapper's
                // features (`new`); operands checked above.
                unsafe { matvec_tf(x, m, w, k, y) }
            }

            fn pack_w<W: $crate::matmul::kernel::WElem>(
                self,
                w: &[W],
                b: $crate::matmul::kernel::PackBlock,
                out: &mut [f32],
            ) {
                b.check(w.len(), out.len(), Self::NR);
                // SAFETY: the token exists only after run-time detection of the wrapper's
                // features (`new`); block and buffer checked above.
                unsafe { pack_tf(w, b, Self::NR, out) }
            }

            fn prefetch_w<W: $crate::matmul::kernel::WElem>(
                self,
                w: &[W],
                b: $crate::matmul::kernel::PackBlock,
            ) {
                b.check_src(w.len());
                // SAFETY: the token exists only after run-time detection of the wrapper's
                // features (`new`); block checked above.
                unsafe { prefetch_tf(w, b) }
            }

            fn pack_x(self, x: &[f32], b: $crate::matmul::kernel::PackBlock, out: &mut [f32]) {
                b.check(x.len(), out.len(), Self::MR);
                // SAFETY: the token exists only after run-time detection of the wrapper's
                // features (`new`); block and buffer checked above.
                unsafe { pack_tf(x, b, Self::MR, out) }
            }

            unsafe fn micro(
                self,
                kc: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                accumulate: bool,
            ) {
                // SAFETY: features detected (token); pointers per this method's contract.
                micro_tf(kc, a, b, c, ldc, accumulate)
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use impl_matmul_kernels;
