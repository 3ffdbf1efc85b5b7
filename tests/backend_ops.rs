//! The op harness (in the spirit of ggml's test-backend-ops): every op × dtype × awkward shape on
//! every device the runtime finds, checked against an f64 reference with SPEC §4 tolerances.

mod common;

use common::*;
use wattle::{DType, Device, Runtime};

/// One checkable op instance.
trait OpCase {
    fn name(&self) -> String;
    /// Runs on `dev`, returning the output as f32.
    fn run(&self, rt: &Runtime, dev: &Device) -> wattle::Result<Vec<f32>>;
    fn reference(&self) -> Vec<f64>;
    /// Largest acceptable NMSE.
    fn tol(&self) -> f64;
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
        let (w, _) = float_tensor(&self.wv, &[self.n, self.k], self.w);
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

    fn reference(&self) -> Vec<f64> {
        let (_, x) = float_tensor(&self.xv, &[self.m, self.k], self.x);
        let (_, w) = float_tensor(&self.wv, &[self.n, self.k], self.w);
        matmul_f64(&x, &w, self.m, self.n, self.k)
    }

    fn tol(&self) -> f64 {
        1e-6
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
    let mut passed = 0usize;
    for dev in devices_under_test(&rt) {
        let software_gpu = !dev.is_cpu() && dev.info().software;
        for case in matmul_cases(software_gpu) {
            let name = format!("{} on {dev}", case.name());
            match case.run(&rt, &dev) {
                Err(e) => failures.push(format!("{name}: error {e}")),
                Ok(out) => {
                    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                        failures.push(format!("{name}: non-finite output at {i}: {}", out[i]));
                        continue;
                    }
                    let err = nmse(&case.reference(), &out);
                    if err > case.tol() {
                        failures.push(format!("{name}: NMSE {err:.3e} > {:.0e}", case.tol()));
                    } else {
                        passed += 1;
                    }
                }
            }
        }
        eprintln!("backend_ops: {dev}: done");
    }
    eprintln!("backend_ops: {passed} passed, {} failed", failures.len());
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
