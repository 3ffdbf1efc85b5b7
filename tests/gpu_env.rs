//! The environment switches of the GPU backend: `WATTLE_GPU_NO_SUBGROUPS`, `WATTLE_GPU_NO_F16`
//! and `WATTLE_GPU_MAX_BINDING_BYTES`, read when the devices are opened. One test function, as
//! the environment is process-wide.

use wattle::internals::Reduce;
use wattle::internals::{gpu_chunk_count, gpu_matmul_choice};
use wattle::{
    AttentionParams, DType, Error, Eviction, KvCache, KvCacheConfig, KvFormat, LinearAttention,
    LinearForm, Runtime, Tensor,
};

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect()
}

#[test]
fn switches_force_fallbacks_and_splits() {
    std::env::set_var("WATTLE_GPU_MAX_BINDING_BYTES", "nonsense");
    assert!(matches!(Runtime::new(), Err(Error::InvalidArgument(_))));

    std::env::set_var("WATTLE_GPU_NO_SUBGROUPS", "1");
    std::env::set_var("WATTLE_GPU_NO_F16", "1");
    std::env::set_var("WATTLE_GPU_MAX_BINDING_BYTES", "2048");
    let rt = Runtime::new().unwrap();
    let gpus = rt.gpus();
    if gpus.is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!("no GPU adapter found (set WATTLE_ALLOW_NO_GPU=1 to allow)");
    }
    let (m, n, k) = (10, 50, 40);
    let xv = values(m * k);
    let wv = values(n * k);
    let x = Tensor::from_f32(&xv, &[m, k])
        .unwrap()
        .quantize(DType::F16)
        .unwrap();
    let w = Tensor::from_f32(&wv, &[n, k])
        .unwrap()
        .quantize(DType::F16)
        .unwrap();
    let want = rt.matmul(&x, &w).unwrap().to_f32_vec().unwrap();
    for dev in gpus {
        for mm in [1, 9] {
            let v = gpu_matmul_choice(&dev, mm, DType::F16, DType::F16).unwrap();
            assert_eq!(v.reduce, Reduce::Workgroup, "{dev}");
            assert!(!v.f16_math, "{dev}");
        }
        let wg = w.to(&dev).unwrap();
        // 50 rows × 80 bytes in 2 KiB bindings.
        assert_eq!(gpu_chunk_count(&wg), Some(2));
        let y = rt.matmul(&x.to(&dev).unwrap(), &wg).unwrap();
        let got = y.to_f32_vec().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{dev}: {a} vs {b}");
        }
        // Attention without subgroups and native f16 (workgroup-walk statistics, unpacked
        // halves) equals the CPU's.
        let (t_q, h_q, t_k, h_kv, d) = (3, 4, 15, 2, 32); // each operand under 2 KiB
        let q = Tensor::from_f32(&values(t_q * h_q * d), &[t_q, h_q, d]).unwrap();
        let kv = |shift: usize| {
            let v: Vec<f32> = values(t_k * h_kv * d + shift)[shift..].to_vec();
            Tensor::from_f32(&v, &[t_k, h_kv, d])
                .unwrap()
                .quantize(DType::F16)
                .unwrap()
        };
        let (k, v) = (kv(0), kv(7));
        let p = AttentionParams {
            q_pos0: t_k - t_q,
            ..AttentionParams::causal()
        };
        let want = rt.attention(&q, &k, &v, &p).unwrap().to_f32_vec().unwrap();
        let on = |t: &Tensor| t.to(&dev).unwrap();
        let got = rt
            .attention(&on(&q), &on(&k), &on(&v), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{dev} attention: {a} vs {b}"
            );
        }
        // A KV cache (window with sinks) through the same fallbacks equals the CPU cache.
        let cfg = KvCacheConfig {
            kv_heads: h_kv,
            head_dim: d,
            format: KvFormat::Q8_0,
            eviction: Eviction::Window {
                window: 6,
                sinks: 2,
            },
            capacity: Some(12),
            ..Default::default()
        };
        let mut cc = KvCache::new(&rt, &rt.cpu(), cfg).unwrap();
        let mut gc = KvCache::new(&rt, &dev, cfg).unwrap();
        for step in 0..t_k {
            let (k1, v1) = (
                Tensor::from_f32(&values(h_kv * d + step)[step..], &[1, h_kv, d]).unwrap(),
                Tensor::from_f32(&values(h_kv * d + 2 * step)[2 * step..], &[1, h_kv, d]).unwrap(),
            );
            cc.append(0, &k1, &v1).unwrap();
            gc.append(0, &on(&k1), &on(&v1)).unwrap();
            let q1 = Tensor::from_f32(&values(h_q * d + step)[step..], &[1, h_q, d]).unwrap();
            let p = AttentionParams {
                q_pos0: step,
                ..AttentionParams::causal()
            };
            let want = cc.attend(0, &q1, &p).unwrap().to_f32_vec().unwrap();
            let got = gc.attend(0, &on(&q1), &p).unwrap().to_f32_vec().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{dev} KV cache step {step}: {a} vs {b}"
                );
            }
        }
        assert_eq!(gc.positions(0, 0).unwrap(), cc.positions(0, 0).unwrap());
        // Linear attention (workgroup dot products, no subgroups) equals the CPU's; the
        // chunked form's scratch (5 × 64 × d_k per workgroup) exceeds 2 KiB bindings and is
        // refused with TooLarge.
        let (n, h, dk, dv) = (24, 2, 8, 4); // q under 2 KiB
        let lq = Tensor::from_f32(&values(n * h * dk), &[n, h, dk]).unwrap();
        let lv = Tensor::from_f32(&values(n * h * dv + 3)[3..], &[n, h, dv]).unwrap();
        let kind = LinearAttention::Retention {
            gamma: vec![0.9, 0.99],
        };
        assert!(matches!(
            rt.linear_attention_with(
                &on(&lq),
                &on(&lq),
                &on(&lv),
                &kind,
                None,
                LinearForm::Chunked
            ),
            Err(Error::TooLarge { .. })
        ));
        for form in [LinearForm::Recurrent] {
            let (want, _) = rt
                .linear_attention_with(&lq, &lq, &lv, &kind, None, LinearForm::Recurrent)
                .unwrap();
            let (got, _) = rt
                .linear_attention_with(&on(&lq), &on(&lq), &on(&lv), &kind, None, form)
                .unwrap();
            let (want, got) = (want.to_f32_vec().unwrap(), got.to_f32_vec().unwrap());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                    "{dev} linear attention {form:?}: {a} vs {b}"
                );
            }
        }
    }
}
