//! Quantized matmul: every path this CPU supports (NEON ones under qemu), every weight format,
//! awkward shapes and thread counts, against
//! 1. the block-by-block scalar reference (`qmatmul::reference::qmatmul`, same quantized
//!    activations): the integer block sums are exact in both, only the f32 order in which the
//!    per-block terms are scaled and added differs, so the outputs agree to float rounding.
//!    We assert NMSE ≤ 1e-10 (see `REF_NMSE`) — a wrong code, scale, offset, row or lane gives
//!    errors of order 1 — and that no element is off by more than 1e-4 of the output rms;
//! 2. an f64 product of the dequantized weights with the f32 activations: NMSE ≤ 5e-4 (SPEC §4)
//!    on shapes with at least 64 outputs.
//!
//! Guard elements around the output must survive. Inputs come from a fixed-seed generator.

use wattle_kernels::pool::ThreadPool;
use wattle_kernels::qmatmul::{self, reference, PackedWeights, Path};
use wattle_kernels::quant::{self, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ6K, BlockQ8_0};
use wattle_kernels::{DType, Isa};

/// Same-activation agreement bar: f32 reassociation over at most k/16 block terms
/// (~1e-7 relative each) stays far below this; any logic error is far above.
const REF_NMSE: f64 = 1e-10;
/// Largest single-element deviation from the reference, relative to the output rms.
const REF_MAX: f64 = 1e-4;
/// SPEC §4 bar against f64.
const F64_NMSE: f64 = 5e-4;
/// Guard elements before and after the output.
const GUARD: usize = 16;
const CANARY: f32 = -1.234_567e30;

const FORMATS: [DType; 5] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4_K,
    DType::Q6_K,
];

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Values with a per-row scale, an offset (so Q4_1/Q4_K minimums matter), occasional
    /// outliers (3× the row's range: 4-bit formats on heavier tails miss SPEC's bar on their own,
    /// kernel aside) and zeros.
    fn data(&mut self, rows: usize, cols: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(rows * cols);
        for _ in 0..rows {
            let scale = 0.1 + 2.0 * (self.f() + 1.0);
            let offset = 0.3 * self.f();
            for _ in 0..cols {
                let r = self.next() % 64;
                v.push(match r {
                    0 => 3.0 * scale * self.f(),
                    1 => 0.0,
                    _ => scale * (self.f() + offset),
                });
            }
        }
        v
    }
}

fn nmse(got: &[f32], want: &[f64]) -> f64 {
    let (mut err, mut sig) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        err += (g as f64 - w).powi(2);
        sig += w * w;
    }
    if sig == 0.0 {
        err
    } else {
        err / sig
    }
}

fn block_of(d: DType) -> usize {
    d.block_size()
}

/// The reference output for weights `wb` (raw bytes of `d`).
fn reference_y(d: DType, x: &[f32], wb: &[u8], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0.0; m * n];
    match d {
        DType::Q8_0 => reference::qmatmul::<BlockQ8_0>(x, &qmatmul::blocks_of(wb), &mut y, m, n, k),
        DType::Q4_0 => reference::qmatmul::<BlockQ4_0>(x, &qmatmul::blocks_of(wb), &mut y, m, n, k),
        DType::Q4_1 => reference::qmatmul::<BlockQ4_1>(x, &qmatmul::blocks_of(wb), &mut y, m, n, k),
        DType::Q4_K => reference::qmatmul::<BlockQ4K>(x, &qmatmul::blocks_of(wb), &mut y, m, n, k),
        DType::Q6_K => reference::qmatmul::<BlockQ6K>(x, &qmatmul::blocks_of(wb), &mut y, m, n, k),
        _ => unreachable!(),
    }
    y
}

/// f64 product of the dequantized weights with `x`.
fn f64_y(d: DType, x: &[f32], wb: &[u8], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut wf = vec![0.0f32; n * k];
    quant::dequantize(d, wb, &mut wf).expect("dequantize");
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|c| x[i * k + c] as f64 * wf[j * k + c] as f64)
                .sum();
        }
    }
    y
}

struct Case {
    d: DType,
    m: usize,
    n: usize,
    k: usize,
    x: Vec<f32>,
    wb: Vec<u8>,
    yref: Vec<f32>,
    y64: Option<Vec<f64>>,
}

impl Case {
    fn new(rng: &mut Rng, d: DType, m: usize, n: usize, k: usize) -> Case {
        let w = rng.data(n, k);
        let x = rng.data(m, k);
        Case::from_data(d, w, x, m, n, k)
    }

    fn from_data(d: DType, w: Vec<f32>, x: Vec<f32>, m: usize, n: usize, k: usize) -> Case {
        let mut wb = vec![0u8; n * k / block_of(d) * d.block_bytes()];
        quant::quantize(d, &w, &mut wb).expect("quantize");
        let yref = reference_y(d, &x, &wb, m, n, k);
        let y64 = (m * n >= 64).then(|| f64_y(d, &x, &wb, m, n, k));
        Case {
            d,
            m,
            n,
            k,
            x,
            wb,
            yref,
            y64,
        }
    }

    /// Runs `path` on `pool` with guard elements and checks both references.
    fn check(&self, path: Path, pool: &ThreadPool, packed: &PackedWeights) {
        let (m, n) = (self.m, self.n);
        let mut buf = vec![CANARY; m * n + 2 * GUARD];
        qmatmul::qmatmul_packed(
            path,
            pool,
            &self.x,
            packed,
            &mut buf[GUARD..GUARD + m * n],
            m,
        );
        let what = format!(
            "{} {path} threads={} m={m} n={n} k={}",
            self.d,
            pool.threads(),
            self.k
        );
        assert!(
            buf[..GUARD]
                .iter()
                .chain(&buf[GUARD + m * n..])
                .all(|&v| v == CANARY),
            "{what}: wrote outside the output"
        );
        let y = &buf[GUARD..GUARD + m * n];
        assert!(y.iter().all(|v| v.is_finite()), "{what}: non-finite output");
        let yref: Vec<f64> = self.yref.iter().map(|&v| v as f64).collect();
        let e = nmse(y, &yref);
        assert!(e <= REF_NMSE, "{what}: NMSE vs reference {e:e}");
        let rms = (yref.iter().map(|v| v * v).sum::<f64>() / yref.len() as f64).sqrt();
        let worst = y
            .iter()
            .zip(&yref)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= REF_MAX * rms.max(f64::MIN_POSITIVE),
            "{what}: max error {worst:e} vs rms {rms:e}"
        );
        if let Some(y64) = &self.y64 {
            let e = nmse(y, y64);
            assert!(e <= F64_NMSE, "{what}: NMSE vs f64 {e:e}");
        }
    }
}

fn pools() -> Vec<ThreadPool> {
    [1, 2, 3].into_iter().map(ThreadPool::new).collect()
}

fn paths() -> Vec<Path> {
    let p = Path::supported();
    eprintln!("qmatmul paths on this CPU: {p:?}");
    assert!(p.contains(&Path::Scalar));
    p
}

/// Small shapes: m = 1..17, n ∈ {1, 3, 7, 9, 17, 65, 129}, k = one block and three blocks.
#[test]
fn awkward_shapes_every_path_format_and_thread_count() {
    let pools = pools();
    let paths = paths();
    let mut rng = Rng(0x5EED);
    let ms: Vec<usize> = if cfg!(target_arch = "aarch64") {
        vec![1, 2, 3, 5, 7, 13, 17]
    } else {
        (1..=17).collect()
    };
    for d in FORMATS {
        for kblocks in [1, 3] {
            let k = kblocks * block_of(d);
            for n in [1, 3, 7, 9, 17, 65, 129] {
                for &m in &ms {
                    let case = Case::new(&mut rng, d, m, n, k);
                    let packed = PackedWeights::new(&pools[0], d, &case.wb, n, k).expect("pack");
                    for &path in &paths {
                        for pool in &pools {
                            case.check(path, pool, &packed);
                        }
                    }
                }
            }
        }
    }
}

/// Codes at the ends of their range against activations at ±1 (Q8_K codes of −128, Q8_0 of
/// ±127): the largest partial sums any kernel accumulates, e.g. AVX2's i16 pair lanes.
#[test]
fn extreme_codes_and_activations() {
    let pools = pools();
    let paths = paths();
    for d in FORMATS {
        let (n, k) = (35, 4 * 256);
        // Even rows: +1 then 15 × −0.97 per 16 (top codes of symmetric formats); odd rows the
        // negation (top codes of min-offset formats).
        let w: Vec<f32> = (0..n * k)
            .map(|e| {
                let v = if e % 16 == 0 { 1.0 } else { -0.97 };
                if (e / k) % 2 == 0 {
                    v
                } else {
                    -v
                }
            })
            .collect();
        for m in [1, 3, 8] {
            let x: Vec<f32> = (0..m * k)
                .map(|e| if (e / k) % 3 == 1 { 1.0 } else { -1.0 })
                .collect();
            let case = Case::from_data(d, w.clone(), x, m, n, k);
            let packed = PackedWeights::new(&pools[0], d, &case.wb, n, k).expect("pack");
            for &path in &paths {
                for pool in &pools {
                    case.check(path, pool, &packed);
                }
            }
        }
    }
}

/// Large k (many blocks accumulated), decode and prefill, on each path.
#[test]
fn large_shapes() {
    let pools = pools();
    let paths = paths();
    let mut rng = Rng(0xB16);
    let shapes: &[(usize, usize, usize)] = if cfg!(target_arch = "aarch64") {
        &[(1, 33, 4096), (5, 17, 4096)]
    } else {
        &[
            (1, 64, 14336),
            (1, 129, 4096),
            (9, 40, 4096),
            (17, 65, 14336),
        ]
    };
    for d in FORMATS {
        for &(m, n, k) in shapes {
            let case = Case::new(&mut rng, d, m, n, k);
            let packed = PackedWeights::new(&pools[1], d, &case.wb, n, k).expect("pack");
            for &path in &paths {
                for pool in &pools[..2] {
                    case.check(path, pool, &packed);
                }
            }
        }
    }
}

/// The raw-bytes entry point dispatches by `Isa` and agrees with the reference.
#[test]
fn raw_entry_point_every_isa() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng(7);
    for d in FORMATS {
        let (m, n, k) = (3, 21, 2 * 256);
        let case = Case::new(&mut rng, d, m, n, k);
        for isa in Isa::supported() {
            let mut y = vec![0.0; m * n];
            qmatmul::qmatmul(isa, &pool, &case.x, d, &case.wb, &mut y, m, n, k);
            let yref: Vec<f64> = case.yref.iter().map(|&v| v as f64).collect();
            let e = nmse(&y, &yref);
            assert!(e <= REF_NMSE, "{d} {isa}: NMSE vs reference {e:e}");
        }
    }
}

/// The test is able to fail: a corrupted weight byte is detected.
#[test]
fn a_corrupted_weight_is_detected() {
    let pool = ThreadPool::new(1);
    let mut rng = Rng(99);
    for d in FORMATS {
        let (m, n, k) = (4, 20, 256);
        let case = Case::new(&mut rng, d, m, n, k);
        let mut bad = case.wb.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x5A;
        let packed = PackedWeights::new(&pool, d, &bad, n, k).expect("pack");
        for path in Path::supported() {
            let mut y = vec![0.0; m * n];
            qmatmul::qmatmul_packed(path, &pool, &case.x, &packed, &mut y, m);
            let yref: Vec<f64> = case.yref.iter().map(|&v| v as f64).collect();
            assert!(
                nmse(&y, &yref) > REF_NMSE,
                "{d} {path}: corruption not seen"
            );
        }
    }
}

/// Bad shapes are refused with an error, not a panic.
#[test]
fn bad_shapes_are_errors() {
    let pool = ThreadPool::new(1);
    assert!(PackedWeights::new(&pool, DType::F32, &[0; 16], 1, 4).is_err());
    assert!(PackedWeights::new(&pool, DType::Q4_0, &[0; 18], 1, 31).is_err());
    assert!(PackedWeights::new(&pool, DType::Q4_0, &[0; 17], 1, 32).is_err());
    assert!(PackedWeights::new(&pool, DType::Q4_K, &[0; 144], 1, 128).is_err());
    assert!(PackedWeights::new(&pool, DType::Q4_0, &[0; 18], 1, 32).is_ok());
}
