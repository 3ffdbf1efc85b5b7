//! hwmon (`class/hwmon/hwmon*/`): `energy*_input` in µJ, else `power*_average` or `power*_input`
//! in µW sampled every 10 ms and integrated — amdgpu, i915/xe, nouveau, SoC rails.

use super::sampler::Integrator;
use super::{sysfs, Meter, MeterImpl, MeterKind, Snap};
use crate::device::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

enum Rail {
    Energy(PathBuf),
    Power(PathBuf, Arc<Integrator>),
}

struct Hwmon {
    label: String,
    rail: Rail,
    gpu: bool,
}

fn read_power(path: &Path) -> Result<(f64, Option<String>), String> {
    sysfs::read_u64(path).map(|uw| (uw as f64 * 1e-6, None))
}

impl MeterImpl for Hwmon {
    fn name(&self) -> String {
        format!("hwmon {}", self.label)
    }
    fn kind(&self) -> MeterKind {
        if self.gpu {
            MeterKind::GpuRail
        } else {
            MeterKind::OtherRail
        }
    }
    fn available(&self) -> Result<(), String> {
        match &self.rail {
            Rail::Energy(p) => sysfs::read_u64(p).map(|_| ()),
            Rail::Power(p, _) => read_power(p).map(|_| ()),
        }
    }
    fn begin(&self) -> Result<Snap, String> {
        match &self.rail {
            Rail::Energy(p) => sysfs::read_u64(p).map(Snap::Counter),
            Rail::Power(_, i) => Ok(Snap::Integrated(i.begin())),
        }
    }
    fn end(&self, snap: &Snap, _seconds: f64, _busy: &[u64]) -> Result<f64, String> {
        match (&self.rail, snap) {
            (Rail::Energy(p), Snap::Counter(start)) => {
                let end = sysfs::read_u64(p)?;
                if end < *start {
                    return Err(format!(
                        "{} went back from {start} to {end} (reset)",
                        p.display()
                    ));
                }
                Ok((end - start) as f64 * 1e-6)
            }
            (Rail::Power(_, i), Snap::Integrated(m)) => i.end(*m),
            _ => Err("internal: wrong snapshot".into()),
        }
    }
}

/// The non-software GPUs a GPU driver's hwmon rail covers.
fn gpu_devices(driver: &str, devices: &[Device]) -> Option<Vec<Device>> {
    let vendor: &[&str] = match driver {
        "amdgpu" | "radeon" => &["amd", "radeon"],
        "i915" | "xe" => &["intel"],
        "nouveau" => &["nvidia", "geforce", "quadro", "tesla"],
        _ => return None,
    };
    Some(
        devices
            .iter()
            .filter(|d| !d.is_cpu() && !d.info().software)
            .filter(|d| {
                let n = d.name().to_ascii_lowercase();
                vendor.iter().any(|v| n.contains(v))
            })
            .cloned()
            .collect(),
    )
}

/// Numbered input files `prefix<N>suffix` of a hwmon directory, by N.
fn numbered(files: &[(String, PathBuf)], prefix: &str, suffix: &str) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = files
        .iter()
        .filter_map(|(n, p)| {
            let mid = n.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some((mid.parse().ok()?, p.clone()))
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

pub(super) fn discover(root: &Path, devices: &[Device]) -> Vec<Meter> {
    let mut out = Vec::new();
    for (dname, dir) in sysfs::entries(&root.join("class/hwmon")) {
        if !dname.starts_with("hwmon") {
            continue;
        }
        let files = sysfs::entries(&dir);
        let driver = sysfs::read_str(&dir.join("name")).unwrap_or_else(|_| dname.clone());
        let covers = gpu_devices(&driver, devices);
        let label = |kind: &str, n: u32| {
            let l = sysfs::read_str(&dir.join(format!("{kind}{n}_label")))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            format!("{driver} {kind}{n}{l}")
        };
        let energy = numbered(&files, "energy", "_input");
        let rails: Vec<(String, Rail)> = if !energy.is_empty() {
            energy
                .into_iter()
                .map(|(n, p)| (label("energy", n), Rail::Energy(p)))
                .collect()
        } else {
            let mut power = numbered(&files, "power", "_average");
            for (n, p) in numbered(&files, "power", "_input") {
                if !power.iter().any(|(m, _)| *m == n) {
                    power.push((n, p));
                }
            }
            power.sort_by_key(|x| x.0);
            power
                .into_iter()
                .map(|(n, p)| {
                    let q = p.clone();
                    let integ = Integrator::new(Box::new(move || read_power(&q)));
                    (label("power", n), Rail::Power(p, integ))
                })
                .collect()
        };
        // A GPU driver's first rail is the whole GPU; further rails are parts of it.
        for (i, (label, rail)) in rails.into_iter().enumerate() {
            let gpu = covers.is_some() && i == 0;
            out.push(Meter::new(
                Arc::new(Hwmon { label, rail, gpu }),
                if gpu {
                    covers.clone().unwrap_or_default()
                } else {
                    Vec::new()
                },
            ));
        }
    }
    out
}
