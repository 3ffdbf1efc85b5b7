//! Hashes the kernel sources (CPU kernels in `kernels/src`, WGSL in `shaders/`) into
//! `WATTLE_KERNEL_SOURCES_HASH`, part of a calibrated profile's fingerprint (SPEC §9): a profile
//! made with other kernels is stale.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    for d in ["kernels/src", "shaders"] {
        println!("cargo:rerun-if-changed={d}");
        walk(&root.join(d), &mut files);
    }
    files.sort();
    // FNV-1a, 64 bits, over each file's relative path and bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in &files {
        eat(f
            .strip_prefix(&root)
            .unwrap_or(f)
            .to_string_lossy()
            .as_bytes());
        eat(&[0]);
        eat(&std::fs::read(f).unwrap_or_default());
        eat(&[0]);
    }
    println!("cargo:rustc-env=WATTLE_KERNEL_SOURCES_HASH={h:016x}");
}
