//! Element-wise, row-wise and lookup ops an inference engine needs around the matmuls:
//! RMS normalisation, rotary embeddings, SwiGLU, residual adds, embedding lookup and the
//! softmax/argmax/top-k of logits.
//!
//! Each op has a scalar reference (`*_ref`, the truth) and an entry point taking an [`Isa`] and
//! a [`ThreadPool`] that picks the SIMD body and splits large work across the pool. Slices are
//! row-major; the entry points panic on inconsistent lengths (the runtime validates first).

pub mod act;
pub mod norm;
pub mod rope;
pub mod rows;
mod simd;
pub mod softmax;

pub use act::{add, add_ref, silu_mul, silu_mul_ref};
pub use norm::{rms_norm, rms_norm_ref};
pub use rope::{rope, rope_ref, rope_table, RopeArgs, RopeLayout};
pub use rows::get_rows;
pub use softmax::{argmax, argmax_ref, softmax, softmax_ref, top_k, top_k_ref};

#[cfg(doc)]
use crate::{pool::ThreadPool, Isa};
