//! GPU matmul on every adapter found, every variant, against an f64 reference.
//!
//! Fails when no GPU adapter is found unless `WATTLE_ALLOW_NO_GPU=1`.

use half::{bf16, f16};
use std::sync::OnceLock;
use wattle::internals::{
    gpu_buffer_id, gpu_chunk_count, gpu_devices_with_max_binding, gpu_matmul_choice,
    gpu_matmul_variant, gpu_matmul_variants, gpu_roundtrip_bytes, MatmulKernel, MatmulVariant,
};
use wattle::{DType, Device, DeviceKind, Error, Runtime, Tensor};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new().expect("Runtime::new"))
}

/// Every GPU device; panics when there is none unless WATTLE_ALLOW_NO_GPU=1.
fn gpus() -> Vec<Device> {
    let g = runtime().gpus();
    if g.is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!("no GPU adapter found (set WATTLE_ALLOW_NO_GPU=1 to allow)");
    }
    g
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A host tensor of `dtype` from f32 values, and the values it actually holds.
fn host(dtype: DType, shape: &[usize], seed: u64) -> (Tensor, Vec<f64>) {
    let v = values(shape.iter().product(), seed);
    let t = match dtype {
        DType::F32 => Tensor::from_f32(&v, shape),
        DType::F16 => Tensor::from_f16(
            &v.iter().map(|&a| f16::from_f32(a)).collect::<Vec<_>>(),
            shape,
        ),
        DType::BF16 => Tensor::from_bf16(
            &v.iter().map(|&a| bf16::from_f32(a)).collect::<Vec<_>>(),
            shape,
        ),
        q => Tensor::from_f32(&v, shape).unwrap().quantize(q),
    }
    .unwrap();
    let held = t
        .to_f32_vec()
        .unwrap()
        .iter()
        .map(|&a| f64::from(a))
        .collect();
    (t, held)
}

fn reference(x: &[f64], w: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
        }
    }
    y
}

fn nmse(out: &[f32], r: &[f64]) -> f64 {
    assert_eq!(out.len(), r.len());
    assert!(out.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = out
        .iter()
        .zip(r)
        .map(|(&o, &r)| (f64::from(o) - r).powi(2))
        .sum();
    let den: f64 = r.iter().map(|r| r * r).sum();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Awkward shapes (m, n, k): m = 1..17, n not a multiple of 8/64, k odd, tiny and large.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 7, 3),
    (2, 65, 33),
    (3, 1, 257),
    (5, 129, 257),
    (8, 7, 1000),
    (9, 65, 3),
    (13, 7, 1),
    (16, 65, 1000),
    (17, 129, 33),
];

/// Shapes for block formats, in blocks of k: m = 1..17 subset, n = 1, 7, 65, 129, k = one block,
/// three blocks and 2048 values.
const QSHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (2, 7, 3),
    (3, 65, 1),
    (1, 129, 2048),
    (9, 7, 3),
    (17, 65, 1),
];

/// The activations as the int8 path for weights `w` sees them: rows quantized by the CPU
/// reference quantizer to Q8_0, or Q8_K for K-quants (the rules the GPU pass implements),
/// dequantized.
fn int8_activations(x: &Tensor, w: DType, m: usize, k: usize) -> Vec<f64> {
    let act = if w.block_size() == 256 {
        DType::Q8_K
    } else {
        DType::Q8_0
    };
    Tensor::from_f32(&x.to_f32_vec().unwrap(), &[m, k])
        .unwrap()
        .quantize(act)
        .unwrap()
        .to_f32_vec()
        .unwrap()
        .iter()
        .map(|&a| f64::from(a))
        .collect()
}

/// A quantized-weight variant on the QSHAPES. The reference is f64 arithmetic on the
/// dequantized weights and on the activations the kernel reads: x as held (F32 or F16), or for
/// int8 variants x quantized to Q8_0 (Q8_K for K-quants) blocks; SPEC §4's NMSE ≤ 5e-4.
fn check_quant_variant(dev: &Device, v: &MatmulVariant, shapes: &[(usize, usize, usize)]) {
    let b = v.w.block_size();
    for (si, &(m, n, kb)) in shapes.iter().enumerate() {
        let k = if kb >= 32 { kb } else { kb * b };
        let (x, mut xv) = host(v.x, &[m, k], 1 + si as u64);
        let (w, wv) = host(v.w, &[n, k], 100 + si as u64);
        if v.int8 {
            xv = int8_activations(&x, v.w, m, k);
        }
        let (xg, wg) = (x.to(dev).unwrap(), w.to(dev).unwrap());
        let y = gpu_matmul_variant(&xg, &wg, v).unwrap();
        assert_eq!(y.shape(), &[m, n]);
        let e = nmse(&y.to_f32_vec().unwrap(), &reference(&xv, &wv, m, n, k));
        assert!(
            e <= 5e-4,
            "{} on {dev}: m={m} n={n} k={k}: NMSE {e:e}",
            v.name()
        );
    }
}

fn check_variant(dev: &Device, v: &MatmulVariant) {
    if v.w.is_quantized() {
        return check_quant_variant(dev, v, &QSHAPES);
    }
    for (si, &(m, n, k)) in SHAPES.iter().enumerate() {
        let (x, xv) = host(v.x, &[m, k], 1 + si as u64);
        let (w, wv) = host(v.w, &[n, k], 100 + si as u64);
        let (xg, wg) = (x.to(dev).unwrap(), w.to(dev).unwrap());
        let y = gpu_matmul_variant(&xg, &wg, v).unwrap();
        assert_eq!(y.shape(), &[m, n]);
        assert_eq!(y.dtype(), DType::F32);
        let e = nmse(&y.to_f32_vec().unwrap(), &reference(&xv, &wv, m, n, k));
        assert!(
            e <= 1e-6,
            "{} on {dev}: m={m} n={n} k={k}: NMSE {e:e}",
            v.name()
        );
    }
}

#[test]
fn adapters_are_found() {
    let g = gpus();
    for d in &g {
        let i = d.info();
        eprintln!(
            "{d}: driver `{}`, software {}, subgroups {:?}, features {:?}, max binding {}",
            i.driver,
            i.software,
            i.subgroup_size,
            i.features,
            i.limits.max_storage_buffer_binding_size
        );
        assert!(matches!(d.kind(), DeviceKind::Gpu { .. }));
        assert!(!d.name().is_empty());
        // Never wgpu's default limits: the adapter's own (at least the WebGPU minimums).
        assert!(i.limits.max_storage_buffer_binding_size >= 128 << 20);
        assert!(i.limits.max_compute_invocations_per_workgroup >= 256);
    }
}

#[test]
fn every_variant_on_every_gpu() {
    for dev in gpus() {
        let vs = gpu_matmul_variants(&dev);
        assert!(!vs.is_empty());
        eprintln!("{dev}: {} variants", vs.len());
        for v in &vs {
            check_variant(&dev, v);
        }
        // Variants the device lacks are refused, not run.
        for v in MatmulVariant::all().iter().filter(|v| !vs.contains(v)) {
            let k = v.w.block_size().max(4);
            let (x, _) = host(v.x, &[1, k], 1);
            let (w, _) = host(v.w, &[2, k], 2);
            let r = gpu_matmul_variant(&x.to(&dev).unwrap(), &w.to(&dev).unwrap(), v);
            assert!(matches!(r, Err(Error::NotAvailable(_))), "{}", v.name());
        }
    }
}

#[test]
fn runtime_matmul_picks_a_variant() {
    let rt = runtime();
    for dev in gpus() {
        for wd in [DType::F32, DType::F16, DType::BF16] {
            for xd in [DType::F32, DType::F16] {
                for &(m, n, k) in &[(1, 65, 257), (4, 7, 33), (17, 129, 1000)] {
                    let (x, xv) = host(xd, &[m, k], 7);
                    let (w, wv) = host(wd, &[n, k], 8);
                    let y = rt
                        .matmul(&x.to(&dev).unwrap(), &w.to(&dev).unwrap())
                        .unwrap();
                    assert_eq!(y.device(), dev);
                    let e = nmse(&y.to_f32_vec().unwrap(), &reference(&xv, &wv, m, n, k));
                    let v = gpu_matmul_choice(&dev, m, wd, xd).unwrap();
                    assert_eq!(
                        v.kernel,
                        if m <= 8 {
                            MatmulKernel::Matvec
                        } else {
                            MatmulKernel::Gemm
                        }
                    );
                    assert!(e <= 1e-6, "{} on {dev}: NMSE {e:e}", v.name());
                }
            }
        }
        // Operands on different devices are refused.
        let (x, _) = host(DType::F32, &[1, 4], 1);
        let (w, _) = host(DType::F32, &[2, 4], 2);
        assert!(matches!(
            rt.matmul(&x, &w.to(&dev).unwrap()),
            Err(Error::DeviceMismatch(..))
        ));
    }
}

#[test]
fn empty_dimensions() {
    let rt = runtime();
    for dev in gpus() {
        for &(m, n, k) in &[(0, 3, 4), (2, 0, 4), (2, 3, 0)] {
            let x = Tensor::from_f32(&vec![1.0; m * k], &[m, k]).unwrap();
            let w = Tensor::from_f32(&vec![1.0; n * k], &[n, k]).unwrap();
            let y = rt
                .matmul(&x.to(&dev).unwrap(), &w.to(&dev).unwrap())
                .unwrap();
            assert_eq!(y.shape(), &[m, n]);
            assert_eq!(y.to_f32_vec().unwrap(), vec![0.0; m * n]);
        }
    }
}

#[test]
fn bytes_round_trip() {
    for dev in gpus() {
        for len in [0usize, 1, 2, 3, 4, 5, 7, 1023, (4 << 20) + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            assert_eq!(gpu_roundtrip_bytes(&dev, &data).unwrap(), data, "len {len}");
        }
        // Through tensors: F16 with an odd element count (bytes not a multiple of 4).
        let (t, _) = host(DType::F16, &[3, 5], 3);
        let g = t.to(&dev).unwrap();
        assert_eq!(g.to_bytes().unwrap(), t.to_bytes().unwrap());
        assert_eq!(
            g.to(&runtime().cpu()).unwrap().to_bytes().unwrap(),
            t.to_bytes().unwrap()
        );
    }
}

#[test]
fn upload_is_cached() {
    for dev in gpus() {
        let (w, _) = host(DType::F16, &[7, 33], 5);
        let a = w.to(&dev).unwrap();
        let b = w.to(&dev).unwrap();
        assert!(gpu_buffer_id(&a).is_some());
        assert_eq!(gpu_buffer_id(&a), gpu_buffer_id(&b));
        assert_eq!(gpu_buffer_id(&w), None);
        // A different host tensor gets its own buffer.
        let (w2, _) = host(DType::F16, &[7, 33], 5);
        assert_ne!(gpu_buffer_id(&w2.to(&dev).unwrap()), gpu_buffer_id(&a));
    }
}

#[test]
fn weights_split_across_bindings() {
    gpus();
    let rt = runtime();
    // 1 KiB bindings: several chunks for w, x and y, with segments that straddle chunks.
    for dev in gpu_devices_with_max_binding(1024).unwrap() {
        for v in gpu_matmul_variants(&dev)
            .iter()
            .filter(|v| !v.w.is_quantized() && (v.w == v.x || v.x == DType::F32))
        {
            for &(m, n, k) in &[(3, 65, 33), (11, 40, 33), (19, 9, 100)] {
                let (x, xv) = host(v.x, &[m, k], 11);
                let (w, wv) = host(v.w, &[n, k], 12);
                let (xg, wg) = (x.to(&dev).unwrap(), w.to(&dev).unwrap());
                assert!(gpu_chunk_count(&wg).unwrap() > 1);
                let y = gpu_matmul_variant(&xg, &wg, v).unwrap();
                if m * n * 4 > 1024 {
                    assert!(gpu_chunk_count(&y).unwrap() > 1);
                }
                let e = nmse(&y.to_f32_vec().unwrap(), &reference(&xv, &wv, m, n, k));
                assert!(
                    e <= 1e-6,
                    "{} split on {dev}: m={m} n={n} k={k}: NMSE {e:e}",
                    v.name()
                );
            }
        }
        // Block formats: weights, x, the int8 activations and y in several chunks each.
        for v in gpu_matmul_variants(&dev)
            .iter()
            .filter(|v| v.w.is_quantized() && v.x == DType::F32)
        {
            let k = 256;
            for &(m, n) in &[(3, 40), (11, 9)] {
                let (x, mut xv) = host(v.x, &[m, k], 21);
                let (w, wv) = host(v.w, &[n, k], 22);
                if v.int8 {
                    xv = int8_activations(&x, v.w, m, k);
                }
                let (xg, wg) = (x.to(&dev).unwrap(), w.to(&dev).unwrap());
                assert!(gpu_chunk_count(&wg).unwrap() > 1);
                assert!(gpu_chunk_count(&xg).unwrap() > 1);
                let y = gpu_matmul_variant(&xg, &wg, v).unwrap();
                let e = nmse(&y.to_f32_vec().unwrap(), &reference(&xv, &wv, m, n, k));
                assert!(
                    e <= 5e-4,
                    "{} split on {dev}: m={m} n={n} k={k}: NMSE {e:e}",
                    v.name()
                );
            }
        }
        // A row that fits no binding is refused.
        let (w, _) = host(DType::F32, &[2, 300], 1);
        assert!(matches!(w.to(&dev), Err(Error::TooLarge { .. })));
        // The runtime path works on these devices too.
        let (x, xv) = host(DType::F32, &[2, 33], 1);
        let (w, wv) = host(DType::BF16, &[70, 33], 2);
        let y = rt
            .matmul(&x.to(&dev).unwrap(), &w.to(&dev).unwrap())
            .unwrap();
        assert!(nmse(&y.to_f32_vec().unwrap(), &reference(&xv, &wv, 2, 70, 33)) <= 1e-6);
    }
}

#[test]
fn eight_threads_agree_with_one() {
    let rt = runtime();
    let cases: Vec<(DType, DType, usize, usize, usize)> = vec![
        (DType::F32, DType::F32, 1, 65, 257),
        (DType::F16, DType::F32, 3, 129, 33),
        (DType::BF16, DType::F16, 12, 65, 100),
        (DType::F16, DType::F16, 17, 7, 1000),
    ];
    for dev in gpus() {
        let inputs: Vec<(Tensor, Tensor)> = cases
            .iter()
            .enumerate()
            .map(|(i, &(wd, xd, m, n, k))| {
                (
                    host(xd, &[m, k], i as u64).0,
                    host(wd, &[n, k], 50 + i as u64).0,
                )
            })
            .collect();
        let run = |(x, w): &(Tensor, Tensor)| -> Vec<u8> {
            rt.matmul(&x.to(&dev).unwrap(), &w.to(&dev).unwrap())
                .unwrap()
                .to_bytes()
                .unwrap()
        };
        let expected: Vec<Vec<u8>> = inputs.iter().map(run).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (inputs, run) = (&inputs, &run);
                    s.spawn(move || {
                        (0..6)
                            .map(|r| {
                                let c = (t + r) % inputs.len();
                                (c, run(&inputs[c]))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (c, out) in h.join().unwrap() {
                    assert_eq!(out, expected[c], "case {c} on {dev}");
                }
            }
        });
        dev.synchronize().unwrap();
    }
}
