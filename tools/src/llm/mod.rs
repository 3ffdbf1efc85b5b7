//! The reference decoder (issue 12): a plain, readable path from a GGUF model to text, to check
//! wattle's kernels end to end against llama.cpp: the tokenizer, the model loader, the decoder
//! and the `run` / `perplexity` commands.

pub mod cli;
// Library-style modules: the CLI does not use every item of their API.
#[allow(dead_code)]
pub mod decoder;
#[allow(dead_code)]
pub mod model;
#[allow(dead_code)]
pub mod tokenizer;
