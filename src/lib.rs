//! # wattle
//!
//! Compute kernels for on-device LLM inference: quantized matmul, attention and KV-cache
//! compression on the CPU (hand-written SIMD) and on every GPU wgpu reaches (hand-written WGSL).
//!
//! ```no_run
//! use wattle::{Runtime, Tensor};
//! # fn main() -> Result<(), wattle::Error> {
//! let rt = Runtime::new()?;
//! let w = Tensor::from_f32(&vec![0.5; 64 * 32], &[64, 32])?;
//! let x = Tensor::from_f32(&vec![1.0; 2 * 32], &[2, 32])?;
//! let y = rt.matmul(&x, &w)?; // [2, 64]
//! assert_eq!(y.to_f32_vec()?[0], 16.0);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod attention;
mod backend;
mod device;
pub mod energy;
mod error;
pub mod gguf;
mod host;
mod kv;
mod linear_attention;
mod ops;
mod runtime;
pub mod sched;
mod tensor;

pub use attention::AttentionParams;
pub use backend::gpu::tune::{TuneEntry, TuneOptions};
pub use device::{Device, DeviceFeatures, DeviceInfo, DeviceKind, DeviceLimits, GpuApi};
pub use error::{Error, Result};
pub use kv::{Eviction, KvCache, KvCacheConfig, KvFormat};
pub use linear_attention::{LinearAttention, LinearForm};
pub use ops::{RopeMode, RopeParams};
pub use runtime::Runtime;
pub use tensor::Tensor;
pub use wattle_kernels::{DType, Isa};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Internals exposed for wattle's own tests, benchmarks and tools. Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::backend::gpu::api::*;
    pub use crate::backend::gpu::matmul::{
        MatmulChoice, MatmulKernel, MatmulVariant, MatvecConfig, Reduce,
    };
    pub use crate::backend::gpu::shader_sources;
}
