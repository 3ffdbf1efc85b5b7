//! `wattle calibrate [--quick]`: measure this machine's profile (SPEC §9) and write it to the
//! cache directory (and optionally to a file to share).
//!
//! `wattle calibrate --check [--profile P.json]`: how well a profile predicts `rt.matmul` here —
//! the shapes of `wattle bench` (a 4096×14336 weight, decode m = 1 and prefill m = 512, every
//! weight format) timed on the CPU next to the profile's prediction, and the device the profile
//! chooses for each decode matmul.

use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wattle::energy::Source;
use wattle::sched::{fingerprint, CalibrateOptions, OpDesc, Policy, Profile, ProfileKind};
use wattle::{DType, Runtime, Tensor};

/// Arguments of `wattle calibrate`.
#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// A small shape set: under a minute a device.
    #[arg(long)]
    quick: bool,
    /// Also write the profile to FILE (to share or compare).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Devices to calibrate (cpu, vulkan, gl, gpu, all).
    #[arg(long, default_value = "all", value_name = "LIST")]
    devices: String,
    /// Do not calibrate: time rt.matmul on the CPU at the shapes of `wattle bench` and print it
    /// next to the profile's prediction (ratio; within 1.5× or not) and the device the profile
    /// chooses for each decode matmul. Fails when a prediction is off by more than 1.5× or a
    /// decode matmul is not placed on the CPU.
    #[arg(long)]
    check: bool,
    /// The profile `--check` reads (default: the one `wattle calibrate` wrote for this machine).
    #[arg(long, value_name = "P.json")]
    profile: Option<PathBuf>,
    /// `--check`: weight dtypes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "f32,f16,bf16,q8_0,q4_0,q4_1,q4_K,q6_K",
        value_name = "LIST"
    )]
    dtypes: Vec<DType>,
    /// `--check`: the weight's rows and columns (n, k).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,14336",
        value_name = "N,K"
    )]
    nk: Vec<usize>,
    /// `--check`: activation rows, one row of the table each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,512",
        value_name = "LIST"
    )]
    ms: Vec<usize>,
}

pub fn run(a: CalibrateArgs) -> Result<(), String> {
    if a.check {
        return check(a);
    }
    let rt = wattle::Runtime::with_backends(&a.devices)
        .map_err(|e| format!("cannot start wattle: {e}"))?;
    let opts = if a.quick {
        CalibrateOptions::quick()
    } else {
        CalibrateOptions::default()
    };
    let start = std::time::Instant::now();
    let p = rt.calibrate(&opts).map_err(|e| format!("calibrate: {e}"))?;
    for d in &p.devices {
        let src = d
            .ops
            .iter()
            .map(|o| o.source)
            .min()
            .map(|s| s.name())
            .unwrap_or("-");
        println!(
            "{:<5} {:<40} idle {:>6.2} W  transfer {:>8.2} GB/s {:>8.1} us {:>6.3} nJ/B  {} points (energy {src})",
            d.id,
            d.name,
            d.idle_watts,
            d.transfer.bytes_per_s / 1e9,
            d.transfer.latency_s * 1e6,
            d.transfer.joules_per_byte * 1e9,
            d.ops.len()
        );
        let mut per_op: Vec<(&str, usize)> = Vec::new();
        for o in &d.ops {
            match per_op.iter_mut().find(|(n, _)| *n == o.op.op_name()) {
                Some((_, c)) => *c += 1,
                None => per_op.push((o.op.op_name(), 1)),
            }
        }
        let list: Vec<String> = per_op.iter().map(|(n, c)| format!("{n} {c}")).collect();
        println!("      points: {}", list.join(", "));
    }
    println!("calibrated in {:.1} s", start.elapsed().as_secs_f64());
    if let Some(path) = wattle::sched::profile_path(&rt.devices()) {
        println!("profile: {}", path.display());
    }
    if let Some(out) = a.out {
        p.save(&out)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        println!("also written to {}", out.display());
    }
    Ok(())
}

/// One row of `--check`.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// The matmul.
    pub op: OpDesc,
    /// The profile's prediction on its `cpu` device (None: no point of that dtype there).
    pub predicted: Option<(f64, Source)>,
    /// Measured median seconds of `rt.matmul` on the CPU (Err: it could not run).
    pub measured: Result<f64, String>,
    /// Cores the process kept busy while it was measured (CPU time over wall time): well below
    /// the pool's threads means the measurement did not get the whole CPU.
    pub cores: Option<f64>,
    /// The device the profile chooses under min-energy and min-latency (decode rows only).
    pub chosen: Option<(String, String)>,
}

impl CheckRow {
    /// Predicted over measured.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.predicted, &self.measured) {
            (Some((p, _)), Ok(m)) if *m > 0.0 => Some(p / m),
            _ => None,
        }
    }
    /// The prediction is within 1.5× of the measurement either way.
    pub fn within(&self) -> bool {
        self.ratio().is_some_and(|r| (1.0 / 1.5..=1.5).contains(&r))
    }
    /// A decode row whose matmul the profile places on its host CPU under both policies.
    pub fn on_cpu(&self, host: &str) -> Option<bool> {
        self.chosen.as_ref().map(|(e, l)| e == host && l == host)
    }
}

/// CPU seconds (user + system) this process has used (Linux `/proc/self/stat`; None elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on every Linux ABI
}

/// Median seconds of `f` over at least `reps` calls and `window`, after one warm-up call, and
/// the cores the process kept busy meanwhile (CPU time over wall time; None when unknown).
fn time_median(
    reps: usize,
    window: Duration,
    f: &mut dyn FnMut() -> wattle::Result<()>,
) -> wattle::Result<(f64, Option<f64>)> {
    f()?;
    let mut times = Vec::new();
    let cpu0 = process_cpu_seconds();
    let start = Instant::now();
    while times.len() < reps.max(1) || start.elapsed() < window {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let wall = start.elapsed().as_secs_f64();
    let cores = match (cpu0, process_cpu_seconds()) {
        (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall),
        _ => None,
    };
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], cores))
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Times `rt.matmul` on the CPU for every dtype × m at weight `n × k` (hot: the same weight
/// each call) and sets it next to `profile`'s prediction for its `cpu` device.
pub fn check_rows(
    rt: &Runtime,
    profile: &Profile,
    dtypes: &[DType],
    (n, k): (usize, usize),
    ms: &[usize],
    (reps, window): (usize, Duration),
) -> Result<Vec<CheckRow>, String> {
    let host = profile
        .devices
        .iter()
        .find(|d| d.kind == ProfileKind::Cpu)
        .ok_or("the profile has no device of kind cpu")?
        .id
        .clone();
    let cpu = rt.cpu();
    let mut rows = Vec::new();
    for &dt in dtypes {
        let weight = Tensor::from_f32(&values(n * k, 1), &[n, k])
            .and_then(|w| w.quantize(dt))
            .map_err(|e| e.to_string());
        for &m in ms {
            let op = OpDesc::matmul(m, n, k, dt);
            let predicted = profile.predict(&host, &op).map(|p| (p.seconds, p.source));
            let timed = weight.clone().and_then(|w| {
                let x = Tensor::from_f32(&values(m * k, 2), &[m, k])
                    .and_then(|x| x.to(&cpu))
                    .map_err(|e| e.to_string())?;
                time_median(reps, window, &mut || rt.matmul(&x, &w).map(drop))
                    .map_err(|e| e.to_string())
            });
            let (measured, cores) = match timed {
                Ok((t, c)) => (Ok(t), c),
                Err(e) => (Err(e), None),
            };
            let chosen = (m == 1).then(|| {
                let pick = |pol: Policy| {
                    profile
                        .choose(&op, &pol)
                        .map(|c| c.device)
                        .unwrap_or_else(|e| format!("error: {e}"))
                };
                (pick(Policy::MinEnergy), pick(Policy::MinLatency))
            });
            rows.push(CheckRow {
                op,
                predicted,
                measured,
                cores,
                chosen,
            });
        }
    }
    Ok(rows)
}

/// The `--check` table and its summary line.
pub fn check_table(rows: &[CheckRow], host: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<6} {:<16} {:>13} {:>13} {:>6} {:>7}  {:<6} {:<12} {:<10} {:<11}",
        "dtype",
        "m×n×k",
        "predicted ms",
        "measured ms",
        "cores",
        "ratio",
        "1.5×",
        "source",
        "min-energy",
        "min-latency"
    );
    for r in rows {
        let OpDesc::Matmul { m, n, k, dtype } = r.op else {
            continue;
        };
        let pred = r
            .predicted
            .map(|(p, _)| format!("{:.3}", p * 1e3))
            .unwrap_or_else(|| "no point".into());
        let meas = match &r.measured {
            Ok(t) => format!("{:.3}", t * 1e3),
            Err(_) => "failed".into(),
        };
        let ratio = r
            .ratio()
            .map(|x| format!("{x:.2}×"))
            .unwrap_or_else(|| "-".into());
        let (e, l) = r.chosen.clone().unwrap_or_else(|| ("-".into(), "-".into()));
        let cores = r
            .cores
            .map(|c| format!("{c:.2}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<6} {:<16} {:>13} {:>13} {:>6} {:>7}  {:<6} {:<12} {:<10} {:<11}",
            dtype.name(),
            format!("{m}×{n}×{k}"),
            pred,
            meas,
            cores,
            ratio,
            if r.within() { "yes" } else { "NO" },
            r.predicted.map(|(_, s)| s.name()).unwrap_or("-"),
            e,
            l
        );
        if let Err(e) = &r.measured {
            let _ = writeln!(s, "       rt.matmul failed: {e}");
        }
    }
    let within = rows.iter().filter(|r| r.within()).count();
    let decode: Vec<bool> = rows.iter().filter_map(|r| r.on_cpu(host)).collect();
    let worst = rows
        .iter()
        .filter_map(CheckRow::ratio)
        .map(|r| r.max(1.0 / r))
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        s,
        "{within}/{} predictions within 1.5× (worst {worst:.2}×); decode matmul on `{host}` under min-energy and min-latency for {}/{} dtypes",
        rows.len(),
        decode.iter().filter(|&&b| b).count(),
        decode.len()
    );
    s
}

fn check(a: CalibrateArgs) -> Result<(), String> {
    let &[n, k] = &a.nk[..] else {
        return Err("--nk takes two numbers: the weight's rows and columns".into());
    };
    if a.ms.is_empty() || a.dtypes.is_empty() {
        return Err("--ms and --dtypes: name at least one".into());
    }
    let rt = Runtime::with_backends(&a.devices).map_err(|e| format!("cannot start wattle: {e}"))?;
    let (profile, from) = match &a.profile {
        Some(path) => (
            Profile::load(path).map_err(|e| e.to_string())?,
            path.display().to_string(),
        ),
        None => {
            let p = rt.cached_profile().ok_or(
                "no (fresh) profile of this machine in the cache: run `wattle calibrate` first, or pass --profile",
            )?;
            let path = wattle::sched::profile_path(&rt.devices())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (p, path)
        }
    };
    let host = profile
        .devices
        .iter()
        .find(|d| d.kind == ProfileKind::Cpu)
        .ok_or("the profile has no device of kind cpu")?;
    let host_id = host.id.clone();
    if host.fingerprint != fingerprint(&rt.cpu()) {
        println!(
            "warning: the profile's `{}` ({}) is not this CPU, or it is stale (fingerprint {} vs {})",
            host.id,
            host.name,
            host.fingerprint,
            fingerprint(&rt.cpu())
        );
    }
    println!(
        "checking {from} against rt.matmul on {} ({}; hot: the same weight each call; median of ≥ 5 calls and ≥ 200 ms; cores: CPU time over wall time while timed)",
        rt.cpu().name(),
        rt.cpu().info().driver
    );
    let rows = check_rows(
        &rt,
        &profile,
        &a.dtypes,
        (n, k),
        &a.ms,
        (5, Duration::from_millis(200)),
    )?;
    let table = check_table(&rows, &host_id);
    print!("{table}");
    let bad = rows.iter().filter(|r| !r.within()).count();
    let off_cpu = rows
        .iter()
        .filter(|r| r.on_cpu(&host_id) == Some(false))
        .count();
    if bad > 0 || off_cpu > 0 {
        return Err(format!(
            "check failed: {bad} predictions off by more than 1.5× (or missing), {off_cpu} decode matmuls not on `{host_id}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattle::sched::{DeviceProfile, OpPoint, Transfer};

    fn tiny_profile(rt: &Runtime) -> Profile {
        let cpu = rt.cpu();
        let ops = [DType::F32, DType::Q4_0]
            .into_iter()
            .flat_map(|dt| {
                [(1usize, 2e-6), (8, 1e-5)].map(|(m, s)| OpPoint {
                    op: OpDesc::matmul(m, 64, 64, dt),
                    seconds: s,
                    joules: s * 5.0,
                    source: Source::Measured,
                })
            })
            .collect();
        Profile {
            system: serde_json::Value::Null,
            devices: vec![DeviceProfile {
                id: "cpu".into(),
                name: cpu.name(),
                kind: ProfileKind::Cpu,
                fingerprint: fingerprint(&cpu),
                memory_bytes: 1 << 30,
                idle_watts: 1.0,
                transfer: Transfer {
                    bytes_per_s: 0.0,
                    latency_s: 0.0,
                    joules_per_byte: 0.0,
                },
                ops,
            }],
        }
    }

    /// The path runs and the table is sane (no timing is asserted: the machine is shared).
    #[test]
    fn check_prints_predicted_and_measured() {
        let rt = Runtime::with_backends("cpu").expect("cpu runtime");
        let p = tiny_profile(&rt);
        let rows = check_rows(
            &rt,
            &p,
            &[DType::F32, DType::Q4_0, DType::Q6_K],
            (64, 256),
            &[1, 4],
            (2, Duration::from_millis(1)),
        )
        .expect("check");
        assert_eq!(rows.len(), 6);
        for r in &rows {
            let t = *r.measured.as_ref().expect("rt.matmul ran");
            assert!(t.is_finite() && t > 0.0, "{t}");
            let OpDesc::Matmul { m, dtype, .. } = r.op else {
                panic!("not a matmul")
            };
            // Q6_K has no point in the profile: no prediction, never "within".
            assert_eq!(r.predicted.is_none(), dtype == DType::Q6_K);
            if let Some((_, src)) = r.predicted {
                // k = 256 is beyond the points (k = 64): extrapolated.
                assert_eq!(src, Source::Extrapolated);
                assert!(r.ratio().is_some_and(|x| x.is_finite() && x > 0.0));
            }
            assert_eq!(r.chosen.is_some(), m == 1);
            if dtype != DType::Q6_K && m == 1 {
                assert_eq!(r.on_cpu("cpu"), Some(true));
            }
        }
        let t = check_table(&rows, "cpu");
        assert!(t.contains("predicted ms") && t.contains("q4_0") && t.contains("no point"));
        assert!(t.contains("decode matmul on `cpu`"), "{t}");
        assert_eq!(t.lines().count(), 1 + rows.len() + 1, "{t}");
    }
}
