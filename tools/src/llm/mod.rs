//! The reference decoder (issue 12): a plain, readable path from a GGUF model to text, to check
//! wattle's kernels end to end against llama.cpp. For now, its tokenizer.

// The decoder to come uses the rest of the tokenizer's API; the CLI uses only `tokenize` so far.
#[allow(dead_code)]
pub mod tokenizer;
