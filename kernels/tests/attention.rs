//! The threaded flash path against the scalar reference, over thread counts and split plans.

use wattle_kernels::attention::{flash, reference, AttnParams, AttnShape, KvData};
use wattle_kernels::pool::ThreadPool;
use wattle_kernels::quant::{BlockFormat, BlockQ4_0, BlockQ8_0};
use wattle_kernels::Isa;

fn vals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn flash_matches_reference_for_any_thread_count() {
    let shapes = [
        (1, 8, 5000, 2, 64), // decode: key splits merged by log-sum-exp
        (40, 4, 300, 4, 32), // prefill: several query tiles
        (3, 2, 1, 1, 16),    // one key
        (17, 6, 17, 3, 48),  // ragged
    ];
    for (t_q, h_q, t_k, h_kv, d) in shapes {
        let s = AttnShape {
            t_q,
            h_q,
            t_k,
            h_kv,
            d,
            d_v: d,
        };
        let q = vals(t_q * h_q * d, 1);
        let k = vals(t_k * h_kv * d, 2);
        let v = vals(t_k * h_kv * d, 3);
        let sinks = vals(h_q, 4);
        for (causal, window, sink) in [
            (true, None, false),
            (true, Some(7), true),
            (false, None, true),
        ] {
            let p = AttnParams {
                causal,
                window,
                q_pos0: t_k.saturating_sub(t_q),
                key_positions: None,
                sinks: sink.then_some(&sinks[..]),
                scale: 0.2,
                softcap: None,
            };
            let mut want = vec![0f32; t_q * h_q * d];
            reference::attention(&q, KvData::F32(&k), KvData::F32(&v), s, &p, &mut want);
            for threads in [1, 2, 3, 8] {
                let pool = ThreadPool::new(threads);
                let mut got = vec![0f32; want.len()];
                flash::attention(&pool, &q, KvData::F32(&k), KvData::F32(&v), s, &p, &mut got);
                let rms = (want.iter().map(|x| x * x).sum::<f32>() / want.len() as f32).sqrt();
                let err = want
                    .iter()
                    .zip(&got)
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    err <= 1e-5 * rms.max(1e-3) * 10.0,
                    "{s:?} causal={causal} window={window:?} threads={threads}: max error {err} (rms {rms})"
                );
            }
        }
    }
}

/// K/V owned in one dtype.
enum Kv {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    Q8(Vec<BlockQ8_0>),
    Q4(Vec<BlockQ4_0>),
}

impl Kv {
    fn new(dtype: usize, x: &[f32]) -> Kv {
        match dtype {
            0 => Kv::F32(x.to_vec()),
            1 => Kv::F16(x.iter().map(|&v| half::f16::from_f32(v)).collect()),
            2 => {
                let mut b = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
                BlockQ8_0::quantize_ref(x, &mut b);
                Kv::Q8(b)
            }
            _ => {
                let mut b = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
                BlockQ4_0::quantize_ref(x, &mut b);
                Kv::Q4(b)
            }
        }
    }
    fn data(&self) -> KvData<'_> {
        match self {
            Kv::F32(v) => KvData::F32(v),
            Kv::F16(v) => KvData::F16(v),
            Kv::Q8(v) => KvData::Q8_0(v),
            Kv::Q4(v) => KvData::Q4_0(v),
        }
    }
}

/// One awkward case: (t_q, h_q, h_kv, t_k, q_pos0, causal, window, sinks, softcap, positions).
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
    Option<usize>,
    bool,
    Option<f32>,
    bool,
);

#[test]
fn every_isa_matches_reference_on_awkward_shapes() {
    let cases: [Case; 7] = [
        // Decode at long context: key splits merged by log-sum-exp.
        (1, 8, 2, 1000, 999, true, None, false, None, false),
        // Decode, W = 1 (only the query's own token), sinks.
        (1, 4, 4, 333, 332, true, Some(1), true, None, false),
        // Ragged prefill with q_pos0 > 0, window, sinks and softcap.
        (19, 6, 3, 211, 192, true, Some(50), true, Some(5.0), false),
        // MQA, non-causal, out-of-order key positions with a window.
        (3, 5, 1, 77, 100, false, Some(40), false, None, true),
        // Causal prefill from 0 with W ≥ context, several query tiles.
        (40, 4, 2, 40, 0, true, Some(1000), true, None, false),
        // Causal with key positions (rolling cache), t_q > 1.
        (5, 4, 2, 300, 400, true, Some(200), false, Some(20.0), true),
        // SmolLM2's grouping (9 query / 3 KV heads), causal from 0 with a window across key
        // blocks and query tiles (the transposed-key prefill path).
        (150, 9, 3, 150, 0, true, Some(64), false, None, false),
    ];
    for isa in Isa::supported() {
        for d in [64, 80, 96, 128, 256] {
            for dtype in 0..4 {
                if dtype >= 2 && d % 32 != 0 {
                    continue;
                }
                for &(t_q, h_q, h_kv, t_k, q_pos0, causal, window, sink, softcap, pos) in &cases {
                    let s = AttnShape {
                        t_q,
                        h_q,
                        t_k,
                        h_kv,
                        d,
                        d_v: d,
                    };
                    let q = vals(t_q * h_q * d, 11);
                    let k = Kv::new(dtype, &vals(t_k * h_kv * d, 12));
                    let v = Kv::new(dtype, &vals(t_k * h_kv * d, 13));
                    let sinks = vals(h_q, 14);
                    let positions: Vec<u32> = (0..t_k as u32)
                        .map(|j| (j * 37 + 11) % (t_k as u32 + 150))
                        .collect();
                    let p = AttnParams {
                        causal,
                        window,
                        q_pos0,
                        key_positions: pos.then_some(&positions[..]),
                        sinks: sink.then_some(&sinks[..]),
                        scale: 3.0 / (d as f32).sqrt(),
                        softcap,
                    };
                    let mut want = vec![0f32; t_q * h_q * d];
                    reference::attention(&q, k.data(), v.data(), s, &p, &mut want);
                    let rms = (want.iter().map(|x| x * x).sum::<f32>() / want.len() as f32).sqrt();
                    for threads in [1, 2, 3] {
                        let pool = ThreadPool::new(threads);
                        let mut got = vec![0f32; want.len()];
                        flash::attention_isa(isa, &pool, &q, k.data(), v.data(), s, &p, &mut got);
                        let err = want
                            .iter()
                            .zip(&got)
                            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                        // Float paths differ from the reference only in summation order and the
                        // exp polynomial (≲ 2e-7 relative).
                        assert!(
                            err <= 2e-5 * rms.max(1e-3) + 1e-6,
                            "{isa} dtype {dtype} {s:?} {p:?} threads={threads}: max error {err} (rms {rms})"
                        );
                    }
                }
            }
        }
    }
}
