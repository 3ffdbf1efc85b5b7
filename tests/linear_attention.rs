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
