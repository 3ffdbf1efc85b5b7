//! Eviction decisions per (layer, KV head) (SPEC §8), as keep-lists over one head's tokens in
//! position order (oldest first); the CPU and GPU stores apply them to their own layouts.

/// StreamingLLM: whether a token at `pos` stays — kept unless no query at or after `p_ref` can
/// see it (position ≥ `sinks` and `p_ref − pos ≥ window`).
pub(super) fn window_keeps(pos: u32, p_ref: i64, window: usize, sinks: usize) -> bool {
    (pos as usize) < sinks || p_ref - (pos as i64) < window as i64
}

/// H2O over accumulated `scores`: drops the lowest-scoring tokens outside the `recent` newest
/// until the head holds `budget` (ties: the older goes first).
pub(super) fn heavy_hitter_keep(scores: &[f32], budget: usize, recent: usize) -> Vec<bool> {
    let n = scores.len();
    let mut keep = vec![true; n];
    if n <= budget {
        return keep;
    }
    let cand = n.saturating_sub(recent);
    let mut idx: Vec<usize> = (0..cand).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    for &i in idx.iter().take(n - budget) {
        keep[i] = false;
    }
    keep
}

/// SnapKV: scores the tokens older than the `observe` newest by `probs`, max-pools them
/// (centred, width `pool`, ignoring positions outside the sequence) and keeps the
/// `budget − observe` best (ties: the older) plus the `observe` newest.
pub(super) fn snapkv_keep(probs: &[f32], budget: usize, observe: usize, pool: usize) -> Vec<bool> {
    let n = probs.len();
    if n <= budget {
        return vec![true; n];
    }
    let old = n - observe;
    let half = pool / 2;
    let pooled: Vec<f32> = (0..old)
        .map(|j| {
            probs[j.saturating_sub(half)..(j + half + 1).min(old)]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
        })
        .collect();
    let mut idx: Vec<usize> = (0..old).collect();
    idx.sort_by(|&a, &b| pooled[b].total_cmp(&pooled[a]).then(a.cmp(&b)));
    let mut keep = vec![false; n];
    for &i in idx.iter().take(budget - observe) {
        keep[i] = true;
    }
    keep[old..].fill(true);
    keep
}
