//! Row-wise softmax, argmax and top-k over logits.

use super::norm::PAR_MIN;
use super::simd::{par_units, per_isa, OpsSimd};
use crate::isa::Isa;
use crate::pool::ThreadPool;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

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

/// [`softmax_ref`] on the `isa` path (vector `exp`, f32 lane sums), rows split across `pool`
/// when large.
pub fn softmax(isa: Isa, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) {
    assert!(n > 0 && x.len().is_multiple_of(n) && out.len() == x.len());
    par_units(pool, out, n, PAR_MIN.div_ceil(n), |r0, o| {
        softmax_rows(isa, &x[r0 * n..r0 * n + o.len()], n, o)
    });
}

per_isa!(fn softmax_rows(x: &[f32], n: usize, out: &mut [f32]) => softmax_body);

/// Values summed in f32 lanes before the partial sum joins the f64 total.
pub(crate) const SUM_BLOCK: usize = 512;

/// Largest non-NaN value of `r` (−∞ when none).
#[inline(always)]
unsafe fn row_max<S: OpsSimd>(r: &[f32]) -> f32 {
    let l = S::LANES;
    let n = r.len() / l * l;
    let p = r.as_ptr();
    let (mut m0, mut m1) = (S::splat(f32::NEG_INFINITY), S::splat(f32::NEG_INFINITY));
    let mut i = 0;
    while i + 2 * l <= n {
        m0 = S::max_num(S::load(p.add(i)), m0);
        m1 = S::max_num(S::load(p.add(i + l)), m1);
        i += 2 * l;
    }
    if i < n {
        m0 = S::max_num(S::load(p.add(i)), m0);
    }
    let mut m = S::hmax(S::max(m0, m1));
    for &v in &r[n..] {
        if v > m {
            m = v;
        }
    }
    m
}

#[inline(always)]
unsafe fn softmax_body<S: OpsSimd>(x: &[f32], n: usize, out: &mut [f32]) {
    let l = S::LANES;
    let nv = n / l * l;
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let max = row_max::<S>(xr);
        if max == f32::NEG_INFINITY {
            yr.fill(0.0);
            continue;
        }
        let (xp, yp) = (xr.as_ptr(), yr.as_mut_ptr());
        let mv = S::splat(max);
        // f32 lane sums over blocks, the blocks summed in f64 (as long rows need).
        let mut sum = 0f64;
        let mut i = 0;
        while i < nv {
            let end = (i + SUM_BLOCK).min(nv);
            let (mut s0, mut s1) = (S::zero(), S::zero());
            while i + 2 * l <= end {
                let e0 = S::exp(S::sub(S::load(xp.add(i)), mv));
                let e1 = S::exp(S::sub(S::load(xp.add(i + l)), mv));
                S::store(yp.add(i), e0);
                S::store(yp.add(i + l), e1);
                s0 = S::add(s0, e0);
                s1 = S::add(s1, e1);
                i += 2 * l;
            }
            if i < end {
                let e = S::exp(S::sub(S::load(xp.add(i)), mv));
                S::store(yp.add(i), e);
                s0 = S::add(s0, e);
                i += l;
            }
            sum += f64::from(S::hsum(S::add(s0, s1)));
        }
        for j in nv..n {
            yr[j] = (xr[j] - max).exp();
            sum += f64::from(yr[j]);
        }
        let inv = (1.0 / sum) as f32;
        let iv = S::splat(inv);
        let mut i = 0;
        while i < nv {
            S::store(yp.add(i), S::mul(S::load(yp.add(i)), iv));
            i += l;
        }
        for y in &mut yr[nv..] {
            *y *= inv;
        }
    }
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

/// [`argmax_ref`] on the `isa` path: vector maxima of blocks, then a scan of the first block
/// holding the maximum.
pub fn argmax(isa: Isa, pool: &ThreadPool, x: &[f32], n: usize) -> Vec<u32> {
    assert!(n > 0 && x.len().is_multiple_of(n));
    let _ = pool;
    let mut out = vec![0u32; x.len() / n];
    argmax_rows(isa, x, n, &mut out);
    out
}

per_isa!(fn argmax_rows(x: &[f32], n: usize, out: &mut [u32]) => argmax_body);

/// Values per block whose maximum is taken with vectors.
const ARGMAX_BLOCK: usize = 256;

#[inline(always)]
unsafe fn argmax_body<S: OpsSimd>(x: &[f32], n: usize, out: &mut [u32]) {
    for (r, o) in x.chunks_exact(n).zip(out.iter_mut()) {
        // As the reference: a NaN first value is never beaten.
        if r[0].is_nan() {
            *o = 0;
            continue;
        }
        let (mut best, mut block) = (f32::NEG_INFINITY, 0);
        for (b, chunk) in r.chunks(ARGMAX_BLOCK).enumerate() {
            let m = row_max::<S>(chunk);
            if m > best {
                best = m;
                block = b;
            }
        }
        let start = block * ARGMAX_BLOCK;
        let at = r[start..].iter().position(|&v| v == best).unwrap_or(0);
        *o = (start + at) as u32;
    }
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

/// Values per block whose vector maximum lets top-k skip the block.
const TOPK_BLOCK: usize = 128;

per_isa!(fn block_max(r: &[f32]) -> f32 => row_max);

/// One candidate in the top-k heap, ordered so that the heap's top is the worst kept.
#[derive(Clone, Copy, PartialEq)]
struct Cand(u32, f32);

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        rank((self.0, self.1), (other.0, other.1))
    }
}

/// [`top_k_ref`] in one pass with a heap of the `k` best so far (a value that does not beat the
/// worst kept costs one comparison); partial selection when `k` is a large part of the row.
pub fn top_k(isa: Isa, pool: &ThreadPool, x: &[f32], n: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    let _ = pool;
    assert!(n > 0 && x.len().is_multiple_of(n) && k <= n);
    x.chunks_exact(n)
        .map(|r| {
            if k == 0 {
                return Vec::new();
            }
            if k * 8 >= n {
                let mut all: Vec<(u32, f32)> =
                    r.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
                if k < n {
                    all.select_nth_unstable_by(k - 1, |&a, &b| rank(a, b));
                    all.truncate(k);
                }
                all.sort_unstable_by(|&a, &b| rank(a, b));
                return all;
            }
            let mut heap: BinaryHeap<Cand> = r[..k]
                .iter()
                .enumerate()
                .map(|(i, &v)| Cand(i as u32, v))
                .collect();
            let mut worst = heap.peek().map_or(f32::NAN, |c| c.1);
            let mut i = k;
            while i < n {
                // Whole blocks whose largest number does not beat the worst kept are skipped
                // (their NaN rank below it too).
                if i.is_multiple_of(TOPK_BLOCK)
                    && i + TOPK_BLOCK <= n
                    && !worst.is_nan()
                    && block_max(isa, &r[i..i + TOPK_BLOCK]) <= worst
                {
                    i += TOPK_BLOCK;
                    continue;
                }
                let v = r[i];
                // Later indices lose ties, so only a strictly larger value (or a number against
                // a NaN) gets in.
                if v > worst || (worst.is_nan() && !v.is_nan()) {
                    heap.pop();
                    heap.push(Cand(i as u32, v));
                    worst = heap.peek().map_or(f32::NAN, |c| c.1);
                }
                i += 1;
            }
            heap.into_sorted_vec()
                .into_iter()
                .map(|c| (c.0, c.1))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(m: usize, n: usize, seed: usize) -> Vec<f32> {
        (0..m * n)
            .map(|i| ((i * 7919 + seed) % 1021) as f32 / 37.0 - 14.0)
            .collect()
    }

    #[test]
    fn every_isa_matches_the_reference() {
        let pool = ThreadPool::new(3);
        for isa in Isa::supported() {
            for (m, n) in [
                (1, 1),
                (2, 3),
                (3, 17),
                (1, 255),
                (4, 257),
                (2, 49152),
                (40, 1000),
            ] {
                let x = rows(m, n, n);
                let (mut want, mut got) = (vec![0f32; m * n], vec![0f32; m * n]);
                softmax_ref(&x, n, &mut want);
                softmax(isa, &pool, &x, n, &mut got);
                for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert!(
                        (a - b).abs() <= 2e-6 * a.abs() + 1e-12,
                        "{isa} softmax {m}x{n} [{i}]: {a} vs {b}"
                    );
                }
                assert_eq!(
                    argmax(isa, &pool, &x, n),
                    argmax_ref(&x, n),
                    "{isa} argmax {m}x{n}"
                );
                for k in [1, 2, 5, 40, n / 2 + 1, n] {
                    if k <= n {
                        assert_eq!(
                            top_k(isa, &pool, &x, n, k),
                            top_k_ref(&x, n, k),
                            "{isa} top_k {m}x{n} k={k}"
                        );
                    }
                }
            }
            // Ties, −∞, −0/+0 and NaN in awkward places.
            let nan = f32::NAN;
            let ninf = f32::NEG_INFINITY;
            let special: Vec<Vec<f32>> = vec![
                vec![ninf; 37],
                vec![nan, 1.0, 2.0, 2.0],
                vec![1.0, nan, 3.0, nan, 3.0, -1.0],
                vec![-0.0, 0.0, -0.0, 0.0, -1.0],
                (0..600)
                    .map(|i| if i % 300 == 299 { 5.0 } else { (i % 7) as f32 })
                    .collect(),
                (0..600)
                    .map(|i| if i % 2 == 0 { nan } else { i as f32 })
                    .collect(),
            ];
            for r in &special {
                let n = r.len();
                assert_eq!(
                    argmax(isa, &pool, r, n),
                    argmax_ref(r, n),
                    "{isa} argmax {r:?}"
                );
                for k in [1, 2, 3, n] {
                    let (a, b) = (top_k(isa, &pool, r, n, k), top_k_ref(r, n, k));
                    let bits = |v: &Vec<Vec<(u32, f32)>>| -> Vec<(u32, u32)> {
                        v[0].iter().map(|&(i, x)| (i, x.to_bits())).collect()
                    };
                    assert_eq!(bits(&a), bits(&b), "{isa} top_k {k} {r:?}");
                }
            }
            let mut y = vec![1f32; 37];
            softmax(isa, &pool, &special[0], 37, &mut y);
            assert!(y.iter().all(|&v| v == 0.0));
        }
    }
}
