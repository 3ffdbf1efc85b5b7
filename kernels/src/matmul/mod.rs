//! Float matmul `y = x · wᵀ` with F32, F16 or BF16 weights.
//!
//! `x` is `[m, k]` f32 row-major, `w` is `[n, k]` row-major, `y` is `[m, n]` f32.
//!
//! `m <= 8` (decode, small batches) runs a memory-bound matvec: the weight rows are split into
//! contiguous chunks across the pool, several rows in flight per inner loop, each weight byte read
//! once. Larger `m` (prefill) runs a packed, cache-blocked GEMM whose weight packing widens
//! F16/BF16 to f32, so one register-tiled f32 micro-kernel per ISA serves every dtype (see `gemm`,
//! `kernel`, `params`).

use crate::arch::Scalar;
use crate::isa::Isa;
use crate::pool::ThreadPool;
use half::{bf16, f16};
use kernel::{MatmulKernels, WElem};
use std::marker::PhantomData;

mod gemm;
pub(crate) mod kernel;
pub(crate) mod params;
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
/// `isa` should come from [`Isa::is_supported`] or [`crate::isa::selected`]; a path this CPU
/// lacks falls back to the portable scalar kernels (never executes illegal instructions).
///
/// # Panics
/// When slice lengths do not match `m`, `n`, `k` (callers validate shapes first).
#[allow(clippy::too_many_arguments)]
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
    assert_eq!(Some(x.len()), m.checked_mul(k), "x must be [m, k]");
    assert_eq!(Some(w.len()), n.checked_mul(k), "w must be [n, k]");
    assert_eq!(Some(y.len()), m.checked_mul(n), "y must be [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(a) = crate::arch::x86_avx512::Avx512::new() {
                return run(a, pool, x, w, y, (m, n, k));
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if let Some(a) = crate::arch::x86_avx2::Avx2::new() {
                return run(a, pool, x, w, y, (m, n, k));
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            if let Some(a) = crate::arch::aarch64_neon::Neon::new() {
                return run(a, pool, x, w, y, (m, n, k));
            }
        }
        _ => {}
    }
    run(Scalar, pool, x, w, y, (m, n, k));
}

/// Dispatches on the weight dtype and on matvec (`m <= 8`) vs GEMM.
fn run<A: MatmulKernels>(
    arch: A,
    pool: &ThreadPool,
    x: &[f32],
    w: Weights<'_>,
    y: &mut [f32],
    mnk: (usize, usize, usize),
) {
    fn go<A: MatmulKernels, W: WElem>(
        arch: A,
        pool: &ThreadPool,
        x: &[f32],
        w: &[W],
        y: &mut [f32],
        mnk: (usize, usize, usize),
    ) {
        if mnk.0 <= kernel::MATVEC_MAX_M {
            matvec(arch, pool, x, w, y, mnk);
        } else {
            gemm::gemm(arch, pool, x, w, y, mnk);
        }
    }
    match w {
        Weights::F32(w) => go(arch, pool, x, w, y, mnk),
        Weights::F16(w) => go(arch, pool, x, w, y, mnk),
        Weights::BF16(w) => go(arch, pool, x, w, y, mnk),
    }
}

/// Minimum weight elements per matvec task (smaller jobs are not worth a wake-up).
const MIN_MATVEC_ELEMS_PER_TASK: usize = 1 << 15;

/// `y[i, j] = x[i] · w[j]` for `m <= MATVEC_MAX_M`: contiguous chunks of weight rows per task.
fn matvec<A: MatmulKernels, W: WElem>(
    arch: A,
    pool: &ThreadPool,
    x: &[f32],
    w: &[W],
    y: &mut [f32],
    (m, n, k): (usize, usize, usize),
) {
    let threads = pool.threads();
    let by_size = (n * k / MIN_MATVEC_ELEMS_PER_TASK).max(1);
    // A few chunks per thread balance a noisy machine; chunks are whole groups of 4 rows.
    let groups = n.div_ceil(4);
    let tasks = (threads * 4).min(by_size).min(groups).max(1);
    if tasks == 1 {
        return arch.matvec(x, m, w, k, y);
    }
    let out = SharedOut::new(y);
    pool.run(tasks, |t| {
        let j0 = (groups * t / tasks * 4).min(n);
        let j1 = (groups * (t + 1) / tasks * 4).min(n);
        let wt = &w[j0 * k..j1 * k];
        if m == 1 {
            // SAFETY: tasks cover disjoint ranges j0..j1 of y (j1 <= n).
            let yt = unsafe { out.slice(j0, j1 - j0) };
            arch.matvec(x, 1, wt, k, yt);
        } else {
            let mut yt = vec![0.0f32; m * (j1 - j0)];
            arch.matvec(x, m, wt, k, &mut yt);
            for (i, row) in yt.chunks_exact(j1 - j0).enumerate() {
                // SAFETY: tasks cover disjoint column ranges j0..j1 of each row i < m.
                unsafe { out.slice(i * n + j0, j1 - j0) }.copy_from_slice(row);
            }
        }
    });
}

/// The output of a parallel kernel, shared by tasks that write disjoint parts of it.
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `SharedOut` is only a pointer into a `&mut [f32]` borrowed for 'a; tasks access
// disjoint elements through it (each unsafe accessor states so), as a `&mut [f32]` split with
// `split_at_mut` would.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    /// Shares `y` for the duration of the borrow.
    pub(crate) fn new(y: &'a mut [f32]) -> Self {
        SharedOut {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            _borrow: PhantomData,
        }
    }

    /// Pointer to element `off`.
    ///
    /// # Panics
    /// When `off > len`.
    pub(crate) fn ptr(&self, off: usize) -> *mut f32 {
        assert!(off <= self.len, "offset past the output");
        self.ptr.wrapping_add(off)
    }

    /// Elements `off..off + len` as a mutable slice.
    ///
    /// # Safety
    /// No other live reference or task may access these elements while the slice lives.
    ///
    /// # Panics
    /// When the range lies outside the output.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        assert!(
            off <= self.len && len <= self.len - off,
            "range past the output"
        );
        // SAFETY: in bounds (checked above) of the borrowed slice; exclusivity per the contract.
        std::slice::from_raw_parts_mut(self.ptr.add(off), len)
    }
}
