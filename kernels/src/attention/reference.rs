//! Scalar reference attention: one query head at a time, two passes over the visible keys.

use super::{AttnParams, AttnShape, KvData};

/// `out [t_q, h_q, d_v]` = softmax(scale·q·kᵀ masked, with sinks) · v. A query that sees no
/// key (and has no sink) gets zeros.
pub fn attention(
    q: &[f32],
    k: KvData<'_>,
    v: KvData<'_>,
    s: AttnShape,
    p: &AttnParams<'_>,
    out: &mut [f32],
) {
    s.assert_lens(q, k, v, out);
    let group = s.h_q / s.h_kv;
    let mut scores = vec![0f32; s.t_k];
    let mut row = vec![0f32; s.d_v];
    for i in 0..s.t_q {
        let pos = (p.q_pos0 + i) as i64;
        for h in 0..s.h_q {
            let kvh = h / group;
            let qh = &q[(i * s.h_q + h) * s.d..][..s.d];
            let mut max = p.sinks.map_or(f32::NEG_INFINITY, |sk| sk[h]);
            for (j, sc) in scores.iter_mut().enumerate() {
                *sc = if p.visible(pos, p.key_pos(j)) {
                    p.cap(k.dot_row(j * s.h_kv + kvh, qh) * p.scale)
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(*sc);
            }
            let o = &mut out[(i * s.h_q + h) * s.d_v..][..s.d_v];
            o.fill(0.0);
            if max == f32::NEG_INFINITY {
                continue;
            }
            let mut sum = p.sinks.map_or(0.0, |sk| (sk[h] - max).exp());
            for (j, &sc) in scores.iter().enumerate() {
                if sc == f32::NEG_INFINITY {
                    continue;
                }
                let w = (sc - max).exp();
                sum += w;
                v.row_f32(j * s.h_kv + kvh, s.d_v, &mut row);
                for (o, r) in o.iter_mut().zip(&row) {
                    *o += w * r;
                }
            }
            o.iter_mut().for_each(|x| *x /= sum);
        }
    }
}
