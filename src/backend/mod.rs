//! Backends: the CPU (wattle-kernels) and GPUs (wgpu + WGSL).

pub(crate) mod cpu;
pub(crate) mod gpu;
