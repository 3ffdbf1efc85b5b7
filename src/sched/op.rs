//! Op descriptions: the shapes a profile records and the scheduler places, with their bytes and
//! FLOPs.

use crate::DType;
use std::fmt;

/// One op of a chain, by shape (SPEC §9's op entries).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum OpDesc {
    /// `y [m, n] = x [m, k] · w [n, k]ᵀ`, weights in `dtype`.
    Matmul {
        /// Activation rows (1 = decode).
        m: usize,
        /// Weight rows (output features).
        n: usize,
        /// Reduction length.
        k: usize,
        /// Weight dtype.
        dtype: DType,
    },
    /// Softmax attention of `tq` queries over `ctx` keys.
    Attention {
        /// Query tokens.
        tq: usize,
        /// Query heads.
        hq: usize,
        /// KV heads.
        hkv: usize,
        /// Head dimension.
        d: usize,
        /// Keys in the context.
        ctx: usize,
        /// K/V dtype.
        kv_dtype: DType,
        /// Sliding window (0 = none).
        window: usize,
    },
    /// Linear attention over `t` tokens.
    LinearAttention {
        /// `vanilla`, `retention`, `gated` or `gated_delta`.
        kind: String,
        /// Tokens.
        t: usize,
        /// Heads.
        h: usize,
        /// Key dimension.
        dk: usize,
        /// Value dimension.
        dv: usize,
    },
    /// Attention over a KV cache in `format` (`f16`, `q8_0`, `q4_0`, `kivi2`, `kivi4`).
    KvAttend {
        /// KV format.
        format: String,
        /// Tokens in the cache.
        ctx: usize,
        /// Query heads.
        hq: usize,
        /// KV heads.
        hkv: usize,
        /// Head dimension.
        d: usize,
    },
}

impl OpDesc {
    /// A matmul `[m, k] · [n, k]ᵀ` with `dtype` weights.
    pub fn matmul(m: usize, n: usize, k: usize, dtype: DType) -> OpDesc {
        OpDesc::Matmul { m, n, k, dtype }
    }

    /// Softmax attention (`window` 0 = none).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        tq: usize,
        hq: usize,
        hkv: usize,
        d: usize,
        ctx: usize,
        kv_dtype: DType,
        window: usize,
    ) -> OpDesc {
        OpDesc::Attention {
            tq,
            hq,
            hkv,
            d,
            ctx,
            kv_dtype,
            window,
        }
    }

    /// Linear attention of `kind` (`vanilla`, `retention`, `gated`, `gated_delta`).
    pub fn linear_attention(kind: &str, t: usize, h: usize, dk: usize, dv: usize) -> OpDesc {
        OpDesc::LinearAttention {
            kind: kind.to_string(),
            t,
            h,
            dk,
            dv,
        }
    }

    /// Attention over a KV cache in `format`.
    pub fn kv_attend(format: &str, ctx: usize, hq: usize, hkv: usize, d: usize) -> OpDesc {
        OpDesc::KvAttend {
            format: format.to_string(),
            ctx,
            hq,
            hkv,
            d,
        }
    }

    /// The op's name in profiles: `matmul`, `attention`, `linear_attention`, `kv_attend`.
    pub fn op_name(&self) -> &'static str {
        match self {
            OpDesc::Matmul { .. } => "matmul",
            OpDesc::Attention { .. } => "attention",
            OpDesc::LinearAttention { .. } => "linear_attention",
            OpDesc::KvAttend { .. } => "kv_attend",
        }
    }

    /// The dtype-like key that points must share to predict each other: the weight dtype, the
    /// K/V dtype, the linear-attention kind or the KV format.
    pub fn dtype_key(&self) -> String {
        match self {
            OpDesc::Matmul { dtype, .. } => dtype.name().to_string(),
            OpDesc::Attention { kv_dtype, .. } => kv_dtype.name().to_string(),
            OpDesc::LinearAttention { kind, .. } => kind.clone(),
            OpDesc::KvAttend { format, .. } => format.clone(),
        }
    }

    /// Floating-point operations (a multiply-add counts two).
    pub fn flops(&self) -> f64 {
        match *self {
            OpDesc::Matmul { m, n, k, .. } => 2.0 * m as f64 * n as f64 * k as f64,
            OpDesc::Attention {
                tq,
                hq,
                d,
                ctx,
                window,
                ..
            } => 4.0 * tq as f64 * hq as f64 * visible(ctx, window) as f64 * d as f64,
            OpDesc::LinearAttention { t, h, dk, dv, .. } => {
                4.0 * t as f64 * h as f64 * dk as f64 * dv as f64
            }
            OpDesc::KvAttend { ctx, hq, d, .. } => 4.0 * hq as f64 * ctx as f64 * d as f64,
        }
    }

    /// Bytes read and written: resident data (weights, K/V, state) plus activations in and out.
    pub fn bytes(&self) -> f64 {
        let resident = match *self {
            OpDesc::Attention {
                hkv,
                d,
                ctx,
                window,
                kv_dtype,
                ..
            } => 2.0 * prod(&[visible(ctx, window), hkv, d]) * elem_bytes(kv_dtype),
            OpDesc::LinearAttention { h, dk, dv, .. } => 2.0 * prod(&[h, dk, dv]) * 4.0,
            _ => self.weight_bytes() as f64,
        };
        resident + self.in_bytes() as f64 + self.out_bytes() as f64
    }

    /// Bytes that stay on the device the op runs on (weights, a KV cache, a recurrent state):
    /// they count against its `memory_bytes`.
    ///
    /// Sizes are products in f64 (a cast saturates), so absurd shapes from a hand-written profile
    /// give huge counts rather than an overflow.
    pub fn weight_bytes(&self) -> u64 {
        (match self {
            OpDesc::Matmul { n, k, dtype, .. } => prod(&[*n, *k]) * elem_bytes(*dtype),
            OpDesc::Attention {
                hkv,
                d,
                ctx,
                kv_dtype,
                ..
            } => 2.0 * prod(&[*ctx, *hkv, *d]) * elem_bytes(*kv_dtype),
            OpDesc::LinearAttention { h, dk, dv, .. } => prod(&[*h, *dk, *dv]) * 4.0,
            OpDesc::KvAttend {
                format,
                ctx,
                hkv,
                d,
                ..
            } => 2.0 * prod(&[*ctx, *hkv, *d]) * format_bytes(format),
        }) as u64
    }

    /// F32 activation bytes the op takes from the previous op (a matmul reads `m·k·4`).
    pub fn in_bytes(&self) -> u64 {
        (match *self {
            OpDesc::Matmul { m, k, .. } => prod(&[m, k]),
            OpDesc::Attention { tq, hq, d, .. } => prod(&[tq, hq, d]),
            OpDesc::LinearAttention { t, h, dk, dv, .. } => {
                prod(&[t, h]) * (2.0 * dk as f64 + dv as f64)
            }
            OpDesc::KvAttend { hq, d, .. } => prod(&[hq, d]),
        } * 4.0) as u64
    }

    /// F32 activation bytes the op writes (a matmul writes `m·n·4`).
    pub fn out_bytes(&self) -> u64 {
        (match *self {
            OpDesc::Matmul { m, n, .. } => prod(&[m, n]),
            OpDesc::Attention { tq, hq, d, .. } => prod(&[tq, hq, d]),
            OpDesc::LinearAttention { t, h, dv, .. } => prod(&[t, h, dv]),
            OpDesc::KvAttend { hq, d, .. } => prod(&[hq, d]),
        } * 4.0) as u64
    }
}

/// The product of dimensions in f64 (never overflows).
fn prod(dims: &[usize]) -> f64 {
    dims.iter().map(|&x| x as f64).product()
}

fn visible(ctx: usize, window: usize) -> usize {
    if window == 0 {
        ctx
    } else {
        ctx.min(window)
    }
}

/// Bytes per element of a dtype (block formats: block bytes over block size).
pub(crate) fn elem_bytes(d: DType) -> f64 {
    d.block_bytes() as f64 / d.block_size() as f64
}

/// Bytes per element of a KV format name.
fn format_bytes(f: &str) -> f64 {
    match f.to_ascii_lowercase().as_str() {
        "f32" => 4.0,
        "q8_0" => 34.0 / 32.0,
        "q4_0" => 18.0 / 32.0,
        "kivi2" | "kivi_2" => 0.25 + 0.125,
        "kivi4" | "kivi_4" => 0.5 + 0.125,
        _ => 2.0,
    }
}

impl fmt::Display for OpDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpDesc::Matmul { m, n, k, dtype } => write!(f, "matmul {dtype} {m}×{n}×{k}"),
            OpDesc::Attention {
                tq,
                hq,
                hkv,
                d,
                ctx,
                kv_dtype,
                window,
            } => {
                write!(
                    f,
                    "attention {kv_dtype} tq={tq} h={hq}/{hkv} d={d} ctx={ctx}"
                )?;
                if *window > 0 {
                    write!(f, " w={window}")?;
                }
                Ok(())
            }
            OpDesc::LinearAttention { kind, t, h, dk, dv } => {
                write!(f, "linear_attention {kind} t={t} h={h} dk={dk} dv={dv}")
            }
            OpDesc::KvAttend {
                format,
                ctx,
                hq,
                hkv,
                d,
            } => write!(f, "kv_attend {format} ctx={ctx} h={hq}/{hkv} d={d}"),
        }
    }
}
