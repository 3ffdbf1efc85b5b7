//! End-to-end smoke tests of the `wattle` binary on tiny shapes (CPU only, a few seconds).

use std::process::Command;

fn wattle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wattle"))
}

#[test]
fn bench_quick_json_runs_end_to_end() {
    let out = wattle()
        .args([
            "bench",
            "--quick",
            "--json",
            "--devices",
            "cpu",
            "--m",
            "1,3",
            "--n",
            "64",
            "--k",
            "256",
            "--probe-mib",
            "8",
        ])
        .output()
        .expect("run wattle");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wattle bench failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert!(v["system"]["cpu"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["system"]["isa"].as_str().is_some());
    assert!(v["system"]["git_hash"].as_str().is_some());
    let roof = &v["roofline"][0];
    assert!(roof["bandwidth_gb_per_s"].as_f64().is_some_and(|b| b > 0.0));
    assert!(roof["fma_gflops"].as_f64().is_some_and(|f| f > 0.0));
    let rows = v["rows"].as_array().expect("rows");
    // 8 weight dtypes (every format by default) × 2 batches × 2 modes.
    assert_eq!(rows.len(), 32, "{rows:#?}");
    for r in rows {
        assert_eq!(r["device_kind"], "cpu");
        assert!(r["reps"].as_u64().is_some_and(|n| n >= 5));
        let (min, med, max) = (
            r["min_us"].as_f64().unwrap(),
            r["median_us"].as_f64().unwrap(),
            r["max_us"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= med && med <= max, "{r}");
        assert!(r["gops"].as_f64().is_some_and(|g| g > 0.0));
        if r["mode"] == "cold" {
            assert!(r["copies"].as_u64().is_some_and(|c| c >= 2));
        }
    }
}

#[test]
fn bench_writes_csv_file_and_md() {
    let dir = std::env::temp_dir().join(format!("wattle-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("out.csv");
    let out = wattle()
        .args([
            "bench",
            "--quick",
            "--devices",
            "cpu",
            "--dtypes",
            "f32",
            "--modes",
            "hot",
            "--m",
            "2",
            "--n",
            "32",
            "--k",
            "64",
            "--no-roofline",
            "--out",
        ])
        .arg(&csv)
        .output()
        .expect("run wattle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("matmul prefill"), "{table}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("device,"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_fail_clearly() {
    for (args, want) in [
        (&["bench", "--devices", "cuda"][..], "unknown device"),
        (&["bench", "--dtypes", "f33"][..], "f33"),
        (&["bench", "--peer", "ggml"][..], "NAME=PATH"),
        (
            &["bench", "--reps", "2", "--devices", "cpu"][..],
            "at least 5",
        ),
        (&["bench", "--json", "--csv"][..], "cannot be used with"),
    ] {
        let out = wattle().args(args).output().expect("run wattle");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn devices_lists_the_cpu() {
    let out = wattle()
        .args(["devices", "--devices", "cpu"])
        .output()
        .expect("run wattle");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("[0] cpu"));
    let out = wattle()
        .args(["devices", "--devices", "cpu", "--json"])
        .output()
        .expect("run wattle");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["kind"], "cpu");
}
