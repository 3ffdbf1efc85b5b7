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
    /// Scale.
    fn dx(&self) -> f32;
    /// Codes.
    fn codes(&self) -> &[i8];
}

impl ActBlock for BlockQ8_0 {
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
            P::Act::quantize_ref(&x[b0 * bl..b1 * bl], &mut blocks);
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
