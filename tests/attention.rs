//! `rt.attention` against an f64 naive reference (SPEC §6): GQA/MQA, causal, windows, sinks,
//! softcap, explicit key positions, q_pos0, every K/V dtype, ragged lengths; plus bad input.

mod common;

use common::*;
use wattle::{AttentionParams, DType, Device, Error, Runtime, Tensor};

struct Case {
    t_q: usize,
    h_q: usize,
    t_k: usize,
    h_kv: usize,
    d: usize,
    d_v: usize,
    kdt: DType,
    vdt: DType,
    params: AttentionParams,
    sinks: Option<Vec<f32>>,
}

fn make(dt: DType, v: &[f32], shape: &[usize]) -> (Tensor, Vec<f32>) {
    let t = Tensor::from_f32(v, shape).unwrap().quantize(dt).unwrap();
    let r = t.to_f32_vec().unwrap();
    (t, r)
}

/// Naive two-pass softmax in f64 with the SPEC §6 visibility rule.
fn reference(c: &Case, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
    let p = &c.params;
    let scale = p.scale.map_or(1.0 / (c.d as f64).sqrt(), |s| s as f64);
    let group = c.h_q / c.h_kv;
    let mut out = vec![0f64; c.t_q * c.h_q * c.d_v];
    for i in 0..c.t_q {
        let pos = (p.q_pos0 + i) as i64;
        for h in 0..c.h_q {
            let g = h / group;
            let mut logits: Vec<(usize, f64)> = Vec::new();
            for j in 0..c.t_k {
                let kp = p.key_positions.as_ref().map_or(j as i64, |kp| kp[j] as i64);
                let vis = (!p.causal || kp <= pos) && p.window.is_none_or(|w| pos - kp < w as i64);
                if !vis {
                    continue;
                }
                let mut s = 0f64;
                for l in 0..c.d {
                    s += q[(i * c.h_q + h) * c.d + l] as f64 * k[(j * c.h_kv + g) * c.d + l] as f64;
                }
                s *= scale;
                if let Some(cap) = p.softcap {
                    s = cap as f64 * (s / cap as f64).tanh();
                }
                logits.push((j, s));
            }
            let sink = c.sinks.as_ref().map(|s| s[h] as f64);
            let max = logits
                .iter()
                .map(|x| x.1)
                .chain(sink)
                .fold(f64::NEG_INFINITY, f64::max);
            if logits.is_empty() {
                continue;
            }
            let den: f64 = logits.iter().map(|x| (x.1 - max).exp()).sum::<f64>()
                + sink.map_or(0.0, |s| (s - max).exp());
            for (j, s) in logits {
                let w = (s - max).exp() / den;
                for l in 0..c.d_v {
                    out[(i * c.h_q + h) * c.d_v + l] += w * v[(j * c.h_kv + g) * c.d_v + l] as f64;
                }
            }
        }
    }
    out
}

fn run(rt: &Runtime, dev: &Device, c: &Case, seed: u64) -> Result<f64, Error> {
    let mut rng = Rng::new(seed);
    let q: Vec<f32> = rng
        .vec(c.t_q * c.h_q * c.d)
        .iter()
        .map(|x| x * 2.0)
        .collect();
    let (kt, k) = make(c.kdt, &rng.vec(c.t_k * c.h_kv * c.d), &[c.t_k, c.h_kv, c.d]);
    let (vt, v) = make(
        c.vdt,
        &rng.vec(c.t_k * c.h_kv * c.d_v),
        &[c.t_k, c.h_kv, c.d_v],
    );
    let qt = Tensor::from_f32(&q, &[c.t_q, c.h_q, c.d])
        .unwrap()
        .to(dev)?;
    let (kt, vt) = (kt.to(dev)?, vt.to(dev)?);
    let mut params = c.params.clone();
    params.sinks = c
        .sinks
        .as_ref()
        .map(|s| Tensor::from_f32(s, &[c.h_q]).unwrap());
    let o = rt.attention(&qt, &kt, &vt, &params)?;
    assert_eq!(o.shape(), &[c.t_q, c.h_q, c.d_v]);
    let out = o.to_f32_vec()?;
    assert!(out.iter().all(|x| x.is_finite()), "non-finite output");
    Ok(nmse(&reference(c, &q, &k, &v), &out))
}

fn cases() -> Vec<(String, Case)> {
    let mut v = Vec::new();
    let base = |t_q, t_k, h_q, h_kv, d, dt: DType, params: AttentionParams| Case {
        t_q,
        h_q,
        t_k,
        h_kv,
        d,
        d_v: d,
        kdt: dt,
        vdt: dt,
        params,
        sinks: None,
    };
    for dt in [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0] {
        for d in [64, 80, 96, 128, 256] {
            if d % dt.block_size() != 0 {
                continue; // Q8_0/Q4_0 rows are whole 32-blocks: d = 80 is F32/F16 only.
            }
            v.push((
                format!("{dt} d={d} decode gqa"),
                base(
                    1,
                    300,
                    8,
                    2,
                    d,
                    dt,
                    AttentionParams {
                        q_pos0: 299,
                        ..AttentionParams::causal()
                    },
                ),
            ));
        }
        for (t_q, t_k, q0) in [
            (1, 1, 0),
            (17, 17, 0),
            (5, 1000, 995),
            (33, 700, 667),
            (70, 70, 0),
        ] {
            let p = AttentionParams {
                q_pos0: q0,
                ..AttentionParams::causal()
            };
            v.push((
                format!("{dt} causal t_q={t_q} t_k={t_k}"),
                base(t_q, t_k, 4, 1, 64, dt, p),
            ));
        }
        for w in [1, 2, 5, 64, 100_000] {
            let p = AttentionParams {
                window: Some(w),
                q_pos0: 250,
                ..AttentionParams::causal()
            };
            v.push((format!("{dt} window {w}"), base(9, 259, 6, 3, 64, dt, p)));
        }
        let mut c = base(
            3,
            150,
            4,
            2,
            128,
            dt,
            AttentionParams {
                q_pos0: 147,
                window: Some(16),
                ..AttentionParams::causal()
            },
        );
        c.sinks = Some(vec![0.5, -1.0, 3.0, 0.0]);
        v.push((format!("{dt} sinks+window"), c));
        let c = base(
            4,
            90,
            2,
            2,
            64,
            dt,
            AttentionParams {
                softcap: Some(5.0),
                scale: Some(0.3),
                ..Default::default()
            },
        );
        v.push((format!("{dt} non-causal softcap scale"), c));
        // A rolling cache: keys stored out of order, some evicted.
        let kp: Vec<u32> = (0..120u32).map(|j| (j * 37) % 131 + 10).collect();
        let p = AttentionParams {
            key_positions: Some(kp),
            q_pos0: 100,
            window: Some(60),
            ..AttentionParams::causal()
        };
        v.push((format!("{dt} key positions"), base(7, 120, 4, 1, 96, dt, p)));
    }
    // Mixed K/V dtypes and a different value dimension.
    let mut c = base(2, 77, 4, 2, 64, DType::Q8_0, AttentionParams::causal());
    c.vdt = DType::F16;
    c.d_v = 128;
    c.params.q_pos0 = 75;
    v.push(("k q8_0 v f16 d_v=128".into(), c));
    // Nothing visible: zeros (with and without a sink).
    let mut c = base(
        2,
        5,
        2,
        1,
        64,
        DType::F16,
        AttentionParams {
            q_pos0: 0,
            ..AttentionParams::causal()
        },
    );
    c.params.key_positions = Some(vec![10, 11, 12, 13, 14]);
    v.push(("nothing visible".into(), c));
    v
}

#[test]
fn attention_matches_f64_reference_on_every_device() {
    let rt = Runtime::new().unwrap();
    let mut failures = Vec::new();
    for dev in devices_under_test(&rt) {
        for (seed, (name, c)) in cases().into_iter().enumerate() {
            match run(&rt, &dev, &c, seed as u64) {
                Ok(e) if e <= 5e-4 => {}
                Ok(e) => failures.push(format!("{name} on {dev}: NMSE {e:.3e}")),
                Err(e) => failures.push(format!("{name} on {dev}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_attention_input_is_refused() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let t = |s: &[usize]| Tensor::from_f32(&vec![0.1; s.iter().product()], s).unwrap();
    let p = AttentionParams::causal();
    let (q, k, v) = (t(&[2, 4, 64]), t(&[5, 2, 64]), t(&[5, 2, 64]));
    assert!(rt.attention(&q, &k, &v, &p).is_ok());
    let shape = |r: Result<Tensor, Error>| matches!(r, Err(Error::ShapeMismatch { .. }));
    assert!(
        shape(rt.attention(&t(&[2, 3, 64]), &k, &v, &p)),
        "h_q not a multiple of h_kv"
    );
    assert!(
        shape(rt.attention(&q, &t(&[5, 2, 32]), &v, &p)),
        "d mismatch"
    );
    assert!(
        shape(rt.attention(&q, &k, &t(&[4, 2, 64]), &p)),
        "t_k mismatch"
    );
    assert!(shape(rt.attention(&t(&[2, 256]), &k, &v, &p)), "rank");
    let bad_kp = AttentionParams {
        key_positions: Some(vec![0; 4]),
        ..p.clone()
    };
    assert!(shape(rt.attention(&q, &k, &v, &bad_kp)));
    let bad_sinks = AttentionParams {
        sinks: Some(t(&[3])),
        ..p.clone()
    };
    assert!(shape(rt.attention(&q, &k, &v, &bad_sinks)));
    let w0 = AttentionParams {
        window: Some(0),
        ..p.clone()
    };
    assert!(matches!(
        rt.attention(&q, &k, &v, &w0),
        Err(Error::InvalidArgument(_))
    ));
    let kq = t(&[5, 2, 64]).quantize(DType::Q4_K);
    assert!(matches!(kq, Err(Error::BadBlockAlignment { .. })));
    let kb = t(&[5, 2, 64]).quantize(DType::BF16).unwrap();
    assert!(matches!(
        rt.attention(&q, &kb, &v, &p),
        Err(Error::UnsupportedDType { .. })
    ));
}

/// A prefill long enough that one key split per workgroup would walk more key tiles than
/// llvmpipe's per-invocation loop limit allows (it cuts such loops short, silently): GPUs give
/// the CPU's result. 512 queries × 2048 keys, 9/3 heads of 64 (SmolLM2's shape).
#[test]
fn long_gpu_prefill_equals_the_cpu() {
    let rt = Runtime::new().unwrap();
    let (t_q, t_k, h_q, h_kv, d) = (512, 2048, 9, 3, 64);
    let mut r = Rng::new(5);
    let q = Tensor::from_f32(&r.vec(t_q * h_q * d), &[t_q, h_q, d]).unwrap();
    let kv = |r: &mut Rng| {
        Tensor::from_f32(&r.vec(t_k * h_kv * d), &[t_k, h_kv, d])
            .unwrap()
            .quantize(DType::F16)
            .unwrap()
    };
    let (k, v) = (kv(&mut r), kv(&mut r));
    let p = AttentionParams {
        q_pos0: t_k - t_q,
        ..AttentionParams::causal()
    };
    let want = rt.attention(&q, &k, &v, &p).unwrap().to_f32_vec().unwrap();
    let want64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
    for dev in rt.gpus() {
        let on = |t: &Tensor| t.to(&dev).unwrap();
        let got = rt
            .attention(&on(&q), &on(&k), &on(&v), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let e = nmse(&want64, &got);
        assert!(e < 1e-8, "{dev}: NMSE {e}");
    }
}
