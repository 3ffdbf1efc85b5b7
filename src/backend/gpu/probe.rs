//! Roofline probes: streaming read bandwidth and FMA throughput of a GPU device.
//!
//! Timed with timestamp queries when the device has them, else by wall clock around a
//! submission and a wait. Each timed submission is kept well under ~100 ms.

use super::pipeline::{Pipeline, PipelineKey};
use super::GpuBackend;
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::Instant;
use wgpu::util::DeviceExt;

/// Pipeline keys of the probe shaders: (entry, vec4 words, workgroup size).
const PROBES: [(&str, bool, u32); 5] = [
    ("read_stream", false, 64),
    ("read_stream", false, 256),
    ("read_stream", true, 64),
    ("read_stream", true, 256),
    ("fma_loop", false, 256),
];

fn key(entry: &'static str, vec4: bool, wg: u32) -> PipelineKey {
    let variant = format!("probe_{}{}_wg{wg}", entry, if vec4 { "_vec4" } else { "" });
    let defines = if vec4 { vec!["VEC4"] } else { vec![] };
    PipelineKey::new("probe", entry, variant, defines, vec![("WG", wg)])
}

/// Keys of every probe pipeline (for `shader_sources`).
pub(crate) fn keys() -> Vec<PipelineKey> {
    PROBES.iter().map(|&(e, v, wg)| key(e, v, wg)).collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ProbeParams {
    words: u32,
    stride: u32,
    iters: u32,
    seed: u32,
}

impl GpuBackend {
    /// Best read bandwidth in GB/s over a few word widths and workgroup sizes.
    pub(crate) fn probe_bandwidth(&self) -> Result<f64> {
        let l = &self.ctx.limits;
        // Large enough to leave the caches, small enough for slow devices.
        let cap: u64 = if self.software { 32 << 20 } else { 256 << 20 };
        let bytes = cap
            .min(self.ctx.max_binding)
            .min(l.max_buffer_size)
            .min(u64::from(u32::MAX))
            / 16
            * 16;
        if bytes < 1 << 20 {
            return Err(Error::NotAvailable("binding too small to probe".into()));
        }
        let src = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wattle probe src"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut best = 0f64;
        for &(entry, vec4, wg) in PROBES.iter().filter(|p| p.0 == "read_stream") {
            if wg
                > l.max_compute_invocations_per_workgroup
                    .min(l.max_compute_workgroup_size_x)
            {
                continue;
            }
            let words = (bytes / if vec4 { 16 } else { 4 }) as u32;
            let p = self
                .pipelines
                .get(&self.ctx.device, &key(entry, vec4, wg))?;
            // Few long-running invocations suit CPU emulation, many short ones real GPUs.
            for grid in [1u32 << 15, 1 << 18, 1 << 20] {
                let threads = words.min(grid) / wg * wg;
                let params = ProbeParams {
                    words,
                    stride: threads,
                    iters: 0,
                    seed: 0,
                };
                // First run warms caches and pages; then best of two.
                for rep in 0..3 {
                    let s = self.timed(&p, &params, Some(&src), threads / wg)?;
                    if rep > 0 {
                        best = best.max(bytes as f64 / s / 1e9);
                    }
                }
            }
        }
        Ok(best)
    }

    /// FMA throughput in GFLOP/s of eight independent vec4 FMA chains per invocation.
    pub(crate) fn probe_fma(&self) -> Result<f64> {
        let l = &self.ctx.limits;
        let wg = 256u32.min(prev_pow2(
            l.max_compute_invocations_per_workgroup
                .min(l.max_compute_workgroup_size_x),
        ));
        let p = self
            .pipelines
            .get(&self.ctx.device, &key("fma_loop", false, wg))?;
        let threads = (1u32 << 16) / wg * wg;
        let flops_per_trip = f64::from(threads) * 8.0 * 4.0 * 2.0;
        let mut iters = 16u32;
        let mut best = 0f64;
        // Grow the loop until a run takes ~20 ms (never past ~100 ms per submission).
        for _ in 0..20 {
            let params = ProbeParams {
                words: 0,
                stride: threads,
                iters,
                seed: 1,
            };
            let s = self.timed(&p, &params, None, threads / wg)?;
            let rate = flops_per_trip * f64::from(iters) / s / 1e9;
            if s > 0.02 || iters >= 1 << 20 {
                // Repeat at this size and keep the best.
                best = best.max(rate);
                for _ in 0..2 {
                    let s = self.timed(&p, &params, None, threads / wg)?;
                    best = best.max(flops_per_trip * f64::from(iters) / s / 1e9);
                }
                break;
            }
            let grow = (0.025 / s.max(1e-6)).clamp(2.0, 16.0);
            iters = ((f64::from(iters) * grow) as u32).min(1 << 20);
        }
        Ok(best)
    }

    /// Runs one dispatch of `groups` workgroups; seconds taken on the GPU.
    fn timed(
        &self,
        p: &Arc<Pipeline>,
        params: &ProbeParams,
        src: Option<&wgpu::Buffer>,
        groups: u32,
    ) -> Result<f64> {
        let dev = &self.ctx.device;
        let out = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wattle probe out"),
            size: u64::from(params.stride.max(1)) * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wattle probe params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        // The layout is derived from the entry point: `fma_loop` does not use `src`.
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 1,
                resource: out.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: ubuf.as_entire_binding(),
            },
        ];
        if let Some(src) = src {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: src.as_entire_binding(),
            });
        }
        let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wattle probe"),
            layout: &p.layout,
            entries: &entries,
        });
        let ts = self
            .ctx
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let set = dev.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("wattle probe timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wattle probe resolve"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let read = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wattle probe timestamps read"),
                    size: 16,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (set, resolve, read)
            });
        // Drain earlier work so that the wall clock sees only this dispatch.
        self.synchronize()?;
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wattle probe"),
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wattle probe"),
                timestamp_writes: ts
                    .as_ref()
                    .map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
            });
            pass.set_pipeline(&p.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.max(1), 1, 1);
        }
        if let Some((set, resolve, read)) = &ts {
            enc.resolve_query_set(set, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        let t0 = Instant::now();
        self.ctx.queue.submit([enc.finish()]);
        self.synchronize()?;
        let wall = t0.elapsed().as_secs_f64();
        if let Some((_, _, read)) = &ts {
            let (tx, rx) = std::sync::mpsc::channel();
            read.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
            self.synchronize()?;
            if let Ok(Ok(())) = rx.recv() {
                let ticks: [u64; 2] = {
                    let view = read
                        .get_mapped_range(..)
                        .map_err(|e| Error::DeviceLost(format!("timestamp map: {e}")))?;
                    bytemuck::pod_read_unaligned(&view[..16])
                };
                read.unmap();
                let ns = ticks[1].saturating_sub(ticks[0]) as f64
                    * f64::from(self.ctx.queue.get_timestamp_period());
                // Some drivers report zeros; fall back to the wall clock then.
                if ns > 0.0 {
                    return Ok(ns * 1e-9);
                }
            }
        }
        Ok(wall.max(1e-9))
    }
}

fn prev_pow2(v: u32) -> u32 {
    if v == 0 {
        0
    } else {
        1 << (31 - v.leading_zeros())
    }
}
