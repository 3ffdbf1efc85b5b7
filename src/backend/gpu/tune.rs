//! Autotuning of the GPU matmul kernels and its persistent cache.
//!
//! For each (adapter, driver, op, weight dtype, activation dtype, shape bucket — powers of two per
//! dimension) the tuner times candidate variants and launch constants (coordinate descent from the
//! static default over int8 path, reduction, workgroup size, rows per invocation, lanes per row),
//! keeps the fastest and records it in `gpu-tune.json` under `$WATTLE_CACHE_DIR` (default
//! `$XDG_CACHE_HOME/wattle`, else `~/.cache/wattle`). Entries carry a checksum of every shader
//! source: an entry written for other shaders is stale, ignored, and replaced when tuned again.
//! Nothing is tuned unless asked (`wattle tune`, [`crate::Runtime::tune`]); without an entry the
//! static default runs.

use super::matmul::{MatmulChoice, MatmulKernel, MatmulVariant, MatvecConfig, Reduce};
use super::{shader, GpuBackend};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::DType;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

/// What to tune.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Shapes `(m, n, k)`: x `[m, k]`, w `[n, k]`. Each stands for its power-of-two bucket.
    pub shapes: Vec<(usize, usize, usize)>,
    /// Weight dtypes (activations are F32).
    pub dtypes: Vec<DType>,
    /// Timed runs per candidate (the median counts).
    pub reps: usize,
    /// Print one line per tuned point to stderr.
    pub verbose: bool,
}

impl Default for TuneOptions {
    /// Decode shapes of a 7–8B model's projections, every GPU weight format.
    fn default() -> TuneOptions {
        TuneOptions {
            shapes: vec![(1, 4096, 4096), (1, 4096, 14336), (1, 14336, 4096)],
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
            reps: 3,
            verbose: false,
        }
    }
}

/// One tuned point.
#[derive(Clone, Debug)]
pub struct TuneEntry {
    /// Device name.
    pub device: String,
    /// Weight dtype.
    pub dtype: DType,
    /// The shape timed `(m, n, k)`.
    pub shape: (usize, usize, usize),
    /// The winning kernel, e.g. `matvec_q4_0_f32_sg_i8 wg8_nr2_l1`.
    pub choice: String,
    /// Its median seconds.
    pub seconds: f64,
    /// The static default's median seconds.
    pub default_seconds: f64,
    /// Candidates timed.
    pub candidates: usize,
}

/// The cache key of one tuned point on one adapter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    kernel: MatmulKernel,
    w: DType,
    x: DType,
    /// Power-of-two buckets of m, n, k.
    m: usize,
    n: usize,
    k: usize,
}

fn bucket(v: usize) -> usize {
    v.max(1).next_power_of_two()
}

fn kernel_for(m: usize) -> MatmulKernel {
    if m <= super::matmul::MATVEC_MAX_M {
        MatmulKernel::Matvec
    } else {
        MatmulKernel::Gemm
    }
}

impl Key {
    fn new(m: usize, n: usize, k: usize, w: DType, x: DType) -> Key {
        Key {
            kernel: kernel_for(m),
            w,
            x,
            m: bucket(m),
            n: bucket(n),
            k: bucket(k),
        }
    }
}

/// Tuned choices of one adapter.
pub(crate) struct TunedMap {
    map: RwLock<HashMap<Key, MatmulChoice>>,
    adapter: String,
    driver: String,
}

/// `$WATTLE_CACHE_DIR`, else `$XDG_CACHE_HOME/wattle`, else `~/.cache/wattle`.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    let env = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("WATTLE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("wattle")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("wattle")))
}

fn cache_file() -> Option<PathBuf> {
    cache_dir().map(|d| d.join("gpu-tune.json"))
}

fn checksum() -> String {
    format!("{:016x}", shader::sources_checksum())
}

fn kernel_name(k: MatmulKernel) -> &'static str {
    match k {
        MatmulKernel::Matvec => "matvec",
        MatmulKernel::Gemm => "gemm",
    }
}

/// Reads every entry of the cache file (an absent or unreadable file is an empty cache).
fn read_entries() -> Vec<Value> {
    let Some(path) = cache_file() else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut o)) => match o.remove("entries") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Parses one entry into (adapter, driver, key, choice); `None` when malformed or stale.
fn parse_entry(e: &Value) -> Option<(String, String, Key, MatmulChoice)> {
    let s = |n: &str| e.get(n).and_then(Value::as_str);
    let u = |n: &str| e.get(n).and_then(Value::as_u64);
    let b = |n: &str| e.get(n).and_then(Value::as_bool);
    if s("checksum")? != checksum() {
        return None;
    }
    let kernel = match s("op")? {
        "matvec" => MatmulKernel::Matvec,
        "gemm" => MatmulKernel::Gemm,
        _ => return None,
    };
    let w: DType = s("w")?.parse().ok()?;
    let x: DType = s("x")?.parse().ok()?;
    let key = Key {
        kernel,
        w,
        x,
        m: u("m")? as usize,
        n: u("n")? as usize,
        k: u("k")? as usize,
    };
    let variant = MatmulVariant {
        kernel,
        w,
        x,
        reduce: match s("reduce")? {
            "sg" => Reduce::Subgroup,
            _ => Reduce::Workgroup,
        },
        f16_math: b("f16_math")?,
        int8: b("int8")?,
    };
    let matvec = MatvecConfig {
        wg: u32::try_from(u("wg")?).ok()?,
        nr: u32::try_from(u("nr")?).ok()?,
        l: u32::try_from(u("l")?).ok()?,
    };
    Some((
        s("adapter")?.to_string(),
        s("driver")?.to_string(),
        key,
        MatmulChoice { variant, matvec },
    ))
}

impl TunedMap {
    /// The cache's current entries for adapter `name` on `api` with `driver` (stale ones
    /// ignored). The adapter is recorded as `name (api)`, e.g. `llvmpipe (…) (vulkan)`.
    pub(crate) fn load(name: &str, api: crate::device::GpuApi, driver: &str) -> TunedMap {
        let adapter = format!("{name} ({})", api.name());
        let driver = driver.to_string();
        let map = read_entries()
            .iter()
            .filter_map(parse_entry)
            .filter(|(a, d, _, _)| *a == adapter && *d == driver)
            .map(|(_, _, k, c)| (k, c))
            .collect();
        TunedMap {
            map: RwLock::new(map),
            adapter,
            driver,
        }
    }

    fn get(&self, key: &Key) -> Option<MatmulChoice> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Records `c` for `key` here and in the cache file (other adapters' current entries kept,
    /// stale ones dropped).
    fn record(&self, key: Key, c: MatmulChoice, seconds: f64) -> Result<()> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, c);
        let Some(path) = cache_file() else {
            return Ok(());
        };
        let v = &c.variant;
        let entry = json!({
            "adapter": self.adapter, "driver": self.driver, "checksum": checksum(),
            "op": kernel_name(key.kernel), "w": key.w.to_string(), "x": key.x.to_string(),
            "m": key.m, "n": key.n, "k": key.k,
            "variant": v.name(),
            "reduce": if v.reduce == Reduce::Subgroup { "sg" } else { "wg" },
            "f16_math": v.f16_math, "int8": v.int8,
            "wg": c.matvec.wg, "nr": c.matvec.nr, "l": c.matvec.l,
            "us": seconds * 1e6,
        });
        let mut entries: Vec<Value> = read_entries()
            .into_iter()
            .filter(|e| {
                parse_entry(e).is_some_and(|(a, d, k, _)| {
                    !(a == self.adapter && d == self.driver && k == key)
                })
            })
            .collect();
        entries.push(entry);
        let doc = json!({ "wattle_tune": 1, "entries": entries });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_string_pretty(&doc).unwrap_or_default())?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

/// Deterministic values in [-1, 1) for tuning inputs.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

impl GpuBackend {
    /// The tuned choice for these operands, if the cache has one.
    pub(crate) fn tuned(
        &self,
        m: usize,
        n: usize,
        k: usize,
        w: DType,
        x: DType,
    ) -> Option<MatmulChoice> {
        self.tuned.get(&Key::new(m, n, k, w, x))
    }

    /// Tunes one point: coordinate descent from the static default over the variant flags and
    /// the matvec constants, each candidate timed `reps` times (median). Records the winner.
    pub(crate) fn tune_point(
        &self,
        dev: &crate::Device,
        shape: (usize, usize, usize),
        w: DType,
        reps: usize,
    ) -> Result<TuneEntry> {
        let (m, n, k) = shape;
        if !k.is_multiple_of(w.block_size()) {
            return Err(Error::BadBlockAlignment {
                dtype: w,
                len: k,
                block: w.block_size(),
            });
        }
        let x = Tensor::from_f32(&values(m * k, 1), &[m, k])?.to(dev)?;
        let wt = Tensor::from_f32(&values(n * k, 2), &[n, k])?
            .quantize(w)?
            .to(dev)?;
        let default = self.default_choice(m, w, DType::F32);
        let mut timed: HashMap<MatmulChoice, f64> = HashMap::new();
        let mut time = |c: &MatmulChoice| -> Option<f64> {
            if let Some(&t) = timed.get(c) {
                return Some(t);
            }
            if !self.supports(&c.variant)
                || !self.config_ok(&c.variant, &c.matvec)
                || (!self.use_subgroups && c.variant.reduce == Reduce::Subgroup)
                || (!self.use_f16 && c.variant.f16_math)
            {
                return None;
            }
            // A candidate that fails to build or run is skipped, not fatal.
            let t = self.time_matmul(&x, &wt, m, n, k, c, reps).ok()?;
            timed.insert(*c, t);
            Some(t)
        };
        let default_seconds = time(&default).ok_or_else(|| {
            Error::NotAvailable(format!(
                "the default kernel for {w} on {}",
                self.ctx.info.name
            ))
        })?;
        let (mut best, mut best_t) = (default, default_seconds);
        // Two passes of coordinate descent.
        for _ in 0..2 {
            let mut cands: Vec<MatmulChoice> = Vec::new();
            let b = best;
            let mut with = |f: &dyn Fn(&mut MatmulChoice)| {
                let mut c = b;
                f(&mut c);
                cands.push(c);
            };
            with(&|c| c.variant.int8 = !c.variant.int8);
            with(&|c| {
                c.variant.reduce = match c.variant.reduce {
                    Reduce::Subgroup => Reduce::Workgroup,
                    Reduce::Workgroup => Reduce::Subgroup,
                }
            });
            with(&|c| c.variant.f16_math = !c.variant.f16_math);
            if b.variant.kernel == MatmulKernel::Matvec {
                for wg in [8, 32, 64, 128, 256] {
                    with(&|c| {
                        c.matvec.wg = wg;
                        c.matvec.l = c.matvec.l.min(wg);
                    });
                }
                for nr in [1, 2, 4] {
                    with(&|c| c.matvec.nr = nr);
                }
                for l in [1, 4, 8, 16, 32, 64] {
                    with(&|c| c.matvec.l = l);
                }
            }
            let mut improved = false;
            for c in cands {
                if let Some(t) = time(&c) {
                    if t < best_t {
                        (best, best_t) = (c, t);
                        improved = true;
                    }
                }
            }
            if !improved {
                break;
            }
        }
        self.tuned
            .record(Key::new(m, n, k, w, DType::F32), best, best_t)?;
        Ok(TuneEntry {
            device: self.ctx.info.name.clone(),
            dtype: w,
            shape,
            choice: format!("{} {}", best.variant.name(), best.matvec.name()),
            seconds: best_t,
            default_seconds,
            candidates: timed.len(),
        })
    }
}
