//! The op harness (in the spirit of ggml's test-backend-ops): every op × dtype × awkward shape on
//! every device the runtime finds, checked against an f64 reference with SPEC §4 tolerances.

mod common;

use common::*;
use wattle::{DType, Device, Runtime};

/// One checkable op instance.
trait OpCase {
    /// True when `dev` may answer `UnsupportedDType` (reported apart, not as a pass).
    fn may_be_unsupported(&self, _dev: &Device) -> bool {
        false
    }
    fn name(&self) -> String;
    /// Runs on `dev`, returning the output as f32.
    fn run(&self, rt: &Runtime, dev: &Device) -> wattle::Result<Vec<f32>>;
    /// f64 references, each with a label and the largest acceptable NMSE against it.
    fn references(&self) -> Vec<(&'static str, Vec<f64>, f64)>;
}

struct Matmul {
    m: usize,
    n: usize,
    k: usize,
    w: DType,
    x: DType,
    xv: Vec<f32>,
    wv: Vec<f32>,
}

impl Matmul {
    fn new(m: usize, n: usize, k: usize, w: DType, x: DType) -> Matmul {
        let mut rng = Rng::new((m * 1_000_003 + n * 1009 + k) as u64);
        let xv = rng.vec(m * k);
        let wv = rng.vec(n * k);
        Matmul {
            m,
            n,
            k,
            w,
            x,
            xv,
            wv,
        }
    }

    /// The weight tensor and the values it holds (rounded or dequantized).
    fn weights(&self) -> (wattle::Tensor, Vec<f32>) {
        if self.w.is_quantized() {
            let t = wattle::Tensor::from_f32(&self.wv, &[self.n, self.k])
                .unwrap()
                .quantize(self.w)
                .unwrap();
            let v = t.to_f32_vec().unwrap();
            (t, v)
        } else {
            float_tensor(&self.wv, &[self.n, self.k], self.w)
        }
    }
}

impl OpCase for Matmul {
    fn name(&self) -> String {
        format!(
            "matmul(w={},x={},m={},n={},k={})",
            self.w, self.x, self.m, self.n, self.k
        )
    }

    fn run(&self, rt: &Runtime, dev: &Device) -> wattle::Result<Vec<f32>> {
        let (x, _) = float_tensor(&self.xv, &[self.m, self.k], self.x);
        let (w, _) = self.weights();
        let y = rt.matmul(&x.to(dev)?, &w.to(dev)?)?;
        assert_eq!(
            y.shape(),
            &[self.m, self.n],
            "{}: output shape",
            self.name()
        );
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(&y.device(), dev, "{}: output device", self.name());
        y.to_f32_vec()
    }

    fn references(&self) -> Vec<(&'static str, Vec<f64>, f64)> {
        let (m, n, k) = (self.m, self.n, self.k);
        let (_, x) = float_tensor(&self.xv, &[m, k], self.x);
        let (_, w) = self.weights();
        let exact = matmul_f64(&x, &w, m, n, k);
        if !self.w.is_quantized() {
            return vec![("f64", exact, 1e-6)]; // SPEC §4, F32 matmul
        }
        // What the kernel computes: activations quantized on the fly to Q8_0 / Q8_K (as ggml).
        let act = if self.w.block_size() == 256 {
            DType::Q8_K
        } else {
            DType::Q8_0
        };
        let xq = wattle::Tensor::from_f32(&x, &[m, k])
            .unwrap()
            .quantize(act)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let mut refs = vec![(
            "f64 of quantized activations",
            matmul_f64(&xq, &w, m, n, k),
            5e-4,
        )];
        // Against unquantized activations, NMSE over a handful of outputs is ill-conditioned
        // (one dot product near zero dominates); check it where there are enough outputs.
        if m * n >= 64 {
            refs.push(("f64", exact, 5e-4)); // SPEC §4, quantized matmul
        }
        refs
    }

    fn may_be_unsupported(&self, _dev: &Device) -> bool {
        // Every weight format is required on every device (the GPUs run block formats too).
        false
    }
}

fn matmul_cases(software_gpu: bool) -> Vec<Box<dyn OpCase>> {
    let (ms, ns, ks): (Vec<usize>, &[usize], &[usize]) = if software_gpu {
        (
            vec![1, 2, 5, 8, 9, 17],
            &[1, 7, 65, 129],
            &[1, 33, 257, 1000],
        )
    } else {
        (
            (1..=17).collect(),
            &[1, 7, 65, 129, 300],
            &[1, 3, 33, 257, 1000, 4099],
        )
    };
    let mut cases: Vec<Box<dyn OpCase>> = Vec::new();
    for w in [DType::F32, DType::F16, DType::BF16] {
        for x in [DType::F32, DType::F16] {
            for &m in &ms {
                for &n in ns {
                    for &k in ks {
                        cases.push(Box::new(Matmul::new(m, n, k, w, x)));
                    }
                }
            }
        }
    }
    let qms: Vec<usize> = if software_gpu {
        vec![1, 4, 9]
    } else {
        (1..=17).collect()
    };
    for w in [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
    ] {
        let b = w.block_size();
        for &m in &qms {
            for n in [1, 7, 65, 129] {
                for k in [b, 3 * b, 2048] {
                    cases.push(Box::new(Matmul::new(m, n, k, w, DType::F32)));
                }
            }
        }
        cases.push(Box::new(Matmul::new(3, 33, 512, w, DType::F16)));
        cases.push(Box::new(Matmul::new(40, 100, 4096, w, DType::F32)));
    }
    // Large enough to cross the CPU kernels' cache blocks and the GPU's tiles.
    for w in [DType::F32, DType::F16, DType::BF16] {
        cases.push(Box::new(Matmul::new(33, 70, 1100, w, DType::F32)));
        cases.push(Box::new(Matmul::new(1, 513, 2048, w, DType::F32)));
    }
    cases
}

#[test]
fn every_op_on_every_device_matches_the_reference() {
    let rt = Runtime::new().expect("runtime");
    let mut failures = Vec::new();
    let mut unsupported = Vec::new();
    let mut passed = 0usize;
    for dev in devices_under_test(&rt) {
        let software_gpu = !dev.is_cpu() && dev.info().software;
        for case in matmul_cases(software_gpu)
            .into_iter()
            .chain(engine_cases(software_gpu))
        {
            let name = format!("{} on {dev}", case.name());
            match case.run(&rt, &dev) {
                Err(wattle::Error::UnsupportedDType { .. } | wattle::Error::NotAvailable(_))
                    if case.may_be_unsupported(&dev) =>
                {
                    unsupported.push(name)
                }
                Err(e) => failures.push(format!("{name}: error {e}")),
                Ok(out) => {
                    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                        failures.push(format!("{name}: non-finite output at {i}: {}", out[i]));
                        continue;
                    }
                    let bad: Vec<String> = case
                        .references()
                        .into_iter()
                        .filter_map(|(label, r, tol)| {
                            let err = nmse(&r, &out);
                            (err > tol).then(|| format!("NMSE {err:.3e} > {tol:.0e} vs {label}"))
                        })
                        .collect();
                    if bad.is_empty() {
                        passed += 1;
                    } else {
                        failures.push(format!("{name}: {}", bad.join(", ")));
                    }
                }
            }
        }
        eprintln!("backend_ops: {dev}: done");
    }
    eprintln!(
        "backend_ops: {passed} passed, {} failed, {} not supported",
        failures.len(),
        unsupported.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---- Engine ops (issue 12): rms_norm, rope, silu_mul, add, get_rows, softmax, argmax, top_k ----

/// Which engine op a [`EngineOp`] case runs.
#[derive(Clone, Debug)]
enum EngineKind {
    RmsNorm { eps: f32 },
    Rope(wattle::RopeParams),
    SiluMul,
    Add,
    GetRows { dtype: DType, ids: Vec<u32> },
    Softmax,
    Argmax,
    TopK { k: usize },
}

/// One engine-op case: its inputs (random, seeded by the shape) and the op.
struct EngineOp {
    kind: EngineKind,
    shape: Vec<usize>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl EngineOp {
    fn new(kind: EngineKind, shape: &[usize]) -> EngineOp {
        let n: usize = shape.iter().product();
        let seed = shape.iter().fold(17u64, |s, &d| s * 1_000_003 + d as u64);
        let mut rng = Rng::new(seed ^ format!("{kind:?}").len() as u64);
        let scale = match kind {
            // Logits with the spread of a real model's.
            EngineKind::Softmax | EngineKind::Argmax | EngineKind::TopK { .. } => 12.0,
            EngineKind::SiluMul => 6.0,
            _ => 2.0,
        };
        let a = rng.vec(n).into_iter().map(|v| v * scale).collect();
        let b_len = match kind {
            EngineKind::RmsNorm { .. } => *shape.last().unwrap_or(&0),
            EngineKind::SiluMul | EngineKind::Add => n,
            _ => 0,
        };
        let b = rng.vec(b_len).into_iter().map(|v| 1.0 + v / 2.0).collect();
        EngineOp {
            kind,
            shape: shape.to_vec(),
            a,
            b,
        }
    }

    /// Logits on a coarse grid (many ties) with −∞ entries (masked tokens) but a finite value
    /// in every row: tie-breaking must match the CPU exactly.
    fn tied(kind: EngineKind, shape: &[usize]) -> EngineOp {
        let mut op = EngineOp::new(kind, shape);
        let n = *shape.last().unwrap_or(&1);
        for (i, v) in op.a.iter_mut().enumerate() {
            *v = if i % 7 == 3 && i % n != 0 {
                f32::NEG_INFINITY
            } else {
                (*v / 4.0).round()
            };
        }
        op
    }

    fn table(&self, dtype: DType) -> wattle::Tensor {
        wattle::Tensor::from_f32(&self.a, &self.shape)
            .unwrap()
            .quantize(dtype)
            .unwrap()
    }
}

impl OpCase for EngineOp {
    fn name(&self) -> String {
        let kind = match &self.kind {
            EngineKind::Rope(p) => format!(
                "rope({:?},n_dims={},base={},scale={},pos0={},explicit={})",
                p.mode,
                p.n_dims,
                p.freq_base,
                p.freq_scale,
                p.pos0,
                p.positions.is_some()
            ),
            EngineKind::GetRows { dtype, ids } => format!("get_rows({dtype},{} ids)", ids.len()),
            k => format!("{k:?}"),
        };
        format!("{kind}{:?}", self.shape)
    }

    fn run(&self, rt: &Runtime, dev: &Device) -> wattle::Result<Vec<f32>> {
        let x = wattle::Tensor::from_f32(&self.a, &self.shape)?.to(dev)?;
        let y = match &self.kind {
            EngineKind::RmsNorm { eps } => {
                let w = wattle::Tensor::from_f32(&self.b, &[self.b.len()])?.to(dev)?;
                rt.rms_norm(&x, &w, *eps)?
            }
            EngineKind::Rope(p) => rt.rope(&x, p)?,
            EngineKind::SiluMul | EngineKind::Add => {
                let b = wattle::Tensor::from_f32(&self.b, &self.shape)?.to(dev)?;
                if matches!(self.kind, EngineKind::Add) {
                    rt.add(&x, &b)?
                } else {
                    rt.silu_mul(&x, &b)?
                }
            }
            EngineKind::GetRows { dtype, ids } => {
                let y = rt.get_rows(&self.table(*dtype).to(dev)?, ids)?;
                assert_eq!(y.shape(), &[ids.len(), self.shape[1]], "{}", self.name());
                assert_eq!(&y.device(), dev);
                return y.to_f32_vec();
            }
            EngineKind::Softmax => rt.softmax(&x)?,
            EngineKind::Argmax => {
                return Ok(rt.argmax(&x)?.into_iter().map(|i| i as f32).collect());
            }
            EngineKind::TopK { k } => {
                let rows = rt.top_k(&x, *k)?;
                assert!(rows.iter().all(|r| r.len() == *k), "{}", self.name());
                return Ok(rows
                    .into_iter()
                    .flatten()
                    .flat_map(|(i, v)| [i as f32, v])
                    .collect());
            }
        };
        assert_eq!(y.shape(), &self.shape[..], "{}: output shape", self.name());
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(&y.device(), dev, "{}: output device", self.name());
        y.to_f32_vec()
    }

    fn references(&self) -> Vec<(&'static str, Vec<f64>, f64)> {
        let n = *self.shape.last().unwrap_or(&1);
        let a: Vec<f64> = self.a.iter().map(|&v| v as f64).collect();
        let b: Vec<f64> = self.b.iter().map(|&v| v as f64).collect();
        match &self.kind {
            EngineKind::RmsNorm { eps } => {
                let mut y = Vec::with_capacity(a.len());
                for r in a.chunks_exact(n) {
                    let ms = r.iter().map(|v| v * v).sum::<f64>() / n as f64;
                    let s = 1.0 / (ms + *eps as f64).sqrt();
                    y.extend(r.iter().zip(&b).map(|(v, w)| v * s * w));
                }
                vec![("f64", y, 1e-10)]
            }
            EngineKind::Rope(p) => {
                let (t, h, d) = (self.shape[0], self.shape[1], self.shape[2]);
                let nd = if p.n_dims == 0 { d } else { p.n_dims };
                let mut y = a.clone();
                for i in 0..t {
                    let pos = match &p.positions {
                        Some(v) => v[i] as f64,
                        None => (p.pos0 + i) as f64,
                    };
                    for hh in 0..h {
                        let row = &mut y[(i * h + hh) * d..][..d];
                        for j in 0..nd / 2 {
                            let theta = pos
                                * p.freq_scale as f64
                                * (p.freq_base as f64).powf(-2.0 * j as f64 / nd as f64);
                            let (s, c) = theta.sin_cos();
                            let (i0, i1) = match p.mode {
                                wattle::RopeMode::Normal => (2 * j, 2 * j + 1),
                                wattle::RopeMode::Neox => (j, j + nd / 2),
                            };
                            let (x0, x1) = (row[i0], row[i1]);
                            row[i0] = x0 * c - x1 * s;
                            row[i1] = x0 * s + x1 * c;
                        }
                    }
                }
                vec![("f64", y, 1e-9)]
            }
            EngineKind::SiluMul => {
                let y = a
                    .iter()
                    .zip(&b)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                vec![("f64", y, 1e-10)]
            }
            EngineKind::Add => vec![("f64", a.iter().zip(&b).map(|(x, y)| x + y).collect(), 1e-12)],
            EngineKind::GetRows { dtype, ids } => {
                let t = self.table(*dtype).to_f32_vec().unwrap();
                let y = ids
                    .iter()
                    .flat_map(|&i| t[i as usize * n..][..n].iter().map(|&v| v as f64))
                    .collect();
                vec![("to_f32_vec rows", y, 1e-12)]
            }
            EngineKind::Softmax => {
                let mut y = Vec::with_capacity(a.len());
                for r in a.chunks_exact(n) {
                    let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
                    y.extend(r.iter().map(|v| (v - m).exp() / s));
                }
                vec![("f64", y, 1e-10)]
            }
            EngineKind::Argmax => {
                let y = self
                    .a
                    .chunks_exact(n)
                    .map(|r| {
                        let mut best = 0;
                        for (i, &v) in r.iter().enumerate() {
                            if v > r[best] {
                                best = i;
                            }
                        }
                        best as f64
                    })
                    .collect();
                vec![("exact", y, 0.0)]
            }
            EngineKind::TopK { k } => {
                let mut y = Vec::new();
                for r in self.a.chunks_exact(n) {
                    let mut idx: Vec<usize> = (0..n).collect();
                    idx.sort_by(|&i, &j| {
                        r[j].partial_cmp(&r[i])
                            .unwrap_or(std::cmp::Ordering::Equal)
                            .then(i.cmp(&j))
                    });
                    y.extend(idx[..*k].iter().flat_map(|&i| [i as f64, r[i] as f64]));
                }
                vec![("exact", y, 0.0)]
            }
        }
    }

    fn may_be_unsupported(&self, _dev: &Device) -> bool {
        // Every engine op is required on every device.
        false
    }
}

fn engine_cases(software_gpu: bool) -> Vec<Box<dyn OpCase>> {
    use wattle::{RopeMode, RopeParams};
    let mut cases: Vec<Box<dyn OpCase>> = Vec::new();
    let mut add =
        |kind: EngineKind, shape: &[usize]| cases.push(Box::new(EngineOp::new(kind, shape)));
    let rows: &[usize] = if software_gpu {
        &[1, 3, 17]
    } else {
        &[1, 2, 5, 16, 17, 64]
    };
    let lens: &[usize] = if software_gpu {
        &[1, 7, 64, 576]
    } else {
        &[1, 7, 33, 64, 576, 1000, 1536]
    };
    for &m in rows {
        for &d in lens {
            add(EngineKind::RmsNorm { eps: 1e-5 }, &[m, d]);
            add(EngineKind::SiluMul, &[m, d]);
            add(EngineKind::Add, &[m, d]);
            add(EngineKind::Softmax, &[m, d]);
            add(EngineKind::Argmax, &[m, d]);
            add(EngineKind::TopK { k: 1 }, &[m, d]);
            add(EngineKind::TopK { k: d.min(5) }, &[m, d]);
        }
    }
    // Ties (±0 included) and −∞ (first occurrence wins, lower index first in top-k).
    let mut tied: Vec<Box<dyn OpCase>> = Vec::new();
    for &(m, n) in &[(1usize, 5usize), (3, 64), (2, 1000), (1, 4099)] {
        for kind in [
            EngineKind::Softmax,
            EngineKind::Argmax,
            EngineKind::TopK { k: 1 },
            EngineKind::TopK {
                k: (n / 2).clamp(1, 9),
            },
        ] {
            tied.push(Box::new(EngineOp::tied(kind, &[m, n])));
        }
    }
    // Prefill-sized and decode-sized logits; rank-3 elementwise operands.
    add(EngineKind::RmsNorm { eps: 1e-6 }, &[3, 4, 64]);
    add(EngineKind::Add, &[2, 3, 5]);
    let big = if software_gpu { 4096 } else { 49152 };
    for kind in [
        EngineKind::Softmax,
        EngineKind::Argmax,
        EngineKind::TopK { k: 40 },
    ] {
        add(kind, &[2, big]);
    }
    if !software_gpu {
        add(EngineKind::RmsNorm { eps: 1e-5 }, &[128, 576]);
        add(EngineKind::SiluMul, &[64, 1536]);
        add(EngineKind::Add, &[100, 1000]);
        add(EngineKind::Softmax, &[40, 1000]);
    }
    let ropes: &[(usize, usize, usize, usize)] = if software_gpu {
        &[(1, 9, 64, 0), (3, 2, 10, 6), (5, 3, 64, 32)]
    } else {
        &[
            (1, 9, 64, 0),
            (1, 3, 64, 0),
            (3, 2, 10, 6),
            (5, 3, 64, 32),
            (17, 4, 128, 0),
            (2, 1, 2, 0),
            (64, 9, 64, 0),
        ]
    };
    for &(t, h, d, n_dims) in ropes {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            for (pos0, base, scale) in [(0, 10000.0, 1.0), (1000, 100000.0, 0.25)] {
                let p = RopeParams {
                    mode,
                    n_dims,
                    freq_base: base,
                    freq_scale: scale,
                    pos0,
                    positions: None,
                };
                add(EngineKind::Rope(p), &[t, h, d]);
            }
            let p = RopeParams {
                mode,
                n_dims,
                positions: Some((0..t as u32).map(|i| (i * 7919) % 4099).collect()),
                ..RopeParams::default()
            };
            add(EngineKind::Rope(p), &[t, h, d]);
        }
    }
    for dtype in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
    ] {
        let b = dtype.block_size();
        for (vocab, d) in [(5, b), (40, 3 * b), (300, 2 * b.max(288))] {
            if d % b != 0 {
                continue;
            }
            let ids: Vec<u32> = (0..7).map(|i| (i * 13 % vocab) as u32).collect();
            add(EngineKind::GetRows { dtype, ids }, &[vocab, d]);
        }
        add(
            EngineKind::GetRows {
                dtype,
                ids: (0..200).map(|i| (i * 7 % 300) as u32).collect(),
            },
            &[300, 2 * b],
        );
    }
    cases.extend(tied);
    cases
}

/// Every CPU path of the engine-op kernels (not only the one `WATTLE_CPU_ISA` selects) against
/// the scalar references, on awkward shapes.
#[test]
fn engine_ops_every_cpu_isa_matches_the_scalar_reference() {
    use wattle_kernels::ops as k;
    let pool = wattle_kernels::pool::ThreadPool::new(2);
    let close = |what: &str, want: &[f32], got: &[f32], tol: f32| {
        for (i, (a, b)) in want.iter().zip(got).enumerate() {
            assert!(
                (a - b).abs() <= tol * a.abs().max(1.0),
                "{what} [{i}]: {a} vs {b}"
            );
        }
    };
    for isa in wattle::Isa::supported() {
        let mut rng = Rng::new(isa as u64 + 7);
        for (m, d) in [
            (1, 1),
            (1, 576),
            (3, 7),
            (17, 33),
            (5, 1536),
            (40, 1000),
            (2, 49152),
        ] {
            let x: Vec<f32> = rng.vec(m * d).iter().map(|v| v * 8.0).collect();
            let y: Vec<f32> = rng.vec(m * d);
            let w: Vec<f32> = rng.vec(d);
            let (mut want, mut got) = (vec![0f32; m * d], vec![0f32; m * d]);
            let what = |op: &str| format!("{op} {isa} [{m}, {d}]");
            k::rms_norm_ref(&x, &w, 1e-5, &mut want);
            k::rms_norm(isa, &pool, &x, &w, 1e-5, &mut got);
            close(&what("rms_norm"), &want, &got, 1e-5);
            k::silu_mul_ref(&x, &y, &mut want);
            k::silu_mul(isa, &pool, &x, &y, &mut got);
            close(&what("silu_mul"), &want, &got, 1e-6);
            k::add_ref(&x, &y, &mut want);
            k::add(isa, &pool, &x, &y, &mut got);
            assert_eq!(want, got, "{}", what("add"));
            k::softmax_ref(&x, d, &mut want);
            k::softmax(isa, &pool, &x, d, &mut got);
            close(&what("softmax"), &want, &got, 2e-6);
            assert_eq!(
                k::argmax(isa, &pool, &x, d),
                k::argmax_ref(&x, d),
                "{}",
                what("argmax")
            );
            for kk in [1, 3, 40] {
                if kk <= d {
                    assert_eq!(
                        k::top_k(isa, &pool, &x, d, kk),
                        k::top_k_ref(&x, d, kk),
                        "{}",
                        what("top_k")
                    );
                }
            }
        }
        for layout in [k::RopeLayout::Normal, k::RopeLayout::Neox] {
            for (t, h, d, n_dims) in [
                (1, 9, 64, 64),
                (3, 2, 10, 6),
                (33, 3, 64, 32),
                (2, 1, 18, 18),
            ] {
                let a = k::RopeArgs {
                    t,
                    h,
                    d,
                    n_dims,
                    layout,
                    freq_base: 10000.0,
                    freq_scale: 1.0,
                };
                let x = rng.vec(t * h * d);
                let pos: Vec<u32> = (0..t as u32).map(|i| i * 101 + 3).collect();
                let (mut want, mut got) = (vec![0f32; x.len()], vec![0f32; x.len()]);
                k::rope_ref(&a, &x, &pos, &mut want);
                k::rope(isa, &pool, &a, &x, &pos, &mut got);
                close(&format!("rope {isa} {a:?}"), &want, &got, 2e-6);
            }
        }
    }
}

/// Embedding tables larger than one storage binding are read chunk by chunk; activations that
/// would need several bindings are refused with `TooLarge`, never truncated (SPEC §5).
#[test]
fn engine_ops_on_split_gpu_bindings() {
    let rt = Runtime::new().expect("runtime");
    let devs = wattle::internals::gpu_devices_with_max_binding(4096).expect("devices");
    if devs.is_empty() {
        let _ = devices_under_test(&rt); // fails unless WATTLE_ALLOW_NO_GPU=1
        return;
    }
    let (vocab, d) = (300, 256);
    let mut rng = Rng::new(99);
    let v = rng.vec(vocab * d);
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % vocab) as u32).collect();
    for dev in devs {
        for dtype in [DType::F32, DType::F16, DType::Q8_0, DType::Q4_K] {
            let table = wattle::Tensor::from_f32(&v, &[vocab, d])
                .unwrap()
                .quantize(dtype)
                .unwrap();
            let want = rt.get_rows(&table, &ids).unwrap().to_f32_vec().unwrap();
            let on = table.to(&dev).unwrap();
            assert!(
                wattle::internals::gpu_chunk_count(&on).unwrap() > 1,
                "{dev} {dtype}: the table should span several bindings"
            );
            let got = rt.get_rows(&on, &ids).unwrap().to_f32_vec().unwrap();
            let err = nmse(&want.iter().map(|&x| x as f64).collect::<Vec<_>>(), &got);
            assert!(err <= 1e-12, "{dev} {dtype}: NMSE {err:e}");
        }
        let x = wattle::Tensor::from_f32(&v, &[vocab, d])
            .unwrap()
            .to(&dev)
            .unwrap();
        assert!(
            matches!(rt.add(&x, &x), Err(wattle::Error::TooLarge { .. })),
            "{dev}: add over split bindings"
        );
        assert!(
            matches!(rt.softmax(&x), Err(wattle::Error::TooLarge { .. })),
            "{dev}: softmax over split bindings"
        );
    }
}

/// The two-stage GPU top-k (chunk candidates, then a selection among them) that real GPUs run on
/// long rows, forced on every adapter (CPU-emulated ones default to one stage), against the CPU.
#[test]
fn top_k_two_stage_on_every_gpu() {
    std::env::set_var("WATTLE_GPU_TOPK_TWO_STAGE", "1");
    let rt = Runtime::new().expect("runtime");
    let devs = devices_under_test(&rt);
    let mut rng = Rng::new(5);
    for (m, n) in [(1usize, 49152usize), (3, 5000)] {
        // Coarse values: many ties across chunks.
        let v: Vec<f32> = rng.vec(m * n).iter().map(|x| (x * 300.0).round()).collect();
        let x = wattle::Tensor::from_f32(&v, &[m, n]).unwrap();
        for k in [1, 40, 256] {
            let want = rt.top_k(&x, k).unwrap();
            for dev in devs.iter().filter(|d| !d.is_cpu()) {
                let got = rt.top_k(&x.to(dev).unwrap(), k).unwrap();
                assert_eq!(got, want, "{dev}: top_k {k} of [{m}, {n}]");
            }
        }
    }
}

/// Empty operands give empty results and mixed devices a typed error, on every device.
#[test]
fn engine_ops_empty_operands_and_device_mismatch() {
    let rt = Runtime::new().expect("runtime");
    for dev in devices_under_test(&rt) {
        let on = |v: &[f32], shape: &[usize]| {
            wattle::Tensor::from_f32(v, shape)
                .unwrap()
                .to(&dev)
                .unwrap()
        };
        let empty = on(&[], &[0, 5]);
        let w5 = on(&[1.0; 5], &[5]);
        assert_eq!(
            rt.rms_norm(&empty, &w5, 1e-5).unwrap().shape(),
            &[0, 5],
            "{dev}"
        );
        assert_eq!(rt.add(&empty, &empty).unwrap().shape(), &[0, 5], "{dev}");
        assert_eq!(
            rt.softmax(&empty).unwrap().to_f32_vec().unwrap(),
            Vec::<f32>::new()
        );
        assert_eq!(rt.argmax(&empty).unwrap(), Vec::<u32>::new(), "{dev}");
        assert!(rt.top_k(&empty, 2).unwrap().is_empty(), "{dev}");
        let q = on(&[], &[0, 2, 4]);
        assert_eq!(
            rt.rope(&q, &wattle::RopeParams::default()).unwrap().shape(),
            &[0, 2, 4]
        );
        let table = on(&[1.0; 64], &[2, 32]).quantize(DType::Q8_0).unwrap();
        let rows = rt.get_rows(&table, &[]).unwrap();
        assert_eq!(rows.shape(), &[0, 32], "{dev}");
        assert!(rows.to_f32_vec().unwrap().is_empty());
        assert!(matches!(
            rt.get_rows(&table, &[2]),
            Err(wattle::Error::InvalidArgument(_))
        ));
        if !dev.is_cpu() {
            let host = wattle::Tensor::from_f32(&[1.0; 5], &[1, 5]).unwrap();
            let x = on(&[1.0; 5], &[1, 5]);
            assert!(matches!(
                rt.add(&x, &host),
                Err(wattle::Error::DeviceMismatch(..))
            ));
            assert!(matches!(
                rt.rms_norm(&host, &w5, 1e-5),
                Err(wattle::Error::DeviceMismatch(..))
            ));
        }
    }
}
