//! `wattle tune`: autotune the GPU matmul kernels (SPEC §5) and record the winners in the
//! tuning cache; with `--report`, also print each point's time, bandwidth and share of the
//! device's measured read bandwidth.

use clap::Args;
use wattle::{DType, Runtime, TuneOptions};

/// Arguments of `wattle tune`.
#[derive(Args, Debug)]
pub struct TuneArgs {
    /// GPU APIs to tune (as `WATTLE_BACKENDS`: vulkan, gl, metal, dx12, gpu, all).
    #[arg(long, default_value = "gpu", value_name = "LIST")]
    devices: String,
    /// Weight dtypes, comma-separated (as ggml names them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "f32,f16,bf16,q8_0,q4_0,q4_1,q4_K,q6_K",
        value_name = "LIST"
    )]
    dtypes: Vec<DType>,
    /// Shapes as M,N,K (x [M, K], w [N, K]); repeat for several. Default: decode of 4096×4096,
    /// 4096×14336 and 14336×4096 weights.
    #[arg(long = "shape", value_name = "M,N,K")]
    shapes: Vec<String>,
    /// Timed runs per candidate (median).
    #[arg(long, default_value_t = 3, value_name = "N")]
    reps: usize,
    /// Print a table: time, GB/s of weight bytes, % of the device's probed read bandwidth.
    #[arg(long)]
    report: bool,
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--shape {s}: {e}"))?;
    match v[..] {
        [m, n, k] if m > 0 && n > 0 && k > 0 => Ok((m, n, k)),
        _ => Err(format!(
            "--shape {s}: expected three positive numbers M,N,K"
        )),
    }
}

/// Runs `wattle tune`.
pub fn run(a: TuneArgs) -> Result<(), String> {
    let rt = Runtime::with_backends(&a.devices).map_err(|e| e.to_string())?;
    if rt.gpus().is_empty() {
        return Err("no GPU device to tune".into());
    }
    let mut opts = TuneOptions {
        dtypes: a.dtypes.clone(),
        reps: a.reps.max(1),
        verbose: true,
        ..TuneOptions::default()
    };
    if !a.shapes.is_empty() {
        opts.shapes = a
            .shapes
            .iter()
            .map(|s| parse_shape(s))
            .collect::<Result<_, _>>()?;
    }
    let entries = rt.tune(&opts).map_err(|e| e.to_string())?;
    if !a.report {
        eprintln!("tuned {} points", entries.len());
        return Ok(());
    }
    let mut probes = Vec::new();
    for dev in rt.gpus() {
        let bw = wattle::internals::gpu_probe_bandwidth(&dev).unwrap_or(0.0);
        probes.push((dev.name(), bw));
    }
    println!(
        "{:<34} {:<6} {:<18} {:<36} {:>11} {:>11} {:>8} {:>7}",
        "device", "dtype", "shape", "choice", "us", "default us", "GB/s", "% probe"
    );
    for e in &entries {
        let (m, n, k) = e.shape;
        let bytes = (n * k / e.dtype.block_size() * e.dtype.block_bytes()) as f64;
        let gbs = bytes / e.seconds / 1e9;
        let probe = probes
            .iter()
            .find(|(d, _)| *d == e.device)
            .map_or(0.0, |p| p.1);
        println!(
            "{:<34} {:<6} {:<18} {:<36} {:>11.1} {:>11.1} {:>8.2} {:>6.0}%",
            e.device,
            e.dtype.to_string(),
            format!("{m}x{n}x{k}"),
            e.choice,
            e.seconds * 1e6,
            e.default_seconds * 1e6,
            gbs,
            if probe > 0.0 {
                100.0 * gbs / probe
            } else {
                0.0
            }
        );
    }
    for (d, bw) in probes {
        println!("probe read bandwidth on {d}: {bw:.2} GB/s");
    }
    Ok(())
}
