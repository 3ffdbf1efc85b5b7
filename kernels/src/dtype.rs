//! Element and block formats known to wattle (SPEC §2, §3).

use std::fmt;
use std::str::FromStr;

/// The storage format of a tensor: plain floats or one of ggml's block formats.
///
/// Block formats store `block_size()` consecutive values of the last dimension in
/// `block_bytes()` bytes, laid out exactly as ggml does.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DType {
    /// IEEE-754 binary32.
    F32,
    /// IEEE-754 binary16.
    F16,
    /// bfloat16 (the top half of a binary32).
    BF16,
    /// ggml Q8_0: f16 scale + 32 × i8.
    Q8_0,
    /// ggml Q4_0: f16 scale + 32 × 4-bit.
    Q4_0,
    /// ggml Q4_1: f16 scale, f16 minimum + 32 × 4-bit.
    Q4_1,
    /// ggml Q4_K: 256-value super-blocks with 6-bit sub-block scales and minimums.
    Q4_K,
    /// ggml Q6_K: 256-value super-blocks of 6-bit values with 8-bit sub-block scales.
    Q6_K,
    /// ggml Q8_K: activation format, f32 scale + 256 × i8 + 16 × i16 block sums.
    Q8_K,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q8_K,
    ];

    /// Number of values in one block (1 for plain floats).
    pub const fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
            DType::Q4_K | DType::Q6_K | DType::Q8_K => 256,
        }
    }

    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q4_K => 144,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
        }
    }

    /// True for the block-quantized formats.
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `len` values, or `None` when `len` is not a multiple of the block size.
    pub const fn row_bytes(self, len: usize) -> Option<usize> {
        if !len.is_multiple_of(self.block_size()) {
            return None;
        }
        Some(len / self.block_size() * self.block_bytes())
    }

    /// The name ggml prints (`f32`, `q4_0`, `q4_K`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q4_K => "q4_K",
            DType::Q6_K => "q6_K",
            DType::Q8_K => "q8_K",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when a string names no [`DType`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDTypeError(pub String);

impl fmt::Display for ParseDTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown dtype `{}`", self.0)
    }
}

impl std::error::Error for ParseDTypeError {}

impl FromStr for DType {
    type Err = ParseDTypeError;

    /// Parses ggml's names case-insensitively (`Q4_K`, `q4_k`, `bf16`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseDTypeError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for d in DType::ALL {
            assert_eq!(d.to_string().parse::<DType>(), Ok(d));
            assert_eq!(d.to_string().to_uppercase().parse::<DType>(), Ok(d));
        }
        assert_eq!(DType::Q4_K.to_string(), "q4_K");
        assert!("q5_0".parse::<DType>().is_err());
    }

    #[test]
    fn block_geometry_matches_ggml() {
        assert_eq!(DType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(DType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(DType::Q6_K.row_bytes(256), Some(210));
        assert_eq!(DType::Q8_0.row_bytes(33), None);
        assert_eq!(DType::F16.row_bytes(3), Some(6));
    }
}
