//! Linear attention (SPEC §7): kinds, validation, and the CPU entry point.

use crate::error::{Error, Result};
use crate::host::HostBuffer;
use crate::tensor::{Storage, Tensor};
use crate::DType;
use std::borrow::Cow;
use wattle_kernels::linear_attn::{chunked, recurrent, Kind, LinShape, CHUNK};
use wattle_kernels::pool::ThreadPool;

/// Which linear-attention recurrence (SPEC §7).
#[derive(Clone, Debug)]
pub enum LinearAttention {
    /// φ = elu + 1 with a normaliser; the state carries z as an extra value column
    /// (`[h, d_k, d_v + 1]`).
    Vanilla,
    /// Retention: S_t = γ_h S_{t−1} + k_t v_tᵀ, `gamma` per head in (0, 1].
    Retention {
        /// Per-head decay.
        gamma: Vec<f32>,
    },
    /// Gated linear attention: S_t = diag(exp(g_t)) S_{t−1} + k_t v_tᵀ.
    Gated {
        /// `[t, h, d_k]` F32, every value ≤ 0.
        log_decay: Tensor,
    },
    /// Gated delta rule: S_t = exp(a_t)(I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ (keys L2-normalised
    /// by the caller).
    GatedDelta {
        /// `[t, h]` F32 write strengths.
        beta: Tensor,
        /// `[t, h]` F32, every value ≤ 0.
        log_decay: Tensor,
    },
}

/// How to evaluate: one token at a time, or in chunks of 64 (the runtime's choice by length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LinearForm {
    /// Recurrent below one chunk of tokens, chunked from there on.
    #[default]
    Auto,
    /// One token at a time (decode).
    Recurrent,
    /// Chunked-parallel (prefill).
    Chunked,
}

/// The values of `t` as f32: F32 host data in place (copied only when misaligned), F16 and
/// BF16 widened.
fn floats<'a>(t: &'a Tensor, what: &'static str) -> Result<Cow<'a, [f32]>> {
    match t.dtype() {
        DType::F32 => {
            if let Some(v) = t
                .host_buffer()
                .and_then(|b| bytemuck::try_cast_slice::<u8, f32>(b.bytes()).ok())
            {
                return Ok(Cow::Borrowed(v));
            }
            Ok(Cow::Owned(t.to_f32_vec()?))
        }
        DType::F16 | DType::BF16 => Ok(Cow::Owned(t.to_f32_vec()?)),
        dtype => Err(Error::UnsupportedDType { op: what, dtype }),
    }
}

/// A new F32 host tensor taking `buf` (no copy).
fn f32_tensor(buf: HostBuffer, shape: &[usize]) -> Tensor {
    Tensor::from_storage(
        Storage::Host(buf),
        DType::F32,
        shape,
        crate::backend::cpu::device(),
    )
}

fn shape_err(detail: String) -> Error {
    Error::ShapeMismatch {
        op: "linear_attention",
        detail,
    }
}

fn gate<'a>(
    t: &'a Tensor,
    shape: &[usize],
    what: &'static str,
    nonpositive: bool,
) -> Result<Cow<'a, [f32]>> {
    if t.shape() != shape {
        return Err(shape_err(format!(
            "{what} must be {shape:?}, got {:?}",
            t.shape()
        )));
    }
    let v = floats(t, what)?;
    if v.iter()
        .any(|x| !x.is_finite() || (nonpositive && *x > 0.0))
    {
        return Err(Error::InvalidArgument(format!(
            "{what} must be finite{}",
            if nonpositive { " and ≤ 0" } else { "" }
        )));
    }
    Ok(v)
}

/// Checked sizes of a call: tokens, heads, key and value dims, state columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinSizes {
    pub t: usize,
    pub h: usize,
    pub dk: usize,
    pub dv: usize,
    pub cols: usize,
}

/// Checks devices, shapes and the state's shape (gates are checked where they are read).
pub(crate) fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kind: &LinearAttention,
    state: Option<&Tensor>,
) -> Result<LinSizes> {
    let dev = q.device();
    for t in [k, v].into_iter().chain(state) {
        if t.device() != dev {
            return Err(Error::DeviceMismatch(
                dev.to_string(),
                t.device().to_string(),
            ));
        }
    }
    let (&[t, h, dk], &[tk, hk, dk2], &[tv, hv, dv]) = (q.shape(), k.shape(), v.shape()) else {
        return Err(shape_err(format!(
            "q, k must be [t, h, d_k] and v [t, h, d_v]; got {:?}, {:?}, {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    };
    if (tk, hk, dk2) != (t, h, dk) || (tv, hv) != (t, h) {
        return Err(shape_err(format!(
            "q {:?}, k {:?}, v {:?} disagree",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let cols = if matches!(kind, LinearAttention::Vanilla) {
        dv + 1
    } else {
        dv
    };
    if let Some(s) = state {
        if s.shape() != [h, dk, cols] || s.dtype() != DType::F32 {
            return Err(shape_err(format!(
                "state must be [{h}, {dk}, {cols}] F32, got {} {:?}",
                s.dtype(),
                s.shape()
            )));
        }
    }
    if let LinearAttention::Retention { gamma } = kind {
        if gamma.len() != h {
            return Err(shape_err(format!(
                "gamma has {} entries for {h} heads",
                gamma.len()
            )));
        }
        if gamma.iter().any(|g| !(*g > 0.0 && *g <= 1.0)) {
            return Err(Error::InvalidArgument(
                "retention gamma must lie in (0, 1]".into(),
            ));
        }
    }
    Ok(LinSizes { t, h, dk, dv, cols })
}

/// Whether `form` means the chunked form for `t` tokens.
pub(crate) fn chunked_form(form: LinearForm, t: usize) -> bool {
    match form {
        LinearForm::Auto => t >= CHUNK,
        LinearForm::Recurrent => false,
        LinearForm::Chunked => true,
    }
}

/// Runs linear attention on the CPU; returns the output `[t, h, d_v]` and the new state.
pub(crate) fn run(
    pool: &ThreadPool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kind: &LinearAttention,
    state: Option<&Tensor>,
    form: LinearForm,
) -> Result<(Tensor, Tensor)> {
    let LinSizes { t, h, dk, dv, cols } = check(q, k, v, kind, state)?;
    let vanilla = matches!(kind, LinearAttention::Vanilla);
    let (qv, kv, vv) = (
        floats(q, "linear_attention (q)")?,
        floats(k, "linear_attention (k)")?,
        floats(v, "linear_attention (v)")?,
    );
    // State [h, d_k, cols]: S in the first d_v columns, z in the last for vanilla. The new
    // state starts as a copy of the old one and is updated in place.
    let mut packed = HostBuffer::zeroed(h * dk * cols * 4);
    let old = match state {
        Some(s) => Some(floats(s, "linear_attention (state)")?),
        None => None,
    };
    if let (Some(o), false) = (&old, vanilla) {
        packed.typed_mut::<f32>().copy_from_slice(o);
    }
    let (g1, g2);
    let kk = match kind {
        LinearAttention::Vanilla => Kind::Vanilla,
        LinearAttention::Retention { gamma } => Kind::Retention { gamma },
        LinearAttention::Gated { log_decay } => {
            g1 = gate(log_decay, &[t, h, dk], "log_decay", true)?;
            Kind::Gated { log_decay: &g1[..] }
        }
        LinearAttention::GatedDelta { beta, log_decay } => {
            g1 = gate(beta, &[t, h], "beta", false)?;
            g2 = gate(log_decay, &[t, h], "log_decay", true)?;
            Kind::GatedDelta {
                beta: &g1[..],
                log_decay: &g2[..],
            }
        }
    };
    let s = LinShape { t, h, dk, dv };
    let mut out = HostBuffer::zeroed(t * h * dv * 4);
    let run = if chunked_form(form, t) {
        chunked::run
    } else {
        recurrent::run
    };
    let o = out.typed_mut::<f32>();
    let p = packed.typed_mut::<f32>();
    if vanilla {
        // The kernels keep z apart: unpack the old state row by row, run, pack into the new
        // (one copy each way; a decode token costs about as much as the kernel's own sweep).
        let (mut st, mut z) = (vec![0f32; h * dk * dv], vec![0f32; h * dk]);
        if let Some(o) = &old {
            for ((row, sr), zr) in o
                .chunks_exact(cols)
                .zip(st.chunks_exact_mut(dv))
                .zip(&mut z)
            {
                sr.copy_from_slice(&row[..dv]);
                *zr = row[dv];
            }
        }
        run(pool, &qv, &kv, &vv, kk, s, &mut st, Some(&mut z), o);
        for ((row, sr), zr) in p.chunks_exact_mut(cols).zip(st.chunks_exact(dv)).zip(&z) {
            row[..dv].copy_from_slice(sr);
            row[dv] = *zr;
        }
    } else {
        run(pool, &qv, &kv, &vv, kk, s, p, None, o);
    }
    Ok((
        f32_tensor(out, &[t, h, dv]),
        f32_tensor(packed, &[h, dk, cols]),
    ))
}
