//! `wattle run` and `wattle perplexity`: the decoder behind two commands that mirror
//! llama-completion and llama-perplexity.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use wattle::sched::{fingerprint, Policy, Profile};
use wattle::{Device, Runtime};

use super::decoder::{log_prob, Decoder, DecoderOptions, KvChoice, Sampler, SamplerConfig};
use super::model::Model;
use super::tokenizer::{Tokenizer, Utf8Stream};

/// Where the decoder runs and how it keeps its KV cache (shared by `run`, `perplexity` and the
/// model benchmark).
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// KV cache format: f16, q8_0, q4_0, kivi4 or kivi2.
    #[arg(long, default_value = "f16", value_name = "FORMAT")]
    pub kv: KvChoice,
    /// Window eviction: each query attends to at most N keys (its own included).
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// With --window: the first N positions stay visible to every query (attention sinks).
    #[arg(long, default_value_t = 0, value_name = "N", requires = "window")]
    pub sinks: usize,
    /// Device: cpu, or gpu0, gpu1, … in `wattle devices` order.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// Instead of --device: run on the device a calibrated profile favours for this model's
    /// decode token under a policy (min-energy, min-latency, edp, budget=20ms, cap=15W).
    #[arg(long, value_name = "POLICY", conflicts_with = "device")]
    pub policy: Option<String>,
    /// The profile --policy reads (default: the one `wattle calibrate` wrote for this machine).
    #[arg(long, value_name = "P.json", requires = "policy")]
    pub profile: Option<PathBuf>,
}

impl EngineArgs {
    /// Opens the runtime (on the backends the device needs) and finds the device: the one
    /// `--device` names, or with `--policy` the one the profile favours for `model`.
    pub fn open(&self, model: &Path) -> Result<(Runtime, Device), String> {
        if let Some(policy) = &self.policy {
            return self.place(model, policy);
        }
        let d = self.device.trim().to_ascii_lowercase();
        if d == "cpu" {
            let rt =
                Runtime::with_backends("cpu").map_err(|e| format!("cannot start wattle: {e}"))?;
            let cpu = rt.cpu();
            return Ok((rt, cpu));
        }
        let Some(i) = d.strip_prefix("gpu").and_then(|n| n.parse::<usize>().ok()) else {
            return Err(format!(
                "--device {}: expected cpu or gpuN (gpu0, gpu1, …)",
                self.device
            ));
        };
        let rt = Runtime::with_backends("gpu").map_err(|e| format!("cannot start wattle: {e}"))?;
        let gpus = rt.gpus();
        let dev = gpus.get(i).cloned().ok_or_else(|| {
            format!(
                "--device {}: {} GPU adapter(s) found (see `wattle devices`)",
                self.device,
                gpus.len()
            )
        })?;
        Ok((rt, dev))
    }

    /// `--policy`: every device of this machine that the profile covers is costed running the
    /// whole decode token of `model` (at a 512-position context, attending through the `--kv`
    /// cache when the profile has points of it, as `wattle plan --model` does); the policy
    /// picks one.
    fn place(&self, model: &Path, policy: &str) -> Result<(Runtime, Device), String> {
        let policy: Policy = policy.parse().map_err(|e: wattle::Error| e.to_string())?;
        let rt = Runtime::new().map_err(|e| format!("cannot start wattle: {e}"))?;
        let profile = match &self.profile {
            Some(p) => Profile::load(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => rt.cached_profile().ok_or(
                "--policy needs a profile of this machine: run `wattle calibrate` (or pass \
                 --profile P.json)",
            )?,
        };
        let ops = crate::plan::decode_chain(&model.to_path_buf(), 512, &profile, self.kv.name())?;
        let mut costed = Vec::new();
        for d in &profile.devices {
            let Some(dev) = rt
                .devices()
                .into_iter()
                .find(|r| fingerprint(r) == d.fingerprint)
            else {
                eprintln!("wattle run: profile device {} ({}) is not on this machine (or is stale): skipped", d.id, d.name);
                continue;
            };
            let ids = vec![d.id.as_str(); ops.len()];
            match profile.cost_of(&ops, &ids) {
                Ok((s, j, src)) => {
                    eprintln!(
                        "wattle run: {} ({}): {:.2} ms, {:.4} J per decode token ({src:?})",
                        d.id,
                        dev.name(),
                        s * 1e3,
                        j
                    );
                    costed.push((dev, s, j));
                }
                Err(e) => eprintln!("wattle run: {}: not costed: {e}", d.id),
            }
        }
        let pick = pick_device(&costed, &policy)
            .ok_or("--policy: no device of this machine is costed by the profile")?;
        eprintln!(
            "wattle run: policy {policy:?} places the decoder on {}",
            pick.name()
        );
        Ok((rt, pick))
    }

    /// Decoder options for a context of `ctx` positions.
    pub fn options(&self, ctx: usize) -> DecoderOptions {
        DecoderOptions {
            ctx,
            kv: self.kv,
            window: self.window,
            sinks: self.sinks,
            cache_prefill: std::env::var_os("WATTLE_DECODER_CACHE_PREFILL").is_some(),
        }
    }

    fn describe(&self) -> String {
        match self.window {
            Some(w) => format!("KV {} with window {w} (sinks {})", self.kv, self.sinks),
            None => format!("KV {}", self.kv),
        }
    }
}

/// The device `policy` picks among `(device, seconds, joules)` per decode token.
fn pick_device(costed: &[(Device, f64, f64)], policy: &Policy) -> Option<Device> {
    let by = |f: &dyn Fn(&(Device, f64, f64)) -> f64| {
        costed
            .iter()
            .min_by(|a, b| f(a).total_cmp(&f(b)))
            .map(|c| c.0.clone())
    };
    match policy {
        Policy::MinEnergy => by(&|c| c.2),
        Policy::MinLatency => by(&|c| c.1),
        Policy::EnergyDelay => by(&|c| c.1 * c.2),
        Policy::LatencyBudget(b) => {
            let b = b.as_secs_f64();
            // Least energy within the budget, else least time.
            by(&|c| if c.1 <= b { c.2 } else { 1e30 + c.1 })
        }
        Policy::PowerCap(w) => {
            // Least time within the power cap, else least power.
            by(&|c| {
                if c.2 / c.1 <= *w {
                    c.1
                } else {
                    1e30 + c.2 / c.1
                }
            })
        }
    }
}

/// Loads the model and its tokenizer, saying what was loaded on stderr.
pub fn load(path: &Path, dev: &Device) -> Result<(Model, Tokenizer), String> {
    let t0 = Instant::now();
    let (f, mut model) = Model::open(path, dev).map_err(|e| format!("{}: {e}", path.display()))?;
    if std::env::var_os("WATTLE_DECODER_NO_FUSE").is_none() {
        model
            .fuse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let tok =
        Tokenizer::from_gguf(&f).map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
    eprintln!(
        "wattle: {}: {} ({:.1} MB of weights{}), loaded on {dev} in {:.0} ms",
        path.display(),
        model.cfg.summary(),
        model.weight_bytes() as f64 / 1e6,
        if model.tied_output {
            ", tied output"
        } else {
            ""
        },
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok((model, tok))
}

/// `wattle run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// The prompt (special-token text such as `<|im_start|>` is parsed).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Tokens to generate (fewer when an end-of-generation token comes first).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 128,
        value_name = "N"
    )]
    pub n: usize,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Sample among the K likeliest tokens (0: all).
    #[arg(long, default_value_t = 40, value_name = "K")]
    pub top_k: usize,
    /// Sample among the likeliest tokens whose probability reaches P (1: all).
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    pub top_p: f32,
    /// Sampling seed (default: from the clock; printed on stderr).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context length in positions (default: the model's training context).
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `wattle run`: streams the generated text (not the prompt) to stdout; diagnostics and speed to
/// stderr.
pub fn run(a: &RunArgs) -> Result<(), String> {
    if !(a.temp.is_finite() && a.top_p.is_finite() && a.top_p > 0.0 && a.top_p <= 1.0) {
        return Err("--temp must be finite and --top-p in (0, 1]".into());
    }
    let (rt, dev) = a.engine.open(&a.model)?;
    let (model, tok) = load(&a.model, &dev)?;
    let ctx = a.ctx.unwrap_or(model.cfg.n_ctx_train);
    let mut prompt = tok.encode(a.prompt.as_bytes(), true, true);
    if prompt.is_empty() {
        // As llama.cpp: an empty prompt starts from BOS.
        prompt.extend(tok.bos());
    }
    if prompt.is_empty() {
        return Err("the prompt is empty and the model has no BOS token to start from".into());
    }
    if prompt.len() > ctx {
        return Err(format!(
            "the prompt is {} tokens, longer than the context of {ctx} (--ctx)",
            prompt.len()
        ));
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut sampler = Sampler::new(SamplerConfig {
        temp: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        seed,
    });
    let mut dec = Decoder::new(&rt, &model, a.engine.options(ctx))?;
    let profile = std::env::var_os("WATTLE_DECODER_PROFILE").is_some();
    eprintln!(
        "wattle run: {} prompt tokens, ctx {ctx}, {}, {}",
        prompt.len(),
        a.engine.describe(),
        if a.temp <= 0.0 {
            "greedy".to_string()
        } else {
            format!(
                "temp {} top-k {} top-p {} seed {seed}",
                a.temp, a.top_k, a.top_p
            )
        }
    );
    let mut out = std::io::stdout().lock();
    let mut text = Utf8Stream::new();
    let mut emit = |bytes: &[u8]| -> Result<(), String> {
        let s = text.push(bytes);
        out.write_all(s.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing the text: {e}"))
    };
    // One untimed token first: the CPU kernels repack the quantized weights at their first
    // use, a one-off cost that belongs to loading, not to the prompt's speed.
    let tw = Instant::now();
    dec.forward(&prompt[..1], 0).map_err(|e| e.to_string())?;
    dec.reset();
    eprintln!(
        "wattle run: warm-up (weights repacked for the kernels) {:.0} ms",
        tw.elapsed().as_secs_f64() * 1e3
    );
    let t0 = Instant::now();
    let mut generated = 0usize;
    let mut stop = None;
    let mut t_first = t0;
    if a.n > 0 {
        let logits = dec
            .forward(&prompt, prompt.len() - 1)
            .map_err(|e| e.to_string())?;
        let mut next = sampler.sample(&rt, &logits).map_err(|e| e.to_string())?;
        t_first = Instant::now();
        dec.set_profiling(profile);
        loop {
            if tok.is_eog(next) {
                stop = Some("end of generation token");
                break;
            }
            emit(tok.token_bytes(next, false))?;
            generated += 1;
            if generated == a.n {
                break;
            }
            if dec.position() >= ctx {
                stop = Some("context full");
                break;
            }
            let logits = dec.forward(&[next], 0).map_err(|e| e.to_string())?;
            next = sampler.sample(&rt, &logits).map_err(|e| e.to_string())?;
        }
    }
    let tail = text.finish();
    let mut out = std::io::stdout().lock();
    out.write_all(tail.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the text: {e}"))?;
    let t_end = Instant::now();
    let pp = (t_first - t0).as_secs_f64();
    let tg = (t_end - t_first).as_secs_f64();
    if let Some(why) = stop {
        eprintln!("wattle run: stopped after {generated} tokens: {why}");
    }
    eprintln!(
        "wattle run: prefill {} tokens in {:.1} ms ({:.1} t/s); decode {} tokens in {:.1} ms ({:.1} t/s); KV cache {:.2} MB",
        prompt.len(),
        pp * 1e3,
        prompt.len() as f64 / pp.max(1e-9),
        generated.saturating_sub(1),
        tg * 1e3,
        generated.saturating_sub(1) as f64 / tg.max(1e-9),
        dec.cache_bytes() as f64 / 1e6
    );
    if profile {
        print_step_times("wattle run: decode", &dec);
    }
    Ok(())
}

/// The decoder's time per kind of step (`WATTLE_DECODER_PROFILE`), on stderr.
fn print_step_times(prefix: &str, dec: &Decoder) {
    let total: f64 = dec.step_times().iter().map(|s| s.1).sum();
    for (what, secs, n) in dec.step_times() {
        eprintln!(
            "{prefix} {what:>16}: {:8.2} ms {:5.1}% ({n} calls, {:.1} us each)",
            secs * 1e3,
            100.0 * secs / total.max(1e-12),
            secs * 1e6 / n.max(1) as f64
        );
    }
}

/// `wattle perplexity`.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// The text file.
    pub file: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub ctx: usize,
    /// Evaluate at most N windows.
    #[arg(long, value_name = "N")]
    pub chunks: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The result of [`perplexity`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Its standard error.
    pub err: f64,
    /// Predictions scored.
    pub count: usize,
    /// Windows evaluated.
    pub chunks: usize,
}

/// Perplexity as llama-perplexity computes it: `tokens` cut into `⌊len/ctx⌋` windows of `ctx`
/// (at most `max_chunks`), each from an empty cache (its first token replaced by BOS when the
/// model adds one), scoring the predictions of positions `ctx/2 .. ctx−2`. `progress` sees each
/// window's running perplexity.
pub fn perplexity(
    dec: &mut Decoder,
    tokens: &[u32],
    bos: Option<u32>,
    ctx: usize,
    max_chunks: Option<usize>,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perplexity, String> {
    if ctx < 4 {
        return Err(format!("--ctx {ctx}: a window needs at least 4 tokens"));
    }
    if tokens.len() < 2 * ctx {
        return Err(format!(
            "{} tokens: at least 2·ctx = {} are needed (as llama-perplexity asks)",
            tokens.len(),
            2 * ctx
        ));
    }
    let n_chunks = (tokens.len() / ctx).min(max_chunks.unwrap_or(usize::MAX));
    if n_chunks == 0 {
        return Err("--chunks must be at least 1".into());
    }
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for i in 0..n_chunks {
        let mut ids = tokens[i * ctx..(i + 1) * ctx].to_vec();
        if let Some(b) = bos {
            ids[0] = b;
        }
        dec.reset();
        let logits = dec.forward(&ids, first).map_err(|e| e.to_string())?;
        let n_vocab = logits.shape()[1];
        let v = logits
            .to_f32_vec()
            .map_err(|e| format!("reading logits: {e}"))?;
        for j in first..ctx - 1 {
            let row = &v[(j - first) * n_vocab..(j - first + 1) * n_vocab];
            let lp = -log_prob(row, tokens[i * ctx + j + 1]);
            nll += lp;
            nll2 += lp * lp;
            count += 1;
        }
        progress(i, (nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(Perplexity {
        ppl,
        err,
        count,
        chunks: n_chunks,
    })
}

/// `wattle perplexity`: progress to stderr, then `PPL = <value> +/- <err>` on stdout.
pub fn perplexity_cmd(a: &PerplexityArgs) -> Result<(), String> {
    let (rt, dev) = a.engine.open(&a.model)?;
    let (model, tok) = load(&a.model, &dev)?;
    let mut text = std::fs::read(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
    // llama.cpp's file argument drops one trailing newline.
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    let tokens = tok.encode(&text, true, false);
    let bos = if tok.add_bos() { tok.bos() } else { None };
    eprintln!(
        "wattle perplexity: {}: {} tokens, {} windows of {} ({}), {}",
        a.file.display(),
        tokens.len(),
        (tokens.len() / a.ctx.max(1)).min(a.chunks.unwrap_or(usize::MAX)),
        a.ctx,
        a.engine.describe(),
        dev
    );
    let mut dec = Decoder::new(&rt, &model, a.engine.options(a.ctx))?;
    let profile = std::env::var_os("WATTLE_DECODER_PROFILE").is_some();
    dec.set_profiling(profile);
    let t0 = Instant::now();
    let r = perplexity(&mut dec, &tokens, bos, a.ctx, a.chunks, |i, p| {
        eprint!("[{}]{p:.4},", i + 1);
        let _ = std::io::stderr().flush();
    })?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!();
    eprintln!(
        "wattle perplexity: {} windows, {} predictions scored, {:.1} s ({:.1} tokens/s)",
        r.chunks,
        r.count,
        secs,
        (r.chunks * a.ctx) as f64 / secs.max(1e-9)
    );
    if profile {
        print_step_times("wattle perplexity:", &dec);
    }
    println!("PPL = {:.4} +/- {:.5}", r.ppl, r.err);
    Ok(())
}
