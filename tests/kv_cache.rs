//! `KvCache` (SPEC §8) against f64 references: per-format error bounds, attend vs attention over
//! the dequantized contents, eviction on constructed cases, rollback, ragged appends, a long
//! rolling window at constant memory, and bad input that leaves the cache unchanged.

mod common;

use common::*;
use half::f16;
use wattle::{
    AttentionParams, DType, Error, Eviction, KvCache, KvCacheConfig, KvFormat, Runtime, Tensor,
};

const FORMATS: [KvFormat; 5] = KV_FORMATS;

fn cache(rt: &Runtime, h: usize, d: usize, format: KvFormat, eviction: Eviction) -> KvCache {
    let cfg = KvCacheConfig {
        layers: 2,
        kv_heads: h,
        head_dim: d,
        format,
        eviction,
        ..Default::default()
    };
    KvCache::new(rt, &rt.cpu(), cfg).unwrap()
}

fn t3(v: &[f32], a: usize, b: usize, c: usize) -> Tensor {
    Tensor::from_f32(v, &[a, b, c]).unwrap()
}

/// f64 attention of `q [t_q, h_q, d]` over per-head keys/values `[n, h_kv, d]` at `pos[g][j]`,
/// with the cache's window rule; returns the output and per-(head, key) probabilities summed over
/// query heads of the group and queries `from..`.
#[allow(clippy::too_many_arguments)]
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: &[Vec<u32>],
    t_q: usize,
    h_q: usize,
    h_kv: usize,
    d: usize,
    p: &AttentionParams,
    cache_window: Option<(usize, usize)>,
    from: usize,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let scale = p.scale.map_or(1.0 / (d as f64).sqrt(), |s| s as f64);
    let group = h_q / h_kv;
    let mut out = vec![0f64; t_q * h_q * d];
    let mut probs: Vec<Vec<f64>> = pos.iter().map(|p| vec![0.0; p.len()]).collect();
    for i in 0..t_q {
        let qp = (p.q_pos0 + i) as i64;
        for h in 0..h_q {
            let g = h / group;
            let mut lg = Vec::new();
            for (j, &kp) in pos[g].iter().enumerate() {
                let kp = kp as i64;
                let vis = (!p.causal || kp <= qp)
                    && p.window.is_none_or(|w| qp - kp < w as i64)
                    && cache_window.is_none_or(|(w, s)| kp < s as i64 || qp - kp < w as i64);
                if !vis {
                    continue;
                }
                let s: f64 = (0..d)
                    .map(|c| q[(i * h_q + h) * d + c] as f64 * k[(j * h_kv + g) * d + c] as f64)
                    .sum();
                lg.push((j, s * scale));
            }
            if lg.is_empty() {
                continue;
            }
            let mx = lg.iter().fold(f64::NEG_INFINITY, |a, x| a.max(x.1));
            let sum: f64 = lg.iter().map(|x| (x.1 - mx).exp()).sum();
            for &(j, s) in &lg {
                let w = (s - mx).exp() / sum;
                if i >= from {
                    probs[g][j] += w;
                }
                for c in 0..d {
                    out[(i * h_q + h) * d + c] += w * v[(j * h_kv + g) * d + c] as f64;
                }
            }
        }
    }
    (out, probs)
}

fn positions(c: &KvCache, layer: usize, h: usize) -> Vec<Vec<u32>> {
    (0..h).map(|g| c.positions(layer, g).unwrap()).collect()
}

/// Appends `ts` tokens in ragged chunks; returns all appended K and V `[t, h, d]`.
fn fill(
    c: &mut KvCache,
    layer: usize,
    rng: &mut Rng,
    h: usize,
    d: usize,
    chunks: &[usize],
) -> (Vec<f32>, Vec<f32>) {
    let (mut ka, mut va) = (Vec::new(), Vec::new());
    for &t in chunks {
        let k = rng.vec(t * h * d);
        let v = rng.vec(t * h * d);
        c.append(layer, &t3(&k, t, h, d), &t3(&v, t, h, d)).unwrap();
        ka.extend(k);
        va.extend(v);
    }
    (ka, va)
}

#[test]
fn attend_matches_attention_over_dequantized_contents() {
    let rt = Runtime::new().unwrap();
    let (h_kv, h_q, d) = (2, 8, 64);
    for format in FORMATS {
        let mut rng = Rng::new(7);
        let mut c = cache(&rt, h_kv, d, format, Eviction::None);
        fill(&mut c, 1, &mut rng, h_kv, d, &[1, 7, 300, 45]);
        let n = c.next_position(1).unwrap();
        assert_eq!((n, c.len(1).unwrap(), c.len(0).unwrap()), (353, 353, 0));
        let (kd, vd) = c.dequantize(1).unwrap();
        let (kf, vf) = (kd.to_f32_vec().unwrap(), vd.to_f32_vec().unwrap());
        let pos = positions(&c, 1, h_kv);
        for (t_q, window) in [(1, None), (5, None), (37, Some(100)), (1, Some(1))] {
            let q = rng.vec(t_q * h_q * d);
            let p = AttentionParams {
                q_pos0: n - t_q,
                window,
                ..AttentionParams::causal()
            };
            let o = c.attend(1, &t3(&q, t_q, h_q, d), &p).unwrap();
            let o = o.to_f32_vec().unwrap();
            let (r, _) = reference(&q, &kf, &vf, &pos, t_q, h_q, h_kv, d, &p, None, 0);
            let e = nmse(&r, &o);
            assert!(e < 1e-9, "{format:?} t_q={t_q} {window:?}: nmse {e}");
            // The same through rt.attention with the cache's key positions.
            let pa = AttentionParams {
                key_positions: Some(pos[0].clone()),
                ..p.clone()
            };
            let oa = rt.attention(&t3(&q, t_q, h_q, d), &kd, &vd, &pa).unwrap();
            let r64: Vec<f64> = oa.to_f32_vec().unwrap().iter().map(|&x| x as f64).collect();
            let e = nmse(&r64, &o);
            assert!(e <= 5e-4, "{format:?} vs rt.attention: nmse {e}");
        }
        // Sinks, softcap, non-causal.
        let q = rng.vec(3 * h_q * d);
        let sinks = Tensor::from_f32(&rng.vec(h_q), &[h_q]).unwrap();
        let p = AttentionParams {
            sinks: Some(sinks),
            softcap: Some(5.0),
            q_pos0: 10,
            ..Default::default()
        };
        let o = c.attend(1, &t3(&q, 3, h_q, d), &p).unwrap();
        let pa = AttentionParams {
            key_positions: Some(pos[0].clone()),
            ..p.clone()
        };
        let oa = rt.attention(&t3(&q, 3, h_q, d), &kd, &vd, &pa).unwrap();
        let r64: Vec<f64> = oa.to_f32_vec().unwrap().iter().map(|&x| x as f64).collect();
        let e = nmse(&r64, &o.to_f32_vec().unwrap());
        assert!(e <= 5e-4, "{format:?} sinks/softcap: nmse {e}");
    }
}

/// Per-element error bound of each format against the original value (derived in the docs of
/// `format_error_within_derived_bounds`).
fn check_bounds(format: KvFormat, orig: &[f32], deq: &[f32], n: usize, d: usize, keys: bool) {
    const E16: f32 = 1.0 / 2048.0; // f16 relative rounding (half an ulp at 11 bits)
    let fudge = 1e-6;
    let f16_ok = |x: f32, y: f32| (x - y).abs() <= x.abs() * E16 + 3e-8;
    match format {
        KvFormat::F16 => {
            for (x, y) in orig.iter().zip(deq) {
                assert!(f16_ok(*x, *y), "F16: {x} vs {y}");
            }
        }
        KvFormat::Q8_0 | KvFormat::Q4_0 => {
            for (xb, yb) in orig.chunks(32).zip(deq.chunks(32)) {
                let amax = xb.iter().fold(0f32, |a, x| a.max(x.abs()));
                // Q8_0: |e| ≤ d/2 (rounding) + 127·d·2⁻¹¹ (f16 scale), d = amax/127.
                // Q4_0: |e| ≤ |d| (rounding, and the clamp of +8|d| to code 15) + 8|d|·2⁻¹¹, |d| = amax/8.
                let bound = if format == KvFormat::Q8_0 {
                    let dd = amax / 127.0;
                    dd * 0.5 + 127.0 * dd * E16
                } else {
                    let dd = amax / 8.0;
                    dd + 8.0 * dd * E16
                } * (1.0 + fudge)
                    + 1e-7;
                for (x, y) in xb.iter().zip(yb) {
                    assert!(
                        (x - y).abs() <= bound,
                        "{format:?}: {x} vs {y}, bound {bound}"
                    );
                }
            }
        }
        KvFormat::Kivi {
            bits,
            group,
            residual,
        } => {
            let levels = ((1u32 << bits) - 1) as f32;
            // Quantized tokens: the oldest whole groups leaving at least `residual` f16 tokens.
            let nq = n.saturating_sub(residual) / group * group;
            // |e| ≤ s/2 (rounding) + levels·s·2⁻¹¹ (f16 scale) + |min|·2⁻¹¹ (f16 minimum),
            // s = (max − min)/levels over the group.
            let bound = |xs: &[f32]| {
                let lo = xs.iter().fold(f32::INFINITY, |a, &x| a.min(x));
                let hi = xs.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let s = (hi - lo) / levels;
                (s * 0.5 + levels * s * E16 * 1.01 + lo.abs() * E16) * (1.0 + fudge) + 1e-6
            };
            for t in 0..n {
                for c in 0..d {
                    let (x, y) = (orig[t * d + c], deq[t * d + c]);
                    if t >= nq {
                        assert!(f16_ok(x, y), "KIVI tail: {x} vs {y}");
                        continue;
                    }
                    let b = if keys {
                        let g0 = t / group * group;
                        let col: Vec<f32> = (g0..g0 + group).map(|u| orig[u * d + c]).collect();
                        bound(&col)
                    } else {
                        let c0 = c / group * group;
                        bound(&orig[t * d + c0..t * d + c0 + group])
                    };
                    assert!(
                        (x - y).abs() <= b,
                        "{format:?} keys={keys} t={t} c={c}: {x} vs {y}, bound {b}"
                    );
                }
            }
        }
    }
}

/// Bounds per element (2⁻¹¹ is f16's relative rounding):
/// F16 |x|·2⁻¹¹; Q8_0 d/2 + 127·d·2⁻¹¹ with d = amax/127 per block; Q4_0 |d| + 8|d|·2⁻¹¹ with
/// |d| = amax/8 (the clamp at code 15 costs a whole step at +amax); KIVI s/2 + (2ᵇ−1)·s·2⁻¹¹ +
/// |min|·2⁻¹¹ with s = range/(2ᵇ−1) per group (per channel over tokens for keys, per token over
/// channels for values); the f16 residual as F16.
#[test]
fn format_error_within_derived_bounds() {
    let rt = Runtime::new().unwrap();
    let (h, d) = (1, 64);
    for format in FORMATS {
        let mut rng = Rng::new(11);
        let mut c = cache(&rt, h, d, format, Eviction::None);
        let mut k = rng.vec(200 * d);
        for (i, x) in k.iter_mut().enumerate() {
            if i % d == 3 {
                *x *= 30.0; // an outlier channel
            }
        }
        let v = rng.vec(200 * d);
        c.append(0, &t3(&k, 200, h, d), &t3(&v, 200, h, d)).unwrap();
        let (kd, vd) = c.dequantize(0).unwrap();
        check_bounds(format, &k, &kd.to_f32_vec().unwrap(), 200, d, true);
        check_bounds(format, &v, &vd.to_f32_vec().unwrap(), 200, d, false);
    }
}

#[test]
fn q8_0_and_q4_0_bytes_match_tensor_quantize() {
    // Dequantized rows equal Tensor::quantize's (same ggml bytes, same dequantizer).
    let rt = Runtime::new().unwrap();
    let mut rng = Rng::new(3);
    for (format, dt) in [(KvFormat::Q8_0, DType::Q8_0), (KvFormat::Q4_0, DType::Q4_0)] {
        let mut c = cache(&rt, 2, 64, format, Eviction::None);
        let k = rng.vec(9 * 2 * 64);
        c.append(0, &t3(&k, 9, 2, 64), &t3(&k, 9, 2, 64)).unwrap();
        let want = t3(&k, 9, 2, 64).quantize(dt).unwrap().to_f32_vec().unwrap();
        let (kd, vd) = c.dequantize(0).unwrap();
        assert_eq!(kd.to_f32_vec().unwrap(), want);
        assert_eq!(vd.to_f32_vec().unwrap(), want);
    }
}

#[test]
fn kivi4_beats_q4_0_on_keys_with_outlier_channels() {
    let rt = Runtime::new().unwrap();
    let (h, d, n) = (1, 128, 256);
    let mut rng = Rng::new(5);
    let mut k = rng.vec(n * d);
    for t in 0..n {
        for c in [5, 40, 77, 100] {
            k[t * d + c] = 20.0 + 2.0 * k[t * d + c];
        }
    }
    let mse = |format| {
        let mut c = cache(&rt, h, d, format, Eviction::None);
        c.append(0, &t3(&k, n, h, d), &t3(&k, n, h, d)).unwrap();
        let kd = c.dequantize(0).unwrap().0.to_f32_vec().unwrap();
        k.iter()
            .zip(&kd)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / k.len() as f64
    };
    let kivi = mse(KvFormat::Kivi {
        bits: 4,
        group: 32,
        residual: 0,
    });
    let q4 = mse(KvFormat::Q4_0);
    assert!(kivi < q4 / 4.0, "KIVI-4 key MSE {kivi} vs Q4_0 {q4}");
}

#[test]
fn window_eviction_keeps_sinks_and_window_exactly() {
    let rt = Runtime::new().unwrap();
    let (h, hq, d) = (2, 4, 32);
    for format in [
        KvFormat::F16,
        KvFormat::Kivi {
            bits: 2,
            group: 16,
            residual: 16,
        },
    ] {
        let (window, sinks) = (20, 3);
        let mut c = cache(&rt, h, d, format, Eviction::Window { window, sinks });
        let mut rng = Rng::new(1);
        fill(&mut c, 0, &mut rng, h, d, &[10, 1, 30]);
        // After appending 30 at 11: keep what a query at ≥ 11 sees: sinks, 11 − pos < 20, new.
        let want: Vec<u32> = (0..41).filter(|&p| p < 3 || 11 - (p as i64) < 20).collect();
        assert_eq!(c.positions(0, 1).unwrap(), want);
        // Prefill-style attend over the held keys: masks as §8 (sinks visible).
        let (kd, vd) = c.dequantize(0).unwrap();
        let pos = positions(&c, 0, h);
        let q = rng.vec(5 * hq * d);
        let p = AttentionParams {
            q_pos0: 36,
            ..AttentionParams::causal()
        };
        let o = c
            .attend(0, &t3(&q, 5, hq, d), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let (r, _) = reference(
            &q,
            &kd.to_f32_vec().unwrap(),
            &vd.to_f32_vec().unwrap(),
            &pos,
            5,
            hq,
            h,
            d,
            &p,
            Some((window, sinks)),
            0,
        );
        assert!(nmse(&r, &o) < 1e-9);
        // The last query sat at the newest position: exactly sinks + window remain.
        let want: Vec<u32> = (0..3).chain(21..41).collect();
        assert_eq!(c.positions(0, 0).unwrap(), want);
        assert_eq!(c.len(0).unwrap(), sinks + window);
        // A params.window hides the sinks too.
        let q = rng.vec(hq * d);
        let p = AttentionParams {
            q_pos0: 40,
            window: Some(5),
            ..AttentionParams::causal()
        };
        let o = c
            .attend(0, &t3(&q, 1, hq, d), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let (kd, vd) = c.dequantize(0).unwrap();
        let (r, _) = reference(
            &q,
            &kd.to_f32_vec().unwrap(),
            &vd.to_f32_vec().unwrap(),
            &positions(&c, 0, h),
            1,
            hq,
            h,
            d,
            &p,
            Some((window, sinks)),
            0,
        );
        assert!(nmse(&r, &o) < 1e-9);
    }
}

/// A tile of queries straddling the window's edge with sinks: the sinks stay visible to every
/// query while the keys right after them leave the window for the later queries (a key block
/// whose corners are all visible is not all visible here). Every format, against f64.
#[test]
fn window_edge_with_sinks_inside_one_tile() {
    let rt = Runtime::new().unwrap();
    let (h, hq, d, window, sinks) = (2, 4, 32, 80, 3);
    let mut rng = Rng::new(31);
    for format in FORMATS {
        let mut c = cache(&rt, h, d, format, Eviction::Window { window, sinks });
        let (k, v) = (rng.vec(100 * h * d), rng.vec(100 * h * d));
        c.append(0, &t3(&k, 100, h, d), &t3(&v, 100, h, d)).unwrap();
        let (kd, vd) = c.dequantize(0).unwrap();
        let pos = positions(&c, 0, h);
        // Queries 70..85: query 85 no longer sees keys 3..5, query 70 sees them all.
        let q = rng.vec(16 * hq * d);
        let p = AttentionParams {
            q_pos0: 70,
            ..AttentionParams::causal()
        };
        let o = c
            .attend(0, &t3(&q, 16, hq, d), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let (r, _) = reference(
            &q,
            &kd.to_f32_vec().unwrap(),
            &vd.to_f32_vec().unwrap(),
            &pos,
            16,
            hq,
            h,
            d,
            &p,
            Some((window, sinks)),
            0,
        );
        assert!(nmse(&r, &o) < 1e-9, "{format:?}: NMSE {}", nmse(&r, &o));
    }
}

/// H2O against an f64 simulation: heavy tokens (keys along the queries' direction) survive,
/// the `recent` newest are never dropped, each head ends at `budget`.
#[test]
fn heavy_hitter_keeps_heavy_tokens_and_recent_window() {
    let rt = Runtime::new().unwrap();
    let (h, hq, d) = (2, 4, 32);
    let (budget, recent) = (24, 8);
    let mut c = cache(
        &rt,
        h,
        d,
        KvFormat::F16,
        Eviction::HeavyHitter { budget, recent },
    );
    let mut rng = Rng::new(9);
    let dir: Vec<f32> = rng.vec(d);
    let heavy = [2u32, 17, 30, 44];
    // Keys and values already f16-exact so the simulation sees the same data.
    let mk = |rng: &mut Rng, p0: usize, t: usize| -> Vec<f32> {
        let mut k = rng.vec(t * h * d);
        for i in 0..t {
            if heavy.contains(&((p0 + i) as u32)) {
                for g in 0..h {
                    for c in 0..d {
                        k[(i * h + g) * d + c] = dir[c] * 3.0;
                    }
                }
            }
        }
        k.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
    };
    let mut sim_pos: Vec<Vec<u32>> = vec![Vec::new(); h];
    let mut sim_k: Vec<Vec<Vec<f32>>> = vec![Vec::new(); h];
    let mut sim_v: Vec<Vec<Vec<f32>>> = vec![Vec::new(); h];
    let mut sim_s: Vec<Vec<f64>> = vec![Vec::new(); h];
    let mut p0 = 0;
    for step in 0..12 {
        let t = if step == 0 { 20 } else { 3 + step % 4 };
        let k = mk(&mut rng, p0, t);
        let v: Vec<f32> = rng
            .vec(t * h * d)
            .iter()
            .map(|&x| f16::from_f32(x).to_f32())
            .collect();
        c.append(0, &t3(&k, t, h, d), &t3(&v, t, h, d)).unwrap();
        for g in 0..h {
            for i in 0..t {
                sim_pos[g].push((p0 + i) as u32);
                sim_k[g].push(k[(i * h + g) * d..][..d].to_vec());
                sim_v[g].push(v[(i * h + g) * d..][..d].to_vec());
                sim_s[g].push(0.0);
            }
        }
        p0 += t;
        // Queries along `dir` (plus noise), decode or a small prefill.
        let tq = 1 + step % 3;
        let mut q = rng.vec(tq * hq * d);
        for (i, x) in q.iter_mut().enumerate() {
            *x = f16::from_f32(*x * 0.3 + dir[i % d]).to_f32();
        }
        let p = AttentionParams {
            q_pos0: p0 - tq,
            ..AttentionParams::causal()
        };
        c.attend(0, &t3(&q, tq, hq, d), &p).unwrap();
        // Simulate per head.
        let n = sim_pos[0].len();
        let mut kf = vec![0f32; n * h * d];
        let mut vf = vec![0f32; n * h * d];
        for g in 0..h {
            for j in 0..n {
                kf[(j * h + g) * d..][..d].copy_from_slice(&sim_k[g][j]);
                vf[(j * h + g) * d..][..d].copy_from_slice(&sim_v[g][j]);
            }
        }
        let (_, probs) = reference(&q, &kf, &vf, &sim_pos, tq, hq, h, d, &p, None, 0);
        for g in 0..h {
            for (s, p) in sim_s[g].iter_mut().zip(&probs[g]) {
                *s += p;
            }
            let n = sim_pos[g].len();
            if n > budget {
                let mut idx: Vec<usize> = (0..n - recent).collect();
                idx.sort_by(|&a, &b| sim_s[g][a].total_cmp(&sim_s[g][b]).then(a.cmp(&b)));
                let mut drop: Vec<usize> = idx[..n - budget].to_vec();
                drop.sort_unstable();
                for &i in drop.iter().rev() {
                    sim_pos[g].remove(i);
                    sim_k[g].remove(i);
                    sim_v[g].remove(i);
                    sim_s[g].remove(i);
                }
            }
            assert_eq!(
                c.positions(0, g).unwrap(),
                sim_pos[g],
                "step {step} head {g}"
            );
        }
    }
    for g in 0..h {
        let pos = c.positions(0, g).unwrap();
        assert_eq!(pos.len(), budget);
        for hv in heavy {
            assert!(pos.contains(&hv), "heavy token {hv} evicted");
        }
        let newest: Vec<u32> = ((p0 - recent) as u32..p0 as u32).collect();
        assert_eq!(&pos[budget - recent..], &newest[..]);
    }
}

/// SnapKV against an f64 simulation: one shot at the first attend with t_q ≥ observe on a layer
/// over budget; pooled scores pick the old tokens; later appends are not evicted.
#[test]
fn snapkv_compresses_once_by_pooled_scores() {
    let rt = Runtime::new().unwrap();
    let (h, hq, d) = (2, 4, 32);
    let (budget, observe, pool) = (40, 8, 5);
    let mut c = cache(
        &rt,
        h,
        d,
        KvFormat::Q8_0,
        Eviction::SnapKv {
            budget,
            observe,
            pool,
        },
    );
    let mut rng = Rng::new(21);
    let (k, v) = fill(&mut c, 0, &mut rng, h, d, &[150]);
    let _ = (k, v);
    // A decode query (t_q < observe) does not trigger.
    let q1 = rng.vec(hq * d);
    let p1 = AttentionParams {
        q_pos0: 149,
        ..AttentionParams::causal()
    };
    c.attend(0, &t3(&q1, 1, hq, d), &p1).unwrap();
    assert_eq!(c.len(0).unwrap(), 150);
    let (kd, vd) = c.dequantize(0).unwrap();
    let pos = positions(&c, 0, h);
    let tq = 12;
    let q = rng.vec(tq * hq * d);
    let p = AttentionParams {
        q_pos0: 150 - tq,
        ..AttentionParams::causal()
    };
    c.attend(0, &t3(&q, tq, hq, d), &p).unwrap();
    let (_, probs) = reference(
        &q,
        &kd.to_f32_vec().unwrap(),
        &vd.to_f32_vec().unwrap(),
        &pos,
        tq,
        hq,
        h,
        d,
        &p,
        None,
        tq - observe,
    );
    for (g, probs_g) in probs.iter().enumerate() {
        let n = 150;
        let old = n - observe;
        let pooled: Vec<f64> = (0..old)
            .map(|j| {
                (j.saturating_sub(pool / 2)..(j + pool / 2 + 1).min(old))
                    .map(|u| probs_g[u])
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        let mut idx: Vec<usize> = (0..old).collect();
        idx.sort_by(|&a, &b| pooled[b].total_cmp(&pooled[a]).then(a.cmp(&b)));
        let mut want: Vec<u32> = idx[..budget - observe].iter().map(|&i| i as u32).collect();
        want.extend(old as u32..n as u32);
        want.sort_unstable();
        assert_eq!(c.positions(0, g).unwrap(), want, "head {g}");
    }
    // Later tokens are appended without eviction, even with another long attend.
    fill(&mut c, 0, &mut rng, h, d, &[30]);
    let q = rng.vec(tq * hq * d);
    let p = AttentionParams {
        q_pos0: 180 - tq,
        ..AttentionParams::causal()
    };
    c.attend(0, &t3(&q, tq, hq, d), &p).unwrap();
    assert_eq!(c.len(0).unwrap(), budget + 30);
}

#[test]
fn truncate_rolls_back_like_never_appended() {
    let rt = Runtime::new().unwrap();
    let (h, hq, d) = (2, 4, 64);
    for format in FORMATS {
        let mut rng = Rng::new(4);
        let mut a = cache(&rt, h, d, format, Eviction::None);
        let mut b = cache(&rt, h, d, format, Eviction::None);
        let k = rng.vec(90 * h * d);
        let v = rng.vec(90 * h * d);
        a.append(0, &t3(&k, 90, h, d), &t3(&v, 90, h, d)).unwrap();
        // Speculative tokens, rejected. (Few enough that KIVI's f16 residual does not flush a
        // group of accepted tokens: quantization is not undone by a rollback.)
        let junk = rng.vec(5 * h * d);
        a.append(0, &t3(&junk, 5, h, d), &t3(&junk, 5, h, d))
            .unwrap();
        a.truncate(0, 90).unwrap();
        assert_eq!(a.next_position(0).unwrap(), 90);
        assert_eq!(a.positions(0, 1).unwrap(), (0..90).collect::<Vec<u32>>());
        b.append(
            0,
            &t3(&k[..60 * h * d], 60, h, d),
            &t3(&v[..60 * h * d], 60, h, d),
        )
        .unwrap();
        b.append(
            0,
            &t3(&k[60 * h * d..], 30, h, d),
            &t3(&v[60 * h * d..], 30, h, d),
        )
        .unwrap();
        let more = rng.vec(5 * h * d);
        for c in [&mut a, &mut b] {
            c.append(0, &t3(&more, 5, h, d), &t3(&more, 5, h, d))
                .unwrap();
        }
        let q = rng.vec(hq * d);
        let p = AttentionParams {
            q_pos0: 94,
            ..AttentionParams::causal()
        };
        let oa = a
            .attend(0, &t3(&q, 1, hq, d), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let ob = b
            .attend(0, &t3(&q, 1, hq, d), &p)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let r: Vec<f64> = ob.iter().map(|&x| x as f64).collect();
        assert!(nmse(&r, &oa) < 1e-10, "{format:?}");
        // Truncate past the end only lowers next_position when it is smaller.
        a.truncate(0, 1000).unwrap();
        assert_eq!(a.next_position(0).unwrap(), 95);
        a.truncate(0, 0).unwrap();
        assert_eq!((a.len(0).unwrap(), a.next_position(0).unwrap()), (0, 0));
    }
}

#[test]
fn rolling_window_runs_at_constant_memory() {
    let rt = Runtime::new().unwrap();
    let (h, hq, d) = (1, 2, 16);
    let tokens: usize = std::env::var("WATTLE_KV_ROLL_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    for format in [
        KvFormat::F16,
        KvFormat::Kivi {
            bits: 2,
            group: 16,
            residual: 16,
        },
    ] {
        let (window, sinks) = (64, 4);
        let mut c = cache(&rt, h, d, format, Eviction::Window { window, sinks });
        let mut rng = Rng::new(2);
        let block = rng.vec(8 * h * d);
        let q = t3(&rng.vec(hq * d), 1, hq, d);
        let mut p = 0;
        let mut mem_mid = 0;
        let mut i = 0;
        while p < tokens {
            let t = 1 + i % 7;
            i += 1;
            let kt = t3(&block[..t * h * d], t, h, d);
            c.append(0, &kt, &kt).unwrap();
            p += t;
            if i.is_multiple_of(16) {
                let pa = AttentionParams {
                    q_pos0: p - 1,
                    ..AttentionParams::causal()
                };
                c.attend(0, &q, &pa).unwrap();
                assert_eq!(c.len(0).unwrap(), (window + sinks).min(p));
            }
            if p >= tokens / 2 && mem_mid == 0 {
                mem_mid = c.memory_bytes();
            }
        }
        assert_eq!(c.memory_bytes(), mem_mid, "{format:?}");
        assert_eq!(c.next_position(0).unwrap(), p);
        let pos = c.positions(0, 0).unwrap();
        assert_eq!(&pos[..sinks], &[0, 1, 2, 3]);
    }
}

#[test]
fn memory_bytes_is_exact() {
    let rt = Runtime::new().unwrap();
    let cfg = KvCacheConfig {
        layers: 3,
        kv_heads: 2,
        head_dim: 64,
        v_head_dim: Some(32),
        capacity: Some(100),
        format: KvFormat::Q4_0,
        ..Default::default()
    };
    let c = KvCache::new(&rt, &rt.cpu(), cfg).unwrap();
    // Per (layer, head): 100 positions × 4 B, 100 × (2 + 1) Q4_0 blocks × 18 B.
    assert_eq!(c.memory_bytes(), 3 * 2 * (400 + 100 * 3 * 18));
    let cfg = KvCacheConfig {
        capacity: Some(64),
        ..Default::default()
    };
    let c = KvCache::new(&rt, &rt.cpu(), cfg).unwrap();
    assert_eq!(c.memory_bytes(), 64 * 4 + 64 * 256 * 2);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let rt = Runtime::new().unwrap();
    let (h, d) = (2, 64);
    for format in FORMATS {
        let mut c = cache(
            &rt,
            h,
            d,
            format,
            Eviction::HeavyHitter {
                budget: 50,
                recent: 4,
            },
        );
        let mut rng = Rng::new(8);
        fill(&mut c, 0, &mut rng, h, d, &[40]);
        let snap = |c: &KvCache| {
            let (k, v) = c.dequantize(0).unwrap();
            (
                c.len(0).unwrap(),
                c.next_position(0).unwrap(),
                c.positions(0, 1).unwrap(),
                c.memory_bytes(),
                k.to_f32_vec().unwrap(),
                v.to_f32_vec().unwrap(),
            )
        };
        let before = snap(&c);
        let good = t3(&rng.vec(3 * h * d), 3, h, d);
        let mut nan = rng.vec(3 * h * d);
        nan[17] = f32::NAN;
        let nan = t3(&nan, 3, h, d);
        assert!(matches!(
            c.append(5, &good, &good),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            c.append(0, &t3(&rng.vec(3 * h * 32), 3, h, 32), &good),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            c.append(0, &good, &t3(&rng.vec(2 * h * d), 2, h, d)),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            c.append(0, &good, &nan),
            Err(Error::NonFinite { .. })
        ));
        let q8 = good.quantize(DType::Q8_0).unwrap();
        assert!(matches!(
            c.append(0, &q8, &good),
            Err(Error::UnsupportedDType { .. })
        ));
        let q = t3(&rng.vec(3 * 4 * d), 3, 4, d);
        assert!(matches!(
            c.attend(
                0,
                &t3(&rng.vec(3 * 3 * d), 3, 3, d),
                &AttentionParams::causal()
            ),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(c.attend(7, &q, &AttentionParams::causal()).is_err());
        let kp = AttentionParams {
            key_positions: Some(vec![0; 40]),
            ..AttentionParams::causal()
        };
        assert!(matches!(
            c.attend(0, &q, &kp),
            Err(Error::InvalidArgument(_))
        ));
        let w0 = AttentionParams {
            window: Some(0),
            ..AttentionParams::causal()
        };
        assert!(matches!(
            c.attend(0, &q, &w0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(c.truncate(9, 0).is_err());
        assert!(c.positions(0, 2).is_err());
        assert!(c.dequantize(2).is_err());
        assert_eq!(snap(&c), before, "{format:?}");
    }
    // Configurations.
    let bad = |cfg: KvCacheConfig| KvCache::new(&rt, &rt.cpu(), cfg).map(|_| ());
    let base = KvCacheConfig::default();
    assert!(matches!(
        bad(KvCacheConfig {
            head_dim: 48,
            format: KvFormat::Q8_0,
            ..base
        }),
        Err(Error::BadBlockAlignment { .. })
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            v_head_dim: Some(40),
            format: KvFormat::Q4_0,
            ..base
        }),
        Err(Error::BadBlockAlignment { .. })
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            format: KvFormat::Kivi {
                bits: 3,
                group: 32,
                residual: 0
            },
            ..base
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            head_dim: 80,
            format: KvFormat::Kivi {
                bits: 2,
                group: 32,
                residual: 0
            },
            ..base
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            eviction: Eviction::HeavyHitter {
                budget: 8,
                recent: 8
            },
            ..base
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            eviction: Eviction::SnapKv {
                budget: 8,
                observe: 8,
                pool: 5
            },
            ..base
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            eviction: Eviction::SnapKv {
                budget: 64,
                observe: 8,
                pool: 4
            },
            ..base
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            eviction: Eviction::Window {
                window: 0,
                sinks: 4
            },
            ..base
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig { layers: 0, ..base }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        bad(KvCacheConfig {
            capacity: Some(usize::MAX / 2),
            ..base
        }),
        Err(Error::TooLarge { .. })
    ));
}
