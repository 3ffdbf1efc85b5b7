//! Energy meters (SPEC §9): RAPL through powercap, hwmon energy and power rails, batteries, NVML
//! (cargo feature `nvml`), and a labelled Modelled meter for every device no meter covers.
//!
//! Every sysfs path is relative to `WATTLE_SYSFS_ROOT` (default `/sys`), so each source is tested
//! on recorded trees. A meter that cannot be read is listed with [`Meter::available`] giving the
//! reason and the fix; it never fails [`Runtime::new`](crate::Runtime::new).
//!
//! ```no_run
//! # fn main() -> Result<(), wattle::Error> {
//! let rt = wattle::Runtime::new()?;
//! for m in rt.meters() {
//!     println!("{} {:?} {:?}", m.name(), m.source(), m.available());
//! }
//! let w = rt.energy_window();
//! // ... work ...
//! let m = w.end()?;
//! println!("{:.3} J in {:.3} s ({:?})", m.joules, m.seconds, m.source);
//! # Ok(()) }
//! ```

mod battery;
mod hwmon;
mod modelled;
mod nvml;
mod rapl;
pub(crate) mod sampler;
pub(crate) mod sysfs;

use crate::device::Device;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use modelled::process_cpu_seconds;
pub use modelled::{modelled_watts, PowerModel};

/// Where a figure comes from. The order is strength: `Modelled < Extrapolated < Measured`, and a
/// figure built from several inputs takes the weakest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Source {
    /// Estimated from a power model (no meter covers the device).
    Modelled,
    /// Scaled from the nearest measured point beyond the measured range.
    Extrapolated,
    /// Read from a meter (or interpolated between measured points).
    Measured,
}

impl Source {
    /// Lower-case name as profiles write it.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Modelled => "modelled",
            Source::Extrapolated => "extrapolated",
            Source::Measured => "measured",
        }
    }

    /// Parses [`Source::name`].
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "modelled" | "modeled" => Some(Source::Modelled),
            "extrapolated" => Some(Source::Extrapolated),
            "measured" => Some(Source::Measured),
            _ => None,
        }
    }
}

/// What kind of source a meter reads; decides which meters a [`Measurement`] sums.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MeterKind {
    /// A top-level RAPL package zone (`intel-rapl:N`): the CPU and the software adapters on it.
    RaplPackage,
    /// A RAPL subzone (`intel-rapl:N:M`: core, uncore, dram): listed, never summed (inside its package).
    RaplSubzone,
    /// An hwmon rail of a GPU driver (amdgpu, i915, xe, nouveau).
    GpuRail,
    /// Any other hwmon rail (SoC, board): listed, not summed.
    OtherRail,
    /// A battery: the whole system, valid only while discharging.
    Battery,
    /// An NVIDIA GPU through NVML.
    Nvml,
    /// A power model for a device no meter covers.
    Modelled,
}

/// A meter reading taken at a window's start.
#[derive(Clone, Debug)]
pub(crate) enum Snap {
    /// A counter in µJ.
    Counter(u64),
    /// A sampled power source.
    Integrated(sampler::Mark),
    /// A modelled meter: the process CPU seconds at the start (when readable).
    Model(Option<f64>),
}

/// One implementation per source.
pub(crate) trait MeterImpl: Send + Sync {
    fn name(&self) -> String;
    fn kind(&self) -> MeterKind;
    fn source(&self) -> Source {
        Source::Measured
    }
    fn available(&self) -> std::result::Result<(), String>;
    fn note(&self) -> Option<String> {
        None
    }
    fn begin(&self) -> std::result::Result<Snap, String>;
    /// Joules since `snap`; `seconds` is the window's length and `busy` the devices marked busy.
    fn end(&self, snap: &Snap, seconds: f64, busy: &[u64]) -> std::result::Result<f64, String>;
}

/// An energy meter: one RAPL zone, hwmon rail, battery, NVML device or power model.
#[derive(Clone)]
pub struct Meter {
    inner: Arc<dyn MeterImpl>,
    devices: Vec<Device>,
}

impl Meter {
    pub(crate) fn new(inner: Arc<dyn MeterImpl>, devices: Vec<Device>) -> Meter {
        Meter { inner, devices }
    }

    /// Its name: the zone's `name` (`rapl package-0`), the hwmon `name` (`hwmon amdgpu power1`), the
    /// supply's directory (`battery BAT0`), or `modelled <device>`.
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// Measured, or Modelled for a power model.
    pub fn source(&self) -> Source {
        self.inner.source()
    }

    /// The source kind (decides what a [`Measurement`] sums).
    pub fn kind(&self) -> MeterKind {
        self.inner.kind()
    }

    /// The devices whose energy it sees.
    pub fn devices(&self) -> Vec<Device> {
        self.devices.clone()
    }

    /// `Ok(())` when readable now, else the reason and the fix.
    pub fn available(&self) -> std::result::Result<(), String> {
        self.inner.available()
    }

    /// For a Modelled meter: why no measured meter covers its device, and the model used.
    pub fn note(&self) -> Option<String> {
        self.inner.note()
    }
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .field("source", &self.source())
            .finish()
    }
}

/// Every meter under the sysfs tree `root` for `devices` (the CPU first), plus a Modelled meter
/// for each device that no available measured meter covers. Never fails: unreadable meters are
/// listed with the reason in [`Meter::available`].
pub fn discover(root: &Path, devices: &[Device]) -> Vec<Meter> {
    let mut meters = Vec::new();
    meters.extend(rapl::discover(root, devices));
    meters.extend(hwmon::discover(root, devices));
    meters.extend(battery::discover(root, devices));
    meters.extend(nvml::discover(devices));
    let covered = |d: &Device| {
        meters.iter().any(|m: &Meter| {
            matches!(
                m.kind(),
                MeterKind::RaplPackage | MeterKind::GpuRail | MeterKind::Nvml
            ) && m.available().is_ok()
                && m.devices.contains(d)
        })
    };
    let uncovered: Vec<Device> = devices.iter().filter(|d| !covered(d)).cloned().collect();
    let why = missing_reason(&meters, root);
    meters.extend(modelled::for_devices(&uncovered, &why));
    meters
}

/// Why no measured meter covers a device: the sources found and why each is unusable.
fn missing_reason(meters: &[Meter], root: &Path) -> String {
    let unusable: Vec<String> = meters
        .iter()
        .filter_map(|m| m.available().err().map(|e| format!("{}: {e}", m.name())))
        .collect();
    let mut parts = Vec::new();
    if !meters
        .iter()
        .any(|m| matches!(m.kind(), MeterKind::RaplPackage | MeterKind::RaplSubzone))
    {
        parts.push(format!(
            "no RAPL zone under {} (no powercap driver: a VM, or not Intel/AMD Zen on Linux ≥ 5.8)",
            root.join("class/powercap").display()
        ));
    }
    if !meters
        .iter()
        .any(|m| matches!(m.kind(), MeterKind::GpuRail | MeterKind::OtherRail))
    {
        parts.push("no hwmon energy or power rail".into());
    }
    if !meters.iter().any(|m| m.kind() == MeterKind::Battery) {
        parts.push("no battery".into());
    }
    if !cfg!(feature = "nvml") {
        parts.push("NVML not built in (cargo feature `nvml`)".into());
    }
    parts.extend(unusable);
    parts.join("; ")
}

/// A snapshot of every available meter and a monotonic clock; [`EnergyWindow::end`] gives the
/// [`Measurement`] of the work in between.
pub struct EnergyWindow {
    start: Instant,
    meters: Vec<(Meter, std::result::Result<Snap, String>)>,
    busy: Vec<u64>,
}

impl EnergyWindow {
    /// Opens a window over `meters` (unavailable ones are skipped and reported at the end).
    pub fn start(meters: Vec<Meter>) -> EnergyWindow {
        let meters = meters
            .into_iter()
            .map(|m| {
                let s = m.available().and_then(|()| m.inner.begin());
                (m, s)
            })
            .collect();
        EnergyWindow {
            start: Instant::now(),
            meters,
            busy: Vec::new(),
        }
    }

    /// Says that `device` was busy in this window: Modelled meters of GPUs charge their full
    /// power for it (idle power otherwise). Modelled CPU meters use the process's CPU time.
    pub fn busy(&mut self, device: &Device) {
        if !self.busy.contains(&device.id()) {
            self.busy.push(device.id());
        }
    }

    /// Seconds since the window opened.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Closes the window. Meters that failed (unreadable, garbage, a battery whose status
    /// changed) are dropped from the sums and named in [`Measurement::dropped`].
    pub fn end(self) -> Result<Measurement> {
        let seconds = self.start.elapsed().as_secs_f64();
        let mut per_meter = Vec::new();
        let mut dropped = Vec::new();
        let mut kinds = Vec::new();
        for (m, snap) in &self.meters {
            let r = match snap {
                Ok(s) => m.inner.end(s, seconds, &self.busy),
                Err(e) => Err(e.clone()),
            };
            match r {
                Ok(j) if j.is_finite() && j >= 0.0 => {
                    per_meter.push((m.name(), j, m.source()));
                    kinds.push(m.kind());
                }
                Ok(j) => dropped.push((m.name(), format!("read {j} J"))),
                Err(e) => dropped.push((m.name(), e)),
            }
        }
        let battery = kinds.iter().position(|k| *k == MeterKind::Battery);
        let summed: Vec<usize> = match battery {
            Some(b) => vec![b],
            None => (0..kinds.len())
                .filter(|&i| {
                    matches!(
                        kinds[i],
                        MeterKind::RaplPackage
                            | MeterKind::GpuRail
                            | MeterKind::Nvml
                            | MeterKind::Modelled
                    )
                })
                .collect(),
        };
        if summed.is_empty() {
            return Err(Error::NotAvailable(format!(
                "no meter could be read in this window: {}",
                dropped
                    .iter()
                    .map(|(n, e)| format!("{n}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let joules = summed.iter().map(|&i| per_meter[i].1).sum();
        let source = summed
            .iter()
            .map(|&i| per_meter[i].2)
            .min()
            .map(|s| {
                if s == Source::Measured {
                    s
                } else {
                    Source::Modelled
                }
            })
            .unwrap_or(Source::Modelled);
        let summed_names = summed.iter().map(|&i| per_meter[i].0.clone()).collect();
        Ok(Measurement {
            seconds,
            per_meter,
            joules,
            source,
            summed: summed_names,
            dropped,
        })
    }
}

/// The energy of one window.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Every meter read: (name, joules, source).
    pub per_meter: Vec<(String, f64, Source)>,
    /// The sum over meters that do not overlap: the battery when it reads, else the top-level
    /// RAPL packages, GPU rails, NVML devices and Modelled meters (never subzones).
    pub joules: f64,
    /// Measured when every summed meter is measured; a sum mixing in modelled joules is Modelled.
    pub source: Source,
    /// The names of the meters in `joules`.
    pub summed: Vec<String>,
    /// Meters dropped from this window and why.
    pub dropped: Vec<(String, String)>,
}

impl Measurement {
    /// Average watts (`joules / seconds`).
    pub fn watts(&self) -> f64 {
        if self.seconds > 0.0 {
            self.joules / self.seconds
        } else {
            0.0
        }
    }
}

/// Software adapters run on the CPU: a CPU meter covers them.
pub(crate) fn cpu_side(devices: &[Device]) -> Vec<Device> {
    devices
        .iter()
        .filter(|d| d.is_cpu() || d.info().software)
        .cloned()
        .collect()
}
