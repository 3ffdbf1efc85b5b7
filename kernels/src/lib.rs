//! wattle's CPU kernels.
//!
//! Every kernel has one scalar reference (the truth) and SIMD bodies per instruction set
//! (`arch/`), chosen at run time ([`isa`]). This crate has no GPU dependencies.
#![deny(missing_docs)]

pub(crate) mod arch;
pub mod attention;
pub mod dtype;
pub mod isa;
pub mod kv;
pub mod linear_attn;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod probe;
pub mod qmatmul;
pub mod quant;

pub use dtype::{DType, ParseDTypeError};
pub use isa::{Isa, IsaError};
