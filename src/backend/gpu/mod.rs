//! The GPU backend: wgpu devices, buffers, the pipeline cache and WGSL kernels.
//!
//! PLACEHOLDER: no adapters yet.

use crate::device::{Device, GpuApi};
use crate::error::Result;
use crate::tensor::Tensor;

/// A wgpu device opened with its adapter's limits.
pub(crate) struct GpuBackend {
    never: std::convert::Infallible,
}

/// A device buffer holding a tensor's raw storage bytes.
pub(crate) struct GpuBuffer {
    never: std::convert::Infallible,
}

impl GpuBuffer {
    /// Downloads the raw bytes.
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        match self.never {}
    }
}

impl GpuBackend {
    /// Uploads raw bytes.
    pub fn upload(&self, _bytes: &[u8]) -> Result<GpuBuffer> {
        match self.never {}
    }

    /// Waits for all submitted work.
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }

    /// `y = x · wᵀ`.
    pub fn matmul(
        &self,
        _x: &Tensor,
        _w: &Tensor,
        _m: usize,
        _n: usize,
        _k: usize,
    ) -> Result<Tensor> {
        match self.never {}
    }
}

/// Opens every adapter reachable through `apis`.
pub(crate) fn enumerate(_apis: &[GpuApi]) -> Result<Vec<Device>> {
    Ok(Vec::new())
}

/// Every WGSL shader as (file name, source), for the naga portability test.
pub fn shader_sources() -> Vec<(&'static str, String)> {
    Vec::new()
}
