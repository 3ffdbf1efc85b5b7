//! The vector primitives the op bodies need beyond [`AttnSimd`] (itself over
//! [`crate::arch::Simd`]), and the macro that instantiates a generic body once per ISA behind
//! a `#[target_feature]` wrapper.

#![allow(clippy::incompatible_msrv)]

use crate::arch::Scalar;
pub(crate) use crate::attention::simd::AttnSimd;

/// Extra primitives of the engine ops.
///
/// # Safety
/// Same contract as [`crate::arch::Simd`]: the methods run only inside functions compiled with
/// the ISA's features, reached through the detected token.
pub(crate) unsafe trait OpsSimd: AttnSimd {
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum of `x` and `acc` that keeps `acc` where `x` is NaN.
    unsafe fn max_num(x: Self::V, acc: Self::V) -> Self::V;
    /// Swaps the lanes of each adjacent pair: `[a, b, c, d, …] -> [b, a, d, c, …]`.
    unsafe fn swap_pairs(v: Self::V) -> Self::V;
}

// SAFETY: plain Rust, no instruction-set requirement.
unsafe impl OpsSimd for Scalar {
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn max_num(x: f32, acc: f32) -> f32 {
        if x > acc {
            x
        } else {
            acc
        }
    }
    #[inline(always)]
    unsafe fn swap_pairs(v: f32) -> f32 {
        // One lane has no pair; bodies never call this with one-lane vectors.
        v
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::OpsSimd;
    use crate::arch::x86_avx2::Avx2;
    use crate::arch::x86_avx512::Avx512;
    use core::arch::x86_64::*;

    // SAFETY: AVX-512F intrinsics, inlined only into wrappers enabling AVX-512, reached through
    // the `Avx512` token.
    unsafe impl OpsSimd for Avx512 {
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            _mm512_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max_num(x: __m512, acc: __m512) -> __m512 {
            // vmaxps returns the second operand when either is NaN.
            _mm512_max_ps(x, acc)
        }
        #[inline(always)]
        unsafe fn swap_pairs(v: __m512) -> __m512 {
            _mm512_permute_ps::<0b10_11_00_01>(v)
        }
    }

    // SAFETY: AVX intrinsics, inlined only into wrappers enabling AVX2, reached through the
    // `Avx2` token.
    unsafe impl OpsSimd for Avx2 {
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            _mm256_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max_num(x: __m256, acc: __m256) -> __m256 {
            // vmaxps returns the second operand when either is NaN.
            _mm256_max_ps(x, acc)
        }
        #[inline(always)]
        unsafe fn swap_pairs(v: __m256) -> __m256 {
            _mm256_permute_ps::<0b10_11_00_01>(v)
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::OpsSimd;
    use crate::arch::aarch64_neon::Neon;
    use core::arch::aarch64::*;

    // SAFETY: NEON intrinsics, inlined only into wrappers enabling NEON, reached through the
    // `Neon` token.
    unsafe impl OpsSimd for Neon {
        #[inline(always)]
        unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vsubq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vdivq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn max_num(x: float32x4_t, acc: float32x4_t) -> float32x4_t {
            // fmaxnm returns the number when one operand is a quiet NaN.
            vmaxnmq_f32(x, acc)
        }
        #[inline(always)]
        unsafe fn swap_pairs(v: float32x4_t) -> float32x4_t {
            vrev64q_f32(v)
        }
    }
}

/// Defines `fn $name(isa: Isa, args…) -> R` running the generic `unsafe fn $body::<S>(args…)`
/// with the best token `isa` allows: AVX-512 or AVX2 on x86-64, NEON on aarch64, else the
/// one-lane scalar instantiation. `$body` must be `#[inline(always)]` so it compiles with the
/// wrapper's features.
macro_rules! per_isa {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $body:ident) => {
        $(#[$m])*
        $vis fn $name(isa: $crate::isa::Isa, $($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
            unsafe fn avx512($($a: $t),*) $(-> $r)? {
                $body::<$crate::arch::x86_avx512::Avx512>($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn avx2($($a: $t),*) $(-> $r)? {
                $body::<$crate::arch::x86_avx2::Avx2>($($a),*)
            }
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            unsafe fn neon($($a: $t),*) $(-> $r)? {
                $body::<$crate::arch::aarch64_neon::Neon>($($a),*)
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Isa::Avx512
                    if $crate::arch::x86_avx512::Avx512::new().is_some() =>
                {
                    // SAFETY: run-time detection of every feature the wrapper enables.
                    unsafe { avx512($($a),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Isa::Avx512 | $crate::isa::Isa::Avx2
                    if $crate::arch::x86_avx2::Avx2::new().is_some() =>
                {
                    // SAFETY: run-time detection of every feature the wrapper enables.
                    unsafe { avx2($($a),*) }
                }
                #[cfg(target_arch = "aarch64")]
                $crate::isa::Isa::Neon if $crate::arch::aarch64_neon::Neon::new().is_some() => {
                    // SAFETY: run-time detection of NEON, the feature the wrapper enables.
                    unsafe { neon($($a),*) }
                }
                // SAFETY: the scalar primitives need no CPU feature.
                _ => unsafe { $body::<$crate::arch::Scalar>($($a),*) },
            }
        }
    };
}
pub(crate) use per_isa;

/// Splits `out` (units of `unit` values, `units` of them) into contiguous runs of at least
/// `min_units` units and runs `f(first_unit, run)` on each, across `pool` when there is more
/// than one run.
pub(crate) fn par_units(
    pool: &crate::pool::ThreadPool,
    out: &mut [f32],
    unit: usize,
    min_units: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let units = out.len().checked_div(unit).unwrap_or(0);
    let tasks = (units / min_units.max(1)).clamp(1, 4 * pool.threads());
    if tasks <= 1 || pool.threads() == 1 {
        return f(0, out);
    }
    let per = units.div_ceil(tasks);
    let runs: Vec<std::sync::Mutex<&mut [f32]>> = out
        .chunks_mut(per * unit)
        .map(std::sync::Mutex::new)
        .collect();
    pool.run(runs.len(), |t| {
        let mut run = runs[t].lock().unwrap_or_else(|e| e.into_inner());
        f(t * per, &mut run);
    });
}
