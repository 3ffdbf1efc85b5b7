//! The chunked-parallel form: chunks of [`CHUNK`] tokens; inside a chunk, small matrix products
//! with a causal mask and decays written as differences of cumulative log decays; across
//! chunks, the state. Every exponent is ≤ 0, so long sequences never overflow. The delta rule
//! solves its chunk's unit lower-triangular system by forward substitution (the UT transform).

use super::{check, per_head, phi, Head, Kind, LinShape, CHUNK, VANILLA_EPS};
use crate::isa::{self, Isa};
use crate::pool::ThreadPool;

/// Sub-chunk of GLA's per-channel decays: blocks below the diagonal factor through the end of
/// the earlier sub-chunk, so both factors have exponents ≤ 0.
const SUB: usize = 16;

/// Runs `s.t` tokens chunk by chunk, updating `state` (and `z` for vanilla) in place, on the
/// path `WATTLE_CPU_ISA` selects (else the best this CPU has).
#[allow(clippy::too_many_arguments)]
pub fn run(
    pool: &ThreadPool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kind: Kind<'_>,
    s: LinShape,
    state: &mut [f32],
    z: Option<&mut [f32]>,
    out: &mut [f32],
) {
    let isa = isa::selected().unwrap_or(Isa::Scalar);
    run_isa(isa, pool, q, k, v, kind, s, state, z, out)
}

/// [`run`] on the vector path `isa`; [`Isa::Scalar`] (or a path this CPU lacks) runs the
/// portable scalar reference below.
#[allow(clippy::too_many_arguments)]
pub fn run_isa(
    isa: Isa,
    pool: &ThreadPool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kind: Kind<'_>,
    s: LinShape,
    state: &mut [f32],
    mut z: Option<&mut [f32]>,
    out: &mut [f32],
) {
    check(q, k, v, kind, s, state, z.as_deref(), out);
    if super::simd::chunked(isa, pool, q, k, v, kind, s, state, z.as_deref_mut(), out) {
        return;
    }
    per_head(pool, s, state, z, out, |h, st, z, o| {
        let mut x = Head::new(q, k, v, kind, s, h);
        if let Kind::Vanilla = kind {
            x.q.iter_mut().for_each(|v| *v = phi(*v));
            x.k.iter_mut().for_each(|v| *v = phi(*v));
        }
        let mut z = z;
        let mut t0 = 0;
        while t0 < s.t {
            let c = CHUNK.min(s.t - t0);
            let o = &mut o[t0 * s.dv..(t0 + c) * s.dv];
            match kind {
                Kind::Gated { .. } => chunk_gla(&x, s, t0, c, st, o),
                _ => chunk_scalar(&x, kind, s, t0, c, st, z.as_deref_mut(), o),
            }
            t0 += c;
        }
    });
}

/// Vanilla, retention and the gated delta rule: one log decay per token.
#[allow(clippy::too_many_arguments)]
fn chunk_scalar(
    x: &Head,
    kind: Kind<'_>,
    s: LinShape,
    t0: usize,
    c: usize,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &mut [f32],
) {
    let (dk, dv) = (s.dk, s.dv);
    let q = &x.q[t0 * dk..(t0 + c) * dk];
    let k = &x.k[t0 * dk..(t0 + c) * dk];
    let v = &x.v[t0 * dv..(t0 + c) * dv];
    // Cumulative log decay b_t (≤ 0, non-increasing); zero for vanilla.
    let mut b = vec![0f32; c];
    if !x.g.is_empty() {
        let mut acc = 0.0;
        for (bt, g) in b.iter_mut().zip(&x.g[t0..t0 + c]) {
            acc += g;
            *bt = acc;
        }
    }
    // A[t, s] = (q_t · k_s) exp(b_t − b_s) for s ≤ t.
    let mut a = vec![0f32; c * c];
    for t in 0..c {
        for j in 0..=t {
            a[t * c + j] = dot(&q[t * dk..][..dk], &k[j * dk..][..dk]) * (b[t] - b[j]).exp();
        }
    }
    // The values the chunk writes: v, or the delta rule's pseudo-values u.
    let delta = matches!(kind, Kind::GatedDelta { .. });
    let u: Vec<f32> = if delta {
        let beta = &x.beta[t0..t0 + c];
        // rhs_t = β_t v_t − β_t exp(b_t) S0ᵀ k_t; then u_t = rhs_t − Σ_{s<t} β_t exp(b_t − b_s)(k_t·k_s) u_s.
        let mut u = vec![0f32; c * dv];
        let mut sk = vec![0f32; dv];
        for t in 0..c {
            read(st, &k[t * dk..][..dk], &mut sk, dv);
            let (bt, et) = (beta[t], b[t].exp());
            let (done, rest) = u.split_at_mut(t * dv);
            let ut = &mut rest[..dv];
            for ((u, &vv), &p) in ut.iter_mut().zip(&v[t * dv..][..dv]).zip(&sk) {
                *u = bt * vv - bt * et * p;
            }
            for j in 0..t {
                let l = bt * (b[t] - b[j]).exp() * dot(&k[t * dk..][..dk], &k[j * dk..][..dk]);
                ut.iter_mut()
                    .zip(&done[j * dv..][..dv])
                    .for_each(|(u, &uj)| *u -= l * uj);
            }
        }
        u
    } else {
        v.to_vec()
    };
    // O = (exp(b) ⊙ Q) S0 + A U.
    for t in 0..c {
        let ot = &mut o[t * dv..][..dv];
        read(st, &q[t * dk..][..dk], ot, dv);
        let e = b[t].exp();
        ot.iter_mut().for_each(|x| *x *= e);
        for j in 0..=t {
            let w = a[t * c + j];
            ot.iter_mut()
                .zip(&u[j * dv..][..dv])
                .for_each(|(o, &uv)| *o += w * uv);
        }
    }
    if let (Kind::Vanilla, Some(z)) = (kind, z) {
        for t in 0..c {
            let den = dot(z, &q[t * dk..][..dk])
                + a[t * c..t * c + t + 1].iter().sum::<f32>()
                + VANILLA_EPS;
            o[t * dv..][..dv].iter_mut().for_each(|x| *x /= den);
        }
        for j in 0..c {
            z.iter_mut()
                .zip(&k[j * dk..][..dk])
                .for_each(|(z, &kv)| *z += kv);
        }
    }
    // S ← exp(b_C) S0 + Σ_s exp(b_C − b_s) k_s u_sᵀ.
    let bc = b[c - 1];
    let e = bc.exp();
    st.iter_mut().for_each(|x| *x *= e);
    for j in 0..c {
        let w = (bc - b[j]).exp();
        for (row, &kc) in st.chunks_exact_mut(dv).zip(&k[j * dk..][..dk]) {
            let f = w * kc;
            row.iter_mut()
                .zip(&u[j * dv..][..dv])
                .for_each(|(s, &uv)| *s += f * uv);
        }
    }
}

/// GLA: a log decay per token and key channel.
fn chunk_gla(x: &Head, s: LinShape, t0: usize, c: usize, st: &mut [f32], o: &mut [f32]) {
    let (dk, dv) = (s.dk, s.dv);
    let q = &x.q[t0 * dk..(t0 + c) * dk];
    let k = &x.k[t0 * dk..(t0 + c) * dk];
    let v = &x.v[t0 * dv..(t0 + c) * dv];
    let mut b = x.g[t0 * dk..(t0 + c) * dk].to_vec();
    for t in 1..c {
        for ch in 0..dk {
            b[t * dk + ch] += b[(t - 1) * dk + ch];
        }
    }
    let bt = |t: usize| &b[t * dk..][..dk];
    // Intra-chunk scores A[t, s], s ≤ t.
    let mut a = vec![0f32; c * c];
    let mut qs = vec![0f32; dk];
    let mut ks = vec![0f32; dk];
    for i0 in (0..c).step_by(SUB) {
        let i1 = (i0 + SUB).min(c);
        for j0 in (0..i1).step_by(SUB) {
            let j1 = (j0 + SUB).min(c);
            if j0 == i0 {
                // Diagonal block: one exponent per element, each ≤ 0.
                for t in i0..i1 {
                    for j in j0..=t {
                        let mut acc = 0.0;
                        for ch in 0..dk {
                            acc += q[t * dk + ch] * k[j * dk + ch] * (bt(t)[ch] - bt(j)[ch]).exp();
                        }
                        a[t * c + j] = acc;
                    }
                }
            } else {
                // Below the diagonal: through e, the last token of the earlier sub-chunk.
                let e = bt(j1 - 1);
                for j in j0..j1 {
                    for ch in 0..dk {
                        ks[ch] = k[j * dk + ch] * (e[ch] - bt(j)[ch]).exp();
                    }
                    for t in i0..i1 {
                        for ch in 0..dk {
                            qs[ch] = q[t * dk + ch] * (bt(t)[ch] - e[ch]).exp();
                        }
                        a[t * c + j] = dot(&qs, &ks);
                    }
                }
            }
        }
    }
    // O = (Q ⊙ exp(b)) S0 + A V.
    for t in 0..c {
        for ch in 0..dk {
            qs[ch] = q[t * dk + ch] * bt(t)[ch].exp();
        }
        let ot = &mut o[t * dv..][..dv];
        read(st, &qs, ot, dv);
        for j in 0..=t {
            let w = a[t * c + j];
            ot.iter_mut()
                .zip(&v[j * dv..][..dv])
                .for_each(|(o, &vv)| *o += w * vv);
        }
    }
    // S ← diag(exp(b_C)) S0 + Σ_s diag(exp(b_C − b_s)) k_s v_sᵀ.
    let bc = bt(c - 1).to_vec();
    for (row, &e) in st.chunks_exact_mut(dv).zip(&bc) {
        let e = e.exp();
        row.iter_mut().for_each(|x| *x *= e);
    }
    for j in 0..c {
        for (ch, row) in st.chunks_exact_mut(dv).enumerate() {
            let f = k[j * dk + ch] * (bc[ch] - bt(j)[ch]).exp();
            row.iter_mut()
                .zip(&v[j * dv..][..dv])
                .for_each(|(s, &vv)| *s += f * vv);
        }
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// o = Sᵀ x.
#[inline]
fn read(st: &[f32], x: &[f32], o: &mut [f32], dv: usize) {
    o.fill(0.0);
    for (row, &xc) in st.chunks_exact(dv).zip(x) {
        o.iter_mut().zip(row).for_each(|(o, &s)| *o += xc * s);
    }
}
