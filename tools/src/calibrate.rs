//! `wattle calibrate [--quick]`: measure this machine's profile (SPEC §9) and write it to the
//! cache directory (and optionally to a file to share).

use clap::Args;
use std::path::PathBuf;
use wattle::sched::CalibrateOptions;

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
}

pub fn run(a: CalibrateArgs) -> Result<(), String> {
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
