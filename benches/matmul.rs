//! Criterion benches of `rt.matmul` (SPEC §10, STYLE §8).
//!
//! CPU: F32, F16 and BF16 weights of the standard 4096×14336 shape at decode (m = 1, throughput
//! in bytes) and prefill (m = 512, throughput in flops as elements). GPUs: the same shapes on
//! hardware adapters; small, labelled shapes on software ones (lavapipe, llvmpipe). Each
//! iteration synchronizes the device inside the timed region.
//!
//! ```text
//! cargo bench --bench matmul                         # all, a few minutes
//! cargo bench --bench matmul -- cpu/decode           # a filter
//! cargo bench --bench matmul -- --profile-time 10    # flamegraphs (Linux), in
//!                                                    # target/criterion/<bench>/profile/
//! ```
//! `WATTLE_CPU_ISA`, `WATTLE_THREADS` and `WATTLE_BACKENDS` apply as usual.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wattle::{DType, Device, Runtime, Tensor};

/// Weight dtypes benchmarked.
const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// One device's shapes: weight `[n, k]`, decode and prefill batches, and a label for
/// non-standard shapes.
struct Shapes {
    n: usize,
    k: usize,
    decode_m: usize,
    prefill_m: usize,
    label: &'static str,
}

fn shapes_for(dev: &Device) -> Shapes {
    if !dev.is_cpu() && dev.info().software {
        Shapes {
            n: 1024,
            k: 1024,
            decode_m: 1,
            prefill_m: 64,
            label: "small (software GPU)",
        }
    } else {
        Shapes {
            n: 4096,
            k: 14336,
            decode_m: 1,
            prefill_m: 512,
            label: "standard",
        }
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn describe(dev: &Device) -> String {
    let info = dev.info();
    if dev.is_cpu() {
        let isa = wattle_kernels::isa::selected()
            .map(|i| i.name().to_string())
            .unwrap_or_else(|e| e.to_string());
        format!("{dev}: {} (ISA path {isa})", info.driver)
    } else {
        format!(
            "{dev}: driver {}{}; shader variants: {}",
            info.driver,
            if info.software { " (software)" } else { "" },
            wattle::internals::gpu_variant_names(dev).join(", ")
        )
    }
}

/// Times `iters` calls of `rt.matmul(x, w)`, synchronizing each (criterion's `iter_custom`).
fn timed(rt: &Runtime, dev: &Device, x: &Tensor, w: &Tensor, iters: u64) -> Duration {
    let t0 = Instant::now();
    for _ in 0..iters {
        let y = rt.matmul(x, w).expect("matmul");
        dev.synchronize().expect("synchronize");
        black_box(y);
    }
    t0.elapsed()
}

fn bench_device(c: &mut Criterion, rt: &Runtime, dev: &Device) {
    let s = shapes_for(dev);
    let kind = match dev.kind() {
        wattle::DeviceKind::Cpu => "cpu".to_string(),
        wattle::DeviceKind::Gpu { api } => api.name().to_string(),
    };
    eprintln!("wattle bench: {} — {} shapes", describe(dev), s.label);
    let base = values(s.n * s.k, 7);
    for (phase, m) in [("decode", s.decode_m), ("prefill", s.prefill_m)] {
        let mut group = c.benchmark_group(format!("matmul/{kind}/{phase}"));
        if phase == "prefill" {
            // Long iterations: the same count per sample keeps the total time bounded.
            group.sampling_mode(SamplingMode::Flat);
            group.measurement_time(Duration::from_secs(5));
        } else {
            group.measurement_time(Duration::from_secs(3));
        }
        let x = Tensor::from_f32(&values(m * s.k, 11), &[m, s.k])
            .and_then(|x| x.to(dev))
            .expect("activations");
        for dtype in DTYPES {
            let w = match Tensor::from_f32(&base, &[s.n, s.k])
                .and_then(|w| w.quantize(dtype))
                .and_then(|w| w.to(dev))
            {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("wattle bench: {kind} {dtype}: skipped ({e})");
                    continue;
                }
            };
            if let Err(e) = rt.matmul(&x, &w) {
                eprintln!("wattle bench: {kind} {dtype} {phase}: skipped ({e})");
                continue;
            }
            let weight_bytes = w.storage_bytes() as u64;
            let flops = 2 * (m * s.n * s.k) as u64;
            group.throughput(if phase == "decode" {
                Throughput::Bytes(weight_bytes + 4 * (m * s.k + m * s.n) as u64)
            } else {
                Throughput::Elements(flops)
            });
            let id = BenchmarkId::new(dtype.to_string(), format!("{m}x{}x{}", s.n, s.k));
            group.bench_function(id, |b| b.iter_custom(|iters| timed(rt, dev, &x, &w, iters)));
        }
        group.finish();
    }
}

fn matmul(c: &mut Criterion) {
    let rt = match Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wattle bench: cannot start wattle: {e}");
            return;
        }
    };
    if rt.gpus().is_empty() {
        eprintln!("wattle bench: no GPU adapter found; CPU only");
    }
    for dev in rt.devices() {
        bench_device(c, &rt, &dev);
    }
}

fn config() -> Criterion {
    let c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1));
    #[cfg(target_os = "linux")]
    let c = c.with_profiler(pprof::criterion::PProfProfiler::new(
        1000,
        pprof::criterion::Output::Flamegraph(None),
    ));
    c
}

criterion_group! {
    name = benches;
    config = config();
    targets = matmul
}
criterion_main!(benches);
