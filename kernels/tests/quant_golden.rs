//! Golden vectors made with ggml's own quantizer (tests/golden/make.sh): bytes and dequantized
//! values must match exactly, without the peer present. Plus round-trip error bounds per format.

use wattle_kernels::quant::{dequantize, quantize, BlockFormat, BlockQ8K, QuantError};
use wattle_kernels::DType;

fn golden(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn input() -> Vec<f32> {
    bytemuck::cast_slice::<u8, f32>(&golden("input.f32")).to_vec()
}

#[test]
fn golden_bytes_and_values() {
    let x = input();
    for dtype in [
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
    ] {
        let want = golden(&format!("{dtype}.bin"));
        let mut got = vec![0u8; want.len()];
        quantize(dtype, &x, &mut got).unwrap();
        let bb = dtype.row_bytes(256).unwrap();
        for (r, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            assert_eq!(g, w, "{dtype}: row {r} differs from ggml's bytes");
        }
        let want_f = golden(&format!("{dtype}.deq.f32"));
        let want_f: &[f32] = bytemuck::cast_slice(&want_f);
        let mut got_f = vec![0f32; x.len()];
        dequantize(dtype, &want, &mut got_f).unwrap();
        for (i, (a, b)) in got_f.iter().zip(want_f).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{dtype}: dequantized value {i}: {a} vs {b}"
            );
        }
    }
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Largest |x − dequant(quant(x))| relative to the block's largest magnitude, per format.
#[test]
fn round_trip_error_bounds() {
    let mut rng = Rng(99);
    // (format, bound on max error / block amax). Q8_0 ≈ 1/254, Q4_1 ≈ 1/30 of the
    // range, with slack for f16 rounding of scales; K-quants are looser per value.
    let bounds = [
        (DType::Q8_0, 0.0045),
        (DType::Q4_0, 0.126), // −amax clamps to code 15: 7/8 of it
        (DType::Q4_1, 0.070),
        (DType::Q4_K, 0.16),
        (DType::Q6_K, 0.036),
        (DType::Q8_K, 0.0045),
        (DType::F16, 0.001),
        (DType::BF16, 0.004),
    ];
    for trial in 0..200 {
        // Keep the f16 scales normal (subnormal scales lose relative precision by design).
        let scale = 10f32.powf(1.0 + rng.uniform() * 2.0);
        let x: Vec<f32> = (0..512).map(|_| rng.uniform() * scale).collect();
        for (dtype, bound) in bounds {
            let mut q = vec![0u8; dtype.row_bytes(512).unwrap()];
            quantize(dtype, &x, &mut q).unwrap();
            let mut y = vec![0f32; 512];
            dequantize(dtype, &q, &mut y).unwrap();
            for (bx, by) in x
                .chunks(dtype.block_size().max(32))
                .zip(y.chunks(dtype.block_size().max(32)))
            {
                let amax = bx.iter().fold(0f32, |a, v| a.max(v.abs()));
                let err = bx
                    .iter()
                    .zip(by)
                    .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
                assert!(
                    err <= bound * amax,
                    "{dtype} trial {trial}: max error {err} > {bound} × {amax}"
                );
            }
        }
    }
}

#[test]
fn q8_k_block_sums_are_consistent() {
    let mut rng = Rng(5);
    let x: Vec<f32> = (0..512).map(|_| rng.uniform() * 3.0).collect();
    let mut b = vec![
        BlockQ8K {
            d: 0.0,
            qs: [0; 256],
            bsums: [0; 16]
        };
        2
    ];
    BlockQ8K::quantize_ref(&x, &mut b);
    for blk in &b {
        for (g, s) in blk.qs.chunks(16).zip(blk.bsums) {
            assert_eq!(g.iter().map(|&q| q as i16).sum::<i16>(), s);
        }
        // The largest magnitude maps to ±127 exactly.
        assert_eq!(blk.qs.iter().map(|q| q.unsigned_abs()).max(), Some(127));
    }
}

#[test]
fn bad_input_is_refused() {
    let mut out = vec![0u8; 34];
    let mut x = vec![1.0f32; 32];
    x[7] = f32::NAN;
    assert_eq!(
        quantize(DType::Q8_0, &x, &mut out),
        Err(QuantError::NonFinite(7))
    );
    x[7] = f32::INFINITY;
    assert_eq!(
        quantize(DType::Q8_0, &x, &mut out),
        Err(QuantError::NonFinite(7))
    );
    assert!(matches!(
        quantize(DType::Q4_K, &[0.0; 32], &mut out),
        Err(QuantError::BadLength { .. })
    ));
    assert!(matches!(
        quantize(DType::Q8_0, &[0.0; 32], &mut out[..10]),
        Err(QuantError::BadOutput { .. })
    ));
}
