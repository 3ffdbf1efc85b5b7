//! The integer-dot primitives the generic quantized kernels are written against, and their
//! portable scalar implementation.
//!
//! One "tile" is 16 weight rows. A code vector [`QSimd::W`] holds 64 bytes: 4 consecutive codes
//! of each of the 16 rows (row `r` in bytes `4r..4r + 4`). An integer accumulator [`QSimd::I`]
//! holds one i32 per row, a float vector [`QSimd::F`] one f32 per row. Each ISA maps these onto
//! its registers (one zmm, two ymm, four NEON q registers).

use super::kernel::sub_lanes;
use super::repack::Packed;

/// Integer-dot and float primitives over one 16-row tile.
///
/// # Safety
/// Implementations use intrinsics of their instruction set: every method may only run inside a
/// function compiled with (and on a CPU that has) those features, i.e. inlined into one of the
/// ISA module's `#[target_feature]` wrappers, which are reached only through a detected token.
/// Pointer arguments must be valid for the bytes each method reads or writes.
pub(crate) unsafe trait QSimd: Copy {
    /// 16 × i32.
    type I: Copy;
    /// 16 × f32.
    type F: Copy;
    /// 64 code bytes: 16 rows × 4 consecutive values.
    type W: Copy;
    /// True when signed codes are multiplied as unsigned `code ^ 0x80` (so the caller must
    /// subtract `128 · Σx`): instructions like `vpdpbusd` take unsigned × signed bytes.
    const SIGNED_VIA_BIAS: bool;

    /// Loads 64 code bytes.
    unsafe fn load_w(p: *const u8) -> Self::W;
    /// The low nibble of every byte.
    unsafe fn nib_lo(w: Self::W) -> Self::W;
    /// The high nibble of every byte.
    unsafe fn nib_hi(w: Self::W) -> Self::W;
    /// Every byte shifted right by `n` (0..=6) and masked with `mask` (`mask < 1 << (8 − n)`).
    unsafe fn shr_and(w: Self::W, n: u32, mask: u8) -> Self::W;
    /// `lo | hi << 4` per byte, for `hi` below 16 and `lo` below 16.
    unsafe fn or_shl4(lo: Self::W, hi: Self::W) -> Self::W;
    /// Every byte xor 0x80 (signed code to biased unsigned code).
    unsafe fn flip(w: Self::W) -> Self::W;
    /// All lanes `v`.
    unsafe fn splat_i(v: i32) -> Self::I;
    /// `acc[r] += Σ_j w[4r + j] · x[j]` for codes `w` read as unsigned bytes (and below 128 when
    /// `SIGNED_VIA_BIAS` is false), `x` the 4 signed bytes of `x4` (little-endian).
    unsafe fn dot_u(acc: Self::I, w: Self::W, x4: i32) -> Self::I;
    /// As [`QSimd::dot_u`] for signed codes (only called when `SIGNED_VIA_BIAS` is false).
    unsafe fn dot_s(acc: Self::I, w: Self::W, x4: i32) -> Self::I;
    /// Lane-wise i32 → f32.
    unsafe fn cvt(i: Self::I) -> Self::F;
    /// All lanes zero.
    unsafe fn zero_f() -> Self::F;
    /// All lanes `v`.
    unsafe fn splat_f(v: f32) -> Self::F;
    /// `a · b + c`.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `a · b`.
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// Loads 16 IEEE binary16 values widened to f32.
    unsafe fn load_f16(p: *const u8) -> Self::F;
    /// Loads 16 unsigned bytes as f32.
    unsafe fn load_u8f(p: *const u8) -> Self::F;
    /// Loads 16 signed bytes as f32.
    unsafe fn load_i8f(p: *const u8) -> Self::F;
    /// Stores 16 f32 (unaligned).
    unsafe fn store(p: *mut f32, v: Self::F);

    /// Activation rows and tiles per prefill micro-kernel call, when this ISA wants other
    /// than the format's default.
    const BLOCKING: Option<(usize, usize)> = None;

    /// The integer sums of sub-block `s` (see [`sub_lanes`]); ISAs with a different
    /// algorithm (matrix multiply-accumulate) override it.
    ///
    /// # Safety
    /// As [`sub_lanes`].
    #[inline(always)]
    unsafe fn sub_dot<P: Packed, const MR: usize, const NT: usize>(
        cc: [*const u8; NT],
        s: usize,
        xq: [*const i8; MR],
        xo: usize,
        init: [i32; MR],
    ) -> [[Self::I; NT]; MR] {
        sub_lanes::<Self, P, MR, NT>(cc, s, xq, xo, init)
    }
}

/// Portable scalar lanes: runs the generic bodies on any CPU (and checks them in tests).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarQ;

// SAFETY: plain Rust, no instruction-set requirement; pointers valid per the trait contract.
unsafe impl QSimd for ScalarQ {
    type I = [i32; 16];
    type F = [f32; 16];
    type W = [u8; 64];
    const SIGNED_VIA_BIAS: bool = false;

    #[inline(always)]
    unsafe fn load_w(p: *const u8) -> [u8; 64] {
        p.cast::<[u8; 64]>().read_unaligned()
    }
    #[inline(always)]
    unsafe fn nib_lo(w: [u8; 64]) -> [u8; 64] {
        w.map(|b| b & 0xF)
    }
    #[inline(always)]
    unsafe fn nib_hi(w: [u8; 64]) -> [u8; 64] {
        w.map(|b| b >> 4)
    }
    #[inline(always)]
    unsafe fn shr_and(w: [u8; 64], n: u32, mask: u8) -> [u8; 64] {
        w.map(|b| (b >> n) & mask)
    }
    #[inline(always)]
    unsafe fn or_shl4(lo: [u8; 64], hi: [u8; 64]) -> [u8; 64] {
        let mut o = lo;
        for (o, h) in o.iter_mut().zip(hi) {
            *o |= h << 4;
        }
        o
    }
    #[inline(always)]
    unsafe fn flip(w: [u8; 64]) -> [u8; 64] {
        w.map(|b| b ^ 0x80)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> [i32; 16] {
        [v; 16]
    }
    #[inline(always)]
    unsafe fn dot_u(mut acc: [i32; 16], w: [u8; 64], x4: i32) -> [i32; 16] {
        let x = x4.to_le_bytes().map(|b| b as i8 as i32);
        for (r, a) in acc.iter_mut().enumerate() {
            for (j, xj) in x.iter().enumerate() {
                *a += w[4 * r + j] as i32 * xj;
            }
        }
        acc
    }
    #[inline(always)]
    unsafe fn dot_s(mut acc: [i32; 16], w: [u8; 64], x4: i32) -> [i32; 16] {
        let x = x4.to_le_bytes().map(|b| b as i8 as i32);
        for (r, a) in acc.iter_mut().enumerate() {
            for (j, xj) in x.iter().enumerate() {
                *a += w[4 * r + j] as i8 as i32 * xj;
            }
        }
        acc
    }
    #[inline(always)]
    unsafe fn cvt(i: [i32; 16]) -> [f32; 16] {
        i.map(|v| v as f32)
    }
    #[inline(always)]
    unsafe fn zero_f() -> [f32; 16] {
        [0.0; 16]
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> [f32; 16] {
        [v; 16]
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 16], b: [f32; 16], mut c: [f32; 16]) -> [f32; 16] {
        for r in 0..16 {
            c[r] += a[r] * b[r];
        }
        c
    }
    #[inline(always)]
    unsafe fn mul(mut a: [f32; 16], b: [f32; 16]) -> [f32; 16] {
        for r in 0..16 {
            a[r] *= b[r];
        }
        a
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> [f32; 16] {
        let h = p.cast::<[u16; 16]>().read_unaligned();
        h.map(|v| half::f16::from_bits(v).to_f32())
    }
    #[inline(always)]
    unsafe fn load_u8f(p: *const u8) -> [f32; 16] {
        p.cast::<[u8; 16]>().read_unaligned().map(|v| v as f32)
    }
    #[inline(always)]
    unsafe fn load_i8f(p: *const u8) -> [f32; 16] {
        p.cast::<[i8; 16]>().read_unaligned().map(|v| v as f32)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 16]) {
        p.cast::<[f32; 16]>().write_unaligned(v)
    }
}
