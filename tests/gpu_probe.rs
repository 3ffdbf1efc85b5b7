//! Roofline probes and variant reporting on every GPU adapter found.
//!
//! Fails when no GPU adapter is found unless `WATTLE_ALLOW_NO_GPU=1`.

use wattle::internals::{gpu_matmul_choice, gpu_probe_bandwidth, gpu_probe_fma, gpu_variant_names};
use wattle::{DType, Runtime};

#[test]
fn probes_and_variant_names() {
    let rt = Runtime::new().unwrap();
    let gpus = rt.gpus();
    if gpus.is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!("no GPU adapter found (set WATTLE_ALLOW_NO_GPU=1 to allow)");
    }
    for dev in &gpus {
        let t = std::time::Instant::now();
        let bw = gpu_probe_bandwidth(dev).unwrap();
        let t_bw = t.elapsed();
        let t = std::time::Instant::now();
        let fma = gpu_probe_fma(dev).unwrap();
        let t_fma = t.elapsed();
        let names = gpu_variant_names(dev);
        let chosen = gpu_matmul_choice(dev, 1, DType::F16, DType::F32).unwrap();
        eprintln!(
            "{dev}: read {bw:.1} GB/s ({t_bw:.2?}), fma {fma:.1} GFLOP/s ({t_fma:.2?}); \
             matvec f16 weights runs {}; {} variants",
            chosen.name(),
            names.len()
        );
        assert!(bw.is_finite() && bw > 0.0);
        assert!(fma.is_finite() && fma > 0.0);
        assert!(names.contains(&chosen.name()));
        assert!(names
            .iter()
            .all(|n| n.starts_with("matvec_") || n.starts_with("gemm_")));
    }
    // Not GPUs.
    assert!(gpu_probe_bandwidth(&rt.cpu()).is_err());
    assert!(gpu_variant_names(&rt.cpu()).is_empty());
}
