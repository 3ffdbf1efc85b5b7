//! Profiles (hand-written, bad ones), predictions (interpolation/extrapolation numbers), plans
//! against a brute-force search for every policy, and `rt.auto`.

mod common;

use std::time::Duration;
use wattle::energy::Source;
use wattle::sched::{
    fingerprint, kv_format_name, CalibrateOptions, DeviceProfile, OpDesc, OpPoint, Policy, Profile,
    ProfileKind, Transfer,
};
use wattle::{DType, Error, KvCache, KvCacheConfig, KvFormat, Runtime, Tensor};

const GOOD: &str = r#"{
  "wattle_profile": 1,
  "system": {"note": "hand-written"},
  "devices": [
    {"id": "cpu", "name": "test cpu", "kind": "cpu", "fingerprint": "x", "memory_bytes": 1000000000,
     "idle_watts": 2.0, "transfer": {"bytes_per_s": 0, "latency_s": 0, "joules_per_byte": 0},
     "ops": [
       {"op": "matmul", "m": 1, "n": 4096, "k": 4096, "dtype": "q4_0", "seconds": 0.001, "joules": 0.01, "source": "measured"},
       {"op": "matmul", "m": 16, "n": 4096, "k": 4096, "dtype": "q4_0", "seconds": 0.004, "joules": 0.04, "source": "measured"},
       {"op": "attention", "tq": 1, "hq": 32, "hkv": 8, "d": 128, "ctx": 4096, "kv_dtype": "f16", "window": 0, "seconds": 0.002, "joules": 0.02, "source": "modelled"},
       {"op": "linear_attention", "kind": "retention", "t": 64, "h": 16, "dk": 64, "dv": 64, "seconds": 0.001, "joules": 0.01, "source": "measured"},
       {"op": "kv_attend", "format": "q8_0", "ctx": 4096, "hq": 32, "hkv": 8, "d": 128, "seconds": 0.001, "joules": 0.01, "source": "measured"}
     ]},
    {"id": "gpu0", "name": "test gpu", "kind": "gpu", "fingerprint": "y", "memory_bytes": 4000000000,
     "idle_watts": 5.0, "transfer": {"bytes_per_s": 1e10, "latency_s": 1e-5, "joules_per_byte": 1e-10},
     "ops": [
       {"op": "matmul", "m": 1, "n": 4096, "k": 4096, "dtype": "q4_0", "seconds": 0.0005, "joules": 0.02, "source": "modelled"}
     ]}
  ]
}"#;

fn profile_err(text: &str) -> String {
    match Profile::from_json(text) {
        Err(Error::Profile(m)) => m,
        other => panic!("expected Error::Profile, got {other:?}"),
    }
}

#[test]
fn good_profile_round_trips() {
    let p = Profile::from_json(GOOD).unwrap();
    assert_eq!(p.devices.len(), 2);
    assert_eq!(p.devices[0].kind, ProfileKind::Cpu);
    assert_eq!(p.devices[0].ops.len(), 5);
    let again = Profile::from_json(&p.to_json()).unwrap();
    assert_eq!(p, again);
}

#[test]
fn bad_profiles_name_what_is_wrong() {
    assert!(profile_err("{not json").contains("not valid JSON"));
    assert!(profile_err("[1, 2]").contains("not a JSON object"));
    assert!(profile_err(r#"{"devices": []}"#).contains("wattle_profile"));
    let m = profile_err(&GOOD.replace("\"wattle_profile\": 1", "\"wattle_profile\": 7"));
    assert!(m.contains("unknown version") && m.contains('7'), "{m}");
    let m = profile_err(&GOOD.replace("\"memory_bytes\": 4000000000,", ""));
    assert!(m.contains("memory_bytes") && m.contains("gpu0"), "{m}");
    let m = profile_err(&GOOD.replace("\"m\": 16, ", ""));
    assert!(m.contains("`m`") && m.contains("ops[1]"), "{m}");
    let m = profile_err(&GOOD.replace(
        "\"dtype\": \"q4_0\", \"seconds\": 0.004",
        "\"dtype\": \"q9_9\", \"seconds\": 0.004",
    ));
    assert!(m.contains("q9_9"), "{m}");
    let m = profile_err(&GOOD.replace("\"kind\": \"gpu\"", "\"kind\": \"cpu\""));
    assert!(m.contains("exactly one"), "{m}");
    let m = profile_err(&GOOD.replace("\"seconds\": 0.001, \"joules\": 0.01, \"source\": \"measured\"},\n       {\"op\": \"matmul\", \"m\": 16", "\"seconds\": -1, \"joules\": 0.01, \"source\": \"measured\"},\n       {\"op\": \"matmul\", \"m\": 16"));
    assert!(m.contains("seconds"), "{m}");
    let m = profile_err(&GOOD.replace("\"op\": \"kv_attend\"", "\"op\": \"conv2d\""));
    assert!(m.contains("conv2d"), "{m}");
    let m = profile_err(&GOOD.replace(
        "\"source\": \"modelled\"}\n     ]}\n  ]",
        "\"source\": \"guessed\"}\n     ]}\n  ]",
    ));
    assert!(m.contains("guessed"), "{m}");
    assert!(matches!(
        Profile::load("/nonexistent/p.json"),
        Err(Error::Profile(_))
    ));
}

#[test]
fn interpolation_between_bracketing_points() {
    let p = Profile::from_json(GOOD).unwrap();
    let op = OpDesc::matmul(4, 4096, 4096, DType::Q4_0);
    let pr = p.predict("cpu", &op).unwrap();
    // m = 4 sits a quarter... in log FLOPs half-way between m = 1 and m = 16: the geometric mean,
    // nudged by the bytes coordinate.
    let a = OpDesc::matmul(1, 4096, 4096, DType::Q4_0);
    let b = OpDesc::matmul(16, 4096, 4096, DType::Q4_0);
    let at = |o: &OpDesc| (o.bytes().ln(), o.flops().ln());
    let (pa, pb, x) = (at(&a), at(&b), at(&op));
    let d = (pb.0 - pa.0, pb.1 - pa.1);
    let t = ((x.0 - pa.0) * d.0 + (x.1 - pa.1) * d.1) / (d.0 * d.0 + d.1 * d.1);
    let expect = (0.001f64.ln() + (0.004f64.ln() - 0.001f64.ln()) * t).exp();
    assert!(
        (pr.seconds - expect).abs() < 1e-12,
        "{} vs {expect}",
        pr.seconds
    );
    assert!((pr.seconds - 0.002).abs() < 0.0001, "{}", pr.seconds);
    assert!((pr.joules - 0.02).abs() < 0.001);
    assert_eq!(pr.source, Source::Measured);
    // An exact point is returned as is.
    let e = p.predict("cpu", &b).unwrap();
    assert_eq!(
        (e.seconds, e.joules, e.source),
        (0.004, 0.04, Source::Measured)
    );
    // Another dtype has no points.
    assert!(p
        .predict("cpu", &OpDesc::matmul(4, 4096, 4096, DType::Q8_0))
        .is_none());
}

#[test]
fn extrapolation_scales_by_the_larger_ratio() {
    let p = Profile::from_json(GOOD).unwrap();
    // m = 64: FLOPs ×4 over m = 16, bytes barely move: ×4, Extrapolated.
    let op = OpDesc::matmul(64, 4096, 4096, DType::Q4_0);
    let pr = p.predict("cpu", &op).unwrap();
    let b = OpDesc::matmul(16, 4096, 4096, DType::Q4_0);
    let r = (op.flops() / b.flops()).max(op.bytes() / b.bytes());
    assert!((r - 4.0).abs() < 1e-12);
    assert!((pr.seconds - 0.016).abs() < 1e-12, "{}", pr.seconds);
    assert!((pr.joules - 0.16).abs() < 1e-12);
    assert_eq!(pr.source, Source::Extrapolated);
    // Twice the weights at m = 1: bytes bound, ×~2.
    let op = OpDesc::matmul(1, 8192, 4096, DType::Q4_0);
    let pr = p.predict("cpu", &op).unwrap();
    let a = OpDesc::matmul(1, 4096, 4096, DType::Q4_0);
    let r = (op.flops() / a.flops()).max(op.bytes() / a.bytes());
    assert!((pr.seconds - 0.001 * r).abs() < 1e-12);
    // Beyond a modelled point the source stays the weakest: Modelled.
    let att = OpDesc::attention(1, 32, 8, 128, 8192, DType::F16, 0);
    let pr = p.predict("cpu", &att).unwrap();
    assert_eq!(pr.source, Source::Modelled);
    assert!((pr.seconds - 0.004).abs() < 1e-4, "{}", pr.seconds);
    // A window caps the cost: ctx 8192 with window 4096 costs what ctx 4096 does, or so.
    let w = p
        .predict(
            "cpu",
            &OpDesc::attention(1, 32, 8, 128, 8192, DType::F16, 4096),
        )
        .unwrap();
    assert!(w.seconds < 0.0025, "{}", w.seconds);
}

#[test]
fn interpolating_with_a_modelled_point_is_modelled() {
    let mut p = Profile::from_json(GOOD).unwrap();
    p.devices[0].ops[1].source = Source::Modelled;
    let pr = p
        .predict("cpu", &OpDesc::matmul(4, 4096, 4096, DType::Q4_0))
        .unwrap();
    assert_eq!(pr.source, Source::Modelled);
}

// ---- plans against brute force ----

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Shapes every device has a point for (so predictions are the points' values).
fn shapes() -> Vec<OpDesc> {
    vec![
        OpDesc::matmul(1, 576, 576, DType::F32),
        OpDesc::matmul(1, 1536, 576, DType::F32),
        OpDesc::matmul(1, 576, 1536, DType::F32),
        OpDesc::matmul(8, 576, 576, DType::F32),
        OpDesc::matmul(8, 1536, 576, DType::F32),
    ]
}

fn random_profile(rng: &mut Rng) -> Profile {
    let kinds = [ProfileKind::Cpu, ProfileKind::Gpu, ProfileKind::Remote];
    let devices = (0..3)
        .map(|i| DeviceProfile {
            id: ["cpu", "gpu0", "cloud"][i].into(),
            name: format!("dev{i}"),
            kind: kinds[i],
            fingerprint: String::new(),
            memory_bytes: u64::MAX,
            idle_watts: 1.0,
            transfer: Transfer {
                bytes_per_s: rng.f(1e6, 1e9),
                latency_s: rng.f(0.0, 2e-3),
                joules_per_byte: rng.f(0.0, 1e-7),
            },
            ops: {
                let mut v = Vec::new();
                for op in shapes() {
                    // Some ops are missing off the host.
                    if i == 0 || rng.below(5) != 0 {
                        v.push(OpPoint {
                            op,
                            seconds: rng.f(1e-4, 1e-2),
                            joules: rng.f(1e-4, 1e-1),
                            source: Source::Measured,
                        });
                    }
                }
                v
            },
        })
        .collect();
    Profile {
        system: serde_json::Value::Null,
        devices,
    }
}

/// (t, e) of an assignment, computed from the profile's numbers directly.
fn cost(p: &Profile, ops: &[OpDesc], devs: &[usize]) -> Option<(f64, f64)> {
    let leg = |d: usize, bytes: u64| {
        if d == 0 {
            (0.0, 0.0)
        } else {
            let t = p.devices[d].transfer;
            (
                t.latency_s + bytes as f64 / t.bytes_per_s,
                bytes as f64 * t.joules_per_byte,
            )
        }
    };
    let mv = |a: usize, b: usize, bytes: u64| {
        if a == b {
            (0.0, 0.0)
        } else {
            let (x, y) = (leg(a, bytes), leg(b, bytes));
            (x.0 + y.0, x.1 + y.1)
        }
    };
    let (mut t, mut e) = (0.0, 0.0);
    let mut at = 0;
    for (i, (op, &d)) in ops.iter().zip(devs).enumerate() {
        let pr = p.devices[d].predict(op)?;
        let bytes = if i == 0 {
            op.in_bytes()
        } else {
            ops[i - 1].out_bytes()
        };
        let m = mv(at, d, bytes);
        t += m.0 + pr.seconds;
        e += m.1 + pr.joules;
        at = d;
    }
    let m = mv(at, 0, ops.last()?.out_bytes());
    Some((t + m.0, e + m.1))
}

/// The brute-force objective value and whether the budget is met.
fn brute(p: &Profile, ops: &[OpDesc], pol: &Policy) -> (f64, bool) {
    let n = ops.len();
    let mut all = Vec::new();
    for code in 0..3usize.pow(n as u32) {
        let devs: Vec<usize> = (0..n).map(|i| code / 3usize.pow(i as u32) % 3).collect();
        if let Some(c) = cost(p, ops, &devs) {
            all.push(c);
        }
    }
    let min = |f: &dyn Fn(&(f64, f64)) -> f64, v: &[(f64, f64)]| {
        v.iter().map(f).fold(f64::INFINITY, f64::min)
    };
    match pol {
        Policy::MinEnergy => (min(&|c| c.1, &all), true),
        Policy::MinLatency => (min(&|c| c.0, &all), true),
        Policy::EnergyDelay => (min(&|c| c.0 * c.1, &all), true),
        Policy::LatencyBudget(b) => {
            let fit: Vec<_> = all
                .iter()
                .copied()
                .filter(|c| c.0 <= b.as_secs_f64())
                .collect();
            if fit.is_empty() {
                (min(&|c| c.0, &all), false)
            } else {
                (min(&|c| c.1, &fit), true)
            }
        }
        Policy::PowerCap(w) => {
            let fit: Vec<_> = all.iter().copied().filter(|c| c.1 <= w * c.0).collect();
            if fit.is_empty() {
                (min(&|c| c.1 / c.0, &all), false)
            } else {
                (min(&|c| c.0, &fit), true)
            }
        }
    }
}

fn objective(pol: &Policy, t: f64, e: f64) -> f64 {
    match pol {
        Policy::MinEnergy => e,
        Policy::MinLatency => t,
        Policy::EnergyDelay => t * e,
        Policy::LatencyBudget(b) if t <= b.as_secs_f64() * (1.0 + 1e-9) => e,
        Policy::LatencyBudget(_) => t,
        Policy::PowerCap(w) if e <= w * t * (1.0 + 1e-9) => t,
        Policy::PowerCap(_) => e / t,
    }
}

#[test]
fn plan_equals_brute_force_for_every_policy() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut checked = 0;
    for case in 0..300 {
        let p = random_profile(&mut rng);
        let n = 1 + rng.below(8) as usize;
        let sh = shapes();
        let ops: Vec<OpDesc> = (0..n)
            .map(|_| sh[rng.below(sh.len() as u64) as usize].clone())
            .collect();
        // A budget and a cap around the interesting range (sometimes unreachable).
        let fastest = brute(&p, &ops, &Policy::MinLatency).0;
        let policies = [
            Policy::MinEnergy,
            Policy::MinLatency,
            Policy::EnergyDelay,
            Policy::LatencyBudget(Duration::from_secs_f64(fastest * rng.f(0.8, 3.0))),
            Policy::PowerCap(rng.f(0.5, 40.0)),
        ];
        for pol in &policies {
            let plan = p.plan(&ops, pol).unwrap();
            let (want, met) = brute(&p, &ops, pol);
            let devs: Vec<usize> = plan
                .placements()
                .iter()
                .map(|pl| p.devices.iter().position(|d| d.id == pl.device).unwrap())
                .collect();
            let (t, e) = cost(&p, &ops, &devs).unwrap();
            assert!(
                (t - plan.seconds()).abs() <= 1e-9 * t,
                "case {case}: plan totals"
            );
            assert!(
                (e - plan.joules()).abs() <= 1e-9 * e.max(1e-12),
                "case {case}: plan totals"
            );
            let got = objective(pol, t, e);
            assert_eq!(plan.budget_met(), met, "case {case} {pol:?}");
            assert!(
                (got - want).abs() <= 1e-9 * want.abs(),
                "case {case} {pol:?}: plan {got} vs brute force {want}\n{}",
                plan.explain()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 1500);
}

#[test]
fn choose_is_a_one_op_plan_and_explain_names_devices() {
    let p = Profile::from_json(GOOD).unwrap();
    let op = OpDesc::matmul(1, 4096, 4096, DType::Q4_0);
    let c = p.choose(&op, &Policy::MinEnergy).unwrap();
    assert_eq!(c.device, "cpu");
    assert_eq!((c.seconds, c.joules), (0.001, 0.01));
    let c = p.choose(&op, &Policy::MinLatency).unwrap();
    assert_eq!(c.device, "gpu0");
    assert_eq!(c.source, Source::Modelled);
    let plan = p.plan(&[op.clone(), op], &Policy::MinLatency).unwrap();
    let ex = plan.explain();
    assert!(
        ex.contains("gpu0") && ex.contains("runner-up cpu") && ex.contains("total"),
        "{ex}"
    );
    // Nothing fits a 1 µs budget: the fastest plan, budget not met.
    let plan = p
        .plan(
            &[OpDesc::matmul(1, 4096, 4096, DType::Q4_0)],
            &Policy::LatencyBudget(Duration::from_micros(1)),
        )
        .unwrap();
    assert!(!plan.budget_met());
    assert!(plan.explain().contains("NOT met"));
}

#[test]
fn memory_limits_demote_ops() {
    let mut p = Profile::from_json(GOOD).unwrap();
    let op = OpDesc::matmul(1, 4096, 4096, DType::Q4_0);
    // Room for one op's weights on the GPU.
    p.devices[1].memory_bytes = op.weight_bytes() + 10;
    let plan = p
        .plan(&[op.clone(), op.clone(), op], &Policy::MinLatency)
        .unwrap();
    let on_gpu = plan
        .placements()
        .iter()
        .filter(|x| x.device == "gpu0")
        .count();
    assert_eq!(on_gpu, 1, "{}", plan.explain());
    assert!(plan.explain().contains("memory"), "{}", plan.explain());
}

#[test]
fn unrunnable_ops_are_typed_errors() {
    let p = Profile::from_json(GOOD).unwrap();
    let r = p.plan(
        &[OpDesc::matmul(1, 64, 64, DType::Q6_K)],
        &Policy::MinEnergy,
    );
    assert!(matches!(r, Err(Error::Profile(_))));
    assert!(matches!(
        p.plan(&[], &Policy::MinEnergy),
        Err(Error::Profile(_))
    ));
    assert!(p
        .plan(
            &[OpDesc::matmul(1, 8, 8, DType::Q4_0)],
            &Policy::PowerCap(f64::NAN)
        )
        .is_err());
}

#[test]
fn policies_parse() {
    assert_eq!("min-energy".parse::<Policy>().unwrap(), Policy::MinEnergy);
    assert_eq!("edp".parse::<Policy>().unwrap(), Policy::EnergyDelay);
    assert_eq!(
        "budget=20ms".parse::<Policy>().unwrap(),
        Policy::LatencyBudget(Duration::from_millis(20))
    );
    assert_eq!("cap=15W".parse::<Policy>().unwrap(), Policy::PowerCap(15.0));
    assert!("fastest".parse::<Policy>().is_err());
    assert!("cap=-3W".parse::<Policy>().is_err());
}

// ---- rt.auto ----

fn host_profile(rt: &Runtime) -> Profile {
    let mut p = Profile::from_json(GOOD).unwrap();
    p.devices[0].fingerprint = fingerprint(&rt.cpu());
    p
}

#[test]
fn auto_runs_where_the_profile_says() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let p = host_profile(&rt);
    let auto = rt.auto(&p, Policy::MinLatency).unwrap();
    // The GPU of the profile is absent here: ignored, and said so.
    assert!(auto.notes().iter().any(|n| n.contains("gpu0")));
    let op = OpDesc::matmul(1, 4096, 4096, DType::Q4_0);
    assert!(auto.decide(&op).unwrap().is_cpu());
    let w = Tensor::from_f32(&vec![0.25; 64 * 64], &[64, 64])
        .unwrap()
        .quantize(DType::Q4_0)
        .unwrap();
    let x = Tensor::from_f32(&vec![1.0; 2 * 64], &[2, 64]).unwrap();
    let y = auto.matmul(&x, &w).unwrap().to_f32_vec().unwrap();
    let r = rt.matmul(&x, &w).unwrap().to_f32_vec().unwrap();
    assert_eq!(y, r);
}

#[test]
fn auto_refuses_a_stale_host() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let p = Profile::from_json(GOOD).unwrap(); // fingerprint "x"
    assert!(matches!(
        rt.auto(&p, Policy::MinEnergy),
        Err(Error::Profile(_))
    ));
}

// ---- calibration ----

/// A tiny calibration on every device: the CPU gets matmul, attention, linear attention and
/// `KvCache` attend points (formats that do not take a head shape are skipped); GPUs get matmul,
/// attention and F16 cache points, and whatever they refuse (KIVI caches) is skipped without an
/// error.
#[test]
fn tiny_calibration_covers_kv_attend_and_skips_what_a_device_lacks() {
    let rt = Runtime::new().unwrap();
    let devs = common::devices_under_test(&rt);
    let kivi = |bits| KvFormat::Kivi {
        bits,
        group: 32,
        residual: 16,
    };
    let formats = vec![
        KvFormat::F16,
        KvFormat::Q8_0,
        KvFormat::Q4_0,
        kivi(4),
        kivi(2),
    ];
    let opts = CalibrateOptions {
        dtypes: vec![DType::F32, DType::Q4_0],
        shapes: vec![(1, 64, 64), (4, 64, 64)],
        software_gpu_dtypes: vec![DType::F32],
        software_gpu_shapes: vec![(1, 64, 64)],
        attention: vec![(1, 4, 2, 32, 64)],
        software_gpu_attention: vec![(1, 4, 2, 32, 64)],
        attention_dtypes: vec![DType::F16],
        linear_attention: vec![(4, 2, 16, 16)],
        software_gpu_linear_attention: vec![(4, 2, 16, 16)],
        // d = 16: only F16 takes it (Q8_0/Q4_0 need 32, KIVI's group of 32 does not divide it).
        kv_attend: vec![(64, 4, 2, 32), (48, 4, 2, 16)],
        software_gpu_kv_attend: vec![(64, 4, 2, 32)],
        kv_formats: formats.clone(),
        min_window: Duration::from_millis(1),
        min_reps: 1,
        idle: Duration::from_millis(1),
        transfer_bytes: 64 << 10,
        progress: false,
        write: false,
    };
    let p = rt.calibrate(&opts).unwrap();
    assert_eq!(p.devices.len(), devs.len());
    let cpu = p.device("cpu").unwrap();
    let count =
        |d: &DeviceProfile, name: &str| d.ops.iter().filter(|o| o.op.op_name() == name).count();
    assert_eq!(count(cpu, "matmul"), 4);
    assert_eq!(count(cpu, "attention"), 1);
    assert_eq!(count(cpu, "linear_attention"), 1);
    assert_eq!(count(cpu, "kv_attend"), formats.len() + 1);
    for f in &formats {
        let name = kv_format_name(f);
        let op = OpDesc::kv_attend(&name, 64, 4, 2, 32);
        let pt = cpu.ops.iter().find(|o| o.op == op);
        let pt = pt.unwrap_or_else(|| panic!("no point for {op}"));
        assert!(pt.seconds > 0.0 && pt.seconds.is_finite() && pt.joules >= 0.0);
    }
    assert!(cpu
        .ops
        .iter()
        .any(|o| o.op == OpDesc::kv_attend("f16", 48, 4, 2, 16)));
    let gpus: Vec<_> = devs.iter().filter(|d| !d.is_cpu()).cloned().collect();
    for (d, dev) in p
        .devices
        .iter()
        .filter(|d| d.kind == ProfileKind::Gpu)
        .zip(&gpus)
    {
        // A point for exactly the formats this device's KvCache takes (KIVI is refused on GPUs
        // so far: skipped, not an error).
        for f in &formats {
            let cfg = KvCacheConfig {
                kv_heads: 2,
                head_dim: 32,
                format: *f,
                ..KvCacheConfig::default()
            };
            let takes = KvCache::new(&rt, dev, cfg).is_ok();
            let op = OpDesc::kv_attend(&kv_format_name(f), 64, 4, 2, 32);
            let pt = d.ops.iter().find(|o| o.op == op);
            assert_eq!(pt.is_some(), takes, "{}: {op}", d.id);
            if let Some(pt) = pt {
                assert!(pt.seconds > 0.0 && pt.seconds.is_finite(), "{op}");
            }
        }
        assert!(
            d.ops
                .iter()
                .any(|o| o.op == OpDesc::kv_attend("f16", 64, 4, 2, 32)),
            "{}: an F16 cache point",
            d.id
        );
        assert!(count(d, "matmul") >= 1, "{}", d.id);
        assert!(d.transfer.bytes_per_s > 0.0, "{}", d.id);
    }
    // The profile is a valid file and plans a decode step with a KV-cache attend.
    let again = Profile::from_json(&p.to_json()).unwrap();
    assert_eq!(again.devices.len(), p.devices.len());
    let plan = again
        .plan(
            &[
                OpDesc::matmul(1, 64, 64, DType::F32),
                OpDesc::kv_attend("q8_0", 200, 4, 2, 32),
                OpDesc::matmul(1, 64, 64, DType::Q4_0),
            ],
            &Policy::MinLatency,
        )
        .unwrap();
    assert_eq!(plan.placements()[1].device, "cpu");
    assert!(plan.placements()[1].source <= Source::Extrapolated);
}

// ---- no panics on absurd input ----

#[test]
fn absurd_shapes_saturate_instead_of_overflowing() {
    let huge = OpDesc::matmul(usize::MAX, usize::MAX, usize::MAX, DType::F32);
    assert_eq!(huge.weight_bytes(), u64::MAX);
    assert_eq!(huge.in_bytes(), u64::MAX);
    assert_eq!(huge.out_bytes(), u64::MAX);
    assert!(huge.flops().is_infinite() || huge.flops() > 1e50);
    for op in [
        OpDesc::attention(
            usize::MAX,
            usize::MAX,
            1,
            usize::MAX,
            usize::MAX,
            DType::F16,
            0,
        ),
        OpDesc::linear_attention("retention", usize::MAX, usize::MAX, usize::MAX, usize::MAX),
        OpDesc::kv_attend("kivi2", usize::MAX, usize::MAX, usize::MAX, usize::MAX),
    ] {
        assert_eq!(op.weight_bytes(), u64::MAX, "{op}");
        assert_eq!(op.in_bytes(), u64::MAX, "{op}");
        assert!(op.bytes() > 1e19, "{op}");
    }
    // A profile whose points have absurd shapes parses and plans without a panic.
    let text = GOOD.replace(
        "\"m\": 16, \"n\": 4096",
        "\"m\": 18446744073709551615, \"n\": 18446744073709551615",
    );
    let p = Profile::from_json(&text).unwrap();
    let pol = Policy::MinEnergy;
    let big = OpDesc::matmul(1 << 40, 4096, 4096, DType::Q4_0);
    let r = p.plan(&[big.clone(), big], &pol);
    assert!(r.is_ok() || matches!(r, Err(Error::Profile(_))), "{r:?}");
    // Weights that fit nowhere: a typed error.
    let r = p.plan(
        &[OpDesc::matmul(1, usize::MAX, usize::MAX, DType::Q4_0)],
        &pol,
    );
    assert!(matches!(r, Err(Error::Profile(_))), "{r:?}");
}

#[test]
fn out_of_range_policies_are_errors() {
    for s in [
        "budget=1e300s",
        "budget=1e30",
        "budget=-1ms",
        "budget=nan",
        "budget=inf",
        "cap=0W",
        "cap=nanW",
        "budget=",
        "cap=",
    ] {
        assert!(s.parse::<Policy>().is_err(), "{s}");
    }
}

/// Profiles built in code skip the parser's checks: NaN, infinite and zero figures, a GPU with
/// zero bandwidth. Planning, choosing and `rt.auto` answer (perhaps an error) and never panic.
#[test]
fn hand_built_garbage_profiles_do_not_panic() {
    let rt = Runtime::with_backends("cpu").unwrap();
    let mut p = host_profile(&rt);
    for (i, v) in [f64::NAN, f64::INFINITY, 0.0, -1.0, f64::MAX]
        .into_iter()
        .enumerate()
    {
        let mut q = p.clone();
        q.devices[0].ops[0].seconds = v;
        q.devices[0].ops[1].joules = v;
        q.devices[1].ops[0].seconds = v;
        q.devices[1].transfer.bytes_per_s = if i % 2 == 0 { 0.0 } else { v };
        q.devices[1].transfer.latency_s = v;
        q.devices[0].idle_watts = v;
        let op = OpDesc::matmul(4, 4096, 4096, DType::Q4_0);
        for pol in [
            Policy::MinEnergy,
            Policy::MinLatency,
            Policy::EnergyDelay,
            Policy::LatencyBudget(Duration::from_micros(1)),
            Policy::PowerCap(1.0),
        ] {
            let _ = q.plan(&[op.clone(), op.clone(), op.clone()], &pol);
            let _ = q.choose(&op, &pol);
            let _ = q
                .plan(std::slice::from_ref(&op), &pol)
                .map(|pl| pl.explain());
        }
        let _ = q.predict("cpu", &op);
        let _ = q.cost_of(std::slice::from_ref(&op), &["gpu0"]);
        if let Ok(auto) = rt.auto(&q, Policy::MinEnergy) {
            let _ = auto.decide(&op);
        }
    }
    // No devices at all, two hosts, no host: errors.
    p.devices.truncate(1);
    let mut two = p.clone();
    two.devices.push(p.devices[0].clone());
    two.devices[1].id = "cpu2".into();
    let none = Profile {
        system: serde_json::Value::Null,
        devices: Vec::new(),
    };
    for q in [&two, &none] {
        assert!(matches!(
            q.plan(
                &[OpDesc::matmul(1, 64, 64, DType::Q4_0)],
                &Policy::MinEnergy
            ),
            Err(Error::Profile(_))
        ));
        assert!(matches!(
            rt.auto(q, Policy::MinEnergy),
            Err(Error::Profile(_))
        ));
    }
}

#[test]
fn loading_what_is_not_a_profile_is_an_error() {
    for path in ["/dev/zero", "/dev/null", "/", "/nonexistent/profile.json"] {
        if std::path::Path::new(path).exists() || path.starts_with("/nonexistent") {
            let r = Profile::load(path);
            assert!(matches!(r, Err(Error::Profile(_))), "{path}: {r:?}");
        }
    }
    let dir = std::env::temp_dir().join(format!("wattle-bad-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("latin1.json");
    std::fs::write(&f, b"{\"wattle_profile\": 1, \"system\": \"\xe9\"}").unwrap();
    assert!(matches!(Profile::load(&f), Err(Error::Profile(_))));
    let _ = std::fs::remove_dir_all(dir);
}
