//! The recurrent form: one token at a time (decode), heads across threads. Also the scalar
//! reference of every kind.

use super::{check, per_head, phi, Head, Kind, LinShape, VANILLA_EPS};
use crate::isa::{self, Isa};
use crate::pool::ThreadPool;

/// Runs `s.t` tokens through the recurrence, updating `state` (and `z` for vanilla) in place,
/// on the path `WATTLE_CPU_ISA` selects (else the best this CPU has).
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
    if super::simd::recurrent(isa, pool, q, k, v, kind, s, state, z.as_deref_mut(), out) {
        return;
    }
    per_head(pool, s, state, z, out, |h, st, z, o| {
        head(&Head::new(q, k, v, kind, s, h), kind, s, st, z, o)
    });
}

/// One head: `st [d_k, d_v]`, `o [t, d_v]`.
pub(crate) fn head(
    x: &Head,
    kind: Kind<'_>,
    s: LinShape,
    st: &mut [f32],
    z: Option<&mut [f32]>,
    o: &mut [f32],
) {
    let (dk, dv) = (s.dk, s.dv);
    let mut fq = vec![0f32; dk];
    let mut fk = vec![0f32; dk];
    let mut kv = vec![0f32; dv];
    let mut z = z;
    for t in 0..s.t {
        let (qt, kt, vt) = (
            &x.q[t * dk..][..dk],
            &x.k[t * dk..][..dk],
            &x.v[t * dv..][..dv],
        );
        let ot = &mut o[t * dv..][..dv];
        match kind {
            Kind::Vanilla => {
                fq.iter_mut().zip(qt).for_each(|(f, &q)| *f = phi(q));
                fk.iter_mut().zip(kt).for_each(|(f, &k)| *f = phi(k));
                rank1(st, &fk, vt, dv);
                let zh = z.as_deref_mut().expect("vanilla state has z");
                zh.iter_mut().zip(&fk).for_each(|(z, f)| *z += f);
                let den = zh.iter().zip(&fq).map(|(z, f)| z * f).sum::<f32>() + VANILLA_EPS;
                read(st, &fq, ot, dv);
                ot.iter_mut().for_each(|x| *x /= den);
            }
            Kind::Retention { .. } => {
                let g = x.g[t].exp();
                st.iter_mut().for_each(|x| *x *= g);
                rank1(st, kt, vt, dv);
                read(st, qt, ot, dv);
            }
            Kind::Gated { .. } => {
                for (c, row) in st.chunks_exact_mut(dv).enumerate() {
                    let g = x.g[t * dk + c].exp();
                    row.iter_mut().for_each(|x| *x *= g);
                }
                rank1(st, kt, vt, dv);
                read(st, qt, ot, dv);
            }
            Kind::GatedDelta { .. } => {
                // S ← exp(a)(S − β k (kᵀS)) + β k vᵀ.
                let (a, b) = (x.g[t].exp(), x.beta[t]);
                read(st, kt, &mut kv, dv); // kᵀS
                for (c, row) in st.chunks_exact_mut(dv).enumerate() {
                    let kc = kt[c];
                    for ((sv, &p), &vv) in row.iter_mut().zip(&kv).zip(vt) {
                        *sv = a * (*sv - b * kc * p) + b * kc * vv;
                    }
                }
                read(st, qt, ot, dv);
            }
        }
    }
}

/// S += a bᵀ.
#[inline]
fn rank1(st: &mut [f32], a: &[f32], b: &[f32], dv: usize) {
    for (row, &ac) in st.chunks_exact_mut(dv).zip(a) {
        row.iter_mut().zip(b).for_each(|(s, &bv)| *s += ac * bv);
    }
}

/// o = Sᵀ x.
#[inline]
fn read(st: &[f32], x: &[f32], o: &mut [f32], dv: usize) {
    o.fill(0.0);
    for (row, &xc) in st.chunks_exact(dv).zip(x) {
        o.iter_mut().zip(row).for_each(|(o, &s)| *o += xc * s);
    }
}
