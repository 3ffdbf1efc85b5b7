//! KV caches on a GPU: slot buffers, the append kernel (`shaders/kv.wgsl`, quantizing on the
//! GPU) and attend through the attention kernels (`shaders/attention.wgsl`) reading the slots in
//! place with the cache's positions and window rule.
//!
//! A layer's K and V buffers hold one slot per token: that token's rows for every KV head,
//! `[h_kv, dim]` values in the cache format (F16, or ggml Q8_0 / Q4_0 blocks of 32), so the
//! first `n` slots read as an attention operand `[n, h_kv, dim]`. A third buffer holds each
//! slot's position (`u32::MAX` for an empty slot, which attention skips).

use super::attention::{single, AttnOperands};
use super::buffer::{pad4, GpuBuffer};
use super::pipeline::PipelineKey;
use super::GpuBackend;
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
            .map(|b| {
                b.chunks
                    .iter()
                    .map(|c| c.buf.size() as usize)
                    .sum::<usize>()
            })
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

/// Every `kv_append` variant, for the naga translation test.
pub(crate) fn all_keys() -> Vec<PipelineKey> {
    let mut out = Vec::new();
    for src in [DType::F32, DType::F16] {
        for fmt in [DType::F16, DType::Q8_0, DType::Q4_0] {
            if let Ok(k) = append_key(src, fmt) {
                out.push(k);
            }
        }
    }
    out
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge {
        what: format!("KV cache {what} ({v}) as a 32-bit shader index"),
        needed: v as u64,
        limit: u64::from(u32::MAX),
    })
}

fn gpu_buffer<'a>(t: &'a Tensor, what: &str, limit: u64) -> Result<&'a wgpu::Buffer> {
    match t.storage() {
        Storage::Gpu(b) => single(what, b, limit),
        Storage::Host(_) => Err(Error::DeviceMismatch(
            "a GPU".into(),
            t.device().to_string(),
        )),
    }
}

impl GpuBackend {
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

    /// Buffers for `slots` slots of `k_slot` and `v_slot` bytes, every position empty; with
    /// `old`, its slots are copied over (growth).
    pub(crate) fn kv_buffers(
        &self,
        slots: usize,
        k_slot: usize,
        v_slot: usize,
        old: Option<&KvBuffers>,
    ) -> Result<KvBuffers> {
        let bytes = |per: usize| {
            slots.checked_mul(per).ok_or_else(|| Error::TooLarge {
                what: "KV cache slots".into(),
                needed: u64::MAX,
                limit: self.ctx.chunk_limit(),
            })
        };
        let (kb, vb, pb) = (bytes(k_slot)?, bytes(v_slot)?, bytes(4)?);
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
                let mut enc =
                    self.ctx
                        .device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("wattle KV cache growth"),
                        });
                for (from, to, n) in [
                    (&old.k, &new.k, old.slots * k_slot),
                    (&old.v, &new.v, old.slots * v_slot),
                    (&old.pos, &new.pos, old.slots * 4),
                ] {
                    let n = pad4(n as u64).min(from.chunks[0].buf.size());
                    if n > 0 {
                        enc.copy_buffer_to_buffer(&from.chunks[0].buf, 0, &to.chunks[0].buf, 0, n);
                    }
                }
                q.submit([enc.finish()]);
            }
            Ok(new)
        })
    }

    /// Writes the positions of slots `0 .. pos.len()`.
    pub(crate) fn kv_write_positions(&self, bufs: &KvBuffers, pos: &[u32]) -> Result<()> {
        if pos.is_empty() {
            return Ok(());
        }
        if pos.len() > bufs.slots {
            return Err(Error::InvalidArgument(format!(
                "{} positions for {} KV cache slots",
                pos.len(),
                bufs.slots
            )));
        }
        self.ctx
            .queue
            .write_buffer(&bufs.pos.chunks[0].buf, 0, bytemuck::cast_slice(pos));
        Ok(())
    }

    /// Quantizes `k [t, h_kv, d]` and `v [t, h_kv, d_v]` (F32/F16 on this device) into the slots
    /// `slots[i]` (token i) in format `fmt`.
    pub(crate) fn kv_append(
        &self,
        bufs: &KvBuffers,
        fmt: DType,
        k: &Tensor,
        v: &Tensor,
        slots: &[u32],
    ) -> Result<()> {
        let (Some(&lo), Some(&hi)) = (slots.iter().min(), slots.iter().max()) else {
            return Ok(());
        };
        if hi as usize >= bufs.slots {
            return Err(Error::InvalidArgument(format!(
                "KV cache slot {hi} of {}",
                bufs.slots
            )));
        }
        let mut slot_tok = vec![EMPTY; (hi - lo + 1) as usize];
        for (i, &s) in slots.iter().enumerate() {
            slot_tok[(s - lo) as usize] = u32_of("token", i)?;
        }
        let limit = self.ctx.chunk_limit();
        self.ctx.scoped("KvCache::append", || {
            let dev = &self.ctx.device;
            let tok_buf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("KV cache slot tokens"),
                contents: bytemuck::cast_slice(&slot_tok),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle KV append"),
            });
            let mut keep = Vec::new();
            for (src, dst, per) in [(k, &bufs.k, bufs.k_slot), (v, &bufs.v, bufs.v_slot)] {
                let n = src.shape().iter().skip(1).product::<usize>();
                let byte_lo = lo as usize * per;
                let byte_hi = (hi as usize + 1) * per;
                let word_lo = byte_lo / 4;
                let words = byte_hi.div_ceil(4) - word_lo;
                u32_of("element", src.elem_count())?;
                u32_of("byte", byte_hi + 3)?;
                let p = Params {
                    n: u32_of("row", n)?,
                    slot_bytes: u32_of("slot", per)?,
                    slot_lo: lo,
                    slots: slot_tok.len() as u32,
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
                let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("KV append"),
                    layout: &pipeline.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: gpu_buffer(src, "KvCache::append source", limit)?
                                .as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: dst.chunks[0].buf.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: tok_buf.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: ubuf.as_entire_binding(),
                        },
                    ],
                });
                let groups = words.div_ceil(WG as usize);
                let max = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
                let gx = groups.min(max);
                let gy = groups.div_ceil(gx.max(1));
                if gy > max {
                    return Err(Error::TooLarge {
                        what: "KV append workgroups".into(),
                        needed: groups as u64,
                        limit: (max * max) as u64,
                    });
                }
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("wattle KV append"),
                        timestamp_writes: None,
                    });
                    pass.set_pipeline(&pipeline.pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(gx as u32, gy as u32, 1);
                }
                keep.push((pipeline, bind, ubuf));
            }
            self.ctx.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    /// Attention of `q [t_q, h_q, d]` over the first `shape.t_k` slots, the cache's window rule
    /// applied in the kernel. Returns `[t_q, h_q, d_v]` F32 on this device.
    pub(crate) fn kv_attend(
        &self,
        bufs: &KvBuffers,
        fmt: DType,
        q: &Tensor,
        params: &AttentionParams,
        shape: &AttentionShape,
        cache_window: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let limit = self.ctx.chunk_limit();
        let ops = AttnOperands {
            q: (gpu_buffer(q, "KvCache::attend queries", limit)?, q.dtype()),
            k: (&bufs.k.chunks[0].buf, fmt),
            v: (&bufs.v.chunks[0].buf, fmt),
            kpos: Some(&bufs.pos.chunks[0].buf),
            cache_window,
        };
        let out = self.attention_buffers(&ops, params, shape)?;
        Ok(Tensor::from_storage(
            Storage::Gpu(out),
            DType::F32,
            &[shape.t_q, shape.h_q, shape.d_v],
            q.device(),
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
