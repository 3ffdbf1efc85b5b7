//! `wattle bench`: rooflines, the figures of each suite (matmul hot and cold, …) and the peer
//! comparison.

use crate::peer::{self, PeerFigure, PeerSpec};
use crate::stats::Summary;
use crate::sysinfo::{kind_name, SystemInfo};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wattle::energy::{EnergyWindow, Measurement};
use wattle::{DType, Device, DeviceKind, Runtime, Tensor};
use wattle_kernels::probe;

pub mod attention;
pub mod kv;
pub mod linear;
pub mod model;

/// How weights are reused across repetitions (SPEC §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The same weights every repetition (as ggml's test-backend-ops; used for peer ratios).
    Hot,
    /// Weight copies totalling more than twice the last-level cache, rotated.
    Cold,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Hot => "hot",
            Mode::Cold => "cold",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hot" => Ok(Mode::Hot),
            "cold" => Ok(Mode::Cold),
            _ => Err(format!("unknown mode `{s}` (expected hot or cold)")),
        }
    }
}

/// A group of figures `wattle bench --suite` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// `rt.matmul`: every weight dtype at decode and prefill, hot and cold.
    Matmul,
    /// `rt.attention`: decode at long contexts, prefill, K/V dtypes and windows.
    Attention,
    /// `rt.linear_attention`: every kind, chunked and recurrent, prefill and decode, against
    /// softmax attention on the same layer.
    Linear,
    /// `KvCache::attend`: decode over every cache format, with and without eviction.
    Kv,
    /// A GGUF model end to end (`--model`): pp512 and tg128 tokens/s as llama-bench, J/token.
    Model,
}

impl Suite {
    /// Every suite, in the order a run takes them.
    pub const ALL: [Suite; 5] = [
        Suite::Matmul,
        Suite::Attention,
        Suite::Linear,
        Suite::Kv,
        Suite::Model,
    ];

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Matmul => "matmul",
            Suite::Attention => "attention",
            Suite::Linear => "linear",
            Suite::Model => "model",
            Suite::Kv => "kv",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        Suite::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Suite::ALL.iter().map(|x| x.name()).collect();
                format!("unknown suite `{s}` (expected {})", names.join(", "))
            })
    }
}

/// A matmul shape: `x [m, k] · w [n, k]ᵀ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Shape {
    /// Activation rows (batch / tokens).
    pub m: usize,
    /// Weight rows (output features).
    pub n: usize,
    /// Reduction length.
    pub k: usize,
}

impl Shape {
    /// `decode` for one activation row, else `prefill`.
    pub fn phase(&self) -> &'static str {
        if self.m == 1 {
            "decode"
        } else {
            "prefill"
        }
    }

    /// Floating-point operations: 2·m·n·k.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}×{}", self.m, self.n, self.k)
    }
}

/// The weight matrix and batches a device is benchmarked on, with a label when they are not
/// the standard model shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeSet {
    /// Weight rows.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Activation rows, one figure each (1 = decode).
    pub ms: Vec<usize>,
    /// Why the shapes differ from the standard ones (shown with every row), if they do.
    pub label: Option<String>,
}

/// The standard shapes (SPEC §10): a 4096×14336 weight (a Llama-3-8B FFN down projection),
/// decode m = 1 and prefill m = 512.
pub const STANDARD: (usize, usize, [usize; 2]) = (4096, 14336, [1, 512]);

/// Which shapes a device gets: the standard ones, except smaller clearly labelled ones for
/// software GPUs (emulated on the CPU, they would take minutes) and for `--quick`.
pub fn shapes_for(dev: &Device, quick: bool) -> ShapeSet {
    let software_gpu = !dev.is_cpu() && dev.info().software;
    match (software_gpu, quick) {
        (false, false) => ShapeSet {
            n: STANDARD.0,
            k: STANDARD.1,
            ms: STANDARD.2.to_vec(),
            label: None,
        },
        (false, true) => ShapeSet {
            n: 2048,
            k: 4096,
            ms: vec![1, 16],
            label: Some("quick: small shape".into()),
        },
        (true, false) => ShapeSet {
            n: 1024,
            k: 1024,
            ms: vec![1, 64],
            label: Some("small shape: software GPU".into()),
        },
        (true, true) => ShapeSet {
            n: 512,
            k: 512,
            ms: vec![1, 16],
            label: Some("quick, small shape: software GPU".into()),
        },
    }
}

/// Settings of one `wattle bench` run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The suites to run.
    pub suites: Vec<Suite>,
    /// Smaller shapes and fewer repetitions.
    pub quick: bool,
    /// Weight dtypes.
    pub dtypes: Vec<DType>,
    /// Hot and/or cold.
    pub modes: Vec<Mode>,
    /// Untimed calls before timing.
    pub warmup: usize,
    /// Timed repetitions at least (≥ 5 per SPEC §10).
    pub min_reps: usize,
    /// Timed repetitions at most.
    pub max_reps: usize,
    /// Keep repeating (up to `max_reps`) until this much time has been timed.
    pub min_time: Duration,
    /// Explicit shapes for every device (`--m/--n/--k`), replacing [`shapes_for`].
    pub shapes: Option<ShapeSet>,
    /// Last-level cache size, for cold mode.
    pub llc_bytes: u64,
    /// Bandwidth-probe buffer in bytes (`None`: the probe's default).
    pub probe_bytes: Option<usize>,
    /// Skip the roofline probes.
    pub no_roofline: bool,
    /// The GGUF model of the model suite.
    pub model: Option<std::path::PathBuf>,
    /// The peers to compare with (each with the rows of its backend's devices).
    pub peer: Vec<PeerSpec>,
    /// With `--energy`: the meters read around every figure's timed repetitions.
    pub energy: Option<EnergyMeters>,
}

/// The meters of `wattle bench --energy` and the energy each timed figure used.
#[derive(Clone, Default)]
pub struct EnergyMeters {
    meters: Vec<wattle::energy::Meter>,
    log: Arc<Mutex<Vec<(String, Summary, RowEnergy)>>>,
}

impl fmt::Debug for EnergyMeters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.meters.iter().map(|m| m.name()).collect();
        f.debug_struct("EnergyMeters")
            .field("meters", &names)
            .finish()
    }
}

impl EnergyMeters {
    /// Reads `meters` (usually `rt.meters()`: measured ones where readable, else modelled).
    pub fn new(meters: Vec<wattle::energy::Meter>) -> EnergyMeters {
        EnergyMeters {
            meters,
            log: Arc::default(),
        }
    }

    /// Records what the window of one figure measured, keyed by its device and timings.
    fn record(&self, device: String, time: Summary, calls: usize, m: &Measurement) {
        let calls = calls.max(1) as f64;
        let e = RowEnergy {
            joules_per_call: m.joules / calls,
            watts: m.watts(),
            gops_per_joule: None,
            source: m.source.name().to_string(),
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((device, time, e));
    }

    /// Fills each row's energy from the window whose timings are the row's own (every suite
    /// summarises the samples `time_calls` returned, so the summaries are identical).
    fn apply(&self, rows: &mut [Row]) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows.iter_mut() {
            if let Some((_, _, e)) = log.iter().find(|(d, t, _)| *d == r.device && *t == r.time) {
                let mut e = e.clone();
                e.gops_per_joule = (e.joules_per_call > 0.0)
                    .then(|| r.gops * (r.time.median_us * 1e-6) / e.joules_per_call);
                r.energy = Some(e);
            }
        }
    }
}

/// The energy of one figure (`--energy`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowEnergy {
    /// Joules per call: the window's joules over its timed calls.
    pub joules_per_call: f64,
    /// Average watts over the window.
    pub watts: f64,
    /// 10⁹ operations per joule (the row's operations per call over its joules per call).
    pub gops_per_joule: Option<f64>,
    /// `measured`, or `modelled` when any summed meter is a power model.
    pub source: String,
}

/// The ceilings of one device.
#[derive(Clone, Debug, Serialize)]
pub struct Roofline {
    /// Device label (as in the rows).
    pub device: String,
    /// Memory read bandwidth, GB/s.
    pub bandwidth_gb_per_s: Option<f64>,
    /// f32 FMA peak, GFLOP/s.
    pub fma_gflops: Option<f64>,
    /// int8 dot-product peak, 10⁹ int ops/s (a product and its add count 2): the compute roof
    /// of quantized weights, whose kernels multiply integer codes.
    pub int8_gops: Option<f64>,
    /// How the figures were found (best pattern, threads, vector width), or why they are missing.
    pub detail: String,
    /// Read bandwidth over a buffer the size of each hot-mode working set (CPU): rereading the
    /// same weights, a kernel is partly or wholly served by the caches, so hot rows are held
    /// to this ceiling (never below `bandwidth_gb_per_s`).
    pub hot: Vec<HotBandwidth>,
}

/// The read bandwidth of one working-set size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HotBandwidth {
    /// Working-set bytes (one weight matrix).
    pub bytes: u64,
    /// Best read bandwidth rereading that many bytes, GB/s.
    pub gb_per_s: f64,
}

impl Roofline {
    /// A roofline with nothing measured, saying why.
    pub fn unmeasured(device: String, detail: &str) -> Roofline {
        Roofline {
            device,
            bandwidth_gb_per_s: None,
            fma_gflops: None,
            int8_gops: None,
            detail: detail.into(),
            hot: Vec::new(),
        }
    }

    /// The bandwidth ceiling of a figure: the memory ceiling, or for hot mode the larger of it
    /// and the ceiling of rereading `weight_bytes`.
    pub fn bandwidth_for(&self, mode: Mode, weight_bytes: u64) -> Option<f64> {
        let hot = match mode {
            Mode::Hot => self
                .hot
                .iter()
                .find(|h| h.bytes == weight_bytes)
                .map(|h| h.gb_per_s),
            Mode::Cold => None,
        };
        match (self.bandwidth_gb_per_s, hot) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The compute roof of a weight dtype and its name: the int8 dot-product peak for
    /// quantized weights (when measured), else the f32 FMA peak.
    pub fn compute_roof(&self, quantized: bool) -> Option<(f64, &'static str)> {
        match (quantized, self.int8_gops, self.fma_gflops) {
            (true, Some(i), _) => Some((i, "int8")),
            (_, _, Some(f)) => Some((f, "fma")),
            _ => None,
        }
    }

    /// Attainable GOPS at arithmetic intensity `flops_per_byte` with bandwidth `bw` GB/s and
    /// compute roof `compute` (the lower of the two roofs), and which one binds (`memory`, or
    /// the compute roof's name).
    pub fn attainable_with(
        bw: Option<f64>,
        compute: Option<(f64, &'static str)>,
        flops_per_byte: f64,
    ) -> Option<(f64, &'static str)> {
        let mem = bw.map(|b| b * flops_per_byte);
        match (mem, compute) {
            (Some(m), Some((c, _))) if m < c => Some((m, "memory")),
            (_, Some(c)) => Some(c),
            (Some(m), None) => Some((m, "memory")),
            (None, None) => None,
        }
    }
}

/// One benchmark figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Device label, e.g. `cpu (AMD EPYC)`.
    pub device: String,
    /// `cpu`, `vulkan`, ….
    pub device_kind: String,
    /// Operation.
    pub op: String,
    /// `decode` (m = 1) or `prefill`.
    pub phase: String,
    /// Weight dtype.
    pub dtype: String,
    /// Activation rows.
    pub m: usize,
    /// Weight rows.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Hot or cold.
    pub mode: Mode,
    /// Weight copies rotated (1 in hot mode).
    pub copies: usize,
    /// Why the shape is not the standard one, if it is not.
    pub shape_note: Option<String>,
    /// The case in words for figures that are not a matmul (e.g. `ctx 16384, 32/8 heads,
    /// d 128`), shown instead of `m×n×k`; `m`, `n`, `k` then hold the op's nearest analogues.
    pub case: Option<String>,
    /// Timings.
    #[serde(flatten)]
    pub time: Summary,
    /// Bytes moved per call: weights + x + y.
    pub bytes: u64,
    /// Bytes over median time.
    pub gb_per_s: f64,
    /// 2·m·n·k over median time, 10⁹/s.
    pub gops: f64,
    /// The bandwidth ceiling this figure is held to, GB/s (see [`Roofline::bandwidth_for`]).
    pub roofline_gb_per_s: Option<f64>,
    /// Share of the attainable roofline at this arithmetic intensity, percent.
    pub roofline_pct: Option<f64>,
    /// Which roof binds: `memory` or `compute`.
    pub bound: Option<String>,
    /// Peer name when a peer figure exists for this row.
    pub peer: Option<String>,
    /// Peer median µs.
    pub peer_us: Option<f64>,
    /// Peer time over ours (> 1: wattle is faster).
    pub peer_ratio: Option<f64>,
    /// Energy per call (`--energy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy: Option<RowEnergy>,
}

/// What a non-matmul suite measured for one case: the row's identity and its raw figures.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Operation, e.g. `attention`.
    pub op: String,
    /// `decode` or `prefill`.
    pub phase: String,
    /// The operand format named in the `dtype` column.
    pub dtype: String,
    /// `m`, `n`, `k`: the op's nearest analogues of a matmul's (see [`Row::case`]).
    pub mnk: (usize, usize, usize),
    /// The case in words.
    pub case: String,
    /// Bytes moved per call.
    pub bytes: u64,
    /// Operations per call.
    pub ops: f64,
}

impl Row {
    /// The hot-mode row of a non-matmul figure measured on `dev` (rooflines and peers are
    /// filled in later).
    pub fn figure(dev: &Device, f: Figure, time: Summary) -> Row {
        let secs = time.median_us * 1e-6;
        Row {
            device: device_label(dev),
            device_kind: kind_name(dev),
            op: f.op,
            phase: f.phase,
            dtype: f.dtype,
            m: f.mnk.0,
            n: f.mnk.1,
            k: f.mnk.2,
            mode: Mode::Hot,
            copies: 1,
            shape_note: None,
            case: Some(f.case),
            time,
            bytes: f.bytes,
            gb_per_s: f.bytes as f64 / secs / 1e9,
            gops: f.ops / secs / 1e9,
            roofline_gb_per_s: None,
            roofline_pct: None,
            bound: None,
            peer: None,
            peer_us: None,
            peer_ratio: None,
            energy: None,
        }
    }

    /// `m×n×k`.
    pub fn shape(&self) -> Shape {
        Shape {
            m: self.m,
            n: self.n,
            k: self.k,
        }
    }

    /// The case as the table shows it: [`Row::case`], else `m×n×k`.
    pub fn case_label(&self) -> String {
        self.case
            .clone()
            .unwrap_or_else(|| self.shape().to_string())
    }

    /// Bytes of the operands the op reuses across calls (the matmul's weights): what hot mode
    /// keeps in the caches.
    fn reused_bytes(&self) -> u64 {
        if self.case.is_some() {
            self.bytes
        } else {
            self.bytes - 4 * (self.m * self.k + self.m * self.n) as u64
        }
    }
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The machine and build.
    pub system: SystemInfo,
    /// Quick mode.
    pub quick: bool,
    /// Ceilings per device.
    pub roofline: Vec<Roofline>,
    /// Figures.
    pub rows: Vec<Row>,
    /// Skipped cases, peer failures and other remarks.
    pub notes: Vec<String>,
}

/// Weight copies for cold mode: enough that they total more than twice the last-level cache,
/// and at least 2 even when one weight already exceeds that (capped at 65536 for tiny weights).
pub fn cold_copies(weight_bytes: u64, llc_bytes: u64) -> usize {
    let w = weight_bytes.max(1);
    let need = (2 * llc_bytes) / w + 1;
    need.clamp(2, 1 << 16) as usize
}

/// Bytes one matmul call moves: the weights, x (f32) and y (f32).
pub fn call_bytes(weight_bytes: u64, s: Shape) -> u64 {
    weight_bytes + 4 * (s.m * s.k) as u64 + 4 * (s.m * s.n) as u64
}

/// Device label used in rows and rooflines.
pub fn device_label(dev: &Device) -> String {
    format!("{} ({})", kind_name(dev), dev.name())
}

/// Which devices `--devices` selects. Names: `cpu`, `vulkan`, `metal`, `dx12`, `gl`, `webgpu`,
/// `gpu` (every GPU) and `all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFilter(Vec<String>);

/// Names `--devices` accepts.
pub const DEVICE_NAMES: [&str; 8] = [
    "cpu", "vulkan", "metal", "dx12", "gl", "webgpu", "gpu", "all",
];

impl FromStr for DeviceFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names: Vec<String> = s
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err("no device named (expected e.g. cpu,vulkan)".into());
        }
        for n in &names {
            if !DEVICE_NAMES.contains(&n.as_str()) {
                return Err(format!(
                    "unknown device `{n}` (expected a comma-separated list of {})",
                    DEVICE_NAMES.join(", ")
                ));
            }
        }
        Ok(DeviceFilter(names))
    }
}

impl DeviceFilter {
    /// The backend list for [`Runtime::with_backends`].
    pub fn backends(&self) -> String {
        self.0.join(",")
    }

    /// Whether `dev` is selected.
    pub fn selects(&self, dev: &Device) -> bool {
        let has = |n: &str| self.0.iter().any(|x| x == n);
        has("all")
            || match dev.kind() {
                DeviceKind::Cpu => has("cpu"),
                DeviceKind::Gpu { api } => has("gpu") || has(api.name()),
            }
    }

    /// Whether any GPU could be selected.
    pub fn wants_gpus(&self) -> bool {
        self.0.iter().any(|n| n != "cpu")
    }

    /// GPU APIs asked for by name.
    pub fn named_gpu_apis(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|n| !matches!(n.as_str(), "cpu" | "gpu" | "all"))
            .cloned()
            .collect()
    }
}

/// A small deterministic generator of weights and activations in [-1, 1).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn fill(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                // xorshift64*
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
                ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}

/// One unit of the progress bar.
pub(crate) struct Progress {
    bar: ProgressBar,
    /// Print a line per step when stderr is not a terminal (CI logs).
    lines: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        // A slow tick: the bar redraws on every step anyway, and the ticker thread competes with
        // the measurements for the cores.
        bar.enable_steady_tick(Duration::from_secs(1));
        Progress { bar, lines: !tty }
    }

    pub(crate) fn start(&self, msg: String) {
        if self.lines {
            eprintln!(
                "[{}/{}] {msg}",
                self.bar.position() + 1,
                self.bar.length().unwrap_or(0)
            );
        }
        self.bar.set_message(msg);
    }

    pub(crate) fn note(&self, msg: &str) {
        self.bar.suspend(|| eprintln!("wattle bench: {msg}"));
    }

    pub(crate) fn inc(&self) {
        self.bar.inc(1);
    }
}

/// Runs the whole benchmark on the selected devices.
pub fn run(rt: &Runtime, devices: &[Device], cfg: &BenchConfig) -> Report {
    let system = SystemInfo::collect(rt);
    let mut notes = Vec::new();
    // Count the steps for the progress bar: one per roofline, one per figure, one for the peer.
    let plan: Vec<(Device, ShapeSet)> = devices
        .iter()
        .map(|d| {
            (
                d.clone(),
                cfg.shapes
                    .clone()
                    .unwrap_or_else(|| shapes_for(d, cfg.quick)),
            )
        })
        .collect();
    let matmul = cfg.suites.contains(&Suite::Matmul);
    let figures: usize = if matmul {
        plan.iter()
            .map(|(_, s)| s.ms.len() * cfg.dtypes.len() * cfg.modes.len())
            .sum()
    } else {
        0
    };
    let attn = cfg.suites.contains(&Suite::Attention);
    let attn_figures = if attn {
        devices
            .iter()
            .map(|d| attention::cases_for(d, cfg.quick).len())
            .sum()
    } else {
        0
    };
    let kv_suite = cfg.suites.contains(&Suite::Kv);
    let kv_figures = if kv_suite {
        devices.len() * kv::figures(cfg.quick)
    } else {
        0
    };
    let lin = cfg.suites.contains(&Suite::Linear);
    let lin_figures = if lin {
        devices.len() * linear::steps(cfg)
    } else {
        0
    };
    let total = figures
        + attn_figures
        + lin_figures
        + kv_figures
        + if cfg.no_roofline { 0 } else { devices.len() }
        + cfg.peer.len() * usize::from(matmul)
        + cfg.peer.iter().filter(|p| p.has_attention()).count() * usize::from(attn);
    let with_model = cfg.suites.contains(&Suite::Model);
    let model_figures = if with_model {
        devices.len() * model::cases(cfg.quick).len()
    } else {
        0
    };
    let progress = Progress::new((total + model_figures) as u64);

    let mut roofline = Vec::new();
    for dev in devices {
        if cfg.no_roofline {
            roofline.push(Roofline::unmeasured(
                device_label(dev),
                "skipped (--no-roofline)",
            ));
            continue;
        }
        progress.start(format!("roofline {}", device_label(dev)));
        roofline.push(measure_roofline(
            dev,
            cfg,
            &hot_sizes(cfg, &plan, dev),
            &mut notes,
        ));
        progress.inc();
    }

    let mut rows = Vec::new();
    if matmul {
        for (dev, shapes) in &plan {
            bench_device(rt, dev, shapes, cfg, &progress, &mut rows, &mut notes);
        }
    }
    if attn {
        for dev in devices {
            attention::run(rt, dev, cfg, &progress, &mut rows, &mut notes);
        }
    }
    if lin {
        for dev in devices {
            linear::run(rt, dev, cfg, &progress, &mut rows, &mut notes);
        }
    }
    if with_model {
        for dev in devices {
            let path = cfg.model.as_deref();
            model::run(rt, dev, cfg, path, &progress, &mut rows, &mut notes);
        }
    }
    if kv_suite {
        for dev in devices {
            kv::run(rt, dev, cfg, &progress, &mut rows, &mut notes);
        }
    }

    if let Some(e) = &cfg.energy {
        e.apply(&mut rows);
    }

    // No kernel may beat the roofline. A probe that ran while the machine was busy can read
    // low: measure the CPU's ceilings once more and keep the better figures.
    apply_rooflines(&mut rows, &roofline);
    if !cfg.no_roofline {
        for (dev, roof) in devices.iter().zip(roofline.iter_mut()) {
            let label = device_label(dev);
            let beaten = rows
                .iter()
                .any(|r| r.device == label && r.roofline_pct.is_some_and(|p| p > 100.0));
            if dev.is_cpu() && beaten {
                progress.note("a figure beat the CPU roofline; probing the CPU again");
                let again =
                    measure_roofline(dev, cfg, &hot_sizes(cfg, &plan, dev), &mut Vec::new());
                roof.merge(&again);
            }
        }
        apply_rooflines(&mut rows, &roofline);
        for r in rows
            .iter()
            .filter(|r| r.roofline_pct.is_some_and(|p| p > 100.0))
        {
            notes.push(format!(
                "{} {} {} {} {}: {:.0}% of the measured roofline — the probe missed the ceiling \
                 (or the machine was busier while it ran)",
                r.device,
                r.dtype,
                r.phase,
                r.case_label(),
                r.mode,
                r.roofline_pct.unwrap_or_default()
            ));
        }
    }

    for spec in cfg.peer.iter().filter(|_| matmul) {
        progress.start(format!("peer {} ({})", spec.name, spec.path.display()));
        match peer::run(spec, system.kernel_threads) {
            Ok(figs) => {
                let matched = attach_peer(&mut rows, spec, &figs, &mut notes);
                if matched == 0 {
                    notes.push(format!(
                        "peer {}: no figure matches these shapes (it runs {}×{} with batches {:?}; \
                         run without --quick and shape overrides to compare)",
                        spec.name, STANDARD.0, STANDARD.1, STANDARD.2
                    ));
                }
            }
            Err(e) => {
                progress.note(&format!(
                    "peer {} unavailable, continuing without it: {e}",
                    spec.name
                ));
                notes.push(format!("peer {} unavailable: {e}", spec.name));
            }
        }
        progress.inc();
    }
    for spec in cfg.peer.iter().filter(|p| attn && p.has_attention()) {
        progress.start(format!(
            "peer {} attention ({})",
            spec.name,
            spec.path.display()
        ));
        let figs = peer::run_script(spec, "attention", system.kernel_threads).map(|out| {
            out.lines()
                .filter_map(peer::parse_attention_line)
                .collect::<Vec<_>>()
        });
        match figs {
            Ok(figs) => {
                if attention::attach_peer(&mut rows, spec, &figs) == 0 {
                    notes.push(format!(
                        "peer {}: no attention figure matches these cases (run without --quick)",
                        spec.name
                    ));
                }
            }
            Err(e) => {
                progress.note(&format!("peer {} attention unavailable: {e}", spec.name));
                notes.push(format!("peer {} attention unavailable: {e}", spec.name));
            }
        }
        progress.inc();
    }
    progress.bar.finish_and_clear();
    Report {
        system,
        quick: cfg.quick,
        roofline,
        rows,
        notes,
    }
}

/// Fills the peer columns of the hot matmul rows of the peer's backend that it measured;
/// returns how many matched. A row already holding an earlier peer's figure keeps it, and this
/// peer's figure and ratio go into `notes` instead, so nothing measured is lost.
pub fn attach_peer(
    rows: &mut [Row],
    spec: &PeerSpec,
    figs: &[PeerFigure],
    notes: &mut Vec<String>,
) -> usize {
    let name = &spec.name;
    let mut matched = 0;
    for r in rows
        .iter_mut()
        .filter(|r| r.device_kind == spec.backend() && r.mode == Mode::Hot && r.case.is_none())
    {
        let Ok(dtype) = r.dtype.parse::<DType>() else {
            continue;
        };
        if let Some(us) = peer::lookup(figs, dtype, r.m, r.n, r.k) {
            matched += 1;
            if let Some(first) = &r.peer {
                notes.push(format!(
                    "peer {name} on {} {} m={} n={} k={}: {us:.1} µs, peer/ours {:.2} (the table \
                     shows {first})",
                    r.device,
                    r.dtype,
                    r.m,
                    r.n,
                    r.k,
                    us / r.time.median_us
                ));
                continue;
            }
            r.peer = Some(name.to_string());
            r.peer_us = Some(us);
            r.peer_ratio = Some(us / r.time.median_us);
        }
    }
    matched
}

/// Distinct weight sizes `dev` runs in hot mode (for the CPU's working-set probes).
fn hot_sizes(cfg: &BenchConfig, plan: &[(Device, ShapeSet)], dev: &Device) -> Vec<u64> {
    if !cfg.suites.contains(&Suite::Matmul) {
        return Vec::new();
    }
    if !cfg.modes.contains(&Mode::Hot) {
        return Vec::new();
    }
    let mut sizes: Vec<u64> = plan
        .iter()
        .filter(|(d, _)| d == dev)
        .flat_map(|(_, s)| cfg.dtypes.iter().map(|&t| dtype_bytes(t, s.n, s.k)))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Sets each row's bandwidth ceiling, % of roofline and binding roof from its device's roofline.
pub fn apply_rooflines(rows: &mut [Row], rooflines: &[Roofline]) {
    for r in rows.iter_mut() {
        let Some(roof) = rooflines.iter().find(|x| x.device == r.device) else {
            continue;
        };
        let bw = roof.bandwidth_for(r.mode, r.reused_bytes());
        let quantized = r.dtype.parse::<DType>().is_ok_and(|d| d.is_quantized());
        // Operations per byte moved (both figures are over the same median time).
        let intensity = if r.gb_per_s > 0.0 {
            r.gops / r.gb_per_s
        } else {
            0.0
        };
        let att = Roofline::attainable_with(bw, roof.compute_roof(quantized), intensity);
        r.roofline_gb_per_s = bw;
        r.roofline_pct = att.map(|(a, _)| 100.0 * r.gops / a);
        r.bound = att.map(|(_, b)| b.to_string());
    }
}

impl Roofline {
    /// Keeps the better (higher) of each figure of `self` and `other`.
    fn merge(&mut self, other: &Roofline) {
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if other.bandwidth_gb_per_s > self.bandwidth_gb_per_s {
            self.detail = other.detail.clone();
        }
        self.bandwidth_gb_per_s = max(self.bandwidth_gb_per_s, other.bandwidth_gb_per_s);
        self.fma_gflops = max(self.fma_gflops, other.fma_gflops);
        self.int8_gops = max(self.int8_gops, other.int8_gops);
        for h in &other.hot {
            match self.hot.iter_mut().find(|x| x.bytes == h.bytes) {
                Some(x) => x.gb_per_s = x.gb_per_s.max(h.gb_per_s),
                None => self.hot.push(*h),
            }
        }
        self.detail.push_str("; probed twice, best kept");
    }
}

fn measure_roofline(
    dev: &Device,
    cfg: &BenchConfig,
    hot_sizes: &[u64],
    notes: &mut Vec<String>,
) -> Roofline {
    let label = device_label(dev);
    if dev.is_cpu() {
        let mut bw = if cfg.quick {
            probe::BandwidthOptions::quick()
        } else {
            probe::BandwidthOptions::default()
        };
        if let Some(b) = cfg.probe_bytes {
            bw.bytes = b;
        }
        let fma = if cfg.quick {
            probe::FmaOptions::quick()
        } else {
            probe::FmaOptions::default()
        };
        let bw_report = probe::read_bandwidth_report(&bw);
        let best =
            |r: Vec<probe::FmaSample>| r.into_iter().max_by(|a, b| a.gflops.total_cmp(&b.gflops));
        let best_fma = best(probe::fma_peak_report(&fma));
        let best_int8 = best(probe::int8_peak_report(&fma));
        let best_bw = bw_report.best();
        let mut detail = Vec::new();
        if let Some(b) = best_bw {
            detail.push(format!(
                "read {} {} × {} threads over {} MiB",
                b.pattern,
                b.vector,
                b.threads,
                bw_report.bytes >> 20
            ));
        }
        if let Some(f) = best_fma {
            detail.push(format!("fma {} × {} threads", f.vector, f.threads));
        }
        if let Some(i) = best_int8 {
            detail.push(format!("int8 dot {} × {} threads", i.vector, i.threads));
        }
        if (bw_report.bytes as u64) < 4 * cfg.llc_bytes {
            notes.push(format!(
                "bandwidth probe buffer ({} MiB) is not much larger than the last-level cache \
                 ({} MiB): the bandwidth roofline is a cache figure",
                bw_report.bytes >> 20,
                cfg.llc_bytes >> 20
            ));
        }
        let hot = hot_sizes
            .iter()
            .map(|&bytes| HotBandwidth {
                bytes,
                gb_per_s: probe::read_bandwidth(&probe::BandwidthOptions {
                    bytes: bytes as usize,
                    ..bw.clone()
                }),
            })
            .collect();
        Roofline {
            device: label,
            bandwidth_gb_per_s: best_bw.map(|b| b.gb_per_s),
            fma_gflops: best_fma.map(|f| f.gflops),
            int8_gops: best_int8.map(|i| i.gflops),
            detail: detail.join("; "),
            hot,
        }
    } else {
        gpu_roofline(dev, label)
    }
}

/// GPU ceilings from the GPU backend's probes.
fn gpu_roofline(dev: &Device, label: String) -> Roofline {
    let bw = wattle::internals::gpu_probe_bandwidth(dev);
    let fma = wattle::internals::gpu_probe_fma(dev);
    let mut detail = vec!["GPU probes (read kernel, FMA chains)".to_string()];
    if let Err(e) = &bw {
        detail.push(format!("bandwidth probe failed: {e}"));
    }
    if let Err(e) = &fma {
        detail.push(format!("FMA probe failed: {e}"));
    }
    Roofline {
        device: label,
        bandwidth_gb_per_s: bw.ok().filter(|b| b.is_finite() && *b > 0.0),
        fma_gflops: fma.ok().filter(|f| f.is_finite() && *f > 0.0),
        int8_gops: None,
        detail: detail.join("; "),
        hot: Vec::new(),
    }
}

/// Builds the weights of one (device, dtype, shape set): copy 0 serves hot mode, all of them
/// cold mode. Host data is made once and converted; each copy is its own allocation.
fn make_weights(
    dev: &Device,
    base: &[f32],
    dtype: DType,
    n: usize,
    k: usize,
    copies: usize,
) -> wattle::Result<Vec<Tensor>> {
    let w = Tensor::from_f32(base, &[n, k])?.quantize(dtype)?;
    let bytes = w.to_bytes()?;
    let mut out = Vec::with_capacity(copies);
    out.push(w.to(dev)?);
    for _ in 1..copies {
        out.push(Tensor::from_bytes(dtype, &[n, k], &bytes)?.to(dev)?);
    }
    Ok(out)
}

/// Times `rt.matmul(x, w)` rotating over `weights`, synchronizing inside the timed region.
fn time_matmul(
    rt: &Runtime,
    dev: &Device,
    x: &Tensor,
    weights: &[Tensor],
    cfg: &BenchConfig,
) -> wattle::Result<Vec<f64>> {
    let mut next = 0usize;
    time_calls(dev, cfg, || {
        let w = &weights[next % weights.len()];
        next += 1;
        rt.matmul(x, w)
    })
}

/// Times `call` (warm-up, then at least `min_reps` and up to `max_reps` repetitions until
/// `min_time` has passed), waiting for `dev` after each; returns the wall seconds of each.
/// The result is dropped outside the timed span.
pub fn time_calls<T>(
    dev: &Device,
    cfg: &BenchConfig,
    mut call: impl FnMut() -> wattle::Result<T>,
) -> wattle::Result<Vec<f64>> {
    let mut timed = || -> wattle::Result<f64> {
        let t0 = Instant::now();
        let y = call()?;
        dev.synchronize()?;
        let dt = t0.elapsed().as_secs_f64();
        drop(y);
        Ok(dt)
    };
    for _ in 0..cfg.warmup {
        timed()?;
    }
    let mut window = cfg.energy.as_ref().map(|e| {
        let mut w = EnergyWindow::start(e.meters.clone());
        w.busy(dev);
        w
    });
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < cfg.min_reps
        || (times.len() < cfg.max_reps && start.elapsed() < cfg.min_time)
    {
        times.push(timed()?);
    }
    if let (Some(e), Some(w)) = (&cfg.energy, window.take()) {
        // A window no meter could read leaves the figure without energy (said in the table).
        if let (Ok(m), Some(t)) = (w.end(), Summary::from_seconds(&times)) {
            e.record(device_label(dev), t, times.len(), &m);
        }
    }
    Ok(times)
}

#[allow(clippy::too_many_arguments)]
fn bench_device(
    rt: &Runtime,
    dev: &Device,
    shapes: &ShapeSet,
    cfg: &BenchConfig,
    progress: &Progress,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let label = device_label(dev);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base = rng.fill(shapes.n * shapes.k);
    let per_dtype = shapes.ms.len() * cfg.modes.len();
    for &dtype in &cfg.dtypes {
        let weight_bytes = dtype_bytes(dtype, shapes.n, shapes.k);
        let copies = if cfg.modes.contains(&Mode::Cold) {
            cold_copies(weight_bytes, cfg.llc_bytes)
        } else {
            1
        };
        let weights = match make_weights(dev, &base, dtype, shapes.n, shapes.k, copies) {
            Ok(w) => w,
            Err(e) => {
                let msg = format!("{label} {dtype}: cannot make weights: {e}");
                progress.note(&msg);
                notes.push(msg);
                progress.bar.inc(per_dtype as u64);
                continue;
            }
        };
        'ms: for &m in &shapes.ms {
            let shape = Shape {
                m,
                n: shapes.n,
                k: shapes.k,
            };
            let x = match Tensor::from_f32(&rng.fill(m * shape.k), &[m, shape.k])
                .and_then(|x| x.to(dev))
            {
                Ok(x) => x,
                Err(e) => {
                    notes.push(format!("{label} {dtype} {shape}: cannot make x: {e}"));
                    progress.bar.inc(cfg.modes.len() as u64);
                    continue;
                }
            };
            for (mi, &mode) in cfg.modes.iter().enumerate() {
                progress.start(format!(
                    "{} {dtype} {} {shape} {mode}",
                    kind_name(dev),
                    shape.phase()
                ));
                let used = match mode {
                    Mode::Hot => &weights[..1],
                    Mode::Cold => &weights[..],
                };
                let result = time_matmul(rt, dev, &x, used, cfg);
                progress.inc();
                let times = match result {
                    Ok(t) => t,
                    Err(e) => {
                        let msg = format!("{label} {dtype} {shape}: skipped: {e}");
                        progress.note(&msg);
                        notes.push(msg);
                        // The error does not depend on the mode: skip the others of this m.
                        progress.bar.inc((cfg.modes.len() - mi - 1) as u64);
                        continue 'ms;
                    }
                };
                let Some(time) = Summary::from_seconds(&times) else {
                    continue;
                };
                let bytes = call_bytes(weight_bytes, shape);
                let secs = time.median_us * 1e-6;
                let gops = shape.flops() / secs / 1e9;
                rows.push(Row {
                    device: label.clone(),
                    device_kind: kind_name(dev),
                    op: "matmul".into(),
                    phase: shape.phase().into(),
                    dtype: dtype.to_string(),
                    m,
                    n: shape.n,
                    k: shape.k,
                    mode,
                    copies: used.len(),
                    shape_note: shapes.label.clone(),
                    case: None,
                    time,
                    bytes,
                    gb_per_s: bytes as f64 / secs / 1e9,
                    gops,
                    roofline_gb_per_s: None,
                    roofline_pct: None,
                    bound: None,
                    peer: None,
                    peer_us: None,
                    peer_ratio: None,
                    energy: None,
                });
            }
        }
    }
}

/// Storage bytes of an `[n, k]` weight of `dtype`.
pub fn dtype_bytes(dtype: DType, n: usize, k: usize) -> u64 {
    (n * k / dtype.block_size() * dtype.block_bytes()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_mode_rotates_more_than_twice_the_llc() {
        let llc = 32u64 << 20;
        // A 4096×14336 f32 weight (235 MB) already exceeds 2× LLC: still 2 copies.
        assert_eq!(cold_copies(4096 * 14336 * 4, llc), 2);
        // Exactly 2× LLC in one copy: 2 copies.
        assert_eq!(cold_copies(2 * llc, llc), 2);
        // 16 MiB copies: 5 copies = 80 MiB > 64 MiB.
        assert_eq!(cold_copies(16 << 20, llc), 5);
        for w in [1u64, 1000, 1 << 20, 7 << 20, 33 << 20, 64 << 20, 1 << 30] {
            let c = cold_copies(w, llc) as u64;
            assert!(c >= 2);
            assert!(c * w > 2 * llc || c == 1 << 16, "{w} bytes × {c}");
        }
        // Tiny weights are capped.
        assert_eq!(cold_copies(1, llc), 1 << 16);
    }

    #[test]
    fn roofline_picks_the_lower_roof() {
        let r = Roofline {
            device: "cpu".into(),
            bandwidth_gb_per_s: Some(80.0),
            fma_gflops: Some(500.0),
            int8_gops: Some(1500.0),
            detail: String::new(),
            hot: vec![HotBandwidth {
                bytes: 1000,
                gb_per_s: 300.0,
            }],
        };
        let (bw, f32_roof) = (r.bandwidth_gb_per_s, r.compute_roof(false));
        // Decode f32: ~0.5 flop/byte -> memory bound at 40 GFLOP/s.
        assert_eq!(
            Roofline::attainable_with(bw, f32_roof, 0.5),
            Some((40.0, "memory"))
        );
        // Prefill: 100 flop/byte -> compute bound; quantized weights meet the int8 roof.
        assert_eq!(
            Roofline::attainable_with(bw, f32_roof, 100.0),
            Some((500.0, "fma"))
        );
        assert_eq!(
            Roofline::attainable_with(bw, r.compute_roof(true), 100.0),
            Some((1500.0, "int8"))
        );
        let none = Roofline {
            bandwidth_gb_per_s: None,
            fma_gflops: None,
            int8_gops: None,
            ..r
        };
        assert_eq!(none.compute_roof(true), None);
        assert_eq!(Roofline::attainable_with(None, None, 1.0), None);
        // Without an int8 figure quantized weights fall back to the FMA roof.
        let r = Roofline {
            bandwidth_gb_per_s: Some(80.0),
            fma_gflops: Some(500.0),
            ..none
        };
        assert_eq!(r.compute_roof(true), Some((500.0, "fma")));
        // Hot rows whose working set was probed get the cache ceiling; others the memory one.
        assert_eq!(r.bandwidth_for(Mode::Hot, 1000), Some(300.0));
        assert_eq!(r.bandwidth_for(Mode::Cold, 1000), Some(80.0));
        assert_eq!(r.bandwidth_for(Mode::Hot, 2000), Some(80.0));
    }

    #[test]
    fn a_second_peer_goes_to_the_notes_without_overwriting_the_first() {
        let row = |dtype: &str, m: usize| Row {
            device: "cpu (x)".into(),
            device_kind: "cpu".into(),
            op: "matmul".into(),
            phase: if m == 1 { "decode" } else { "prefill" }.into(),
            dtype: dtype.into(),
            m,
            n: 4096,
            k: 14336,
            mode: Mode::Hot,
            copies: 1,
            shape_note: None,
            case: None,
            time: Summary::from_seconds(&[1e-3; 5]).unwrap(),
            bytes: 1,
            gb_per_s: 1.0,
            gops: 1.0,
            roofline_gb_per_s: None,
            roofline_pct: None,
            bound: None,
            peer: None,
            peer_us: None,
            peer_ratio: None,
            energy: None,
        };
        let mut rows = vec![row("q4_0", 1), row("q4_K", 512)];
        let fig = |dtype: DType, m: usize, us: f64| PeerFigure {
            dtype,
            m,
            n: 4096,
            k: 14336,
            us,
        };
        let ggml: PeerSpec = "ggml=/x/ggml-perf.sh".parse().unwrap();
        let candle: PeerSpec = "candle=/x/candle-perf.sh".parse().unwrap();
        let mut notes = vec![];
        let n = attach_peer(&mut rows, &ggml, &[fig(DType::Q4_0, 1, 1500.0)], &mut notes);
        assert_eq!((n, notes.len()), (1, 0));
        let figs = [fig(DType::Q4_0, 1, 2000.0), fig(DType::Q4_K, 512, 3000.0)];
        let n = attach_peer(&mut rows, &candle, &figs, &mut notes);
        assert_eq!(n, 2);
        assert_eq!(rows[0].peer.as_deref(), Some("ggml"));
        assert_eq!(rows[0].peer_us, Some(1500.0));
        assert!((rows[0].peer_ratio.unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(rows[1].peer.as_deref(), Some("candle"));
        assert!((rows[1].peer_ratio.unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("peer candle") && notes[0].contains("peer/ours 2.00"));
        assert!(notes[0].contains("q4_0 m=1") && notes[0].contains("shows ggml"));
    }

    #[test]
    fn rooflines_apply_to_rows_and_merge() {
        let mut roof = Roofline {
            device: "cpu (x)".into(),
            bandwidth_gb_per_s: Some(50.0),
            fma_gflops: Some(500.0),
            int8_gops: None,
            detail: "first".into(),
            hot: vec![HotBandwidth {
                bytes: 4096 * 14336 * 4,
                gb_per_s: 60.0,
            }],
        };
        let shape = Shape {
            m: 1,
            n: 4096,
            k: 14336,
        };
        let bytes = call_bytes(4096 * 14336 * 4, shape);
        let row = |mode: Mode| Row {
            device: "cpu (x)".into(),
            device_kind: "cpu".into(),
            op: "matmul".into(),
            phase: "decode".into(),
            dtype: "f32".into(),
            m: 1,
            n: 4096,
            k: 14336,
            mode,
            copies: 1,
            shape_note: None,
            case: None,
            time: Summary::from_seconds(&[bytes as f64 / 30e9; 5]).unwrap(),
            bytes,
            gb_per_s: 30.0,
            gops: shape.flops() / (bytes as f64 / 30e9) / 1e9,
            roofline_gb_per_s: None,
            roofline_pct: None,
            bound: None,
            peer: None,
            peer_us: None,
            peer_ratio: None,
            energy: None,
        };
        let mut rows = vec![row(Mode::Hot), row(Mode::Cold)];
        apply_rooflines(&mut rows, std::slice::from_ref(&roof));
        assert_eq!(rows[0].roofline_gb_per_s, Some(60.0));
        assert!((rows[0].roofline_pct.unwrap() - 50.0).abs() < 1e-6);
        assert!((rows[1].roofline_pct.unwrap() - 60.0).abs() < 1e-6);
        assert_eq!(rows[1].bound.as_deref(), Some("memory"));
        roof.merge(&Roofline {
            bandwidth_gb_per_s: Some(75.0),
            fma_gflops: Some(400.0),
            detail: "second".into(),
            hot: vec![],
            ..roof.clone()
        });
        assert_eq!(roof.bandwidth_gb_per_s, Some(75.0));
        assert_eq!(roof.fma_gflops, Some(500.0));
        assert_eq!(roof.hot[0].gb_per_s, 60.0);
        assert!(roof.detail.starts_with("second"));
        apply_rooflines(&mut rows, std::slice::from_ref(&roof));
        assert!((rows[1].roofline_pct.unwrap() - 40.0).abs() < 1e-6);
        assert_eq!(rows[0].roofline_gb_per_s, Some(75.0));
    }

    #[test]
    fn energy_windows_attach_to_their_rows() {
        let time = |us: f64| Summary::from_seconds(&[us * 1e-6; 5]).unwrap();
        let e = EnergyMeters::new(Vec::new());
        let m = Measurement {
            seconds: 0.5,
            per_meter: Vec::new(),
            joules: 10.0,
            source: wattle::energy::Source::Modelled,
            summed: Vec::new(),
            dropped: Vec::new(),
        };
        e.record("cpu (x)".into(), time(100.0), 5, &m);
        let dev = wattle::Runtime::with_backends("cpu").unwrap().cpu();
        let figure = |op: &str| Figure {
            op: op.into(),
            phase: "decode".into(),
            dtype: "f16".into(),
            mnk: (1, 2, 3),
            case: "c".into(),
            bytes: 1000,
            ops: 4e6,
        };
        let mut rows = vec![
            Row::figure(&dev, figure("a"), time(100.0)),
            Row::figure(&dev, figure("b"), time(200.0)),
        ];
        for r in &mut rows {
            r.device = "cpu (x)".into();
        }
        e.apply(&mut rows);
        let got = rows[0].energy.clone().unwrap();
        // 10 J over 5 calls; 4e6 ops per call → 2e6 ops per joule = 0.002 GOP/J.
        assert_eq!(got.joules_per_call, 2.0);
        assert_eq!(got.watts, 20.0);
        assert_eq!(got.source, "modelled");
        assert!((got.gops_per_joule.unwrap() - 0.002).abs() < 1e-12);
        assert!(rows[1].energy.is_none(), "other timings get no energy");
    }

    #[test]
    fn shapes_and_bytes() {
        let s = Shape {
            m: 1,
            n: 4096,
            k: 14336,
        };
        assert_eq!(s.phase(), "decode");
        assert_eq!(s.to_string(), "1×4096×14336");
        assert_eq!(s.flops(), 2.0 * 4096.0 * 14336.0);
        assert_eq!(dtype_bytes(DType::F16, 4096, 14336), 4096 * 14336 * 2);
        assert_eq!(
            call_bytes(100, Shape { m: 2, n: 3, k: 5 }),
            100 + 4 * 10 + 4 * 6
        );
    }

    #[test]
    fn device_filters_parse() {
        let f: DeviceFilter = "cpu, Vulkan".parse().unwrap();
        assert_eq!(f.backends(), "cpu,vulkan");
        assert_eq!(f.named_gpu_apis(), vec!["vulkan".to_string()]);
        assert!("cuda"
            .parse::<DeviceFilter>()
            .unwrap_err()
            .contains("unknown device"));
        assert!(",".parse::<DeviceFilter>().is_err());
        let rt = Runtime::with_backends("cpu").unwrap();
        assert!(f.selects(&rt.cpu()));
        assert!(!"gpu".parse::<DeviceFilter>().unwrap().selects(&rt.cpu()));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("HOT".parse::<Mode>(), Ok(Mode::Hot));
        assert_eq!("cold".parse::<Mode>(), Ok(Mode::Cold));
        assert!("warm".parse::<Mode>().is_err());
    }
}
