//! `wattle bench --suite kv`: decode `KvCache::attend` at long contexts for every cache format
//! (32 query / 8 KV heads, d = 128): bits per value, GB/s of cache read, time relative to the
//! F16 cache and to plain `rt.attention` on F16 tensors, append cost per token; and the same
//! with Window eviction (SPEC §8, §10).

use super::{device_label, time_calls, BenchConfig, Figure, Progress, Rng, Row};
use crate::stats::Summary;
use crate::sysinfo::kind_name;
use std::time::Instant;
use wattle::{
    AttentionParams, DType, Device, Eviction, KvCache, KvCacheConfig, KvFormat, Runtime, Tensor,
};

/// Query heads, KV heads and head dimension of every case.
const HEADS: (usize, usize, usize) = (32, 8, 128);

/// The cache formats measured, by name.
pub fn formats() -> Vec<(&'static str, KvFormat)> {
    let kivi = |bits| KvFormat::Kivi {
        bits,
        group: 32,
        residual: 128,
    };
    vec![
        ("f16", KvFormat::F16),
        ("q8_0", KvFormat::Q8_0),
        ("q4_0", KvFormat::Q4_0),
        ("kivi4", kivi(4)),
        ("kivi2", kivi(2)),
    ]
}

/// Contexts: 4K, 16K, 32K, 128K (`quick`: 2K).
pub fn contexts(quick: bool) -> Vec<usize> {
    if quick {
        vec![2048]
    } else {
        vec![4096, 16384, 32768, 131072]
    }
}

/// The Window-eviction case: (context, window, sinks).
fn window_case(quick: bool) -> (usize, usize, usize) {
    if quick {
        (4096, 1024, 4)
    } else {
        (32768, 4096, 4)
    }
}

/// Figures the suite produces on one device (for the progress bar).
pub fn figures(quick: bool) -> usize {
    contexts(quick).len() * (formats().len() + 1) + 2
}

/// One measured case before it becomes a row.
struct Measured {
    format: &'static str,
    ctx: usize,
    window: Option<usize>,
    time: Summary,
    cache_bytes: usize,
    append_ns: Option<f64>,
}

/// Runs the suite on `dev`.
pub fn run(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    progress: &Progress,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let label = device_label(dev);
    if let Err(e) = KvCache::new(rt, dev, KvCacheConfig::default()) {
        // A device without caches: one note rather than a skipped figure per case.
        notes.push(format!("{label}: kv suite not run: {e}"));
        progress.bar.inc(figures(cfg.quick) as u64);
        return;
    }
    let (h_q, h_kv, d) = HEADS;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let q = match Tensor::from_f32(&rng.fill(h_q * d), &[1, h_q, d]).and_then(|q| q.to(dev)) {
        Ok(q) => q,
        Err(e) => {
            notes.push(format!("{label} kv: cannot make queries: {e}"));
            return;
        }
    };
    let (wctx, window, sinks) = window_case(cfg.quick);
    let mut cases: Vec<(usize, Option<(usize, usize)>)> =
        contexts(cfg.quick).into_iter().map(|c| (c, None)).collect();
    cases.push((wctx, Some((window, sinks))));
    for (ctx, win) in cases {
        let keys = rng.fill(ctx * h_kv * d);
        let vals = rng.fill(ctx * h_kv * d);
        let shape = [ctx, h_kv, d];
        let kv =
            Tensor::from_f32(&keys, &shape).and_then(|k| Ok((k, Tensor::from_f32(&vals, &shape)?)));
        drop((keys, vals));
        let (k, v) = match kv {
            Ok(kv) => kv,
            Err(e) => {
                notes.push(format!("{label} kv ctx {ctx}: cannot make K/V: {e}"));
                continue;
            }
        };
        let params = AttentionParams {
            q_pos0: ctx - 1,
            ..AttentionParams::causal()
        };
        let mut measured = Vec::new();
        if win.is_none() {
            // Plain attention on F16 tensors of the same shape: what the F16 cache must match.
            progress.start(format!("{} kv ctx {ctx} plain attention", kind_name(dev)));
            let plain = (|| {
                let kh = k.quantize(DType::F16)?.to(dev)?;
                let vh = v.quantize(DType::F16)?.to(dev)?;
                let bytes = kh.to_bytes()?.len() + vh.to_bytes()?.len();
                Ok::<_, wattle::Error>((
                    time_calls(dev, cfg, || rt.attention(&q, &kh, &vh, &params))?,
                    bytes,
                ))
            })();
            progress.inc();
            match plain {
                Ok((t, bytes)) => {
                    if let Some(time) = Summary::from_seconds(&t) {
                        measured.push(Measured {
                            format: "plain f16",
                            ctx,
                            window: None,
                            time,
                            cache_bytes: bytes,
                            append_ns: None,
                        });
                    }
                }
                Err(e) => notes.push(format!(
                    "{label} kv ctx {ctx} plain attention: skipped: {e}"
                )),
            }
        }
        for (name, format) in formats() {
            if win.is_some() && !matches!(name, "f16" | "q4_0") {
                continue;
            }
            progress.start(format!(
                "{} kv {name} ctx {ctx}{}",
                kind_name(dev),
                win.map_or(String::new(), |(w, _)| format!(" W {w}"))
            ));
            let result = time_format(rt, dev, cfg, format, win, (&k, &v), &q, &params);
            progress.inc();
            match result {
                Ok((time, cache_bytes, append_ns)) => measured.push(Measured {
                    format: name,
                    ctx,
                    window: win.map(|(w, _)| w),
                    time,
                    cache_bytes,
                    append_ns: Some(append_ns),
                }),
                Err(e) => {
                    let msg = format!("{label} kv {name} ctx {ctx}: skipped: {e}");
                    progress.note(&msg);
                    notes.push(msg);
                }
            }
        }
        let f16_us = measured
            .iter()
            .find(|m| m.format == "f16")
            .map(|m| m.time.median_us);
        for m in measured {
            rows.push(to_row(dev, m, f16_us));
        }
    }
}

/// Fills a cache of `format` with `kv` (timing the append), then times decode `attend`; returns
/// (attend timings, cache bytes, append ns per token).
#[allow(clippy::too_many_arguments)]
fn time_format(
    rt: &Runtime,
    dev: &Device,
    cfg: &BenchConfig,
    format: KvFormat,
    win: Option<(usize, usize)>,
    (k, v): (&Tensor, &Tensor),
    q: &Tensor,
    params: &AttentionParams,
) -> wattle::Result<(Summary, usize, f64)> {
    let (_, h_kv, d) = HEADS;
    let ctx = k.shape()[0];
    let eviction = match win {
        Some((window, sinks)) => Eviction::Window { window, sinks },
        None => Eviction::None,
    };
    let mut cache = KvCache::new(
        rt,
        dev,
        KvCacheConfig {
            kv_heads: h_kv,
            head_dim: d,
            format,
            eviction,
            capacity: Some(ctx),
            ..Default::default()
        },
    )?;
    let (k, v) = (k.to(dev)?, v.to(dev)?);
    let t0 = Instant::now();
    cache.append(0, &k, &v)?;
    dev.synchronize()?;
    let append_ns = t0.elapsed().as_secs_f64() * 1e9 / ctx as f64;
    let times = time_calls(dev, cfg, || cache.attend(0, q, params))?;
    let time = Summary::from_seconds(&times)
        .ok_or_else(|| wattle::Error::InvalidArgument("no timings".into()))?;
    Ok((time, cache.memory_bytes(), append_ns))
}

fn to_row(dev: &Device, m: Measured, f16_us: Option<f64>) -> Row {
    let (h_q, h_kv, d) = HEADS;
    let kept = m.window.map_or(m.ctx, |w| w.min(m.ctx));
    let bits = m.cache_bytes as f64 * 8.0 / (2 * m.ctx * h_kv * d) as f64;
    let mut case = format!("{h_q}/{h_kv} heads, d {d}, ctx {}", m.ctx);
    if let Some(w) = m.window {
        case.push_str(&format!(", W {w}"));
    } else {
        case.push_str(&format!(", {bits:.2} bit/val"));
    }
    if let (Some(f), Some(_)) = (f16_us, m.append_ns) {
        case.push_str(&format!(", {:.2}× f16", m.time.median_us / f));
    }
    if let Some(a) = m.append_ns {
        case.push_str(&format!(", append {a:.0} ns/tok"));
    }
    let figure = Figure {
        op: if m.append_ns.is_some() {
            "kv attend".into()
        } else {
            "attention".into()
        },
        phase: "decode".into(),
        dtype: m.format.to_string(),
        mnk: (1, m.ctx, d),
        case,
        bytes: m.cache_bytes as u64 + 8 * (h_q * d) as u64,
        ops: 4.0 * (h_q * d * kept) as f64,
    };
    Row::figure(dev, figure, m.time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_counts_its_figures() {
        // Per context: plain attention + every format; the window case: f16 and q4_0.
        assert_eq!(figures(true), 1 + formats().len() + 2);
        assert_eq!(figures(false), 4 * (1 + formats().len()) + 2);
        let names: Vec<_> = formats().iter().map(|f| f.0).collect();
        assert_eq!(names, ["f16", "q8_0", "q4_0", "kivi4", "kivi2"]);
    }
}
