//! KV-cache attention kernels: every ISA path the CPU has against the scalar bodies, on every
//! storage format, awkward shapes (rows not a multiple of 4, partial KIVI groups, evicted
//! tokens), masks and per-key probabilities.

use wattle_kernels::kv::{attend, CacheMask, CacheShape, HeadStore, KvFmt, ScoreOut};
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::Isa;

fn rng(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn nmse(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    num / den.max(1e-30)
}

#[test]
fn every_isa_matches_scalar() {
    let pool = ThreadPool::new(3);
    let fmts = [
        KvFmt::F16,
        KvFmt::Q8_0,
        KvFmt::Q4_0,
        KvFmt::Kivi {
            bits: 4,
            group: 32,
            residual: 20,
        },
        KvFmt::Kivi {
            bits: 2,
            group: 16,
            residual: 5,
        },
    ];
    for fmt in fmts {
        for (h_kv, h_q, t_q, d, dv, n) in [
            (2, 8, 1, 64, 64, 1000),
            (1, 3, 3, 32, 64, 77),
            (3, 3, 17, 96, 32, 300),
        ] {
            let mut r = rng(n as u64 + d as u64);
            let mut heads: Vec<HeadStore> = (0..h_kv)
                .map(|_| HeadStore::new(fmt, d, dv, false, 0))
                .collect();
            for (g, h) in heads.iter_mut().enumerate() {
                let k: Vec<f32> = (0..n * d).map(|_| r()).collect();
                let v: Vec<f32> = (0..n * dv).map(|_| r()).collect();
                h.append(&k[..7 * d], &v[..7 * dv], 0);
                h.append(&k[7 * d..], &v[7 * dv..], 7);
                // Evict a few tokens (holes in KIVI groups), differently per head.
                let keep: Vec<bool> = (0..n).map(|j| (j + g) % 11 != 3).collect();
                h.retain(&keep);
            }
            let q: Vec<f32> = (0..t_q * h_q * d).map(|_| r()).collect();
            let sinks: Vec<f32> = (0..h_q).map(|_| r()).collect();
            for (window, cache_window, sink) in [
                (None, None, false),
                (Some(40), None, true),
                (None, Some((50, 4)), false),
            ] {
                let m = CacheMask {
                    causal: true,
                    window,
                    cache_window,
                    q_pos0: n - t_q,
                    sinks: sink.then_some(&sinks[..]),
                    scale: 0.2,
                    softcap: None,
                };
                let s = CacheShape {
                    t_q,
                    h_q,
                    h_kv,
                    d,
                    dv,
                };
                let views: Vec<_> = heads.iter().map(|h| h.view()).collect();
                let run = |isa| {
                    let mut out = vec![0f32; t_q * h_q * dv];
                    let mut sc: Vec<Vec<f32>> = heads.iter().map(|h| vec![0.0; h.len()]).collect();
                    let so = ScoreOut {
                        from_query: t_q / 2,
                        scores: &mut sc,
                    };
                    attend(&pool, isa, &q, &views, s, &m, &mut out, Some(so));
                    (out, sc.concat())
                };
                let (o_ref, s_ref) = run(Isa::Scalar);
                let total: f32 = s_ref.iter().sum();
                let rows = (t_q - t_q / 2) * h_q;
                assert!(total <= rows as f32 * 1.0001 && total > 0.0);
                if !sink {
                    assert!(
                        (total - rows as f32).abs() < 1e-3 * rows as f32,
                        "{total} vs {rows}"
                    );
                }
                for isa in Isa::supported() {
                    let (o, sc) = run(isa);
                    let e = nmse(&o_ref, &o);
                    assert!(e < 1e-10, "{fmt:?} {isa} n={n} d={d}: nmse {e}");
                    let e = nmse(&s_ref, &sc);
                    assert!(e < 1e-10, "{fmt:?} {isa} scores: nmse {e}");
                }
            }
        }
    }
}

/// Decode speed at long context (SPEC §8 / issue 10 targets), every format:
/// `cargo test --release -p wattle-kernels --test kv -- --ignored --nocapture`.
/// `KV_CTX` sets the context (default 32768). Prints µs (median), bits per value, GB/s.
#[test]
#[ignore]
fn decode_speed() {
    let ctx: usize = std::env::var("KV_CTX")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32768);
    let (h_q, h_kv, d) = (32, 8, 128);
    let pool = ThreadPool::global();
    let isa = wattle_kernels::isa::selected().unwrap_or(Isa::Scalar);
    println!(
        "ctx {ctx}, {h_q}/{h_kv} heads, d {d}, {isa}, {} threads",
        pool.threads()
    );
    let mut r = rng(1);
    let k: Vec<f32> = (0..ctx * d).map(|_| r()).collect();
    let v: Vec<f32> = (0..ctx * d).map(|_| r()).collect();
    let q: Vec<f32> = (0..h_q * d).map(|_| r()).collect();
    let mut f16_us = 0.0;
    for (name, fmt) in [
        ("f16", KvFmt::F16),
        ("q8_0", KvFmt::Q8_0),
        ("q4_0", KvFmt::Q4_0),
        (
            "kivi4",
            KvFmt::Kivi {
                bits: 4,
                group: 32,
                residual: 128,
            },
        ),
        (
            "kivi2",
            KvFmt::Kivi {
                bits: 2,
                group: 32,
                residual: 128,
            },
        ),
    ] {
        if std::env::var("KV_ONLY").is_ok_and(|o| o != name) {
            continue;
        }
        let heads: Vec<HeadStore> = (0..h_kv)
            .map(|_| {
                let mut h = HeadStore::new(fmt, d, d, false, ctx);
                h.append(&k, &v, 0);
                h
            })
            .collect();
        let views: Vec<_> = heads.iter().map(|h| h.view()).collect();
        let m = CacheMask {
            causal: true,
            window: None,
            cache_window: None,
            q_pos0: ctx - 1,
            sinks: None,
            scale: 1.0 / (d as f32).sqrt(),
            softcap: None,
        };
        let s = CacheShape {
            t_q: 1,
            h_q,
            h_kv,
            d,
            dv: d,
        };
        let mut out = vec![0f32; h_q * d];
        let mut times: Vec<f64> = (0..25)
            .map(|_| {
                let t = std::time::Instant::now();
                attend(pool, isa, &q, &views, s, &m, &mut out, None);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let us = times[times.len() / 2];
        if name == "f16" {
            f16_us = us;
        }
        let bytes: usize = heads.iter().map(|h| h.memory_bytes()).sum();
        println!(
            "{name:<6} {:>7.3} bits/value {us:>9.0} µs (min {:>7.0}) {:>6.3}× F16 {:>6.1} GB/s",
            bytes as f64 * 8.0 / (ctx * h_kv * 2 * d) as f64,
            times[0],
            us / f16_us,
            bytes as f64 / us / 1e3
        );
    }
}
