//! Fingerprints: a profile is trusted only on the device, driver, wattle version and kernel
//! sources it was measured with.

use crate::device::Device;

/// Hash of the kernel sources (CPU kernels and WGSL shaders) this build was compiled from.
pub const KERNEL_SOURCES_HASH: &str = env!("WATTLE_KERNEL_SOURCES_HASH");

/// FNV-1a over `parts`, separated.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes().iter().chain(&[0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The fingerprint of `device`: a hash of its name, driver, the wattle version and the kernel
/// sources. A profile entry with another fingerprint is stale.
pub fn fingerprint(device: &Device) -> String {
    let info = device.info();
    format!(
        "{:016x}",
        fnv(&[
            &info.name,
            &info.driver,
            env!("CARGO_PKG_VERSION"),
            KERNEL_SOURCES_HASH,
        ])
    )
}

/// The fingerprint of a set of devices (the profile's file name).
pub fn machine_fingerprint(devices: &[Device]) -> String {
    let fps: Vec<String> = devices.iter().map(fingerprint).collect();
    let refs: Vec<&str> = fps.iter().map(String::as_str).collect();
    format!("{:016x}", fnv(&refs))
}
