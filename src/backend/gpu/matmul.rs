//! Matmul `y = x · wᵀ` on the GPU for float and quantized weights: matvec (decode) and tiled
//! GEMM (prefill) kernels with their variants and launch constants, the int8 activation pass, and
//! the dispatch driver that splits work by binding chunks and time budget.

use super::pipeline::{Pipeline, PipelineKey};
use super::{u32_of, GpuBackend, GpuBuffer};
use crate::error::{Error, Result};
use crate::tensor::{Storage, Tensor};
use crate::DType;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// Which matmul kernel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MatmulKernel {
    /// Groups of invocations per weight row, up to 8 rows of x at once (`shaders/matvec.wgsl`).
    Matvec,
    /// Register-tiled GEMM with workgroup-memory tiles (`shaders/gemm.wgsl`).
    Gemm,
}

/// How invocations of a workgroup combine their data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Reduce {
    /// Subgroup operations (`subgroupShuffleXor`, `subgroupShuffle`); needs SUBGROUP.
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
    /// Weight format: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K or Q6_K.
    pub w: DType,
    /// Activation format: F32 or F16.
    pub x: DType,
    /// Reduction / data exchange.
    pub reduce: Reduce,
    /// Native f16 products (SHADER_F16); only for F16 weights and F16 activations.
    pub f16_math: bool,
    /// Activations quantized to int8 blocks of 32 on the GPU and integer dot products
    /// (`dot4I8Packed`), by the CPU's rule for the weight format (Q8_0, or Q8_K for K-quants);
    /// quantized weights and the matvec kernel only.
    pub int8: bool,
}

/// Launch constants of the matvec kernel (override constants `WG`, `NR`, `L`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MatvecConfig {
    /// Invocations per workgroup (a power of two, 8 ..= 256).
    pub wg: u32,
    /// Weight rows per invocation (1, 2 or 4).
    pub nr: u32,
    /// Invocations sharing one group of weight rows (a power of two dividing `wg`).
    pub l: u32,
}

impl MatvecConfig {
    /// Weight rows one workgroup serves.
    pub fn rows_per_group(&self) -> u32 {
        self.wg / self.l * self.nr
    }

    /// Readable form, e.g. `wg64_nr2_l8`.
    pub fn name(&self) -> String {
        format!("wg{}_nr{}_l{}", self.wg, self.nr, self.l)
    }

    /// The candidates the tuner times.
    pub fn candidates() -> Vec<MatvecConfig> {
        let mut out = Vec::new();
        for wg in [8, 32, 64, 128, 256] {
            for nr in [1, 2, 4] {
                for l in [1, 4, 8, 16, 32, 64] {
                    if l <= wg {
                        out.push(MatvecConfig { wg, nr, l });
                    }
                }
            }
        }
        out
    }
}

/// Rows of x one matvec workgroup serves at most (MAXM in the shader).
const MATVEC_MAXM: usize = 8;
/// GEMM register tile (TM × TN in the shader).
const GEMM_TM: usize = 4;
const GEMM_TN: usize = 4;
/// Above this many rows of x, GEMM beats matvec.
pub(crate) const MATVEC_MAX_M: usize = 8;
/// Weight formats the GPU kernels read.
pub(crate) const WEIGHT_DTYPES: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4_K,
    DType::Q6_K,
];

/// Name of a dtype in variant names and defines.
fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::Q8_0 => "q8_0",
        DType::Q4_0 => "q4_0",
        DType::Q4_1 => "q4_1",
        DType::Q4_K => "q4_k",
        DType::Q6_K => "q6_k",
        _ => "unsupported",
    }
}

fn is_quant(d: DType) -> bool {
    matches!(
        d,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4_K | DType::Q6_K
    )
}

impl MatmulVariant {
    /// Every variant of both kernels (the naga test and the GPU tests walk this list).
    pub fn all() -> Vec<MatmulVariant> {
        let mut out = Vec::new();
        for kernel in [MatmulKernel::Matvec, MatmulKernel::Gemm] {
            for w in WEIGHT_DTYPES {
                for x in [DType::F32, DType::F16] {
                    for reduce in [Reduce::Subgroup, Reduce::Workgroup] {
                        for (f16_math, int8) in [(false, false), (true, false), (false, true)] {
                            let v = MatmulVariant {
                                kernel,
                                w,
                                x,
                                reduce,
                                f16_math,
                                int8,
                            };
                            if v.valid() {
                                out.push(v);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Readable name, e.g. `matvec_q4_0_f32_sg_i8` or `gemm_f16_f16_wg_h` (native f16 math).
    pub fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}{}{}",
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
            if self.f16_math { "_h" } else { "" },
            if self.int8 { "_i8" } else { "" }
        )
    }

    /// The defines that select this variant's text.
    pub(crate) fn defines(&self) -> Vec<&'static str> {
        let mut d = vec![
            match self.w {
                DType::F16 => "W_F16",
                DType::BF16 => "W_BF16",
                DType::Q8_0 => "W_Q8_0",
                DType::Q4_0 => "W_Q4_0",
                DType::Q4_1 => "W_Q4_1",
                DType::Q4_K => "W_Q4_K",
                DType::Q6_K => "W_Q6_K",
                _ => "W_F32",
            },
            match self.x {
                DType::F16 => "X_F16",
                _ => "X_F32",
            },
            match self.kernel {
                MatmulKernel::Matvec => "K_MATVEC",
                MatmulKernel::Gemm => "K_GEMM",
            },
        ];
        if is_quant(self.w) {
            d.push("W_QUANT");
        }
        if self.reduce == Reduce::Subgroup {
            d.push("SG");
        }
        if self.f16_math {
            d.push("F16_MATH");
        }
        if self.int8 {
            d.push("XI8");
        }
        d
    }

    /// The matvec pipeline key for `cfg` and `rows` rows of x (1, 2, 4 or 8).
    pub(crate) fn matvec_key(&self, cfg: &MatvecConfig, rows: u32) -> PipelineKey {
        PipelineKey::new(
            "matvec",
            "matvec",
            self.name(),
            self.defines(),
            vec![("WG", cfg.wg), ("ROWS", rows), ("NR", cfg.nr), ("L", cfg.l)],
        )
    }

    /// The GEMM pipeline key for workgroup size `wg` and `tx` invocations along y columns.
    pub(crate) fn gemm_key(&self, wg: u32, tx: u32) -> PipelineKey {
        PipelineKey::new(
            "gemm",
            "gemm",
            self.name(),
            self.defines(),
            vec![("WG", wg), ("TX", tx)],
        )
    }

    /// A representative pipeline key (for the naga test).
    pub(crate) fn key(&self) -> PipelineKey {
        match self.kernel {
            MatmulKernel::Matvec => self.matvec_key(
                &MatvecConfig {
                    wg: 64,
                    nr: 2,
                    l: 8,
                },
                2,
            ),
            MatmulKernel::Gemm => self.gemm_key(64, 8),
        }
    }

    /// Whether the variant is valid at all (formats it was written for).
    fn valid(&self) -> bool {
        WEIGHT_DTYPES.contains(&self.w)
            && matches!(self.x, DType::F32 | DType::F16)
            && (!self.f16_math || (self.w == DType::F16 && self.x == DType::F16))
            && (!self.int8 || (is_quant(self.w) && self.kernel == MatmulKernel::Matvec))
            && !(self.f16_math && self.int8)
    }
}

/// The pipeline-cache key of the int8 activation pass for x of dtype `x`, in the activation
/// format the CPU pairs with weights `w` (Q8_K for K-quants, else Q8_0).
pub(crate) fn quantize_key(x: DType, w: DType) -> PipelineKey {
    let k = matches!(w, DType::Q4_K | DType::Q6_K);
    let (name, mut defines) = match x {
        DType::F16 => ("quantize_x_f16", vec!["X_F16"]),
        _ => ("quantize_x_f32", vec!["X_F32"]),
    };
    if k {
        defines.push("XQ_K");
    }
    PipelineKey::new(
        "quantize",
        "quantize_x",
        format!("{name}{}", if k { "_q8_k" } else { "_q8_0" }),
        defines,
        vec![("WG", 64)],
    )
}

/// A complete matmul choice: the variant and, for matvec, its launch constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MatmulChoice {
    /// Variant.
    pub variant: MatmulVariant,
    /// Matvec launch constants (ignored by GEMM).
    pub matvec: MatvecConfig,
}

/// Dispatch shape chosen beside a pipeline.
struct Launch {
    pipeline: Arc<Pipeline>,
    /// Weight rows (y columns) per workgroup.
    bn: usize,
    /// x rows per workgroup.
    bm: usize,
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

/// Parameters of the activation pass, as `QParams` in `shaders/quantize.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QParams {
    k: u32,
    rows: u32,
    x_row0: u32,
    out_row0: u32,
}

/// One dispatch: its uniform bytes, bindings, workgroups and multiply-adds.
struct Job<'a> {
    pipeline: Arc<Pipeline>,
    params: Vec<u8>,
    buffers: Vec<&'a wgpu::Buffer>,
    groups: (u32, u32),
    macs: u64,
}

/// Timestamp queries around a run (beginning of the first pass, end of the last).
pub(crate) struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
}

impl GpuBackend {
    /// The choice `matmul` makes for these operands on this device: a tuned entry when the
    /// tuning cache has one for this shape bucket (and the `WATTLE_GPU_NO_*` switches allow it),
    /// else the static default.
    pub(crate) fn choose_matmul(
        &self,
        m: usize,
        n: usize,
        k: usize,
        w: DType,
        x: DType,
    ) -> MatmulChoice {
        let d = self.default_choice(m, w, x);
        match self.tuned(m, n, k, w, x) {
            Some(c)
                if self.supports(&c.variant)
                    && self.config_ok(&c.variant, &c.matvec)
                    && (self.use_subgroups || c.variant.reduce == Reduce::Workgroup)
                    && (self.use_f16 || !c.variant.f16_math) =>
            {
                c
            }
            _ => d,
        }
    }

    /// The static choice without a tuning entry.
    pub(crate) fn default_choice(&self, m: usize, w: DType, x: DType) -> MatmulChoice {
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
            int8: kernel == MatmulKernel::Matvec && is_quant(w),
        };
        if !self.use_subgroups || !self.supports(&v) {
            v.reduce = Reduce::Workgroup;
        }
        MatmulChoice {
            variant: v,
            matvec: self.default_matvec_config(&v),
        }
    }

    /// Static matvec constants: on CPU-emulated devices one invocation per row group (no
    /// reduction, SIMD lanes over rows); elsewhere wide groups per row.
    pub(crate) fn default_matvec_config(&self, v: &MatmulVariant) -> MatvecConfig {
        let max = self.max_wg();
        if self.software {
            // Measured on lavapipe (4096 × 14336, m = 1): two rows per invocation, no
            // reduction; 32 invocations for block formats, 8 for float ones.
            return MatvecConfig {
                wg: if is_quant(v.w) { 32 } else { 8 }.min(max),
                nr: 2,
                l: 1,
            };
        }
        let wg = 128.min(max);
        let l = match v.reduce {
            Reduce::Subgroup => 32.min(self.ctx.info.subgroup_min_size.max(1)),
            Reduce::Workgroup => 32,
        }
        .min(wg);
        MatvecConfig { wg, nr: 1, l }
    }

    fn max_wg(&self) -> u32 {
        let l = &self.ctx.limits;
        prev_pow2(
            l.max_compute_invocations_per_workgroup
                .min(l.max_compute_workgroup_size_x)
                .min(256),
        )
    }

    /// Whether `cfg` can run variant `v` on this device.
    pub(crate) fn config_ok(&self, v: &MatmulVariant, cfg: &MatvecConfig) -> bool {
        if v.kernel == MatmulKernel::Gemm {
            return true;
        }
        cfg.wg.is_power_of_two()
            && cfg.wg <= self.max_wg()
            && cfg.l.is_power_of_two()
            && cfg.l <= cfg.wg
            && matches!(cfg.nr, 1 | 2 | 4)
            && (v.reduce == Reduce::Workgroup
                || cfg.l == 1
                || cfg.l <= self.ctx.info.subgroup_min_size)
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
        self.launch(v, &self.default_matvec_config(v), 1)
            .map(|_| ())
    }

    /// Workgroup shape and pipeline for `v` with `m` rows of x.
    fn launch(&self, v: &MatmulVariant, cfg: &MatvecConfig, m: usize) -> Result<Launch> {
        let max_wg = self.max_wg();
        match v.kernel {
            MatmulKernel::Matvec => {
                if !self.config_ok(v, cfg) {
                    return Err(Error::InvalidArgument(format!(
                        "{}: launch constants {} do not fit {}",
                        v.name(),
                        cfg.name(),
                        self.ctx.info.name
                    )));
                }
                // x rows per workgroup: the next power of two covering m, at most MATVEC_MAXM.
                let rows = m.clamp(1, MATVEC_MAXM).next_power_of_two() as u32;
                let pipeline = self
                    .pipelines
                    .get(&self.ctx.device, &v.matvec_key(cfg, rows))?;
                Ok(Launch {
                    pipeline,
                    bn: cfg.rows_per_group() as usize,
                    bm: rows as usize,
                })
            }
            MatmulKernel::Gemm => {
                let (wg, tx) = (64u32.min(max_wg), self.gemm_tx());
                if wg < tx {
                    return Err(Error::NotAvailable(format!(
                        "{}: the device allows only {max_wg} invocations per workgroup",
                        v.name()
                    )));
                }
                let pipeline = self.pipelines.get(&self.ctx.device, &v.gemm_key(wg, tx))?;
                Ok(Launch {
                    pipeline,
                    bn: GEMM_TN * tx as usize,
                    bm: GEMM_TM * (wg / tx) as usize,
                })
            }
        }
    }

    /// `y = x · wᵀ` with an explicit choice; with `ts`, timestamps around the GPU work.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_with(
        &self,
        x: &Tensor,
        w: &Tensor,
        m: usize,
        n: usize,
        k: usize,
        c: &MatmulChoice,
        ts: Option<&Timestamps>,
    ) -> Result<Tensor> {
        let v = &c.variant;
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
        if !k.is_multiple_of(w.dtype().block_size()) {
            return Err(Error::BadBlockAlignment {
                dtype: w.dtype(),
                len: k,
                block: w.dtype().block_size(),
            });
        }
        let (Storage::Gpu(xb), Storage::Gpu(wb)) = (x.storage(), w.storage()) else {
            return Err(Error::DeviceMismatch(
                x.device().to_string(),
                w.device().to_string(),
            ));
        };
        u32_of("k", k)?;
        u32_of("n", n)?;
        let launch = self.launch(v, &c.matvec, m)?;
        let y = self.ctx.scoped("matmul", || {
            let y = self.ctx.alloc_rows("matmul output", m, n * 4)?;
            if m > 0 && n > 0 && k > 0 {
                let xq = if v.int8 {
                    Some(self.ctx.alloc_rows("int8 activations", m, k / 32 * 40)?)
                } else {
                    None
                };
                let mut jobs = Vec::new();
                if let Some(q) = &xq {
                    let p = self
                        .pipelines
                        .get(&self.ctx.device, &quantize_key(v.x, v.w))?;
                    self.quantize_jobs(
                        &p,
                        xb,
                        q,
                        k,
                        if matches!(v.w, DType::Q4_K | DType::Q6_K) {
                            256
                        } else {
                            32
                        },
                        &mut jobs,
                    )?;
                }
                let xin = xq.as_ref().unwrap_or(xb);
                self.matmul_jobs(&launch, v, xin, wb, &y, n, k, &mut jobs);
                self.submit(&jobs, v.kernel, ts)?;
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

    /// Dispatches of the int8 activation pass: every x chunk into the overlapping q chunks.
    fn quantize_jobs<'a>(
        &self,
        pipeline: &Arc<Pipeline>,
        xb: &'a GpuBuffer,
        q: &'a GpuBuffer,
        k: usize,
        block: usize,
        jobs: &mut Vec<Job<'a>>,
    ) -> Result<()> {
        let max_groups = self.ctx.limits.max_compute_workgroups_per_dimension.max(1);
        for xc in &xb.chunks {
            for qc in &q.chunks {
                let lo = xc.row0.max(qc.row0);
                let hi = (xc.row0 + xc.rows).min(qc.row0 + qc.rows);
                if lo >= hi {
                    continue;
                }
                let blocks = u32_of("activation blocks", (hi - lo) * (k / block))?;
                let groups = blocks.div_ceil(64);
                let gx = groups.min(max_groups);
                let params = QParams {
                    k: k as u32,
                    rows: (hi - lo) as u32,
                    x_row0: (lo - xc.row0) as u32,
                    out_row0: (lo - qc.row0) as u32,
                };
                jobs.push(Job {
                    pipeline: pipeline.clone(),
                    params: bytemuck::bytes_of(&params).to_vec(),
                    buffers: vec![&xc.buf, &qc.buf],
                    groups: (gx, groups.div_ceil(gx)),
                    macs: 0,
                });
            }
        }
        Ok(())
    }

    /// Splits the product over y chunks × x chunks × w chunks, then into dispatches of at most
    /// the submission budget of multiply-adds.
    #[allow(clippy::too_many_arguments)]
    fn matmul_jobs<'a>(
        &self,
        l: &Launch,
        v: &MatmulVariant,
        xb: &'a GpuBuffer,
        wb: &'a GpuBuffer,
        y: &'a GpuBuffer,
        n: usize,
        k: usize,
        jobs: &mut Vec<Job<'a>>,
    ) {
        let max_groups = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        let (bm, bn) = (l.bm, l.bn);
        let budget = self.budget(v.kernel) as usize;
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
                            jobs.push(Job {
                                pipeline: l.pipeline.clone(),
                                params: bytemuck::bytes_of(&params).to_vec(),
                                buffers: vec![&wc.buf, &xc.buf, &yc.buf],
                                groups: (cc.div_ceil(bn) as u32, mc.div_ceil(bm) as u32),
                                macs: (cc * mc * k) as u64,
                            });
                            c0 += cc;
                        }
                        m0 += mc;
                    }
                }
            }
        }
    }

    /// Multiply-adds per dispatch and submission: matvec is bandwidth-bound and runs far more
    /// multiply-adds per millisecond than the worst-case GEMM the base budget is set for.
    fn budget(&self, kernel: MatmulKernel) -> u64 {
        match kernel {
            MatmulKernel::Matvec => self.submit_budget * 8,
            MatmulKernel::Gemm => self.submit_budget,
        }
    }

    /// Encodes the jobs into as few submissions as the budget allows: one uniform buffer with
    /// every job's parameters at aligned offsets, one bind group per job.
    fn submit(
        &self,
        jobs: &[Job<'_>],
        kernel: MatmulKernel,
        ts: Option<&Timestamps>,
    ) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let dev = &self.ctx.device;
        let align = u64::from(self.ctx.limits.min_uniform_buffer_offset_alignment.max(32));
        let mut bytes = vec![0u8; jobs.len() * align as usize];
        for (i, j) in jobs.iter().enumerate() {
            let o = i * align as usize;
            bytes[o..o + j.params.len()].copy_from_slice(&j.params);
        }
        let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wattle matmul params"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let budget = self.budget(kernel);
        let mut start = 0;
        while start < jobs.len() {
            // Jobs of this submission: at least one, then while within the budget.
            let mut end = start + 1;
            let mut macs = jobs[start].macs;
            while end < jobs.len() && macs + jobs[end].macs <= budget {
                macs += jobs[end].macs;
                end += 1;
            }
            let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wattle matmul"),
            });
            {
                let first = start == 0;
                let last = end == jobs.len();
                let writes =
                    ts.filter(|_| first || last)
                        .map(|t| wgpu::ComputePassTimestampWrites {
                            query_set: &t.set,
                            beginning_of_pass_write_index: first.then_some(0),
                            end_of_pass_write_index: last.then_some(1),
                        });
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wattle matmul"),
                    timestamp_writes: writes,
                });
                for (i, j) in jobs.iter().enumerate().take(end).skip(start) {
                    let p = &j.pipeline;
                    let mut entries: Vec<wgpu::BindGroupEntry> = j
                        .buffers
                        .iter()
                        .enumerate()
                        .map(|(b, buf)| wgpu::BindGroupEntry {
                            binding: b as u32,
                            resource: buf.as_entire_binding(),
                        })
                        .collect();
                    entries.push(wgpu::BindGroupEntry {
                        binding: j.buffers.len() as u32,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &ubuf,
                            offset: i as u64 * align,
                            size: wgpu::BufferSize::new(j.params.len() as u64),
                        }),
                    });
                    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("wattle matmul"),
                        layout: &p.layout,
                        entries: &entries,
                    });
                    pass.set_pipeline(&p.pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(j.groups.0, j.groups.1, 1);
                }
            }
            if end == jobs.len() {
                if let Some(t) = ts {
                    enc.resolve_query_set(&t.set, 0..2, &t.resolve, 0);
                    enc.copy_buffer_to_buffer(&t.resolve, 0, &t.read, 0, 16);
                }
            }
            self.ctx.queue.submit([enc.finish()]);
            start = end;
        }
        Ok(())
    }

    /// Timestamp queries for [`GpuBackend::time_matmul`], when the device has them.
    fn timestamps(&self) -> Option<Timestamps> {
        if !self.ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return None;
        }
        let dev = &self.ctx.device;
        Some(Timestamps {
            set: dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wattle matmul timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolve: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wattle matmul resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            read: dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wattle matmul timestamps read"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        })
    }

    /// Median seconds of `reps` runs of the product with choice `c` (after one warm-up run):
    /// GPU time from timestamp queries when the device has them, else wall time to completion.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn time_matmul(
        &self,
        x: &Tensor,
        w: &Tensor,
        m: usize,
        n: usize,
        k: usize,
        c: &MatmulChoice,
        reps: usize,
    ) -> Result<f64> {
        let ts = self.timestamps();
        self.matmul_with(x, w, m, n, k, c, None)?;
        self.synchronize()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let t0 = std::time::Instant::now();
            self.matmul_with(x, w, m, n, k, c, ts.as_ref())?;
            self.synchronize()?;
            let wall = t0.elapsed().as_secs_f64();
            let gpu = match &ts {
                Some(t) => self.read_timestamps(t)?,
                None => None,
            };
            times.push(gpu.unwrap_or(wall));
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Seconds between the two timestamps (`None` when the driver wrote zeros).
    fn read_timestamps(&self, t: &Timestamps) -> Result<Option<f64>> {
        let (tx, rx) = std::sync::mpsc::channel();
        t.read.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.synchronize()?;
        let ok = matches!(rx.recv(), Ok(Ok(())));
        if !ok {
            return Ok(None);
        }
        let ticks: [u64; 2] = {
            let view = t
                .read
                .get_mapped_range(..)
                .map_err(|e| Error::DeviceLost(format!("timestamp map: {e}")))?;
            bytemuck::pod_read_unaligned(&view[..16])
        };
        t.read.unmap();
        let ns = ticks[1].saturating_sub(ticks[0]) as f64
            * f64::from(self.ctx.queue.get_timestamp_period());
        Ok((ns > 0.0).then_some(ns * 1e-9))
    }
}

fn prev_pow2(v: u32) -> u32 {
    if v == 0 {
        0
    } else {
        1 << (31 - v.leading_zeros())
    }
}
