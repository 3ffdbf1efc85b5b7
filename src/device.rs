//! Devices: the CPU and every GPU adapter wgpu finds.

use crate::backend::{cpu::CpuBackend, gpu::GpuBackend};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The graphics API a GPU device is reached through.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GpuApi {
    /// Vulkan (Linux, Windows, Android; lavapipe in software).
    Vulkan,
    /// Apple Metal.
    Metal,
    /// Direct3D 12.
    Dx12,
    /// OpenGL / OpenGL ES (llvmpipe in software).
    Gl,
    /// WebGPU in a browser.
    BrowserWebGpu,
}

impl GpuApi {
    /// Lower-case name as used by `WATTLE_BACKENDS`.
    pub const fn name(self) -> &'static str {
        match self {
            GpuApi::Vulkan => "vulkan",
            GpuApi::Metal => "metal",
            GpuApi::Dx12 => "dx12",
            GpuApi::Gl => "gl",
            GpuApi::BrowserWebGpu => "webgpu",
        }
    }
}

/// What kind of device this is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// A GPU adapter (possibly a software one such as lavapipe).
    Gpu {
        /// The API it is driven through.
        api: GpuApi,
    },
}

/// Limits the device was opened with (for GPUs, the adapter's own limits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeviceLimits {
    /// Largest storage-buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroup size along x.
    pub max_compute_workgroup_size_x: u32,
    /// Workgroup memory in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
}

impl DeviceLimits {
    /// Limits of the host CPU: bounded only by memory.
    pub const UNLIMITED: DeviceLimits = DeviceLimits {
        max_storage_buffer_binding_size: u64::MAX,
        max_buffer_size: u64::MAX,
        max_storage_buffers_per_shader_stage: u32::MAX,
        max_compute_invocations_per_workgroup: u32::MAX,
        max_compute_workgroup_size_x: u32::MAX,
        max_compute_workgroup_storage_size: u32::MAX,
        max_compute_workgroups_per_dimension: u32::MAX,
    };
}

/// Optional capabilities.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DeviceFeatures {
    /// Native f16 arithmetic in shaders (SHADER_F16).
    pub f16: bool,
    /// Subgroup operations.
    pub subgroups: bool,
    /// GPU timestamp queries.
    pub timestamp_query: bool,
}

/// Everything a device reports about itself.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Human-readable name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// CPU or GPU (and its API).
    pub kind: DeviceKind,
    /// Driver name and version (for the CPU: the kernel path and thread count).
    pub driver: String,
    /// True for devices emulated on the CPU (lavapipe, llvmpipe, WARP) and for the CPU itself.
    pub software: bool,
    /// Limits the device was opened with.
    pub limits: DeviceLimits,
    /// Subgroup size range `(min, max)` when subgroups are available.
    pub subgroup_size: Option<(u32, u32)>,
    /// Optional features.
    pub features: DeviceFeatures,
}

pub(crate) enum Backend {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

pub(crate) struct DeviceInner {
    id: u64,
    info: DeviceInfo,
    pub(crate) backend: Backend,
}

/// A device that holds tensors and runs kernels. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Device(pub(crate) Arc<DeviceInner>);

impl Device {
    pub(crate) fn new(info: DeviceInfo, backend: Backend) -> Device {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Device(Arc::new(DeviceInner {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            info,
            backend,
        }))
    }

    /// CPU or GPU (with its API).
    pub fn kind(&self) -> DeviceKind {
        self.0.info.kind
    }

    /// Human-readable name.
    pub fn name(&self) -> String {
        self.0.info.name.clone()
    }

    /// Everything the device reports: driver, limits, subgroup size, features.
    pub fn info(&self) -> &DeviceInfo {
        &self.0.info
    }

    /// True for the host CPU.
    pub fn is_cpu(&self) -> bool {
        self.kind() == DeviceKind::Cpu
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Waits until all work submitted to the device has finished (a no-op on the CPU, whose
    /// calls return when done). Use it to time GPU work.
    pub fn synchronize(&self) -> crate::Result<()> {
        match &self.0.backend {
            Backend::Cpu(_) => Ok(()),
            Backend::Gpu(g) => g.synchronize(),
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.0.backend
    }

    pub(crate) fn gpu(&self) -> Option<&GpuBackend> {
        match &self.0.backend {
            Backend::Gpu(g) => Some(g),
            Backend::Cpu(_) => None,
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Device({}: {:?} {})",
            self.0.id, self.0.info.kind, self.0.info.name
        )
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            DeviceKind::Cpu => write!(f, "cpu ({})", self.0.info.name),
            DeviceKind::Gpu { api } => write!(f, "{} ({})", api.name(), self.0.info.name),
        }
    }
}
