//! `wattle bench --suite model --model MODEL`: a real GGUF model end to end through the reference
//! decoder, measured as llama-bench measures it: `pp512` is one batch of 512 tokens evaluated from
//! an empty cache, `tg128` is 128 tokens generated one at a time after an empty context; tokens
//! per second over the repetitions (mean ± standard deviation, as llama-bench prints), and joules
//! per token from wattle's energy meters, labelled measured or modelled.

use std::path::Path;
use std::time::Instant;

use wattle::energy::Source;
use wattle::{Device, Runtime};

use super::{device_label, BenchConfig, Mode, Progress, Row};
use crate::llm::decoder::{Decoder, DecoderOptions, KvChoice};
use crate::llm::model::Model;
use crate::stats::Summary;
use crate::sysinfo::kind_name;

/// One figure of the model suite: `pp<tokens>` or `tg<tokens>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelCase {
    /// True for prompt processing (one batch), false for generation (one token per step).
    pub prefill: bool,
    /// Tokens per repetition.
    pub tokens: usize,
}

impl ModelCase {
    /// `pp512` / `tg128`.
    pub fn name(&self) -> String {
        format!("{}{}", if self.prefill { "pp" } else { "tg" }, self.tokens)
    }
}

/// llama-bench's defaults (a quick run takes fewer tokens).
pub fn cases(quick: bool) -> [ModelCase; 2] {
    let (p, n) = if quick { (64, 16) } else { (512, 128) };
    [
        ModelCase {
            prefill: true,
            tokens: p,
        },
        ModelCase {
            prefill: false,
            tokens: n,
        },
    ]
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Deterministic token ids in `1..n_vocab` (llama-bench feeds random tokens too).
fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (1 + (s >> 33) as usize % (n_vocab - 1)) as u32
        })
        .collect()
}

/// Runs the suite on `dev`.
pub fn run(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    model_path: Option<&Path>,
    progress: &Progress,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let label = device_label(dev);
    let Some(path) = model_path else {
        let msg = "model suite: skipped: name the GGUF model with --model".to_string();
        progress.note(&msg);
        notes.push(msg);
        return;
    };
    let model = match Model::open(path, dev).and_then(|(_, mut m)| m.fuse().map(|()| m)) {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("{label} model suite: skipped: {}: {e}", path.display());
            progress.note(&msg);
            notes.push(msg);
            return;
        }
    };
    for case in cases(cfg.quick) {
        progress.start(format!("{} model {}", kind_name(dev), case.name()));
        let r = time_case(rt, dev, cfg, &model, case);
        progress.inc();
        let (secs, energy) = match r {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("{label} model {}: skipped: {e}", case.name());
                progress.note(&msg);
                notes.push(msg);
                continue;
            }
        };
        let Some(time) = Summary::from_seconds(&secs) else {
            continue;
        };
        let tps: Vec<f64> = secs.iter().map(|s| case.tokens as f64 / s).collect();
        let (mean, sd) = mean_sd(&tps);
        let energy_text = match energy {
            Some((j, source)) => format!(
                "{:.4} J/token ({})",
                j / case.tokens as f64,
                if source == Source::Measured {
                    "measured"
                } else {
                    "modelled"
                }
            ),
            None => "J/token: no meter could be read".into(),
        };
        let line = format!(
            "{label} {} {} t/s {mean:.2} ± {sd:.2}, {energy_text}",
            model.cfg.arch,
            case.name()
        );
        notes.push(line);
        let weights = model.weight_bytes() as u64;
        let bytes = if case.prefill {
            weights
        } else {
            weights * case.tokens as u64
        };
        let secs_med = time.median_us * 1e-6;
        // Two flops per weight per token, roughly (matmuls dominate).
        let flops = 2.0 * (weights as f64 * 2.0) * case.tokens as f64;
        rows.push(Row {
            device: label.clone(),
            device_kind: kind_name(dev),
            op: "model".into(),
            phase: if case.prefill { "prefill" } else { "decode" }.into(),
            dtype: weight_dtype(&model),
            m: if case.prefill { case.tokens } else { 1 },
            n: model.cfg.n_vocab,
            k: model.cfg.n_embd,
            mode: Mode::Hot,
            copies: 1,
            shape_note: None,
            case: Some(format!("{} {mean:.1} t/s ± {sd:.1}", case.name())),
            time,
            bytes,
            gb_per_s: bytes as f64 / secs_med / 1e9,
            gops: flops / secs_med / 1e9,
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

/// The dtype of most weight bytes (the FFN's).
fn weight_dtype(m: &Model) -> String {
    m.blocks
        .first()
        .map_or("?".into(), |b| b.w_gate.dtype().to_string())
}

/// Joules per repetition and where the figure comes from.
type Energy = (f64, Source);

/// Seconds per repetition and the energy over all timed repetitions (joules, source).
fn time_case(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    model: &Model,
    case: ModelCase,
) -> Result<(Vec<f64>, Option<Energy>), String> {
    let opts = DecoderOptions {
        ctx: case.tokens + 1,
        kv: KvChoice::F16,
        window: None,
        sinks: 0,
        cache_prefill: false,
    };
    let mut dec = Decoder::new(rt, model, opts)?;
    let ids = tokens(case.tokens, model.cfg.n_vocab, 0x2545_f491_4f6c_dd1d);
    let rep = |dec: &mut Decoder| -> Result<f64, String> {
        dec.reset();
        let t0 = Instant::now();
        if case.prefill {
            dec.forward(&ids, case.tokens - 1)
                .map_err(|e| e.to_string())?;
        } else {
            for &id in &ids {
                dec.forward(&[id], 0).map_err(|e| e.to_string())?;
            }
        }
        dev.synchronize().map_err(|e| e.to_string())?;
        Ok(t0.elapsed().as_secs_f64())
    };
    // llama-bench runs one untimed warm-up (weights repacked and paged in here).
    for _ in 0..cfg.warmup.max(1) {
        rep(&mut dec)?;
    }
    let reps = cfg.min_reps.max(5);
    let mut window = rt.energy_window();
    window.busy(dev);
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        secs.push(rep(&mut dec)?);
    }
    let energy = window
        .end()
        .ok()
        .map(|m| (m.joules / reps as f64, m.source));
    Ok((secs, energy))
}
