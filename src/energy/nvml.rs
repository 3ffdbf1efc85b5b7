//! NVML (cargo feature `nvml`). This build carries a stub: with the feature on, every NVIDIA
//! GPU gets an NVML meter that reports itself unavailable (no NVML binding is linked yet), so its
//! figures fall back to a Modelled meter; without the feature there is no NVML meter at all.

use super::{Meter, MeterImpl, MeterKind, Snap};
use crate::device::Device;

#[cfg_attr(not(feature = "nvml"), allow(dead_code))]
struct Nvml {
    gpu: String,
}

impl MeterImpl for Nvml {
    fn name(&self) -> String {
        format!("nvml {}", self.gpu)
    }
    fn kind(&self) -> MeterKind {
        MeterKind::Nvml
    }
    fn available(&self) -> Result<(), String> {
        Err(
            "NVML support is a stub in this build (no NVML binding linked): figures are modelled"
                .into(),
        )
    }
    fn begin(&self) -> Result<Snap, String> {
        Err(self.available().err().unwrap_or_default())
    }
    fn end(&self, _: &Snap, _: f64, _: &[u64]) -> Result<f64, String> {
        Err(self.available().err().unwrap_or_default())
    }
}

pub(super) fn discover(devices: &[Device]) -> Vec<Meter> {
    if !cfg!(feature = "nvml") {
        return Vec::new();
    }
    devices
        .iter()
        .filter(|d| !d.is_cpu() && d.name().to_ascii_lowercase().contains("nvidia"))
        .map(|d| Meter::new(std::sync::Arc::new(Nvml { gpu: d.name() }), vec![d.clone()]))
        .collect()
}
