//! The CPU backend: wattle-kernels on the process-wide thread pool.

mod ops;

use crate::attention::AttentionShape;
use crate::device::{Backend, Device, DeviceFeatures, DeviceInfo, DeviceKind, DeviceLimits};
use crate::error::{Error, Result};
use crate::host::HostBuffer;
use crate::tensor::{Storage, Tensor};
use crate::AttentionParams;
use crate::DType;
use half::{bf16, f16};
use std::borrow::Cow;
use std::sync::OnceLock;
use wattle_kernels::attention::{self as kattn, KvData};
use wattle_kernels::matmul::Weights;
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::qmatmul::{blocks_of, qmatmul_packed, PackedWeights, Path};
use wattle_kernels::quant::{BlockQ4_0, BlockQ8_0};
use wattle_kernels::Isa;

pub(crate) struct CpuBackend {
    pub isa: Isa,
    pub pool: &'static ThreadPool,
}

/// The one CPU device of the process (host tensors live on it).
pub(crate) fn device() -> Device {
    static CPU: OnceLock<Device> = OnceLock::new();
    CPU.get_or_init(|| {
        // An invalid WATTLE_CPU_ISA is reported by Runtime::new; host tensors still work.
        let isa = wattle_kernels::isa::selected().unwrap_or(Isa::Scalar);
        let pool = ThreadPool::global();
        let info = DeviceInfo {
            name: cpu_name(),
            kind: DeviceKind::Cpu,
            driver: format!("wattle-kernels {isa}, {} threads", pool.threads()),
            software: true,
            limits: DeviceLimits::UNLIMITED,
            subgroup_size: None,
            features: DeviceFeatures {
                f16: true,
                subgroups: false,
                timestamp_query: false,
            },
        };
        Device::new(info, Backend::Cpu(CpuBackend { isa, pool }))
    })
    .clone()
}

/// The CPU model name from /proc/cpuinfo, else the architecture.
pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl CpuBackend {
    /// `y = x · wᵀ` for float weights; `x` F32 or F16 `[m, k]`, `w` `[n, k]`.
    pub fn matmul(&self, x: &Tensor, w: &Tensor, m: usize, n: usize, k: usize) -> Result<Tensor> {
        let (Some(xb), Some(wb)) = (x.host_buffer(), w.host_buffer()) else {
            return Err(Error::DeviceLost("CPU tensor without host storage".into()));
        };
        let xf: Vec<f32>;
        let xs: &[f32] = match x.dtype() {
            DType::F32 => xb.typed(),
            DType::F16 => {
                xf = xb.typed::<f16>().iter().map(|v| v.to_f32()).collect();
                &xf
            }
            dtype => {
                return Err(Error::UnsupportedDType {
                    op: "matmul (x)",
                    dtype,
                })
            }
        };
        let mut y = HostBuffer::zeroed(m * n * 4);
        let weights = match w.dtype() {
            DType::F32 => Weights::F32(wb.typed()),
            DType::F16 => Weights::F16(wb.typed::<f16>()),
            DType::BF16 => Weights::BF16(wb.typed::<bf16>()),
            wt @ (DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4_K | DType::Q6_K) => {
                let packed = w.packed_weights(|| {
                    PackedWeights::new(self.pool, wt, wb.bytes(), n, k).map_err(|e| {
                        Error::ShapeMismatch {
                            op: "matmul",
                            detail: e.to_string(),
                        }
                    })
                })?;
                let out = y.typed_mut();
                qmatmul_packed(Path::for_isa(self.isa), self.pool, xs, &packed, out, m);
                return Ok(Tensor::from_storage(
                    Storage::Host(y),
                    DType::F32,
                    &[m, n],
                    device(),
                ));
            }
            dtype => {
                return Err(Error::UnsupportedDType {
                    op: "matmul",
                    dtype,
                })
            }
        };
        wattle_kernels::matmul::matmul(self.isa, self.pool, xs, weights, y.typed_mut(), m, n, k);
        Ok(Tensor::from_storage(
            Storage::Host(y),
            DType::F32,
            &[m, n],
            device(),
        ))
    }

    /// Softmax attention on validated operands.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        params: &AttentionParams,
        s: &AttentionShape,
    ) -> Result<Tensor> {
        let qb = host(q)?;
        let qf: Vec<f32>;
        let qs: &[f32] = match q.dtype() {
            DType::F16 => {
                qf = qb.typed::<f16>().iter().map(|v| v.to_f32()).collect();
                &qf
            }
            _ => qb.typed(),
        };
        let sinks = params.sinks.as_ref().map(|t| t.to_f32_vec()).transpose()?;
        let (kv, vv) = (KvView::of(k)?, KvView::of(v)?);
        let shape = kattn::AttnShape {
            t_q: s.t_q,
            h_q: s.h_q,
            t_k: s.t_k,
            h_kv: s.h_kv,
            d: s.d,
            d_v: s.d_v,
        };
        let p = kattn::AttnParams {
            causal: params.causal,
            window: params.window,
            q_pos0: params.q_pos0,
            key_positions: params.key_positions.as_deref(),
            sinks: sinks.as_deref(),
            scale: params.scale.unwrap_or(1.0 / (s.d as f32).sqrt()),
            softcap: params.softcap,
        };
        let mut out = HostBuffer::zeroed(s.t_q * s.h_q * s.d_v * 4);
        kattn::flash::attention_isa(
            self.isa,
            self.pool,
            qs,
            kv.data(),
            vv.data(),
            shape,
            &p,
            out.typed_mut(),
        );
        Ok(Tensor::from_storage(
            Storage::Host(out),
            DType::F32,
            &[s.t_q, s.h_q, s.d_v],
            device(),
        ))
    }
}

fn host(t: &Tensor) -> Result<&HostBuffer> {
    t.host_buffer()
        .ok_or_else(|| Error::DeviceLost("CPU tensor without host storage".into()))
}

/// K or V as attention reads it: floats or blocks viewed in place (copied only when misaligned).
enum KvView<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Q8_0(Cow<'a, [BlockQ8_0]>),
    Q4_0(Cow<'a, [BlockQ4_0]>),
}

impl<'a> KvView<'a> {
    fn of(t: &'a Tensor) -> Result<KvView<'a>> {
        let b = host(t)?;
        Ok(match t.dtype() {
            DType::F32 => KvView::F32(b.typed()),
            DType::F16 => KvView::F16(b.typed()),
            DType::Q8_0 => KvView::Q8_0(blocks_of(b.bytes())),
            DType::Q4_0 => KvView::Q4_0(blocks_of(b.bytes())),
            dtype => {
                return Err(Error::UnsupportedDType {
                    op: "attention (k/v)",
                    dtype,
                })
            }
        })
    }

    fn data(&self) -> KvData<'_> {
        match self {
            KvView::F32(v) => KvData::F32(v),
            KvView::F16(v) => KvData::F16(v),
            KvView::Q8_0(v) => KvData::Q8_0(v),
            KvView::Q4_0(v) => KvData::Q4_0(v),
        }
    }
}
