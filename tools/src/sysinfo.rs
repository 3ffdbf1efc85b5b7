//! What machine and build a benchmark ran on.

use serde::Serialize;
use wattle::{Device, DeviceKind, Runtime};

/// The wattle version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this build was made from (`unknown` outside a git checkout).
pub const GIT_HASH: &str = env!("WATTLE_GIT_HASH");

/// Last-level cache size assumed when sysfs does not say (bytes).
pub const DEFAULT_LLC_BYTES: u64 = 32 << 20;

/// One device as the system info lists it.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterInfo {
    /// `cpu`, `vulkan`, `gl`, …
    pub kind: String,
    /// Device name.
    pub name: String,
    /// Driver (for the CPU: kernel path and threads).
    pub driver: String,
    /// True for devices emulated on the CPU.
    pub software: bool,
    /// GPU matmul shader variants this device can run (empty for the CPU).
    pub matmul_variants: Vec<String>,
}

impl AdapterInfo {
    /// Describes `dev`.
    pub fn of(dev: &Device) -> AdapterInfo {
        let info = dev.info();
        AdapterInfo {
            kind: kind_name(dev),
            name: info.name.clone(),
            driver: info.driver.clone(),
            software: info.software,
            matmul_variants: wattle::internals::gpu_variant_names(dev),
        }
    }
}

/// The machine, OS and build.
#[derive(Clone, Debug, Serialize)]
pub struct SystemInfo {
    /// CPU model name.
    pub cpu: String,
    /// Vendor, family, model and stepping (x86 `/proc/cpuinfo`), which tell CPU generations
    /// apart when the model name does not (a VM may say only `AMD EPYC`).
    pub cpu_id: Option<String>,
    /// The CPU kernel path in use (`avx512`, `avx2`, `neon`, `scalar`).
    pub isa: String,
    /// Every ISA path this CPU supports.
    pub isa_supported: Vec<String>,
    /// Physical cores (from /proc/cpuinfo when it says; else the hardware threads).
    pub cores: usize,
    /// Hardware threads available to the process.
    pub threads: usize,
    /// Threads wattle's CPU kernels use (`WATTLE_THREADS`, default all).
    pub kernel_threads: usize,
    /// Last-level cache in bytes.
    pub llc_bytes: u64,
    /// Whether `llc_bytes` was read from sysfs (else the default).
    pub llc_from_sysfs: bool,
    /// Every device of the runtime, the CPU first.
    pub adapters: Vec<AdapterInfo>,
    /// Kernel name, release and architecture.
    pub os: String,
    /// wattle version.
    pub wattle_version: String,
    /// Git commit of the build.
    pub git_hash: String,
    /// 1-minute load average when the run started (other work skews timings).
    pub load_average: Option<f64>,
    /// Seconds since the Unix epoch when the run started.
    pub timestamp: u64,
}

impl SystemInfo {
    /// Collects everything about this machine and `rt`'s devices.
    pub fn collect(rt: &Runtime) -> SystemInfo {
        let cpu = rt.cpu();
        let threads = wattle_kernels::probe::available_threads();
        let (llc_bytes, llc_from_sysfs) = match llc_bytes() {
            Some(b) => (b, true),
            None => (DEFAULT_LLC_BYTES, false),
        };
        SystemInfo {
            cpu: cpu.name(),
            cpu_id: cpu_id(),
            isa: wattle_kernels::isa::selected()
                .map(|i| i.name().to_string())
                .unwrap_or_else(|e| format!("unavailable ({e})")),
            isa_supported: wattle_kernels::Isa::supported()
                .iter()
                .map(|i| i.name().to_string())
                .collect(),
            cores: physical_cores().unwrap_or(threads),
            threads,
            kernel_threads: wattle_kernels::pool::default_threads(),
            llc_bytes,
            llc_from_sysfs,
            adapters: rt.devices().iter().map(AdapterInfo::of).collect(),
            os: os_name(),
            wattle_version: VERSION.to_string(),
            git_hash: GIT_HASH.to_string(),
            load_average: load_average(),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// `cpu`, or the GPU's API name.
pub fn kind_name(dev: &Device) -> String {
    match dev.kind() {
        DeviceKind::Cpu => "cpu".to_string(),
        DeviceKind::Gpu { api } => api.name().to_string(),
    }
}

/// The last-level (L3) cache size from sysfs.
pub fn llc_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").ok()?;
    parse_cache_size(&s)
}

/// Parses sysfs cache sizes such as `32768K`, `1M` or `512`.
pub fn parse_cache_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&b| b > 0)
}

fn cpu_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |name: &str| {
        s.lines()
            .take_while(|l| !l.trim().is_empty())
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let family = field("cpu family")?;
    let mut id = format!("family {family}");
    if let Some(m) = field("model") {
        id.push_str(&format!(" model {m}"));
    }
    if let Some(st) = field("stepping") {
        id.push_str(&format!(" stepping {st}"));
    }
    Some(match field("vendor_id") {
        Some(v) => format!("{v} {id}"),
        None => id,
    })
}

fn physical_cores() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut ids = std::collections::BTreeSet::new();
    let (mut phys, mut core) = (None::<String>, None::<String>);
    for line in s.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                ids.insert((p, c));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => phys = Some(v.trim().to_string()),
                "core id" => core = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    (!ids.is_empty()).then_some(ids.len())
}

fn os_name() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    match (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    ) {
        (Some(t), Some(r)) => format!("{t} {r} {}", std::env::consts::ARCH),
        _ => std::process::Command::new("uname")
            .arg("-srm")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)),
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("4096"), Some(4096));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("0K"), None);
        assert_eq!(parse_cache_size("lots"), None);
    }
}
