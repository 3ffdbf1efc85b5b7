//! `wattle bench --suite attention`: `rt.attention` at decode (one query, long contexts) and
//! prefill (512 queries), per K/V dtype and window, in GB/s of K/V read and GFLOP/s, with
//! ggml's `FLASH_ATTN_EXT` on the same shapes when a peer is given (SPEC §6, §10).

use super::{device_label, time_calls, BenchConfig, Figure, Progress, Rng, Row};
use crate::peer::{AttnFigure, PeerSpec};
use crate::stats::Summary;
use crate::sysinfo::kind_name;
use wattle::{AttentionParams, DType, Device, Runtime, Tensor};

/// One attention case: `t_q` queries at the end of `t_k` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnCase {
    /// Queries (1: decode).
    pub t_q: usize,
    /// Query heads.
    pub h_q: usize,
    /// KV heads.
    pub h_kv: usize,
    /// Head dimension (keys and values).
    pub d: usize,
    /// Keys (the context).
    pub t_k: usize,
    /// K/V dtype.
    pub dtype: DType,
    /// Sliding window.
    pub window: Option<usize>,
}

impl AttnCase {
    /// `decode` for one query, else `prefill`.
    pub fn phase(&self) -> &'static str {
        if self.t_q == 1 {
            "decode"
        } else {
            "prefill"
        }
    }

    /// Keys each query sees on average (causal, windowed).
    pub fn keys_per_query(&self) -> f64 {
        let causal = self.t_k as f64 - (self.t_q as f64 - 1.0) / 2.0;
        match self.window {
            Some(w) => causal.min(w as f64),
            None => causal,
        }
    }

    /// Keys the call reads at least once: the window's span over all queries.
    pub fn keys_read(&self) -> usize {
        match self.window {
            Some(w) => (w + self.t_q - 1).min(self.t_k),
            None => self.t_k,
        }
    }

    /// Bytes moved: the K/V rows read once per KV head, the queries and the output.
    pub fn bytes(&self) -> u64 {
        let row = (self.d / self.dtype.block_size() * self.dtype.block_bytes()) as u64;
        let kv = 2 * row * (self.keys_read() * self.h_kv) as u64;
        kv + 8 * (self.t_q * self.h_q * self.d) as u64
    }

    /// Floating-point operations: a multiply-add each for QKᵀ and PV per visible key.
    pub fn flops(&self) -> f64 {
        4.0 * (self.t_q * self.h_q * self.d) as f64 * self.keys_per_query()
    }

    /// `32/8 heads, d 128, ctx 16384[, W 4096][, 512 queries]`.
    pub fn label(&self) -> String {
        let mut s = format!(
            "{}/{} heads, d {}, ctx {}",
            self.h_q, self.h_kv, self.d, self.t_k
        );
        if let Some(w) = self.window {
            s.push_str(&format!(", W {w}"));
        }
        if self.t_q > 1 {
            s.push_str(&format!(", {} queries", self.t_q));
        }
        s
    }

    /// Whether the peer's figure is this case.
    fn matches(&self, f: &AttnFigure) -> bool {
        self.window.is_none()
            && f.d == self.d
            && f.h_kv == self.h_kv
            && f.group * f.h_kv == self.h_q
            && f.t_k == self.t_k
            && f.t_q == self.t_q
            && f.dtype == self.dtype
    }
}

/// The standard cases (issue 6): decode with 32 query / 8 KV heads of 128 over 1K–32K F16
/// keys and every K/V dtype at 16K; the d = 256, 32/2-head case at 20000 keys; windows; and
/// 512-query prefill at 20000 keys. `quick` keeps small ones.
pub fn cases(quick: bool) -> Vec<AttnCase> {
    let c = |t_q, h_q, h_kv, d, t_k, dtype, window| AttnCase {
        t_q,
        h_q,
        h_kv,
        d,
        t_k,
        dtype,
        window,
    };
    if quick {
        return vec![
            c(1, 32, 8, 128, 2048, DType::F16, None),
            c(1, 32, 8, 128, 2048, DType::Q8_0, None),
            c(1, 32, 8, 128, 8192, DType::F16, Some(1024)),
            c(64, 32, 8, 128, 1024, DType::F16, None),
        ];
    }
    let mut v = Vec::new();
    for t_k in [1024, 4096, 16384, 32768] {
        v.push(c(1, 32, 8, 128, t_k, DType::F16, None));
    }
    for dtype in [DType::Q8_0, DType::Q4_0, DType::F32] {
        v.push(c(1, 32, 8, 128, 16384, dtype, None));
    }
    for dtype in [DType::F16, DType::Q8_0] {
        v.push(c(1, 32, 2, 256, 20000, dtype, None));
    }
    for t_k in [4096, 65536] {
        v.push(c(1, 32, 8, 128, t_k, DType::F16, Some(4096)));
    }
    for dtype in [DType::F16, DType::Q8_0] {
        v.push(c(512, 32, 2, 256, 20000, dtype, None));
    }
    v
}

/// The cases of [`cases`] run on `dev`: a software GPU (lavapipe, llvmpipe: the CPU emulating
/// a GPU, ~100× slower than the CPU path) keeps the decode cases up to 16K keys.
pub fn cases_for(dev: &Device, quick: bool) -> Vec<AttnCase> {
    let slow = !dev.is_cpu() && dev.info().software;
    cases(quick)
        .into_iter()
        .filter(|c| !slow || (c.t_q == 1 && c.keys_read() <= 16384))
        .collect()
}

/// Runs every case of [`cases_for`] on `dev`, one row each (hot: the same K/V every call, as a
/// decoder rereads its cache every token).
pub fn run(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    progress: &Progress,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let label = device_label(dev);
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let all = cases(cfg.quick).len();
    let run = cases_for(dev, cfg.quick);
    if run.len() < all {
        notes.push(format!(
            "{label}: a software GPU runs the attention decode cases up to 16K keys only ({} of {all})",
            run.len()
        ));
    }
    for case in run {
        progress.start(format!(
            "{} attention {} {} {}",
            kind_name(dev),
            case.phase(),
            case.dtype,
            case.label()
        ));
        let result = time_case(rt, dev, cfg, &case, &mut rng);
        progress.inc();
        let times = match result {
            Ok(t) => t,
            Err(e) => {
                let msg = format!(
                    "{label} attention {} {}: skipped: {e}",
                    case.dtype,
                    case.label()
                );
                progress.note(&msg);
                notes.push(msg);
                continue;
            }
        };
        let Some(time) = Summary::from_seconds(&times) else {
            continue;
        };
        let figure = Figure {
            op: "attention".into(),
            phase: case.phase().into(),
            dtype: case.dtype.to_string(),
            mnk: (case.t_q, case.t_k, case.d),
            case: case.label(),
            bytes: case.bytes(),
            ops: case.flops(),
        };
        rows.push(Row::figure(dev, figure, time));
    }
}

/// Builds the case's tensors on `dev` and times `rt.attention` on them.
fn time_case(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    case: &AttnCase,
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
    let (k, v) = (kv(rng)?, kv(rng)?);
    let params = AttentionParams {
        window: case.window,
        q_pos0: case.t_k - case.t_q,
        ..AttentionParams::causal()
    };
    time_calls(dev, cfg, || rt.attention(&q, &k, &v, &params))
}

/// Fills the peer columns of the attention rows the peer measured; returns how many matched.
pub fn attach_peer(rows: &mut [Row], spec: &PeerSpec, figs: &[AttnFigure]) -> usize {
    let name = &spec.name;
    let mut matched = 0;
    for r in rows
        .iter_mut()
        .filter(|r| r.op == "attention" && r.device_kind == spec.backend())
    {
        let Some(case) = cases(false)
            .into_iter()
            .find(|c| Some(c.label()) == r.case && c.dtype.to_string() == r.dtype && c.t_q == r.m)
        else {
            continue;
        };
        if let Some(f) = figs.iter().find(|f| case.matches(f)) {
            r.peer = Some(name.to_string());
            r.peer_us = Some(f.us);
            r.peer_ratio = Some(f.us / r.time.median_us);
            matched += 1;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_bytes_and_flops() {
        let c = AttnCase {
            t_q: 1,
            h_q: 32,
            h_kv: 8,
            d: 128,
            t_k: 16384,
            dtype: DType::F16,
            window: None,
        };
        // K and V: 16384 tokens × 8 heads × 128 × 2 bytes each, plus q and out in f32.
        assert_eq!(c.bytes(), 2 * 16384 * 8 * 256 + 8 * 32 * 128);
        assert_eq!(c.flops(), 4.0 * 32.0 * 128.0 * 16384.0);
        let w = AttnCase {
            window: Some(4096),
            t_k: 65536,
            dtype: DType::Q8_0,
            ..c
        };
        assert_eq!(w.keys_read(), 4096);
        assert_eq!(w.bytes(), 2 * 4096 * 8 * (4 * 34) + 8 * 32 * 128);
        let p = AttnCase {
            t_q: 512,
            t_k: 1024,
            ..c
        };
        // Causal: the queries see 513…1024 keys, 768.5 on average.
        assert_eq!(p.keys_per_query(), 768.5);
    }

    #[test]
    fn peer_figures_match_their_cases() {
        let fig = AttnFigure {
            d: 256,
            h_kv: 2,
            group: 16,
            t_k: 20000,
            t_q: 1,
            dtype: DType::Q8_0,
            us: 100.0,
        };
        let all = cases(false);
        let hits: Vec<_> = all.iter().filter(|c| c.matches(&fig)).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].dtype, DType::Q8_0);
        assert_eq!(hits[0].t_q, 1);
        // Labels are unique per (label, dtype, t_q), so rows find their case.
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(a.label() != b.label() || a.dtype != b.dtype || a.t_q != b.t_q);
            }
        }
    }
}
