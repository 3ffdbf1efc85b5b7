//! Element-wise activations: SwiGLU's `silu(gate) * up` and the residual `a + b`.

use super::norm::PAR_MIN;
use super::simd::{par_units, per_isa, OpsSimd};
use crate::isa::Isa;
use crate::pool::ThreadPool;

/// `x · sigmoid(x)`, as ggml's `ggml_silu_f32`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Scalar reference: `out[i] = silu(gate[i]) * up[i]`.
pub fn silu_mul_ref(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && out.len() == gate.len());
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// Scalar reference: `out[i] = a[i] + b[i]`.
pub fn add_ref(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && out.len() == a.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// [`silu_mul_ref`] on the `isa` path (vector `exp`, relative error ≲ 2e-7), split across
/// `pool` when large.
pub fn silu_mul(isa: Isa, pool: &ThreadPool, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && out.len() == gate.len());
    par_units(pool, out, 1, PAR_MIN, |i, o| {
        silu_mul_run(isa, &gate[i..i + o.len()], &up[i..i + o.len()], o)
    });
}

/// [`add_ref`] on the `isa` path, split across `pool` when large.
pub fn add(isa: Isa, pool: &ThreadPool, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && out.len() == a.len());
    par_units(pool, out, 1, PAR_MIN, |i, o| {
        add_run(isa, &a[i..i + o.len()], &b[i..i + o.len()], o)
    });
}

per_isa!(fn silu_mul_run(gate: &[f32], up: &[f32], out: &mut [f32]) => silu_mul_body);
per_isa!(fn add_run(a: &[f32], b: &[f32], out: &mut [f32]) => add_body);

#[inline(always)]
unsafe fn silu_mul_body<S: OpsSimd>(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let l = S::LANES;
    let n = out.len() / l * l;
    let (gp, up_, op) = (gate.as_ptr(), up.as_ptr(), out.as_mut_ptr());
    let one = S::splat(1.0);
    let mut i = 0;
    while i < n {
        let g = S::load(gp.add(i));
        let e = S::exp(S::sub(S::zero(), g));
        let y = S::mul(S::div(g, S::add(one, e)), S::load(up_.add(i)));
        S::store(op.add(i), y);
        i += l;
    }
    for j in n..out.len() {
        out[j] = silu(gate[j]) * up[j];
    }
}

#[inline(always)]
unsafe fn add_body<S: OpsSimd>(a: &[f32], b: &[f32], out: &mut [f32]) {
    let l = S::LANES;
    let n = out.len() / l * l;
    let (ap, bp, op) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i < n {
        S::store(op.add(i), S::add(S::load(ap.add(i)), S::load(bp.add(i))));
        i += l;
    }
    for j in n..out.len() {
        out[j] = a[j] + b[j];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_matches_the_reference() {
        let pool = ThreadPool::new(3);
        for isa in Isa::supported() {
            for n in [1, 7, 16, 33, 1536, 100_003] {
                let g: Vec<f32> = (0..n)
                    .map(|i| ((i * 7919 % 263) as f32 - 131.0) / 6.0)
                    .collect();
                let u: Vec<f32> = (0..n)
                    .map(|i| ((i * 104_729 % 97) as f32 - 48.0) / 9.0)
                    .collect();
                let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
                silu_mul_ref(&g, &u, &mut want);
                silu_mul(isa, &pool, &g, &u, &mut got);
                for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                        "{isa} silu {n} [{i}]: {a} vs {b}"
                    );
                }
                add_ref(&g, &u, &mut want);
                add(isa, &pool, &g, &u, &mut got);
                assert_eq!(want, got, "{isa} add {n}");
            }
            // Extreme gates: silu → x for large x, → −0 for very negative x.
            let g = [-100.0f32, -88.5, -20.0, 0.0, 20.0, 88.5, 100.0, 1e30, -1e30];
            let u = [1.0f32; 9];
            let (mut want, mut got) = ([0f32; 9], [0f32; 9]);
            silu_mul_ref(&g, &u, &mut want);
            silu_mul(isa, &pool, &g, &u, &mut got);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                    "{isa}: {a} vs {b}"
                );
            }
        }
    }
}
