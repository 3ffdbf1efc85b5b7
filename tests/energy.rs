//! Energy meters on recorded sysfs trees (tests/data/sysfs): every source, a counter that wraps
//! inside the window, a power-only rail, a charging battery, garbage values, the Modelled meter.

use std::path::{Path, PathBuf};
use std::time::Duration;
use wattle::energy::{discover, EnergyWindow, Meter, MeterKind, Source};
use wattle::{Device, Runtime};

fn data(tree: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sysfs")
        .join(tree)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A private copy of a recorded tree.
fn scratch(tree: &str, tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("wattle-sysfs-{tree}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&data(tree), &dir);
    dir
}

fn devices() -> Vec<Device> {
    Runtime::with_backends("cpu").unwrap().devices()
}

fn by_name<'a>(ms: &'a [Meter], name: &str) -> &'a Meter {
    ms.iter()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no meter {name} in {ms:?}"))
}

#[test]
fn rapl_zones_subzones_and_skips() {
    let ms = discover(&data("rapl"), &devices());
    let names: Vec<String> = ms.iter().map(|m| m.name()).collect();
    assert!(names.contains(&"rapl package-0".to_string()), "{names:?}");
    assert!(names.contains(&"rapl package-0/core".to_string()));
    assert!(names.contains(&"rapl package-0/dram".to_string()));
    assert!(names.contains(&"rapl package-1".to_string()));
    // The control type and the mmio copy are not zones.
    assert_eq!(
        names.iter().filter(|n| n.starts_with("rapl")).count(),
        4,
        "{names:?}"
    );
    let p0 = by_name(&ms, "rapl package-0");
    assert_eq!(p0.kind(), MeterKind::RaplPackage);
    assert_eq!(p0.source(), Source::Measured);
    assert!(p0.available().is_ok());
    assert!(p0.devices().iter().any(|d| d.is_cpu()));
    assert_eq!(
        by_name(&ms, "rapl package-0/dram").kind(),
        MeterKind::RaplSubzone
    );
    let bad = by_name(&ms, "rapl package-1").available().unwrap_err();
    assert!(
        bad.contains("not a number") && bad.contains("garbage"),
        "{bad}"
    );
    // The CPU is covered by a readable package: no Modelled meter.
    assert!(
        !ms.iter().any(|m| m.kind() == MeterKind::Modelled),
        "{names:?}"
    );
}

#[test]
fn rapl_counter_wraps_inside_the_window() {
    let root = scratch("rapl", "wrap");
    let ms = discover(&root, &devices());
    let w = EnergyWindow::start(ms);
    let zone = root.join("class/powercap/intel-rapl:0");
    std::fs::write(zone.join("energy_uj"), "1000000\n").unwrap();
    std::fs::write(
        root.join("class/powercap/intel-rapl:0:0/energy_uj"),
        "6500000\n",
    )
    .unwrap();
    let m = w.end().unwrap();
    let p0 = m
        .per_meter
        .iter()
        .find(|x| x.0 == "rapl package-0")
        .unwrap();
    let expect = (262_143_328_850u64 - 262_143_000_000 + 1 + 1_000_000) as f64 * 1e-6;
    assert!((p0.1 - expect).abs() < 1e-9, "{} vs {expect}", p0.1);
    let core = m
        .per_meter
        .iter()
        .find(|x| x.0 == "rapl package-0/core")
        .unwrap();
    assert!((core.1 - 1.5).abs() < 1e-9);
    // Subzones are never summed; the garbage package is dropped with its reason.
    assert_eq!(m.summed, vec!["rapl package-0".to_string()]);
    assert!((m.joules - expect).abs() < 1e-9);
    assert_eq!(m.source, Source::Measured);
    assert!(m
        .dropped
        .iter()
        .any(|(n, why)| n == "rapl package-1" && why.contains("garbage")));
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn rapl_garbage_at_the_end_drops_the_meter() {
    let root = scratch("rapl", "garbage-end");
    let w = EnergyWindow::start(discover(&root, &devices()));
    std::fs::write(
        root.join("class/powercap/intel-rapl:0/energy_uj"),
        "\u{1}\u{2}zz",
    )
    .unwrap();
    // Nothing summable is left: a typed error, not a panic.
    assert!(w.end().is_err());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn hwmon_power_rail_is_sampled_and_energy_rails_counted() {
    let root = scratch("hwmon", "rails");
    let ms = discover(&root, &devices());
    let names: Vec<String> = ms.iter().map(|m| m.name()).collect();
    let gpu = by_name(&ms, "hwmon amdgpu power1");
    assert_eq!(gpu.kind(), MeterKind::GpuRail);
    assert!(gpu.available().is_ok());
    assert_eq!(
        by_name(&ms, "hwmon soc_rails energy1 big").kind(),
        MeterKind::OtherRail
    );
    assert!(by_name(&ms, "hwmon soc_rails energy2 little")
        .available()
        .is_ok());
    assert!(by_name(&ms, "hwmon i915 energy1").available().is_err());
    assert!(!names.iter().any(|n| n.contains("k10temp")), "{names:?}");
    // No readable meter covers the CPU: it gets a Modelled meter.
    assert!(ms.iter().any(|m| m.kind() == MeterKind::Modelled));

    let w = EnergyWindow::start(ms);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(root.join("class/hwmon/hwmon2/energy1_input"), "1250000\n").unwrap();
    let m = w.end().unwrap();
    let g = m
        .per_meter
        .iter()
        .find(|x| x.0 == "hwmon amdgpu power1")
        .unwrap();
    let expect = 15.0 * m.seconds;
    assert!((g.1 - expect).abs() < 0.05 * expect, "{} vs {expect}", g.1);
    let big = m
        .per_meter
        .iter()
        .find(|x| x.0 == "hwmon soc_rails energy1 big")
        .unwrap();
    assert!((big.1 - 0.25).abs() < 1e-9);
    // A GPU rail plus the CPU's Modelled meter: the sum is labelled Modelled.
    assert!(m.summed.contains(&"hwmon amdgpu power1".to_string()));
    assert!(!m.summed.iter().any(|n| n.contains("soc_rails")));
    assert_eq!(m.source, Source::Modelled);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn charging_battery_is_listed_but_not_used() {
    let ms = discover(&data("battery"), &devices());
    let bat0 = by_name(&ms, "battery BAT0");
    let why = bat0.available().unwrap_err();
    assert!(
        why.contains("Charging") && why.contains("discharging"),
        "{why}"
    );
    assert!(!ms.iter().any(|m| m.name().contains("AC")));
    let bat1 = by_name(&ms, "battery BAT1");
    assert!(bat1.available().is_ok());
}

#[test]
fn discharging_battery_sums_alone_and_drops_on_status_change() {
    let root = scratch("battery", "status");
    let ms = discover(&root, &devices());
    let w = EnergyWindow::start(ms.clone());
    std::thread::sleep(Duration::from_millis(100));
    let m = w.end().unwrap();
    assert_eq!(m.summed, vec!["battery BAT1".to_string()]);
    assert_eq!(m.source, Source::Measured);
    let expect = 18.0 * m.seconds;
    assert!(
        (m.joules - expect).abs() < 0.05 * expect,
        "{} vs {expect}",
        m.joules
    );

    let w = EnergyWindow::start(ms);
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(root.join("class/power_supply/BAT1/status"), "Charging\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let m = w.end().unwrap();
    let (_, why) = m
        .dropped
        .iter()
        .find(|(n, _)| n == "battery BAT1")
        .expect("dropped");
    assert!(why.contains("Charging"), "{why}");
    assert!(!m.summed.iter().any(|n| n.starts_with("battery")));
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn garbage_battery_is_unavailable() {
    let ms = discover(&data("battery-garbage"), &devices());
    let why = by_name(&ms, "battery BAT0").available().unwrap_err();
    assert!(why.contains("n/a"), "{why}");
}

#[test]
fn no_meter_gives_labelled_modelled_meters() {
    let devs = devices();
    let ms = discover(&data("empty"), &devs);
    assert_eq!(ms.len(), 1, "{ms:?}");
    let m = &ms[0];
    assert_eq!(m.source(), Source::Modelled);
    assert!(m.name().starts_with("modelled cpu"));
    assert!(m.available().is_ok());
    let note = m.note().unwrap();
    assert!(note.contains("no RAPL zone"), "{note}");
    assert!(m.devices().contains(&devs[0]));
    let w = EnergyWindow::start(ms);
    let mut x = 0u64;
    for i in 0..2_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    let meas = w.end().unwrap();
    assert_eq!(meas.source, Source::Modelled);
    assert!(meas.joules > 0.0);
}

#[test]
fn missing_root_never_fails() {
    let ms = discover(Path::new("/nonexistent/wattle"), &devices());
    assert!(ms.iter().all(|m| m.kind() == MeterKind::Modelled));
}

#[test]
fn runtime_meters_follow_wattle_sysfs_root() {
    // The only test of this binary that sets the variable.
    std::env::set_var("WATTLE_SYSFS_ROOT", data("rapl"));
    let rt = Runtime::with_backends("cpu").unwrap();
    let ms = rt.meters();
    let m = rt.energy_window().end();
    std::env::remove_var("WATTLE_SYSFS_ROOT");
    assert!(ms.iter().any(|m| m.name() == "rapl package-0"));
    // The package's counter does not move in a recorded tree: 0 J measured.
    assert_eq!(m.unwrap().source, Source::Measured);
}

/// Every regular file under `dir` (recursively).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// Garbage in every file of every recorded tree — before discovery, and changed again inside the
/// window: discovery, `available`, `note` and `EnergyWindow::end` answer (an error at worst) and
/// never panic, whatever the files hold.
#[test]
fn garbage_in_every_file_never_panics() {
    let garbage: [&[u8]; 14] = [
        b"",
        b"\n",
        b"-1\n",
        b"0\n",
        b"18446744073709551615\n",
        b"18446744073709551616\n",
        b"-9223372036854775808\n",
        b"9223372036854775807\n",
        b"1e9\n",
        b"nan\n",
        b"12 34\n",
        b"\xff\xfe\x00garbage",
        b"Discharging\n",
        b"Battery\n",
    ];
    let devs = devices();
    for tree in ["rapl", "hwmon", "battery", "battery-garbage"] {
        for (i, g) in garbage.iter().enumerate() {
            let root = scratch(tree, &format!("garbage{i}"));
            let mut all = Vec::new();
            files(&root, &mut all);
            for f in &all {
                std::fs::write(f, g).unwrap();
            }
            let ms = discover(&root, &devs);
            for m in &ms {
                let _ = (m.name(), m.available(), m.note(), m.devices(), m.source());
            }
            let w = EnergyWindow::start(ms);
            std::thread::sleep(Duration::from_millis(15));
            let next = garbage[(i + 5) % garbage.len()];
            for f in &all {
                std::fs::write(f, next).unwrap();
            }
            std::thread::sleep(Duration::from_millis(15));
            if let Ok(m) = w.end() {
                assert!(m.joules.is_finite() && m.joules >= 0.0, "{tree} {i}: {m:?}");
                assert!(m.seconds > 0.0);
            }
            let _ = std::fs::remove_dir_all(root);
        }
    }
    // A directory where a counter file should be, and a counter that goes backwards.
    let root = scratch("rapl", "dir-for-file");
    let zone = root.join("class/powercap/intel-rapl:0");
    std::fs::remove_file(zone.join("energy_uj")).unwrap();
    std::fs::create_dir(zone.join("energy_uj")).unwrap();
    let ms = discover(&root, &devs);
    assert!(by_name(&ms, "rapl package-0").available().is_err());
    let _ = EnergyWindow::start(ms).end();
    let _ = std::fs::remove_dir_all(root);
    let root = scratch("hwmon", "backwards");
    let f = root.join("class/hwmon/hwmon2/energy1_input");
    std::fs::write(&f, "5000000\n").unwrap();
    let w = EnergyWindow::start(discover(&root, &devs));
    std::fs::write(&f, "1000\n").unwrap();
    let m = w.end().unwrap();
    assert!(m
        .dropped
        .iter()
        .any(|(n, why)| n.contains("energy1") && why.contains("back")));
    let _ = std::fs::remove_dir_all(root);
}
