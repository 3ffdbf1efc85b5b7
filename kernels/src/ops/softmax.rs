//! Row-wise softmax, argmax and top-k over logits.

use crate::isa::Isa;
use crate::pool::ThreadPool;
use std::cmp::Ordering;

/// Scalar reference: `out = exp(x − max) / Σ exp(x − max)` per row of `n` (sum in f64, as
/// ggml). A row of only −∞ gives zeros.
pub fn softmax_ref(x: &[f32], n: usize, out: &mut [f32]) {
    assert!(n > 0 && x.len().is_multiple_of(n) && out.len() == x.len());
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            yr.fill(0.0);
            continue;
        }
        let mut sum = 0f64;
        for (y, &v) in yr.iter_mut().zip(xr) {
            *y = (v - max).exp();
            sum += f64::from(*y);
        }
        let inv = (1.0 / sum) as f32;
        for y in yr.iter_mut() {
            *y *= inv;
        }
    }
}

/// [`softmax_ref`] on the `isa` path, rows split across `pool` when large.
pub fn softmax(isa: Isa, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) {
    let _ = (isa, pool);
    softmax_ref(x, n, out)
}

/// Scalar reference: the index of the largest value of each row of `n` (the first on ties;
/// NaN never wins unless the row starts with it and nothing compares greater).
pub fn argmax_ref(x: &[f32], n: usize) -> Vec<u32> {
    assert!(n > 0 && x.len().is_multiple_of(n));
    x.chunks_exact(n)
        .map(|r| {
            let mut best = 0;
            for (i, &v) in r.iter().enumerate().skip(1) {
                if v > r[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// [`argmax_ref`] on the `isa` path.
pub fn argmax(isa: Isa, pool: &ThreadPool, x: &[f32], n: usize) -> Vec<u32> {
    let _ = (isa, pool);
    argmax_ref(x, n)
}

/// Descending by value, then ascending by index; NaN after every number.
fn rank(a: (u32, f32), b: (u32, f32)) -> Ordering {
    match (a.1.is_nan(), b.1.is_nan()) {
        (false, false) => b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal),
        (x, y) => x.cmp(&y),
    }
    .then(a.0.cmp(&b.0))
}

/// Scalar reference: the `k` (≤ `n`) largest `(index, value)` of each row of `n`, in
/// descending order of value, lower index first on ties, NaN last.
pub fn top_k_ref(x: &[f32], n: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    assert!(n > 0 && x.len().is_multiple_of(n) && k <= n);
    x.chunks_exact(n)
        .map(|r| {
            let mut all: Vec<(u32, f32)> =
                r.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
            all.sort_by(|&a, &b| rank(a, b));
            all.truncate(k);
            all
        })
        .collect()
}

/// [`top_k_ref`] by partial selection (linear in `n`, then a sort of the `k` kept).
pub fn top_k(isa: Isa, pool: &ThreadPool, x: &[f32], n: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    let _ = (isa, pool);
    assert!(n > 0 && x.len().is_multiple_of(n) && k <= n);
    x.chunks_exact(n)
        .map(|r| {
            let mut all: Vec<(u32, f32)> =
                r.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
            if k == 0 {
                return Vec::new();
            }
            if k < n {
                all.select_nth_unstable_by(k - 1, |&a, &b| rank(a, b));
                all.truncate(k);
            }
            all.sort_unstable_by(|&a, &b| rank(a, b));
            all
        })
        .collect()
}
