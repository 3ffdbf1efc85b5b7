//! Blocking constants of the float GEMM, one module per ISA, named by loop level (BLIS):
//!
//! * `MR × NV` vectors: the register tile (micro-kernel), `NR = NV · LANES` columns of `y`.
//! * `KC`: depth of a packed block; a `KC × NR` panel of `w` stays in L1 across the `MR` loop.
//! * `MC`: rows of `x` per packed block; `MC × KC` f32 stay in L2.
//! * `NC`: rows of `w` per packed block; `NC × KC` f32 stay in L2/L3.
//!
//! `MC` is a multiple of `MR` and `NC` of `NR`.

/// Portable scalar path (1 lane).
pub(crate) mod scalar {
    /// Tile rows.
    pub const MR: usize = 4;
    /// Tile vectors (of 1 lane).
    pub const NV: usize = 4;
    /// Depth.
    pub const KC: usize = 256;
    /// Rows of `x` per block.
    pub const MC: usize = 64;
    /// Rows of `w` per block.
    pub const NC: usize = 256;
}

/// AVX2 + FMA (8 lanes): 6 × 16 tile, 12 accumulators.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    /// Tile rows.
    pub const MR: usize = 6;
    /// Tile vectors of 8 lanes.
    pub const NV: usize = 2;
    /// Depth.
    pub const KC: usize = 256;
    /// Rows of `x` per block.
    pub const MC: usize = 120;
    /// Rows of `w` per block.
    pub const NC: usize = 1024;
}

/// AVX-512 (16 lanes): 14 × 32 tile, 28 accumulators.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    /// Tile rows.
    pub const MR: usize = 14;
    /// Tile vectors of 16 lanes.
    pub const NV: usize = 2;
    /// Depth.
    pub const KC: usize = 256;
    /// Rows of `x` per block.
    pub const MC: usize = 126;
    /// Rows of `w` per block.
    pub const NC: usize = 1024;
}

/// NEON (4 lanes): 8 × 12 tile, 24 accumulators.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    /// Tile rows.
    pub const MR: usize = 8;
    /// Tile vectors of 4 lanes.
    pub const NV: usize = 3;
    /// Depth.
    pub const KC: usize = 256;
    /// Rows of `x` per block.
    pub const MC: usize = 128;
    /// Rows of `w` per block.
    pub const NC: usize = 768;
}
