//! aarch64 NEON: four q registers per 16-row tile vector (4 rows × 4 codes each). With the
//! dot-product extension one `sdot` per register adds 4 rows' 4-code dot products; without it,
//! `smull`/`smull2` + `addp` + `sadalp` do the same; with i8mm, prefill runs `smmla` (2 weight rows
//! × 2 activation rows × 8 values per instruction) (every pair sum fits i16: |code| ≤ 128,
//! |x| ≤ 127). Codes are multiplied as signed bytes: nibbles and 6-bit codes are below 128.

use super::kernel::{code_vec, run_tiles, sub_lanes, Job, TaskRange};
use super::repack::Packed;
use super::simd::QSimd;
use core::arch::aarch64::*;
use core::arch::asm;

/// Proof that this CPU runs the plain NEON path; obtained from [`NeonQ::new`] only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeonQ(());

/// Proof that this CPU runs the NEON dotprod path; obtained from [`NeonDot::new`] only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeonDot(());

impl NeonQ {
    /// The token, when the CPU has NEON.
    pub(crate) fn new() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(NeonQ(()))
    }

    /// Runs one task of `job`.
    ///
    /// # Safety
    /// As [`run_tiles`]: the caller owns those outputs and `job` is consistent.
    pub(crate) unsafe fn run<P: Packed>(self, job: &Job<'_>, r: TaskRange) {
        // SAFETY: the token proves NEON was detected.
        run_neon::<P>(job, r)
    }
}

impl NeonDot {
    /// The token, when the CPU has NEON and the dot-product extension.
    pub(crate) fn new() -> Option<Self> {
        (std::arch::is_aarch64_feature_detected!("neon")
            && std::arch::is_aarch64_feature_detected!("dotprod"))
        .then_some(NeonDot(()))
    }

    /// Runs one task of `job`.
    ///
    /// # Safety
    /// As [`run_tiles`]: the caller owns those outputs and `job` is consistent.
    pub(crate) unsafe fn run<P: Packed>(self, job: &Job<'_>, r: TaskRange) {
        // SAFETY: the token proves NEON and dotprod were detected.
        run_dot::<P>(job, r)
    }
}

/// Proof that this CPU runs the NEON i8mm path; obtained from [`NeonI8mm::new`] only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeonI8mm(());

impl NeonI8mm {
    /// The token, when the CPU has NEON, dotprod and the int8 matrix multiply extension.
    pub(crate) fn new() -> Option<Self> {
        (NeonDot::new().is_some() && std::arch::is_aarch64_feature_detected!("i8mm"))
            .then_some(NeonI8mm(()))
    }

    /// Runs one task of `job`.
    ///
    /// # Safety
    /// As [`run_tiles`]: the caller owns those outputs and `job` is consistent.
    pub(crate) unsafe fn run<P: Packed>(self, job: &Job<'_>, r: TaskRange) {
        // SAFETY: the token proves NEON, dotprod and i8mm were detected.
        run_i8mm::<P>(job, r)
    }
}

#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn run_i8mm<P: Packed>(job: &Job<'_>, r: TaskRange) {
    run_tiles::<NeonI8mm, P>(job, r)
}

/// `acc += A · Bᵀ` for A, B 2×8 signed bytes (rows in the halves of `a`, `b`): lanes
/// `[a0·b0, a0·b1, a1·b0, a1·b1]`.
#[inline(always)]
unsafe fn smmla(acc: int32x4_t, a: uint8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // Only inlined into `run_i8mm`, which enables i8mm.
    asm!(
        "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// i8mm sub-block sums: per pair of activation rows and pair of weight rows, one `smmla`
/// per 8 values (weights zipped from two 4-value groups, activations from two rows), then
/// unzipped to one vector of 16 rows per activation row. Odd row counts use `sdot`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn sub_i8mm<P: Packed, const MR: usize, const NT: usize>(
    cc: [*const u8; NT],
    s: usize,
    xq: [*const i8; MR],
    xo: usize,
    init: [i32; MR],
) -> [[[int32x4_t; 4]; NT]; MR] {
    if MR % 2 == 1 {
        return sub_lanes::<NeonI8mm, P, MR, NT>(cc, s, xq, xo, init);
    }
    let zero = vdupq_n_s32(0);
    // acc[pair of activation rows][tile][2q + h]: weight rows 4q + 2h, 4q + 2h + 1.
    let mut acc = [[[zero; 8]; NT]; MR];
    for gp in (0..P::S / 4).step_by(2) {
        // A loop, not `from_fn`: intrinsics in a closure would not inline.
        let mut w = [(
            code_vec::<NeonI8mm, P>(cc[0], s, gp),
            code_vec::<NeonI8mm, P>(cc[0], s, gp + 1),
        ); NT];
        for (j, wj) in w.iter_mut().enumerate().skip(1) {
            *wj = (
                code_vec::<NeonI8mm, P>(cc[j], s, gp),
                code_vec::<NeonI8mm, P>(cc[j], s, gp + 1),
            );
        }
        for ip in 0..MR / 2 {
            let xa = vcombine_s8(
                vld1_s8(xq[2 * ip].add(xo + 4 * gp)),
                vld1_s8(xq[2 * ip + 1].add(xo + 4 * gp)),
            );
            for j in 0..NT {
                for q in 0..4 {
                    let a = vreinterpretq_u32_u8(w[j].0[q]);
                    let b = vreinterpretq_u32_u8(w[j].1[q]);
                    let lo = vreinterpretq_u8_u32(vzip1q_u32(a, b));
                    let hi = vreinterpretq_u8_u32(vzip2q_u32(a, b));
                    acc[ip][j][2 * q] = smmla(acc[ip][j][2 * q], lo, xa);
                    acc[ip][j][2 * q + 1] = smmla(acc[ip][j][2 * q + 1], hi, xa);
                }
            }
        }
    }
    let mut out = [[[zero; 4]; NT]; MR];
    for ip in 0..MR / 2 {
        let (ia, ib) = (vdupq_n_s32(init[2 * ip]), vdupq_n_s32(init[2 * ip + 1]));
        for j in 0..NT {
            for q in 0..4 {
                let (e, o) = (acc[ip][j][2 * q], acc[ip][j][2 * q + 1]);
                out[2 * ip][j][q] = vaddq_s32(vuzp1q_s32(e, o), ia);
                out[2 * ip + 1][j][q] = vaddq_s32(vuzp2q_s32(e, o), ib);
            }
        }
    }
    out
}

#[target_feature(enable = "neon")]
unsafe fn run_neon<P: Packed>(job: &Job<'_>, r: TaskRange) {
    run_tiles::<NeonQ, P>(job, r)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn run_dot<P: Packed>(job: &Job<'_>, r: TaskRange) {
    run_tiles::<NeonDot, P>(job, r)
}

/// `acc[r] += Σ_j w[4r + j] · x[j]` for 4 rows, without the dot-product extension.
#[inline(always)]
unsafe fn dot4_widen(acc: int32x4_t, w: uint8x16_t, x: int8x16_t) -> int32x4_t {
    let w = vreinterpretq_s8_u8(w);
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    let hi = vmull_high_s8(w, x);
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

/// `acc[r] += Σ_j w[4r + j] · x[j]` for 4 rows with `sdot`.
#[inline(always)]
unsafe fn dot4_sdot(acc: int32x4_t, w: uint8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY (of the caller's context): only inlined into `run_dot`, which enables dotprod.
    asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// 8 binary16 values (raw bits) widened to f32, low and high halves.
#[inline(always)]
unsafe fn f16x8(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    (lo, hi)
}

/// Implements [`QSimd`] for a NEON token; `$dot` is the 4-row dot product.
macro_rules! neon_qsimd {
    ($token:ty, $dot:ident $(, $extra:item)*) => {
        // SAFETY: NEON (and for `NeonDot` dotprod) instructions, inlined only into the token's
        // `#[target_feature]` wrapper, reached only through the detected token.
        unsafe impl QSimd for $token {
            type I = [int32x4_t; 4];
            type F = [float32x4_t; 4];
            type W = [uint8x16_t; 4];
            const SIGNED_VIA_BIAS: bool = false;

            #[inline(always)]
            unsafe fn load_w(p: *const u8) -> [uint8x16_t; 4] {
                [
                    vld1q_u8(p),
                    vld1q_u8(p.add(16)),
                    vld1q_u8(p.add(32)),
                    vld1q_u8(p.add(48)),
                ]
            }
            #[inline(always)]
            unsafe fn nib_lo(w: [uint8x16_t; 4]) -> [uint8x16_t; 4] {
                let m = vdupq_n_u8(0x0F);
                [
                    vandq_u8(w[0], m),
                    vandq_u8(w[1], m),
                    vandq_u8(w[2], m),
                    vandq_u8(w[3], m),
                ]
            }
            #[inline(always)]
            unsafe fn nib_hi(w: [uint8x16_t; 4]) -> [uint8x16_t; 4] {
                [
                    vshrq_n_u8::<4>(w[0]),
                    vshrq_n_u8::<4>(w[1]),
                    vshrq_n_u8::<4>(w[2]),
                    vshrq_n_u8::<4>(w[3]),
                ]
            }
            #[inline(always)]
            unsafe fn shr_and(w: [uint8x16_t; 4], n: u32, mask: u8) -> [uint8x16_t; 4] {
                let sh = vdupq_n_s8(-(n as i8));
                let m = vdupq_n_u8(mask);
                [
                    vandq_u8(vshlq_u8(w[0], sh), m),
                    vandq_u8(vshlq_u8(w[1], sh), m),
                    vandq_u8(vshlq_u8(w[2], sh), m),
                    vandq_u8(vshlq_u8(w[3], sh), m),
                ]
            }
            #[inline(always)]
            unsafe fn or_shl4(lo: [uint8x16_t; 4], hi: [uint8x16_t; 4]) -> [uint8x16_t; 4] {
                [
                    vorrq_u8(lo[0], vshlq_n_u8::<4>(hi[0])),
                    vorrq_u8(lo[1], vshlq_n_u8::<4>(hi[1])),
                    vorrq_u8(lo[2], vshlq_n_u8::<4>(hi[2])),
                    vorrq_u8(lo[3], vshlq_n_u8::<4>(hi[3])),
                ]
            }
            #[inline(always)]
            unsafe fn flip(w: [uint8x16_t; 4]) -> [uint8x16_t; 4] {
                let m = vdupq_n_u8(0x80);
                [
                    veorq_u8(w[0], m),
                    veorq_u8(w[1], m),
                    veorq_u8(w[2], m),
                    veorq_u8(w[3], m),
                ]
            }
            #[inline(always)]
            unsafe fn splat_i(v: i32) -> [int32x4_t; 4] {
                [vdupq_n_s32(v); 4]
            }
            #[inline(always)]
            unsafe fn dot_u(acc: [int32x4_t; 4], w: [uint8x16_t; 4], x4: i32) -> [int32x4_t; 4] {
                let x = vreinterpretq_s8_s32(vdupq_n_s32(x4));
                [
                    $dot(acc[0], w[0], x),
                    $dot(acc[1], w[1], x),
                    $dot(acc[2], w[2], x),
                    $dot(acc[3], w[3], x),
                ]
            }
            #[inline(always)]
            unsafe fn dot_s(acc: [int32x4_t; 4], w: [uint8x16_t; 4], x4: i32) -> [int32x4_t; 4] {
                // Signed multiplies serve both: unsigned codes here are below 128.
                Self::dot_u(acc, w, x4)
            }
            #[inline(always)]
            unsafe fn cvt(i: [int32x4_t; 4]) -> [float32x4_t; 4] {
                [
                    vcvtq_f32_s32(i[0]),
                    vcvtq_f32_s32(i[1]),
                    vcvtq_f32_s32(i[2]),
                    vcvtq_f32_s32(i[3]),
                ]
            }
            #[inline(always)]
            unsafe fn zero_f() -> [float32x4_t; 4] {
                [vdupq_n_f32(0.0); 4]
            }
            #[inline(always)]
            unsafe fn splat_f(v: f32) -> [float32x4_t; 4] {
                [vdupq_n_f32(v); 4]
            }
            #[inline(always)]
            unsafe fn fma(
                a: [float32x4_t; 4],
                b: [float32x4_t; 4],
                c: [float32x4_t; 4],
            ) -> [float32x4_t; 4] {
                [
                    vfmaq_f32(c[0], a[0], b[0]),
                    vfmaq_f32(c[1], a[1], b[1]),
                    vfmaq_f32(c[2], a[2], b[2]),
                    vfmaq_f32(c[3], a[3], b[3]),
                ]
            }
            #[inline(always)]
            unsafe fn mul(a: [float32x4_t; 4], b: [float32x4_t; 4]) -> [float32x4_t; 4] {
                [
                    vmulq_f32(a[0], b[0]),
                    vmulq_f32(a[1], b[1]),
                    vmulq_f32(a[2], b[2]),
                    vmulq_f32(a[3], b[3]),
                ]
            }
            #[inline(always)]
            unsafe fn load_f16(p: *const u8) -> [float32x4_t; 4] {
                let (a, b) = f16x8(vld1q_u16(p.cast()));
                let (c, d) = f16x8(vld1q_u16(p.add(16).cast()));
                [a, b, c, d]
            }
            #[inline(always)]
            unsafe fn load_u8f(p: *const u8) -> [float32x4_t; 4] {
                let v = vld1q_u8(p);
                let (lo, hi) = (vmovl_u8(vget_low_u8(v)), vmovl_high_u8(v));
                [
                    vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
                    vcvtq_f32_u32(vmovl_high_u16(lo)),
                    vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
                    vcvtq_f32_u32(vmovl_high_u16(hi)),
                ]
            }
            #[inline(always)]
            unsafe fn load_i8f(p: *const u8) -> [float32x4_t; 4] {
                let v = vld1q_s8(p.cast());
                let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
                [
                    vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
                    vcvtq_f32_s32(vmovl_high_s16(lo)),
                    vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
                    vcvtq_f32_s32(vmovl_high_s16(hi)),
                ]
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: [float32x4_t; 4]) {
                vst1q_f32(p, v[0]);
                vst1q_f32(p.add(4), v[1]);
                vst1q_f32(p.add(8), v[2]);
                vst1q_f32(p.add(12), v[3]);
            }
            $($extra)*
        }
    };
}

neon_qsimd!(NeonQ, dot4_widen);
neon_qsimd!(NeonDot, dot4_sdot);
neon_qsimd!(
    NeonI8mm,
    dot4_sdot,
    const BLOCKING: Option<(usize, usize)> = Some((4, 1));,
    #[inline(always)]
    unsafe fn sub_dot<P: Packed, const MR: usize, const NT: usize>(
        cc: [*const u8; NT],
        s: usize,
        xq: [*const i8; MR],
        xo: usize,
        init: [i32; MR],
    ) -> [[[int32x4_t; 4]; NT]; MR] {
        sub_i8mm::<P, MR, NT>(cc, s, xq, xo, init)
    }
);
