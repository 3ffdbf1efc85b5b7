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
        for case in matmul_cases(software_gpu) {
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
