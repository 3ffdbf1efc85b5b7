//! `rt.calibrate`: time and energy per device × op × dtype × shape, each device's transfer
//! bandwidth, latency and idle power, written as a profile to the cache directory.
//!
//! Every device gets matmul, softmax attention, linear attention and `KvCache` decode attend
//! points where it runs them: an op or format a device does not run (a dtype it lacks, a cache
//! format or eviction it refuses with `NotAvailable`) gets no points there, quietly, and the
//! planner places it elsewhere. Software GPUs (emulated on the CPU) get smaller shape sets.

use super::fingerprint::{fingerprint, machine_fingerprint, KERNEL_SOURCES_HASH};
use super::op::OpDesc;
use super::profile::{DeviceProfile, OpPoint, Profile, ProfileKind, Transfer};
use crate::device::Device;
use crate::energy::{process_cpu_seconds, EnergyWindow, Meter, MeterKind, Source};
use crate::error::Result;
use crate::{
    AttentionParams, DType, Error, Eviction, KvCache, KvCacheConfig, KvFormat, LinearAttention,
    Runtime, Tensor,
};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `rt.calibrate` measures.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Matmul weight dtypes on the CPU and hardware GPUs.
    pub dtypes: Vec<DType>,
    /// Matmul shapes `(m, n, k)` on the CPU and hardware GPUs.
    pub shapes: Vec<(usize, usize, usize)>,
    /// Matmul weight dtypes on software GPUs (lavapipe, llvmpipe, WARP: emulated on the CPU).
    pub software_gpu_dtypes: Vec<DType>,
    /// Matmul shapes on software GPUs (keep them small: they are slow).
    pub software_gpu_shapes: Vec<(usize, usize, usize)>,
    /// Attention shapes `(tq, hq, hkv, d, ctx)` on the CPU and hardware GPUs.
    pub attention: Vec<(usize, usize, usize, usize, usize)>,
    /// Attention shapes on software GPUs.
    pub software_gpu_attention: Vec<(usize, usize, usize, usize, usize)>,
    /// K/V dtypes for attention.
    pub attention_dtypes: Vec<DType>,
    /// Linear attention (retention) shapes `(t, h, dk, dv)` on the CPU and hardware GPUs.
    pub linear_attention: Vec<(usize, usize, usize, usize)>,
    /// Linear attention shapes on software GPUs.
    pub software_gpu_linear_attention: Vec<(usize, usize, usize, usize)>,
    /// `KvCache` decode attend (one query token) shapes `(ctx, hq, hkv, d)` on the CPU and
    /// hardware GPUs (every device that has KV caches).
    pub kv_attend: Vec<(usize, usize, usize, usize)>,
    /// `KvCache` decode attend shapes on software GPUs.
    pub software_gpu_kv_attend: Vec<(usize, usize, usize, usize)>,
    /// KV cache formats for `kv_attend` (named in the profile as [`kv_format_name`] says).
    pub kv_formats: Vec<KvFormat>,
    /// Each point runs at least this long (SPEC §9: ≥ 200 ms).
    pub min_window: Duration,
    /// Each point runs at least this many times (the median is over them).
    pub min_reps: usize,
    /// How long idle power is measured, per device.
    pub idle: Duration,
    /// Bytes of the large transfer probe (the small one is 4 KiB).
    pub transfer_bytes: usize,
    /// Progress on stderr.
    pub progress: bool,
    /// Write the profile to `$WATTLE_CACHE_DIR/profile-<fingerprint>.json`.
    pub write: bool,
}

impl Default for CalibrateOptions {
    /// The thorough set: decode and prefill of real model shapes, every weight dtype.
    fn default() -> Self {
        let mut shapes = Vec::new();
        for &(n, k) in &[
            (576, 576),
            (1536, 576),
            (2048, 4096),
            (4096, 4096),
            (4096, 14336),
            (14336, 4096),
        ] {
            for m in [1, 8, 64, 512] {
                shapes.push((m, n, k));
            }
        }
        CalibrateOptions {
            dtypes: vec![
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q8_0,
                DType::Q4_0,
                DType::Q4_1,
                DType::Q4_K,
                DType::Q6_K,
            ],
            shapes,
            software_gpu_dtypes: vec![
                DType::F32,
                DType::F16,
                DType::Q8_0,
                DType::Q4_0,
                DType::Q4_1,
            ],
            software_gpu_shapes: vec![
                (1, 256, 256),
                (16, 256, 256),
                (1, 1024, 1024),
                (64, 1024, 1024),
            ],
            attention: vec![
                (1, 32, 8, 128, 512),
                (1, 32, 8, 128, 4096),
                (64, 32, 8, 128, 512),
                (512, 32, 8, 128, 512),
            ],
            software_gpu_attention: vec![(1, 32, 8, 128, 512), (16, 32, 8, 128, 512)],
            attention_dtypes: vec![DType::F32, DType::F16, DType::Q8_0],
            linear_attention: vec![(1, 16, 64, 64), (64, 16, 64, 64), (512, 16, 128, 128)],
            software_gpu_linear_attention: vec![(1, 16, 64, 64), (64, 16, 64, 64)],
            kv_attend: vec![
                (512, 32, 8, 128),
                (4096, 32, 8, 128),
                (16384, 32, 8, 128),
                (32768, 32, 8, 128),
            ],
            software_gpu_kv_attend: vec![(512, 32, 8, 128), (4096, 32, 8, 128)],
            kv_formats: all_kv_formats(),
            min_window: Duration::from_millis(200),
            min_reps: 5,
            idle: Duration::from_secs(1),
            transfer_bytes: 64 << 20,
            progress: true,
            write: true,
        }
    }
}

impl CalibrateOptions {
    /// A small set, under a minute a device: the shapes of `wattle bench` (decode and prefill of
    /// the standard weight, and the quick set), a few small ones, tiny shapes on software GPUs.
    pub fn quick() -> Self {
        CalibrateOptions {
            dtypes: vec![
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q8_0,
                DType::Q4_0,
                DType::Q4_1,
                DType::Q4_K,
                DType::Q6_K,
            ],
            shapes: vec![
                (1, 576, 576),
                (16, 576, 576),
                (512, 576, 576),
                (1, 2048, 4096),
                (16, 2048, 4096),
                (1, 4096, 14336),
                (64, 4096, 14336),
                (512, 4096, 14336),
            ],
            software_gpu_dtypes: vec![
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q8_0,
                DType::Q4_0,
                DType::Q4_1,
            ],
            software_gpu_shapes: vec![(1, 512, 512), (16, 512, 512)],
            attention: vec![
                (1, 32, 8, 128, 512),
                (1, 32, 8, 128, 4096),
                (64, 32, 8, 128, 512),
            ],
            software_gpu_attention: vec![(1, 32, 8, 128, 512)],
            attention_dtypes: vec![DType::F32, DType::F16],
            linear_attention: vec![(1, 16, 64, 64), (64, 16, 64, 64)],
            software_gpu_linear_attention: vec![(1, 16, 64, 64)],
            kv_attend: vec![(512, 32, 8, 128), (4096, 32, 8, 128)],
            software_gpu_kv_attend: vec![(512, 32, 8, 128)],
            kv_formats: all_kv_formats(),
            min_window: Duration::from_millis(200),
            min_reps: 3,
            idle: Duration::from_millis(300),
            transfer_bytes: 8 << 20,
            progress: true,
            write: true,
        }
    }
}

/// Every KV cache format: F16, Q8_0, Q4_0, KIVI-4 and KIVI-2 (groups of 32, 128 residual
/// tokens, as `wattle bench --suite kv` measures them).
fn all_kv_formats() -> Vec<KvFormat> {
    let kivi = |bits| KvFormat::Kivi {
        bits,
        group: 32,
        residual: 128,
    };
    vec![
        KvFormat::F16,
        KvFormat::Q8_0,
        KvFormat::Q4_0,
        kivi(4),
        kivi(2),
    ]
}

/// The name of a KV cache format in profiles (`kv_attend`'s `format`): `f16`, `q8_0`, `q4_0`,
/// `kivi4`, `kivi2`.
pub fn kv_format_name(f: &KvFormat) -> String {
    match f {
        KvFormat::F16 => "f16".into(),
        KvFormat::Q8_0 => "q8_0".into(),
        KvFormat::Q4_0 => "q4_0".into(),
        KvFormat::Kivi { bits, .. } => format!("kivi{bits}"),
    }
}

/// An op the device does not run (a dtype it lacks, a GPU without KV caches): no point.
fn not_run_here(e: &Error) -> bool {
    matches!(e, Error::UnsupportedDType { .. } | Error::NotAvailable(_))
}

/// Where `rt.calibrate` writes the profile of `devices`:
/// `$WATTLE_CACHE_DIR/profile-<fingerprint>.json` (default `$XDG_CACHE_HOME/wattle`, else
/// `~/.cache/wattle`).
pub fn profile_path(devices: &[Device]) -> Option<PathBuf> {
    crate::backend::gpu::tune::cache_dir()
        .map(|d| d.join(format!("profile-{}.json", machine_fingerprint(devices))))
}

struct Progress {
    on: bool,
    done: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if self.on {
            let width = 24;
            let filled = (self.done * width / self.total.max(1)).min(width);
            eprint!(
                "\r\x1b[Kcalibrate [{}{}] {}/{} {:>5.1}s {what}",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// The meters whose energy a device's work shows in: the battery when it reads (the system),
/// else the available meters that cover the device and are summed.
fn meters_for(all: &[Meter], dev: &Device) -> Vec<Meter> {
    if let Some(b) = all
        .iter()
        .find(|m| m.kind() == MeterKind::Battery && m.available().is_ok())
    {
        return vec![b.clone()];
    }
    all.iter()
        .filter(|m| {
            matches!(
                m.kind(),
                MeterKind::RaplPackage | MeterKind::GpuRail | MeterKind::Nvml | MeterKind::Modelled
            ) && m.available().is_ok()
                && m.devices().contains(dev)
        })
        .cloned()
        .collect()
}

/// Runs `f` (one call, synchronised) at least `min_reps` times and `min_window` long, after one
/// warm-up: (median seconds, joules per call, source).
fn measure(
    dev: &Device,
    meters: &[Meter],
    opts: &CalibrateOptions,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<(f64, f64, Source)> {
    f()?;
    dev.synchronize()?;
    let mut w = EnergyWindow::start(meters.to_vec());
    w.busy(dev);
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < opts.min_reps.max(1) || start.elapsed() < opts.min_window {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 100_000 {
            break;
        }
    }
    let m = w.end()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok((median, m.joules / times.len() as f64, m.source))
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// CPU matmuls long enough to use the whole thread pool, and the cores the process kept busy
/// while each was measured: a point that got much less than the pool's threads was measured on a
/// machine busy with something else, and is as much slower.
#[derive(Default)]
struct Load {
    /// Points of at least [`Load::MIN_SECONDS`].
    large: usize,
    /// Those that ran on less than [`Load::SHARE`] of the pool's threads: (what, cores).
    starved: Vec<(String, f64)>,
}

impl Load {
    const MIN_SECONDS: f64 = 0.005;
    const SHARE: f64 = 0.7;

    fn note(&mut self, what: &str, seconds: f64, cores: f64) {
        if seconds < Self::MIN_SECONDS || !cores.is_finite() {
            return;
        }
        self.large += 1;
        if cores < Self::SHARE * wattle_kernels::pool::default_threads() as f64 {
            self.starved.push((what.to_string(), cores));
        }
    }

    /// The warning for device `id`, when some of its large points were starved.
    fn warning(&self, id: &str) -> Option<String> {
        if self.starved.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .starved
            .iter()
            .take(6)
            .map(|(w, c)| format!("{w} ({c:.2} cores)"))
            .collect();
        Some(format!(
            "{id}: {} of {} large matmul points got less than {:.0}% of the {} pool threads ({}{}): the machine was busy with something else, so they are slower than this CPU is; recalibrate on a quiet machine",
            self.starved.len(),
            self.large,
            Self::SHARE * 100.0,
            wattle_kernels::pool::default_threads(),
            list.join(", "),
            if self.starved.len() > 6 { ", …" } else { "" }
        ))
    }
}

/// What one device is calibrated on.
struct DeviceSet<'a> {
    dtypes: &'a [DType],
    shapes: &'a [(usize, usize, usize)],
    attention: &'a [(usize, usize, usize, usize, usize)],
    linear: &'a [(usize, usize, usize, usize)],
    /// `kv_attend` shapes; empty when the device has no KV caches (`KvCache::new` fails there).
    kv: &'a [(usize, usize, usize, usize)],
}

impl DeviceSet<'_> {
    fn steps(&self, opts: &CalibrateOptions) -> usize {
        self.dtypes.len() * self.shapes.len()
            + self.attention.len() * opts.attention_dtypes.len()
            + self.linear.len()
            + self.kv.len() * opts.kv_formats.len()
    }
}

fn device_set<'a>(
    rt: &Runtime,
    dev: &Device,
    soft: bool,
    opts: &'a CalibrateOptions,
) -> DeviceSet<'a> {
    let (dtypes, shapes, attention, linear, kv) = if soft {
        (
            &opts.software_gpu_dtypes[..],
            &opts.software_gpu_shapes[..],
            &opts.software_gpu_attention[..],
            &opts.software_gpu_linear_attention[..],
            &opts.software_gpu_kv_attend[..],
        )
    } else {
        (
            &opts.dtypes[..],
            &opts.shapes[..],
            &opts.attention[..],
            &opts.linear_attention[..],
            &opts.kv_attend[..],
        )
    };
    DeviceSet {
        dtypes,
        shapes,
        attention,
        linear,
        kv: if KvCache::new(rt, dev, KvCacheConfig::default()).is_ok() {
            kv
        } else {
            &[]
        },
    }
}

/// Keeps a measured point; drops an op the device does not run; fails on anything else.
fn keep(ops: &mut Vec<OpPoint>, op: OpDesc, r: Result<(f64, f64, Source)>) -> Result<()> {
    match r {
        Ok((seconds, joules, source)) => {
            ops.push(OpPoint {
                op,
                seconds,
                joules,
                source,
            });
            Ok(())
        }
        Err(e) if not_run_here(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A KV cache of `fmt` on `dev` holding `ctx` tokens of `hkv` heads of dimension `d`, filled in
/// chunks (as a prefill would).
fn filled_cache(
    rt: &Runtime,
    dev: &Device,
    fmt: KvFormat,
    ctx: usize,
    hkv: usize,
    d: usize,
) -> Result<KvCache> {
    let mut cache = KvCache::new(
        rt,
        dev,
        KvCacheConfig {
            layers: 1,
            kv_heads: hkv,
            head_dim: d,
            v_head_dim: None,
            format: fmt,
            eviction: Eviction::None,
            capacity: Some(ctx),
        },
    )?;
    const CHUNK: usize = 1024;
    let mut done = 0;
    while done < ctx {
        let t = CHUNK.min(ctx - done);
        let seed = 11 + done as u64;
        let k = Tensor::from_f32(&values(t * hkv * d, seed), &[t, hkv, d])?.to(dev)?;
        let v = Tensor::from_f32(&values(t * hkv * d, seed ^ 0x55), &[t, hkv, d])?.to(dev)?;
        cache.append(0, &k, &v)?;
        done += t;
    }
    Ok(cache)
}

pub(crate) fn calibrate(rt: &Runtime, opts: &CalibrateOptions) -> Result<Profile> {
    let devices = rt.devices();
    let meters = rt.meters();
    let mut gpu_index = 0;
    let plan: Vec<(Device, String, bool)> = devices
        .iter()
        .map(|d| {
            let id = if d.is_cpu() {
                "cpu".to_string()
            } else {
                gpu_index += 1;
                format!("gpu{}", gpu_index - 1)
            };
            (d.clone(), id, !d.is_cpu() && d.info().software)
        })
        .collect();
    let sets: Vec<DeviceSet<'_>> = plan
        .iter()
        .map(|(d, _, soft)| device_set(rt, d, *soft, opts))
        .collect();
    let total: usize = plan
        .iter()
        .zip(&sets)
        .map(|((d, _, _), set)| 1 + if d.is_cpu() { 0 } else { 2 } + set.steps(opts))
        .sum();
    let mut prog = Progress {
        on: opts.progress,
        done: 0,
        total,
        start: Instant::now(),
    };
    let mut out = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for ((dev, id, soft), set) in plan.iter().zip(&sets) {
        let dm = meters_for(&meters, dev);
        // Idle power first, reported apart.
        prog.step(&format!("{id}: idle power"));
        let w = EnergyWindow::start(dm.clone());
        std::thread::sleep(opts.idle);
        let idle = w.end()?;
        let idle_watts = idle.watts();
        let transfer = if dev.is_cpu() {
            Transfer {
                bytes_per_s: 0.0,
                latency_s: 0.0,
                joules_per_byte: 0.0,
            }
        } else {
            prog.step(&format!("{id}: transfer latency"));
            let small = values(1024, 1);
            let (lat, _, _) = measure(dev, &dm, opts, &mut || {
                Tensor::from_f32(&small, &[1024])?.to(dev).map(drop)
            })?;
            prog.step(&format!("{id}: transfer bandwidth"));
            let n = (opts.transfer_bytes / 4).max(1024);
            let big = values(n, 2);
            let (tb, jb, _) = measure(dev, &dm, opts, &mut || {
                Tensor::from_f32(&big, &[n])?.to(dev).map(drop)
            })?;
            let bytes = (n * 4) as f64;
            Transfer {
                bytes_per_s: (bytes - 4096.0) / (tb - lat).max(1e-9),
                latency_s: lat,
                joules_per_byte: jb / bytes,
            }
        };
        let mut ops = Vec::new();
        let mut load = Load::default();
        for &dt in set.dtypes {
            // The weight of the previous shape, reused while (n, k) stays the same.
            let mut weight: Option<((usize, usize), Tensor)> = None;
            for &(m, n, k) in set.shapes {
                prog.step(&format!("{id}: matmul {dt} {m}×{n}×{k}"));
                if k % dt.block_size() != 0 {
                    continue;
                }
                let w = match weight.take() {
                    Some((nk, w)) if nk == (n, k) => w,
                    _ => {
                        let w = Tensor::from_f32(&values(n * k, 3), &[n, k])?.quantize(dt);
                        match w.and_then(|w| w.to(dev)) {
                            Ok(w) => w,
                            Err(e) if not_run_here(&e) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                };
                let x = Tensor::from_f32(&values(m * k, 4), &[m, k])?.to(dev)?;
                let (cpu0, t0) = (process_cpu_seconds(), Instant::now());
                let r = measure(dev, &dm, opts, &mut || rt.matmul(&x, &w).map(drop));
                if let (true, Ok((s, _, _)), Some(c0), Some(c1)) =
                    (dev.is_cpu(), &r, cpu0, process_cpu_seconds())
                {
                    load.note(
                        &format!("{dt} {m}×{n}×{k}"),
                        *s,
                        (c1 - c0) / t0.elapsed().as_secs_f64(),
                    );
                }
                keep(&mut ops, OpDesc::matmul(m, n, k, dt), r)?;
                weight = Some(((n, k), w));
            }
        }
        for &kv in &opts.attention_dtypes {
            for &(tq, hq, hkv, d, ctx) in set.attention {
                prog.step(&format!("{id}: attention {kv} tq={tq} ctx={ctx}"));
                let q = Tensor::from_f32(&values(tq * hq * d, 5), &[tq, hq, d])?.to(dev)?;
                let qk = |seed| {
                    Tensor::from_f32(&values(ctx * hkv * d, seed), &[ctx, hkv, d])?
                        .quantize(kv)?
                        .to(dev)
                };
                let (k, v) = match qk(6).and_then(|k| Ok((k, qk(7)?))) {
                    Ok(kv) => kv,
                    Err(e) if not_run_here(&e) => continue,
                    Err(e) => return Err(e),
                };
                let p = AttentionParams {
                    q_pos0: ctx.saturating_sub(tq),
                    ..AttentionParams::causal()
                };
                let r = measure(dev, &dm, opts, &mut || {
                    rt.attention(&q, &k, &v, &p).map(drop)
                });
                keep(&mut ops, OpDesc::attention(tq, hq, hkv, d, ctx, kv, 0), r)?;
            }
        }
        for &(t, h, dk, dv) in set.linear {
            prog.step(&format!("{id}: linear_attention retention t={t}"));
            let q = Tensor::from_f32(&values(t * h * dk, 8), &[t, h, dk])?.to(dev)?;
            let k = Tensor::from_f32(&values(t * h * dk, 9), &[t, h, dk])?.to(dev)?;
            let v = Tensor::from_f32(&values(t * h * dv, 10), &[t, h, dv])?.to(dev)?;
            let kind = LinearAttention::Retention {
                gamma: vec![0.95; h],
            };
            let r = measure(dev, &dm, opts, &mut || {
                rt.linear_attention(&q, &k, &v, &kind, None).map(drop)
            });
            keep(
                &mut ops,
                OpDesc::linear_attention("retention", t, h, dk, dv),
                r,
            )?;
        }
        for fmt in &opts.kv_formats {
            let name = kv_format_name(fmt);
            for &(ctx, hq, hkv, d) in set.kv {
                prog.step(&format!("{id}: kv_attend {name} ctx={ctx}"));
                if ctx == 0 {
                    continue;
                }
                let mut cache = match filled_cache(rt, dev, *fmt, ctx, hkv, d) {
                    Ok(c) => c,
                    // A format or head shape the cache does not take: no point.
                    Err(
                        Error::UnsupportedDType { .. }
                        | Error::NotAvailable(_)
                        | Error::BadBlockAlignment { .. }
                        | Error::InvalidArgument(_),
                    ) => continue,
                    Err(e) => return Err(e),
                };
                let q = Tensor::from_f32(&values(hq * d, 12), &[1, hq, d])?.to(dev)?;
                let p = AttentionParams {
                    q_pos0: ctx - 1,
                    ..AttentionParams::causal()
                };
                let r = measure(dev, &dm, opts, &mut || cache.attend(0, &q, &p).map(drop));
                keep(&mut ops, OpDesc::kv_attend(&name, ctx, hq, hkv, d), r)?;
            }
        }
        if let Some(n) = load.warning(id) {
            if opts.progress {
                eprintln!("\r\x1b[Kcalibrate: warning: {n}");
            }
            warnings.push(n);
        }
        let memory_bytes = if dev.is_cpu() || *soft {
            host_memory_bytes()
        } else {
            dev.info().limits.max_buffer_size
        };
        out.push(DeviceProfile {
            id: id.clone(),
            name: dev.name(),
            kind: if dev.is_cpu() {
                ProfileKind::Cpu
            } else {
                ProfileKind::Gpu
            },
            fingerprint: fingerprint(dev),
            memory_bytes,
            idle_watts,
            transfer,
            ops,
        });
    }
    prog.finish();
    let system = json!({
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "wattle_version": env!("CARGO_PKG_VERSION"),
        "kernel_sources": KERNEL_SOURCES_HASH,
        "calibrated_unix_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "warnings": warnings,
        "meters": meters.iter().map(|m| json!({
            "name": m.name(),
            "source": m.source().name(),
            "available": m.available().err(),
        })).collect::<Vec<_>>(),
    });
    let profile = Profile {
        system,
        devices: out,
    };
    if opts.write {
        if let Some(path) = profile_path(&devices) {
            profile.save(&path)?;
            if opts.progress {
                eprintln!("calibrate: wrote {}", path.display());
            }
        }
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_warns_only_about_large_starved_points() {
        let threads = wattle_kernels::pool::default_threads() as f64;
        let mut l = Load::default();
        l.note("tiny", 1e-4, 0.1);
        l.note("full", 0.1, threads);
        l.note("nan", 0.1, f64::NAN);
        assert!(l.warning("cpu").is_none());
        assert_eq!(l.large, 1);
        l.note("starved", 0.1, 0.5 * Load::SHARE * threads);
        let w = l.warning("cpu").unwrap();
        assert!(
            w.starts_with("cpu: 1 of 2 large") && w.contains("starved"),
            "{w}"
        );
    }

    #[test]
    fn kv_format_names_match_the_profile_format() {
        let names: Vec<String> = all_kv_formats().iter().map(kv_format_name).collect();
        assert_eq!(names, ["f16", "q8_0", "q4_0", "kivi4", "kivi2"]);
        for n in &names {
            // Each name sizes its cache in op.rs (bits per value, not the F16 fallback).
            let b = OpDesc::kv_attend(n, 1024, 8, 8, 128).weight_bytes();
            let f16 = OpDesc::kv_attend("f16", 1024, 8, 8, 128).weight_bytes();
            assert!(n == "f16" || b < f16, "{n}");
        }
    }
}
