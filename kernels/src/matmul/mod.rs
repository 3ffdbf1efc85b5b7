//! Float matmul `y = x · wᵀ` with F32, F16 or BF16 weights.
//!
//! `x` is `[m, k]` f32 row-major, `w` is `[n, k]` row-major, `y` is `[m, n]` f32.

use crate::isa::Isa;
use crate::pool::ThreadPool;
use half::{bf16, f16};

pub mod reference;

/// Row-major `[n, k]` weights in one of the float formats.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    /// f32 weights.
    F32(&'a [f32]),
    /// f16 weights.
    F16(&'a [f16]),
    /// bf16 weights.
    BF16(&'a [bf16]),
}

impl Weights<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::F16(w) => w.len(),
            Weights::BF16(w) => w.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Computes `y[m, n] = x[m, k] · w[n, k]ᵀ` on `isa`, spread over `pool`.
///
/// # Panics
/// When slice lengths do not match `m`, `n`, `k` (callers validate shapes first).
pub fn matmul(
    isa: Isa,
    pool: &ThreadPool,
    x: &[f32],
    w: Weights<'_>,
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let _ = (isa, pool);
    reference::matmul(x, w, y, m, n, k);
}
