//! Loading a llama-architecture model from a GGUF file: the hyperparameters from the metadata and
//! the weights as wattle [`Tensor`]s that view the memory-mapped file (zero-copy on the CPU,
//! uploaded once with [`Tensor::to`] for a GPU device).
//!
//! The tensor names are llama.cpp's: `token_embd.weight`, `output_norm.weight`,
//! `output.weight` (absent when the output projection is tied to the embeddings) and per block
//! `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
//! ffn_down}.weight`. Shapes are wattle's (outermost first), so a projection from `k` to `n`
//! features is `[n, k]`, which is what `rt.matmul(x, w)` takes.

use std::fmt;
use std::path::Path;

use wattle::gguf::{GgufFile, Value};
use wattle::{DType, Device, Tensor};

/// Architectures whose GGUF files use the llama tensor layout and keys (`<arch>.*`).
pub const SUPPORTED_ARCHS: [&str; 2] = ["llama", "mistral"];

/// Why a model could not be loaded.
#[derive(Debug)]
pub enum ModelError {
    /// The file is not a readable GGUF file.
    Gguf(String),
    /// `general.architecture` names an architecture the decoder does not implement.
    UnsupportedArch(String),
    /// A required metadata key is absent or has the wrong type.
    Metadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A required tensor is absent.
    MissingTensor(String),
    /// A tensor's shape does not fit the hyperparameters.
    Shape {
        /// The tensor.
        name: String,
        /// The shape the metadata implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A tensor's ggml type is not one wattle reads, or not one this use allows.
    DType {
        /// The tensor.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The hyperparameters are inconsistent (e.g. heads that do not divide the width).
    Config(String),
    /// A wattle call failed while preparing the weights (e.g. the upload to a GPU).
    Wattle(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::UnsupportedArch(a) => write!(
                f,
                "unsupported architecture `{a}` (the decoder runs {})",
                SUPPORTED_ARCHS.join(", ")
            ),
            ModelError::Metadata { key, problem } => write!(f, "metadata `{key}`: {problem}"),
            ModelError::MissingTensor(n) => write!(f, "missing tensor `{n}`"),
            ModelError::Shape {
                name,
                expected,
                got,
            } => write!(
                f,
                "tensor `{name}` has shape {got:?}, the metadata implies {expected:?}"
            ),
            ModelError::DType { name, problem } => write!(f, "tensor `{name}`: {problem}"),
            ModelError::Config(m) => write!(f, "inconsistent hyperparameters: {m}"),
            ModelError::Wattle(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// How positions are scaled before the rotary embedding (`<arch>.rope.scaling.*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Positions as they are.
    None,
    /// Linear interpolation: positions divided by `factor` (freq_scale = 1/factor).
    Linear {
        /// The divisor.
        factor: f32,
    },
}

/// The hyperparameters of a llama-architecture model.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `general.architecture`.
    pub arch: String,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Model width (`embedding_length`).
    pub n_embd: usize,
    /// Hidden width of the feed-forward network.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Dimension of one head (`attention.key_length`, else `n_embd / n_head`).
    pub head_dim: usize,
    /// Leading dimensions of each head that the rotary embedding turns.
    pub n_rot: usize,
    /// RoPE base frequency.
    pub rope_freq_base: f32,
    /// RoPE position scaling.
    pub rope_scaling: RopeScaling,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Context the model was trained for.
    pub n_ctx_train: usize,
    /// Vocabulary size (rows of the embedding table).
    pub n_vocab: usize,
}

impl Config {
    /// Reads the hyperparameters of `f` (llama architecture or close kin).
    pub fn from_gguf(f: &GgufFile) -> Result<Config, ModelError> {
        let arch = match f.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(ModelError::Metadata {
                    key: "general.architecture".into(),
                    problem: "is not a string".into(),
                })
            }
            None => {
                return Err(ModelError::Metadata {
                    key: "general.architecture".into(),
                    problem: "absent".into(),
                })
            }
        };
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(ModelError::UnsupportedArch(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let uint = |k: &str| -> Result<Option<usize>, ModelError> {
            let name = key(k);
            match f.get(&name) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .map(Some)
                    .ok_or(ModelError::Metadata {
                        key: name,
                        problem: format!("expected a non-negative integer, got {v:?}"),
                    }),
            }
        };
        let need = |k: &str| -> Result<usize, ModelError> {
            uint(k)?.ok_or_else(|| ModelError::Metadata {
                key: key(k),
                problem: "absent".into(),
            })
        };
        let float = |k: &str| -> Result<Option<f32>, ModelError> {
            let name = key(k);
            match f.get(&name) {
                None => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() => Ok(Some(x as f32)),
                    _ => Err(ModelError::Metadata {
                        key: name,
                        problem: format!("expected a finite number, got {v:?}"),
                    }),
                },
            }
        };
        let n_layer = need("block_count")?;
        let n_embd = need("embedding_length")?;
        let n_ff = need("feed_forward_length")?;
        let n_head = need("attention.head_count")?;
        let n_head_kv = uint("attention.head_count_kv")?.unwrap_or(n_head);
        if n_layer == 0 || n_embd == 0 || n_ff == 0 || n_head == 0 || n_head_kv == 0 {
            return Err(ModelError::Config(
                "block count, widths and head counts must be at least 1".into(),
            ));
        }
        if n_head % n_head_kv != 0 {
            return Err(ModelError::Config(format!(
                "{n_head} query heads are not a multiple of {n_head_kv} KV heads"
            )));
        }
        let head_dim = match uint("attention.key_length")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(ModelError::Config(format!(
                    "width {n_embd} is not a multiple of {n_head} heads"
                )))
            }
        };
        if let Some(dv) = uint("attention.value_length")? {
            if dv != head_dim {
                return Err(ModelError::Config(format!(
                    "value heads of {dv} differ from key heads of {head_dim} (not supported)"
                )));
            }
        }
        let n_rot = uint("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope.dimension_count {n_rot} must be even and at most the head dimension {head_dim}"
            )));
        }
        let rope_scaling = match f.get(&key("rope.scaling.type")) {
            None => match float("rope.scale_linear")? {
                Some(s) if s != 1.0 => RopeScaling::Linear { factor: s },
                _ => RopeScaling::None,
            },
            Some(Value::String(t)) if t == "none" => RopeScaling::None,
            Some(Value::String(t)) if t == "linear" => match float("rope.scaling.factor")? {
                Some(s) if s > 0.0 => RopeScaling::Linear { factor: s },
                Some(0.0) => RopeScaling::None,
                other => {
                    return Err(ModelError::Metadata {
                        key: key("rope.scaling.factor"),
                        problem: format!("linear scaling needs a positive factor, got {other:?}"),
                    })
                }
            },
            Some(v) => {
                return Err(ModelError::Metadata {
                    key: key("rope.scaling.type"),
                    problem: format!("{v:?} is not supported (none and linear are)"),
                })
            }
        };
        let n_vocab = match f.tensor_info("token_embd.weight") {
            Some(t) if t.shape.len() == 2 => t.shape[0],
            Some(t) => {
                return Err(ModelError::Shape {
                    name: "token_embd.weight".into(),
                    expected: vec![0, n_embd],
                    got: t.shape.clone(),
                })
            }
            None => return Err(ModelError::MissingTensor("token_embd.weight".into())),
        };
        Ok(Config {
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base: float("rope.freq_base")?.unwrap_or(10000.0),
            rope_scaling,
            rms_eps: float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            n_ctx_train: uint("context_length")?.unwrap_or(2048),
            n_vocab,
            arch,
        })
    }

    /// RoPE's frequency scale (1 without scaling, 1/factor for linear scaling).
    pub fn rope_freq_scale(&self) -> f32 {
        match self.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::Linear { factor } => 1.0 / factor,
        }
    }

    /// The hyperparameters in one line (for diagnostics).
    pub fn summary(&self) -> String {
        format!(
            "{} {} layers, width {}, FFN {}, {}/{} heads of {}, rope {} dims base {}, vocab {}, trained ctx {}",
            self.arch,
            self.n_layer,
            self.n_embd,
            self.n_ff,
            self.n_head,
            self.n_head_kv,
            self.head_dim,
            self.n_rot,
            self.rope_freq_base,
            self.n_vocab,
            self.n_ctx_train
        )
    }
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct Block {
    /// RMSNorm weight before attention `[n_embd]` F32.
    pub attn_norm: Tensor,
    /// Query projection `[n_head·head_dim, n_embd]`.
    pub wq: Tensor,
    /// Key projection `[n_head_kv·head_dim, n_embd]`.
    pub wk: Tensor,
    /// Value projection `[n_head_kv·head_dim, n_embd]`.
    pub wv: Tensor,
    /// Attention output projection `[n_embd, n_head·head_dim]`.
    pub wo: Tensor,
    /// RMSNorm weight before the feed-forward network `[n_embd]` F32.
    pub ffn_norm: Tensor,
    /// SwiGLU gate `[n_ff, n_embd]`.
    pub w_gate: Tensor,
    /// SwiGLU up `[n_ff, n_embd]`.
    pub w_up: Tensor,
    /// Down projection `[n_embd, n_ff]`.
    pub w_down: Tensor,
    /// The same projections concatenated row-wise, when [`Model::fuse`] made them.
    pub fused: Option<FusedBlock>,
}

/// Projections that read the same input, stacked into one matrix so one matmul call does the
/// work of several (fewer, larger calls: better bandwidth on small models).
#[derive(Clone, Debug)]
pub struct FusedBlock {
    /// `wq`, `wk`, `wv` stacked: `[(n_head + 2·n_head_kv)·head_dim, n_embd]`.
    pub wqkv: Tensor,
    /// `w_gate`, `w_up` stacked: `[2·n_ff, n_embd]`.
    pub w_gate_up: Tensor,
}

/// `parts` stacked along their first dimension (same dtype and row length), on `device`.
fn stack_rows(parts: &[&Tensor], device: &Device) -> wattle::Result<Option<Tensor>> {
    let dtype = parts[0].dtype();
    let k = parts[0].shape()[1];
    if parts
        .iter()
        .any(|p| p.dtype() != dtype || p.shape()[1] != k)
    {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.storage_bytes()).sum());
    let mut n = 0;
    for p in parts {
        bytes.extend_from_slice(&p.to_bytes()?);
        n += p.shape()[0];
    }
    Ok(Some(
        Tensor::from_bytes(dtype, &[n, k], &bytes)?.to(device)?,
    ))
}

/// A loaded model: hyperparameters and weights on one device.
#[derive(Clone, Debug)]
pub struct Model {
    /// Hyperparameters.
    pub cfg: Config,
    /// Token embeddings `[n_vocab, n_embd]`, any weight dtype (rows read with `get_rows`).
    pub tok_embd: Tensor,
    /// Final RMSNorm weight `[n_embd]`.
    pub output_norm: Tensor,
    /// Output projection `[n_vocab, n_embd]` (the embedding table itself when tied).
    pub output: Tensor,
    /// True when `output` is the embedding table (no `output.weight` in the file).
    pub tied_output: bool,
    /// The blocks, first to last.
    pub blocks: Vec<Block>,
    /// The device holding the weights.
    pub device: Device,
}

/// Weight dtypes `rt.matmul` reads.
const MATMUL_DTYPES: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4_K,
    DType::Q6_K,
];

impl Model {
    /// Opens `path` and loads its model onto `device`.
    pub fn open(path: &Path, device: &Device) -> Result<(GgufFile, Model), ModelError> {
        let f = GgufFile::open(path)
            .map_err(|e| ModelError::Gguf(format!("{}: {e}", path.display())))?;
        let m = Model::from_gguf(&f, device)?;
        Ok((f, m))
    }

    /// Loads the model of `f` onto `device`. The tensors view `f`'s mapping (which they keep
    /// alive); for a GPU device each is uploaded once.
    pub fn from_gguf(f: &GgufFile, device: &Device) -> Result<Model, ModelError> {
        let cfg = Config::from_gguf(f)?;
        let (e, hd) = (cfg.n_embd, cfg.head_dim);
        let q_w = cfg.n_head * hd;
        let kv_w = cfg.n_head_kv * hd;
        let load = |name: &str, shape: &[usize], matmul: bool| -> Result<Tensor, ModelError> {
            let info = f
                .tensor_info(name)
                .ok_or_else(|| ModelError::MissingTensor(name.into()))?;
            if info.shape != shape {
                return Err(ModelError::Shape {
                    name: name.into(),
                    expected: shape.to_vec(),
                    got: info.shape.clone(),
                });
            }
            let dtype = info.dtype.ok_or_else(|| ModelError::DType {
                name: name.into(),
                problem: format!("ggml type {} is not one wattle reads", info.ggml_type),
            })?;
            if matmul && !MATMUL_DTYPES.contains(&dtype) {
                return Err(ModelError::DType {
                    name: name.into(),
                    problem: format!("{dtype} weights are not supported by matmul"),
                });
            }
            if !matmul && dtype != DType::F32 {
                return Err(ModelError::DType {
                    name: name.into(),
                    problem: format!("norm weights must be F32, got {dtype}"),
                });
            }
            let t = f
                .tensor(name)
                .map_err(|err| ModelError::Gguf(format!("tensor `{name}`: {err}")))?;
            t.to(device)
                .map_err(|err| ModelError::Wattle(format!("uploading `{name}` to {device}: {err}")))
        };
        let tok_embd = load("token_embd.weight", &[cfg.n_vocab, e], true)?;
        let output_norm = load("output_norm.weight", &[e], false)?;
        let (output, tied_output) = if f.tensor_info("output.weight").is_some() {
            (load("output.weight", &[cfg.n_vocab, e], true)?, false)
        } else {
            (tok_embd.clone(), true)
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: load(&n("attn_norm"), &[e], false)?,
                wq: load(&n("attn_q"), &[q_w, e], true)?,
                wk: load(&n("attn_k"), &[kv_w, e], true)?,
                wv: load(&n("attn_v"), &[kv_w, e], true)?,
                wo: load(&n("attn_output"), &[e, q_w], true)?,
                ffn_norm: load(&n("ffn_norm"), &[e], false)?,
                w_gate: load(&n("ffn_gate"), &[cfg.n_ff, e], true)?,
                w_up: load(&n("ffn_up"), &[cfg.n_ff, e], true)?,
                w_down: load(&n("ffn_down"), &[e, cfg.n_ff], true)?,
                fused: None,
            });
        }
        // A tensor the llama layout has no use for (a bias, an extra norm, llama 3's
        // `rope_freqs`) changes the maths: refuse the file rather than run it wrongly.
        const PER_BLOCK: [&str; 9] = [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ];
        for t in f.tensors() {
            let known = match t.name.as_str() {
                "token_embd.weight" | "output_norm.weight" | "output.weight" => true,
                name => name
                    .strip_prefix("blk.")
                    .and_then(|r| r.split_once('.'))
                    .and_then(|(i, r)| Some((i.parse::<usize>().ok()?, r.strip_suffix(".weight")?)))
                    .is_some_and(|(i, r)| i < cfg.n_layer && PER_BLOCK.contains(&r)),
            };
            if !known {
                return Err(ModelError::Config(format!(
                    "tensor `{}` is not part of the llama layout (biases, extra norms and rope \
                     frequency tables are not supported)",
                    t.name
                )));
            }
        }
        Ok(Model {
            cfg,
            tok_embd,
            output_norm,
            output,
            tied_output,
            blocks,
            device: device.clone(),
        })
    }

    /// Stacks each block's Q/K/V and gate/up projections into one matrix each (a copy of those
    /// weights: they no longer view the file). Blocks whose projections differ in dtype stay as
    /// they are. The decoder then runs 4 matmuls per block instead of 7.
    pub fn fuse(&mut self) -> Result<(), ModelError> {
        let dev = self.device.clone();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let err =
                |e: wattle::Error| ModelError::Wattle(format!("block {i}: stacking weights: {e}"));
            let qkv = stack_rows(&[&b.wq, &b.wk, &b.wv], &dev).map_err(err)?;
            let gate_up = stack_rows(&[&b.w_gate, &b.w_up], &dev).map_err(err)?;
            if let (Some(wqkv), Some(w_gate_up)) = (qkv, gate_up) {
                b.fused = Some(FusedBlock { wqkv, w_gate_up });
            }
        }
        Ok(())
    }

    /// Bytes of all weights (the embedding table counted once when tied).
    pub fn weight_bytes(&self) -> usize {
        let mut n = self.tok_embd.storage_bytes() + self.output_norm.storage_bytes();
        if !self.tied_output {
            n += self.output.storage_bytes();
        }
        for b in &self.blocks {
            for t in [
                &b.attn_norm,
                &b.wq,
                &b.wk,
                &b.wv,
                &b.wo,
                &b.ffn_norm,
                &b.w_gate,
                &b.w_up,
                &b.w_down,
            ] {
                n += t.storage_bytes();
            }
        }
        n
    }
}
