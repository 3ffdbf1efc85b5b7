//! The threaded flash path against the scalar reference, over thread counts and split plans.

use wattle_kernels::attention::{flash, reference, AttnParams, AttnShape, KvData};
use wattle_kernels::pool::ThreadPool;

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
