//! The decision overhead of `rt.auto` on its hot path (SPEC §9: < 1 µs): a cached shape-bucket
//! lookup, for a matmul and an attention op; a whole `auto.matmul` next to `rt.matmul` on a small
//! decode matmul (the difference is everything `auto` adds: decision and device copies); plus a
//! cold 30-layer plan for scale.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use wattle::energy::Source;
use wattle::sched::{
    fingerprint, DeviceProfile, OpDesc, OpPoint, Policy, Profile, ProfileKind, Transfer,
};
use wattle::{DType, Runtime, Tensor};

fn profile(rt: &Runtime) -> Profile {
    let cpu = rt.cpu();
    let mut ops = Vec::new();
    for (m, s) in [(1usize, 1e-4), (512, 2e-2)] {
        for dt in [DType::Q4_0, DType::F32] {
            ops.push(OpPoint {
                op: OpDesc::matmul(m, 4096, 4096, dt),
                seconds: s,
                joules: s * 10.0,
                source: Source::Measured,
            });
        }
    }
    ops.push(OpPoint {
        op: OpDesc::attention(1, 32, 8, 128, 4096, DType::F16, 0),
        seconds: 1e-4,
        joules: 1e-3,
        source: Source::Measured,
    });
    let host = DeviceProfile {
        id: "cpu".into(),
        name: cpu.name(),
        kind: ProfileKind::Cpu,
        fingerprint: fingerprint(&cpu),
        memory_bytes: 1 << 34,
        idle_watts: 2.0,
        transfer: Transfer {
            bytes_per_s: 0.0,
            latency_s: 0.0,
            joules_per_byte: 0.0,
        },
        ops: ops.clone(),
    };
    let mut gpu = host.clone();
    gpu.id = "gpu0".into();
    gpu.name = "bench gpu".into();
    gpu.kind = ProfileKind::Gpu;
    gpu.fingerprint = "absent".into();
    gpu.transfer = Transfer {
        bytes_per_s: 1e10,
        latency_s: 1e-5,
        joules_per_byte: 1e-10,
    };
    Profile {
        system: serde_json::Value::Null,
        devices: vec![host, gpu],
    }
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::with_backends("cpu").expect("runtime");
    let p = profile(&rt);
    let auto = rt.auto(&p, Policy::MinEnergy).expect("auto");
    let mm = OpDesc::matmul(1, 4096, 4096, DType::Q4_0);
    let at = OpDesc::attention(1, 32, 8, 128, 4000, DType::F16, 0);
    auto.decide(&mm).expect("decide");
    auto.decide(&at).expect("decide");
    let mut g = c.benchmark_group("auto_decision");
    g.bench_function("matmul_hot", |b| {
        b.iter(|| auto.decide(black_box(&mm)).map(|d| d.id()))
    });
    g.bench_function("attention_hot", |b| {
        b.iter(|| auto.decide(black_box(&at)).map(|d| d.id()))
    });
    g.finish();
    // A decode matmul small enough that the wrapper's cost shows: 1×256×256 Q4_0.
    let w = Tensor::from_f32(&vec![0.5; 256 * 256], &[256, 256])
        .and_then(|w| w.quantize(DType::Q4_0))
        .expect("weight");
    let x = Tensor::from_f32(&vec![1.0; 256], &[1, 256]).expect("x");
    auto.matmul(&x, &w).expect("auto matmul");
    let mut g = c.benchmark_group("matmul_1x256x256_q4_0");
    g.bench_function("rt_matmul", |b| {
        b.iter(|| rt.matmul(black_box(&x), black_box(&w)).map(drop))
    });
    g.bench_function("auto_matmul", |b| {
        b.iter(|| auto.matmul(black_box(&x), black_box(&w)).map(drop))
    });
    g.finish();
    let chain: Vec<OpDesc> = (0..30 * 7)
        .map(|i| OpDesc::matmul(1 + (i % 3), 4096, 4096, DType::Q4_0))
        .collect();
    for (name, pol) in [
        ("plan_210_min_energy", Policy::MinEnergy),
        ("plan_210_edp", Policy::EnergyDelay),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| p.plan(black_box(&chain), &pol).map(|x| x.seconds()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
