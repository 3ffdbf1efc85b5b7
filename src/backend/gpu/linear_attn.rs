//! Linear attention on a GPU (`shaders/linear_attn.wgsl`): the recurrent form is the kernel with
//! chunks of one token, the chunked form chunks of 64. Long calls go in pieces of whole chunks,
//! one submission each, the state passed from piece to piece. On software GPUs (llvmpipe) the
//! pieces are sized to its per-invocation loop limit, and the chunk is halved for key dims
//! whose 64-token chunk alone would exceed it.

use super::pipeline::PipelineKey;
use super::{tensor_binding, u32_of, GpuBackend};
use crate::error::{Error, Result};
use crate::linear_attention::{LinSizes, LinearAttention};
use crate::tensor::{Storage, Tensor};
use crate::DType;
use wgpu::util::DeviceExt;

/// Invocations (value columns) per workgroup.
const WG: u32 = 64;
/// Largest key dimension (the state column each invocation keeps).
const MAX_DK: usize = 256;
/// Tokens of the chunked form's chunks (`MAXCH` in the shader).
pub(crate) const CHUNK: usize = 64;
/// Tokens per submission on a hardware GPU.
const PIECE: usize = 1024;
use super::SOFTWARE_LOOP_BUDGET;

/// An upper bound on the loop iterations of the busiest invocation for one chunk of `c` tokens.
fn chunk_iterations(c: usize, dk: usize) -> usize {
    let wg = WG as usize;
    dk * (2 * (c * c).div_ceil(wg) + 3 * c + 2) + 2 * c * c + 4 * c + 16
}

/// Tokens per chunk and chunks per dispatch: the form's chunk and [`PIECE`] tokens, or on a
/// software GPU as many chunks as its loop budget allows (halving the chunk when even one
/// chunk would exceed it).
fn split_plan(chunked: bool, dk: usize, software: bool) -> (usize, usize) {
    let mut c = if chunked { CHUNK } else { 1 };
    if !software {
        return (c, (PIECE / c).max(1));
    }
    while c > 1 && chunk_iterations(c, dk) > SOFTWARE_LOOP_BUDGET {
        c /= 2;
    }
    (c, (SOFTWARE_LOOP_BUDGET / chunk_iterations(c, dk)).max(1))
}

/// The uniform block, as `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    t0: u32,
    h: u32,
    dk: u32,
    dv: u32,
    cols: u32,
    ch: u32,
    tiles: u32,
}

/// The kinds, as the shader's defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinKind {
    Vanilla,
    Retention,
    Gated,
    Delta,
}

impl LinKind {
    fn of(kind: &LinearAttention) -> LinKind {
        match kind {
            LinearAttention::Vanilla => LinKind::Vanilla,
            LinearAttention::Retention { .. } => LinKind::Retention,
            LinearAttention::Gated { .. } => LinKind::Gated,
            LinearAttention::GatedDelta { .. } => LinKind::Delta,
        }
    }

    fn define(self) -> &'static str {
        match self {
            LinKind::Vanilla => "K_VANILLA",
            LinKind::Retention => "K_RETENTION",
            LinKind::Gated => "K_GLA",
            LinKind::Delta => "K_DELTA",
        }
    }
}

/// The pipeline key for a kind, operand format and reduction variant.
pub(crate) fn key(kind: LinKind, x: DType, sg: bool) -> Result<PipelineKey> {
    let xd = match x {
        DType::F32 => "X_F32",
        DType::F16 => "X_F16",
        _ => {
            return Err(Error::UnsupportedDType {
                op: "linear_attention on a GPU (q, k, v: F32 or F16)",
                dtype: x,
            })
        }
    };
    let mut defines = vec![xd, kind.define()];
    let mut variant = format!(
        "linear_attn_{}_{x}",
        kind.define()[2..].to_ascii_lowercase()
    );
    if sg {
        defines.push("SG");
        variant.push_str("_sg");
    }
    Ok(PipelineKey::new(
        "linear_attn",
        "linear_attn",
        variant,
        defines,
        vec![("WG", WG)],
    ))
}

/// Every variant, for the naga translation test.
pub(crate) fn all_keys() -> Vec<PipelineKey> {
    let mut out = Vec::new();
    for kind in [
        LinKind::Vanilla,
        LinKind::Retention,
        LinKind::Gated,
        LinKind::Delta,
    ] {
        for x in [DType::F32, DType::F16] {
            for sg in [false, true] {
                out.extend(key(kind, x, sg));
            }
        }
    }
    out
}

/// A gate operand: F32 of `shape` on this device.
fn gate<'a>(t: &'a Tensor, shape: &[usize], what: &str) -> Result<&'a wgpu::Buffer> {
    if t.shape() != shape {
        return Err(Error::ShapeMismatch {
            op: "linear_attention",
            detail: format!("{what} must be {shape:?}, got {:?}", t.shape()),
        });
    }
    if t.dtype() != DType::F32 {
        return Err(Error::UnsupportedDType {
            op: "linear_attention on a GPU (gates: F32)",
            dtype: t.dtype(),
        });
    }
    tensor_binding(t, what)
}

impl GpuBackend {
    /// `rt.linear_attention` on this device (shapes checked by `linear_attention::check`).
    /// Gates must be F32 tensors on this device; log decays above 0 are clamped to 0 in the
    /// kernel (the CPU refuses them, which needs their values on the host).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn linear_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kind: &LinearAttention,
        state: Option<&Tensor>,
        chunked: bool,
        sz: LinSizes,
    ) -> Result<(Tensor, Tensor)> {
        let LinSizes { t, h, dk, dv, cols } = sz;
        if dk > MAX_DK {
            return Err(Error::NotAvailable(format!(
                "linear_attention on a GPU with d_k {dk} (at most {MAX_DK})"
            )));
        }
        if q.dtype() != k.dtype() || q.dtype() != v.dtype() {
            return Err(Error::UnsupportedDType {
                op: "linear_attention on a GPU (q, k and v of one dtype)",
                dtype: k.dtype(),
            });
        }
        let lk = LinKind::of(kind);
        let sg = self.use_subgroups && self.ctx.info.subgroup_min_size >= 1;
        let pkey = key(lk, q.dtype(), sg)?;
        for (what, n) in [("q/k", t * h * dk), ("v/out", t * h * dv)] {
            u32_of(what, n)?;
        }
        let limit = self.ctx.chunk_limit();
        let tiles = dv.div_ceil(WG as usize).max(1);
        let groups = h * tiles;
        // The kernel reads its (head, tile) from the x workgroup index only.
        if groups > self.ctx.limits.max_compute_workgroups_per_dimension as usize {
            return Err(Error::TooLarge {
                what: "linear attention workgroups (heads × column tiles)".into(),
                needed: groups as u64,
                limit: u64::from(self.ctx.limits.max_compute_workgroups_per_dimension),
            });
        }
        let (ch, per_dispatch) = split_plan(chunked, dk, self.software);
        let piece_tokens = ch * per_dispatch;
        let dev = &self.ctx.device;
        let (o, s_final) = self.ctx.scoped("linear_attention", || {
            let out = self
                .ctx
                .alloc_rows("linear attention output", t * h, dv * 4)?;
            let states = [
                self.ctx
                    .alloc_rows("linear attention state", h * dk, cols * 4)?,
                self.ctx
                    .alloc_rows("linear attention state", h * dk, cols * 4)?,
            ];
            for b in [&out, &states[0], &states[1]] {
                if b.chunks.len() != 1 {
                    return Err(Error::TooLarge {
                        what: "linear attention output or state in one binding".into(),
                        needed: b.len() as u64,
                        limit,
                    });
                }
            }
            if t == 0 || h == 0 {
                return Ok((out, if state.is_some() { None } else { Some(states) }));
            }
            let pipeline = self.pipelines.get(dev, &pkey)?;
            let storage = |label: &str, bytes: &[u8]| {
                dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let dummy = storage("linear attention no gate", &[0u8; 4]);
            let gamma;
            let (g1, g2): (&wgpu::Buffer, &wgpu::Buffer) = match kind {
                LinearAttention::Vanilla => (&dummy, &dummy),
                LinearAttention::Retention { gamma: g } => {
                    // ln γ on the host: WGSL's log near 1 is only good to an absolute 2⁻²¹,
                    // a large relative error in a decay applied thousands of times.
                    let lg: Vec<f32> = g.iter().map(|&x| (x as f64).ln() as f32).collect();
                    gamma = storage("linear attention log gamma", bytemuck::cast_slice(&lg));
                    (&gamma, &dummy)
                }
                LinearAttention::Gated { log_decay } => {
                    (gate(log_decay, &[t, h, dk], "log_decay")?, &dummy)
                }
                LinearAttention::GatedDelta { beta, log_decay } => (
                    gate(beta, &[t, h], "beta")?,
                    gate(log_decay, &[t, h], "log_decay")?,
                ),
            };
            let scratch_bytes = (groups * 5 * ch * dk * 4).max(4) as u64;
            if scratch_bytes > limit {
                return Err(Error::TooLarge {
                    what: "linear attention scratch in one storage binding".into(),
                    needed: scratch_bytes,
                    limit,
                });
            }
            let scratch = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("linear attention scratch"),
                size: scratch_bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let (qb, kb, vb) = (
                tensor_binding(q, "q")?,
                tensor_binding(k, "k")?,
                tensor_binding(v, "v")?,
            );
            let ob = &out.chunks[0].buf;
            // The first piece reads the caller's state (or zeros), later ones the last output.
            let zero_state;
            let first_in = match state {
                Some(s) => tensor_binding(s, "state")?,
                None => {
                    zero_state = self
                        .ctx
                        .alloc_rows("linear attention state", h * dk, cols * 4)?;
                    &zero_state.chunks[0].buf
                }
            };
            let mut t0 = 0;
            let mut piece = 0usize;
            while t0 < t {
                let n = piece_tokens.min(t - t0);
                let s_in = if piece == 0 {
                    first_in
                } else {
                    &states[(piece - 1) % 2].chunks[0].buf
                };
                let s_out = &states[piece % 2].chunks[0].buf;
                let p = Params {
                    t: n as u32,
                    t0: u32_of("tokens", t0)?,
                    h: h as u32,
                    dk: dk as u32,
                    dv: dv as u32,
                    cols: cols as u32,
                    ch: ch as u32,
                    tiles: tiles as u32,
                };
                let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("linear attention params"),
                    contents: bytemuck::bytes_of(&p),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let list: [(u32, &wgpu::Buffer); 10] = [
                    (0, qb),
                    (1, kb),
                    (2, vb),
                    (3, g1),
                    (4, g2),
                    (5, s_in),
                    (6, s_out),
                    (7, ob),
                    (8, &scratch),
                    (9, &ubuf),
                ];
                // The kernels bind only the gates their kind reads.
                let gates = match lk {
                    LinKind::Vanilla => 0,
                    LinKind::Retention | LinKind::Gated => 1,
                    LinKind::Delta => 2,
                };
                let entries: Vec<(u32, &wgpu::Buffer)> = list
                    .into_iter()
                    .filter(|(b, _)| !(3..5).contains(b) || *b < 3 + gates)
                    .collect();
                let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wattle linear attention"),
                });
                self.encode_pass(&mut enc, &pipeline, &entries, groups)?;
                self.ctx.queue.submit([enc.finish()]);
                t0 += n;
                piece += 1;
            }
            let last = (piece - 1) % 2;
            let [a, b] = states;
            Ok((out, Some(if last == 0 { [a, b] } else { [b, a] })))
        })?;
        let state_out = match s_final {
            Some([s, _]) => {
                Tensor::from_storage(Storage::Gpu(s), DType::F32, &[h, dk, cols], q.device())
            }
            // Nothing ran: the state is unchanged.
            None => match state {
                Some(s) => s.clone(),
                None => Tensor::from_storage(
                    Storage::Gpu(self.ctx.alloc_rows(
                        "linear attention state",
                        h * dk,
                        cols * 4,
                    )?),
                    DType::F32,
                    &[h, dk, cols],
                    q.device(),
                ),
            },
        };
        Ok((
            Tensor::from_storage(Storage::Gpu(o), DType::F32, &[t, h, dv], q.device()),
            state_out,
        ))
    }
}
