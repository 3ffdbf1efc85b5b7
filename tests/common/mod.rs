//! Shared helpers for the integration tests: a deterministic RNG, f64 references, metrics and the
//! list of devices under test.
#![allow(dead_code)]

use half::{bf16, f16};
use wattle::{DType, Device, KvFormat, Runtime, Tensor};

/// Every KV cache format (KIVI with groups of 32 and a 32-token residual).
pub const KV_FORMATS: [KvFormat; 5] = [
    KvFormat::F16,
    KvFormat::Q8_0,
    KvFormat::Q4_0,
    KvFormat::Kivi {
        bits: 4,
        group: 32,
        residual: 32,
    },
    KvFormat::Kivi {
        bits: 2,
        group: 32,
        residual: 32,
    },
];

/// xorshift64* — deterministic, no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Rounds values to what `dtype` stores (F32/F16/BF16) and makes the host tensor.
pub fn float_tensor(v: &[f32], shape: &[usize], dtype: DType) -> (Tensor, Vec<f32>) {
    match dtype {
        DType::F32 => (Tensor::from_f32(v, shape).unwrap(), v.to_vec()),
        DType::F16 => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let r = h.iter().map(|x| x.to_f32()).collect();
            (Tensor::from_f16(&h, shape).unwrap(), r)
        }
        DType::BF16 => {
            let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            let r = h.iter().map(|x| x.to_f32()).collect();
            (Tensor::from_bf16(&h, shape).unwrap(), r)
        }
        other => panic!("float_tensor: {other} is not a float dtype"),
    }
}

/// f64 reference of `y = x · wᵀ`.
pub fn matmul_f64(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|l| x[i * k + l] as f64 * w[j * k + l] as f64)
                .sum();
        }
    }
    y
}

/// Normalised mean squared error of `out` against `reference` (SPEC §4).
pub fn nmse(reference: &[f64], out: &[f32]) -> f64 {
    assert_eq!(reference.len(), out.len(), "output length");
    let num: f64 = reference
        .iter()
        .zip(out)
        .map(|(&r, &o)| (r - o as f64).powi(2))
        .sum();
    let den: f64 = reference.iter().map(|r| r * r).sum();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Every device of the runtime. Fails when no GPU adapter is found unless
/// `WATTLE_ALLOW_NO_GPU=1` (SPEC §11).
pub fn devices_under_test(rt: &Runtime) -> Vec<Device> {
    let devs = rt.devices();
    if rt.gpus().is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!(
            "no GPU adapter found (install mesa-vulkan-drivers: tools/test.sh does); \
             set WATTLE_ALLOW_NO_GPU=1 to run the CPU only"
        );
    }
    devs
}

/// Path of the SmolLM2-135M Q4_1 GGUF when it has been fetched (tools/test.sh does), looked up
/// in `$WATTLE_MODELS` (default `$TMPDIR/wattle-models`).
pub fn smollm2() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("WATTLE_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wattle-models"));
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}
