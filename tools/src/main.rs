//! `wattle`: list devices and benchmark wattle's kernels against the machine's roofline and
//! against peers (SPEC §10).

mod bench;
mod calibrate;
mod compare;
mod devices;
mod gguf_cmd;
mod llm;
mod meters;
mod peer;
mod plan;
mod report;
mod stats;
mod sysinfo;
mod tune;

use bench::{BenchConfig, DeviceFilter, Mode, ShapeSet, Suite};
use clap::{Args, Parser, Subcommand};
use peer::PeerSpec;
use report::Format;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wattle::{DType, Runtime};

#[derive(Parser, Debug)]
#[command(
    name = "wattle",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("WATTLE_GIT_HASH"), ")"),
    about = "wattle: compute kernels for on-device LLM inference"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List every device: kind, name, API, driver, limits, subgroup size, features.
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Devices to open (cpu, vulkan, metal, dx12, gl, webgpu, gpu, all).
        #[arg(long, default_value = "all", value_name = "LIST")]
        devices: DeviceFilter,
    },
    /// Measure each device's roofline and time matmul (decode and prefill, hot and cold).
    Bench(Box<BenchArgs>),
    /// Autotune the GPU matmul kernels and record the fastest in the tuning cache.
    Tune(tune::TuneArgs),
    /// List every energy meter (measured or modelled), whether it is readable and why not.
    Meters(meters::MetersArgs),
    /// Measure this machine's profile: time and energy per device, op, dtype and shape.
    Calibrate(calibrate::CalibrateArgs),
    /// Place a chain of ops (or a GGUF model's layers) with a profile under a policy.
    Plan(plan::PlanArgs),
    /// Compare profiles of different machines side by side (optionally an SVG roofline).
    Compare(compare::CompareArgs),
    /// Quantize every 2-D float weight of a GGUF file (others copied; metadata kept).
    Quantize {
        /// Input GGUF file (never overwritten).
        input: PathBuf,
        /// Output GGUF file.
        output: PathBuf,
        /// Weight type: q8_0, q4_0, q4_1, q4_K, q6_K, f16, bf16 or f32.
        dtype: DType,
    },
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        /// The GGUF file.
        file: PathBuf,
    },
    /// Print the token ids of a text file (read verbatim; special-token text not parsed) under a
    /// GGUF model's tokenizer, space separated, BOS only when the model asks for it.
    Tokenize {
        /// The GGUF model (its `tokenizer.ggml.*` metadata).
        model: PathBuf,
        /// The text file.
        file: PathBuf,
    },
    /// Generate text from a GGUF model: the generated text only to stdout, speed to stderr.
    Run(Box<llm::cli::RunArgs>),
    /// Perplexity of a text file as llama-perplexity computes it; ends with `PPL = … +/- …`.
    Perplexity(Box<llm::cli::PerplexityArgs>),
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Suites to run, comma-separated: matmul, attention, kv, linear, model (model needs --model).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "matmul",
        value_name = "LIST"
    )]
    suite: Vec<Suite>,
    /// Write JSON (one object: system, roofline, rows, notes) instead of the table.
    #[arg(long, group = "format")]
    json: bool,
    /// Write CSV (a header and one line per figure) instead of the table.
    #[arg(long, group = "format")]
    csv: bool,
    /// Write a Markdown report instead of the table.
    #[arg(long, group = "format")]
    md: bool,
    /// Write the report to FILE (format from --json/--csv/--md, else from the extension); the
    /// table still goes to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Compare with a peer (repeatable): ggml=../shared/peers/ggml-perf.sh for ggml's CPU
    /// backend (run as `PATH matmul cpu`, `PATH attention cpu`) and
    /// ggml-vulkan=../shared/peers/ggml-perf.sh for its Vulkan backend (`PATH matmul vulkan`,
    /// compared with wattle's Vulkan rows); candle=../shared/peers/candle-perf.sh for candle's
    /// quantized matmul (run as `PATH --n 1,512`, matmul only). A row measured by several
    /// peers shows the first; the others go into the notes.
    #[arg(long, value_name = "NAME=PATH")]
    peer: Vec<PeerSpec>,
    /// Small shapes, fewer repetitions, quicker probes: a smoke run for CI.
    #[arg(long)]
    quick: bool,
    /// Devices to benchmark: cpu, vulkan, metal, dx12, gl, webgpu, gpu (all GPUs), all.
    #[arg(long, default_value = "all", value_name = "LIST")]
    devices: DeviceFilter,
    /// Weight dtypes, comma-separated (as ggml names them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "f32,f16,bf16,q8_0,q4_0,q4_1,q4_K,q6_K",
        value_name = "LIST"
    )]
    dtypes: Vec<DType>,
    /// Modes: hot (same weights each repetition) and/or cold (rotate > 2× LLC of copies).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hot,cold",
        value_name = "LIST"
    )]
    modes: Vec<Mode>,
    /// Timed repetitions at least (≥ 5).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Untimed warm-up calls per figure.
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// Batches (activation rows) to run on every device instead of the standard shapes.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    m: Option<Vec<usize>>,
    /// Weight rows (output features) instead of the standard shapes.
    #[arg(long, value_name = "N")]
    n: Option<usize>,
    /// Reduction length instead of the standard shapes.
    #[arg(long, value_name = "N")]
    k: Option<usize>,
    /// Bandwidth-probe buffer in MiB (default 1024, 256 with --quick).
    #[arg(long, value_name = "MIB")]
    probe_mib: Option<usize>,
    /// Skip the roofline probes (no % of roofline).
    #[arg(long)]
    no_roofline: bool,
    /// The GGUF model of `--suite model` (pp512 / tg128 through the reference decoder).
    #[arg(long, value_name = "GGUF")]
    model: Option<PathBuf>,
    /// Read the energy meters around every figure: J per call, W and GOP/J columns, labelled
    /// measured or modelled (see `wattle meters`).
    #[arg(long)]
    energy: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Devices { json, devices } => devices::run(&devices, json),
        Cmd::Bench(args) => run_bench(*args),
        Cmd::Tune(args) => tune::run(args),
        Cmd::Meters(args) => meters::run(args),
        Cmd::Calibrate(args) => calibrate::run(args),
        Cmd::Plan(args) => plan::run(args),
        Cmd::Compare(args) => compare::run(args),
        Cmd::Quantize {
            input,
            output,
            dtype,
        } => gguf_cmd::quantize(&input, &output, dtype),
        Cmd::Inspect { file } => gguf_cmd::inspect(&file),
        Cmd::Tokenize { model, file } => llm::tokenizer::run(&model, &file),
        Cmd::Run(args) => llm::cli::run(&args),
        Cmd::Perplexity(args) => llm::cli::perplexity_cmd(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wattle: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the runtime on the backends `filter` names.
fn open_runtime(filter: &DeviceFilter) -> Result<Runtime, String> {
    Runtime::with_backends(&filter.backends()).map_err(|e| format!("cannot start wattle: {e}"))
}

fn run_bench(a: BenchArgs) -> Result<(), String> {
    let format = if a.json {
        Some(Format::Json)
    } else if a.csv {
        Some(Format::Csv)
    } else if a.md {
        Some(Format::Markdown)
    } else {
        None
    };
    let file_format = match (&a.out, format) {
        (Some(_), Some(f)) => Some(f),
        (Some(p), None) => Some(Format::from_extension(p).ok_or_else(|| {
            format!(
                "--out {}: say the format with --json, --csv or --md (or use a .json, .csv or .md name)",
                p.display()
            )
        })?),
        (None, _) => None,
    };
    let reps = a.reps.unwrap_or(if a.quick { 5 } else { 7 });
    if reps < 5 {
        return Err(format!(
            "--reps {reps}: at least 5 repetitions are needed for a median and spread"
        ));
    }
    if a.suite.is_empty() {
        return Err("--suite: name at least one suite".into());
    }
    if a.dtypes.is_empty() {
        return Err("--dtypes: name at least one dtype".into());
    }
    if a.modes.is_empty() {
        return Err("--modes: name hot, cold or both".into());
    }
    let shapes = match (&a.m, a.n, a.k) {
        (None, None, None) => None,
        (m, n, k) => {
            let (sn, sk, sm) = bench::STANDARD;
            let mut s = ShapeSet {
                n: n.unwrap_or(sn),
                k: k.unwrap_or(sk),
                ms: m.clone().unwrap_or_else(|| sm.to_vec()),
                label: None,
            };
            if (s.n, s.k) != (sn, sk) || s.ms.iter().any(|m| !sm.contains(m)) {
                s.label = Some("shape set on the command line".into());
            }
            if s.n == 0 || s.k == 0 || s.ms.is_empty() || s.ms.contains(&0) {
                return Err("--m, --n and --k must be positive".into());
            }
            Some(s)
        }
    };
    let probe_bytes = match a.probe_mib {
        Some(0) => return Err("--probe-mib must be positive".into()),
        Some(mib) => Some(mib.checked_mul(1 << 20).ok_or("--probe-mib is too large")?),
        None => None,
    };
    let rt = open_runtime(&a.devices)?;
    let devices: Vec<_> = rt
        .devices()
        .into_iter()
        .filter(|d| a.devices.selects(d))
        .collect();
    let mut missing = Vec::new();
    for api in a.devices.named_gpu_apis() {
        if !devices.iter().any(|d| sysinfo::kind_name(d) == api) {
            missing.push(api);
        }
    }
    if devices.is_empty() {
        return Err(format!(
            "no device to benchmark: no {} adapter found (see `wattle devices`)",
            missing.join(" or ")
        ));
    }
    let cfg = BenchConfig {
        suites: a.suite,
        quick: a.quick,
        dtypes: a.dtypes,
        modes: a.modes,
        warmup: a.warmup.unwrap_or(if a.quick { 1 } else { 2 }),
        min_reps: reps,
        max_reps: reps.max(if a.quick { 10 } else { 50 }),
        min_time: if a.quick {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        },
        shapes,
        llc_bytes: sysinfo::llc_bytes().unwrap_or(sysinfo::DEFAULT_LLC_BYTES),
        probe_bytes,
        no_roofline: a.no_roofline,
        model: a.model,
        peer: a.peer,
        energy: a.energy.then(|| bench::EnergyMeters::new(rt.meters())),
    };
    let mut report = bench::run(&rt, &devices, &cfg);
    for api in missing {
        report.notes.insert(
            0,
            format!("no {api} adapter found: nothing benchmarked there"),
        );
    }
    let stdout_format = if a.out.is_some() {
        Format::Table
    } else {
        format.unwrap_or(Format::Table)
    };
    print!("{}", report::render(&report, stdout_format)?);
    if let (Some(path), Some(f)) = (&a.out, file_format) {
        let text = report::render(&report, f)?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wattle bench: wrote {}", path.display());
    }
    Ok(())
}
