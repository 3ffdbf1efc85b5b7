//! NEON bodies: 4-lane primitives and the `#[target_feature]` wrappers that instantiate the
//! generic kernels.

use super::Simd;
use crate::isa::Isa;
use crate::matmul::kernel::{self, PackBlock, WElem};
use crate::matmul::params::neon as p;
use core::arch::aarch64::*;

/// Proof that this CPU runs the NEON path; obtained from [`Neon::new`] only.
#[derive(Clone, Copy, Debug)]
pub struct Neon(());

impl Neon {
    /// The token, when the CPU has NEON.
    pub fn new() -> Option<Self> {
        Isa::Neon.is_supported().then_some(Neon(()))
    }
}

// SAFETY: the primitives use NEON intrinsics (and `fcvtl`, base Advanced SIMD); they are inlined
// only into the wrappers below, which enable NEON and are reached only through the token.
unsafe impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> float32x4_t {
        vdupq_n_f32(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: float32x4_t) -> f32 {
        vaddvq_f32(v)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> float32x4_t {
        let h = vld1_u16(p);
        let out: float32x4_t;
        // `fcvtl` (half to single, base Advanced SIMD): Rust's f16 vector types are unstable.
        core::arch::asm!(
            "fcvtl {0:v}.4s, {1:v}.4h",
            out(vreg) out,
            in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
        out
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p)))
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [float32x4_t]) {
        let v: &mut [float32x4_t; 4] = v.try_into().expect("4 rows");
        let t0 = vreinterpretq_f64_f32(vtrn1q_f32(v[0], v[1]));
        let t1 = vreinterpretq_f64_f32(vtrn2q_f32(v[0], v[1]));
        let t2 = vreinterpretq_f64_f32(vtrn1q_f32(v[2], v[3]));
        let t3 = vreinterpretq_f64_f32(vtrn2q_f32(v[2], v[3]));
        v[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
        v[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
        v[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
        v[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
    }
}

/// [`kernel::matvec`] on 4 lanes.
#[target_feature(enable = "neon")]
unsafe fn matvec_tf<W: WElem>(x: &[f32], m: usize, w: &[W], k: usize, y: &mut [f32]) {
    kernel::matvec::<Neon, W>(x, m, w, k, y)
}

/// [`kernel::pack`] on 4 lanes.
#[target_feature(enable = "neon")]
unsafe fn pack_tf<W: WElem>(w: &[W], b: PackBlock, nr: usize, out: &mut [f32]) {
    kernel::pack::<Neon, W>(w, b, nr, out)
}

/// [`kernel::prefetch_block`].
#[target_feature(enable = "neon")]
unsafe fn prefetch_tf<W: WElem>(w: &[W], b: PackBlock) {
    kernel::prefetch_block::<Neon, W>(w, b)
}

/// [`kernel::micro`] with the `MR × NV·4` NEON tile.
#[target_feature(enable = "neon")]
unsafe fn micro_tf(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    kernel::micro::<Neon, { p::MR }, { p::NV }>(kc, a, b, c, ldc, accumulate)
}

super::impl_matmul_kernels!(Neon, crate::matmul::params::neon);
