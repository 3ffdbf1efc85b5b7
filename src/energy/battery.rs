//! Batteries (`class/power_supply/*` whose `type` is Battery): `power_now` µW, else
//! `current_now` µA × `voltage_now` µV, sampled every 10 ms; valid only while `status` is
//! Discharging (the battery then sees the whole system).

use super::sampler::Integrator;
use super::{sysfs, Meter, MeterImpl, MeterKind, Snap};
use crate::device::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Battery {
    dir: PathBuf,
    label: String,
    integ: Arc<Integrator>,
}

/// Watts now, and `Some(reason)` when the battery is not discharging.
fn read(dir: &Path) -> Result<(f64, Option<String>), String> {
    let status = sysfs::read_str(&dir.join("status"))?;
    let watts = match sysfs::read_i64(&dir.join("power_now")) {
        Ok(uw) => uw.unsigned_abs() as f64 * 1e-6,
        Err(e_power) => {
            let ua = sysfs::read_i64(&dir.join("current_now"))
                .map_err(|e| format!("no power_now ({e_power}) and no current_now ({e})"))?;
            let uv = sysfs::read_i64(&dir.join("voltage_now"))?;
            ua.unsigned_abs() as f64 * 1e-6 * (uv.unsigned_abs() as f64 * 1e-6)
        }
    };
    let bad = (status != "Discharging").then(|| {
        format!(
            "status is {status}: a battery measures the system only while discharging (unplug the charger)"
        )
    });
    Ok((watts, bad))
}

impl MeterImpl for Battery {
    fn name(&self) -> String {
        format!("battery {}", self.label)
    }
    fn kind(&self) -> MeterKind {
        MeterKind::Battery
    }
    fn available(&self) -> Result<(), String> {
        match read(&self.dir)? {
            (_, None) => Ok(()),
            (_, Some(why)) => Err(why),
        }
    }
    fn begin(&self) -> Result<Snap, String> {
        Ok(Snap::Integrated(self.integ.begin()))
    }
    fn end(&self, snap: &Snap, _seconds: f64, _busy: &[u64]) -> Result<f64, String> {
        let Snap::Integrated(mark) = *snap else {
            return Err("internal: wrong snapshot".into());
        };
        self.integ.end(mark)
    }
}

pub(super) fn discover(root: &Path, devices: &[Device]) -> Vec<Meter> {
    let mut out = Vec::new();
    for (name, dir) in sysfs::entries(&root.join("class/power_supply")) {
        if sysfs::read_str(&dir.join("type")).as_deref() != Ok("Battery") {
            continue;
        }
        let d = dir.clone();
        let integ = Integrator::new(Box::new(move || read(&d)));
        out.push(Meter::new(
            Arc::new(Battery {
                dir,
                label: name,
                integ,
            }),
            devices.to_vec(),
        ));
    }
    out
}
