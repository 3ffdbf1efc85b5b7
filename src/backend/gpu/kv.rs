//! KV caches on a GPU: slot buffers, the append kernel (`shaders/kv.wgsl`, quantizing on the
//! GPU) and attend through the attention kernels (`shaders/attention.wgsl`) reading the slots in
//! place with the cache's positions and window rule.
//!
//! A layer's K and V buffers hold one slot per token: that token's rows for every KV head,
//! `[h_kv, dim]` values in the cache format (F16, or ggml Q8_0 / Q4_0 blocks of 32), so the
//! first `n` slots read as an attention operand `[n, h_kv, dim]`. A third buffer holds each
//! slot's position (`u32::MAX` for an empty slot, which attention skips).

use super::attention::{AttnOperands, KvRegion, RegionFmt, ScoreBufs};
use super::buffer::{pad4, GpuBuffer};
use super::pipeline::PipelineKey;
use super::{tensor_binding, u32_of, GpuBackend};
use crate::attention::AttentionShape;
use crate::error::{Error, Result};
use crate::tensor::{Storage, Tensor};
use crate::{AttentionParams, DType};
use wgpu::util::DeviceExt;

/// Invocations per workgroup of `kv_append`.
const WG: u32 = 64;

/// Marks an empty slot in the positions buffer.
pub(crate) const EMPTY: u32 = u32::MAX;

/// The uniform block of `kv_append`, as `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    slot_bytes: u32,
    slot_lo: u32,
    slots: u32,
    word_lo: u32,
    words: u32,
    pad: [u32; 2],
}

/// The device buffers of one cache layer.
pub(crate) struct KvBuffers {
    k: GpuBuffer,
    v: GpuBuffer,
    pos: GpuBuffer,
    /// Slots allocated.
    slots: usize,
    /// Bytes per slot of K and of V.
    k_slot: usize,
    v_slot: usize,
}

impl std::fmt::Debug for KvBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBuffers")
            .field("slots", &self.slots)
            .field("k_slot", &self.k_slot)
            .field("v_slot", &self.v_slot)
            .finish()
    }
}

impl KvBuffers {
    /// Slots allocated.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Device bytes held (K, V and positions, as allocated).
    pub fn memory_bytes(&self) -> usize {
        [&self.k, &self.v, &self.pos]
            .iter()
            .map(|b| b.allocated_bytes())
            .sum()
    }
}

/// The define naming a cache format.
fn cache_define(fmt: DType) -> Result<&'static str> {
    Ok(match fmt {
        DType::F16 => "C_F16",
        DType::Q8_0 => "C_Q8_0",
        DType::Q4_0 => "C_Q4_0",
        _ => {
            return Err(Error::UnsupportedDType {
                op: "KvCache on a GPU",
                dtype: fmt,
            })
        }
    })
}

/// The `kv_append` pipeline key for a source and cache format.
pub(crate) fn append_key(src: DType, fmt: DType) -> Result<PipelineKey> {
    let x = match src {
        DType::F32 => "X_F32",
        DType::F16 => "X_F16",
        _ => {
            return Err(Error::UnsupportedDType {
                op: "KvCache::append",
                dtype: src,
            })
        }
    };
    Ok(PipelineKey::new(
        "kv",
        "kv_append",
        format!("kv_append_{src}_{fmt}"),
        vec![x, cache_define(fmt)?],
        vec![("WG", WG)],
    ))
}

/// The `kv_scores` pipeline key.
fn scores_key() -> PipelineKey {
    PipelineKey::new(
        "kv_scores",
        "kv_scores",
        "kv_scores".into(),
        vec![],
        vec![("WG", WG)],
    )
}

/// Every `kv_append`, `kv_scores` and KIVI flush variant, for the naga translation test.
pub(crate) fn all_keys() -> Vec<PipelineKey> {
    let mut out = vec![scores_key()];
    out.extend(kivi_all_keys());
    for src in [DType::F32, DType::F16] {
        for fmt in [DType::F16, DType::Q8_0, DType::Q4_0] {
            if let Ok(k) = append_key(src, fmt) {
                out.push(k);
            }
        }
    }
    out
}

impl GpuBackend {
    /// Copies the first `n` bytes of each `(from, to, n)` (growth of a cache's buffers).
    fn copy_prefixes(&self, copies: &[(&GpuBuffer, &GpuBuffer, usize)]) {
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        for &(from, to, n) in copies {
            let n = pad4(n as u64).min(from.chunks[0].buf.size());
            if n > 0 {
                enc.copy_buffer_to_buffer(&from.chunks[0].buf, 0, &to.chunks[0].buf, 0, n);
            }
        }
        self.ctx.queue.submit([enc.finish()]);
    }

    /// Writes `pos` at the start of a positions buffer.
    fn write_positions(&self, buf: &GpuBuffer, pos: &[u32], what: &str) -> Result<()> {
        if pos.is_empty() {
            return Ok(());
        }
        if pos.len() * 4 > buf.len() {
            return Err(Error::InvalidArgument(format!(
                "{} positions for {} {what} cells",
                pos.len(),
                buf.len() / 4
            )));
        }
        self.ctx
            .queue
            .write_buffer(&buf.chunks[0].buf, 0, bytemuck::cast_slice(pos));
        Ok(())
    }

    /// One single-binding buffer of `bytes` bytes.
    fn kv_alloc(&self, what: &str, bytes: usize) -> Result<GpuBuffer> {
        let b = self.ctx.alloc_rows(what, 1, bytes)?;
        if b.chunks.len() != 1 {
            return Err(Error::TooLarge {
                what: format!("{what} in one storage binding"),
                needed: bytes as u64,
                limit: self.ctx.chunk_limit(),
            });
        }
        Ok(b)
    }

    /// Buffers for `slots` slots of `k_slot` and `v_slot` bytes and `h` position cells each,
    /// every position empty; with `old`, its slots are copied over (growth).
    pub(crate) fn kv_buffers(
        &self,
        slots: usize,
        k_slot: usize,
        v_slot: usize,
        h: usize,
        old: Option<&KvBuffers>,
    ) -> Result<KvBuffers> {
        let bytes = |per: usize| {
            slots.checked_mul(per).ok_or_else(|| Error::TooLarge {
                what: "KV cache slots".into(),
                needed: u64::MAX,
                limit: self.ctx.chunk_limit(),
            })
        };
        let (kb, vb, pb) = (bytes(k_slot)?, bytes(v_slot)?, bytes(4 * h)?);
        self.ctx.scoped("KV cache buffers", || {
            let new = KvBuffers {
                k: self.kv_alloc("KV cache keys", kb)?,
                v: self.kv_alloc("KV cache values", vb)?,
                pos: self.kv_alloc("KV cache positions", pb)?,
                slots,
                k_slot,
                v_slot,
            };
            let q = &self.ctx.queue;
            q.write_buffer(
                &new.pos.chunks[0].buf,
                0,
                &vec![0xffu8; pad4(pb as u64) as usize],
            );
            if let Some(old) = old {
                self.copy_prefixes(&[
                    (&old.k, &new.k, old.slots * k_slot),
                    (&old.v, &new.v, old.slots * v_slot),
                    (&old.pos, &new.pos, old.slots * 4 * h),
                ]);
            }
            Ok(new)
        })
    }

    /// Writes the positions of cells `0 .. pos.len()` (`slot · h_kv + head`).
    pub(crate) fn kv_write_positions(&self, bufs: &KvBuffers, pos: &[u32]) -> Result<()> {
        self.write_positions(&bufs.pos, pos, "KV cache")
    }

    /// Quantizes `k [t, h_kv, d]` and `v [t, h_kv, d_v]` (F32/F16 on this device) into the
    /// cells `dest[i · h_kv + g]` (the slot of token i's head g) in format `fmt`.
    pub(crate) fn kv_append(
        &self,
        bufs: &KvBuffers,
        fmt: DType,
        k: &Tensor,
        v: &Tensor,
        dest: &[u32],
    ) -> Result<()> {
        let h = k.shape().get(1).copied().unwrap_or(1).max(1);
        let cell = |i: usize| dest[i] as usize * h + i % h;
        let (Some(lo), Some(hi)) = (
            (0..dest.len()).map(cell).min(),
            (0..dest.len()).map(cell).max(),
        ) else {
            return Ok(());
        };
        if hi >= bufs.slots * h {
            return Err(Error::InvalidArgument(format!(
                "KV cache cell {hi} of {}",
                bufs.slots * h
            )));
        }
        // Source row (token · h_kv + head) of each cell of the touched range.
        let mut cell_src = vec![EMPTY; hi - lo + 1];
        for i in 0..dest.len() {
            cell_src[cell(i) - lo] = u32_of("row", i)?;
        }
        self.ctx.scoped("KvCache::append", || {
            let dev = &self.ctx.device;
            let src_buf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("KV cache cell sources"),
                contents: bytemuck::cast_slice(&cell_src),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle KV append"),
            });
            for (src, dst, per_slot) in [(k, &bufs.k, bufs.k_slot), (v, &bufs.v, bufs.v_slot)] {
                let per = per_slot / h;
                let n = src.shape().get(2).copied().unwrap_or(0);
                let byte_lo = lo * per;
                let byte_hi = (hi + 1) * per;
                let word_lo = byte_lo / 4;
                let words = byte_hi.div_ceil(4) - word_lo;
                u32_of("element", src.elem_count())?;
                u32_of("byte", byte_hi + 3)?;
                let p = Params {
                    n: u32_of("row", n)?,
                    slot_bytes: u32_of("cell", per)?,
                    slot_lo: lo as u32,
                    slots: cell_src.len() as u32,
                    word_lo: word_lo as u32,
                    words: words as u32,
                    pad: [0; 2],
                };
                let pipeline = self.pipelines.get(dev, &append_key(src.dtype(), fmt)?)?;
                let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("KV append params"),
                    contents: bytemuck::bytes_of(&p),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let src_b = tensor_binding(src, "KvCache::append source")?;
                self.encode_pass(
                    &mut enc,
                    &pipeline,
                    &[
                        (0, src_b),
                        (1, &dst.chunks[0].buf),
                        (2, &src_buf),
                        (3, &ubuf),
                    ],
                    words.div_ceil(WG as usize),
                )?;
            }
            self.ctx.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    /// Attention of `q [t_q, h_q, d]` over the first `shape.t_k` slots, the cache's window rule
    /// applied in the kernel. Returns `[t_q, h_q, d_v]` F32 on this device and, with
    /// `score_from`, each cell's softmax probability summed over the query heads of its group
    /// and the queries `score_from..` (`[h_kv][t_k]`, read back for the eviction decision).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn kv_attend(
        &self,
        bufs: &KvBuffers,
        fmt: DType,
        q: &Tensor,
        params: &AttentionParams,
        shape: &AttentionShape,
        cache_window: Option<(usize, usize)>,
        score_from: Option<usize>,
        kivi: Option<(&KiviBuffers, KiviShape)>,
    ) -> Result<(Tensor, Option<Vec<f32>>)> {
        let limit = self.ctx.chunk_limit();
        let qbuf = tensor_binding(q, "KvCache::attend queries")?;
        let (t_q, h_q, t_k, h_kv) = (shape.t_q, shape.h_q, shape.t_k, shape.h_kv);
        // The cache's cells as one region of slots, and a KIVI cache's quantized groups as a
        // second (`shape.t_k` counts both).
        let qslots = kivi.map_or(0, |(kb, ks)| kb.groups * ks.group);
        let regions = || {
            let mut r = vec![KvRegion {
                k: &bufs.k.chunks[0].buf,
                v: &bufs.v.chunks[0].buf,
                fmt: RegionFmt::Plain(fmt, fmt),
                kpos: Some(&bufs.pos.chunks[0].buf),
                t_k: t_k - qslots,
            }];
            if let Some((kb, ks)) = kivi.filter(|_| qslots > 0) {
                r.push(KvRegion {
                    k: &kb.k.chunks[0].buf,
                    v: &kb.v.chunks[0].buf,
                    fmt: RegionFmt::Kivi {
                        bits: ks.bits,
                        group: ks.group as u32,
                    },
                    kpos: Some(&kb.pos.chunks[0].buf),
                    t_k: qslots,
                });
            }
            r
        };
        let Some(from) = score_from else {
            let o = AttnOperands {
                q: (qbuf, q.dtype()),
                regions: regions(),
                cache_window,
                pos_heads: true,
                scores: None,
            };
            let out = self.attention_buffers(&o, params, shape)?;
            return Ok((
                Tensor::from_storage(
                    Storage::Gpu(out),
                    DType::F32,
                    &[t_q, h_q, shape.d_v],
                    q.device(),
                ),
                None,
            ));
        };
        // Queries in chunks whose kept logits fit one binding (and 2^24 values).
        let per_query = h_q * t_k.max(1) * 4;
        let qc = ((limit as usize).min(1 << 26) / per_query.max(1)).clamp(1, t_q.max(1));
        let q_row = crate::tensor::storage_bytes(q.dtype(), &[h_q * shape.d])?;
        let o_row = h_q * shape.d_v * 4;
        let dev = &self.ctx.device;
        let scratch = |label: &str, bytes: usize| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: pad4(bytes.max(4) as u64),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let (out, acc) = self.ctx.scoped("KvCache::attend scores", || {
            let out = self
                .ctx
                .alloc_rows("KV attend output", t_q * h_q, shape.d_v * 4)?;
            let acc = self.ctx.alloc_rows("KV cache scores", h_kv, t_k * 4)?;
            for b in [&out, &acc] {
                if b.chunks.len() != 1 {
                    return Err(Error::TooLarge {
                        what: "KV attend output or scores in one binding".into(),
                        needed: b.len() as u64,
                        limit,
                    });
                }
            }
            let lg = scratch("KV cache kept logits", qc * per_query);
            let stats = scratch("KV cache row statistics", qc * h_q * 8);
            let qchunk = scratch("KV attend query chunk", qc * q_row);
            let scores_pipe = self.pipelines.get(dev, &scores_key())?;
            let mut c0 = 0;
            while c0 < t_q {
                let c1 = (c0 + qc).min(t_q);
                let nq = c1 - c0;
                let single = c0 == 0 && c1 == t_q;
                if !single {
                    let mut enc = dev.create_command_encoder(&Default::default());
                    enc.copy_buffer_to_buffer(
                        qbuf,
                        (c0 * q_row) as u64,
                        &qchunk,
                        0,
                        pad4((nq * q_row) as u64),
                    );
                    self.ctx.queue.submit([enc.finish()]);
                }
                let rel_from = from.max(c0) - c0;
                let sub = AttentionShape { t_q: nq, ..*shape };
                let p = AttentionParams {
                    q_pos0: params.q_pos0 + c0,
                    ..params.clone()
                };
                let o = AttnOperands {
                    q: (if single { qbuf } else { &qchunk }, q.dtype()),
                    regions: regions(),
                    cache_window,
                    pos_heads: true,
                    scores: (rel_from < nq).then_some(ScoreBufs {
                        from: rel_from,
                        lg: &lg,
                        stats: &stats,
                    }),
                };
                let part = self.attention_buffers(&o, &p, &sub)?;
                let mut enc = dev.create_command_encoder(&Default::default());
                enc.copy_buffer_to_buffer(
                    &part.chunks[0].buf,
                    0,
                    &out.chunks[0].buf,
                    (c0 * o_row) as u64,
                    (nq * o_row) as u64,
                );
                if rel_from < nq {
                    let sp: [u32; 8] = [
                        t_k as u32,
                        h_q as u32,
                        h_kv as u32,
                        (nq - rel_from) as u32,
                        rel_from as u32,
                        0,
                        0,
                        0,
                    ];
                    let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("KV scores params"),
                        contents: bytemuck::cast_slice(&sp),
                        usage: wgpu::BufferUsages::UNIFORM,
                    });
                    self.encode_pass(
                        &mut enc,
                        &scores_pipe,
                        &[(0, &lg), (1, &stats), (2, &acc.chunks[0].buf), (3, &ubuf)],
                        (h_kv * t_k).div_ceil(WG as usize),
                    )?;
                }
                self.ctx.queue.submit([enc.finish()]);
                c0 = c1;
            }
            Ok((out, acc))
        })?;
        let bytes = acc.read_bytes()?;
        let probs: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[..h_kv * t_k * 4]);
        Ok((
            Tensor::from_storage(
                Storage::Gpu(out),
                DType::F32,
                &[t_q, h_q, shape.d_v],
                q.device(),
            ),
            Some(probs),
        ))
    }

    /// The raw bytes of the first `slots` slots of K and V.
    pub(crate) fn kv_read(&self, bufs: &KvBuffers, slots: usize) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut k = bufs.k.read_bytes()?;
        let mut v = bufs.v.read_bytes()?;
        k.truncate(slots * bufs.k_slot);
        v.truncate(slots * bufs.v_slot);
        Ok((k, v))
    }
}

/// The quantized groups of a KIVI cache layer: key group blocks per (group, head), value
/// cells and positions per (slot, head), as `shaders/kivi.wgsl` writes them and the attention
/// kernels' `K_KIVI` / `V_KIVI` readers read them.
pub(crate) struct KiviBuffers {
    k: GpuBuffer,
    v: GpuBuffer,
    pos: GpuBuffer,
    /// Groups allocated.
    groups: usize,
}

impl std::fmt::Debug for KiviBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KiviBuffers")
            .field("groups", &self.groups)
            .finish()
    }
}

impl KiviBuffers {
    /// Groups allocated.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Device bytes held.
    pub fn memory_bytes(&self) -> usize {
        [&self.k, &self.v, &self.pos]
            .iter()
            .map(|b| b.allocated_bytes())
            .sum()
    }
}

/// The shape of a KIVI layer: KV heads, key and value dims, bits per code, group size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KiviShape {
    pub h: usize,
    pub d: usize,
    pub dv: usize,
    pub bits: u32,
    pub group: usize,
}

impl KiviShape {
    /// Bytes per key group block of one head: d packed (scale, minimum) words, then d runs of
    /// `group` codes.
    pub fn kblock(&self) -> usize {
        self.d * 4 + self.d * self.group * self.bits as usize / 8
    }

    /// Bytes per value cell: d_v / group packed words, then d_v codes.
    pub fn vcell(&self) -> usize {
        self.dv / self.group * 4 + self.dv * self.bits as usize / 8
    }
}

fn kivi_key(entry: &'static str, k: KiviShape) -> PipelineKey {
    PipelineKey::new(
        "kivi",
        entry,
        format!("kivi{}g{}", k.bits, k.group),
        vec![],
        vec![("WG", WG), ("KBITS", k.bits), ("KGROUP", k.group as u32)],
    )
}

/// The KIVI flush variants, for the naga translation test.
pub(crate) fn kivi_all_keys() -> Vec<PipelineKey> {
    let mut out = Vec::new();
    for bits in [2, 4] {
        let k = KiviShape {
            h: 1,
            d: 32,
            dv: 32,
            bits,
            group: 32,
        };
        out.push(kivi_key("kivi_keys", k));
        out.push(kivi_key("kivi_values", k));
    }
    out
}

impl GpuBackend {
    /// KIVI buffers for `groups` groups, every position empty; with `old`, its groups are copied
    /// over (growth).
    pub(crate) fn kivi_buffers(
        &self,
        groups: usize,
        ks: KiviShape,
        old: Option<&KiviBuffers>,
    ) -> Result<KiviBuffers> {
        let (kblock, vcell) = (ks.kblock(), ks.vcell());
        let cells = groups * ks.group * ks.h;
        self.ctx.scoped("KIVI cache buffers", || {
            let new = KiviBuffers {
                k: self.kv_alloc("KIVI keys", groups * ks.h * kblock)?,
                v: self.kv_alloc("KIVI values", cells * vcell)?,
                pos: self.kv_alloc("KIVI positions", cells * 4)?,
                groups,
            };
            let q = &self.ctx.queue;
            q.write_buffer(
                &new.pos.chunks[0].buf,
                0,
                &vec![0xffu8; pad4((cells * 4) as u64) as usize],
            );
            if let Some(old) = old {
                let oc = old.groups * ks.group * ks.h;
                self.copy_prefixes(&[
                    (&old.k, &new.k, old.groups * ks.h * kblock),
                    (&old.v, &new.v, oc * vcell),
                    (&old.pos, &new.pos, oc * 4),
                ]);
            }
            Ok(new)
        })
    }

    /// Writes the positions of quantized cells `0 .. pos.len()` (`slot · h_kv + head`).
    pub(crate) fn kivi_write_positions(&self, q: &KiviBuffers, pos: &[u32]) -> Result<()> {
        self.write_positions(&q.pos, pos, "KIVI")
    }

    /// Quantizes `items` (per item: head, group, then the group's tail slots in position order)
    /// from the f16 tail into the KIVI buffers.
    pub(crate) fn kivi_flush(
        &self,
        tail: &KvBuffers,
        q: &KiviBuffers,
        ks: KiviShape,
        items: &[u32],
    ) -> Result<()> {
        let n = items.len() / (2 + ks.group);
        if n == 0 {
            return Ok(());
        }
        self.ctx.scoped("KIVI flush", || {
            let dev = &self.ctx.device;
            let ibuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("KIVI flush items"),
                contents: bytemuck::cast_slice(items),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let p: [u32; 4] = [ks.h as u32, ks.d as u32, ks.dv as u32, n as u32];
            let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("KIVI flush params"),
                contents: bytemuck::cast_slice(&p),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let mut enc = dev.create_command_encoder(&Default::default());
            for (entry, work) in [
                ("kivi_keys", n * ks.d),
                ("kivi_values", n * ks.group * (ks.dv / ks.group)),
            ] {
                let pipe = self.pipelines.get(dev, &kivi_key(entry, ks))?;
                // Each entry binds only what it reads and writes.
                let (tail_b, q_b) = if entry == "kivi_keys" {
                    ((0, &tail.k.chunks[0].buf), (2, &q.k.chunks[0].buf))
                } else {
                    ((1, &tail.v.chunks[0].buf), (3, &q.v.chunks[0].buf))
                };
                self.encode_pass(
                    &mut enc,
                    &pipe,
                    &[tail_b, q_b, (4, &ibuf), (5, &ubuf)],
                    work.div_ceil(WG as usize),
                )?;
            }
            self.ctx.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    /// The raw bytes of the KIVI keys and values.
    pub(crate) fn kivi_read(&self, q: &KiviBuffers) -> Result<(Vec<u8>, Vec<u8>)> {
        Ok((q.k.read_bytes()?, q.v.read_bytes()?))
    }
}
