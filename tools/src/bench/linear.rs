//! `wattle bench --suite linear`: `rt.linear_attention` (SPEC §7) for one layer of 32 heads ×
//! d_k 128 × d_v 128 — prefill of 4096 tokens and decode of one token (state in and out), every
//! kind, chunked and recurrent forms — and wattle's softmax attention (`rt.attention`, F16 K/V,
//! 32/32 heads of 128) on the same layer at several context lengths, to find where linear
//! attention overtakes it. With `--peer ggml=…` on the CPU, ggml's `SSM_SCAN` (the Mamba-2 scan,
//! the nearest peer op) is quoted in a note.
//!
//! **FLOPs** (the `GOPS` column) count what each algorithm multiplies and adds, per head:
//!
//! * chunked, per chunk of `c` tokens (64, the last one shorter), with `v = d_v` (`d_v + 1` for
//!   vanilla, whose normaliser rides along as a value column):
//!   `Q Kᵀ` on and below the diagonal `2·d_k·c(c+1)/2`, `A V` (triangular) `2·v·c(c+1)/2`,
//!   `Q S` `2·c·d_k·v`, the state update `Kᵀ V` `2·c·d_k·v`; the delta rule adds `K Kᵀ` below
//!   the diagonal `2·d_k·c(c−1)/2`, `K S` `2·c·d_k·d_v`, the forward substitution
//!   `(I + L)⁻¹` `c(c−1)(c−2)/3` and `U = T R` `2·d_v·c(c+1)/2`. The element-wise work (decay
//!   masks, exponentials, scaling) is not counted.
//! * recurrent, per token: the rank-1 update `2·d_k·d_v`, the read `o = Sᵀq` `2·d_k·d_v`, the
//!   decay `d_k·d_v` (not for vanilla, which adds `3·d_k` for z); the delta rule adds `kᵀS`
//!   `2·d_k·d_v`.
//! * softmax attention: `4·d` per (query, visible key) (`QKᵀ` and `PV`), as the attention suite.

use super::attention::AttnCase;
use super::{cold_copies, device_label, time_calls, BenchConfig, Figure, Mode, Progress, Rng, Row};
use crate::peer::{self, PeerSpec};
use crate::stats::Summary;
use crate::sysinfo::kind_name;
use wattle::{AttentionParams, DType, Device, LinearAttention, LinearForm, Runtime, Tensor};

/// Tokens per chunk of the chunked form.
const CHUNK: usize = wattle_kernels::linear_attn::CHUNK;

/// The four recurrences of SPEC §7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinKind {
    /// elu + 1 feature map with a normaliser.
    Vanilla,
    /// Per-head decay γ.
    Retention,
    /// GLA: per-token, per-key-channel decay.
    Gated,
    /// Gated delta rule.
    Delta,
}

impl LinKind {
    /// Every kind.
    pub const ALL: [LinKind; 4] = [
        LinKind::Vanilla,
        LinKind::Retention,
        LinKind::Gated,
        LinKind::Delta,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            LinKind::Vanilla => "vanilla",
            LinKind::Retention => "retention",
            LinKind::Gated => "gla",
            LinKind::Delta => "delta",
        }
    }
}

/// One linear-attention figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinCase {
    /// The recurrence.
    pub kind: LinKind,
    /// Chunked or recurrent.
    pub chunked: bool,
    /// Tokens.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Key dimension.
    pub dk: usize,
    /// Value dimension.
    pub dv: usize,
}

impl LinCase {
    /// `decode` for one token, else `prefill`.
    pub fn phase(&self) -> &'static str {
        if self.t == 1 {
            "decode"
        } else {
            "prefill"
        }
    }

    /// `linear gla chunked`.
    pub fn op(&self) -> String {
        format!(
            "linear {} {}",
            self.kind.name(),
            if self.chunked { "chunked" } else { "recurrent" }
        )
    }

    /// Floating-point operations of the call (see the module documentation).
    pub fn flops(&self) -> f64 {
        let (dk, dv) = (self.dk as f64, self.dv as f64);
        let delta = self.kind == LinKind::Delta;
        let per_head = if self.chunked {
            let v = if self.kind == LinKind::Vanilla {
                dv + 1.0
            } else {
                dv
            };
            let mut f = 0.0;
            let mut t0 = 0;
            while t0 < self.t {
                let c = CHUNK.min(self.t - t0) as f64;
                let tri = c * (c + 1.0) / 2.0;
                f += 2.0 * tri * (dk + v) + 4.0 * c * dk * v;
                if delta {
                    f += 2.0 * dk * c * (c - 1.0) / 2.0
                        + 2.0 * c * dk * dv
                        + c * (c - 1.0) * (c - 2.0) / 3.0
                        + 2.0 * dv * tri;
                }
                t0 += CHUNK;
            }
            f
        } else {
            let per_token = match self.kind {
                LinKind::Vanilla => 4.0 * dk * dv + 3.0 * dk,
                LinKind::Retention | LinKind::Gated => 5.0 * dk * dv,
                LinKind::Delta => 7.0 * dk * dv,
            };
            self.t as f64 * per_token
        };
        self.h as f64 * per_head
    }

    /// Bytes moved: q, k, v, the gates and the output once, the state in and out.
    pub fn bytes(&self) -> u64 {
        let (t, h, dk, dv) = (self.t, self.h, self.dk, self.dv);
        let cols = if self.kind == LinKind::Vanilla {
            dv + 1
        } else {
            dv
        };
        let gates = match self.kind {
            LinKind::Vanilla | LinKind::Retention => 0,
            LinKind::Gated => t * h * dk,
            LinKind::Delta => 2 * t * h,
        };
        4 * (t * h * (2 * dk + 2 * dv) + gates + 2 * h * dk * cols) as u64
    }

    /// `32 heads, dk 128, dv 128, 4096 tokens`.
    pub fn label(&self) -> String {
        format!(
            "{} heads, dk {}, dv {}, {} token{}",
            self.h,
            self.dk,
            self.dv,
            self.t,
            if self.t == 1 { "" } else { "s" }
        )
    }
}

/// Heads and dimensions of the benchmarked layer.
const H: usize = 32;
const D: usize = 128;

/// Prefill length (`quick`: shorter).
fn prefill_tokens(quick: bool) -> usize {
    if quick {
        512
    } else {
        4096
    }
}

/// The linear-attention cases: prefill and decode, every kind, both forms.
pub fn cases(quick: bool) -> Vec<LinCase> {
    let mut v = Vec::new();
    for t in [prefill_tokens(quick), 1] {
        for kind in LinKind::ALL {
            for chunked in [true, false] {
                v.push(LinCase {
                    kind,
                    chunked,
                    t,
                    h: H,
                    dk: D,
                    dv: D,
                });
            }
        }
    }
    v
}

/// Softmax attention on the same layer (32/32 heads, d 128, F16 K/V): prefill of `t` tokens
/// from an empty context (up to 2048: its cost grows with the square, and the crossover with
/// linear attention lies far below), and decode at contexts of `t` keys.
pub fn softmax_cases(quick: bool) -> Vec<AttnCase> {
    let c = |t_q, t_k| AttnCase {
        t_q,
        h_q: H,
        h_kv: H,
        d: D,
        t_k,
        dtype: DType::F16,
        window: None,
    };
    let (prefill, decode): (&[usize], &[usize]) = if quick {
        (&[64, 256, 1024], &[64, 256, 2048])
    } else {
        (
            &[64, 128, 256, 512, 1024, 2048],
            &[64, 256, 1024, 4096, 16384],
        )
    };
    prefill
        .iter()
        .map(|&t| c(t, t))
        .chain(decode.iter().map(|&t| c(1, t)))
        .collect()
}

/// Progress steps of [`run`] on one device (figures, plus the peer when there is one).
pub fn steps(cfg: &BenchConfig) -> usize {
    cases(cfg.quick).len()
        + softmax_cases(cfg.quick).len()
        + cfg
            .peer
            .iter()
            .filter(|p| p.backend() == "cpu" && p.has_attention())
            .count()
}

/// The inputs of one linear case (the same data serves both forms).
struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kind: LinearAttention,
    state: Tensor,
}

fn inputs(c: &LinCase, rng: &mut Rng, dev: &Device) -> wattle::Result<Inputs> {
    let (t, h, dk, dv) = (c.t, c.h, c.dk, c.dv);
    let q = Tensor::from_f32(&rng.fill(t * h * dk), &[t, h, dk])?.to(dev)?;
    // L2-normalised keys (the delta rule's contract).
    let mut kd = rng.fill(t * h * dk);
    for row in kd.chunks_exact_mut(dk) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().for_each(|x| *x /= n);
    }
    let k = Tensor::from_f32(&kd, &[t, h, dk])?.to(dev)?;
    let v = Tensor::from_f32(&rng.fill(t * h * dv), &[t, h, dv])?.to(dev)?;
    // Decays in (−0.1, 0]: long memories, as trained models have.
    let decays = |rng: &mut Rng, n: usize| -> Vec<f32> {
        rng.fill(n).into_iter().map(|x| -0.05 * (x + 1.0)).collect()
    };
    let kind = match c.kind {
        LinKind::Vanilla => LinearAttention::Vanilla,
        LinKind::Retention => LinearAttention::Retention {
            gamma: (0..h)
                .map(|i| 1.0 - (i as f32 + 1.0) / (4.0 * h as f32))
                .collect(),
        },
        LinKind::Gated => LinearAttention::Gated {
            log_decay: Tensor::from_f32(&decays(rng, t * h * dk), &[t, h, dk])?.to(dev)?,
        },
        LinKind::Delta => LinearAttention::GatedDelta {
            beta: Tensor::from_f32(
                &rng.fill(t * h)
                    .into_iter()
                    .map(|x| 0.5 * (x + 1.0))
                    .collect::<Vec<_>>(),
                &[t, h],
            )?
            .to(dev)?,
            log_decay: Tensor::from_f32(&decays(rng, t * h), &[t, h])?.to(dev)?,
        },
    };
    let cols = if c.kind == LinKind::Vanilla {
        dv + 1
    } else {
        dv
    };
    let mut st = rng.fill(h * dk * cols);
    st.iter_mut().for_each(|x| *x *= 0.01);
    if c.kind == LinKind::Vanilla {
        // z is a sum of positive features.
        for row in st.chunks_exact_mut(cols) {
            row[dv] = row[dv].abs() + 1.0;
        }
    }
    let state = Tensor::from_f32(&st, &[h, dk, cols])?.to(dev)?;
    Ok(Inputs {
        q,
        k,
        v,
        kind,
        state,
    })
}

/// Runs the linear and softmax cases on `dev`, one row each, then notes the chunked/recurrent
/// ratios, the crossovers and the peer's figure. Prefill is hot; decode is cold (copies of the
/// state or K/V cache totalling more than twice the last-level cache, rotated), as in a model
/// of many layers. A software GPU (the CPU emulating one) runs the decode cases only.
pub fn run(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    progress: &Progress,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let label = device_label(dev);
    let slow = !dev.is_cpu() && dev.info().software;
    if slow {
        notes.push(format!(
            "{label}: a software GPU runs the linear attention decode cases only (prefill and \
             the softmax comparison would take minutes)"
        ));
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let first = rows.len();
    for case in cases(cfg.quick) {
        if slow && case.t > 1 {
            progress.inc();
            continue;
        }
        progress.start(format!(
            "{} {} {} {}",
            kind_name(dev),
            case.op(),
            case.phase(),
            case.label()
        ));
        // Decode rotates over copies of the layer (state and inputs) totalling more than twice
        // the last-level cache, as a model of many layers reads each layer's state from memory.
        let copies = if case.t == 1 {
            cold_copies(case.bytes(), cfg.llc_bytes)
        } else {
            1
        };
        let result = (0..copies)
            .map(|_| inputs(&case, &mut rng, dev))
            .collect::<wattle::Result<Vec<_>>>()
            .and_then(|xs| {
                let form = if case.chunked {
                    LinearForm::Chunked
                } else {
                    LinearForm::Recurrent
                };
                let mut next = 0;
                time_calls(dev, cfg, || {
                    let x = &xs[next % xs.len()];
                    next += 1;
                    rt.linear_attention_with(&x.q, &x.k, &x.v, &x.kind, Some(&x.state), form)
                })
            });
        progress.inc();
        let times = match result {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("{label} {} {}: skipped: {e}", case.op(), case.label());
                progress.note(&msg);
                notes.push(msg);
                continue;
            }
        };
        let Some(time) = Summary::from_seconds(&times) else {
            continue;
        };
        let secs = time.median_us * 1e-6;
        let bytes = case.bytes();
        let mut row = Row::figure(
            dev,
            Figure {
                op: case.op(),
                phase: case.phase().into(),
                dtype: "f32".into(),
                mnk: (case.t, case.h, case.dk),
                case: format!("{}, {} tok/s", case.label(), fmt_rate(case.t as f64 / secs)),
                bytes,
                ops: case.flops(),
            },
            time,
        );
        if copies > 1 {
            row.mode = Mode::Cold;
            row.copies = copies;
        }
        rows.push(row);
    }
    let lin_rows = rows.len();
    for case in softmax_cases(cfg.quick) {
        if slow {
            progress.inc();
            continue;
        }
        progress.start(format!(
            "{} softmax attention {} {}",
            kind_name(dev),
            case.phase(),
            case.label()
        ));
        let copies = if case.t_q == 1 {
            cold_copies(case.bytes(), cfg.llc_bytes)
        } else {
            1
        };
        let result = time_softmax(rt, dev, cfg, &case, copies, &mut rng);
        progress.inc();
        let times = match result {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("{label} softmax attention {}: skipped: {e}", case.label());
                progress.note(&msg);
                notes.push(msg);
                continue;
            }
        };
        let Some(time) = Summary::from_seconds(&times) else {
            continue;
        };
        let secs = time.median_us * 1e-6;
        let bytes = case.bytes();
        let mut row = Row::figure(
            dev,
            Figure {
                op: "attention (vs linear)".into(),
                phase: case.phase().into(),
                dtype: case.dtype.to_string(),
                mnk: (case.t_q, case.t_k, case.d),
                case: format!(
                    "{}, {} tok/s",
                    case.label(),
                    fmt_rate(case.t_q as f64 / secs)
                ),
                bytes,
                ops: case.flops(),
            },
            time,
        );
        if copies > 1 {
            row.mode = Mode::Cold;
            row.copies = copies;
        }
        rows.push(row);
    }
    notes.extend(summary_notes(
        &label,
        &rows[first..lin_rows],
        &rows[lin_rows..],
    ));
    for spec in cfg
        .peer
        .iter()
        .filter(|p| p.backend() == "cpu" && p.has_attention())
    {
        progress.start(format!("peer {} ssm ({})", spec.name, spec.path.display()));
        notes.push(peer_note(spec, &rows[first..lin_rows]));
        progress.inc();
    }
}

/// Times `rt.attention` on a softmax case: causal, the queries at the end of the keys,
/// rotating over `copies` K/V caches.
fn time_softmax(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    case: &AttnCase,
    copies: usize,
    rng: &mut Rng,
) -> wattle::Result<Vec<f64>> {
    let q = Tensor::from_f32(
        &rng.fill(case.t_q * case.h_q * case.d),
        &[case.t_q, case.h_q, case.d],
    )?
    .to(dev)?;
    let kv = |rng: &mut Rng| -> wattle::Result<Tensor> {
        let shape = [case.t_k, case.h_kv, case.d];
        Tensor::from_f32(&rng.fill(shape.iter().product()), &shape)?
            .quantize(case.dtype)?
            .to(dev)
    };
    let caches = (0..copies)
        .map(|_| Ok((kv(rng)?, kv(rng)?)))
        .collect::<wattle::Result<Vec<_>>>()?;
    let params = AttentionParams {
        q_pos0: case.t_k - case.t_q,
        ..AttentionParams::causal()
    };
    let mut next = 0;
    time_calls(dev, cfg, || {
        let (k, v) = &caches[next % caches.len()];
        next += 1;
        rt.attention(&q, k, v, &params)
    })
}

/// `12.3k`, `456`.
fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The kind of a linear row's op (`linear gla chunked` → `gla`), and whether it is chunked.
fn row_kind(r: &Row) -> Option<(&str, bool)> {
    let mut w = r.op.split_whitespace();
    (w.next() == Some("linear")).then_some(())?;
    let kind = w.next()?;
    Some((kind, w.next() == Some("chunked")))
}

/// Where linear time `lin(t)` first drops below the softmax times `soft` (`(tokens, seconds)`,
/// ascending): log-log interpolation between the measured points; `None` when it never does in
/// the measured range, `Some(0)` when it already does at the first point.
fn crossover(soft: &[(usize, f64)], lin: impl Fn(usize) -> f64) -> Option<usize> {
    let gap = |&(t, s): &(usize, f64)| (lin(t) / s).ln();
    let first = soft.first()?;
    if gap(first) <= 0.0 {
        return Some(0);
    }
    for w in soft.windows(2) {
        let (g0, g1) = (gap(&w[0]), gap(&w[1]));
        if g1 <= 0.0 {
            let f = g0 / (g0 - g1);
            let (l0, l1) = ((w[0].0 as f64).ln(), (w[1].0 as f64).ln());
            return Some((l0 + f * (l1 - l0)).exp().round() as usize);
        }
    }
    None
}

/// The chunked/recurrent ratio per kind and the crossovers with softmax attention.
fn summary_notes(label: &str, lin: &[Row], soft: &[Row]) -> Vec<String> {
    let mut notes = Vec::new();
    let secs = |r: &Row| r.time.median_us * 1e-6;
    let prefill = |kind: &str, chunked: bool| {
        lin.iter()
            .find(|r| r.phase == "prefill" && row_kind(r) == Some((kind, chunked)))
    };
    let mut ratios = Vec::new();
    for kind in LinKind::ALL.map(LinKind::name) {
        if let (Some(c), Some(r)) = (prefill(kind, true), prefill(kind, false)) {
            ratios.push(format!("{kind} {:.2}×", secs(r) / secs(c)));
        }
    }
    if !ratios.is_empty() {
        notes.push(format!(
            "{label} linear attention, chunked vs recurrent at {} tokens (time ratio): {}. Both \
             forms do about the same arithmetic here (4·d_k·d_v per token and head for the state \
             terms, plus c·(d_k + d_v) inside chunks of c = 64 or d_k·d_v of decay): the \
             chunked form runs it as register-tiled matmuls, the recurrent one as one fused \
             SIMD sweep over the state per token, so on a CPU neither can be many times faster",
            prefill("retention", true).map_or(0, |r| r.m),
            ratios.join(", ")
        ));
    }
    let points = |phase: &str| -> Vec<(usize, f64)> {
        soft.iter()
            .filter(|r| r.phase == phase)
            .map(|r| (if phase == "prefill" { r.m } else { r.n }, secs(r)))
            .collect()
    };
    let (sp, sd) = (points("prefill"), points("decode"));
    let mut pre = Vec::new();
    let mut dec = Vec::new();
    for kind in LinKind::ALL.map(LinKind::name) {
        if let Some(c) = prefill(kind, true) {
            // The chunked form's time grows linearly with the tokens.
            let per_token = secs(c) / c.m as f64;
            pre.push(match crossover(&sp, |t| per_token * t as f64) {
                Some(0) => format!("{kind}: already at {} tokens", sp[0].0),
                Some(t) => format!("{kind}: ≈{t} tokens"),
                None => format!("{kind}: not within {} tokens", sp.last().map_or(0, |x| x.0)),
            });
        }
        let d = lin
            .iter()
            .filter(|r| r.phase == "decode" && row_kind(r).is_some_and(|k| k.0 == kind))
            .map(secs)
            .fold(f64::INFINITY, f64::min);
        if d.is_finite() {
            dec.push(match crossover(&sd, |_| d) {
                Some(0) => format!("{kind}: already at ctx {}", sd[0].0),
                Some(t) => format!("{kind}: ctx ≈{t}"),
                None => format!("{kind}: not within ctx {}", sd.last().map_or(0, |x| x.0)),
            });
        }
    }
    if !pre.is_empty() && !sp.is_empty() {
        notes.push(format!(
            "{label} prefill crossover — chunked linear attention becomes faster than wattle's \
             softmax attention (causal, {H}/{H} heads, d {D}, F16 K/V) from: {}",
            pre.join("; ")
        ));
    }
    if !dec.is_empty() && !sd.is_empty() {
        notes.push(format!(
            "{label} decode crossover (cold: state and caches rotated past the LLC) — one \
             linear-attention token (best form; the state is {H}×{D}×{D} f32 = {} MiB, read and \
             written) becomes faster than a softmax decode step from: {}",
            (H * D * D * 4) >> 20,
            dec.join("; ")
        ));
    }
    notes
}

/// Runs the peer's `ssm` figures (ggml `SSM_SCAN`) and words them next to wattle's recurrent
/// retention prefill in state elements updated per second.
fn peer_note(spec: &PeerSpec, lin: &[Row]) -> String {
    let threads = wattle_kernels::pool::default_threads();
    let out = match peer::run_script(spec, "ssm", threads) {
        Ok(o) => o,
        Err(e) => return format!("peer {} ssm unavailable: {e}", spec.name),
    };
    let mut figs = Vec::new();
    for line in out.lines().filter(|l| l.starts_with("SSM_SCAN")) {
        let mut w = line.split_whitespace();
        let (Some(_), Some(params), Some(us)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let get = |key: &str| -> Option<f64> {
            params
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        let (Some(ds), Some(hd), Some(nh), Some(nt), Ok(us)) = (
            get("d_state"),
            get("head_dim"),
            get("n_head"),
            get("n_seq_tokens"),
            us.parse::<f64>(),
        ) else {
            continue;
        };
        figs.push(format!(
            "{nt} token{} × {nh} heads × state {ds}×{hd}: {us:.0} µs = {:.2} G state elements/s",
            if nt == 1.0 { "" } else { "s" },
            nt * nh * ds * hd / us / 1e3
        ));
    }
    if figs.is_empty() {
        return format!("peer {} ssm printed no SSM_SCAN figures", spec.name);
    }
    let ours = lin
        .iter()
        .filter(|r| row_kind(r) == Some(("retention", false)))
        .map(|r| {
            format!(
                "{} {}: {:.2} G state elements/s",
                r.phase,
                r.m,
                (r.m * r.n * r.k * D) as f64 / r.time.median_us / 1e3
            )
        })
        .collect::<Vec<_>>();
    format!(
        "peer {} SSM_SCAN (Mamba-2 scan, the nearest ggml op; {threads} threads): {}; wattle's \
         recurrent retention (the same one decay + rank-1 update per state element, plus the \
         read): {}",
        spec.name,
        figs.join("; "),
        ours.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_follow_the_documented_formulas() {
        let c = LinCase {
            kind: LinKind::Retention,
            chunked: true,
            t: 64,
            h: 1,
            dk: 128,
            dv: 128,
        };
        let tri = 64.0 * 65.0 / 2.0;
        assert_eq!(c.flops(), 2.0 * tri * 256.0 + 4.0 * 64.0 * 128.0 * 128.0);
        let r = LinCase {
            chunked: false,
            ..c
        };
        assert_eq!(r.flops(), 64.0 * 5.0 * 128.0 * 128.0);
        // A short last chunk counts its own triangle.
        let c2 = LinCase { t: 65, ..c };
        assert_eq!(c2.flops() - c.flops(), 2.0 * 256.0 + 4.0 * 128.0 * 128.0);
        let d = LinCase {
            kind: LinKind::Delta,
            ..c
        };
        assert!(d.flops() > c.flops());
    }

    #[test]
    fn crossover_interpolates_in_log_space() {
        let soft = [(256, 1.0), (1024, 4.0), (4096, 64.0)];
        // Linear: 8 s at any length: crosses between 1024 (4 s) and 4096 (64 s).
        let t = crossover(&soft, |_| 8.0).unwrap();
        assert!(t > 1024 && t < 4096, "{t}");
        assert_eq!(crossover(&soft, |_| 0.5), Some(0));
        assert_eq!(crossover(&soft, |_| 100.0), None);
    }

    #[test]
    fn cases_cover_every_kind_and_form() {
        let c = cases(false);
        assert_eq!(c.len(), 16);
        assert!(c.iter().any(|x| x.t == 4096 && x.chunked));
        assert!(c.iter().any(|x| x.t == 1 && !x.chunked));
    }
}
