//! `wattle devices`: what wattle can run on.

use crate::bench::DeviceFilter;
use crate::sysinfo::kind_name;
use serde::Serialize;
use std::fmt::Write as _;
use wattle::{Device, DeviceKind};

/// One device, as listed.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// Position in `rt.devices()`.
    pub index: usize,
    /// `cpu` or `gpu`.
    pub kind: &'static str,
    /// `vulkan`, `metal`, …; `None` for the CPU.
    pub api: Option<String>,
    /// Device name.
    pub name: String,
    /// Driver name and version.
    pub driver: String,
    /// Emulated on the CPU.
    pub software: bool,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroup size along x.
    pub max_compute_workgroup_size_x: u32,
    /// Workgroup memory, bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Subgroup size range, when subgroups exist.
    pub subgroup_size: Option<(u32, u32)>,
    /// Native f16 in shaders.
    pub f16: bool,
    /// Subgroup operations.
    pub subgroups: bool,
    /// Timestamp queries.
    pub timestamp_query: bool,
}

impl Listing {
    fn of(index: usize, d: &Device) -> Listing {
        let i = d.info();
        Listing {
            index,
            kind: if d.is_cpu() { "cpu" } else { "gpu" },
            api: match d.kind() {
                DeviceKind::Cpu => None,
                DeviceKind::Gpu { api } => Some(api.name().to_string()),
            },
            name: i.name.clone(),
            driver: i.driver.clone(),
            software: i.software,
            max_storage_buffer_binding_size: i.limits.max_storage_buffer_binding_size,
            max_buffer_size: i.limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: i.limits.max_storage_buffers_per_shader_stage,
            max_compute_invocations_per_workgroup: i.limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: i.limits.max_compute_workgroup_size_x,
            max_compute_workgroup_storage_size: i.limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: i.limits.max_compute_workgroups_per_dimension,
            subgroup_size: i.subgroup_size,
            f16: i.features.f16,
            subgroups: i.features.subgroups,
            timestamp_query: i.features.timestamp_query,
        }
    }
}

/// Bytes as `256 MiB`, `unlimited` for the CPU's `u64::MAX`.
fn bytes(b: u64) -> String {
    match b {
        u64::MAX => "unlimited".into(),
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} B"),
    }
}

fn count(c: u32) -> String {
    if c == u32::MAX {
        "unlimited".into()
    } else {
        c.to_string()
    }
}

/// Human-readable listing of `devices`.
pub fn text(devices: &[Device]) -> String {
    let mut out = String::new();
    for (i, d) in devices.iter().enumerate() {
        let l = Listing::of(i, d);
        let _ = writeln!(out, "[{i}] {} — {}", kind_name(d), l.name);
        let _ = writeln!(
            out,
            "    kind: {}{}   api: {}   driver: {}",
            l.kind,
            if l.software && !d.is_cpu() {
                " (software)"
            } else {
                ""
            },
            l.api.as_deref().unwrap_or("—"),
            l.driver
        );
        if d.info().limits == wattle::DeviceLimits::UNLIMITED {
            out.push_str("    limits: none (host memory)\n");
        } else {
            let _ = writeln!(
            out,
            "    limits: storage binding {}, buffer {}, {} storage buffers/stage, workgroup {} invocations (x ≤ {}), {} shared, {} groups/dim",
            bytes(l.max_storage_buffer_binding_size),
            bytes(l.max_buffer_size),
            count(l.max_storage_buffers_per_shader_stage),
            count(l.max_compute_invocations_per_workgroup),
            count(l.max_compute_workgroup_size_x),
            if l.max_compute_workgroup_storage_size == u32::MAX {
                "unlimited".into()
            } else {
                bytes(u64::from(l.max_compute_workgroup_storage_size))
            },
            count(l.max_compute_workgroups_per_dimension),
        );
        }
        let _ = writeln!(
            out,
            "    subgroup size: {}   features: f16 {}, subgroups {}, timestamp queries {}",
            l.subgroup_size
                .map(|(a, b)| if a == b {
                    a.to_string()
                } else {
                    format!("{a}–{b}")
                })
                .unwrap_or_else(|| "—".into()),
            yes(l.f16),
            yes(l.subgroups),
            yes(l.timestamp_query)
        );
    }
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Runs `wattle devices`.
pub fn run(filter: &DeviceFilter, json: bool) -> Result<(), String> {
    let rt = crate::open_runtime(filter)?;
    let devices: Vec<Device> = rt
        .devices()
        .into_iter()
        .filter(|d| filter.selects(d))
        .collect();
    if json {
        let list: Vec<Listing> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| Listing::of(i, d))
            .collect();
        let s =
            serde_json::to_string_pretty(&list).map_err(|e| format!("cannot encode JSON: {e}"))?;
        println!("{s}");
    } else {
        print!("{}", text(&devices));
        if filter.wants_gpus() && !devices.iter().any(|d| !d.is_cpu()) {
            println!(
                "(no GPU adapter found; on Debian/Ubuntu the mesa-vulkan-drivers package provides lavapipe)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_listed_first() {
        let rt = wattle::Runtime::with_backends("cpu").unwrap();
        let s = text(&rt.devices());
        assert!(s.starts_with("[0] cpu — "), "{s}");
        assert!(s.contains("limits: none (host memory)"));
        assert_eq!(bytes(128 << 20), "128 MiB");
        assert_eq!(bytes(1000), "1000 B");
        assert_eq!(bytes(i32::MAX as u64), "2.0 GiB");
    }
}
