//! Linear attention: recurrent and chunked forms against an f64 recurrent reference (SPEC §7:
//! rms(ref − out)/rms(ref) ≤ 5e-3 chunked over 8192 tokens, ≤ 1e-5 recurrent), decays near 0
//! and 1, β = 0 and 1, d_k ≠ d_v, lengths not multiples of 64, and streaming equivalence.

use wattle_kernels::isa::Isa;
use wattle_kernels::linear_attn::{chunked, phi, recurrent, Kind, LinShape};
use wattle_kernels::pool::ThreadPool;

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn sym(&mut self) -> f32 {
        self.uniform() * 2.0 - 1.0
    }
}

#[derive(Clone)]
struct Inputs {
    s: LinShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    gamma: Vec<f32>,
    gla: Vec<f32>,
    beta: Vec<f32>,
    a: Vec<f32>,
}

#[derive(Clone, Copy, Debug)]
enum K {
    Vanilla,
    Retention,
    Gated,
    Delta,
}

fn inputs(s: LinShape, seed: u64, decay: f32) -> Inputs {
    let mut r = Rng(seed | 1);
    let n = |len: usize, r: &mut Rng| (0..len).map(|_| r.sym()).collect::<Vec<f32>>();
    let q = n(s.t * s.h * s.dk, &mut r);
    let mut k = n(s.t * s.h * s.dk, &mut r);
    // L2-normalised keys (the delta rule's contract; harmless for the others).
    for row in k.chunks_exact_mut(s.dk) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let v = n(s.t * s.h * s.dv, &mut r);
    let gamma = (0..s.h)
        .map(|h| {
            if h % 2 == 0 {
                1.0 - 1e-4
            } else {
                (-decay).exp()
            }
        })
        .collect();
    let gla = (0..s.t * s.h * s.dk)
        .map(|i| {
            if i % 3 == 0 {
                -1e-5
            } else {
                -decay * r.uniform()
            }
        })
        .collect();
    let beta = (0..s.t * s.h)
        .map(|i| match i % 7 {
            0 => 0.0,
            1 => 1.0,
            _ => r.uniform(),
        })
        .collect();
    let a = (0..s.t * s.h)
        .map(|i| {
            if i % 5 == 0 {
                0.0
            } else {
                -decay * r.uniform()
            }
        })
        .collect();
    Inputs {
        s,
        q,
        k,
        v,
        gamma,
        gla,
        beta,
        a,
    }
}

fn kind<'a>(x: &'a Inputs, k: K) -> Kind<'a> {
    match k {
        K::Vanilla => Kind::Vanilla,
        K::Retention => Kind::Retention { gamma: &x.gamma },
        K::Gated => Kind::Gated { log_decay: &x.gla },
        K::Delta => Kind::GatedDelta {
            beta: &x.beta,
            log_decay: &x.a,
        },
    }
}

/// f64 recurrent reference: output [t, h, dv].
fn reference(x: &Inputs, kk: K) -> Vec<f64> {
    let s = x.s;
    let (dk, dv) = (s.dk, s.dv);
    let mut out = vec![0f64; s.t * s.h * s.dv];
    for h in 0..s.h {
        let mut st = vec![0f64; dk * dv];
        let mut z = vec![0f64; dk];
        for t in 0..s.t {
            let idx = |i: usize, d: usize| (t * s.h + h) * d + i;
            let q: Vec<f64> = (0..dk).map(|i| x.q[idx(i, dk)] as f64).collect();
            let k: Vec<f64> = (0..dk).map(|i| x.k[idx(i, dk)] as f64).collect();
            let v: Vec<f64> = (0..dv).map(|i| x.v[idx(i, dv)] as f64).collect();
            let (q, k) = match kk {
                K::Vanilla => (
                    q.iter().map(|&a| phi(a as f32) as f64).collect::<Vec<_>>(),
                    k.iter().map(|&a| phi(a as f32) as f64).collect::<Vec<_>>(),
                ),
                _ => (q, k),
            };
            match kk {
                K::Vanilla => {
                    for c in 0..dk {
                        z[c] += k[c];
                    }
                }
                K::Retention => st.iter_mut().for_each(|a| *a *= x.gamma[h] as f64),
                K::Gated => {
                    for c in 0..dk {
                        let g = (x.gla[idx(c, dk)] as f64).exp();
                        st[c * dv..(c + 1) * dv].iter_mut().for_each(|a| *a *= g);
                    }
                }
                K::Delta => {
                    let (a, b) = ((x.a[t * s.h + h] as f64).exp(), x.beta[t * s.h + h] as f64);
                    let ks: Vec<f64> = (0..dv)
                        .map(|j| (0..dk).map(|c| k[c] * st[c * dv + j]).sum())
                        .collect();
                    for c in 0..dk {
                        for j in 0..dv {
                            st[c * dv + j] = a * (st[c * dv + j] - b * k[c] * ks[j]);
                        }
                    }
                }
            }
            let w = if let K::Delta = kk {
                x.beta[t * s.h + h] as f64
            } else {
                1.0
            };
            for c in 0..dk {
                for j in 0..dv {
                    st[c * dv + j] += w * k[c] * v[j];
                }
            }
            let den = if let K::Vanilla = kk {
                (0..dk).map(|c| z[c] * q[c]).sum::<f64>() + 1e-6
            } else {
                1.0
            };
            for j in 0..dv {
                out[(t * s.h + h) * dv + j] =
                    (0..dk).map(|c| st[c * dv + j] * q[c]).sum::<f64>() / den;
            }
        }
    }
    out
}

fn rel_rms(r: &[f64], o: &[f32]) -> f64 {
    let num: f64 = r.iter().zip(o).map(|(a, &b)| (a - b as f64).powi(2)).sum();
    let den: f64 = r.iter().map(|a| a * a).sum();
    (num / den).sqrt()
}

type Form = fn(
    Isa,
    &ThreadPool,
    &[f32],
    &[f32],
    &[f32],
    Kind<'_>,
    LinShape,
    &mut [f32],
    Option<&mut [f32]>,
    &mut [f32],
);

fn run(
    form: Form,
    isa: Isa,
    pool: &ThreadPool,
    x: &Inputs,
    kk: K,
    state: &mut [f32],
    z: &mut [f32],
) -> Vec<f32> {
    let s = x.s;
    let mut out = vec![0f32; s.t * s.h * s.dv];
    let zz = matches!(kk, K::Vanilla).then_some(z);
    form(
        isa,
        pool,
        &x.q,
        &x.k,
        &x.v,
        kind(x, kk),
        s,
        state,
        zz,
        &mut out,
    );
    out
}

#[test]
fn both_forms_match_the_f64_recurrence() {
    let pool = ThreadPool::new(2);
    let s = LinShape {
        t: 8192 + 37,
        h: 2,
        dk: 16,
        dv: 24,
    };
    for decay in [1e-3f32, 0.5] {
        let x = inputs(s, 42, decay);
        for kk in [K::Vanilla, K::Retention, K::Gated, K::Delta] {
            let r = reference(&x, kk);
            for (name, form, tol) in [
                ("recurrent", recurrent::run_isa as Form, 1e-5),
                ("chunked", chunked::run_isa as Form, 5e-3),
            ] {
                for isa in Isa::supported() {
                    let mut st = vec![0f32; s.h * s.dk * s.dv];
                    let mut z = vec![0f32; s.h * s.dk];
                    let out = run(form, isa, &pool, &x, kk, &mut st, &mut z);
                    let e = rel_rms(&r, &out);
                    assert!(
                        e <= tol,
                        "{kk:?} {name} {isa} decay {decay}: rel rms {e:.3e} > {tol:.0e}"
                    );
                }
            }
        }
    }
}

#[test]
fn streaming_in_pieces_equals_one_call() {
    let pool = ThreadPool::new(3);
    let s = LinShape {
        t: 200,
        h: 3,
        dk: 8,
        dv: 5,
    };
    let x = inputs(s, 7, 0.1);
    let split = |x: &Inputs, a: usize, b: usize| -> Inputs {
        let sl = |v: &Vec<f32>, d: usize| v[a * s.h * d..b * s.h * d].to_vec();
        Inputs {
            s: LinShape { t: b - a, ..s },
            q: sl(&x.q, s.dk),
            k: sl(&x.k, s.dk),
            v: sl(&x.v, s.dv),
            gamma: x.gamma.clone(),
            gla: sl(&x.gla, s.dk),
            beta: sl(&x.beta, 1),
            a: sl(&x.a, 1),
        }
    };
    for kk in [K::Vanilla, K::Retention, K::Gated, K::Delta] {
        for (form, isa) in [recurrent::run_isa as Form, chunked::run_isa as Form]
            .into_iter()
            .flat_map(|f| Isa::supported().into_iter().map(move |i| (f, i)))
        {
            let (mut st, mut z) = (vec![0f32; s.h * s.dk * s.dv], vec![0f32; s.h * s.dk]);
            let whole = run(form, isa, &pool, &x, kk, &mut st, &mut z);
            let (mut st2, mut z2) = (vec![0f32; s.h * s.dk * s.dv], vec![0f32; s.h * s.dk]);
            let mut parts = run(form, isa, &pool, &split(&x, 0, 77), kk, &mut st2, &mut z2);
            parts.extend(run(
                form,
                isa,
                &pool,
                &split(&x, 77, 200),
                kk,
                &mut st2,
                &mut z2,
            ));
            let r: Vec<f64> = whole.iter().map(|&v| v as f64).collect();
            assert!(
                rel_rms(&r, &parts) < 1e-5,
                "{kk:?} {isa}: streaming differs"
            );
            let rs: Vec<f64> = st.iter().map(|&v| v as f64).collect();
            assert!(
                rel_rms(&rs, &st2) < 1e-5,
                "{kk:?} {isa}: final state differs"
            );
        }
    }
}

/// Every vector path of both forms against the scalar reference of the same form: awkward
/// shapes (lengths not multiples of 64, d_k ≠ d_v, dimensions not multiples of any lane
/// count, one token), decays near 1 and near 0, β = 0 and 1, a non-zero incoming state.
#[test]
fn every_isa_matches_the_scalar_reference() {
    let pool = ThreadPool::new(2);
    let shapes = [
        (1, 4, 128, 128),
        (63, 2, 16, 16),
        (130, 3, 20, 36),
        (200, 2, 7, 5),
        (65, 1, 33, 17),
        (64, 2, 128, 64),
        (150, 2, 64, 128),
    ];
    for (t, h, dk, dv) in shapes {
        let s = LinShape { t, h, dk, dv };
        for (seed, decay) in [(3u64, 1e-4f32), (5, 0.5), (9, 20.0)] {
            let x = inputs(s, seed, decay);
            let mut r = Rng(seed * 7 + 1);
            let st0: Vec<f32> = (0..h * dk * dv).map(|_| 0.1 * r.sym()).collect();
            let z0: Vec<f32> = (0..h * dk).map(|_| r.uniform()).collect();
            for kk in [K::Vanilla, K::Retention, K::Gated, K::Delta] {
                for (name, form) in [
                    ("recurrent", recurrent::run_isa as Form),
                    ("chunked", chunked::run_isa as Form),
                ] {
                    let (mut st, mut z) = (st0.clone(), z0.clone());
                    let want = run(form, Isa::Scalar, &pool, &x, kk, &mut st, &mut z);
                    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    let want_st: Vec<f64> = st.iter().chain(&z).map(|&v| v as f64).collect();
                    for isa in Isa::supported().into_iter().filter(|&i| i != Isa::Scalar) {
                        let (mut st, mut z) = (st0.clone(), z0.clone());
                        let got = run(form, isa, &pool, &x, kk, &mut st, &mut z);
                        let got_st: Vec<f32> = st.iter().chain(&z).copied().collect();
                        let e = rel_rms(&want, &got);
                        let es = rel_rms(&want_st, &got_st);
                        let case = format!("{kk:?} {name} {isa} {s:?} decay {decay}");
                        assert!(
                            got.iter().all(|v| v.is_finite()),
                            "{case}: non-finite output"
                        );
                        assert!(e <= 1e-4, "{case}: output rel rms {e:.3e}");
                        assert!(es <= 1e-4, "{case}: state rel rms {es:.3e}");
                    }
                }
            }
        }
    }
}
