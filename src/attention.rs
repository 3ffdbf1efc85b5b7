//! Softmax attention parameters and validation (SPEC §6).

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::DType;

/// Masking and scaling of [`crate::Runtime::attention`]. `Default` is non-causal attention over
/// every key with scale 1/√d.
#[derive(Clone, Debug, Default)]
pub struct AttentionParams {
    /// A key is visible only when its position is ≤ the query's.
    pub causal: bool,
    /// Sliding window W (≥ 1): a key is visible only when `(query position) − (key position) < W`
    /// (W counts the query's own token).
    pub window: Option<usize>,
    /// Absolute position of query 0; query i sits at `q_pos0 + i`.
    pub q_pos0: usize,
    /// Position of each key (`t_k` entries) for rolling or evicted caches; else key j is at j.
    pub key_positions: Option<Vec<u32>>,
    /// Per-query-head sink logits `[h_q]` F32 (gpt-oss style), one extra softmax column.
    pub sinks: Option<Tensor>,
    /// Logit scale; default 1/√d.
    pub scale: Option<f32>,
    /// Logit softcap c: logits become c·tanh(logit/c).
    pub softcap: Option<f32>,
}

impl AttentionParams {
    /// Causal attention (every earlier key and the query's own).
    pub fn causal() -> AttentionParams {
        AttentionParams {
            causal: true,
            ..Default::default()
        }
    }
}

/// Checked sizes of an attention call.
pub(crate) struct AttentionShape {
    pub t_q: usize,
    pub h_q: usize,
    pub t_k: usize,
    pub h_kv: usize,
    pub d: usize,
    pub d_v: usize,
}

const KV_DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0];

pub(crate) fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttentionParams,
) -> Result<AttentionShape> {
    let dev = q.device();
    for t in [k, v] {
        if t.device() != dev {
            return Err(Error::DeviceMismatch(
                dev.to_string(),
                t.device().to_string(),
            ));
        }
    }
    let shape_err = |detail: String| Error::ShapeMismatch {
        op: "attention",
        detail,
    };
    let (&[t_q, h_q, d], &[t_k, h_kv, dk], &[t_v, h_v, d_v]) = (q.shape(), k.shape(), v.shape())
    else {
        return Err(shape_err(format!(
            "q, k, v must be [t, heads, dim]; got {:?}, {:?}, {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    };
    if dk != d || t_v != t_k || h_v != h_kv {
        return Err(shape_err(format!(
            "k must be [t_k, h_kv, {d}] and v [t_k, h_kv, d_v]; got {:?} and {:?}",
            k.shape(),
            v.shape()
        )));
    }
    if h_kv == 0 || h_q % h_kv != 0 {
        return Err(shape_err(format!(
            "{h_q} query heads are not a multiple of {h_kv} KV heads"
        )));
    }
    if !matches!(q.dtype(), DType::F32 | DType::F16) {
        return Err(Error::UnsupportedDType {
            op: "attention (q)",
            dtype: q.dtype(),
        });
    }
    for t in [k, v] {
        if !KV_DTYPES.contains(&t.dtype()) {
            return Err(Error::UnsupportedDType {
                op: "attention (k/v)",
                dtype: t.dtype(),
            });
        }
    }
    if let Some(kp) = &p.key_positions {
        if kp.len() != t_k {
            return Err(shape_err(format!(
                "{} key positions for {t_k} keys",
                kp.len()
            )));
        }
    }
    if let Some(s) = &p.sinks {
        if s.shape() != [h_q] || s.dtype() != DType::F32 {
            return Err(shape_err(format!(
                "sinks must be [{h_q}] F32, got {} {:?}",
                s.dtype(),
                s.shape()
            )));
        }
    }
    if p.window == Some(0) {
        return Err(Error::InvalidArgument(
            "attention window must be at least 1".into(),
        ));
    }
    if p.scale.is_some_and(|s| !s.is_finite())
        || p.softcap.is_some_and(|c| !(c.is_finite() && c > 0.0))
    {
        return Err(Error::InvalidArgument(
            "scale must be finite and softcap finite and > 0".into(),
        ));
    }
    Ok(AttentionShape {
        t_q,
        h_q,
        t_k,
        h_kv,
        d,
        d_v,
    })
}
