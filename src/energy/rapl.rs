//! RAPL through powercap: `class/powercap/intel-rapl:N[:M]` zones (Intel, and AMD Zen since
//! Linux 5.8) with `name`, `energy_uj` and `max_energy_range_uj`. The counter wraps at
//! `max_energy_range_uj`; the control-type directory `intel-rapl` is skipped.

use super::{cpu_side, sysfs, Meter, MeterImpl, MeterKind, Snap};
use crate::device::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Zone {
    dir: PathBuf,
    label: String,
    sub: bool,
}

impl Zone {
    fn read(&self) -> Result<(u64, u64), String> {
        let e = sysfs::read_u64(&self.dir.join("energy_uj"))?;
        let max = sysfs::read_u64(&self.dir.join("max_energy_range_uj"))?;
        if max == 0 {
            return Err(format!(
                "{} is 0",
                self.dir.join("max_energy_range_uj").display()
            ));
        }
        if e > max {
            return Err(format!(
                "{} reads {e}, above max_energy_range_uj {max}",
                self.dir.join("energy_uj").display()
            ));
        }
        Ok((e, max))
    }
}

impl MeterImpl for Zone {
    fn name(&self) -> String {
        format!("rapl {}", self.label)
    }
    fn kind(&self) -> MeterKind {
        if self.sub {
            MeterKind::RaplSubzone
        } else {
            MeterKind::RaplPackage
        }
    }
    fn available(&self) -> Result<(), String> {
        self.read().map(|_| ())
    }
    fn begin(&self) -> Result<Snap, String> {
        self.read().map(|(e, _)| Snap::Counter(e))
    }
    fn end(&self, snap: &Snap, _seconds: f64, _busy: &[u64]) -> Result<f64, String> {
        let Snap::Counter(start) = *snap else {
            return Err("internal: wrong snapshot".into());
        };
        let (end, max) = self.read()?;
        Ok(counter_delta(start, end, max) as f64 * 1e-6)
    }
}

/// µJ between two readings of a counter that wraps to 0 after `max` (at most one wrap).
pub(crate) fn counter_delta(start: u64, end: u64, max: u64) -> u64 {
    if end >= start {
        end - start
    } else {
        max.saturating_sub(start)
            .saturating_add(end)
            .saturating_add(1)
    }
}

pub(super) fn discover(root: &Path, devices: &[Device]) -> Vec<Meter> {
    let base = root.join("class/powercap");
    let covered = cpu_side(devices);
    let mut out = Vec::new();
    for (name, dir) in sysfs::entries(&base) {
        let Some(rest) = name.strip_prefix("intel-rapl:") else {
            continue; // the control type `intel-rapl`, `intel-rapl-mmio:*` (a copy of the package), others
        };
        let sub = rest.contains(':');
        let zone_name = sysfs::read_str(&dir.join("name")).unwrap_or_else(|_| name.clone());
        let label = if sub {
            let parent = rest.split(':').next().unwrap_or("");
            let pname = sysfs::read_str(&base.join(format!("intel-rapl:{parent}")).join("name"))
                .unwrap_or_else(|_| format!("intel-rapl:{parent}"));
            format!("{pname}/{zone_name}")
        } else {
            zone_name
        };
        out.push(Meter::new(
            Arc::new(Zone { dir, label, sub }),
            covered.clone(),
        ));
    }
    out
}
