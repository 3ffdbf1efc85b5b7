//! Compressed KV cache (SPEC §8): F16, Q8_0, Q4_0 and KIVI 2/4-bit storage, attended directly,
//! with window, heavy-hitter (H2O) and SnapKV eviction per (layer, KV head).
//!
//! ```
//! use wattle::{AttentionParams, Eviction, KvCache, KvCacheConfig, KvFormat, Runtime, Tensor};
//! # fn main() -> Result<(), wattle::Error> {
//! let rt = Runtime::new()?;
//! let cfg = KvCacheConfig {
//!     kv_heads: 2,
//!     head_dim: 64,
//!     format: KvFormat::Kivi { bits: 4, group: 32, residual: 32 },
//!     eviction: Eviction::Window { window: 256, sinks: 4 },
//!     ..Default::default()
//! };
//! let mut cache = KvCache::new(&rt, &rt.cpu(), cfg)?;
//! let k = Tensor::from_f32(&vec![0.5; 10 * 2 * 64], &[10, 2, 64])?;
//! cache.append(0, &k, &k)?;
//! let q = Tensor::from_f32(&vec![0.1; 4 * 64], &[1, 4, 64])?;
//! let p = AttentionParams { q_pos0: 9, ..AttentionParams::causal() };
//! let o = cache.attend(0, &q, &p)?; // [1, 4, 64]
//! assert_eq!(o.shape(), &[1, 4, 64]);
//! # Ok(()) }
//! ```
//!
//! On a GPU device [`KvCache::new`] returns [`Error::NotAvailable`] for now (the WGSL kernels
//! are later work); CPU caches work everywhere.

mod eviction;

use crate::device::Backend;
use crate::error::{Error, Result};
use crate::host::HostBuffer;
use crate::tensor::{Storage, Tensor};
use crate::{AttentionParams, DType, Device, Runtime};
use wattle_kernels::kv::{self as kkv, HeadStore, KvFmt};

/// Storage format of a [`KvCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvFormat {
    /// f16 keys and values (16 bits per value).
    #[default]
    F16,
    /// ggml Q8_0 blocks of 32 along the head dimension (8.5 bits per value); `head_dim` and
    /// `v_head_dim` must be multiples of 32.
    Q8_0,
    /// ggml Q4_0 blocks of 32 along the head dimension (4.5 bits per value); `head_dim` and
    /// `v_head_dim` must be multiples of 32.
    Q4_0,
    /// KIVI: keys quantized per channel over groups of `group` consecutive tokens, values per
    /// token over groups of `group` channels; asymmetric with an f16 scale and f16 minimum per
    /// group (`bits + 32/group` bits per value). The newest tokens stay f16 until they are older
    /// than `residual` and fill a whole group. `bits` is 2 or 4; `group` a multiple of 16 that
    /// divides `head_dim` and `v_head_dim`.
    Kivi {
        /// Bits per code: 2 or 4.
        bits: u32,
        /// Tokens per key group and channels per value group.
        group: usize,
        /// Newest tokens kept in f16 (at least).
        residual: usize,
    },
}

/// Which tokens a [`KvCache`] drops, decided per (layer, KV head).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Eviction {
    /// Keep everything.
    #[default]
    None,
    /// StreamingLLM: queries see the sinks (positions `< sinks`) and the keys with
    /// `p − pos < window`; everything else is dropped.
    Window {
        /// Keys attended besides the sinks, the query's own token included (≥ 1).
        window: usize,
        /// First positions always kept.
        sinks: usize,
    },
    /// H2O: each `attend` adds every token's attention probability to its score; a head over
    /// `budget` drops its lowest-scoring tokens outside the `recent` newest (`budget > recent`).
    HeavyHitter {
        /// Tokens kept per head after an `attend`.
        budget: usize,
        /// Newest tokens never dropped.
        recent: usize,
    },
    /// SnapKV: one-shot prompt compression at the first `attend` with `t_q ≥ observe` on a layer
    /// holding more than `budget` tokens (`budget > observe ≥ 1`, `pool` odd).
    SnapKv {
        /// Tokens kept per head.
        budget: usize,
        /// Queries observed (and newest tokens kept).
        observe: usize,
        /// Width of the centred max-pool over the scores.
        pool: usize,
    },
}

/// Shape, format and policy of a [`KvCache`]. `Default`: 1 layer, 1 KV head, head_dim 128,
/// F16, no eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Layers.
    pub layers: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Key (and query) head dimension; a multiple of 16.
    pub head_dim: usize,
    /// Value head dimension; `None` = `head_dim`.
    pub v_head_dim: Option<usize>,
    /// Storage format.
    pub format: KvFormat,
    /// Eviction policy.
    pub eviction: Eviction,
    /// Tokens to reserve per (layer, KV head) up front.
    pub capacity: Option<usize>,
}

impl Default for KvCacheConfig {
    fn default() -> Self {
        KvCacheConfig {
            layers: 1,
            kv_heads: 1,
            head_dim: 128,
            v_head_dim: None,
            format: KvFormat::F16,
            eviction: Eviction::None,
            capacity: None,
        }
    }
}

/// A KV cache on one device (SPEC §8).
#[derive(Debug)]
pub struct KvCache {
    cfg: KvCacheConfig,
    dv: usize,
    device: Device,
    layers: Vec<Layer>,
}

#[derive(Debug)]
struct Layer {
    heads: Vec<HeadStore>,
    next: usize,
    snapped: bool,
}

/// Largest total element count a single cache reserves up front (bytes are checked too).
const MAX_RESERVE_BYTES: u128 = 1 << 40;

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

impl KvCache {
    /// An empty cache on `device` (the CPU; a GPU device gives [`Error::NotAvailable`] for now).
    pub fn new(rt: &Runtime, device: &Device, cfg: KvCacheConfig) -> Result<KvCache> {
        let _ = rt;
        if !matches!(device.backend(), Backend::Cpu(_)) {
            return Err(Error::NotAvailable(format!(
                "KvCache on `{}`: only CPU caches are implemented so far",
                device.name()
            )));
        }
        let d = cfg.head_dim;
        let dv = cfg.v_head_dim.unwrap_or(d);
        if cfg.layers == 0 || cfg.kv_heads == 0 || d == 0 || dv == 0 {
            return Err(invalid(
                "KvCacheConfig: layers, kv_heads and head dims must be at least 1",
            ));
        }
        let fmt = match cfg.format {
            KvFormat::F16 => {
                if !d.is_multiple_of(16) || !dv.is_multiple_of(16) {
                    return Err(Error::BadBlockAlignment {
                        dtype: DType::F16,
                        len: if !d.is_multiple_of(16) { d } else { dv },
                        block: 16,
                    });
                }
                KvFmt::F16
            }
            KvFormat::Q8_0 | KvFormat::Q4_0 => {
                let dtype = if cfg.format == KvFormat::Q8_0 {
                    DType::Q8_0
                } else {
                    DType::Q4_0
                };
                if !d.is_multiple_of(32) || !dv.is_multiple_of(32) {
                    return Err(Error::BadBlockAlignment {
                        dtype,
                        len: if !d.is_multiple_of(32) { d } else { dv },
                        block: 32,
                    });
                }
                if dtype == DType::Q8_0 {
                    KvFmt::Q8_0
                } else {
                    KvFmt::Q4_0
                }
            }
            KvFormat::Kivi {
                bits,
                group,
                residual,
            } => {
                if bits != 2 && bits != 4 {
                    return Err(invalid(format!("KIVI bits must be 2 or 4, got {bits}")));
                }
                if group == 0 || !group.is_multiple_of(16) {
                    return Err(invalid(format!(
                        "KIVI group must be a positive multiple of 16, got {group}"
                    )));
                }
                if !d.is_multiple_of(group) || !dv.is_multiple_of(group) {
                    return Err(invalid(format!(
                        "KIVI group {group} must divide head_dim {d} and v_head_dim {dv}"
                    )));
                }
                KvFmt::Kivi {
                    bits,
                    group,
                    residual,
                }
            }
        };
        match cfg.eviction {
            Eviction::None => {}
            Eviction::Window { window, .. } => {
                if window == 0 {
                    return Err(invalid("Eviction::Window needs window ≥ 1"));
                }
            }
            Eviction::HeavyHitter { budget, recent } => {
                if budget <= recent {
                    return Err(invalid(format!(
                        "Eviction::HeavyHitter needs budget > recent (got {budget} ≤ {recent})"
                    )));
                }
            }
            Eviction::SnapKv {
                budget,
                observe,
                pool,
            } => {
                if observe == 0 || budget <= observe {
                    return Err(invalid(format!(
                        "Eviction::SnapKv needs budget > observe ≥ 1 (got {budget}, {observe})"
                    )));
                }
                if pool.is_multiple_of(2) {
                    return Err(invalid(format!(
                        "Eviction::SnapKv needs an odd pool width, got {pool}"
                    )));
                }
            }
        }
        let cap = cfg.capacity.unwrap_or(0);
        let need = cfg.layers as u128 * cfg.kv_heads as u128 * cap as u128 * (d + dv) as u128 * 2;
        if need > MAX_RESERVE_BYTES || cap > u32::MAX as usize {
            return Err(Error::TooLarge {
                what: "KV cache capacity".into(),
                needed: need.min(u64::MAX as u128) as u64,
                limit: MAX_RESERVE_BYTES as u64,
            });
        }
        let scored = matches!(cfg.eviction, Eviction::HeavyHitter { .. });
        let layers = (0..cfg.layers)
            .map(|_| Layer {
                heads: (0..cfg.kv_heads)
                    .map(|_| HeadStore::new(fmt, d, dv, scored, cap))
                    .collect(),
                next: 0,
                snapped: false,
            })
            .collect();
        Ok(KvCache {
            cfg,
            dv,
            device: device.clone(),
            layers,
        })
    }

    /// The configuration the cache was made with.
    pub fn config(&self) -> &KvCacheConfig {
        &self.cfg
    }

    /// The device holding the cache.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn layer(&self, layer: usize) -> Result<&Layer> {
        self.layers.get(layer).ok_or_else(|| {
            invalid(format!(
                "layer {layer} out of range (cache has {})",
                self.layers.len()
            ))
        })
    }

    /// Appends `k [t, kv_heads, head_dim]` and `v [t, kv_heads, v_head_dim]` (F32 or F16, on the
    /// cache's device) at positions `next_position(layer) .. + t`, quantizing on the way in.
    /// Then drops what no query at or after the first new position can see (window eviction).
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        self.layer(layer)?;
        let (h, d, dv) = (self.cfg.kv_heads, self.cfg.head_dim, self.dv);
        for t in [k, v] {
            if t.device() != self.device {
                return Err(Error::DeviceMismatch(
                    self.device.to_string(),
                    t.device().to_string(),
                ));
            }
            if !matches!(t.dtype(), DType::F32 | DType::F16) {
                return Err(Error::UnsupportedDType {
                    op: "KvCache::append",
                    dtype: t.dtype(),
                });
            }
        }
        let (&[tk, hk, dk], &[tv, hv, dvv]) = (k.shape(), v.shape()) else {
            return Err(Error::ShapeMismatch {
                op: "KvCache::append",
                detail: format!(
                    "k and v must be [t, heads, dim]; got {:?} and {:?}",
                    k.shape(),
                    v.shape()
                ),
            });
        };
        if tk != tv || hk != h || hv != h || dk != d || dvv != dv {
            return Err(Error::ShapeMismatch {
                op: "KvCache::append",
                detail: format!(
                    "expected k [t, {h}, {d}] and v [t, {h}, {dv}]; got {:?} and {:?}",
                    k.shape(),
                    v.shape()
                ),
            });
        }
        let t = tk;
        let p0 = self.layers[layer].next;
        if p0 + t > u32::MAX as usize {
            return Err(Error::TooLarge {
                what: "KV cache positions".into(),
                needed: (p0 + t) as u64,
                limit: u32::MAX as u64,
            });
        }
        if t == 0 {
            return Ok(());
        }
        let kf = k.to_f32_vec()?;
        let vf = v.to_f32_vec()?;
        if let Some(i) = kf.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { index: i });
        }
        if let Some(i) = vf.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { index: i });
        }
        let l = &mut self.layers[layer];
        let mut kr = vec![0f32; t * d];
        let mut vr = vec![0f32; t * dv];
        for (g, head) in l.heads.iter_mut().enumerate() {
            for i in 0..t {
                kr[i * d..(i + 1) * d].copy_from_slice(&kf[(i * h + g) * d..][..d]);
                vr[i * dv..(i + 1) * dv].copy_from_slice(&vf[(i * h + g) * dv..][..dv]);
            }
            head.append(&kr, &vr, p0 as u32);
        }
        l.next = p0 + t;
        if let Eviction::Window { window, sinks } = self.cfg.eviction {
            for head in &mut l.heads {
                eviction::window(head, p0 as i64, window, sinks);
            }
        }
        Ok(())
    }

    /// Attention of `q [t_q, h_q, head_dim]` (F32 or F16; `h_q` a multiple of `kv_heads`) over
    /// the layer's cache, reading every format directly. `params` as in §6 (`q_pos0` explicit,
    /// causal, window, sinks, scale, softcap); key positions come from the cache, so
    /// `params.key_positions` must be `None`. A key is visible when both the cache's eviction
    /// rule and `params.window` allow it. Score-based and window eviction run at the end.
    /// Returns `[t_q, h_q, v_head_dim]` F32.
    pub fn attend(&mut self, layer: usize, q: &Tensor, params: &AttentionParams) -> Result<Tensor> {
        self.layer(layer)?;
        let (h_kv, d, dv) = (self.cfg.kv_heads, self.cfg.head_dim, self.dv);
        if q.device() != self.device {
            return Err(Error::DeviceMismatch(
                self.device.to_string(),
                q.device().to_string(),
            ));
        }
        if !matches!(q.dtype(), DType::F32 | DType::F16) {
            return Err(Error::UnsupportedDType {
                op: "KvCache::attend (q)",
                dtype: q.dtype(),
            });
        }
        let &[t_q, h_q, dq] = q.shape() else {
            return Err(Error::ShapeMismatch {
                op: "KvCache::attend",
                detail: format!("q must be [t_q, h_q, {d}]; got {:?}", q.shape()),
            });
        };
        if dq != d || h_q == 0 || !h_q.is_multiple_of(h_kv) {
            return Err(Error::ShapeMismatch {
                op: "KvCache::attend",
                detail: format!(
                    "q must be [t_q, h_q, {d}] with h_q a multiple of {h_kv}; got {:?}",
                    q.shape()
                ),
            });
        }
        if params.key_positions.is_some() {
            return Err(invalid(
                "KvCache::attend takes key positions from the cache; params.key_positions must be None",
            ));
        }
        if params.window == Some(0) {
            return Err(invalid("attention window must be at least 1"));
        }
        if params.scale.is_some_and(|s| !s.is_finite())
            || params.softcap.is_some_and(|c| !(c.is_finite() && c > 0.0))
        {
            return Err(invalid("scale must be finite and softcap finite and > 0"));
        }
        let sinks = match &params.sinks {
            Some(s) => {
                if s.shape() != [h_q] || s.dtype() != DType::F32 {
                    return Err(Error::ShapeMismatch {
                        op: "KvCache::attend",
                        detail: format!(
                            "sinks must be [{h_q}] F32, got {} {:?}",
                            s.dtype(),
                            s.shape()
                        ),
                    });
                }
                Some(s.to_f32_vec()?)
            }
            None => None,
        };
        if params.q_pos0.saturating_add(t_q) > u32::MAX as usize + 1 {
            return Err(Error::TooLarge {
                what: "query positions".into(),
                needed: (params.q_pos0 + t_q) as u64,
                limit: u32::MAX as u64,
            });
        }
        let qf = q.to_f32_vec()?;
        let Backend::Cpu(cpu) = self.device.backend() else {
            return Err(Error::NotAvailable("KvCache on a GPU device".into()));
        };
        let cache_window = match self.cfg.eviction {
            Eviction::Window { window, sinks } => Some((window, sinks)),
            _ => None,
        };
        let l = &mut self.layers[layer];
        let len = l.heads.iter().map(|h| h.len()).max().unwrap_or(0);
        // Which queries' probabilities are needed.
        let score_from = match self.cfg.eviction {
            Eviction::HeavyHitter { .. } => Some(0),
            Eviction::SnapKv {
                budget, observe, ..
            } if !l.snapped && t_q >= observe && len > budget => Some(t_q - observe),
            _ => None,
        };
        let mut scores: Vec<Vec<f32>> = match score_from {
            Some(_) => l.heads.iter().map(|h| vec![0f32; h.len()]).collect(),
            None => Vec::new(),
        };
        let mut out = HostBuffer::zeroed(t_q * h_q * dv * 4);
        {
            let views: Vec<_> = l.heads.iter().map(|h| h.view()).collect();
            let outv: &mut [f32] = out.typed_mut();
            // Bound the kept logits: queries in chunks of at most 2^24 / (h_q · len) when scoring.
            let chunk = match score_from {
                Some(_) => ((1usize << 24) / (h_q * len.max(1))).max(16),
                None => t_q.max(1),
            };
            let mut i0 = 0;
            while i0 < t_q {
                let i1 = (i0 + chunk).min(t_q);
                let mask = kkv::CacheMask {
                    causal: params.causal,
                    window: params.window,
                    cache_window,
                    q_pos0: params.q_pos0 + i0,
                    sinks: sinks.as_deref(),
                    scale: params.scale.unwrap_or(1.0 / (d as f32).sqrt()),
                    softcap: params.softcap,
                };
                let shape = kkv::CacheShape {
                    t_q: i1 - i0,
                    h_q,
                    h_kv,
                    d,
                    dv,
                };
                let so = match score_from {
                    Some(f) if f < i1 => Some(kkv::ScoreOut {
                        from_query: f.saturating_sub(i0),
                        scores: &mut scores,
                    }),
                    _ => None,
                };
                kkv::attend(
                    cpu.pool,
                    cpu.isa,
                    &qf[i0 * h_q * d..i1 * h_q * d],
                    &views,
                    shape,
                    &mask,
                    &mut outv[i0 * h_q * dv..i1 * h_q * dv],
                    so,
                );
                i0 = i1;
            }
        }
        match self.cfg.eviction {
            Eviction::HeavyHitter { budget, recent } => {
                for (head, sc) in l.heads.iter_mut().zip(&scores) {
                    eviction::heavy_hitter(head, sc, budget, recent);
                }
            }
            Eviction::SnapKv {
                budget,
                observe,
                pool,
            } if score_from.is_some() => {
                for (head, sc) in l.heads.iter_mut().zip(&scores) {
                    eviction::snapkv(head, sc, budget, observe, pool);
                }
                l.snapped = true;
            }
            Eviction::Window { window, sinks } if t_q > 0 => {
                let p_last = (params.q_pos0 + t_q - 1) as i64;
                for head in &mut l.heads {
                    eviction::window(head, p_last, window, sinks);
                }
            }
            _ => {}
        }
        Ok(Tensor::from_storage(
            Storage::Host(out),
            DType::F32,
            &[t_q, h_q, dv],
            self.device.clone(),
        ))
    }

    /// Tokens held by the layer (the largest head count; heads differ only after `truncate` of a
    /// score-evicting layer).
    pub fn len(&self, layer: usize) -> Result<usize> {
        Ok(self
            .layer(layer)?
            .heads
            .iter()
            .map(|h| h.len())
            .max()
            .unwrap_or(0))
    }

    /// True when the layer holds no token.
    pub fn is_empty(&self, layer: usize) -> Result<bool> {
        Ok(self.len(layer)? == 0)
    }

    /// Position the next appended token takes.
    pub fn next_position(&self, layer: usize) -> Result<usize> {
        Ok(self.layer(layer)?.next)
    }

    /// Positions held by one KV head, oldest first.
    pub fn positions(&self, layer: usize, kv_head: usize) -> Result<Vec<u32>> {
        let l = self.layer(layer)?;
        let h = l.heads.get(kv_head).ok_or_else(|| {
            invalid(format!(
                "KV head {kv_head} out of range (cache has {})",
                l.heads.len()
            ))
        })?;
        Ok(h.positions().to_vec())
    }

    /// Keys `[len, kv_heads, head_dim]` and values `[len, kv_heads, v_head_dim]` as F32, rows in
    /// the order of [`KvCache::positions`]; shorter heads are padded with zero rows.
    pub fn dequantize(&self, layer: usize) -> Result<(Tensor, Tensor)> {
        let l = self.layer(layer)?;
        let (h, d, dv) = (self.cfg.kv_heads, self.cfg.head_dim, self.dv);
        let n = self.len(layer)?;
        let mut k = vec![0f32; n * h * d];
        let mut v = vec![0f32; n * h * dv];
        let mut hk = vec![0f32; n * d];
        let mut hv = vec![0f32; n * dv];
        for (g, head) in l.heads.iter().enumerate() {
            let m = head.len();
            hk[..m * d].fill(0.0);
            hv[..m * dv].fill(0.0);
            head.dequantize(&mut hk[..m * d], &mut hv[..m * dv]);
            for i in 0..m {
                k[(i * h + g) * d..][..d].copy_from_slice(&hk[i * d..(i + 1) * d]);
                v[(i * h + g) * dv..][..dv].copy_from_slice(&hv[i * dv..(i + 1) * dv]);
            }
        }
        Ok((
            Tensor::from_f32(&k, &[n, h, d])?,
            Tensor::from_f32(&v, &[n, h, dv])?,
        ))
    }

    /// Exact bytes held: data, scales, positions, scores and reserved capacity.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| &l.heads)
            .map(|h| h.memory_bytes())
            .sum()
    }

    /// Drops every token of the layer at or after `position` (speculative-decoding rollback);
    /// `next_position` becomes `min(next_position, position)`. KIVI quantization is not undone:
    /// tokens that a later (now dropped) append pushed out of the f16 residual stay quantized,
    /// so right after a deep rollback fewer than `residual` tokens may be f16.
    pub fn truncate(&mut self, layer: usize, position: usize) -> Result<()> {
        self.layer(layer)?;
        let l = &mut self.layers[layer];
        let p = position.min(u32::MAX as usize) as u32;
        for h in &mut l.heads {
            h.truncate(p);
        }
        l.next = l.next.min(position);
        Ok(())
    }

    /// Empties every layer (reserved capacity stays).
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            for h in &mut l.heads {
                h.clear();
            }
            l.next = 0;
            l.snapped = false;
        }
    }
}
