//! Engine ops around the matmuls: RMS norm, rotary embeddings, SwiGLU, residual add, embedding
//! lookup, and softmax / argmax / top-k over logits.
//!
//! Each runs on the device holding its tensors (operands on different devices give
//! [`Error::DeviceMismatch`]) and returns a new tensor there. Bad shapes, dtypes and arguments give
//! typed errors, never a panic.
//!
//! On the CPU every op has a scalar reference and SIMD paths (AVX-512, AVX2, NEON) that use the
//! thread pool only when the work is large (a decode row never wakes it). On GPUs the kernels are
//! in `shaders/ops.wgsl`, with subgroup or workgroup-memory reductions; an operand other than an
//! embedding table must fit one storage binding ([`Error::TooLarge`] otherwise). `argmax` and
//! `top_k` return host vectors (the GPU result is downloaded).

use crate::backend::gpu::ops::GpuOp;
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::tensor::Tensor;
use crate::DType;

/// Which pairs of values of a head [`Runtime::rope`] rotates together (ggml's rope types).
///
/// **Llama-architecture GGUF models use [`RopeMode::Normal`].** llama.cpp maps `LLM_ARCH_LLAMA`
/// (and SmolLM2, which GGUF files declare as `llama`) to `LLAMA_ROPE_TYPE_NORM`: the Hugging
/// Face checkpoints rotate half-split pairs ("rotate_half"), but `convert_hf_to_gguf.py`
/// permutes the rows of `attn_q` and `attn_k` at conversion so that, in the GGUF weights, the
/// same rotation acts on adjacent pairs. Architectures llama.cpp maps to
/// `LLAMA_ROPE_TYPE_NEOX` (Qwen2/3, Phi-3, Gemma, GPT-NeoX, Falcon, StableLM, …) are stored
/// unpermuted and need [`RopeMode::Neox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs `(x[2i], x[2i+1])` rotate by `θ_i` (ggml `GGML_ROPE_TYPE_NORMAL`,
    /// llama.cpp `LLAMA_ROPE_TYPE_NORM`; Llama, SmolLM2, Mistral, DeepSeek, Granite in GGUF).
    Normal,
    /// Pairs `(x[i], x[i + n_dims/2])` rotate by `θ_i` (ggml `GGML_ROPE_TYPE_NEOX`; Qwen, Phi,
    /// Gemma, GPT-NeoX in GGUF).
    Neox,
}

/// Parameters of [`Runtime::rope`]: `θ_i = pos · freq_scale · freq_base^(−2i / n_dims)` for
/// `i < n_dims / 2` (no YaRN extrapolation).
#[derive(Clone, Debug)]
pub struct RopeParams {
    /// Pair layout (see [`RopeMode`] for which models use which).
    pub mode: RopeMode,
    /// Leading values of each head that rotate (GGUF `<arch>.rope.dimension_count`); the rest are
    /// copied. 0 means the whole head. Must be even and at most the head size.
    pub n_dims: usize,
    /// Base of the frequencies (GGUF `<arch>.rope.freq_base`, default 10000).
    pub freq_base: f32,
    /// Position scale (1 / GGUF `<arch>.rope.scaling.factor` for linear scaling, default 1).
    pub freq_scale: f32,
    /// Position of the first token: token `i` sits at `pos0 + i` unless `positions` is given.
    pub pos0: usize,
    /// Explicit position of every token (one per token), overriding `pos0`.
    pub positions: Option<Vec<u32>>,
}

impl Default for RopeParams {
    /// Normal mode, the whole head, base 10000, scale 1, positions from 0.
    fn default() -> Self {
        RopeParams {
            mode: RopeMode::Normal,
            n_dims: 0,
            freq_base: 10000.0,
            freq_scale: 1.0,
            pos0: 0,
            positions: None,
        }
    }
}

/// The rows and row length of a tensor of rank ≥ 1 viewed as `[rows, last]`.
fn rows_of(t: &Tensor) -> (usize, usize) {
    let n = t.shape().last().copied().unwrap_or(1);
    let rows = t.elem_count().checked_div(n).unwrap_or(0);
    (rows, n)
}

fn same_device(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch(
            a.device().to_string(),
            b.device().to_string(),
        ));
    }
    Ok(())
}

fn want_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
        });
    }
    Ok(())
}

fn want_rank_ge1(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.shape().is_empty() {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{what} must have at least one dimension; got a scalar"),
        });
    }
    Ok(())
}

/// The validated form of [`RopeParams`] for `x [t, h, d]`.
pub(crate) struct RopeCall {
    pub args: wattle_kernels::ops::RopeArgs,
    pub positions: Vec<u32>,
}

fn check_rope(x: &Tensor, p: &RopeParams) -> Result<RopeCall> {
    want_f32("rope", x)?;
    let &[t, h, d] = x.shape() else {
        return Err(Error::ShapeMismatch {
            op: "rope",
            detail: format!("x must be [tokens, heads, head_dim]; got {:?}", x.shape()),
        });
    };
    let n_dims = if p.n_dims == 0 { d } else { p.n_dims };
    if !n_dims.is_multiple_of(2) || n_dims > d {
        return Err(Error::InvalidArgument(format!(
            "rope: n_dims {n_dims} must be even and at most the head size {d}"
        )));
    }
    if !(p.freq_base.is_finite() && p.freq_base > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "rope: freq_base must be positive and finite; got {}",
            p.freq_base
        )));
    }
    if !p.freq_scale.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "rope: freq_scale must be finite; got {}",
            p.freq_scale
        )));
    }
    let positions = match &p.positions {
        Some(v) if v.len() != t => {
            return Err(Error::ShapeMismatch {
                op: "rope",
                detail: format!("{} positions for {t} tokens", v.len()),
            })
        }
        Some(v) => v.clone(),
        None => {
            let last = p
                .pos0
                .checked_add(t)
                .filter(|&e| e <= u32::MAX as usize + 1);
            if last.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "rope: positions {} + {t} tokens exceed u32",
                    p.pos0
                )));
            }
            (0..t).map(|i| (p.pos0 + i) as u32).collect()
        }
    };
    let layout = match p.mode {
        RopeMode::Normal => wattle_kernels::ops::RopeLayout::Normal,
        RopeMode::Neox => wattle_kernels::ops::RopeLayout::Neox,
    };
    Ok(RopeCall {
        args: wattle_kernels::ops::RopeArgs {
            t,
            h,
            d,
            n_dims,
            layout,
            freq_base: p.freq_base,
            freq_scale: p.freq_scale,
        },
        positions,
    })
}

/// Elementwise binary operands: same device, F32, same shape.
fn check_binary(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    same_device(a, b)?;
    want_f32(op, a)?;
    want_f32(op, b)?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!(
                "operands must have the same shape; got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        });
    }
    Ok(())
}

/// Logits for softmax / argmax / top-k: F32, rank ≥ 1, non-empty rows.
fn check_logits(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    want_f32(op, x)?;
    want_rank_ge1(op, "x", x)?;
    let (rows, n) = rows_of(x);
    if n == 0 {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("rows must not be empty; got {:?}", x.shape()),
        });
    }
    Ok((rows, n))
}

impl Runtime {
    /// RMS normalisation, `y = x / sqrt(mean(x²) + eps) * weight` over the last dimension:
    /// `x [m, d]` F32 (any rank ≥ 1, rows along the last dimension), `weight [d]` F32 ->
    /// the shape of `x`, F32. `eps` must be finite and ≥ 0.
    pub fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
        same_device(x, weight)?;
        want_f32("rms_norm (x)", x)?;
        want_f32("rms_norm (weight)", weight)?;
        want_rank_ge1("rms_norm", "x", x)?;
        let (_, d) = rows_of(x);
        if weight.shape() != [d] {
            return Err(Error::ShapeMismatch {
                op: "rms_norm",
                detail: format!(
                    "weight must be [{d}] for x {:?}; got {:?}",
                    x.shape(),
                    weight.shape()
                ),
            });
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "rms_norm: eps must be finite and >= 0; got {eps}"
            )));
        }
        match x.device().backend() {
            Backend::Cpu(c) => c.rms_norm(x, weight, eps),
            Backend::Gpu(g) => g.rms_norm(x, weight, eps),
        }
    }

    /// Rotary position embedding of `x [t, h, d]` F32 (tokens, heads, head size) -> the same
    /// shape, F32. Token `i` sits at `params.pos0 + i`, or `params.positions[i]` when given; only
    /// the first `params.n_dims` values of each head rotate (see [`RopeMode`] for the layouts and
    /// which models use which).
    pub fn rope(&self, x: &Tensor, params: &RopeParams) -> Result<Tensor> {
        let call = check_rope(x, params)?;
        match x.device().backend() {
            Backend::Cpu(c) => c.rope(x, &call),
            Backend::Gpu(g) => g.rope(x, &call),
        }
    }

    /// SwiGLU's `silu(gate) * up` elementwise (`silu(x) = x / (1 + e^−x)`): both `[m, f]` F32
    /// (any equal shapes) -> that shape, F32.
    pub fn silu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        check_binary("silu_mul", gate, up)?;
        match gate.device().backend() {
            Backend::Cpu(c) => c.silu_mul(gate, up),
            Backend::Gpu(g) => g.elementwise(GpuOp::SiluMul, gate, up),
        }
    }

    /// `a + b` elementwise; both F32 of the same shape -> that shape, F32.
    pub fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        check_binary("add", a, b)?;
        match a.device().backend() {
            Backend::Cpu(c) => c.add(a, b),
            Backend::Gpu(g) => g.elementwise(GpuOp::Add, a, b),
        }
    }

    /// Embedding lookup: rows `ids` of `table [vocab, d]` (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
    /// Q4_K or Q6_K, dequantized exactly as [`Tensor::to_f32_vec`] does) -> `[ids.len(), d]`
    /// F32. An id `≥ vocab` gives [`Error::InvalidArgument`].
    pub fn get_rows(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let &[vocab, d] = table.shape() else {
            return Err(Error::ShapeMismatch {
                op: "get_rows",
                detail: format!("table must be [vocab, d]; got {:?}", table.shape()),
            });
        };
        if table.dtype() == DType::Q8_K {
            return Err(Error::UnsupportedDType {
                op: "get_rows",
                dtype: table.dtype(),
            });
        }
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::InvalidArgument(format!(
                "get_rows: ids[{i}] = {id} is out of range for a table of {vocab} rows"
            )));
        }
        match table.device().backend() {
            Backend::Cpu(c) => c.get_rows(table, d, ids),
            Backend::Gpu(g) => g.get_rows(table, d, ids),
        }
    }

    /// Softmax of each row of `x [m, n]` F32 (any rank ≥ 1, rows along the last dimension) ->
    /// that shape, F32. A row of only −∞ gives zeros.
    pub fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        let (_, n) = check_logits("softmax", x)?;
        match x.device().backend() {
            Backend::Cpu(c) => c.softmax(x, n),
            Backend::Gpu(g) => g.softmax(x, n),
        }
    }

    /// Index of the largest value of each row of `x [m, n]` F32 (the first on ties; NaN never
    /// compares greater) -> `m` indices.
    pub fn argmax(&self, x: &Tensor) -> Result<Vec<u32>> {
        let (_, n) = check_logits("argmax", x)?;
        match x.device().backend() {
            Backend::Cpu(c) => c.argmax(x, n),
            Backend::Gpu(g) => g.argmax(x, n),
        }
    }

    /// The `k` largest `(index, value)` pairs of each row of `x [m, n]` F32, in descending order
    /// of value (the lower index first on ties, NaN after every number). `k` must be in
    /// `1..=n` ([`Error::InvalidArgument`] otherwise). On a GPU, `k` up to 256 is selected there;
    /// larger `k` (and rows with fewer than `k` numbers) are ranked on the host from the
    /// downloaded logits.
    pub fn top_k(&self, x: &Tensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let (_, n) = check_logits("top_k", x)?;
        if k == 0 || k > n {
            return Err(Error::InvalidArgument(format!(
                "top_k: k = {k} must be in 1..={n} (the row length)"
            )));
        }
        match x.device().backend() {
            Backend::Cpu(c) => c.top_k(x, n, k),
            Backend::Gpu(g) => g.top_k(x, n, k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        Runtime::with_backends("cpu").unwrap()
    }

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_f32(v, shape).unwrap()
    }

    #[test]
    fn rms_norm_matches_its_definition() {
        let x = t(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.5], &[2, 3]);
        let w = t(&[1.0, 0.5, 2.0], &[3]);
        let y = rt().rms_norm(&x, &w, 1e-5).unwrap().to_f32_vec().unwrap();
        for r in 0..2 {
            let row = &[[1.0f32, 2.0, 3.0], [4.0, -1.0, 0.5]][r];
            let ms = row.iter().map(|v| v * v).sum::<f32>() / 3.0;
            for j in 0..3 {
                let want = row[j] / (ms + 1e-5).sqrt() * [1.0, 0.5, 2.0][j];
                assert!((y[r * 3 + j] - want).abs() < 1e-5, "{r} {j}");
            }
        }
    }

    #[test]
    fn rope_modes_rotate_the_documented_pairs() {
        // One token at position 1, one head of 4, base 1: θ_0 = 1, θ_1 = 1^(−1/2) = 1.
        let x = t(&[1.0, 0.0, 0.0, 0.0], &[1, 1, 4]);
        let p = RopeParams {
            freq_base: 1.0,
            pos0: 1,
            ..Default::default()
        };
        let y = rt().rope(&x, &p).unwrap().to_f32_vec().unwrap();
        let (s, c) = 1f32.sin_cos();
        assert!((y[0] - c).abs() < 1e-6 && (y[1] - s).abs() < 1e-6 && y[2] == 0.0);
        let p = RopeParams {
            mode: RopeMode::Neox,
            ..p
        };
        let y = rt().rope(&x, &p).unwrap().to_f32_vec().unwrap();
        assert!((y[0] - c).abs() < 1e-6 && y[1] == 0.0 && (y[2] - s).abs() < 1e-6);
        // Only n_dims rotate; position 0 is the identity.
        let x = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 1, 6]);
        let p = RopeParams {
            n_dims: 2,
            pos0: 3,
            ..Default::default()
        };
        let y = rt().rope(&x, &p).unwrap().to_f32_vec().unwrap();
        assert_eq!(&y[2..], &[3.0, 4.0, 5.0, 6.0]);
        let p = RopeParams {
            positions: Some(vec![0]),
            ..p
        };
        assert_eq!(
            rt().rope(&x, &p).unwrap().to_f32_vec().unwrap(),
            x.to_f32_vec().unwrap()
        );
    }

    #[test]
    fn elementwise_and_logit_ops() {
        let rt = rt();
        let a = t(&[1.0, -2.0, 3.0, 0.0], &[2, 2]);
        let b = t(&[0.5, 0.5, -1.0, 2.0], &[2, 2]);
        assert_eq!(
            rt.add(&a, &b).unwrap().to_f32_vec().unwrap(),
            vec![1.5, -1.5, 2.0, 2.0]
        );
        let y = rt.silu_mul(&a, &b).unwrap().to_f32_vec().unwrap();
        let silu = |x: f32| x / (1.0 + (-x).exp());
        for i in 0..4 {
            let want = silu([1.0, -2.0, 3.0, 0.0][i]) * [0.5, 0.5, -1.0, 2.0][i];
            assert!((y[i] - want).abs() < 1e-6);
        }
        let s = rt.softmax(&a).unwrap().to_f32_vec().unwrap();
        assert!((s[0] + s[1] - 1.0).abs() < 1e-6 && s[0] > s[1]);
        let x = t(
            &[1.0, 3.0, 3.0, 2.0, f32::NEG_INFINITY, 0.0, -1.0, 0.0],
            &[2, 4],
        );
        assert_eq!(rt.argmax(&x).unwrap(), vec![1, 1]);
        assert_eq!(
            rt.top_k(&x, 3).unwrap(),
            vec![
                vec![(1, 3.0), (2, 3.0), (3, 2.0)],
                vec![(1, 0.0), (3, 0.0), (2, -1.0)]
            ]
        );
        let table = t(&(0..12).map(|v| v as f32).collect::<Vec<_>>(), &[4, 3]);
        let r = rt.get_rows(&table, &[2, 0, 2]).unwrap();
        assert_eq!(r.shape(), &[3, 3]);
        assert_eq!(
            r.to_f32_vec().unwrap(),
            vec![6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0]
        );
        let q = table.quantize(DType::F16).unwrap();
        assert_eq!(
            rt.get_rows(&q, &[1]).unwrap().to_f32_vec().unwrap(),
            vec![3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        let rt = rt();
        let x = t(&[1.0; 6], &[2, 3]);
        let w2 = t(&[1.0; 2], &[2]);
        assert!(matches!(
            rt.rms_norm(&x, &w2, 1e-5),
            Err(Error::ShapeMismatch { .. })
        ));
        let w3 = t(&[1.0; 3], &[3]);
        assert!(matches!(
            rt.rms_norm(&x, &w3, -1.0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            rt.rms_norm(&x, &w3, f32::NAN),
            Err(Error::InvalidArgument(_))
        ));
        let xh = x.quantize(DType::F16).unwrap();
        assert!(matches!(
            rt.rms_norm(&xh, &w3, 1e-5),
            Err(Error::UnsupportedDType { .. })
        ));
        assert!(matches!(
            rt.rope(&x, &RopeParams::default()),
            Err(Error::ShapeMismatch { .. })
        ));
        let x3 = t(&[1.0; 6], &[1, 1, 6]);
        for p in [
            RopeParams {
                n_dims: 3,
                ..Default::default()
            },
            RopeParams {
                n_dims: 8,
                ..Default::default()
            },
            RopeParams {
                freq_base: 0.0,
                ..Default::default()
            },
            RopeParams {
                freq_scale: f32::INFINITY,
                ..Default::default()
            },
            RopeParams {
                pos0: u32::MAX as usize + 1,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(rt.rope(&x3, &p), Err(Error::InvalidArgument(_))),
                "{p:?}"
            );
        }
        let p = RopeParams {
            positions: Some(vec![1, 2]),
            ..Default::default()
        };
        assert!(matches!(rt.rope(&x3, &p), Err(Error::ShapeMismatch { .. })));
        let y = t(&[1.0; 6], &[3, 2]);
        assert!(matches!(rt.add(&x, &y), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(
            rt.silu_mul(&x, &xh),
            Err(Error::UnsupportedDType { .. })
        ));
        assert!(matches!(
            rt.get_rows(&x, &[2]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            rt.get_rows(&w3, &[0]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(rt.top_k(&x, 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(rt.top_k(&x, 4), Err(Error::InvalidArgument(_))));
        let empty = t(&[], &[2, 0]);
        assert!(matches!(
            rt.softmax(&empty),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            rt.argmax(&empty),
            Err(Error::ShapeMismatch { .. })
        ));
        let scalar = t(&[1.0], &[]);
        assert!(matches!(
            rt.argmax(&scalar),
            Err(Error::ShapeMismatch { .. })
        ));
        assert_eq!(rt.get_rows(&x, &[]).unwrap().shape(), &[0, 3]);
    }
}
