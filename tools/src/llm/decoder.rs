//! A llama-architecture decoder written against wattle's public API only: what an inference
//! engine does with wattle, in one readable file.
//!
//! One forward pass over `t` new tokens at positions `p0 .. p0 + t`:
//!
//! ```text
//! x = get_rows(token_embd, ids)                                  [t, n_embd]
//! for each block:
//!     h = rms_norm(x, attn_norm)
//!     q = rope(matmul(h, wq))   k = rope(matmul(h, wk))   v = matmul(h, wv)
//!     cache.append(k, v)                                         (quantized on the way in)
//!     o = attention of q over the cached keys/values             [t, n_head, head_dim]
//!     x = x + matmul(o, wo)
//!     h = rms_norm(x, ffn_norm)
//!     x = x + matmul(silu(matmul(h, w_gate)) * matmul(h, w_up), w_down)
//! logits = matmul(rms_norm(x, output_norm), output)              [t, n_vocab]
//! ```
//!
//! Attention: a prefill into an empty cache whose storage `rt.attention` reads directly (F16,
//! Q8_0, Q4_0) runs `rt.attention` over this batch's keys and values rounded to that storage
//! format — the same numbers the cache holds, without reading them back. Every other step (decode,
//! a prefill after earlier tokens, KIVI, window eviction with sinks) reads the cache through
//! [`KvCache::attend`]. Either way the cache format shapes the result, as it does in llama.cpp,
//! so `--kv` changes perplexity too.
//!
//! After [`Model::fuse`], each block's Q/K/V projections are one matmul and gate/up another (the
//! outputs split by columns afterwards): 4 matmul calls per block instead of 7, which matters for
//! a small model whose decode step is a few hundred short calls.
//!
//! [`Sampler`] picks tokens from the logits: greedy at temperature 0, else top-k, then top-p
//! (nucleus), then temperature, then a draw from a seeded PRNG.

use std::fmt;

use wattle::{
    AttentionParams, DType, Eviction, KvCache, KvCacheConfig, KvFormat, RopeMode, RopeParams,
    Runtime, Tensor,
};

use super::model::Model;

/// A wattle call failed inside the decoder; says which step.
#[derive(Debug)]
pub struct DecodeError {
    /// What the decoder was doing.
    pub step: String,
    /// wattle's error.
    pub error: wattle::Error,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

impl std::error::Error for DecodeError {}

/// Adds the step to a wattle error.
trait Step<T> {
    fn at(self, step: impl FnOnce() -> String) -> Result<T, DecodeError>;
}

impl<T> Step<T> for wattle::Result<T> {
    fn at(self, step: impl FnOnce() -> String) -> Result<T, DecodeError> {
        self.map_err(|error| DecodeError {
            step: step(),
            error,
        })
    }
}

/// The KV cache formats `--kv` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvChoice {
    /// f16 keys and values (llama.cpp's default).
    F16,
    /// ggml Q8_0 blocks.
    Q8_0,
    /// ggml Q4_0 blocks.
    Q4_0,
    /// KIVI, 4 bits.
    Kivi4,
    /// KIVI, 2 bits.
    Kivi2,
}

impl KvChoice {
    /// Every choice, in `--kv` order.
    pub const ALL: [KvChoice; 5] = [
        KvChoice::F16,
        KvChoice::Q8_0,
        KvChoice::Q4_0,
        KvChoice::Kivi4,
        KvChoice::Kivi2,
    ];

    /// The `--kv` name.
    pub fn name(self) -> &'static str {
        match self {
            KvChoice::F16 => "f16",
            KvChoice::Q8_0 => "q8_0",
            KvChoice::Q4_0 => "q4_0",
            KvChoice::Kivi4 => "kivi4",
            KvChoice::Kivi2 => "kivi2",
        }
    }

    /// The cache format: KIVI with groups of 32 and the newest 128 tokens in f16 (the paper's
    /// setting).
    pub fn format(self) -> KvFormat {
        match self {
            KvChoice::F16 => KvFormat::F16,
            KvChoice::Q8_0 => KvFormat::Q8_0,
            KvChoice::Q4_0 => KvFormat::Q4_0,
            KvChoice::Kivi4 => KvFormat::Kivi {
                bits: 4,
                group: 32,
                residual: 128,
            },
            KvChoice::Kivi2 => KvFormat::Kivi {
                bits: 2,
                group: 32,
                residual: 128,
            },
        }
    }

    /// The tensor dtype `rt.attention` reads the same values from, when there is one.
    fn attention_dtype(self) -> Option<DType> {
        match self {
            KvChoice::F16 => Some(DType::F16),
            KvChoice::Q8_0 => Some(DType::Q8_0),
            KvChoice::Q4_0 => Some(DType::Q4_0),
            KvChoice::Kivi4 | KvChoice::Kivi2 => None,
        }
    }
}

impl fmt::Display for KvChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        KvChoice::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = KvChoice::ALL.iter().map(|k| k.name()).collect();
                format!("unknown KV format `{s}` (expected {})", names.join(", "))
            })
    }
}

/// How a [`Decoder`] keeps its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Most positions a sequence may take.
    pub ctx: usize,
    /// KV cache format.
    pub kv: KvChoice,
    /// Window eviction: keys attended besides the sinks, the query's own included.
    pub window: Option<usize>,
    /// With `window`: first positions always kept (StreamingLLM's attention sinks).
    pub sinks: usize,
    /// Read the cache through `KvCache::attend` in prefill too (never `rt.attention`).
    pub cache_prefill: bool,
}

/// The decoder: a model, its KV cache and the next position.
pub struct Decoder<'m> {
    rt: Runtime,
    model: &'m Model,
    opts: DecoderOptions,
    cache: KvCache,
    pos: usize,
    /// Time per kind of step when profiling.
    times: Option<Vec<(&'static str, f64, usize)>>,
}

impl fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("opts", &self.opts)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

/// `t` with another shape of the same element count: a view sharing the storage.
fn reshape(t: &Tensor, shape: &[usize]) -> wattle::Result<Tensor> {
    t.reshape(shape)
}

/// The columns of a `[m, n]` F32 tensor cut into consecutive groups of `widths` (copies).
fn split_cols(t: &Tensor, widths: &[usize]) -> wattle::Result<Vec<Tensor>> {
    let (m, n) = (t.shape()[0], t.shape()[1]);
    let v = t.to_f32_vec()?;
    let mut out = Vec::with_capacity(widths.len());
    let mut c0 = 0;
    for &w in widths {
        let mut part = Vec::with_capacity(m * w);
        for r in 0..m {
            part.extend_from_slice(&v[r * n + c0..r * n + c0 + w]);
        }
        out.push(Tensor::from_f32(&part, &[m, w])?.to(&t.device())?);
        c0 += w;
    }
    Ok(out)
}

/// Rows `from..` of a `[m, n]` F32 tensor (a copy).
fn rows_from(t: &Tensor, from: usize) -> wattle::Result<Tensor> {
    if from == 0 {
        return Ok(t.clone());
    }
    let (m, n) = (t.shape()[0], t.shape()[1]);
    let v = t.to_f32_vec()?;
    Tensor::from_f32(&v[from * n..], &[m - from, n])?.to(&t.device())
}

impl<'m> Decoder<'m> {
    /// A decoder over `model` with an empty cache on the model's device.
    pub fn new(
        rt: &Runtime,
        model: &'m Model,
        opts: DecoderOptions,
    ) -> Result<Decoder<'m>, String> {
        let c = &model.cfg;
        if opts.ctx == 0 {
            return Err("the context must hold at least one token".into());
        }
        let eviction = match opts.window {
            None => Eviction::None,
            Some(0) => return Err("--window must be at least 1".into()),
            Some(window) => Eviction::Window {
                window,
                sinks: opts.sinks,
            },
        };
        let cfg = KvCacheConfig {
            layers: c.n_layer,
            kv_heads: c.n_head_kv,
            head_dim: c.head_dim,
            v_head_dim: None,
            format: opts.kv.format(),
            eviction,
            // Reserve up to 2048 positions up front; a longer context grows as it fills.
            capacity: Some(opts.ctx.min(2048)),
        };
        let cache = KvCache::new(rt, &model.device, cfg)
            .map_err(|e| format!("KV cache ({} on {}): {e}", opts.kv, model.device))?;
        Ok(Decoder {
            rt: rt.clone(),
            model,
            opts,
            cache,
            pos: 0,
            times: None,
        })
    }

    /// The options the decoder was made with.
    pub fn options(&self) -> &DecoderOptions {
        &self.opts
    }

    /// Position the next token takes (tokens evaluated since the last reset).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes the KV cache holds.
    pub fn cache_bytes(&self) -> usize {
        self.cache.memory_bytes()
    }

    /// Forgets every token: the next one is at position 0 again.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.pos = 0;
    }

    /// Evaluates `ids` at the next positions and returns the logits `[t − logits_from, n_vocab]`
    /// of the tokens `logits_from..` (each predicts the token after it).
    pub fn forward(&mut self, ids: &[u32], logits_from: usize) -> Result<Tensor, DecodeError> {
        let m = self.model;
        let c = &m.cfg;
        let t = ids.len();
        let p0 = self.pos;
        let invalid = |msg: String| DecodeError {
            step: "forward".into(),
            error: wattle::Error::InvalidArgument(msg),
        };
        if t == 0 || logits_from >= t {
            return Err(invalid(format!(
                "{t} tokens with logits from token {logits_from}: nothing to evaluate"
            )));
        }
        if p0 + t > self.opts.ctx {
            return Err(invalid(format!(
                "{} positions do not fit the context of {}",
                p0 + t,
                self.opts.ctx
            )));
        }
        let rt = &self.rt;
        let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_head_kv);
        let rope = RopeParams {
            mode: RopeMode::Normal,
            n_dims: c.n_rot,
            freq_base: c.rope_freq_base,
            freq_scale: c.rope_freq_scale(),
            pos0: p0,
            positions: None,
        };
        // rt.attention reads the batch itself when the cache held nothing before it and the
        // cache's rule for which keys a query sees is plain causal (or a window without sinks).
        let direct_dtype = match (self.opts.cache_prefill, p0, self.opts.window) {
            (false, 0, None) => self.opts.kv.attention_dtype(),
            (false, 0, Some(_)) if self.opts.sinks == 0 => self.opts.kv.attention_dtype(),
            _ => None,
        };
        // The cache applies its own eviction rule (window and sinks); rt.attention over the
        // batch is told the window (used only without sinks).
        let cached = AttentionParams {
            q_pos0: p0,
            ..AttentionParams::causal()
        };
        let direct = AttentionParams {
            window: self.opts.window,
            ..cached.clone()
        };

        let mut clock = Clock::start(self.times.is_some());
        let mut x = rt
            .get_rows(&m.tok_embd, ids)
            .at(|| "token embeddings".into())?;
        clock.lap("get_rows");
        for (l, b) in m.blocks.iter().enumerate() {
            let at = |what: &'static str| move || format!("block {l}: {what}");
            let h = rt
                .rms_norm(&x, &b.attn_norm, c.rms_eps)
                .at(at("attn_norm"))?;
            clock.lap("rms_norm");
            let (q, k, v) = match &b.fused {
                Some(fb) => {
                    let qkv = rt.matmul(&h, &fb.wqkv).at(at("qkv projection"))?;
                    clock.lap("matmul qkv");
                    let mut heads =
                        split_cols(&qkv, &[nh * hd, nkv * hd, nkv * hd]).at(at("q/k/v split"))?;
                    let v = heads.pop().expect("three parts");
                    let k = heads.pop().expect("three parts");
                    let q = heads.pop().expect("three parts");
                    (q, k, v)
                }
                None => {
                    let q = rt.matmul(&h, &b.wq).at(at("q projection"))?;
                    let k = rt.matmul(&h, &b.wk).at(at("k projection"))?;
                    let v = rt.matmul(&h, &b.wv).at(at("v projection"))?;
                    clock.lap("matmul qkv");
                    (q, k, v)
                }
            };
            let q = reshape(&q, &[t, nh, hd]).at(at("q heads"))?;
            let k = reshape(&k, &[t, nkv, hd]).at(at("k heads"))?;
            let v = reshape(&v, &[t, nkv, hd]).at(at("v heads"))?;
            clock.lap("reshape");
            let q = rt.rope(&q, &rope).at(at("rope q"))?;
            let k = rt.rope(&k, &rope).at(at("rope k"))?;
            clock.lap("rope");
            self.cache.append(l, &k, &v).at(at("KV append"))?;
            clock.lap("kv append");
            let o = match direct_dtype {
                Some(dt) => {
                    let ks = k.quantize(dt).at(at("K to the cache format"))?;
                    let vs = v.quantize(dt).at(at("V to the cache format"))?;
                    rt.attention(&q, &ks, &vs, &direct).at(at("attention"))?
                }
                None => self
                    .cache
                    .attend(l, &q, &cached)
                    .at(at("cached attention"))?,
            };
            clock.lap("attention");
            let o = reshape(&o, &[t, nh * hd]).at(at("attention output"))?;
            clock.lap("reshape");
            let a = rt.matmul(&o, &b.wo).at(at("output projection"))?;
            clock.lap("matmul o");
            x = rt.add(&x, &a).at(at("residual"))?;
            clock.lap("add");
            let h = rt.rms_norm(&x, &b.ffn_norm, c.rms_eps).at(at("ffn_norm"))?;
            clock.lap("rms_norm");
            let (g, u) = match &b.fused {
                Some(fb) => {
                    let gu = rt.matmul(&h, &fb.w_gate_up).at(at("gate/up"))?;
                    clock.lap("matmul gate/up");
                    let mut parts = split_cols(&gu, &[c.n_ff, c.n_ff]).at(at("gate/up split"))?;
                    let u = parts.pop().expect("two parts");
                    (parts.pop().expect("two parts"), u)
                }
                None => {
                    let g = rt.matmul(&h, &b.w_gate).at(at("gate"))?;
                    let u = rt.matmul(&h, &b.w_up).at(at("up"))?;
                    clock.lap("matmul gate/up");
                    (g, u)
                }
            };
            clock.lap("split");
            let f = rt.silu_mul(&g, &u).at(at("silu_mul"))?;
            clock.lap("silu_mul");
            let d = rt.matmul(&f, &b.w_down).at(at("down"))?;
            clock.lap("matmul down");
            x = rt.add(&x, &d).at(at("residual"))?;
            clock.lap("add");
        }
        self.pos = p0 + t;
        let x = rows_from(&x, logits_from).at(|| "last rows".into())?;
        let x = rt
            .rms_norm(&x, &m.output_norm, c.rms_eps)
            .at(|| "output_norm".into())?;
        clock.lap("rms_norm");
        let logits = rt.matmul(&x, &m.output).at(|| "logits".into())?;
        clock.lap("matmul logits");
        if let Some(times) = &mut self.times {
            clock.add_to(times);
        }
        Ok(logits)
    }

    /// Starts (or stops) timing each kind of step; see [`Decoder::step_times`].
    pub fn set_profiling(&mut self, on: bool) {
        self.times = on.then(Vec::new);
    }

    /// Seconds and calls per kind of step since profiling was turned on, slowest first.
    pub fn step_times(&self) -> Vec<(&'static str, f64, usize)> {
        let mut v = self.times.clone().unwrap_or_default();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

/// Wall time between the laps of a forward pass, by kind of step (when enabled).
struct Clock {
    last: Option<std::time::Instant>,
    laps: Vec<(&'static str, f64, usize)>,
}

impl Clock {
    fn start(enabled: bool) -> Clock {
        Clock {
            last: enabled.then(std::time::Instant::now),
            laps: Vec::new(),
        }
    }

    /// Charges the time since the previous lap to `what`.
    fn lap(&mut self, what: &'static str) {
        let Some(last) = self.last else { return };
        let now = std::time::Instant::now();
        let dt = (now - last).as_secs_f64();
        self.last = Some(now);
        match self.laps.iter_mut().find(|l| l.0 == what) {
            Some(l) => {
                l.1 += dt;
                l.2 += 1;
            }
            None => self.laps.push((what, dt, 1)),
        }
    }

    fn add_to(&self, acc: &mut Vec<(&'static str, f64, usize)>) {
        for &(what, dt, n) in &self.laps {
            match acc.iter_mut().find(|l| l.0 == what) {
                Some(l) => {
                    l.1 += dt;
                    l.2 += n;
                }
                None => acc.push((what, dt, n)),
            }
        }
    }
}

/// How [`Sampler`] picks tokens (llama.cpp's order: top-k, top-p, temperature, draw).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Temperature; ≤ 0 is greedy (argmax).
    pub temp: f32,
    /// Keep the `top_k` likeliest tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of likeliest tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// PRNG seed.
    pub seed: u64,
}

/// A small PRNG (SplitMix64): enough for sampling, reproducible from its seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Starts from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks the next token from a row of logits.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler seeded from `cfg.seed`.
    pub fn new(cfg: SamplerConfig) -> Sampler {
        Sampler {
            cfg,
            rng: SplitMix64::new(cfg.seed),
        }
    }

    /// The token for the last row of `logits [m, n_vocab]`.
    pub fn sample(&mut self, rt: &Runtime, logits: &Tensor) -> Result<u32, DecodeError> {
        let last = rows_from(logits, logits.shape()[0] - 1).at(|| "last logits".into())?;
        let n = last.shape()[1];
        if self.cfg.temp <= 0.0 {
            let ids = rt.argmax(&last).at(|| "argmax".into())?;
            return Ok(ids[0]);
        }
        let k = if self.cfg.top_k == 0 {
            n
        } else {
            self.cfg.top_k.min(n)
        };
        // Candidates in descending order of logit.
        let cand = rt.top_k(&last, k).at(|| "top-k".into())?.remove(0);
        let t = self.cfg.temp as f64;
        let top = cand[0].1 as f64;
        let mut p: Vec<f64> = cand.iter().map(|&(_, l)| (l as f64 - top).exp()).collect();
        let total: f64 = p.iter().sum();
        // Nucleus on the untempered distribution, as llama.cpp's chain does (top-p before temp).
        let mut keep = p.len();
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, &pi) in p.iter().enumerate() {
                acc += pi / total;
                if acc >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        p.truncate(keep);
        for (pi, &(_, l)) in p.iter_mut().zip(&cand) {
            *pi = ((l as f64 - top) / t).exp();
        }
        let total: f64 = p.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (i, &pi) in p.iter().enumerate() {
            if r < pi {
                return Ok(cand[i].0);
            }
            r -= pi;
        }
        Ok(cand[keep - 1].0)
    }
}

/// Natural-log probability of token `tok` under a row of logits (log-softmax in f64).
pub fn log_prob(row: &[f32], tok: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    row[tok as usize] as f64 - max - sum.ln()
}
