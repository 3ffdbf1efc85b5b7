//! The GPU side of the engine ops (`crate::ops`): `shaders/ops.wgsl`, one variant per op (and per
//! table format for `get_rows`), with subgroup or workgroup-memory reductions for the row ops.
//!
//! Operands must each fit one storage binding (activations always do at model sizes); larger ones
//! are refused with `Error::TooLarge`. Embedding tables may span several bindings: `get_rows`
//! runs once per table chunk.

use super::buffer::GpuBuffer;
use super::pipeline::PipelineKey;
use super::{tensor_binding, u32_of, GpuBackend};
use crate::error::{Error, Result};
use crate::ops::RopeCall;
use crate::tensor::{Storage, Tensor};
use crate::DType;
use wgpu::util::DeviceExt;

/// One op of `shaders/ops.wgsl`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum GpuOp {
    /// Row-wise RMS norm times a weight.
    RmsNorm,
    /// Row-wise softmax.
    Softmax,
    /// Row-wise argmax (u32 output).
    Argmax,
    /// Row-wise top-k by repeated selection ((index, value) output), over the whole row or
    /// chunks of it (first stage).
    TopK,
    /// Second top-k stage: selection over the first stage's candidates.
    TopKCand,
    /// Rotary embedding with a host-computed cos/sin table.
    Rope,
    /// `silu(gate) * up`.
    SiluMul,
    /// `a + b`.
    Add,
    /// Row gather from a table of the given format.
    GetRows(DType),
}

/// Table formats `get_rows` reads.
const TABLE_DTYPES: [DType; 8] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4_K,
    DType::Q6_K,
];

/// Rounds of selection `top_k` runs on the GPU; larger k are selected on the host.
pub(crate) const TOP_K_MAX: usize = 256;

/// Parameters of one dispatch, as `Params` in `shaders/ops.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    rows: u32,
    a: u32,
    b: u32,
    c: u32,
    pad: [u32; 3],
}

impl GpuOp {
    /// Every op variant (the naga test walks these with and without subgroups).
    pub(crate) fn all() -> Vec<GpuOp> {
        let mut v = vec![
            GpuOp::RmsNorm,
            GpuOp::Softmax,
            GpuOp::Argmax,
            GpuOp::TopK,
            GpuOp::TopKCand,
            GpuOp::Rope,
            GpuOp::SiluMul,
            GpuOp::Add,
        ];
        v.extend(TABLE_DTYPES.map(GpuOp::GetRows));
        v
    }

    fn entry(self) -> &'static str {
        match self {
            GpuOp::RmsNorm => "rms_norm",
            GpuOp::Softmax => "softmax",
            GpuOp::Argmax => "argmax",
            GpuOp::TopK | GpuOp::TopKCand => "top_k",
            GpuOp::Rope => "rope",
            GpuOp::SiluMul => "silu_mul",
            GpuOp::Add => "add",
            GpuOp::GetRows(_) => "get_rows",
        }
    }

    /// True for the one-workgroup-per-row reductions (which have subgroup variants).
    pub(crate) fn reduces(self) -> bool {
        matches!(
            self,
            GpuOp::RmsNorm | GpuOp::Softmax | GpuOp::Argmax | GpuOp::TopK | GpuOp::TopKCand
        )
    }

    fn defines(self, sg: bool) -> Vec<&'static str> {
        let mut d = vec![match self {
            GpuOp::RmsNorm => "OP_RMS_NORM",
            GpuOp::Softmax => "OP_SOFTMAX",
            GpuOp::Argmax => "OP_ARGMAX",
            GpuOp::TopK | GpuOp::TopKCand => "OP_TOP_K",
            GpuOp::Rope => "OP_ROPE",
            GpuOp::SiluMul => "OP_SILU_MUL",
            GpuOp::Add => "OP_ADD",
            GpuOp::GetRows(_) => "OP_GET_ROWS",
        }];
        if matches!(
            self,
            GpuOp::RmsNorm | GpuOp::Rope | GpuOp::SiluMul | GpuOp::Add
        ) {
            d.push("OP_BINARY");
        }
        if matches!(self, GpuOp::Argmax | GpuOp::TopK | GpuOp::TopKCand) {
            d.push("OUT_U32");
        }
        if self == GpuOp::TopKCand {
            d.push("TOPK_CAND");
        }
        if self.reduces() {
            d.push("ROW_REDUCE");
            if sg {
                d.push("SG");
            }
        }
        if let GpuOp::GetRows(t) = self {
            d.push(match t {
                DType::F16 => "W_F16",
                DType::BF16 => "W_BF16",
                DType::Q8_0 => "W_Q8_0",
                DType::Q4_0 => "W_Q4_0",
                DType::Q4_1 => "W_Q4_1",
                DType::Q4_K => "W_Q4_K",
                DType::Q6_K => "W_Q6_K",
                _ => "W_F32",
            });
            if t.is_quantized() {
                // The block readers' one-element `w1` lives in their K_GEMM sections.
                d.extend(["W_QUANT", "K_GEMM"]);
            }
        }
        d
    }

    /// Readable variant name, e.g. `ops_softmax_sg` or `ops_get_rows_q4_K`.
    pub(crate) fn name(self, sg: bool) -> String {
        let mut n = format!("ops_{}", self.entry());
        if self == GpuOp::TopKCand {
            n.push_str("_cand");
        }
        if let GpuOp::GetRows(t) = self {
            n.push_str(&format!("_{t}"));
        }
        if self.reduces() {
            n.push_str(if sg { "_sg" } else { "_wg" });
        }
        n
    }

    /// The pipeline key with `wg` invocations per workgroup.
    pub(crate) fn key(self, sg: bool, wg: u32) -> PipelineKey {
        let sg = sg && self.reduces();
        PipelineKey::new(
            "ops",
            self.entry(),
            self.name(sg),
            self.defines(sg),
            vec![("WG", wg)],
        )
    }
}

impl GpuBackend {
    /// Invocations per workgroup of the row reductions: wide on real GPUs, narrow on CPU-emulated
    /// ones (whose invocations are SIMD lanes of a few threads).
    fn row_wg(&self) -> u32 {
        let l = &self.ctx.limits;
        let max = l
            .max_compute_invocations_per_workgroup
            .min(l.max_compute_workgroup_size_x);
        (if self.software { 64 } else { 256 }).min(prev_pow2(max))
    }

    /// Invocations per workgroup of the elementwise ops.
    fn elem_wg(&self) -> u32 {
        let l = &self.ctx.limits;
        64.min(prev_pow2(
            l.max_compute_invocations_per_workgroup
                .min(l.max_compute_workgroup_size_x),
        ))
    }

    /// A fresh single-binding output of `rows` rows of `row_bytes` bytes.
    fn output(&self, what: &str, rows: usize, row_bytes: usize) -> Result<GpuBuffer> {
        let y = self.ctx.alloc_rows(what, rows, row_bytes)?;
        if y.chunks.len() != 1 {
            return Err(Error::TooLarge {
                what: format!("{what}: {} bytes in one binding", rows * row_bytes),
                needed: (rows * row_bytes) as u64,
                limit: self.ctx.chunk_limit(),
            });
        }
        Ok(y)
    }

    /// A read-only storage buffer holding `data` (at least 4 bytes).
    fn storage_of(&self, what: &str, data: &[u8]) -> wgpu::Buffer {
        let mut bytes = data.to_vec();
        bytes.resize(data.len().div_ceil(4).max(1) * 4, 0);
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(what),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// Runs `op` over `groups` workgroups (wrapped into y past the per-dimension limit) with
    /// `bindings` as `(binding, buffer)` and `params` at binding 3.
    fn dispatch(
        &self,
        op: GpuOp,
        wg: u32,
        bindings: &[(u32, &wgpu::Buffer)],
        params: Params,
        groups: usize,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let sg = self.use_subgroups && op.reduces();
        let pipeline = self.pipelines.get(&self.ctx.device, &op.key(sg, wg))?;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        let gx = groups.min(max);
        let gy = groups.div_ceil(gx);
        if gy > max {
            return Err(Error::TooLarge {
                what: format!("{}: {groups} workgroups", op.name(sg)),
                needed: groups as u64,
                limit: (max * max) as u64,
            });
        }
        let dev = &self.ctx.device;
        let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wattle ops params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|&(b, buf)| wgpu::BindGroupEntry {
                binding: b,
                resource: buf.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: 3,
            resource: ubuf.as_entire_binding(),
        });
        let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wattle ops"),
            layout: &pipeline.layout,
            entries: &entries,
        });
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wattle ops"),
        });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wattle ops"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx as u32, gy as u32, 1);
        }
        self.ctx.queue.submit([enc.finish()]);
        Ok(())
    }

    fn tensor(&self, y: GpuBuffer, shape: &[usize], like: &Tensor) -> Tensor {
        Tensor::from_storage(Storage::Gpu(y), DType::F32, shape, like.device())
    }

    /// `x [.., d] · rsqrt(mean(x²) + eps) · w [d]` row by row.
    pub fn rms_norm(&self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        let d = *x.shape().last().unwrap_or(&1);
        let rows = x.elem_count().checked_div(d).unwrap_or(0);
        let (wg, p) = (
            self.row_wg(),
            Params {
                k: u32_of("rms_norm row", d)?,
                rows: u32_of("rms_norm rows", rows)?,
                a: eps.to_bits(),
                ..Params::default()
            },
        );
        let y = self.ctx.scoped("rms_norm", || {
            let y = self.output("rms_norm output", rows, d * 4)?;
            if d > 0 {
                let (xb, wb) = (
                    tensor_binding(x, "rms_norm x")?,
                    tensor_binding(w, "rms_norm weight")?,
                );
                let b = [(0, xb), (1, wb), (2, &y.chunks[0].buf)];
                self.dispatch(GpuOp::RmsNorm, wg, &b, p, rows)?;
            }
            Ok(y)
        })?;
        Ok(self.tensor(y, x.shape(), x))
    }

    /// Rotary embedding of `x [t, h, d]` with the CPU's cos/sin table.
    pub fn rope(&self, x: &Tensor, call: &RopeCall) -> Result<Tensor> {
        let a = &call.args;
        let n = x.elem_count();
        let wg = self.elem_wg();
        let p = Params {
            k: u32_of("rope head", a.d)?,
            rows: u32_of("rope elements", n)?,
            a: u32_of("rope heads", a.h)?,
            b: u32_of("rope n_dims", a.n_dims)?,
            c: u32::from(a.layout == wattle_kernels::ops::RopeLayout::Neox),
            ..Params::default()
        };
        let y = self.ctx.scoped("rope", || {
            let y = self.output("rope output", a.t * a.h, a.d * 4)?;
            if n > 0 {
                let table = if a.n_dims > 0 {
                    wattle_kernels::ops::rope_table(
                        wattle_kernels::pool::ThreadPool::global(),
                        a,
                        &call.positions,
                    )
                } else {
                    Default::default()
                };
                let tb = self.storage_of("wattle rope table", bytemuck::cast_slice(&table));
                let xb = tensor_binding(x, "rope x")?;
                let b = [(0, xb), (1, &tb), (2, &y.chunks[0].buf)];
                self.dispatch(GpuOp::Rope, wg, &b, p, n.div_ceil(wg as usize))?;
            }
            Ok(y)
        })?;
        Ok(self.tensor(y, x.shape(), x))
    }

    /// `silu(gate) * up` or `a + b`, elementwise.
    pub fn elementwise(&self, op: GpuOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let n = a.elem_count();
        let last = *a.shape().last().unwrap_or(&1);
        let rows = n.checked_div(last).unwrap_or(0);
        let wg = self.elem_wg();
        let p = Params {
            k: u32_of("elementwise length", n)?,
            ..Params::default()
        };
        let y = self.ctx.scoped(op.entry(), || {
            let y = self.output("elementwise output", rows, last * 4)?;
            if n > 0 {
                let (ab, bb) = (tensor_binding(a, "operand")?, tensor_binding(b, "operand")?);
                let binds = [(0, ab), (1, bb), (2, &y.chunks[0].buf)];
                self.dispatch(op, wg, &binds, p, n.div_ceil(wg as usize))?;
            }
            Ok(y)
        })?;
        Ok(self.tensor(y, a.shape(), a))
    }

    /// Rows `ids` of `table [vocab, d]`, dequantized to F32.
    pub fn get_rows(&self, table: &Tensor, d: usize, ids: &[u32]) -> Result<Tensor> {
        let Storage::Gpu(tb) = table.storage() else {
            return Err(Error::DeviceMismatch(
                "cpu".into(),
                table.device().to_string(),
            ));
        };
        let n = ids.len() * d;
        let wg = self.elem_wg();
        let op = GpuOp::GetRows(table.dtype());
        let y = self.ctx.scoped("get_rows", || {
            // Both the table and the output may span several bindings: one dispatch per pair
            // of chunks that shares an id.
            let y = self.ctx.alloc_rows("get_rows output", ids.len(), d * 4)?;
            if n > 0 {
                if ids.len() as u64 * 4 > self.ctx.chunk_limit() {
                    return Err(Error::TooLarge {
                        what: format!("get_rows: {} ids in one binding", ids.len()),
                        needed: ids.len() as u64 * 4,
                        limit: self.ctx.chunk_limit(),
                    });
                }
                let ib = self.storage_of("wattle ids", bytemuck::cast_slice(ids));
                for yc in &y.chunks {
                    let out_ids = &ids[yc.row0..yc.row0 + yc.rows];
                    for c in &tb.chunks {
                        let rows = c.row0..c.row0 + c.rows;
                        if !out_ids.iter().any(|&i| rows.contains(&(i as usize))) {
                            continue;
                        }
                        let p = Params {
                            k: u32_of("get_rows row", d)?,
                            rows: u32_of("get_rows ids", yc.rows)?,
                            a: u32_of("table row", c.row0)?,
                            b: u32_of("table rows", c.rows)?,
                            c: u32_of("first id", yc.row0)?,
                            ..Params::default()
                        };
                        let elems = yc.rows * d;
                        u32_of("get_rows elements", elems)?;
                        let b = [(0, &c.buf), (1, &ib), (2, &yc.buf)];
                        self.dispatch(op, wg, &b, p, elems.div_ceil(wg as usize))?;
                    }
                }
            }
            Ok(y)
        })?;
        Ok(self.tensor(y, &[ids.len(), d], table))
    }

    /// Row-wise softmax of `x [.., n]`.
    pub fn softmax(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let rows = x.elem_count() / n;
        let wg = self.row_wg();
        let p = Params {
            k: u32_of("softmax row", n)?,
            rows: u32_of("softmax rows", rows)?,
            ..Params::default()
        };
        let y = self.ctx.scoped("softmax", || {
            let y = self.output("softmax output", rows, n * 4)?;
            let b = [(0, tensor_binding(x, "softmax x")?), (2, &y.chunks[0].buf)];
            self.dispatch(GpuOp::Softmax, wg, &b, p, rows)?;
            Ok(y)
        })?;
        Ok(self.tensor(y, x.shape(), x))
    }

    /// Index of the largest value of each row of `x [.., n]`.
    pub fn argmax(&self, x: &Tensor, n: usize) -> Result<Vec<u32>> {
        let rows = x.elem_count() / n;
        let wg = self.row_wg();
        let p = Params {
            k: u32_of("argmax row", n)?,
            rows: u32_of("argmax rows", rows)?,
            ..Params::default()
        };
        let y = self.ctx.scoped("argmax", || {
            let y = self.output("argmax output", rows, 4)?;
            let b = [(0, tensor_binding(x, "argmax x")?), (2, &y.chunks[0].buf)];
            self.dispatch(GpuOp::Argmax, wg, &b, p, rows)?;
            Ok(y)
        })?;
        Ok(bytemuck::pod_collect_to_vec(&y.read_bytes()?))
    }

    /// The `k` best `(index, value)` of each row of `x [.., n]`: selected on the GPU for
    /// `k ≤ TOP_K_MAX`, else (and for rows with NaN among the k) on the host from the logits.
    pub fn top_k(&self, x: &Tensor, n: usize, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let rows = x.elem_count() / n;
        let host = |x: &Tensor| -> Result<Vec<Vec<(u32, f32)>>> {
            let v = x.to_f32_vec()?;
            Ok(wattle_kernels::ops::top_k(
                wattle_kernels::isa::selected().unwrap_or(wattle_kernels::Isa::Scalar),
                wattle_kernels::pool::ThreadPool::global(),
                &v,
                n,
                k,
            ))
        };
        if k > TOP_K_MAX {
            return host(x);
        }
        let wg = self.row_wg();
        // Long rows on real GPUs: a first stage selects k candidates per chunk of the row in
        // parallel, the second selects among them. Short rows, and CPU-emulated devices (where a
        // workgroup reduction costs microseconds and parallelism is a few threads): one stage.
        let chunk = 16 * wg as usize;
        let chunks = if n > 2 * chunk && (!self.software || env_two_stage()) {
            n.div_ceil(chunk)
        } else {
            1
        };
        let first = Params {
            k: u32_of("top_k row", n)?,
            rows: u32_of("top_k rows", rows)?,
            a: k as u32,
            b: u32_of("top_k chunk", if chunks > 1 { chunk } else { n })?,
            ..Params::default()
        };
        let y = self.ctx.scoped("top_k", || {
            let xb = tensor_binding(x, "top_k x")?;
            let y = self.output("top_k output", rows, k * 8)?;
            if chunks == 1 {
                self.dispatch(
                    GpuOp::TopK,
                    wg,
                    &[(0, xb), (2, &y.chunks[0].buf)],
                    first,
                    rows,
                )?;
                return Ok(y);
            }
            let cand = self.output("top_k candidates", rows * chunks, k * 8)?;
            let cb = &cand.chunks[0].buf;
            self.dispatch(GpuOp::TopK, wg, &[(0, xb), (2, cb)], first, rows * chunks)?;
            let second = Params {
                b: u32_of("top_k candidates", chunks * k)?,
                ..first
            };
            self.dispatch(
                GpuOp::TopKCand,
                wg,
                &[(0, cb), (2, &y.chunks[0].buf)],
                second,
                rows,
            )?;
            Ok(y)
        })?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&y.read_bytes()?);
        let out: Vec<Vec<(u32, f32)>> = words
            .chunks_exact(2 * k)
            .map(|r| {
                r.chunks_exact(2)
                    .map(|c| (c[0], f32::from_bits(c[1])))
                    .collect()
            })
            .collect();
        if out.iter().flatten().any(|&(i, _)| i == u32::MAX) {
            // Fewer than k numbers in some row (NaN ranks last): the host ranks those.
            return host(x);
        }
        Ok(out)
    }
}

/// `WATTLE_GPU_TOPK_TWO_STAGE=1` forces the two-stage top-k on every device (tests).
fn env_two_stage() -> bool {
    std::env::var("WATTLE_GPU_TOPK_TWO_STAGE").is_ok_and(|v| v == "1")
}

fn prev_pow2(v: u32) -> u32 {
    if v == 0 {
        1
    } else {
        1 << (31 - v.leading_zeros())
    }
}

/// Every ops variant's pipeline key (subgroup and workgroup-memory forms of the reductions), for
/// the naga portability test.
pub(crate) fn all_keys() -> Vec<PipelineKey> {
    let mut keys = Vec::new();
    for op in GpuOp::all() {
        keys.push(op.key(false, 64));
        if op.reduces() {
            keys.push(op.key(true, 64));
        }
    }
    keys
}
