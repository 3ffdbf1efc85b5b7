//! GPU autotuning: `Runtime::tune` records a choice per shape bucket in the tuning cache under
//! `$WATTLE_CACHE_DIR`, a later runtime uses it, and entries written for other shader sources
//! are ignored. One test function, as the environment is process-wide.
//!
//! Fails when no GPU adapter is found unless `WATTLE_ALLOW_NO_GPU=1`.

use wattle::internals::gpu_matmul_choice_for;
use wattle::{DType, DeviceKind, Runtime, Tensor, TuneOptions};

#[test]
fn tuning_is_recorded_reused_and_stale_entries_ignored() {
    let dir = std::env::temp_dir().join(format!("wattle-tune-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("WATTLE_CACHE_DIR", &dir);
    let file = dir.join("gpu-tune.json");

    // A stale entry (another shader checksum) for the same bucket, with constants no device
    // would pick by default: it must be ignored.
    std::fs::create_dir_all(&dir).unwrap();
    let rt = Runtime::new().unwrap();
    let gpus = rt.gpus();
    if gpus.is_empty() && std::env::var("WATTLE_ALLOW_NO_GPU").as_deref() != Ok("1") {
        panic!("no GPU adapter found (set WATTLE_ALLOW_NO_GPU=1 to allow)");
    }
    let (m, n, k) = (1, 48, 256);
    let stale: Vec<String> = gpus
        .iter()
        .map(|d| {
            let DeviceKind::Gpu { api } = d.kind() else {
                unreachable!()
            };
            format!(
                r#"{{"adapter": "{} ({})", "driver": "{}", "checksum": "0000000000000000", "op": "matvec", "w": "q4_0", "x": "f32", "m": 1, "n": 64, "k": 256, "variant": "x", "reduce": "wg", "f16_math": false, "int8": false, "wg": 256, "nr": 4, "l": 64, "us": 1.0}}"#,
                d.name(),
                api.name(),
                d.info().driver
            )
        })
        .collect();
    std::fs::write(
        &file,
        format!(r#"{{"wattle_tune": 1, "entries": [{}]}}"#, stale.join(",")),
    )
    .unwrap();
    let rt = Runtime::new().unwrap();
    for dev in rt.gpus() {
        let c = gpu_matmul_choice_for(&dev, m, n, k, DType::Q4_0, DType::F32).unwrap();
        assert_ne!(
            (c.matvec.wg, c.matvec.nr, c.matvec.l),
            (256, 4, 64),
            "{dev}: a stale entry was used"
        );
    }

    let opts = TuneOptions {
        shapes: vec![(m, n, k)],
        dtypes: vec![DType::Q4_0, DType::F16],
        reps: 1,
        verbose: true,
    };
    let entries = rt.tune(&opts).unwrap();
    assert_eq!(entries.len(), 2 * rt.gpus().len());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("0000000000000000"), "stale entry kept");

    // A fresh runtime reads the winners back; the product is still right.
    let rt2 = Runtime::new().unwrap();
    let x = Tensor::from_f32(&vec![0.5; m * k], &[m, k]).unwrap();
    let w = Tensor::from_f32(&vec![0.25; n * k], &[n, k])
        .unwrap()
        .quantize(DType::Q4_0)
        .unwrap();
    for (dev, e) in rt2.gpus().iter().zip(entries.iter().step_by(2)) {
        let c = gpu_matmul_choice_for(dev, m, n, k, DType::Q4_0, DType::F32).unwrap();
        assert_eq!(
            format!("{} {}", c.variant.name(), c.matvec.name()),
            e.choice
        );
        let y = rt2
            .matmul(&x.to(dev).unwrap(), &w.to(dev).unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap();
        for v in y {
            assert!((v - 32.0).abs() < 0.1, "{dev}: {v}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
