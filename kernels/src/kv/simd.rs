//! 16-lane primitives the KV-cache attention bodies are written in once: a scalar reference
//! (`[f32; 16]`), AVX-512 (`__m512`), and [`Wide`] — two AVX2 or four NEON vectors built on the
//! attention kernels' own primitives — chosen at run time. Every code decoder yields 16 f32
//! lanes of unscaled codes (or halves); scales are folded in by the caller.

use crate::attention::simd::AttnSimd;
use half::f16;

/// Lanes per vector.
pub const L: usize = 16;

/// The primitives. Slices passed to loads hold at least the values read.
pub trait Simd: Copy {
    /// 16 f32 lanes.
    type V: Copy;
    /// All zeros.
    fn zero(self) -> Self::V;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads `p[..16]`.
    fn load(self, p: &[f32]) -> Self::V;
    /// Stores into `p[..16]`.
    fn store(self, p: &mut [f32], v: Self::V);
    /// `a·b + c`.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// Sum of the lanes.
    fn sum(self, v: Self::V) -> f32;
    /// The lane sums of four vectors (one reduction tree where the ISA has one).
    #[inline(always)]
    fn sum4(self, v: [Self::V; 4]) -> [f32; 4] {
        [
            self.sum(v[0]),
            self.sum(v[1]),
            self.sum(v[2]),
            self.sum(v[3]),
        ]
    }
    /// Lane-wise maximum.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Largest lane.
    fn hmax(self, v: Self::V) -> f32;
    /// `eˣ` per lane (0 far below the f32 range, and for −∞).
    fn exp(self, v: Self::V) -> Self::V;
    /// Converts `p[..16]` halves.
    fn f16(self, p: &[f16]) -> Self::V;
    /// Converts `p[..16]` signed bytes.
    fn i8(self, p: &[i8]) -> Self::V;
    /// The low (`hi` false) or high nibbles of `p[..16]`.
    fn nib(self, p: &[u8], hi: bool) -> Self::V;
    /// 16 little-endian packed codes of 2 bits (`p[..4]`) or 4 bits (`p[..8]`).
    fn codes(self, p: &[u8], bits: u32) -> Self::V;
}

/// The scalar reference.
#[derive(Clone, Copy)]
pub struct Scalar;

impl Simd for Scalar {
    type V = [f32; L];
    #[inline(always)]
    fn zero(self) -> Self::V {
        [0.0; L]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        [x; L]
    }
    #[inline(always)]
    fn load(self, p: &[f32]) -> Self::V {
        let mut v = [0.0; L];
        v.copy_from_slice(&p[..L]);
        v
    }
    #[inline(always)]
    fn store(self, p: &mut [f32], v: Self::V) {
        p[..L].copy_from_slice(&v);
    }
    #[inline(always)]
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn sum(self, v: Self::V) -> f32 {
        v.iter().sum()
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i].max(b[i]))
    }
    #[inline(always)]
    fn hmax(self, v: Self::V) -> f32 {
        v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
    }
    #[inline(always)]
    fn exp(self, v: Self::V) -> Self::V {
        v.map(f32::exp)
    }
    #[inline(always)]
    fn f16(self, p: &[f16]) -> Self::V {
        std::array::from_fn(|i| p[i].to_f32())
    }
    #[inline(always)]
    fn i8(self, p: &[i8]) -> Self::V {
        std::array::from_fn(|i| p[i] as f32)
    }
    #[inline(always)]
    fn nib(self, p: &[u8], hi: bool) -> Self::V {
        let s = if hi { 4 } else { 0 };
        std::array::from_fn(|i| ((p[i] >> s) & 0xF) as f32)
    }
    #[inline(always)]
    fn codes(self, p: &[u8], bits: u32) -> Self::V {
        std::array::from_fn(|i| super::kivi::get(p, i, bits) as f32)
    }
}

/// Sixteen lanes as `N` vectors of a narrower ISA `S` (AVX2: 2 × 8, NEON: 4 × 4), reusing its
/// attention primitives (nibbles and packed codes are widened in registers, `S::LANES` at a
/// time). Built only from a token of `S`, which proves the CPU has its features.
#[derive(Clone, Copy)]
pub(crate) struct Wide<S, const N: usize>(S);

impl<S: AttnSimd, const N: usize> Wide<S, N> {
    /// Wraps the token `s` of an ISA with `16 / N` lanes.
    pub(crate) fn new(s: S) -> Self {
        assert_eq!(N * S::LANES, L, "Wide<S, N> must hold 16 lanes");
        Wide(s)
    }
}

// Every method below calls `S`'s primitives, whose contract is that the CPU has `S`'s
// features: `Wide` exists only around a token of `S` (run-time detection), and the bodies are
// inlined into wrappers compiled with those features.
impl<S: AttnSimd, const N: usize> Simd for Wide<S, N> {
    type V = [S::V; N];
    #[inline(always)]
    fn zero(self) -> Self::V {
        // SAFETY: token of `S` held (see above).
        unsafe { [S::zero(); N] }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        // SAFETY: token of `S` held.
        unsafe { [S::splat(x); N] }
    }
    #[inline(always)]
    fn load(self, p: &[f32]) -> Self::V {
        assert!(p.len() >= L);
        let mut v = self.zero();
        for (i, x) in v.iter_mut().enumerate() {
            // SAFETY: lanes `i·LANES..(i+1)·LANES` ≤ 16 are in bounds (checked); token held.
            *x = unsafe { S::load(p.as_ptr().add(i * S::LANES)) };
        }
        v
    }
    #[inline(always)]
    fn store(self, p: &mut [f32], v: Self::V) {
        assert!(p.len() >= L);
        for (i, x) in v.iter().enumerate() {
            // SAFETY: as in `load`.
            unsafe { S::store(p.as_mut_ptr().add(i * S::LANES), *x) };
        }
    }
    #[inline(always)]
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut o = c;
        for i in 0..N {
            // SAFETY: token of `S` held.
            o[i] = unsafe { S::fma(a[i], b[i], c[i]) };
        }
        o
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        let mut o = a;
        for i in 0..N {
            // SAFETY: token of `S` held.
            o[i] = unsafe { S::add(a[i], b[i]) };
        }
        o
    }
    #[inline(always)]
    fn sum(self, v: Self::V) -> f32 {
        let mut a = v[0];
        for x in &v[1..] {
            // SAFETY: token of `S` held.
            a = unsafe { S::add(a, *x) };
        }
        // SAFETY: token of `S` held.
        unsafe { S::hsum(a) }
    }
    #[inline(always)]
    fn sum4(self, v: [Self::V; 4]) -> [f32; 4] {
        let mut a = [v[0][0], v[1][0], v[2][0], v[3][0]];
        for (ax, vx) in a.iter_mut().zip(&v) {
            for x in &vx[1..] {
                // SAFETY: token of `S` held.
                *ax = unsafe { S::add(*ax, *x) };
            }
        }
        // SAFETY: token of `S` held.
        unsafe { S::hsum4(a) }
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        let mut o = a;
        for i in 0..N {
            // SAFETY: token of `S` held.
            o[i] = unsafe { S::max(a[i], b[i]) };
        }
        o
    }
    #[inline(always)]
    fn hmax(self, v: Self::V) -> f32 {
        let mut a = v[0];
        for x in &v[1..] {
            // SAFETY: token of `S` held.
            a = unsafe { S::max(a, *x) };
        }
        // SAFETY: token of `S` held.
        unsafe { S::hmax(a) }
    }
    #[inline(always)]
    fn exp(self, v: Self::V) -> Self::V {
        let mut o = v;
        for x in o.iter_mut() {
            // SAFETY: token of `S` held.
            *x = unsafe { S::exp(*x) };
        }
        o
    }
    #[inline(always)]
    fn f16(self, p: &[f16]) -> Self::V {
        assert!(p.len() >= L);
        let mut v = self.zero();
        for (i, x) in v.iter_mut().enumerate() {
            // SAFETY: 16 halves in bounds (checked); token held.
            *x = unsafe { S::load_f16(p.as_ptr().cast::<u16>().add(i * S::LANES)) };
        }
        v
    }
    #[inline(always)]
    fn i8(self, p: &[i8]) -> Self::V {
        assert!(p.len() >= L);
        let mut v = self.zero();
        for (i, x) in v.iter_mut().enumerate() {
            // SAFETY: 16 bytes in bounds (checked); token held.
            *x = unsafe { S::load_i8(p.as_ptr().add(i * S::LANES)) };
        }
        v
    }
    #[inline(always)]
    fn nib(self, p: &[u8], hi: bool) -> Self::V {
        assert!(p.len() >= L);
        let mut v = self.zero();
        for (i, x) in v.iter_mut().enumerate() {
            // SAFETY: 16 bytes in bounds (checked); token held.
            *x = unsafe { S::load_nib(p.as_ptr().add(i * S::LANES), hi) };
        }
        v
    }
    #[inline(always)]
    fn codes(self, p: &[u8], bits: u32) -> Self::V {
        // The 16 codes as one little-endian word; vector `i` takes its `LANES` codes from
        // bit `i·LANES·bits` on (at most 32 bits each: 8 lanes × 4 bits).
        let w = if bits == 2 {
            u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as u64
        } else {
            u64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
        };
        let step = S::LANES as u32 * bits;
        let mut v = self.zero();
        for (i, x) in v.iter_mut().enumerate() {
            // SAFETY: token of `S` held; `bits·LANES ≤ 32` for every `Wide` (16 / N lanes).
            *x = unsafe { S::unpack_bits((w >> (i as u32 * step)) as u32, bits) };
        }
        v
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::Avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{AttnSimd, Simd, L};
    use half::f16;
    use std::arch::x86_64::*;

    /// AVX-512 F/BW/VL/DQ (+ F16C). Only built by [`Avx512::new`] on a CPU that has them, so the
    /// intrinsics below run only where they exist.
    #[derive(Clone, Copy)]
    pub struct Avx512(());

    impl Avx512 {
        /// The token, when this CPU supports AVX-512.
        pub fn new() -> Option<Avx512> {
            crate::Isa::Avx512.is_supported().then_some(Avx512(()))
        }
    }

    impl Simd for Avx512 {
        type V = __m512;
        #[inline(always)]
        fn zero(self) -> __m512 {
            // SAFETY: the token exists only on AVX-512 CPUs.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, p: &[f32]) -> __m512 {
            assert!(p.len() >= L);
            // SAFETY: 16 f32 are in bounds (checked); AVX-512 present (token).
            unsafe { _mm512_loadu_ps(p.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, p: &mut [f32], v: __m512) {
            assert!(p.len() >= L);
            // SAFETY: 16 f32 are in bounds (checked); AVX-512 present (token).
            unsafe { _mm512_storeu_ps(p.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: AVX-512 present (token).
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512 present (token).
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sum(self, v: __m512) -> f32 {
            // SAFETY: AVX-512 present (token).
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        fn sum4(self, v: [__m512; 4]) -> [f32; 4] {
            // SAFETY: AVX-512 F/BW/VL/DQ present (token): what the attention primitive needs.
            unsafe { <crate::arch::x86_avx512::Avx512 as AttnSimd>::hsum4(v) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512 present (token).
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn hmax(self, v: __m512) -> f32 {
            // SAFETY: AVX-512 present (token).
            unsafe { _mm512_reduce_max_ps(v) }
        }
        #[inline(always)]
        fn exp(self, x: __m512) -> __m512 {
            // SAFETY: AVX-512 present (token).
            unsafe {
                // eˣ = 2ⁿ·eʳ, n = round(x·log2 e), r = x − n·ln 2 (two-step), degree-6 Taylor for eʳ.
                let x = _mm512_max_ps(x, _mm512_set1_ps(-120.0));
                let x = _mm512_min_ps(x, _mm512_set1_ps(88.0));
                let n = _mm512_roundscale_ps(
                    _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                );
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
                let mut p = _mm512_set1_ps(1.0 / 720.0);
                for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
                    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
                }
                _mm512_scalef_ps(p, n)
            }
        }
        #[inline(always)]
        fn f16(self, p: &[f16]) -> __m512 {
            assert!(p.len() >= L);
            // SAFETY: 16 halves (32 bytes) in bounds (checked); AVX-512 + F16C present (token).
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.as_ptr().cast())) }
        }
        #[inline(always)]
        fn i8(self, p: &[i8]) -> __m512 {
            assert!(p.len() >= L);
            // SAFETY: 16 bytes in bounds (checked); AVX-512 present (token).
            unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.as_ptr().cast()))) }
        }
        #[inline(always)]
        fn nib(self, p: &[u8], hi: bool) -> __m512 {
            assert!(p.len() >= L);
            // SAFETY: 16 bytes in bounds (checked); AVX-512 present (token).
            unsafe {
                let mut x = _mm_loadu_si128(p.as_ptr().cast());
                if hi {
                    x = _mm_srli_epi16(x, 4);
                }
                x = _mm_and_si128(x, _mm_set1_epi8(0x0F));
                _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x))
            }
        }
        #[inline(always)]
        fn codes(self, p: &[u8], bits: u32) -> __m512 {
            let n = if bits == 2 { 4 } else { 8 };
            assert!(p.len() >= n);
            // SAFETY: `n` bytes in bounds (checked, read unaligned); AVX-512 present (token).
            unsafe {
                if bits == 2 {
                    let w = (p.as_ptr() as *const u32).read_unaligned();
                    let v = _mm512_set1_epi32(w as i32);
                    let sh = _mm512_setr_epi32(
                        0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                    );
                    let c = _mm512_and_si512(_mm512_srlv_epi32(v, sh), _mm512_set1_epi32(3));
                    _mm512_cvtepi32_ps(c)
                } else {
                    let w = (p.as_ptr() as *const u64).read_unaligned();
                    let lo = _mm256_set1_epi32(w as u32 as i32);
                    let hi = _mm256_set1_epi32((w >> 32) as u32 as i32);
                    let v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                    let sh =
                        _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
                    let c = _mm512_and_si512(_mm512_srlv_epi32(v, sh), _mm512_set1_epi32(15));
                    _mm512_cvtepi32_ps(c)
                }
            }
        }
    }
}
