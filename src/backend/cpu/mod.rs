//! The CPU backend: wattle-kernels on the process-wide thread pool.

use crate::device::{Backend, Device, DeviceFeatures, DeviceInfo, DeviceKind, DeviceLimits};
use crate::error::{Error, Result};
use crate::host::HostBuffer;
use crate::tensor::{Storage, Tensor};
use crate::DType;
use half::{bf16, f16};
use std::sync::OnceLock;
use wattle_kernels::matmul::Weights;
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::qmatmul::qmatmul;
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
                let out = y.typed_mut();
                qmatmul(self.isa, self.pool, xs, wt, wb.bytes(), out, m, n, k);
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
}
