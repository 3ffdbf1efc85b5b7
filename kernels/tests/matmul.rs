//! Float matmul on every ISA this host supports, every weight dtype, awkward shapes, several
//! thread counts: against an f64 reference (NMSE ≤ 1e-6, SPEC §4) and `reference::matmul`.

use half::{bf16, f16};
use wattle_kernels::matmul::{self, reference, Weights};
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::Isa;

/// xorshift64*: deterministic inputs without a rand dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    F32,
    F16,
    BF16,
}

/// Weights of one dtype and the f32 values they hold.
struct W {
    f32: Vec<f32>,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
    kind: Kind,
}

impl W {
    fn new(kind: Kind, vals: Vec<f32>) -> Self {
        let f16: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
        let bf16: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
        let f32 = match kind {
            Kind::F32 => vals,
            Kind::F16 => f16.iter().map(|v| v.to_f32()).collect(),
            Kind::BF16 => bf16.iter().map(|v| v.to_f32()).collect(),
        };
        W {
            f32,
            f16,
            bf16,
            kind,
        }
    }
    fn weights(&self) -> Weights<'_> {
        match self.kind {
            Kind::F32 => Weights::F32(&self.f32),
            Kind::F16 => Weights::F16(&self.f16),
            Kind::BF16 => Weights::BF16(&self.bf16),
        }
    }
}

/// One case: inputs, the f64 truth and per-element error bounds.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    x: Vec<f32>,
    w: W,
    truth: Vec<f64>,
    /// Σ_p |x·w| per output: scales the per-element bound.
    mag: Vec<f64>,
    refout: Vec<f32>,
}

impl Case {
    fn new(kind: Kind, m: usize, n: usize, k: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ ((m * 1_000_003 + n * 1009 + k) as u64));
        let x = rng.vec(m * k);
        let w = W::new(kind, rng.vec(n * k));
        let mut truth = vec![0.0f64; m * n];
        let mut mag = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut a) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let t = f64::from(x[i * k + p]) * f64::from(w.f32[j * k + p]);
                    s += t;
                    a += t.abs();
                }
                truth[i * n + j] = s;
                mag[i * n + j] = a;
            }
        }
        let mut refout = vec![f32::NAN; m * n];
        reference::matmul(&x, w.weights(), &mut refout, m, n, k);
        Case {
            m,
            n,
            k,
            x,
            w,
            truth,
            mag,
            refout,
        }
    }

    fn name(&self, isa: Isa, threads: usize) -> String {
        format!(
            "{isa} {:?} m={} n={} k={} threads={threads}",
            self.w.kind, self.m, self.n, self.k
        )
    }

    /// Runs `matmul` on `isa` with `pool` and checks the output.
    fn check(&self, isa: Isa, pool: &ThreadPool) {
        const CANARY: usize = 19;
        let name = self.name(isa, pool.threads());
        let len = self.m * self.n;
        // NaN inside: every output must be written, never accumulated into old contents.
        let mut buf = vec![f32::NAN; len + 2 * CANARY];
        buf[..CANARY].fill(1234.5);
        buf[CANARY + len..].fill(-6789.25);
        matmul::matmul(
            isa,
            pool,
            &self.x,
            self.w.weights(),
            &mut buf[CANARY..CANARY + len],
            self.m,
            self.n,
            self.k,
        );
        assert!(
            buf[..CANARY].iter().all(|&v| v == 1234.5)
                && buf[CANARY + len..].iter().all(|&v| v == -6789.25),
            "{name}: wrote outside y"
        );
        let y = &buf[CANARY..CANARY + len];
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            panic!("{name}: y[{i}] = {}", y[i]);
        }
        let (mut err, mut err_ref, mut norm) = (0.0f64, 0.0f64, 0.0f64);
        // f32 accumulation of k terms: |error| ≤ ~k·ε·Σ|x·w| (rigorous, generous).
        let eps = f64::from(f32::EPSILON);
        for (i, (&yo, &ro)) in y.iter().zip(&self.refout).enumerate() {
            let (o, t, r) = (f64::from(yo), self.truth[i], f64::from(ro));
            err += (o - t) * (o - t);
            err_ref += (o - r) * (o - r);
            norm += t * t;
            let bound = (self.k as f64 + 2.0) * eps * self.mag[i] + 1e-30;
            assert!(
                (o - t).abs() <= bound,
                "{name}: y[{}, {}] = {o}, truth {t}, bound {bound}",
                i / self.n,
                i % self.n
            );
        }
        let nmse = err / norm.max(1e-300);
        let nmse_ref = err_ref / norm.max(1e-300);
        assert!(nmse <= 1e-6, "{name}: NMSE {nmse:e} vs f64");
        assert!(
            nmse_ref <= 1e-6,
            "{name}: NMSE {nmse_ref:e} vs reference::matmul"
        );
    }
}

const KINDS: [Kind; 3] = [Kind::F32, Kind::F16, Kind::BF16];
const NS: [usize; 7] = [1, 3, 7, 9, 63, 65, 129];
const KS: [usize; 7] = [1, 7, 31, 33, 256, 1000, 4099];

fn pools() -> Vec<ThreadPool> {
    [1, 2, 3].into_iter().map(ThreadPool::new).collect()
}

/// m = 1..17 × n × k, every dtype and supported ISA.
///
/// Unoptimised builds (the emulated aarch64 run) keep the full product for F32 at k ≤ 256, run
/// F16/BF16 (which differ only in the widening loads) on fewer m, and the two largest k on a
/// few (m, n).
#[test]
fn awkward_shapes_every_isa_and_dtype() {
    let isas = Isa::supported();
    let pools = pools();
    let mut count = 0usize;
    for kind in KINDS {
        for m in 1..=17 {
            for &n in &NS {
                for &k in &KS {
                    let thin = cfg!(debug_assertions)
                        && ((k >= 1000 && (![1, 17].contains(&m) || ![7, 65].contains(&n)))
                            || (kind != Kind::F32 && ![1, 2, 5, 15, 17].contains(&m)));
                    if thin {
                        continue;
                    }
                    let case = Case::new(kind, m, n, k, 1);
                    for &isa in &isas {
                        case.check(isa, &pools[count % pools.len()]);
                        count += 1;
                    }
                }
            }
        }
    }
    assert!(count > 0);
}

/// Shapes that cross every cache-block boundary (KC, MC, NC, several panels) and split across
/// threads by columns, by rows, and the decode path with many row chunks. Unoptimised builds
/// use smaller shapes that still cross KC, MC and (on one thread) NC of every ISA.
#[test]
fn large_shapes_cross_block_boundaries() {
    let shapes: &[(usize, usize, usize)] = if cfg!(debug_assertions) {
        &[(20, 800, 300), (130, 40, 300), (1, 1037, 600)]
    } else {
        &[
            (37, 300, 2100),
            (1, 1037, 3001),
            (130, 20, 600),
            (260, 1100, 600),
            (2, 4100, 513),
        ]
    };
    let isas = Isa::supported();
    let pools = pools();
    for kind in KINDS {
        for &(m, n, k) in shapes {
            let case = Case::new(kind, m, n, k, 7);
            for &isa in &isas {
                for (i, pool) in pools.iter().enumerate() {
                    if cfg!(debug_assertions) && i == 1 {
                        continue;
                    }
                    case.check(isa, pool);
                }
            }
        }
    }
}

/// An ISA this CPU lacks must fall back to a correct path, not fault.
#[test]
fn unsupported_isa_falls_back() {
    let pool = ThreadPool::new(2);
    let case = Case::new(Kind::F16, 5, 33, 100, 3);
    for isa in Isa::ALL {
        case.check(isa, &pool);
    }
}

/// Exact answers: small integers multiply and add exactly in f32.
#[test]
fn exact_integer_products() {
    let (m, n, k) = (9, 70, 300);
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
    let wf: Vec<f32> = (0..n * k).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
    let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
    let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut want = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|p| x[i * k + p] * wf[j * k + p]).sum();
        }
    }
    let pool = ThreadPool::new(2);
    for isa in Isa::supported() {
        for w in [Weights::F32(&wf), Weights::F16(&wh), Weights::BF16(&wb)] {
            for mm in [1, m] {
                let mut y = vec![f32::NAN; mm * n];
                matmul::matmul(isa, &pool, &x[..mm * k], w, &mut y, mm, n, k);
                assert_eq!(y, want[..mm * n], "{isa} {w:?}");
            }
        }
    }
}

/// Degenerate sizes: k = 0 gives zeros, m = 0 or n = 0 do nothing.
#[test]
fn empty_dimensions() {
    let pool = ThreadPool::new(2);
    for isa in Isa::supported() {
        let mut y = vec![f32::NAN; 6];
        matmul::matmul(isa, &pool, &[], Weights::F32(&[]), &mut y, 2, 3, 0);
        assert_eq!(y, [0.0; 6]);
        matmul::matmul(isa, &pool, &[], Weights::F32(&[1.0; 4]), &mut [], 0, 2, 2);
        matmul::matmul(isa, &pool, &[1.0; 4], Weights::F16(&[]), &mut [], 2, 0, 2);
    }
}
