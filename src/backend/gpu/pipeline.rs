//! The per-device pipeline cache.

use super::shader;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What identifies a compiled pipeline: kernel family, entry point, variant (its readable name
/// encodes every define) and override constants (sorted by name).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct PipelineKey {
    /// Shader family (`shaders/<family>.wgsl`).
    pub family: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// Readable variant name, e.g. `matvec_f16_f32_sg`.
    pub variant: String,
    /// Defines that select the variant's text.
    pub defines: Vec<&'static str>,
    /// Override constants, sorted by name.
    pub constants: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    /// A key with its constants sorted.
    pub fn new(
        family: &'static str,
        entry: &'static str,
        variant: String,
        defines: Vec<&'static str>,
        mut constants: Vec<(&'static str, u32)>,
    ) -> PipelineKey {
        constants.sort_unstable();
        PipelineKey {
            family,
            entry,
            variant,
            defines,
            constants,
        }
    }

    /// The spliced WGSL source of this key.
    pub fn source(&self) -> Result<String> {
        shader::splice(shader::family_source(self.family)?, &self.defines)
    }
}

/// A compiled compute pipeline and its bind-group layout.
pub(crate) struct Pipeline {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of bind group 0.
    pub layout: wgpu::BindGroupLayout,
}

/// Pipelines of one device, built on first use.
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: RwLock<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl PipelineCache {
    /// The pipeline for `key`, compiling it (outside the lock) on a miss. Compile and validation
    /// failures come back as [`Error::Pipeline`].
    pub fn get(&self, device: &wgpu::Device, key: &PipelineKey) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(p.clone());
        }
        let built = Arc::new(build(device, key)?);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have built it meanwhile: keep the first.
        Ok(map.entry(key.clone()).or_insert(built).clone())
    }

    /// Number of cached pipelines.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn build(device: &wgpu::Device, key: &PipelineKey) -> Result<Pipeline> {
    let source = key.source()?;
    let label = format!("{}:{}", key.variant, key.entry);
    let constants: Vec<(&str, f64)> = key
        .constants
        .iter()
        .map(|&(n, v)| (n, f64::from(v)))
        .collect();
    // Error scopes are per thread: this one sees only what this call provokes.
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: None,
        module: &module,
        entry_point: Some(key.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    if let Some(err) = pollster::block_on(scope.pop()) {
        return Err(Error::Pipeline(format!("{label}: {err}")));
    }
    let layout = pipeline.get_bind_group_layout(0);
    Ok(Pipeline { pipeline, layout })
}
