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
//! On a GPU device the cache lives in device buffers: `append` quantizes on the GPU
//! (`shaders/kv.wgsl`) and `attend` runs the WGSL attention kernels over the cells in place,
//! keeping the logits the score-based policies need and summing them into per-token
//! probabilities on the device (`shaders/kv_scores.wgsl`). GPU caches hold every format and
//! policy: a KIVI cache keeps its f16 tail in cells and quantizes whole groups on the device
//! (`shaders/kivi.wgsl`).

mod eviction;
mod gpu;

use crate::backend::gpu::kv::KiviShape;
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
    store: Store,
}

/// Where the layers live.
#[derive(Debug)]
enum Store {
    /// Host memory, one [`HeadStore`] per KV head.
    Cpu(Vec<Layer>),
    /// Device buffers in format `fmt` (F16, Q8_0 or Q4_0).
    Gpu {
        fmt: DType,
        layers: Vec<gpu::GpuLayer>,
    },
}

/// Slots a new GPU cache layer starts with when no capacity is given.
const GPU_INITIAL_SLOTS: usize = 64;

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
    /// An empty cache on `device` (the CPU or a GPU; every format and policy on both).
    pub fn new(rt: &Runtime, device: &Device, cfg: KvCacheConfig) -> Result<KvCache> {
        let _ = rt;
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
        let store = match device.backend() {
            Backend::Cpu(_) => {
                let scored = matches!(cfg.eviction, Eviction::HeavyHitter { .. });
                Store::Cpu(
                    (0..cfg.layers)
                        .map(|_| Layer {
                            heads: (0..cfg.kv_heads)
                                .map(|_| HeadStore::new(fmt, d, dv, scored, cap))
                                .collect(),
                            next: 0,
                            snapped: false,
                        })
                        .collect(),
                )
            }
            Backend::Gpu(g) => {
                // KIVI keeps its f16 tail in F16 cells and its groups in their own buffers.
                let (fmt, kivi) = match cfg.format {
                    KvFormat::F16 => (DType::F16, None),
                    KvFormat::Q8_0 => (DType::Q8_0, None),
                    KvFormat::Q4_0 => (DType::Q4_0, None),
                    KvFormat::Kivi {
                        bits,
                        group,
                        residual,
                    } => {
                        let shape = KiviShape {
                            h: cfg.kv_heads,
                            d,
                            dv,
                            bits,
                            group,
                        };
                        (DType::F16, Some((shape, residual)))
                    }
                };
                let (ks, vs) = gpu_slot_bytes(fmt, cfg.kv_heads, d, dv)?;
                // A KIVI tail holds at most residual + group + one append's tokens; the rest of
                // the capacity goes to the groups.
                let slots = match (kivi, cap) {
                    (Some((sh, residual)), _) => (residual + 2 * sh.group).max(GPU_INITIAL_SLOTS),
                    (None, 0) => GPU_INITIAL_SLOTS,
                    (None, c) => c,
                };
                let layers = (0..cfg.layers)
                    .map(|_| {
                        let mut l = gpu::GpuLayer::new(
                            g.kv_buffers(slots, ks, vs, cfg.kv_heads, None)?,
                            cfg.kv_heads,
                        );
                        if let Some((sh, residual)) = kivi {
                            let groups = cap.div_ceil(sh.group).max(1);
                            l.kivi = Some(gpu::KiviPart::new(
                                g.kivi_buffers(groups, sh, None)?,
                                sh,
                                residual,
                            ));
                        }
                        Ok(l)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Store::Gpu { fmt, layers }
            }
        };
        Ok(KvCache {
            cfg,
            dv,
            device: device.clone(),
            store,
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

    /// Checks a layer index.
    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer < self.cfg.layers {
            Ok(())
        } else {
            Err(invalid(format!(
                "layer {layer} out of range (cache has {})",
                self.cfg.layers
            )))
        }
    }

    /// The GPU backend of a GPU cache.
    fn gpu(&self) -> Result<&crate::backend::gpu::GpuBackend> {
        gpu_of(&self.device)
    }

    /// Appends `k [t, kv_heads, head_dim]` and `v [t, kv_heads, v_head_dim]` (F32 or F16, on the
    /// cache's device) at positions `next_position(layer) .. + t`, quantizing on the way in.
    /// Then drops what no query at or after the first new position can see (window eviction).
    ///
    /// On a GPU the values are quantized on the device and not checked for finiteness (that
    /// would mean reading them back); on the CPU non-finite input gives [`Error::NonFinite`].
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        self.check_layer(layer)?;
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
        let p0 = self.next_position(layer)?;
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
        if let Store::Gpu { .. } = self.store {
            return self.append_gpu(layer, k, v, t, p0);
        }
        let Store::Cpu(layers) = &mut self.store else {
            return Ok(());
        };
        let kf = k.to_f32_vec()?;
        let vf = v.to_f32_vec()?;
        if let Some(i) = kf.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { index: i });
        }
        if let Some(i) = vf.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { index: i });
        }
        let l = &mut layers[layer];
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
                window_retain(head, p0 as i64, window, sinks);
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
        self.check_layer(layer)?;
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
        let cache_window = match self.cfg.eviction {
            Eviction::Window { window, sinks } => Some((window, sinks)),
            _ => None,
        };
        if let Store::Gpu { .. } = self.store {
            return self.attend_gpu(layer, q, params, cache_window);
        }
        let qf = q.to_f32_vec()?;
        let (Backend::Cpu(cpu), Store::Cpu(layers)) = (self.device.backend(), &mut self.store)
        else {
            return Err(Error::NotAvailable("KvCache on a GPU device".into()));
        };
        let l = &mut layers[layer];
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
                    for (acc, p) in head.scores_mut().iter_mut().zip(sc) {
                        *acc += p;
                    }
                    let keep = eviction::heavy_hitter_keep(head.scores(), budget, recent);
                    head.retain(&keep);
                }
            }
            Eviction::SnapKv {
                budget,
                observe,
                pool,
            } if score_from.is_some() => {
                for (head, sc) in l.heads.iter_mut().zip(&scores) {
                    head.retain(&eviction::snapkv_keep(sc, budget, observe, pool));
                }
                l.snapped = true;
            }
            Eviction::Window { window, sinks } if t_q > 0 => {
                let p_last = (params.q_pos0 + t_q - 1) as i64;
                for head in &mut l.heads {
                    window_retain(head, p_last, window, sinks);
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

    /// Appends to a GPU layer: slots planned on the host (the cache grows when they run out),
    /// the rows quantized into them on the device, then window eviction.
    fn append_gpu(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        t: usize,
        p0: usize,
    ) -> Result<()> {
        let (h, d, dv) = (self.cfg.kv_heads, self.cfg.head_dim, self.dv);
        let eviction = self.cfg.eviction;
        let g = gpu_of(&self.device)?;
        let Store::Gpu { fmt, layers } = &mut self.store else {
            return Ok(());
        };
        let l = &mut layers[layer];
        let (dest, hwm) = l.plan(t);
        if hwm > l.bufs.slots() {
            if hwm > u32::MAX as usize {
                return Err(Error::TooLarge {
                    what: "KV cache slots".into(),
                    needed: hwm as u64,
                    limit: u32::MAX as u64,
                });
            }
            let (ks, vs) = gpu_slot_bytes(*fmt, h, d, dv)?;
            let grown = g.kv_buffers(hwm.max(2 * l.bufs.slots()), ks, vs, h, Some(&l.bufs))?;
            l.bufs = grown;
        }
        g.kv_append(&l.bufs, *fmt, k, v, &dest)?;
        l.occupy(&dest, p0 as u32);
        // KIVI: the tail's oldest whole groups are quantized on the device.
        let (items, need) = l.kivi_plan();
        if let Some(kp) = &mut l.kivi {
            if need > kp.bufs.groups() {
                let grown =
                    g.kivi_buffers(need.max(2 * kp.bufs.groups()), kp.shape, Some(&kp.bufs))?;
                kp.bufs = grown;
            }
            g.kivi_flush(&l.bufs, &kp.bufs, kp.shape, &items)?;
        }
        if let Eviction::Window { window, sinks } = eviction {
            l.evict_window(p0 as i64, window, sinks);
        }
        Ok(())
    }

    /// Attend over a GPU layer (operands checked by `attend`).
    fn attend_gpu(
        &mut self,
        layer: usize,
        q: &Tensor,
        params: &AttentionParams,
        cache_window: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let (h_kv, d, dv) = (self.cfg.kv_heads, self.cfg.head_dim, self.dv);
        let &[t_q, h_q, _] = q.shape() else {
            return Err(invalid("q must be [t_q, h_q, head_dim]"));
        };
        let g = gpu_of(&self.device)?;
        let Store::Gpu { fmt, layers } = &mut self.store else {
            return Err(Error::NotAvailable(
                "KvCache::attend_gpu on a CPU cache".into(),
            ));
        };
        let l = &mut layers[layer];
        if l.dirty {
            g.kv_write_positions(&l.bufs, &l.cells)?;
            l.dirty = false;
        }
        let len = l.len();
        if len == 0 || t_q == 0 {
            return Tensor::from_f32(&vec![0f32; t_q * h_q * dv], &[t_q, h_q, dv])?
                .to(&self.device);
        }
        // Which queries' probabilities the eviction policy needs.
        let score_from = match self.cfg.eviction {
            Eviction::HeavyHitter { .. } => Some(0),
            Eviction::SnapKv {
                budget, observe, ..
            } if !l.snapped && t_q >= observe && len > budget => Some(t_q - observe),
            _ => None,
        };
        let shape = crate::attention::AttentionShape {
            t_q,
            h_q,
            t_k: l.slots(),
            h_kv,
            d,
            d_v: dv,
        };
        let p = AttentionParams {
            key_positions: None,
            ..params.clone()
        };
        let kivi = match &mut l.kivi {
            Some(kp) => {
                if kp.dirty {
                    g.kivi_write_positions(&kp.bufs, &kp.cells)?;
                    kp.dirty = false;
                }
                Some((&kp.bufs, kp.shape))
            }
            None => None,
        };
        let shape = crate::attention::AttentionShape {
            t_k: shape.t_k + kivi.map_or(0, |(b, sh)| b.groups() * sh.group),
            ..shape
        };
        let (out, probs) =
            g.kv_attend(&l.bufs, *fmt, q, &p, &shape, cache_window, score_from, kivi)?;
        match (self.cfg.eviction, probs) {
            (Eviction::HeavyHitter { budget, recent }, Some(pr)) => {
                l.evict_heavy_hitter(&pr, budget, recent)
            }
            (
                Eviction::SnapKv {
                    budget,
                    observe,
                    pool,
                },
                Some(pr),
            ) => l.evict_snapkv(&pr, budget, observe, pool),
            (Eviction::Window { window, sinks }, _) => {
                l.evict_window((params.q_pos0 + t_q - 1) as i64, window, sinks)
            }
            _ => {}
        }
        Ok(out)
    }

    /// Tokens held by the layer (the largest head count; heads differ only after `truncate` of a
    /// score-evicting layer).
    pub fn len(&self, layer: usize) -> Result<usize> {
        self.check_layer(layer)?;
        Ok(match &self.store {
            Store::Cpu(layers) => layers[layer]
                .heads
                .iter()
                .map(|h| h.len())
                .max()
                .unwrap_or(0),
            Store::Gpu { layers, .. } => layers[layer].len(),
        })
    }

    /// True when the layer holds no token.
    pub fn is_empty(&self, layer: usize) -> Result<bool> {
        Ok(self.len(layer)? == 0)
    }

    /// Position the next appended token takes.
    pub fn next_position(&self, layer: usize) -> Result<usize> {
        self.check_layer(layer)?;
        Ok(match &self.store {
            Store::Cpu(layers) => layers[layer].next,
            Store::Gpu { layers, .. } => layers[layer].next,
        })
    }

    /// Positions held by one KV head, oldest first.
    pub fn positions(&self, layer: usize, kv_head: usize) -> Result<Vec<u32>> {
        self.check_layer(layer)?;
        if kv_head >= self.cfg.kv_heads {
            return Err(invalid(format!(
                "KV head {kv_head} out of range (cache has {})",
                self.cfg.kv_heads
            )));
        }
        Ok(match &self.store {
            Store::Cpu(layers) => layers[layer].heads[kv_head].positions().to_vec(),
            Store::Gpu { layers, .. } => {
                let l = &layers[layer];
                l.ordered_all(kv_head)
                    .into_iter()
                    .map(|at| l.position(kv_head, at))
                    .collect()
            }
        })
    }

    /// Keys `[len, kv_heads, head_dim]` and values `[len, kv_heads, v_head_dim]` as F32 on the
    /// cache's device, rows in the order of [`KvCache::positions`]; shorter heads are padded
    /// with zero rows.
    pub fn dequantize(&self, layer: usize) -> Result<(Tensor, Tensor)> {
        self.check_layer(layer)?;
        let (h, d, dv) = (self.cfg.kv_heads, self.cfg.head_dim, self.dv);
        let n = self.len(layer)?;
        let mut k = vec![0f32; n * h * d];
        let mut v = vec![0f32; n * h * dv];
        match &self.store {
            Store::Cpu(layers) => {
                let mut hk = vec![0f32; n * d];
                let mut hv = vec![0f32; n * dv];
                for (g, head) in layers[layer].heads.iter().enumerate() {
                    let m = head.len();
                    hk[..m * d].fill(0.0);
                    hv[..m * dv].fill(0.0);
                    head.dequantize(&mut hk[..m * d], &mut hv[..m * dv]);
                    for i in 0..m {
                        k[(i * h + g) * d..][..d].copy_from_slice(&hk[i * d..(i + 1) * d]);
                        v[(i * h + g) * dv..][..dv].copy_from_slice(&hv[i * dv..(i + 1) * dv]);
                    }
                }
            }
            Store::Gpu { fmt, layers } => {
                let l = &layers[layer];
                let (kb, vb) = self.gpu()?.kv_read(&l.bufs, l.slots())?;
                let (ks, vs) = gpu_slot_bytes(*fmt, h, d, dv)?;
                let (kc, vc) = (ks / h, vs / h);
                let bad = |e| Error::DeviceLost(format!("KV cache bytes: {e}"));
                let kivi = match &l.kivi {
                    Some(kp) => Some((kp, self.gpu()?.kivi_read(&kp.bufs)?)),
                    None => None,
                };
                for g in 0..h {
                    for (i, at) in l.ordered_all(g).into_iter().enumerate() {
                        if let (true, Some((kp, (qk, qv)))) = (at.0, &kivi) {
                            let sh = kp.shape;
                            kivi_rows(
                                sh,
                                qk,
                                qv,
                                at.1,
                                g,
                                &mut k[(i * h + g) * d..(i * h + g + 1) * d],
                                &mut v[(i * h + g) * dv..(i * h + g + 1) * dv],
                            );
                            continue;
                        }
                        let c = at.1 * h + g;
                        wattle_kernels::quant::dequantize(
                            *fmt,
                            &kb[c * kc..(c + 1) * kc],
                            &mut k[(i * h + g) * d..(i * h + g + 1) * d],
                        )
                        .map_err(bad)?;
                        wattle_kernels::quant::dequantize(
                            *fmt,
                            &vb[c * vc..(c + 1) * vc],
                            &mut v[(i * h + g) * dv..(i * h + g + 1) * dv],
                        )
                        .map_err(bad)?;
                    }
                }
            }
        }
        Ok((
            Tensor::from_f32(&k, &[n, h, d])?.to(&self.device)?,
            Tensor::from_f32(&v, &[n, h, dv])?.to(&self.device)?,
        ))
    }

    /// Exact bytes held: data, scales, positions, scores and reserved capacity.
    pub fn memory_bytes(&self) -> usize {
        match &self.store {
            Store::Cpu(layers) => layers
                .iter()
                .flat_map(|l| &l.heads)
                .map(|h| h.memory_bytes())
                .sum(),
            Store::Gpu { layers, .. } => layers.iter().map(|l| l.memory_bytes()).sum(),
        }
    }

    /// Drops every token of the layer at or after `position` (speculative-decoding rollback);
    /// `next_position` becomes `min(next_position, position)`. KIVI quantization is not undone:
    /// tokens that a later (now dropped) append pushed out of the f16 residual stay quantized,
    /// so right after a deep rollback fewer than `residual` tokens may be f16.
    pub fn truncate(&mut self, layer: usize, position: usize) -> Result<()> {
        self.check_layer(layer)?;
        let p = position.min(u32::MAX as usize) as u32;
        match &mut self.store {
            Store::Cpu(layers) => {
                let l = &mut layers[layer];
                for h in &mut l.heads {
                    h.truncate(p);
                }
                l.next = l.next.min(position);
            }
            Store::Gpu { layers, .. } => {
                let l = &mut layers[layer];
                l.retain(|x| x < p);
                l.next = l.next.min(position);
            }
        }
        Ok(())
    }

    /// Empties every layer (reserved capacity stays).
    pub fn clear(&mut self) {
        match &mut self.store {
            Store::Cpu(layers) => {
                for l in layers {
                    for h in &mut l.heads {
                        h.clear();
                    }
                    l.next = 0;
                    l.snapped = false;
                }
            }
            Store::Gpu { layers, .. } => layers.iter_mut().for_each(|l| l.clear()),
        }
    }
}

/// Dequantizes the KIVI key and value rows of quantized slot `j`, head `g`, from the bytes of
/// a GPU cache's groups (the layouts of `shaders/kivi.wgsl`).
fn kivi_rows(
    sh: KiviShape,
    qk: &[u8],
    qv: &[u8],
    j: usize,
    g: usize,
    k: &mut [f32],
    v: &mut [f32],
) {
    let word = |b: &[u8], w: usize| {
        u32::from_le_bytes([b[4 * w], b[4 * w + 1], b[4 * w + 2], b[4 * w + 3]])
    };
    let pair = |w: u32| {
        (
            half::f16::from_bits(w as u16).to_f32(),
            half::f16::from_bits((w >> 16) as u16).to_f32(),
        )
    };
    let bits = sh.bits as usize;
    let mask = (1u32 << bits) - 1;
    let rw = sh.group * bits / 32;
    let blk = (j / sh.group * sh.h + g) * sh.d * (1 + rw);
    let t = j % sh.group;
    for (c, out) in k.iter_mut().enumerate() {
        let (s, m) = pair(word(qk, blk + c));
        let bit = t * bits;
        let code = (word(qk, blk + sh.d + c * rw + bit / 32) >> (bit % 32)) & mask;
        *out = s * code as f32 + m;
    }
    let ng = sh.dv / sh.group;
    let base = (j * sh.h + g) * (ng + sh.dv * bits / 32);
    for (c, out) in v.iter_mut().enumerate() {
        let (s, m) = pair(word(qv, base + c / sh.group));
        let bit = c * bits;
        let code = (word(qv, base + ng + bit / 32) >> (bit % 32)) & mask;
        *out = s * code as f32 + m;
    }
}

/// The GPU backend of a device (a field borrow, so a cache's store can be borrowed beside it).
fn gpu_of(device: &Device) -> Result<&crate::backend::gpu::GpuBackend> {
    match device.backend() {
        Backend::Gpu(g) => Ok(g),
        Backend::Cpu(_) => Err(Error::NotAvailable("a CPU cache has no GPU".into())),
    }
}

/// Window eviction of one CPU head.
fn window_retain(head: &mut HeadStore, p_ref: i64, window: usize, sinks: usize) {
    let keep: Vec<bool> = head
        .positions()
        .iter()
        .map(|&p| eviction::window_keeps(p, p_ref, window, sinks))
        .collect();
    head.retain(&keep);
}

/// Bytes per slot (one token, every KV head) of K and of V in a GPU cache of format `fmt`.
fn gpu_slot_bytes(fmt: DType, h: usize, d: usize, dv: usize) -> Result<(usize, usize)> {
    Ok((
        crate::tensor::storage_bytes(fmt, &[h * d])?,
        crate::tensor::storage_bytes(fmt, &[h * dv])?,
    ))
}
