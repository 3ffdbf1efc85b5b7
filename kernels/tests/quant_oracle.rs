//! Byte-for-byte checks of the reference quantizers against ggml's own (`ggml-quant`), when the
//! peer binary is present (`../shared/peers/ggml-cpu/ggml-quant`, or `WATTLE_GGML_QUANT`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use wattle_kernels::quant::{dequantize, quantize};
use wattle_kernels::DType;

fn oracle() -> Option<PathBuf> {
    let p = std::env::var_os("WATTLE_GGML_QUANT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/ggml-cpu/ggml-quant")
        });
    let vnni = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| s.contains("avx512_vnni"));
    if p.exists() && vnni {
        Some(p)
    } else {
        eprintln!(
            "quant_oracle: ggml-quant not found at {} (or no AVX-512 VNNI): skipped",
            p.display()
        );
        None
    }
}

fn run(bin: &PathBuf, verb: &str, dtype: DType, row: usize, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(bin)
        .args([verb, dtype.name(), &row.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ggml-quant");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "ggml-quant {verb} {dtype} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Rows of 256 values from awkward distributions.
fn inputs() -> Vec<Vec<f32>> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut rows = Vec::new();
    for scale in [1.0f32, 1e-3, 100.0, 6e4] {
        rows.push((0..256).map(|_| rng.uniform() * scale).collect());
    }
    // Heavy tails, outliers, skew.
    rows.push((0..256).map(|_| rng.uniform().powi(5) * 3.0).collect());
    rows.push(
        (0..256)
            .map(|i| if i % 37 == 0 { 50.0 } else { rng.uniform() })
            .collect(),
    );
    rows.push((0..256).map(|_| rng.uniform().abs() + 0.5).collect());
    rows.push((0..256).map(|_| -rng.uniform().abs() - 0.25).collect());
    // Zeros, constants, single spikes, ties.
    rows.push(vec![0.0; 256]);
    rows.push(vec![0.75; 256]);
    rows.push((0..256).map(|i| if i == 77 { -3.0 } else { 0.0 }).collect());
    rows.push((0..256).map(|i| (i % 17) as f32 * 0.5 - 4.0).collect());
    rows.push((0..256).map(|i| (i % 9) as f32 - 4.0).collect());
    // Near the f16 limits and subnormals.
    rows.push(
        (0..256)
            .map(|i| {
                if i % 2 == 0 {
                    65504.0
                } else {
                    -65000.0 * rng.uniform()
                }
            })
            .collect(),
    );
    rows.push((0..256).map(|_| rng.uniform() * 1e-6).collect());
    // Mixed: one zero half-block, one normal.
    rows.push(
        (0..256)
            .map(|i| if i < 128 { 0.0 } else { rng.uniform() })
            .collect(),
    );
    for _ in 0..64 {
        let s = 10f32.powf(rng.uniform() * 3.0);
        rows.push(
            (0..256)
                .map(|_| rng.uniform() * s + rng.uniform() * 0.1 * s)
                .collect(),
        );
    }
    rows
}

/// Every format ggml-quant can quantize (its Q8_K has no row quantizer: checked by property tests).
const TYPES: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4_K,
    DType::Q6_K,
];

#[test]
fn quantized_bytes_match_ggml() {
    let Some(bin) = oracle() else { return };
    let rows = inputs();
    let flat: Vec<f32> = rows.concat();
    let raw: Vec<u8> = bytemuck::cast_slice(&flat).to_vec();
    let mut failures = Vec::new();
    for dtype in TYPES {
        let want = run(&bin, "quantize", dtype, 256, &raw);
        let mut got = vec![0u8; want.len()];
        quantize(dtype, &flat, &mut got).unwrap();
        let bb = dtype.row_bytes(256).unwrap();
        for (r, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            if g != w {
                let first = g.iter().zip(w).position(|(a, b)| a != b).unwrap();
                failures.push(format!("{dtype} row {r}: first differing byte {first}"));
            }
        }
        // Dequantized values must match too (ggml-quant has no f32 "dequantizer").
        if dtype == DType::F32 {
            continue;
        }
        let want_f = run(&bin, "dequantize", dtype, 256, &want);
        let mut got_f = vec![0f32; flat.len()];
        dequantize(dtype, &want, &mut got_f).unwrap();
        let want_f: &[f32] = bytemuck::cast_slice(&want_f);
        for (i, (a, b)) in got_f.iter().zip(want_f).enumerate() {
            if a.to_bits() != b.to_bits() {
                failures.push(format!("{dtype} dequantize value {i}: {a} vs {b}"));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
