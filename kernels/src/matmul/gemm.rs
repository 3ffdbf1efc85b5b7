//! Packed, cache-blocked GEMM driver (BLIS loop order) and the parallel split.
//!
//! ```text
//! for jc in n by NC            (rows of w)
//!   for pc in k by KC          pack w[jc.., pc..] -> B̃ (f32, panels of NR)
//!     for ic in m by MC        pack x[ic.., pc..] -> Ã (panels of MR)
//!       for jr in NC by NR
//!         for ir in MC by MR   micro-kernel on a full tile, or on a scratch tile at the edges
//! ```
//! Each task owns a rectangle of `y` (a range of columns, or of rows when `n` is too small to
//! split) and packs into thread-local buffers.

use super::kernel::{MatmulKernels, PackBlock, WElem};
use super::SharedOut;
use crate::pool::ThreadPool;
use std::cell::RefCell;

/// A `Vec<f32>` handing out 64-byte-aligned slices, reused across calls on one thread.
#[derive(Default)]
struct AlignedBuf(Vec<f32>);

impl AlignedBuf {
    /// A 64-byte-aligned slice of `len` f32 (contents unspecified).
    fn get(&mut self, len: usize) -> &mut [f32] {
        const ALIGN: usize = 64 / std::mem::size_of::<f32>();
        if self.0.len() < len + ALIGN {
            self.0 = vec![0.0; len + ALIGN];
        }
        let off = self.0.as_ptr().align_offset(64).min(ALIGN);
        &mut self.0[off..off + len]
    }
}

thread_local! {
    /// Packing buffers of the current thread: (Ã, B̃).
    static BUFS: RefCell<(AlignedBuf, AlignedBuf)> = RefCell::default();
}

/// Minimum multiply-adds per task before a GEMM is split across threads.
const MIN_FMAS_PER_TASK: usize = 1 << 17;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` for `m > 1` (any `m` works), `k > 0`.
pub(crate) fn gemm<A: MatmulKernels, W: WElem>(
    arch: A,
    pool: &ThreadPool,
    x: &[f32],
    w: &[W],
    y: &mut [f32],
    (m, n, k): (usize, usize, usize),
) {
    let out = SharedOut::new(y);
    let work = m * n * k;
    let threads = pool.threads().min(work / MIN_FMAS_PER_TASK).max(1);
    let col_blocks = n.div_ceil(A::NR);
    let row_blocks = m.div_ceil(A::MR);
    // Split the columns (each w row packed once overall) unless there are too few of them.
    let split_cols = col_blocks >= threads || col_blocks >= row_blocks;
    let (blocks, unit) = if split_cols {
        (col_blocks, A::NR)
    } else {
        (row_blocks, A::MR)
    };
    let tasks = threads.min(blocks);
    let run_task = |t: usize| {
        let b0 = blocks * t / tasks;
        let b1 = blocks * (t + 1) / tasks;
        let (r0, r1) = (b0 * unit, (b1 * unit).min(if split_cols { n } else { m }));
        let (rows, cols) = if split_cols {
            (0..m, r0..r1)
        } else {
            (r0..r1, 0..n)
        };
        BUFS.with(|b| match b.try_borrow_mut() {
            Ok(mut bufs) => {
                let (abuf, bbuf) = &mut *bufs;
                block(arch, x, w, &out, (m, n, k), rows, cols, abuf, bbuf);
            }
            Err(_) => {
                let (mut abuf, mut bbuf) = (AlignedBuf::default(), AlignedBuf::default());
                block(
                    arch,
                    x,
                    w,
                    &out,
                    (m, n, k),
                    rows,
                    cols,
                    &mut abuf,
                    &mut bbuf,
                );
            }
        });
    };
    pool.run(tasks, run_task);
}

/// Computes `y[rows, cols]` (the task's rectangle) with packing and cache blocking.
#[allow(clippy::too_many_arguments)]
fn block<A: MatmulKernels, W: WElem>(
    arch: A,
    x: &[f32],
    w: &[W],
    out: &SharedOut,
    (m, n, k): (usize, usize, usize),
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    abuf: &mut AlignedBuf,
    bbuf: &mut AlignedBuf,
) {
    let (mr, nr) = (A::MR, A::NR);
    let mut scratch = [0.0f32; 16 * 64];
    assert!(
        mr * nr <= scratch.len(),
        "micro-tile larger than the scratch tile"
    );
    let mut jc = cols.start;
    while jc < cols.end {
        let nc = A::NC.min(cols.end - jc);
        let mut pc = 0;
        while pc < k {
            let kc = A::KC.min(k - pc);
            let wb = PackBlock {
                rows: n,
                k,
                r0: jc,
                nr_rows: nc,
                p0: pc,
                kc,
            };
            let bp = bbuf.get(wb.packed_len(nr));
            arch.pack_w(w, wb, bp);
            let mut ic = rows.start;
            while ic < rows.end {
                let mc = A::MC.min(rows.end - ic);
                let xb = PackBlock {
                    rows: m,
                    k,
                    r0: ic,
                    nr_rows: mc,
                    p0: pc,
                    kc,
                };
                let ap = abuf.get(xb.packed_len(mr));
                arch.pack_x(x, xb, ap);
                for jr in 0..nc.div_ceil(nr) {
                    let bpanel = &bp[jr * kc * nr..(jr + 1) * kc * nr];
                    let col = jc + jr * nr;
                    let ncols = nr.min(nc - jr * nr);
                    if ic == rows.start && pc + kc < k {
                        // Spread the reads of the next KC block of these w rows over this
                        // block's compute, so the next pack finds them in cache.
                        let next = PackBlock {
                            rows: n,
                            k,
                            r0: col,
                            nr_rows: ncols,
                            p0: pc + kc,
                            kc: A::KC.min(k - pc - kc),
                        };
                        arch.prefetch_w(w, next);
                    }
                    for ir in 0..mc.div_ceil(mr) {
                        let apanel = &ap[ir * kc * mr..(ir + 1) * kc * mr];
                        let row = ic + ir * mr;
                        let nrows = mr.min(mc - ir * mr);
                        let accumulate = pc > 0;
                        if nrows == mr && ncols == nr {
                            // SAFETY: the panels hold kc·MR and kc·NR f32 (sliced above); the tile
                            // rows row..row+MR, columns col..col+NR lie inside y (row + MR <= m,
                            // col + NR <= n) and inside this task's rectangle, which no other task
                            // touches while the pool runs.
                            unsafe {
                                arch.micro(
                                    kc,
                                    apanel.as_ptr(),
                                    bpanel.as_ptr(),
                                    out.ptr(row * n + col),
                                    n,
                                    accumulate,
                                );
                            }
                        } else {
                            // SAFETY: the panels hold kc·MR and kc·NR f32; `scratch` holds MR
                            // rows of NR f32 at stride NR (checked above) and is local.
                            unsafe {
                                arch.micro(
                                    kc,
                                    apanel.as_ptr(),
                                    bpanel.as_ptr(),
                                    scratch.as_mut_ptr(),
                                    nr,
                                    false,
                                );
                            }
                            for i in 0..nrows {
                                let src = &scratch[i * nr..i * nr + ncols];
                                // SAFETY: row + i < m and col + ncols <= n: inside y and inside
                                // this task's rectangle.
                                let dst = unsafe { out.slice(row * n + n * i + col, ncols) };
                                if accumulate {
                                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                                } else {
                                    dst.copy_from_slice(src);
                                }
                            }
                        }
                    }
                }
                ic += mc;
            }
            pc += kc;
        }
        jc += nc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Single-thread GFLOP/s of the micro-kernel alone on cache-resident panels (`KC` deep):
    /// the ceiling the blocked driver can reach.
    fn micro_speed<A: MatmulKernels>(arch: A, name: &str) {
        let (mr, nr, kc) = (A::MR, A::NR, A::KC);
        let a = vec![0.5f32; mr * kc];
        let b = vec![0.25f32; nr * kc];
        let mut c = vec![0.0f32; mr * nr];
        let calls = 200_000_000 / (mr * nr * kc) + 1;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..calls {
                // SAFETY: a, b and c hold kc·MR, kc·NR and MR·NR f32 (stride NR).
                unsafe { arch.micro(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), nr, true) };
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        std::hint::black_box(&c);
        let gflops = 2.0 * (mr * nr * kc * calls) as f64 / best / 1e9;
        println!("micro {name} {mr}x{nr} kc={kc}: {gflops:.1} GFLOP/s on one thread");
    }

    #[test]
    #[ignore = "measures the machine; run with --ignored --nocapture"]
    fn micro_kernel_speed() {
        micro_speed(crate::arch::Scalar, "scalar");
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(a) = crate::arch::x86_avx2::Avx2::new() {
                micro_speed(a, "avx2");
            }
            if let Some(a) = crate::arch::x86_avx512::Avx512::new() {
                micro_speed(a, "avx512");
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(a) = crate::arch::aarch64_neon::Neon::new() {
            micro_speed(a, "neon");
        }
    }
}
