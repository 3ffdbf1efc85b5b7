//! The Runtime: the set of devices and the op entry points.

use crate::backend::{cpu, gpu};
use crate::device::{Backend, Device, GpuApi};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::DType;
use std::sync::Arc;

struct Inner {
    devices: Vec<Device>,
}

/// Entry point of wattle: owns the devices and runs ops. `Clone + Send + Sync`.
#[derive(Clone)]
pub struct Runtime(Arc<Inner>);

const ALL_APIS: [GpuApi; 5] = [
    GpuApi::Vulkan,
    GpuApi::Metal,
    GpuApi::Dx12,
    GpuApi::Gl,
    GpuApi::BrowserWebGpu,
];

impl Runtime {
    /// The CPU and every GPU adapter wgpu finds, restricted by `WATTLE_BACKENDS` when set
    /// (e.g. `cpu,vulkan`; names: `cpu`, `vulkan`, `metal`, `dx12`, `gl`, `webgpu`, `gpu`, `all`).
    /// The CPU is always present: it is the host.
    pub fn new() -> Result<Runtime> {
        Runtime::with_backends(
            std::env::var("WATTLE_BACKENDS")
                .ok()
                .as_deref()
                .unwrap_or("all"),
        )
    }

    /// Like [`Runtime::new`] with an explicit backend list instead of `WATTLE_BACKENDS`.
    pub fn with_backends(spec: &str) -> Result<Runtime> {
        wattle_kernels::isa::selected()?;
        let apis = parse_backends(spec)?;
        let mut devices = vec![cpu::device()];
        devices.extend(gpu::enumerate(&apis)?);
        Ok(Runtime(Arc::new(Inner { devices })))
    }

    /// Every device, the CPU first.
    pub fn devices(&self) -> Vec<Device> {
        self.0.devices.clone()
    }

    /// The host CPU.
    pub fn cpu(&self) -> Device {
        self.0.devices[0].clone()
    }

    /// Every GPU device, in discovery order.
    pub fn gpus(&self) -> Vec<Device> {
        self.0
            .devices
            .iter()
            .filter(|d| !d.is_cpu())
            .cloned()
            .collect()
    }

    /// `y = x · wᵀ`: `x` `[m, k]` F32 or F16, `w` `[n, k]` of any weight dtype (F32, F16, BF16,
    /// Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) -> `y` `[m, n]` F32, on the device holding both.
    /// Quantized weights multiply activations quantized on the fly to Q8_0 or Q8_K, as ggml does.
    pub fn matmul(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (m, n, k) = check_matmul(x, w)?;
        match x.device().backend() {
            Backend::Cpu(c) => c.matmul(x, w, m, n, k),
            Backend::Gpu(g) => g.matmul(x, w, m, n, k),
        }
    }
}

impl Runtime {
    /// Autotunes the GPU matmul kernels: on every GPU device, for each shape and weight dtype of
    /// `opts`, times candidate variants and launch constants and records the fastest in the
    /// tuning cache (`$WATTLE_CACHE_DIR/gpu-tune.json`), which later `matmul` calls — in this
    /// process and later ones — use for that shape's power-of-two bucket. Shapes whose `k` is
    /// not a multiple of a dtype's block are skipped. Slow on software devices: call it when
    /// asked (e.g. `wattle tune`), never on a hot path.
    pub fn tune(&self, opts: &crate::TuneOptions) -> Result<Vec<crate::TuneEntry>> {
        let mut out = Vec::new();
        for dev in self.gpus() {
            let Backend::Gpu(g) = dev.backend() else {
                continue;
            };
            for &w in &opts.dtypes {
                for &shape in &opts.shapes {
                    if !shape.2.is_multiple_of(w.block_size()) || shape.0 * shape.1 * shape.2 == 0 {
                        continue;
                    }
                    let e = g.tune_point(&dev, shape, w, opts.reps)?;
                    if opts.verbose {
                        eprintln!(
                            "tune {}: {} {:?}: {} {:.1} us (default {:.1} us, {} candidates)",
                            e.device,
                            e.dtype,
                            e.shape,
                            e.choice,
                            e.seconds * 1e6,
                            e.default_seconds * 1e6,
                            e.candidates
                        );
                    }
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

impl Runtime {
    /// Softmax attention (SPEC §6): `q [t_q, h_q, d]` F32/F16, `k [t_k, h_kv, d]` and
    /// `v [t_k, h_kv, d_v]` in F32, F16, Q8_0 or Q4_0 (read directly, no dequantized copy), `h_q` a
    /// multiple of `h_kv` (GQA/MQA) -> `[t_q, h_q, d_v]` F32, on the device holding all three.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &crate::AttentionParams,
    ) -> Result<Tensor> {
        let shape = crate::attention::check(q, k, v, params)?;
        match q.device().backend() {
            Backend::Cpu(c) => c.attention(q, k, v, params, &shape),
            Backend::Gpu(g) => g.attention(q, k, v, params, &shape),
        }
    }
}

impl Runtime {
    /// Linear attention (SPEC §7): `q, k [t, h, d_k]`, `v [t, h, d_v]`, optional state in ->
    /// (output `[t, h, d_v]` F32, state out). The state is `[h, d_k, d_v]` F32 (`[h, d_k, d_v + 1]`
    /// for [`LinearAttention::Vanilla`], whose last column is the normaliser z). Chunked or
    /// recurrent by length; both give the same results within SPEC §4's bound.
    pub fn linear_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kind: &crate::LinearAttention,
        state: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        self.linear_attention_with(q, k, v, kind, state, crate::LinearForm::Auto)
    }

    /// [`Runtime::linear_attention`] with the evaluation form chosen by the caller.
    pub fn linear_attention_with(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        kind: &crate::LinearAttention,
        state: Option<&Tensor>,
        form: crate::LinearForm,
    ) -> Result<(Tensor, Tensor)> {
        match q.device().backend() {
            Backend::Cpu(c) => crate::linear_attention::run(c.pool, q, k, v, kind, state, form),
            Backend::Gpu(g) => {
                let sz = crate::linear_attention::check(q, k, v, kind, state)?;
                let chunked = crate::linear_attention::chunked_form(form, sz.t);
                g.linear_attention(q, k, v, kind, state, chunked, sz)
            }
        }
    }
}

/// Validates a matmul's operands; returns `(m, n, k)`.
fn check_matmul(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize)> {
    if x.device() != w.device() {
        return Err(Error::DeviceMismatch(
            x.device().to_string(),
            w.device().to_string(),
        ));
    }
    let (&[m, k], &[n, kw]) = (x.shape(), w.shape()) else {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            detail: format!(
                "x must be [m, k] and w [n, k]; got {:?} and {:?}",
                x.shape(),
                w.shape()
            ),
        });
    };
    if k != kw {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            detail: format!("x is [{m}, {k}] but w is [{n}, {kw}]"),
        });
    }
    if !matches!(x.dtype(), DType::F32 | DType::F16) {
        return Err(Error::UnsupportedDType {
            op: "matmul (x)",
            dtype: x.dtype(),
        });
    }
    if w.dtype() == DType::Q8_K {
        return Err(Error::UnsupportedDType {
            op: "matmul",
            dtype: w.dtype(),
        });
    }
    Ok((m, n, k))
}

fn parse_backends(spec: &str) -> Result<Vec<GpuApi>> {
    let mut apis = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "cpu" => {}
            "all" | "gpu" => apis.extend(ALL_APIS),
            _ => match ALL_APIS.iter().find(|a| a.name() == name) {
                Some(a) => apis.push(*a),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "WATTLE_BACKENDS: unknown backend `{name}` (expected cpu, vulkan, metal, dx12, gl, webgpu, gpu or all)"
                    )))
                }
            },
        }
    }
    apis.dedup();
    Ok(apis)
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.devices.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceKind;

    #[test]
    fn backend_lists_parse() {
        assert_eq!(parse_backends("cpu").unwrap(), vec![]);
        assert_eq!(parse_backends("cpu, Vulkan").unwrap(), vec![GpuApi::Vulkan]);
        assert_eq!(
            parse_backends("gl,vulkan").unwrap(),
            vec![GpuApi::Gl, GpuApi::Vulkan]
        );
        assert!(matches!(
            parse_backends("cuda"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn cpu_is_first() {
        let rt = Runtime::with_backends("cpu").unwrap();
        assert_eq!(rt.devices()[0].kind(), DeviceKind::Cpu);
        assert_eq!(rt.cpu(), rt.devices()[0]);
    }
}
