//! The Modelled meter: `idle + utilisation × (max − idle)` watts for a device no meter covers,
//! from a table of known parts or a per-kind default. Its figures are labelled Modelled.

use super::{cpu_side, Meter, MeterImpl, MeterKind, Snap, Source};
use crate::device::{Device, DeviceKind};
use std::sync::Arc;

/// Idle and full-load watts of a device.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct PowerModel {
    /// Watts when idle.
    pub idle_watts: f64,
    /// Watts at full load.
    pub max_watts: f64,
    /// Where the figures come from: a part in the table, or the per-kind default.
    pub basis: &'static str,
}

/// Known parts: (lower-case name fragment, is a CPU, idle W, max W). Package power of a few
/// common parts from vendor TDPs and published idle measurements; coarse by nature.
const KNOWN: &[(&str, bool, f64, f64, &str)] = &[
    ("apple m1", true, 0.5, 20.0, "Apple M1 (table)"),
    ("apple m2", true, 0.5, 22.0, "Apple M2 (table)"),
    ("apple m3", true, 0.5, 22.0, "Apple M3 (table)"),
    ("snapdragon", true, 0.3, 8.0, "Snapdragon (table)"),
    ("ryzen 7 7840", true, 3.0, 54.0, "Ryzen 7 7840 (table)"),
    (
        "core(tm) i7-1",
        true,
        2.0,
        28.0,
        "Intel Core i7 mobile (table)",
    ),
    ("geforce rtx 4090", false, 20.0, 450.0, "RTX 4090 (table)"),
    ("geforce rtx 4070", false, 12.0, 200.0, "RTX 4070 (table)"),
    ("geforce rtx 3060", false, 12.0, 170.0, "RTX 3060 (table)"),
    ("radeon rx 7900", false, 15.0, 355.0, "RX 7900 (table)"),
    ("adreno", false, 0.2, 5.0, "Adreno (table)"),
    ("mali", false, 0.2, 4.0, "Mali (table)"),
];

/// Cores available to this process.
fn cores() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64
}

/// The power model of `device`: a known part, else the per-kind default (CPU: 1 W + 0.5 W a
/// core idle, + 6 W a core at full load; an integrated GPU 1–15 W; a discrete GPU 10–150 W; a
/// software GPU draws nothing of its own: it runs on the CPU).
pub fn modelled_watts(device: &Device) -> PowerModel {
    let name = device.name().to_ascii_lowercase();
    let is_cpu = device.is_cpu();
    if let Some(&(_, _, idle, max, basis)) = KNOWN
        .iter()
        .find(|(frag, cpu, ..)| *cpu == is_cpu && name.contains(frag))
    {
        return PowerModel {
            idle_watts: idle,
            max_watts: max,
            basis,
        };
    }
    match device.kind() {
        DeviceKind::Cpu => {
            let c = cores();
            let idle = 1.0 + 0.5 * c;
            PowerModel {
                idle_watts: idle,
                max_watts: (idle + 6.0 * c).min(250.0),
                basis: "CPU default (1 W + 0.5 W/core idle, +6 W/core busy)",
            }
        }
        DeviceKind::Gpu { .. } if device.info().software => PowerModel {
            idle_watts: 0.0,
            max_watts: 0.0,
            basis: "software GPU: runs on the CPU (its energy is the CPU's)",
        },
        DeviceKind::Gpu { .. } => {
            let integrated = ["intel", "apple", "adreno", "mali", "powervr", "vega 8"]
                .iter()
                .any(|f| name.contains(f));
            if integrated {
                PowerModel {
                    idle_watts: 1.0,
                    max_watts: 15.0,
                    basis: "integrated GPU default (1–15 W)",
                }
            } else {
                PowerModel {
                    idle_watts: 10.0,
                    max_watts: 150.0,
                    basis: "discrete GPU default (10–150 W)",
                }
            }
        }
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some((utime + stime) / 100.0)
}

struct Modelled {
    label: String,
    /// The device whose id marks it busy (GPUs).
    id: u64,
    cpu: bool,
    model: PowerModel,
    why: String,
}

impl MeterImpl for Modelled {
    fn name(&self) -> String {
        format!("modelled {}", self.label)
    }
    fn kind(&self) -> MeterKind {
        MeterKind::Modelled
    }
    fn source(&self) -> Source {
        Source::Modelled
    }
    fn available(&self) -> Result<(), String> {
        Ok(())
    }
    fn note(&self) -> Option<String> {
        Some(format!(
            "no measured meter covers it ({}); modelled as {:.1} W idle to {:.1} W busy: {}{}",
            self.why,
            self.model.idle_watts,
            self.model.max_watts,
            self.model.basis,
            if self.cpu {
                ", utilisation from this process's CPU time"
            } else {
                ", full power while marked busy"
            }
        ))
    }
    fn begin(&self) -> Result<Snap, String> {
        Ok(Snap::Model(if self.cpu {
            process_cpu_seconds()
        } else {
            None
        }))
    }
    fn end(&self, snap: &Snap, seconds: f64, busy: &[u64]) -> Result<f64, String> {
        let util = match (snap, self.cpu) {
            (Snap::Model(Some(c0)), true) => match process_cpu_seconds() {
                Some(c1) if seconds > 0.0 => ((c1 - c0) / (seconds * cores())).clamp(0.0, 1.0),
                _ => 1.0,
            },
            (_, true) => 1.0,
            (_, false) => {
                if busy.contains(&self.id) {
                    1.0
                } else {
                    0.0
                }
            }
        };
        let m = self.model;
        Ok((m.idle_watts + util * (m.max_watts - m.idle_watts)) * seconds)
    }
}

/// One Modelled meter for the uncovered CPU side (the CPU and the software adapters on it) and
/// one for each uncovered hardware GPU.
pub(super) fn for_devices(uncovered: &[Device], why: &str) -> Vec<Meter> {
    let mut out = Vec::new();
    let cpu_devs = cpu_side(uncovered);
    if let Some(cpu) = cpu_devs.iter().find(|d| d.is_cpu()) {
        let model = modelled_watts(cpu);
        let soft: Vec<String> = cpu_devs
            .iter()
            .filter(|d| !d.is_cpu())
            .map(|d| d.name())
            .collect();
        let label = if soft.is_empty() {
            format!("cpu ({})", cpu.name())
        } else {
            format!("cpu ({}) + software GPUs on it", cpu.name())
        };
        out.push(Meter::new(
            Arc::new(Modelled {
                label,
                id: cpu.id(),
                cpu: true,
                model,
                why: why.to_string(),
            }),
            cpu_devs.clone(),
        ));
    }
    for d in uncovered {
        if cpu_devs.contains(d) && cpu_devs.iter().any(|c| c.is_cpu()) {
            continue;
        }
        out.push(Meter::new(
            Arc::new(Modelled {
                label: d.name(),
                id: d.id(),
                cpu: d.is_cpu() || d.info().software,
                model: modelled_watts(d),
                why: why.to_string(),
            }),
            vec![d.clone()],
        ));
    }
    out
}
