//! `rt.linear_attention` through the public API: forms agree, state streams (vanilla's z
//! included), bad input is refused with typed errors.

mod common;

use common::*;
use wattle::{Error, LinearAttention, LinearForm, Runtime, Tensor};

fn t(v: Vec<f32>, s: &[usize]) -> Tensor {
    Tensor::from_f32(&v, s).unwrap()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f32 = a.iter().map(|x| x * x).sum();
    (num / den).sqrt()
}

#[test]
fn forms_agree_and_state_streams() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let (n, h, dk, dv) = (150, 2, 8, 6);
    let mut r = Rng::new(9);
    let (q, k, v) = (r.vec(n * h * dk), r.vec(n * h * dk), r.vec(n * h * dv));
    let gates: Vec<f32> = r.vec(n * h * dk).iter().map(|x| -x.abs() * 0.2).collect();
    let beta: Vec<f32> = r.vec(n * h).iter().map(|x| x.abs()).collect();
    let a: Vec<f32> = r.vec(n * h).iter().map(|x| -x.abs() * 0.1).collect();
    let kinds = [
        LinearAttention::Vanilla,
        LinearAttention::Retention {
            gamma: vec![0.9, 0.99],
        },
        LinearAttention::Gated {
            log_decay: t(gates.clone(), &[n, h, dk]),
        },
        LinearAttention::GatedDelta {
            beta: t(beta.clone(), &[n, h]),
            log_decay: t(a.clone(), &[n, h]),
        },
    ];
    for kind in &kinds {
        let (qt, kt, vt) = (
            t(q.clone(), &[n, h, dk]),
            t(k.clone(), &[n, h, dk]),
            t(v.clone(), &[n, h, dv]),
        );
        let (o1, s1) = rt
            .linear_attention_with(&qt, &kt, &vt, kind, None, LinearForm::Recurrent)
            .unwrap();
        let (o2, s2) = rt
            .linear_attention_with(&qt, &kt, &vt, kind, None, LinearForm::Chunked)
            .unwrap();
        let cols = if matches!(kind, LinearAttention::Vanilla) {
            dv + 1
        } else {
            dv
        };
        assert_eq!(s1.shape(), &[h, dk, cols]);
        assert!(
            rel(&o1.to_f32_vec().unwrap(), &o2.to_f32_vec().unwrap()) < 5e-3,
            "{kind:?}"
        );
        assert!(
            rel(&s1.to_f32_vec().unwrap(), &s2.to_f32_vec().unwrap()) < 5e-3,
            "{kind:?}"
        );
        // Two halves with the state carried = one call.
        let m = 61;
        let half = |x: &[f32], d: usize, a: usize, b: usize| {
            t(x[a * h * d..b * h * d].to_vec(), &[b - a, h, d])
        };
        let kind_a = match kind {
            LinearAttention::Gated { .. } => LinearAttention::Gated {
                log_decay: half(&gates, dk, 0, m),
            },
            LinearAttention::GatedDelta { .. } => LinearAttention::GatedDelta {
                beta: t(beta[..m * h].to_vec(), &[m, h]),
                log_decay: t(a[..m * h].to_vec(), &[m, h]),
            },
            other => other.clone(),
        };
        let kind_b = match kind {
            LinearAttention::Gated { .. } => LinearAttention::Gated {
                log_decay: half(&gates, dk, m, n),
            },
            LinearAttention::GatedDelta { .. } => LinearAttention::GatedDelta {
                beta: t(beta[m * h..].to_vec(), &[n - m, h]),
                log_decay: t(a[m * h..].to_vec(), &[n - m, h]),
            },
            other => other.clone(),
        };
        let (pa, sa) = rt
            .linear_attention(
                &half(&q, dk, 0, m),
                &half(&k, dk, 0, m),
                &half(&v, dv, 0, m),
                &kind_a,
                None,
            )
            .unwrap();
        let (pb, sb) = rt
            .linear_attention(
                &half(&q, dk, m, n),
                &half(&k, dk, m, n),
                &half(&v, dv, m, n),
                &kind_b,
                Some(&sa),
            )
            .unwrap();
        let mut parts = pa.to_f32_vec().unwrap();
        parts.extend(pb.to_f32_vec().unwrap());
        assert!(
            rel(&o1.to_f32_vec().unwrap(), &parts) < 5e-3,
            "{kind:?} streaming"
        );
        assert!(
            rel(&s1.to_f32_vec().unwrap(), &sb.to_f32_vec().unwrap()) < 5e-3,
            "{kind:?} state"
        );
    }
}

#[test]
fn bad_linear_attention_input_is_refused() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let (q, k, v) = (
        t(vec![0.1; 4 * 2 * 8], &[4, 2, 8]),
        t(vec![0.1; 4 * 2 * 8], &[4, 2, 8]),
        t(vec![0.1; 4 * 2 * 3], &[4, 2, 3]),
    );
    let ok = LinearAttention::Retention {
        gamma: vec![0.5, 1.0],
    };
    assert!(rt.linear_attention(&q, &k, &v, &ok, None).is_ok());
    let bad_gamma = LinearAttention::Retention {
        gamma: vec![0.0, 1.0],
    };
    assert!(matches!(
        rt.linear_attention(&q, &k, &v, &bad_gamma, None),
        Err(Error::InvalidArgument(_))
    ));
    let short = LinearAttention::Retention { gamma: vec![0.5] };
    assert!(matches!(
        rt.linear_attention(&q, &k, &v, &short, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let pos = LinearAttention::Gated {
        log_decay: t(vec![0.1; 4 * 2 * 8], &[4, 2, 8]),
    };
    assert!(matches!(
        rt.linear_attention(&q, &k, &v, &pos, None),
        Err(Error::InvalidArgument(_))
    ));
    let wrong = LinearAttention::GatedDelta {
        beta: t(vec![0.5; 8], &[4, 2]),
        log_decay: t(vec![-0.1; 4], &[4, 1]),
    };
    assert!(matches!(
        rt.linear_attention(&q, &k, &v, &wrong, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let state = t(vec![0.0; 2 * 8 * 3], &[2, 8, 3]);
    assert!(matches!(
        rt.linear_attention(&q, &k, &v, &LinearAttention::Vanilla, Some(&state)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        rt.linear_attention(&q, &k, &t(vec![0.1; 3 * 2 * 3], &[3, 2, 3]), &ok, None),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn l2_rows(mut x: Vec<f32>, d: usize) -> Vec<f32> {
    for r in x.chunks_exact_mut(d) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        r.iter_mut().for_each(|v| *v /= n);
    }
    x
}

/// The WGSL kernels on every adapter, both forms, every kind, against the CPU's recurrent form
/// (itself within 1e-5 of the f64 recurrence): d_k ≠ d_v, two column tiles (d_v 80), lengths
/// not multiples of 64, decays near 0 and near 1, β = 0 and β = 1, F16 operands, streaming in
/// two calls, and a call longer than one submission piece (1100 tokens).
#[test]
fn gpu_kernels_match_the_cpu() {
    let rt = Runtime::new().unwrap();
    let gpus = rt.gpus();
    if gpus.is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!("no GPU adapter found (set WATTLE_ALLOW_NO_GPU=1 to allow)");
    }
    let mut r = Rng::new(21);
    for (n, h, dk, dv) in [
        (150, 2, 24, 80),
        (70, 1, 96, 16),
        (1100, 1, 16, 8),
        (200, 1, 256, 8),
    ] {
        let (q, k, v) = (r.vec(n * h * dk), r.vec(n * h * dk), r.vec(n * h * dv));
        let kn = l2_rows(k.clone(), dk);
        // Log decays spanning near 0 (no decay) to strong decay; β spanning 0..1 with exact 0
        // and 1.
        let gates: Vec<f32> = (0..n * h * dk)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => -1e-4,
                _ => -(r.uniform().abs() * 2.0),
            })
            .collect();
        let beta: Vec<f32> = (0..n * h)
            .map(|i| match i % 4 {
                0 => 0.0,
                1 => 1.0,
                _ => r.uniform().abs(),
            })
            .collect();
        let a: Vec<f32> = (0..n * h)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    -r.uniform().abs() * 0.5
                }
            })
            .collect();
        let mut kinds = vec![
            (
                LinearAttention::Retention {
                    gamma: (0..h).map(|i| [0.999, 0.5][i % 2]).collect(),
                },
                k.clone(),
            ),
            (
                LinearAttention::GatedDelta {
                    beta: t(beta.clone(), &[n, h]),
                    log_decay: t(a.clone(), &[n, h]),
                },
                kn.clone(),
            ),
        ];
        if n < 1000 {
            kinds.push((LinearAttention::Vanilla, k.clone()));
            kinds.push((
                LinearAttention::Gated {
                    log_decay: t(gates.clone(), &[n, h, dk]),
                },
                k.clone(),
            ));
        }
        for (kind, keys) in &kinds {
            let (qt, kt, vt) = (
                t(q.clone(), &[n, h, dk]),
                t(keys.clone(), &[n, h, dk]),
                t(v.clone(), &[n, h, dv]),
            );
            let (want_o, want_s) = rt
                .linear_attention_with(&qt, &kt, &vt, kind, None, LinearForm::Recurrent)
                .unwrap();
            let (want_o, want_s) = (want_o.to_f32_vec().unwrap(), want_s.to_f32_vec().unwrap());
            for dev in &gpus {
                let on = |x: &Tensor| x.to(dev).unwrap();
                let gk = match kind {
                    LinearAttention::Gated { log_decay } => LinearAttention::Gated {
                        log_decay: on(log_decay),
                    },
                    LinearAttention::GatedDelta { beta, log_decay } => {
                        LinearAttention::GatedDelta {
                            beta: on(beta),
                            log_decay: on(log_decay),
                        }
                    }
                    other => other.clone(),
                };
                for (form, tol) in [(LinearForm::Recurrent, 2e-5), (LinearForm::Chunked, 5e-3)] {
                    for f16 in [false, true] {
                        let cast = |x: &Tensor| {
                            if f16 {
                                on(&x.quantize(wattle::DType::F16).unwrap())
                            } else {
                                on(x)
                            }
                        };
                        // F16 operands round q, k, v: compare with the CPU on the same values.
                        let (wo, ws) = if f16 {
                            let c = |x: &Tensor| x.quantize(wattle::DType::F16).unwrap();
                            let (o, s) = rt
                                .linear_attention_with(
                                    &c(&qt),
                                    &c(&kt),
                                    &c(&vt),
                                    kind,
                                    None,
                                    LinearForm::Recurrent,
                                )
                                .unwrap();
                            (o.to_f32_vec().unwrap(), s.to_f32_vec().unwrap())
                        } else {
                            (want_o.clone(), want_s.clone())
                        };
                        let (o, s) = rt
                            .linear_attention_with(
                                &cast(&qt),
                                &cast(&kt),
                                &cast(&vt),
                                &gk,
                                None,
                                form,
                            )
                            .unwrap();
                        assert_eq!(o.device(), *dev);
                        let (o, s) = (o.to_f32_vec().unwrap(), s.to_f32_vec().unwrap());
                        let what =
                            format!("{dev} {kind:?} {form:?} f16 {f16} n {n} dk {dk} dv {dv}");
                        assert!(rel(&wo, &o) < tol, "{what}: output {}", rel(&wo, &o));
                        assert!(rel(&ws, &s) < tol, "{what}: state {}", rel(&ws, &s));
                    }
                }
                // Streaming: two calls with the state carried on the device.
                if n < 1000 {
                    let m = 67;
                    let part = |x: &[f32], d: usize, a: usize, b: usize| {
                        on(&t(x[a * h * d..b * h * d].to_vec(), &[b - a, h, d]))
                    };
                    let piece = |a0: usize, b0: usize| match kind {
                        LinearAttention::Gated { .. } => LinearAttention::Gated {
                            log_decay: part(&gates, dk, a0, b0),
                        },
                        LinearAttention::GatedDelta { .. } => LinearAttention::GatedDelta {
                            beta: on(&t(beta[a0 * h..b0 * h].to_vec(), &[b0 - a0, h])),
                            log_decay: on(&t(a[a0 * h..b0 * h].to_vec(), &[b0 - a0, h])),
                        },
                        other => other.clone(),
                    };
                    let (pa, sa) = rt
                        .linear_attention(
                            &part(&q, dk, 0, m),
                            &part(keys, dk, 0, m),
                            &part(&v, dv, 0, m),
                            &piece(0, m),
                            None,
                        )
                        .unwrap();
                    let (pb, sb) = rt
                        .linear_attention(
                            &part(&q, dk, m, n),
                            &part(keys, dk, m, n),
                            &part(&v, dv, m, n),
                            &piece(m, n),
                            Some(&sa),
                        )
                        .unwrap();
                    let mut o = pa.to_f32_vec().unwrap();
                    o.extend(pb.to_f32_vec().unwrap());
                    let what = format!("{dev} {kind:?} streamed");
                    assert!(rel(&want_o, &o) < 5e-3, "{what}: {}", rel(&want_o, &o));
                    let s = sb.to_f32_vec().unwrap();
                    assert!(rel(&want_s, &s) < 5e-3, "{what}: state");
                }
            }
        }
    }
}
