//! The energy and scheduler commands end to end: `wattle meters`, `wattle plan` (a hand-written
//! profile; the SmolLM2 model when it has been fetched), `wattle compare` and `bench --energy`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn wattle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wattle"))
        .args(args)
        .env("WATTLE_BACKENDS", "cpu")
        .output()
        .expect("run wattle")
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wattle failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn profile() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/profiles/laptop-example.json")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn meters_list_a_modelled_cpu_meter_and_say_why() {
    let root = std::env::temp_dir().join(format!("wattle-empty-sysfs-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattle"))
        .args(["meters", "--devices", "cpu"])
        .env("WATTLE_SYSFS_ROOT", &root)
        .output()
        .expect("run wattle");
    let text = ok(&out);
    assert!(text.contains("modelled"), "{text}");
    assert!(text.contains("why modelled"), "{text}");
    assert!(
        text.contains("powercap"),
        "the missing RAPL zone is named: {text}"
    );
}

#[test]
fn plan_places_a_decode_layer_and_totals_it() {
    let text = ok(&wattle(&[
        "plan",
        "--profile",
        &profile(),
        "--policy",
        "min-energy",
    ]));
    assert!(text.contains("matmul q4_0"), "{text}");
    assert!(text.contains("attention f16"), "{text}");
    assert!(text.contains("total"), "{text}");
    for policy in ["min-latency", "edp", "budget=20ms", "cap=15W"] {
        ok(&wattle(&[
            "plan",
            "--profile",
            &profile(),
            "--policy",
            policy,
        ]));
    }
    let bad = wattle(&["plan", "--profile", &profile(), "--policy", "fastest"]);
    assert!(!bad.status.success());
    let missing = wattle(&["plan", "--profile", "/nonexistent/p.json"]);
    assert!(!missing.status.success());
}

#[test]
fn plan_with_the_real_model_prints_per_layer_placement() {
    let dir = std::env::var_os("WATTLE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("wattle-models"));
    let model = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.exists() {
        eprintln!(
            "skipped: {} not fetched (tools/fetch-model.sh)",
            model.display()
        );
        return;
    }
    let text = ok(&wattle(&[
        "plan",
        "--profile",
        &profile(),
        "--model",
        &model.to_string_lossy(),
    ]));
    assert!(text.contains("layer 29"), "30 layers: {text}");
    assert!(text.contains("tok/s"), "{text}");
    assert!(text.contains("J/token"), "{text}");
}

#[test]
fn compare_puts_profiles_side_by_side() {
    let dir = std::env::temp_dir().join(format!("wattle-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("roofline.svg");
    let text = ok(&wattle(&[
        "compare",
        &profile(),
        &profile(),
        "--md",
        "--svg",
        &svg.to_string_lossy(),
    ]));
    assert!(text.contains('|'), "Markdown table: {text}");
    assert!(text.contains("matmul q4_0"), "{text}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.starts_with("<svg") || drawn.contains("<svg"),
        "an SVG"
    );
    let one = wattle(&["compare", &profile()]);
    assert!(!one.status.success(), "compare needs two profiles");
}

#[test]
fn bench_energy_labels_modelled_joules() {
    let text = ok(&wattle(&[
        "bench",
        "--quick",
        "--json",
        "--energy",
        "--devices",
        "cpu",
        "--dtypes",
        "q4_0",
        "--modes",
        "hot",
        "--m",
        "1",
        "--n",
        "64",
        "--k",
        "256",
        "--no-roofline",
    ]));
    let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    let e = &rows[0]["energy"];
    assert!(
        e["joules_per_call"].as_f64().is_some_and(|j| j > 0.0),
        "{e}"
    );
    assert!(e["watts"].as_f64().is_some_and(|w| w > 0.0), "{e}");
    // No meter is readable in a VM: the figure must say it is modelled.
    let src = e["source"].as_str().unwrap_or_default();
    assert!(src == "modelled" || src == "measured", "{e}");
}
