//! Softmax attention on a GPU (`shaders/attention.wgsl`): a split pass over (query, KV head,
//! key split) and a merge pass over (query, head), encoded in one submission.

use super::pipeline::PipelineKey;
use super::{one_binding, u32_of, GpuBackend, GpuBuffer};
use crate::attention::AttentionShape;
use crate::error::{Error, Result};
use crate::tensor::{Storage, Tensor};
use crate::{AttentionParams, DType};
use wgpu::util::DeviceExt;

/// Threads per workgroup (keys per tile) of both passes.
const WG: u32 = 64;
/// Rows (queries of a tile × query heads of a group) a workgroup holds (`MAXR` in the shader).
const MAX_ROWS: usize = 32;
/// Accumulators per thread (`MAXACC`): rows × ⌈d_v / WG⌉.
const MAX_ACC: usize = 64;
/// Fewest keys a split takes.
const MIN_SPLIT_KEYS: usize = 128;
/// Workgroups of the split pass worth having at once.
const TARGET_GROUPS: usize = 256;

/// The uniform block, as `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t_q: u32,
    h_q: u32,
    h_kv: u32,
    d: u32,
    d_v: u32,
    t_k: u32,
    q_pos0: u32,
    window: u32,
    causal: u32,
    has_pos: u32,
    splits: u32,
    has_sinks: u32,
    scale: f32,
    softcap: f32,
    qt: u32,
    cwin: u32,
    csinks: u32,
    pos_heads: u32,
    score_from: u32,
    split0: u32,
    splits_total: u32,
    key0: u32,
    t_k_total: u32,
    pad: u32,
}

/// The define naming `dtype` for operand `which` (`Q`, `K` or `V`).
fn define(which: char, dtype: DType) -> Result<&'static str> {
    Ok(match (which, dtype) {
        ('Q', DType::F32) => "Q_F32",
        ('Q', DType::F16) => "Q_F16",
        ('K', DType::F32) => "K_F32",
        ('K', DType::F16) => "K_F16",
        ('K', DType::Q8_0) => "K_Q8_0",
        ('K', DType::Q4_0) => "K_Q4_0",
        ('V', DType::F32) => "V_F32",
        ('V', DType::F16) => "V_F16",
        ('V', DType::Q8_0) => "V_Q8_0",
        ('V', DType::Q4_0) => "V_Q4_0",
        _ => {
            return Err(Error::UnsupportedDType {
                op: "attention on a GPU",
                dtype,
            })
        }
    })
}

/// A variant of the attention kernels beyond the operand formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    /// Subgroup reductions for the rows' tile statistics.
    pub sg: bool,
    /// F16 operands read natively as `array<f16>`.
    pub f16: bool,
}

/// The two pipelines' keys for these operand formats and variant.
pub(crate) fn keys(q: DType, k: DType, v: DType, var: Variant) -> Result<[PipelineKey; 2]> {
    let mut defines = vec![define('Q', q)?, define('K', k)?, define('V', v)?];
    let mut variant = format!("attention_q{q}_k{k}_v{v}");
    if var.sg {
        defines.push("SG");
        variant.push_str("_sg");
    }
    // Native f16 only where an operand is F16 (else the variant is the plain one).
    let f16n = [(q, "Q_F16N"), (k, "K_F16N"), (v, "V_F16N")]
        .into_iter()
        .filter(|(d, _)| *d == DType::F16)
        .map(|(_, n)| n)
        .collect::<Vec<_>>();
    if var.f16 && !f16n.is_empty() {
        defines.push("F16N");
        defines.extend(f16n);
        variant.push_str("_f16");
    }
    Ok(["attn_split", "attn_merge"].map(|entry| {
        PipelineKey::new(
            "attention",
            entry,
            variant.clone(),
            defines.clone(),
            vec![("WG", WG)],
        )
    }))
}

/// The two pipelines' keys for KIVI keys and values (`bits` per code, groups of `group`).
pub(crate) fn kivi_keys(q: DType, bits: u32, group: u32, var: Variant) -> Result<[PipelineKey; 2]> {
    let mut defines = vec![define('Q', q)?, "K_KIVI", "V_KIVI"];
    let mut variant = format!("attention_q{q}_kivi{bits}g{group}");
    if var.sg {
        defines.push("SG");
        variant.push_str("_sg");
    }
    if var.f16 && q == DType::F16 {
        defines.extend(["F16N", "Q_F16N"]);
        variant.push_str("_f16");
    }
    Ok(["attn_split", "attn_merge"].map(|entry| {
        PipelineKey::new(
            "attention",
            entry,
            variant.clone(),
            defines.clone(),
            vec![("WG", WG), ("KBITS", bits), ("KGROUP", group)],
        )
    }))
}

/// Every variant, for the naga translation test.
pub(crate) fn all_keys() -> Vec<PipelineKey> {
    let kv = [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0];
    let mut out = Vec::new();
    for q in [DType::F32, DType::F16] {
        for sg in [false, true] {
            for f16 in [false, true] {
                for bits in [2, 4] {
                    if let Ok(ks) = kivi_keys(q, bits, 32, Variant { sg, f16 }) {
                        out.extend(ks);
                    }
                }
            }
        }
        for k in kv {
            for v in kv {
                for sg in [false, true] {
                    for f16 in [false, true] {
                        if f16 && ![q, k, v].contains(&DType::F16) {
                            continue;
                        }
                        if let Ok(ks) = keys(q, k, v, Variant { sg, f16 }) {
                            out.extend(ks);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Bind-group entries binding each buffer whole.
fn entries<'a>(list: &[(u32, &'a wgpu::Buffer)]) -> Vec<wgpu::BindGroupEntry<'a>> {
    list.iter()
        .map(|&(binding, buf)| wgpu::BindGroupEntry {
            binding,
            resource: buf.as_entire_binding(),
        })
        .collect()
}

/// How a region's keys and values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionFmt {
    /// Keys and values as tensors of these formats.
    Plain(DType, DType),
    /// A KIVI cache's quantized groups (`bits` per code, groups of `group`).
    Kivi { bits: u32, group: u32 },
}

/// One run of keys and values: `[t_k, h_kv, d]` and `[t_k, h_kv, d_v]` in `fmt`.
pub(crate) struct KvRegion<'a> {
    /// Keys.
    pub k: &'a wgpu::Buffer,
    /// Values.
    pub v: &'a wgpu::Buffer,
    /// Their storage.
    pub fmt: RegionFmt,
    /// Position of each key (or each (key, KV head) cell with `pos_heads`; `u32::MAX` marks an
    /// empty cache cell), or `None` for key j at position j.
    pub kpos: Option<&'a wgpu::Buffer>,
    /// Keys in the region.
    pub t_k: usize,
}

/// The operands of one attention dispatch as device buffers: `rt.attention`'s tensors, or a
/// KV cache's cells — one softmax over every region's keys (the splits of each region merged
/// together).
pub(crate) struct AttnOperands<'a> {
    /// Queries `[t_q, h_q, d]` and their format.
    pub q: (&'a wgpu::Buffer, DType),
    /// The key/value regions (their `t_k` sum to the shape's).
    pub regions: Vec<KvRegion<'a>>,
    /// A KV cache's window eviction rule `(window, sinks)`.
    pub cache_window: Option<(usize, usize)>,
    /// `kpos` holds one position per (key, KV head) cell (`j · h_kv + g`).
    pub pos_heads: bool,
    /// Keep the logits of queries `from..` in `lg` (`[(i − from) · h_q + head][t_k]`, keys of
    /// all regions in order) and every row's final max and sum in `stats` (`[t_q · h_q][2]`).
    pub scores: Option<ScoreBufs<'a>>,
}

/// Where attention keeps what a KV cache's eviction scores are made of.
pub(crate) struct ScoreBufs<'a> {
    /// First scored query.
    pub from: usize,
    /// Kept logits.
    pub lg: &'a wgpu::Buffer,
    /// Row maxima and sums.
    pub stats: &'a wgpu::Buffer,
}

impl GpuBackend {
    /// `rt.attention` on this device (operands checked by `attention::check`).
    pub(crate) fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        s: &AttentionShape,
    ) -> Result<Tensor> {
        let (Storage::Gpu(qb), Storage::Gpu(kb), Storage::Gpu(vb)) =
            (q.storage(), k.storage(), v.storage())
        else {
            return Err(Error::DeviceMismatch(
                q.device().to_string(),
                k.device().to_string(),
            ));
        };
        let kpos = params.key_positions.as_ref().map(|kp| {
            self.ctx
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("attention key positions"),
                    contents: if kp.is_empty() {
                        &[0u8; 4]
                    } else {
                        bytemuck::cast_slice(kp)
                    },
                    usage: wgpu::BufferUsages::STORAGE,
                })
        });
        let ops = AttnOperands {
            q: (one_binding("attention queries", qb)?, q.dtype()),
            regions: vec![KvRegion {
                k: one_binding("attention keys", kb)?,
                v: one_binding("attention values", vb)?,
                fmt: RegionFmt::Plain(k.dtype(), v.dtype()),
                kpos: kpos.as_ref(),
                t_k: s.t_k,
            }],
            cache_window: None,
            pos_heads: false,
            scores: None,
        };
        let out = self.attention_buffers(&ops, params, s)?;
        Ok(Tensor::from_storage(
            Storage::Gpu(out),
            DType::F32,
            &[s.t_q, s.h_q, s.d_v],
            q.device(),
        ))
    }

    /// Attention over operands already in device buffers; returns the `[t_q, h_q, d_v]` F32
    /// output's buffer. `params.key_positions` is ignored (positions come from the regions).
    pub(crate) fn attention_buffers(
        &self,
        ops: &AttnOperands,
        params: &AttentionParams,
        s: &AttentionShape,
    ) -> Result<GpuBuffer> {
        let group = s.h_q / s.h_kv;
        let per_row = s.d_v.div_ceil(WG as usize).max(1);
        // Queries per workgroup: as many as the rows and accumulators allow (they share every
        // K/V read), no more than there are.
        let qt = (MAX_ROWS / group.max(1))
            .min(MAX_ACC / (group.max(1) * per_row))
            .min(s.t_q.max(1));
        if qt == 0 {
            return Err(Error::NotAvailable(format!(
                "attention on a GPU with {group} query heads per KV head and d_v {} (at most \
                 {MAX_ROWS} rows and {MAX_ACC} accumulators per thread)",
                s.d_v
            )));
        }
        let sinks = params.sinks.as_ref().map(|t| t.to_f32_vec()).transpose()?;
        u32_of("queries", s.t_q * s.h_q * s.d)?;
        let rows = s.t_q * s.h_q;
        let state = (2 + s.d_v) * 4;
        let tiles = s.t_q.div_ceil(qt);
        let by_groups = TARGET_GROUPS.div_ceil(tiles * s.h_kv).max(1);
        let by_memory = (self.ctx.max_binding as usize / (rows * state).max(1)).max(1);
        let cap = 1024.min(by_memory);
        // Splits per region: enough workgroups to fill the device, each split at least
        // MIN_SPLIT_KEYS keys, the partial states of all regions within one binding.
        let mut splits = Vec::with_capacity(ops.regions.len());
        for r in &ops.regions {
            // Every element index the shader forms must fit in 32 bits.
            u32_of("keys", r.t_k * s.h_kv * s.d)?;
            u32_of("values", r.t_k * s.h_kv * s.d_v)?;
            let visible = params.window.map_or(r.t_k, |w| w.min(r.t_k)).max(1);
            let by_keys = visible.div_ceil(MIN_SPLIT_KEYS).max(1);
            let mut n = by_keys
                .min(by_groups)
                .min(cap / ops.regions.len().max(1))
                .max(1);
            if self.software {
                // llvmpipe stops an invocation's loops after ~65535 back-edges in all
                // (silently): enough splits that no invocation walks more key tiles than that.
                let nr = group * qt;
                let per_tile =
                    s.d * (nr + 1) + 3 * nr + 2 * WG as usize + WG as usize * per_row * (nr + 1);
                let tiles_max = (super::SOFTWARE_LOOP_BUDGET / per_tile.max(1)).max(1);
                let need = visible.div_ceil(tiles_max * WG as usize);
                if need > cap {
                    return Err(Error::NotAvailable(format!(
                        "attention over {visible} keys on a software GPU: {need} key splits \
                         needed to stay within its loop limit"
                    )));
                }
                n = n.max(need);
            }
            splits.push(if r.t_k == 0 { 0 } else { n });
        }
        let total: usize = splits.iter().sum();
        let total = total.max(1);
        if total > cap {
            return Err(Error::TooLarge {
                what: "attention key splits".into(),
                needed: total as u64,
                limit: cap as u64,
            });
        }
        let split_groups = u32_of("workgroups", tiles * s.h_kv)?;
        if split_groups > self.ctx.limits.max_compute_workgroups_per_dimension {
            return Err(Error::TooLarge {
                what: "attention workgroups per dimension".into(),
                needed: u64::from(split_groups),
                limit: u64::from(self.ctx.limits.max_compute_workgroups_per_dimension),
            });
        }
        let (cwin, csinks) = ops.cache_window.unwrap_or((0, 0));
        // Subgroup reductions need subgroups of at least 4 (at most WG / 4 per workgroup).
        let var = Variant {
            sg: self.use_subgroups && self.ctx.info.subgroup_min_size >= 4,
            f16: self.use_f16,
        };
        let mut params_of = Vec::with_capacity(ops.regions.len());
        let (mut split0, mut key0) = (0usize, 0usize);
        for (r, &n) in ops.regions.iter().zip(&splits) {
            params_of.push(Params {
                t_q: s.t_q as u32,
                h_q: s.h_q as u32,
                h_kv: s.h_kv as u32,
                d: s.d as u32,
                d_v: s.d_v as u32,
                t_k: r.t_k as u32,
                q_pos0: u32_of("q_pos0", params.q_pos0)?,
                window: u32_of("window", params.window.unwrap_or(0))?,
                causal: u32::from(params.causal),
                has_pos: u32::from(r.kpos.is_some()),
                splits: n as u32,
                has_sinks: u32::from(sinks.is_some()),
                scale: params.scale.unwrap_or(1.0 / (s.d as f32).sqrt()),
                softcap: params.softcap.unwrap_or(0.0),
                qt: qt as u32,
                cwin: u32_of("cache window", cwin)?,
                csinks: u32_of("cache sinks", csinks)?,
                pos_heads: u32::from(ops.pos_heads),
                score_from: match &ops.scores {
                    Some(sb) => u32_of("scored query", sb.from)?,
                    None => u32::MAX,
                },
                split0: split0 as u32,
                splits_total: total as u32,
                key0: u32_of("keys", key0)?,
                t_k_total: u32_of("keys", s.t_k)?,
                pad: 0,
            });
            split0 += n;
            key0 += r.t_k;
        }
        let keys_of = |r: &KvRegion| match r.fmt {
            RegionFmt::Plain(k, v) => keys(ops.q.1, k, v, var),
            RegionFmt::Kivi { bits, group } => kivi_keys(ops.q.1, bits, group, var),
        };
        self.ctx.scoped("attention", || {
            let out = self.ctx.alloc_rows("attention output", rows, s.d_v * 4)?;
            if rows == 0 || s.d_v == 0 {
                return Ok(out);
            }
            let dev = &self.ctx.device;
            let storage = |label: &str, bytes: &[u8]| {
                dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let no_pos = storage("attention key positions", &[0u8; 4]);
            let no_scores = storage("attention no scores", &[0u8; 4]);
            let (lg, stats) = match &ops.scores {
                Some(sb) => (sb.lg, sb.stats),
                None => (&no_scores, &no_scores),
            };
            let sinks_buf = match &sinks {
                Some(sk) if !sk.is_empty() => storage("attention sinks", bytemuck::cast_slice(sk)),
                _ => storage("attention sinks", &[0u8; 4]),
            };
            let part = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("attention partial states"),
                size: (rows * total * state).max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let obuf = one_binding("attention output", &out)?;
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle attention"),
            });
            let mut merge = None;
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wattle attention"),
                    timestamp_writes: None,
                });
                for ((r, p), &n) in ops.regions.iter().zip(&params_of).zip(&splits) {
                    let [split_key, merge_key] = keys_of(r)?;
                    let split = self.pipelines.get(dev, &split_key)?;
                    let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("attention params"),
                        contents: bytemuck::bytes_of(p),
                        usage: wgpu::BufferUsages::UNIFORM,
                    });
                    if merge.is_none() {
                        merge = Some((self.pipelines.get(dev, &merge_key)?, *p));
                    }
                    if n == 0 {
                        continue;
                    }
                    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("attention split"),
                        layout: &split.layout,
                        entries: &entries(&[
                            (0, ops.q.0),
                            (1, r.k),
                            (2, r.v),
                            (3, r.kpos.unwrap_or(&no_pos)),
                            (4, &part),
                            (5, &ubuf),
                            (8, lg),
                        ]),
                    });
                    pass.set_pipeline(&split.pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(split_groups, n as u32, 1);
                }
                let Some((merge, mp)) = &merge else {
                    return Err(Error::InvalidArgument("attention without keys".into()));
                };
                let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("attention merge params"),
                    contents: bytemuck::bytes_of(mp),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let merge_bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("attention merge"),
                    layout: &merge.layout,
                    entries: &entries(&[
                        (4, &part),
                        (5, &ubuf),
                        (6, &sinks_buf),
                        (7, obuf),
                        (9, stats),
                    ]),
                });
                pass.set_pipeline(&merge.pipeline);
                pass.set_bind_group(0, &merge_bind, &[]);
                // (query, head) pairs as x + 65535·y, as the merge pass reads them.
                let rows32 = u32_of("rows", rows)?;
                pass.dispatch_workgroups(rows32.min(65535), rows32.div_ceil(65535), 1);
            }
            self.ctx.queue.submit([enc.finish()]);
            Ok(out)
        })
    }
}
