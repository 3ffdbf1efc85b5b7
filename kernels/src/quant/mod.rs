//! ggml's block formats: block structs, reference quantizers and dequantizers (SPEC §3).
//!
//! Every quantizer here reproduces ggml's `quantize_row_*_ref` byte for byte (no importance
//! matrix); every dequantizer reproduces `dequantize_row_*`. Rows are split into blocks of
//! [`BlockFormat::BLOCK`] values along the last dimension.

use crate::DType;
use half::{bf16, f16};

pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;

pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_k::BlockQ8K;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// One ggml block format: its layout and scalar reference conversions.
pub trait BlockFormat: bytemuck::Pod + Send + Sync {
    /// The dtype this block stores.
    const DTYPE: DType;
    /// Values per block.
    const BLOCK: usize;
    /// Quantizes `x` (a multiple of `BLOCK` finite values) into `out.len() == x.len() / BLOCK` blocks.
    fn quantize_ref(x: &[f32], out: &mut [Self]);
    /// Expands blocks into `out.len() == blocks.len() * BLOCK` values.
    fn dequantize_ref(blocks: &[Self], out: &mut [f32]);
}

/// A weight format: multiplied against activations quantized to `Act` (Q8_0 or Q8_K, as ggml).
pub trait WeightFormat: BlockFormat {
    /// The activation block format, of the same block length.
    type Act: BlockFormat;
    /// Scalar reference dot product of one row of weight blocks with one row of activation
    /// blocks (integer sums per block, scales applied in f32).
    fn dot_ref(w: &[Self], a: &[Self::Act]) -> f32;
}

macro_rules! verify_block_size {
    ($t:ty, $d:expr) => {
        const _: () =
            assert!(std::mem::size_of::<$t>() == <$t as BlockFormat>::DTYPE.block_bytes());
        const _: () = assert!(<$t as BlockFormat>::BLOCK == $d.block_size());
    };
    ($t:ty, $d:expr, weight) => {
        verify_block_size!($t, $d);
        const _: () = assert!(
            <$t as BlockFormat>::BLOCK == <<$t as WeightFormat>::Act as BlockFormat>::BLOCK
        );
    };
}
verify_block_size!(BlockQ8_0, DType::Q8_0, weight);
verify_block_size!(BlockQ4_0, DType::Q4_0, weight);
verify_block_size!(BlockQ4_1, DType::Q4_1, weight);
verify_block_size!(BlockQ4K, DType::Q4_K, weight);
verify_block_size!(BlockQ6K, DType::Q6_K, weight);
verify_block_size!(BlockQ8K, DType::Q8_K);

/// Why a conversion was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuantError {
    /// The input holds a NaN or an infinity at this index.
    NonFinite(usize),
    /// The length is not a multiple of the block size.
    BadLength {
        /// Values given.
        len: usize,
        /// Block size they must fill.
        block: usize,
    },
    /// The output buffer has the wrong size.
    BadOutput {
        /// Bytes (or values) expected.
        expected: usize,
        /// Bytes (or values) given.
        got: usize,
    },
}

impl std::fmt::Display for QuantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantError::NonFinite(i) => write!(f, "non-finite input value at index {i}"),
            QuantError::BadLength { len, block } => {
                write!(f, "{len} values do not fill whole blocks of {block}")
            }
            QuantError::BadOutput { expected, got } => {
                write!(f, "output holds {got}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for QuantError {}

/// ggml's `nearest_int`: round half to even through the float adder (valid for |x| < 2²²).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Converts f32 values to `dtype` storage bytes with ggml's reference quantizers.
pub fn quantize(dtype: DType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let block = dtype.block_size();
    if !x.len().is_multiple_of(block) {
        return Err(QuantError::BadLength {
            len: x.len(),
            block,
        });
    }
    let expected = x.len() / block * dtype.block_bytes();
    if out.len() != expected {
        return Err(QuantError::BadOutput {
            expected,
            got: out.len(),
        });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        if dtype.is_quantized() {
            return Err(QuantError::NonFinite(i));
        }
    }
    fn blocks<B: BlockFormat>(x: &[f32], out: &mut [u8]) {
        let mut b = vec![B::zeroed(); x.len() / B::BLOCK];
        B::quantize_ref(x, &mut b);
        out.copy_from_slice(bytemuck::cast_slice(&b));
    }
    match dtype {
        DType::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        DType::Q8_0 => blocks::<BlockQ8_0>(x, out),
        DType::Q4_0 => blocks::<BlockQ4_0>(x, out),
        DType::Q4_1 => blocks::<BlockQ4_1>(x, out),
        DType::Q4_K => blocks::<BlockQ4K>(x, out),
        DType::Q6_K => blocks::<BlockQ6K>(x, out),
        DType::Q8_K => blocks::<BlockQ8K>(x, out),
    }
    Ok(())
}

/// Converts `dtype` storage bytes back to f32 values (`out.len()` values).
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let block = dtype.block_size();
    if !out.len().is_multiple_of(block) {
        return Err(QuantError::BadLength {
            len: out.len(),
            block,
        });
    }
    let expected = out.len() / block * dtype.block_bytes();
    if bytes.len() != expected {
        return Err(QuantError::BadOutput {
            expected,
            got: bytes.len(),
        });
    }
    fn blocks<B: BlockFormat>(bytes: &[u8], out: &mut [f32]) {
        // Copy into aligned blocks: the input may come from an unaligned file offset.
        let mut b = vec![B::zeroed(); out.len() / B::BLOCK];
        bytemuck::cast_slice_mut::<B, u8>(&mut b).copy_from_slice(bytes);
        B::dequantize_ref(&b, out);
    }
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::Q8_0 => blocks::<BlockQ8_0>(bytes, out),
        DType::Q4_0 => blocks::<BlockQ4_0>(bytes, out),
        DType::Q4_1 => blocks::<BlockQ4_1>(bytes, out),
        DType::Q4_K => blocks::<BlockQ4K>(bytes, out),
        DType::Q6_K => blocks::<BlockQ6K>(bytes, out),
        DType::Q8_K => blocks::<BlockQ8K>(bytes, out),
    }
    Ok(())
}
