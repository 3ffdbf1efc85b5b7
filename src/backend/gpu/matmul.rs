//! Float matmul `y = x · wᵀ` on the GPU: matvec (decode) and tiled GEMM (prefill) kernels with
//! their variants, and the dispatch driver that splits work by binding chunks and time budget.

use super::pipeline::{Pipeline, PipelineKey};
use super::{Ctx, GpuBackend, GpuBuffer};
use crate::error::{Error, Result};
use crate::tensor::{Storage, Tensor};
use crate::DType;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// Which matmul kernel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MatmulKernel {
    /// One workgroup per weight row, up to 8 rows of x at once (`shaders/matvec.wgsl`).
    Matvec,
    /// Register-tiled GEMM with workgroup-memory tiles (`shaders/gemm.wgsl`).
    Gemm,
}

/// How invocations of a workgroup combine their data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Reduce {
    /// Subgroup operations (`subgroupAdd`, `subgroupShuffle`); needs SUBGROUP.
    Subgroup,
    /// Workgroup memory and barriers only.
    Workgroup,
}

/// One compiled form of the matmul kernels: the text defines, the readable name and the
/// pipeline-cache key all derive from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MatmulVariant {
    /// Kernel.
    pub kernel: MatmulKernel,
    /// Weight format: F32, F16 or BF16.
    pub w: DType,
    /// Activation format: F32 or F16.
    pub x: DType,
    /// Reduction / data exchange.
    pub reduce: Reduce,
    /// Native f16 products (SHADER_F16); only for F16 weights and F16 activations.
    pub f16_math: bool,
}

/// Rows of x one matvec workgroup serves (MAXM in the shader).
const MATVEC_MAXM: usize = 8;
/// GEMM register tile (TM × TN in the shader).
const GEMM_TM: usize = 4;
const GEMM_TN: usize = 4;
/// Above this many rows of x, GEMM beats matvec.
pub(crate) const MATVEC_MAX_M: usize = 8;

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "unsupported",
    }
}

impl MatmulVariant {
    /// Every variant of both kernels (the naga test and the GPU tests walk this list).
    pub fn all() -> Vec<MatmulVariant> {
        let mut out = Vec::new();
        for kernel in [MatmulKernel::Matvec, MatmulKernel::Gemm] {
            for w in [DType::F32, DType::F16, DType::BF16] {
                for x in [DType::F32, DType::F16] {
                    for reduce in [Reduce::Subgroup, Reduce::Workgroup] {
                        for f16_math in [false, true] {
                            let v = MatmulVariant {
                                kernel,
                                w,
                                x,
                                reduce,
                                f16_math,
                            };
                            if !f16_math || (w == DType::F16 && x == DType::F16) {
                                out.push(v);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Readable name, e.g. `matvec_f16_f32_sg` or `gemm_f16_f16_wg_h` (native f16 math).
    pub fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}{}",
            match self.kernel {
                MatmulKernel::Matvec => "matvec",
                MatmulKernel::Gemm => "gemm",
            },
            dtype_name(self.w),
            dtype_name(self.x),
            match self.reduce {
                Reduce::Subgroup => "sg",
                Reduce::Workgroup => "wg",
            },
            if self.f16_math { "_h" } else { "" }
        )
    }

    /// The defines that select this variant's text.
    pub(crate) fn defines(&self) -> Vec<&'static str> {
        let mut d = vec![
            match self.w {
                DType::F16 => "W_F16",
                DType::BF16 => "W_BF16",
                _ => "W_F32",
            },
            match self.x {
                DType::F16 => "X_F16",
                _ => "X_F32",
            },
        ];
        if self.reduce == Reduce::Subgroup {
            d.push("SG");
        }
        if self.f16_math {
            d.push("F16_MATH");
        }
        d
    }

    /// The pipeline-cache key for workgroup size `wg` and `aux`: for matvec the rows of x per
    /// workgroup (1, 2, 4 or 8), for GEMM the invocations along the output columns.
    pub(crate) fn key(&self, wg: u32, aux: u32) -> PipelineKey {
        let (family, entry, constants) = match self.kernel {
            MatmulKernel::Matvec => ("matvec", "matvec", vec![("WG", wg), ("ROWS", aux)]),
            MatmulKernel::Gemm => ("gemm", "gemm", vec![("WG", wg), ("TX", aux)]),
        };
        PipelineKey::new(family, entry, self.name(), self.defines(), constants)
    }

    /// Whether the variant is valid at all (formats it was written for).
    fn valid(&self) -> bool {
        matches!(self.w, DType::F32 | DType::F16 | DType::BF16)
            && matches!(self.x, DType::F32 | DType::F16)
            && (!self.f16_math || (self.w == DType::F16 && self.x == DType::F16))
    }
}

/// Dispatch shape chosen beside a pipeline.
struct Launch {
    pipeline: Arc<Pipeline>,
    /// Invocations per workgroup.
    wg: u32,
    /// GEMM: invocations along y columns.
    tx: u32,
    /// Matvec: rows of x per workgroup.
    rows: u32,
}

/// Parameters of one dispatch, as `Params` in `shaders/_matmul_io.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    n: u32,
    n_rows: u32,
    x_row0: u32,
    y_col0: u32,
    row_base: u32,
    m_base: u32,
    m_count: u32,
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge {
        what: format!("{what} ({v}) as a 32-bit shader index"),
        needed: v as u64,
        limit: u64::from(u32::MAX),
    })
}

impl GpuBackend {
    /// The variant `matmul` picks for these operands on this device.
    pub(crate) fn choose_matmul(&self, m: usize, w: DType, x: DType) -> MatmulVariant {
        let kernel = if m <= MATVEC_MAX_M {
            MatmulKernel::Matvec
        } else {
            MatmulKernel::Gemm
        };
        let mut v = MatmulVariant {
            kernel,
            w,
            x,
            reduce: Reduce::Subgroup,
            f16_math: self.use_f16 && w == DType::F16 && x == DType::F16,
        };
        if !self.use_subgroups || !self.supports(&v) {
            v.reduce = Reduce::Workgroup;
        }
        v
    }

    /// Whether this device can run `v` (ignoring the `WATTLE_GPU_NO_*` switches, which only
    /// steer the automatic choice).
    pub(crate) fn supports(&self, v: &MatmulVariant) -> bool {
        let f = self.ctx.features;
        v.valid()
            && (!v.f16_math || f.contains(wgpu::Features::SHADER_F16))
            && (v.reduce == Reduce::Workgroup
                || (f.contains(wgpu::Features::SUBGROUP)
                    && (v.kernel == MatmulKernel::Matvec
                        || self.ctx.info.subgroup_min_size >= self.gemm_tx())))
    }

    fn gemm_tx(&self) -> u32 {
        8
    }

    /// Builds (or fetches) the pipeline of `v` for one row of x.
    #[cfg(test)]
    pub(crate) fn launch_for_test(&self, v: &MatmulVariant) -> Result<()> {
        self.launch(v, 1).map(|_| ())
    }

    /// Workgroup size and pipeline for `v` with `m` rows of x.
    fn launch(&self, v: &MatmulVariant, m: usize) -> Result<Launch> {
        let l = &self.ctx.limits;
        let max_wg = l
            .max_compute_invocations_per_workgroup
            .min(l.max_compute_workgroup_size_x);
        let (wg, tx) = match v.kernel {
            MatmulKernel::Matvec => {
                // A power of two, whole subgroups, within the shader's MAX_WG (256).
                let mut wg = 64u32;
                if v.reduce == Reduce::Subgroup {
                    wg = wg.max(self.ctx.info.subgroup_max_size.next_power_of_two());
                }
                (wg.min(256).min(prev_pow2(max_wg)), 0)
            }
            MatmulKernel::Gemm => (64u32.min(prev_pow2(max_wg)), self.gemm_tx()),
        };
        if wg < 8 || (v.kernel == MatmulKernel::Gemm && wg < tx) {
            return Err(Error::NotAvailable(format!(
                "{}: the device allows only {max_wg} invocations per workgroup",
                v.name()
            )));
        }
        // Matvec rows per workgroup: the next power of two covering m, at most MATVEC_MAXM.
        let rows = m.clamp(1, MATVEC_MAXM).next_power_of_two() as u32;
        let aux = match v.kernel {
            MatmulKernel::Matvec => rows,
            MatmulKernel::Gemm => tx,
        };
        let pipeline = self.pipelines.get(&self.ctx.device, &v.key(wg, aux))?;
        Ok(Launch {
            pipeline,
            wg,
            tx,
            rows,
        })
    }

    /// `y = x · wᵀ` with an explicit variant.
    pub(crate) fn matmul_variant(
        &self,
        x: &Tensor,
        w: &Tensor,
        m: usize,
        n: usize,
        k: usize,
        v: &MatmulVariant,
    ) -> Result<Tensor> {
        if v.w != w.dtype() || v.x != x.dtype() {
            return Err(Error::InvalidArgument(format!(
                "variant {} does not match operands x {} and w {}",
                v.name(),
                x.dtype(),
                w.dtype()
            )));
        }
        if !self.supports(v) {
            return Err(Error::NotAvailable(format!(
                "variant {} on {}",
                v.name(),
                self.ctx.info.name
            )));
        }
        let (Storage::Gpu(xb), Storage::Gpu(wb)) = (x.storage(), w.storage()) else {
            return Err(Error::DeviceMismatch(
                x.device().to_string(),
                w.device().to_string(),
            ));
        };
        u32_of("k", k)?;
        u32_of("n", n)?;
        let launch = self.launch(v, m)?;
        let y = self.ctx.scoped("matmul", || {
            let y = self.ctx.alloc_rows("matmul output", m, n * 4)?;
            if m > 0 && n > 0 {
                self.run(&launch, v, xb, wb, &y, n, k)?;
            }
            Ok(y)
        })?;
        Ok(Tensor::from_storage(
            Storage::Gpu(y),
            DType::F32,
            &[m, n],
            x.device(),
        ))
    }

    /// Splits the product over y chunks × x chunks × w chunks, then into dispatches of at most
    /// `submit_budget` multiply-adds, each in its own submission.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        l: &Launch,
        v: &MatmulVariant,
        xb: &GpuBuffer,
        wb: &GpuBuffer,
        y: &GpuBuffer,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let max_groups = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        let (bm, bn) = match v.kernel {
            MatmulKernel::Matvec => (l.rows as usize, 1),
            MatmulKernel::Gemm => (GEMM_TM * (l.wg / l.tx) as usize, GEMM_TN * l.tx as usize),
        };
        let budget = self.submit_budget as usize;
        for yc in &y.chunks {
            for xc in &xb.chunks {
                let lo = yc.row0.max(xc.row0);
                let hi = (yc.row0 + yc.rows).min(xc.row0 + xc.rows);
                if lo >= hi {
                    continue;
                }
                // Rows of this segment, relative to the y chunk.
                let (seg0, seg_end) = (lo - yc.row0, hi - yc.row0);
                // x row = x_row0 + y-chunk row, wrapping (x may start after the y chunk).
                let x_row0 = (yc.row0 as u32).wrapping_sub(xc.row0 as u32);
                for wc in &wb.chunks {
                    if wc.rows == 0 {
                        continue;
                    }
                    // Rows of x per dispatch (a whole number of tiles), then weight rows.
                    let m_step = match v.kernel {
                        MatmulKernel::Matvec => bm,
                        MatmulKernel::Gemm => {
                            let want = (budget / (k.max(1) * bn)).max(bm);
                            (want / bm * bm).min(max_groups * bm)
                        }
                    };
                    let mut m0 = seg0;
                    while m0 < seg_end {
                        let mc = m_step.min(seg_end - m0);
                        let cols = (budget / (k.max(1) * mc)).max(bn) / bn * bn;
                        let col_step = cols.min(max_groups * bn);
                        let mut c0 = 0;
                        while c0 < wc.rows {
                            let cc = col_step.min(wc.rows - c0);
                            let params = Params {
                                k: k as u32,
                                n: n as u32,
                                n_rows: wc.rows as u32,
                                x_row0,
                                y_col0: wc.row0 as u32,
                                row_base: c0 as u32,
                                m_base: m0 as u32,
                                m_count: mc as u32,
                            };
                            let groups = (cc.div_ceil(bn) as u32, mc.div_ceil(bm) as u32);
                            self.dispatch(l, &params, &wc.buf, &xc.buf, &yc.buf, groups);
                            c0 += cc;
                        }
                        m0 += mc;
                    }
                }
            }
        }
        Ok(())
    }

    fn dispatch(
        &self,
        l: &Launch,
        params: &Params,
        w: &wgpu::Buffer,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        groups: (u32, u32),
    ) {
        let ctx: &Ctx = &self.ctx;
        let ubuf = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wattle matmul params"),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wattle matmul"),
            layout: &l.pipeline.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: w.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: x.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: y.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: ubuf.as_entire_binding(),
                },
            ],
        });
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle matmul"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wattle matmul"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&l.pipeline.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        ctx.queue.submit([enc.finish()]);
    }
}

fn prev_pow2(v: u32) -> u32 {
    if v == 0 {
        0
    } else {
        1 << (31 - v.leading_zeros())
    }
}
