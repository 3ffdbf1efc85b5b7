//! The GPU backend: wgpu devices, buffers, the pipeline cache and WGSL kernels.
//!
//! Every adapter wgpu finds is opened with its own limits and optional features (SHADER_F16,
//! SUBGROUP, TIMESTAMP_QUERY). Tensors live in storage buffers as raw bytes (`array<u32>` in
//! WGSL), split by rows when larger than one binding. Kernels come in variants (subgroup or
//! workgroup-memory reductions, native f16 or f32 math) chosen from the adapter's features;
//! `WATTLE_GPU_NO_SUBGROUPS=1` and `WATTLE_GPU_NO_F16=1` force the fallbacks.

pub(crate) mod attention;
mod buffer;
pub(crate) mod kv;
pub(crate) mod linear_attn;
pub(crate) mod matmul;
pub(crate) mod ops;
mod pipeline;
pub(crate) mod probe;
mod shader;
pub(crate) mod tune;

pub(crate) use buffer::GpuBuffer;

use crate::device::{
    Backend, Device, DeviceFeatures, DeviceInfo, DeviceKind, DeviceLimits, GpuApi,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::DType;
use buffer::StagingPool;
use pipeline::PipelineCache;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Loop iterations one invocation may run per dispatch on a software GPU. llvmpipe (lavapipe
/// and GL) stops every loop of an invocation once it has taken about 65535 back-edges in
/// total, silently: kernels with long per-invocation loops size their dispatches under this.
pub(crate) const SOFTWARE_LOOP_BUDGET: usize = 40_000;

/// `v` as a 32-bit shader index (`TooLarge` when it does not fit).
pub(crate) fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge {
        what: format!("{what} ({v}) as a 32-bit shader index"),
        needed: v as u64,
        limit: u64::from(u32::MAX),
    })
}

/// The one storage buffer of a device buffer (`TooLarge` when it spans several bindings).
pub(crate) fn one_binding<'a>(what: &str, b: &'a GpuBuffer) -> Result<&'a wgpu::Buffer> {
    match b.chunks.as_slice() {
        [c] => Ok(&c.buf),
        _ => Err(Error::TooLarge {
            what: format!("{what}: {} bytes in {} bindings", b.len(), b.chunks.len()),
            needed: b.len() as u64,
            limit: b.chunks.first().map_or(0, |c| c.len as u64),
        }),
    }
}

/// The one storage buffer behind a GPU tensor (`DeviceMismatch` for a host tensor).
pub(crate) fn tensor_binding<'a>(t: &'a Tensor, what: &str) -> Result<&'a wgpu::Buffer> {
    match t.storage() {
        crate::tensor::Storage::Gpu(b) => one_binding(what, b),
        crate::tensor::Storage::Host(_) => {
            Err(Error::DeviceMismatch("cpu".into(), t.device().to_string()))
        }
    }
}

/// The device state shared by a backend and its buffers.
pub(crate) struct Ctx {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// The adapter limits the device was opened with.
    pub limits: wgpu::Limits,
    /// Largest storage binding used (the adapter's, or lower via `WATTLE_GPU_MAX_BINDING_BYTES`).
    pub max_binding: u64,
    pub features: wgpu::Features,
    pub info: wgpu::AdapterInfo,
    pool: StagingPool,
    /// Keeps the instance (and e.g. the GL display) alive as long as the device.
    _instance: wgpu::Instance,
}

impl Ctx {
    /// Runs `f` inside validation and out-of-memory error scopes, so that wgpu errors it
    /// provokes come back as `Err` rather than through the uncaptured-error handler.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let r = f();
        let oom = pollster::block_on(oom.pop());
        let validation = pollster::block_on(validation.pop());
        if let Some(e) = oom {
            return Err(Error::TooLarge {
                what: format!("{what}: out of device memory ({e})"),
                needed: 0,
                limit: self.limits.max_buffer_size,
            });
        }
        if let Some(e) = validation {
            return Err(Error::DeviceLost(format!("{what}: {e}")));
        }
        r
    }
}

/// A wgpu device opened with its adapter's limits and features.
pub(crate) struct GpuBackend {
    ctx: Arc<Ctx>,
    pipelines: PipelineCache,
    /// Subgroup variants allowed (adapter has SUBGROUP, not disabled by the environment).
    use_subgroups: bool,
    /// Native-f16 variants allowed (adapter has SHADER_F16, not disabled by the environment).
    use_f16: bool,
    /// Work (multiply-adds) per submission, so that none runs ~100 ms on a slow device.
    submit_budget: u64,
    software: bool,
    /// Tuned choices for this adapter, from the tuning cache or `Runtime::tune`.
    tuned: tune::TunedMap,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

impl GpuBackend {
    /// `groups` workgroups as x and y counts within the per-dimension limit.
    pub(crate) fn groups_2d(&self, groups: usize) -> Result<(u32, u32)> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        let gx = groups.clamp(1, max);
        let gy = groups.div_ceil(gx);
        if gy > max {
            return Err(Error::TooLarge {
                what: format!("{groups} workgroups"),
                needed: groups as u64,
                limit: (max * max) as u64,
            });
        }
        Ok((gx as u32, gy as u32))
    }

    /// Encodes one compute pass of `pipe` over `groups` workgroups (wrapped into y past the
    /// per-dimension limit) with the `(binding, buffer)` entries bound whole.
    pub(crate) fn encode_pass(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &pipeline::Pipeline,
        entries: &[(u32, &wgpu::Buffer)],
        groups: usize,
    ) -> Result<()> {
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|&(binding, buf)| wgpu::BindGroupEntry {
                binding,
                resource: buf.as_entire_binding(),
            })
            .collect();
        let bind = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wattle pass"),
                layout: &pipe.layout,
                entries: &entries,
            });
        let (gx, gy) = self.groups_2d(groups)?;
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }

    /// Uploads a tensor's raw bytes, split by rows of its last dimension when larger than one
    /// storage binding (`Error::TooLarge` when a single row does not fit).
    pub fn upload_tensor(&self, bytes: &[u8], dtype: DType, shape: &[usize]) -> Result<GpuBuffer> {
        let row_bytes = match shape.last() {
            Some(&last) => crate::tensor::storage_bytes(dtype, &[last])?,
            None => bytes.len(),
        };
        self.ctx.upload_rows(bytes, row_bytes)
    }

    /// Waits for all submitted work.
    pub fn synchronize(&self) -> Result<()> {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::DeviceLost(format!("poll: {e}")))
    }

    /// `y = x · wᵀ`: `x` `[m, k]` F32/F16, `w` `[n, k]` F32/F16/BF16 -> `y` `[m, n]` F32 on this
    /// device, with the variant chosen from the adapter's features.
    pub fn matmul(&self, x: &Tensor, w: &Tensor, m: usize, n: usize, k: usize) -> Result<Tensor> {
        let c = self.choose_matmul(m, n, k, w.dtype(), x.dtype());
        self.matmul_with(x, w, m, n, k, &c, None)
    }

    /// Number of pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }
}

/// Names that mark a software (CPU-emulated) adapter.
const SOFTWARE_NAMES: [&str; 5] = [
    "llvmpipe",
    "lavapipe",
    "swiftshader",
    "microsoft basic render",
    "warp",
];

fn api_of(b: wgpu::Backend) -> Option<GpuApi> {
    match b {
        wgpu::Backend::Vulkan => Some(GpuApi::Vulkan),
        wgpu::Backend::Metal => Some(GpuApi::Metal),
        wgpu::Backend::Dx12 => Some(GpuApi::Dx12),
        wgpu::Backend::Gl => Some(GpuApi::Gl),
        wgpu::Backend::BrowserWebGpu => Some(GpuApi::BrowserWebGpu),
        _ => None,
    }
}

/// Opens every adapter reachable through `apis`. An adapter that fails to open is skipped and
/// reported on stderr once per process.
pub(crate) fn enumerate(apis: &[GpuApi]) -> Result<Vec<Device>> {
    let max_binding = match std::env::var("WATTLE_GPU_MAX_BINDING_BYTES") {
        Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            Error::InvalidArgument(format!(
                "WATTLE_GPU_MAX_BINDING_BYTES: expected a byte count, got `{v}`"
            ))
        })?),
        Err(_) => None,
    };
    enumerate_with(apis, max_binding)
}

/// [`enumerate`] with an explicit cap on storage-binding bytes (for tests of the split path).
pub(crate) fn enumerate_with(apis: &[GpuApi], max_binding: Option<u64>) -> Result<Vec<Device>> {
    let mut backends = wgpu::Backends::empty();
    for api in apis {
        backends |= match api {
            GpuApi::Vulkan => wgpu::Backends::VULKAN,
            GpuApi::Metal => wgpu::Backends::METAL,
            GpuApi::Dx12 => wgpu::Backends::DX12,
            GpuApi::Gl => wgpu::Backends::GL,
            GpuApi::BrowserWebGpu => wgpu::Backends::BROWSER_WEBGPU,
        };
    }
    if backends.is_empty() {
        return Ok(Vec::new());
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let mut devices = Vec::new();
    for adapter in adapters {
        let info = adapter.get_info();
        // A driver that panics while opening must not take the Runtime down with it.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            open(&instance, adapter, max_binding)
        }))
        .unwrap_or_else(|_| Err(Error::NotAvailable("panicked while opening".into())));
        match opened {
            Ok(Some(d)) => devices.push(d),
            Ok(None) => {}
            Err(e) => warn_once(&format!(
                "wattle: skipping GPU adapter {} ({:?}): {e}",
                info.name, info.backend
            )),
        }
    }
    Ok(devices)
}

fn warn_once(msg: &str) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(msg.to_string())
    {
        eprintln!("{msg}");
    }
}

fn open(
    instance: &wgpu::Instance,
    adapter: wgpu::Adapter,
    max_binding: Option<u64>,
) -> Result<Option<Device>> {
    let info = adapter.get_info();
    let Some(api) = api_of(info.backend) else {
        return Ok(None);
    };
    if !adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
    {
        return Err(Error::NotAvailable("no compute shaders".into()));
    }
    let limits = adapter.limits();
    let wanted =
        wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
    let features = adapter.features() & wanted;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("wattle"),
        required_features: features,
        required_limits: limits.clone(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .map_err(|e| Error::NotAvailable(format!("request_device: {e}")))?;
    let name = info.name.clone();
    device.on_uncaptured_error(Arc::new(move |e| {
        warn_once(&format!("wattle: uncaptured GPU error on {name}: {e}"));
    }));
    let name = info.name.clone();
    device.set_device_lost_callback(move |reason, msg| {
        if reason != wgpu::DeviceLostReason::Destroyed {
            warn_once(&format!("wattle: GPU device {name} lost: {msg}"));
        }
    });
    let lower = info.name.to_ascii_lowercase();
    let software = info.device_type == wgpu::DeviceType::Cpu
        || SOFTWARE_NAMES.iter().any(|s| lower.contains(s));
    let has_sg = features.contains(wgpu::Features::SUBGROUP);
    let dev_info = DeviceInfo {
        name: info.name.clone(),
        kind: DeviceKind::Gpu { api },
        driver: [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        software,
        limits: DeviceLimits {
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        },
        subgroup_size: has_sg.then_some((info.subgroup_min_size, info.subgroup_max_size)),
        features: DeviceFeatures {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: has_sg,
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        },
    };
    let max_binding = limits
        .max_storage_buffer_binding_size
        .min(max_binding.unwrap_or(u64::MAX))
        .max(4);
    let ctx = Arc::new(Ctx {
        device,
        queue,
        limits,
        max_binding,
        features,
        info,
        pool: StagingPool::default(),
        _instance: instance.clone(),
    });
    let backend = GpuBackend {
        use_subgroups: has_sg && !env_flag("WATTLE_GPU_NO_SUBGROUPS"),
        use_f16: dev_info.features.f16 && !env_flag("WATTLE_GPU_NO_F16"),
        // lavapipe/llvmpipe on a busy 2-core machine manage ~0.1 GFLOP/s in the worst case
        // measured: 2^21 multiply-adds stay near 40 ms; real GPUs are >100× faster.
        submit_budget: if software { 1 << 21 } else { 1 << 28 },
        software,
        pipelines: PipelineCache::default(),
        tuned: tune::TunedMap::load(&dev_info.name, api, &dev_info.driver),
        ctx,
    };
    Ok(Some(Device::new(dev_info, Backend::Gpu(backend))))
}

/// Every WGSL shader × variant as `(name, fully spliced source)`, for the naga portability test.
pub fn shader_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in matmul::MatmulVariant::all()
        .iter()
        .map(|v| v.key())
        .chain([
            matmul::quantize_key(DType::F32, DType::Q8_0),
            matmul::quantize_key(DType::F16, DType::Q8_0),
            matmul::quantize_key(DType::F32, DType::Q4_K),
            matmul::quantize_key(DType::F16, DType::Q4_K),
        ])
        .chain(probe::keys())
        .chain(ops::all_keys())
        .chain(attention::all_keys())
        .chain(kv::all_keys())
        .chain(linear_attn::all_keys())
    {
        let name = format!("{}:{}", key.variant, key.entry);
        match key.source() {
            Ok(src) => out.push((name, src)),
            // A splice error is reported as an empty source; the naga test fails on it.
            Err(e) => out.push((name, format!("// splice error: {e}"))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shader_errors_are_pipeline_errors() {
        let all = [GpuApi::Vulkan, GpuApi::Metal, GpuApi::Dx12, GpuApi::Gl];
        for dev in enumerate(&all).unwrap() {
            let g = dev.gpu().unwrap();
            // No W_*/X_* defines: the loaders are missing, so the WGSL does not compile.
            let key = pipeline::PipelineKey::new(
                "matvec",
                "matvec",
                "broken".into(),
                vec![],
                vec![("WG", 64), ("ROWS", 1), ("NR", 1), ("L", 1)],
            );
            let r = g.pipelines.get(&g.ctx.device, &key);
            assert!(matches!(r, Err(Error::Pipeline(_))), "{dev}");
            // The device still works afterwards.
            let c = g.choose_matmul(1, 4, 4, DType::F32, DType::F32);
            assert!(g.launch_for_test(&c.variant).is_ok(), "{dev}");
        }
    }

    #[test]
    fn backend_types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<GpuBackend>();
        check::<GpuBuffer>();
    }
}

/// Hidden API for wattle's tests, benches and tools (re-exported in `wattle::internals`).
pub mod api {
    use super::matmul::{MatmulChoice, MatmulVariant, MatvecConfig};
    use super::GpuBackend;
    use crate::device::{Device, GpuApi};
    use crate::error::{Error, Result};
    use crate::tensor::{Storage, Tensor};

    fn gpu(dev: &Device) -> Result<&GpuBackend> {
        dev.gpu()
            .ok_or_else(|| Error::NotAvailable(format!("{dev} is not a GPU")))
    }

    /// Best streaming read bandwidth of a GPU device, GB/s.
    pub fn gpu_probe_bandwidth(dev: &Device) -> Result<f64> {
        gpu(dev)?.probe_bandwidth()
    }

    /// FMA throughput of a GPU device (f32, independent chains), GFLOP/s.
    pub fn gpu_probe_fma(dev: &Device) -> Result<f64> {
        gpu(dev)?.probe_fma()
    }

    /// Names of the matmul variants this device can run (empty for the CPU).
    pub fn gpu_variant_names(dev: &Device) -> Vec<String> {
        gpu_matmul_variants(dev).iter().map(|v| v.name()).collect()
    }

    /// The matmul variants this device can run (empty for the CPU).
    pub fn gpu_matmul_variants(dev: &Device) -> Vec<MatmulVariant> {
        match dev.gpu() {
            Some(g) => MatmulVariant::all()
                .into_iter()
                .filter(|v| g.supports(v))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The variant `Runtime::matmul` runs on `dev` for `x` `[m, k]` of dtype `x` and weights of
    /// dtype `w` (after `WATTLE_GPU_NO_*`); `None` on the CPU.
    pub fn gpu_matmul_choice(
        dev: &Device,
        m: usize,
        w: crate::DType,
        x: crate::DType,
    ) -> Option<MatmulVariant> {
        dev.gpu().map(|g| g.default_choice(m, w, x).variant)
    }

    /// The full choice (variant and matvec constants) `Runtime::matmul` makes on `dev` for
    /// `x` `[m, k]` and `w` `[n, k]`, tuned entries included; `None` on the CPU.
    pub fn gpu_matmul_choice_for(
        dev: &Device,
        m: usize,
        n: usize,
        k: usize,
        w: crate::DType,
        x: crate::DType,
    ) -> Option<MatmulChoice> {
        dev.gpu().map(|g| g.choose_matmul(m, n, k, w, x))
    }

    /// The static matvec constants of variant `v` on `dev` (`None` on the CPU).
    pub fn gpu_default_matvec_config(dev: &Device, v: &MatmulVariant) -> Option<MatvecConfig> {
        dev.gpu().map(|g| g.default_matvec_config(v))
    }

    /// Whether `dev` can run variant `v` with matvec constants `cfg`.
    pub fn gpu_config_ok(dev: &Device, v: &MatmulVariant, cfg: &MatvecConfig) -> bool {
        dev.gpu()
            .is_some_and(|g| g.supports(v) && g.config_ok(v, cfg))
    }

    /// `y = x · wᵀ` on the GPU holding both, with an explicit variant (static constants).
    pub fn gpu_matmul_variant(x: &Tensor, w: &Tensor, v: &MatmulVariant) -> Result<Tensor> {
        let dev = x.device();
        let g = gpu(&dev)?;
        let c = MatmulChoice {
            variant: *v,
            matvec: g.default_matvec_config(v),
        };
        gpu_matmul_with(x, w, &c)
    }

    /// Median seconds of `reps` timed runs of `y = x · wᵀ` with choice `c` (GPU timestamps when
    /// the device has them).
    pub fn gpu_time_matmul(x: &Tensor, w: &Tensor, c: &MatmulChoice, reps: usize) -> Result<f64> {
        let (m, n, k) = operands(x, w)?;
        gpu(&x.device())?.time_matmul(x, w, m, n, k, c, reps)
    }

    /// `y = x · wᵀ` on the GPU holding both, with an explicit choice.
    pub fn gpu_matmul_with(x: &Tensor, w: &Tensor, c: &MatmulChoice) -> Result<Tensor> {
        let (m, n, k) = operands(x, w)?;
        gpu(&x.device())?.matmul_with(x, w, m, n, k, c, None)
    }

    fn operands(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize)> {
        if x.device() != w.device() {
            return Err(Error::DeviceMismatch(
                x.device().to_string(),
                w.device().to_string(),
            ));
        }
        let (&[m, k], &[n, kw]) = (x.shape(), w.shape()) else {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                detail: format!("x {:?}, w {:?}", x.shape(), w.shape()),
            });
        };
        if k != kw {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                detail: format!("x is [{m}, {k}] but w is [{n}, {kw}]"),
            });
        }
        Ok((m, n, k))
    }

    /// Id of the device buffer behind a GPU tensor (`None` for host tensors).
    pub fn gpu_buffer_id(t: &Tensor) -> Option<u64> {
        match t.storage() {
            Storage::Gpu(b) => Some(b.id()),
            Storage::Host(_) => None,
        }
    }

    /// Number of storage buffers (row chunks) behind a GPU tensor.
    pub fn gpu_chunk_count(t: &Tensor) -> Option<usize> {
        match t.storage() {
            Storage::Gpu(b) => Some(b.chunks.len()),
            Storage::Host(_) => None,
        }
    }

    /// Uploads raw bytes (any length) to a GPU device and downloads them again, through the
    /// staging pools.
    pub fn gpu_roundtrip_bytes(dev: &Device, bytes: &[u8]) -> Result<Vec<u8>> {
        let b = gpu(dev)?.ctx.upload_rows(bytes, 0)?;
        let back = b.read_bytes()?;
        debug_assert_eq!(b.len(), back.len());
        Ok(back)
    }

    /// Pipelines compiled so far on a GPU device.
    pub fn gpu_pipeline_count(dev: &Device) -> usize {
        dev.gpu().map_or(0, |g| g.pipeline_count())
    }

    /// Opens every GPU adapter afresh with storage bindings capped at `max_binding_bytes`
    /// (like `WATTLE_GPU_MAX_BINDING_BYTES`), to exercise the split path.
    pub fn gpu_devices_with_max_binding(max_binding_bytes: u64) -> Result<Vec<Device>> {
        super::enumerate_with(
            &[GpuApi::Vulkan, GpuApi::Metal, GpuApi::Dx12, GpuApi::Gl],
            Some(max_binding_bytes),
        )
    }
}
