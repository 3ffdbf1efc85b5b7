//! Activations quantized once per call (Q8_0 or Q8_K, exactly as the reference) and laid out
//! for the tiled kernels: the codes of each row contiguous, plus per sub-block sums and per
//! block scales.

use super::repack::Packed;
use super::SharedMut;
use crate::pool::ThreadPool;
use crate::quant::{BlockFormat, BlockQ8K, BlockQ8_0};
use bytemuck::Zeroable;

/// Read access to an activation block.
pub(crate) trait ActBlock: BlockFormat {
    /// The reference quantizer's bytes, with SIMD where this CPU has AVX-512 or AVX2.
    fn quantize_fast(x: &[f32], out: &mut [Self]);
    /// Scale.
    fn dx(&self) -> f32;
    /// Codes.
    fn codes(&self) -> &[i8];
}

impl ActBlock for BlockQ8_0 {
    fn quantize_fast(x: &[f32], out: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = x86::Avx512Quant::get() {
            return t.q8_0(x, out);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = x86::Avx2Quant::get() {
            return t.q8_0(x, out);
        }
        Self::quantize_ref(x, out)
    }
    #[inline]
    fn dx(&self) -> f32 {
        self.d.to_f32()
    }
    #[inline]
    fn codes(&self) -> &[i8] {
        &self.qs
    }
}

impl ActBlock for BlockQ8K {
    fn quantize_fast(x: &[f32], out: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = x86::Avx512Quant::get() {
            return t.q8_k(x, out);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = x86::Avx2Quant::get() {
            return t.q8_k(x, out);
        }
        Self::quantize_ref(x, out)
    }
    #[inline]
    fn dx(&self) -> f32 {
        self.d
    }
    #[inline]
    fn codes(&self) -> &[i8] {
        &self.qs
    }
}

/// The `m` activation rows of one call, ready for the kernels of format `P`.
pub(crate) struct Acts {
    /// Codes, `[m, k]`.
    pub xq: Vec<i8>,
    /// Per sub-block `−Z_eff · Σx` (the integer offset correction), `[m, k / S]`.
    pub init: Vec<i32>,
    /// Per sub-block `±Σx` as f32 (formats with an additive term), `[m, k / S]`, else empty.
    pub xsf: Vec<f32>,
    /// Per block scale, `[m, k / BLOCK]`.
    pub dx: Vec<f32>,
}

/// Blocks quantized per task (keeps tasks big enough to be worth a wake-up).
const BLOCKS_PER_TASK: usize = 64;

/// Quantizes `x` (`[m, k]`) for format `P`; `z_eff` is the offset the kernel's dot product
/// needs corrected (the format's `Z`, plus 128 for signed codes on biased instructions).
pub(crate) fn quantize<P: Packed>(
    pool: &ThreadPool,
    x: &[f32],
    m: usize,
    k: usize,
    z_eff: i32,
) -> Acts
where
    P::Act: ActBlock,
{
    let bl = P::BLOCK;
    let nb = m * k / bl;
    let subs = P::SUBS;
    let mut acts = Acts {
        xq: vec![0; m * k],
        init: vec![0; nb * subs],
        xsf: if P::HAS_C {
            vec![0.0; nb * subs]
        } else {
            Vec::new()
        },
        dx: vec![0.0; nb],
    };
    let sign = if P::C_NEG { -1.0 } else { 1.0 };
    {
        let xq = SharedMut::new(&mut acts.xq);
        let init = SharedMut::new(&mut acts.init);
        let xsf = SharedMut::new(&mut acts.xsf);
        let dx = SharedMut::new(&mut acts.dx);
        let tasks = nb.div_ceil(BLOCKS_PER_TASK).min(pool.threads() * 4).max(1);
        pool.run(tasks, |t| {
            let (b0, b1) = (nb * t / tasks, nb * (t + 1) / tasks);
            if b0 == b1 {
                return;
            }
            let mut blocks = vec![P::Act::zeroed(); b1 - b0];
            P::Act::quantize_fast(&x[b0 * bl..b1 * bl], &mut blocks);
            // SAFETY: tasks own the disjoint block ranges b0..b1 (and the matching element
            // ranges of each array).
            let (xq, init, dx) = unsafe {
                (
                    xq.slice(b0 * bl, (b1 - b0) * bl),
                    init.slice(b0 * subs, (b1 - b0) * subs),
                    dx.slice(b0, b1 - b0),
                )
            };
            // SAFETY: as above; empty when the format has no additive term.
            let mut xsf = P::HAS_C.then(|| unsafe { xsf.slice(b0 * subs, (b1 - b0) * subs) });
            for (bi, b) in blocks.iter().enumerate() {
                dx[bi] = b.dx();
                let q = b.codes();
                xq[bi * bl..(bi + 1) * bl].copy_from_slice(q);
                for (s, qs) in q.chunks_exact(P::S).enumerate() {
                    let sum: i32 = qs.iter().map(|&v| v as i32).sum();
                    init[bi * subs + s] = -z_eff * sum;
                    if let Some(xsf) = xsf.as_deref_mut() {
                        xsf[bi * subs + s] = sign * sum as f32;
                    }
                }
            }
        });
    }
    acts
}

/// AVX-512 and AVX2 activation quantizers, byte-identical to `quantize_ref`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
mod x86 {
    use crate::quant::{BlockQ8K, BlockQ8_0, QK_K};
    use bytemuck::Zeroable;
    use core::arch::x86_64::*;
    use half::f16;
    use std::sync::OnceLock;

    /// Proof that this CPU has AVX-512 F/BW; obtained from [`Avx512Quant::get`] only.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Avx512Quant(());

    impl Avx512Quant {
        /// The token, when the CPU has AVX-512 F and BW (detected once).
        pub(super) fn get() -> Option<Self> {
            static OK: OnceLock<bool> = OnceLock::new();
            OK.get_or_init(|| {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
            })
            .then_some(Avx512Quant(()))
        }

        /// As `BlockQ8_0::quantize_ref`.
        pub(super) fn q8_0(self, x: &[f32], out: &mut [BlockQ8_0]) {
            assert!(x.len() >= out.len() * 32);
            // SAFETY: the token proves AVX-512 F/BW; lengths checked above.
            unsafe { q8_0_tf(x, out) }
        }

        /// As `BlockQ8K::quantize_ref`.
        pub(super) fn q8_k(self, x: &[f32], out: &mut [BlockQ8K]) {
            assert!(x.len() >= out.len() * QK_K);
            // SAFETY: the token proves AVX-512 F/BW; lengths checked above.
            unsafe { q8_k_tf(x, out) }
        }
    }

    /// Rust's `f32::round` (half away from zero) on 16 lanes of integral-range values.
    #[inline(always)]
    unsafe fn round_away(v: __m512) -> __m512 {
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
        // ±1 with the sign of v (t has it too, or is ±0 with v's sign).
        let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(v, _mm512_set1_ps(-0.0)));
        _mm512_mask_add_ps(t, up, t, one)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn q8_0_tf(x: &[f32], out: &mut [BlockQ8_0]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(32)) {
            let v0 = _mm512_loadu_ps(x.as_ptr());
            let v1 = _mm512_loadu_ps(x.as_ptr().add(16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16::from_f32(d);
            let idv = _mm512_set1_ps(id);
            let q0 = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(v0, idv)));
            let q1 = _mm512_cvtps_epi32(round_away(_mm512_mul_ps(v1, idv)));
            let p = b.qs.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(p, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128(p.add(1), _mm512_cvtsepi32_epi8(q1));
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn q8_k_tf(x: &[f32], out: &mut [BlockQ8K]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
            let mut m = _mm512_setzero_ps();
            for c in x.chunks_exact(16) {
                m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(c.as_ptr())));
            }
            let amax = _mm512_reduce_max_ps(m);
            if amax == 0.0 {
                *b = BlockQ8K::zeroed();
                continue;
            }
            // The first value of largest magnitude, as the reference's strict `>` scan finds.
            let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            let isv = _mm512_set1_ps(iscale);
            for (c, (xc, bs)) in x.chunks_exact(16).zip(b.bsums.iter_mut()).enumerate() {
                let v = _mm512_mul_ps(_mm512_loadu_ps(xc.as_ptr()), isv);
                let r =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                let q = _mm512_min_epi32(_mm512_cvtps_epi32(r), _mm512_set1_epi32(127));
                *bs = _mm512_reduce_add_epi32(q) as i16;
                let p = b.qs.as_mut_ptr().add(16 * c).cast::<__m128i>();
                _mm_storeu_si128(p, _mm512_cvtsepi32_epi8(q));
            }
            b.d = 1.0 / iscale;
        }
    }

    /// Proof that this CPU has AVX2 (and F16C is not needed: scales convert in scalar code);
    /// obtained from [`Avx2Quant::get`] only.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Avx2Quant(());

    impl Avx2Quant {
        /// The token, when the CPU has AVX2 (detected once).
        pub(super) fn get() -> Option<Self> {
            static OK: OnceLock<bool> = OnceLock::new();
            OK.get_or_init(|| is_x86_feature_detected!("avx2"))
                .then_some(Avx2Quant(()))
        }

        /// As `BlockQ8_0::quantize_ref`.
        pub(super) fn q8_0(self, x: &[f32], out: &mut [BlockQ8_0]) {
            assert!(x.len() >= out.len() * 32);
            // SAFETY: the token proves AVX2; lengths checked above.
            unsafe { q8_0_avx2(x, out) }
        }

        /// As `BlockQ8K::quantize_ref`.
        pub(super) fn q8_k(self, x: &[f32], out: &mut [BlockQ8K]) {
            assert!(x.len() >= out.len() * QK_K);
            // SAFETY: the token proves AVX2; lengths checked above.
            unsafe { q8_k_avx2(x, out) }
        }
    }

    /// Largest lane of `v`.
    #[inline(always)]
    unsafe fn hmax8(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m)))
    }

    /// `|v|`.
    #[inline(always)]
    unsafe fn abs8(v: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
    }

    /// Rust's `f32::round` (half away from zero) on 8 lanes of integral-range values.
    #[inline(always)]
    unsafe fn round_away8(v: __m256) -> __m256 {
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs8(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5));
        let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, _mm256_set1_ps(-0.0)));
        _mm256_add_ps(t, _mm256_and_ps(up, one))
    }

    /// 32 i32 (four vectors, in order) saturated to i8 and stored at `p`.
    #[inline(always)]
    unsafe fn store_i8x32(q: [__m256i; 4], p: *mut i8) {
        // The packs work per 128-bit lane; the dword permutation restores the order.
        let a = _mm256_packs_epi32(q[0], q[1]);
        let b = _mm256_packs_epi32(q[2], q[3]);
        let c = _mm256_packs_epi16(a, b);
        let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(p.cast(), c);
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q8_0_avx2(x: &[f32], out: &mut [BlockQ8_0]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(32)) {
            let p = x.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let m = _mm256_max_ps(
                _mm256_max_ps(abs8(v[0]), abs8(v[1])),
                _mm256_max_ps(abs8(v[2]), abs8(v[3])),
            );
            let d = hmax8(m) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f16::from_f32(d);
            let idv = _mm256_set1_ps(id);
            let q = [
                _mm256_cvtps_epi32(round_away8(_mm256_mul_ps(v[0], idv))),
                _mm256_cvtps_epi32(round_away8(_mm256_mul_ps(v[1], idv))),
                _mm256_cvtps_epi32(round_away8(_mm256_mul_ps(v[2], idv))),
                _mm256_cvtps_epi32(round_away8(_mm256_mul_ps(v[3], idv))),
            ];
            store_i8x32(q, b.qs.as_mut_ptr());
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn q8_k_avx2(x: &[f32], out: &mut [BlockQ8K]) {
        for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
            let mut m = _mm256_setzero_ps();
            for c in x.chunks_exact(8) {
                m = _mm256_max_ps(m, abs8(_mm256_loadu_ps(c.as_ptr())));
            }
            let amax = hmax8(m);
            if amax == 0.0 {
                *b = BlockQ8K::zeroed();
                continue;
            }
            // The first value of largest magnitude, as the reference's strict `>` scan finds.
            let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            let isv = _mm256_set1_ps(iscale);
            for (c, (xc, bs)) in x
                .chunks_exact(32)
                .zip(b.bsums.chunks_exact_mut(2))
                .enumerate()
            {
                let mut q = [_mm256_setzero_si256(); 4];
                for (i, qi) in q.iter_mut().enumerate() {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(xc.as_ptr().add(8 * i)), isv);
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                    *qi = _mm256_min_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(127));
                }
                for (h, s) in bs.iter_mut().enumerate() {
                    let t = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                    let t =
                        _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
                    let t = _mm_hadd_epi32(t, t);
                    *s = _mm_cvtsi128_si32(_mm_hadd_epi32(t, t)) as i16;
                }
                store_i8x32(q, b.qs.as_mut_ptr().add(32 * c));
            }
            b.d = 1.0 / iscale;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::quant::BlockFormat;

        /// Awkward values: ties at ±0.5 steps after scaling, zeros, huge and tiny magnitudes.
        fn data(n: usize) -> Vec<f32> {
            let mut s = 0x9E37_79B9u32;
            (0..n)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                    match i % 97 {
                        0 => 0.0,
                        1 => 127.0,
                        2 => -63.5,
                        3 => 0.5,
                        4 => 1e-30 * u,
                        5 => 3e4 * u,
                        _ => u * (1 + i % 7) as f32,
                    }
                })
                .collect()
        }

        /// The quantizers of every x86 path this CPU has, as (name, Q8_0, Q8_K).
        type Quantizers = Vec<(
            &'static str,
            fn(&[f32], &mut [BlockQ8_0]),
            fn(&[f32], &mut [BlockQ8K]),
        )>;

        fn quantizers() -> Quantizers {
            let mut v: Quantizers = Vec::new();
            if Avx512Quant::get().is_some() {
                v.push((
                    "avx512",
                    |x, o| Avx512Quant(()).q8_0(x, o),
                    |x, o| Avx512Quant(()).q8_k(x, o),
                ));
            }
            if Avx2Quant::get().is_some() {
                v.push((
                    "avx2",
                    |x, o| Avx2Quant(()).q8_0(x, o),
                    |x, o| Avx2Quant(()).q8_k(x, o),
                ));
            }
            v
        }

        #[test]
        fn simd_activation_quantizers_match_the_reference_bytes() {
            let qs = quantizers();
            if qs.is_empty() {
                eprintln!("neither AVX-512 nor AVX2 available: skipped");
                return;
            }
            for (name, q8_0, q8_k) in qs {
                eprintln!("activation quantizers: {name}");
                for n in [1024, 4096, 14336] {
                    let mut x = data(n);
                    x[256..512].fill(0.0);
                    x[512..544].fill(-2.0);
                    let mut a = vec![BlockQ8_0::zeroed(); n / 32];
                    let mut b = a.clone();
                    BlockQ8_0::quantize_ref(&x, &mut a);
                    q8_0(&x, &mut b);
                    assert_eq!(
                        bytemuck::cast_slice::<_, u8>(&a),
                        bytemuck::cast_slice::<_, u8>(&b)
                    );
                    let mut a = vec![BlockQ8K::zeroed(); n / QK_K];
                    let mut b = a.clone();
                    BlockQ8K::quantize_ref(&x, &mut a);
                    q8_k(&x, &mut b);
                    assert_eq!(
                        bytemuck::cast_slice::<_, u8>(&a),
                        bytemuck::cast_slice::<_, u8>(&b)
                    );
                }
            }
        }
    }
}
